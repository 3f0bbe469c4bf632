//! Device health: what the hub makes of each device's retained status (`docs/mqtt.md`, "Status
//! report"): the latest reports, and the health alarms a local authority acts on (a device
//! offline, a model silent, results piling up, a disk filling up, a source restarting).
//!
//! A status is not evidence: nothing here touches the audit `alarms` table and nothing is
//! acknowledged by anyone. A health alarm is a row of `health_alarms` per (device, kind,
//! subject), raised once while its cause lasts and cleared (`cleared_ms`) when the cause ends;
//! a cause that comes back raises a new row. Causes read in a report are judged when the
//! report arrives ([`on_status`]); causes that are a matter of time (no report, no record) by
//! [`evaluate`], which the MQTT loop runs every [`CHECK_EVERY`] and tests call with chosen
//! times. The decisions ([`judge_report`], [`judge_presence`], [`judge_silence`]) are pure;
//! [`apply`] writes them.
//!
//! Times are the hub's (when it received a report or a record), never the device's clock.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::db::sql::{Connection, OptionalExtension, Transaction, params};
use hub_link::{SourceKind, SourceState, Status, StatusPayload};
use serde::Serialize;

use crate::dates;
use crate::db::store::{self, Result};
use crate::enrolment::Enrolment;

/// The device published `offline` (its last will, or an orderly stop), or has sent no report
/// for longer than `status_stale`.
pub const OFFLINE: &str = "offline";
/// A pipeline of the latest report (not `ended`) whose model has had no verified record
/// received for more than [`SILENT_WINDOWS`] windows. Subject: the model id.
pub const MODEL_SILENT: &str = "model_silent";
/// Records waiting for the hub's ack: the outbox grew over the last [`BACKLOG_REPORTS`]
/// reports and the oldest waits longer than [`backlog_threshold_s`].
pub const BACKLOG: &str = "backlog";
/// Free space of the outbox's file system under [`DISK_LOW_PERCENT`] or [`DISK_MIN_BYTES`].
pub const DISK_LOW: &str = "disk_low";
/// A pipeline's source is `restarting`, or its restart counter grew since the previous
/// report. Subject: the model id.
pub const SOURCE_RESTARTING: &str = "source_restarting";

// The thresholds, all in one place (`docs/mqtt.md`, "Health alarms").

/// `status_stale` when the hub's config does not set it: three times the agents' default
/// `status_interval` (60 s).
pub const DEFAULT_STATUS_STALE: Duration = Duration::from_secs(180);
/// How often the MQTT loop runs [`evaluate`].
pub const CHECK_EVERY: Duration = Duration::from_secs(15);
/// A model is silent after this many of its windows without a record.
pub const SILENT_WINDOWS: u64 = 2;
/// The backlog alarm needs the outbox depth to grow strictly across this many reports...
pub const BACKLOG_REPORTS: usize = 3;
/// ...and the oldest waiting record to be older than this, or than [`BACKLOG_WINDOWS`] of the
/// largest window, whichever is longer. The alarm clears when the oldest is younger.
pub const BACKLOG_MIN_AGE_S: u64 = 600;
pub const BACKLOG_WINDOWS: u64 = 3;
/// Disk low below this share of the file system (percent) or below [`DISK_MIN_BYTES`]...
pub const DISK_LOW_PERCENT: u64 = 10;
/// ...and fine again only above this share and above [`DISK_MIN_BYTES`] (hysteresis: a disk
/// hovering at 10 % does not raise and clear an alarm every minute).
pub const DISK_OK_PERCENT: u64 = 15;
pub const DISK_MIN_BYTES: u64 = 256 << 20;
/// Reports kept per device (the backlog looks at this many).
pub const KEEP_REPORTS: usize = BACKLOG_REPORTS;
/// The API lists alarms cleared this recently beside the open ones.
pub const RECENTLY_CLEARED: Duration = Duration::from_secs(7 * 86_400);

/// The thresholds that come from the hub's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// No report for longer than this: offline.
    pub status_stale_ms: i64,
}

