//! The hub's SQLite database (WAL, `synchronous = FULL`: a record is durable before it is
//! acknowledged): stored records, each device's verification state, records and checkpoints
//! held until the records before them arrive, alarms with their evidence, and device health
//! (status reports and health alarms, `crate::health`).
//!
//! Every table is keyed so that processing a message twice changes nothing: records on
//! (device, seq), held records on (device, seq), held checkpoints on (device, size).

use std::path::{Path, PathBuf};

use audit::Frontier;

pub use crate::db::sql::{Connection, Error, Transaction};
use crate::db::sql::{Database, Dialect, OptionalExtension, ToSql, insert_rows, params};

pub type Result<T> = std::result::Result<T, Error>;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    device TEXT NOT NULL, seq INTEGER NOT NULL, model TEXT NOT NULL,
    entry BLOB NOT NULL, sig BLOB NOT NULL, leaf BLOB NOT NULL, stored_ms INTEGER NOT NULL,
    PRIMARY KEY (device, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (
    device TEXT PRIMARY KEY NOT NULL, next_seq INTEGER NOT NULL, frontier BLOB NOT NULL,
    ckpt_size INTEGER, ckpt_root BLOB, ckpt_note TEXT, gap_alarmed_at INTEGER,
    duplicates INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS held_records (
    device TEXT NOT NULL, seq INTEGER NOT NULL, entry BLOB NOT NULL, sig BLOB NOT NULL,
    model TEXT NOT NULL, received_ms INTEGER NOT NULL,
    PRIMARY KEY (device, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS held_checkpoints (
    device TEXT NOT NULL, size INTEGER NOT NULL, root BLOB NOT NULL, note TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (device, size)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alarms (
    id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, device TEXT, kind TEXT NOT NULL,
    seq INTEGER, detail TEXT NOT NULL, topic TEXT, evidence TEXT);
";

/// Schema version 1 (issue 7): the derived series table (backfilled from stored records),
/// alarm acknowledgement, device presence (status and last seen), admin accounts and sessions.
const SCHEMA_V1: &str = "
ALTER TABLE alarms ADD COLUMN acked_ms INTEGER;
ALTER TABLE alarms ADD COLUMN acked_by TEXT;
CREATE INDEX IF NOT EXISTS alarms_open ON alarms (device, acked_ms);
CREATE TABLE IF NOT EXISTS presence (
    device TEXT PRIMARY KEY NOT NULL, status TEXT, status_ms INTEGER, seen_ms INTEGER);
CREATE TABLE IF NOT EXISTS admins (
    name TEXT PRIMARY KEY NOT NULL, phc TEXT NOT NULL, updated_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash BLOB PRIMARY KEY NOT NULL, name TEXT NOT NULL, csrf TEXT NOT NULL,
    expires_ms INTEGER NOT NULL);
";

/// Schema version 2: device health (`crate::health`). The latest status reports of each device
/// (the newest [`crate::health::KEEP_REPORTS`], to see counters grow between reports), health
/// alarms (one open row per device, kind and subject; `cleared_ms` set when the cause ends),
/// and an index to find a model's latest record without reading the device's whole history.
/// Health alarms are not audit alarms: they live apart from `alarms` and are never acked.
const SCHEMA_V2: &str = "
CREATE TABLE IF NOT EXISTS health_reports (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, received_ms INTEGER NOT NULL,
    report TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS health_reports_device ON health_reports (device, id);
CREATE TABLE IF NOT EXISTS health_alarms (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, kind TEXT NOT NULL,
    subject TEXT NOT NULL DEFAULT '', since_ms INTEGER NOT NULL, raised_ms INTEGER NOT NULL,
    cleared_ms INTEGER, detail TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS health_alarms_open ON health_alarms (device, kind, subject)
    WHERE cleared_ms IS NULL;
CREATE INDEX IF NOT EXISTS health_alarms_cleared ON health_alarms (cleared_ms);
CREATE INDEX IF NOT EXISTS records_model ON records (device, model, stored_ms);
";

/// Schema version 4 (issue 21): alarms carry a severity (real alarms list first), and rejected
/// traffic is coalesced: one row per kind, source and period with a count and a few samples
/// (`crate::db::rejections`). A partial unique index keeps one open row per (kind, period,
/// source); rows of other alarms have no source and stay one per event.
const SCHEMA_V4: &str = "
ALTER TABLE alarms ADD COLUMN severity INTEGER NOT NULL DEFAULT 1;
ALTER TABLE alarms ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
ALTER TABLE alarms ADD COLUMN last_ms INTEGER;
ALTER TABLE alarms ADD COLUMN source TEXT;
ALTER TABLE alarms ADD COLUMN scope INTEGER;
ALTER TABLE alarms ADD COLUMN period_ms INTEGER;
CREATE UNIQUE INDEX IF NOT EXISTS alarms_coalesced ON alarms (kind, period_ms, source)
    WHERE source IS NOT NULL AND acked_ms IS NULL;
CREATE INDEX IF NOT EXISTS alarms_rank ON alarms (severity, id);
";

/// Schema version 5 (issue 16): the Merkle leaves of the records removed under the retention
/// rule (`crate::db::retention`), one row per device and month removed: the leaves of seqs
/// `first_seq..end_seq` (32 bytes each) and the frontier after them.
const SCHEMA_V5: &str = "
CREATE TABLE IF NOT EXISTS removed_leaves (
    device TEXT NOT NULL, first_seq INTEGER NOT NULL, end_seq INTEGER NOT NULL,
    leaves BLOB NOT NULL, frontier BLOB NOT NULL, month TEXT NOT NULL,
    removed_ms INTEGER NOT NULL,
    PRIMARY KEY (device, first_seq)) WITHOUT ROWID;
";

/// Version 5 on PostgreSQL: `records` becomes partitioned by month of `stored_ms`; the table
/// as it was becomes the default partition (no row copied), indexed on `stored_ms` so that a
/// new monthly partition finds its month's rows there quickly.
const PARTITIONED_V5: &str = "
ALTER TABLE records RENAME TO records_default;
ALTER INDEX IF EXISTS records_model RENAME TO records_default_model;
CREATE TABLE records (
    device TEXT NOT NULL, seq BIGINT NOT NULL, model TEXT NOT NULL,
    entry BYTEA NOT NULL, sig BYTEA NOT NULL, leaf BYTEA NOT NULL, stored_ms BIGINT NOT NULL)
    PARTITION BY RANGE (stored_ms);
ALTER TABLE records ATTACH PARTITION records_default DEFAULT;
CREATE INDEX IF NOT EXISTS records_default_stored ON records_default (stored_ms);
";

/// The schema version this build writes (`PRAGMA user_version`). Version 3: the privacy budget
/// of each series row (`crate::db::series::SCHEMA_V3`), and each row's epsilon the record's
/// whole loss (record v2). Version 4: alarm severity and coalesced rejections. Version 5: the
/// leaves of removed records; monthly partitions on PostgreSQL.
pub const SCHEMA_VERSION: i64 = 5;

impl From<&Path> for Database {
    fn from(p: &Path) -> Database {
        Database::Sqlite(p.to_owned())
    }
}
impl From<&PathBuf> for Database {
    fn from(p: &PathBuf) -> Database {
        Database::Sqlite(p.clone())
    }
}
impl From<&Database> for Database {
    fn from(d: &Database) -> Database {
        d.clone()
    }
}

/// The schema text for PostgreSQL: the same tables and indexes as SQLite's, with
/// PostgreSQL's column types (BIGINT for SQLite's 64-bit INTEGER, BYTEA for BLOB, an identity
/// column for SQLite's rowid alias) and without SQLite's `WITHOUT ROWID`.
pub fn postgres_ddl(sqlite: &str) -> String {
    sqlite
        .replace(
            "INTEGER PRIMARY KEY",
            "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        )
        .replace("INTEGER", "BIGINT")
        .replace("BLOB", "BYTEA")
        .replace(" WITHOUT ROWID", "")
}

/// Runs schema text on either engine.
fn ddl(tx: &Connection, sqlite: &str) -> Result<()> {
    match tx.dialect() {
        Dialect::Sqlite => tx.execute_batch(sqlite),
        Dialect::Postgres => tx.execute_batch(&postgres_ddl(sqlite)),
    }
}

/// The advisory lock that serialises schema migrations when several hub instances start on
/// one PostgreSQL database ("iat-hub" in ASCII).
const MIGRATION_LOCK: i64 = 0x0069_6174_2d68_7562;

/// Opens (or creates) the database, migrating it to [`SCHEMA_VERSION`]: a SQLite file (WAL,
/// `synchronous = FULL`), or a PostgreSQL database (the migrations serialised by an advisory
/// lock, so several instances may start at once).
pub fn open(db: impl Into<Database>) -> Result<Connection> {
    let conn = connect(&db.into())?;
    if let Some(c) = conn.sqlite() {
        c.pragma_update(None, "journal_mode", "WAL")?;
    }
    migrate(&conn)?;
    Ok(conn)
}

fn connect(db: &Database) -> Result<Connection> {
    match db {
        Database::Sqlite(path) => {
            let conn = rusqlite::Connection::open(path)?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            Ok(Connection::from_sqlite(conn))
        }
        Database::Postgres(url) => Connection::connect_postgres(url),
    }
}

/// Opens an existing database for reading and small writes from the web side (no migration:
/// the service or `open` did it).
pub fn open_existing(db: impl Into<Database>) -> Result<Connection> {
    match db.into() {
        Database::Sqlite(path) => {
            let conn = rusqlite::Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            Ok(Connection::from_sqlite(conn))
        }
        db @ Database::Postgres(_) => connect(&db),
    }
}

/// The schema version a database is at (SQLite: `PRAGMA user_version`; PostgreSQL: the
/// `hub_schema` table).
pub fn schema_version(conn: &Connection) -> Result<i64> {
    match conn.dialect() {
        Dialect::Sqlite => conn.query_row("PRAGMA user_version", params![], |r| r.get(0)),
        Dialect::Postgres => conn
            .query_row("SELECT version FROM hub_schema", params![], |r| r.get(0))
            .optional()
            .map(|v| v.unwrap_or(0)),
    }
}

fn set_schema_version(conn: &Connection, v: i64) -> Result<()> {
    match conn.dialect() {
        Dialect::Sqlite => conn.execute_batch(&format!("PRAGMA user_version = {v}")),
        Dialect::Postgres => {
            conn.execute("DELETE FROM hub_schema", params![])?;
            conn.execute("INSERT INTO hub_schema (version) VALUES (?1)", params![v])?;
            Ok(())
        }
    }
}

fn migrate(conn: &Connection) -> Result<()> {
    migrate_to(conn, SCHEMA_VERSION)
}

/// Migrates to version `upto` at most (tests build older databases with it).
fn migrate_to(conn: &Connection, upto: i64) -> Result<()> {
    let tx = conn.transaction()?;
    if tx.dialect() == Dialect::Postgres {
        tx.execute("SELECT pg_advisory_xact_lock(?1)", params![MIGRATION_LOCK])?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS hub_schema (version BIGINT NOT NULL)")?;
    }
    ddl(&tx, SCHEMA)?;
    let version = schema_version(&tx)?;
    if version < 1 && upto >= 1 {
        ddl(&tx, SCHEMA_V1)?;
        ddl(&tx, crate::db::series::SCHEMA)?;
        set_schema_version(&tx, 1)?;
    }
    if version < 2 && upto >= 2 {
        ddl(&tx, SCHEMA_V2)?;
        set_schema_version(&tx, 2)?;
    }
    if version < 3 && upto >= 3 {
        ddl(&tx, crate::db::series::SCHEMA_V3)?;
        set_schema_version(&tx, 3)?;
    }
    if version < 4 && upto >= 4 {
        ddl(&tx, SCHEMA_V4)?;
        // The alarms already raised, ranked by their kind.
        let kinds: Vec<String> = tx
            .prepare("SELECT DISTINCT kind FROM alarms")?
            .query_map(params![], |r| r.get(0))?
            .collect::<Result<_>>()?;
        for k in kinds {
            tx.execute(
                "UPDATE alarms SET severity = ?2 WHERE kind = ?1",
                params![k, Severity::of(&k) as i64],
            )?;
        }
        set_schema_version(&tx, 4)?;
    }
    if version < 5 && upto >= 5 {
        ddl(&tx, SCHEMA_V5)?;
        if tx.dialect() == Dialect::Postgres {
            tx.execute_batch(PARTITIONED_V5)?;
        }
        set_schema_version(&tx, 5)?;
    }
    // The series rows, once the table has every column: all of them for a database from
    // before the table, those of records with a budget for one from before version 3.
    if version < 1 {
        crate::db::series::backfill(&tx)?;
    } else if version < 3 {
        crate::db::series::backfill_budgets(&tx)?;
    }
    tx.commit()?;
    if upto < 5 {
        return Ok(());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    crate::db::retention::ensure_partitions(conn, now)
}

/// Notes when devices were heard from (a verified record or checkpoint), one row each.
pub fn seen(tx: &Transaction, seen: &[(&String, i64)]) -> Result<()> {
    let rows: Vec<Vec<&dyn ToSql>> = seen.iter().map(|(d, t)| vec![d as &dyn ToSql, t]).collect();
    insert_rows(
        tx,
        "INSERT INTO presence (device, seen_ms)",
        "ON CONFLICT (device) DO UPDATE SET seen_ms = CASE
           WHEN COALESCE(presence.seen_ms, 0) > excluded.seen_ms THEN presence.seen_ms
           ELSE excluded.seen_ms END",
        2,
        &rows,
    )
}

/// Records a device's retained status (`online`, or the last will `offline`).
pub fn status(tx: &Transaction, device: &str, status: &str, now_ms: i64) -> Result<()> {
    tx.execute(
        "INSERT INTO presence (device, status, status_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT(device) DO UPDATE SET status = ?2, status_ms = ?3",
        params![device, status, now_ms],
    )?;
    Ok(())
}

/// What the hub knows of one device's log.
#[derive(Debug, Clone)]
pub struct DeviceState {
    /// Every seq below this is stored and verified: the acknowledged watermark.
    pub next_seq: u64,
    /// The Merkle frontier of those records.
    pub frontier: Frontier,
    /// The largest checkpoint verified against stored records.
    pub checkpoint: Option<(u64, [u8; 32], String)>,
    /// The `next_seq` at which a GAP was last raised (one alarm per gap).
    pub gap_alarmed_at: Option<u64>,
    pub duplicates: u64,
}

impl Default for DeviceState {
    fn default() -> Self {
        DeviceState {
            next_seq: 0,
            frontier: Frontier::new(),
            checkpoint: None,
            gap_alarmed_at: None,
            duplicates: 0,
        }
    }
}

fn hash(v: Vec<u8>) -> [u8; 32] {
    let mut h = [0u8; 32];
    if v.len() == 32 {
        h.copy_from_slice(&v);
    }
    h
}

/// The columns of a device's state, in the order [`state_from_row`] reads them.
pub const STATE_COLUMNS: &str =
    "next_seq, frontier, ckpt_size, ckpt_root, ckpt_note, gap_alarmed_at, duplicates";

/// A device's state from the [`STATE_COLUMNS`] of a row, starting at column `at`.
pub fn state_from_row(r: crate::db::sql::Row<'_>, at: usize) -> Result<DeviceState> {
    let next: i64 = r.get(at)?;
    let frontier: Vec<u8> = r.get(at + 1)?;
    let size: Option<i64> = r.get(at + 2)?;
    let root: Option<Vec<u8>> = r.get(at + 3)?;
    let note: Option<String> = r.get(at + 4)?;
    let gap: Option<i64> = r.get(at + 5)?;
    let dups: i64 = r.get(at + 6)?;
    // The frontier was written by this module; a bad one means a damaged database.
    let frontier = Frontier::from_bytes(&frontier).map_err(|e| Error::conversion(at + 1, e))?;
    Ok(DeviceState {
        next_seq: next as u64,
        frontier,
        checkpoint: match (size, root, note) {
            (Some(s), Some(r), Some(n)) => Some((s as u64, hash(r), n)),
            _ => None,
        },
        gap_alarmed_at: gap.map(|g| g as u64),
        duplicates: dups as u64,
    })
}

/// A device's state as the values of [`STATE_COLUMNS`].
struct StateColumns {
    next_seq: i64,
    frontier: Vec<u8>,
    size: Option<i64>,
    root: Option<Vec<u8>>,
    note: Option<String>,
    gap: Option<i64>,
    duplicates: i64,
}

impl StateColumns {
    fn of(s: &DeviceState) -> StateColumns {
        let (size, root, note) = match &s.checkpoint {
            Some((size, root, note)) => {
                (Some(*size as i64), Some(root.to_vec()), Some(note.clone()))
            }
            None => (None, None, None),
        };
        StateColumns {
            next_seq: s.next_seq as i64,
            frontier: s.frontier.to_bytes(),
            size,
            root,
            note,
            gap: s.gap_alarmed_at.map(|g| g as i64),
            duplicates: s.duplicates as i64,
        }
    }

    fn params(&self) -> Vec<&dyn ToSql> {
        vec![
            &self.next_seq,
            &self.frontier,
            &self.size,
            &self.root,
            &self.note,
            &self.gap,
            &self.duplicates,
        ]
    }
}

/// A device's state; on PostgreSQL its row stays locked until the transaction ends (several
/// hub instances may receive one device's records: each must see what the others committed
/// before it judges one; `crate::ingest::Batch` locks a batch's devices together, in order).
pub fn load_state(tx: &Transaction, device: &str) -> Result<DeviceState> {
    let sql = match tx.dialect() {
        Dialect::Sqlite => format!("SELECT {STATE_COLUMNS} FROM devices WHERE device = ?1"),
        Dialect::Postgres => {
            format!("SELECT {STATE_COLUMNS} FROM devices WHERE device = ?1 FOR UPDATE")
        }
    };
    Ok(tx
        .query_row(&sql, params![device], |r| state_from_row(r, 0))
        .optional()?
        .unwrap_or_default())
}

pub fn save_state(tx: &Transaction, device: &str, s: &DeviceState) -> Result<()> {
    save_states(tx, &[(&device.to_owned(), s)])
}

/// Saves device states, with multi-row upserts.
pub fn save_states(tx: &Transaction, states: &[(&String, &DeviceState)]) -> Result<()> {
    let cols: Vec<StateColumns> = states.iter().map(|(_, s)| StateColumns::of(s)).collect();
    let rows: Vec<Vec<&dyn ToSql>> = states
        .iter()
        .zip(&cols)
        .map(|((d, _), c)| {
            let mut v: Vec<&dyn ToSql> = vec![*d as &dyn ToSql];
            v.extend(c.params());
            v
        })
        .collect();
    insert_rows(
        tx,
        "INSERT INTO devices (device, next_seq, frontier, ckpt_size, ckpt_root, ckpt_note, gap_alarmed_at, duplicates)",
        "ON CONFLICT (device) DO UPDATE SET next_seq = excluded.next_seq,
           frontier = excluded.frontier, ckpt_size = excluded.ckpt_size,
           ckpt_root = excluded.ckpt_root, ckpt_note = excluded.ckpt_note,
           gap_alarmed_at = excluded.gap_alarmed_at, duplicates = excluded.duplicates",
        8,
        &rows,
    )
}

/// A record the hub has verified: its leaf hash, and its entry while it is stored (`Err` with
/// the month of its export once the retention rule removed it).
pub type Known = ([u8; 32], std::result::Result<Vec<u8>, String>);

/// A verified record's leaf hash and entry, stored or removed under the retention rule.
pub fn stored(tx: &Transaction, device: &str, seq: u64) -> Result<Option<Known>> {
    let kept = tx
        .query_row(
            "SELECT leaf, entry FROM records WHERE device = ?1 AND seq = ?2",
            params![device, seq as i64],
            |r| Ok((hash(r.get(0)?), Ok(r.get(1)?))),
        )
        .optional()?;
    if kept.is_some() {
        return Ok(kept);
    }
    Ok(removed_leaves(tx, device, seq, seq + 1)?.map(|(leaves, month)| (leaves[0], Err(month))))
}

/// The leaves of seqs `from..to` of a device's removed records, when one removed month holds
/// them all, with that month.
pub fn removed_leaves(
    conn: &Connection,
    device: &str,
    from: u64,
    to: u64,
) -> Result<Option<(Vec<[u8; 32]>, String)>> {
    let row: Option<(i64, Vec<u8>, String)> = conn
        .query_row(
            "SELECT first_seq, leaves, month FROM removed_leaves
             WHERE device = ?1 AND first_seq <= ?2 AND end_seq >= ?3",
            params![device, from as i64, to as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((first, leaves, month)) = row else {
        return Ok(None);
    };
    let at = (from - first as u64) as usize * 32..(to - first as u64) as usize * 32;
    let Some(bytes) = leaves.get(at) else {
        return Err(Error::conversion(
            1,
            "removed leaves shorter than their seq range",
        ));
    };
    Ok(Some((
        bytes.chunks_exact(32).map(|c| hash(c.to_vec())).collect(),
        month,
    )))
}

/// The frontier of a device's records removed under the retention rule that end at or
/// before `seq` (the last such month), with that month.
pub fn removed_before(
    conn: &Connection,
    device: &str,
    seq: u64,
) -> Result<Option<(Frontier, String)>> {
    let row: Option<(Vec<u8>, String)> = conn
        .query_row(
            "SELECT frontier, month FROM removed_leaves WHERE device = ?1 AND end_seq <= ?2
             ORDER BY end_seq DESC LIMIT 1",
            params![device, seq.min(i64::MAX as u64) as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    row.map(|(f, m)| {
        Frontier::from_bytes(&f)
            .map(|f| (f, m))
            .map_err(|e| Error::conversion(0, e))
    })
    .transpose()
}

/// How serious an alarm is; lists show the most serious first, so that no flood of rejected
/// traffic (notices) hides a FORK or a GAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Traffic refused before anything was verified: unenrolled senders, malformed or oversized
    /// messages.
    Notice = 0,
    /// A device's own message that cannot be used: a model it is not enrolled for, a record on
    /// a topic that is not its own.
    Warning = 1,
    /// Records missing (GAP), or a signature that does not verify on an enrolled device's topic.
    High = 2,
    /// Proof of tampering signed by the device's key: FORK, EQUIVOCATION, ROLLBACK.
    Critical = 3,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Critical,
        Severity::High,
        Severity::Warning,
        Severity::Notice,
    ];

    /// The severity of an alarm kind (`crate::ingest`'s kinds; unknown kinds are warnings).
    pub fn of(kind: &str) -> Severity {
        use crate::ingest::*;
        match kind {
            FORK | EQUIVOCATION | ROLLBACK => Severity::Critical,
            GAP | BAD_SIGNATURE => Severity::High,
            UNENROLLED | MALFORMED | OVERSIZED => Severity::Notice,
            _ => Severity::Warning,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Warning => "warning",
            Severity::Notice => "notice",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|v| v.name() == s)
    }

    pub fn from_db(v: i64) -> Severity {
        match v {
            3.. => Severity::Critical,
            2 => Severity::High,
            1 => Severity::Warning,
            _ => Severity::Notice,
        }
    }
}

/// One alarm row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Alarm {
    pub at_ms: i64,
    /// The device the alarm is about: set only when the device's signature verified (or for a
    /// GAP of its records); rejected traffic on its topic names the topic in `source` instead.
    pub device: Option<String>,
    pub kind: String,
    pub seq: Option<u64>,
    pub detail: String,
    pub topic: Option<String>,
    pub evidence: Option<String>,
    pub severity: Severity,
    /// How many messages the row stands for (rejected traffic is coalesced; otherwise 1).
    pub count: u64,
    /// The last of them (coalesced rows).
    pub last_ms: Option<i64>,
    /// Where rejected traffic came from: a device's topics `iat/v1/T/D`, a territory's
    /// `iat/v1/T/+`, or `*` (any other source).
    pub source: Option<String>,
}

impl Alarm {
    /// A new alarm about one event.
    pub fn new(
        at_ms: i64,
        device: Option<&str>,
        kind: &str,
        seq: Option<u64>,
        detail: String,
    ) -> Alarm {
        Alarm {
            at_ms,
            device: device.map(str::to_owned),
            kind: kind.to_owned(),
            seq,
            detail,
            topic: None,
            evidence: None,
            severity: Severity::of(kind),
            count: 1,
            last_ms: None,
            source: None,
        }
    }
}

/// Inserts one alarm about one event (coalesced rejections: `crate::db::rejections`).
pub fn insert_alarm(tx: &Transaction, a: &Alarm) -> Result<()> {
    tx.execute(
        "INSERT INTO alarms (at_ms, device, kind, seq, detail, topic, evidence, severity) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            a.at_ms,
            a.device,
            a.kind,
            a.seq.map(|s| s as i64),
            a.detail,
            a.topic,
            a.evidence,
            a.severity as i64
        ],
    )?;
    Ok(())
}

/// What the database holds, for people and tests.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub devices: Vec<DeviceStats>,
    pub alarms: Vec<Alarm>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceStats {
    pub device: String,
    pub stored: u64,
    pub next_seq: u64,
    pub duplicates: u64,
    pub held: u64,
    pub checkpoint_size: Option<u64>,
    /// Root of the stored records, hex.
    pub root: String,
}

pub fn stats(conn: &Connection) -> Result<Stats> {
    let mut devices = Vec::new();
    let mut q = conn.prepare(
        "SELECT d.device, d.next_seq, d.frontier, d.duplicates, d.ckpt_size,
           (SELECT COUNT(*) FROM records r WHERE r.device = d.device),
           (SELECT COUNT(*) FROM held_records h WHERE h.device = d.device)
         FROM devices d ORDER BY d.device",
    )?;
    let rows = q.query_map(params![], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, Vec<u8>>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Option<i64>>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, i64>(6)?,
        ))
    })?;
    for row in rows {
        let (device, next, frontier, dups, ckpt, stored, held) = row?;
        let root = Frontier::from_bytes(&frontier)
            .map(|f| hex(&f.root()))
            .unwrap_or_default();
        devices.push(DeviceStats {
            device,
            stored: stored as u64,
            next_seq: next as u64,
            duplicates: dups as u64,
            held: held as u64,
            checkpoint_size: ckpt.map(|c| c as u64),
            root,
        });
    }
    let mut alarms = Vec::new();
    let mut q = conn.prepare(
        "SELECT at_ms, device, kind, seq, detail, topic, evidence, severity, count, last_ms, source
         FROM alarms ORDER BY id",
    )?;
    let rows = q.query_map(params![], |r| {
        Ok(Alarm {
            at_ms: r.get(0)?,
            device: r.get(1)?,
            kind: r.get(2)?,
            seq: r.get::<_, Option<i64>>(3)?.map(|s| s as u64),
            detail: r.get(4)?,
            topic: r.get(5)?,
            evidence: r.get(6)?,
            severity: Severity::from_db(r.get(7)?),
            count: r.get::<_, i64>(8)?.max(0) as u64,
            last_ms: r.get(9)?,
            source: r.get(10)?,
        })
    })?;
    for a in rows {
        alarms.push(a?);
    }
    Ok(Stats { devices, alarms })
}

/// One stored record.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub seq: u64,
    pub entry: Vec<u8>,
    pub signature: Vec<u8>,
}

/// A device's records as `records.jsonl` publishes them (docs/hub-api.md), line by line to
/// `out` (each without its newline): the frontier line of the records removed under the
/// retention rule when there are some, then the record envelopes in seq order.
pub fn for_each_export_line<E: From<Error>>(
    conn: &Connection,
    device: &str,
    mut out: impl FnMut(&[u8]) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let from = match removed_before(conn, device, u64::MAX)? {
        Some((f, _)) => {
            out(verify::export::frontier_line(&f).as_bytes())?;
            f.size()
        }
        None => 0,
    };
    for_each_record(conn, device, from, |r| {
        let sig: [u8; 64] = r.signature.as_slice().try_into().map_err(|_| {
            Error::conversion(2, format!("record {} has a bad signature length", r.seq))
        })?;
        let env = hub_link::encode_record(r.seq, &r.entry, &sig)
            .map_err(|e| Error::conversion(1, format!("record {}: {e}", r.seq)))?;
        out(&env)?;
        Ok::<_, E>(true)
    })
}

/// Every stored record of a device in seq order.
pub fn records(conn: &Connection, device: &str) -> Result<Vec<StoredRecord>> {
    let mut out = Vec::new();
    for_each_record(conn, device, 0, |r| {
        out.push(r);
        Ok::<_, Error>(true)
    })?;
    Ok(out)
}

/// Hands every stored record of a device from seq `from` to `f` in seq order, one at a time
/// (an export streams them without holding them all), until `f` returns `false`.
pub fn for_each_record<E: From<Error>>(
    conn: &Connection,
    device: &str,
    from: u64,
    mut f: impl FnMut(StoredRecord) -> std::result::Result<bool, E>,
) -> std::result::Result<(), E> {
    let mut q = conn.prepare_cached(
        "SELECT seq, entry, sig FROM records WHERE device = ?1 AND seq >= ?2 ORDER BY seq",
    )?;
    let mut rows = q.stream(params![device, from as i64])?;
    while let Some(r) = rows.next()? {
        let rec = StoredRecord {
            seq: r.get::<_, i64>(0)? as u64,
            entry: r.get(1)?,
            signature: r.get(2)?,
        };
        if !f(rec)? {
            break;
        }
    }
    Ok(())
}

/// The latest checkpoint of a device the hub verified, verbatim (`None`: none yet, or no such
/// device): the register's `checkpoint.txt` and `hub records --checkpoint`.
pub fn checkpoint_note(conn: &Connection, device: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT ckpt_note FROM devices WHERE device = ?1",
            params![device],
            |r| r.get::<_, Option<String>>(0),
        )
        .optional()?
        .flatten())
}

/// The Merkle leaves of a device's seqs `0..end`: those of the records removed under the
/// retention rule, then those of the stored records. `None` when the hub does not hold them all
/// (fewer records stored than `end`).
pub fn leaves(conn: &Connection, device: &str, end: u64) -> Result<Option<Vec<[u8; 32]>>> {
    let mut out: Vec<[u8; 32]> = Vec::new();
    {
        let mut q = conn.prepare_cached(
            "SELECT first_seq, leaves FROM removed_leaves WHERE device = ?1 AND first_seq < ?2
             ORDER BY first_seq",
        )?;
        let mut rows = q.stream(params![device, end.min(i64::MAX as u64) as i64])?;
        while let Some(r) = rows.next()? {
            let first = r.get::<_, i64>(0)? as u64;
            let bytes: Vec<u8> = r.get(1)?;
            if first != out.len() as u64 {
                return Ok(None);
            }
            out.extend(bytes.chunks_exact(32).map(|c| hash(c.to_vec())));
        }
    }
    out.truncate(end.min(out.len() as u64) as usize);
    let mut q = conn.prepare_cached(
        "SELECT seq, leaf FROM records WHERE device = ?1 AND seq >= ?2 AND seq < ?3 ORDER BY seq",
    )?;
    let mut rows = q.stream(params![
        device,
        out.len() as i64,
        end.min(i64::MAX as u64) as i64
    ])?;
    while let Some(r) = rows.next()? {
        if r.get::<_, i64>(0)? as u64 != out.len() as u64 {
            return Ok(None);
        }
        out.push(hash(r.get(1)?));
    }
    drop(rows);
    Ok((out.len() as u64 == end).then_some(out))
}

/// Lower-case hexadecimal: the one the verifiers print (`verify::hex`).
pub use verify::hex;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::retention::Month;

    /// A database of schema 4 with records of an old month and of this month: version 5
    /// partitions `records` (PostgreSQL) without losing or copying a row it need not, and
    /// ingest's lookups find every record.
    #[test]
    fn schema_4_records_migrate_to_monthly_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::sql::test_database(dir.path());
        let conn = connect(&db).unwrap();
        migrate_to(&conn, 4).unwrap();
        assert_eq!(schema_version(&conn).unwrap(), 4);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let old = Month::of(now).minus(5).start_ms() + 1000;
        let tx = conn.transaction().unwrap();
        for seq in 0..6i64 {
            let at = if seq < 4 { old + seq } else { now + seq };
            let leaf = audit::merkle::leaf_hash(&[seq as u8]).to_vec();
            tx.execute(
                "INSERT INTO records (device, seq, model, entry, sig, leaf, stored_ms)
                 VALUES ('d', ?1, 'm', ?2, ?3, ?4, ?5)",
                params![seq, vec![seq as u8], vec![0u8; 64], leaf, at],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        drop(conn);
        let conn = open(db).unwrap();
        assert_eq!(schema_version(&conn).unwrap(), SCHEMA_VERSION);
        let count = |sql: &str| -> i64 { conn.query_row(sql, params![], |r| r.get(0)).unwrap() };
        assert_eq!(count("SELECT COUNT(*) FROM records"), 6);
        if conn.dialect() == Dialect::Postgres {
            // The old month stays in the default partition; this month's rows moved to the
            // partition made for it.
            assert_eq!(count("SELECT COUNT(*) FROM records_default"), 4);
            let this = Month::of(now).table();
            assert_eq!(count(&format!("SELECT COUNT(*) FROM {this}")), 2);
            assert_eq!(
                count(
                    "SELECT COUNT(*) FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid WHERE c.relname = 'records'"
                ),
                1
            );
        }
        let tx = conn.transaction().unwrap();
        for seq in 0..6u64 {
            let (leaf, entry) = stored(&tx, "d", seq).unwrap().expect("stored");
            assert_eq!(leaf, audit::merkle::leaf_hash(&[seq as u8]));
            assert_eq!(entry, Ok(vec![seq as u8]));
        }
    }
}
