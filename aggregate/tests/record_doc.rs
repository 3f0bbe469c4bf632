//! The worked examples of docs/record-format.md are produced by this crate: each example in
//! the document must be byte for byte what the aggregator builds for the inputs it states.

use aggregate::privacy::RawNoise;
use aggregate::{
    Aggregator, Envelope, Instant, Kind, Labels, ModelRef, Observation, RawRules, RecordView, Rules,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

const DOC: &str = include_str!("../../docs/record-format.md");

fn example() -> Vec<Vec<u8>> {
    let start = Instant {
        mono_ms: 5_000,
        wall_ms: 1_796_038_500_000,
    }; // 2026-11-30T11:35:00Z
    let kinds = [Kind::Count, Kind::PresenceShare];
    let rules = Rules::validate(
        &RawRules {
            k: 3,
            count_step: 1,
            share_step_ppm: 1,
            level_step_milli: 1,
            unit: Some("person-window".into()),
            noise: Some(RawNoise {
                mechanism: "geometric".into(),
                epsilon: 1.0,
                budget_per_day: Some(1440.0),
                sensitivity: None,
            }),
        },
        &kinds,
        60_000,
    )
    .unwrap();
    let model = ModelRef {
        id: "centerface-int8".into(),
        version: "1.5.0-int8.1".into(),
        sha256: "6f08a02b7bd19092f056699603ba3ef7b5b25079440883211eac0027a838e9b1".into(),
    };
    let mut agg = Aggregator::new(
        model,
        &kinds,
        Labels::new(["face"]).unwrap(),
        rules,
        60_000,
        start,
        StdRng::seed_from_u64(42),
    );
    let face = agg.label("face").unwrap();
    let mut records = Vec::new();
    // One frame a second for 2 minutes: 0, 1, 2 or 3 faces.
    for s in 0..120u64 {
        let at = Instant {
            mono_ms: start.mono_ms + s * 1000,
            wall_ms: start.wall_ms + (s * 1000) as i64,
        };
        records.extend(agg.observe(
            at,
            Observation::Frame {
                class: &face,
                count: (s % 4) as u32,
            },
        ));
    }
    records.extend(agg.finish(Instant {
        mono_ms: start.mono_ms + 120_000,
        wall_ms: start.wall_ms + 120_000,
    }));
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.to_canonical(Envelope {
                device: "demo-001",
                territory: "fr-demo",
                seq: i as u64,
            })
        })
        .collect()
}

/// Rules without noise (unit "none"), `k` 3, steps of 1.
fn exact_rules(kinds: &[Kind], window_ms: u64) -> Rules {
    Rules::validate(
        &RawRules {
            k: 3,
            count_step: 1,
            share_step_ppm: 1,
            level_step_milli: 1,
            unit: Some("none".into()),
            noise: None,
        },
        kinds,
        window_ms,
    )
    .unwrap()
}

/// A line-counting pipeline: one line, three classes, 15-minute windows, no noise (k = 3), one
/// window with known crossings, closed by a stop.
fn line_example() -> Vec<u8> {
    let start = Instant {
        mono_ms: 5_000,
        wall_ms: 1_796_037_300_000,
    }; // 2026-11-30T11:15:00Z
    let kinds = [Kind::LineCount];
    let rules = exact_rules(&kinds, 900_000);
    let model = ModelRef {
        id: "nanodet-int8".into(),
        version: "3.0.4-int8.1".into(),
        sha256: "a8a29329deda8576f25cbacf570857f6263f3ddcf4f422f304e9aa481ed50bc2".into(),
    };
    let labels = Labels::new(["person", "bicycle", "car", "rue-de-la-gare"]).unwrap();
    let l = |n: &str| labels.get(n).unwrap();
    let line = l("rue-de-la-gare");
    let classes = [l("person"), l("bicycle"), l("car")];
    let mut agg = Aggregator::new(
        model,
        &kinds,
        labels.clone(),
        rules,
        900_000,
        start,
        StdRng::seed_from_u64(42),
    )
    .with_lines(vec![(line.clone(), classes.to_vec())]);
    // 12 people in and 4 out, 2 bicycles in, 7 cars out, over the quarter hour.
    let crossings = [
        (0usize, true, 12u64),
        (0, false, 4),
        (1, true, 2),
        (2, false, 7),
    ];
    let mut t = 0u64;
    for (class, inward, n) in crossings {
        for _ in 0..n {
            t += 20_000;
            let at = Instant {
                mono_ms: start.mono_ms + t,
                wall_ms: start.wall_ms + t as i64,
            };
            assert!(
                agg.observe(
                    at,
                    Observation::Crossing {
                        line: &line,
                        class: &classes[class],
                        inward,
                    },
                )
                .is_empty()
            );
        }
    }
    let records = agg.finish(Instant {
        mono_ms: start.mono_ms + 900_000,
        wall_ms: start.wall_ms + 900_000,
    });
    assert_eq!(
        records.len(),
        2,
        "the quarter hour, then the empty partial one"
    );
    records[0].to_canonical(Envelope {
        device: "demo-001",
        territory: "fr-demo",
        seq: 7,
    })
}

