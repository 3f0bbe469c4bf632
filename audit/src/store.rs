//! The append-only segmented log on the device's storage, which is also its outbox.
//!
//! ```text
//! <dir>/lock                          held (flock) by the one process that has the log open
//! <dir>/ack                           acknowledged watermark: magic + two slots, rewritten in place
//! <dir>/checkpoints.log               signed checkpoints, one frame each
//! <dir>/segments/<first seq:020>.log  segment header (frontier before its first record) + records
//! ```
//!
//! Durability: `append` and `checkpoint` return after write + fdatasync; a new segment's header
//! is fdatasync'ed and the directory fsync'ed before any record goes into it. Recovery reads
//! only the last segment (from the frontier in its header) and `checkpoints.log`, so a restart
//! costs O(log n) plus at most one segment.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::entry::sign_entry;
use crate::frame::{
    ACK_FILE_LEN, ACK_SLOT_LEN, AckSlot, CHECKPOINTS_MAGIC, Corruption, MAX_ENTRY_LEN,
    MAX_PAYLOAD_LEN, SIGNATURE_LEN, SeqNote, decode_ack_file, encode_ack_slot, encode_frame,
    encode_segment_header, initial_ack_file, segment_header_len,
};
use crate::merkle::{Frontier, Hash, leaf_hash};
use crate::note::{Checkpoint, NoteError, SignerKey, parse_note};
use crate::segment::{
    FrameScanner, HeaderStep, Step, list_segments, read_segment_header, segment_file_name,
};

pub const SEGMENTS_DIR: &str = "segments";
pub const CHECKPOINTS_FILE: &str = "checkpoints.log";
pub const ACK_FILE: &str = "ack";
pub const LOCK_FILE: &str = "lock";
const CHECKPOINTS_TMP: &str = "checkpoints.log.tmp";

/// Tuning of a [`Log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// A new segment is started when a record would make the current one larger than this
    /// (a segment always takes at least one record). Bounds restart time and is the unit of
    /// pruning.
    pub segment_max_bytes: u64,
    /// The outbox bound: appends and checkpoints fail with [`StoreError::Full`] rather than
    /// make the files of the log larger than this. `None`: only the disk bounds it.
    pub max_total_bytes: Option<u64>,
    /// The largest entry accepted (at most [`MAX_ENTRY_LEN`]).
    pub max_entry_bytes: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            segment_max_bytes: 1 << 20,
            max_total_bytes: None,
            max_entry_bytes: 64 * 1024,
        }
    }
}

/// Why the log cannot be opened or written.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{}: {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error("no space left on the device writing {}; nothing was appended", path.display())]
    NoSpace { path: PathBuf },
    #[error("outbox full: {used} of {cap} bytes used, {needed} more needed; acknowledge records")]
    Full { used: u64, cap: u64, needed: u64 },
    #[error("{} byte {offset}{}: {what}", file.display(), SeqNote(*seq))]
    Corrupt {
        file: PathBuf,
        offset: u64,
        seq: Option<u64>,
        what: Corruption,
    },
    #[error("{} is missing from a log that holds records", .0.display())]
    MissingFile(PathBuf),
    #[error("another process has the log open ({})", .0.display())]
    Locked(PathBuf),
    #[error(
        "records are missing: the log holds {size} records, a checkpoint was signed at {signed}"
    )]
    Truncated { size: u64, signed: u64 },
    #[error("the log's root at size {size} is not the one its last checkpoint signed")]
    RootMismatch { size: u64 },
    #[error("records are missing: {acked} acknowledged but the log holds {size}")]
    AckBeyondLog { acked: u64, size: u64 },
    #[error("{} missing: not acknowledged but gone", crate::seqs(*first_kept_missing, *first))]
    MissingSegments { first_kept_missing: u64, first: u64 },
    #[error("{}: last checkpoint does not verify with this key and origin: {source}", file.display())]
    ForeignCheckpoint { file: PathBuf, source: NoteError },
    #[error("origin: {0}")]
    BadOrigin(NoteError),
    #[error("entry is {len} bytes, the limit is {max}")]
    EntryTooLarge { len: usize, max: u32 },
    #[error("cannot acknowledge seq {seq}: the log holds {size} records")]
    AckBeyondEnd { seq: u64, size: u64 },
    #[error("seq {seq} was pruned: the log now starts at {first}")]
    Pruned { seq: u64, first: u64 },
    #[error("seq {seq} is beyond the end of the log ({size} records)")]
    BeyondEnd { seq: u64, size: u64 },
}

