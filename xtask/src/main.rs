//! `cargo xtask <job>`: every workflow of the project (build, test, demo, bench, models,
//! firmware, QEMU), one module per job. CI runs only these jobs, so a laptop and CI do the
//! same thing; a job must never need a step that is not in it (it installs or names what it
//! needs).

mod bench;
mod build;
mod demo;
mod flash;
mod fleet;
mod insn;
mod lint;
mod models;
mod postgres;
mod qemu;
mod sh;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "The project's workflows")]
struct Cli {
    #[command(subcommand)]
    job: Job,
}

#[derive(Subcommand)]
enum Job {
    /// Run the whole system locally on embedded defaults: agent (bundled models on bundled
    /// samples) -> embedded MQTT broker -> hub, and show what the hub stored.
    Demo,
    /// Run every test as CI does: host tests, firmware under QEMU, golden checks, flash dry
    /// runs, the aarch64 agent under QEMU against the host's. Installs what it can (apt
    /// packages as root).
    Test,
    /// Formatting and clippy (warnings denied), root workspace and firmware.
    Lint,
    /// Per model: the agent's latency and memory beside onnxruntime's, measured alternately.
    Bench {
        /// Only these model ids (default: every model in models/).
        models: Vec<String>,
        /// Rounds of alternation; each round runs both runtimes.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Runs per round and runtime (default 20; with --board, inferences counted: 5).
        #[arg(long)]
        runs: Option<usize>,
        /// The zoo's networks (models/zoo) instead of the bundled models.
        #[arg(long)]
        zoo: bool,
        /// Instructions per inference on this Linux board's CPU, under qemu-user with a
        /// counting plugin, for the agent and onnxruntime's build for the board
        /// (raspberry-pi-4: Cortex-A72, raspberry-pi-5: Cortex-A76, x86-64-gateway: AVX2).
        #[arg(long, conflicts_with_all = ["camera", "rounds"])]
        board: Option<String>,
        /// Instead of the models: the face pipeline of the release agent on a live 640x480
        /// RTSP stream (frames captured and inferred per second, capture overhead, CPU, RSS).
        #[arg(long, conflicts_with = "models")]
        camera: bool,
        /// With --camera: how long the agent captures, in seconds.
        #[arg(long, default_value_t = 60, requires = "camera")]
        seconds: u64,
        /// With --camera: the stream's frame rate (the source asks for the same).
        #[arg(long, default_value_t = 25, requires = "camera")]
        fps: u32,
    },
    /// Model tooling.
    #[command(subcommand)]
    Models(models::ModelsJob),
    /// Build for a board: the node firmware (MCU; flash and RAM use printed) or the agent
    /// (Linux; cross-compiled, stripped, size printed).
    Build(build::firmware::BuildArgs),
    /// Run the firmware under QEMU: on-target tests, then the node app against its log
    /// snapshot. `qemu agent` / `qemu model` run a Linux board's agent under user-mode QEMU.
    Qemu(qemu::QemuJob),
    /// MCU boards: write the node firmware through a debug probe (probe-rs), after checking
    /// its segments against the board and the chip; `--dry-run` only checks and plans.
    /// Linux boards (`--host user@addr`): install the agent over SSH, atomically, with a
    /// health check and rollback.
    Flash(flash::FlashArgs),
    /// Simulated devices (real keys, signed records and checkpoints) against a real mosquitto
    /// and the hub: backlog drain time, append-to-ack latency, what the hub stored and alarmed.
    /// Arguments after `--` go to the simulator (`cargo xtask fleet -- --help`).
    Fleet {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

/// The optional tools a job runs (features of this crate, see its Cargo.toml).
fn features_for(job: &Job) -> &'static [&'static str] {
    match job {
        Job::Demo => &["broker"],
        Job::Test => &["probe", "defmt", "broker"],
        Job::Flash(_) => &["probe"],
        Job::Qemu(_) => &["defmt", "broker"],
        Job::Lint | Job::Bench { .. } | Job::Models(_) | Job::Build(_) | Job::Fleet { .. } => &[],
    }
}

fn built_with(feature: &str) -> bool {
    let built = [
        ("probe", cfg!(feature = "probe")),
        ("defmt", cfg!(feature = "defmt")),
        ("broker", cfg!(feature = "broker")),
    ];
    built.iter().any(|&(f, on)| f == feature && on)
}

/// Runs this same job through an xtask built with `features`, and returns its exit status:
/// `cargo xtask` builds the plain xtask (quick, what `lint` needs), and the jobs that drive
/// probe-rs, the defmt decoder or the embedded broker build them on first use.
fn rerun_with(features: &[&str]) -> anyhow::Result<ExitCode> {
    let mut cmd = sh::cargo();
    cmd.args(["run", "--quiet", "--package", "xtask", "--features"])
        .arg(features.join(","))
        .arg("--")
        .args(std::env::args_os().skip(1));
    let status = cmd
        .status()
        .map_err(|e| anyhow::anyhow!("running cargo to rebuild xtask with {features:?}: {e}"))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let needed = features_for(&cli.job);
    if !needed.iter().all(|f| built_with(f)) {
        return rerun_with(needed).unwrap_or_else(|e| {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        });
    }
    let result = match cli.job {
        Job::Demo => demo::demo().map(|()| ExitCode::SUCCESS),
        Job::Test => test::test().map(|()| ExitCode::SUCCESS),
        Job::Lint => lint::lint().map(|()| ExitCode::SUCCESS),
        Job::Bench {
            camera: true,
            seconds,
            fps,
            ..
        } => bench::camera(seconds, fps).map(|()| ExitCode::SUCCESS),
        Job::Bench {
            models,
            zoo,
            board: Some(board),
            runs,
            ..
        } => insn::bench(&board, &models, zoo, runs.unwrap_or(5)).map(|()| ExitCode::SUCCESS),
        Job::Bench {
            models,
            zoo,
            rounds,
            runs,
            ..
        } => bench::bench(&models, zoo, rounds, runs.unwrap_or(20)).map(|()| ExitCode::SUCCESS),
        Job::Models(job) => models::run(job).map(|()| ExitCode::SUCCESS),
        Job::Build(args) => build::run(&args),
        Job::Qemu(job) => qemu::run(&job),
        Job::Flash(args) => flash::run(&args),
        Job::Fleet { args } => fleet::run(&args).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        eprintln!("xtask: error: {e:#}");
        ExitCode::FAILURE
    })
}