impl Limits {
    pub fn new(status_stale: Duration) -> Limits {
        Limits {
            status_stale_ms: i64::try_from(status_stale.as_millis()).unwrap_or(i64::MAX),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(DEFAULT_STATUS_STALE)
    }
}

/// What to do with one (kind, subject) of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The cause is there: raise unless an alarm is open. `since_ms`: when the cause started,
    /// as well as the hub knows.
    Raise { since_ms: i64, detail: String },
    /// The cause is gone: clear the open alarm, if any.
    Clear,
    /// Cannot tell, or between the thresholds: leave things as they are.
    Keep,
}

/// (kind, subject, verdict).
pub type Judgement = (&'static str, String, Verdict);

/// A status report and when the hub received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub status: Status,
    pub received_ms: i64,
}

fn ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Keeps the strongest verdict per subject: a pipeline listed twice for one model raises if
/// either raises, and clears only if both clear.
fn merge(into: &mut BTreeMap<String, Verdict>, subject: &str, v: Verdict) {
    let rank = |v: &Verdict| match v {
        Verdict::Raise { .. } => 2,
        Verdict::Keep => 1,
        Verdict::Clear => 0,
    };
    match into.get(subject) {
        Some(old) if rank(old) >= rank(&v) => {}
        _ => {
            into.insert(subject.to_owned(), v);
        }
    }
}

/// Judgements for the subjects of `kind` in `per_subject`, plus a clear for each open alarm of
/// that kind whose subject the report no longer lists (a pipeline removed from the config).
fn with_gone(
    kind: &'static str,
    per_subject: BTreeMap<String, Verdict>,
    open: &[(String, String)],
) -> Vec<Judgement> {
    let mut out: Vec<Judgement> = open
        .iter()
        .filter(|(k, s)| k == kind && !per_subject.contains_key(s))
        .map(|(_, s)| (kind, s.clone(), Verdict::Clear))
        .collect();
    out.extend(per_subject.into_iter().map(|(s, v)| (kind, s, v)));
    out
}

/// The backlog threshold of a report, in seconds: the larger of [`BACKLOG_MIN_AGE_S`] and
/// [`BACKLOG_WINDOWS`] times its largest window.
pub fn backlog_threshold_s(s: &Status) -> u64 {
    let window = s.pipelines.iter().map(|p| u64::from(p.window_s)).max();
    BACKLOG_MIN_AGE_S.max(window.unwrap_or(0).saturating_mul(BACKLOG_WINDOWS))
}

/// Free share of a disk in whole percent (rounded down), when the report has both sizes.
pub fn disk_free_percent(s: &Status) -> Option<u64> {
    match (s.disk_free_bytes, s.disk_total_bytes) {
        (Some(free), Some(total)) if total > 0 => {
            Some((u128::from(free) * 100 / u128::from(total)) as u64)
        }
        _ => None,
    }
}

