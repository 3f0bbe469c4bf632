//! The aggregator: observations from a model (detections per frame, speech per chunk, levels)
//! accumulate per window; when a window closes, the privacy rules turn the window's
//! accumulators into a [`Record`]. Observations never leave this module.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;

use crate::label::{Label, LabelError, Labels};
use crate::privacy::{
    BudgetState, DAY_MS, Published, Rules, SHARE_SENSITIVITY_PPM, discrete_laplace,
};
use crate::record::{
    Aggregates, CountView, LevelView, LineCountView, ModelRef, PresenceView, Record, ShareView,
    Spent,
};
use crate::window::{Instant, WindowLabel, Windows};

/// The aggregates a card may allow (its `aggregates` field) and a config may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Objects per frame, per class: the most at once and the sum over frames.
    Count,
    /// Share of frames with at least one object of a class.
    PresenceShare,
    /// Share of observed time with speech.
    SpeechShare,
    /// Min, mean, max and percentiles of a continuous value.
    LevelStats,
    /// Objects that crossed a counting line, per line, class and direction.
    LineCount,
    /// Share of observed time each class of a classifier was present (score above the
    /// pipeline's threshold).
    ClassShare,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Count => "count",
            Kind::PresenceShare => "presence_share",
            Kind::SpeechShare => "speech_share",
            Kind::LevelStats => "level_stats",
            Kind::LineCount => "line_count",
            Kind::ClassShare => "class_share",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "count" => Kind::Count,
            "presence_share" => Kind::PresenceShare,
            "speech_share" => Kind::SpeechShare,
            "level_stats" => Kind::LevelStats,
            "line_count" => Kind::LineCount,
            "class_share" => Kind::ClassShare,
            _ => return None,
        })
    }
}

