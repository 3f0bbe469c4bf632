//! The specification pack (`docs/spec/vectors/`) through `hub verify`, the command a citizen or
//! an auditor runs: every valid case passes (exit 0), every tampered one fails (a non-zero exit) naming
//! the expected kind of problem; and what `hub records` prints verifies with it. The crate `verify` runs the pack in its own tests, the
//! browser's WebAssembly build in `browser.rs`.

mod common;

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

/// `hub records` and `hub records --checkpoint` print what the register serves
/// (records.jsonl, checkpoint.txt): `hub verify` accepts them; a device without a checkpoint
/// is a clear error.
#[test]
fn what_hub_records_prints_verifies() {
    let fx = common::Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let hub = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_hub"))
            .args(args)
            .arg("--config")
            .arg(&fx.config)
            .output()
            .expect("running hub");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, records, err) = hub(&["records", "--device", "dev-1"]);
    assert!(ok, "{err}");
    let (ok, cp, err) = hub(&["records", "--device", "dev-1", "--checkpoint"]);
    assert!(ok, "{err}");
    assert!(cp.starts_with("iat/fr-lyon/dev-1\n288\n"), "{cp}");
    std::fs::write(dir.path().join("records.jsonl"), records).unwrap();
    std::fs::write(dir.path().join("checkpoint.txt"), cp).unwrap();
    std::fs::write(
        dir.path().join("device.vkey"),
        format!("{}\n", fx.devs[0].key.verifier()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hub"))
        .current_dir(dir.path())
        .args([
            "verify",
            "--key",
            "device.vkey",
            "--records",
            "records.jsonl",
            "--checkpoint",
            "checkpoint.txt",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("OK: 288 record(s)"), "{stdout}");
    assert!(stdout.contains("model centerface-int8 version"), "{stdout}");
    let (ok, _, err) = hub(&["records", "--device", "nobody", "--checkpoint"]);
    assert!(!ok);
    assert!(
        err.contains("no verified checkpoint of \"nobody\""),
        "{err}"
    );
}
