//! Device health on the pages and in the API, in French for the local authorities who read
//! them: the ongoing health alarms (device page and dashboard), the "État de l'appareil"
//! section of a device page (its latest status report in plain words, one table per pipeline),
//! and `/api/devices/{id}/health`. Times are Paris time (`dates::date_heure`); states are words,
//! never a colour alone.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::{Path, Query, State};
use hub_link::{Clock, Status};
use maud::{Markup, html};
use rusqlite::{Connection, OptionalExtension};
use serde_json::{Value, json};

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
            .query_row([device], |r| Ok((r.get(0)?, r.get(1)?)))
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
pub fn open_alarms(conn: &Connection, now_ms: i64) -> Result<Vec<(HealthAlarm, String)>> {
    let alarms = health::alarms(conn, None, None, 1000)?;
    let mut latest: BTreeMap<String, Option<Received>> = BTreeMap::new();
    let mut out = Vec::with_capacity(alarms.len());
    for a in alarms {
        if !latest.contains_key(&a.device) {
            latest.insert(a.device.clone(), health::latest(conn, &a.device)?);
        }
        let r = latest.get(&a.device).and_then(Option::as_ref);
        let m = health::message(&a, r, now_ms);
        out.push((a, m));
    }
    Ok(out)
}

pub(super) fn entier(n: u64) -> String {
    // Groups of three digits separated by a narrow no-break space, as French writes numbers.
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

fn ms_fr(v: Option<f32>) -> String {
    v.map_or("-".to_owned(), |x| health::decimal(x, 1))
}

/// The list of ongoing alarms (`with_device`: a column naming the device, for the dashboard).
pub fn alarm_table(id: &str, rows: &[(HealthAlarm, String)], with_device: bool) -> Markup {
    html! {
        table.health id=(id) {
            caption { "Alertes de fonctionnement en cours" }
            thead { tr {
                @if with_device { th scope="col" { "Appareil" } }
                th scope="col" { "Alerte" }
                th scope="col" { "Depuis (heure de Paris)" }
            } }
            tbody {
                @for (a, m) in rows {
                    tr data-health=(a.id) data-device=(a.device) data-kind=(a.kind) data-subject=(a.subject) {
                        @if with_device { td { a href=(format!("/device/{}", a.device)) { (a.device) } } }
                        td.message { span.badge.alarm { "Alerte" } " " (m) }
                        td { (dates::date_heure(a.since_ms)) }
                    }
                }
            }
        }
    }
}

/// The ongoing alarms at the top of a device page.
pub fn device_alarms(h: &DeviceHealth, now_ms: i64) -> Markup {
    let rows: Vec<(HealthAlarm, String)> = h
        .open
        .iter()
        .map(|a| (a.clone(), health::message(a, h.latest.as_ref(), now_ms)))
        .collect();
    html! {
        section id="alertes" lang="fr" {
            @if rows.is_empty() {
                p id="no-health-alarm" { "Aucune alerte de fonctionnement en cours." }
            } @else {
                h2 { "Alertes de fonctionnement (" (rows.len()) ")" }
                (alarm_table("health-alarms", &rows, false))
            }
        }
    }
}

fn presence_badge(online: Option<bool>) -> Markup {
    match online {
        Some(true) => html! { span.badge.ok data-online="true" { "✓ en ligne" } },
        Some(false) => html! { span.badge.off data-online="false" { "✗ hors ligne" } },
        None => html! { span.badge data-online="unknown" { "inconnu" } },
    }
}

fn clock_fr(c: Clock) -> &'static str {
    match c {
        Clock::Synchronised => "synchronisée",
        Clock::Unsynchronised => {
            "non synchronisée : les heures inscrites dans les résultats peuvent être fausses"
        }
        Clock::Unknown => "l'appareil ne sait pas dire si elle est synchronisée",
    }
}

fn disk_fr(s: &Status) -> String {
    match (s.disk_free_bytes, s.disk_total_bytes) {
        (Some(free), Some(total)) => format!(
            "{} libres sur {} ({} %)",
            health::octets(free),
            health::octets(total),
            health::disk_free_percent(s).unwrap_or(0)
        ),
        (Some(free), None) => format!("{} libres", health::octets(free)),
        _ => "inconnu".into(),
    }
}

fn queue_fr(s: &Status) -> String {
    match (s.outbox_depth, s.oldest_unacked_s) {
        (0, _) => "aucun résultat en attente".into(),
        (n, Some(age)) => format!(
            "{} résultat{} en attente de l'accusé de réception du hub, le plus ancien depuis {}",
            entier(n),
            if n > 1 { "s" } else { "" },
            dates::duree(age)
        ),
        (n, None) => format!(
            "{} résultat{} en attente de l'accusé de réception du hub",
            entier(n),
            if n > 1 { "s" } else { "" }
        ),
    }
}

