//! The published aggregate record (schema v1, documented in docs/record-format.md).
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
use crate::privacy::{Published, Rules};
use crate::window::{WindowLabel, rfc3339};

/// Schema version of records built by this crate.
pub const RECORD_VERSION: u32 = 1;

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
                noise: self.rules.noise.map(|n| NoiseView {
                    mechanism: "geometric".into(),
                    epsilon_milli: n.epsilon_milli,
                    sensitivity: n.sensitivity,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyView {
    pub k: u64,
    pub count_step: u64,
    pub share_step_ppm: u64,
    pub level_step_milli: u64,
    pub noise: Option<NoiseView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseView {
    pub mechanism: String,
    pub epsilon_milli: u64,
    pub sensitivity: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not a record: {0}")]
    Schema(String),
    #[error("record version {0} is not supported (this build reads version {RECORD_VERSION})")]
    Version(u32),
    #[error(
        "record is valid JSON but not in canonical form (keys sorted, no spaces, integers only)"
    )]
    NotCanonical,
}

impl RecordView {
    /// Parses published bytes; they must be the canonical encoding of a v1 record.
    pub fn parse(bytes: &[u8]) -> Result<RecordView, ParseError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| ParseError::Schema(e.to_string()))?;
        let view: RecordView =
            serde_json::from_value(value.clone()).map_err(|e| ParseError::Schema(e.to_string()))?;
        if view.v != RECORD_VERSION {
            return Err(ParseError::Version(view.v));
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
