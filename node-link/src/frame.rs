//! One frame: version byte, postcard body (counter, message), CRC-32, COBS, delimiter.

use crc::{CRC_32_ISO_HDLC, Crc};

use crate::cobs::{cobs_decode_in_place, cobs_encode};
use crate::message::Message;
use crate::{MAX_PAYLOAD, VERSION};

/// CRC-32 as in Ethernet and zlib (reflected, polynomial 0x04C11DB7).
const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// A decoded frame: its counter and message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Frame {
    /// Incremented by the sender for every frame; a gap means frames were lost.
    pub counter: u32,
    pub message: Message,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EncodeError {
    /// The output buffer cannot hold the frame; [`crate::MAX_WIRE`] always can.
    BufferTooSmall,
    /// The message does not fit in [`MAX_PAYLOAD`] bytes.
    TooLarge,
}

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DecodeError {
    /// More than [`crate::MAX_WIRE`] bytes without a delimiter.
    Oversize,
    /// Not valid COBS (a corrupted length byte).
    Cobs,
    /// Too short to hold a version, a body and a CRC.
    Truncated,
    /// The CRC does not match.
    Crc,
    /// Intact frame from a wire-format version this crate does not speak.
    Version(u8),
    /// The CRC matched but the body is not a valid message.
    Malformed,
}

/// Encodes `frame` into `out` (COBS and the trailing `0x00` included); returns the bytes
/// to send.
pub fn encode_frame<'a>(frame: &Frame, out: &'a mut [u8]) -> Result<&'a [u8], EncodeError> {
    let mut raw = [0u8; MAX_PAYLOAD];
    raw[0] = VERSION;
    let body_len = postcard::to_slice(&(frame.counter, &frame.message), &mut raw[1..])
        .map_err(|_| EncodeError::TooLarge)?
        .len();
    let crc_at = 1 + body_len;
    if crc_at + 4 > raw.len() {
        return Err(EncodeError::TooLarge);
    }
    let crc = CRC32.checksum(&raw[..crc_at]);
    raw[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    let n = cobs_encode(&raw[..crc_at + 4], out).ok_or(EncodeError::BufferTooSmall)?;
    *out.get_mut(n).ok_or(EncodeError::BufferTooSmall)? = 0;
    Ok(&out[..n + 1])
}

/// Decodes one COBS block (without its delimiter) in place.
pub fn decode_frame(block: &mut [u8]) -> Result<Frame, DecodeError> {
    let n = cobs_decode_in_place(block).ok_or(DecodeError::Cobs)?;
    // version + at least a one-byte counter and a one-byte message tag + CRC
    if n < 1 + 2 + 4 {
        return Err(DecodeError::Truncated);
    }
    let (covered, crc) = block[..n].split_at(n - 4);
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if CRC32.checksum(covered) != crc {
        return Err(DecodeError::Crc);
    }
    if covered[0] != VERSION {
        return Err(DecodeError::Version(covered[0]));
    }
    match postcard::take_from_bytes::<(u32, Message)>(&covered[1..]) {
        Ok(((counter, message), [])) => Ok(Frame { counter, message }),
        _ => Err(DecodeError::Malformed),
    }
}
