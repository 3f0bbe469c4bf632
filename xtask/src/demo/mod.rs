//! `cargo xtask demo`: the whole system on one machine, on embedded defaults: a device key,
//! the hub's key and enrolment, an embedded MQTT broker ([`broker`], rumqttd), the hub
//! ([`hub`]) and the agent on the bundled models and samples; then what the hub stored and
//! what a local authority reads on the device.

pub mod broker;
pub mod hub;

use std::process::Command;

use anyhow::{Context, Result};

use crate::sh;

/// The README's main command: the whole system on embedded defaults. A device key and a hub
/// key; an embedded MQTT broker (rumqttd, in this process); the hub verifying and storing;
/// the agent replaying the bundled samples through two real models into its signed audit log
/// and publishing it; then what the hub stored, the log verified as a local authority would,
/// and every model checked against onnxruntime's outputs.
pub fn demo() -> Result<()> {
    let (agent, hub) = crate::models::binaries()?;
    let root = sh::root();
    let demo = sh::target_dir().join("demo");
    if demo.exists() {
        std::fs::remove_dir_all(&demo).with_context(|| format!("cleaning {}", demo.display()))?;
    }
    std::fs::create_dir_all(&demo)?;
    let keys = demo.join("keys");
    println!(
        "== 1. a device key (Ed25519; the private half never leaves the device) and the hub's key"
    );
    crate::demo::hub::device_keygen(&agent, &keys, "demo-001", "fr-demo")?;
    let hub_dir = demo.join("hub");
    crate::demo::hub::hub_keygen(&hub, &hub_dir, "demo-hub")?;
    println!("== 2. the hub enrols the device with the model cards it may run");
    crate::demo::hub::enroll(
        &hub,
        &hub_dir,
        &keys.join("device.vkey"),
        &[
            root.join("models/silero-vad-16k/card.toml"),
            root.join("models/centerface-int8/card.toml"),
        ],
    )?;
    let port = crate::demo::broker::start()?;
    println!("== 3. an embedded MQTT broker (rumqttd) on 127.0.0.1:{port}; the hub subscribes");
    // The hub's web side (dashboard, API, register) on a free loopback port.
    let http_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let hub_proc = crate::demo::hub::LocalHub::start(
        &hub,
        &hub_dir,
        "demo-hub",
        port,
        &format!(
            "[http]\nlisten = \"127.0.0.1:{http_port}\"\ncards = \"{}\"\n",
            root.join("models").display()
        ),
    )?;
    let hub_config = hub_proc.config.clone();
    println!("   the hub's dashboard: http://127.0.0.1:{http_port}/ (while it runs)");
    // The example config, with its paths pointing here, publishing to the embedded broker.
    let example = std::fs::read_to_string(root.join("agent/examples/agent.toml"))?;
    let config = example
        .replace("../../models/", &format!("{}/models/", root.display()))
        .replace("../../var/demo", &demo.join("data").display().to_string())
        .replace("../../var/keys", &keys.display().to_string())
        + &format!(
            "\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nhub_key = \"{}\"\n",
            hub_dir.join("hub.vkey").display()
        );
    let config_path = demo.join("agent.toml");
    std::fs::write(&config_path, config)?;
    println!(
        "== 4. the agent replays the bundled samples: speech -> Silero VAD, people -> CenterFace int8,"
    );
    println!("      appends each window's record to its signed log and publishes it to the hub");
    println!("      (frames and audio stay in memory; only aggregates reach the log and the wire)");
    let ran = sh::run(
        Command::new(&agent)
            .args(["run", "--config"])
            .arg(&config_path),
    );
    drop(hub_proc);
    ran?;
    println!(
        "== 5. what the hub stored, after verifying every signature, the order and the checkpoints"
    );
    sh::run(
        Command::new(&hub)
            .args(["stats", "--config"])
            .arg(&hub_config),
    )?;
    let records = sh::output(
        Command::new(&hub)
            .args(["records", "--device", "demo-001", "--config"])
            .arg(&hub_config),
    )?;
    println!("   first stored records (canonical JSON, as published):");
    for line in records.lines().take(3) {
        println!("   {line}");
    }
    let log = demo.join("data/log");
    let vkey = keys.join("device.vkey");
    println!(
        "== 6. what a local authority reads on the device: the records, verified against its key"
    );
    sh::run(
        Command::new(&agent)
            .args(["audit", "show"])
            .arg(&log)
            .arg("--pubkey")
            .arg(&vkey),
    )?;
    println!("== 7. every bundled model against onnxruntime's outputs");
    crate::models::fetch()?;
    crate::models::check_with(&agent)?;
    println!("== demo done. Look at:");
    println!(
        "   {}               the agent's config",
        config_path.display()
    );
    println!(
        "   {}                the audit log (docs/audit-format.md)",
        log.display()
    );
    println!(
        "   {} stats --config {}",
        hub.display(),
        hub_config.display()
    );
    println!(
        "   {} run --config {}\n      keeps the hub running: its dashboard, API and public register at http://127.0.0.1:{http_port}/",
        hub.display(),
        hub_config.display()
    );
    println!(
        "   {} audit show {} --pubkey {} --json",
        agent.display(),
        log.display(),
        vkey.display()
    );
    Ok(())
}
