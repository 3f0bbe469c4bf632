//! The derived `series` table: one row per stored record, aggregate kind and class, filled at
//! ingest (and backfilled from stored records by the schema migration), indexed by device,
//! model, kind, class and window start, so that charts, the API and exports never re-parse
//! record blobs. The records stay the source of truth; this table can be rebuilt from them.
//!
//! Privacy markers travel with every value: a suppressed count is a NULL value with its
//! `*_sup` flag set (never a number), and each row keeps the record's `k`, its whole privacy
//! loss (`epsilon_milli`: [`aggregate::PrivacyView::record_epsilon_milli`]) and, for a v2 record
//! with noise, the pipeline's daily budget after it (`budget_*`, `withheld`; schema version 3).
//!
//! A record whose budget was exhausted (`withheld`) publishes no noised value: its count,
//! presence and speech maps are empty, like a window where nothing was seen (which stores no
//! row). So that the hub still shows it and its budget, it stores one row per series the
//! device's model already has of those kinds (or, for the first records of a model, one per
//! empty kind with the class [`WITHHELD_CLASS`]): no value, `withheld` set.

use crate::db::sql::{Connection, OptionalExtension, Transaction, params};
use aggregate::RecordView;
use aggregate::privacy::Published;

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

/// Schema version 3: the budget of each row (NULL for v1 records and records without noise).
pub const SCHEMA_V3: &str = "
ALTER TABLE series ADD COLUMN budget_day TEXT;
ALTER TABLE series ADD COLUMN budget_milli INTEGER;
ALTER TABLE series ADD COLUMN budget_spent_milli INTEGER;
ALTER TABLE series ADD COLUMN withheld INTEGER;
";

/// The aggregate kinds, as records name them.
pub const KINDS: [&str; 6] = [
    "count",
    "presence_share",
    "speech_share",
    "level_stats",
    "line_count",
    "class_share",
];

/// The kinds whose values are noised, hence withheld when the budget is exhausted.
pub const NOISED_KINDS: [&str; 5] = [
    "count",
    "presence_share",
    "speech_share",
    "line_count",
    "class_share",
];

/// A line count's series class: the line, the object class and the direction (`in`, `out`),
/// joined by `:` (which no label holds).
pub fn line_class(line: &str, class: &str, inward: bool) -> String {
    format!("{line}:{class}:{}", if inward { "in" } else { "out" })
}

/// The parts of a line count's series class: (line, object class, inward).
pub fn split_line_class(class: &str) -> Option<(&str, &str, bool)> {
    let mut parts = class.split(':');
    let (line, object, dir) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    match dir {
        "in" => Some((line, object, true)),
        "out" => Some((line, object, false)),
        _ => None,
    }
}

/// The class of a withheld record's row when its model has no series of that kind yet.
pub const WITHHELD_CLASS: &str = "*";

/// A pipeline's privacy budget for one UTC day, after the record of a row (record v2).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Budget {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// The most the pipeline may spend that day, in thousandths.
    pub budget_milli: u64,
    /// Spent that day, this record included, in thousandths.
    pub spent_milli: u64,
    /// The budget could not pay for the record: its noised values are not published.
    pub withheld: bool,
}

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
    /// `count`: total; `presence_share`, `speech_share`, `class_share`: share in ppm;
    /// `level_stats`: mean in thousandths; `line_count`: crossings (the class names the line,
    /// the object class and the direction: [`line_class`]). `None` when suppressed or not
    /// measured.
    pub value: Option<i64>,
    pub value_suppressed: bool,
    /// `count`: max at once; `presence_share`: present frames; `level_stats`: max.
    pub peak: Option<i64>,
    pub peak_suppressed: bool,
    pub k: u64,
    /// The record's whole privacy loss (v1: its "per count" epsilon); `None` without noise.
    pub epsilon_milli: Option<u64>,
    pub budget: Option<Budget>,
}

impl Point {
    pub fn withheld(&self) -> bool {
        self.budget.as_ref().is_some_and(|b| b.withheld)
    }
}

fn published(p: &Published) -> (Option<i64>, bool) {
    match p {
        Published::Value(v) => (i64::try_from(*v).ok(), false),
        Published::Suppressed => (None, true),
    }
}

