//! Verification of what devices publish, one message at a time inside a database transaction:
//! enrolment, signature, record shape and model, order and continuity (records are stored in
//! seq order; later ones are held until the gap is filled), and consistency of every signed
//! checkpoint with the hub's own recomputation of the device's Merkle tree.
//!
//! Alarms: GAP (records missing for longer than the gap timeout), FORK (a second, validly
//! signed record or tree for a position the hub already holds), ROLLBACK (a signed checkpoint
//! smaller than one already verified whose root is not the stored records' at its size; an
//! older checkpoint that matches them is a stale copy, ignored), EQUIVOCATION (two signed checkpoints of the same size
//! with different roots); and rejections: UNENROLLED, BAD_SIGNATURE, MALFORMED, NOT_ALLOWED,
//! MISMATCH (a record on a topic that is not its device's or model's), OVERSIZED (a payload
//! over [`crate::mqtt::MAX_PAYLOAD`]).
//!
//! Rejections are counted per source and kind and coalesced into one alarm per period
//! ([`crate::db::rejections`]). A rejected message is attributed to an enrolled device only
//! when the device's signature verified (NOT_ALLOWED); anything else on its topics is
//! "unverified traffic on the device's topics": anyone able to publish there could have sent
//! it, so it never counts against the device's records.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::db::sql::{OptionalExtension, Transaction, params};
use audit::merkle::leaf_hash;
use audit::{Frontier, Hash};
use hub_link::{Topic, TopicKind, WireError};

use crate::db::rejections::{self, Rejection, Source};
use crate::db::store::{self, Alarm, DeviceState, Result};
use crate::enrolment::Enrolment;

pub const GAP: &str = "GAP";
pub const FORK: &str = "FORK";
pub const ROLLBACK: &str = "ROLLBACK";
pub const EQUIVOCATION: &str = "EQUIVOCATION";
pub const UNENROLLED: &str = "UNENROLLED";
pub const BAD_SIGNATURE: &str = "BAD_SIGNATURE";
pub const MALFORMED: &str = "MALFORMED";
pub const NOT_ALLOWED: &str = "NOT_ALLOWED";
pub const MISMATCH: &str = "MISMATCH";
pub const OVERSIZED: &str = "OVERSIZED";

/// Records held per device while waiting for an earlier one; beyond, later records are
/// dropped (the device resends them: it keeps everything until acknowledged).
pub const MAX_HELD: u64 = 4096;

/// What one message did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub stored: u64,
    pub duplicates: u64,
    pub held: u64,
    /// New alarms: one per event for GAP, FORK, ROLLBACK, EQUIVOCATION; for rejected
    /// traffic, one per source, kind and period (the first message).
    pub alarms: u64,
    /// Messages rejected (each counted into its source's alarm).
    pub rejected: u64,
}

impl std::ops::AddAssign for Outcome {
    fn add_assign(&mut self, o: Outcome) {
        self.stored += o.stored;
        self.duplicates += o.duplicates;
        self.held += o.held;
        self.alarms += o.alarms;
        self.rejected += o.rejected;
    }
}

/// One message as the MQTT side hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Whole {
        topic: String,
        payload: Vec<u8>,
    },
    /// A payload over [`crate::mqtt::MAX_PAYLOAD`]: its size and first bytes only.
    Oversized {
        topic: String,
        len: usize,
        head: Vec<u8>,
    },
}

impl Message {
    pub fn topic(&self) -> &str {
        match self {
            Message::Whole { topic, .. } | Message::Oversized { topic, .. } => topic,
        }
    }
}

struct Ctx<'a, 't, 'c> {
    b: &'a mut Batch<'t, 'c>,
    topic: &'a str,
    now_ms: i64,
    out: Outcome,
}

