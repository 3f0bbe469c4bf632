//! The agent <-> hub link: the MQTT wire format (specified in `docs/mqtt.md`): topic names,
//! the record envelope, the hub's signed acknowledgement, and a checker that tells whether any
//! payload seen on the broker is one of these (the privacy test at the wire). It must never
//! accept a payload that is not one of them.
//!
//! Pure code: no IO, no MQTT client (the optional [`tls`] module reads PEM files). Both the agent and the hub build and parse messages here
//! only, so the two sides cannot drift apart.

pub mod flow;
pub mod status;
#[cfg(feature = "tls")]
pub mod tls;

pub use status::{
    Clock, NodeStatus, PipelineStatus, STATUS_VERSION, SourceKind, SourceState, Status,
    StatusPayload, parse_status,
};

use aggregate::RecordView;
use audit::{SignerKey, VerifierKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

/// Every topic starts with this.
pub const PREFIX: &str = "iat/v1";
/// The bare status payloads (the last will is [`OFFLINE`]; a running agent publishes a
/// [`Status`] report).
pub const ONLINE: &[u8] = b"online";
pub const OFFLINE: &[u8] = b"offline";
/// First line of an ack note: never a device origin (those start with `iat/`), so an ack
/// signature cannot pass for a checkpoint signature, nor the other way round.
pub const ACK_HEADER: &str = "iat-ack/v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("topic `{0}` is not an IAT topic")]
    Topic(String),
    #[error("envelope: {0}")]
    Envelope(String),
    #[error("record: {0}")]
    Record(String),
    #[error("envelope seq {envelope} differs from the record's seq {record}")]
    SeqMismatch { envelope: u64, record: u64 },
    #[error("record names {found}, the topic names {topic}")]
    TopicMismatch { found: String, topic: String },
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("ack: {0}")]
    Ack(String),
    #[error("status: {0}")]
    Status(String),
}

/// Whether a string may be a topic level (a device, territory or model id): the record
/// format's alphabet, so no wildcard, separator or empty level.
pub fn valid_level(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// What a topic is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicKind {
    /// `agg/{model}`: records.
    Agg {
        model: String,
    },
    Checkpoint,
    Status,
    Ack,
}

/// A parsed topic: `iat/v1/{territory}/{device}/...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    pub territory: String,
    pub device: String,
    pub kind: TopicKind,
}

impl Topic {
    pub fn parse(topic: &str) -> Result<Topic, WireError> {
        let bad = || WireError::Topic(topic.chars().take(200).collect());
        let rest = topic
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let (territory, device) = match parts.as_slice() {
            [t, d, ..] if valid_level(t) && valid_level(d) => (t, d),
            _ => return Err(bad()),
        };
        let kind = match &parts[2..] {
            ["agg", m] if valid_level(m) => TopicKind::Agg {
                model: (*m).to_owned(),
            },
            ["checkpoint"] => TopicKind::Checkpoint,
            ["status"] => TopicKind::Status,
            ["ack"] => TopicKind::Ack,
            _ => return Err(bad()),
        };
        Ok(Topic {
            territory: (*territory).to_owned(),
            device: (*device).to_owned(),
            kind,
        })
    }

    /// The device's log origin, as in its checkpoints.
    pub fn origin(&self) -> String {
        origin(&self.territory, &self.device)
    }
}

/// The origin of a device's log (first line of its checkpoints; the name of its key).
pub fn origin(territory: &str, device: &str) -> String {
    format!("iat/{territory}/{device}")
}

/// `iat/v1/{territory}/{device}`.
pub fn device_base(territory: &str, device: &str) -> String {
    format!("{PREFIX}/{territory}/{device}")
}

pub fn agg_topic(territory: &str, device: &str, model: &str) -> String {
    format!("{}/agg/{model}", device_base(territory, device))
}

pub fn checkpoint_topic(territory: &str, device: &str) -> String {
    format!("{}/checkpoint", device_base(territory, device))
}

pub fn status_topic(territory: &str, device: &str) -> String {
    format!("{}/status", device_base(territory, device))
}

pub fn ack_topic(territory: &str, device: &str) -> String {
    format!("{}/ack", device_base(territory, device))
}

/// What the hub subscribes to: every record and checkpoint of every device (`group`: a shared
/// subscription, `$share/{group}/...`, so several hubs split the load).
pub fn hub_filters(group: Option<&str>) -> Vec<String> {
    let share = |f: &str| match group {
        Some(g) => format!("$share/{g}/{f}"),
        None => f.to_owned(),
    };
    vec![
        share(&format!("{PREFIX}/+/+/agg/+")),
        share(&format!("{PREFIX}/+/+/checkpoint")),
    ]
}

