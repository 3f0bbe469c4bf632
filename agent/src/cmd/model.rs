//! `edge-agent model ...`: inspect, check, bench, vet, profile and run a model under its card.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agent::pipeline::{self, AudioStream};
use anyhow::{Context, Result};
use modelcard::{Card, InputRole, Postprocess, Preprocess};
use runtime::{LoadOptions, Model, bench, golden};

use crate::{EXIT_BAD_INPUT, EXIT_MISMATCH};

pub fn load_card(path: &Path) -> Result<Card> {
    Ok(Card::load(path)?)
}

pub fn inspect(path: &Path) -> Result<ExitCode> {
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
    if let Some(p) = &card.provenance {
        say!(
            "  provenance    {} {} {} ({}), {}",
            p.registry,
            p.package,
            p.package_version,
            p.path,
            p.derivation
        );
    }
    if let Some(a) = &card.accuracy {
        say!("  accuracy      {a}");
    }
    if let Some(m) = &card.measurement {
        say!(
            "  measurement   {} source, levels {} (the method is the file above; no network)",
            m.source.name(),
            m.levels.join(", ")
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(c) = &card.check {
        say!(
            "  check         {} (abs {}, rel {}, steps {})",
            c.vectors.display(),
            c.abs,
            c.rel,
            c.steps
        );
    }
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
    // What the agent's rewrites and workarounds did to the graph, the ones that applied: `{}`
    // stands for how many.
    let r = &model.rewrites;
    let w = &model.workarounds;
    let applied = [
        (r.fused_qdq_pairs, "fused: {} QuantizeLinear -> DequantizeLinear pairs run as one FakeQuant operator each".to_owned()),
        (r.int8_convolutions, format!("int8: {{}} quantised convolutions run as integer matrix products (QConv), {} activations passed as bytes", r.byte_edges)),
        (r.float_pointwise, "pointwise: {} float 1x1 convolutions run with bias and ReLU fused, without packing".to_owned()),
        (r.float_direct, "direct: {} float KxK convolutions run without patch copies, activation fused".to_owned()),
        (r.pads, "pads: {} paddings along the last axis run in one pass".to_owned()),
        (r.byte_pools, "bytes: {} max poolings run on the quantised bytes (BytePool)".to_owned()),
        (r.byte_concats, "bytes: {} concatenations run on the quantised bytes, requantised by tables (ByteConcat)".to_owned()),
        (r.byte_tables, "tables: {} tables over bytes (quantised element-wise activations) run 64 bytes at a time where the CPU allows (ByteTable)".to_owned()),
        (r.resizes, "resizes: {} resizes of height and width run one output row at a time (PlaneResize)".to_owned()),
        (r.depthwise, "depthwise: {} depthwise convolutions run by the agent's vectorised kernel".to_owned()),
        (r.quantised_adds, "sums: {} additions of quantised activations run with their output quantiser (QAdd)".to_owned()),
        (w.folded_dequantisations, "prepared: {} constant weight dequantisations computed before tract's analysis (load time)".to_owned()),
        (w.renamed_nodes, "workaround: {} nodes with duplicate names renamed (tract needs unique names)".to_owned()),
    ];
    for (n, line) in applied {
        if n > 0 {
            say!("  {}", line.replacen("{}", &n.to_string(), 1));
        }
    }
    if r.int8_convolutions > 0 {
        say!("  kernels: int8 products on {} (this CPU)", r.int8_kernel);
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

pub fn check(paths: &[PathBuf], options: LoadOptions) -> Result<ExitCode> {
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
                        "{verdict:>4}  {} {set} {}: worst |err| {:.3e} at [{}] (got {:.6}, expected {:.6}), {:.2} of tolerance, {} of {} elements outside, digest {}",
                        card.id,
                        o.name,
                        o.max_abs,
                        o.worst_at,
                        o.got,
                        o.expected,
                        o.worst_ratio,
                        o.mismatches,
                        o.elements,
                        o.digest
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
        if model.rewrites.int8_convolutions > 0 {
            say!(
                "kernel {}: {} int8 convolutions on {}",
                card.id,
                model.rewrites.int8_convolutions,
                model.rewrites.int8_kernel
            );
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

pub fn bench_cmd(path: &Path, runs: usize, warmup: usize, json: bool) -> Result<ExitCode> {
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

pub fn vet_cmd(cards: &[PathBuf], limits: runtime::vet::Limits) -> Result<ExitCode> {
    let mut all = true;
    for card in cards {
        match runtime::vet::vet(card, limits) {
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

pub fn profile_cmd(path: &Path, runs: usize, warmup: usize, top: usize) -> Result<ExitCode> {
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

/// Runs a card on files and prints the aggregate only: a count of faces or of objects per class
/// per image, or the share of time with speech or with each class of an audio classifier. Detections and probabilities never leave this function.
pub fn run_model(path: &Path, inputs: &[PathBuf], threshold: f32) -> Result<ExitCode> {
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
    } else if post.contains(&Postprocess::SpeechProbability)
        || post.contains(&Postprocess::ClassScores)
    {
        let labels = card
            .audio_scores()
            .map(|(_, o)| o.labels.clone())
            .unwrap_or_default();
        for input in inputs {
            let audio = pipeline::read_wav(input)?;
            let mut stream = AudioStream::new(&model)?;
            let samples =
                pipeline::resample(&audio.samples, audio.sample_rate, stream.sample_rate());
            let n = stream.chunk_len();
            // Per class: frames at or above the threshold, and segments of them.
            let mut on = vec![0usize; labels.len().max(1)];
            let mut segments = vec![0usize; on.len()];
            let mut was = vec![false; on.len()];
            let mut frames = 0usize;
            for chunk in samples.chunks_exact(n) {
                let scores = stream
                    .push(chunk)
                    .with_context(|| format!("{}: running {}", input.display(), card.id))?;
                for f in 0..scores.frames {
                    for (c, p) in scores.frame(f).iter().enumerate().take(on.len()) {
                        let is = *p >= threshold;
                        on[c] += is as usize;
                        segments[c] += (is && !was[c]) as usize;
                        was[c] = is;
                    }
                    frames += 1;
                }
            }
            let secs = (samples.len() / n * n) as f64 / stream.sample_rate() as f64;
            let shares: Vec<String> = on
                .iter()
                .zip(&segments)
                .enumerate()
                .map(|(c, (k, seg))| {
                    format!(
                        "{} {:.1}% in {seg} segment(s)",
                        labels.get(c).map_or("speech", String::as_str),
                        100.0 * *k as f64 / frames.max(1) as f64
                    )
                })
                .collect();
            say!(
                "{}: {} of {:.1} s (model {} {}, threshold {threshold})",
                input.display(),
                shares.join(", "),
                secs,
                card.id,
                card.version
            );
        }
    } else if post.contains(&Postprocess::GflScores) {
        let heads = pipeline::ObjectHeads::of(&card)?;
        let labels = card
            .outputs
            .iter()
            .find(|o| o.postprocess == Postprocess::GflScores)
            .map(|o| o.labels.clone())
            .unwrap_or_default();
        // The classes the card publishes, by their index among the labels.
        let wanted: Vec<usize> = card
            .published_labels()
            .iter()
            .filter_map(|c| labels.iter().position(|l| l == c))
            .collect();
        for input in inputs {
            let img = pipeline::read_image(input)?;
            let (objects, _) =
                pipeline::detect_objects_timed(&model, &heads, &img, &wanted, threshold)?;
            let mut per_class: Vec<(String, usize)> = Vec::new();
            for &i in &wanted {
                let n = objects.iter().filter(|o| o.class == i).count();
                if n > 0 {
                    per_class.push((labels[i].clone(), n));
                }
            }
            let counts: Vec<String> = per_class.iter().map(|(c, n)| format!("{c} {n}")).collect();
            say!(
                "{}: {} (model {} {}, threshold {threshold})",
                input.display(),
                if counts.is_empty() {
                    "no object".to_string()
                } else {
                    counts.join(", ")
                },
                card.id,
                card.version
            );
        }
    } else {
        let outputs: Vec<String> = card
            .outputs
            .iter()
            .map(|o| format!("`{}` ({})", o.name, o.postprocess.name()))
            .collect();
        anyhow::bail!(
            "{}: `model run` knows face and object detectors, voice activity and audio classifiers (outputs with postprocess centerface, gfl-scores, speech-probability or class-scores); this card's outputs are {}",
            card.path.display(),
            outputs.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
