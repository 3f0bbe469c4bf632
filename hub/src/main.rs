//! `hub`: the hub's command line: key generation, device enrolment, the service, statistics.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hub::config::{self, Config, Enrolment, RawDevice, RawModel};

#[derive(Parser)]
#[command(
    name = "hub",
    version,
    about = "Verifies, stores and acknowledges device aggregates"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate the hub's Ed25519 key pair (signs acks): DIR/hub.key (0600) and DIR/hub.vkey.
    Keygen {
        #[arg(long)]
        dir: PathBuf,
        /// The hub's name (its key is `iat-hub/NAME`).
        #[arg(long)]
        name: String,
    },
    /// Enrol a device: its verifier key (device.vkey) and the model cards it may run.
    Enroll {
        /// The enrolment file (the `devices` of the hub's config); created if missing.
        #[arg(long)]
        devices: PathBuf,
        /// The device's verifier key file; the device and territory are read from its name.
        #[arg(long)]
        device_key: PathBuf,
        /// Model cards (card.toml) whose results the device may publish.
        #[arg(long = "card")]
        cards: Vec<PathBuf>,
    },
    /// Subscribe, verify, store and acknowledge until interrupted.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// What the hub stored: records per device, alarms.
    Stats {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// The stored records of a device, one canonical JSON record per line.
    Records {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        device: String,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Keygen { dir, name } => {
            if !wire::valid_level(&name) {
                bail!("--name: 1 to 64 of letters, digits, '-', '_', '.'");
            }
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let key = audit::keys::generate(
                &dir.join("hub.key"),
                &dir.join("hub.vkey"),
                &format!("iat-hub/{name}"),
            )?;
            println!("wrote {}/hub.key (mode 0600) and hub.vkey", dir.display());
            println!("verifier key (give it to devices): {}", key.verifier());
            Ok(())
        }
        Command::Enroll {
            devices,
            device_key,
            cards,
        } => enroll(&devices, &device_key, &cards),
        Command::Run { config } => {
            let config = Config::load(&config)?;
            let enrolment = Enrolment::load(&config.devices)?;
            let key = audit::keys::load_private(&config.key).with_context(|| {
                format!(
                    "the hub key (create it with `hub keygen --dir DIR --name {}`)",
                    config.name
                )
            })?;
            if key.name() != config.key_name() {
                bail!(
                    "{}: the key is named `{}`, this hub is `{}`",
                    config.key.display(),
                    key.name(),
                    config.key_name()
                );
            }
            eprintln!(
                "hub {}: {} device(s) enrolled, storing into {}",
                config.name,
                enrolment.devices.len(),
                config.db.display()
            );
            let stop = Arc::new(AtomicBool::new(false));
            let totals = hub::service::serve(&config, &enrolment, &key, &stop)?;
            eprintln!("hub: {totals:?}");
            Ok(())
        }
        Command::Stats { config, json } => {
            let config = Config::load(&config)?;
            let conn = hub::store::open(&config.db)?;
            let stats = hub::store::stats(&conn)?;
            if json {
                println!("{}", serde_json::to_string(&stats)?);
                return Ok(());
            }
            for d in &stats.devices {
                println!(
                    "device {}: {} records stored (seq 0..{}), {} duplicates ignored, {} held, last verified checkpoint {}, root {}",
                    d.device,
                    d.stored,
                    d.next_seq,
                    d.duplicates,
                    d.held,
                    d.checkpoint_size
                        .map_or("none".into(), |s| format!("at size {s}")),
                    d.root
                );
            }
            println!("{} alarm(s)", stats.alarms.len());
            for a in &stats.alarms {
                println!(
                    "  {} device {} seq {}: {}",
                    a.kind,
                    a.device.as_deref().unwrap_or("-"),
                    a.seq.map_or("-".into(), |s| s.to_string()),
                    a.detail
                );
            }
            Ok(())
        }
        Command::Records { config, device } => {
            let config = Config::load(&config)?;
            let conn = hub::store::open(&config.db)?;
            for r in hub::store::records(&conn, &device)? {
                println!("{}", String::from_utf8_lossy(&r.entry));
            }
            Ok(())
        }
    }
}

fn enroll(devices: &Path, device_key: &Path, cards: &[PathBuf]) -> Result<()> {
    let key = audit::keys::load_verifier(device_key)?;
    let Some((territory, device)) = key
        .name()
        .strip_prefix("iat/")
        .and_then(|r| r.split_once('/'))
    else {
        bail!(
            "{}: the key name `{}` is not a device origin `iat/TERRITORY/DEVICE`",
            device_key.display(),
            key.name()
        );
    };
    let mut models = Vec::new();
    for card in cards {
        let text =
            std::fs::read_to_string(card).with_context(|| format!("reading {}", card.display()))?;
        let t: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", card.display()))?;
        let field = |f: &str| {
            t.get(f)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
                .with_context(|| format!("{}: no `{f}`", card.display()))
        };
        models.push(RawModel {
            id: field("id")?,
            sha256: field("sha256")?,
        });
    }
    config::enroll(
        devices,
        RawDevice {
            id: device.to_owned(),
            territory: territory.to_owned(),
            key: key.to_string(),
            models,
        },
    )?;
    println!("enrolled {territory}/{device} in {}", devices.display());
    Ok(())
}
