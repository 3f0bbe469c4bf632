//! Device health on the pages and in the API, in French for the local authorities who read
//! them: the ongoing health alarms (device page and dashboard), the "État de l'appareil"
//! section of a device page (its latest status report in plain words, one table per pipeline),
//! and `/api/devices/{id}/health`. Times are Paris time (`dates::date_heure`); states are words,
//! never a colour alone.

use std::collections::{BTreeMap, HashMap};

use crate::db::sql::{Connection, OptionalExtension};
use axum::Json;
use axum::extract::{Path, Query, State};
use hub_link::{Clock, SourceKind, SourceState, Status};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::i18n::{Lang, Locale};
use super::{App, WebError, WebResult, params};
use crate::db::store::Result;
use crate::health::{self, HealthAlarm, Received};
use crate::{dates, db::query};

/// What a device page shows of the device's health.
#[derive(Debug, Clone)]
pub struct DeviceHealth {
    /// The latest status (`online`/`offline`) and when it arrived.
    pub presence: Option<(String, i64)>,
    pub latest: Option<Received>,
    /// Open alarms, newest first.
    pub open: Vec<HealthAlarm>,
}

impl DeviceHealth {
    pub fn load(conn: &Connection, device: &str) -> Result<DeviceHealth> {
        let presence: Option<(Option<String>, Option<i64>)> = conn
            .prepare_cached("SELECT status, status_ms FROM presence WHERE device = ?1")?
            .query_row(crate::params![device], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(DeviceHealth {
            presence: match presence {
                Some((Some(s), Some(at))) => Some((s, at)),
                _ => None,
            },
            latest: health::latest(conn, device)?,
            open: health::alarms(conn, Some(device), None, 100)?,
        })
    }

    /// `en ligne`, `hors ligne` (it said so, or its reports stopped) or `inconnu`.
    pub fn online(&self) -> Option<bool> {
        if self.open.iter().any(|a| a.kind == health::OFFLINE) {
            return Some(false);
        }
        match self.presence.as_ref().map(|(s, _)| s.as_str()) {
            Some("online") => Some(true),
            Some("offline") => Some(false),
            _ => None,
        }
    }
}

/// Every open health alarm with its message, newest first (the dashboard's list).
pub fn open_alarms(
    conn: &Connection,
    l: &Locale,
    now_ms: i64,
) -> Result<Vec<(HealthAlarm, String)>> {
    let alarms = health::alarms(conn, None, None, 1000)?;
    let mut latest: BTreeMap<String, Option<Received>> = BTreeMap::new();
    let mut out = Vec::with_capacity(alarms.len());
    for a in alarms {
        if !latest.contains_key(&a.device) {
            latest.insert(a.device.clone(), health::latest(conn, &a.device)?);
        }
        let r = latest.get(&a.device).and_then(Option::as_ref);
        let m = message(l, &a, r, now_ms);
        out.push((a, m));
    }
    Ok(out)
}

fn source_name(l: &Locale, k: SourceKind) -> &'static str {
    match (l.lang, k) {
        (Lang::Fr, k) => health::source_fr(k),
        (Lang::En, SourceKind::Camera) => "camera",
        (Lang::En, SourceKind::Microphone) => "microphone",
        (Lang::En, SourceKind::Node) => "sensor node",
        (Lang::En, SourceKind::I2c) => "I2C sensor",
        (Lang::En, SourceKind::Replay) => "replayed file",
    }
}

fn state_name(l: &Locale, s: SourceState) -> &'static str {
    match (l.lang, s) {
        (Lang::Fr, s) => health::state_fr(s),
        (Lang::En, SourceState::Starting) => "starting",
        (Lang::En, SourceState::Running) => "running",
        (Lang::En, SourceState::Restarting) => "restarting",
        (Lang::En, SourceState::Ended) => "ended",
    }
}