fn budget_of_view(view: &RecordView) -> Option<Budget> {
    view.privacy.budget.as_ref().map(|b| Budget {
        day: b.day.clone(),
        budget_milli: b.epsilon_milli,
        spent_milli: b.spent_milli,
        withheld: b.withheld,
    })
}

/// A row of the record's window with no kind, class or value yet: what every row of a record
/// shares. `None` when the window label is not a date.
fn window_point(view: &RecordView) -> Option<Point> {
    Some(Point {
        device: view.device.clone(),
        model: view.model.id.clone(),
        kind: String::new(),
        class: String::new(),
        start_ms: dates::parse(&view.window.start)?,
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
        epsilon_milli: view.privacy.record_epsilon_milli(),
        budget: budget_of_view(view),
    })
}

/// The rows of one parsed record. `None` when its window label is not a date (cannot happen
/// for a record that parsed: the aggregator writes it; the hub then stores no row for it).
/// Whether a record's values were withheld (its day's budget could not pay for them): its rows
/// are found from the series its device already has ([`withheld_points`]).
pub fn is_withheld(view: &RecordView) -> bool {
    window_point(view).is_some_and(|p| p.withheld())
}

pub fn points(view: &RecordView) -> Option<Vec<Point>> {
    let template = window_point(view)?;
    let base = |kind: &str, class: &str| Point {
        kind: kind.to_owned(),
        class: class.to_owned(),
        ..template.clone()
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
    for (kind, shares) in [
        ("speech_share", &a.speech_share),
        ("class_share", &a.class_share),
    ] {
        for (class, s) in shares {
            out.push(Point {
                n: s.observed_ms,
                value: i64::try_from(s.share_ppm).ok(),
                ..base(kind, class)
            });
        }
    }
    for (class, l) in &a.level_stats {
        out.push(Point {
            n: l.n,
            value: l.mean_milli,
            peak: l.max_milli,
            ..base("level_stats", class)
        });
    }
    for (line, per_class) in &a.line_count {
        for (class, c) in per_class {
            for (inward, v) in [(true, &c.inward), (false, &c.outward)] {
                let (value, value_suppressed) = published(v);
                out.push(Point {
                    value,
                    value_suppressed,
                    ..base("line_count", &line_class(line, class, inward))
                });
            }
        }
    }
    Some(out)
}

/// Inserts series rows (idempotent on the primary key; a later row of the same key wins), with
/// multi-row statements.
pub fn insert(conn: &Connection, points: &[Point]) -> Result<()> {
    use crate::db::sql::{ToSql, insert_rows};
    // One row per key in a statement (PostgreSQL refuses to update a row twice in one).
    let mut last = std::collections::BTreeMap::new();
    for (i, p) in points.iter().enumerate() {
        last.insert(
            (&p.device, &p.model, &p.kind, &p.class, p.start_ms, p.seq),
            i,
        );
    }
    let mut keep: Vec<&Point> = last.values().map(|&i| &points[i]).collect();
    keep.sort_by_key(|p| (&p.device, p.seq));
    let keys: std::collections::BTreeSet<(&str, &str, &str, &str)> = keep
        .iter()
        .map(|p| (&*p.device, &*p.model, &*p.kind, &*p.class))
        .collect();
    let key_rows: Vec<Vec<&dyn ToSql>> = keys
        .iter()
        .map(|(d, m, k, c)| vec![d as &dyn ToSql, m, k, c])
        .collect();
    insert_rows(
        conn,
        "INSERT INTO series_keys (device, model, kind, class)",
        "ON CONFLICT DO NOTHING",
        4,
        &key_rows,
    )?;
    struct Cols<'a> {
        seq: i64,
        n: i64,
        k: i64,
        epsilon: Option<i64>,
        day: Option<&'a str>,
        budget: Option<i64>,
        spent: Option<i64>,
        withheld: Option<bool>,
    }
    let cols: Vec<Cols> = keep
        .iter()
        .map(|p| Cols {
            seq: p.seq as i64,
            n: p.n as i64,
            k: p.k as i64,
            epsilon: p.epsilon_milli.map(|e| e as i64),
            day: p.budget.as_ref().map(|b| b.day.as_str()),
            budget: p.budget.as_ref().map(|b| b.budget_milli as i64),
            spent: p.budget.as_ref().map(|b| b.spent_milli as i64),
            withheld: p.budget.as_ref().map(|b| b.withheld),
        })
        .collect();
    let rows: Vec<Vec<&dyn ToSql>> = keep
        .iter()
        .zip(&cols)
        .map(|(p, c)| {
            vec![
                &p.device as &dyn ToSql,
                &p.model,
                &p.kind,
                &p.class,
                &p.start_ms,
                &c.seq,
                &p.length_ms,
                &p.partial,
                &p.clock_jumps,
                &c.n,
                &p.value,
                &p.value_suppressed,
                &p.peak,
                &p.peak_suppressed,
                &c.k,
                &c.epsilon,
                &c.day,
                &c.budget,
                &c.spent,
                &c.withheld,
            ]
        })
        .collect();
    insert_rows(
        conn,
        "INSERT INTO series (device, model, kind, class, start_ms, seq, length_ms,
           partial, clock_jumps, n, value, value_sup, peak, peak_sup, k, epsilon_milli,
           budget_day, budget_milli, budget_spent_milli, withheld)",
        "ON CONFLICT (device, model, kind, class, start_ms, seq) DO UPDATE SET
           length_ms = excluded.length_ms, partial = excluded.partial,
           clock_jumps = excluded.clock_jumps, n = excluded.n, value = excluded.value,
           value_sup = excluded.value_sup, peak = excluded.peak, peak_sup = excluded.peak_sup,
           k = excluded.k, epsilon_milli = excluded.epsilon_milli,
           budget_day = excluded.budget_day, budget_milli = excluded.budget_milli,
           budget_spent_milli = excluded.budget_spent_milli, withheld = excluded.withheld",
        20,
        &rows,
    )
}

