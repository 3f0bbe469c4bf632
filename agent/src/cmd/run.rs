//! `edge-agent run`: the service: sources -> models -> aggregates -> audit log, with delivery.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agent::config::Config;
use agent::health::PipelineHealth;
use agent::stop::Stop;
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
    // SIGTERM (systemd's stop) or SIGINT (Ctrl-C): close the windows, sign, hand over, exit 0.
    let stop = Stop::new();
    stop.on_signals()
        .context("installing the SIGTERM/SIGINT handler")?;
    let health = service::health_of(&config);
    let publisher_stop = AtomicBool::new(false);
    let hub_key = match &config.mqtt {
        Some(m) => Some(
            audit::keys::load_verifier(&m.hub_key)
                .with_context(|| format!("the hub's key {}", m.hub_key.display()))?,
        ),
        None => None,
    };
    let reporter = agent::status::Reporter::new(&health, &config.data_dir);
    let report = || reporter.report(&shared).to_payload();
    let (summary, checkpoint, published) = std::thread::scope(|scope| {
        let publisher = match (&config.mqtt, &hub_key) {
            (Some(m), Some(hub)) => Some(scope.spawn(|| {
                let link = publish::Link {
                    mqtt: m,
                    hub,
                    territory: &config.territory,
                    device: &config.device,
                    report: &report,
                };
                publish::run(&shared, &link, &publisher_stop, m.drain_timeout)
            })),
            _ => None,
        };
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let service = {
            let (config, clock, stop, health, shared, bar) =
                (&config, &clock, &*stop, &health, &shared, &bar);
            scope.spawn(move || {
                let mut writer = publish::SharedOutbox(shared.clone());
                let summary =
                    service::run(config, clock, stop, health, &mut writer, &mut |seq, _| {
                        bar.set_message(format!("record {seq} appended"));
                        bar.tick();
                    });
                let _ = done_tx.send(());
                summary.map_err(anyhow::Error::from)
            })
        };
        supervise(&stop, &health, &done_rx);
        let summary = service
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the service thread panicked")));
        bar.finish_and_clear();
        // Whatever happened, what was appended is covered by a signed checkpoint.
        let checkpoint = shared.lock().checkpoint();
        publisher_stop.store(true, Ordering::Relaxed);
        let published = publisher.map(|p| p.join());
        (summary, checkpoint, published)
    });
    let checkpoint = checkpoint.context("signing the final checkpoint")?;
    let summary = summary?;
    for h in &health {
        let count = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        say!(
            "pipeline {}: {} frames or chunks analysed ({} captured, {} dropped for newer ones, {} source restarts)",
            h.name,
            count(&h.inferred),
            count(&h.captured),
            count(&h.dropped),
            count(&h.restarts)
        );
        let (handling, network) = (count(&h.handling_us), count(&h.network_us));
        let frames = count(&h.inferred);
        if network > 0 && frames > 0 {
            say!(
                "pipeline {}: {:.2} ms per frame in the network, {:.2} ms around it (resize, normalisation, decoding, aggregation): {:.1}% of the network's time",
                h.name,
                network as f64 / frames as f64 / 1000.0,
                handling.saturating_sub(network) as f64 / frames as f64 / 1000.0,
                handling.saturating_sub(network) as f64 * 100.0 / network as f64
            );
        }
    }
    say!(
        "{} records appended to {} ({})",
        summary.records,
        log_dir.display(),
        audit::seqs(start_size, shared.lock().log().size())
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

/// Talks to systemd while the service runs (`Type=notify`): READY once every pipeline has
/// loaded its model, WATCHDOG while every pipeline's loop keeps turning (a pipeline stuck in
/// a model or a read stops the petting, and systemd restarts the service), STOPPING on a stop
/// request. Outside systemd the notifications go nowhere.
fn supervise(stop: &Stop, health: &[Arc<PipelineHealth>], done: &std::sync::mpsc::Receiver<()>) {
    let watchdog = sd_notify::watchdog_enabled();
    // Pet at a third of the period; look at the pipelines at least every second.
    let tick = watchdog.map_or(Duration::from_secs(1), |w| {
        (w / 3).min(Duration::from_secs(1))
    });
    let mut ready = false;
    let mut stopping = false;
    let notify = |state: sd_notify::NotifyState| {
        if let Err(e) = sd_notify::notify(&[state]) {
            tracing::debug!("systemd notification: {e}");
        }
    };
    loop {
        match done.recv_timeout(tick) {
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                // Pipelines may close faster than a tick: systemd still hears of the stop.
                if stop.requested() && !stopping {
                    notify(sd_notify::NotifyState::Stopping);
                }
                return;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if !ready && health.iter().all(|h| h.started()) {
            ready = true;
            notify(sd_notify::NotifyState::Ready);
        }
        if stop.requested() && !stopping {
            stopping = true;
            notify(sd_notify::NotifyState::Stopping);
        }
        if let Some(w) = watchdog {
            let limit = w.as_millis() as u64;
            match health.iter().find(|h| h.since_beat_ms() > limit) {
                None => notify(sd_notify::NotifyState::Watchdog),
                Some(h) => tracing::error!(
                    "pipeline `{}` has not moved for {} ms: no longer petting systemd's watchdog",
                    h.name,
                    h.since_beat_ms()
                ),
            }
        }
    }
}