/// What an alarm says, in plain words, with what the latest report adds (the current disk
/// share, the current age of the oldest waiting result, the kind of source).
pub fn message(l: &Locale, a: &HealthAlarm, latest: Option<&Received>, now_ms: i64) -> String {
    let report = latest.map(|r| &r.status);
    let since = l.since(a.since_ms, now_ms);
    let en = l.lang == Lang::En;
    match a.kind.as_str() {
        health::OFFLINE if en => format!("Device offline since {since}"),
        health::OFFLINE => format!("Appareil hors ligne depuis {since}"),
        health::MODEL_SILENT => {
            let n = health::SILENT_WINDOWS;
            match (l.lang, n) {
                (Lang::En, 2) => format!(
                    "Model {} has published nothing for two windows (nothing received since {since})",
                    a.subject
                ),
                (Lang::En, n) => format!(
                    "Model {} has published nothing for {n} windows (nothing received since {since})",
                    a.subject
                ),
                (Lang::Fr, 2) => format!(
                    "Le modèle {} n'a rien publié depuis deux fenêtres (rien reçu depuis {since})",
                    a.subject
                ),
                (Lang::Fr, n) => format!(
                    "Le modèle {} n'a rien publié depuis {n} fenêtres (rien reçu depuis {since})",
                    a.subject
                ),
            }
        }
        health::DISK_LOW => match report.and_then(health::disk_free_percent) {
            Some(p) if en => format!("The disk is almost full ({p}% free)"),
            Some(p) => format!("Le disque est presque plein ({p}\u{a0}% libre)"),
            None => format!(
                "{} ({})",
                l.t("Le disque est presque plein", "The disk is almost full"),
                a.detail
            ),
        },
        health::BACKLOG => {
            let since = match latest {
                Some(r) => match r.status.oldest_unacked_s {
                    Some(age) => r.received_ms.saturating_sub(
                        i64::try_from(age.saturating_mul(1000)).unwrap_or(i64::MAX),
                    ),
                    None => a.since_ms,
                },
                None => a.since_ms,
            };
            let age = l.secs(u64::try_from(now_ms.saturating_sub(since) / 1000).unwrap_or(0));
            let waiting = report.map_or(String::new(), |s| {
                format!(
                    " ({} {})",
                    l.int(i64::try_from(s.outbox_depth).unwrap_or(i64::MAX)),
                    l.t("en attente", "waiting")
                )
            });
            if en {
                format!("Results have been waiting to be sent for {age}{waiting}")
            } else {
                format!("Des résultats attendent d'être envoyés depuis {age}{waiting}")
            }
        }
        health::SOURCE_RESTARTING => {
            let source = report
                .and_then(|s| s.pipelines.iter().find(|p| p.model == a.subject))
                .map(|p| p.source);
            let who = match (l.lang, source) {
                (Lang::Fr, Some(SourceKind::Camera)) => "La caméra",
                (Lang::Fr, Some(SourceKind::Microphone)) => "Le microphone",
                (Lang::Fr, Some(SourceKind::Node)) => "Le nœud capteur",
                (Lang::Fr, Some(SourceKind::I2c)) => "Le capteur I2C",
                (Lang::Fr, Some(SourceKind::Replay)) => "La lecture du fichier rejoué",
                (Lang::Fr, None) => "La source",
                (Lang::En, Some(SourceKind::Camera)) => "The camera",
                (Lang::En, Some(SourceKind::Microphone)) => "The microphone",
                (Lang::En, Some(SourceKind::Node)) => "The sensor node",
                (Lang::En, Some(SourceKind::I2c)) => "The I2C sensor",
                (Lang::En, Some(SourceKind::Replay)) => "The replay of the file",
                (Lang::En, None) => "The source",
            };
            if en {
                format!("{who} is restarting (model {})", a.subject)
            } else {
                format!("{who} redémarre (modèle {})", a.subject)
            }
        }
        other => format!("{other}{} {}", l.t(" :", ":"), a.detail),
    }
}

fn millis(l: &Locale, v: Option<f32>) -> String {
    v.map_or("-".to_owned(), |x| l.fixed(f64::from(x), 1))
}

