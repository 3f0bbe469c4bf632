//! `cargo xtask flash --board B`: an MCU board's node firmware through a debug probe
//! ([`probe`], feature `probe`), or a Linux board's agent over SSH ([`ssh`]).

#[cfg(feature = "probe")]
pub mod probe;
pub mod ssh;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, ensure};
use boards::{Board, Kind};

use crate::sh;

#[derive(clap::Args, Default)]
pub struct FlashArgs {
    /// Board file name in boards/ (an MCU board with a probe-rs `chip`).
    #[arg(long)]
    pub board: String,
    /// Check and plan everything, write nothing (no probe needed).
    #[arg(long)]
    pub dry_run: bool,
    /// Flash this ELF instead of building the node firmware.
    #[arg(long)]
    pub elf: Option<PathBuf>,
    /// Linux boards: install over SSH on `user@address` (the agent, its config, models and
    /// a systemd unit; switched atomically, health-checked, rolled back on failure).
    #[arg(long)]
    pub host: Option<String>,
    /// SSH port.
    #[arg(long)]
    pub port: Option<u16>,
    /// SSH private key.
    #[arg(long)]
    pub identity: Option<PathBuf>,
    /// Extra ssh `-o` option (repeatable), e.g. `UserKnownHostsFile=~/.ssh/fleet_hosts`.
    #[arg(long = "ssh-option")]
    pub ssh_options: Vec<String>,
    /// Linux boards: install this agent binary instead of cross-building it.
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// Linux boards: the agent config to install.
    #[arg(long, default_value = "agent/examples/agent.toml")]
    pub config: PathBuf,
    /// Linux boards: install under this folder of the device instead of `/` (a mounted
    /// image, or a test's temporary root).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Linux boards with systemd: seconds the restarted service must stay active.
    #[arg(long, default_value_t = 5)]
    pub settle: u32,
}

pub fn run(args: &FlashArgs) -> Result<ExitCode> {
    let board = Board::find(&sh::root().join("boards"), &args.board)?;
    if board.kind == Kind::Linux {
        let host = args.host.clone().with_context(|| {
            format!(
                "board `{}` is a linux board: the agent is installed over SSH; say where with \
                 --host user@address",
                board.name
            )
        })?;
        ensure!(
            !args.dry_run,
            "--dry-run is for MCU boards; a Linux install checks itself on the device and rolls \
             back on failure"
        );
        let config = if args.config.is_absolute() {
            args.config.clone()
        } else {
            std::env::current_dir()?.join(&args.config)
        };
        let config = if config.exists() {
            config
        } else {
            sh::root().join(&args.config)
        };
        return crate::flash::ssh::run(&crate::flash::ssh::Deploy {
            board: &board,
            host,
            port: args.port,
            identity: args.identity.clone(),
            ssh_options: args.ssh_options.clone(),
            agent: args.agent.clone(),
            config,
            root: args.root.clone(),
            settle_seconds: args.settle,
        });
    }
    #[cfg(feature = "probe")]
    return probe::run(args, &board);
    #[cfg(not(feature = "probe"))]
    anyhow::bail!(
        "this xtask was built without its `probe` feature; run it as `cargo xtask flash ...`, \
         which turns the feature on"
    )
}