/// What a model reports about one frame or chunk. Borrowed: the aggregator keeps only sums.
#[derive(Debug, Clone, Copy)]
pub enum Observation<'a> {
    /// Objects of `class` in one frame (0 is an observation too: a frame with nobody).
    Frame { class: &'a Label, count: u32 },
    /// A span of `duration_us` during which `flag` was on or off.
    Span {
        flag: &'a Label,
        on: bool,
        duration_us: u64,
    },
    /// A reading of a continuous value (a sound level in dB, a temperature...).
    Level { name: &'a Label, value: f64 },
    /// An object of `class` wholly crossed counting line `line`, inwards or outwards. The
    /// counter counts an object at most once per line and direction: the bound the noise of
    /// line counts relies on.
    Crossing {
        line: &'a Label,
        class: &'a Label,
        inward: bool,
    },
}

/// At most this many level readings are kept per name and window; beyond, every other one is
/// dropped and the stride doubles (memory stays bounded whatever the rate).
const MAX_LEVELS: usize = 1 << 16;

#[derive(Default)]
struct ClassAcc {
    frames: u64,
    max: u64,
    total: u64,
    present: u64,
}

#[derive(Default)]
struct SpanAcc {
    on_us: u64,
    total_us: u64,
}

#[derive(Default)]
struct LevelAcc {
    n: u64,
    sum: f64,
    min: f64,
    max: f64,
    kept: Vec<f64>,
    stride: u64,
}

#[derive(Default)]
struct Acc {
    classes: BTreeMap<Label, ClassAcc>,
    spans: BTreeMap<Label, SpanAcc>,
    levels: BTreeMap<Label, LevelAcc>,
    /// Per (line, class): crossings in, out.
    crossings: BTreeMap<(Label, Label), [u64; 2]>,
}

/// One model's aggregation: windows, accumulators, rules.
pub struct Aggregator<R: Rng> {
    model: ModelRef,
    kinds: BTreeSet<Kind>,
    /// The closed set of keys its records may hold.
    labels: Labels,
    /// Observations whose label came from another aggregator's set: dropped.
    foreign: u64,
    rules: Rules,
    windows: Windows,
    acc: Acc,
    rng: R,
    /// The first window started in the middle (alignment on wall multiples).
    first_partial: bool,
    /// Epsilon spent in the current UTC day (with noise only).
    budget: BudgetState,
    /// The counting lines and the classes each counts: every window publishes all of them,
    /// zeros included (no crossing is a count too).
    lines: Vec<(Label, Vec<Label>)>,
}

impl<R: Rng> Aggregator<R> {
    /// `rng` draws the privacy noise: a cryptographic generator seeded by the OS in service,
    /// a fixed seed in tests.
    /// `labels` is the closed set of class, flag and level names its records may hold (the
    /// model card's output labels): observations name one of them by a [`Label`] from
    /// [`Aggregator::label`].
    pub fn new(
        model: ModelRef,
        kinds: &[Kind],
        labels: Labels,
        rules: Rules,
        window_ms: u64,
        start: Instant,
        rng: R,
    ) -> Self {
        let windows = Windows::new(window_ms, start);
        let first_partial = windows.bounds(0).0 != start.mono_ms as i64;
        Aggregator {
            model,
            kinds: kinds.iter().copied().collect(),
            labels,
            foreign: 0,
            rules,
            windows,
            acc: Acc::default(),
            rng,
            first_partial,
            budget: BudgetState::default(),
            lines: Vec::new(),
        }
    }

    /// The counting lines (by name) and the classes each counts, all from this aggregator's
    /// closed set of labels; crossings of other lines or classes are dropped.
    pub fn with_lines(mut self, lines: Vec<(Label, Vec<Label>)>) -> Self {
        self.lines = lines
            .into_iter()
            .filter(|(l, classes)| {
                self.labels.contains(l) && classes.iter().all(|c| self.labels.contains(c))
            })
            .collect();
        self
    }

    /// Starts from the budget already spent (kept by the agent across restarts).
    pub fn with_budget(mut self, spent: BudgetState) -> Self {
        self.budget = spent;
        self
    }

    /// The budget spent so far in the current day (with noise only).
    pub fn budget(&self) -> Option<BudgetState> {
        self.rules.noise.map(|_| self.budget)
    }

    /// The label called `name` in this aggregator's closed set.
    pub fn label(&self, name: &str) -> Result<Label, LabelError> {
        self.labels.get(name)
    }

    /// The closed set of labels its records may hold.
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// Observations dropped because their label belongs to another aggregator's set.
    pub fn foreign_labels(&self) -> u64 {
        self.foreign
    }

    /// Records an observation made at `at`; returns the records of the windows that closed
    /// before it.
    pub fn observe(&mut self, at: Instant, obs: Observation<'_>) -> Vec<Record> {
        let closed = self.tick(at);
        let label = match obs {
            Observation::Frame { class, .. } => class,
            Observation::Span { flag, .. } => flag,
            Observation::Level { name, .. } => name,
            Observation::Crossing { line, class, .. } => {
                if !self
                    .lines
                    .iter()
                    .any(|(l, classes)| l == line && classes.contains(class))
                {
                    self.foreign += 1;
                    return closed;
                }
                class
            }
        };
        if !self.labels.contains(label) {
            self.foreign += 1;
            return closed;
        }
        match obs {
            Observation::Frame { class, count } => {
                if self.kinds.contains(&Kind::Count) || self.kinds.contains(&Kind::PresenceShare) {
                    let c = self.acc.classes.entry(class.clone()).or_default();
                    c.frames += 1;
                    c.max = c.max.max(count as u64);
                    c.total += count as u64;
                    c.present += u64::from(count > 0);
                }
            }
            Observation::Span {
                flag,
                on,
                duration_us,
            } => {
                if self.kinds.contains(&Kind::SpeechShare) || self.kinds.contains(&Kind::ClassShare)
                {
                    let s = self.acc.spans.entry(flag.clone()).or_default();
                    s.total_us += duration_us;
                    if on {
                        s.on_us += duration_us;
                    }
                }
            }
            Observation::Level { name, value } => {
                if self.kinds.contains(&Kind::LevelStats) && value.is_finite() {
                    let l = self
                        .acc
                        .levels
                        .entry(name.clone())
                        .or_insert_with(|| LevelAcc {
                            min: f64::INFINITY,
                            max: f64::NEG_INFINITY,
                            stride: 1,
                            ..LevelAcc::default()
                        });
                    l.n += 1;
                    l.sum += value;
                    l.min = l.min.min(value);
                    l.max = l.max.max(value);
                    if l.n.is_multiple_of(l.stride) {
                        l.kept.push(value);
                        if l.kept.len() >= MAX_LEVELS {
                            let halved: Vec<f64> = l.kept.iter().copied().step_by(2).collect();
                            l.kept = halved;
                            l.stride *= 2;
                        }
                    }
                }
            }
            Observation::Crossing {
                line,
                class,
                inward,
            } => {
                if self.kinds.contains(&Kind::LineCount) {
                    let c = self
                        .acc
                        .crossings
                        .entry((line.clone(), class.clone()))
                        .or_default();
                    c[usize::from(!inward)] += 1;
                }
            }
        }
        closed
    }

    /// Advances the clocks without an observation (a timer): closes windows that ended.
    pub fn tick(&mut self, at: Instant) -> Vec<Record> {
        let labels = self.windows.advance(at);
        labels.into_iter().map(|l| self.seal(l, false)).collect()
    }

    /// Closes the current window now (end of a replay, shutdown): a partial record.
    pub fn finish(mut self, at: Instant) -> Vec<Record> {
        let mut out = self.tick(at);
        let label = self.windows.close_current();
        out.push(self.seal(label, true));
        out
    }

    fn seal(&mut self, label: WindowLabel, cut_short: bool) -> Record {
        let acc = std::mem::take(&mut self.acc);
        let partial = cut_short || (label.index == 0 && self.first_partial);
        let (count, presence, speech) = (
            self.kinds.contains(&Kind::Count),
            self.kinds.contains(&Kind::PresenceShare),
            self.kinds.contains(&Kind::SpeechShare),
        );
        let lines = self.kinds.contains(&Kind::LineCount);
        let classes = self.kinds.contains(&Kind::ClassShare);
        // The values one person can change: each gets an even part of the record's epsilon.
        // A line's crossings in one direction are one value: an object adds at most 1 to it,
        // to a single class, so its classes share that value's epsilon (docs/privacy.md).
        let per_class = 2 * u64::from(count) + u64::from(presence);
        let values = acc.classes.len() as u64 * per_class
            + (u64::from(speech) + u64::from(classes)) * acc.spans.len() as u64
            + if lines {
                2 * self.lines.len() as u64
            } else {
                0
            };
        let spent = self.spend(label.start_wall_ms, values);
        let withheld = spent.as_ref().is_some_and(|s| s.withheld);
        let per_value = spent.as_ref().map(|s| s.per_value_milli);
        let mut aggregates = Aggregates::default();
        if count {
            aggregates.count = Some(BTreeMap::new());
        }
        if presence {
            aggregates.presence_share = Some(BTreeMap::new());
        }
        if speech {
            aggregates.speech_share = Some(BTreeMap::new());
        }
        if lines {
            aggregates.line_count = Some(BTreeMap::new());
        }
        if classes {
            aggregates.class_share = Some(BTreeMap::new());
        }
        if !withheld {
            if let Some(per_line) = aggregates.line_count.as_mut() {
                for (line, classes) in &self.lines {
                    let mut per_class = BTreeMap::new();
                    for class in classes {
                        let [n_in, n_out] = acc
                            .crossings
                            .get(&(line.clone(), class.clone()))
                            .copied()
                            .unwrap_or_default();
                        let mut publish = |v: u64| {
                            let noise = per_value
                                .map_or(0, |e| discrete_laplace(1, e, &mut self.rng) as i128);
                            self.rules.count(v as i128 + noise)
                        };
                        let (inward, outward) = (publish(n_in), publish(n_out));
                        per_class.insert(class.clone(), LineCountView { inward, outward });
                    }
                    per_line.insert(line.clone(), per_class);
                }
            }
            for (class, c) in &acc.classes {
                self.class_values(class, c, per_value, &mut aggregates);
            }
            for flag_share in [
                speech.then_some(&mut aggregates.speech_share),
                classes.then_some(&mut aggregates.class_share),
            ]
            .into_iter()
            .flatten()
            {
                let per = flag_share.get_or_insert_with(BTreeMap::new);
                for (flag, s) in &acc.spans {
                    let ppm = (s.on_us * 1_000_000).checked_div(s.total_us).unwrap_or(0);
                    let noisy = match per_value {
                        Some(e) => (ppm as i64
                            + discrete_laplace(SHARE_SENSITIVITY_PPM, e, &mut self.rng))
                        .clamp(0, 1_000_000) as u64,
                        None => ppm,
                    };
                    per.insert(
                        flag.clone(),
                        ShareView {
                            observed_ms: s.total_us / 1000,
                            share_ppm: self.rules.share_ppm(noisy),
                        },
                    );
                }
            }
        }
        if self.kinds.contains(&Kind::LevelStats) {
            let per = acc
                .levels
                .iter()
                .map(|(name, l)| (name.clone(), self.level_stats(l)))
                .collect();
            aggregates.level_stats = Some(per);
        }
        Record {
            model: self.model.clone(),
            window: label,
            partial,
            aggregates,
            rules: self.rules,
            spent,
        }
    }

    /// Charges the record's epsilon to the day's budget: `None` without noise. When the day's
    /// budget cannot pay for it (or its values are too many for its epsilon), the record
    /// withholds every noised value and spends nothing.
    fn spend(&mut self, start_wall_ms: i64, values: u64) -> Option<Spent> {
        let noise = self.rules.noise?;
        let day = start_wall_ms.div_euclid(DAY_MS);
        // A new day starts afresh; a clock set back keeps spending the later day.
        if day > self.budget.day {
            self.budget = BudgetState {
                day,
                spent_milli: 0,
            };
        }
        let per_value_milli = noise.epsilon_milli.checked_div(values).unwrap_or(0);
        let cost = per_value_milli * values;
        let withheld = values > 0
            && (per_value_milli == 0 || self.budget.spent_milli + cost > noise.budget_milli);
        if !withheld {
            self.budget.spent_milli += cost;
        }
        Some(Spent {
            per_value_milli,
            values: if withheld { 0 } else { values },
            day: self.budget.day,
            budget_milli: noise.budget_milli,
            day_spent_milli: self.budget.spent_milli,
            withheld,
        })
    }

    /// One class's counts and presence: noised (each by its sensitivity under the unit),
    /// coarsened, then suppressed together: if any of them is below `k`, all are, so that none
    /// can be recovered from the others.
    fn class_values(
        &mut self,
        class: &Label,
        c: &ClassAcc,
        per_value: Option<u64>,
        out: &mut Aggregates,
    ) {
        let rng = &mut self.rng;
        let mut noisy = |v: u64, sensitivity: u64| -> i128 {
            v as i128 + per_value.map_or(0, |e| discrete_laplace(sensitivity, e, &mut *rng) as i128)
        };
        let (count, presence) = (out.count.is_some(), out.presence_share.is_some());
        // One person changes `max` by at most 1 and a sum over frames by at most `frames`.
        let max = count.then(|| noisy(c.max, 1));
        let total = count.then(|| noisy(c.total, c.frames));
        let present = presence.then(|| noisy(c.present, c.frames));
        let publish = |v: Option<i128>| v.map(|v| self.rules.count(v));
        let (max, total) = (publish(max), publish(total));
        let present = present.map(|v| self.rules.count_at_most(v, c.frames));
        let suppressed = [max, total, present].contains(&Some(Published::Suppressed));
        let keep = |p: Option<Published>| {
            if suppressed {
                Published::Suppressed
            } else {
                p.unwrap_or(Published::Suppressed)
            }
        };
        if let Some(per) = out.count.as_mut() {
            per.insert(
                class.clone(),
                CountView {
                    frames: c.frames,
                    max: keep(max),
                    total: keep(total),
                },
            );
        }
        if let Some(per) = out.presence_share.as_mut() {
            let present = keep(present);
            let share_ppm = match present {
                Published::Value(p) => Published::Value(
                    self.rules.share_ppm(
                        (p.min(c.frames) * 1_000_000)
                            .checked_div(c.frames)
                            .unwrap_or(0),
                    ),
                ),
                Published::Suppressed => Published::Suppressed,
            };
            per.insert(
                class.clone(),
                PresenceView {
                    frames: c.frames,
                    present_frames: present,
                    share_ppm,
                },
            );
        }
    }

    fn level_stats(&self, l: &LevelAcc) -> LevelView {
        if l.n == 0 {
            return LevelView {
                n: 0,
                min_milli: None,
                mean_milli: None,
                max_milli: None,
                p50_milli: None,
                p90_milli: None,
                p95_milli: None,
            };
        }
        let mut sorted = l.kept.clone();
        sorted.sort_by(f64::total_cmp);
        // Nearest-rank percentile.
        let pct =
            |p: f64| sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
        let m = |v: f64| Some(self.rules.level_milli((v * 1000.0).round() as i64));
        LevelView {
            n: l.n,
            min_milli: m(l.min),
            mean_milli: m(l.sum / l.n as f64),
            max_milli: m(l.max),
            p50_milli: m(pct(0.5)),
            p90_milli: m(pct(0.9)),
            p95_milli: m(pct(0.95)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::{RawRules, Rules};
    use crate::record::{Envelope, RecordView};
    use crate::{Published, window::Instant};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const T0: i64 = 1_796_038_500_000; // 2026-11-30T11:35:00Z, a multiple of 1 and 5 minutes

    fn labels() -> Labels {
        Labels::new(["face", "speech", "laeq_db", "x"]).unwrap()
    }

    /// A one-minute aggregator of the test model from `at(0)`.
    fn agg(kinds: &[Kind], rules: Rules) -> Aggregator<StdRng> {
        Aggregator::new(
            model(),
            kinds,
            labels(),
            rules,
            60_000,
            at(0),
            StdRng::seed_from_u64(1),
        )
    }

    /// `count` faces in a frame at `t`; the records of the windows that closed before.
    fn faces(a: &mut Aggregator<StdRng>, t: Instant, count: u32) -> Vec<Record> {
        a.observe(
            t,
            Observation::Frame {
                class: &lab("face"),
                count,
            },
        )
    }

    fn lab(name: &str) -> Label {
        labels().get(name).unwrap()
    }

    fn model() -> ModelRef {
        ModelRef {
            id: "centerface-int8".into(),
            version: "1".into(),
            sha256: "ab".repeat(32),
        }
    }

    fn at(ms: u64) -> Instant {
        Instant {
            mono_ms: 1_000 + ms,
            wall_ms: T0 + ms as i64,
        }
    }

    fn view(r: &Record) -> RecordView {
        RecordView::parse(&r.to_canonical(Envelope {
            device: "d1",
            territory: "fr-test",
            seq: 0,
        }))
        .unwrap()
    }

    fn rules(k: u64) -> Rules {
        rules_with(k, None)
    }

    /// Rules with noise of `epsilon` per record and `budget` per day.
    fn noisy(k: u64, epsilon: f64, budget: f64) -> Rules {
        rules_with(
            k,
            Some(crate::privacy::RawNoise {
                mechanism: "geometric".into(),
                epsilon,
                budget_per_day: Some(budget),
                sensitivity: None,
            }),
        )
    }

    /// Exact steps and threshold `k` for counts and presence in one-minute windows.
    fn rules_with(k: u64, noise: Option<crate::privacy::RawNoise>) -> Rules {
        Rules::validate(
            &RawRules {
                k,
                count_step: 1,
                share_step_ppm: 1,
                level_step_milli: 1,
                unit: None,
                noise,
            },
            &[Kind::Count, Kind::PresenceShare],
            60_000,
        )
        .unwrap()
    }

    /// Every record the aggregator publishes passes the reader's checks of the rules
    /// (`RecordView::check_rules`), whatever the threshold, the steps, the noise and the
    /// budget: a reader never flags an honest device.
    #[test]
    fn what_the_aggregator_publishes_passes_the_readers_rule_checks() {
        let mut checked = 0;
        for k in [1, 2, 3, 5] {
            for (count_step, share_step_ppm) in [(1, 1), (2, 1000), (5, 250_000), (3, 300_000)] {
                for noise in [None, Some((1.0, 1_440.0)), Some((0.3, 432.0))] {
                    for seed in 0..8u64 {
                        let rules = Rules::validate(
                            &RawRules {
                                k,
                                count_step,
                                share_step_ppm,
                                level_step_milli: 1,
                                unit: None,
                                noise: noise.map(|(epsilon, budget)| crate::privacy::RawNoise {
                                    mechanism: "geometric".into(),
                                    epsilon,
                                    budget_per_day: Some(budget),
                                    sensitivity: None,
                                }),
                            },
                            &[Kind::Count, Kind::PresenceShare],
                            60_000,
                        )
                        .unwrap();
                        let mut a = Aggregator::new(
                            model(),
                            &[Kind::Count, Kind::PresenceShare],
                            labels(),
                            rules,
                            60_000,
                            at(0),
                            StdRng::seed_from_u64(seed),
                        );
                        let mut out = Vec::new();
                        // 6 windows, 1 to 12 frames each, 0 to 7 faces per frame.
                        for w in 0..6u64 {
                            let frames = 1 + (seed * 5 + w * 3) % 12;
                            for f in 0..frames {
                                let n = ((seed + w * 7 + f * 3) % 8) as u32;
                                out.extend(faces(&mut a, at(w * 60_000 + f * 1000), n));
                            }
                        }
                        out.extend(a.finish(at(6 * 60_000)));
                        for r in &out {
                            let v = view(r);
                            v.check_rules().unwrap_or_else(|e| {
                                panic!("k {k}, steps {count_step}/{share_step_ppm}, noise {noise:?}, seed {seed}: {e}")
                            });
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 1000, "{checked} records checked");
    }

    #[test]
    fn the_readers_rule_checks_catch_what_a_device_must_not_publish() {
        let mut a = agg(&[Kind::Count, Kind::PresenceShare], rules(3));
        for f in 0..10 {
            faces(&mut a, at(f * 1000), 4);
        }
        let r = a.finish(at(60_000));
        let good = view(&r[0]);
        good.check_rules().unwrap();
        let broken = |f: &dyn Fn(&mut RecordView)| {
            let mut v = good.clone();
            f(&mut v);
            v.check_rules().unwrap_err()
        };
        let e =
            broken(&|v| v.aggregates.count.get_mut("face").unwrap().total = Published::Value(2));
        assert!(e.contains("count.face.total is 2, below k = 3"), "{e}");
        let e = broken(&|v| {
            let p = v.aggregates.presence_share.get_mut("face").unwrap();
            p.present_frames = Published::Value(11);
            p.share_ppm = Published::Value(1_000_000);
        });
        assert!(e.contains("more than its 10 frames"), "{e}");
        let e = broken(&|v| {
            v.aggregates
                .presence_share
                .get_mut("face")
                .unwrap()
                .share_ppm = Published::Value(500_000)
        });
        assert!(
            e.contains("where present_frames 10 of 10 frames give 1000000"),
            "{e}"
        );
        let e =
            broken(&|v| v.aggregates.count.get_mut("face").unwrap().max = Published::Suppressed);
        assert!(e.contains("suppression is per class"), "{e}");
        let e = broken(&|v| {
            v.aggregates
                .presence_share
                .get_mut("face")
                .unwrap()
                .share_ppm = Published::Suppressed
        });
        assert!(e.contains("suppressed together"), "{e}");
        let e = broken(&|v| v.privacy.count_step = 3);
        assert!(e.contains("not a multiple of count_step 3"), "{e}");
    }

    #[test]
    fn frame_counts_per_window_with_k_suppression() {
        let mut a = agg(&[Kind::Count, Kind::PresenceShare], rules(3));
        // Window 0: 4 frames with 0, 2, 5, 1 faces. Window 1: 2 frames with 1 face.
        let mut out = Vec::new();
        for (t, n) in [
            (0, 0),
            (10_000, 2),
            (20_000, 5),
            (30_000, 1),
            (60_000, 1),
            (70_000, 1),
        ] {
            out.extend(faces(&mut a, at(t), n));
        }
        out.extend(a.finish(at(80_000)));
        assert_eq!(out.len(), 2);
        let (w0, w1) = (view(&out[0]), view(&out[1]));
        let c0 = &w0.aggregates.count["face"];
        assert_eq!(
            (c0.frames, c0.max, c0.total),
            (4, Published::Value(5), Published::Value(8))
        );
        let p0 = &w0.aggregates.presence_share["face"];
        assert_eq!(
            (p0.present_frames, p0.share_ppm),
            (Published::Value(3), Published::Value(750_000))
        );
        // Window 1: max 1 and total 2 are below k = 3: suppressed, not zero.
        let c1 = &w1.aggregates.count["face"];
        assert_eq!(
            (c1.frames, c1.max, c1.total),
            (2, Published::Suppressed, Published::Suppressed)
        );
        assert_eq!(
            w1.aggregates.presence_share["face"].share_ppm,
            Published::Suppressed
        );
        assert!(!w0.window.partial && w1.window.partial);
        assert_eq!(w0.window.start, "2026-11-30T11:35:00.000Z");
        assert_eq!(w1.privacy.k, 3);
    }

    #[test]
    fn speech_share_is_time_weighted() {
        let mut a = agg(&[Kind::SpeechShare], Rules::exact());
        // 32 ms chunks: 300 with speech, 700 without.
        for i in 0..1000u64 {
            a.observe(
                at(i * 32),
                Observation::Span {
                    flag: &lab("speech"),
                    on: i % 10 < 3,
                    duration_us: 32_000,
                },
            );
        }
        let recs = a.finish(at(32_000));
        let s = &view(&recs[0]).aggregates.speech_share["speech"];
        assert_eq!((s.observed_ms, s.share_ppm), (32_000, 300_000));
    }

    #[test]
    fn level_statistics() {
        let mut a = agg(&[Kind::LevelStats], Rules::exact());
        for i in 1..=100u64 {
            a.observe(
                at(i * 100),
                Observation::Level {
                    name: &lab("laeq_db"),
                    value: i as f64 / 2.0,
                },
            );
        }
        let l = &view(&a.finish(at(20_000))[0]).aggregates.level_stats["laeq_db"];
        assert_eq!(l.n, 100);
        assert_eq!(
            (l.min_milli, l.max_milli, l.mean_milli),
            (Some(500), Some(50_000), Some(25_250))
        );
        assert_eq!(
            (l.p50_milli, l.p90_milli, l.p95_milli),
            (Some(25_000), Some(45_000), Some(47_500))
        );
    }

    #[test]
    fn only_enabled_kinds_are_published() {
        let mut a = agg(&[Kind::PresenceShare], rules(1));
        faces(&mut a, at(0), 4);
        a.observe(
            at(0),
            Observation::Level {
                name: &lab("x"),
                value: 1.0,
            },
        );
        let v = view(&a.finish(at(1))[0]);
        assert!(v.aggregates.count.is_empty() && v.aggregates.level_stats.is_empty());
        assert_eq!(
            v.aggregates.presence_share["face"].present_frames,
            Published::Value(1)
        );
    }

    #[test]
    fn silent_windows_are_published_empty() {
        let mut a = agg(&[Kind::Count], rules(1));
        faces(&mut a, at(0), 1);
        let closed = faces(&mut a, at(200_000), 1);
        assert_eq!(
            closed.iter().map(|r| r.window().index).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert!(view(&closed[1]).aggregates.count.is_empty());
    }

    #[test]
    fn each_record_publishes_the_epsilon_it_spent() {
        // Epsilon 1 per record over three noised values (max, total, present_frames): 0.333
        // each, 0.999 in all.
        let mut a = agg(&[Kind::Count, Kind::PresenceShare], noisy(1, 1.0, 1440.0));
        faces(&mut a, at(0), 40);
        let v = view(&a.finish(at(1))[0]);
        let n = v.privacy.noise.as_ref().unwrap();
        assert_eq!(
            (n.mechanism.as_str(), n.epsilon_milli, n.values),
            ("geometric", 333, Some(3))
        );
        assert_eq!(v.privacy.epsilon_milli, Some(999));
        assert_eq!(v.privacy.unit.as_deref(), Some("person-window"));
        let b = v.privacy.budget.unwrap();
        assert_eq!(
            (b.day.as_str(), b.epsilon_milli, b.spent_milli, b.withheld),
            ("2026-11-30", 1_440_000, 999, false)
        );
    }

    #[test]
    fn a_spent_budget_withholds_the_noised_values() {
        // 1.5 left in the day pays for one record of 0.999; the next ones are withheld.
        let mut a = agg(&[Kind::Count, Kind::PresenceShare], noisy(1, 1.0, 1440.0)).with_budget(
            crate::BudgetState {
                day: T0.div_euclid(crate::privacy::DAY_MS),
                spent_milli: 1_438_500,
            },
        );
        let mut out = Vec::new();
        for t in [0, 60_000, 120_000] {
            out.extend(faces(&mut a, at(t), 40));
        }
        out.extend(a.finish(at(130_000)));
        let views: Vec<_> = out.iter().map(view).collect();
        let spent: Vec<_> = views
            .iter()
            .map(|v| {
                let b = v.privacy.budget.as_ref().unwrap();
                (v.privacy.epsilon_milli.unwrap(), b.spent_milli, b.withheld)
            })
            .collect();
        assert_eq!(
            spent,
            [
                (999, 1_439_499, false),
                (0, 1_439_499, true),
                (0, 1_439_499, true)
            ]
        );
        assert!(views[1].aggregates.count.is_empty() && views[1].privacy.noise.is_none());
        assert_eq!(out[0].budget().unwrap().spent_milli, 1_439_499);
    }

    #[test]
    fn the_budget_starts_afresh_each_utc_day() {
        let day = T0.div_euclid(crate::privacy::DAY_MS);
        let mut a = agg(&[Kind::Count], noisy(1, 1.0, 1440.0)).with_budget(crate::BudgetState {
            day: day - 1,
            spent_milli: 1_440_000,
        });
        faces(&mut a, at(0), 4);
        let r = a.finish(at(1));
        assert_eq!(
            r[0].budget(),
            Some(crate::BudgetState {
                day,
                spent_milli: 1000
            })
        );
    }

    #[test]
    fn a_suppressed_count_takes_the_values_that_reveal_it_with_it() {
        // max 2 < k = 3 while total 18 and 90% presence would say "one or two, all the time".
        let mut a = agg(&[Kind::Count, Kind::PresenceShare], rules(3));
        for t in 0..10 {
            faces(&mut a, at(t * 1000), if t == 0 { 0 } else { 2 });
        }
        let v = view(&a.finish(at(10_000))[0]);
        let c = &v.aggregates.count["face"];
        let p = &v.aggregates.presence_share["face"];
        assert_eq!(
            (c.frames, c.max, c.total, p.present_frames, p.share_ppm),
            (
                10,
                Published::Suppressed,
                Published::Suppressed,
                Published::Suppressed,
                Published::Suppressed
            )
        );
    }
}

#[cfg(test)]
mod label_tests {
    use super::*;
    use crate::privacy::Rules;
    use crate::record::{Envelope, RecordView};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn an_observation_outside_the_set_is_dropped_and_counted() {
        let start = Instant {
            mono_ms: 0,
            wall_ms: 1_796_038_500_000,
        };
        let mut a = Aggregator::new(
            ModelRef {
                id: "m".into(),
                version: "1".into(),
                sha256: "ab".repeat(32),
            },
            &[Kind::Count],
            Labels::new(["face"]).unwrap(),
            Rules::exact(),
            60_000,
            start,
            StdRng::seed_from_u64(1),
        );
        let other = Labels::new(["person"]).unwrap().get("person").unwrap();
        a.observe(
            start,
            Observation::Frame {
                class: &other,
                count: 9,
            },
        );
        assert_eq!(a.foreign_labels(), 1);
        assert!(a.label("person").is_err());
        let face = a.label("face").unwrap();
        a.observe(
            start,
            Observation::Frame {
                class: &face,
                count: 2,
            },
        );
        let r = a.finish(start);
        let v = RecordView::parse(&r[0].to_canonical(Envelope {
            device: "d",
            territory: "t",
            seq: 0,
        }))
        .unwrap();
        assert_eq!(v.aggregates.count.keys().collect::<Vec<_>>(), ["face"]);
    }
}
