//! A soak: the agent on a live ALSA source for two hours of stream time, accelerated (the
//! asoundrc `file` plugin over a `null` slave delivers as fast as it is read), with its
//! resident memory and open file descriptors sampled from /proc as it runs: both must stay
//! flat once the model is loaded and the first windows are closed.

mod support;

use std::time::{Duration, Instant};

use support::{device, records, text, verify};

/// Stream time of the soak.
const STREAM: Duration = Duration::from_secs(2 * 3600);

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

#[test]
fn two_hours_of_live_audio_leave_memory_and_descriptors_flat() {
    let home = tempfile::tempdir().unwrap();
    let raw = home.path().join("speech.raw");
    let mut reader =
        hound::WavReader::open(support::root().join("models/samples/speech.wav")).unwrap();
    let bytes: Vec<u8> = reader
        .samples::<i16>()
        .flat_map(|s| s.unwrap().to_le_bytes())
        .collect();
    std::fs::write(&raw, bytes).unwrap();
    std::fs::write(
        home.path().join(".asoundrc"),
        format!(
            "pcm.live {{\n  type file\n  slave.pcm \"null\"\n  file \"/dev/null\"\n  infile \"{}\"\n  format \"raw\"\n}}\n",
            raw.display()
        ),
    )
    .unwrap();
    let (dir, config) = device(&format!(
        "\n[[pipeline]]\nname = \"speech\"\nmodel = \"{{root}}/models/silero-vad-16k/card.toml\"\n\
         aggregates = [\"speech_share\"]\nwindow = \"1m\"\n[pipeline.source]\n\
         kind = \"microphone\"\ninput = \"live\"\nduration = \"{}s\"\n[pipeline.privacy]\nk = 1\n",
        STREAM.as_secs()
    ));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let started = Instant::now();
    let mut samples: Vec<(Duration, u64, usize)> = Vec::new();
    while child.try_wait().unwrap().is_none() {
        if let (Some(r), Some(f)) = (rss_kib(pid), fds(pid)) {
            samples.push((started.elapsed(), r, f));
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "the soak is hung"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // Two hours in 1 min windows, each window once.
    assert!(verify(dir.path()).status.success());
    let recs = records(dir.path());
    assert!((120..=121).contains(&recs.len()), "{} records", recs.len());
    let chunks = STREAM.as_micros() as u64 * 16 / 512_000;
    assert!(
        text(&out).contains(&format!(
            "{chunks} frames or chunks analysed ({chunks} captured"
        )),
        "{}",
        text(&out)
    );
    // Flat: after the first fifth of the run (model loaded, buffers grown), memory grows by
    // less than 4 MiB and no descriptor is left open.
    assert!(samples.len() >= 10, "too few samples: {samples:?}");
    let warm = &samples[samples.len() / 5];
    let last = samples.last().unwrap();
    let peak = samples[samples.len() / 5..]
        .iter()
        .map(|s| s.1)
        .max()
        .unwrap();
    support::figures(&format!(
        "FIGURES soak (microphone, live ALSA): {} s of stream in {:.1} s; RSS {} KiB after warm-up, {} KiB at the end (peak {} KiB); fds {} -> {}",
        STREAM.as_secs(),
        last.0.as_secs_f64(),
        warm.1,
        last.1,
        peak,
        warm.2,
        last.2
    ));
    assert!(
        peak <= warm.1 + 4096,
        "memory grew: {} KiB -> peak {} KiB",
        warm.1,
        peak
    );
    assert_eq!(last.2, warm.2, "open descriptors changed: {samples:?}");
}
