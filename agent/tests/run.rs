//! The agent end to end on real files: `keygen`, `run` on the bundled samples, `audit verify`
//! and `audit show`; aggregates against the samples' ground truth; tampering caught; SIGKILL
//! at random points followed by a restart that continues the same tree.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use aggregate::Published;
use support::{agent, device, records, text, verify};

/// The speech pipeline the end-to-end tests also run.
const SPEECH: &str = include_str!("../../tests/fixtures/speech-pipeline.toml");

const FACES: &str = r#"
[[pipeline]]
name = "faces"
model = "{root}/models/centerface-int8/card.toml"
aggregates = ["count", "presence_share"]
window = "10s"
[pipeline.source]
kind = "replay"
path = "{root}/models/samples/people.png"
fps = 1.0
repeat = 25
start = "2026-11-30T10:00:00Z"
[pipeline.privacy]
k = 3
"#;

fn log_dir(dir: &Path) -> PathBuf {
    dir.join("data/log")
}

fn vkey(dir: &Path) -> PathBuf {
    dir.join("keys/device.vkey")
}

#[test]
fn speech_share_per_window_follows_the_sample_s_segments() {
    let (dir, config) = device(SPEECH);
    let o = agent(&["run", "--config", config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(verify(dir.path()).status.success());
    let recs = records(dir.path());
    // 17.7 s of audio in 1 s windows: 18 records, the last one partial.
    assert_eq!(recs.len(), 18, "{recs:?}");
    assert_eq!(recs[0].window.start, "2026-11-30T10:00:00.000Z");
    // Ground truth (models/samples/manifest.toml): silence 0-2 s, speech 2-7.79 s, noise
    // 7.79-10.79 s, speech with noise 10.79-16.21 s, silence after. Windows wholly inside a
    // segment: speech windows hold speech (with the pauses between words), others none.
    let share = |i: usize| recs[i].aggregates.speech_share["speech"].share_ppm as f64 / 1e6;
    for i in [0, 1, 8, 9, 17] {
        assert!(share(i) < 0.05, "window {i} (no speech): {:.2}", share(i));
    }
    let speech = [2, 3, 4, 5, 6, 11, 12, 13, 14, 15];
    for i in speech {
        assert!(share(i) > 0.3, "window {i} (speech): {:.2}", share(i));
    }
    let mean = speech.iter().map(|&i| share(i)).sum::<f64>() / speech.len() as f64;
    assert!(mean > 0.7, "mean share in speech windows {mean:.2}");
}

#[test]
fn faces_are_counted_and_small_counts_suppressed() {
    let (dir, config) = device(FACES);
    let o = agent(&["run", "--config", config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let recs = records(dir.path());
    // 25 frames at 1 fps in 10 s windows: 10, 10, 5 (partial).
    assert_eq!(
        recs.iter()
            .map(|r| r.aggregates.count["face"].frames)
            .collect::<Vec<_>>(),
        vec![10, 10, 5]
    );
    for r in &recs {
        let c = &r.aggregates.count["face"];
        // Two faces at once is below k = 3: published as suppressed, never as 2 or 0; and so
        // are the total (2 per frame) and the presence (all the frames) that would reveal it.
        assert_eq!(c.max, Published::Suppressed);
        assert_eq!(c.total, Published::Suppressed);
        let p = &r.aggregates.presence_share["face"];
        assert_eq!(
            (p.present_frames, p.share_ppm),
            (Published::Suppressed, Published::Suppressed)
        );
    }
    // `audit show` shows the suppressed counts as "<3" for a person.
    let o = agent(&[
        "audit",
        "show",
        log_dir(dir.path()).to_str().unwrap(),
        "--pubkey",
        vkey(dir.path()).to_str().unwrap(),
    ]);
    assert!(
        text(&o).contains("face: max <3 total <3 in 10 frames"),
        "{}",
        text(&o)
    );
}

/// The day's privacy budget survives restarts: each run charges the budget file, and a run
/// that finds it nearly spent publishes what it can pay for and withholds the rest.
#[test]
fn the_daily_privacy_budget_is_kept_across_restarts() {
    let noisy = FACES.replace(
        "k = 3\n",
        "k = 1\nnoise = { mechanism = \"geometric\", epsilon = 1.0, budget_per_day = 8640 }\n",
    );
    let (dir, config) = device(&noisy);
    let ledger = dir.path().join("data/privacy-budget/faces");
    // 2026-11-30 is day 20787 since 1970-01-01.
    let spent = || std::fs::read_to_string(&ledger).unwrap();
    let run = || {
        let o = agent(&["run", "--config", config.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
    };
    // Three records of 0.999 (max, total, present frames at 0.333 each).
    run();
    assert_eq!(spent(), "20787 2997\n");
    run();
    assert_eq!(spent(), "20787 5994\n");
    // 1.5 left: the next record is paid for, the two after it are withheld.
    std::fs::write(&ledger, "20787 8638500\n").unwrap();
    run();
    assert_eq!(spent(), "20787 8639499\n");
    let recs = records(dir.path());
    let last: Vec<_> = recs[recs.len() - 3..]
        .iter()
        .map(|r| {
            let b = r.privacy.budget.as_ref().unwrap();
            (
                r.privacy.epsilon_milli,
                b.spent_milli,
                b.withheld,
                r.aggregates.count.len(),
            )
        })
        .collect();
    assert_eq!(
        last,
        [
            (Some(999), 8_639_499, false, 1),
            (Some(0), 8_639_499, true, 0),
            (Some(0), 8_639_499, true, 0)
        ]
    );
    assert!(verify(dir.path()).status.success());
    // A damaged budget file stops the pipeline with a message naming it.
    std::fs::write(&ledger, "lots\n").unwrap();
    let o = agent(&["run", "--config", config.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("privacy-budget/faces") && text(&o).contains("not a privacy budget"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_config_asking_for_an_aggregate_the_card_does_not_allow_is_rejected() {
    let (_dir, config) =
        device(&SPEECH.replace("[\"speech_share\"]", "[\"speech_share\", \"count\"]"));
    let o = agent(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("pipeline[0].aggregates[1]")
            && text(&o).contains("does not allow `count`"),
        "{}",
        text(&o)
    );
}

#[test]
fn tampering_with_a_record_is_reported_with_its_seq() {
    let (dir, config) = device(SPEECH);
    assert!(
        agent(&["run", "--config", config.to_str().unwrap()])
            .status
            .success()
    );
    let seg_dir = log_dir(dir.path()).join("segments");
    let seg = std::fs::read_dir(&seg_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&seg).unwrap();
    // Change a digit of a share inside the last record: `"share_ppm":` followed by a digit.
    let at = bytes
        .windows(12)
        .rposition(|w| w == b"\"share_ppm\":")
        .unwrap()
        + 12;
    bytes[at] = if bytes[at] == b'1' { b'2' } else { b'1' };
    std::fs::write(&seg, &bytes).unwrap();
    let o = verify(dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("seq 17"), "{}", text(&o));
    assert!(text(&o).contains("FAILED"), "{}", text(&o));
}

/// SIGKILL at seeded random points of a slow replay; each restart continues the same log and
/// tree, every record that was appended before a kill is still there, and the log verifies.
#[test]
fn after_sigkill_the_agent_continues_the_same_tree() {
    // The sample replayed 20 times: ~354 one-second windows, appended as they close, over a
    // second or two of processing: long enough to be killed mid-run.
    let (dir, config) = device(&SPEECH.replace("repeat = 1\n", "repeat = 20\n"));
    let mut seed: u64 = 0x1A7_2026;
    let mut sizes = Vec::new();
    for _ in 0..5 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay_ms = 100 + (seed >> 33) % 900;
        let mut child = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
            .args(["run", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let o = verify(dir.path());
        assert!(
            o.status.success(),
            "after a kill at {delay_ms} ms: {}",
            text(&o)
        );
        sizes.push(records(dir.path()).len());
    }
    // A full run after the kills appends all its windows to the same tree: 20 x 553 chunks of
    // 32 ms = 353.9 s of audio in 1 s windows.
    let before = *sizes.last().unwrap();
    assert!(
        agent(&["run", "--config", config.to_str().unwrap()])
            .status
            .success()
    );
    let recs = records(dir.path());
    assert_eq!(
        recs.len() - before,
        354,
        "{} records after {before}",
        recs.len()
    );
    assert!(
        sizes.iter().any(|&s| s > 0),
        "no kill happened after the first append: {sizes:?}"
    );
    assert!(recs.iter().enumerate().all(|(i, r)| r.seq == i as u64));
    assert!(
        sizes.windows(2).all(|w| w[0] <= w[1]),
        "the log never shrinks: {sizes:?}"
    );
    assert!(verify(dir.path()).status.success());
}
