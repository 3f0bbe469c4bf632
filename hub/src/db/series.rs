//! The derived `series` table: one row per stored record, aggregate kind and class, filled at
//! ingest (and backfilled from stored records by the schema migration), indexed by device,
//! model, kind, class and window start, so that charts, the API and exports never re-parse
//! record blobs. The records stay the source of truth; this table can be rebuilt from them.
//!
//! Privacy markers travel with every value: a suppressed count is a NULL value with its
//! `*_sup` flag set (never a number), and each row keeps the record's `k` and noise epsilon.

use aggregate::RecordView;
use aggregate::privacy::Published;
use rusqlite::{Connection, Transaction, params};

use crate::dates;
use crate::db::store::Result;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS series (
    device TEXT NOT NULL, model TEXT NOT NULL, kind TEXT NOT NULL, class TEXT NOT NULL,
    start_ms INTEGER NOT NULL, seq INTEGER NOT NULL, length_ms INTEGER NOT NULL,
    partial INTEGER NOT NULL, clock_jumps INTEGER NOT NULL,
    n INTEGER NOT NULL,
    value INTEGER, value_sup INTEGER NOT NULL,
    peak INTEGER, peak_sup INTEGER NOT NULL,
    k INTEGER NOT NULL, epsilon_milli INTEGER,
    PRIMARY KEY (device, model, kind, class, start_ms, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS series_keys (
    device TEXT NOT NULL, model TEXT NOT NULL, kind TEXT NOT NULL, class TEXT NOT NULL,
    PRIMARY KEY (device, model, kind, class)) WITHOUT ROWID;
";

/// The aggregate kinds, as records name them.
pub const KINDS: [&str; 4] = ["count", "presence_share", "speech_share", "level_stats"];

/// One value of one class in one window, as published.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Point {
    pub device: String,
    pub model: String,
    pub kind: String,
    pub class: String,
    pub start_ms: i64,
    pub seq: u64,
    pub length_ms: i64,
    pub partial: bool,
    pub clock_jumps: u32,
    /// Observations behind the value (frames, observed ms, readings): never suppressed.
    pub n: u64,
    /// `count`: total; `presence_share`: share in ppm; `speech_share`: share in ppm;
    /// `level_stats`: mean in thousandths. `None` when suppressed or not measured.
    pub value: Option<i64>,
    pub value_suppressed: bool,
    /// `count`: max at once; `presence_share`: present frames; `level_stats`: max.
    pub peak: Option<i64>,
    pub peak_suppressed: bool,
    pub k: u64,
    pub epsilon_milli: Option<u64>,
}

fn published(p: &Published) -> (Option<i64>, bool) {
    match p {
        Published::Value(v) => (i64::try_from(*v).ok(), false),
        Published::Suppressed => (None, true),
    }
}

/// The rows of one parsed record. `None` when its window label is not a date (cannot happen
/// for a record that parsed: the aggregator writes it; the hub then stores no row for it).
pub fn points(view: &RecordView) -> Option<Vec<Point>> {
    let start_ms = dates::parse(&view.window.start)?;
    let base = |kind: &str, class: &str| Point {
        device: view.device.clone(),
        model: view.model.id.clone(),
        kind: kind.to_owned(),
        class: class.to_owned(),
        start_ms,
        seq: view.seq,
        length_ms: view.window.length_ms as i64,
        partial: view.window.partial,
        clock_jumps: view.window.clock_jumps,
        n: 0,
        value: None,
        value_suppressed: false,
        peak: None,
        peak_suppressed: false,
        k: view.privacy.k,
        epsilon_milli: view.privacy.noise.as_ref().map(|n| n.epsilon_milli),
    };
    // A point whose value and peak are published under the privacy rules (each may be
    // suppressed).
    let with_published = |kind: &str, class: &str, n: u64, value: &Published, peak: &Published| {
        let (value, value_suppressed) = published(value);
        let (peak, peak_suppressed) = published(peak);
        Point {
            n,
            value,
            value_suppressed,
            peak,
            peak_suppressed,
            ..base(kind, class)
        }
    };
    let a = &view.aggregates;
    let mut out = Vec::new();
    for (class, c) in &a.count {
        out.push(with_published("count", class, c.frames, &c.total, &c.max));
    }
    for (class, p) in &a.presence_share {
        out.push(with_published(
            "presence_share",
            class,
            p.frames,
            &p.share_ppm,
            &p.present_frames,
        ));
    }
    for (class, s) in &a.speech_share {
        out.push(Point {
            n: s.observed_ms,
            value: i64::try_from(s.share_ppm).ok(),
            ..base("speech_share", class)
        });
    }
    for (class, l) in &a.level_stats {
        out.push(Point {
            n: l.n,
            value: l.mean_milli,
            peak: l.max_milli,
            ..base("level_stats", class)
        });
    }
    Some(out)
}

/// Inserts the rows of one record (idempotent on the primary key).
pub fn insert(conn: &Connection, points: &[Point]) -> Result<()> {
    let mut q = conn.prepare_cached(
        "INSERT OR REPLACE INTO series (device, model, kind, class, start_ms, seq, length_ms,
           partial, clock_jumps, n, value, value_sup, peak, peak_sup, k, epsilon_milli)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?;
    let mut keys = conn.prepare_cached(
        "INSERT OR IGNORE INTO series_keys (device, model, kind, class) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut last: Option<(&str, &str, &str, &str)> = None;
    for p in points {
        let key = (&*p.device, &*p.model, &*p.kind, &*p.class);
        if last != Some(key) {
            keys.execute(params![p.device, p.model, p.kind, p.class])?;
            last = Some(key);
        }
        q.execute(params![
            p.device,
            p.model,
            p.kind,
            p.class,
            p.start_ms,
            p.seq as i64,
            p.length_ms,
            p.partial,
            p.clock_jumps,
            p.n as i64,
            p.value,
            p.value_suppressed,
            p.peak,
            p.peak_suppressed,
            p.k as i64,
            p.epsilon_milli.map(|e| e as i64),
        ])?;
    }
    Ok(())
}

/// Called by ingest for every record it stores.
pub fn on_store(tx: &Transaction, entry: &[u8]) -> Result<()> {
    if let Ok(view) = RecordView::parse(entry)
        && let Some(p) = points(&view)
    {
        insert(tx, &p)?;
    }
    Ok(())
}

/// Fills the table from every stored record (the migration that introduced it).
pub fn backfill(tx: &Transaction) -> Result<u64> {
    let mut q = tx.prepare("SELECT entry FROM records")?;
    let mut rows = q.query([])?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        let entry: Vec<u8> = r.get(0)?;
        on_store(tx, &entry)?;
        n += 1;
    }
    Ok(n)
}

/// A series a device publishes: one model, kind and class.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct SeriesKey {
    pub model: String,
    pub kind: String,
    pub class: String,
}

