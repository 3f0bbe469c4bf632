//! `hub`: the hub's command line: key generation, device enrolment, the service (MQTT and,
//! with an `[http]` section, the web side), statistics, admin accounts, verification.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hub::config::Config;
use hub::enrolment::{Enrolment, RawDevice};

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
    /// Enrol a device: its verifier key (device.vkey), the model cards it may run, and who
    /// runs it for what, on what legal basis (the public register shows them; a production
    /// hub refuses an enrolment without them).
    Enroll {
        /// The hub's config: its enrolment file and its `mode` (`production` unless it says
        /// `demo`).
        #[arg(long, required_unless_present = "devices")]
        config: Option<PathBuf>,
        /// The enrolment file (the `devices` of the hub's config); created if missing. Without
        /// `--config`, the enrolment is checked as for a production hub.
        #[arg(long)]
        devices: Option<PathBuf>,
        /// Who is responsible for the processing (the data controller), e.g. "Ville de Lyon,
        /// direction de la voirie".
        #[arg(long)]
        controller: Option<String>,
        /// What this device's results are used for, here.
        #[arg(long)]
        purpose: Option<String>,
        /// The legal basis of the processing, e.g. "RGPD art. 6.1.e, mission d'intérêt
        /// public (délibération n° ...)".
        #[arg(long)]
        legal_basis: Option<String>,
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
    /// The stored records of a device as the register publishes them (records.jsonl, what
    /// `hub verify --records` takes): one signed envelope per line.
    Records {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        device: String,
        /// Only each record's entry (canonical JSON), to read: not verifiable without the
        /// signatures.
        #[arg(long, conflicts_with = "checkpoint")]
        entries: bool,
        /// The device's latest checkpoint the hub verified (checkpoint.txt) instead of its
        /// records.
        #[arg(long)]
        checkpoint: bool,
    },
    /// Apply the config's `[retention]` rule now (the service applies it every hour): each
    /// month older than the kept ones is written to the export folder, then removed.
    Retention {
        #[arg(long)]
        config: PathBuf,
    },
    /// Admin accounts of the web side.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// The broker's ACL made from the enrolment (mosquitto `acl_file`): each device may publish
    /// only its own topics; the hub reads them and writes the acks (hub/mosquitto/README.md).
    Acl {
        #[arg(long)]
        config: PathBuf,
        /// The user name (certificate CN) of a hub instance; repeat for several; default: the
        /// config's `mqtt.client_id`.
        #[arg(long = "hub-user")]
        hub_users: Vec<String>,
        /// Write the ACL to this file (atomically) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verify a device's published records against its key(s) and a signed checkpoint (the
    /// files the public register links to); exit 0 only if everything verifies.
    Verify {
        /// The device's verifier key file; repeat for keys retired by a rotation.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// records.jsonl: one record envelope per line, in seq order. Repeat to give the
        /// retention rule's monthly exports first, oldest first, then the current export: they
        /// verify as one log.
        #[arg(long = "records", required = true)]
        records: Vec<PathBuf>,
        /// checkpoint.txt: a checkpoint note signed by the device.
        #[arg(long)]
        checkpoint: PathBuf,
        /// A checkpoint of the device verified earlier: the new one must extend it (the
        /// records must give its root at its size), so that a rewritten history is caught.
        #[arg(long)]
        previous: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an admin account or set its password (read from the first line of stdin);
    /// ends the account's open sessions.
    Passwd {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        user: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logs::init();
    match run(cli) {
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
            if !hub_link::valid_level(&name) {
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
            config,
            devices,
            device_key,
            cards,
            controller,
            purpose,
            legal_basis,
        } => {
            let (devices, mode) = match (&config, devices) {
                (Some(c), given) => {
                    let c = Config::load(c)?;
                    (given.unwrap_or(c.devices), c.mode)
                }
                (None, Some(d)) => (d, hub::config::Mode::Production),
                (None, None) => bail!("give --config (or --devices)"),
            };
            let usage = hub::enrolment::Use::new(
                controller.as_deref(),
                purpose.as_deref(),
                legal_basis.as_deref(),
            );
            enroll(&devices, &device_key, &cards, usage, mode)
        }
        Command::Run { config } => {
            // SIGTERM (systemd's stop) or SIGINT, from the very start (opening a large
            // database can take a while): the messages already received are verified, stored
            // and acknowledged, the broker connection and the database closed, the web server
            // stopped, exit 0. A second signal exits at once (status 130); the database stays
            // consistent (each batch is one transaction).
            let stop = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))
                    .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&stop)))
                    .context("installing the SIGTERM/SIGINT handlers")?;
            }
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
            tracing::info!(
                "hub {}: {} device(s) enrolled, storing into {}",
                config.name,
                enrolment.devices.len(),
                config.db
            );
            let enrolment = Arc::new(RwLock::new(enrolment));
            // The web side first: it migrates the database before the MQTT loop writes to it.
            let web = match hub::web::WebConfig::from_config(&config) {
                Some(w) => {
                    let running = hub::web::start(w, enrolment.clone())?;
                    tracing::info!("hub: dashboard on http://{}/", running.addr);
                    Some(running)
                }
                None => None,
            };
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            let totals = hub::mqtt::serve(&config, &enrolment, &key, &stop)?;
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
            tracing::info!("hub: stopped: {totals:?}");
            if let Some(w) = web {
                w.stop();
            }
            Ok(())
        }
        Command::Retention { config } => {
            let config = Config::load(&config)?;
            let Some(rule) = &config.retention else {
                bail!(
                    "{}: no [retention] section: records are kept forever; add `[retention]` with `months` and `export_dir` to remove old months",
                    config.path.display()
                );
            };
            let conn = hub::db::store::open(&config.db)?;
            let never = std::sync::atomic::AtomicBool::new(false);
            let report = hub::db::retention::run(&conn, rule, hub::mqtt::now_ms(), &never)?;
            if report.busy {
                bail!("another hub instance is applying the retention rule; try again later");
            }
            if report.months.is_empty() {
                println!(
                    "nothing to remove: every stored record is within the {} month(s) kept",
                    rule.months
                );
            }
            for (month, devices, records) in &report.months {
                println!(
                    "{month}: {records} record(s) of {devices} device(s) written to {} and removed",
                    rule.export_dir.join(month).display()
                );
            }
            if report.moved > 0 {
                println!(
                    "{} record(s) stored out of order (a clock behind) kept in the next month",
                    report.moved
                );
            }
            Ok(())
        }
        Command::Stats { config, json } => {
            let config = Config::load(&config)?;
            let conn = hub::db::store::open(&config.db)?;
            let stats = hub::db::store::stats(&conn)?;
            if json {
                println!("{}", serde_json::to_string(&stats)?);
                return Ok(());
            }
            for d in &stats.devices {
                println!(
                    "device {}: {} records stored, {} verified ({}), {} duplicates ignored, {} held, last verified checkpoint {}, root {}",
                    d.device,
                    d.stored,
                    d.next_seq,
                    audit::seqs(0, d.next_seq),
                    d.duplicates,
                    d.held,
                    d.checkpoint_size
                        .map_or("none".into(), |s| format!("at size {s}")),
                    d.root
                );
            }
            println!("{} alarm(s)", stats.alarms.len());
            for a in &stats.alarms {
                let from = match (&a.device, &a.source) {
                    (Some(d), _) => format!("device {d}"),
                    (None, Some(s)) => format!("from {s}"),
                    (None, None) => "device -".to_owned(),
                };
                println!(
                    "  {} ({}) {from} seq {}{}: {}",
                    a.kind,
                    a.severity.name(),
                    a.seq.map_or("-".into(), |s| s.to_string()),
                    if a.count > 1 {
                        format!(", {} messages", a.count)
                    } else {
                        String::new()
                    },
                    a.detail
                );
            }
            Ok(())
        }
        Command::Records {
            config,
            device,
            entries,
            checkpoint,
        } => {
            let config = Config::load(&config)?;
            let conn = hub::db::store::open(&config.db)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            if checkpoint {
                let Some(note) = hub::db::store::checkpoint_note(&conn, &device)? else {
                    bail!(
                        "the hub holds no verified checkpoint of {device:?} (not yet received, or no such device)"
                    );
                };
                out.write_all(note.as_bytes())?;
            } else if entries {
                hub::db::store::for_each_record(&conn, &device, 0, |r| {
                    out.write_all(&r.entry)?;
                    out.write_all(b"\n")?;
                    Ok::<_, anyhow::Error>(true)
                })?;
            } else {
                hub::db::store::for_each_export_line(&conn, &device, |line| {
                    out.write_all(line)?;
                    out.write_all(b"\n")?;
                    Ok::<_, anyhow::Error>(())
                })?;
            }
            out.flush()?;
            Ok(())
        }
        Command::Acl {
            config,
            hub_users,
            out,
        } => {
            let config = Config::load(&config)?;
            let enrolment = Enrolment::load(&config.devices)?;
            let users = if hub_users.is_empty() {
                vec![config.mqtt.client_id.clone()]
            } else {
                hub_users
            };
            let acl = enrolment.broker_acl(&users).map_err(anyhow::Error::msg)?;
            match out {
                None => print!("{acl}"),
                Some(path) => {
                    let tmp = path.with_extension("tmp");
                    std::fs::write(&tmp, acl)
                        .and_then(|()| std::fs::rename(&tmp, &path))
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!(
                        "wrote {} ({} device(s)); reload the broker: systemctl reload mosquitto",
                        path.display(),
                        enrolment.devices.len()
                    );
                }
            }
            Ok(())
        }
        Command::Admin(AdminCommand::Passwd { config, user }) => {
            let config = Config::load(&config)?;
            let conn = hub::db::store::open(&config.db)?;
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            let password = line.trim_end_matches(['\r', '\n']);
            hub::auth::set_password(&conn, &user, password, hub::mqtt::now_ms())?;
            println!("password set for admin `{user}` in {}", config.db);
            Ok(())
        }
        Command::Verify {
            keys,
            records,
            checkpoint,
            previous,
        } => {
            let keys = keys
                .iter()
                .map(|k| audit::keys::load_verifier(k).with_context(|| k.display().to_string()))
                .collect::<Result<Vec<_>>>()?;
            let read = |p: &Path| {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
            };
            let mut text = String::new();
            for r in &records {
                text.push_str(&read(r)?);
                if !text.ends_with('\n') {
                    text.push('\n');
                }
            }
            let previous = match &previous {
                Some(p) => Some(
                    verify::Previous::from_note(&keys, &read(p)?)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
                ),
                None => None,
            };
            match verify::export_since(&keys, &text, &read(&checkpoint)?, previous.as_ref()) {
                Ok(v) => {
                    let removed = if v.from_seq > 0 {
                        format!(
                            " from seq {} (the {} before it are removed, their Merkle frontier given)",
                            v.from_seq, v.from_seq
                        )
                    } else {
                        String::new()
                    };
                    println!(
                        "OK: {} record(s) signed by the device{removed}; the signed checkpoint at size {} matches their root {}",
                        v.records, v.checkpoint_size, v.root
                    );
                    if let (Some(first), Some((last, length_ms))) =
                        (&v.first_window, &v.last_window)
                    {
                        let end = last
                            .parse::<jiff::Timestamp>()
                            .ok()
                            .and_then(|t| {
                                t.checked_add(jiff::SignedDuration::from_millis(*length_ms as i64))
                                    .ok()
                            })
                            .map(|t| t.to_string())
                            .unwrap_or_else(|| format!("{last} + {length_ms} ms"));
                        println!("windows: from {first} to {end} (UTC)");
                    }
                    for m in &v.models {
                        let span = if m.records == 1 {
                            format!("1 record, seq {}", m.first_seq)
                        } else {
                            format!(
                                "{} records, from seq {} to seq {}",
                                m.records, m.first_seq, m.last_seq
                            )
                        };
                        println!(
                            "model {} version {} (sha256 {}): {span}",
                            m.id, m.version, m.sha256
                        );
                    }
                    match (&previous, v.previous) {
                        (Some(p), Some(verify::Extends::ByRecords)) => println!(
                            "the checkpoint extends the previous one (size {}): the records give its root",
                            p.size
                        ),
                        (Some(p), _) => println!(
                            "the previous checkpoint (size {}) was not compared: the records before it are not given",
                            p.size
                        ),
                        (None, _) => {}
                    }
                    Ok(())
                }
                Err(f) => bail!("verification failed [{}]: {}", f.problem.kind(), f.problem),
            }
        }
    }
}

