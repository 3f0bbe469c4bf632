//! `edge-agent`: the device service's command line.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aggregate::RecordView;
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use edge_agent::card::{Card, InputRole, Postprocess, Preprocess};
use edge_agent::config::Config;
use edge_agent::outbox::{self, AuditOutbox};
use edge_agent::pipeline::{self, SpeechStream};
use edge_agent::runtime::{LoadOptions, Model};
use edge_agent::{agent, bench, golden, publish};

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
const EXIT_MISMATCH: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;

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
        #[arg(long, default_value_t = edge_agent::vet::Limits::default().memory_mib)]
        memory_mib: u64,
        /// CPU time limit (and half the wall-clock limit), seconds.
        #[arg(long, default_value_t = edge_agent::vet::Limits::default().seconds)]
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
        /// Detection score threshold (face detection).
        #[arg(long, default_value_t = 0.5)]
        threshold: f32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
            ModelCommand::Inspect { card } => inspect(&card),
            ModelCommand::Check {
                cards,
                no_workarounds,
            } => check(
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
            } => bench_cmd(&card, runs, warmup, json),
            ModelCommand::Vet {
                cards,
                memory_mib,
                seconds,
            } => vet_cmd(
                &cards,
                edge_agent::vet::Limits {
                    memory_mib,
                    seconds,
                },
            ),
            ModelCommand::VetChild { card } => {
                let card = load_card(&card)?;
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
            } => profile_cmd(&card, runs, warmup, top),
            ModelCommand::Run {
                card,
                inputs,
                threshold,
            } => run_model(&card, &inputs, threshold),
        },
        Command::Keygen {
            dir,
            device,
            territory,
        } => keygen(&dir, &device, &territory),
        Command::Run { config } => run_agent(&config),
        Command::Publish { config, follow } => publish_only(&config, follow),
        Command::Selftest { config } => selftest(&config),
        Command::Audit(AuditCommand::Verify { dir, pubkey }) => audit_verify(&dir, &pubkey, None),
        Command::Audit(AuditCommand::Show { dir, pubkey, json }) => {
            audit_verify(&dir, &pubkey, Some(json))
        }
    }
}

fn load_card(path: &Path) -> Result<Card> {
    Ok(Card::load(path)?)
}

