//! `cargo xtask flash --board x86-64-gateway --host ...` against a real OpenSSH server on
//! loopback, installing into a temporary root: the first install (device key generated on
//! the device), the installed agent running from its release, a release whose health check
//! fails (switched back to the previous one, which keeps running with its log), a good
//! second release, and a failed first install with nothing to go back to.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tests::broker::{free_port, wait_port};
use tests::system::{bin, root};

/// An sshd of Debian's openssh-server on 127.0.0.1, accepting one client key.
struct Sshd {
    child: Child,
    port: u16,
    key: PathBuf,
    known_hosts: PathBuf,
    user: String,
}

fn tool(path: &str, package: &str) -> PathBuf {
    let p = Path::new(path);
    assert!(
        p.is_file(),
        "{path} is missing: install Debian's {package} (`apt-get install {package}`; `cargo xtask \
         test` does it when run as root)"
    );
    p.to_path_buf()
}

fn keygen(path: &Path) {
    let ok = Command::new(tool("/usr/bin/ssh-keygen", "openssh-client"))
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen")
        .success();
    assert!(ok, "ssh-keygen -f {}", path.display());
}

impl Sshd {
    fn start(dir: &Path) -> Sshd {
        let sshd = tool("/usr/sbin/sshd", "openssh-server");
        tool("/usr/bin/ssh", "openssh-client");
        let host_key = dir.join("host_key");
        let key = dir.join("client_key");
        keygen(&host_key);
        keygen(&key);
        let authorized = dir.join("authorized_keys");
        std::fs::copy(key.with_extension("pub"), &authorized).unwrap();
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        // sshd's privilege separation folder; Debian's package creates it at boot only.
        if !Path::new("/run/sshd").exists() {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let port = free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PidFile {}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 LogLevel VERBOSE\n",
                host_key.display(),
                authorized.display(),
                dir.join("sshd.pid").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("sshd.log")).unwrap();
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stderr(log)
            .spawn()
            .expect("starting sshd");
        assert!(
            wait_port(port, Duration::from_secs(10)),
            "sshd did not listen on {port}: {}",
            std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
        );
        Sshd {
            child,
            port,
            key,
            known_hosts: dir.join("known_hosts"),
            user,
        }
    }