impl StoreError {
    /// `what` is wrong with `file` as a whole (its header, or where it stands among the
    /// segments), not with one of its frames.
    fn whole_file(file: PathBuf, what: Corruption) -> Self {
        Self::corrupt(file, 0, None, what)
    }

    /// `what` is wrong with the frame at `offset` of `file` (record `seq` when it is known).
    fn corrupt(file: impl Into<PathBuf>, offset: u64, seq: Option<u64>, what: Corruption) -> Self {
        Self::Corrupt {
            file: file.into(),
            offset,
            seq,
            what,
        }
    }

    fn io(path: &Path, op: &'static str, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::StorageFull || source.raw_os_error() == Some(28) {
            return Self::NoSpace {
                path: path.to_owned(),
            };
        }
        Self::Io {
            path: path.to_owned(),
            op,
            source,
        }
    }
}

/// One stored record, as read back for resending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub signature: [u8; 64],
    pub entry: Vec<u8>,
}

/// The open log. One per directory (a lock file enforces it).
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    origin: String,
    key: SignerKey,
    opts: Options,
    _lock: File,
    /// First sequence numbers of the segments, ascending; the last is the active segment.
    segments: VecDeque<u64>,
    active: File,
    active_len: u64,
    /// A failed write may have left bytes past `active_len`; cut them before writing again.
    active_dirty: bool,
    frontier: Frontier,
    ckpt: File,
    ckpt_len: u64,
    ckpt_dirty: bool,
    ckpt_next_index: u64,
    /// Size of the first checkpoint in the file (for compaction after pruning).
    ckpt_first_size: Option<u64>,
    last_checkpoint: Option<(Checkpoint, String)>,
    ack: File,
    ack_slot: AckSlot,
    ack_slot_index: usize,
    total_bytes: u64,
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering from an interrupted write: a torn tail of
    /// the last segment or of `checkpoints.log` is cut off; any other damage is an error.
    pub fn open(
        dir: &Path,
        origin: &str,
        key: &SignerKey,
        opts: Options,
    ) -> Result<Log, StoreError> {
        Checkpoint {
            origin: origin.to_owned(),
            size: 0,
            root: [0; 32],
            extensions: vec![],
        }
        .to_text()
        .map_err(StoreError::BadOrigin)?;
        let opts = Options {
            max_entry_bytes: opts.max_entry_bytes.min(MAX_ENTRY_LEN),
            ..opts
        };
        let seg_dir = dir.join(SEGMENTS_DIR);
        if !seg_dir.is_dir() {
            fs::create_dir_all(&seg_dir).map_err(|e| StoreError::io(&seg_dir, "create", e))?;
            sync_dir(dir)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::io(&lock_path, "open", e))?;
        lock.try_lock().map_err(|e| match e {
            fs::TryLockError::WouldBlock => StoreError::Locked(lock_path.clone()),
            fs::TryLockError::Error(e) => StoreError::io(&lock_path, "lock", e),
        })?;
        let _ = fs::remove_file(dir.join(CHECKPOINTS_TMP));

        let (mut seqs, _) =
            list_segments(&seg_dir).map_err(|e| StoreError::io(&seg_dir, "list", e))?;
        // The ack and checkpoint files are created with the log; once it holds segments, a
        // missing one was deleted, and recreating it would hide that.
        let fresh = seqs.is_empty();
        let (ack, ack_slot, ack_slot_index) = open_ack(dir, fresh)?;
        let ck = open_checkpoints(dir, key, origin, fresh)?;
        // The last segment: drop it if its creation was interrupted, then replay its records.
        let (active, active_len, frontier) = loop {
            let Some(&first) = seqs.last() else {
                if let Some((cp, _)) = &ck.last
                    && cp.size > 0
                {
                    return Err(StoreError::Truncated {
                        size: 0,
                        signed: cp.size,
                    });
                }
                if ack_slot.acked > 0 {
                    return Err(StoreError::AckBeyondLog {
                        acked: ack_slot.acked,
                        size: 0,
                    });
                }
                let (file, len) = create_segment(&seg_dir, &Frontier::new())?;
                seqs.push(0);
                break (file, len, Frontier::new());
            };
            let path = seg_dir.join(segment_file_name(first));
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| StoreError::io(&path, "open", e))?;
            let len = file
                .metadata()
                .map_err(|e| StoreError::io(&path, "stat", e))?
                .len();
            match read_segment_header(&mut file, first, len)
                .map_err(|e| StoreError::io(&path, "read", e))?
            {
                HeaderStep::Ok(frontier) => {
                    let (frontier, valid) = replay(&file, &path, frontier, len)?;
                    if valid < len {
                        file.set_len(valid)
                            .and_then(|_| file.sync_all())
                            .map_err(|e| StoreError::io(&path, "truncate torn tail of", e))?;
                    }
                    break (file, valid, frontier);
                }
                HeaderStep::Torn if seqs.len() > 1 || first == 0 => {
                    fs::remove_file(&path).map_err(|e| StoreError::io(&path, "remove", e))?;
                    sync_dir(&seg_dir)?;
                    seqs.pop();
                }
                HeaderStep::Torn => {
                    return Err(StoreError::whole_file(
                        path,
                        Corruption::BadMagic("a segment file"),
                    ));
                }
                HeaderStep::Corrupt(what) => {
                    return Err(StoreError::whole_file(path, what));
                }
            }
        };

        let size = frontier.size();
        if let Some((cp, _)) = &ck.last {
            if size < cp.size {
                return Err(StoreError::Truncated {
                    size,
                    signed: cp.size,
                });
            }
            if size == cp.size && frontier.root() != cp.root {
                return Err(StoreError::RootMismatch { size });
            }
        }
        if ack_slot.acked > size {
            return Err(StoreError::AckBeyondLog {
                acked: ack_slot.acked,
                size,
            });
        }
        if seqs[0] > ack_slot.acked {
            return Err(StoreError::MissingSegments {
                first_kept_missing: ack_slot.acked,
                first: seqs[0],
            });
        }

        let mut total_bytes = ACK_FILE_LEN as u64 + ck.len;
        for &s in &seqs[..seqs.len() - 1] {
            let p = seg_dir.join(segment_file_name(s));
            total_bytes += fs::metadata(&p)
                .map_err(|e| StoreError::io(&p, "stat", e))?
                .len();
        }
        total_bytes += active_len;

        let mut log = Log {
            dir: dir.to_owned(),
            origin: origin.to_owned(),
            key: key.clone(),
            opts,
            _lock: lock,
            segments: seqs.into(),
            active,
            active_len,
            active_dirty: false,
            frontier,
            ckpt: ck.file,
            ckpt_len: ck.len,
            ckpt_dirty: false,
            ckpt_next_index: ck.next_index,
            ckpt_first_size: ck.first_size,
            last_checkpoint: ck.last,
            ack,
            ack_slot,
            ack_slot_index,
            total_bytes,
        };
        // Finish a pruning that a crash interrupted.
        log.prune()?;
        Ok(log)
    }

    /// Number of records ever appended (the tree size); the next record gets this seq.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// The Merkle root over every record ever appended.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    pub fn frontier(&self) -> &Frontier {
        &self.frontier
    }

    /// The first seq still stored (records below it were acknowledged and pruned).
    pub fn first_seq(&self) -> u64 {
        self.segments[0]
    }

    /// Records below this seq are acknowledged by the hub.
    pub fn acked(&self) -> u64 {
        self.ack_slot.acked
    }

    /// Bytes in the log's files (segments, checkpoints, ack), the figure the cap applies to.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// The latest signed checkpoint note, if any.
    pub fn last_checkpoint(&self) -> Option<&str> {
        self.last_checkpoint.as_ref().map(|(_, n)| n.as_str())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn segment_path(&self, first: u64) -> PathBuf {
        self.dir.join(SEGMENTS_DIR).join(segment_file_name(first))
    }

    fn active_first(&self) -> u64 {
        *self.segments.back().expect("a log always has a segment")
    }

    fn check_cap(&self, needed: u64) -> Result<(), StoreError> {
        match self.opts.max_total_bytes {
            Some(cap) if self.total_bytes + needed > cap => Err(StoreError::Full {
                used: self.total_bytes,
                cap,
                needed,
            }),
            _ => Ok(()),
        }
    }

    /// Signs `entry`, appends it durably and returns its seq. On error nothing was appended
    /// (and the log stays usable: after `NoSpace`, appending works again once space returns).
    pub fn append(&mut self, entry: &[u8]) -> Result<u64, StoreError> {
        if entry.len() > self.opts.max_entry_bytes as usize {
            return Err(StoreError::EntryTooLarge {
                len: entry.len(),
                max: self.opts.max_entry_bytes,
            });
        }
        let seq = self.frontier.size();
        let sig = sign_entry(&self.key, entry);
        let frame = encode_frame(seq, &[&sig, entry]);
        let frame_len = frame.len() as u64;
        let has_records = self.active_len > segment_header_len(self.active_first());
        let roll = has_records && self.active_len + frame_len > self.opts.segment_max_bytes;
        let header = if roll { segment_header_len(seq) } else { 0 };
        self.check_cap(frame_len + header)?;
        if roll {
            self.roll()?;
        }
        let path = self.segment_path(self.active_first());
        append_at(
            &self.active,
            &path,
            self.active_len,
            &frame,
            &mut self.active_dirty,
        )?;
        self.active_len += frame_len;
        self.total_bytes += frame_len;
        self.frontier.append(leaf_hash(entry));
        Ok(seq)
    }

    /// Starts a new segment whose header holds the current frontier.
    fn roll(&mut self) -> Result<(), StoreError> {
        let seg_dir = self.dir.join(SEGMENTS_DIR);
        let (file, len) = create_segment(&seg_dir, &self.frontier)?;
        self.segments.push_back(self.frontier.size());
        self.active = file;
        self.active_len = len;
        self.active_dirty = false;
        self.total_bytes += len;
        Ok(())
    }

    /// Signs a checkpoint of the current (origin, size, root), appends it durably to
    /// `checkpoints.log` and returns the signed note. When nothing was appended since the
    /// last checkpoint, returns that one without writing.
    pub fn checkpoint(&mut self) -> Result<String, StoreError> {
        if let Some((cp, note)) = &self.last_checkpoint
            && cp.size == self.size()
        {
            return Ok(note.clone());
        }
        let cp = Checkpoint {
            origin: self.origin.clone(),
            size: self.size(),
            root: self.root(),
            extensions: vec![],
        };
        let note = self
            .key
            .sign_checkpoint(&cp)
            .map_err(StoreError::BadOrigin)?;
        let frame = encode_frame(self.ckpt_next_index, &[note.as_bytes()]);
        self.check_cap(frame.len() as u64)?;
        let path = self.dir.join(CHECKPOINTS_FILE);
        append_at(
            &self.ckpt,
            &path,
            self.ckpt_len,
            &frame,
            &mut self.ckpt_dirty,
        )?;
        self.ckpt_len += frame.len() as u64;
        self.total_bytes += frame.len() as u64;
        self.ckpt_next_index += 1;
        self.ckpt_first_size.get_or_insert(cp.size);
        self.last_checkpoint = Some((cp, note.clone()));
        Ok(note)
    }

    /// Stored records from `from_seq` to the current end, with their signatures.
    pub fn read(&self, from_seq: u64) -> Result<Reader<'_>, StoreError> {
        let size = self.size();
        if from_seq < self.first_seq() {
            return Err(StoreError::Pruned {
                seq: from_seq,
                first: self.first_seq(),
            });
        }
        if from_seq > size {
            return Err(StoreError::BeyondEnd {
                seq: from_seq,
                size,
            });
        }
        let index = self.segments.partition_point(|&s| s <= from_seq) - 1;
        Ok(Reader {
            log: self,
            index,
            scanner: None,
            next_seq: self.segments[index],
            from_seq,
        })
    }

    /// The hub acknowledged every record up to and including `seq`: persist the watermark,
    /// then remove every segment whose records are all acknowledged (never the active one).
    pub fn ack(&mut self, seq: u64) -> Result<(), StoreError> {
        let size = self.size();
        if seq >= size {
            return Err(StoreError::AckBeyondEnd { seq, size });
        }
        if seq < self.ack_slot.acked {
            return self.prune();
        }
        // Rewrite the older slot in place: no allocation (works on a full disk), and a torn
        // write leaves the newer slot intact.
        let slot = AckSlot {
            acked: seq + 1,
            generation: self.ack_slot.generation + 1,
        };
        let index = 1 - self.ack_slot_index;
        let path = self.dir.join(ACK_FILE);
        let at = (8 + index * ACK_SLOT_LEN) as u64;
        self.ack
            .write_all_at(&encode_ack_slot(slot), at)
            .and_then(|_| self.ack.sync_data())
            .map_err(|e| StoreError::io(&path, "write", e))?;
        self.ack_slot = slot;
        self.ack_slot_index = index;
        self.prune()
    }

    fn prune(&mut self) -> Result<(), StoreError> {
        let seg_dir = self.dir.join(SEGMENTS_DIR);
        let mut removed = false;
        while self.segments.len() >= 2 && self.segments[1] <= self.ack_slot.acked {
            let path = self.segment_path(self.segments[0]);
            let len = match fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                Err(e) => return Err(StoreError::io(&path, "stat", e)),
            };
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(&path, "remove", e)),
            }
            self.segments.pop_front();
            self.total_bytes -= len;
            removed = true;
        }
        if removed {
            sync_dir(&seg_dir)?;
        }
        match self.ckpt_first_size {
            Some(s) if s < self.first_seq() => self.compact_checkpoints(),
            _ => Ok(()),
        }
    }

    /// Rewrites `checkpoints.log` without the checkpoints below the first kept record (their
    /// records are gone), always keeping the latest one. Streams: bounded memory.
    fn compact_checkpoints(&mut self) -> Result<(), StoreError> {
        let path = self.dir.join(CHECKPOINTS_FILE);
        let tmp = self.dir.join(CHECKPOINTS_TMP);
        let base = self.first_seq();
        let latest = self.last_checkpoint.as_ref().map_or(0, |(cp, _)| cp.size);
        // Keep what is at or above the base; if nothing is, keep only the latest checkpoint.
        let keep_from = base.min(latest);
        let file = File::open(&path).map_err(|e| StoreError::io(&path, "open", e))?;
        let start = CHECKPOINTS_MAGIC.len() as u64;
        let mut sc = FrameScanner::new(file, start, self.ckpt_len)
            .map_err(|e| StoreError::io(&path, "read", e))?;
        let mut out = io::BufWriter::new(create_new_file(&tmp)?);
        let mut written = start;
        let mut first_size = None;
        let write = |out: &mut io::BufWriter<File>, b: &[u8]| {
            out.write_all(b)
                .map_err(|e| StoreError::io(&tmp, "write", e))
        };
        write(&mut out, CHECKPOINTS_MAGIC)?;
        loop {
            match sc
                .next(None, MAX_PAYLOAD_LEN)
                .map_err(|e| StoreError::io(&path, "read", e))?
            {
                Step::Frame {
                    header,
                    payload,
                    offset,
                } => {
                    let size = checkpoint_size(&path, offset, header.seq, &payload)?;
                    if size >= keep_from {
                        let frame = encode_frame(header.seq, &[&payload]);
                        write(&mut out, &frame)?;
                        written += frame.len() as u64;
                        first_size.get_or_insert(size);
                    }
                }
                Step::End => break,
                Step::Torn { offset } | Step::Corrupt { offset, .. } => {
                    let what = Corruption::BadFrameHeader;
                    return Err(StoreError::corrupt(path, offset, None, what));
                }
            }
        }
        let file = out
            .into_inner()
            .map_err(|e| StoreError::io(&tmp, "write", e.into_error()))?;
        file.sync_all()
            .map_err(|e| StoreError::io(&tmp, "sync", e))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(|e| StoreError::io(&path, "replace", e))?;
        sync_dir(&self.dir)?;
        self.ckpt = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, "open", e))?;
        self.total_bytes = self.total_bytes - self.ckpt_len + written;
        self.ckpt_len = written;
        self.ckpt_first_size = first_size;
        Ok(())
    }
}

