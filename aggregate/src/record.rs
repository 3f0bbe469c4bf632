//! The published aggregate record (schema v2, documented in docs/record-format.md; v1 records
//! are still read).
//!
//! [`Record`] is what may leave a device: it has no public constructor, no `Deserialize` and
//! no `Clone`; only the aggregator builds one. [`RecordView`] is the reading side (hub,
//! `audit show`, tests): it parses published bytes, checks they are canonical, and cannot be
//! handed back to a publisher.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::canonical;
use crate::label::Label;
use crate::privacy::{DAY_MS, Published, Rules, Unit};
use crate::window::{WindowLabel, rfc3339};

/// Schema version of records built by this crate (v3 adds `line_count`, v4 `class_share`).
pub const RECORD_VERSION: u32 = 4;

/// The oldest schema version still read (records kept in logs and hubs from before v2).
pub const OLDEST_READ_VERSION: u32 = 1;

/// The model that produced a record, as its card names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    pub id: String,
    pub version: String,
    pub sha256: String,
}

/// One window's aggregates, after the privacy rules. Built only by [`crate::Aggregator`].
#[derive(Debug, PartialEq)]
pub struct Record {
    pub(crate) model: ModelRef,
    pub(crate) window: WindowLabel,
    pub(crate) partial: bool,
    pub(crate) aggregates: Aggregates,
    pub(crate) rules: Rules,
    /// What the record spent of the privacy budget (with noise only).
    pub(crate) spent: Option<Spent>,
}

/// A record's privacy accounting, as the aggregator charged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spent {
    /// Epsilon of each noised value, in thousandths.
    pub(crate) per_value_milli: u64,
    /// How many values were noised (0 when withheld or none observed).
    pub(crate) values: u64,
    /// The budget's day (days since 1970-01-01 UTC), its size and what it has spent,
    /// this record included.
    pub(crate) day: i64,
    pub(crate) budget_milli: u64,
    pub(crate) day_spent_milli: u64,
    /// The budget could not pay for this record: its noised values are withheld.
    pub(crate) withheld: bool,
}

/// A record's aggregates as the aggregator builds them: per kind it was asked for (present,
/// possibly empty), per label of its closed set, the same typed values the reading side
/// parses ([`CountView`], [`PresenceView`], [`ShareView`], [`LevelView`]).
#[derive(Debug, Default, PartialEq, Serialize)]
pub(crate) struct Aggregates {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) count: Option<BTreeMap<Label, CountView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) presence_share: Option<BTreeMap<Label, PresenceView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) speech_share: Option<BTreeMap<Label, ShareView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) level_stats: Option<BTreeMap<Label, LevelView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) line_count: Option<BTreeMap<Label, BTreeMap<Label, LineCountView>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) class_share: Option<BTreeMap<Label, ShareView>>,
}

/// The published body, borrowed from a [`Record`] and its envelope: the same structs
/// [`RecordView`] reads, field for field.
#[derive(Serialize)]
struct Body<'a> {
    v: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    device: &'a str,
    territory: &'a str,
    seq: u64,
    model: &'a ModelRef,
    window: WindowView,
    aggregates: &'a Aggregates,
    privacy: PrivacyView,
}

/// Where a record is published from, and its place in the device's log.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub device: &'a str,
    pub territory: &'a str,
    pub seq: u64,
}

impl Record {
    pub fn model(&self) -> &ModelRef {
        &self.model
    }

    pub fn window(&self) -> &WindowLabel {
        &self.window
    }

    /// The pipeline's budget after this record (with noise only): the agent keeps it on disk.
    pub fn budget(&self) -> Option<crate::privacy::BudgetState> {
        self.spent.map(|s| crate::privacy::BudgetState {
            day: s.day,
            spent_milli: s.day_spent_milli,
        })
    }

    /// The canonical JSON bytes of the record: the audit log's leaf and the MQTT payload's
    /// body.
    pub fn to_canonical(&self, env: Envelope<'_>) -> Vec<u8> {
        let body = Body {
            v: RECORD_VERSION,
            kind: "aggregate",
            device: env.device,
            territory: env.territory,
            seq: env.seq,
            model: &self.model,
            window: WindowView {
                index: self.window.index,
                start: rfc3339(self.window.start_wall_ms),
                length_ms: self.window.length_ms,
                partial: self.partial,
                clock_jump_ms: self.window.clock_jump_ms,
                clock_jumps: self.window.clock_jumps,
            },
            aggregates: &self.aggregates,
            privacy: PrivacyView {
                k: self.rules.k,
                count_step: self.rules.count_step,
                share_step_ppm: self.rules.share_step_ppm,
                level_step_milli: self.rules.level_step_milli,
                unit: Some(self.rules.unit.name().into()),
                epsilon_milli: Some(self.spent.map_or(0, |s| s.per_value_milli * s.values)),
                noise: self.spent.filter(|s| s.values > 0).map(|s| NoiseView {
                    mechanism: "geometric".into(),
                    epsilon_milli: s.per_value_milli,
                    sensitivity: None,
                    values: Some(s.values),
                }),
                budget: self.spent.map(|s| BudgetView {
                    day: rfc3339(s.day * DAY_MS)[..10].to_owned(),
                    epsilon_milli: s.budget_milli,
                    spent_milli: s.day_spent_milli,
                    withheld: s.withheld,
                }),
            },
        };
        let value = serde_json::to_value(&body).expect("a record body is plain data");
        canonical::to_vec(&value).expect("records hold integers and strings only")
    }
}

