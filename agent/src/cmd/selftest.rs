//! `edge-agent selftest`: whether this installation can run (the install health check).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agent::config::Config;
use anyhow::{Context, Result};
use runtime::LoadOptions;

pub fn selftest(path: &Path) -> Result<ExitCode> {
    let config = Config::load(path)?;
    say!(
        "ok    config {}: device {}/{}, {} pipeline(s)",
        path.display(),
        config.territory,
        config.device,
        config.pipelines.len()
    );
    let key = super::device_key(&config)?;
    say!(
        "ok    device key {}: {}",
        config.key.display(),
        key.verifier()
    );
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data folder {}", config.data_dir.display()))?;
    let probe = config.data_dir.join(".selftest");
    let written = (|| -> std::io::Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&probe)?;
        f.write_all(b"selftest\n")?;
        f.sync_all()?;
        std::fs::remove_file(&probe)
    })();
    written.with_context(|| format!("writing and syncing {}", probe.display()))?;
    say!(
        "ok    data folder {} is writable",
        config.data_dir.display()
    );
    let log_dir = config.data_dir.join("log");
    let vkey = config.key.with_extension("vkey");
    if log_dir.exists() {
        let code = super::audit::audit_verify(&log_dir, &vkey, None)?;
        if code != ExitCode::SUCCESS {
            say!("FAIL  audit log {}", log_dir.display());
            return Ok(code);
        }
    } else {
        say!(
            "ok    audit log {}: none yet (created at the first run)",
            log_dir.display()
        );
    }
    if let Some(m) = &config.mqtt {
        audit::keys::load_verifier(&m.hub_key)
            .with_context(|| format!("the hub's key {}", m.hub_key.display()))?;
        say!(
            "ok    hub key {}; publishing to {}:{}",
            m.hub_key.display(),
            m.host,
            m.port
        );
    }
    let cards: Vec<PathBuf> = config
        .pipelines
        .iter()
        .map(|p| p.card.path.clone())
        .collect();
    // Each model is first prepared in a child process under limits: a model that would
    // exhaust the device's memory or hang the agent is refused here, before the release is
    // switched to, not found by the service's crash loop.
    let code = super::model::vet_cmd(&cards, runtime::vet::Limits::default())?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    let code = super::model::check(&cards, LoadOptions::default())?;
    if code == ExitCode::SUCCESS {
        say!("selftest: this installation can run");
    } else {
        say!("selftest: FAILED");
    }
    Ok(code)
}