/// What a new report says of the device: online (clears `offline`), its disk, its backlog
/// (with the reports before it, oldest first) and its sources.
pub fn judge_report(
    open: &[(String, String)],
    previous: &[Received],
    new: &Received,
) -> Vec<Judgement> {
    let s = &new.status;
    let mut out: Vec<Judgement> = vec![(OFFLINE, String::new(), Verdict::Clear)];

    // Disk, with hysteresis between DISK_LOW_PERCENT and DISK_OK_PERCENT.
    let disk = match (s.disk_free_bytes, s.disk_total_bytes) {
        (Some(free), Some(total)) if total > 0 => {
            let (f, t) = (u128::from(free), u128::from(total));
            if f * 100 < t * u128::from(DISK_LOW_PERCENT) || free < DISK_MIN_BYTES {
                Verdict::Raise {
                    since_ms: new.received_ms,
                    detail: format!(
                        "{} % libre ({} sur {})",
                        f * 100 / t,
                        octets(free),
                        octets(total)
                    ),
                }
            } else if f * 100 > t * u128::from(DISK_OK_PERCENT) && free > DISK_MIN_BYTES {
                Verdict::Clear
            } else {
                Verdict::Keep
            }
        }
        _ => Verdict::Keep,
    };
    out.push((DISK_LOW, String::new(), disk));

    // Backlog: growing over the last BACKLOG_REPORTS reports and old.
    let threshold = backlog_threshold_s(s);
    let depths: Vec<u64> = previous
        .iter()
        .chain(std::iter::once(new))
        .map(|r| r.status.outbox_depth)
        .collect();
    let recent = &depths[depths.len().saturating_sub(BACKLOG_REPORTS)..];
    let grew = recent.len() == BACKLOG_REPORTS && recent.windows(2).all(|w| w[0] < w[1]);
    let backlog = match s.oldest_unacked_s {
        Some(age) if age > threshold && grew => Verdict::Raise {
            since_ms: new.received_ms.saturating_sub(ms(age)),
            detail: format!(
                "{} résultat(s) en attente, le plus ancien depuis {} (seuil {}), la file grandit depuis {} rapports",
                s.outbox_depth,
                dates::duree(age),
                dates::duree(threshold),
                BACKLOG_REPORTS
            ),
        },
        Some(age) if age >= threshold => Verdict::Keep,
        _ => Verdict::Clear,
    };
    out.push((BACKLOG, String::new(), backlog));

    // Sources: restarting now, or restarted since the previous report of the same run.
    let before = previous.last().filter(|p| p.status.uptime_s <= s.uptime_s);
    let mut sources = BTreeMap::new();
    for p in &s.pipelines {
        let was = before.and_then(|b| b.status.pipelines.iter().find(|q| q.model == p.model));
        let grew = was.is_some_and(|q| p.restarts > q.restarts);
        let v = if p.state == SourceState::Restarting || grew {
            Verdict::Raise {
                since_ms: new.received_ms,
                detail: format!(
                    "source {} {}, {} redémarrage(s) depuis le démarrage de l'agent",
                    source_fr(p.source),
                    state_fr(p.state),
                    p.restarts
                ),
            }
        } else if matches!(p.state, SourceState::Running | SourceState::Ended) {
            Verdict::Clear
        } else {
            Verdict::Keep
        };
        merge(&mut sources, &p.model, v);
    }
    out.extend(with_gone(SOURCE_RESTARTING, sources, open));
    out
}

/// Whether the device is offline: it said so (`offline`, raised when it arrived, kept here),
/// or its latest status was a report older than `status_stale`. A device that only ever
/// published the bare `online` of older agents is judged on its last will alone: it sends no
/// periodic report to be late with. `presence`: the latest status and when it was received.
pub fn judge_presence(
    presence: Option<(&str, i64)>,
    latest_report_ms: Option<i64>,
    now_ms: i64,
    limits: &Limits,
) -> Verdict {
    match presence {
        Some(("offline", at)) => Verdict::Raise {
            since_ms: at,
            detail: "l'appareil a annoncé qu'il se déconnectait (« offline » : arrêt ou connexion perdue)".into(),
        },
        Some(("online", at)) => match latest_report_ms {
            Some(r) if r >= at && now_ms.saturating_sub(r) > limits.status_stale_ms => {
                Verdict::Raise {
                    since_ms: r,
                    detail: format!(
                        "aucun rapport d'état reçu depuis plus de {}",
                        dates::duree(u64::try_from(limits.status_stale_ms / 1000).unwrap_or(0))
                    ),
                }
            }
            _ => Verdict::Clear,
        },
        _ => Verdict::Keep,
    }
}

/// Which models of the latest report have been silent for [`SILENT_WINDOWS`] windows.
/// `last_record`: when the hub last received a verified record of each model (absent: never).
/// The clock starts at the later of that record and the agent's start (the report's uptime),
/// so a restarted agent gets its first windows. While the device is `offline` a silence is not
/// raised (the offline alarm says it all) but a record still clears one.
pub fn judge_silence(
    open: &[(String, String)],
    latest: &Received,
    last_record: &BTreeMap<String, i64>,
    offline: bool,
    now_ms: i64,
) -> Vec<Judgement> {
    let started = latest
        .received_ms
        .saturating_sub(ms(latest.status.uptime_s));
    let mut models = BTreeMap::new();
    for p in &latest.status.pipelines {
        let v = if p.state == SourceState::Ended || p.window_s == 0 {
            Verdict::Clear
        } else {
            let window = ms(u64::from(p.window_s));
            let from = last_record
                .get(&p.model)
                .copied()
                .map_or(started, |r| r.max(started));
            if now_ms.saturating_sub(from) <= window.saturating_mul(SILENT_WINDOWS as i64) {
                Verdict::Clear
            } else if offline {
                Verdict::Keep
            } else {
                Verdict::Raise {
                    since_ms: from,
                    detail: format!(
                        "aucun résultat reçu depuis {} (fenêtre de {})",
                        dates::duree(
                            u64::try_from(now_ms.saturating_sub(from) / 1000).unwrap_or(0)
                        ),
                        dates::duree(u64::from(p.window_s))
                    ),
                }
            }
        };
        merge(&mut models, &p.model, v);
    }
    with_gone(MODEL_SILENT, models, open)
}