fn inspect(path: &Path) -> Result<ExitCode> {
    let card = load_card(path)?;
    say!("model card {}", card.path.display());
    say!("  id            {} {}", card.id, card.version);
    say!("  task          {}", card.task);
    say!(
        "  file          {} (sha256 {})",
        card.file.display(),
        card.sha256
    );
    say!("  purpose       {}", card.purpose);
    say!("  never for     {}", card.never_for.join("; "));
    say!("  owner         {}", card.owner);
    say!("  licence       {}", card.licence);
    if let Some(b) = &card.legal_basis {
        say!("  legal basis   {b}");
    }
    say!("  aggregates    {}", card.aggregates.join(", "));
    let p = &card.provenance;
    say!(
        "  provenance    {} {} {} ({}), {}",
        p.registry,
        p.package,
        p.package_version,
        p.path,
        p.derivation
    );
    if let Some(a) = &card.accuracy {
        say!("  accuracy      {a}");
    }
    say!(
        "  check         {} (abs {}, rel {}, steps {})",
        card.check.vectors.display(),
        card.check.abs,
        card.check.rel,
        card.check.steps
    );
    let model = Model::load(&card, LoadOptions::default())?;
    say!("inputs");
    for i in &card.inputs {
        let role = match &i.role {
            InputRole::Data(Preprocess::Image { .. }) => "data (image)".to_string(),
            InputRole::Data(Preprocess::Audio {
                sample_rate,
                chunk,
                context,
                ..
            }) => {
                format!("data (audio {sample_rate} Hz, {chunk} samples + {context} context)")
            }
            InputRole::Data(Preprocess::Tensor) => "data (tensor)".into(),
            InputRole::State { from } => format!("state (from `{from}`)"),
            InputRole::Constant(v) => format!("constant {v:?}"),
        };
        say!("  {:<20} {}{:?}  {role}", i.name, i.dtype, i.shape);
    }
    say!("outputs");
    for o in &card.outputs {
        say!(
            "  {:<20} {}{:?}  {:?}",
            o.name,
            o.dtype,
            o.shape,
            o.postprocess
        );
    }
    say!(
        "graph: {} operators in the ONNX file, {} after tract's optimisation ({} bytes, loaded in {:.1} ms)",
        model.onnx_ops.values().sum::<usize>(),
        model.optimised_ops.values().sum::<usize>(),
        model.file_size,
        model.times.total().as_secs_f64() * 1e3
    );
    say!("  ONNX operators:      {}", counts(&model.onnx_ops));
    say!("  optimised operators: {}", counts(&model.optimised_ops));
    for s in &model.workarounds.float_softmax {
        say!(
            "  workaround: quantised Softmax `{s}` runs in float (tract 0.23.9 computes it wrongly)"
        );
    }
    if model.fused_qdq_pairs > 0 {
        say!(
            "  fused: {} QuantizeLinear -> DequantizeLinear pairs run as one FakeQuant operator each",
            model.fused_qdq_pairs
        );
    }
    if model.int8_convolutions > 0 {
        say!(
            "  int8: {} quantised convolutions run as integer matrix products (QConv), {} activations passed as bytes",
            model.int8_convolutions,
            model.byte_edges
        );
    }
    if model.float_pointwise > 0 {
        say!(
            "  pointwise: {} float 1x1 convolutions run with bias and ReLU fused, without packing",
            model.float_pointwise
        );
    }
    if model.float_direct > 0 {
        say!(
            "  direct: {} float KxK convolutions run without patch copies, activation fused",
            model.float_direct
        );
    }
    if model.pads > 0 {
        say!(
            "  pads: {} paddings along the last axis run in one pass",
            model.pads
        );
    }
    if model.depthwise > 0 {
        say!(
            "  depthwise: {} depthwise convolutions run by the agent's vectorised kernel",
            model.depthwise
        );
    }
    if model.quantised_adds > 0 {
        say!(
            "  sums: {} additions of quantised activations run with their output quantiser (QAdd)",
            model.quantised_adds
        );
    }
    if model.workarounds.folded_dequantisations > 0 {
        say!(
            "  prepared: {} constant weight dequantisations computed before tract's analysis (load time)",
            model.workarounds.folded_dequantisations
        );
    }
    if model.workarounds.renamed_nodes > 0 {
        say!(
            "  workaround: {} nodes with duplicate names renamed (tract needs unique names)",
            model.workarounds.renamed_nodes
        );
    }
    for n in &model.notes {
        say!("  note: {n}");
    }
    Ok(ExitCode::SUCCESS)
}