/// The series keys of a device, from the small `series_keys` table that insert maintains
/// (finding them in `series` itself means stepping over a year of rows per key).
pub fn keys(conn: &Connection, device: &str) -> Result<Vec<SeriesKey>> {
    let mut q = conn.prepare_cached(
        "SELECT model, kind, class FROM series_keys WHERE device = ?1 ORDER BY model, kind, class",
    )?;
    let rows = q.query_map([device], |r| {
        Ok(SeriesKey {
            model: r.get(0)?,
            kind: r.get(1)?,
            class: r.get(2)?,
        })
    })?;
    rows.collect()
}

/// The start of the latest window of a device, over all its series (index seeks only).
pub fn last_start(conn: &Connection, device: &str) -> Result<Option<i64>> {
    let mut q = conn.prepare_cached(
        "SELECT MAX(start_ms) FROM series
         WHERE device = ?1 AND model = ?2 AND kind = ?3 AND class = ?4",
    )?;
    let mut last = None;
    for k in keys(conn, device)? {
        let m: Option<i64> =
            q.query_row(params![device, k.model, k.kind, k.class], |r| r.get(0))?;
        last = last.max(m);
    }
    Ok(last)
}

/// The first and last window start of a device's results from one model (index seeks only).
pub fn model_span(
    conn: &Connection,
    device: &str,
    model: &str,
) -> Result<(Option<i64>, Option<i64>)> {
    // Two queries: SQLite answers a lone MIN() or MAX() with one index seek, both at once
    // with a scan.
    let mut qmin = conn.prepare_cached(
        "SELECT MIN(start_ms) FROM series
         WHERE device = ?1 AND model = ?2 AND kind = ?3 AND class = ?4",
    )?;
    let mut qmax = conn.prepare_cached(
        "SELECT MAX(start_ms) FROM series
         WHERE device = ?1 AND model = ?2 AND kind = ?3 AND class = ?4",
    )?;
    let (mut first, mut last) = (None::<i64>, None::<i64>);
    for k in keys(conn, device)?.into_iter().filter(|k| k.model == model) {
        let p = params![device, k.model, k.kind, k.class];
        let f: Option<i64> = qmin.query_row(p, |r| r.get(0))?;
        let l: Option<i64> = qmax.query_row(p, |r| r.get(0))?;
        first = match (first, f) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        last = last.max(l);
    }
    Ok((first, last))
}

/// Every series of a device with its first and last window start and its window count.
pub fn list(conn: &Connection, device: &str) -> Result<Vec<(SeriesKey, i64, i64, u64)>> {
    let keys = keys(conn, device)?;
    let mut out = Vec::new();
    let mut q = conn.prepare_cached(
        "SELECT MIN(start_ms), MAX(start_ms), COUNT(*) FROM series
         WHERE device = ?1 AND model = ?2 AND kind = ?3 AND class = ?4",
    )?;
    for k in keys {
        let (first, last, count): (i64, i64, i64) = q
            .query_row(params![device, k.model, k.kind, k.class], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        out.push((k, first, last, count as u64));
    }
    Ok(out)
}

/// Which windows of a range come first, and which are kept when there are more than asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    OldestFirst,
    NewestFirst,
}

