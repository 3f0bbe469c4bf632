//! `cargo xtask build --board NAME`: builds the node firmware for a board described by
//! `boards/NAME.toml` and reports its flash and RAM use from the ELF.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail, ensure};

use crate::sh;
use boards::{Board, Kind, Memory};
use object::{Object, ObjectSection, SectionFlags, SectionKind};

#[derive(clap::Args)]
pub struct BuildArgs {
    /// Board file name in boards/ (without `.toml`).
    #[arg(long, default_value = "lm3s6965evb")]
    pub board: String,
    /// Build with the dev profile instead of release.
    #[arg(long)]
    pub debug: bool,
}

pub fn run(args: &BuildArgs) -> Result<ExitCode> {
    let board = load_board(&args.board)?;
    let built = build(&board, What::Node, !args.debug)?;
    let elf = &built[0].1;
    let usage = usage(
        elf,
        board.memory.as_ref().context("mcu board without memory")?,
    )?;
    println!("{}", elf.display());
    println!("{}", usage.report(&board.name));
    Ok(ExitCode::SUCCESS)
}

/// The repository root (xtask sits one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

pub fn load_board(name: &str) -> Result<Board> {
    let board = Board::find(&repo_root().join("boards"), name)?;
    ensure!(
        board.kind == Kind::Mcu,
        "board `{name}` is a {} board: `xtask build` here builds firmware for mcu boards",
        board.kind
    );
    Ok(board)
}

/// The firmware's own target directory: apart from the host workspace's, so a firmware
/// build never waits on (or invalidates) a host build.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("firmware"),
        None => repo_root().join("firmware/target"),
    }
}

pub enum What {
    /// The node application.
    Node,
    /// The on-target test binaries.
    Tests,
}

/// Builds firmware for `board`; returns (name, ELF path) of each executable.
pub fn build(board: &Board, what: What, release: bool) -> Result<Vec<(String, PathBuf)>> {
    sh::ensure_rust_target(&board.target)?;
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(repo_root().join("firmware"))
        .args(["build", "--message-format=json-render-diagnostics"])
        .args(["--target", &board.target])
        .arg("--target-dir")
        .arg(target_dir())
        .env("IAT_BOARD", &board.name)
        .env_remove("CARGO_TARGET_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    match what {
        What::Node => cmd.args(["--bin", "node"]),
        What::Tests => cmd.arg("--tests"),
    };
    if release {
        cmd.arg("--release");
    }
    if !board.firmware_features.is_empty() {
        cmd.args(["--features", &board.firmware_features.join(",")]);
    }
    let output = cmd.output().context("running cargo for the firmware")?;
    ensure!(
        output.status.success(),
        "firmware build for `{}` failed",
        board.name
    );
    let mut built = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let kinds = msg["target"]["kind"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let wanted = match what {
            What::Node => "bin",
            // `--tests` also builds the binary, which integration tests may run.
            What::Tests => "test",
        };
        if msg["reason"] == "compiler-artifact"
            && kinds.iter().any(|k| k == wanted)
            && let Some(exe) = msg["executable"].as_str()
        {
            let name = msg["target"]["name"].as_str().unwrap_or("?").to_owned();
            built.push((name, PathBuf::from(exe)));
        }
    }
    if built.is_empty() {
        bail!(
            "the firmware build for `{}` produced no executable",
            board.name
        );
    }
    Ok(built)
}

/// Flash and RAM taken by an ELF, against the board's regions.
pub struct Usage {
    pub flash: u64,
    pub ram: u64,
    pub memory: Memory,
}

impl Usage {
    pub fn report(&self, board: &str) -> String {
        let pct = |used: u64, total: u64| used as f64 * 100.0 / total as f64;
        format!(
            "{board}: flash {} B of {} B ({:.1}%), static RAM {} B of {} B ({:.1}%; the stack takes the rest)",
            self.flash,
            self.memory.flash.length,
            pct(self.flash, self.memory.flash.length),
            self.ram,
            self.memory.ram.length,
            pct(self.ram, self.memory.ram.length),
        )
    }
}

/// Sums allocated sections by region: flash holds code, read-only data and the initial
/// values of `.data`; RAM holds `.data`, `.bss` and `.uninit`. Sections outside both
/// regions are an error (the ELF does not fit the board).
pub fn usage(elf: &Path, memory: &Memory) -> Result<Usage> {
    let bytes = std::fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
    let file =
        object::File::parse(&*bytes).with_context(|| format!("parsing {}", elf.display()))?;
    const SHF_ALLOC: u64 = 0x2;
    let (mut flash, mut ram) = (0, 0);
    for section in file.sections() {
        let SectionFlags::Elf { sh_flags } = section.flags() else {
            continue;
        };
        if sh_flags & SHF_ALLOC == 0 || section.size() == 0 {
            continue;
        }
        let (start, size) = (section.address(), section.size());
        let name = section.name().unwrap_or("?");
        if memory.flash.contains(start) {
            ensure!(
                start + size <= memory.flash.end(),
                "section {name} overflows flash"
            );
            flash += size;
        } else if memory.ram.contains(start) {
            ensure!(
                start + size <= memory.ram.end(),
                "section {name} overflows RAM"
            );
            ram += size;
            if section.kind() != SectionKind::UninitializedData {
                flash += size; // its initial values are copied from flash at reset
            }
        } else {
            bail!("section {name} at {start:#x} is outside the board's flash and RAM");
        }
    }
    ensure!(
        flash <= memory.flash.length,
        "{flash} B do not fit in flash"
    );
    Ok(Usage {
        flash,
        ram,
        memory: *memory,
    })
}
