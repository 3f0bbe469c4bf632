//! Independent verification of a log directory: recomputes the tree from the stored records,
//! checks every checksum and signature, every checkpoint against the recomputed roots, and
//! reports the first problem with its file, byte offset and seq.
//!
//! It opens nothing for writing and needs only the device's verifier key. Memory is bounded:
//! records and checkpoints are streamed.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::entry::verify_entry;
use crate::frame::{
    CHECKPOINTS_MAGIC, Corruption, MAX_PAYLOAD_LEN, SIGNATURE_LEN, SeqNote, decode_ack_file,
    segment_header_len,
};
use crate::merkle::{Frontier, Hash, leaf_hash};
use crate::note::{Checkpoint, NoteError, VerifierKey, parse_note};
use crate::segment::{
    FrameScanner, HeaderStep, Step, list_segments, read_segment_header, segment_file_name,
};
use crate::store::{ACK_FILE, CHECKPOINTS_FILE, SEGMENTS_DIR};

/// What is wrong, for a [`Problem`].
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    #[error("{0}")]
    Corrupt(Corruption),
    #[error("file is missing")]
    MissingFile,
    #[error("unexpected file in the segments folder")]
    UnexpectedFile,
    #[error("torn frame at the end (an interrupted append; opening the log cuts it)")]
    TornTail,
    #[error("torn segment header (an interrupted segment creation; opening the log removes it)")]
    TornSegmentHeader,
    #[error("record payload is shorter than a signature")]
    ShortRecord,
    #[error("record signature does not verify")]
    BadRecordSignature,
    #[error("gap: {} missing before this segment", crate::seqs(*expected, *found))]
    Gap { expected: u64, found: u64 },
    #[error("segments overlap or are out of order: starts at seq {found}, expected {expected}")]
    Overlap { expected: u64, found: u64 },
    #[error("segment header frontier differs from the tree of the records before it")]
    FrontierMismatch,
    #[error("{} missing: not acknowledged, yet absent", crate::seqs(*acked, *first))]
    MissingUnacked { acked: u64, first: u64 },
    #[error("checkpoint does not verify: {0}")]
    BadCheckpoint(NoteError),
    #[error("checkpoint origin {found:?} differs from the first checkpoint's {expected:?}")]
    OriginChanged { expected: String, found: String },
    #[error("checkpoint size {size} is below the previous checkpoint's {previous}")]
    CheckpointRollback { size: u64, previous: u64 },
    #[error("two checkpoints at size {size} with different roots")]
    CheckpointFork { size: u64 },
    #[error("checkpoint root at size {size} differs from the root of the stored records")]
    CheckpointRootMismatch { size: u64 },
    #[error("log truncated: a checkpoint signed {size} records, the log holds {records}")]
    TruncatedBelowCheckpoint { size: u64, records: u64 },
    #[error("ack says {acked} records were acknowledged, the log holds {records}")]
    AckBeyondLog { acked: u64, records: u64 },
}

/// The first problem found: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Relative to the log directory, e.g. `segments/00000000000000000042.log`.
    pub file: PathBuf,
    pub offset: Option<u64>,
    pub seq: Option<u64>,
    pub kind: ProblemKind,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(o) = self.offset {
            write!(f, " byte {o}")?;
        }
        write!(f, "{}: {}", SeqNote(self.seq), self.kind)
    }
}