fn enroll(
    devices: &Path,
    device_key: &Path,
    cards: &[PathBuf],
    usage: hub::enrolment::Use,
    mode: hub::config::Mode,
) -> Result<()> {
    let key = audit::keys::load_verifier(device_key)?;
    let Some((territory, device)) = hub::enrolment::device_of_key(&key) else {
        bail!(
            "{}: the key name `{}` is not a device origin `iat/TERRITORY/DEVICE`",
            device_key.display(),
            key.name()
        );
    };
    // The card's public metadata goes into the enrolment: the register shows it.
    let mut models = Vec::new();
    for card in cards {
        models.push(hub::enrolment::cards::load(card)?);
    }
    // Re-enrolling keeps what the register already says of the device.
    let previous = Enrolment::load(devices)?.devices.remove(&device);
    let old = previous
        .as_ref()
        .map(|p| p.usage.clone())
        .unwrap_or_default();
    let usage = hub::enrolment::Use {
        controller: usage.controller.or(old.controller),
        purpose: usage.purpose.or(old.purpose),
        legal_basis: usage.legal_basis.or(old.legal_basis),
    };
    if let Err(e) = usage.check(mode == hub::config::Mode::Production) {
        bail!(
            "{territory}/{device} not enrolled: {e}; give them with --controller, --purpose and --legal-basis"
        );
    }
    hub::enrolment::enroll(
        devices,
        RawDevice {
            id: device.clone(),
            territory: territory.clone(),
            key: key.to_string(),
            enrolled: Some(
                previous
                    .as_ref()
                    .and_then(|p| p.enrolled.clone())
                    .unwrap_or_else(|| hub::dates::format(hub::mqtt::now_ms())),
            ),
            site: previous.as_ref().and_then(|p| p.site.clone()),
            retired_keys: previous.map(|p| p.retired_keys).unwrap_or_default(),
            models,
            controller: usage.controller,
            purpose: usage.purpose,
            legal_basis: usage.legal_basis,
        },
    )?;
    println!("enrolled {territory}/{device} in {}", devices.display());
    Ok(())
}