// --- Storage ---------------------------------------------------------------------------------

/// What [`apply`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    pub raised: u64,
    pub cleared: u64,
}

impl std::ops::AddAssign for Changes {
    fn add_assign(&mut self, o: Changes) {
        self.raised += o.raised;
        self.cleared += o.cleared;
    }
}

/// Writes verdicts: a raise inserts a row unless one is open for the same (device, kind,
/// subject) (the partial unique index `health_alarms_open` makes it so even across hub
/// instances); a clear closes the open row.
pub fn apply(
    tx: &Transaction,
    device: &str,
    now_ms: i64,
    judgements: Vec<Judgement>,
) -> Result<Changes> {
    let mut c = Changes::default();
    for (kind, subject, v) in judgements {
        match v {
            Verdict::Raise { since_ms, detail } => {
                let n = tx.execute(
                    "INSERT INTO health_alarms (device, kind, subject, since_ms, raised_ms, detail)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                    params![device, kind, subject, since_ms, now_ms, detail],
                )?;
                if n > 0 {
                    c.raised += 1;
                    tracing::info!("hub: health: {device}: {kind} {subject} raised: {detail}");
                }
            }
            Verdict::Clear => {
                let n = tx.execute(
                    "UPDATE health_alarms SET cleared_ms = ?4
                     WHERE device = ?1 AND kind = ?2 AND subject = ?3 AND cleared_ms IS NULL",
                    params![device, kind, subject, now_ms],
                )?;
                if n > 0 {
                    c.cleared += 1;
                    tracing::info!("hub: health: {device}: {kind} {subject} cleared");
                }
            }
            Verdict::Keep => {}
        }
    }
    Ok(c)
}

