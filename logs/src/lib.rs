//! Diagnostics of the services, set up one way for the agent and the hub: warnings, errors
//! and the service's progress go through `tracing` to stderr, filtered by `RUST_LOG` (default
//! `info`). Under systemd (`JOURNAL_STREAM` set) lines carry no colours, no time stamp and no
//! target: the journal adds its own. This crate must never write to stdout, which is what a
//! command reports to the person who ran it.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// Installs the subscriber; call once, first thing in `main`.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        fmt.with_ansi(false)
            .without_time()
            .with_target(false)
            .init();
    } else {
        fmt.compact()
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
}
