//! `cargo xtask qemu agent|model --board B`: the cross-built agent of a Linux board under QEMU
//! user-mode emulation (`qemu-aarch64 -cpu cortex-a72 -L <sysroot>`). `agent` replays the
//! bundled samples on the emulated agent and on the host's, and requires the two audit logs
//! to hold the same records; `model` runs `edge-agent model check` under emulation, which is
//! how a developer tests a model on the board's kernels. Without a subcommand, `cargo xtask
//! qemu` runs the firmware of an emulated MCU board (`qemu.rs`).

pub mod firmware;
pub mod system;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use boards::{Board, Kind, Qemu};

use crate::sh;

/// No emulated run here takes this long; past it the run is killed and fails.
const HANG_LIMIT: Duration = Duration::from_secs(900);

/// `cargo xtask qemu [agent|model]`: the firmware by default.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct QemuJob {
    #[command(subcommand)]
    pub linux: Option<LinuxJob>,
    #[command(flatten)]
    pub firmware: crate::qemu::firmware::QemuArgs,
}

#[derive(clap::Subcommand)]
pub enum LinuxJob {
    /// Replay the bundled samples on the emulated agent and on the host's; the records of
    /// both audit logs must be identical.
    Agent {
        /// A Linux board file in boards/ with a `[qemu]` user-mode section.
        #[arg(long, default_value = "raspberry-pi-4")]
        board: String,
    },
    /// The board's whole OS under qemu-system (Debian's kernel, BusyBox init): the agent
    /// started at boot as a service, publishing to a broker and hub on the host.
    System {
        /// A Linux board file in boards/ with a `[vm]` section.
        #[arg(long, default_value = "raspberry-pi-4")]
        board: String,
    },
    /// `edge-agent model check CARD...` under emulation.
    Model {
        #[arg(required = true)]
        cards: Vec<PathBuf>,
        #[arg(long, default_value = "raspberry-pi-4")]
        board: String,
    },
}

pub fn run(job: &QemuJob) -> Result<ExitCode> {
    match &job.linux {
        None => crate::qemu::firmware::run(&job.firmware),
        Some(LinuxJob::Agent { board }) => compare(&load(board)?),
        Some(LinuxJob::Model { cards, board }) => model_check(&load(board)?, cards),
        Some(LinuxJob::System { board }) => crate::qemu::system::run(&load(board)?),
    }
}

fn load(name: &str) -> Result<Board> {
    let board = Board::find(&sh::root().join("boards"), name)?;
    ensure!(
        board.kind == Kind::Linux,
        "board `{name}` is a {} board: `qemu agent` and `qemu model` run the agent of linux boards \
         (`cargo xtask qemu --board {name}` runs firmware)",
        board.kind
    );
    Ok(board)
}

/// The emulator of a Linux board: `qemu-<arch> -cpu <cpu> -L <sysroot> <agent>`.
pub struct Emulator {
    binary: String,
    cpu: String,
    /// `-L`: the cross C library (`None`: the host's own architecture, `/`).
    sysroot: Option<PathBuf>,
    /// The cross C library's root, for the guest's library path.
    cross: &'static str,
    agent: PathBuf,
}

impl Emulator {
    /// Cross-builds the agent (device profile) and checks the emulator is installed.
    pub fn prepare(board: &Board) -> Result<Emulator> {
        let Some(Qemu::User { binary, cpu }) = &board.qemu else {
            bail!(
                "board `{}` has no user-mode `[qemu]` section: it cannot be emulated",
                board.name
            );
        };
        sh::ensure_tools(&[(binary.as_str(), "qemu-user")])?;
        let built = crate::build::build_agent(board, true)?;
        println!("{}", built.report(board));
        Ok(Emulator {
            binary: binary.clone(),
            cpu: cpu.clone(),
            // With the emulated core's `/proc/cpuinfo`, which tract reads to pick kernels.
            sysroot: match crate::build::toolchain(&board.target)?.sysroot {
                "/" => None,
                cross if crate::insn::cpuinfo(cpu).is_some() => {
                    Some(crate::insn::sysroot(cross, cpu)?)
                }
                cross => Some(PathBuf::from(cross)),
            },
            cross: crate::build::toolchain(&board.target)?.sysroot,
            agent: built.path,
        })
    }

    pub fn agent(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(["-cpu", &self.cpu, "-L"])
            .arg(self.sysroot.as_deref().unwrap_or(Path::new("/")));
        if self.sysroot.is_some() {
            // The dynamic loader comes from the cross sysroot; its C library must too. Without
            // this, the loader finds libasound in Debian's multiarch directory through the
            // host's ld.so.cache and then takes `libc.so.6` from there as well: another build
            // of glibc than the loader's, and the first `pthread_create` spins for ever.
            cmd.arg("-E")
                .arg(format!("LD_LIBRARY_PATH={}/lib", self.cross));
        }
        cmd.arg(&self.agent).current_dir(sh::root());
        cmd
    }
}

