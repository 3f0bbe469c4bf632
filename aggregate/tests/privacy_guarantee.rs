//! The privacy guarantee, checked from the outside (docs/privacy.md):
//!
//! 1. Neighbouring inputs: the same stream with and without one person's detections gives
//!    published records whose distributions, over many seeds, differ by at most `exp(epsilon)`
//!    on every event tested, within sampling error. The test is one-sided per event with
//!    Hoeffding bounds and a union bound over all events: if the mechanism is
//!    epsilon-differentially private, it fails with probability below `DELTA` (1e-6) (the seeds
//!    are fixed, so a run is reproducible). The same test applied to the rules of record v1
//!    (sensitivity 1 for sums over frames, one epsilon per count) must find a violation: it
//!    can fail.
//! 2. Consistent suppression: over every small input, no value published as "suppressed" can
//!    be derived exactly from the rest of its record. The same check finds such a value under
//!    the v1 rule (each count suppressed on its own).

use std::collections::{BTreeMap, BTreeSet};

use aggregate::privacy::{RawNoise, discrete_laplace};
use aggregate::{
    Aggregator, Envelope, Instant, Kind, Labels, ModelRef, Observation, Published, RawRules,
    RecordView, Rules,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Probability that the neighbouring test fails for a mechanism that is in fact private.
const DELTA: f64 = 1e-6;
/// Seeds per input.
const N: usize = 20_000;

const START: Instant = Instant {
    mono_ms: 0,
    wall_ms: 1_796_038_500_000, // 2026-11-30T11:35:00Z
};
const WINDOW_MS: u64 = 10_000;

fn model() -> ModelRef {
    ModelRef {
        id: "m".into(),
        version: "1".into(),
        sha256: "ab".repeat(32),
    }
}

fn rules(kinds: &[Kind], k: u64, count_step: u64, epsilon: Option<f64>) -> Rules {
    Rules::validate(
        &RawRules {
            k,
            count_step,
            share_step_ppm: 1,
            level_step_milli: 1,
            unit: None,
            noise: epsilon.map(|epsilon| RawNoise {
                mechanism: "geometric".into(),
                epsilon,
                budget_per_day: Some(1e6),
                sensitivity: None,
            }),
        },
        kinds,
        WINDOW_MS,
    )
    .unwrap()
}

/// One window of frames (one a second) with `counts[i]` faces in frame `i`: its record.
fn publish_frames(rules: Rules, kinds: &[Kind], counts: &[u32], seed: u64) -> RecordView {
    let mut a = Aggregator::new(
        model(),
        kinds,
        Labels::new(["face"]).unwrap(),
        rules,
        WINDOW_MS,
        START,
        StdRng::seed_from_u64(seed),
    );
    let face = a.label("face").unwrap();
    for (i, &count) in counts.iter().enumerate() {
        let at = Instant {
            mono_ms: i as u64 * 1000,
            wall_ms: START.wall_ms + i as i64 * 1000,
        };
        let _ = a.observe(
            at,
            Observation::Frame {
                class: &face,
                count,
            },
        );
    }
    let end = Instant {
        mono_ms: WINDOW_MS - 1,
        wall_ms: START.wall_ms + WINDOW_MS as i64 - 1,
    };
    let r = a.finish(end);
    assert_eq!(r.len(), 1);
    RecordView::parse(&r[0].to_canonical(Envelope {
        device: "d",
        territory: "t",
        seq: 0,
    }))
    .unwrap()
}

/// A published count as a number (-1: suppressed).
fn num(p: &Published) -> i64 {
    match p {
        Published::Value(v) => *v as i64,
        Published::Suppressed => -1,
    }
}

/// The published values of one record: (max, total, present_frames).
type Outcome = [i64; 3];

/// Outcomes of `N` seeds of a mechanism on one input.
fn sample(mechanism: &dyn Fn(u64) -> Outcome, salt: u64) -> Vec<Outcome> {
    (0..N as u64).map(|s| mechanism(s ^ (salt << 40))).collect()
}

/// Events on outcomes: each field at or above each threshold seen, each field suppressed,
/// and the joint "all three at or above" on a grid of quartiles. `epsilon` per event: the
/// field's own for a field's events, the record's for joint ones.
fn events(a: &[Outcome], b: &[Outcome], field_eps: [f64; 3], record_eps: f64) -> Vec<Event> {
    let mut out = Vec::new();
    let mut quartiles = [[0i64; 3]; 3];
    for f in 0..3 {
        let mut seen: Vec<i64> = a.iter().chain(b).map(|o| o[f]).collect();
        seen.sort_unstable();
        for (q, slot) in quartiles.iter_mut().enumerate() {
            slot[f] = seen[seen.len() * (q + 1) / 4];
        }
        // Twenty thresholds spread over the values seen.
        let distinct: BTreeSet<i64> = seen.iter().copied().collect();
        let distinct: Vec<i64> = distinct.into_iter().collect();
        let step = distinct.len().div_ceil(20).max(1);
        for &t in distinct.iter().step_by(step) {
            out.push(Event {
                name: format!("field {f} >= {t}"),
                test: Box::new(move |o: &Outcome| o[f] >= t),
                epsilon: field_eps[f],
            });
        }
        out.push(Event {
            name: format!("field {f} suppressed"),
            test: Box::new(move |o: &Outcome| o[f] < 0),
            epsilon: field_eps[f],
        });
    }
    for qa in quartiles {
        for qb in quartiles {
            for qc in quartiles {
                let t = [qa[0], qb[1], qc[2]];
                out.push(Event {
                    name: format!("all >= {t:?}"),
                    test: Box::new(move |o: &Outcome| (0..3).all(|f| o[f] >= t[f])),
                    epsilon: record_eps,
                });
            }
        }
    }
    out
}

struct Event {
    name: String,
    test: Box<dyn Fn(&Outcome) -> bool>,
    epsilon: f64,
}

/// The events on which `a` and `b` differ by more than `exp(epsilon)` beyond sampling error:
/// `p - w > e^eps (q + w)` in either direction, with `w` the Hoeffding half-width for a
/// union bound over every estimate.
fn violations(a: &[Outcome], b: &[Outcome], events: &[Event]) -> Vec<String> {
    let estimates = 4.0 * events.len() as f64;
    let w = ((estimates / DELTA).ln() / (2.0 * N as f64)).sqrt();
    let mut out = Vec::new();
    for e in events {
        let p = a.iter().filter(|o| (e.test)(o)).count() as f64 / a.len() as f64;
        let q = b.iter().filter(|o| (e.test)(o)).count() as f64 / b.len() as f64;
        let bound = e.epsilon.exp();
        if p - w > bound * (q + w) || q - w > bound * (p + w) {
            out.push(format!(
                "{}: {p:.4} vs {q:.4} (w {w:.4}, e^eps {bound:.3})",
                e.name
            ));
        }
    }
    out
}

/// Other people in view, frame by frame, and the same with one more person in every frame.
fn neighbours() -> (Vec<u32>, Vec<u32>) {
    let without = vec![1, 2, 0, 3, 1, 1, 0, 2, 2, 1];
    let with = without.iter().map(|c| c + 1).collect();
    (without, with)
}

#[test]
fn neighbouring_streams_are_within_exp_epsilon_for_counts_and_presence() {
    let kinds = [Kind::Count, Kind::PresenceShare];
    let r = rules(&kinds, 2, 1, Some(1.0));
    let mechanism = |counts: Vec<u32>| {
        move |seed: u64| {
            let v = publish_frames(r, &kinds, &counts, seed);
            let (c, p) = (
                &v.aggregates.count["face"],
                &v.aggregates.presence_share["face"],
            );
            [num(&c.max), num(&c.total), num(&p.present_frames)]
        }
    };
    let (without, with) = neighbours();
    // One person in half the frames only: a neighbour too.
    let half: Vec<u32> = without
        .iter()
        .enumerate()
        .map(|(i, c)| c + u32::from(i % 2 == 0))
        .collect();
    let a = sample(&mechanism(without), 1);
    let record = publish_frames(r, &kinds, &neighbours().0, 0);
    let per_value = record.privacy.noise.as_ref().unwrap().epsilon_milli as f64 / 1000.0;
    let record_eps = record.privacy.epsilon_milli.unwrap() as f64 / 1000.0;
    assert_eq!((per_value, record_eps), (0.333, 0.999));
    for (name, other) in [("whole window", with), ("half the frames", half)] {
        let b = sample(&mechanism(other), 2);
        let ev = events(&a, &b, [per_value; 3], record_eps);
        let bad = violations(&a, &b, &ev);
        assert!(
            bad.is_empty(),
            "{name}: {} of {} events:\n{}",
            bad.len(),
            ev.len(),
            bad.join("\n")
        );
    }
}

/// The same test finds the v1 rules out: noise for sensitivity 1 on sums over frames, which a
/// person in view all the window changes by 10.
#[test]
fn the_neighbouring_test_catches_the_v1_calibration() {
    let k = Rules {
        k: 2,
        ..Rules::exact()
    };
    let v1 = |counts: Vec<u32>| {
        move |seed: u64| {
            let mut rng = StdRng::seed_from_u64(seed);
            let max = *counts.iter().max().unwrap() as i128;
            let total = counts.iter().sum::<u32>() as i128;
            let present = counts.iter().filter(|&&c| c > 0).count() as i128;
            [max, total, present]
                .map(|v| num(&k.count(v + discrete_laplace(1, 1000, &mut rng) as i128)))
        }
    };
    let (without, with) = neighbours();
    let (a, b) = (sample(&v1(without), 3), sample(&v1(with), 4));
    // v1 published "epsilon 1 per count".
    let ev = events(&a, &b, [1.0; 3], 3.0);
    let bad = violations(&a, &b, &ev);
    assert!(!bad.is_empty(), "the v1 calibration went unnoticed");
}

/// Closes the test window of an aggregator: its record, as published.
fn finish_window(a: Aggregator<StdRng>) -> RecordView {
    let rec = a.finish(Instant {
        mono_ms: 9_999,
        wall_ms: START.wall_ms + 9_999,
    });
    RecordView::parse(&rec[0].to_canonical(Envelope {
        device: "d",
        territory: "t",
        seq: 0,
    }))
    .unwrap()
}

#[test]
fn neighbouring_streams_are_within_exp_epsilon_for_speech_share() {
    let kinds = [Kind::SpeechShare];
    let r = rules(&kinds, 1, 1, Some(1.0));
    let labels = Labels::new(["speech"]).unwrap();
    // A window of 32 ms chunks; `extra` more of them with speech (one person speaking).
    let mechanism = |extra: u64| {
        let labels = labels.clone();
        move |seed: u64| {
            let mut a = Aggregator::new(
                model(),
                &kinds,
                labels.clone(),
                r,
                WINDOW_MS,
                START,
                StdRng::seed_from_u64(seed),
            );
            let speech = a.label("speech").unwrap();
            for i in 0..300u64 {
                let at = Instant {
                    mono_ms: i * 32,
                    wall_ms: START.wall_ms + i as i64 * 32,
                };
                let _ = a.observe(
                    at,
                    Observation::Span {
                        flag: &speech,
                        on: i % 3 == 0 || i < extra,
                        duration_us: 32_000,
                    },
                );
            }
            let v = finish_window(a);
            assert_eq!(v.privacy.epsilon_milli, Some(1000));
            let s = v.aggregates.speech_share["speech"].share_ppm as i64;
            // Outcomes in whole percent, in all three slots (one value).
            [s / 10_000; 3]
        }
    };
    let (a, b) = (sample(&mechanism(0), 5), sample(&mechanism(300), 6));
    let ev = events(&a, &b, [1.0; 3], 1.0);
    let bad = violations(&a, &b, &ev);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// One window of line crossings `(class, inward)` on one line counting person and car: its
/// record.
fn publish_crossings(rules: Rules, crossings: &[(&str, bool)], seed: u64) -> RecordView {
    let kinds = [Kind::LineCount];
    let labels = Labels::new(["person", "car", "line"]).unwrap();
    let l = |n: &str| labels.get(n).unwrap();
    let line = l("line");
    let mut a = Aggregator::new(
        model(),
        &kinds,
        labels.clone(),
        rules,
        WINDOW_MS,
        START,
        StdRng::seed_from_u64(seed),
    )
    .with_lines(vec![(line.clone(), vec![l("person"), l("car")])]);
    for (i, (class, inward)) in crossings.iter().enumerate() {
        let at = Instant {
            mono_ms: i as u64 * 100,
            wall_ms: START.wall_ms + i as i64 * 100,
        };
        let class = l(class);
        let _ = a.observe(
            at,
            Observation::Crossing {
                line: &line,
                class: &class,
                inward: *inward,
            },
        );
    }
    let r = a.finish(Instant {
        mono_ms: WINDOW_MS - 1,
        wall_ms: START.wall_ms + WINDOW_MS as i64 - 1,
    });
    RecordView::parse(&r[0].to_canonical(Envelope {
        device: "d",
        territory: "t",
        seq: 0,
    }))
    .unwrap()
}

/// A tracked object adds at most 1 to a line's crossings in each direction, to one class: the
/// neighbouring streams differ by one object crossing in and back out, as the same class or
/// as two (its class changed on the way back).
#[test]
fn neighbouring_streams_are_within_exp_epsilon_for_line_counts() {
    let kinds = [Kind::LineCount];
    let r = rules(&kinds, 2, 1, Some(1.0));
    let base: Vec<(&str, bool)> = [("person", true); 5]
        .into_iter()
        .chain([("person", false); 2])
        .chain([("car", false); 3])
        .collect();
    let mechanism = |crossings: Vec<(&'static str, bool)>| {
        move |seed: u64| {
            let v = publish_crossings(r, &crossings, seed);
            let line = &v.aggregates.line_count["line"];
            [
                num(&line["person"].inward),
                num(&line["person"].outward),
                num(&line["car"].inward),
            ]
        }
    };
    let record = publish_crossings(r, &base, 0);
    let per_value = record.privacy.noise.as_ref().unwrap().epsilon_milli as f64 / 1000.0;
    let record_eps = record.privacy.epsilon_milli.unwrap() as f64 / 1000.0;
    assert_eq!(
        (per_value, record_eps),
        (0.5, 1.0),
        "in and out of one line"
    );
    let a = sample(&mechanism(base.clone()), 7);
    let there_and_back: Vec<_> = base
        .iter()
        .copied()
        .chain([("person", true), ("person", false)])
        .collect();
    let changed_class: Vec<_> = base
        .iter()
        .copied()
        .chain([("car", true), ("person", false)])
        .collect();
    for (name, other, salt) in [
        ("same class", there_and_back, 8),
        ("class changed", changed_class, 9),
    ] {
        let b = sample(&mechanism(other), salt);
        let ev = events(&a, &b, [per_value; 3], record_eps);
        let bad = violations(&a, &b, &ev);
        assert!(
            bad.is_empty(),
            "{name}: {} of {} events:\n{}",
            bad.len(),
            ev.len(),
            bad.join("\n")
        );
    }
}

/// The same test catches a counter that let one object count twice in a direction (an object
/// pacing across the line) under the same accounting.
#[test]
fn the_neighbouring_test_catches_uncapped_crossings() {
    let kinds = [Kind::LineCount];
    let r = rules(&kinds, 2, 1, Some(1.0));
    let base: Vec<(&str, bool)> = vec![("person", true); 5];
    let mechanism = |crossings: Vec<(&'static str, bool)>| {
        move |seed: u64| {
            let v = publish_crossings(r, &crossings, seed);
            let line = &v.aggregates.line_count["line"];
            [
                num(&line["person"].inward),
                num(&line["person"].outward),
                num(&line["car"].inward),
            ]
        }
    };
    let pacing: Vec<_> = base.iter().copied().chain([("person", true); 6]).collect();
    let (a, b) = (sample(&mechanism(base), 10), sample(&mechanism(pacing), 11));
    let bad = violations(&a, &b, &events(&a, &b, [0.5; 3], 1.0));
    assert!(
        !bad.is_empty(),
        "six crossings by one object went unnoticed"
    );
}

/// Level statistics carry no noise: a pipeline that states a person unit cannot publish them.
#[test]
fn level_statistics_cannot_claim_a_person_unit() {
    let e = Rules::validate(
        &RawRules {
            k: 1,
            count_step: 1,
            share_step_ppm: 1,
            level_step_milli: 1,
            unit: Some("person-window".into()),
            noise: Some(RawNoise {
                mechanism: "geometric".into(),
                epsilon: 1.0,
                budget_per_day: Some(1e6),
                sensitivity: None,
            }),
        },
        &[Kind::LevelStats],
        WINDOW_MS,
    )
    .unwrap_err();
    assert_eq!(e.field, "noise");
}

// ---- consistent suppression ---------------------------------------------------------------

/// What a record publishes of one class: frames, max, total, present_frames, share.
type Published5 = [i64; 5];

/// Every input of 1 to 4 frames with 0 to 3 objects each.
fn small_inputs() -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    for frames in 1..=4u32 {
        for code in 0..4u32.pow(frames) {
            out.push((0..frames).map(|i| (code / 4u32.pow(i)) % 4).collect());
        }
    }
    out
}

/// The true (max, total, present) of an input.
fn truth(counts: &[u32]) -> [i64; 3] {
    [
        *counts.iter().max().unwrap() as i64,
        counts.iter().sum::<u32>() as i64,
        counts.iter().filter(|&&c| c > 0).count() as i64,
    ]
}

/// Suppressed values that the rest of their record gives away: for each published record,
/// the true values of every input that publishes it; a suppressed field that takes a single
/// value among them is derivable.
fn derivable(publish: &dyn Fn(&[u32]) -> Published5) -> Vec<String> {
    let mut by_output: BTreeMap<Published5, BTreeSet<[i64; 3]>> = BTreeMap::new();
    for input in small_inputs() {
        by_output
            .entry(publish(&input))
            .or_default()
            .insert(truth(&input));
    }
    let mut out = Vec::new();
    for (published, truths) in &by_output {
        for (f, name) in [(1, "max"), (2, "total"), (3, "present_frames")] {
            if published[f] >= 0 {
                continue;
            }
            let values: BTreeSet<i64> = truths.iter().map(|t| t[f - 1]).collect();
            if values.len() < 2 {
                out.push(format!("{published:?}: {name} is {values:?}"));
            }
        }
    }
    out
}

#[test]
fn no_suppressed_value_can_be_derived_from_its_record() {
    let kinds = [Kind::Count, Kind::PresenceShare];
    for (k, step) in [(2, 1), (3, 1), (4, 1), (3, 2), (5, 1)] {
        let r = rules(&kinds, k, step, None);
        let publish = |counts: &[u32]| {
            let v = publish_frames(r, &kinds, counts, 0);
            let (c, p) = (
                &v.aggregates.count["face"],
                &v.aggregates.presence_share["face"],
            );
            [
                c.frames as i64,
                num(&c.max),
                num(&c.total),
                num(&p.present_frames),
                num(&p.share_ppm),
            ]
        };
        let leaks = derivable(&publish);
        assert!(leaks.is_empty(), "k {k} step {step}:\n{}", leaks.join("\n"));
    }
}

/// The check finds the v1 rule out: each count suppressed on its own lets `max` = `total`
/// give `present_frames` = 1 away.
#[test]
fn the_suppression_check_catches_independent_suppression() {
    let r = Rules {
        k: 3,
        ..Rules::exact()
    };
    let v1 = |counts: &[u32]| {
        let [max, total, present] = truth(counts).map(|v| num(&r.count(v as i128)));
        let share = if present < 0 {
            -1
        } else {
            present * 1_000_000 / counts.len() as i64
        };
        [counts.len() as i64, max, total, present, share]
    };
    assert!(!derivable(&v1).is_empty());
}

#[test]
fn neighbouring_streams_are_within_exp_epsilon_for_class_shares() {
    let kinds = [Kind::ClassShare];
    let r = rules(&kinds, 1, 1, Some(1.0));
    let labels = Labels::new(["speech", "singing", "music"]).unwrap();
    // A window of 100 ms frames of an audio-event classifier; with `person`, one person speaks
    // and sings through the whole window (two of the three classes change).
    let mechanism = |person: bool| {
        let labels = labels.clone();
        move |seed: u64| {
            let mut a = Aggregator::new(
                model(),
                &kinds,
                labels.clone(),
                r,
                WINDOW_MS,
                START,
                StdRng::seed_from_u64(seed),
            );
            let flags = ["speech", "singing", "music"].map(|c| a.label(c).unwrap());
            for i in 0..90u64 {
                let at = Instant {
                    mono_ms: i * 100,
                    wall_ms: START.wall_ms + i as i64 * 100,
                };
                let on = [person || i % 4 == 0, person, i % 2 == 0];
                for (flag, on) in flags.iter().zip(on) {
                    let _ = a.observe(
                        at,
                        Observation::Span {
                            flag,
                            on,
                            duration_us: 100_000,
                        },
                    );
                }
            }
            let v = finish_window(a);
            assert_eq!(v.privacy.epsilon_milli, Some(999));
            assert_eq!(v.privacy.noise.as_ref().and_then(|n| n.values), Some(3));
            // Outcomes in whole percent, one slot per class.
            flags.map(|f| v.aggregates.class_share[f.as_str()].share_ppm as i64 / 10_000)
        }
    };
    let (a, b) = (sample(&mechanism(false), 7), sample(&mechanism(true), 8));
    let ev = events(&a, &b, [0.333; 3], 0.999);
    let bad = violations(&a, &b, &ev);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