/// What `verify_dir` checked, and the first problem if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The first stored seq (records below it were pruned after acknowledgement).
    pub first_seq: u64,
    /// The tree size after the last stored record.
    pub size: u64,
    /// Records checked (checksums, signature, position in the tree).
    pub records: u64,
    pub segments: u64,
    /// Checkpoints checked (signature, order; root too unless below `first_seq`).
    pub checkpoints: u64,
    /// Checkpoints below `first_seq`, whose roots cannot be recomputed here.
    pub checkpoints_below_base: u64,
    /// Bytes read, all files together.
    pub bytes: u64,
    pub acked: u64,
    /// The root over the stored records (and the pruned base).
    pub root: Hash,
    pub origin: Option<String>,
    /// Tree size of the latest checkpoint.
    pub latest_checkpoint: Option<u64>,
    pub problem: Option<Problem>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.problem.is_none()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            Some(p) => write!(f, "FAILED: {p}; ")?,
            None => write!(f, "ok: ")?,
        }
        write!(
            f,
            "{} records ({}) in {} segments, {} checkpoints, {} bytes",
            self.records,
            crate::seqs(self.first_seq, self.size),
            self.segments,
            self.checkpoints,
            self.bytes
        )
    }
}

/// The directory could not be read at all (as opposed to a [`Problem`] in what it holds).
#[derive(Debug, Error)]
#[error("{}: {source}", path.display())]
pub struct VerifyError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// Verifies the log in `dir` against the device's verifier key.
pub fn verify_dir(dir: &Path, key: &VerifierKey) -> Result<Report, VerifyError> {
    verify_dir_with(dir, key, &mut |_, _| {})
}

/// [`verify_dir`], handing each record's entry to `on_entry` (with its seq) once its signature
/// is verified, in log order: for tools that also check or show the records' contents.
pub fn verify_dir_with(
    dir: &Path,
    key: &VerifierKey,
    on_entry: &mut dyn FnMut(u64, &[u8]),
) -> Result<Report, VerifyError> {
    let mut v = Verifier {
        dir,
        key,
        on_entry,
        report: Report {
            first_seq: 0,
            size: 0,
            records: 0,
            segments: 0,
            checkpoints: 0,
            checkpoints_below_base: 0,
            bytes: 0,
            acked: 0,
            root: Frontier::new().root(),
            origin: None,
            latest_checkpoint: None,
            problem: None,
        },
    };
    match v.run() {
        Ok(()) => {}
        Err(Stop::Problem(p)) => v.report.problem = Some(p),
        Err(Stop::Io(e)) => return Err(e),
    }
    Ok(v.report)
}

enum Stop {
    Problem(Problem),
    Io(VerifyError),
}

struct Verifier<'a> {
    dir: &'a Path,
    key: &'a VerifierKey,
    on_entry: &'a mut dyn FnMut(u64, &[u8]),
    report: Report,
}

fn problem(file: &Path, offset: Option<u64>, seq: Option<u64>, kind: ProblemKind) -> Stop {
    Stop::Problem(Problem {
        file: file.to_owned(),
        offset,
        seq,
        kind,
    })
}