impl Ctx<'_, '_, '_> {
    fn alarm(
        &mut self,
        device: Option<&str>,
        kind: &str,
        seq: Option<u64>,
        detail: String,
        evidence: Option<String>,
    ) -> Result<()> {
        self.out.alarms += 1;
        store::insert_alarm(
            self.b.tx,
            &Alarm {
                topic: Some(self.topic.to_owned()),
                evidence,
                ..Alarm::new(self.now_ms, device, kind, seq, detail)
            },
        )
    }

    /// A rejected message: counted into its source's alarm, nothing to acknowledge.
    fn reject(
        mut self,
        kind: &str,
        (source, device): (Source, Option<&str>),
        seq: Option<u64>,
        reason: String,
        (len, payload): (usize, &[u8]),
    ) -> Result<(Outcome, Option<String>)> {
        let r = Rejection {
            kind,
            device,
            seq,
            source,
            reason,
            topic: self.topic,
            len,
            payload,
        };
        self.out.rejected += 1;
        self.b.rejected.add(&r);
        Ok((self.out, None))
    }
}

/// Handles one message as the MQTT side hands it over (see [`handle`]), in a batch of its own.
pub fn handle_message(
    tx: &Transaction,
    enrolment: &Enrolment,
    m: &Message,
    now_ms: i64,
) -> Result<(Outcome, Option<String>)> {
    let mut b = Batch::begin(tx, &Default::default())?;
    let (mut o, ack) = b.handle_message(enrolment, m, None, now_ms)?;
    o.alarms += b.finish(now_ms)?.len() as u64;
    Ok((o, ack))
}

/// Whether the topic's device is enrolled, in the topic's territory.
pub fn enrolled(enrolment: &Enrolment, t: &Topic) -> bool {
    enrolment
        .devices
        .get(&t.device)
        .is_some_and(|d| d.territory == t.territory)
}

/// When the hub last logged a malformed status (ms): at most one such line a second.
static LAST_STATUS_WARNING: AtomicI64 = AtomicI64::new(i64::MIN);