/// The rows that stand for a withheld record's noised values: one per series of its model of
/// a noised kind (none published by the record itself), or, when the model has none yet, one
/// per noised kind the record names (an empty map in its bytes) with [`WITHHELD_CLASS`].
pub fn withheld_points(
    conn: &Connection,
    view: &RecordView,
    entry: &[u8],
    published: &[Point],
) -> Result<Vec<Point>> {
    let Some(template) = window_point(view) else {
        return Ok(Vec::new());
    };
    if !template.withheld() {
        return Ok(Vec::new());
    }
    let is_published =
        |kind: &str, class: &str| published.iter().any(|p| p.kind == kind && p.class == class);
    let point = |kind: &str, class: &str| Point {
        kind: kind.to_owned(),
        class: class.to_owned(),
        ..template.clone()
    };
    let mut out: Vec<Point> = keys(conn, &view.device)?
        .into_iter()
        .filter(|k| k.model == view.model.id && NOISED_KINDS.contains(&k.kind.as_str()))
        .filter(|k| !is_published(&k.kind, &k.class))
        .map(|k| point(&k.kind, &k.class))
        .collect();
    if out.is_empty() {
        // The record's bytes say which kinds it was asked for (an empty map each).
        let named: Vec<String> = serde_json::from_slice::<serde_json::Value>(entry)
            .ok()
            .and_then(|v| {
                v.get("aggregates")?
                    .as_object()
                    .map(|a| a.keys().cloned().collect())
            })
            .unwrap_or_default();
        out = NOISED_KINDS
            .iter()
            .filter(|k| named.iter().any(|n| n == *k))
            .filter(|k| !published.iter().any(|p| p.kind == **k))
            .map(|k| point(k, WITHHELD_CLASS))
            .collect();
    }
    Ok(out)
}

/// Called by ingest for every record it stores.
pub fn on_store(tx: &Transaction, entry: &[u8]) -> Result<()> {
    if let Ok(view) = RecordView::parse(entry)
        && let Some(mut p) = points(&view)
    {
        let withheld = withheld_points(tx, &view, entry, &p)?;
        p.extend(withheld);
        insert(tx, &p)?;
    }
    Ok(())
}

/// Fills the table from every stored record (the migration that introduced it).
pub fn backfill(tx: &Transaction) -> Result<u64> {
    backfill_where(tx, "")
}