impl Verifier<'_> {
    fn io(&self, rel: &Path) -> impl FnOnce(io::Error) -> Stop + '_ {
        let path = self.dir.join(rel);
        move |source| Stop::Io(VerifyError { path, source })
    }

    /// Opens `rel` and counts its bytes, or reports it missing.
    fn open(&mut self, rel: &Path) -> Result<(File, u64), Stop> {
        let (f, len) = self.open_uncounted(rel)?;
        self.report.bytes += len;
        Ok((f, len))
    }

    fn open_uncounted(&self, rel: &Path) -> Result<(File, u64), Stop> {
        match File::open(self.dir.join(rel)) {
            Ok(f) => {
                let len = f.metadata().map_err(self.io(rel))?.len();
                Ok((f, len))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(problem(rel, None, None, ProblemKind::MissingFile))
            }
            Err(e) => Err(self.io(rel)(e)),
        }
    }

    fn run(&mut self) -> Result<(), Stop> {
        self.check_ack()?;
        self.check_checkpoints()?;
        self.check_segments()
    }

    fn check_ack(&mut self) -> Result<(), Stop> {
        let rel = Path::new(ACK_FILE);
        let (file, len) = self.open(rel)?;
        let mut b = vec![0u8; len.min(1024) as usize];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut b, 0).map_err(self.io(rel))?;
        let (slot, _) = decode_ack_file(&b)
            .map_err(|(o, what)| problem(rel, Some(o), None, ProblemKind::Corrupt(what)))?;
        self.report.acked = slot.acked;
        Ok(())
    }

    /// Pass 1 over `checkpoints.log`: framing, signatures, one origin, sizes never decrease
    /// and equal sizes have equal roots.
    fn check_checkpoints(&mut self) -> Result<(), Stop> {
        let rel = Path::new(CHECKPOINTS_FILE);
        let mut cur = CheckpointCursor::open(self, rel, true)?;
        let mut prev: Option<Checkpoint> = None;
        while let Some(c) = cur.next_raw(self, rel)? {
            let at = |kind| problem(rel, Some(c.offset), Some(c.index), kind);
            let cp = self
                .key
                .open_checkpoint(&c.note, None)
                .map_err(|e| at(ProblemKind::BadCheckpoint(e)))?;
            if let Some(p) = &prev {
                if cp.origin != p.origin {
                    let (expected, found) = (p.origin.clone(), cp.origin.clone());
                    return Err(at(ProblemKind::OriginChanged { expected, found }));
                }
                if cp.size < p.size {
                    return Err(at(ProblemKind::CheckpointRollback {
                        size: cp.size,
                        previous: p.size,
                    }));
                }
                if cp.size == p.size && cp.root != p.root {
                    return Err(at(ProblemKind::CheckpointFork { size: cp.size }));
                }
            }
            self.report.checkpoints += 1;
            self.report.origin.get_or_insert_with(|| cp.origin.clone());
            self.report.latest_checkpoint = Some(cp.size);
            prev = Some(cp);
        }
        Ok(())
    }

    fn check_segments(&mut self) -> Result<(), Stop> {
        let seg_dir = self.dir.join(SEGMENTS_DIR);
        let (seqs, strays) = match list_segments(&seg_dir) {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(problem(
                    Path::new(SEGMENTS_DIR),
                    None,
                    None,
                    ProblemKind::MissingFile,
                ));
            }
            Err(e) => return Err(self.io(Path::new(SEGMENTS_DIR))(e)),
        };
        if let Some(s) = strays.first() {
            let rel = s.strip_prefix(self.dir).unwrap_or(s).to_owned();
            return Err(problem(&rel, None, None, ProblemKind::UnexpectedFile));
        }
        // Pass 2 over the checkpoints, in step with the records.
        let ck_rel = Path::new(CHECKPOINTS_FILE);
        let mut ck = CheckpointCursor::open(self, ck_rel, false)?;
        let mut pending = ck.next_parsed(self, ck_rel)?;
        let Some(&first) = seqs.first() else {
            if let Some(c) = pending {
                let kind = ProblemKind::TruncatedBelowCheckpoint {
                    size: c.cp.size,
                    records: 0,
                };
                return Err(problem(Path::new(SEGMENTS_DIR), None, None, kind));
            }
            if self.report.acked > 0 {
                let kind = ProblemKind::AckBeyondLog {
                    acked: self.report.acked,
                    records: 0,
                };
                return Err(problem(Path::new(ACK_FILE), None, None, kind));
            }
            return Ok(());
        };
        self.report.first_seq = first;
        if first > self.report.acked {
            let rel = Path::new(SEGMENTS_DIR).join(segment_file_name(first));
            let kind = ProblemKind::MissingUnacked {
                acked: self.report.acked,
                first,
            };
            return Err(problem(&rel, None, None, kind));
        }
        let mut frontier: Option<Frontier> = None;
        for (i, &s) in seqs.iter().enumerate() {
            let last = i + 1 == seqs.len();
            let rel = Path::new(SEGMENTS_DIR).join(segment_file_name(s));
            let (mut file, len) = self.open(&rel)?;
            self.report.segments += 1;
            let header = read_segment_header(&mut file, s, len).map_err(self.io(&rel))?;
            let hf = match header {
                HeaderStep::Ok(f) => f,
                HeaderStep::Torn if last => {
                    return Err(problem(&rel, Some(0), None, ProblemKind::TornSegmentHeader));
                }
                HeaderStep::Torn => {
                    let what = Corruption::CutShort {
                        missing: segment_header_len(s) - len,
                    };
                    return Err(problem(&rel, Some(0), None, ProblemKind::Corrupt(what)));
                }
                HeaderStep::Corrupt(what) => {
                    return Err(problem(&rel, Some(0), None, ProblemKind::Corrupt(what)));
                }
            };
            let mut f = match frontier.take() {
                None => {
                    // The base: the tree before the first stored record (all pruned records).
                    // Checkpoints at or below it can only be checked when exactly at it.
                    while let Some(c) = pending.as_ref().filter(|c| c.cp.size <= s) {
                        if c.cp.size == s && c.cp.root != hf.root() {
                            let kind = ProblemKind::CheckpointRootMismatch { size: s };
                            return Err(problem(ck_rel, Some(c.offset), Some(c.index), kind));
                        }
                        if c.cp.size < s {
                            self.report.checkpoints_below_base += 1;
                        }
                        pending = ck.next_parsed(self, ck_rel)?;
                    }
                    hf
                }
                Some(f) => {
                    let expected = f.size();
                    if s > expected {
                        return Err(problem(
                            &rel,
                            None,
                            None,
                            ProblemKind::Gap { expected, found: s },
                        ));
                    }
                    if s < expected {
                        let kind = ProblemKind::Overlap { expected, found: s };
                        return Err(problem(&rel, None, None, kind));
                    }
                    if hf != f {
                        return Err(problem(&rel, Some(0), None, ProblemKind::FrontierMismatch));
                    }
                    f
                }
            };
            let start = segment_header_len(s);
            let mut sc = FrameScanner::new(file, start, len).map_err(self.io(&rel))?;
            loop {
                let seq = f.size();
                match sc.next(Some(seq), MAX_PAYLOAD_LEN).map_err(self.io(&rel))? {
                    Step::Frame {
                        offset, payload, ..
                    } => {
                        let at = |kind| problem(&rel, Some(offset), Some(seq), kind);
                        if payload.len() < SIGNATURE_LEN {
                            return Err(at(ProblemKind::ShortRecord));
                        }
                        let (sig, entry) = payload.split_at(SIGNATURE_LEN);
                        let sig: &[u8; 64] = sig.try_into().expect("64 bytes");
                        verify_entry(self.key, entry, sig)
                            .map_err(|_| at(ProblemKind::BadRecordSignature))?;
                        (self.on_entry)(seq, entry);
                        f.append(leaf_hash(entry));
                        self.report.records += 1;
                        while let Some(c) = pending.as_ref().filter(|c| c.cp.size <= f.size()) {
                            if c.cp.root != f.root() {
                                let kind = ProblemKind::CheckpointRootMismatch { size: c.cp.size };
                                return Err(problem(ck_rel, Some(c.offset), Some(c.index), kind));
                            }
                            pending = ck.next_parsed(self, ck_rel)?;
                        }
                    }
                    Step::End => break,
                    Step::Torn { offset } if last => {
                        self.finish(&f);
                        return Err(problem(
                            &rel,
                            Some(offset),
                            Some(seq),
                            ProblemKind::TornTail,
                        ));
                    }
                    Step::Torn { offset } => {
                        let what = Corruption::CutShort { missing: 0 };
                        return Err(problem(
                            &rel,
                            Some(offset),
                            Some(seq),
                            ProblemKind::Corrupt(what),
                        ));
                    }
                    Step::Corrupt {
                        offset,
                        seq: found,
                        what,
                    } => {
                        return Err(problem(
                            &rel,
                            Some(offset),
                            found.or(Some(seq)),
                            ProblemKind::Corrupt(what),
                        ));
                    }
                }
            }
            self.finish(&f);
            frontier = Some(f);
        }
        let records = self.report.size;
        if let Some(c) = pending {
            let kind = ProblemKind::TruncatedBelowCheckpoint {
                size: c.cp.size,
                records,
            };
            return Err(problem(ck_rel, Some(c.offset), Some(c.index), kind));
        }
        if self.report.acked > records {
            let kind = ProblemKind::AckBeyondLog {
                acked: self.report.acked,
                records,
            };
            return Err(problem(Path::new(ACK_FILE), None, None, kind));
        }
        Ok(())
    }

    fn finish(&mut self, f: &Frontier) {
        self.report.size = f.size();
        self.report.root = f.root();
    }
}

