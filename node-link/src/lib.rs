//! The sensor node <-> agent link: typed messages, framed as COBS-delimited postcard with a
//! version byte, a frame counter and a CRC-32. It must never allocate nor panic on bytes from
//! the line.
//!
//! One frame on the wire is
//!
//! ```text
//! COBS( version:u8 | postcard(counter:u32, message:Message) | crc32(le, over what precedes) ) 0x00
//! ```
//!
//! Encoding and decoding never allocate and are bounded by [`MAX_PAYLOAD`] and
//! [`MAX_WIRE`]. The [`Decoder`] takes bytes as they come off a serial line, resynchronises
//! on the next `0x00` after garbage and counts what it dropped in [`Stats`].
//!
//! Tests: golden frames and property tests (`cargo test -p protocol`), a criterion bench of
//! decode throughput (`cargo bench -p protocol`), and a libFuzzer target for the decoder
//! (`cd protocol && cargo +nightly fuzz run decoder -- -max_total_time=300`).
#![no_std]
#![forbid(unsafe_code)]

mod cobs;
mod decoder;
mod frame;
mod message;

pub use crate::cobs::{cobs_decode_in_place, cobs_encode, cobs_max_encoded_len};
pub use crate::decoder::{Decoder, Stats};
pub use crate::frame::{DecodeError, EncodeError, Frame, decode_frame, encode_frame};
pub use crate::message::{
    Block, BlockKind, Environment, FaultCode, Hello, HelloAck, MAX_BANDS, MAX_BLOCK, Message,
    NodeFault, ResetCause, Sound, Status, capabilities,
};

/// The wire-format version this crate speaks. Bumped on any incompatible change.
pub const VERSION: u8 = 1;

/// Largest frame before COBS: version, counter, the largest message, CRC.
pub const MAX_PAYLOAD: usize = 512;

/// Largest frame on the wire: COBS overhead plus the `0x00` delimiter.
pub const MAX_WIRE: usize = cobs_max_encoded_len(MAX_PAYLOAD) + 1;