fn counts(m: &std::collections::BTreeMap<String, usize>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} x{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn check(paths: &[PathBuf], options: LoadOptions) -> Result<ExitCode> {
    let mut all_passed = true;
    for path in paths {
        let card = load_card(path)?;
        let model = Model::load(&card, options)?;
        let vectors = golden::load_vectors(&card)?;
        let reports = golden::check(&model, &vectors)?;
        for r in &reports {
            let set = r
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            for o in &r.outputs {
                let verdict = if o.passed() { "ok" } else { "FAIL" };
                match &o.structural {
                    Some(s) => say!("{verdict:>4}  {} {set} {}: {s}", card.id, o.name),
                    None => say!(
                        "{verdict:>4}  {} {set} {}: worst |err| {:.3e} at [{}] (got {:.6}, expected {:.6}), {:.2} of tolerance, {} of {} elements outside",
                        card.id,
                        o.name,
                        o.max_abs,
                        o.worst_at,
                        o.got,
                        o.expected,
                        o.worst_ratio,
                        o.mismatches,
                        o.elements
                    ),
                }
            }
            all_passed &= r.passed();
        }
        for s in &model.workarounds.float_softmax {
            say!(
                "note  {}: quantised Softmax `{s}` runs in float (workaround for tract 0.23.9)",
                card.id
            );
        }
        for n in &model.notes {
            say!("note  {}: {n}", card.id);
        }
    }
    if all_passed {
        say!("model check: all outputs within tolerance");
        Ok(ExitCode::SUCCESS)
    } else {
        say!("model check: FAILED (outputs differ from onnxruntime's beyond the card's tolerance)");
        Ok(ExitCode::from(EXIT_MISMATCH))
    }
}

fn bench_cmd(path: &Path, runs: usize, warmup: usize, json: bool) -> Result<ExitCode> {
    let card = load_card(path)?;
    let bar = progress_bar(runs, format!("bench {}", card.id));
    let r = bench::bench(&card, warmup, runs, &|i| bar.set_position(i as u64))?;
    bar.finish_and_clear();
    if json {
        say!("{}", serde_json::to_string(&r)?);
    } else {
        say!("model {} ({} runs, 1 thread)", r.model, r.runs);
        say!(
            "  load + optimise {:.1} ms (read+sha256 {:.1}, decode+guard {:.1}, analyse {:.1}, optimise+plan {:.1})",
            r.load_ms,
            r.load_read_hash_ms,
            r.load_decode_ms,
            r.load_analyse_ms,
            r.load_optimise_ms
        );
        say!(
            "  latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, mean {:.2} ms, min {:.2} ms",
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.mean_ms,
            r.min_ms
        );
        let kib =
            |v: Option<u64>| v.map_or("n/a".into(), |v| format!("{:.1} MiB", v as f64 / 1024.0));
        say!(
            "  peak RSS {} (before load {})",
            kib(r.peak_rss_kib),
            kib(r.base_rss_kib)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn vet_cmd(cards: &[PathBuf], limits: edge_agent::vet::Limits) -> Result<ExitCode> {
    let mut all = true;
    for card in cards {
        match edge_agent::vet::vet(card, limits) {
            Ok(took) => say!(
                "ok    {}: prepared and run in a child process within {} MiB and {} s ({:.0} ms)",
                card.display(),
                limits.memory_mib,
                limits.seconds,
                took.as_secs_f64() * 1e3
            ),
            Err(e) => {
                say!("FAIL  {e}");
                all = false;
            }
        }
    }
    Ok(if all {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_BAD_INPUT)
    })
}

fn progress_bar(len: usize, msg: String) -> indicatif::ProgressBar {
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(len as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} runs")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(msg);
    bar
}

fn profile_cmd(path: &Path, runs: usize, warmup: usize, top: usize) -> Result<ExitCode> {
    let card = load_card(path)?;
    let bar = progress_bar(runs, format!("profile {}", card.id));
    let p = bench::profile(&card, warmup, runs, &|i| bar.set_position(i as u64))?;
    bar.finish_and_clear();
    say!(
        "model {} ({} runs, 1 thread): {:.2} ms per run (median), time per operator:",
        p.model,
        p.runs,
        p.total_ms
    );
    for (op, n, ms) in &p.by_operator {
        say!(
            "  {op:<28} {n:>4} nodes {ms:>9.3} ms {:>5.1}%",
            100.0 * ms / p.total_ms
        );
    }
    say!("slowest nodes:");
    for (node, op, shapes, ms) in p.by_node.iter().take(top) {
        say!("  {ms:>9.3} ms  {op:<24} {node}  {shapes}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a card on files and prints the aggregate only: a count of faces per image, or the
/// share of time with speech. Detections and probabilities never leave this function.
fn run_model(path: &Path, inputs: &[PathBuf], threshold: f32) -> Result<ExitCode> {
    let card = load_card(path)?;
    let model = Model::load(&card, LoadOptions::default())?;
    let post: Vec<Postprocess> = card.outputs.iter().map(|o| o.postprocess).collect();
    if post.contains(&Postprocess::CenterFace) {
        for input in inputs {
            let img = pipeline::read_image(input)?;
            let faces = pipeline::detect_faces(&model, &img, threshold)?;
            say!(
                "{}: {} face(s) present (model {} {}, threshold {threshold})",
                input.display(),
                faces.len(),
                card.id,
                card.version
            );
        }
    } else if post.contains(&Postprocess::SpeechProbability) {
        for input in inputs {
            let audio = pipeline::read_wav(input)?;
            let mut stream = SpeechStream::new(&model)?;
            let samples =
                pipeline::resample(&audio.samples, audio.sample_rate, stream.sample_rate());
            let n = stream.chunk_len();
            let (mut speech, mut total, mut segments, mut was_speech) =
                (0usize, 0usize, 0usize, false);
            for chunk in samples.chunks_exact(n) {
                let p = stream
                    .push(chunk)
                    .with_context(|| format!("{}: running {}", input.display(), card.id))?;
                let is_speech = p >= 0.5;
                speech += is_speech as usize;
                segments += (is_speech && !was_speech) as usize;
                was_speech = is_speech;
                total += 1;
            }
            let secs = (total * n) as f64 / stream.sample_rate() as f64;
            say!(
                "{}: speech {:.1}% of {:.1} s in {segments} segment(s) (model {} {})",
                input.display(),
                100.0 * speech as f64 / total.max(1) as f64,
                secs,
                card.id,
                card.version
            );
        }
    } else {
        anyhow::bail!(
            "{}: `model run` knows face detection and voice activity; this card's outputs are {:?}",
            card.path.display(),
            post
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn keygen(dir: &Path, device: &str, territory: &str) -> Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = outbox::origin(territory, device);
    let key = audit::keys::generate_in(dir, &name)?;
    say!(
        "wrote {} (private, mode 0600) and {}",
        dir.join("device.key").display(),
        dir.join("device.vkey").display()
    );
    say!("verifier key: {}", key.verifier());
    Ok(ExitCode::SUCCESS)
}

fn run_agent(path: &Path) -> Result<ExitCode> {
    let config = Config::load(path)?;
    let (log_dir, outbox) = open_outbox(&config)?;
    let start_size = outbox.log().size();
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_message("running pipelines");
    let clock = agent::SystemClock::new();
    let shared = publish::Shared::new(outbox);
    let stop = AtomicBool::new(false);
    let hub_key = match &config.mqtt {
        Some(m) => Some(
            audit::keys::load_verifier(&m.hub_key)
                .with_context(|| format!("the hub's key {}", m.hub_key.display()))?,
        ),
        None => None,
    };
    let (summary, checkpoint, published) = std::thread::scope(|scope| {
        let publisher = match (&config.mqtt, &hub_key) {
            (Some(m), Some(hub)) => Some(scope.spawn(|| {
                publish::run(
                    &shared,
                    m,
                    hub,
                    &config.territory,
                    &config.device,
                    &stop,
                    m.drain_timeout,
                )
            })),
            _ => None,
        };
        let mut writer = publish::SharedOutbox(shared.clone());
        let summary = agent::run(&config, &clock, &mut writer, &mut |seq, _| {
            bar.set_message(format!("record {seq} appended"));
            bar.tick();
        });
        bar.finish_and_clear();
        // Whatever happened, what was appended is covered by a signed checkpoint.
        let checkpoint = shared.lock().checkpoint();
        stop.store(true, Ordering::Relaxed);
        let published = publisher.map(|p| p.join());
        (summary, checkpoint, published)
    });
    let checkpoint = checkpoint.context("signing the final checkpoint")?;
    let summary = summary?;
    for (name, frames) in &summary.frames {
        say!("pipeline {name}: {frames} frames or chunks analysed");
    }
    say!(
        "{} records appended to {} (seq {}..{})",
        summary.records,
        log_dir.display(),
        start_size,
        shared.lock().log().size()
    );
    say!("latest signed checkpoint:\n{}", checkpoint.trim_end());
    match published {
        None => {}
        Some(Err(_)) => anyhow::bail!("the publisher thread stopped unexpectedly"),
        Some(Ok(p)) => {
            let p = p.context("publishing to the hub")?;
            say!(
                "published {} messages ({} resend rounds, {} connections); the hub acknowledged {} of {} records",
                p.published,
                p.resends,
                p.connections,
                p.acked,
                p.size
            );
            if p.acked < p.size {
                say!(
                    "{} records wait in the outbox for the hub; they are sent at the next start",
                    p.size - p.acked
                );
            }
        }
    }
    say!(
        "verify: edge-agent audit verify {} --pubkey {}",
        log_dir.display(),
        config.key.with_extension("vkey").display()
    );
    Ok(ExitCode::SUCCESS)
}

fn selftest(path: &Path) -> Result<ExitCode> {
    let config = Config::load(path)?;
    say!(
        "ok    config {}: device {}/{}, {} pipeline(s)",
        path.display(),
        config.territory,
        config.device,
        config.pipelines.len()
    );
    let key = device_key(&config)?;
    say!(
        "ok    device key {}: {}",
        config.key.display(),
        key.verifier()
    );
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data folder {}", config.data_dir.display()))?;
    let probe = config.data_dir.join(".selftest");
    let written = (|| -> std::io::Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&probe)?;
        f.write_all(b"selftest\n")?;
        f.sync_all()?;
        std::fs::remove_file(&probe)
    })();
    written.with_context(|| format!("writing and syncing {}", probe.display()))?;
    say!(
        "ok    data folder {} is writable",
        config.data_dir.display()
    );
    let log_dir = config.data_dir.join("log");
    let vkey = config.key.with_extension("vkey");
    if log_dir.exists() {
        let code = audit_verify(&log_dir, &vkey, None)?;
        if code != ExitCode::SUCCESS {
            say!("FAIL  audit log {}", log_dir.display());
            return Ok(code);
        }
    } else {
        say!(
            "ok    audit log {}: none yet (created at the first run)",
            log_dir.display()
        );
    }
    if let Some(m) = &config.mqtt {
        audit::keys::load_verifier(&m.hub_key)
            .with_context(|| format!("the hub's key {}", m.hub_key.display()))?;
        say!(
            "ok    hub key {}; publishing to {}:{}",
            m.hub_key.display(),
            m.host,
            m.port
        );
    }
    let cards: Vec<PathBuf> = config
        .pipelines
        .iter()
        .map(|p| p.card.path.clone())
        .collect();
    // Each model is first prepared in a child process under limits: a model that would
    // exhaust the device's memory or hang the agent is refused here, before the release is
    // switched to, not found by the service's crash loop.
    let code = vet_cmd(&cards, edge_agent::vet::Limits::default())?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    let code = check(&cards, LoadOptions::default())?;
    if code == ExitCode::SUCCESS {
        say!("selftest: this installation can run");
    } else {
        say!("selftest: FAILED");
    }
    Ok(code)
}

/// The device's private key, or an error saying how to create it.
fn device_key(config: &Config) -> Result<audit::SignerKey> {
    audit::keys::load_private(&config.key).with_context(|| {
        format!(
            "the device key (create it with `edge-agent keygen --dir {} --device {} --territory {}`)",
            config.key.parent().unwrap_or(Path::new(".")).display(),
            config.device,
            config.territory
        )
    })
}

/// Loads the device key and opens the audit log (`<data_dir>/log`) as the outbox: what
/// `run` and `publish` share.
fn open_outbox(config: &Config) -> Result<(PathBuf, AuditOutbox)> {
    let key = device_key(config)?;
    let log_dir = config.data_dir.join("log");
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let outbox = AuditOutbox::open(
        &log_dir,
        &config.device,
        &config.territory,
        &key,
        config.checkpoint_every,
        config.outbox_max_bytes,
    )
    .with_context(|| format!("opening the audit log {}", log_dir.display()))?;
    Ok((log_dir, outbox))
}

/// Publishes what the log holds until the hub acknowledged all of it (or `--follow`: forever).
fn publish_only(path: &Path, follow: bool) -> Result<ExitCode> {
    let config = Config::load(path)?;
    let Some(m) = &config.mqtt else {
        anyhow::bail!("{}: no [mqtt] section", path.display());
    };
    let hub = audit::keys::load_verifier(&m.hub_key)
        .with_context(|| format!("the hub's key {}", m.hub_key.display()))?;
    let (_, outbox) = open_outbox(&config)?;
    let shared = publish::Shared::new(outbox);
    shared.lock().checkpoint()?;
    let stop = AtomicBool::new(!follow);
    let drain = if follow {
        m.drain_timeout
    } else {
        Duration::from_secs(u64::MAX / 4)
    };
    let p = publish::run(
        &shared,
        m,
        &hub,
        &config.territory,
        &config.device,
        &stop,
        drain,
    )?;
    say!(
        "published {} messages ({} resend rounds, {} connections); the hub acknowledged {} of {} records",
        p.published,
        p.resends,
        p.connections,
        p.acked,
        p.size
    );
    Ok(ExitCode::SUCCESS)
}

/// Verifies a log; with `show`, also lists its records (`Some(true)`: as JSON lines).
fn audit_verify(dir: &Path, pubkey: &Path, show: Option<bool>) -> Result<ExitCode> {
    let key = audit::keys::load_verifier(pubkey)?;
    let mut content_problem: Option<String> = None;
    let mut identity: Option<(String, String)> = None;
    let mut rows = Vec::new();
    let report = audit::verify_dir_with(dir, &key, &mut |seq, entry| {
        if content_problem.is_some() {
            return;
        }
        match RecordView::parse(entry) {
            Err(e) => content_problem = Some(format!("record {seq}: {e}")),
            Ok(r) if r.seq != seq => {
                content_problem = Some(format!("record {seq}: its body says seq {}", r.seq))
            }
            Ok(r) => {
                let id = (r.territory.clone(), r.device.clone());
                match &identity {
                    Some(first) if *first != id => {
                        content_problem = Some(format!(
                            "record {seq}: published as {}/{}, the log's earlier records as {}/{}",
                            id.0, id.1, first.0, first.1
                        ));
                    }
                    _ => identity = Some(id),
                }
                match show {
                    Some(true) => rows.push(String::from_utf8_lossy(entry).into_owned()),
                    Some(false) => rows.push(show_record(&r)),
                    None => {}
                }
            }
        }
    })
    .with_context(|| format!("reading {}", dir.display()))?;
    if show == Some(false) {
        say!(
            "{:>6}  {:<24} {:<8} {:<28} aggregates",
            "seq",
            "window start",
            "length",
            "model"
        );
    }
    for r in rows {
        say!("{r}");
    }
    say!("{report}");
    if let (Some((t, d)), Some(o)) = (&identity, &report.origin)
        && *o != outbox::origin(t, d)
    {
        content_problem.get_or_insert_with(|| {
            format!("the records' device {t}/{d} does not match the log's origin {o}")
        });
    }
    if let Some(p) = &content_problem {
        say!("record contents: {p}");
    }
    if report.is_ok() && content_problem.is_none() {
        say!("audit verify: OK");
        Ok(ExitCode::SUCCESS)
    } else {
        say!("audit verify: FAILED");
        Ok(ExitCode::from(EXIT_MISMATCH))
    }
}

/// One line for a person: the window and its aggregates, suppressed counts as "<k".
fn show_record(r: &RecordView) -> String {
    use aggregate::Published;
    let k = r.privacy.k;
    let p = |v: &Published| match v {
        Published::Value(v) => v.to_string(),
        Published::Suppressed => format!("<{k}"),
    };
    let pct = |ppm: u64| format!("{:.1}%", ppm as f64 / 1e4);
    let mut parts = Vec::new();
    for (c, v) in &r.aggregates.count {
        parts.push(format!(
            "{c}: max {} total {} in {} frames",
            p(&v.max),
            p(&v.total),
            v.frames
        ));
    }
    for (c, v) in &r.aggregates.presence_share {
        let share = match v.share_ppm {
            Published::Value(s) => pct(s),
            Published::Suppressed => format!("<{k} frames"),
        };
        parts.push(format!("{c} present {share}"));
    }
    for (f, v) in &r.aggregates.speech_share {
        parts.push(format!(
            "{f} {} of {:.1} s",
            pct(v.share_ppm),
            v.observed_ms as f64 / 1e3
        ));
    }
    for (n, v) in &r.aggregates.level_stats {
        let m = |x: Option<i64>| x.map_or("-".into(), |x| format!("{:.1}", x as f64 / 1e3));
        parts.push(format!(
            "{n}: min {} mean {} max {} p90 {}",
            m(v.min_milli),
            m(v.mean_milli),
            m(v.max_milli),
            m(v.p90_milli)
        ));
    }
    if parts.is_empty() {
        parts.push("nothing observed".into());
    }
    let mut flags = String::new();
    if r.window.partial {
        flags.push_str(" [partial]");
    }
    if r.window.clock_jumps > 0 {
        flags.push_str(&format!(" [clock jump {:+} ms]", r.window.clock_jump_ms));
    }
    if let Some(n) = &r.privacy.noise {
        flags.push_str(&format!(" [noise eps {}]", n.epsilon_milli as f64 / 1e3));
    }
    format!(
        "{:>6}  {:<24} {:<8} {:<28} {}{flags}",
        r.seq,
        r.window.start,
        format!("{}s", r.window.length_ms / 1000),
        format!("{} {}", r.model.id, r.model.version),
        parts.join("; ")
    )
}
