//! Shared helpers: a fixed test key, deterministic entries, building and copying logs.

use std::fs;
use std::path::{Path, PathBuf};

use audit::frame::{FRAME_HEADER_LEN, decode_frame_header, segment_header_len};
use audit::merkle::{Hash, leaf_hash};
use audit::{Log, Options, SignerKey, VerifierKey};

pub const ORIGIN: &str = "iat.example/test-device";

pub fn key() -> SignerKey {
    SignerKey::from_seed(ORIGIN, &[42; 32]).unwrap()
}

pub fn vkey() -> VerifierKey {
    key().verifier()
}

/// A small aggregate-like JSON entry whose length varies with seq.
pub fn entry(seq: u64) -> Vec<u8> {
    format!(
        "{{\"seq\":{seq},\"count\":{},\"pad\":\"{}\"}}",
        seq * 7 % 13,
        "p".repeat((seq % 11) as usize)
    )
    .into_bytes()
}

/// Opens the log, waiting up to 2 s while its lock is held: a test that reopens a log it has
/// just closed can find the lock still held by a process another test (the SIGKILL one) is
/// forking at that moment, whose copy of the lock's descriptor lives until its `exec`.
pub fn open(dir: &Path, opts: Options) -> Log {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match Log::open(dir, ORIGIN, &key(), opts) {
            Err(audit::StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other.unwrap(),
        }
    }
}

pub fn small_segments(max: u64) -> Options {
    Options {
        segment_max_bytes: max,
        ..Options::default()
    }
}

/// Appends entries `log.size()..n`, checkpointing after each size in `checkpoints`.
pub fn fill(log: &mut Log, n: u64, checkpoints: &[u64]) {
    while log.size() < n {
        let seq = log.size();
        assert_eq!(log.append(&entry(seq)).unwrap(), seq);
        if checkpoints.contains(&log.size()) {
            log.checkpoint().unwrap();
        }
    }
}

pub fn leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|s| leaf_hash(&entry(s))).collect()
}

pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// Segment files, sorted.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

pub fn first_seq_of(path: &Path) -> u64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// Every regular file of the log directory, except the (empty) lock file.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut v = vec![dir.join("ack"), dir.join("checkpoints.log")];
    v.extend(segments(dir));
    v
}

/// (offset, length) of every frame in a framed file whose frames start at `start`.
pub fn frames(bytes: &[u8], start: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = start;
    while at + FRAME_HEADER_LEN <= bytes.len() {
        let h = decode_frame_header(bytes[at..at + FRAME_HEADER_LEN].try_into().unwrap()).unwrap();
        let len = h.frame_len() as usize;
        out.push((at, len));
        at += len;
    }
    out
}

/// Frames of a segment file.
pub fn record_frames(path: &Path) -> (Vec<u8>, Vec<(usize, usize)>) {
    let b = fs::read(path).unwrap();
    let start = segment_header_len(first_seq_of(path)) as usize;
    let f = frames(&b, start);
    (b, f)
}

/// All stored entries from the log's first seq.
pub fn stored_entries(log: &Log) -> Vec<(u64, Vec<u8>)> {
    log.read(log.first_seq())
        .unwrap()
        .map(|r| r.map(|r| (r.seq, r.entry)).unwrap())
        .collect()
}
