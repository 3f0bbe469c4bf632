//! Privacy rules applied inside the aggregator, before anything can leave it: a stated unit of
//! protection, calibrated noise on each value that one person can change (two-sided geometric,
//! i.e. discrete Laplace, drawn exactly with integer arithmetic), a budget of epsilon per day,
//! coarsening, and consistent suppression of small counts (a count below `k` is published as
//! "suppressed", never as zero, and so is every value from which it could be recovered).
//!
//! The arithmetic is specified in docs/privacy.md; this module is its implementation.

use rand::{Rng, RngExt};
use serde::Deserialize;

use crate::aggregator::Kind;

/// Milliseconds in the budget's period (a UTC day).
pub const DAY_MS: i64 = 86_400_000;

/// The noised values' sensitivity for a share (parts per million): one person can turn a
/// share from 0 to the whole of it.
pub const SHARE_SENSITIVITY_PPM: u64 = 1_000_000;

/// Rules as a person writes them in the agent's config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRules {
    /// Minimum count published; smaller counts are "suppressed".
    pub k: u64,
    /// Counts are rounded to a multiple of this (1: exact).
    #[serde(default = "one")]
    pub count_step: u64,
    /// Shares (parts per million) are rounded to a multiple of this (1: exact).
    #[serde(default = "one")]
    pub share_step_ppm: u64,
    /// Levels (thousandths of their unit) are rounded to a multiple of this.
    #[serde(default = "one")]
    pub level_step_milli: u64,
    /// What one published record protects: "person-window" (default with noise) or "none"
    /// (default without).
    #[serde(default)]
    pub unit: Option<String>,
    pub noise: Option<RawNoise>,
}

fn one() -> u64 {
    1
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawNoise {
    /// Only "geometric" (two-sided geometric, the discrete Laplace mechanism).
    pub mechanism: String,
    /// Privacy loss of one record (all its noised values together), at most three decimals.
    pub epsilon: f64,
    /// Privacy loss allowed per pipeline and UTC day, at most three decimals.
    pub budget_per_day: Option<f64>,
    /// No longer set by hand: refused with a message saying why.
    #[serde(default)]
    pub sensitivity: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct RulesError {
    pub field: String,
    pub message: String,
}

/// What one record protects, and so how much one individual can change each published value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// One person's presence in view during one window: in each frame a person is at most one
    /// detection of one class. A count of objects at once (`max`) changes by at most 1; a sum
    /// over frames (`total`, `present_frames`) by at most the window's `frames`; a share by
    /// at most all of it.
    PersonWindow,
    /// Nothing about people is protected by noise (measurements such as sound levels or
    /// temperatures, or rules that only coarsen and suppress): the record says so.
    None,
}

impl Unit {
    pub fn name(self) -> &'static str {
        match self {
            Unit::PersonWindow => "person-window",
            Unit::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Unit> {
        match s {
            "person-window" => Some(Unit::PersonWindow),
            "none" => Some(Unit::None),
            _ => None,
        }
    }
}

/// Validated rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    pub k: u64,
    pub count_step: u64,
    pub share_step_ppm: u64,
    pub level_step_milli: u64,
    pub unit: Unit,
    pub noise: Option<Noise>,
}

/// The discrete Laplace mechanism: each noised value `v` of sensitivity `s` is published as
/// `v + X` with `P(X = x) ∝ exp(-e |x| / s)`, where `e` is the record's epsilon divided
/// evenly among its noised values. Epsilons are held in thousandths, so that the values
/// published with each record are exactly the ones used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Noise {
    /// The most one record may spend, all its noised values together.
    pub epsilon_milli: u64,
    /// The most one pipeline may spend in a UTC day.
    pub budget_milli: u64,
}

/// The budget spent so far in the current period. The agent keeps it on disk across
/// restarts (a restart opens an extra, partial window that spends too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BudgetState {
    /// Days since 1970-01-01 (UTC) of the period being spent.
    pub day: i64,
    pub spent_milli: u64,
}

/// Epsilon as typed, in thousandths; `None` if it has more than three decimals or is out of
/// `(0, max]`.
fn milli(v: f64, max: f64) -> Option<u64> {
    if !(v.is_finite() && v > 0.0 && v <= max) {
        return None;
    }
    let m = (v * 1000.0).round();
    ((m - v * 1000.0).abs() <= 1e-6 && m >= 1.0).then_some(m as u64)
}

/// `milli` thousandths written as a decimal number (`8640`, `0.999`).
pub fn decimal(milli: u64) -> String {
    let (int, frac) = (milli / 1000, milli % 1000);
    if frac == 0 {
        format!("{int}")
    } else {
        format!("{int}.{frac:03}").trim_end_matches('0').to_owned()
    }
}

