//! `edge-agent`: the device service's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use runtime::{LoadOptions, Model};

/// `println!` that ends the process quietly when stdout is closed (`edge-agent ... | head`)
/// instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

/// Exit codes: 0 success, 1 a check found wrong numbers, 2 bad input (card, model, file, usage).
pub(crate) const EXIT_MISMATCH: u8 = 1;
pub(crate) const EXIT_BAD_INPUT: u8 = 2;

mod cmd;

#[derive(Parser)]
#[command(
    name = "edge-agent",
    version,
    about = "Field-device agent: private, audited aggregates from on-device AI"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Model tooling: inspect, check against golden vectors, benchmark, run on sample data.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Generate the device's Ed25519 key pair: DIR/device.key (mode 0600) and DIR/device.vkey.
    Keygen {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        device: String,
        #[arg(long)]
        territory: String,
    },
    /// Run the configured pipelines: sources -> models -> private aggregates -> audit log.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Publish the audit log to the hub until it acknowledged every record (no pipelines).
    Publish {
        #[arg(long)]
        config: PathBuf,
        /// Keep running (reconnecting, resending) until interrupted.
        #[arg(long)]
        follow: bool,
    },
    /// Read and verify a device's audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Can this installation run? The config, the device key, a synced write in the data
    /// folder, the audit log (verified), every pipeline's model against its golden vectors.
    /// Exit 0 only if all pass: the health check of `cargo xtask flash --host`.
    Selftest {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the Merkle tree, check every signature and checkpoint, and every record's
    /// contents; name the first bad record. Exit 0 only if everything verifies.
    Verify {
        /// The log directory (`<data_dir>/log` of the agent's config).
        dir: PathBuf,
        /// The device's verifier key file (device.vkey).
        #[arg(long)]
        pubkey: PathBuf,
    },
    /// List the records of a log for a person (verified first).
    Show {
        dir: PathBuf,
        #[arg(long)]
        pubkey: PathBuf,
        /// One record per line, as published (canonical JSON).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Print the card and the graph's inputs, outputs and operator counts.
    Inspect { card: PathBuf },
    /// Run the golden vectors beside the model and compare with the card's tolerance.
    Check {
        #[arg(required = true)]
        cards: Vec<PathBuf>,
        /// Do not apply the workarounds for tract's known wrong results (shows that the check
        /// catches them).
        #[arg(long)]
        no_workarounds: bool,
    },
    /// Latency percentiles, load + optimise time and peak memory.
    Bench {
        card: PathBuf,
        #[arg(long, default_value_t = 50)]
        runs: usize,
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        /// One JSON object on stdout instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Prepare each model in a child process under memory and time limits, as `selftest` does
    /// before a release is installed: a model that exhausts them is refused.
    Vet {
        #[arg(required = true)]
        cards: Vec<PathBuf>,
        /// Heap limit of the child (RLIMIT_DATA), MiB.
        #[arg(long, default_value_t = runtime::vet::Limits::default().memory_mib)]
        memory_mib: u64,
        /// CPU time limit (and half the wall-clock limit), seconds.
        #[arg(long, default_value_t = runtime::vet::Limits::default().seconds)]
        seconds: f64,
    },
    /// The child side of `model vet`: load, optimise and run the model once.
    #[command(hide = true)]
    VetChild { card: PathBuf },
    /// Time every operator of the optimised model (median over runs), slowest first.
    Profile {
        card: PathBuf,
        #[arg(long, default_value_t = 20)]
        runs: usize,
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// How many of the slowest nodes to list.
        #[arg(long, default_value_t = 15)]
        top: usize,
    },
    /// Run the model on image or WAV files and print only the aggregate it would feed.
    Run {
        card: PathBuf,
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Score threshold: a face or object detection, or a speech or audio class probability.
        #[arg(long, default_value_t = 0.5)]
        threshold: f32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logs::init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Model(m) => match m {
            ModelCommand::Inspect { card } => cmd::model::inspect(&card),
            ModelCommand::Check {
                cards,
                no_workarounds,
            } => cmd::model::check(
                &cards,
                LoadOptions {
                    workarounds: !no_workarounds,
                },
            ),
            ModelCommand::Bench {
                card,
                runs,
                warmup,
                json,
            } => cmd::model::bench_cmd(&card, runs, warmup, json),
            ModelCommand::Vet {
                cards,
                memory_mib,
                seconds,
            } => cmd::model::vet_cmd(
                &cards,
                runtime::vet::Limits {
                    memory_mib,
                    seconds,
                },
            ),
            ModelCommand::VetChild { card } => {
                let card = cmd::model::load_card(&card)?;
                let model = Model::load(&card, LoadOptions::default())?;
                let inputs = model
                    .initial_inputs()
                    .into_iter()
                    .map(tract_onnx::prelude::TValue::from)
                    .collect();
                model.run(inputs)?;
                Ok(ExitCode::SUCCESS)
            }
            ModelCommand::Profile {
                card,
                runs,
                warmup,
                top,
            } => cmd::model::profile_cmd(&card, runs, warmup, top),
            ModelCommand::Run {
                card,
                inputs,
                threshold,
            } => cmd::model::run_model(&card, &inputs, threshold),
        },
        Command::Keygen {
            dir,
            device,
            territory,
        } => cmd::keygen::keygen(&dir, &device, &territory),
        Command::Run { config } => cmd::run::run_agent(&config),
        Command::Publish { config, follow } => cmd::publish::publish_only(&config, follow),
        Command::Selftest { config } => cmd::selftest::selftest(&config),
        Command::Audit(AuditCommand::Verify { dir, pubkey }) => {
            cmd::audit::audit_verify(&dir, &pubkey, None)
        }
        Command::Audit(AuditCommand::Show { dir, pubkey, json }) => {
            cmd::audit::audit_verify(&dir, &pubkey, Some(json))
        }
    }
}
