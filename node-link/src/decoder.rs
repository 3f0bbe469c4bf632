//! Streaming decoder: bytes in, frames out, with bounded memory and drop counters.

use crate::MAX_WIRE;
use crate::frame::{DecodeError, Frame, decode_frame};

/// What a [`Decoder`] has seen. Every byte it received is accounted for: it belongs to a
/// good frame, to a dropped one, or is a bare delimiter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Stats {
    /// Frames decoded and handed out.
    pub frames: u32,
    /// Frames dropped, for any reason below.
    pub dropped: u32,
    /// Bytes that belonged to dropped frames (delimiters not counted).
    pub dropped_bytes: u32,
    pub oversize: u32,
    pub cobs: u32,
    pub truncated: u32,
    pub crc: u32,
    pub version: u32,
    pub malformed: u32,
    /// Frames the sender numbered but that never arrived intact (counter gaps).
    pub missed: u32,
}

/// Accumulates bytes up to a `0x00` delimiter and decodes what came before it.
///
/// A frame longer than [`MAX_WIRE`] is dropped as a whole: the decoder skips to the next
/// delimiter, so one corrupted delimiter costs at most the two frames it joined.
pub struct Decoder {
    buf: [u8; MAX_WIRE],
    len: usize,
    /// Bytes of the current frame, including those not stored after an overflow.
    seen: usize,
    last_counter: Option<u32>,
    stats: Stats,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub const fn new() -> Self {
        Self {
            buf: [0; MAX_WIRE],
            len: 0,
            seen: 0,
            last_counter: None,
            stats: Stats {
                frames: 0,
                dropped: 0,
                dropped_bytes: 0,
                oversize: 0,
                cobs: 0,
                truncated: 0,
                crc: 0,
                version: 0,
                malformed: 0,
                missed: 0,
            },
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Feeds one byte; returns a result when it ended a non-empty frame.
    pub fn push(&mut self, byte: u8) -> Option<Result<Frame, DecodeError>> {
        if byte != 0 {
            if self.len < self.buf.len() {
                self.buf[self.len] = byte;
                self.len += 1;
            }
            self.seen = self.seen.saturating_add(1);
            return None;
        }
        let seen = core::mem::take(&mut self.seen);
        let len = core::mem::take(&mut self.len);
        if seen == 0 {
            // Bare delimiters are how a sender flushes a half-sent frame: not an error.
            return None;
        }
        let result = if seen > len {
            Err(DecodeError::Oversize)
        } else {
            decode_frame(&mut self.buf[..len])
        };
        self.account(&result, seen);
        Some(result)
    }

    /// Feeds a chunk and hands every decoded frame or drop to `each`.
    pub fn feed(&mut self, bytes: &[u8], mut each: impl FnMut(Result<Frame, DecodeError>)) {
        for &b in bytes {
            if let Some(r) = self.push(b) {
                each(r);
            }
        }
    }

    fn account(&mut self, result: &Result<Frame, DecodeError>, seen: usize) {
        let s = &mut self.stats;
        match result {
            Ok(frame) => {
                s.frames = s.frames.wrapping_add(1);
                if let Some(last) = self.last_counter {
                    // A counter that went backwards is a node reboot, not a loss.
                    let gap = frame.counter.wrapping_sub(last).wrapping_sub(1);
                    if frame.counter > last {
                        s.missed = s.missed.saturating_add(gap);
                    }
                }
                self.last_counter = Some(frame.counter);
            }
            Err(e) => {
                s.dropped = s.dropped.wrapping_add(1);
                s.dropped_bytes = s.dropped_bytes.saturating_add(seen as u32);
                let counter = match e {
                    DecodeError::Oversize => &mut s.oversize,
                    DecodeError::Cobs => &mut s.cobs,
                    DecodeError::Truncated => &mut s.truncated,
                    DecodeError::Crc => &mut s.crc,
                    DecodeError::Version(_) => &mut s.version,
                    DecodeError::Malformed => &mut s.malformed,
                };
                *counter = counter.wrapping_add(1);
            }
        }
    }
}