impl Rules {
    /// Checks the rules against the aggregates they apply to and the window's length: the
    /// unit must fit the aggregates, and a day of windows must fit in the budget (the message
    /// gives the arithmetic).
    pub fn validate(raw: &RawRules, kinds: &[Kind], window_ms: u64) -> Result<Rules, RulesError> {
        let err = |field: &str, message: String| RulesError {
            field: field.into(),
            message,
        };
        if raw.k == 0 {
            return Err(err(
                "k",
                "must be at least 1 (1 publishes every count)".into(),
            ));
        }
        for (field, v) in [
            ("count_step", raw.count_step),
            ("share_step_ppm", raw.share_step_ppm),
            ("level_step_milli", raw.level_step_milli),
        ] {
            if v == 0 {
                return Err(err(field, "must be at least 1 (1 is exact)".into()));
            }
        }
        if raw.share_step_ppm > 1_000_000 {
            return Err(err("share_step_ppm", "must be at most 1000000".into()));
        }
        let unit = match raw.unit.as_deref() {
            None if raw.noise.is_some() => Unit::PersonWindow,
            None => Unit::None,
            Some(u) => Unit::parse(u).ok_or_else(|| {
                err(
                    "unit",
                    format!(
                        "unknown unit `{u}` (expected \"person-window\": one person's presence during a window, or \"none\")"
                    ),
                )
            })?,
        };
        let noise = match (&raw.noise, unit) {
            (None, Unit::None) => None,
            (None, Unit::PersonWindow) => {
                return Err(err(
                    "noise",
                    "unit \"person-window\" is protected by noise: add `noise = { mechanism = \"geometric\", epsilon = 1.0, budget_per_day = ... }` (see docs/privacy.md)".into(),
                ));
            }
            (Some(_), Unit::None) => {
                return Err(err(
                    "unit",
                    "noise protects a unit: remove `unit = \"none\"` or the noise".into(),
                ));
            }
            (Some(n), Unit::PersonWindow) => {
                if n.mechanism != "geometric" {
                    return Err(err(
                        "noise.mechanism",
                        "unknown mechanism (expected \"geometric\": two-sided geometric / discrete Laplace)".into(),
                    ));
                }
                if n.sensitivity.is_some() {
                    return Err(err(
                        "noise.sensitivity",
                        "is no longer set by hand: each value's sensitivity follows from `unit` (docs/privacy.md); remove it".into(),
                    ));
                }
                let epsilon_milli = milli(n.epsilon, 20.0).ok_or_else(|| {
                    err(
                        "noise.epsilon",
                        "must be a number in (0, 20] with at most three decimals (e.g. 0.5 or 1.25)".into(),
                    )
                })?;
                let Some(budget) = n.budget_per_day else {
                    return Err(err(
                        "noise.budget_per_day",
                        format!(
                            "is required with noise: the most epsilon this pipeline may spend in a day; {} windows a day at epsilon {} need at least {}",
                            windows_per_day(window_ms),
                            decimal(epsilon_milli),
                            decimal(windows_per_day(window_ms) * epsilon_milli)
                        ),
                    ));
                };
                let budget_milli = milli(budget, 1e9).ok_or_else(|| {
                    err(
                        "noise.budget_per_day",
                        "must be a positive number with at most three decimals".into(),
                    )
                })?;
                for kind in kinds {
                    if *kind == Kind::LevelStats {
                        return Err(err(
                            "noise",
                            "level statistics are measurements published without noise: put `level_stats` in a pipeline of its own with unit \"none\"".into(),
                        ));
                    }
                }
                let windows = windows_per_day(window_ms);
                let needed = windows * epsilon_milli;
                if needed > budget_milli {
                    // The longest window and the largest epsilon that fit.
                    let max_eps = budget_milli / windows;
                    let min_window_s = (DAY_MS as u64 * epsilon_milli)
                        .div_ceil(budget_milli)
                        .div_ceil(1000);
                    return Err(err(
                        "noise.budget_per_day",
                        format!(
                            "{windows} windows a day (one every {} s) x epsilon {} per window = {}, more than budget_per_day = {}: raise budget_per_day to at least {}, lengthen the window to at least {min_window_s} s, or lower epsilon to at most {}",
                            window_ms / 1000,
                            decimal(epsilon_milli),
                            decimal(needed),
                            decimal(budget_milli),
                            decimal(needed),
                            if max_eps == 0 {
                                "0 (impossible)".into()
                            } else {
                                decimal(max_eps)
                            },
                        ),
                    ));
                }
                Some(Noise {
                    epsilon_milli,
                    budget_milli,
                })
            }
        };
        Ok(Rules {
            k: raw.k,
            count_step: raw.count_step,
            share_step_ppm: raw.share_step_ppm,
            level_step_milli: raw.level_step_milli,
            unit,
            noise,
        })
    }