struct RawCheckpoint {
    index: u64,
    offset: u64,
    note: String,
}

struct ParsedCheckpoint {
    index: u64,
    offset: u64,
    cp: Checkpoint,
}

/// Streams the frames of `checkpoints.log`.
struct CheckpointCursor {
    sc: FrameScanner,
    next_index: Option<u64>,
}

impl CheckpointCursor {
    /// Opens the file; `count` adds its length to the report (pass 1 only).
    fn open(v: &mut Verifier<'_>, rel: &Path, count: bool) -> Result<Self, Stop> {
        let (file, len) = if count {
            v.open(rel)?
        } else {
            v.open_uncounted(rel)?
        };
        let mut magic = [0u8; 8];
        let ok = len >= 8
            && std::os::unix::fs::FileExt::read_exact_at(&file, &mut magic, 0).is_ok()
            && &magic == CHECKPOINTS_MAGIC;
        if !ok {
            let what = Corruption::BadMagic("a checkpoints file");
            return Err(problem(rel, Some(0), None, ProblemKind::Corrupt(what)));
        }
        let sc = FrameScanner::new(file, 8, len).map_err(v.io(rel))?;
        Ok(Self {
            sc,
            next_index: None,
        })
    }

    fn next_raw(&mut self, v: &Verifier<'_>, rel: &Path) -> Result<Option<RawCheckpoint>, Stop> {
        match self
            .sc
            .next(self.next_index, MAX_PAYLOAD_LEN)
            .map_err(v.io(rel))?
        {
            Step::Frame {
                offset,
                header,
                payload,
            } => {
                self.next_index = Some(header.seq + 1);
                let note = String::from_utf8(payload).map_err(|_| {
                    let what = Corruption::BadNote("not UTF-8".into());
                    problem(
                        rel,
                        Some(offset),
                        Some(header.seq),
                        ProblemKind::Corrupt(what),
                    )
                })?;
                Ok(Some(RawCheckpoint {
                    index: header.seq,
                    offset,
                    note,
                }))
            }
            Step::End => Ok(None),
            Step::Torn { offset } => Err(problem(rel, Some(offset), None, ProblemKind::TornTail)),
            Step::Corrupt { offset, seq, what } => {
                Err(problem(rel, Some(offset), seq, ProblemKind::Corrupt(what)))
            }
        }
    }

    /// The next checkpoint, parsed (its signature was checked in pass 1).
    fn next_parsed(
        &mut self,
        v: &Verifier<'_>,
        rel: &Path,
    ) -> Result<Option<ParsedCheckpoint>, Stop> {
        let Some(raw) = self.next_raw(v, rel)? else {
            return Ok(None);
        };
        let parsed = parse_note(&raw.note).and_then(|n| Checkpoint::parse(n.text));
        let cp = parsed.map_err(|e| {
            problem(
                rel,
                Some(raw.offset),
                Some(raw.index),
                ProblemKind::BadCheckpoint(e),
            )
        })?;
        Ok(Some(ParsedCheckpoint {
            index: raw.index,
            offset: raw.offset,
            cp,
        }))
    }
}
