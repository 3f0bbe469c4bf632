//! The read side shared by the dashboard, the JSON API and the register: each device's state
//! (online, last seen, audit state), its series, alarms and its public register entry. Takes
//! the enrolment and a connection; renders nothing.

use crate::db::sql::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::dates;
use crate::db::series::{self, SeriesKey};
use crate::db::store::{Result, Severity, hex};
use crate::enrolment::{Enrolment, RawModel, RawSite, RetiredKey};
use crate::ingest;

/// The audit state of a device, most serious first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum AuditState {
    #[serde(rename = "FORK")]
    Fork,
    #[serde(rename = "EQUIVOCATION")]
    Equivocation,
    #[serde(rename = "ROLLBACK")]
    Rollback,
    #[serde(rename = "GAP")]
    Gap,
    /// Records held waiting for an earlier one (not yet a GAP).
    #[serde(rename = "waiting")]
    Waiting,
    /// Records stored, no signed checkpoint covers them yet.
    #[serde(rename = "unverified")]
    Unverified,
    /// A signed checkpoint covers stored records (maybe not the latest few).
    #[serde(rename = "verified")]
    Verified,
    #[serde(rename = "no data")]
    NoData,
}

impl AuditState {
    pub fn label(self) -> &'static str {
        match self {
            AuditState::Fork => "FORK",
            AuditState::Equivocation => "EQUIVOCATION",
            AuditState::Rollback => "ROLLBACK",
            AuditState::Gap => "GAP",
            AuditState::Waiting => "waiting",
            AuditState::Unverified => "unverified",
            AuditState::Verified => "verified",
            AuditState::NoData => "no data",
        }
    }

    /// An alarm state: someone should look.
    pub fn is_alarm(self) -> bool {
        self <= AuditState::Gap
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceOverview {
    pub id: String,
    pub territory: String,
    /// `online`, `offline` (the device's retained status or last will, or its status reports
    /// stopped: an open `offline` health alarm) or `unknown`.
    pub status: String,
    /// Health alarms not yet cleared (`crate::health`).
    pub health_alarms: u64,
    pub last_seen: Option<String>,
    #[serde(skip)]
    pub last_seen_ms: Option<i64>,
    pub records: u64,
    pub held: u64,
    pub checkpoint_size: Option<u64>,
    pub audit: AuditState,
    /// Alarms not yet acknowledged, by kind.
    pub open_alarms: Vec<(String, u64)>,
    pub models: Vec<String>,
    pub last_window: Option<String>,
}

/// Every enrolled device (and any device with stored data no longer enrolled), by territory
/// then id.
pub fn devices(conn: &Connection, enrolment: &Enrolment) -> Result<Vec<DeviceOverview>> {
    let mut ids: Vec<(String, String)> = enrolment
        .devices
        .values()
        .map(|d| (d.territory.clone(), d.id.clone()))
        .collect();
    let mut q = conn.prepare_cached("SELECT device FROM devices ORDER BY device")?;
    let stored: Vec<String> = q
        .query_map(crate::params![], |r| r.get(0))?
        .collect::<Result<_>>()?;
    for d in stored {
        if !enrolment.devices.contains_key(&d) {
            ids.push(("(not enrolled)".into(), d));
        }
    }
    ids.sort();
    ids.into_iter()
        .map(|(t, id)| overview(conn, enrolment, &t, &id))
        .collect()
}

/// One device's overview; `None` when the hub knows nothing of it.
pub fn device(
    conn: &Connection,
    enrolment: &Enrolment,
    id: &str,
) -> Result<Option<DeviceOverview>> {
    if let Some(d) = enrolment.devices.get(id) {
        return overview(conn, enrolment, &d.territory, id).map(Some);
    }
    let known: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM devices WHERE device = ?1",
            crate::params![id],
            |r| r.get(0),
        )
        .optional()?;
    match known {
        Some(_) => overview(conn, enrolment, "(not enrolled)", id).map(Some),
        None => Ok(None),
    }
}

