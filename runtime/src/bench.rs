//! `model bench`: latency percentiles over repeated runs, load + optimise time, peak memory.
//! Figures come from one process; the xtask runs it beside onnxruntime for comparison.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use tract_onnx::prelude::*;

use crate::golden;
use crate::load::{LoadOptions, Model, ModelError, NodeTime};
use modelcard::Card;

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub runs: usize,
    pub load_ms: f64,
    pub load_read_hash_ms: f64,
    pub load_decode_ms: f64,
    pub load_analyse_ms: f64,
    pub load_optimise_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub min_ms: f64,
    /// Peak resident set of the whole process (VmHWM), KiB.
    pub peak_rss_kib: Option<u64>,
    /// Resident set before the model was loaded, KiB.
    pub base_rss_kib: Option<u64>,
}

/// Loads the card's model and runs it `runs` times (after `warmup` runs) on its first golden
/// input set (real data) or, without golden vectors, on the card's initial inputs.
pub fn bench(
    card: &Card,
    warmup: usize,
    runs: usize,
    progress: &dyn Fn(usize),
) -> Result<BenchReport, golden::GoldenError> {
    let base_rss_kib = proc_status_kib("VmRSS");
    let model = Model::load(card, LoadOptions::default())?;
    let inputs = sample_inputs(card, &model);
    let run_once = || -> Result<Duration, ModelError> {
        let tv: TVec<TValue> = inputs.iter().cloned().map(TValue::from).collect();
        let t = Instant::now();
        let out = model.run(tv)?;
        let d = t.elapsed();
        drop(out);
        Ok(d)
    };
    for _ in 0..warmup {
        run_once()?;
    }
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs.max(1) {
        times.push(run_once()?);
        progress(i + 1);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let pct = |p: f64| ms(times[((times.len() - 1) as f64 * p).round() as usize]);
    let t = model.times;
    Ok(BenchReport {
        model: card.id.clone(),
        runs: times.len(),
        load_ms: ms(t.total()),
        load_read_hash_ms: ms(t.read_and_hash),
        load_decode_ms: ms(t.decode),
        load_analyse_ms: ms(t.analyse),
        load_optimise_ms: ms(t.optimise),
        p50_ms: pct(0.5),
        p90_ms: pct(0.9),
        p99_ms: pct(0.99),
        mean_ms: times.iter().map(|&d| ms(d)).sum::<f64>() / times.len() as f64,
        min_ms: ms(times[0]),
        peak_rss_kib: proc_status_kib("VmHWM"),
        base_rss_kib,
    })
}

/// Time per operator over repeated runs (`model profile`).
#[derive(Debug, Serialize)]
pub struct Profile {
    pub model: String,
    pub runs: usize,
    /// Median over runs of the whole run's time (sum of the operators).
    pub total_ms: f64,
    /// Per operator kind: name, node count, median time per run (ms), sorted slowest first.
    pub by_operator: Vec<(String, usize, f64)>,
    /// Per node: name, operator, shapes, median time per run (ms), sorted slowest first.
    pub by_node: Vec<(String, String, String, f64)>,
}

/// Runs the card's model `runs` times (after `warmup`) timing every operator; the figure for
/// each node is its median over the runs, so one slow run on a busy machine does not count.
pub fn profile(
    card: &Card,
    warmup: usize,
    runs: usize,
    progress: &dyn Fn(usize),
) -> Result<Profile, golden::GoldenError> {
    let model = Model::load(card, LoadOptions::default())?;
    let inputs = sample_inputs(card, &model);
    let tv = || {
        inputs
            .iter()
            .cloned()
            .map(TValue::from)
            .collect::<TVec<_>>()
    };
    for _ in 0..warmup {
        model.run(tv())?;
    }
    let runs = runs.max(1);
    let mut nodes: Vec<(NodeTime, Vec<Duration>)> = Vec::new();
    let mut totals = Vec::with_capacity(runs);
    for i in 0..runs {
        let times = model.run_profiled(tv())?;
        totals.push(times.iter().map(|t| t.time).sum::<Duration>());
        if nodes.is_empty() {
            nodes = times
                .into_iter()
                .map(|t| (t.clone(), vec![t.time]))
                .collect();
        } else {
            for (slot, t) in nodes.iter_mut().zip(times) {
                slot.1.push(t.time);
            }
        }
        progress(i + 1);
    }
    let median_ms = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e3
    };
    let total_ms = median_ms(&mut totals);
    let mut by_node: Vec<(String, String, String, f64)> = nodes
        .into_iter()
        .map(|(t, mut d)| (t.name, t.op, t.shapes, median_ms(&mut d)))
        .collect();
    let mut by_op: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    for (_, op, _, ms) in &by_node {
        let e = by_op.entry(op.clone()).or_default();
        e.0 += 1;
        e.1 += ms;
    }
    let mut by_operator: Vec<(String, usize, f64)> =
        by_op.into_iter().map(|(op, (n, ms))| (op, n, ms)).collect();
    by_operator.sort_by(|a, b| b.2.total_cmp(&a.2));
    by_node.sort_by(|a, b| b.3.total_cmp(&a.3));
    Ok(Profile {
        model: card.id.clone(),
        runs,
        total_ms,
        by_operator,
        by_node,
    })
}

/// The card's first golden input set (real data) or, without golden vectors, its initial inputs.
fn sample_inputs(card: &Card, model: &Model) -> Vec<Tensor> {
    match golden::load_vectors(card) {
        Ok(mut v) if !v.is_empty() => v.swap_remove(0).inputs,
        _ => model.initial_inputs(),
    }
}

/// A `kB` field of /proc/self/status (Linux only; `None` elsewhere).
pub fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
