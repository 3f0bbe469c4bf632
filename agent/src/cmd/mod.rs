//! One module per command of `edge-agent`; `main.rs` only parses the arguments.

pub mod audit;
pub mod keygen;
pub mod model;
pub mod publish;
pub mod run;
pub mod selftest;

use std::path::{Path, PathBuf};

use agent::config::Config;
use anyhow::{Context, Result};
use outbox::AuditOutbox;

/// The device's private key, or an error saying how to create it.
pub fn device_key(config: &Config) -> Result<::audit::SignerKey> {
    ::audit::keys::load_private(&config.key).with_context(|| {
        format!(
            "the device key (create it with `edge-agent keygen --dir {} --device {} --territory {}`)",
            config.key.parent().unwrap_or(Path::new(".")).display(),
            config.device,
            config.territory
        )
    })
}

/// Loads the device key and opens the audit log (`<data_dir>/log`) as the outbox: what
/// `run` and `publish` share.
pub fn open_outbox(config: &Config) -> Result<(PathBuf, AuditOutbox)> {
    let key = device_key(config)?;
    let log_dir = config.data_dir.join("log");
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let outbox = AuditOutbox::open(
        &log_dir,
        &config.device,
        &config.territory,
        &key,
        config.checkpoint_every,
        config.outbox_max_bytes,
    )
    .with_context(|| format!("opening the audit log {}", log_dir.display()))?;
    Ok((log_dir, outbox))
}

/// What a delivery did, for the person who ran `run` or `publish`.
pub fn say_published(p: &agent::publish::PublishStats) {
    say!(
        "published {} messages ({} resend rounds, {} connections); the hub acknowledged {} of {} records",
        p.published,
        p.resends,
        p.connections,
        p.acked,
        p.size
    );
}
