//! On-disk encodings (pure, no IO): record and checkpoint frames, segment headers, ack slots.
//!
//! Every multi-byte integer is little-endian; every checksum is CRC-32C (Castagnoli).
//! See docs/audit-format.md for the normative description.

use std::fmt;

use crc::{CRC_32_ISCSI, Crc};
use thiserror::Error;

use crate::merkle::Frontier;

/// CRC-32C, the checksum of iSCSI, ext4 and SCTP.
const CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

pub fn crc32c(parts: &[&[u8]]) -> u32 {
    let mut d = CRC32C.digest();
    for p in parts {
        d.update(p);
    }
    d.finalize()
}

/// First bytes of a segment file.
pub const SEGMENT_MAGIC: &[u8; 8] = b"iatlog1\n";
/// First bytes of `checkpoints.log`.
pub const CHECKPOINTS_MAGIC: &[u8; 8] = b"iatckp1\n";
/// First bytes of the `ack` file.
pub const ACK_MAGIC: &[u8; 8] = b"iatack1\n";

/// Frame header: payload length (u32), sequence number (u64), CRC-32C of those 12 bytes.
pub const FRAME_HEADER_LEN: usize = 16;
/// Frame trailer: CRC-32C of the payload.
pub const FRAME_TRAILER_LEN: usize = 4;
/// An Ed25519 signature, at the start of every record payload.
pub const SIGNATURE_LEN: usize = 64;
/// Bytes a record adds to its entry on disk: header, signature, trailer.
pub const RECORD_OVERHEAD: usize = FRAME_HEADER_LEN + SIGNATURE_LEN + FRAME_TRAILER_LEN;
/// The largest entry the format allows (a reader refuses larger length fields outright).
pub const MAX_ENTRY_LEN: u32 = 1 << 20;
/// The largest frame payload: a signature and the largest entry (checkpoint notes are smaller).
pub const MAX_PAYLOAD_LEN: u32 = MAX_ENTRY_LEN + SIGNATURE_LEN as u32;
/// Each ack slot: acknowledged count (u64), generation (u64), CRC-32C of those 16 bytes.
pub const ACK_SLOT_LEN: usize = 20;
/// The ack file: magic and two slots.
pub const ACK_FILE_LEN: usize = 8 + 2 * ACK_SLOT_LEN;

/// What is wrong with some stored bytes.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Corruption {
    #[error("bad magic: not {0}")]
    BadMagic(&'static str),
    #[error("bad segment header checksum")]
    BadSegmentHeader,
    #[error("segment header holds the frontier at {found}, its name says {expected}")]
    SegmentNameMismatch { expected: u64, found: u64 },
    #[error("bad frame header checksum")]
    BadFrameHeader,
    #[error("bad payload checksum")]
    BadPayload,
    #[error("frame payload of {len} bytes is out of bounds")]
    BadLength { len: u32 },
    #[error("sequence number {found} where {expected} was expected")]
    SeqMismatch { expected: u64, found: u64 },
    #[error("frame is cut short ({missing} bytes missing)")]
    CutShort { missing: u64 },
    #[error("bad ack slot {0}")]
    BadAckSlot(usize),
    #[error("checkpoint frame does not hold a checkpoint note: {0}")]
    BadNote(String),
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub seq: u64,
}

impl FrameHeader {
    /// The whole frame length on disk.
    pub fn frame_len(&self) -> u64 {
        (FRAME_HEADER_LEN + FRAME_TRAILER_LEN) as u64 + u64::from(self.len)
    }
}