    /// `cargo xtask flash` for the gateway board into `device_root`.
    fn flash(&self, config: &Path, device_root: &Path, xtask_target: &Path) -> Output {
        let out = Command::new(bin("xtask"))
            .args(["flash", "--board", "x86-64-gateway", "--host"])
            .arg(format!("{}@127.0.0.1", self.user))
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--identity")
            .arg(&self.key)
            .arg("--ssh-option")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args(["--ssh-option", "StrictHostKeyChecking=accept-new"])
            .arg("--agent")
            .arg(bin("edge-agent"))
            .arg("--config")
            .arg(config)
            .arg("--root")
            .arg(device_root)
            .env("CARGO_TARGET_DIR", xtask_target)
            .stdin(Stdio::null())
            .output()
            .expect("running xtask");
        eprintln!(
            "--- xtask flash ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A speech-only agent config (Silero VAD on the bundled speech sample), paths relative to
/// the workspace's models as a technician's checkout has them.
fn write_config(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let models = root().join("models");
    let text = format!(
        "device = \"gw-007\"\nterritory = \"fr-test\"\ndata_dir = \"var\"\nkey = \"keys/device.key\"\n\
         [checkpoint]\nevery_records = 4\n\
         [[pipeline]]\nname = \"speech\"\nmodel = \"{}/silero-vad-16k/card.toml\"\n\
         aggregates = [\"speech_share\"]\nwindow = \"5s\"\nthreshold = 0.5\n{extra}\
         [pipeline.source]\nkind = \"replay\"\npath = \"{}/samples/speech.wav\"\n\
         speed = \"accelerated\"\nstart = \"2026-11-30T10:00:00Z\"\n\
         [pipeline.privacy]\nk = 1\nshare_step_ppm = 10000\n",
        models.display(),
        models.display()
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn link(p: &Path) -> String {
    std::fs::read_link(p)
        .unwrap_or_else(|e| panic!("{} is not a link: {e}", p.display()))
        .display()
        .to_string()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn ssh_install_switches_atomically_and_rolls_back_a_failed_health_check() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sshd = Sshd::start(dir);
    let device = dir.join("device-root");
    let xt = dir.join("xtask-target");
    let current = device.join("opt/iat/current");

    // 1. First install: the key is made on the device, the selftest passes.
    let good = write_config(dir, "good.toml", "");
    let first = sshd.flash(&good, &device, &xt);
    let out = text(&first);
    assert!(first.status.success(), "first install failed:\n{out}");
    assert!(out.contains("NEW DEVICE KEY"), "{out}");
    assert!(out.contains("selftest: this installation can run"), "{out}");
    let release1 = link(&current);
    assert!(release1.starts_with("releases/"), "{release1}");
    let vkey = std::fs::read_to_string(device.join("etc/iat/device.vkey")).unwrap();
    assert!(vkey.starts_with("iat/fr-test/gw-007+"), "{vkey}");
    let unit =
        std::fs::read_to_string(device.join("etc/systemd/system/iat-edge-agent.service")).unwrap();
    let exec = format!(
        "ExecStart={}/edge-agent run --config {}/agent.toml",
        current.display(),
        current.display()
    );
    assert!(unit.contains(&exec), "{unit}");
    // systemd hears READY and WATCHDOG from the agent (agent/tests/microphone.rs checks that a
    // stuck pipeline stops the petting), and the stop fits in the stop timeout.
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=60",
        "TimeoutStopSec=90",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing: {unit}");
    }
    assert_eq!(
        link(&device.join("usr/local/bin/edge-agent")),
        current.join("edge-agent").display().to_string()
    );
    let installed = std::fs::read_to_string(current.join("agent.toml")).unwrap();
    assert!(
        installed.contains("model = \"models/silero-vad-16k/card.toml\""),
        "{installed}"
    );
    assert!(
        installed.contains(&format!(
            "data_dir = \"{}\"",
            device.join("var/lib/iat").display()
        )),
        "{installed}"
    );

    // The installed agent runs from its release and fills the persistent log.
    let run = Command::new(device.join("usr/local/bin/edge-agent"))
        .args(["run", "--config"])
        .arg(current.join("agent.toml"))
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run));
    let log = device.join("var/lib/iat/log");
    let verify = |what: &str| {
        let v = Command::new(bin("edge-agent"))
            .args(["audit", "verify"])
            .arg(&log)
            .arg("--pubkey")
            .arg(device.join("etc/iat/device.vkey"))
            .output()
            .unwrap();
        assert!(v.status.success(), "{what}: {}", text(&v));
        text(&v)
    };
    let verified = verify("after the first run");

    // 2. A release whose config the agent refuses: the health check fails on the device,
    // `current` goes back to the first release, the failed one is kept aside.
    let bad = write_config(dir, "bad.toml", "window_overlap = \"1s\"\n");
    let second = sshd.flash(&bad, &device, &xt);
    let out = text(&second);
    assert!(
        !second.status.success(),
        "a failing release was accepted:\n{out}"
    );
    assert!(out.contains("FAILED its health check"), "{out}");
    assert!(
        out.contains("window_overlap"),
        "the selftest names the field:\n{out}"
    );
    assert!(out.contains("rolled back"), "{out}");
    assert_eq!(link(&current), release1, "current was not switched back");
    let failed: Vec<_> = std::fs::read_dir(device.join("opt/iat/releases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".failed"))
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(verify("after the rollback"), verified, "the log changed");
    assert_eq!(
        std::fs::read_to_string(device.join("etc/iat/device.vkey")).unwrap(),
        vkey,
        "the device key changed"
    );

    // 3. A good second release: switched, healthy; the key and the log are the same ones.
    let better = write_config(dir, "better.toml", "");
    std::fs::write(
        &better,
        std::fs::read_to_string(&better)
            .unwrap()
            .replace("threshold = 0.5", "threshold = 0.6"),
    )
    .unwrap();
    let third = sshd.flash(&better, &device, &xt);
    assert!(third.status.success(), "{}", text(&third));
    let release3 = link(&current);
    assert_ne!(release3, release1);
    assert!(
        std::fs::read_to_string(current.join("agent.toml"))
            .unwrap()
            .contains("threshold = 0.6")
    );
    assert!(
        device.join("opt/iat").join(&release1).is_dir(),
        "the previous release is kept"
    );
    assert_eq!(verify("after the second release"), verified);

    // 4. A failing first install on a fresh device: nothing to go back to, and it says so.
    let fresh = dir.join("fresh-root");
    let lone = sshd.flash(&bad, &fresh, &xt);
    let out = text(&lone);
    assert!(!lone.status.success(), "{out}");
    assert!(out.contains("no previous release"), "{out}");
    assert!(!fresh.join("opt/iat/current").exists());
}

#[test]
fn ssh_install_refuses_an_agent_built_for_another_board() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(bin("xtask"))
        .args([
            "flash",
            "--board",
            "raspberry-pi-4",
            "--host",
            "nobody@192.0.2.1",
            "--agent",
        ])
        .arg(bin("edge-agent"))
        .arg("--root")
        .arg(tmp.path())
        .env("CARGO_TARGET_DIR", tmp.path())
        .output()
        .unwrap();
    let msg = text(&out);
    assert!(!out.status.success(), "{msg}");
    assert!(
        msg.contains("is built for X86_64") && msg.contains("aarch64-unknown-linux-gnu"),
        "{msg}"
    );
}