/// Iterates stored records in seq order, checking each frame's checksums.
#[derive(Debug)]
pub struct Reader<'a> {
    log: &'a Log,
    /// Index in `log.segments` of the segment being read.
    index: usize,
    scanner: Option<FrameScanner>,
    next_seq: u64,
    from_seq: u64,
}

impl Reader<'_> {
    fn step(&mut self) -> Result<Option<Record>, StoreError> {
        loop {
            if self.next_seq >= self.log.size() {
                return Ok(None);
            }
            let first = self.log.segments[self.index];
            let path = self.log.segment_path(first);
            if self.scanner.is_none() {
                let file = File::open(&path).map_err(|e| StoreError::io(&path, "open", e))?;
                let len = if self.index + 1 == self.log.segments.len() {
                    self.log.active_len
                } else {
                    file.metadata()
                        .map_err(|e| StoreError::io(&path, "stat", e))?
                        .len()
                };
                let sc = FrameScanner::new(file, segment_header_len(first), len)
                    .map_err(|e| StoreError::io(&path, "read", e))?;
                self.scanner = Some(sc);
            }
            let sc = self.scanner.as_mut().expect("scanner was just set");
            let max = MAX_PAYLOAD_LEN;
            match sc
                .next(Some(self.next_seq), max)
                .map_err(|e| StoreError::io(&path, "read", e))?
            {
                Step::Frame {
                    offset,
                    header,
                    mut payload,
                } => {
                    self.next_seq += 1;
                    if header.seq < self.from_seq {
                        continue;
                    }
                    if payload.len() < SIGNATURE_LEN {
                        let what = Corruption::BadLength { len: header.len };
                        return Err(StoreError::corrupt(path, offset, Some(header.seq), what));
                    }
                    let entry = payload.split_off(SIGNATURE_LEN);
                    let signature = payload.try_into().expect("64 bytes");
                    return Ok(Some(Record {
                        seq: header.seq,
                        signature,
                        entry,
                    }));
                }
                Step::End => {
                    self.index += 1;
                    self.scanner = None;
                    if self.index == self.log.segments.len() {
                        return Ok(None);
                    }
                    let next_first = self.log.segments[self.index];
                    if next_first != self.next_seq {
                        let what = Corruption::SeqMismatch {
                            expected: self.next_seq,
                            found: next_first,
                        };
                        let file = self.log.segment_path(next_first);
                        return Err(StoreError::whole_file(file, what));
                    }
                }
                Step::Torn { offset } => {
                    let what = Corruption::CutShort { missing: 0 };
                    return Err(StoreError::corrupt(path, offset, Some(self.next_seq), what));
                }
                Step::Corrupt { offset, seq, what } => {
                    return Err(StoreError::corrupt(path, offset, seq, what));
                }
            }
        }
    }
}

