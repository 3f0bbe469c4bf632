//! `cargo xtask test`: every test the project has, the way CI runs them.

use anyhow::Result;

use crate::{models, sh};

pub fn test() -> Result<()> {
    preflight()?;
    // Models too large to commit are fetched first: tests run every real model.
    models::fetch()?;
    lint()?;
    let figures = sh::target_dir().join("iat-figures.txt");
    let _ = std::fs::remove_file(&figures);
    // The end-to-end tests run the hub and agent binaries; `cargo test` builds a package's
    // binaries only for that package's own integration tests.
    sh::run(sh::cargo().args(["build", "--workspace", "--bins", "--quiet"]))?;
    sh::run(sh::cargo().args(["test", "--workspace", "--no-fail-fast"]))?;
    // The delivery, fault and tampering figures of the end-to-end tests (tests/tests/it).
    if let Ok(text) = std::fs::read_to_string(&figures) {
        println!("xtask test: end-to-end figures\n{text}");
    }
    // Golden checks of every real model, through the agent's own command line.
    models::check()?;
    println!("xtask test: all passed");
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
    ]))
}

/// Tools the tests need, installed when missing (apt, as root). Under CI a tool that cannot be
/// installed fails the run; nothing is skipped silently.
fn preflight() -> Result<()> {
    sh::ensure_tools(&[
        ("python3", "python3"),
        ("pip3", "python3-pip"),
        // The end-to-end tests start a real broker (tests/src/broker.rs).
        ("mosquitto", "mosquitto"),
    ])
}
