//! `cargo xtask bench`: per model, the agent's latency and memory beside onnxruntime's
//! (single thread, same input, alternating rounds so that both see the same machine state).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::sh;

#[derive(Deserialize, Clone)]
struct Figures {
    load_ms: f64,
    p50_ms: f64,
    p90_ms: f64,
    peak_rss_kib: Option<u64>,
}

/// The Python environment with onnxruntime (models/tools/setup-venv.sh makes it).
fn venv_python() -> Result<PathBuf> {
    let venv = std::env::var_os("IAT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/iat/venv")
        });
    let python = venv.join("bin/python");
    if !python.is_file() {
        sh::run(
            Command::new("bash")
                .arg(sh::root().join("models/tools/setup-venv.sh"))
                .env("IAT_VENV", &venv),
        )?;
    }
    Ok(python)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn bench(only: &[String], rounds: usize, runs: usize) -> Result<()> {
    crate::models::fetch()?;
    let agent = crate::models::agent_release()?;
    let python = venv_python()?;
    let cards: Vec<PathBuf> = crate::models::cards()?
        .into_iter()
        .filter(|c| only.is_empty() || only.contains(&crate::models::id(c)))
        .collect();
    if cards.is_empty() {
        bail!("no model matches {only:?} (see `cargo xtask models list`)");
    }
    let mut rows = Vec::new();
    for card in &cards {
        let id = crate::models::id(card);
        let (mut ours, mut ort) = (Vec::new(), Vec::new());
        for round in 0..rounds.max(1) {
            eprintln!("bench {id}: round {}/{}", round + 1, rounds.max(1));
            let runs_s = runs.to_string();
            let a = sh::output(
                Command::new(&agent)
                    .args([
                        "model", "bench", "--json", "--runs", &runs_s, "--warmup", "3",
                    ])
                    .arg(card)
                    .current_dir(sh::root()),
            )?;
            ours.push(
                serde_json::from_str::<Figures>(a.trim())
                    .with_context(|| format!("agent bench output: {a}"))?,
            );
            let o = sh::output(
                Command::new(&python)
                    .arg(sh::root().join("models/tools/ort_bench.py"))
                    .arg(card)
                    .args(["--json", "--runs", &runs_s, "--warmup", "3"])
                    .current_dir(sh::root()),
            )?;
            ort.push(
                serde_json::from_str::<Figures>(o.trim())
                    .with_context(|| format!("onnxruntime bench output: {o}"))?,
            );
        }
        rows.push((id, ours, ort));
    }
    println!();
    println!("single thread, {rounds} alternating rounds x {runs} runs each; medians over rounds");
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>10} {:>7} {:>10} {:>10} {:>10} {:>10}",
        "model",
        "agent p50",
        "agent p90",
        "ort p50",
        "ort p90",
        "ratio",
        "agent load",
        "ort load",
        "agent RSS",
        "ort RSS"
    );
    for (id, ours, ort) in rows {
        let m = |v: &[Figures], f: fn(&Figures) -> f64| median(v.iter().map(f).collect());
        let rss = |v: &[Figures]| {
            v.iter()
                .filter_map(|f| f.peak_rss_kib)
                .max()
                .map_or("n/a".into(), |k| format!("{:.0} MiB", k as f64 / 1024.0))
        };
        let (a50, o50) = (m(&ours, |f| f.p50_ms), m(&ort, |f| f.p50_ms));
        println!(
            "{:<22} {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>7.2} {:>8.1}ms {:>8.1}ms {:>10} {:>10}",
            id,
            a50,
            m(&ours, |f| f.p90_ms),
            o50,
            m(&ort, |f| f.p90_ms),
            a50 / o50,
            m(&ours, |f| f.load_ms),
            m(&ort, |f| f.load_ms),
            rss(&ours),
            rss(&ort)
        );
    }
    Ok(())
}