impl Serialize for Published {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Published::Value(v) => s.serialize_u64(*v),
            Published::Suppressed => s.serialize_str("suppressed"),
        }
    }
}

impl<'de> Deserialize<'de> for Published {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) if n.is_u64() => Ok(Published::Value(n.as_u64().unwrap_or_default())),
            Value::String(s) if s == "suppressed" => Ok(Published::Suppressed),
            other => Err(serde::de::Error::custom(format!(
                "expected a count or \"suppressed\", found {other}"
            ))),
        }
    }
}

// ---- reading side ------------------------------------------------------------------------------

/// A published record, parsed. Reading only: nothing accepts a view for publishing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordView {
    pub v: u32,
    #[serde(rename = "type")]
    pub kind: String,
    pub device: String,
    pub territory: String,
    pub seq: u64,
    pub model: ModelRef,
    pub window: WindowView,
    pub aggregates: AggregatesView,
    pub privacy: PrivacyView,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowView {
    pub index: u64,
    pub start: String,
    pub length_ms: u64,
    pub partial: bool,
    pub clock_jump_ms: i64,
    pub clock_jumps: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatesView {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub count: BTreeMap<String, CountView>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub presence_share: BTreeMap<String, PresenceView>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub speech_share: BTreeMap<String, ShareView>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub level_stats: BTreeMap<String, LevelView>,
    /// v3: per counting line, per class, the objects that crossed it in each direction.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub line_count: BTreeMap<String, BTreeMap<String, LineCountView>>,
    /// v4: per class of a classifier, the share of the observed time it was present.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub class_share: BTreeMap<String, ShareView>,
}

/// Objects of one class that wholly crossed a counting line during the window, per direction
/// (each counted once per direction, docs/privacy.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineCountView {
    #[serde(rename = "in")]
    pub inward: Published,
    #[serde(rename = "out")]
    pub outward: Published,
}

/// Objects of one class per frame over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountView {
    /// Frames analysed (not a count of persons: never suppressed).
    pub frames: u64,
    /// Most objects seen at once in a frame.
    pub max: Published,
    /// Objects summed over frames.
    pub total: Published,
}

/// Share of frames in which at least one object of the class was present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceView {
    pub frames: u64,
    pub present_frames: Published,
    /// Parts per million of `frames`; suppressed with `present_frames`.
    pub share_ppm: Published,
}

/// Share of observed time during which a flag (speech) was on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareView {
    pub observed_ms: u64,
    pub share_ppm: u64,
}

/// Statistics of a continuous value, in thousandths of its unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelView {
    pub n: u64,
    pub min_milli: Option<i64>,
    pub mean_milli: Option<i64>,
    pub max_milli: Option<i64>,
    pub p50_milli: Option<i64>,
    pub p90_milli: Option<i64>,
    pub p95_milli: Option<i64>,
}

/// The rules a record was published under. v2 adds `unit`, `epsilon_milli` (the record's
/// whole privacy loss) and `budget`; its `noise` gives the epsilon of each noised value and how
/// many there are. A v1 `noise` gave one epsilon "per count" and a hand-set `sensitivity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyView {
    pub k: u64,
    pub count_step: u64,
    pub share_step_ppm: u64,
    pub level_step_milli: u64,
    /// v2: "person-window" or "none" (docs/privacy.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// v2: the epsilon spent by this record, all its noised values together (0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon_milli: Option<u64>,
    pub noise: Option<NoiseView>,
    /// v2, with noise: the pipeline's budget for the record's UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseView {
    pub mechanism: String,
    /// v2: of each noised value; v1: "per count".
    pub epsilon_milli: u64,
    /// v1 only: the hand-set sensitivity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensitivity: Option<u64>,
    /// v2 only: how many values were noised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<u64>,
}

