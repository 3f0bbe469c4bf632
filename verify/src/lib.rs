//! Verifying what a device published, the same way for every reader: `edge-agent audit
//! verify|show` on the device's log, the hub's register export and `hub verify` on a citizen's
//! download. Signatures and Merkle roots come from crate `audit`; this crate adds what a
//! signature cannot say: that each record names its own place in the log (`seq`), one device
//! throughout, and the device whose origin the checkpoints name. Pure: it takes bytes and
//! texts, never opens a file or a socket.

pub mod export;
pub mod pack;

use aggregate::RecordView;

pub use export::{Extends, Failure, ModelSpan, Previous, Problem, Verified, export, export_since};
pub use hub_link::origin;

/// What is wrong with a record's contents, named by its position in the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("record {seq}: {message}")]
    Unreadable { seq: u64, message: String },
    #[error("record {seq}: its body says seq {found}")]
    Seq { seq: u64, found: u64 },
    #[error("record {seq}: published as {found}, the log's earlier records as {first}")]
    Device {
        seq: u64,
        found: String,
        first: String,
    },
    #[error("record {seq}: it breaks its own privacy rules: {message}")]
    Rule { seq: u64, message: String },
    #[error("the records' device {device} does not match the log's origin {origin}")]
    Origin { device: String, origin: String },
}

/// The contents of one device's records, read in log order from seq 0: each must parse as a
/// canonical record, carry its own position as `seq`, name the same device as the first, and
/// publish nothing its own privacy block forbids (`RecordView::check_rules`: counts below `k`,
/// inconsistent suppression, shares that do not match their counts).
#[derive(Debug, Default)]
pub struct Contents {
    device: Option<(String, String)>,
}

impl Contents {
    pub fn new() -> Contents {
        Contents::default()
    }

    /// Checks the record at position `seq` of the log and returns it parsed.
    pub fn check(&mut self, seq: u64, entry: &[u8]) -> Result<RecordView, ContentError> {
        let view = RecordView::parse(entry).map_err(|e| ContentError::Unreadable {
            seq,
            message: e.to_string(),
        })?;
        if view.seq != seq {
            return Err(ContentError::Seq {
                seq,
                found: view.seq,
            });
        }
        view.check_rules()
            .map_err(|message| ContentError::Rule { seq, message })?;
        let id = (view.territory.clone(), view.device.clone());
        match &self.device {
            Some(first) if *first != id => {
                return Err(ContentError::Device {
                    seq,
                    found: format!("{}/{}", id.0, id.1),
                    first: format!("{}/{}", first.0, first.1),
                });
            }
            Some(_) => {}
            None => self.device = Some(id),
        }
        Ok(view)
    }

    /// The `(territory, device)` the records named, once one was read.
    pub fn device(&self) -> Option<(&str, &str)> {
        self.device.as_ref().map(|(t, d)| (t.as_str(), d.as_str()))
    }

    /// Checks that the records' device is the one whose log `origin` names (nothing to check
    /// before a record was read).
    pub fn check_origin(&self, origin: &str) -> Result<(), ContentError> {
        match self.device() {
            Some((t, d)) if hub_link::origin(t, d) != origin => Err(ContentError::Origin {
                device: format!("{t}/{d}"),
                origin: origin.to_owned(),
            }),
            _ => Ok(()),
        }
    }
}

/// Lower-case hexadecimal, as the formats print hashes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of hexadecimal text (either case); `None` if it is not.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// A 32-byte hash written as 64 hex digits.
pub fn unhex_hash(s: &str) -> Option<audit::Hash> {
    unhex(s)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_that_does_not_parse_is_named_by_its_position() {
        let mut c = Contents::new();
        let e = c.check(3, b"{not json").unwrap_err();
        assert!(matches!(e, ContentError::Unreadable { seq: 3, .. }), "{e}");
        assert!(e.to_string().starts_with("record 3: "), "{e}");
    }

    #[test]
    fn no_origin_to_check_before_a_record() {
        assert_eq!(Contents::new().check_origin("iat/t/d"), Ok(()));
    }
}