impl Iterator for Reader<'_> {
    type Item = Result<Record, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => None,
            Err(e) => {
                // Stop after the first error.
                self.next_seq = u64::MAX;
                Some(Err(e))
            }
        }
    }
}

/// The tree size a checkpoint frame's payload (a signed note) declares; the frame (record
/// `seq`, at `offset` of `path`) is corrupt when it declares none.
fn checkpoint_size(path: &Path, offset: u64, seq: u64, payload: &[u8]) -> Result<u64, StoreError> {
    let size = || {
        let note = std::str::from_utf8(payload).ok()?;
        Some(Checkpoint::parse(parse_note(note).ok()?.text).ok()?.size)
    };
    size().ok_or_else(|| {
        StoreError::corrupt(
            path,
            offset,
            Some(seq),
            Corruption::BadNote("not a checkpoint".into()),
        )
    })
}

/// Writes `bytes` at `at` and fdatasyncs; on failure cuts the file back to `at` so no partial
/// frame stays behind. `dirty` remembers a failed cut, retried before the next write.
fn append_at(
    file: &File,
    path: &Path,
    at: u64,
    bytes: &[u8],
    dirty: &mut bool,
) -> Result<(), StoreError> {
    if *dirty {
        file.set_len(at)
            .and_then(|_| file.sync_all())
            .map_err(|e| StoreError::io(path, "cut failed write from", e))?;
        *dirty = false;
    }
    if let Err(e) = file.write_all_at(bytes, at).and_then(|_| file.sync_data()) {
        if file.set_len(at).and_then(|_| file.sync_all()).is_err() {
            *dirty = true;
        }
        return Err(StoreError::io(path, "append to", e));
    }
    Ok(())
}