#[test]
fn the_documented_line_count_example_is_what_the_aggregator_builds() {
    let bytes = line_example();
    let text = String::from_utf8(bytes.clone()).unwrap();
    if std::env::var_os("PRINT_EXAMPLES").is_some() {
        println!("{text}");
    }
    assert!(
        DOC.contains(&text),
        "docs/record-format.md lacks the line-count example:\n{text}"
    );
    let view = RecordView::parse(&bytes).unwrap();
    view.check_rules()
        .expect("the example keeps the rules a reader checks");
    let counts = &view.aggregates.line_count["rue-de-la-gare"];
    assert_eq!(counts.len(), 3, "every class of the line, zeros included");
}

#[test]
fn the_documented_examples_are_what_the_aggregator_builds() {
    let examples = example();
    assert_eq!(
        examples.len(),
        3,
        "two full windows and the partial one closed by finish"
    );
    if std::env::var_os("PRINT_EXAMPLES").is_some() {
        for bytes in &examples {
            println!("{}", String::from_utf8_lossy(bytes));
        }
    }
    for (i, bytes) in examples.iter().enumerate() {
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            DOC.contains(&text),
            "docs/record-format.md lacks example {i}:\n{text}"
        );
        RecordView::parse(bytes)
            .unwrap()
            .check_rules()
            .expect("the example keeps the rules a reader checks");
    }
}

/// A minute of an audio-event classifier: each second, per class, present or not.
fn class_share_example() -> Vec<u8> {
    let start = Instant {
        mono_ms: 5_000,
        wall_ms: 1_796_038_560_000,
    }; // 2026-11-30T11:36:00Z
    let kinds = [Kind::ClassShare];
    let rules = exact_rules(&kinds, 60_000);
    let model = ModelRef {
        id: "firered-aed".into(),
        version: "0.2.13".into(),
        sha256: "5038f9b427b5a6dbab8247e040c9571675db153c1d621cfa7af522a101a75449".into(),
    };
    let labels = Labels::new(["speech", "singing", "music"]).unwrap();
    let mut agg = Aggregator::new(
        model,
        &kinds,
        labels.clone(),
        rules,
        60_000,
        start,
        StdRng::seed_from_u64(42),
    );
    // Speech 20 s of the minute, music 45 s, singing never.
    for s in 0..60u64 {
        let at = Instant {
            mono_ms: start.mono_ms + s * 1000 + 500,
            wall_ms: start.wall_ms + (s * 1000 + 500) as i64,
        };
        for (name, on) in [("speech", s < 20), ("singing", false), ("music", s >= 15)] {
            let flag = labels.get(name).unwrap();
            let obs = Observation::Span {
                flag: &flag,
                on,
                duration_us: 1_000_000,
            };
            assert!(agg.observe(at, obs).is_empty());
        }
    }
    let records = agg.finish(Instant {
        mono_ms: start.mono_ms + 60_000,
        wall_ms: start.wall_ms + 60_000,
    });
    records[0].to_canonical(Envelope {
        device: "demo-001",
        territory: "fr-demo",
        seq: 8,
    })
}

#[test]
fn the_documented_class_share_example_is_what_the_aggregator_builds() {
    let bytes = class_share_example();
    let text = String::from_utf8(bytes.clone()).unwrap();
    if std::env::var_os("PRINT_EXAMPLES").is_some() {
        println!("{text}");
    }
    assert!(
        DOC.contains(&text),
        "docs/record-format.md lacks the class-share example:\n{text}"
    );
    let view = RecordView::parse(&bytes).unwrap();
    view.check_rules()
        .expect("the example keeps the rules a reader checks");
    let shares = &view.aggregates.class_share;
    assert_eq!(shares.len(), 3, "every class, absent ones included");
    assert_eq!(shares["speech"].observed_ms, 60_000);
    let ppm = |c: &str| shares[c].share_ppm;
    assert_eq!(ppm("speech"), 333_333);
    assert_eq!(ppm("music"), 750_000);
    assert_eq!(ppm("singing"), 0);
}
