//! `cargo xtask test`: every test the project has, the way CI runs them.

use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::{firmware, models, qemu, sh};

pub fn test() -> Result<()> {
    preflight()?;
    // Models too large to commit are fetched first: tests run every real model.
    models::fetch()?;
    lint()?;
    let figures = sh::target_dir().join("iat-figures.txt");
    let _ = std::fs::remove_file(&figures);
    // The end-to-end tests run the hub and agent binaries; `cargo test` builds a package's
    // binaries only for that package's own integration tests.
    models::build_all()?;
    sh::run(sh::cargo().args(["test", "--workspace", "--no-fail-fast"]))?;
    // Golden checks of every real model, through the agent's own command line.
    models::check()?;
    // The sensor node: every MCU board file is built (flash and RAM use printed); the emulated
    // ones also run their on-target tests and the node app against the log snapshot in QEMU.
    // Boards are data: adding a board file adds it here.
    for board in boards::Board::all(&sh::root().join("boards"))? {
        if board.kind != boards::Kind::Mcu {
            continue;
        }
        if matches!(board.qemu, Some(boards::Qemu::System { .. })) {
            let args = qemu::QemuArgs {
                board: board.name.clone(),
                overwrite: false,
                app_only: false,
                serial: None,
                elf: None,
            };
            expect_success(&format!("qemu --board {}", board.name), qemu::run(&args))?;
        } else {
            let args = firmware::BuildArgs {
                board: board.name.clone(),
                debug: false,
            };
            expect_success(
                &format!("build --board {}", board.name),
                firmware::run(&args),
            )?;
        }
    }
    // The delivery, fault and tampering figures of the end-to-end tests (tests/tests/it).
    if let Ok(text) = std::fs::read_to_string(&figures) {
        println!("xtask test: end-to-end figures\n{text}");
    }
    println!("xtask test: all passed");
    Ok(())
}

fn expect_success(what: &str, r: Result<ExitCode>) -> Result<()> {
    let code = r?;
    if code != ExitCode::SUCCESS {
        bail!("{what} failed ({code:?})");
    }
    Ok(())
}

/// Formatting and clippy, warnings denied.
pub fn lint() -> Result<()> {
    sh::run(sh::cargo().args(["fmt", "--all", "--check"]))?;
    sh::run(sh::cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ]))?;
    let mut fw = sh::cargo();
    fw.current_dir(sh::root().join("firmware"))
        .args(["fmt", "--all", "--check"]);
    sh::run(&mut fw)
}

/// Tools the tests need, installed when missing (apt, as root). Under CI a tool that cannot be
/// installed fails the run; nothing is skipped silently.
fn preflight() -> Result<()> {
    sh::ensure_tools(&[
        ("python3", "python3"),
        ("pip3", "python3-pip"),
        ("qemu-system-arm", "qemu-system-arm"),
        // The end-to-end tests start a real broker (tests/src/broker.rs).
        ("mosquitto", "mosquitto"),
    ])
}
