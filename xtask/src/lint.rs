//! `cargo xtask lint`: formatting and clippy (warnings denied) over the workspace and the
//! firmware. Builds no heavy tool: probe-rs, the defmt decoder and the embedded broker are
//! features of xtask that only the jobs needing them turn on.

use anyhow::Result;

use crate::sh;

/// Formatting and clippy, warnings denied.
pub fn lint() -> Result<()> {
    sh::run(sh::cargo().args(["fmt", "--all", "--check"]))?;
    sh::ensure_build_deps()?;
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