/// A pipeline's privacy budget for one UTC day, after the record that carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetView {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// The most the pipeline may spend that day.
    pub epsilon_milli: u64,
    /// Spent that day, this record included.
    pub spent_milli: u64,
    /// The budget could not pay for this record: its noised values are not published.
    pub withheld: bool,
}

impl PrivacyView {
    /// The record's whole privacy loss in thousandths, `None` when it claims none (no noise).
    /// For a v1 record, its "per count" epsilon (which understated it: docs/privacy.md).
    pub fn record_epsilon_milli(&self) -> Option<u64> {
        match (&self.unit, &self.noise) {
            (Some(u), _) if u == Unit::None.name() => None,
            (Some(_), _) => self.epsilon_milli,
            (None, n) => n.as_ref().map(|n| n.epsilon_milli),
        }
    }

    /// The version-specific shape of the block and its arithmetic.
    fn check(&self, v: u32) -> Result<(), String> {
        let noise = self.noise.as_ref();
        if v == 1 {
            if self.unit.is_some() || self.epsilon_milli.is_some() || self.budget.is_some() {
                return Err("a v1 privacy block has no `unit`, `epsilon_milli` or `budget`".into());
            }
            if noise.is_some_and(|n| n.sensitivity.is_none() || n.values.is_some()) {
                return Err("a v1 `noise` has `sensitivity` and no `values`".into());
            }
            return Ok(());
        }
        let unit = self
            .unit
            .as_deref()
            .and_then(Unit::parse)
            .ok_or("privacy.unit must be \"person-window\" or \"none\"")?;
        let epsilon = self
            .epsilon_milli
            .ok_or("privacy.epsilon_milli is missing")?;
        if noise.is_some_and(|n| n.sensitivity.is_some() || n.values.is_none_or(|v| v == 0)) {
            return Err("privacy.noise has `values` (at least 1) and no `sensitivity`".into());
        }
        let product = noise.map_or(Some(0), |n| n.epsilon_milli.checked_mul(n.values?));
        if product != Some(epsilon) {
            return Err(format!(
                "privacy.epsilon_milli {epsilon} is not noise.epsilon_milli x noise.values"
            ));
        }
        match (unit, &self.budget) {
            (Unit::None, None) if noise.is_none() => Ok(()),
            (Unit::None, _) => Err("unit \"none\" has no noise and no budget".into()),
            (Unit::PersonWindow, None) => Err("unit \"person-window\" needs privacy.budget".into()),
            (Unit::PersonWindow, Some(b)) => {
                if b.spent_milli > b.epsilon_milli || epsilon > b.spent_milli {
                    return Err(format!(
                        "privacy.budget spent {} is not within [{epsilon}, {}]",
                        b.spent_milli, b.epsilon_milli
                    ));
                }
                if b.withheld && noise.is_some() {
                    return Err("a withheld record has no noised values".into());
                }
                Ok(())
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not a record: {0}")]
    Schema(String),
    #[error(
        "record version {0} is not supported (this build reads versions {OLDEST_READ_VERSION} to {RECORD_VERSION})"
    )]
    Version(u32),
    #[error(
        "record is valid JSON but not in canonical form (keys sorted, no spaces, integers only)"
    )]
    NotCanonical,
}

/// The largest share, in parts per million.
const WHOLE_PPM: u64 = 1_000_000;

