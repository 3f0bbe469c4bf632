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
    let mut fleet = std::process::Command::new(sh::target_dir().join("debug/fleet"));
    fleet.args(args);
    // `--store postgres`: a throwaway cluster for the run.
    let postgres = args
        .windows(2)
        .any(|w| w[0] == "--store" && w[1] == "postgres")
        || args.iter().any(|a| a == "--store=postgres");
    let cluster = if postgres {
        Some(crate::postgres::Cluster::start()?)
    } else {
        None
    };
    if let Some(c) = &cluster {
        fleet.env("IAT_TEST_POSTGRES", c.conninfo());
    }
    sh::run(&mut fleet)
}
