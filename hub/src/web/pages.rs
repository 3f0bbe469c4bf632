//! The public, read-only pages: the dashboard (devices by territory and their state, ongoing
//! health alarms), a device's health, charts and latest windows, the public register and the
//! alarm list. maud escapes
//! every interpolated string; nothing here writes.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use rusqlite::{Connection, params};

use super::chart::{self, ChartPoint};
use super::health;
use super::params::{self, Bucket as BucketParam};
use super::{App, WebError, WebResult};
use crate::dates;
use crate::db::query::{self, AuditState, DeviceOverview, SeriesInfo};
use crate::db::series::{self, Order, SeriesKey};

/// Points a chart aims for (a year of 15-minute windows: one point a day).
pub const CHART_POINTS: i64 = 400;

pub fn layout(title: &str, nav: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · IAT hub" }
                link rel="stylesheet" href="/style.css";
            }
            body {
                header {
                    nav {
                        a.brand href="/" { "IAT hub" }
                        a href="/" class=[(nav == "dashboard").then_some("here")] { "Dashboard" }
                        a href="/register" class=[(nav == "register").then_some("here")] { "Public register" }
                        a href="/alarms" class=[(nav == "alarms").then_some("here")] { "Alarms" }
                        a href="/admin" class=[(nav == "admin").then_some("here")] { "Admin" }
                    }
                }
                main { (body) }
                footer {
                    "Only signed, hash-chained aggregates leave the devices. "
                    a href="/register" { "Which models run where, and how to verify it." }
                }
            }
        }
    }
}

fn audit_badge(a: AuditState) -> Markup {
    let class = if a.is_alarm() {
        "badge alarm"
    } else if a == AuditState::Verified {
        "badge ok"
    } else {
        "badge"
    };
    html! { span class=(class) data-audit=(a.label()) { (a.label()) } }
}

fn status_badge(s: &str) -> Markup {
    let class = match s {
        "online" => "badge ok",
        "offline" => "badge off",
        _ => "badge",
    };
    html! { span class=(class) data-status=(s) { (s) } }
}