    /// Rules that publish exact values (k = 1, no noise, no coarsening): for tests and for
    /// aggregates that are not about people.
    pub fn exact() -> Rules {
        Rules {
            k: 1,
            count_step: 1,
            share_step_ppm: 1,
            level_step_milli: 1,
            unit: Unit::None,
            noise: None,
        }
    }

    /// A count after coarsening and suppression (the noise, if any, is already in `noisy`):
    /// the threshold applies to the noisy value, so that suppression itself reveals nothing
    /// beyond the noisy count. `k = 1` publishes every count, 0 included ("suppressed" would
    /// stand for exactly 0 and hide nothing).
    pub fn count(&self, noisy: i128) -> Published {
        self.count_at_most(noisy, u64::MAX)
    }

    /// As [`Rules::count`] for a count that cannot exceed `max` (`present_frames`, at most
    /// `frames`): clamped again after rounding to `count_step`, before the threshold `k`.
    pub fn count_at_most(&self, noisy: i128, max: u64) -> Published {
        let v = round_to(noisy.max(0) as u64, self.count_step).min(max);
        if self.k > 1 && v < self.k {
            Published::Suppressed
        } else {
            Published::Value(v)
        }
    }

    pub fn share_ppm(&self, ppm: u64) -> u64 {
        round_to(ppm, self.share_step_ppm).min(1_000_000)
    }

    pub fn level_milli(&self, milli: i64) -> i64 {
        let step = self.level_step_milli as i64;
        (milli as f64 / step as f64).round() as i64 * step
    }
}

/// Windows a pipeline can close in a day (a day's worth of its full windows, rounded up).
pub fn windows_per_day(window_ms: u64) -> u64 {
    (DAY_MS as u64).div_ceil(window_ms.max(1))
}

fn round_to(v: u64, step: u64) -> u64 {
    if step <= 1 {
        return v;
    }
    (v + step / 2) / step * step
}

/// One draw of the discrete Laplace law of scale `sensitivity / (epsilon_milli / 1000)`:
/// `P(X = x) ∝ exp(-epsilon |x| / sensitivity)`. Exact: integer arithmetic and fair integer
/// draws only (Canonne, Kamath and Steinke, "The Discrete Gaussian for Differential
/// Privacy", 2020, algorithms 1 and 2), so that the law holds bit for bit, which a sampler in
/// floating point does not (its tails and gaps leak, Mironov 2012).
pub fn discrete_laplace(sensitivity: u64, epsilon_milli: u64, rng: &mut impl Rng) -> i64 {
    // Scale t / s with t = sensitivity * 1000 and s = epsilon_milli.
    let t = sensitivity.max(1).saturating_mul(1000);
    let s = epsilon_milli.max(1);
    loop {
        let u = rng.random_range(0..t);
        if !bernoulli_exp(u, t, rng) {
            continue;
        }
        let mut v = 0u64;
        while bernoulli_exp(1, 1, rng) {
            v += 1;
        }
        let x = u as u128 + t as u128 * v as u128;
        let y = (x / s as u128).min(i64::MAX as u128) as i64;
        let negative = rng.random_range(0..2u8) == 1;
        if negative && y == 0 {
            continue;
        }
        return if negative { -y } else { y };
    }
}

/// Bernoulli(n / d), exactly.
fn bernoulli(n: u64, d: u64, rng: &mut impl Rng) -> bool {
    rng.random_range(0..d) < n
}

/// Bernoulli(exp(-n / d)), exactly.
fn bernoulli_exp(n: u64, d: u64, rng: &mut impl Rng) -> bool {
    let (whole, rest) = (n / d, n % d);
    for _ in 0..whole {
        if !bernoulli_exp_at_most_one(1, 1, rng) {
            return false;
        }
    }
    bernoulli_exp_at_most_one(rest, d, rng)
}

/// Bernoulli(exp(-n / d)) for `n <= d`: the parity of the first `k` with no success of
/// Bernoulli(n / (d k)).
fn bernoulli_exp_at_most_one(n: u64, d: u64, rng: &mut impl Rng) -> bool {
    let mut k = 1u64;
    while bernoulli(n, d.saturating_mul(k), rng) {
        k += 1;
    }
    k % 2 == 1
}

