//! Monthly partitions of the stored records and the retention rule (issue 16).
//!
//! On PostgreSQL `records` is partitioned by month of `stored_ms` (UTC): `records_YYYY_MM`, made
//! ahead of time (this month and the next two), plus a default partition that holds what no
//! monthly one covers (the rows of a database from before partitioning, a clock far off). A
//! monthly partition made while the default one holds rows of its month takes them over.
//! SQLite keeps one table (a commune's volume).
//!
//! The retention rule (`[retention]` in the hub's config) keeps the current month and the
//! `months` full months before it. An older month is removed device by device, oldest first:
//!
//! 1. its records are written, in seq order, to `<export_dir>/<YYYY-MM>/<device>.jsonl`
//!    (the `records.jsonl` format: a frontier line for the records before them, the record
//!    envelopes, a frontier line for the end; `hub verify` checks the months concatenated in
//!    order, followed by the current export); the file is synced before anything is removed;
//! 2. their Merkle leaves (32 bytes a record) and the frontier after them are kept in
//!    `removed_leaves`: the hub still checks an older checkpoint or a resent record against
//!    them, and its exports start with that frontier;
//! 3. the records are removed: per device on SQLite, the whole partition at once
//!    (`DROP TABLE`) on PostgreSQL once every device is exported.
//!
//! Every step can run again after a crash: the file is rewritten the same, the leaves are kept
//! once. A record stored by a hub whose clock ran behind (a later seq in an earlier month) is
//! not removed before the records ahead of it: it moves to the next month.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use audit::Frontier;
use audit::merkle::leaf_hash;

use crate::db::sql::{Connection, Dialect, Error, OptionalExtension, params};

/// Session-level advisory lock held while the retention rule runs (one instance at a time):
/// "iat-ret" in ASCII.
const RETENTION_LOCK: i64 = 0x0069_6174_2d72_6574;
/// Transaction-level lock taken to make a monthly partition: "iat-prt".
const PARTITION_LOCK: i64 = 0x0069_6174_2d70_7274;

/// Records read from the database at a time while exporting.
const CHUNK: i64 = 2000;

const EPOCH: jiff::civil::DateTime = jiff::civil::datetime(1970, 1, 1, 0, 0, 0, 0);

/// A calendar month, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Month {
    pub year: i16,
    pub month: i8,
}

impl Month {
    /// The month of a time (ms since the epoch).
    pub fn of(ms: i64) -> Month {
        let d = EPOCH
            .checked_add(jiff::SignedDuration::from_millis(ms))
            .unwrap_or(EPOCH);
        Month {
            year: d.year(),
            month: d.month(),
        }
    }

    /// Its first millisecond.
    pub fn start_ms(self) -> i64 {
        let d = jiff::civil::Date::new(self.year, self.month, 1)
            .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
            .unwrap_or(EPOCH);
        i64::try_from(d.duration_since(EPOCH).as_millis()).unwrap_or(i64::MAX)
    }

    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// `months` months earlier.
    pub fn minus(self, months: u32) -> Month {
        let total = self.year as i64 * 12 + (self.month as i64 - 1) - months as i64;
        Month {
            year: total.div_euclid(12) as i16,
            month: (total.rem_euclid(12) + 1) as i8,
        }
    }

    /// `2026-09`: the folder of its export.
    pub fn label(self) -> String {
        format!("{:04}-{:02}", self.year, self.month)
    }

    /// `records_2026_09`: its partition on PostgreSQL.
    pub fn table(self) -> String {
        format!("records_{:04}_{:02}", self.year, self.month)
    }
}

/// The `[retention]` section of the hub's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Full months kept before the current one.
    pub months: u32,
    /// Where the removed months are written (a folder per month).
    pub export_dir: PathBuf,
}

/// What one run of the rule removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Per month removed: its label, the devices exported and the records removed.
    pub months: Vec<(String, u64, u64)>,
    /// Records of a later seq stored in an earlier month (a clock behind), moved on.
    pub moved: u64,
    /// Another instance was running the rule: nothing done.
    pub busy: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Db(#[from] Error),
    #[error("{path}: {source}; nothing of this month was removed that is not written there")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "device {device}: {what}; the retention rule stopped before removing its records (check the database)"
    )]
    Damaged { device: String, what: String },
    #[error("retention: {0}")]
    Arrived(String),
}