/// Rewrites the rows of the records that carry a budget (the migration to schema version 3:
/// their epsilon becomes the record's whole loss, their budget is added, withheld records get
/// their rows). Records without a budget (v1, or without noise) keep the rows they have.
pub fn backfill_budgets(tx: &Transaction) -> Result<u64> {
    backfill_where(tx, "WHERE instr(entry, CAST('\"budget\":' AS BLOB)) > 0")
}

fn backfill_where(tx: &Transaction, filter: &str) -> Result<u64> {
    // In (device, seq) order: a withheld record finds the series its predecessors filled.
    let mut q = tx.prepare(&format!(
        "SELECT entry FROM records {filter} ORDER BY device, seq"
    ))?;
    let mut rows = q.query(crate::params![])?;
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
    let rows = q.query_map(crate::params![device], |r| {
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
    range: (i64, i64),
    limit: u64,
    order: Order,
) -> Result<Vec<Point>> {
    let mut out = Vec::new();
    for_each_window(conn, device, key, range, limit, order, |p| {
        out.push(p);
        Ok::<_, crate::db::sql::Error>(true)
    })?;
    Ok(out)
}

/// How many windows one series has in `[from, to)` (an index range: no row is read).
pub fn count_windows(
    conn: &Connection,
    device: &str,
    key: &SeriesKey,
    (from, to): (i64, i64),
) -> Result<u64> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM series WHERE device = ?1 AND model = ?2 AND kind = ?3
               AND class = ?4 AND start_ms >= ?5 AND start_ms < ?6",
        )?
        .query_row(
            params![device, key.model, key.kind, key.class, from, to],
            |r| r.get(0),
        )?;
    Ok(n as u64)
}

/// Hands the windows of [`windows`] to `f` one at a time, as the database reads them (an
/// export streams them without holding them all), until `f` returns `false`.
pub fn for_each_window<E: From<crate::db::sql::Error>>(
    conn: &Connection,
    device: &str,
    key: &SeriesKey,
    (from, to): (i64, i64),
    limit: u64,
    order: Order,
    mut f: impl FnMut(Point) -> std::result::Result<bool, E>,
) -> std::result::Result<(), E> {
    const COLUMNS: &str = "SELECT start_ms, seq, length_ms, partial, clock_jumps, n, value,
           value_sup, peak, peak_sup, k, epsilon_milli, budget_day, budget_milli,
           budget_spent_milli, withheld
         FROM series WHERE device = ?1 AND model = ?2 AND kind = ?3 AND class = ?4
           AND start_ms >= ?5 AND start_ms < ?6";
    let order = match order {
        Order::OldestFirst => "ORDER BY start_ms, seq",
        Order::NewestFirst => "ORDER BY start_ms DESC, seq DESC",
    };
    let mut q = conn.prepare_cached(&format!("{COLUMNS} {order} LIMIT ?7"))?;
    let mut rows = q.stream(params![
        device,
        key.model,
        key.kind,
        key.class,
        from,
        to,
        limit.min(i64::MAX as u64) as i64
    ])?;
    while let Some(r) = rows.next()? {
        let p = Point {
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
            budget: budget_of(r, 12)?,
        };
        if !f(p)? {
            break;
        }
    }
    Ok(())
}

/// The budget columns of a row, from column `at` on.
fn budget_of(r: crate::db::sql::Row<'_>, at: usize) -> crate::db::sql::Result<Option<Budget>> {
    let day: Option<String> = r.get(at)?;
    day.map(|day| -> crate::db::sql::Result<Budget> {
        Ok(Budget {
            day,
            budget_milli: r.get::<_, Option<i64>>(at + 1)?.unwrap_or(0) as u64,
            spent_milli: r.get::<_, Option<i64>>(at + 2)?.unwrap_or(0) as u64,
            withheld: r.get::<_, Option<bool>>(at + 3)?.unwrap_or(false),
        })
    })
    .transpose()
}

/// The budget of a model's pipeline as its latest window in `[from, to)` left it, and the most
/// a window spent that day.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BudgetState {
    pub budget: Budget,
    /// The latest window's length.
    pub window_ms: i64,
    /// The largest epsilon a window of that day spent (thousandths; 0: none was published).
    pub max_epsilon_milli: u64,
}

