//! An orderly stop: SIGTERM at seeded random moments of a live (real-time) run. Each time the
//! agent exits 0 within a bounded time, the log verifies, each pipeline's open window appears
//! once, as a partial record, nothing already appended is lost, and the next start continues
//! the same log.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use aggregate::RecordView;
use support::{device, records, start, terminate, text, verify};

/// Two pipelines replayed in real time (the clocks of a live source): speech in 1 s windows,
/// faces at 2 frames per second in 2 s windows.
fn pipelines() -> String {
    let speech = include_str!("../../tests/fixtures/speech-pipeline.toml")
        .replace("repeat = 1\n", "speed = \"realtime\"\nrepeat = 100\n");
    let faces = support::faces_pipeline(
        "faces",
        "2s",
        "kind = \"replay\"\npath = \"{root}/models/samples/people.png\"\nspeed = \"realtime\"\nfps = 2.0\nrepeat = 100000",
    );
    speech + &faces
}

#[test]
fn sigterm_closes_the_open_windows_as_partial_records_and_the_next_start_continues() {
    let (dir, config) = device(&pipelines());
    let mut seed: u64 = std::env::var("IAT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5157_2026);
    let first_seed = seed;
    let mut before = 0usize;
    let mut stops = Vec::new();
    for round in 0..3 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_millis(2500 + (seed >> 33) % 3000);
        let child = start(&config);
        std::thread::sleep(delay);
        let (out, took) = terminate(child, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "round {round}: SIGTERM after {delay:?} ended with {}: {}",
            out.status,
            text(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("latest signed checkpoint"),
            "round {round}: no final checkpoint: {}",
            text(&out)
        );

        let recs = records(dir.path());
        // Nothing appended before is lost, and the log goes on where it was.
        assert!(recs.len() > before, "round {round}: no record appended");
        assert!(recs.iter().enumerate().all(|(i, r)| r.seq == i as u64));
        let new = &recs[before..];
        let mut per_model: BTreeMap<&str, Vec<&RecordView>> = BTreeMap::new();
        for r in new {
            per_model.entry(r.model.id.as_str()).or_default().push(r);
        }
        assert_eq!(
            per_model.len(),
            2,
            "round {round}: both pipelines published: {:?}",
            per_model.keys()
        );
        for (model, rs) in &per_model {
            let last = rs.last().unwrap();
            assert!(
                last.window.partial,
                "round {round}: {model}: the window open at the stop closes as partial: {last:?}"
            );
            // Each window once: no window closed twice.
            let mut starts: Vec<&str> = rs.iter().map(|r| r.window.start.as_str()).collect();
            starts.dedup();
            assert_eq!(
                starts.len(),
                rs.len(),
                "round {round}: {model}: a window twice"
            );
            // Partial only where a run started or stopped mid-window.
            let partial = rs.iter().filter(|r| r.window.partial).count();
            assert!(
                partial <= 2,
                "round {round}: {model}: {partial} partial windows"
            );
        }
        stops.push((delay, took, new.len()));
        before = recs.len();
    }
    let o = verify(dir.path());
    assert!(o.status.success(), "{}", text(&o));
    let rounds: Vec<String> = stops
        .iter()
        .map(|(delay, took, n)| {
            format!(
                "after {:.1} s: exit 0 in {} ms, {n} new records",
                delay.as_secs_f64(),
                took.as_millis()
            )
        })
        .collect();
    support::figures(&format!(
        "FIGURES SIGTERM at seeded moments (IAT_SEED={first_seed}): {} | after each stop: the log verifies, the window open at the stop closed as partial, each window once, a final checkpoint, the next start continues the log",
        rounds.join(" | ")
    ));
}