/// Makes the monthly partitions of this month and the next two (PostgreSQL; nothing on SQLite).
pub fn ensure_partitions(conn: &Connection, now_ms: i64) -> Result<(), Error> {
    if conn.dialect() != Dialect::Postgres {
        return Ok(());
    }
    let mut m = Month::of(now_ms);
    for _ in 0..3 {
        make_partition(conn, m)?;
        m = m.next();
    }
    Ok(())
}

fn make_partition(conn: &Connection, m: Month) -> Result<(), Error> {
    let table = m.table();
    let exists = |c: &Connection| -> Result<bool, Error> {
        let n: i64 = c.query_row(
            "SELECT COUNT(*) FROM pg_class WHERE relname = ?1 AND relkind IN ('r', 'p')",
            params![table],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    };
    if exists(conn)? {
        return Ok(());
    }
    let tx = conn.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock(?1)", params![PARTITION_LOCK])?;
    if exists(&tx)? {
        return Ok(());
    }
    // Waits at most this long for ingest transactions to end; it is tried again later (the
    // partitions are made two months ahead).
    tx.execute_batch("SET LOCAL lock_timeout = '10s'")?;
    let (a, b) = (m.start_ms(), m.next().start_ms());
    let stray: i64 = tx.query_row(
        &format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM records_default
             WHERE stored_ms >= {a} AND stored_ms < {b} LIMIT 1) s"
        ),
        params![],
        |r| r.get(0),
    )?;
    if stray > 0 {
        tx.execute_batch(&format!(
            "CREATE TEMP TABLE iat_moving (LIKE records) ON COMMIT DROP;
             WITH m AS (DELETE FROM records_default WHERE stored_ms >= {a} AND stored_ms < {b}
                        RETURNING *)
             INSERT INTO iat_moving SELECT * FROM m;"
        ))?;
    }
    tx.execute_batch(&format!(
        "CREATE TABLE {table} PARTITION OF records (PRIMARY KEY (device, seq))
           FOR VALUES FROM ({a}) TO ({b});
         CREATE INDEX {table}_model ON {table} (device, model, stored_ms);"
    ))?;
    if stray > 0 {
        tx.execute_batch("INSERT INTO records SELECT * FROM iat_moving")?;
    }
    tx.commit()?;
    tracing::info!("hub: made the partition {table} of the stored records");
    Ok(())
}

/// Runs the retention rule as of `now_ms`: removes every month before the kept ones, each
/// exported first. On PostgreSQL one instance runs it at a time (the others return `busy`).
/// When `stop` is set it ends after the device under way (the next run goes on from there).
pub fn run(
    conn: &Connection,
    rule: &Rule,
    now_ms: i64,
    stop: &AtomicBool,
) -> Result<Report, RetentionError> {
    let pg = conn.dialect() == Dialect::Postgres;
    if pg {
        let got: i64 = conn.query_row(
            "SELECT CASE WHEN pg_try_advisory_lock(?1) THEN 1 ELSE 0 END",
            params![RETENTION_LOCK],
            |r| r.get(0),
        )?;
        if got == 0 {
            return Ok(Report {
                busy: true,
                ..Report::default()
            });
        }
    }
    let out = run_locked(conn, rule, now_ms, stop);
    if pg {
        let _ = conn.execute("SELECT pg_advisory_unlock(?1)", params![RETENTION_LOCK]);
    }
    out
}

fn run_locked(
    conn: &Connection,
    rule: &Rule,
    now_ms: i64,
    stop: &AtomicBool,
) -> Result<Report, RetentionError> {
    let cutoff = Month::of(now_ms).minus(rule.months).start_ms();
    let mut report = Report::default();
    let mut last: Option<Month> = None;
    while let Some(oldest) = oldest_stored(conn)? {
        if oldest >= cutoff {
            break;
        }
        let m = Month::of(oldest);
        if last.is_some_and(|l| m <= l) {
            // The month just removed is still the oldest: something outside this rule keeps
            // rows there (never seen; stops rather than loop).
            break;
        }
        last = Some(m);
        let Some((devices, records, moved)) = remove_month(conn, rule, m, now_ms, stop)? else {
            break;
        };
        report.moved += moved;
        report.months.push((m.label(), devices, records));
    }
    Ok(report)
}