pub async fn dashboard(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Markup> {
    params::only(&q, &[])?;
    let now_ms = crate::mqtt::now_ms();
    let (devices, open, health_alarms) = app
        .db(move |conn, e| {
            let d = query::devices(conn, e)?;
            let open: i64 = conn.query_row(
                "SELECT COUNT(*) FROM alarms WHERE acked_ms IS NULL",
                [],
                |r| r.get(0),
            )?;
            let h = health::open_alarms(conn, now_ms)?;
            Ok((d, open, h))
        })
        .await?;
    let mut territories: Vec<(&str, Vec<&DeviceOverview>)> = Vec::new();
    for d in &devices {
        match territories.last_mut() {
            Some((t, v)) if *t == d.territory => v.push(d),
            _ => territories.push((&d.territory, vec![d])),
        }
    }
    let online = devices.iter().filter(|d| d.status == "online").count();
    let alarmed = devices.iter().filter(|d| d.audit.is_alarm()).count();
    Ok(layout(
        "Dashboard",
        "dashboard",
        html! {
            h1 { "Devices" }
            p.summary {
                (devices.len()) " device(s) in " (territories.len()) " territor" (if territories.len() == 1 { "y" } else { "ies" }) ", "
                (online) " online, " (alarmed) " with an audit alarm; "
                a href="/alarms" { (open) " alarm(s) not acknowledged" } "."
            }
            section id="sante" lang="fr" {
                h2 { "Fonctionnement des appareils" }
                p id="health-count" {
                    @match health_alarms.len() {
                        0 => "Aucune alerte de fonctionnement en cours.",
                        1 => "1 alerte de fonctionnement en cours.",
                        n => { (n) " alertes de fonctionnement en cours." },
                    }
                }
                @if !health_alarms.is_empty() {
                    (health::alarm_table("health-alarms", &health_alarms, true))
                }
            }
            @if devices.is_empty() {
                p { "No device is enrolled yet. An administrator enrols devices in the " a href="/admin" { "admin area" } "." }
            }
            @for (t, ds) in &territories {
                section.territory {
                    h2 { "Territory " (t) }
                    table.devices data-territory=(t) {
                        thead { tr {
                            th { "Device" } th { "State" } th { "Last seen" } th { "Records" }
                            th { "Last window" } th { "Audit" } th { "Open alarms" } th { "Models" }
                        } }
                        tbody {
                            @for d in ds {
                                tr data-device=(d.id) {
                                    td { a href=(format!("/device/{}", d.id)) { (d.id) } }
                                    td { (status_badge(&d.status)) }
                                    td { (d.last_seen.as_deref().unwrap_or("never")) }
                                    td.num data-records=(d.records) { (d.records) }
                                    td { (d.last_window.as_deref().unwrap_or("-")) }
                                    td { (audit_badge(d.audit)) }
                                    td {
                                        @if d.open_alarms.is_empty() { "-" }
                                        @for (k, n) in &d.open_alarms { span.badge.alarm { (k) " x" (n) } " " }
                                    }
                                    td { (d.models.join(", ")) }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// What a device page or the series API shows of one series over a period.
pub struct SeriesView {
    pub info: SeriesInfo,
    pub from: i64,
    pub to: i64,
    pub bucket_ms: i64,
    pub buckets: Vec<series::Bucket>,
    /// Distinct (k, epsilon in thousandths) of the windows in the period that published
    /// their values.
    pub privacy: Vec<(u64, Option<u64>)>,
    /// The daily privacy budget as the latest window of the period left it (record v2).
    pub budget: Option<series::BudgetState>,
}

/// The window length of a series (its latest window's).
pub fn window_length(conn: &Connection, device: &str, key: &SeriesKey) -> WebResult<i64> {
    Ok(conn
        .prepare_cached(
            "SELECT length_ms FROM series WHERE device = ?1 AND model = ?2 AND kind = ?3
               AND class = ?4 ORDER BY start_ms DESC LIMIT 1",
        )?
        .query_row(params![device, key.model, key.kind, key.class], |r| {
            r.get(0)
        })?)
}

pub fn privacy_in(
    conn: &Connection,
    device: &str,
    key: &SeriesKey,
    from: i64,
    to: i64,
) -> WebResult<Vec<(u64, Option<u64>)>> {
    let mut q = conn.prepare_cached(
        "SELECT DISTINCT k, epsilon_milli FROM series WHERE device = ?1 AND model = ?2
           AND kind = ?3 AND class = ?4 AND start_ms >= ?5 AND start_ms < ?6
           AND withheld IS NOT 1 LIMIT 8",
    )?;
    let rows = q.query_map(
        params![device, key.model, key.kind, key.class, from, to],
        |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, Option<i64>>(1)?.map(|e| e as u64),
            ))
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn series_view(
    conn: &Connection,
    device: &str,
    info: SeriesInfo,
    period: params::Period,
    bucket: BucketParam,
) -> WebResult<SeriesView> {
    let wl = window_length(conn, device, &info.key)?.max(1);
    let (from, to) = period.resolve(info.first_ms, info.last_ms + wl);
    let bucket_ms = match bucket {
        BucketParam::Fixed(b) => b,
        BucketParam::Window => wl,
        BucketParam::Auto => params::auto_bucket(from, to, wl, CHART_POINTS),
    };
    if (to - from) / bucket_ms > 100_000 {
        return Err(WebError::BadRequest(format!(
            "{} buckets of {}: pick a larger `bucket` or a shorter period (at most 100000)",
            (to - from) / bucket_ms,
            dates::human_duration(bucket_ms)
        )));
    }
    let buckets = series::buckets(conn, device, &info.key, from, to, bucket_ms)?;
    let privacy = privacy_in(conn, device, &info.key, from, to)?;
    let budget = series::budget_state(conn, device, std::slice::from_ref(&info.key), (from, to))?;
    Ok(SeriesView {
        info,
        from,
        to,
        bucket_ms,
        buckets,
        privacy,
        budget,
    })
}

pub fn privacy_text(p: &[(u64, Option<u64>)]) -> String {
    if p.is_empty() {
        return "no window in this period".into();
    }
    p.iter()
        .map(|(k, e)| {
            let noise = match e {
                Some(e) => format!(
                    "geometric noise, ε = {}.{:03} per window",
                    e / 1000,
                    e % 1000
                ),
                None => "no noise".into(),
            };
            format!("k = {k} (smaller counts are published as “< {k}”), {noise}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Thousandths in French: `1 234,5` (groups of three digits, a decimal comma, no trailing
/// zero).
pub fn milli_fr(m: u64) -> String {
    let int = health::entier(m / 1000);
    match m % 1000 {
        0 => int,
        f => format!("{int},{}", format!("{f:03}").trim_end_matches('0')),
    }
}

/// What a withheld window says, in its row of the latest windows.
pub const WITHHELD_FR: &str =
    "Budget du jour épuisé : les comptes de cette fenêtre ne sont pas publiés.";

/// The privacy budget in one plain French sentence (the budget's day is a UTC day, written
/// `30/11/2026`); a second one when the latest window was withheld.
pub fn budget_text(b: &series::BudgetState) -> String {
    let day = match b.budget.day.split('-').collect::<Vec<_>>()[..] {
        [y, m, d] => format!("{d}/{m}/{y}"),
        _ => b.budget.day.clone(),
    };
    let percent = match (b.budget.spent_milli, b.budget.budget_milli) {
        (_, 0) => "-".to_owned(),
        (s, t) if s > 0 && s * 100 < t => "moins de 1".to_owned(),
        (s, t) => ((s * 100 + t / 2) / t).to_string(),
    };
    let mut text = format!(
        "Protection de la vie privée : chaque fenêtre de {} dépense au plus ε = {} ; \
         budget de {} par jour et par chaîne ; dépensé le {day} : {} ({percent} %).",
        dates::duree((b.window_ms.max(0) / 1000) as u64),
        milli_fr(b.max_epsilon_milli),
        milli_fr(b.budget.budget_milli),
        milli_fr(b.budget.spent_milli),
    );
    if b.budget.withheld {
        text.push_str(
            " Budget du jour épuisé : les comptes de la dernière fenêtre ne sont pas publiés.",
        );
    }
    text
}

/// The title of a budget sentence: which day it counts.
const BUDGET_DAY_FR: &str =
    "Le budget est compté par journée UTC : de 1 h à 1 h, heure de Paris (2 h en été).";

fn kind_label(kind: &str) -> &str {
    match kind {
        "count" => "objects counted (total over frames)",
        "presence_share" => "share of frames with presence (ppm)",
        "speech_share" => "share of time with speech (ppm)",
        "class_share" => "part du temps où ce son est entendu (ppm)",
        "level_stats" => "level (mean, thousandths)",
        "line_count" => "passages de la ligne (nombre)",
        other => other,
    }
}

/// A series' class in plain words: a line count's "line:class:in" reads "ligne nord · person ·
/// entrées".
fn class_label(kind: &str, class: &str) -> String {
    match series::split_line_class(class) {
        Some((line, object, inward)) if kind == "line_count" => format!(
            "ligne {line} · {object} · {}",
            if inward { "entrées" } else { "sorties" }
        ),
        _ if kind == "class_share" => match class {
            "speech" => "parole".into(),
            "singing" => "chant".into(),
            "music" => "musique".into(),
            other => other.to_owned(),
        },
        _ => class.to_owned(),
    }
}

fn period_href(id: &str, from: i64, to: i64) -> String {
    format!(
        "/device/{id}?from={}&to={}",
        dates::format(from),
        dates::format(to)
    )
}

pub async fn device(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Response> {
    params::only(&q, &["from", "to"])?;
    let period = params::period(&q)?;
    let dev = id.clone();
    let now_ms = crate::mqtt::now_ms();
    let (overview, views, latest, device_health) = app
        .db(move |conn, e| {
            let Some(o) = query::device(conn, e, &dev)? else {
                return Err(WebError::NotFound(format!("no device {dev:?}")));
            };
            let h = health::DeviceHealth::load(conn, &dev)?;
            let infos = query::series_of(conn, &dev)?;
            // One period for every chart of the page: the span of all the device's series.
            let first = infos.iter().map(|i| i.first_ms).min().unwrap_or(0);
            let mut last_end = 1;
            for i in &infos {
                last_end = last_end.max(i.last_ms + window_length(conn, &dev, &i.key)?);
            }
            let (from, to) = period.resolve(first, last_end);
            let fixed = params::Period {
                from: Some(from),
                to: Some(to),
            };
            let mut views = Vec::new();
            let mut latest = Vec::new();
            for info in infos {
                latest.push(series::windows(
                    conn,
                    &dev,
                    &info.key,
                    (from, to),
                    8,
                    Order::NewestFirst,
                )?);
                views.push(series_view(conn, &dev, info, fixed, BucketParam::Auto)?);
            }
            Ok((o, views, latest, h))
        })
        .await?;
    let (from, to) = views.first().map(|v| (v.from, v.to)).unwrap_or((0, 1));
    let data_end = views.iter().map(|v| v.info.last_ms).max().unwrap_or(to);
    let quick: Vec<(&str, Option<(i64, i64)>)> = vec![
        ("all data", None),
        (
            "last year",
            Some((data_end - 365 * 86_400_000, data_end + 86_400_000)),
        ),
        (
            "last 30 days",
            Some((data_end - 30 * 86_400_000, data_end + 86_400_000)),
        ),
        (
            "last 7 days",
            Some((data_end - 7 * 86_400_000, data_end + 86_400_000)),
        ),
        (
            "last day",
            Some((data_end - 86_400_000, data_end + 3_600_000)),
        ),
    ];
    let o = &overview;
    let body = html! {
        h1 { "Device " (o.id) }
        (health::device_alarms(&device_health, now_ms))
        table.facts {
            tr { th { "Territory" } td { (o.territory) } }
            tr { th { "State" } td { (status_badge(&o.status)) } }
            tr { th { "Last seen" } td { (o.last_seen.as_deref().unwrap_or("never")) } }
            tr { th { "Records stored" } td id="records" { (o.records) } }
            tr { th { "Audit" } td { (audit_badge(o.audit))
                @if let Some(c) = o.checkpoint_size { " (signed checkpoint verified at size " (c) ")" } } }
            tr { th { "Open alarms" } td {
                @if o.open_alarms.is_empty() { "none" }
                @for (k, n) in &o.open_alarms { span.badge.alarm { (k) " x" (n) } " " }
                " " a href=(format!("/alarms?device={}", o.id)) { "alarm list" } } }
            tr { th { "Register" } td { a href=(format!("/register#dev-{}", o.id)) { "models, key and signed checkpoint" } } }
        }
        (health::device_section(&device_health))
        h2 { "Period" }
        form.period method="get" action=(format!("/device/{}", o.id)) {
            label { "From " input type="text" name="from" value=(dates::format(from)) placeholder="YYYY-MM-DD"; }
            label { " to " input type="text" name="to" value=(dates::format(to)) placeholder="YYYY-MM-DD"; }
            " " button type="submit" { "Show" }
        }
        p.quick {
            @for (label, p) in &quick {
                @match p {
                    None => a href=(format!("/device/{}", o.id)) { (label) },
                    Some((f, t)) => a href=(period_href(&o.id, *f, *t)) { (label) },
                }
                " · "
            }
            "click a point to zoom into it"
        }
        @if views.is_empty() { p { "No aggregate stored for this device yet." } }
        @for (i, (v, rows)) in views.iter().zip(&latest).enumerate() {
            @let k = &v.info.key;
            @let cid = format!("chart-{}-{}-{}", k.model, k.kind, k.class.replace(':', "-"));
            section.series data-model=(k.model) data-kind=(k.kind) data-class=(k.class) {
                h3 { (k.model) " · " (class_label(&k.kind, &k.class)) " · " (kind_label(&k.kind)) }
                p.privacy { "Privacy: " (privacy_text(&v.privacy)) }
                @if let Some(b) = &v.budget {
                    p.budget lang="fr" title=(BUDGET_DAY_FR) data-withheld=(b.budget.withheld) { (budget_text(b)) }
                }
                p.meta {
                    (v.buckets.len()) " point(s), one per " (dates::human_duration(v.bucket_ms))
                    @if k.kind == "count" || k.kind == "line_count" { " (sum of the windows)" } @else { " (mean of the windows)" }
                    "; hollow red markers: every window suppressed (“< k”). "
                    a href=(format!("/export/{}/series.csv?model={}&kind={}&class={}&from={}&to={}", o.id, k.model, k.kind, k.class, dates::format(v.from), dates::format(v.to))) { "CSV" }
                    " · "
                    a href=(format!("/api/devices/{}/series?model={}&kind={}&class={}&from={}&to={}", o.id, k.model, k.kind, k.class, dates::format(v.from), dates::format(v.to))) { "JSON" }
                }
                @let pts: Vec<ChartPoint> = v.buckets.iter().map(|b| ChartPoint {
                    start_ms: b.start_ms,
                    value: b.value(&k.kind),
                    windows: b.windows,
                    suppressed: b.suppressed,
                    k: b.k_max,
                }).collect();
                @let dev = o.id.clone();
                @let wl = rows.first().map(|r| r.length_ms).unwrap_or(v.bucket_ms);
                (chart::render(&cid, &pts, v.from, v.to, v.bucket_ms, series::unit(&k.kind), &|s, e| {
                    (e - s > wl).then(|| period_href(&dev, s, e))
                }))
                h4 { "Latest windows in the period" }
                table.windows id=(format!("windows-{i}")) {
                    thead { tr { th { "Window start" } th { "Length" } th { "Value" } th { "Peak" } th { "Observations" } th { "k" } th { "ε" } th { "Notes" } } }
                    tbody {
                        @for r in rows {
                            tr data-start=(r.start_ms) data-seq=(r.seq) data-withheld=[r.withheld().then_some("true")] {
                                td { (dates::format(r.start_ms)) }
                                td { (dates::human_duration(r.length_ms)) }
                                td.num.value class=[r.value_suppressed.then_some("suppressed")] { (series::display(r.value, r.value_suppressed, r.k)) }
                                td.num class=[r.peak_suppressed.then_some("suppressed")] { (series::display(r.peak, r.peak_suppressed, r.k)) }
                                td.num { (r.n) }
                                td.num { (r.k) }
                                td.num { @match r.epsilon_milli { Some(e) => (format!("{}.{:03}", e / 1000, e % 1000)), None => "-" } }
                                td {
                                    @if r.withheld() { span.withheld lang="fr" { (WITHHELD_FR) } " " }
                                    @if r.partial { "partial window " }
                                    @if r.clock_jumps > 0 { "clock jump(s): " (r.clock_jumps) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout(&format!("Device {}", overview.id), "dashboard", body).into_response())
}

pub async fn register(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Markup> {
    params::only(&q, &[])?;
    let reg = app.db(|conn, e| Ok(query::register(conn, e)?)).await?;
    Ok(layout(
        "Public register",
        "register",
        html! {
            h1 { "Public register of devices and models" }
            p.intro {
                "This page lists every device this hub accepts results from, the artificial-intelligence "
                "models each device runs, what they are for, who is responsible for them, on what legal "
                "basis, and how accurate they are. Devices publish only counts and statistics per time "
                "window, never images or sound; small counts are hidden (shown as “< k”) and, where "
                "stated, random noise is added to protect privacy."
            }
            details.verify {
                summary { "How anyone can check a device's history" }
                ol {
                    li { "Download the device's public key (" code { "device.vkey" } "), its signed records and its latest signed checkpoint from the links in its entry." }
                    li { "Run " code { "hub verify --key device.vkey --records records.jsonl --checkpoint checkpoint.txt" }
                         ": it checks every record's signature, recomputes the hash tree and checks that the device signed that tree." }
                    li { "An operator holding the device's own log can also run " code { "edge-agent audit verify LOG_DIR --pubkey device.vkey" } " on it." }
                }
                p { "A signed checkpoint commits to every record before it: a record removed, changed or reordered afterwards no longer matches." }
            }
            @if reg.is_empty() { p { "No device is enrolled." } }
            @for d in &reg {
                article.device id=(format!("dev-{}", d.id)) data-device=(d.id) {
                    h2 { (d.territory) " / " (d.id) }
                    table.facts {
                        tr { th { "Enrolled" } td { (d.enrolled.as_deref().unwrap_or("before the register existed")) } }
                        @if let Some(s) = &d.site {
                            tr { th { "Site" } td { (s.name) " (" (s.lat) ", " (s.lon) ")" } }
                        }
                        tr { th { "Records held by this hub" } td { (d.records) } }
                        tr { th { "Root of these records" } td { code { (d.root.as_deref().unwrap_or("-")) } } }
                    }
                    h3 { "Models" }
                    @if d.models.is_empty() { p { "No model is enrolled for this device." } }
                    @for m in &d.models {
                        section.model data-model=(m.card.id) {
                            h4 { (m.card.id) @if let Some(v) = &m.card.version { " version " (v) } }
                            table.facts {
                                tr { th { "Results since" } td.since { (m.since.as_deref().unwrap_or("no result yet")) } }
                                @if let Some(b) = &m.budget {
                                    tr { th lang="fr" { "Vie privée" } td.budget lang="fr" title=(BUDGET_DAY_FR) data-withheld=(b.budget.withheld) { (budget_text(b)) } }
                                }
                                tr { th { "Purpose" } td.purpose { (m.card.purpose.as_deref().unwrap_or("not stated at enrolment")) } }
                                tr { th { "Never used for" } td { @if m.card.never_for.is_empty() { "-" } @else { ul { @for n in &m.card.never_for { li { (n) } } } } } }
                                tr { th { "Owner" } td.owner { (m.card.owner.as_deref().unwrap_or("not stated")) } }
                                tr { th { "Legal basis" } td.legal { (m.card.legal_basis.as_deref().unwrap_or("not stated")) } }
                                tr { th { "Licence" } td.licence { (m.card.licence.as_deref().unwrap_or("not stated")) } }
                                tr { th { "Accuracy" } td.accuracy { (m.card.accuracy.as_deref().unwrap_or("not stated")) } }
                                tr { th { "Model file SHA-256" } td { code { (m.card.sha256) } } }
                            }
                        }
                    }
                    h3 { "Public key" }
                    pre.vkey { (d.key) }
                    @for r in &d.retired_keys {
                        p { "Retired key, in force until " (r.until) ":" }
                        pre.vkey.retired { (r.key) }
                    }
                    h3 { "Latest signed checkpoint verified by this hub" }
                    @match &d.checkpoint {
                        Some(c) => pre.checkpoint { (c) },
                        None => p { "None yet." },
                    }
                    p.downloads {
                        a href=(format!("/export/{}/device.vkey", d.id)) { "device.vkey" } " · "
                        a href=(format!("/export/{}/records.jsonl", d.id)) { "records.jsonl" } " · "
                        a href=(format!("/export/{}/checkpoint.txt", d.id)) { "checkpoint.txt" } " · "
                        a href=(format!("/device/{}", d.id)) { "results" }
                    }
                }
            }
        },
    ))
}

pub async fn alarms(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Markup> {
    params::only(&q, &["device"])?;
    let device = params::opt(&q, "device").map(str::to_owned);
    let d = device.clone();
    let rows = app
        .db(move |conn, _| Ok(query::alarms(conn, d.as_deref(), false, 500)?))
        .await?;
    Ok(layout(
        "Alarms",
        "alarms",
        html! {
            h1 { "Alarms" @if let Some(d) = &device { " of " (d) } }
            p { "What the hub refused or found inconsistent: GAP (records missing), FORK (two different signed records or trees for one position), ROLLBACK, EQUIVOCATION, and rejected messages. Administrators acknowledge them in the admin area; acknowledged alarms stay listed." }
            table id="alarms" {
                thead { tr { th { "#" } th { "At" } th { "Device" } th { "Kind" } th { "Seq" } th { "Messages" } th { "Detail" } th { "Acknowledged" } } }
                tbody {
                    @for a in &rows {
                        tr data-alarm=(a.id) data-kind=(a.kind) {
                            td { (a.id) }
                            td { (a.at) }
                            td { (a.device.as_deref().or(a.source.as_deref()).unwrap_or("-")) }
                            td { span.badge.alarm { (a.kind) } }
                            td { (a.seq.map(|s| s.to_string()).unwrap_or_else(|| "-".into())) }
                            td { (a.count) }
                            td { (a.detail) }
                            td.acked { @match (&a.acked, &a.acked_by) { (Some(t), Some(b)) => { (t) " by " (b) }, _ => "no" } }
                        }
                    }
                }
            }
        },
    ))
}

pub async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        STYLE,
    )
}

const STYLE: &str = "
body { font-family: system-ui, sans-serif; margin: 0; color: #1b1b1b; background: #fafafa; }
header nav { background: #000091; padding: .6em 1em; }
header nav a { color: #fff; margin-right: 1.2em; text-decoration: none; }
header nav a.here, header nav a:hover { text-decoration: underline; }
header nav a.brand { font-weight: bold; }
main { padding: 1em 2em; max-width: 1100px; }
footer { padding: 1em 2em; color: #555; font-size: .9em; }
table { border-collapse: collapse; margin: .5em 0 1.2em; }
th, td { border-bottom: 1px solid #ddd; padding: .3em .7em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.suppressed { color: #b34000; font-style: italic; }
.badge { padding: .1em .5em; border-radius: .8em; background: #e5e5e5; font-size: .85em; }
.badge.ok { background: #b8fec9; }
.badge.off { background: #ffe9e6; }
.badge.alarm { background: #ce0500; color: #fff; }
table caption { text-align: left; font-weight: bold; padding: .3em 0; }
table.health td.message { font-weight: 500; }
svg.chart { width: 100%; max-width: 900px; background: #fff; border: 1px solid #ddd; }
svg.chart rect.plot { fill: #fff; }
svg.chart line.grid { stroke: #eee; }
svg.chart text { font-size: 11px; fill: #555; }
svg.chart polyline.line { fill: none; stroke: #000091; stroke-width: 1.5; }
svg.chart circle.point { fill: #000091; }
svg.chart circle.point.suppressed { fill: #fff; stroke: #ce0500; stroke-width: 1.5; }
pre { background: #f0f0f0; padding: .6em; overflow-x: auto; }
p.privacy, p.budget { color: #b34000; }
span.withheld { color: #b34000; font-style: italic; }
form.inline { display: inline; }
textarea { width: 100%; max-width: 700px; }
.error { color: #ce0500; }
";

#[cfg(test)]
mod tests {
    use super::*;

    fn state(spent: u64, withheld: bool) -> series::BudgetState {
        series::BudgetState {
            budget: series::Budget {
                day: "2026-11-30".into(),
                budget_milli: 8_640_000,
                spent_milli: spent,
                withheld,
            },
            window_ms: 10_000,
            max_epsilon_milli: 1000,
        }
    }

    #[test]
    fn the_budget_in_one_french_sentence() {
        assert_eq!(
            budget_text(&state(1_234_500, false)),
            "Protection de la vie privée : chaque fenêtre de 10 s dépense au plus ε = 1 ; \
             budget de 8\u{202f}640 par jour et par chaîne ; dépensé le 30/11/2026 : \
             1\u{202f}234,5 (14 %)."
        );
        assert!(budget_text(&state(1, false)).ends_with(" : 0,001 (moins de 1 %)."));
        assert!(budget_text(&state(8_640_000, true)).ends_with(
            "(100 %). Budget du jour épuisé : les comptes de la dernière fenêtre ne sont pas publiés."
        ));
        assert_eq!(milli_fr(0), "0");
        assert_eq!(milli_fr(1_000_050), "1\u{202f}000,05");
    }
}