/// The open health alarms of a device, as (kind, subject).
pub fn open_kinds(conn: &Connection, device: &str) -> Result<Vec<(String, String)>> {
    let mut q = conn.prepare_cached(
        "SELECT kind, subject FROM health_alarms WHERE device = ?1 AND cleared_ms IS NULL",
    )?;
    let rows = q.query_map(crate::params![device], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// The stored reports of a device, oldest first (at most [`KEEP_REPORTS`]), with their JSON.
/// A row that no longer parses (a damaged database) is skipped.
fn reports(conn: &Connection, device: &str) -> Result<Vec<(Received, String)>> {
    let mut q = conn.prepare_cached(
        "SELECT received_ms, report FROM health_reports WHERE device = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = q.query_map(params![device, KEEP_REPORTS as i64], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (received_ms, json) = row?;
        if let Ok(status) = serde_json::from_str::<Status>(&json) {
            out.push((
                Received {
                    status,
                    received_ms,
                },
                json,
            ));
        }
    }
    out.reverse();
    Ok(out)
}

/// The latest report of a device.
pub fn latest(conn: &Connection, device: &str) -> Result<Option<Received>> {
    Ok(reports(conn, device)?.pop().map(|(r, _)| r))
}

/// A status of an enrolled device, parsed: `offline` raises `offline`; `online` and a report
/// clear it and set the presence `online`; a report is stored (the newest [`KEEP_REPORTS`]
/// are kept) and judged. The same report received again (a retained message redelivered when
/// the hub resubscribes) changes nothing, not even its received time.
pub fn on_status(
    tx: &Transaction,
    device: &str,
    payload: &StatusPayload,
    now_ms: i64,
) -> Result<Changes> {
    match payload {
        StatusPayload::Offline => {
            store::status(tx, device, "offline", now_ms)?;
            let v = judge_presence(Some(("offline", now_ms)), None, now_ms, &Limits::default());
            apply(tx, device, now_ms, vec![(OFFLINE, String::new(), v)])
        }
        StatusPayload::Online => {
            store::status(tx, device, "online", now_ms)?;
            apply(
                tx,
                device,
                now_ms,
                vec![(OFFLINE, String::new(), Verdict::Clear)],
            )
        }
        StatusPayload::Report(s) => {
            let json = match serde_json::to_string(s) {
                Ok(j) => j,
                Err(e) => {
                    tracing::warn!("hub: health: {device}: cannot store a report: {e}");
                    return Ok(Changes::default());
                }
            };
            let previous = reports(tx, device)?;
            if previous.last().is_some_and(|(_, j)| *j == json) {
                return Ok(Changes::default());
            }
            store::status(tx, device, "online", now_ms)?;
            tx.execute(
                "INSERT INTO health_reports (device, received_ms, report) VALUES (?1, ?2, ?3)",
                params![device, now_ms, json],
            )?;
            tx.execute(
                "DELETE FROM health_reports WHERE device = ?1 AND id NOT IN
                   (SELECT id FROM health_reports WHERE device = ?1 ORDER BY id DESC LIMIT ?2)",
                params![device, KEEP_REPORTS as i64],
            )?;
            let new = Received {
                status: (**s).clone(),
                received_ms: now_ms,
            };
            let previous: Vec<Received> = previous.into_iter().map(|(r, _)| r).collect();
            let open = open_kinds(tx, device)?;
            apply(tx, device, now_ms, judge_report(&open, &previous, &new))
        }
    }
}

/// When the hub last received a verified record of (device, model): stored, or held waiting
/// for an earlier one (it was verified all the same).
pub fn last_record_ms(conn: &Connection, device: &str, model: &str) -> Result<Option<i64>> {
    conn.prepare_cached(
        "SELECT MAX(t) FROM (
           SELECT MAX(stored_ms) AS t FROM records WHERE device = ?1 AND model = ?2
           UNION ALL
           SELECT MAX(received_ms) FROM held_records WHERE device = ?1 AND model = ?2) AS latest",
    )?
    .query_row(params![device, model], |r| r.get(0))
}

/// The time-driven alarms of every enrolled device at `now_ms`: `offline` by staleness (and
/// its clearing), `model_silent` raised and cleared. Run in one transaction; running it twice
/// at the same time changes nothing more.
pub fn evaluate(
    tx: &Transaction,
    enrolment: &Enrolment,
    now_ms: i64,
    limits: &Limits,
) -> Result<Changes> {
    let mut changes = Changes::default();
    for device in enrolment.devices.keys() {
        let presence: Option<(Option<String>, Option<i64>)> = tx
            .prepare_cached("SELECT status, status_ms FROM presence WHERE device = ?1")?
            .query_row(crate::params![device], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let presence = match &presence {
            Some((Some(s), Some(at))) => Some((s.as_str(), *at)),
            _ => None,
        };
        let latest = latest(tx, device)?;
        let open = open_kinds(tx, device)?;
        let offline_v = judge_presence(
            presence,
            latest.as_ref().map(|r| r.received_ms),
            now_ms,
            limits,
        );
        let offline = match &offline_v {
            Verdict::Raise { .. } => true,
            Verdict::Clear => false,
            Verdict::Keep => open.iter().any(|(k, _)| k == OFFLINE),
        };
        let mut j: Vec<Judgement> = vec![(OFFLINE, String::new(), offline_v)];
        if let Some(r) = &latest {
            let mut last = BTreeMap::new();
            for p in &r.status.pipelines {
                if let Some(t) = last_record_ms(tx, device, &p.model)? {
                    last.insert(p.model.clone(), t);
                }
            }
            j.extend(judge_silence(&open, r, &last, offline, now_ms));
        }
        changes += apply(tx, device, now_ms, j)?;
    }
    Ok(changes)
}

// --- Read side -------------------------------------------------------------------------------

/// One health alarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthAlarm {
    pub id: i64,
    pub device: String,
    pub kind: String,
    /// The model id for `model_silent` and `source_restarting`, empty otherwise.
    pub subject: String,
    /// When the cause started, as well as the hub knows (Unix ms, hub clock).
    pub since_ms: i64,
    pub raised_ms: i64,
    /// `None` while the cause lasts.
    pub cleared_ms: Option<i64>,
    /// Facts at the time it was raised, in French.
    pub detail: String,
}

/// Health alarms, open ones first then the cleared ones, newest first; `cleared_since_ms`:
/// also those cleared at or after it (`None`: open ones only).
pub fn alarms(
    conn: &Connection,
    device: Option<&str>,
    cleared_since_ms: Option<i64>,
    limit: u64,
) -> Result<Vec<HealthAlarm>> {
    let mut q = conn.prepare_cached(
        "SELECT id, device, kind, subject, since_ms, raised_ms, cleared_ms, detail
         FROM health_alarms
         WHERE (CAST(?1 AS TEXT) IS NULL OR device = ?1) AND (cleared_ms IS NULL OR cleared_ms >= ?2)
         ORDER BY cleared_ms IS NOT NULL, raised_ms DESC, id DESC LIMIT ?3",
    )?;
    let rows = q.query_map(
        params![
            device,
            cleared_since_ms.unwrap_or(i64::MAX),
            i64::try_from(limit).unwrap_or(i64::MAX)
        ],
        |r| {
            Ok(HealthAlarm {
                id: r.get(0)?,
                device: r.get(1)?,
                kind: r.get(2)?,
                subject: r.get(3)?,
                since_ms: r.get(4)?,
                raised_ms: r.get(5)?,
                cleared_ms: r.get(6)?,
                detail: r.get(7)?,
            })
        },
    )?;
    rows.collect()
}

// --- Plain French, for the stored evidence (`detail`) ----------------------------------------------------------------------------

/// A size for people: `240 Mo`, `7,5 Go` (powers of 1000, as disks are sold).
pub fn octets(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.1} Go", n / 1e9).replace('.', ",")
    } else {
        format!("{:.0} Mo", n / 1e6)
    }
}

