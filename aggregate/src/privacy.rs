//! Privacy rules applied inside the aggregator, before anything can leave it: calibrated noise
//! on counts (two-sided geometric, i.e. discrete Laplace), coarsening, and suppression of
//! small counts (a count below `k` is published as "suppressed", never as zero).

use rand::{Rng, RngExt};
use serde::Deserialize;

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
    /// Privacy loss per window and per count, with at most three decimals.
    pub epsilon: f64,
    /// How much one event can change a count (1 for counts of events).
    #[serde(default = "one")]
    pub sensitivity: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct RulesError {
    pub field: String,
    pub message: String,
}

/// Validated rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    pub k: u64,
    pub count_step: u64,
    pub share_step_ppm: u64,
    pub level_step_milli: u64,
    pub noise: Option<Noise>,
}

/// The discrete Laplace mechanism: `count + X` with `P(X = x) ∝ alpha^|x|`,
/// `alpha = exp(-epsilon / sensitivity)`. Epsilon is held in thousandths so that the value
/// published with each record is exactly the one used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Noise {
    pub epsilon_milli: u64,
    pub sensitivity: u64,
}

impl Rules {
    pub fn validate(raw: &RawRules) -> Result<Rules, RulesError> {
        let err = |field: &str, message: &str| RulesError {
            field: field.into(),
            message: message.into(),
        };
        if raw.k == 0 {
            return Err(err("k", "must be at least 1 (1 publishes every count)"));
        }
        for (field, v) in [
            ("count_step", raw.count_step),
            ("share_step_ppm", raw.share_step_ppm),
            ("level_step_milli", raw.level_step_milli),
        ] {
            if v == 0 {
                return Err(err(field, "must be at least 1 (1 is exact)"));
            }
        }
        if raw.share_step_ppm > 1_000_000 {
            return Err(err("share_step_ppm", "must be at most 1000000"));
        }
        let noise = match &raw.noise {
            None => None,
            Some(n) => {
                if n.mechanism != "geometric" {
                    return Err(err(
                        "noise.mechanism",
                        "unknown mechanism (expected \"geometric\": two-sided geometric / discrete Laplace)",
                    ));
                }
                let milli = (n.epsilon * 1000.0).round();
                if !(n.epsilon.is_finite() && n.epsilon > 0.0 && n.epsilon <= 20.0) {
                    return Err(err("noise.epsilon", "must be a number in (0, 20]"));
                }
                if (milli - n.epsilon * 1000.0).abs() > 1e-6 || milli < 1.0 {
                    return Err(err(
                        "noise.epsilon",
                        "must have at most three decimals (e.g. 0.5 or 1.25)",
                    ));
                }
                if n.sensitivity == 0 {
                    return Err(err("noise.sensitivity", "must be at least 1"));
                }
                Some(Noise {
                    epsilon_milli: milli as u64,
                    sensitivity: n.sensitivity,
                })
            }
        };
        Ok(Rules {
            k: raw.k,
            count_step: raw.count_step,
            share_step_ppm: raw.share_step_ppm,
            level_step_milli: raw.level_step_milli,
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
            noise: None,
        }
    }

    /// Noise, then coarsening, then suppression of small results: the threshold applies to the
    /// noisy value, so that suppression itself reveals nothing beyond the noisy count.
    pub fn count(&self, true_count: u64, rng: &mut impl Rng) -> Published {
        let mut v = true_count as i128;
        if let Some(n) = self.noise {
            v += n.sample(rng) as i128;
        }
        let v = v.max(0) as u64;
        let v = round_to(v, self.count_step);
        if v < self.k {
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

fn round_to(v: u64, step: u64) -> u64 {
    if step <= 1 {
        return v;
    }
    (v + step / 2) / step * step
}

impl Noise {
    pub fn epsilon(&self) -> f64 {
        self.epsilon_milli as f64 / 1000.0
    }

    /// `alpha = exp(-epsilon / sensitivity)`.
    pub fn alpha(&self) -> f64 {
        (-self.epsilon() / self.sensitivity as f64).exp()
    }

    /// One draw of the two-sided geometric distribution: the difference of two independent
    /// geometric variables on {0, 1, ...} with success probability `1 - alpha`.
    pub fn sample(&self, rng: &mut impl Rng) -> i64 {
        let alpha = self.alpha();
        geometric(alpha, rng) - geometric(alpha, rng)
    }
}

/// `P(G = g) = (1 - alpha) alpha^g` by inversion: `floor(ln U / ln alpha)`, U uniform in (0, 1].
fn geometric(alpha: f64, rng: &mut impl Rng) -> i64 {
    // 1 - [0, 1) is (0, 1]: ln never sees 0.
    let u: f64 = 1.0 - rng.random::<f64>();
    let g = (u.ln() / alpha.ln()).floor();
    // Bound the tail (probability < 1e-300 for any epsilon accepted above).
    g.min(1e12) as i64
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

    fn rules(k: u64, step: u64, noise: Option<(f64, u64)>) -> Rules {
        Rules::validate(&RawRules {
            k,
            count_step: step,
            share_step_ppm: 1,
            level_step_milli: 1,
            noise: noise.map(|(epsilon, sensitivity)| RawNoise {
                mechanism: "geometric".into(),
                epsilon,
                sensitivity,
            }),
        })
        .unwrap()
    }

    #[test]
    fn counts_below_k_are_suppressed_not_zero() {
        let r = rules(5, 1, None);
        let mut rng = StdRng::seed_from_u64(1);
        let table = [
            (0, Published::Suppressed),
            (4, Published::Suppressed),
            (5, Published::Value(5)),
            (17, Published::Value(17)),
        ];
        for (count, want) in table {
            assert_eq!(r.count(count, &mut rng), want, "count {count}");
        }
    }

    #[test]
    fn coarsening_rounds_then_suppresses() {
        let r = rules(10, 5, None);
        let mut rng = StdRng::seed_from_u64(1);
        let table = [
            (7, Published::Suppressed),
            (8, Published::Value(10)),
            (12, Published::Value(10)),
            (13, Published::Value(15)),
        ];
        for (count, want) in table {
            assert_eq!(r.count(count, &mut rng), want, "count {count}");
        }
    }

    /// The noise follows the discrete Laplace law: P(X = x) = (1 - a) / (1 + a) * a^|x|.
    /// Chi-square goodness of fit over x in [-8, 8] plus both tails, fixed seed.
    #[test]
    fn geometric_noise_is_calibrated() {
        for (epsilon, sensitivity) in [(0.5, 1), (1.0, 1), (1.0, 2)] {
            let noise = Noise {
                epsilon_milli: (epsilon * 1000.0) as u64,
                sensitivity,
            };
            let a = noise.alpha();
            let mut rng = StdRng::seed_from_u64(20261130);
            let n = 200_000;
            let mut hist = std::collections::BTreeMap::<i64, u64>::new();
            let (mut sum, mut sum_sq) = (0f64, 0f64);
            for _ in 0..n {
                let x = noise.sample(&mut rng);
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
                "epsilon {epsilon}/{sensitivity}: chi2 {chi2:.1}"
            );
            let mean = sum / n as f64;
            let var = sum_sq / n as f64 - mean * mean;
            let want_var = 2.0 * a / (1.0 - a).powi(2);
            assert!(mean.abs() < 0.05, "mean {mean}");
            assert!(
                (var / want_var - 1.0).abs() < 0.03,
                "variance {var} vs {want_var}"
            );
        }
    }

    #[test]
    fn noise_is_added_before_the_threshold() {
        // With heavy noise, a true count of 0 is sometimes published (noise pushed it above
        // k) and a true count of 20 is sometimes suppressed: the threshold sees noisy values.
        let r = rules(5, 1, Some((0.1, 1)));
        let mut rng = StdRng::seed_from_u64(7);
        let zero_published = (0..2000)
            .filter(|_| r.count(0, &mut rng) != Published::Suppressed)
            .count();
        let twenty_suppressed = (0..2000)
            .filter(|_| r.count(20, &mut rng) == Published::Suppressed)
            .count();
        assert!(
            zero_published > 0 && twenty_suppressed > 0,
            "{zero_published} {twenty_suppressed}"
        );
    }

    #[test]
    fn bad_rules_name_their_field() {
        let base = RawRules {
            k: 5,
            count_step: 1,
            share_step_ppm: 1,
            level_step_milli: 1,
            noise: None,
        };
        let noise = |m: &str, e: f64, s: u64| {
            Some(RawNoise {
                mechanism: m.into(),
                epsilon: e,
                sensitivity: s,
            })
        };
        let table = [
            (
                RawRules {
                    k: 0,
                    ..base.clone()
                },
                "k",
            ),
            (
                RawRules {
                    count_step: 0,
                    ..base.clone()
                },
                "count_step",
            ),
            (
                RawRules {
                    share_step_ppm: 2_000_000,
                    ..base.clone()
                },
                "share_step_ppm",
            ),
            (
                RawRules {
                    noise: noise("laplace", 1.0, 1),
                    ..base.clone()
                },
                "noise.mechanism",
            ),
            (
                RawRules {
                    noise: noise("geometric", 0.0, 1),
                    ..base.clone()
                },
                "noise.epsilon",
            ),
            (
                RawRules {
                    noise: noise("geometric", f64::NAN, 1),
                    ..base.clone()
                },
                "noise.epsilon",
            ),
            (
                RawRules {
                    noise: noise("geometric", 0.12345, 1),
                    ..base.clone()
                },
                "noise.epsilon",
            ),
            (
                RawRules {
                    noise: noise("geometric", 1.0, 0),
                    ..base.clone()
                },
                "noise.sensitivity",
            ),
        ];
        for (raw, field) in table {
            assert_eq!(Rules::validate(&raw).unwrap_err().field, field);
        }
    }
}
