//! `edge-agent run`: the service: sources -> models -> aggregates -> audit log, with delivery.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use agent::config::Config;
use agent::{publish, service};
use anyhow::{Context, Result};

pub fn run_agent(path: &Path) -> Result<ExitCode> {
    let config = Config::load(path)?;
    let (log_dir, outbox) = super::open_outbox(&config)?;
    let start_size = outbox.log().size();
    tracing::info!(
        "edge-agent {}/{}: {} pipeline(s), audit log {} ({start_size} records)",
        config.territory,
        config.device,
        config.pipelines.len(),
        log_dir.display()
    );
    if let Some(m) = &config.mqtt {
        tracing::info!("publishing to {}:{}", m.host, m.port);
    }
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_message("running pipelines");
    let clock = service::SystemClock::new();
    let shared = publish::Shared::new(outbox);
    let stop = AtomicBool::new(false);
    let hub_key = match &config.mqtt {
        Some(m) => Some(
            audit::keys::load_verifier(&m.hub_key)
                .with_context(|| format!("the hub's key {}", m.hub_key.display()))?,
        ),
        None => None,
    };
    let (summary, checkpoint, published) = std::thread::scope(|scope| {
        let publisher = match (&config.mqtt, &hub_key) {
            (Some(m), Some(hub)) => Some(scope.spawn(|| {
                publish::run(
                    &shared,
                    m,
                    hub,
                    &config.territory,
                    &config.device,
                    &stop,
                    m.drain_timeout,
                )
            })),
            _ => None,
        };
        let mut writer = publish::SharedOutbox(shared.clone());
        let summary = service::run(&config, &clock, &mut writer, &mut |seq, _| {
            bar.set_message(format!("record {seq} appended"));
            bar.tick();
        });
        bar.finish_and_clear();
        // Whatever happened, what was appended is covered by a signed checkpoint.
        let checkpoint = shared.lock().checkpoint();
        stop.store(true, Ordering::Relaxed);
        let published = publisher.map(|p| p.join());
        (summary, checkpoint, published)
    });
    let checkpoint = checkpoint.context("signing the final checkpoint")?;
    let summary = summary?;
    for (name, frames) in &summary.frames {
        say!("pipeline {name}: {frames} frames or chunks analysed");
    }
    say!(
        "{} records appended to {} (seq {}..{})",
        summary.records,
        log_dir.display(),
        start_size,
        shared.lock().log().size()
    );
    say!("latest signed checkpoint:\n{}", checkpoint.trim_end());
    match published {
        None => {}
        Some(Err(_)) => anyhow::bail!("the publisher thread stopped unexpectedly"),
        Some(Ok(p)) => {
            let p = p.context("publishing to the hub")?;
            super::say_published(&p);
            if p.acked < p.size {
                say!(
                    "{} records wait in the outbox for the hub; they are sent at the next start",
                    p.size - p.acked
                );
            }
        }
    }
    say!(
        "verify: edge-agent audit verify {} --pubkey {}",
        log_dir.display(),
        config.key.with_extension("vkey").display()
    );
    Ok(ExitCode::SUCCESS)
}
