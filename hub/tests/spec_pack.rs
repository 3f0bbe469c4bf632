//! The specification pack (`docs/spec/vectors/`) through `hub verify`, the command a citizen or
//! an auditor runs: every valid case passes (exit 0), every tampered one fails (a non-zero exit) naming
//! the expected kind of problem. The crate `verify` runs the pack in its own tests, the
//! browser's WebAssembly build in `browser.rs`.

use std::path::PathBuf;
use std::process::Command;

use verify::pack::{self, Expected};

#[test]
fn hub_verify_reaches_every_verdict_of_the_pack() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/spec/vectors");
    let cases = pack::read(&dir).expect("docs/spec/vectors");
    assert!(cases.len() >= 20, "{} cases", cases.len());
    for c in &cases {
        let d = dir.join(&c.name);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hub"));
        cmd.arg("verify")
            .arg("--key")
            .arg(d.join("device.vkey"))
            .arg("--records")
            .arg(d.join("records.jsonl"))
            .arg("--checkpoint")
            .arg(d.join("checkpoint.txt"));
        if c.file("previous.txt").is_some() {
            cmd.arg("--previous").arg(d.join("previous.txt"));
        }
        let out = cmd.output().expect("running hub verify");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        match c.expected().expect("expected.json") {
            Expected::Ok { records } => {
                assert!(out.status.success(), "{}: {stderr}", c.name);
                assert!(
                    stdout.starts_with(&format!("OK: {records} record(s)")),
                    "{}: {stdout}",
                    c.name
                );
            }
            Expected::Problem { kind } => {
                assert!(!out.status.success(), "{}: {stdout}{stderr}", c.name);
                assert!(
                    stderr.contains(&format!("verification failed [{kind}]")),
                    "{}: {stderr}",
                    c.name
                );
            }
        }
    }
}