/// The "État de l'appareil" section of a device page.
pub fn device_section(h: &DeviceHealth) -> Markup {
    html! {
        section id="etat" lang="fr" {
            h2 { "État de l'appareil" }
            table.facts id="etat-appareil" {
                caption.sr { "État de l'appareil en détail" }
                tr { th scope="row" { "Connexion" } td { (presence_badge(h.online())) } }
                @match &h.latest {
                    None => {
                        tr { th scope="row" { "Rapport d'état" } td { "aucun rapport reçu (agent ancien, ou jamais connecté)" } }
                    }
                    Some(r) => {
                        @let s = &r.status;
                        tr { th scope="row" { "Dernier rapport reçu" } td id="dernier-rapport" { (dates::date_heure(r.received_ms)) " (heure de Paris)" } }
                        tr { th scope="row" { "Version de l'agent" } td { (s.version) } }
                        tr { th scope="row" { "En marche depuis" } td id="uptime" { (dates::duree(s.uptime_s)) } }
                        tr { th scope="row" { "Horloge" } td id="horloge" { (clock_fr(s.clock)) } }
                        tr { th scope="row" { "Température du processeur" } td { @match s.cpu_temp_c { Some(t) => { (health::decimal(t, 1)) " °C" }, None => "non mesurée" } } }
                        tr { th scope="row" { "Charge (moyenne sur 1 min)" } td { @match s.load1 { Some(l) => (health::decimal(l, 2)), None => "non mesurée" } } }
                        tr { th scope="row" { "Disque libre" } td id="disque" { (disk_fr(s)) } }
                        tr { th scope="row" { "File d'attente" } td id="file" { (queue_fr(s)) } }
                        @if let Some(n) = &s.node {
                            tr { th scope="row" { "Nœud capteur" } td {
                                (entier(n.frames)) " trames reçues, " (entier(n.dropped)) " rejetées, "
                                (entier(n.missed)) " perdues, " (entier(n.sensor_errors)) " erreurs de capteur"
                            } }
                        }
                    }
                }
            }
            @if let Some(r) = &h.latest {
                @if r.status.pipelines.is_empty() {
                    p { "Aucune chaîne d'analyse n'est déclarée dans le dernier rapport." }
                } @else {
                    table id="chaines" {
                        caption { "Chaînes d'analyse : compteurs depuis le démarrage de l'agent (images, ou extraits sonores pour un microphone)" }
                        thead { tr {
                            th scope="col" { "Modèle" } th scope="col" { "Source" } th scope="col" { "État" }
                            th scope="col" { "Images captées" } th scope="col" { "Analysées" } th scope="col" { "Abandonnées" }
                            th scope="col" { "Redémarrages" } th scope="col" { "Inférence médiane (ms)" } th scope="col" { "Inférence p99 (ms)" }
                        } }
                        tbody {
                            @for p in &r.status.pipelines {
                                tr data-model=(p.model) {
                                    th scope="row" { (p.model) }
                                    td { (health::source_fr(p.source)) }
                                    td.state { (health::state_fr(p.state)) }
                                    td.num { (entier(p.captured)) }
                                    td.num { (entier(p.inferred)) }
                                    td.num { (entier(p.dropped)) }
                                    td.num { (entier(p.restarts)) }
                                    td.num { (ms_fr(p.p50_ms)) }
                                    td.num { (ms_fr(p.p99_ms)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn alarm_json(a: &HealthAlarm, latest: Option<&Received>, now_ms: i64) -> Value {
    json!({
        "id": a.id,
        "kind": a.kind,
        "subject": a.subject,
        "open": a.cleared_ms.is_none(),
        "since": dates::format(a.since_ms),
        "raised": dates::format(a.raised_ms),
        "cleared": a.cleared_ms.map(dates::format),
        "detail": a.detail,
        "message": health::message(a, latest, now_ms),
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
            "alarms": alarms.iter().map(|a| alarm_json(a, h.latest.as_ref(), now_ms)).collect::<Vec<_>>(),
        })))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_the_french_way() {
        assert_eq!(entier(0), "0");
        assert_eq!(entier(999), "999");
        assert_eq!(entier(1000), "1\u{202f}000");
        assert_eq!(entier(1_234_567), "1\u{202f}234\u{202f}567");
    }
}