/// A count as published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    Value(u64),
    Suppressed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn raw(k: u64, step: u64, noise: Option<(f64, f64)>) -> RawRules {
        RawRules {
            k,
            count_step: step,
            share_step_ppm: 1,
            level_step_milli: 1,
            unit: None,
            noise: noise.map(|(epsilon, budget)| RawNoise {
                mechanism: "geometric".into(),
                epsilon,
                budget_per_day: Some(budget),
                sensitivity: None,
            }),
        }
    }

    fn rules(k: u64, step: u64) -> Rules {
        Rules::validate(&raw(k, step, None), &[Kind::Count], 60_000).unwrap()
    }

    #[test]
    fn counts_below_k_are_suppressed_not_zero() {
        let r = rules(5, 1);
        let table = [
            (-3, Published::Suppressed),
            (0, Published::Suppressed),
            (4, Published::Suppressed),
            (5, Published::Value(5)),
            (17, Published::Value(17)),
        ];
        for (count, want) in table {
            assert_eq!(r.count(count), want, "count {count}");
        }
    }

    /// `present_frames` never exceeds `frames`, even after noise and rounding up to the step,
    /// and the clamp comes before the threshold: a window of fewer frames than `k` is
    /// suppressed however high its noise went.
    #[test]
    fn a_bounded_count_is_clamped_after_rounding_and_before_k() {
        let r = rules(3, 5);
        assert_eq!(r.count(58), Published::Value(60));
        assert_eq!(r.count_at_most(58, 58), Published::Value(58));
        assert_eq!(r.count_at_most(61, 58), Published::Value(58));
        assert_eq!(r.count_at_most(12, 100), Published::Value(10));
        assert_eq!(r.count_at_most(9, 2), Published::Suppressed);
        assert_eq!(rules(1, 1).count_at_most(11, 10), Published::Value(10));
    }

    #[test]
    fn k_1_publishes_every_count() {
        let r = rules(1, 1);
        assert_eq!(
            (r.count(0), r.count(1)),
            (Published::Value(0), Published::Value(1))
        );
    }

    #[test]
    fn coarsening_rounds_then_suppresses() {
        let r = rules(10, 5);
        let table = [
            (7, Published::Suppressed),
            (8, Published::Value(10)),
            (12, Published::Value(10)),
            (13, Published::Value(15)),
        ];
        for (count, want) in table {
            assert_eq!(r.count(count), want, "count {count}");
        }
    }

    /// The noise follows the discrete Laplace law: P(X = x) = (1 - a) / (1 + a) * a^|x|,
    /// a = exp(-epsilon / sensitivity). Chi-square goodness of fit over x in [-8, 8] (in
    /// steps of the sensitivity's scale) plus both tails, fixed seed.
    #[test]
    fn discrete_laplace_is_calibrated() {
        for (epsilon_milli, sensitivity) in [(500, 1), (1000, 1), (333, 1), (1000, 2), (250, 7)] {
            let a = (-(epsilon_milli as f64) / 1000.0 / sensitivity as f64).exp();
            let mut rng = StdRng::seed_from_u64(20261205);
            let n = 200_000;
            let mut hist = std::collections::BTreeMap::<i64, u64>::new();
            let (mut sum, mut sum_sq) = (0f64, 0f64);
            for _ in 0..n {
                let x = discrete_laplace(sensitivity, epsilon_milli, &mut rng);
                *hist.entry(x.clamp(-9, 9)).or_default() += 1;
                sum += x as f64;
                sum_sq += (x * x) as f64;
            }
            let pmf = |x: i64| (1.0 - a) / (1.0 + a) * a.powi(x.abs() as i32);
            // Tail mass beyond 8 on one side: a^9 / (1 + a).
            let tail = a.powi(9) / (1.0 + a);
            let mut chi2 = 0.0;
            for x in -9i64..=9 {
                let p = if x.abs() == 9 { tail } else { pmf(x) };
                let expected = p * n as f64;
                let observed = *hist.get(&x).unwrap_or(&0) as f64;
                chi2 += (observed - expected).powi(2) / expected;
            }
            // 19 bins, 18 degrees of freedom: the 99.9th percentile is 42.3.
            assert!(
                chi2 < 42.3,
                "epsilon {epsilon_milli}/{sensitivity}: chi2 {chi2:.1}"
            );
            let mean = sum / n as f64;
            let var = sum_sq / n as f64 - mean * mean;
            let want_var = 2.0 * a / (1.0 - a).powi(2);
            assert!(mean.abs() < 0.05 * want_var.sqrt(), "mean {mean}");
            assert!(
                (var / want_var - 1.0).abs() < 0.03,
                "variance {var} vs {want_var}"
            );
        }
    }

    #[test]
    fn a_large_sensitivity_scales_the_noise() {
        // Sensitivity 900 at epsilon 0.5: the standard deviation is about 900 / 0.5 * 1.41.
        let mut rng = StdRng::seed_from_u64(3);
        let n = 20_000;
        let var = (0..n)
            .map(|_| (discrete_laplace(900, 500, &mut rng) as f64).powi(2))
            .sum::<f64>()
            / n as f64;
        let a = (-0.5f64 / 900.0).exp();
        let want = 2.0 * a / (1.0 - a).powi(2);
        assert!((var / want - 1.0).abs() < 0.05, "variance {var} vs {want}");
    }

    #[test]
    fn the_budget_is_checked_with_its_arithmetic() {
        // 10-second windows: 8640 a day; at epsilon 1 that needs 8640.
        let ok = Rules::validate(&raw(3, 1, Some((1.0, 8640.0))), &[Kind::Count], 10_000);
        assert_eq!(
            ok.unwrap().noise,
            Some(Noise {
                epsilon_milli: 1000,
                budget_milli: 8_640_000
            })
        );
        let e =
            Rules::validate(&raw(3, 1, Some((1.0, 100.0))), &[Kind::Count], 10_000).unwrap_err();
        assert_eq!(e.field, "noise.budget_per_day");
        assert!(
            e.message.starts_with(
                "8640 windows a day (one every 10 s) x epsilon 1 per window = 8640, more than budget_per_day = 100: raise budget_per_day to at least 8640, lengthen the window to at least 864 s, or lower epsilon to at most 0.011"
            ),
            "{}",
            e.message
        );
        // 15-minute windows: 96 a day.
        assert!(Rules::validate(&raw(3, 1, Some((0.5, 48.0))), &[Kind::Count], 900_000).is_ok());
    }

    #[test]
    fn bad_rules_name_their_field() {
        let base = raw(5, 1, None);
        let noisy = raw(5, 1, Some((1.0, 1e6)));
        let with_noise = |f: &dyn Fn(&mut RawNoise)| {
            let mut r = noisy.clone();
            f(r.noise.as_mut().unwrap());
            r
        };
        let table = [
            (
                RawRules {
                    k: 0,
                    ..base.clone()
                },
                &[Kind::Count][..],
                "k",
            ),
            (
                RawRules {
                    count_step: 0,
                    ..base.clone()
                },
                &[Kind::Count],
                "count_step",
            ),
            (
                RawRules {
                    share_step_ppm: 2_000_000,
                    ..base.clone()
                },
                &[Kind::Count],
                "share_step_ppm",
            ),
            (
                RawRules {
                    unit: Some("person".into()),
                    ..base.clone()
                },
                &[Kind::Count],
                "unit",
            ),
            (
                RawRules {
                    unit: Some("person-window".into()),
                    ..base.clone()
                },
                &[Kind::Count],
                "noise",
            ),
            (
                RawRules {
                    unit: Some("none".into()),
                    ..noisy.clone()
                },
                &[Kind::Count],
                "unit",
            ),
            (noisy.clone(), &[Kind::LevelStats], "noise"),
            (
                with_noise(&|n| n.mechanism = "laplace".into()),
                &[Kind::Count],
                "noise.mechanism",
            ),
            (
                with_noise(&|n| n.epsilon = 0.0),
                &[Kind::Count],
                "noise.epsilon",
            ),
            (
                with_noise(&|n| n.epsilon = f64::NAN),
                &[Kind::Count],
                "noise.epsilon",
            ),
            (
                with_noise(&|n| n.epsilon = 0.12345),
                &[Kind::Count],
                "noise.epsilon",
            ),
            (
                with_noise(&|n| n.sensitivity = Some(serde::de::IgnoredAny)),
                &[Kind::Count],
                "noise.sensitivity",
            ),
            (
                with_noise(&|n| n.budget_per_day = None),
                &[Kind::Count],
                "noise.budget_per_day",
            ),
            (
                with_noise(&|n| n.budget_per_day = Some(-1.0)),
                &[Kind::Count],
                "noise.budget_per_day",
            ),
        ];
        for (raw, kinds, field) in table {
            assert_eq!(
                Rules::validate(&raw, kinds, 60_000).unwrap_err().field,
                field,
                "{raw:?}"
            );
        }
    }

    #[test]
    fn decimals_are_written_plainly() {
        assert_eq!(
            [decimal(8_640_000), decimal(999), decimal(1500), decimal(11)],
            ["8640", "0.999", "1.5", "0.011"]
        );
    }
}
