//! `edge-agent publish`: deliver what the log holds to the hub.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use agent::config::Config;
use agent::publish;
use anyhow::{Context, Result};

/// Publishes what the log holds until the hub acknowledged all of it (or `--follow`: forever).
pub fn publish_only(path: &Path, follow: bool) -> Result<ExitCode> {
    let config = Config::load(path)?;
    let Some(m) = &config.mqtt else {
        anyhow::bail!("{}: no [mqtt] section", path.display());
    };
    let hub = audit::keys::load_verifier(&m.hub_key)
        .with_context(|| format!("the hub's key {}", m.hub_key.display()))?;
    let (_, outbox) = super::open_outbox(&config)?;
    let shared = publish::Shared::new(outbox);
    shared.lock().checkpoint()?;
    let stop = AtomicBool::new(!follow);
    let drain = if follow {
        m.drain_timeout
    } else {
        Duration::from_secs(u64::MAX / 4)
    };
    let reporter = agent::status::Reporter::new(&[], &config.data_dir);
    let report = || reporter.report(&shared).to_payload();
    let link = publish::Link {
        mqtt: m,
        hub: &hub,
        territory: &config.territory,
        device: &config.device,
        report: &report,
    };
    let p = publish::run(&shared, &link, &stop, drain)?;
    super::say_published(&p);
    Ok(ExitCode::SUCCESS)
}