/// Runs `cmd` to completion within [`HANG_LIMIT`], inheriting stderr; returns its stdout.
fn bounded(cmd: &mut Command) -> Result<(std::process::ExitStatus, String, Duration)> {
    let shown = format!("{cmd:?}");
    eprintln!("$ {shown}");
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {shown}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut out).map(|_| out)
    });
    let status = sh::wait_within(&mut child, started, HANG_LIMIT, &shown)?;
    let out = reader.join().expect("reader thread")?;
    Ok((status, out, started.elapsed()))
}

/// The replay configuration both agents run: the bundled samples, accelerated, fixed start
/// times and no noise, so that the records depend on nothing but the models' numbers.
fn config(dir: &Path) -> String {
    let root = sh::root();
    let models = root.join("models");
    let m = models.display();
    format!(
        r#"# Written by `cargo xtask qemu agent`: deterministic replay (no noise, fixed starts).
device = "qemu-001"
territory = "fr-test"
data_dir = "{data}"
key = "{key}"

[checkpoint]
every_records = 8

{speech}
[[pipeline]]
name = "faces"
model = "{m}/centerface-int8/card.toml"
aggregates = ["count", "presence_share"]
window = "10s"
threshold = 0.5
[pipeline.source]
kind = "replay"
path = "{m}/samples/people.png"
fps = 1.0
repeat = 12
start = "2026-11-30T10:00:00Z"
[pipeline.privacy]
k = 3
"#,
        data = dir.join("data").display(),
        key = dir.join("keys/device.key").display(),
        speech = speech_pipeline(),
    )
}

/// The speech pipeline of the emulated runs: Silero VAD on the bundled speech sample,
/// accelerated from a fixed start, no noise.
pub fn speech_pipeline() -> String {
    let m = sh::root().join("models");
    format!(
        r#"[[pipeline]]
name = "speech"
model = "{m}/silero-vad-16k/card.toml"
aggregates = ["speech_share"]
window = "5s"
threshold = 0.5
[pipeline.source]
kind = "replay"
path = "{m}/samples/speech.wav"
speed = "accelerated"
start = "2026-11-30T10:00:00Z"
[pipeline.privacy]
k = 1
share_step_ppm = 10000
"#,
        m = m.display()
    )
}

/// One agent's run: keygen, run, then its log verified and listed by the *host* agent (the
/// emulated agent's signatures must verify on another architecture too).
fn replay(
    label: &str,
    mut agent: impl FnMut() -> Command,
    host: &Path,
    dir: &Path,
) -> Result<Vec<String>> {
    let keys = dir.join("keys");
    let mut keygen = agent();
    keygen.args(["keygen", "--dir"]).arg(&keys).args([
        "--device",
        "qemu-001",
        "--territory",
        "fr-test",
    ]);
    sh::run(&mut keygen)?;
    let config_path = dir.join("agent.toml");
    std::fs::write(&config_path, config(dir))?;
    let mut run = agent();
    run.args(["run", "--config"]).arg(&config_path);
    let (status, _, took) = bounded(&mut run)?;
    ensure!(status.success(), "{label} agent: run failed ({status})");
    println!("{label} agent: run took {:.1} s", took.as_secs_f64());
    let log = dir.join("data/log");
    let vkey = keys.join("device.vkey");
    let mut verify = Command::new(host);
    verify
        .args(["audit", "verify"])
        .arg(&log)
        .arg("--pubkey")
        .arg(&vkey);
    sh::run(&mut verify)?;
    let mut show = Command::new(host);
    show.args(["audit", "show"])
        .arg(&log)
        .arg("--pubkey")
        .arg(&vkey)
        .arg("--json");
    let out = sh::output(&mut show)?;
    Ok(out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(str::to_owned)
        .collect())
}