/// Whether a second has passed since `last`; if so, `last` becomes `now_ms`.
fn quiet_since(last: &AtomicI64, now_ms: i64) -> bool {
    let before = last.load(Ordering::Relaxed);
    now_ms.saturating_sub(before) >= 1000
        && last
            .compare_exchange(before, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// Handles one message, in a batch of its own. Returns what it did, and the device to
/// acknowledge (when the message was a verified record or checkpoint of an enrolled device).
pub fn handle(
    tx: &Transaction,
    enrolment: &Enrolment,
    topic: &str,
    payload: &[u8],
    now_ms: i64,
) -> Result<(Outcome, Option<String>)> {
    let mut b = Batch::begin(tx, &Default::default())?;
    let (mut o, ack) = handle_in(&mut b, enrolment, (topic, payload), None, now_ms)?;
    o.alarms += b.finish(now_ms)?.len() as u64;
    Ok((o, ack))
}

/// `pre`: the record decoded and its signature checked, when [`preverify`] did it.
fn handle_in(
    b: &mut Batch,
    enrolment: &Enrolment,
    (topic, payload): (&str, &[u8]),
    pre: Option<&Preverified>,
    now_ms: i64,
) -> Result<(Outcome, Option<String>)> {
    let mut cx = Ctx {
        b,
        topic,
        now_ms,
        out: Outcome::default(),
    };
    let whole = (payload.len(), payload);
    let t = match Topic::parse(topic) {
        Ok(t) => t,
        Err(e) => {
            let source = Source::unparsed(topic);
            return cx.reject(MALFORMED, (source, None), None, e.to_string(), whole);
        }
    };
    if t.kind == TopicKind::Status {
        // Retained status reports and last wills: presence and device health (`health`). Not
        // evidence of anything: a status of an unknown device is ignored and a malformed one
        // only logged, never an audit alarm.
        let enrolled = enrolment
            .devices
            .get(&t.device)
            .is_some_and(|d| d.territory == t.territory);
        if enrolled {
            match hub_link::parse_status(payload) {
                Ok(status) => {
                    crate::health::on_status(cx.b.tx, &t.device, &status, now_ms)?;
                }
                Err(e) if quiet_since(&LAST_STATUS_WARNING, now_ms) => {
                    // The reason, not the payload, and escaped: a log line cannot be forged.
                    // At most one line a second: a flood of them is not a flood of the log.
                    let reason: String = e.to_string().escape_debug().take(200).collect();
                    tracing::warn!(
                        "hub: ignoring a malformed status of {}/{} ({} bytes): {reason}",
                        t.territory,
                        t.device,
                        payload.len()
                    );
                }
                Err(_) => {}
            }
        }
        return Ok((cx.out, None));
    }
    let Some(device) = enrolment
        .devices
        .get(&t.device)
        .filter(|d| d.territory == t.territory)
    else {
        return cx.reject(
            UNENROLLED,
            (Source::device(&t.territory, &t.device, false), None),
            None,
            format!("device {}/{} is not enrolled", t.territory, t.device),
            whole,
        );
    };
    let id = device.id.as_str();
    // Traffic on its topics that did not verify: not the device's doing.
    let unverified = || (Source::device(&t.territory, id, true), None);
    match &t.kind {
        TopicKind::Agg { .. } => {
            let decoded;
            let (msg, valid) = match pre {
                Some((m, valid)) => (m, *valid),
                None => {
                    decoded = match hub_link::decode_record(&t, payload) {
                        Ok(m) => m,
                        Err(e) => {
                            let kind = match e {
                                WireError::TopicMismatch { .. } => MISMATCH,
                                _ => MALFORMED,
                            };
                            return cx.reject(kind, unverified(), None, e.to_string(), whole);
                        }
                    };
                    let valid =
                        audit::verify_entry(&device.key, &decoded.entry, &decoded.signature)
                            .is_ok();
                    (&decoded, valid)
                }
            };
            if !valid {
                return cx.reject(
                    BAD_SIGNATURE,
                    unverified(),
                    Some(msg.seq),
                    format!("record {} does not verify with the device's key", msg.seq),
                    whole,
                );
            }
            let m = &msg.view.model;
            if !device
                .models
                .iter()
                .any(|a| a.id == m.id && a.sha256 == m.sha256)
            {
                // Signed by the device: its own doing.
                return cx.reject(
                    NOT_ALLOWED,
                    (Source::device(&t.territory, id, true), Some(id)),
                    Some(msg.seq),
                    format!(
                        "model {} (sha256 {}) is not enrolled for this device",
                        m.id, m.sha256
                    ),
                    whole,
                );
            }
            record(&mut cx, id, msg)?;
        }
        TopicKind::Checkpoint => {
            let note = match std::str::from_utf8(payload) {
                Ok(n) => n,
                Err(e) => {
                    return cx.reject(MALFORMED, unverified(), None, e.to_string(), whole);
                }
            };
            let cp = match device.key.open_checkpoint(note, Some(&device.origin())) {
                Ok(cp) => cp,
                Err(e) => {
                    return cx.reject(
                        BAD_SIGNATURE,
                        unverified(),
                        None,
                        format!("checkpoint: {e}"),
                        whole,
                    );
                }
            };
            checkpoint(&mut cx, id, cp.size, cp.root, note)?;
        }
        TopicKind::Status | TopicKind::Ack => return Ok((cx.out, None)),
    }
    cx.b.seen.insert(id.to_owned(), now_ms);
    Ok((cx.out, Some(id.to_owned())))
}

/// A verified record of an enrolled device: store it in order, hold it, or recognise it.
fn record(cx: &mut Ctx, id: &str, msg: &hub_link::RecordMsg) -> Result<()> {
    let (seq, entry, sig, model) = (msg.seq, &msg.entry[..], &msg.signature, &msg.view.model.id);
    let mut st = cx.b.state(id)?;
    let leaf = leaf_hash(entry);
    if seq < st.next_seq {
        // Buffered records are written first: the stored one may be among them.
        cx.b.flush()?;
        match store::stored(cx.b.tx, id, seq)? {
            Some((l, _)) if l == leaf => {
                st.duplicates += 1;
                cx.out.duplicates += 1;
            }
            Some((_, old)) => {
                cx.alarm(
                    Some(id),
                    FORK,
                    Some(seq),
                    format!("a second signed record for seq {seq}, different from the stored one"),
                    Some(format!(
                        "stored: {}\nreceived: {}",
                        match &old {
                            Ok(old) => String::from_utf8_lossy(old).into_owned(),
                            Err(month) => format!(
                                "(removed under the retention rule; in the export of {month})"
                            ),
                        },
                        String::from_utf8_lossy(entry)
                    )),
                )?;
            }
            None => {} // cannot happen: every seq below next_seq is stored
        }
    } else if seq == st.next_seq {
        append(cx, id, &mut st, (seq, entry, sig, model), Some(&msg.view))?;
        drain_held(cx, id, &mut st)?;
    } else {
        cx.b.noisy.insert(id.to_owned());
        let held: Option<Vec<u8>> =
            cx.b.tx
                .query_row(
                    "SELECT entry FROM held_records WHERE device = ?1 AND seq = ?2",
                    params![id, seq as i64],
                    |r| r.get(0),
                )
                .optional()?;
        match held {
            Some(e) if e == entry => {
                st.duplicates += 1;
                cx.out.duplicates += 1;
            }
            Some(e) => {
                cx.alarm(
                    Some(id),
                    FORK,
                    Some(seq),
                    format!("two different signed records for seq {seq}"),
                    Some(format!(
                        "first: {}\nsecond: {}",
                        String::from_utf8_lossy(&e),
                        String::from_utf8_lossy(entry)
                    )),
                )?;
            }
            None if seq - st.next_seq < MAX_HELD => {
                cx.b.tx.execute(
                    "INSERT INTO held_records (device, seq, entry, sig, model, received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![id, seq as i64, entry, &sig[..], model, cx.now_ms],
                )?;
                cx.out.held += 1;
            }
            None => {}
        }
    }
    cx.b.put_state(id, st);
    Ok(())
}

/// Stores the next record of a device: `(seq, entry, signature, model id)`, and the entry
/// parsed when the caller has it.
fn append(
    cx: &mut Ctx,
    id: &str,
    st: &mut DeviceState,
    (seq, entry, sig, model): (u64, &[u8], &[u8], &str),
    view: Option<&aggregate::RecordView>,
) -> Result<()> {
    let leaf = leaf_hash(entry);
    cx.b.store(id, (seq, model, entry, sig, leaf), view, cx.now_ms)?;
    st.frontier.append(leaf);
    st.next_seq = seq + 1;
    cx.out.stored += 1;
    // A checkpoint that was waiting for exactly this size can now be checked (only a device
    // with held checkpoints or records has one).
    if !cx.b.noisy.contains(id) {
        return Ok(());
    }
    let held: Option<(Vec<u8>, String)> =
        cx.b.tx
            .query_row(
                "SELECT root, note FROM held_checkpoints WHERE device = ?1 AND size = ?2",
                params![id, st.next_seq as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
    if let Some((root, note)) = held {
        cx.b.tx.execute(
            "DELETE FROM held_checkpoints WHERE device = ?1 AND size = ?2",
            params![id, st.next_seq as i64],
        )?;
        let mut r = [0u8; 32];
        if root.len() == 32 {
            r.copy_from_slice(&root);
        }
        let size = st.next_seq;
        let ours = st.frontier.root();
        verified_checkpoint(cx, id, st, size, r, &note, ours)?;
    }
    Ok(())
}

/// Moves held records that now follow the stored ones into the store.
fn drain_held(cx: &mut Ctx, id: &str, st: &mut DeviceState) -> Result<()> {
    if !cx.b.noisy.contains(id) {
        return Ok(());
    }
    loop {
        let next: Option<(Vec<u8>, Vec<u8>, String)> =
            cx.b.tx
                .query_row(
                    "SELECT entry, sig, model FROM held_records WHERE device = ?1 AND seq = ?2",
                    params![id, st.next_seq as i64],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
        let Some((entry, sig, model)) = next else {
            break;
        };
        cx.b.tx.execute(
            "DELETE FROM held_records WHERE device = ?1 AND seq = ?2",
            params![id, st.next_seq as i64],
        )?;
        let seq = st.next_seq;
        append(cx, id, st, (seq, &entry, &sig, &model), None)?;
    }
    // Held records below the watermark (a resend overtook them) are no longer needed.
    cx.b.tx.execute(
        "DELETE FROM held_records WHERE device = ?1 AND seq < ?2",
        params![id, st.next_seq as i64],
    )?;
    Ok(())
}

/// The root of the first `size` stored records (size <= next_seq), recomputed from leaves.
fn root_at(cx: &mut Ctx, id: &str, st: &DeviceState, size: u64) -> Result<Hash> {
    if size == st.next_seq {
        return Ok(st.frontier.root());
    }
    cx.b.flush()?;
    // Records removed under the retention rule count by their kept leaves.
    let mut f = match store::removed_before(cx.b.tx, id, size)? {
        Some((f, _)) => f,
        None => Frontier::new(),
    };
    if f.size() < size
        && let Some((leaves, _)) = store::removed_leaves(cx.b.tx, id, f.size(), size)?
    {
        leaves.into_iter().for_each(|l| f.append(l));
    }
    let mut q = cx.b.tx.prepare_cached(
        "SELECT leaf FROM records WHERE device = ?1 AND seq >= ?2 AND seq < ?3 ORDER BY seq",
    )?;
    let rows = q.query_map(params![id, f.size() as i64, size as i64], |r| {
        r.get::<_, Vec<u8>>(0)
    })?;
    for leaf in rows {
        let leaf = leaf?;
        let mut h = [0u8; 32];
        if leaf.len() == 32 {
            h.copy_from_slice(&leaf);
        }
        f.append(h);
    }
    Ok(f.root())
}

/// A signed checkpoint of an enrolled device.
fn checkpoint(cx: &mut Ctx, id: &str, size: u64, root: Hash, note: &str) -> Result<()> {
    let mut st = cx.b.state(id)?;
    if let Some((vsize, vroot, vnote)) = st.checkpoint.clone() {
        if size < vsize {
            // Older than the verified one: a stale copy (delivered late, for instance through
            // another hub instance) when it matches the stored records at its size; a history
            // rewritten after it was verified when it does not.
            if size <= st.next_seq && root_at(cx, id, &st, size)? == root {
                return Ok(());
            }
            cx.alarm(
                Some(id),
                ROLLBACK,
                Some(size),
                format!(
                    "a signed checkpoint of size {size}, whose root is not that of the stored records, after one of size {vsize} was verified"
                ),
                Some(format!("verified:\n{vnote}\nreceived:\n{note}")),
            )?;
            return Ok(());
        }
        if size == vsize {
            if root != vroot {
                cx.alarm(
                    Some(id),
                    EQUIVOCATION,
                    Some(size),
                    format!("two signed checkpoints of size {size} with different roots"),
                    Some(format!("verified:\n{vnote}\nreceived:\n{note}")),
                )?;
            }
            return Ok(());
        }
    }
    if size <= st.next_seq {
        let ours = root_at(cx, id, &st, size)?;
        verified_checkpoint(cx, id, &mut st, size, root, note, ours)?;
    } else {
        cx.b.noisy.insert(id.to_owned());
        let held: Option<(Vec<u8>, String)> =
            cx.b.tx
                .query_row(
                    "SELECT root, note FROM held_checkpoints WHERE device = ?1 AND size = ?2",
                    params![id, size as i64],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
        match held {
            Some((r, _)) if r == root => {}
            Some((_, other)) => {
                cx.alarm(
                    Some(id),
                    EQUIVOCATION,
                    Some(size),
                    format!("two signed checkpoints of size {size} with different roots"),
                    Some(format!("first:\n{other}\nsecond:\n{note}")),
                )?;
            }
            None => {
                cx.b.tx.execute(
                    "INSERT INTO held_checkpoints (device, size, root, note, received_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![id, size as i64, &root[..], note, cx.now_ms],
                )?;
            }
        }
    }
    cx.b.put_state(id, st);
    Ok(())
}

/// Compares a checkpoint with the hub's own root at its size; records it as the latest
/// verified one when it matches.
fn verified_checkpoint(
    cx: &mut Ctx,
    id: &str,
    st: &mut DeviceState,
    size: u64,
    root: Hash,
    note: &str,
    ours: Hash,
) -> Result<()> {
    if root != ours {
        return cx.alarm(
            Some(id),
            FORK,
            Some(size),
            format!(
                "the device signed root {} at size {size}; the stored records give {}",
                store::hex(&root),
                store::hex(&ours)
            ),
            Some(note.to_owned()),
        );
    }
    match &st.checkpoint {
        Some((s, _, _)) if *s >= size => {}
        _ => st.checkpoint = Some((size, root, note.to_owned())),
    }
    Ok(())
}

/// Raises GAP for each device whose held records or checkpoints have waited longer than
/// `timeout_ms` for the records before them (once per missing position).
pub fn check_gaps(tx: &Transaction, now_ms: i64, timeout_ms: i64) -> Result<u64> {
    let mut q = tx.prepare(
        "SELECT device, MIN(seq), MIN(received_ms), 'record' FROM held_records GROUP BY device
         UNION ALL
         SELECT device, MIN(size), MIN(received_ms), 'checkpoint' FROM held_checkpoints GROUP BY device",
    )?;
    let waiting: Vec<(String, i64, i64, String)> = q
        .query_map(crate::params![], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<_>>()?;
    drop(q);
    // In device order, as batches lock them (several hub instances: no deadlock).
    let mut waiting = waiting;
    waiting.sort();
    let mut raised = 0;
    for (device, first, since, what) in waiting {
        if now_ms - since < timeout_ms {
            continue;
        }
        let mut st = store::load_state(tx, &device)?;
        if st.gap_alarmed_at == Some(st.next_seq) || first as u64 <= st.next_seq {
            continue;
        }
        let detail = if what == "record" {
            format!(
                "{} missing for {} ms while later ones wait",
                audit::seqs(st.next_seq, first as u64),
                now_ms - since
            )
        } else {
            format!(
                "a signed checkpoint of size {first} proves {} exist; missing for {} ms",
                audit::seqs(st.next_seq, first as u64),
                now_ms - since
            )
        };
        store::insert_alarm(
            tx,
            &Alarm::new(now_ms, Some(&device), GAP, Some(st.next_seq), detail),
        )?;
        st.gap_alarmed_at = Some(st.next_seq);
        store::save_state(tx, &device, &st)?;
        raised += 1;
    }
    Ok(raised)
}

/// A record decoded and whether its signature verified with its device's key.
pub type Preverified = (hub_link::RecordMsg, bool);

/// A batch's records decoded and their signatures checked, before its transaction and on two
/// threads: verification is the larger part of ingest's work (Ed25519, `verify_strict`), it
/// needs no database, and done before the transaction it does not hold the locks other hub
/// instances wait for; each record is then decoded once. `Some` for a record of an enrolled
/// device that decodes; `None` for every other message (judged entirely by
/// [`Batch::handle_message`]).
pub fn preverify(enrolment: &Enrolment, batch: &[Message]) -> Vec<Option<Preverified>> {
    let one = |m: &Message| -> Option<Preverified> {
        let Message::Whole { topic, payload } = m else {
            return None;
        };
        let t = Topic::parse(topic).ok()?;
        if !matches!(t.kind, TopicKind::Agg { .. }) {
            return None;
        }
        let device = enrolment
            .devices
            .get(&t.device)
            .filter(|d| d.territory == t.territory)?;
        let msg = hub_link::decode_record(&t, payload).ok()?;
        let valid = audit::verify_entry(&device.key, &msg.entry, &msg.signature).is_ok();
        Some((msg, valid))
    };
    let half = batch.len() / 2;
    if half < 8 {
        return batch.iter().map(one).collect();
    }
    let (first, second) = batch.split_at(half);
    std::thread::scope(|s| {
        let other = s.spawn(|| second.iter().map(one).collect::<Vec<_>>());
        let mut out: Vec<Option<Preverified>> = first.iter().map(one).collect();
        // A panic there leaves those records to be checked in the transaction.
        out.extend(
            other
                .join()
                .unwrap_or_else(|_| second.iter().map(|_| None).collect()),
        );
        out
    })
}

/// One batch of messages in one transaction, written in bulk: the states of the devices it
/// names are loaded (and, on PostgreSQL, locked) together and in order at the start, kept in
/// memory while the messages are judged one by one, and saved together at the end; stored
/// records and their series rows are buffered and written with multi-row statements. The
/// uncommon paths (duplicates, held records and checkpoints, forks, checkpoints to compare
/// with older records) write what is buffered first, then read the tables as before. Reading a
/// message's verdict therefore never depends on how messages are grouped into batches.
pub struct Batch<'t, 'c> {
    tx: &'t Transaction<'c>,
    /// Device states of this batch; `true`: changed, to be saved.
    states: std::collections::BTreeMap<String, (DeviceState, bool)>,
    /// Devices with held records or checkpoints: the others never need those tables read.
    noisy: std::collections::BTreeSet<String>,
    records: Vec<Buffered>,
    points: Vec<crate::db::series::Point>,
    /// When each device was last heard from in this batch.
    seen: std::collections::BTreeMap<String, i64>,
    /// Rejected messages, counted into their alarm rows at the end.
    rejected: rejections::Tally,
}

/// A record to store.
struct Buffered {
    device: String,
    seq: i64,
    model: String,
    entry: Vec<u8>,
    sig: Vec<u8>,
    leaf: [u8; 32],
    at_ms: i64,
}

impl<'t, 'c> Batch<'t, 'c> {
    /// A batch in `tx` that will handle messages of `devices` (more may come: they are loaded
    /// one by one).
    pub fn begin(
        tx: &'t Transaction<'c>,
        devices: &std::collections::BTreeSet<String>,
    ) -> Result<Batch<'t, 'c>> {
        let mut b = Batch {
            tx,
            states: Default::default(),
            noisy: Default::default(),
            records: Vec::new(),
            points: Vec::new(),
            seen: Default::default(),
            rejected: Default::default(),
        };
        b.load(devices.iter().map(String::as_str))?;
        Ok(b)
    }

    /// Loads (and on PostgreSQL locks, in order) the states of `devices` not loaded yet, and
    /// finds which of them have held records or checkpoints.
    fn load<'d>(&mut self, devices: impl Iterator<Item = &'d str>) -> Result<()> {
        use crate::db::sql::{Dialect, ToSql, chunks, insert_rows};
        let mut ids: Vec<&str> = devices.filter(|d| !self.states.contains_key(*d)).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(());
        }
        let pg = self.tx.dialect() == Dialect::Postgres;
        if pg {
            // A row to lock for a device never seen (inserted in order: no deadlock).
            let empty = Frontier::new().to_bytes();
            let zero = 0i64;
            let rows: Vec<Vec<&dyn ToSql>> = ids
                .iter()
                .map(|d| vec![d as &dyn ToSql, &zero, &empty])
                .collect();
            insert_rows(
                self.tx,
                "INSERT INTO devices (device, next_seq, frontier)",
                "ON CONFLICT (device) DO NOTHING",
                3,
                &rows,
            )?;
        }
        for (at, n) in chunks(ids.len()) {
            let chunk = &ids[at..at + n];
            let list = (1..=n)
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let params: Vec<&dyn ToSql> = chunk.iter().map(|d| d as &dyn ToSql).collect();
            let mut found = std::collections::BTreeMap::new();
            let sql = format!(
                "SELECT device, {} FROM devices WHERE device IN ({list}) ORDER BY device{}",
                store::STATE_COLUMNS,
                if pg { " FOR UPDATE" } else { "" }
            );
            let mut q = self.tx.prepare_cached(&sql)?;
            let mut rows = q.query(&params)?;
            while let Some(r) = rows.next()? {
                let device: String = r.get(0)?;
                found.insert(device, store::state_from_row(r, 1)?);
            }
            drop(rows);
            drop(q);
            for d in chunk {
                let st = found.remove(*d).unwrap_or_default();
                self.states.insert((*d).to_owned(), (st, false));
            }
            let sql = format!(
                "SELECT device FROM held_records WHERE device IN ({list})
                 UNION SELECT device FROM held_checkpoints WHERE device IN ({list})"
            );
            let noisy: Vec<String> = self
                .tx
                .prepare_cached(&sql)?
                .query_map(&params, |r| r.get(0))?
                .collect::<Result<_>>()?;
            self.noisy.extend(noisy);
        }
        Ok(())
    }

    /// A device's state as this batch left it.
    fn state(&mut self, id: &str) -> Result<DeviceState> {
        if !self.states.contains_key(id) {
            self.load(std::iter::once(id))?;
        }
        Ok(self
            .states
            .get(id)
            .map(|(s, _)| s.clone())
            .unwrap_or_default())
    }

    fn put_state(&mut self, id: &str, st: DeviceState) {
        self.states.insert(id.to_owned(), (st, true));
    }

    /// Buffers a record to store and its series rows (from `view`, the entry parsed, or
    /// parsed here).
    fn store(
        &mut self,
        id: &str,
        (seq, model, entry, sig, leaf): (u64, &str, &[u8], &[u8], [u8; 32]),
        view: Option<&aggregate::RecordView>,
        at_ms: i64,
    ) -> Result<()> {
        use crate::db::series;
        self.records.push(Buffered {
            device: id.to_owned(),
            seq: seq as i64,
            model: model.to_owned(),
            entry: entry.to_vec(),
            sig: sig.to_vec(),
            leaf,
            at_ms,
        });
        let parsed;
        let view = match view {
            Some(v) => Some(v),
            None => {
                parsed = aggregate::RecordView::parse(entry).ok();
                parsed.as_ref()
            }
        };
        if let Some(view) = view
            && let Some(mut p) = series::points(view)
        {
            if series::is_withheld(view) {
                // Its rows name the series its predecessors filled: those are written first.
                self.flush()?;
                let w = series::withheld_points(self.tx, view, entry, &p)?;
                p.extend(w);
            }
            self.points.extend(p);
        }
        Ok(())
    }

    /// Writes the buffered records and series rows.
    pub fn flush(&mut self) -> Result<()> {
        use crate::db::sql::{ToSql, insert_rows};
        if !self.records.is_empty() {
            let rows: Vec<Vec<&dyn ToSql>> = self
                .records
                .iter()
                .map(|r| {
                    vec![
                        &r.device as &dyn ToSql,
                        &r.seq,
                        &r.model,
                        &r.entry,
                        &r.sig,
                        &r.leaf,
                        &r.at_ms,
                    ]
                })
                .collect();
            insert_rows(
                self.tx,
                "INSERT INTO records (device, seq, model, entry, sig, leaf, stored_ms)",
                "",
                7,
                &rows,
            )?;
            self.records.clear();
        }
        if !self.points.is_empty() {
            crate::db::series::insert(self.tx, &self.points)?;
            self.points.clear();
        }
        Ok(())
    }

    /// Writes what is buffered, the changed states and, last, the rejections. Returns the
    /// topics of the rejected messages that opened a new alarm row (one per row). The
    /// transaction is the caller's to commit.
    pub fn finish(mut self, now_ms: i64) -> Result<Vec<String>> {
        self.flush()?;
        let changed: Vec<(&String, &DeviceState)> = self
            .states
            .iter()
            .filter(|(_, (_, dirty))| *dirty)
            .map(|(d, (s, _))| (d, s))
            .collect();
        store::save_states(self.tx, &changed)?;
        let seen: Vec<(&String, i64)> = self.seen.iter().map(|(d, t)| (d, *t)).collect();
        store::seen(self.tx, &seen)?;
        std::mem::take(&mut self.rejected).write(self.tx, now_ms)
    }

    /// Handles one message of the batch (see [`handle`]); `pre`: the record decoded and its
    /// signature checked, when [`preverify`] did it.
    pub fn handle_message(
        &mut self,
        enrolment: &Enrolment,
        m: &Message,
        pre: Option<&Preverified>,
        now_ms: i64,
    ) -> Result<(Outcome, Option<String>)> {
        match m {
            Message::Whole { topic, payload } => {
                handle_in(self, enrolment, (topic, payload), pre, now_ms)
            }
            Message::Oversized { topic, len, head } => {
                let cx = Ctx {
                    b: self,
                    topic,
                    now_ms,
                    out: Outcome::default(),
                };
                let source = match Topic::parse(topic) {
                    Ok(t) => Source::device(&t.territory, &t.device, enrolled(enrolment, &t)),
                    Err(_) => Source::unparsed(topic),
                };
                cx.reject(
                    OVERSIZED,
                    (source, None),
                    None,
                    format!(
                        "a payload of {len} bytes, over the {} bytes the hub reads",
                        crate::mqtt::MAX_PAYLOAD
                    ),
                    (*len, head),
                )
            }
        }
    }

    /// The ack for a device, from the state this batch leaves.
    pub fn ack(
        &mut self,
        enrolment: &Enrolment,
        device: &str,
    ) -> Result<Option<(String, hub_link::Ack)>> {
        let Some(d) = enrolment.devices.get(device) else {
            return Ok(None);
        };
        let st = self.state(device)?;
        Ok(Some((
            hub_link::ack_topic(&d.territory, &d.id),
            hub_link::Ack {
                origin: d.origin(),
                count: st.next_seq,
                root: st.frontier.root(),
            },
        )))
    }
}