/// fsync of a directory, so a created, renamed or removed entry is durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, "sync", e))
}

fn create_new_file(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| StoreError::io(path, "create", e))
}

/// Creates a file holding `bytes`, durably (file and directory entry); removes it on failure.
fn write_new_file(path: &Path, bytes: &[u8]) -> Result<File, StoreError> {
    let file = create_new_file(path)?;
    let dir = path.parent().expect("a file in the log directory");
    let r = file
        .write_all_at(bytes, 0)
        .and_then(|_| file.sync_data())
        .map_err(|e| StoreError::io(path, "write", e))
        .and_then(|_| sync_dir(dir));
    if let Err(e) = r {
        let _ = fs::remove_file(path);
        let _ = sync_dir(dir);
        return Err(e);
    }
    Ok(file)
}

/// Creates the segment that starts at `frontier.size()`, with its header durable.
fn create_segment(seg_dir: &Path, frontier: &Frontier) -> Result<(File, u64), StoreError> {
    let path = seg_dir.join(segment_file_name(frontier.size()));
    let header = encode_segment_header(frontier);
    let file = write_new_file(&path, &header)?;
    Ok((file, header.len() as u64))
}

/// Replays the records of the last segment onto `frontier`; returns the tree after them and
/// the length of the valid prefix (a torn tail is not part of it).
fn replay(
    file: &File,
    path: &Path,
    mut frontier: Frontier,
    len: u64,
) -> Result<(Frontier, u64), StoreError> {
    let start = segment_header_len(frontier.size());
    let f = file
        .try_clone()
        .map_err(|e| StoreError::io(path, "open", e))?;
    let mut sc = FrameScanner::new(f, start, len).map_err(|e| StoreError::io(path, "read", e))?;
    loop {
        let seq = frontier.size();
        match sc
            .next(Some(seq), MAX_PAYLOAD_LEN)
            .map_err(|e| StoreError::io(path, "read", e))?
        {
            Step::Frame {
                offset,
                header,
                payload,
            } => {
                if payload.len() < SIGNATURE_LEN {
                    let what = Corruption::BadLength { len: header.len };
                    return Err(StoreError::corrupt(path, offset, Some(seq), what));
                }
                frontier.append(leaf_hash(&payload[SIGNATURE_LEN..]));
            }
            Step::End => return Ok((frontier, len)),
            Step::Torn { offset } => return Ok((frontier, offset)),
            Step::Corrupt { offset, seq, what } => {
                return Err(StoreError::corrupt(path, offset, seq, what));
            }
        }
    }
}