/// The budget state of `model` on a device over `[from, to)`, from its latest window (over
/// `keys`, the series to look at); `None` when that window carries no budget (v1, no noise).
pub fn budget_state(
    conn: &Connection,
    device: &str,
    keys: &[SeriesKey],
    (from, to): (i64, i64),
) -> Result<Option<BudgetState>> {
    let mut latest = conn.prepare_cached(
        "SELECT start_ms, seq, length_ms, budget_day, budget_milli, budget_spent_milli, withheld
         FROM series WHERE device = ?1 AND model = ?2 AND kind = ?3 AND class = ?4
           AND start_ms >= ?5 AND start_ms < ?6
         ORDER BY start_ms DESC, seq DESC LIMIT 1",
    )?;
    let mut best: Option<((i64, i64), i64, Option<Budget>)> = None;
    for k in keys {
        let row = latest
            .query_row(params![device, k.model, k.kind, k.class, from, to], |r| {
                Ok(((r.get(0)?, r.get(1)?), r.get(2)?, budget_of(r, 3)?))
            })
            .optional()?;
        if let Some(row) = row
            && best.as_ref().is_none_or(|b| row.0 > b.0)
        {
            best = Some(row);
        }
    }
    let Some((_, window_ms, Some(budget))) = best else {
        return Ok(None);
    };
    let day_start = dates::parse(&budget.day).unwrap_or(from);
    let mut most = conn.prepare_cached(
        "SELECT MAX(epsilon_milli) FROM series
         WHERE device = ?1 AND model = ?2 AND kind = ?3 AND class = ?4
           AND start_ms >= ?5 AND start_ms < ?6 AND withheld = 0",
    )?;
    let mut max_epsilon_milli = 0;
    for k in keys {
        let m: Option<i64> = most.query_row(
            params![
                device,
                k.model,
                k.kind,
                k.class,
                day_start.max(from),
                (day_start + 86_400_000).min(to)
            ],
            |r| r.get(0),
        )?;
        max_epsilon_milli = max_epsilon_milli.max(m.unwrap_or(0) as u64);
    }
    Ok(Some(BudgetState {
        budget,
        window_ms,
        max_epsilon_milli,
    }))
}

/// One bucket of a series: the windows starting in `[start_ms, end_ms)`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Bucket {
    pub start_ms: i64,
    /// Buckets on the local calendar differ in length (a day of 23 or 25 hours).
    pub end_ms: i64,
    pub windows: u64,
    /// Windows whose value was suppressed (published as "< k").
    pub suppressed: u64,
    /// Windows with a value (not suppressed, measured).
    pub valued: u64,
    /// Sum of the published values.
    pub sum: i64,
    pub peak: Option<i64>,
    pub n: u64,
    /// Observations of the windows with a value (for `count`: the frames behind `sum`).
    pub n_valued: u64,
    pub k_max: u64,
    /// The smallest epsilon of the windows that published their values.
    pub epsilon_milli_min: Option<u64>,
    /// Windows whose values were withheld (the day's privacy budget was exhausted).
    pub withheld: u64,
}

impl Bucket {
    /// What a chart shows: counts add up over a bucket, shares and levels average.
    pub fn value(&self, kind: &str) -> Option<f64> {
        if self.valued == 0 {
            return None;
        }
        Some(if kind == "count" || kind == "line_count" {
            self.sum as f64
        } else {
            self.sum as f64 / self.valued as f64
        })
    }

    /// What a page shows, in the unit people read: for `count`, the number
    /// of objects present at once on average (objects summed over frames, over the frames);
    /// shares in ppm averaged; levels in their unit; line crossings summed.
    pub fn shown(&self, kind: &str) -> Option<f64> {
        let v = self.value(kind)?;
        match kind {
            "count" => (self.n_valued > 0).then(|| self.sum as f64 / self.n_valued as f64),
            "level_stats" => Some(v / 1000.0),
            _ => Some(v),
        }
    }
}

/// What a bucket adds up, after its index (`b`): the columns [`bucket_row`] reads.
/// Sums are cast (PostgreSQL's SUM of BIGINT is NUMERIC); the float ones are SQLite's TOTAL.
const BUCKET_COLUMNS: &str = "COUNT(*), CAST(SUM(value_sup) AS BIGINT), COUNT(value),
    CAST(COALESCE(SUM(value), 0) AS DOUBLE PRECISION), MAX(peak), CAST(SUM(n) AS BIGINT), MAX(k),
    MIN(CASE WHEN withheld <> 0 THEN NULL ELSE epsilon_milli END),
    CAST(COALESCE(SUM(withheld), 0) AS DOUBLE PRECISION),
    CAST(COALESCE(SUM(CASE WHEN value IS NULL THEN 0 ELSE n END), 0) AS DOUBLE PRECISION)";