/// `len u32 | seq u64 | crc(len, seq) u32 | payload parts | crc(payload) u32`.
pub fn encode_frame(seq: u64, payload: &[&[u8]]) -> Vec<u8> {
    let len: usize = payload.iter().map(|p| p.len()).sum();
    let len32 = u32::try_from(len).expect("payload length is checked by the caller");
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + len + FRAME_TRAILER_LEN);
    out.extend_from_slice(&len32.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    let hcrc = crc32c(&[&out[..12]]);
    out.extend_from_slice(&hcrc.to_le_bytes());
    for p in payload {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(&crc32c(payload).to_le_bytes());
    out
}

/// Decodes a frame header; `None` when its checksum does not match.
pub fn decode_frame_header(b: &[u8; FRAME_HEADER_LEN]) -> Option<FrameHeader> {
    let crc = u32::from_le_bytes(b[12..16].try_into().expect("4 bytes"));
    (crc32c(&[&b[..12]]) == crc).then(|| FrameHeader {
        len: u32::from_le_bytes(b[..4].try_into().expect("4 bytes")),
        seq: u64::from_le_bytes(b[4..12].try_into().expect("8 bytes")),
    })
}

/// Checks a payload against its trailer.
pub fn payload_ok(payload: &[u8], trailer: &[u8; FRAME_TRAILER_LEN]) -> bool {
    crc32c(&[payload]) == u32::from_le_bytes(*trailer)
}

/// The length of the header of the segment whose first record is `first_seq`.
pub fn segment_header_len(first_seq: u64) -> u64 {
    (SEGMENT_MAGIC.len() + Frontier::encoded_len_for(first_seq) + 4) as u64
}

/// `magic | frontier bytes | crc(magic, frontier)`: the tree state before the segment's
/// first record, so a reader can start at any segment.
pub fn encode_segment_header(frontier: &Frontier) -> Vec<u8> {
    let mut out = SEGMENT_MAGIC.to_vec();
    out.extend_from_slice(&frontier.to_bytes());
    let crc = crc32c(&[&out]);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a segment header of exactly `segment_header_len(first_seq)` bytes.
pub fn decode_segment_header(b: &[u8], first_seq: u64) -> Result<Frontier, Corruption> {
    if b.len() < 12 || &b[..8] != SEGMENT_MAGIC {
        return Err(Corruption::BadMagic("a segment file"));
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32c(&[body]) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(Corruption::BadSegmentHeader);
    }
    let f = Frontier::from_bytes(&body[8..]).map_err(|_| Corruption::BadSegmentHeader)?;
    if f.size() != first_seq {
        return Err(Corruption::SegmentNameMismatch {
            expected: first_seq,
            found: f.size(),
        });
    }
    Ok(f)
}

/// One ack slot: every record with a sequence number below `acked` is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckSlot {
    pub acked: u64,
    pub generation: u64,
}

pub fn encode_ack_slot(s: AckSlot) -> [u8; ACK_SLOT_LEN] {
    let mut out = [0u8; ACK_SLOT_LEN];
    out[..8].copy_from_slice(&s.acked.to_le_bytes());
    out[8..16].copy_from_slice(&s.generation.to_le_bytes());
    let crc = crc32c(&[&out[..16]]);
    out[16..].copy_from_slice(&crc.to_le_bytes());
    out
}

pub fn decode_ack_slot(b: &[u8; ACK_SLOT_LEN]) -> Option<AckSlot> {
    let crc = u32::from_le_bytes(b[16..].try_into().expect("4 bytes"));
    (crc32c(&[&b[..16]]) == crc).then(|| AckSlot {
        acked: u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
        generation: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
    })
}

/// The ack file as created: slot 0 holds generation 1, slot 1 generation 0, both with
/// nothing acknowledged.
pub fn initial_ack_file() -> Vec<u8> {
    let mut out = ACK_MAGIC.to_vec();
    out.extend_from_slice(&encode_ack_slot(AckSlot {
        acked: 0,
        generation: 1,
    }));
    out.extend_from_slice(&encode_ack_slot(AckSlot {
        acked: 0,
        generation: 0,
    }));
    out
}

/// Decodes the ack file: the valid slot with the highest generation and its index. Both slots
/// must be valid (a writer only ever rewrites the older one, so a torn write damages at most
/// one; such damage is still reported).
pub fn decode_ack_file(b: &[u8]) -> Result<(AckSlot, usize), (u64, Corruption)> {
    if b.len() != ACK_FILE_LEN || &b[..8] != ACK_MAGIC {
        return Err((0, Corruption::BadMagic("an ack file")));
    }
    let slot = |i: usize| {
        let at = 8 + i * ACK_SLOT_LEN;
        decode_ack_slot(b[at..at + ACK_SLOT_LEN].try_into().expect("slot length"))
            .ok_or((at as u64, Corruption::BadAckSlot(i)))
    };
    let (a, b) = (slot(0)?, slot(1)?);
    Ok(if a.generation >= b.generation {
        (a, 0)
    } else {
        (b, 1)
    })
}

/// `" (seq N)"` or nothing, for messages.
pub struct SeqNote(pub Option<u64>);

impl fmt::Display for SeqNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => write!(f, " (seq {s})"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::leaf_hash;

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C over "123456789".
        assert_eq!(crc32c(&[b"123456789"]), 0xe306_9283);
        assert_eq!(crc32c(&[b"1234", b"56789"]), 0xe306_9283);
    }

    #[test]
    fn frame_round_trip_and_every_header_bit_flip_is_caught() {
        let f = encode_frame(7, &[b"abc", b"de"]);
        assert_eq!(f.len(), FRAME_HEADER_LEN + 5 + FRAME_TRAILER_LEN);
        let h = decode_frame_header(f[..16].try_into().unwrap()).unwrap();
        assert_eq!(h, FrameHeader { len: 5, seq: 7 });
        assert!(payload_ok(&f[16..21], f[21..].try_into().unwrap()));
        for bit in 0..16 * 8 {
            let mut b = f.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_frame_header(b[..16].try_into().unwrap()).is_none(),
                "bit {bit}"
            );
        }
        // All zeros is not a valid header (a zero-filled tail is recognised as such).
        assert!(decode_frame_header(&[0; 16]).is_none());
    }

    #[test]
    fn segment_header_round_trip_and_checks() {
        let mut fr = Frontier::new();
        for i in 0..5u8 {
            fr.append(leaf_hash(&[i]));
        }
        let h = encode_segment_header(&fr);
        assert_eq!(h.len() as u64, segment_header_len(5));
        assert_eq!(decode_segment_header(&h, 5).unwrap(), fr);
        assert_eq!(
            decode_segment_header(&h, 6),
            Err(Corruption::SegmentNameMismatch {
                expected: 6,
                found: 5
            })
        );
        for i in 0..h.len() {
            let mut b = h.clone();
            b[i] ^= 0x10;
            assert!(decode_segment_header(&b, 5).is_err(), "byte {i}");
        }
    }

    #[test]
    fn ack_file_picks_newest_valid_slot() {
        let mut f = initial_ack_file();
        assert_eq!(
            decode_ack_file(&f).unwrap(),
            (
                AckSlot {
                    acked: 0,
                    generation: 1
                },
                0
            )
        );
        f[28..48].copy_from_slice(&encode_ack_slot(AckSlot {
            acked: 9,
            generation: 2,
        }));
        assert_eq!(
            decode_ack_file(&f).unwrap(),
            (
                AckSlot {
                    acked: 9,
                    generation: 2
                },
                1
            )
        );
        f[30] ^= 1;
        assert_eq!(decode_ack_file(&f), Err((28, Corruption::BadAckSlot(1))));
    }
}