/// The emulated agent's records against the host agent's, line by line.
fn compare(board: &Board) -> Result<ExitCode> {
    crate::models::fetch()?;
    let emulator = Emulator::prepare(board)?;
    let host = crate::models::agent()?;
    let tmp = sh::target_dir().join("tmp/qemu-agent");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    let (host_dir, emu_dir) = (tmp.join("host"), tmp.join(&board.name));
    std::fs::create_dir_all(&host_dir)?;
    std::fs::create_dir_all(&emu_dir)?;
    let expected = replay("host", || Command::new(&host), &host, &host_dir)?;
    let got = replay(&board.name, || emulator.agent(), &host, &emu_dir)?;
    ensure!(!expected.is_empty(), "the host agent wrote no record");
    let mut same = expected.len() == got.len();
    for (i, (a, b)) in expected.iter().zip(&got).enumerate() {
        if a != b {
            same = false;
            eprintln!("record {i} differs:\n  host:     {a}\n  emulated: {b}");
        }
    }
    if !same {
        eprintln!(
            "{}: {} records under emulation, {} on the host: NOT identical",
            board.name,
            got.len(),
            expected.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "{} (qemu user mode): {} records identical to the host agent's",
        board.name,
        got.len()
    );
    let mut cards = crate::models::cards()?;
    cards.extend(crate::models::zoo_cards()?);
    same_operators(board, &emulator, &host, &cards)
}

/// What the agent's rewrites install in each card's graph, as `model inspect` lists them: the
/// same on the board as on the host, or the board runs another graph (as aarch64 did while
/// tract's channel-last depthwise layout kept most rewrites from firing). tract's own code
/// generation may choose other kernels per architecture (eager or lazy im2col, fused binary
/// chains): those, and the paddings the agent replaces after it, are shown, not compared.
fn same_operators(
    board: &Board,
    emulator: &Emulator,
    host: &Path,
    cards: &[PathBuf],
) -> Result<ExitCode> {
    let mut differ = 0;
    for card in cards {
        let inspect = |mut cmd: Command, who: &str| -> Result<(String, Vec<String>)> {
            cmd.args(["model", "inspect"]).arg(card);
            let (status, out, _) = bounded(&mut cmd)?;
            ensure!(
                status.success(),
                "{who}: model inspect {} failed:\n{out}",
                card.display()
            );
            let mut lines = out.lines().map(str::trim);
            let operators = lines
                .find_map(|l| l.strip_prefix("optimised operators:"))
                .map(|l| l.trim().to_owned())
                .with_context(|| {
                    format!(
                        "{who}: model inspect {} lists no optimised operators",
                        card.display()
                    )
                })?;
            // The rewrites' lines follow the operators ("int8: 39 quantised convolutions...").
            let rewrites: Vec<String> = lines
                .filter(|l| {
                    // Chosen per architecture, not rewrites that failed to fire: the int8
                    // kernels, and the float convolutions, which aarch64 leaves to
                    // tract-linalg's NEON kernels (kernels::FLOAT_CONVOLUTIONS).
                    !l.is_empty()
                        && !["pads:", "kernels:", "pointwise:", "direct:"]
                            .iter()
                            .any(|p| l.starts_with(p))
                })
                .map(str::to_owned)
                .collect();
            Ok((operators, rewrites))
        };
        let on_host = inspect(Command::new(host), "host")?;
        let emulated = inspect(emulator.agent(), &board.name)?;
        let name = card.parent().and_then(Path::file_name).map_or_else(
            || card.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        if on_host.1 == emulated.1 {
            println!(
                "{name}: what the agent's rewrites installed is the same on {} as on the host ({} lines of model inspect)",
                board.name,
                on_host.1.len()
            );
        } else {
            differ += 1;
            eprintln!(
                "{name}: other rewrites on {}:\n  host:     {}\n  emulated: {}",
                board.name,
                on_host.1.join("; "),
                emulated.1.join("; ")
            );
        }
        if on_host.0 != emulated.0 {
            println!(
                "  tract's code generation differs (not compared):\n    host:     {}\n    emulated: {}",
                on_host.0, emulated.0
            );
        }
    }
    if differ > 0 {
        eprintln!(
            "{}: the agent's rewrites differ from the host's on {differ} of {} models",
            board.name,
            cards.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "{} (qemu user mode): the agent's rewrites are the host's on the {} models (bundled and zoo)",
        board.name,
        cards.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `edge-agent model check` under emulation; exits with the agent's status.
fn model_check(board: &Board, cards: &[PathBuf]) -> Result<ExitCode> {
    crate::models::fetch()?;
    let emulator = Emulator::prepare(board)?;
    let mut cmd = emulator.agent();
    cmd.args(["model", "check"]);
    for card in cards {
        // Relative to where the developer typed the command, not the repository root.
        cmd.arg(std::path::absolute(card)?);
    }
    let (status, out, took) = bounded(&mut cmd)?;
    print!("{out}");
    println!(
        "{} (qemu user mode): model check {} in {:.1} s",
        board.name,
        if status.success() { "passed" } else { "FAILED" },
        took.as_secs_f64()
    );
    if !status.success() {
        return Ok(ExitCode::from(
            u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
        ));
    }
    // The same check on the portable paths (`IAT_KERNELS=portable`): the board's kernels must
    // give the same outputs, bit for bit (each output's digest).
    let mut portable = emulator.agent();
    portable
        .args(["model", "check"])
        .env("IAT_KERNELS", "portable");
    for card in cards {
        portable.arg(std::path::absolute(card)?);
    }
    let (status, portable_out, _) = bounded(&mut portable)?;
    ensure!(
        status.success(),
        "model check with IAT_KERNELS=portable failed:\n{portable_out}"
    );
    let digests = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| {
                l.split_once(", digest ").map(|(head, d)| {
                    let what = head.split(':').next().unwrap_or(head).trim();
                    format!("{what}: {d}")
                })
            })
            .collect()
    };
    let (native, reference) = (digests(&out), digests(&portable_out));
    ensure!(!native.is_empty(), "model check printed no output digest");
    let differ: Vec<String> = native
        .iter()
        .zip(&reference)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("  {a} (kernels) against {b} (portable)"))
        .collect();
    if !differ.is_empty() || native.len() != reference.len() {
        eprintln!(
            "{}: the board's kernels and the portable paths give different outputs:\n{}",
            board.name,
            differ.join("\n")
        );
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "{} (qemu user mode): {} outputs identical, bit for bit, to the portable paths' (IAT_KERNELS=portable)",
        board.name,
        native.len()
    );
    Ok(ExitCode::SUCCESS)
}