fn count(l: &Locale, n: u64) -> String {
    l.int(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The list of ongoing alarms (`with_device`: a column naming the device, for the dashboard).
pub fn alarm_table(
    l: &Locale,
    id: &str,
    rows: &[(HealthAlarm, String)],
    with_device: bool,
) -> Markup {
    html! {
        table.health id=(id) {
            caption { (l.t("Alertes de fonctionnement en cours", "Ongoing operating alerts")) }
            thead { tr {
                @if with_device { th scope="col" { (l.t("Appareil", "Device")) } }
                th scope="col" { (l.t("Alerte", "Alert")) }
                th scope="col" { (l.t("Depuis", "Since")) " (" (l.tz_words()) ")" }
            } }
            tbody {
                @for (a, m) in rows {
                    tr data-health=(a.id) data-device=(a.device) data-kind=(a.kind) data-subject=(a.subject) {
                        @if with_device { td { a href=(format!("/device/{}", a.device)) { (a.device) } } }
                        td.message { span.badge.alarm { (l.t("Alerte", "Alert")) } " " (m) }
                        td { (l.datetime(a.since_ms)) }
                    }
                }
            }
        }
    }
}

/// The ongoing alarms at the top of a device page.
pub fn device_alarms(l: &Locale, h: &DeviceHealth, now_ms: i64) -> Markup {
    let rows: Vec<(HealthAlarm, String)> = h
        .open
        .iter()
        .map(|a| (a.clone(), message(l, a, h.latest.as_ref(), now_ms)))
        .collect();
    html! {
        section id="alertes" {
            @if rows.is_empty() {
                p id="no-health-alarm" { (l.t("Aucune alerte de fonctionnement en cours.", "No operating alert at present.")) }
            } @else {
                h2 { (l.t("Alertes de fonctionnement (", "Operating alerts (")) (rows.len()) ")" }
                (alarm_table(l, "health-alarms", &rows, false))
            }
        }
    }
}

fn presence_badge(l: &Locale, online: Option<bool>) -> Markup {
    match online {
        Some(true) => {
            html! { span.badge.ok data-online="true" { "✓ " (l.t("en ligne", "online")) } }
        }
        Some(false) => {
            html! { span.badge.off data-online="false" { "✗ " (l.t("hors ligne", "offline")) } }
        }
        None => html! { span.badge data-online="unknown" { (l.t("inconnu", "unknown")) } },
    }
}

fn clock_words(l: &Locale, c: Clock) -> &'static str {
    match c {
        Clock::Synchronised => l.t("synchronisée", "synchronised"),
        Clock::Unsynchronised => l.t(
            "non synchronisée : les heures inscrites dans les résultats peuvent être fausses",
            "not synchronised: the times written in the results may be wrong",
        ),
        Clock::Unknown => l.t(
            "l'appareil ne sait pas dire si elle est synchronisée",
            "the device cannot tell whether it is synchronised",
        ),
    }
}

fn disk_words(l: &Locale, s: &Status) -> String {
    match (s.disk_free_bytes, s.disk_total_bytes) {
        (Some(free), Some(total)) => format!(
            "{} {} {} ({}{}%)",
            l.bytes(free),
            l.t("libres sur", "free of"),
            l.bytes(total),
            health::disk_free_percent(s).unwrap_or(0),
            l.t("\u{a0}", "")
        ),
        (Some(free), None) => format!("{} {}", l.bytes(free), l.t("libres", "free")),
        _ => l.t("inconnu", "unknown").into(),
    }
}

fn queue_words(l: &Locale, s: &Status) -> String {
    let n = s.outbox_depth;
    let many = n > 1;
    let head = match (l.lang, many) {
        (Lang::Fr, false) => "résultat en attente de l'accusé de réception du hub",
        (Lang::Fr, true) => "résultats en attente de l'accusé de réception du hub",
        (Lang::En, false) => "result waiting for the hub's acknowledgement",
        (Lang::En, true) => "results waiting for the hub's acknowledgement",
    };
    match (n, s.oldest_unacked_s) {
        (0, _) => l.t("aucun résultat en attente", "no result waiting").into(),
        (n, Some(age)) => format!(
            "{} {head}{} {}",
            count(l, n),
            l.t(", le plus ancien depuis", ", the oldest for"),
            l.secs(age)
        ),
        (n, None) => format!("{} {head}", count(l, n)),
    }
}

/// The "État de l'appareil" section of a device page.
pub fn device_section(l: &Locale, h: &DeviceHealth) -> Markup {
    let unmeasured = l.t("non mesurée", "not measured");
    html! {
        section id="etat" {
            h2 { (l.t("État de l'appareil", "Device state")) }
            table.facts id="etat-appareil" {
                caption.sr { (l.t("État de l'appareil en détail", "Device state in detail")) }
                tr { th scope="row" { (l.t("Connexion", "Connection")) } td { (presence_badge(l, h.online())) } }
                @match &h.latest {
                    None => {
                        tr { th scope="row" { (l.t("Rapport d'état", "Status report")) } td { (l.t("aucun rapport reçu (agent ancien, ou jamais connecté)", "no report received (an older agent, or never connected)")) } }
                    }
                    Some(r) => {
                        @let s = &r.status;
                        tr { th scope="row" { (l.t("Dernier rapport reçu", "Latest report received")) } td id="dernier-rapport" { (l.datetime(r.received_ms)) " (" (l.tz_words()) ")" } }
                        tr { th scope="row" { (l.t("Version de l'agent", "Agent version")) } td { (s.version) } }
                        tr { th scope="row" { (l.t("En marche depuis", "Running for")) } td id="uptime" { (l.secs(s.uptime_s)) } }
                        tr { th scope="row" { (l.t("Horloge", "Clock")) } td id="horloge" { (clock_words(l, s.clock)) } }
                        tr { th scope="row" { (l.t("Température du processeur", "Processor temperature")) } td { @match s.cpu_temp_c { Some(t) => { (l.fixed(f64::from(t), 1)) "\u{a0}°C" }, None => (unmeasured) } } }
                        tr { th scope="row" { (l.t("Charge (moyenne sur 1 min)", "Load (1-minute average)")) } td { @match s.load1 { Some(x) => (l.fixed(f64::from(x), 2)), None => (unmeasured) } } }
                        tr { th scope="row" { (l.t("Disque libre", "Free disk")) } td id="disque" { (disk_words(l, s)) } }
                        tr { th scope="row" { (l.t("File d'attente", "Queue")) } td id="file" { (queue_words(l, s)) } }
                        @if let Some(n) = &s.node {
                            tr { th scope="row" { (l.t("Nœud capteur", "Sensor node")) } td {
                                (count(l, n.frames)) (l.t(" trames reçues, ", " frames received, "))
                                (count(l, n.dropped)) (l.t(" rejetées, ", " rejected, "))
                                (count(l, n.missed)) (l.t(" perdues, ", " lost, "))
                                (count(l, n.sensor_errors)) (l.t(" erreurs de capteur", " sensor errors"))
                            } }
                        }
                    }
                }
            }
            @if let Some(r) = &h.latest {
                @if r.status.pipelines.is_empty() {
                    p { (l.t("Aucune chaîne d'analyse n'est déclarée dans le dernier rapport.", "The latest report declares no analysis pipeline.")) }
                } @else {
                    table id="chaines" {
                        caption { (l.t("Chaînes d'analyse : compteurs depuis le démarrage de l'agent (images, ou extraits sonores pour un microphone)", "Analysis pipelines: counters since the agent started (frames, or sound chunks for a microphone)")) }
                        thead { tr {
                            th scope="col" { (l.t("Modèle", "Model")) } th scope="col" { "Source" } th scope="col" { (l.t("État", "State")) }
                            th scope="col" { (l.t("Images captées", "Frames captured")) } th scope="col" { (l.t("Analysées", "Analysed")) } th scope="col" { (l.t("Abandonnées", "Dropped")) }
                            th scope="col" { (l.t("Redémarrages", "Restarts")) } th scope="col" { (l.t("Inférence médiane (ms)", "Median inference (ms)")) } th scope="col" { (l.t("Inférence p99 (ms)", "p99 inference (ms)")) }
                        } }
                        tbody {
                            @for p in &r.status.pipelines {
                                tr data-model=(p.model) {
                                    th scope="row" { (p.model) }
                                    td { (source_name(l, p.source)) }
                                    td.state { (state_name(l, p.state)) }
                                    td.num { (count(l, p.captured)) }
                                    td.num { (count(l, p.inferred)) }
                                    td.num { (count(l, p.dropped)) }
                                    td.num { (count(l, p.restarts)) }
                                    td.num { (millis(l, p.p50_ms)) }
                                    td.num { (millis(l, p.p99_ms)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn alarm_json(l: &Locale, a: &HealthAlarm, latest: Option<&Received>, now_ms: i64) -> Value {
    json!({
        "id": a.id,
        "kind": a.kind,
        "subject": a.subject,
        "open": a.cleared_ms.is_none(),
        "since": dates::format(a.since_ms),
        "raised": dates::format(a.raised_ms),
        "cleared": a.cleared_ms.map(dates::format),
        "detail": a.detail,
        "message": message(l, a, latest, now_ms),
    })
}

/// `GET /api/devices/{id}/health`: the latest report, whether the device is online, and its
/// open and recently cleared health alarms.
pub async fn api(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Json<Value>> {
    params::only(&q, &[])?;
    let now_ms = crate::mqtt::now_ms();
    // The API's messages are in French, the language of the hub's readers, with the times in
    // the hub's time zone; its dates are RFC 3339 UTC.
    let l = Locale::new(Lang::Fr, app.cfg().time_zone.clone());
    app.db(move |c, e| {
        if query::device(c, e, &id)?.is_none() {
            return Err(WebError::NotFound(format!("no device {id:?}")));
        }
        let h = DeviceHealth::load(c, &id)?;
        let recent = now_ms.saturating_sub(
            i64::try_from(health::RECENTLY_CLEARED.as_millis()).unwrap_or(i64::MAX),
        );
        let alarms = health::alarms(c, Some(&id), Some(recent), 500)?;
        Ok(Json(json!({
            "device": id,
            "online": h.online(),
            "report": h.latest.as_ref().map(|r| &r.status),
            "report_received": h.latest.as_ref().map(|r| dates::format(r.received_ms)),
            "alarms": alarms.iter().map(|a| alarm_json(&l, a, h.latest.as_ref(), now_ms)).collect::<Vec<_>>(),
        })))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::i18n::time_zone;

    fn fr() -> Locale {
        Locale::new(Lang::Fr, time_zone("Europe/Paris").unwrap())
    }

    fn en() -> Locale {
        Locale::new(Lang::En, time_zone("Europe/Paris").unwrap())
    }

    fn alarm(kind: &str, subject: &str, since_ms: i64) -> HealthAlarm {
        HealthAlarm {
            id: 1,
            device: "dev-1".into(),
            kind: kind.into(),
            subject: subject.into(),
            since_ms,
            raised_ms: since_ms,
            cleared_ms: None,
            detail: "détail".into(),
        }
    }

    #[test]
    fn messages_in_plain_words_and_local_time() {
        let at = |s: &str| crate::dates::parse(s).unwrap();
        // 12:05 UTC is 14:05 in Paris in July (summer time), 13:05 in January.
        let now = at("2026-07-14T20:00");
        let off = alarm(health::OFFLINE, "", at("2026-07-14T12:05"));
        assert_eq!(
            message(&fr(), &off, None, now),
            "Appareil hors ligne depuis 14:05"
        );
        assert_eq!(
            message(&en(), &off, None, now),
            "Device offline since 14:05"
        );
        let off = alarm(health::OFFLINE, "", at("2026-01-13T12:05"));
        assert_eq!(
            message(&fr(), &off, None, now),
            "Appareil hors ligne depuis le 13 janv. à 13:05"
        );
        assert_eq!(
            message(&en(), &off, None, now),
            "Device offline since 13 Jan, 13:05"
        );
        let silent = alarm(
            health::MODEL_SILENT,
            "centerface-int8",
            at("2025-12-01T08:00"),
        );
        assert_eq!(
            message(&fr(), &silent, None, now),
            "Le modèle centerface-int8 n'a rien publié depuis deux fenêtres (rien reçu depuis le 1er déc. 2025 à 09:00)"
        );
        assert!(
            message(&en(), &silent, None, now)
                .starts_with("Model centerface-int8 has published nothing for two windows")
        );
    }

    #[test]
    fn numbers_are_grouped_the_language_s_way() {
        assert_eq!(count(&fr(), 1_234_567), "1\u{202f}234\u{202f}567");
        assert_eq!(count(&en(), 1_234_567), "1,234,567");
        assert_eq!(millis(&fr(), Some(9.06)), "9,1");
        assert_eq!(fr().bytes(268_000_000), "268\u{a0}Mo");
        assert_eq!(en().bytes(8_600_000_000), "8.6\u{a0}GB");
    }
}
