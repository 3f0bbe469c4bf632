//! Reading frames and segment headers from files, telling an unfinished write (torn tail)
//! apart from damage. Shared by the store (recovery, resending) and the verifier.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::frame::{
    Corruption, FRAME_HEADER_LEN, FRAME_TRAILER_LEN, FrameHeader, decode_frame_header,
    decode_segment_header, payload_ok, segment_header_len,
};
use crate::merkle::Frontier;

/// `segments/<first seq, 20 digits>.log`
pub fn segment_file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.log")
}

/// The first sequence number from a segment file name, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The segment files of `dir` (its `segments/` folder), sorted by first sequence number, and
/// the names of any other entries found there.
pub fn list_segments(segments_dir: &Path) -> io::Result<(Vec<u64>, Vec<PathBuf>)> {
    let mut seqs = Vec::new();
    let mut strays = Vec::new();
    for e in std::fs::read_dir(segments_dir)? {
        let e = e?;
        match e.file_name().to_str().and_then(parse_segment_file_name) {
            Some(s) => seqs.push(s),
            None => strays.push(e.path()),
        }
    }
    seqs.sort_unstable();
    strays.sort();
    Ok((seqs, strays))
}

/// One step through a framed file.
#[derive(Debug)]
pub enum Step {
    Frame {
        offset: u64,
        header: FrameHeader,
        payload: Vec<u8>,
    },
    /// Clean end of file.
    End,
    /// What an interrupted append leaves: a prefix of a frame, or zeros, up to the end of the
    /// file. Only acceptable at the end of the last file.
    Torn { offset: u64 },
    Corrupt {
        offset: u64,
        seq: Option<u64>,
        what: Corruption,
    },
}

/// Reads frames sequentially with a bounded buffer.
#[derive(Debug)]
pub struct FrameScanner {
    r: BufReader<File>,
    pos: u64,
    len: u64,
}

impl FrameScanner {
    /// Scans `file` from `start` to `len` (the length to trust, usually the file length).
    pub fn new(mut file: File, start: u64, len: u64) -> io::Result<Self> {
        file.seek(SeekFrom::Start(start))?;
        Ok(Self {
            r: BufReader::with_capacity(64 * 1024, file),
            pos: start,
            len,
        })
    }

    /// The next frame, which must carry `expected_seq` (any when `None`) and at most `max_len`
    /// payload bytes.
    pub fn next(&mut self, expected_seq: Option<u64>, max_len: u32) -> io::Result<Step> {
        let offset = self.pos;
        let rem = self.len - offset;
        if rem == 0 {
            return Ok(Step::End);
        }
        if rem < FRAME_HEADER_LEN as u64 {
            return Ok(Step::Torn { offset });
        }
        let mut hb = [0u8; FRAME_HEADER_LEN];
        self.r.read_exact(&mut hb)?;
        let Some(header) = decode_frame_header(&hb) else {
            let zeros = hb.iter().all(|&b| b == 0) && self.rest_is_zero(rem - hb.len() as u64)?;
            return Ok(if zeros {
                Step::Torn { offset }
            } else {
                Step::Corrupt {
                    offset,
                    seq: None,
                    what: Corruption::BadFrameHeader,
                }
            });
        };
        if header.len > max_len {
            return Ok(Step::Corrupt {
                offset,
                seq: Some(header.seq),
                what: Corruption::BadLength { len: header.len },
            });
        }
        if let Some(expected) = expected_seq
            && header.seq != expected
        {
            return Ok(Step::Corrupt {
                offset,
                seq: Some(header.seq),
                what: Corruption::SeqMismatch {
                    expected,
                    found: header.seq,
                },
            });
        }
        if header.frame_len() > rem {
            return Ok(Step::Torn { offset });
        }
        let mut payload = vec![0u8; header.len as usize];
        self.r.read_exact(&mut payload)?;
        let mut trailer = [0u8; FRAME_TRAILER_LEN];
        self.r.read_exact(&mut trailer)?;
        if !payload_ok(&payload, &trailer) {
            return Ok(Step::Corrupt {
                offset,
                seq: Some(header.seq),
                what: Corruption::BadPayload,
            });
        }
        self.pos += header.frame_len();
        Ok(Step::Frame {
            offset,
            header,
            payload,
        })
    }

    fn rest_is_zero(&mut self, mut n: u64) -> io::Result<bool> {
        let mut buf = [0u8; 4096];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            self.r.read_exact(&mut buf[..k])?;
            if buf[..k].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            n -= k as u64;
        }
        Ok(true)
    }
}

/// A segment header as found on disk.
pub enum HeaderStep {
    Ok(Frontier),
    /// Shorter than a header, or all zeros: a segment whose creation was interrupted (it
    /// cannot hold records, which are written only after its header is durable).
    Torn,
    Corrupt(Corruption),
}

/// Reads the header of segment `first_seq` from the start of `file` of length `len`.
pub fn read_segment_header(file: &mut File, first_seq: u64, len: u64) -> io::Result<HeaderStep> {
    let hlen = segment_header_len(first_seq);
    file.seek(SeekFrom::Start(0))?;
    if len < hlen {
        return Ok(HeaderStep::Torn);
    }
    let mut b = vec![0u8; hlen as usize];
    file.read_exact(&mut b)?;
    match decode_segment_header(&b, first_seq) {
        Ok(f) => Ok(HeaderStep::Ok(f)),
        Err(what) => {
            if len == hlen && b.iter().all(|&x| x == 0) {
                Ok(HeaderStep::Torn)
            } else {
                Ok(HeaderStep::Corrupt(what))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names() {
        assert_eq!(segment_file_name(42), "00000000000000000042.log");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.log"),
            Some(42)
        );
        for bad in [
            "42.log",
            "0000000000000000004x.log",
            "00000000000000000042.tmp",
            "",
        ] {
            assert_eq!(parse_segment_file_name(bad), None, "{bad}");
        }
        // 20 digits that do not fit in u64.
        assert_eq!(parse_segment_file_name("99999999999999999999.log"), None);
    }
}