impl RecordView {
    /// What a reader checks in the published values against the record's own `privacy` block
    /// (docs/record-format.md, "The rules"): every count published is at least `k` (or
    /// `"suppressed"`), a multiple of `count_step` (`present_frames` may be clamped to
    /// `frames`); `present_frames` is at most `frames` (v4); a presence share is the one its
    /// `present_frames` gives (v2 on), suppressed with it; suppression is consistent per class
    /// (v2 on: `max`, `total`, `present_frames` and the share together); shares are at most
    /// 1000000 ppm; a withheld record publishes no noised kind. The first broken rule, named.
    pub fn check_rules(&self) -> Result<(), String> {
        let p = &self.privacy;
        let (k, step) = (p.k, p.count_step.max(1));
        let count = |what: &str, v: &Published, at_most: Option<u64>| -> Result<(), String> {
            let Published::Value(n) = *v else {
                return Ok(());
            };
            if k > 1 && n < k {
                return Err(format!(
                    "{what} is {n}, below k = {k}: it should be published as \"suppressed\""
                ));
            }
            if n % step != 0 && at_most != Some(n) {
                return Err(format!(
                    "{what} is {n}, not a multiple of count_step {step}"
                ));
            }
            Ok(())
        };
        let a = &self.aggregates;
        for (class, c) in &a.count {
            count(&format!("count.{class}.max"), &c.max, None)?;
            count(&format!("count.{class}.total"), &c.total, None)?;
        }
        for (class, c) in &a.presence_share {
            count(
                &format!("presence_share.{class}.present_frames"),
                &c.present_frames,
                Some(c.frames),
            )?;
            match (&c.present_frames, &c.share_ppm) {
                (Published::Value(n), _) if self.v >= 4 && *n > c.frames => {
                    return Err(format!(
                        "presence_share.{class}.present_frames is {n}, more than its {} frames",
                        c.frames
                    ));
                }
                (_, Published::Value(s)) if *s > WHOLE_PPM => {
                    return Err(format!(
                        "presence_share.{class}.share_ppm is {s}, more than 1000000"
                    ));
                }
                (Published::Value(n), Published::Value(s)) if self.v >= 2 => {
                    let want = Rules {
                        share_step_ppm: p.share_step_ppm,
                        ..Rules::exact()
                    }
                    .share_ppm(
                        (n.min(&c.frames) * WHOLE_PPM)
                            .checked_div(c.frames)
                            .unwrap_or(0),
                    );
                    if *s != want {
                        return Err(format!(
                            "presence_share.{class}.share_ppm is {s}, where present_frames {n} of {} frames give {want}",
                            c.frames
                        ));
                    }
                }
                (Published::Value(_), Published::Suppressed)
                | (Published::Suppressed, Published::Value(_)) => {
                    return Err(format!(
                        "presence_share.{class}: present_frames and share_ppm are suppressed together"
                    ));
                }
                _ => {}
            }
        }
        if self.v >= 2 {
            let classes: std::collections::BTreeSet<&String> =
                a.count.keys().chain(a.presence_share.keys()).collect();
            for class in classes {
                let mut values = Vec::new();
                if let Some(c) = a.count.get(class) {
                    values.extend([&c.max, &c.total]);
                }
                if let Some(c) = a.presence_share.get(class) {
                    values.push(&c.present_frames);
                }
                let hidden = values
                    .iter()
                    .filter(|v| ***v == Published::Suppressed)
                    .count();
                if hidden > 0 && hidden < values.len() {
                    return Err(format!(
                        "class {class}: some of its counts are suppressed and others published; suppression is per class, all or none"
                    ));
                }
            }
        }
        for (line, classes) in &a.line_count {
            for (class, c) in classes {
                count(&format!("line_count.{line}.{class}.in"), &c.inward, None)?;
                count(&format!("line_count.{line}.{class}.out"), &c.outward, None)?;
            }
        }
        for (kind, shares) in [
            ("speech_share", &a.speech_share),
            ("class_share", &a.class_share),
        ] {
            for (class, s) in shares {
                if s.share_ppm > WHOLE_PPM {
                    return Err(format!(
                        "{kind}.{class}.share_ppm is {}, more than 1000000",
                        s.share_ppm
                    ));
                }
            }
        }
        if p.budget.as_ref().is_some_and(|b| b.withheld)
            && !(a.count.is_empty()
                && a.presence_share.is_empty()
                && a.line_count.is_empty()
                && a.speech_share.is_empty()
                && a.class_share.is_empty())
        {
            return Err(
                "the record is withheld (the day's budget could not pay for it) but publishes values"
                    .into(),
            );
        }
        Ok(())
    }
}

impl RecordView {
    /// Parses published bytes; they must be the canonical encoding of a v1 to v4 record.
    pub fn parse(bytes: &[u8]) -> Result<RecordView, ParseError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| ParseError::Schema(e.to_string()))?;
        let view: RecordView =
            serde_json::from_value(value.clone()).map_err(|e| ParseError::Schema(e.to_string()))?;
        if !(OLDEST_READ_VERSION..=RECORD_VERSION).contains(&view.v) {
            return Err(ParseError::Version(view.v));
        }
        view.privacy.check(view.v).map_err(ParseError::Schema)?;
        if view.v < 3 && !view.aggregates.line_count.is_empty() {
            return Err(ParseError::Schema(format!(
                "a v{} record has no `line_count` (it came with v3)",
                view.v
            )));
        }
        if view.v < 4 && !view.aggregates.class_share.is_empty() {
            return Err(ParseError::Schema(format!(
                "a v{} record has no `class_share` (it came with v4)",
                view.v
            )));
        }
        if view.kind != "aggregate" {
            return Err(ParseError::Schema(format!(
                "type `{}` is not \"aggregate\"",
                view.kind
            )));
        }
        if canonical::to_vec(&value).ok().as_deref() != Some(bytes) {
            return Err(ParseError::NotCanonical);
        }
        Ok(view)
    }
}
