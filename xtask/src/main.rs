//! `cargo xtask <job>`: every workflow of the project (build, test, demo, bench, models...).
//! CI runs only these jobs, so a laptop and CI do the same thing.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod firmware;
mod qemu;

#[derive(Parser)]
#[command(about = "The project's workflows")]
struct Cli {
    #[command(subcommand)]
    job: Job,
}

#[derive(Subcommand)]
enum Job {
    /// Build the node firmware for a board; print its flash and RAM use.
    Build(firmware::BuildArgs),
    /// Run the firmware under QEMU: on-target tests, then the node app against its log snapshot.
    Qemu(qemu::QemuArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.job {
        Job::Build(args) => firmware::run(&args),
        Job::Qemu(args) => qemu::run(&args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    })
}
