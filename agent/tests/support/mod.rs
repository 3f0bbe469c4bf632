//! What the agent's end-to-end tests share: the binary, a device folder with its keys and
//! config, the verified records of its log, and an orderly stop.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aggregate::RecordView;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(args)
        .output()
        .expect("run edge-agent")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A device folder (device t-001 of fr-test) with its keys and a config running `pipelines`
/// (TOML text, `{root}` standing for the repository).
pub fn device(pipelines: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let o = agent(&[
        "keygen",
        "--dir",
        keys.to_str().unwrap(),
        "--device",
        "t-001",
        "--territory",
        "fr-test",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "device = \"t-001\"\nterritory = \"fr-test\"\ndata_dir = \"data\"\nkey = \"keys/device.key\"\n\
             [checkpoint]\nevery_records = 4\n{}",
            pipelines.replace("{root}", root().to_str().unwrap())
        ),
    )
    .unwrap();
    (dir, config)
}

/// A face-counting pipeline named `name` (CenterFace int8, faces counted, k = 1) in windows
/// of `window`, on the `[pipeline.source]` fields `source` (TOML lines).
pub fn faces_pipeline(name: &str, window: &str, source: &str) -> String {
    format!(
        "\n[[pipeline]]\nname = \"{name}\"\nmodel = \"{{root}}/models/centerface-int8/card.toml\"\n\
         aggregates = [\"count\"]\nwindow = \"{window}\"\n[pipeline.source]\n{source}\n\
         [pipeline.privacy]\nk = 1\n"
    )
}

/// `edge-agent run` in the background.
pub fn start(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(["run", "--config", config.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start edge-agent run")
}

/// SIGTERM, then the agent's exit within `limit`: its output and how long it took.
pub fn terminate(child: Child, limit: Duration) -> (Output, Duration) {
    // SAFETY: kill(2) on our own child's pid, which stays ours until we wait for it.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0, "kill(SIGTERM)");
    let signalled = Instant::now();
    let mut child = child;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if signalled.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("still running {limit:?} after SIGTERM: {}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = signalled.elapsed();
    (child.wait_with_output().unwrap(), took)
}

/// `audit show --json` of the device's log: its verified records.
pub fn records(dir: &Path) -> Vec<RecordView> {
    let o = agent(&[
        "audit",
        "show",
        dir.join("data/log").to_str().unwrap(),
        "--pubkey",
        dir.join("keys/device.vkey").to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| RecordView::parse(l.as_bytes()).unwrap())
        .collect()
}

/// `audit verify` of the device's log.
pub fn verify(dir: &Path) -> Output {
    agent(&[
        "audit",
        "verify",
        dir.join("data/log").to_str().unwrap(),
        "--pubkey",
        dir.join("keys/device.vkey").to_str().unwrap(),
    ])
}

/// Prints a line of figures and appends it to `<target>/iat-figures.txt`, which `cargo xtask
/// test` prints at the end (cargo hides a passing test's output).
pub fn figures(line: &str) {
    println!("{line}");
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let Some(target) = exe.ancestors().nth(3) else {
        return;
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(target.join("iat-figures.txt"))
    {
        use std::io::Write as _;
        let _ = writeln!(f, "{line}");
    }
}