pub fn source_fr(k: SourceKind) -> &'static str {
    match k {
        SourceKind::Camera => "caméra",
        SourceKind::Microphone => "microphone",
        SourceKind::Node => "nœud capteur",
        SourceKind::I2c => "capteur I2C",
        SourceKind::Replay => "fichier rejoué",
    }
}

pub fn state_fr(s: SourceState) -> &'static str {
    match s {
        SourceState::Starting => "en démarrage",
        SourceState::Running => "en marche",
        SourceState::Restarting => "en redémarrage",
        SourceState::Ended => "terminée",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hub_link::{Clock, PipelineStatus};

    const T: i64 = 1_780_000_000_000;

    fn report(depth: u64, oldest: Option<u64>) -> Status {
        Status {
            v: hub_link::status::STATUS_VERSION,
            version: "0.1.0".into(),
            at_ms: T,
            uptime_s: 3600,
            clock: Clock::Synchronised,
            cpu_temp_c: None,
            load1: None,
            disk_free_bytes: Some(4 << 30),
            disk_total_bytes: Some(8 << 30),
            outbox_depth: depth,
            oldest_unacked_s: oldest,
            pipelines: vec![PipelineStatus {
                model: "m".into(),
                source: SourceKind::Camera,
                state: SourceState::Running,
                window_s: 60,
                captured: 0,
                inferred: 0,
                dropped: 0,
                restarts: 0,
                p50_ms: None,
                p99_ms: None,
            }],
            node: None,
        }
    }

    fn at(status: Status, received_ms: i64) -> Received {
        Received {
            status,
            received_ms,
        }
    }

    fn verdict(js: &[Judgement], kind: &str, subject: &str) -> Verdict {
        js.iter()
            .find(|(k, s, _)| *k == kind && s == subject)
            .map(|(_, _, v)| v.clone())
            .unwrap_or_else(|| panic!("no verdict for {kind} {subject}"))
    }

    fn raised(v: &Verdict) -> bool {
        matches!(v, Verdict::Raise { .. })
    }

    #[test]
    fn disk_has_hysteresis_and_a_floor() {
        let gib = 1u64 << 30;
        for (free, total, expect) in [
            (gib / 2, 8 * gib, "raise"),   // 6 %
            (gib, 8 * gib, "keep"),        // 12.5 %: between the thresholds
            (2 * gib, 8 * gib, "clear"),   // 25 %
            (200 << 20, 1 << 30, "raise"), // 19 % but under 256 MiB
            (256 << 20, 1 << 30, "keep"),  // 25 % and exactly 256 MiB
            (300 << 20, 1 << 30, "clear"), // 29 % and above 256 MiB
            (0, 0, "keep"),                // no size: cannot tell
        ] {
            let mut s = report(0, None);
            s.disk_free_bytes = Some(free);
            s.disk_total_bytes = Some(total);
            let v = verdict(&judge_report(&[], &[], &at(s, T)), DISK_LOW, "");
            let got = match v {
                Verdict::Raise { .. } => "raise",
                Verdict::Keep => "keep",
                Verdict::Clear => "clear",
            };
            assert_eq!(got, expect, "{free} of {total}");
        }
    }

    #[test]
    fn backlog_needs_growth_over_three_reports_and_age() {
        let r = |d, o| at(report(d, o), T);
        // 600 s is the floor (3 x 60 s windows is less).
        assert_eq!(backlog_threshold_s(&report(0, None)), 600);
        let mut wide = report(0, None);
        wide.pipelines[0].window_s = 900;
        assert_eq!(backlog_threshold_s(&wide), 2700);
        let prev = [r(1, Some(500)), r(2, Some(560))];
        let v = verdict(&judge_report(&[], &prev, &r(3, Some(620))), BACKLOG, "");
        assert_eq!(
            v,
            Verdict::Raise {
                since_ms: T - 620_000,
                detail: "3 résultat(s) en attente, le plus ancien depuis 10 min (seuil 10 min), la file grandit depuis 3 rapports".into()
            }
        );
        // Not growing (equal depths), or too young, or only two reports: no raise.
        let flat = [r(3, Some(500)), r(3, Some(560))];
        assert_eq!(
            verdict(&judge_report(&[], &flat, &r(3, Some(620))), BACKLOG, ""),
            Verdict::Keep
        );
        assert_eq!(
            verdict(&judge_report(&[], &prev, &r(3, Some(590))), BACKLOG, ""),
            Verdict::Clear
        );
        assert_eq!(
            verdict(
                &judge_report(&[], &prev[1..], &r(3, Some(620))),
                BACKLOG,
                ""
            ),
            Verdict::Keep
        );
        assert_eq!(
            verdict(&judge_report(&[], &prev, &r(0, None)), BACKLOG, ""),
            Verdict::Clear
        );
    }

    #[test]
    fn restarts_are_compared_within_one_run_of_the_agent() {
        let mut a = report(0, None);
        a.pipelines[0].restarts = 2;
        let mut b = a.clone();
        b.uptime_s += 60;
        b.pipelines[0].restarts = 3;
        assert!(raised(&verdict(
            &judge_report(&[], &[at(a.clone(), T)], &at(b.clone(), T + 60_000)),
            SOURCE_RESTARTING,
            "m"
        )));
        // The agent restarted: counters start again; 3 then 1 is no growth, and running clears.
        let mut c = b.clone();
        c.uptime_s = 30;
        c.pipelines[0].restarts = 1;
        let mut d = c.clone();
        d.uptime_s = 90;
        assert_eq!(
            verdict(
                &judge_report(&[], &[at(b, T)], &at(c.clone(), T + 60_000)),
                SOURCE_RESTARTING,
                "m"
            ),
            Verdict::Clear
        );
        // Restarting state raises without growth; starting keeps.
        d.pipelines[0].state = SourceState::Restarting;
        assert!(raised(&verdict(
            &judge_report(&[], &[at(c.clone(), T)], &at(d.clone(), T + 60_000)),
            SOURCE_RESTARTING,
            "m"
        )));
        d.pipelines[0].state = SourceState::Starting;
        assert_eq!(
            verdict(
                &judge_report(&[], &[at(c, T)], &at(d, T + 60_000)),
                SOURCE_RESTARTING,
                "m"
            ),
            Verdict::Keep
        );
        // A pipeline gone from the report: its open alarm clears.
        let open = [(SOURCE_RESTARTING.to_owned(), "gone".to_owned())];
        assert_eq!(
            verdict(
                &judge_report(&open, &[], &at(report(0, None), T)),
                SOURCE_RESTARTING,
                "gone"
            ),
            Verdict::Clear
        );
    }

    #[test]
    fn staleness_applies_only_to_devices_that_send_reports() {
        let l = Limits::new(Duration::from_secs(180));
        let now = T + 181_000;
        assert!(raised(&judge_presence(
            Some(("online", T)),
            Some(T),
            now,
            &l
        )));
        assert_eq!(
            judge_presence(Some(("online", T)), Some(T), T + 180_000, &l),
            Verdict::Clear
        );
        // A bare `online` after the last report: an older agent, no periodic report expected.
        assert_eq!(
            judge_presence(Some(("online", T + 1)), Some(T), now, &l),
            Verdict::Clear
        );
        assert_eq!(
            judge_presence(Some(("online", T)), None, now, &l),
            Verdict::Clear
        );
        assert_eq!(
            judge_presence(Some(("offline", T + 5)), Some(T), now, &l),
            Verdict::Raise {
                since_ms: T + 5,
                detail: "l'appareil a annoncé qu'il se déconnectait (« offline » : arrêt ou connexion perdue)".into()
            }
        );
        assert_eq!(judge_presence(None, None, now, &l), Verdict::Keep);
    }

    #[test]
    fn silence_counts_windows_from_the_last_record_or_the_agent_start() {
        let r = at(report(0, None), T); // agent started at T - 3600 s
        let last: BTreeMap<String, i64> = [("m".to_owned(), T)].into();
        assert_eq!(
            verdict(
                &judge_silence(&[], &r, &last, false, T + 120_000),
                MODEL_SILENT,
                "m"
            ),
            Verdict::Clear
        );
        assert_eq!(
            verdict(
                &judge_silence(&[], &r, &last, false, T + 120_001),
                MODEL_SILENT,
                "m"
            ),
            Verdict::Raise {
                since_ms: T,
                detail: "aucun résultat reçu depuis 2 min (fenêtre de 1 min)".into()
            }
        );
        // Offline: not raised, not cleared.
        assert_eq!(
            verdict(
                &judge_silence(&[], &r, &last, true, T + 120_001),
                MODEL_SILENT,
                "m"
            ),
            Verdict::Keep
        );
        // Never a record: counted from the agent's start.
        let none = BTreeMap::new();
        assert_eq!(
            verdict(&judge_silence(&[], &r, &none, false, T), MODEL_SILENT, "m"),
            Verdict::Raise {
                since_ms: T - 3_600_000,
                detail: "aucun résultat reçu depuis 1 h (fenêtre de 1 min)".into()
            }
        );
        // An ended replay is not silent.
        let mut ended = report(0, None);
        ended.pipelines[0].state = SourceState::Ended;
        assert_eq!(
            verdict(
                &judge_silence(&[], &at(ended, T), &none, false, T),
                MODEL_SILENT,
                "m"
            ),
            Verdict::Clear
        );
    }

    #[test]
    fn messages_add_what_the_latest_report_says() {
        use crate::web::health::message;
        use crate::web::i18n::{Lang, Locale, time_zone};
        let fr = Locale::new(Lang::Fr, time_zone("Europe/Paris").unwrap());
        let en = Locale::new(Lang::En, time_zone("Europe/Paris").unwrap());
        let a = |kind: &str, subject: &str, since_ms| HealthAlarm {
            id: 1,
            device: "d".into(),
            kind: kind.into(),
            subject: subject.into(),
            since_ms,
            raised_ms: since_ms,
            cleared_ms: None,
            detail: "x".into(),
        };
        let since = crate::dates::parse("2026-07-14T12:05").unwrap();
        let now = since + 3_600_000;
        let mut s = report(4, Some(1500));
        s.disk_free_bytes = Some(1 << 28);
        let r = at(s, now);
        assert_eq!(
            message(&fr, &a(DISK_LOW, "", since), Some(&r), now),
            "Le disque est presque plein (3\u{a0}% libre)"
        );
        assert_eq!(
            message(&en, &a(DISK_LOW, "", since), Some(&r), now),
            "The disk is almost full (3% free)"
        );
        assert_eq!(
            message(&fr, &a(SOURCE_RESTARTING, "m", since), Some(&r), now),
            "La caméra redémarre (modèle m)"
        );
        assert_eq!(
            message(&en, &a(SOURCE_RESTARTING, "m", since), Some(&r), now),
            "The camera is restarting (model m)"
        );
        assert_eq!(
            message(&fr, &a(BACKLOG, "", since), Some(&r), now),
            "Des résultats attendent d'être envoyés depuis 25 min (4 en attente)"
        );
        assert_eq!(
            message(&en, &a(BACKLOG, "", since), Some(&r), now),
            "Results have been waiting to be sent for 25 min (4 waiting)"
        );
        assert_eq!(octets(256 << 20), "268 Mo");
        assert_eq!(octets(8 << 30), "8,6 Go");
    }
}
