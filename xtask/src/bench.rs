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
pub fn venv_python() -> Result<PathBuf> {
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

/// The bundled cards (or the zoo's) whose ids are in `only` (all when it is empty).
pub fn selected_cards(only: &[String], zoo: bool) -> Result<Vec<PathBuf>> {
    let cards = if zoo {
        crate::models::zoo_cards()?
    } else {
        crate::models::cards()?
    };
    let cards: Vec<PathBuf> = cards
        .into_iter()
        .filter(|c| only.is_empty() || only.contains(&crate::models::id(c)))
        .collect();
    if cards.is_empty() {
        bail!("no model matches {only:?} (see `cargo xtask models list`)");
    }
    Ok(cards)
}

pub fn bench(only: &[String], zoo: bool, rounds: usize, runs: usize) -> Result<()> {
    crate::models::fetch()?;
    let agent = crate::models::agent_release()?;
    let python = venv_python()?;
    let cards = selected_cards(only, zoo)?;
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

/// `cargo xtask bench --camera`: the face pipeline (CenterFace int8) of the release agent on a
/// live 640x480 RTSP stream from the loopback camera, for `seconds`, twice: with frames of
/// 640x480 (the agent resizes each to the model's 320x256) and with frames that ffmpeg scales
/// to 320x256 (docs/agent-config.md: the cheapest). Each time: frames captured and inferred
/// per second, the time per frame in the network and around it (the capture path's overhead:
/// resize, normalisation, decoding, aggregation), the agent's CPU and memory.
pub fn camera(seconds: u64, fps: u32) -> Result<()> {
    crate::models::fetch()?;
    sh::ensure_camera_tools()?;
    let agent = crate::models::agent_release()?;
    let root = sh::root();
    let work = sh::target_dir().join("tmp/bench-camera");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("cleaning {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)?;
    crate::demo::hub::device_keygen(&agent, &work.join("keys"), "bench-001", "fr-bench")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _camera = crate::demo::RtspCamera::start(
        port,
        &root.join("models/samples/people.png"),
        fps,
        Some((640, 480)),
    )?;
    for frame in [(640, 480), (320, 256)] {
        camera_run(&agent, &work, port, fps, seconds, frame)?;
    }
    Ok(())
}

/// One run of [`camera`] with frames of `frame` (width, height).
fn camera_run(
    agent: &std::path::Path,
    work: &std::path::Path,
    port: u16,
    fps: u32,
    seconds: u64,
    (width, height): (u32, u32),
) -> Result<()> {
    use std::io::Read;
    use std::time::{Duration, Instant};

    let root = sh::root();
    let data = work.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    let config = work.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"device = "bench-001"
territory = "fr-bench"
data_dir = "{work}/data"
key = "{work}/keys/device.key"

[[pipeline]]
name = "faces"
model = "{root}/models/centerface-int8/card.toml"
aggregates = ["count", "presence_share"]
window = "10s"
[pipeline.source]
kind = "camera"
input = "rtsp://127.0.0.1:{port}/cam"
width = {width}
height = {height}
fps = {fps}.0
[pipeline.privacy]
k = 3
unit = "person-window"
noise = {{ mechanism = "geometric", epsilon = 1.0, budget_per_day = 8640 }}
"#,
            work = work.display(),
            root = root.display(),
        ),
    )?;
    println!(
        "bench camera: {} for {seconds} s on a {fps} fps 640x480 RTSP stream (rtsp://127.0.0.1:{port}/cam), frames of {width}x{height}",
        agent.display()
    );
    let mut child = Command::new(agent)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", agent.display()))?;
    let pid = child.id();
    let mut stdout = child.stdout.take().context("the agent's output")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new(seconds);
    while started.elapsed() < Duration::from_secs(seconds) {
        if let Some(status) = child.try_wait()? {
            bar.finish_and_clear();
            bail!(
                "the agent stopped by itself ({status}) after {:.1} s; its output:\n{}",
                started.elapsed().as_secs_f64(),
                reader.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
        bar.set_position(started.elapsed().as_secs());
    }
    bar.finish_and_clear();
    // The agent's own CPU time and memory, read before it is told to stop.
    let (cpu_s, rss_kib) = proc_usage(pid).unwrap_or((f64::NAN, 0));
    let ran = started.elapsed().as_secs_f64();
    sh::run(Command::new("kill").args(["-TERM", &pid.to_string()]))?;
    let status = child.wait()?;
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        bail!("the agent failed after SIGTERM ({status}); its output:\n{out}");
    }
    let line = |needle: &str| {
        out.lines()
            .find(|l| l.starts_with("pipeline faces:") && l.contains(needle))
            .with_context(|| format!("no `{needle}` line in the agent's output:\n{out}"))
    };
    let numbers = |l: &str| -> Vec<f64> {
        l.split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter_map(|w| w.trim_matches('.').parse().ok())
            .collect()
    };
    let counts = numbers(line("analysed")?);
    let times = numbers(line("in the network")?);
    let ([analysed, captured, dropped, restarts, ..], [network_ms, around_ms, share, ..]) =
        (counts.as_slice(), times.as_slice())
    else {
        bail!("unexpected figures in the agent's output:\n{out}");
    };
    println!();
    println!(
        "face pipeline (CenterFace int8, input 320x256), 640x480 RTSP at {fps} fps, frames of {width}x{height}, {ran:.1} s, this machine"
    );
    println!(
        "  frames captured        {captured:>8.0}  ({:.1} per second)",
        captured / ran
    );
    println!(
        "  frames inferred        {analysed:>8.0}  ({:.1} per second)",
        analysed / ran
    );
    println!("  dropped for newer ones {dropped:>8.0}");
    println!("  source restarts        {restarts:>8.0}");
    println!("  network per frame      {network_ms:>8.2} ms");
    println!("  around it per frame    {around_ms:>8.2} ms  ({share:.1}% of the network's time)");
    println!(
        "  agent CPU              {:>8.1} %  of one core",
        cpu_s * 100.0 / ran
    );
    println!(
        "  agent RSS              {:>8.1} MiB",
        rss_kib as f64 / 1024.0
    );
    Ok(())
}

/// A process's CPU time (user + system, seconds) and resident memory (KiB), from /proc.
fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((ticks / hz, rss))
}
