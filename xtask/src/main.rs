//! `cargo xtask <job>`: every workflow of the project (build, test, demo, bench, models...).
//! CI runs only these jobs, so a laptop and CI do the same thing.

mod bench;
mod broker;
mod models;
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
    /// Run every test: workspace tests, golden checks of every model. Installs what it can.
    Test,
    /// Formatting and clippy (warnings denied).
    Lint,
    /// Per model: the agent's latency and memory beside onnxruntime's, measured alternately.
    Bench {
        /// Only these model ids (default: every model in models/).
        models: Vec<String>,
        /// Rounds of alternation; each round runs both runtimes.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Runs per round and runtime.
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// Model tooling.
    #[command(subcommand)]
    Models(models::ModelsJob),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.job {
        Job::Demo => models::demo(),
        Job::Test => test::test(),
        Job::Lint => test::lint(),
        Job::Bench {
            models,
            rounds,
            runs,
        } => bench::bench(&models, rounds, runs),
        Job::Models(job) => models::run(job),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