/// The windows of one series in `[from, to)`, at most `limit`, in `order`: the oldest ones
/// oldest first, or the newest ones newest first.
pub fn windows(
    conn: &Connection,
    device: &str,
    key: &SeriesKey,
    (from, to): (i64, i64),
    limit: u64,
    order: Order,
) -> Result<Vec<Point>> {
    const COLUMNS: &str = "SELECT start_ms, seq, length_ms, partial, clock_jumps, n, value,
           value_sup, peak, peak_sup, k, epsilon_milli
         FROM series WHERE device = ?1 AND model = ?2 AND kind = ?3 AND class = ?4
           AND start_ms >= ?5 AND start_ms < ?6";
    let order = match order {
        Order::OldestFirst => "ORDER BY start_ms, seq",
        Order::NewestFirst => "ORDER BY start_ms DESC, seq DESC",
    };
    let mut q = conn.prepare_cached(&format!("{COLUMNS} {order} LIMIT ?7"))?;
    let rows = q.query_map(
        params![
            device,
            key.model,
            key.kind,
            key.class,
            from,
            to,
            limit.min(i64::MAX as u64) as i64
        ],
        |r| {
            Ok(Point {
                device: device.to_owned(),
                model: key.model.clone(),
                kind: key.kind.clone(),
                class: key.class.clone(),
                start_ms: r.get(0)?,
                seq: r.get::<_, i64>(1)? as u64,
                length_ms: r.get(2)?,
                partial: r.get(3)?,
                clock_jumps: r.get(4)?,
                n: r.get::<_, i64>(5)? as u64,
                value: r.get(6)?,
                value_suppressed: r.get(7)?,
                peak: r.get(8)?,
                peak_suppressed: r.get(9)?,
                k: r.get::<_, i64>(10)? as u64,
                epsilon_milli: r.get::<_, Option<i64>>(11)?.map(|e| e as u64),
            })
        },
    )?;
    rows.collect()
}

/// One bucket of a series: the windows starting in `[start_ms, start_ms + bucket)`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Bucket {
    pub start_ms: i64,
    pub windows: u64,
    /// Windows whose value was suppressed (published as "< k").
    pub suppressed: u64,
    /// Windows with a value (not suppressed, measured).
    pub valued: u64,
    /// Sum of the published values.
    pub sum: i64,
    pub peak: Option<i64>,
    pub n: u64,
    pub k_max: u64,
    pub epsilon_milli_min: Option<u64>,
}

impl Bucket {
    /// What a chart shows: counts add up over a bucket, shares and levels average.
    pub fn value(&self, kind: &str) -> Option<f64> {
        if self.valued == 0 {
            return None;
        }
        Some(if kind == "count" {
            self.sum as f64
        } else {
            self.sum as f64 / self.valued as f64
        })
    }
}

/// The series in `[from, to)` grouped in buckets of `bucket_ms` aligned on `from`.
pub fn buckets(
    conn: &Connection,
    device: &str,
    key: &SeriesKey,
    from: i64,
    to: i64,
    bucket_ms: i64,
) -> Result<Vec<Bucket>> {
    let mut q = conn.prepare_cached(
        "SELECT (start_ms - ?5) / ?7 AS b, COUNT(*), SUM(value_sup), COUNT(value),
           TOTAL(value), MAX(peak), SUM(n), MAX(k), MIN(epsilon_milli)
         FROM series WHERE device = ?1 AND model = ?2 AND kind = ?3 AND class = ?4
           AND start_ms >= ?5 AND start_ms < ?6
         GROUP BY b ORDER BY b",
    )?;
    let rows = q.query_map(
        params![device, key.model, key.kind, key.class, from, to, bucket_ms],
        |r| {
            Ok(Bucket {
                start_ms: from + r.get::<_, i64>(0)? * bucket_ms,
                windows: r.get::<_, i64>(1)? as u64,
                suppressed: r.get::<_, i64>(2)? as u64,
                valued: r.get::<_, i64>(3)? as u64,
                sum: r.get::<_, f64>(4)? as i64,
                peak: r.get(5)?,
                n: r.get::<_, i64>(6)? as u64,
                k_max: r.get::<_, i64>(7)? as u64,
                epsilon_milli_min: r.get::<_, Option<i64>>(8)?.map(|e| e as u64),
            })
        },
    )?;
    rows.collect()
}

/// The text of a published value: the number, `< k` when suppressed, `-` when not measured.
pub fn display(value: Option<i64>, suppressed: bool, k: u64) -> String {
    match (value, suppressed) {
        (_, true) => format!("< {k}"),
        (Some(v), false) => v.to_string(),
        (None, false) => "-".into(),
    }
}

/// The unit of a kind's main value, for axis labels and exports.
pub fn unit(kind: &str) -> &'static str {
    match kind {
        "count" => "objects x frames (total)",
        "presence_share" | "speech_share" => "ppm",
        "level_stats" => "thousandths (mean)",
        _ => "",
    }
}
