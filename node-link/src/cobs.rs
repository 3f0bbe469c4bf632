//! Consistent Overhead Byte Stuffing: removes every `0x00` from a frame so that `0x00`
//! can delimit frames and a receiver can resynchronise after garbage.

/// Upper bound of the encoded length of `len` input bytes (delimiter not included).
pub const fn cobs_max_encoded_len(len: usize) -> usize {
    len + len / 254 + 1
}

/// Encodes `src` into `dst` without a trailing delimiter; `None` if `dst` is too small.
pub fn cobs_encode(src: &[u8], dst: &mut [u8]) -> Option<usize> {
    // `code_at` is where the current block's length byte goes, `code` its running value.
    let mut code_at = 0;
    let mut out = 1;
    let mut code: u8 = 1;
    for &byte in src {
        if byte == 0 {
            *dst.get_mut(code_at)? = code;
            code_at = out;
            out += 1;
            code = 1;
        } else {
            *dst.get_mut(out)? = byte;
            out += 1;
            code += 1;
            if code == 0xFF {
                *dst.get_mut(code_at)? = code;
                code_at = out;
                out += 1;
                code = 1;
            }
        }
    }
    *dst.get_mut(code_at)? = code;
    Some(out)
}

/// Decodes one COBS block (no delimiter) in place; returns the decoded length, or `None`
/// if the block is malformed (a zero byte, or a length byte pointing past the end).
pub fn cobs_decode_in_place(buf: &mut [u8]) -> Option<usize> {
    let mut read = 0;
    let mut write = 0;
    while read < buf.len() {
        let code = buf[read] as usize;
        if code == 0 || read + code > buf.len() {
            return None;
        }
        read += 1;
        for _ in 1..code {
            let byte = buf[read];
            if byte == 0 {
                return None;
            }
            buf[write] = byte;
            write += 1;
            read += 1;
        }
        if code != 0xFF && read < buf.len() {
            buf[write] = 0;
            write += 1;
        }
    }
    Some(write)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (decoded, encoded) pairs from the COBS paper's examples and the block-length edges.
    const GOLDEN: &[(&[u8], &[u8])] = &[
        (&[], &[0x01]),
        (&[0x00], &[0x01, 0x01]),
        (&[0x00, 0x00], &[0x01, 0x01, 0x01]),
        (&[0x11, 0x22, 0x00, 0x33], &[0x03, 0x11, 0x22, 0x02, 0x33]),
        (&[0x11, 0x22, 0x33, 0x44], &[0x05, 0x11, 0x22, 0x33, 0x44]),
        (&[0x11, 0x00, 0x00, 0x00], &[0x02, 0x11, 0x01, 0x01, 0x01]),
    ];

    #[test]
    fn golden_vectors() {
        for (plain, wire) in GOLDEN {
            let mut out = [0u8; 16];
            let n = cobs_encode(plain, &mut out).unwrap();
            assert_eq!(&out[..n], *wire, "encode {plain:02x?}");
            let mut buf = [0u8; 16];
            buf[..wire.len()].copy_from_slice(wire);
            let m = cobs_decode_in_place(&mut buf[..wire.len()]).unwrap();
            assert_eq!(&buf[..m], *plain, "decode {wire:02x?}");
        }
    }

    #[test]
    fn long_runs_cross_the_254_byte_block() {
        for len in [253usize, 254, 255, 508, 509, 600] {
            let plain: [u8; 600] = core::array::from_fn(|i| (i % 255 + 1) as u8);
            let plain = &plain[..len];
            let mut wire = [0u8; 700];
            let n = cobs_encode(plain, &mut wire).unwrap();
            assert!(n <= cobs_max_encoded_len(len), "len {len}: {n}");
            assert!(!wire[..n].contains(&0));
            let m = cobs_decode_in_place(&mut wire[..n]).unwrap();
            assert_eq!(&wire[..m], plain, "len {len}");
        }
    }

    #[test]
    fn malformed_blocks_are_rejected() {
        let bad: &[&[u8]] = &[&[0x00], &[0x05, 0x11], &[0x03, 0x11, 0x00]];
        for wire in bad {
            let mut buf = [0u8; 8];
            buf[..wire.len()].copy_from_slice(wire);
            assert_eq!(
                cobs_decode_in_place(&mut buf[..wire.len()]),
                None,
                "{wire:02x?}"
            );
        }
    }

    #[test]
    fn small_output_buffer_is_an_error_not_a_panic() {
        let mut out = [0u8; 3];
        assert_eq!(cobs_encode(&[1, 2, 3, 4], &mut out), None);
    }
}
