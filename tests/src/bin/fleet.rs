//! `cargo xtask fleet`: a fleet of simulated devices against a real mosquitto and the real hub
//! (both started here, on loopback), then what the hub stored, acknowledged and alarmed.
//! `tests::fleet` says what a run does.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use tests::fleet::{Hubs, Plan, run_local};

#[derive(Parser)]
#[command(
    name = "fleet",
    about = "Simulated devices against a real broker and hub: backlog drain and live latency"
)]
struct Args {
    /// Simulated devices.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Territories they are spread over.
    #[arg(long, default_value_t = 100)]
    territories: usize,
    /// Records already in each device's log at the start (an outage that just ended).
    #[arg(long, default_value_t = 100)]
    backlog: u64,
    /// One record per device per window in the live phase (e.g. 10s, 1s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    window: Duration,
    /// Length of the live phase after the backlog (0s: backlog only).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    live: Duration,
    /// A signed checkpoint every this many records.
    #[arg(long, default_value_t = 64)]
    checkpoint_every: u64,
    /// The devices' `mqtt.ack_timeout` (it backs off after each resend).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    ack_timeout: Duration,
    /// After the live phase, how long to wait for the last acks.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    settle: Duration,
    /// The hub's store: a SQLite file, or PostgreSQL (`cargo xtask fleet` starts a throwaway
    /// cluster and names it in `IAT_TEST_POSTGRES`).
    #[arg(long, value_enum, default_value_t = Store::Sqlite)]
    store: Store,
    /// Hub instances sharing the subscription and the store (PostgreSQL).
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// SIGKILL the last hub instance this long after the start (then start it again).
    #[arg(long, value_parser = parse_duration)]
    kill_after: Option<Duration>,
    /// Keep the hub's folder (database, logs) here instead of a temporary one.
    #[arg(long)]
    keep: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Store {
    Sqlite,
    Postgres,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .ok_or_else(|| format!("`{s}`: give a unit (ms, s, m)"))?;
    let n: f64 = n.parse().map_err(|_| format!("`{s}`: not a number"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        _ => return Err(format!("`{s}`: the unit is ms, s or m")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pg = std::env::var(hub::db::sql::TEST_POSTGRES).unwrap_or_default();
    match args.store {
        Store::Postgres => anyhow::ensure!(
            !pg.trim().is_empty(),
            "--store postgres: run it through `cargo xtask fleet`, which starts a PostgreSQL cluster, or set {} to a key-value connection string of one",
            hub::db::sql::TEST_POSTGRES
        ),
        // SAFETY: at the start of main, before any thread.
        Store::Sqlite => unsafe { std::env::remove_var(hub::db::sql::TEST_POSTGRES) },
    }
    let files = tests::fleet::raise_open_files();
    anyhow::ensure!(
        files > args.devices as u64 + 256,
        "{} devices need more open files than this process may have ({files}): raise the hard limit (ulimit -Hn)",
        args.devices
    );
    let plan = Plan {
        devices: args.devices,
        territories: args.territories,
        backlog: args.backlog,
        window: args.window,
        live_for: args.live,
        checkpoint_every: args.checkpoint_every,
        ack_timeout: args.ack_timeout,
        settle: args.settle,
        ..Plan::default()
    };
    let tmp = tempfile::tempdir()?;
    let dir = args.keep.clone().unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let style = |t: &str| -> anyhow::Result<ProgressStyle> {
        Ok(ProgressStyle::with_template(t)?.progress_chars("=> "))
    };
    let backlog = plan.backlog * plan.devices as u64;
    let live = (plan.live_for.as_secs_f64() / plan.window.as_secs_f64()).floor() as u64;
    let signing = ProgressBar::new(backlog)
        .with_style(style(
            "{msg:>14} [{bar:40}] {pos}/{len} ({per_sec}, {eta})",
        )?)
        .with_message("signing");
    let acking = Arc::new(
        ProgressBar::hidden()
            .with_style(style(
                "{msg:>14} [{bar:40}] {pos}/{len} ({per_sec}, {elapsed})",
            )?)
            .with_message("acknowledged"),
    );
    let a = acking.clone();
    let s = signing.clone();
    let hubs = Hubs {
        instances: args.instances,
        kill_after: args.kill_after,
        ..Hubs::default()
    };
    let (report, hub) = run_local(
        plan.clone(),
        &hubs,
        &dir,
        &|n| {
            s.set_position(n);
            if n == backlog {
                s.finish();
            }
        },
        Arc::new(move |n| {
            if a.is_hidden() {
                a.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                a.set_length(backlog + live * plan.devices as u64);
            }
            a.set_position(n);
        }),
    )?;
    acking.finish();
    println!("fleet: {}", report.summary());
    println!("hub: {}", hub.summary());
    if args.keep.is_some() {
        println!("hub's folder kept: {}", dir.display());
    }
    anyhow::ensure!(
        report.devices_behind == 0 && hub.stored == report.appended,
        "the hub did not store and acknowledge every record: see the figures above{}",
        if args.keep.is_some() {
            ""
        } else {
            " (rerun with --keep DIR for its database and logs)"
        }
    );
    Ok(())
}
