//! An audio-event classifier end to end: `run` replays the speech sample through FireRedVAD's
//! AED model (speech, singing, music) and publishes the share of each window each class was
//! heard; the records hold those shares only.

mod support;

use support::{agent, device, records, text, verify};

const AED: &str = r#"
[[pipeline]]
name = "sons"
model = "{root}/models/firered-aed/card.toml"
aggregates = ["class_share"]
window = "1s"
[pipeline.source]
kind = "replay"
path = "{root}/models/samples/speech.wav"
repeat = 1
start = "2026-11-30T10:00:00Z"
[pipeline.privacy]
k = 1
"#;

#[test]
fn class_shares_per_window_follow_the_sample_s_segments() {
    let (dir, config) = device(AED);
    let o = agent(&["run", "--config", config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(verify(dir.path()).status.success());
    let mut recs = records(dir.path());
    // 17.7 s of audio in whole 1 s chunks: 17 s analysed, 17 windows of 1 s each; the stop
    // at the end of the replay closes an 18th, empty and partial (nothing observed in it).
    assert_eq!(recs.len(), 18, "{recs:?}");
    let last = recs.pop().unwrap();
    assert!(
        last.window.partial && last.aggregates.class_share.is_empty(),
        "{last:?}"
    );
    let share = |i: usize, c: &str| recs[i].aggregates.class_share[c].share_ppm as f64 / 1e6;
    for (i, r) in recs.iter().enumerate() {
        let classes: Vec<&str> = r
            .aggregates
            .class_share
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            classes,
            ["music", "singing", "speech"],
            "window {i}: every class, zeros included"
        );
        assert_eq!(
            r.aggregates.class_share["speech"].observed_ms, 1000,
            "window {i}"
        );
        // Nothing sung and no music in the sample (a few frames of street noise may pass for
        // music).
        assert!(
            share(i, "singing") < 0.05,
            "window {i}: singing {:.2}",
            share(i, "singing")
        );
        assert!(
            share(i, "music") < 0.1,
            "window {i}: music {:.2}",
            share(i, "music")
        );
    }
    // Ground truth (models/samples/manifest.toml): silence 0-2 s, speech 2-7.79 s, noise
    // 7.79-10.79 s, speech with noise 10.79-16.21 s, silence after.
    for i in [0, 1, 8, 9, 16] {
        assert!(
            share(i, "speech") < 0.05,
            "window {i} (no speech): {:.2}",
            share(i, "speech")
        );
    }
    let speech = [2, 3, 4, 5, 6, 11, 12, 13, 14, 15];
    for i in speech {
        assert!(
            share(i, "speech") > 0.3,
            "window {i} (speech): {:.2}",
            share(i, "speech")
        );
    }
    let mean = speech.iter().map(|&i| share(i, "speech")).sum::<f64>() / speech.len() as f64;
    assert!(mean > 0.7, "mean speech share in speech windows {mean:.2}");
}

#[test]
fn a_pipeline_may_publish_some_classes_only() {
    let (dir, config) = device(&AED.replace(
        "aggregates = [\"class_share\"]",
        "aggregates = [\"class_share\"]\nclasses = [\"music\"]",
    ));
    let o = agent(&["run", "--config", config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let recs = records(dir.path());
    assert_eq!(recs.len(), 18);
    // The last window is the empty one closed by the stop.
    for r in &recs[..17] {
        let classes: Vec<&String> = r.aggregates.class_share.keys().collect();
        assert_eq!(classes, ["music"]);
        assert!(r.aggregates.speech_share.is_empty() && r.aggregates.count.is_empty());
    }
    // `audit show` says it in plain words.
    let show = agent(&[
        "audit",
        "show",
        dir.path().join("data/log").to_str().unwrap(),
        "--pubkey",
        dir.path().join("keys/device.vkey").to_str().unwrap(),
    ]);
    assert!(show.status.success(), "{}", text(&show));
    assert!(
        text(&show).contains("music 0.0% of 1.0 s"),
        "{}",
        text(&show)
    );
}

#[test]
fn model_run_names_classes_and_outputs() {
    let root = support::root();
    let card = |id: &str| root.join(format!("models/{id}/card.toml"));
    let speech = root.join("models/samples/speech.wav");
    let o = agent(&[
        "model",
        "run",
        card("firered-aed").to_str().unwrap(),
        speech.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    for class in ["speech ", "singing 0.0%", "music "] {
        assert!(text(&o).contains(class), "{}", text(&o));
    }
    // A card `model run` cannot aggregate: its outputs named, not a debug dump.
    let o = agent(&[
        "model",
        "run",
        card("oww-embedding").to_str().unwrap(),
        speech.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("`conv2d_19` (features)") && !text(&o).contains("[None]"),
        "{}",
        text(&o)
    );
}