/// The MQTT payload of one record: the entry exactly as signed (canonical JSON, carried as a
/// JSON string), its Ed25519 signature and its seq.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub seq: u64,
    pub entry: String,
    /// base64 of the 64-byte signature over `"iat-record-v1\n" || entry`.
    pub sig: String,
}

/// A record envelope, parsed and checked for shape (not for its signature: that needs the
/// device's key).
#[derive(Debug, Clone)]
pub struct RecordMsg {
    pub seq: u64,
    pub entry: Vec<u8>,
    pub signature: [u8; 64],
    pub view: RecordView,
}

/// Encodes a stored record for publishing. Only an entry that parses as a published aggregate
/// record is accepted: the publisher has no way to put anything else on the wire.
pub fn encode_record(seq: u64, entry: &[u8], signature: &[u8; 64]) -> Result<Vec<u8>, WireError> {
    let view = RecordView::parse(entry).map_err(|e| WireError::Record(e.to_string()))?;
    if view.seq != seq {
        return Err(WireError::SeqMismatch {
            envelope: seq,
            record: view.seq,
        });
    }
    let entry = std::str::from_utf8(entry).map_err(|e| WireError::Record(e.to_string()))?;
    let env = Envelope {
        seq,
        entry: entry.to_owned(),
        sig: B64.encode(signature),
    };
    serde_json::to_vec(&env).map_err(|e| WireError::Envelope(e.to_string()))
}

/// Parses a record payload: envelope shape, signature encoding, a canonical v1 aggregate
/// record whose seq, device, territory and model match the envelope and the topic.
pub fn decode_record(topic: &Topic, payload: &[u8]) -> Result<RecordMsg, WireError> {
    let env: Envelope =
        serde_json::from_slice(payload).map_err(|e| WireError::Envelope(e.to_string()))?;
    let signature: [u8; 64] = B64
        .decode(&env.sig)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| WireError::Envelope("`sig` is not base64 of 64 bytes".into()))?;
    let entry = env.entry.into_bytes();
    let view = RecordView::parse(&entry).map_err(|e| WireError::Record(e.to_string()))?;
    if view.seq != env.seq {
        return Err(WireError::SeqMismatch {
            envelope: env.seq,
            record: view.seq,
        });
    }
    let mismatch = |found: String, topic: String| WireError::TopicMismatch { found, topic };
    if view.device != topic.device || view.territory != topic.territory {
        return Err(mismatch(
            format!("device {}/{}", view.territory, view.device),
            format!("{}/{}", topic.territory, topic.device),
        ));
    }
    if let TopicKind::Agg { model } = &topic.kind
        && *model != view.model.id
    {
        return Err(mismatch(format!("model {}", view.model.id), model.clone()));
    }
    Ok(RecordMsg {
        seq: env.seq,
        entry,
        signature,
        view,
    })
}

/// The hub's acknowledgement: every record of the device's log below `count` is stored and
/// verified, and `root` is the Merkle root of those `count` records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub origin: String,
    pub count: u64,
    pub root: [u8; 32],
}

impl Ack {
    /// The note text (signed with the hub's key as a C2SP signed note).
    pub fn to_text(&self) -> String {
        format!(
            "{ACK_HEADER}\n{}\n{}\n{}\n",
            self.origin,
            self.count,
            B64.encode(self.root)
        )
    }

    pub fn sign(&self, hub: &SignerKey) -> Result<String, WireError> {
        hub.sign_note(&self.to_text())
            .map_err(|e| WireError::Ack(e.to_string()))
    }

    /// Verifies an ack note with the hub's key and parses it.
    pub fn open(hub: &VerifierKey, note: &[u8]) -> Result<Ack, WireError> {
        let note = std::str::from_utf8(note).map_err(|e| WireError::Ack(e.to_string()))?;
        let text = hub.open(note).map_err(|e| WireError::Ack(e.to_string()))?;
        Ack::parse_text(text)
    }

    /// Parses an ack note's text (the part before the signatures), without verifying.
    pub fn parse_text(text: &str) -> Result<Ack, WireError> {
        let bad = |what: &str| WireError::Ack(what.to_owned());
        let lines: Vec<&str> = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("missing final newline"))?
            .split('\n')
            .collect();
        let [header, origin, count, root] = lines.as_slice() else {
            return Err(bad("expected 4 lines"));
        };
        if *header != ACK_HEADER {
            return Err(bad("not an ack (first line)"));
        }
        let count = count
            .parse::<u64>()
            .ok()
            .filter(|_| count.len() == 1 || !count.starts_with('0'))
            .ok_or_else(|| bad("count is not a decimal number"))?;
        let root = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| bad("root is not base64 of 32 bytes"))?;
        Ok(Ack {
            origin: (*origin).to_owned(),
            count,
            root,
        })
    }
}

