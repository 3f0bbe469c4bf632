//! `cargo xtask fleet [ARGS]`: the fleet simulator (`tests/src/bin/fleet.rs`) against a real
//! mosquitto and the workspace's hub, both started on loopback. ARGS go to the simulator
//! (`cargo xtask fleet -- --help` lists them).

use std::ffi::OsString;

use anyhow::Result;

use crate::sh;

pub fn run(args: &[OsString]) -> Result<()> {
    sh::ensure_tools(&[("mosquitto", "mosquitto")])?;
    sh::ensure_build_deps()?;
    // The workspace's dev profile is optimised: the hub measured is the one the tests run.
    sh::run(sh::cargo().args([
        "build", "--quiet", "-p", "hub", "--bin", "hub", "-p", "tests", "--bin", "fleet",
    ]))?;
    sh::run(std::process::Command::new(sh::target_dir().join("debug/fleet")).args(args))
}