/// The stored time of the oldest record: the first record (by seq) of each device, whose
/// lookup is an index probe (the records of a device are stored in seq order).
fn oldest_stored(conn: &Connection) -> Result<Option<i64>, Error> {
    conn.query_row(
        "SELECT MIN((SELECT r.stored_ms FROM records r WHERE r.device = d.device
                     ORDER BY r.seq LIMIT 1))
         FROM devices d",
        params![],
        |r| r.get::<_, Option<i64>>(0),
    )
}

/// Exports and removes one month; returns the devices exported, the records removed and the
/// records moved to the next month (`None`: stopped before the end).
fn remove_month(
    conn: &Connection,
    rule: &Rule,
    m: Month,
    now_ms: i64,
    stop: &AtomicBool,
) -> Result<Option<(u64, u64, u64)>, RetentionError> {
    let hi = m.next().start_ms();
    let dir = rule.export_dir.join(m.label());
    std::fs::create_dir_all(&dir).map_err(|source| RetentionError::Io {
        path: dir.clone(),
        source,
    })?;
    let devices: Vec<String> = conn
        .prepare("SELECT device FROM devices ORDER BY device")?
        .query_map(params![], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let (mut exported, mut removed, mut moved) = (0, 0, 0);
    for device in devices {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let first: Option<(i64, i64)> = conn
            .query_row(
                "SELECT seq, stored_ms FROM records WHERE device = ?1 ORDER BY seq LIMIT 1",
                params![device],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((first_seq, first_ms)) = first else {
            continue;
        };
        let n = if first_ms < hi {
            exported += 1;
            export_device(conn, &dir, &device, (first_seq, hi), now_ms)?
        } else {
            0
        };
        let cut = first_seq + n as i64;
        let tx = conn.transaction()?;
        // A later seq stored in this month by a clock behind: kept, in the next month.
        moved += tx.execute(
            "UPDATE records SET stored_ms = ?3 WHERE device = ?1 AND seq >= ?2 AND stored_ms < ?3",
            params![device, cut, hi],
        )? as u64;
        if tx.dialect() == Dialect::Sqlite {
            tx.execute(
                "DELETE FROM records WHERE device = ?1 AND seq < ?2",
                params![device, cut],
            )?;
        }
        tx.commit()?;
        removed += n;
    }
    sync_dir(&dir)?;
    if conn.dialect() == Dialect::Postgres {
        let tx = conn.transaction()?;
        tx.execute_batch("SET LOCAL lock_timeout = '60s'")?;
        // Nothing may be stored in this month meanwhile (a hub whose clock is a month behind):
        // what is dropped must be exactly what was written to the files.
        let table = m.table();
        let partition: i64 = tx.query_row(
            "SELECT COUNT(*) FROM pg_class WHERE relname = ?1",
            params![table],
            |r| r.get(0),
        )?;
        if partition > 0 {
            tx.execute_batch(&format!("LOCK TABLE {table} IN SHARE MODE"))?;
        }
        tx.execute_batch("LOCK TABLE records_default IN SHARE MODE")?;
        let left: i64 = tx.query_row(
            "SELECT COUNT(*) FROM records WHERE stored_ms < ?1",
            params![hi],
            |r| r.get(0),
        )?;
        if left as u64 != removed {
            return Err(RetentionError::Arrived(format!(
                "{left} record(s) of {} are stored, {removed} were written to {}: some arrived during the export (a hub's clock behind?); the month stays, the next run exports it again",
                m.label(),
                dir.display()
            )));
        }
        if partition > 0 {
            tx.execute_batch(&format!("DROP TABLE {table}"))?;
        }
        tx.execute("DELETE FROM records WHERE stored_ms < ?1", params![hi])?;
        tx.commit()?;
    }
    tracing::info!(
        "hub: retention: month {} removed ({removed} record(s) of {exported} device(s), written to {})",
        m.label(),
        dir.display()
    );
    Ok(Some((exported, removed, moved)))
}

/// Writes a device's records stored before `hi` (from `first_seq`, in seq order, up to the
/// first stored later) to `<dir>/<device>.jsonl`, synced, then keeps their leaves. Returns
/// how many.
fn export_device(
    conn: &Connection,
    dir: &Path,
    device: &str,
    (first_seq, hi): (i64, i64),
    now_ms: i64,
) -> Result<u64, RetentionError> {
    let damaged = |what: String| RetentionError::Damaged {
        device: device.to_owned(),
        what,
    };
    let mut frontier = match crate::db::store::removed_before(conn, device, first_seq as u64)? {
        Some((f, _)) => f,
        None => Frontier::new(),
    };
    if frontier.size() != first_seq as u64 {
        return Err(damaged(format!(
            "its stored records start at seq {first_seq}, the records removed before end at seq {}",
            frontier.size()
        )));
    }
    let path = dir.join(format!("{device}.jsonl"));
    let tmp = dir.join(format!("{device}.jsonl.part"));
    let io = |p: &Path| {
        let path = p.to_owned();
        move |source| RetentionError::Io { path, source }
    };
    let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    let mut out = std::io::BufWriter::new(file);
    writeln!(out, "{}", verify::export::frontier_line(&frontier)).map_err(io(&tmp))?;
    let mut leaves = Vec::new();
    let mut next = first_seq;
    'chunks: loop {
        let mut q = conn.prepare_cached(
            "SELECT seq, entry, sig, leaf, stored_ms FROM records
             WHERE device = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
        )?;
        let mut rows = q.query(params![device, next, CHUNK])?;
        let mut got = 0;
        while let Some(r) = rows.next()? {
            got += 1;
            let (seq, stored_ms): (i64, i64) = (r.get(0)?, r.get(4)?);
            if stored_ms >= hi {
                break 'chunks;
            }
            if seq != next {
                return Err(damaged(format!(
                    "seq {seq} is stored where {next} was expected"
                )));
            }
            let (entry, sig, leaf): (Vec<u8>, Vec<u8>, Vec<u8>) = (r.get(1)?, r.get(2)?, r.get(3)?);
            let sig: [u8; 64] = sig
                .try_into()
                .map_err(|_| damaged(format!("record {seq} has a bad signature length")))?;
            let h = leaf_hash(&entry);
            if leaf != h {
                return Err(damaged(format!(
                    "record {seq}: its stored leaf is not the hash of its entry"
                )));
            }
            let env = hub_link::encode_record(seq as u64, &entry, &sig)
                .map_err(|e| damaged(format!("record {seq}: {e}")))?;
            out.write_all(&env).map_err(io(&tmp))?;
            out.write_all(b"\n").map_err(io(&tmp))?;
            frontier.append(h);
            leaves.extend_from_slice(&h);
            next += 1;
        }
        if got < CHUNK {
            break;
        }
    }
    writeln!(out, "{}", verify::export::frontier_line(&frontier)).map_err(io(&tmp))?;
    let file = out.into_inner().map_err(|e| io(&tmp)(e.into_error()))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    let n = (next - first_seq) as u64;
    if n > 0 {
        conn.execute(
            "INSERT INTO removed_leaves (device, first_seq, end_seq, leaves, frontier, month, removed_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (device, first_seq) DO NOTHING",
            params![
                device,
                first_seq,
                next,
                leaves,
                frontier.to_bytes(),
                dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                now_ms
            ],
        )?;
    }
    Ok(n)
}

fn sync_dir(dir: &Path) -> Result<(), RetentionError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| RetentionError::Io {
            path: dir.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_calendar_months_in_utc() {
        // 2026-12-31T23:59:59.999Z and the next millisecond.
        let m = Month::of(1_798_761_599_999);
        assert_eq!((m.year, m.month), (2026, 12));
        assert_eq!(Month::of(1_798_761_600_000).label(), "2027-01");
        assert_eq!(m.next().start_ms(), 1_798_761_600_000);
        assert_eq!(m.minus(12).label(), "2025-12");
        assert_eq!(m.minus(11).label(), "2026-01");
        assert_eq!(Month::of(1_798_761_600_000).minus(1), m);
        assert_eq!(m.table(), "records_2026_12");
    }
}