fn overview(
    conn: &Connection,
    enrolment: &Enrolment,
    territory: &str,
    id: &str,
) -> Result<DeviceOverview> {
    let state: Option<(i64, Option<i64>)> = conn
        .prepare_cached("SELECT next_seq, ckpt_size FROM devices WHERE device = ?1")?
        .query_row(crate::params![id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let held: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM held_records WHERE device = ?1")?
        .query_row(crate::params![id], |r| r.get(0))?;
    let presence: Option<(Option<String>, Option<i64>, Option<i64>)> = conn
        .prepare_cached("SELECT status, status_ms, seen_ms FROM presence WHERE device = ?1")?
        .query_row(crate::params![id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let mut open_alarms = Vec::new();
    let mut q = conn.prepare_cached(
        "SELECT kind, COUNT(*) FROM alarms WHERE device = ?1 AND acked_ms IS NULL
         GROUP BY kind ORDER BY kind",
    )?;
    for row in q.query_map(crate::params![id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })? {
        let (k, n) = row?;
        open_alarms.push((k, n as u64));
    }
    let (health_alarms, health_offline): (i64, i64) = conn
        .prepare_cached(
            "SELECT COUNT(*), CAST(COALESCE(SUM(CASE WHEN kind = ?2 THEN 1 ELSE 0 END), 0) AS BIGINT)
             FROM health_alarms
             WHERE device = ?1 AND cleared_ms IS NULL",
        )?
        .query_row(params![id, crate::health::OFFLINE], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let last_window = series::last_start(conn, id)?;
    let (records, checkpoint_size) = match state {
        Some((n, c)) => (n as u64, c.map(|c| c as u64)),
        None => (0, None),
    };
    let has = |k: &str| open_alarms.iter().any(|(a, _)| a == k);
    let audit = if has(ingest::FORK) {
        AuditState::Fork
    } else if has(ingest::EQUIVOCATION) {
        AuditState::Equivocation
    } else if has(ingest::ROLLBACK) {
        AuditState::Rollback
    } else if has(ingest::GAP) {
        AuditState::Gap
    } else if held > 0 {
        AuditState::Waiting
    } else if records == 0 {
        AuditState::NoData
    } else if checkpoint_size.is_some() {
        AuditState::Verified
    } else {
        AuditState::Unverified
    };
    let (status, status_ms, seen_ms) = presence.unwrap_or((None, None, None));
    let last_seen_ms = match (status_ms, seen_ms) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    Ok(DeviceOverview {
        id: id.to_owned(),
        territory: territory.to_owned(),
        status: if health_offline > 0 {
            "offline".into()
        } else {
            status.unwrap_or_else(|| "unknown".into())
        },
        health_alarms: health_alarms as u64,
        last_seen: last_seen_ms.map(dates::format),
        last_seen_ms,
        records,
        held: held as u64,
        checkpoint_size,
        audit,
        open_alarms,
        models: enrolment
            .devices
            .get(id)
            .map(|d| d.models.iter().map(|m| m.id.clone()).collect())
            .unwrap_or_default(),
        last_window: last_window.map(dates::format),
    })
}

/// One alarm row with its id and acknowledgement.
#[derive(Debug, Clone, Serialize)]
pub struct AlarmRow {
    pub id: i64,
    pub at: String,
    pub device: Option<String>,
    pub kind: String,
    pub severity: Severity,
    pub seq: Option<u64>,
    pub detail: String,
    pub evidence: Option<String>,
    /// Messages the row stands for (rejected traffic is coalesced per source and period).
    pub count: u64,
    /// The last of them, when there are several.
    pub last: Option<String>,
    /// Where rejected traffic came from (`iat/v1/T/D`, `iat/v1/T/+` or `*`).
    pub source: Option<String>,
    pub acked: Option<String>,
    pub acked_by: Option<String>,
}

/// Which alarms to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlarmFilter {
    /// Alarms about the device, and rejected traffic on its topics.
    pub device: Option<String>,
    pub kind: Option<String>,
    /// This severity and above.
    pub severity: Option<Severity>,
    /// Not acknowledged.
    pub open_only: bool,
}

/// A page of alarms, the most serious first, then the newest.
#[derive(Debug, Clone, Serialize)]
pub struct AlarmPage {
    pub alarms: Vec<AlarmRow>,
    /// Rows matching the filter, and messages they stand for.
    pub total: u64,
    pub messages: u64,
    /// 1-based.
    pub page: u64,
    pub per_page: u64,
    pub pages: u64,
}

/// The most alarms on one page.
pub const MAX_PER_PAGE: u64 = 500;

/// `?2`, when set, is `/{device}`: rejected traffic on that device's topics in any territory
/// (`iat/v1/{territory}/{device}`), matched by prefix and suffix (no pattern syntax, so an
/// id's characters are never wildcards).
const ALARM_WHERE: &str = "WHERE (CAST(?1 AS TEXT) IS NULL OR device = ?1
        OR (device IS NULL AND scope = 0 AND CAST(?2 AS TEXT) IS NOT NULL
            AND substr(source, 1, 7) = 'iat/v1/' AND length(source) > 7 + length(?2)
            AND substr(source, length(source) - length(?2) + 1) = ?2))
    AND (CAST(?3 AS TEXT) IS NULL OR kind = ?3) AND severity >= ?4 AND (?5 = 0 OR acked_ms IS NULL)";

/// Alarms matching `f`, page `page` (1-based) of `per_page` (at most [`MAX_PER_PAGE`]); real
/// alarms first (severity), then the newest.
pub fn alarm_page(
    conn: &Connection,
    f: &AlarmFilter,
    page: u64,
    per_page: u64,
) -> Result<AlarmPage> {
    let per_page = per_page.clamp(1, MAX_PER_PAGE);
    let page = page.max(1);
    // Rejected traffic on the device's topics, whatever its territory (an id that is not a
    // valid topic level is matched on `device` alone).
    const _: () = assert!(matches!(hub_link::PREFIX.as_bytes(), b"iat/v1"));
    let source = f
        .device
        .as_deref()
        .filter(|d| hub_link::valid_level(d))
        .map(|d| format!("/{d}"));
    let min = f.severity.map_or(0, |s| s as i64);
    let args = params![f.device, source, f.kind, min, f.open_only];
    let (total, messages): (i64, i64) = conn
        .prepare_cached(&format!(
            "SELECT COUNT(*), CAST(COALESCE(SUM(count), 0) AS BIGINT) FROM alarms {ALARM_WHERE}"
        ))?
        .query_row(args, |r| Ok((r.get(0)?, r.get(1)?)))?;
    let offset = (page - 1).saturating_mul(per_page).min(i64::MAX as u64) as i64;
    let mut q = conn.prepare_cached(&format!(
        "SELECT id, at_ms, device, kind, severity, seq, detail, evidence, count, last_ms, source,
           acked_ms, acked_by
         FROM alarms {ALARM_WHERE} ORDER BY severity DESC, id DESC LIMIT ?6 OFFSET ?7"
    ))?;
    let rows = q.query_map(
        params![
            f.device,
            source,
            f.kind,
            min,
            f.open_only,
            per_page as i64,
            offset
        ],
        |r| {
            let count = r.get::<_, i64>(8)?.max(1) as u64;
            Ok(AlarmRow {
                id: r.get(0)?,
                at: dates::format(r.get(1)?),
                device: r.get(2)?,
                kind: r.get(3)?,
                severity: Severity::from_db(r.get(4)?),
                seq: r.get::<_, Option<i64>>(5)?.map(|s| s as u64),
                detail: r.get(6)?,
                evidence: r.get(7)?,
                count,
                last: match count {
                    1 => None,
                    _ => r.get::<_, Option<i64>>(9)?.map(dates::format),
                },
                source: r.get(10)?,
                acked: r.get::<_, Option<i64>>(11)?.map(dates::format),
                acked_by: r.get(12)?,
            })
        },
    )?;
    let total = total.max(0) as u64;
    Ok(AlarmPage {
        alarms: rows.collect::<Result<_>>()?,
        total,
        messages: messages.max(0) as u64,
        page,
        per_page,
        pages: total.div_ceil(per_page).max(1),
    })
}

/// Alarms, the most serious first, then the newest; `open_only`: not acknowledged.
pub fn alarms(
    conn: &Connection,
    device: Option<&str>,
    open_only: bool,
    limit: u64,
) -> Result<Vec<AlarmRow>> {
    let f = AlarmFilter {
        device: device.map(str::to_owned),
        open_only,
        ..AlarmFilter::default()
    };
    Ok(alarm_page(conn, &f, 1, limit)?.alarms)
}

/// Acknowledges an alarm; false when there is no such alarm or it was already acknowledged.
pub fn ack_alarm(conn: &Connection, id: i64, by: &str, now_ms: i64) -> Result<bool> {
    let n = conn.execute(
        "UPDATE alarms SET acked_ms = ?2, acked_by = ?3 WHERE id = ?1 AND acked_ms IS NULL",
        params![id, now_ms, by],
    )?;
    Ok(n == 1)
}

/// A model in the public register: the card's metadata and since when the device publishes
/// its results.
#[derive(Debug, Clone, Serialize)]
pub struct RegisterModel {
    #[serde(flatten)]
    pub card: RawModel,
    /// The first window of its results stored here.
    pub since: Option<String>,
    pub last: Option<String>,
    /// The daily privacy budget as its latest window left it (record v2 with noise).
    pub budget: Option<series::BudgetState>,
}

/// One device in the public register.
#[derive(Debug, Clone, Serialize)]
pub struct RegisterDevice {
    pub id: String,
    pub territory: String,
    pub origin: String,
    pub enrolled: Option<String>,
    pub site: Option<RawSite>,
    /// The device's verifier key (C2SP signed-note form).
    pub key: String,
    pub retired_keys: Vec<RetiredKey>,
    pub models: Vec<RegisterModel>,
    pub records: u64,
    /// The latest checkpoint the hub verified against the records it holds, verbatim.
    pub checkpoint: Option<String>,
    pub checkpoint_size: Option<u64>,
    /// Root of the stored records, hex.
    pub root: Option<String>,
}

/// next_seq, frontier, checkpoint size, checkpoint note.
type StateRow = (i64, Vec<u8>, Option<i64>, Option<String>);

pub fn register(conn: &Connection, enrolment: &Enrolment) -> Result<Vec<RegisterDevice>> {
    let mut out = Vec::new();
    let mut st = conn.prepare_cached(
        "SELECT next_seq, frontier, ckpt_size, ckpt_note FROM devices WHERE device = ?1",
    )?;
    let mut devices: Vec<_> = enrolment.devices.values().collect();
    devices.sort_by(|a, b| (&a.territory, &a.id).cmp(&(&b.territory, &b.id)));
    for d in devices {
        let mut models = Vec::new();
        for m in &d.models {
            let (first, last) = series::model_span(conn, &d.id, &m.id)?;
            let keys: Vec<SeriesKey> = series::keys(conn, &d.id)?
                .into_iter()
                .filter(|k| k.model == m.id)
                .collect();
            let budget = match last {
                Some(_) => series::budget_state(conn, &d.id, &keys, (i64::MIN, i64::MAX))?,
                None => None,
            };
            models.push(RegisterModel {
                card: m.clone(),
                since: first.map(dates::format),
                last: last.map(dates::format),
                budget,
            });
        }
        let state: Option<StateRow> = st
            .query_row(crate::params![&d.id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let (records, root, checkpoint_size, checkpoint) = match state {
            Some((n, frontier, size, note)) => (
                n as u64,
                audit::Frontier::from_bytes(&frontier)
                    .ok()
                    .map(|f| hex(&f.root())),
                size.map(|s| s as u64),
                note,
            ),
            None => (0, None, None, None),
        };
        out.push(RegisterDevice {
            id: d.id.clone(),
            territory: d.territory.clone(),
            origin: d.origin(),
            enrolled: d.enrolled.clone(),
            site: d.site.clone(),
            key: d.key.to_string(),
            retired_keys: d.retired_keys.clone(),
            models,
            records,
            checkpoint,
            checkpoint_size,
            root,
        });
    }
    Ok(out)
}

/// The series of a device, with their spans.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesInfo {
    #[serde(flatten)]
    pub key: SeriesKey,
    pub first: String,
    pub last: String,
    pub windows: u64,
    #[serde(skip)]
    pub first_ms: i64,
    #[serde(skip)]
    pub last_ms: i64,
}

pub fn series_of(conn: &Connection, device: &str) -> Result<Vec<SeriesInfo>> {
    Ok(series::list(conn, device)?
        .into_iter()
        .map(|(key, f, l, n)| SeriesInfo {
            key,
            first: dates::format(f),
            last: dates::format(l),
            windows: n,
            first_ms: f,
            last_ms: l,
        })
        .collect())
}
