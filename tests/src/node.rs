//! The sensor node under QEMU: the firmware built for the emulated board (as `cargo xtask
//! build` does), run by qemu-system-arm with its frame UART served on a loopback TCP port,
//! which the agent's `node` source (`input = "tcp:127.0.0.1:PORT"`) or a test reads.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use boards::{Board, Qemu};

use crate::system::root;

/// The emulated node board.
pub const BOARD: &str = "lm3s6965evb";

pub fn board() -> Board {
    Board::find(&root().join("boards"), BOARD).expect("the emulated node's board file")
}

/// Builds the node firmware for `board` the way `cargo xtask build` does; its ELF.
pub fn build(board: &Board) -> PathBuf {
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("firmware"),
        None => root().join("firmware/target"),
    };
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root().join("firmware"))
        .args([
            "build",
            "--release",
            "--bin",
            "node",
            "--target",
            &board.target,
        ])
        .args(["--features", &board.firmware_features.join(",")])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("IAT_BOARD", &board.name)
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("cargo runs");
    assert!(status.success(), "firmware build failed");
    target_dir.join(&board.target).join("release/node")
}

/// The node firmware running under QEMU, its UART a TCP server on `port` that starts the
/// guest when a client connects. Killed when dropped.
pub struct QemuNode {
    pub port: u16,
    child: Child,
}

impl QemuNode {
    pub fn start(board: &Board, elf: &std::path::Path) -> QemuNode {
        let Some(Qemu::System { machine, cpu, .. }) = &board.qemu else {
            panic!("{} has no qemu machine", board.name);
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("qemu-system-arm")
            .args([
                "-machine",
                machine,
                "-cpu",
                cpu,
                "-nographic",
                "-monitor",
                "none",
            ])
            .args([
                "-serial",
                &format!("tcp:127.0.0.1:{port},server=on,wait=on"),
            ])
            .args(["-semihosting-config", "enable=on,target=native", "-kernel"])
            .arg(elf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-system-arm is installed (apt-get install qemu-system-arm)");
        QemuNode { port, child }
    }

    /// Whether the firmware has finished (it exits after its board's `exit_after_cycles`).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("waiting for QEMU")
    }
}

impl Drop for QemuNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
