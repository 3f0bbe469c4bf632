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

struct Ctx<'a, 'b> {
    tx: &'a Transaction<'b>,
    topic: &'a str,
    now_ms: i64,
    out: Outcome,
}

impl Ctx<'_, '_> {
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
            self.tx,
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
        if rejections::count(self.tx, &r, self.now_ms)? {
            self.out.alarms += 1;
        }
        Ok((self.out, None))
    }
}

/// Handles one message as the MQTT side hands it over (see [`handle`]).
pub fn handle_message(
    tx: &Transaction,
    enrolment: &Enrolment,
    m: &Message,
    now_ms: i64,
) -> Result<(Outcome, Option<String>)> {
    match m {
        Message::Whole { topic, payload } => handle(tx, enrolment, topic, payload, now_ms),
        Message::Oversized { topic, len, head } => {
            let cx = Ctx {
                tx,
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

/// Whether the topic's device is enrolled, in the topic's territory.
fn enrolled(enrolment: &Enrolment, t: &Topic) -> bool {
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

/// Handles one message. Returns what it did, and the device to acknowledge (when the message
/// was a verified record or checkpoint of an enrolled device).
pub fn handle(
    tx: &Transaction,
    enrolment: &Enrolment,
    topic: &str,
    payload: &[u8],
    now_ms: i64,
) -> Result<(Outcome, Option<String>)> {
    let mut cx = Ctx {
        tx,
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
                    crate::health::on_status(tx, &t.device, &status, now_ms)?;
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
            let msg = match hub_link::decode_record(&t, payload) {
                Ok(m) => m,
                Err(e) => {
                    let kind = match e {
                        WireError::TopicMismatch { .. } => MISMATCH,
                        _ => MALFORMED,
                    };
                    return cx.reject(kind, unverified(), None, e.to_string(), whole);
                }
            };
            if audit::verify_entry(&device.key, &msg.entry, &msg.signature).is_err() {
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
            record(&mut cx, id, msg.seq, &msg.entry, &msg.signature, &m.id)?;
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
    store::seen(tx, id, now_ms)?;
    Ok((cx.out, Some(id.to_owned())))
}

/// A verified record of an enrolled device: store it in order, hold it, or recognise it.
fn record(
    cx: &mut Ctx,
    id: &str,
    seq: u64,
    entry: &[u8],
    sig: &[u8; 64],
    model: &str,
) -> Result<()> {
    let mut st = store::load_state(cx.tx, id)?;
    let leaf = leaf_hash(entry);
    if seq < st.next_seq {
        match store::stored(cx.tx, id, seq)? {
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
                        String::from_utf8_lossy(&old),
                        String::from_utf8_lossy(entry)
                    )),
                )?;
            }
            None => {} // cannot happen: every seq below next_seq is stored
        }
    } else if seq == st.next_seq {
        append(cx, id, &mut st, seq, entry, sig, model)?;
        drain_held(cx, id, &mut st)?;
    } else {
        let held: Option<Vec<u8>> = cx
            .tx
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
                cx.tx.execute(
                    "INSERT INTO held_records (device, seq, entry, sig, model, received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![id, seq as i64, entry, &sig[..], model, cx.now_ms],
                )?;
                cx.out.held += 1;
            }
            None => {}
        }
    }
    store::save_state(cx.tx, id, &st)
}

fn append(
    cx: &mut Ctx,
    id: &str,
    st: &mut DeviceState,
    seq: u64,
    entry: &[u8],
    sig: &[u8],
    model: &str,
) -> Result<()> {
    let leaf = leaf_hash(entry);
    cx.tx.execute(
        "INSERT INTO records (device, seq, model, entry, sig, leaf, stored_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![id, seq as i64, model, entry, sig, &leaf[..], cx.now_ms],
    )?;
    crate::db::series::on_store(cx.tx, entry)?;
    st.frontier.append(leaf);
    st.next_seq = seq + 1;
    cx.out.stored += 1;
    // A checkpoint that was waiting for exactly this size can now be checked.
    let held: Option<(Vec<u8>, String)> = cx
        .tx
        .query_row(
            "SELECT root, note FROM held_checkpoints WHERE device = ?1 AND size = ?2",
            params![id, st.next_seq as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok();
    if let Some((root, note)) = held {
        cx.tx.execute(
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
    loop {
        let next: Option<(Vec<u8>, Vec<u8>, String)> = cx
            .tx
            .query_row(
                "SELECT entry, sig, model FROM held_records WHERE device = ?1 AND seq = ?2",
                params![id, st.next_seq as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((entry, sig, model)) = next else {
            break;
        };
        cx.tx.execute(
            "DELETE FROM held_records WHERE device = ?1 AND seq = ?2",
            params![id, st.next_seq as i64],
        )?;
        let seq = st.next_seq;
        append(cx, id, st, seq, &entry, &sig, &model)?;
    }
    // Held records below the watermark (a resend overtook them) are no longer needed.
    cx.tx.execute(
        "DELETE FROM held_records WHERE device = ?1 AND seq < ?2",
        params![id, st.next_seq as i64],
    )?;
    Ok(())
}

/// The root of the first `size` stored records (size <= next_seq), recomputed from leaves.
fn root_at(cx: &Ctx, id: &str, st: &DeviceState, size: u64) -> Result<Hash> {
    if size == st.next_seq {
        return Ok(st.frontier.root());
    }
    let mut f = Frontier::new();
    let mut q = cx
        .tx
        .prepare_cached("SELECT leaf FROM records WHERE device = ?1 AND seq < ?2 ORDER BY seq")?;
    let rows = q.query_map(params![id, size as i64], |r| r.get::<_, Vec<u8>>(0))?;
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
    let mut st = store::load_state(cx.tx, id)?;
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
        let held: Option<(Vec<u8>, String)> = cx
            .tx
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
                cx.tx.execute(
                    "INSERT INTO held_checkpoints (device, size, root, note, received_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![id, size as i64, &root[..], note, cx.now_ms],
                )?;
            }
        }
    }
    store::save_state(cx.tx, id, &st)
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
                "records {}..{} missing for {} ms while later ones wait",
                st.next_seq,
                first,
                now_ms - since
            )
        } else {
            format!(
                "a signed checkpoint of size {first} proves records {}..{first} exist; missing for {} ms",
                st.next_seq,
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

/// The ack for a device: its watermark and the root of its stored records.
pub fn ack(
    tx: &Transaction,
    enrolment: &Enrolment,
    device: &str,
) -> Result<Option<(String, hub_link::Ack)>> {
    let Some(d) = enrolment.devices.get(device) else {
        return Ok(None);
    };
    let st = store::load_state(tx, device)?;
    Ok(Some((
        hub_link::ack_topic(&d.territory, &d.id),
        hub_link::Ack {
            origin: d.origin(),
            count: st.next_seq,
            root: st.frontier.root(),
        },
    )))
}