fn bucket_row(
    r: crate::db::sql::Row<'_>,
    start_ms: i64,
    end_ms: i64,
) -> crate::db::sql::Result<Bucket> {
    Ok(Bucket {
        start_ms,
        end_ms,
        windows: r.get::<_, i64>(1)? as u64,
        suppressed: r.get::<_, i64>(2)? as u64,
        valued: r.get::<_, i64>(3)? as u64,
        sum: r.get::<_, f64>(4)? as i64,
        peak: r.get(5)?,
        n: r.get::<_, i64>(6)? as u64,
        k_max: r.get::<_, i64>(7)? as u64,
        epsilon_milli_min: r.get::<_, Option<i64>>(8)?.map(|e| e as u64),
        withheld: r.get::<_, f64>(9)? as u64,
        n_valued: r.get::<_, f64>(10)? as u64,
    })
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
    let mut q = conn.prepare_cached(&format!(
        "SELECT (start_ms - ?5) / ?7 AS b, {BUCKET_COLUMNS}
         FROM series WHERE device = ?1 AND model = ?2 AND kind = ?3 AND class = ?4
           AND start_ms >= ?5 AND start_ms < ?6
         GROUP BY b ORDER BY b"
    ))?;
    let rows = q.query_map(
        params![device, key.model, key.kind, key.class, from, to, bucket_ms],
        |r| {
            let start = from + r.get::<_, i64>(0)? * bucket_ms;
            bucket_row(r, start, start + bucket_ms)
        },
    )?;
    rows.collect()
}

/// The series grouped in the buckets `[bounds[i], bounds[i + 1])`: buckets of unequal length,
/// such as the days of a local calendar. `bounds` increase strictly. Each bucket is a range
/// of the series' index, as for [`buckets`].
pub fn buckets_between(
    conn: &Connection,
    device: &str,
    key: &SeriesKey,
    bounds: &[i64],
) -> Result<Vec<Bucket>> {
    if bounds.len() < 2 {
        return Ok(Vec::new());
    }
    let pairs: Vec<[i64; 2]> = bounds.windows(2).map(|w| [w[0], w[1]]).collect();
    let json = serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".into());
    // The bounds as a table (index, low, high) from a JSON array of pairs.
    let bounds = match conn.dialect() {
        crate::db::sql::Dialect::Sqlite => {
            "SELECT key, json_extract(value, '$[0]'), json_extract(value, '$[1]')
           FROM json_each(?5)"
        }
        crate::db::sql::Dialect::Postgres => {
            "SELECT ord - 1, CAST(e->>0 AS BIGINT), CAST(e->>1 AS BIGINT)
           FROM jsonb_array_elements(CAST(CAST(?5 AS TEXT) AS jsonb)) WITH ORDINALITY AS t(e, ord)"
        }
    };
    let mut q = conn.prepare_cached(&format!(
        "WITH bounds(b, lo, hi) AS ({bounds})
         SELECT bounds.b, {BUCKET_COLUMNS}
         FROM bounds CROSS JOIN series
         WHERE device = ?1 AND model = ?2 AND kind = ?3 AND class = ?4
           AND start_ms >= bounds.lo AND start_ms < bounds.hi
         GROUP BY bounds.b ORDER BY bounds.b"
    ))?;
    let rows = q.query_map(params![device, key.model, key.kind, key.class, json], |r| {
        let i = usize::try_from(r.get::<_, i64>(0)?).unwrap_or(0);
        let (start, end) = pairs.get(i).map_or((0, 0), |p| (p[0], p[1]));
        bucket_row(r, start, end)
    })?;
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
        "count" => "object-frames (objects seen, summed over the frames)",
        "presence_share" | "speech_share" | "class_share" => "ppm",
        "level_stats" => "thousandths (mean)",
        "line_count" => "crossings",
        _ => "",
    }
}