fn open_ack(dir: &Path, fresh: bool) -> Result<(File, AckSlot, usize), StoreError> {
    let path = dir.join(ACK_FILE);
    let file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound && fresh => {
            write_new_file(&path, &initial_ack_file())?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::MissingFile(path)),
        Err(e) => return Err(StoreError::io(&path, "open", e)),
    };
    let mut b = vec![0u8; ACK_FILE_LEN + 1];
    let n = read_up_to(&file, &mut b).map_err(|e| StoreError::io(&path, "read", e))?;
    let (slot, index) = decode_ack_file(&b[..n])
        .map_err(|(offset, what)| StoreError::corrupt(path, offset, None, what))?;
    Ok((file, slot, index))
}

fn read_up_to(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

struct Checkpoints {
    file: File,
    len: u64,
    next_index: u64,
    first_size: Option<u64>,
    last: Option<(Checkpoint, String)>,
}

/// Opens `checkpoints.log`, cuts a torn tail, and checks its last checkpoint against our key
/// and origin. Reads the whole file: its length is bounded by pruning (compaction).
fn open_checkpoints(
    dir: &Path,
    key: &SignerKey,
    origin: &str,
    fresh: bool,
) -> Result<Checkpoints, StoreError> {
    let path = dir.join(CHECKPOINTS_FILE);
    let file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound && fresh => {
            write_new_file(&path, CHECKPOINTS_MAGIC)?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::MissingFile(path)),
        Err(e) => return Err(StoreError::io(&path, "open", e)),
    };
    let len = file
        .metadata()
        .map_err(|e| StoreError::io(&path, "stat", e))?
        .len();
    let mut magic = [0u8; 8];
    if len < magic.len() as u64
        || file.read_exact_at(&mut magic, 0).is_err()
        || &magic != CHECKPOINTS_MAGIC
    {
        return Err(StoreError::whole_file(
            path,
            Corruption::BadMagic("a checkpoints file"),
        ));
    }
    let f = file
        .try_clone()
        .map_err(|e| StoreError::io(&path, "open", e))?;
    let mut sc = FrameScanner::new(f, magic.len() as u64, len)
        .map_err(|e| StoreError::io(&path, "read", e))?;
    let mut next_index = None;
    let mut first_size = None;
    let mut last = None;
    let valid = loop {
        match sc
            .next(next_index, MAX_PAYLOAD_LEN)
            .map_err(|e| StoreError::io(&path, "read", e))?
        {
            Step::Frame {
                offset,
                header,
                payload,
            } => {
                next_index = Some(header.seq + 1);
                let size = checkpoint_size(&path, offset, header.seq, &payload)?;
                first_size.get_or_insert(size);
                last = Some(payload);
            }
            Step::End => break len,
            Step::Torn { offset } => break offset,
            Step::Corrupt { offset, seq, what } => {
                return Err(StoreError::corrupt(path, offset, seq, what));
            }
        }
    };
    if valid < len {
        file.set_len(valid)
            .and_then(|_| file.sync_all())
            .map_err(|e| StoreError::io(&path, "truncate torn tail of", e))?;
    }
    let last = match last {
        None => None,
        Some(payload) => {
            let note = String::from_utf8(payload).expect("checkpoint_size checked UTF-8");
            let cp = key
                .verifier()
                .open_checkpoint(&note, Some(origin))
                .map_err(|source| StoreError::ForeignCheckpoint {
                    file: path.clone(),
                    source,
                })?;
            Some((cp, note))
        }
    };
    Ok(Checkpoints {
        file,
        len: valid,
        next_index: next_index.unwrap_or(0),
        first_size,
        last,
    })
}