/// The text of a signed note (everything before the last blank line), unverified.
fn note_text(payload: &[u8]) -> Result<&str, String> {
    let s = std::str::from_utf8(payload).map_err(|e| e.to_string())?;
    audit::note::parse_note(s)
        .map(|n| n.text)
        .map_err(|e| e.to_string())
}

/// What a payload seen on the broker is (see [`check_payload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    Record,
    Checkpoint,
    Status,
    Ack,
}

/// The privacy check at the wire: is this (topic, payload) one of the four things the system
/// ever publishes? Records must be canonical aggregate records in their envelope, checkpoints
/// and acks well-formed signed notes, statuses `offline`, `online` or a typed report ([`status`]). Signatures are not checked
/// here (that needs keys); shape is, which is what proves no raw data travels.
pub fn check_payload(topic: &str, payload: &[u8]) -> Result<PayloadKind, WireError> {
    let t = Topic::parse(topic)?;
    match &t.kind {
        TopicKind::Agg { .. } => decode_record(&t, payload).map(|_| PayloadKind::Record),
        TopicKind::Checkpoint => {
            let text = note_text(payload).map_err(WireError::Checkpoint)?;
            let cp =
                audit::Checkpoint::parse(text).map_err(|e| WireError::Checkpoint(e.to_string()))?;
            if cp.origin != t.origin() || !cp.extensions.is_empty() {
                return Err(WireError::Checkpoint(format!(
                    "origin `{}` on the topic of {}",
                    cp.origin,
                    t.origin()
                )));
            }
            Ok(PayloadKind::Checkpoint)
        }
        TopicKind::Status => parse_status(payload).map(|_| PayloadKind::Status),
        TopicKind::Ack => {
            let text = note_text(payload).map_err(WireError::Ack)?;
            let ack = Ack::parse_text(text)?;
            if ack.origin != t.origin() {
                return Err(WireError::Ack("origin differs from the topic".into()));
            }
            Ok(PayloadKind::Ack)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_parse_and_reject() {
        let t = Topic::parse("iat/v1/fr-demo/demo-001/agg/silero-vad-16k").unwrap();
        assert_eq!(t.device, "demo-001");
        assert_eq!(
            t.kind,
            TopicKind::Agg {
                model: "silero-vad-16k".into()
            }
        );
        for bad in [
            "iat/v1/fr-demo/demo-001",
            "iat/v2/a/b/status",
            "iat/v1/a/b/agg",
            "iat/v1/a/b/agg/m/x",
            "iat/v1/+/b/status",
            "iat/v1/a//status",
            "iat/v1/a/b/raw",
        ] {
            assert!(Topic::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ack_signs_and_opens() {
        let hub = SignerKey::from_seed("iat-hub/test", &[7; 32]).unwrap();
        let ack = Ack {
            origin: "iat/t/d".into(),
            count: 42,
            root: [9; 32],
        };
        let note = ack.sign(&hub).unwrap();
        assert_eq!(Ack::open(&hub.verifier(), note.as_bytes()).unwrap(), ack);
        let other = SignerKey::from_seed("iat-hub/test", &[8; 32]).unwrap();
        assert!(Ack::open(&other.verifier(), note.as_bytes()).is_err());
        assert!(check_payload("iat/v1/t/d/ack", note.as_bytes()).is_ok());
        assert!(check_payload("iat/v1/t/e/ack", note.as_bytes()).is_err());
    }

    #[test]
    fn non_aggregate_payloads_fail_the_wire_check() {
        for (topic, payload) in [
            ("iat/v1/t/d/agg/m", &b"\x89PNG\r\n"[..]),
            ("iat/v1/t/d/agg/m", br#"{"seq":0,"entry":"{}","sig":""}"#),
            ("iat/v1/t/d/status", b"frame 12: 3 faces"),
            ("iat/v1/t/d/checkpoint", b"hello"),
            ("iat/v1/t/d/raw", b"x"),
            ("elsewhere", b"x"),
        ] {
            assert!(check_payload(topic, payload).is_err(), "{topic}");
        }
        assert_eq!(
            check_payload("iat/v1/t/d/status", b"offline"),
            Ok(PayloadKind::Status)
        );
    }
}
