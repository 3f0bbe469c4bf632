//! The public, read-only pages, for a municipal officer and a citizen, in French first
//! (English on request, [`super::i18n`]): the dashboard (devices by territory and their state,
//! ongoing health alarms), a device's health, charts and latest windows in local time, the
//! public register (one entry per model card with the devices that run it, then each
//! device's keys and signed checkpoint) and the alarm list with every kind explained. maud
//! escapes every interpolated string; nothing here writes.

use std::collections::HashMap;

use crate::db::sql::{Connection, params};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::chart::{self, ChartPoint, Scale};
use super::health;
use super::i18n::{self, Lang, Locale};
use super::params::{self, Bucket as BucketParam};
use super::{App, WebError, WebResult};
use crate::dates;
use crate::db::query::{self, AuditState, DeviceOverview, SeriesInfo};
use crate::db::series::{self, Order, SeriesKey};

/// Points a chart aims for (a year of 15-minute windows: one point a day).
pub const CHART_POINTS: i64 = 400;

pub fn layout(l: &Locale, title: &str, nav: &str, body: Markup) -> Markup {
    let item = |href: &str, key: &str, fr: &str, en: &str| {
        html! { a href=(href) aria-current=[(nav == key).then_some("page")] { (l.t(fr, en)) } }
    };
    let (other, other_code) = match l.lang {
        Lang::Fr => ("English", "en"),
        Lang::En => ("Français", "fr"),
    };
    html! {
        (DOCTYPE)
        html lang=(l.lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (l.t("Hub IAT", "IAT hub")) }
                link rel="stylesheet" href="/style.css";
            }
            body {
                a.skip href="#contenu" { (l.t("Aller au contenu", "Skip to content")) }
                header {
                    nav aria-label=(l.t("Menu principal", "Main menu")) {
                        a.brand href="/" { (l.t("Hub IAT", "IAT hub")) }
                        (item("/", "dashboard", "Tableau de bord", "Dashboard"))
                        (item("/register", "register", "Registre public", "Public register"))
                        (item("/alarms", "alarms", "Alarmes", "Alarms"))
                        (item("/admin", "admin", "Administration", "Admin"))
                        a.lang href=(l.switch_href()) lang=(other_code) hreflang=(other_code) { (other) }
                    }
                }
                main id="contenu" tabindex="-1" { (body) }
                footer {
                    (l.t("Seuls des résultats agrégés, signés et chaînés quittent les appareils. ",
                         "Only signed, hash-chained aggregates leave the devices. "))
                    a href="/register" { (l.t("Quels modèles tournent où, et comment le vérifier.", "Which models run where, and how to verify it.")) }
                    " " (l.t("Heures : ", "Times: ")) (l.tz_name()) "."
                }
            }
        }
    }
}

fn audit_text(l: &Locale, a: AuditState) -> String {
    match a {
        AuditState::Fork | AuditState::Equivocation | AuditState::Rollback | AuditState::Gap => {
            i18n::alarm_kind(l, a.label())
                .map(|k| k.title.to_owned())
                .unwrap_or_else(|| a.label().to_owned())
        }
        AuditState::Waiting => l.t("en attente", "waiting").into(),
        AuditState::Unverified => l.t("pas encore vérifié", "unverified").into(),
        AuditState::Verified => l.t("vérifié", "verified").into(),
        AuditState::NoData => l.t("aucune donnée", "no data").into(),
    }
}

fn audit_badge(l: &Locale, a: AuditState) -> Markup {
    let class = if a.is_alarm() {
        "badge alarm"
    } else if a == AuditState::Verified {
        "badge ok"
    } else {
        "badge"
    };
    html! { span class=(class) data-audit=(a.label()) { (audit_text(l, a)) } }
}

fn status_badge(l: &Locale, s: &str) -> Markup {
    let (class, text) = match s {
        "online" => ("badge ok", l.t("en ligne", "online")),
        "offline" => ("badge off", l.t("hors ligne", "offline")),
        _ => ("badge", l.t("inconnu", "unknown")),
    };
    html! { span class=(class) data-status=(s) { (text) } }
}

/// Open alarms by kind, as badges naming the kind in plain words.
fn alarm_badges(l: &Locale, open: &[(String, u64)]) -> Markup {
    html! {
        @for (k, n) in open {
            span.badge.alarm data-kind=(k) title=(k) {
                (i18n::alarm_kind(l, k).map(|a| a.title).unwrap_or(k)) " × " (n)
            } " "
        }
    }
}

/// `1 appareil` / `3 appareils`.
fn plural(l: &Locale, n: usize, fr: (&str, &str), en: (&str, &str)) -> String {
    let (one, many) = match l.lang {
        Lang::Fr => fr,
        Lang::En => en,
    };
    format!("{n} {}", if n > 1 { many } else { one })
}

pub async fn dashboard(
    State(app): State<App>,
    l: Locale,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Markup> {
    params::only(&q, &[])?;
    let now_ms = crate::mqtt::now_ms();
    let hl = l.clone();
    let (devices, open, health_alarms) = app
        .db(move |conn, e| {
            let d = query::devices(conn, e)?;
            let open: i64 = conn.query_row(
                "SELECT COUNT(*) FROM alarms WHERE acked_ms IS NULL",
                crate::params![],
                |r| r.get(0),
            )?;
            let h = health::open_alarms(conn, &hl, now_ms)?;
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
    let never = l.t("jamais", "never");
    Ok(layout(
        &l,
        l.t("Tableau de bord", "Dashboard"),
        "dashboard",
        html! {
            h1 { (l.t("Appareils", "Devices")) }
            p.summary {
                (plural(&l, devices.len(), ("appareil", "appareils"), ("device", "devices")))
                (l.t(" sur ", " in "))
                (plural(&l, territories.len(), ("territoire", "territoires"), ("territory", "territories")))
                " : " (online) (l.t(" en ligne, ", " online, "))
                (alarmed) (l.t(" avec une alarme d'audit ; ", " with an audit alarm; "))
                a href="/alarms" { (plural(&l, open.max(0) as usize, ("alarme non acquittée", "alarmes non acquittées"), ("alarm not acknowledged", "alarms not acknowledged"))) } "."
            }
            section id="sante" {
                h2 { (l.t("Fonctionnement des appareils", "Devices in operation")) }
                p id="health-count" {
                    @match health_alarms.len() {
                        0 => (l.t("Aucune alerte de fonctionnement en cours.", "No operating alert at present.")),
                        n => (plural(&l, n, ("alerte de fonctionnement en cours.", "alertes de fonctionnement en cours."), ("ongoing operating alert.", "ongoing operating alerts."))),
                    }
                }
                @if !health_alarms.is_empty() {
                    (health::alarm_table(&l, "health-alarms", &health_alarms, true))
                }
            }
            @if devices.is_empty() {
                p { (l.t("Aucun appareil n'est encore inscrit. Un administrateur inscrit les appareils dans l'", "No device is enrolled yet. An administrator enrols devices in the "))
                    a href="/admin" { (l.t("espace d'administration", "admin area")) } "." }
            }
            @for (t, ds) in &territories {
                section.territory {
                    h2 { (l.t("Territoire ", "Territory ")) (t) }
                    table.devices data-territory=(t) {
                        caption { (l.t("Appareils du territoire ", "Devices of territory ")) (t) }
                        thead { tr {
                            th scope="col" { (l.t("Appareil", "Device")) }
                            th scope="col" { (l.t("État", "State")) }
                            th scope="col" { (l.t("Dernier contact", "Last seen")) }
                            th scope="col" { (l.t("Résultats reçus", "Records")) }
                            th scope="col" { (l.t("Dernier résultat", "Last window")) }
                            th scope="col" { (l.t("Contrôle d'intégrité", "Audit")) }
                            th scope="col" { (l.t("Alarmes ouvertes", "Open alarms")) }
                            th scope="col" { (l.t("Modèles", "Models")) }
                        } }
                        tbody {
                            @for d in ds {
                                tr data-device=(d.id) {
                                    th scope="row" { a href=(format!("/device/{}", d.id)) { (d.id) } }
                                    td { (status_badge(&l, &d.status)) }
                                    td { (d.last_seen.as_deref().map(|s| l.label(s)).unwrap_or_else(|| never.to_owned())) }
                                    td.num data-records=(d.records) { (l.int(d.records as i64)) }
                                    td { (d.last_window.as_deref().map(|s| l.label(s)).unwrap_or_else(|| "-".to_owned())) }
                                    td { (audit_badge(&l, d.audit)) }
                                    td {
                                        @if d.open_alarms.is_empty() { "-" }
                                        (alarm_badges(&l, &d.open_alarms))
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
/// A link's query for one series over a view's period.
fn series_query<'a>(k: &'a crate::db::series::SeriesKey, v: &SeriesView) -> [(&'a str, String); 5] {
    [
        ("model", k.model.clone()),
        ("kind", k.kind.clone()),
        ("class", k.class.clone()),
        ("from", dates::format(v.from)),
        ("to", dates::format(v.to)),
    ]
}

/// An id attribute made of `s`: anything but ASCII letters, digits, `-` and `_` becomes `-`
/// (a class label may hold spaces or `:`).
fn html_id(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

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
           AND withheld IS DISTINCT FROM 1 LIMIT 8",
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

/// One series over a period, in buckets. `calendar`: the reader's calendar, for a page;
/// automatic buckets of whole hours or days then start at local times (midnight, a day of a
/// time change lasting 23 or 25 hours), and the period widens to whole buckets. The API passes
/// `None`: its buckets are aligned on `from`, in UTC.
pub fn series_view(
    conn: &Connection,
    device: &str,
    info: SeriesInfo,
    period: params::Period,
    bucket: BucketParam,
    calendar: Option<&Locale>,
) -> WebResult<SeriesView> {
    const MAX_BUCKETS: i64 = 100_000;
    let wl = window_length(conn, device, &info.key)?.max(1);
    let (mut from, mut to) = period.resolve(info.first_ms, info.last_ms + wl);
    let bucket_ms = match bucket {
        BucketParam::Fixed(b) => b,
        BucketParam::Window => wl,
        BucketParam::Auto => params::auto_bucket(from, to, wl, CHART_POINTS),
    };
    if (to - from) / bucket_ms > MAX_BUCKETS {
        return Err(WebError::BadRequest(format!(
            "{} buckets of {}: pick a larger `bucket` or a shorter period (at most {MAX_BUCKETS})",
            (to - from) / bucket_ms,
            dates::human_duration(bucket_ms)
        )));
    }
    let bounds = match (calendar, bucket) {
        (Some(l), BucketParam::Auto) => {
            params::calendar_bounds(l, (from, to), bucket_ms, MAX_BUCKETS as usize)
        }
        _ => None,
    };
    let buckets = match &bounds {
        Some(b) => {
            from = b[0];
            to = b[b.len() - 1];
            series::buckets_between(conn, device, &info.key, b)?
        }
        None => series::buckets(conn, device, &info.key, from, to, bucket_ms)?,
    };
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

/// Thousandths as a number: `1 234,5` / `1,234.5` (groups of three digits, the language's
/// decimal mark, no trailing zero).
pub fn milli(l: &Locale, m: u64) -> String {
    l.number(m as f64 / 1000.0, 3)
}

/// What a withheld window says, in its row of the latest windows.
fn withheld_words(l: &Locale) -> &'static str {
    l.t(
        "Budget du jour épuisé : les comptes de cette fenêtre ne sont pas publiés.",
        "The day's budget is spent: this window's counts are not published.",
    )
}

/// The privacy budget in one plain sentence (the budget's day is a UTC day, written
/// `30/11/2026`); a second one when the latest window was withheld.
pub fn budget_text(l: &Locale, b: &series::BudgetState) -> String {
    let day = match b.budget.day.split('-').collect::<Vec<_>>()[..] {
        [y, m, d] => format!("{d}/{m}/{y}"),
        _ => b.budget.day.clone(),
    };
    let percent = match (b.budget.spent_milli, b.budget.budget_milli) {
        (_, 0) => "-".to_owned(),
        (s, t) if s > 0 && s * 100 < t => l.t("moins de 1", "less than 1").to_owned(),
        (s, t) => ((s * 100 + t / 2) / t).to_string(),
    };
    let window = l.secs((b.window_ms.max(0) / 1000) as u64);
    let (eps, budget, spent) = (
        milli(l, b.max_epsilon_milli),
        milli(l, b.budget.budget_milli),
        milli(l, b.budget.spent_milli),
    );
    let mut text = match l.lang {
        Lang::Fr => format!(
            "Protection de la vie privée : chaque fenêtre de {window} dépense au plus ε = {eps} ; \
             budget de {budget} par jour et par chaîne ; dépensé le {day} : {spent} ({percent} %)."
        ),
        Lang::En => format!(
            "Privacy protection: each window of {window} spends at most ε = {eps}; \
             a budget of {budget} per day and per pipeline; spent on {day}: {spent} ({percent}%)."
        ),
    };
    if b.budget.withheld {
        text.push(' ');
        text.push_str(l.t(
            "Budget du jour épuisé : les comptes de la dernière fenêtre ne sont pas publiés.",
            "The day's budget is spent: the latest window's counts are not published.",
        ));
    }
    text
}

/// The title of a budget sentence: which day it counts.
fn budget_day(l: &Locale) -> &'static str {
    l.t(
        "Le budget est compté par journée UTC : de 1 h à 1 h, heure de Paris (2 h en été).",
        "The budget is counted per UTC day: from 1:00 to 1:00 Paris time (2:00 in summer).",
    )
}

/// A class as people say it: `visage`, `personne`, `vélo`... (French; English keeps the
/// model's label).
fn class_word(l: &Locale, class: &str) -> String {
    if l.lang == Lang::En {
        return class.to_owned();
    }
    match class {
        "face" => "visages",
        "person" => "personnes",
        "bicycle" => "vélos",
        "car" => "voitures",
        "bus" => "bus",
        "truck" => "camions",
        "motorcycle" => "motos",
        "speech" => "parole",
        "singing" => "chant",
        "music" => "musique",
        other => other,
    }
    .to_owned()
}

/// A series in plain words: its title, the y axis' title, and what one value means.
struct Wording {
    title: String,
    axis: String,
    meaning: String,
}

fn wording(l: &Locale, kind: &str, class: &str, bucket: &str) -> Wording {
    let c = class_word(l, class);
    let (title, axis, meaning) = match (kind, l.lang) {
        ("count", Lang::Fr) => (
            format!("Présence moyenne : {c}"),
            "présents à la fois (moyenne)".to_owned(),
            format!("Nombre moyen de {c} visibles en même temps sur l'image (total compté sur toutes les images ÷ nombre d'images). Ce n'est pas un nombre de personnes différentes : une personne restée une heure compte pour 1 pendant toute l'heure."),
        ),
        ("count", Lang::En) => (
            format!("Average presence: {c}"),
            "present at once (average)".to_owned(),
            format!("The average number of {c} in view at the same time (the total counted over all frames ÷ the number of frames). Not a number of different people: someone who stayed an hour counts as 1 for that hour."),
        ),
        ("presence_share", Lang::Fr) => (
            format!("Part du temps avec présence : {c}"),
            "% du temps".to_owned(),
            format!("Part des images où au moins un élément « {c} » est visible."),
        ),
        ("presence_share", Lang::En) => (
            format!("Share of time with presence: {c}"),
            "% of the time".to_owned(),
            format!("The share of frames with at least one {c} in view."),
        ),
        ("speech_share", Lang::Fr) => (
            "Part du temps avec de la parole".to_owned(),
            "% du temps".to_owned(),
            "Part du temps d'écoute pendant laquelle quelqu'un parle (rien n'est enregistré ni transcrit).".to_owned(),
        ),
        ("speech_share", Lang::En) => (
            "Share of time with speech".to_owned(),
            "% of the time".to_owned(),
            "The share of the listening time during which someone speaks (nothing is recorded or transcribed).".to_owned(),
        ),
        ("class_share", Lang::Fr) => (
            format!("Part du temps où l'on entend : {c}"),
            "% du temps".to_owned(),
            format!("Part du temps d'écoute pendant laquelle le modèle reconnaît « {c} »."),
        ),
        ("class_share", Lang::En) => (
            format!("Share of time with: {c}"),
            "% of the time".to_owned(),
            format!("The share of the listening time during which the model recognises {c}."),
        ),
        ("level_stats", Lang::Fr) => (
            format!("Niveau moyen : {c}"),
            "niveau moyen".to_owned(),
            "Moyenne des mesures, dans l'unité du capteur.".to_owned(),
        ),
        ("level_stats", Lang::En) => (
            format!("Average level: {c}"),
            "average level".to_owned(),
            "The mean of the readings, in the sensor's unit.".to_owned(),
        ),
        ("line_count", _) => {
            let (line, object, inward) = series::split_line_class(class).unwrap_or((class, "", true));
            let o = class_word(l, object);
            match l.lang {
                Lang::Fr => (
                    format!("Passages de la ligne « {line} » : {o}, {}", if inward { "entrées" } else { "sorties" }),
                    format!("passages par {bucket}"),
                    format!("Nombre de {o} qui ont franchi la ligne dans ce sens (chacun compté une fois)."),
                ),
                Lang::En => (
                    format!("Crossings of line {line}: {o}, {}", if inward { "in" } else { "out" }),
                    format!("crossings per {bucket}"),
                    format!("The number of {o} that crossed the line in this direction (each counted once)."),
                ),
            }
        }
        (other, _) => (format!("{other} · {c}"), other.to_owned(), String::new()),
    };
    Wording {
        title,
        axis,
        meaning,
    }
}

/// How a value of `kind` reads (in the unit the chart draws).
fn format_value(l: &Locale, kind: &str, v: f64) -> String {
    match kind {
        "presence_share" | "speech_share" | "class_share" => l.percent_ppm(v * 10_000.0),
        "count" => l.number(v, if v < 10.0 { 2 } else { 1 }),
        "level_stats" => l.number(v, 3),
        _ => l.number(v, 1),
    }
}

/// A duration in words: `15 min`, `1 h`, `1 jour` / `1 day`.
fn duration(l: &Locale, ms: i64) -> String {
    match l.lang {
        Lang::Fr => {
            if ms % 86_400_000 == 0 {
                let d = ms / 86_400_000;
                format!("{d} jour{}", if d > 1 { "s" } else { "" })
            } else {
                l.secs((ms.max(0) / 1000) as u64)
            }
        }
        Lang::En => dates::human_duration(ms),
    }
}

/// The local day of `ms` as a date field wants it (`YYYY-MM-DD`).
fn local_day(l: &Locale, ms: i64) -> String {
    match l.local_date(ms) {
        Some(d) => format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day()),
        None => dates::day(ms),
    }
}

fn period_href(id: &str, from: i64, to: i64) -> String {
    format!(
        "/device/{id}?from={}&to={}",
        dates::format(from),
        dates::format(to)
    )
}

/// A stored window's value as the page shows it: for `count`, the average present at once.
fn window_value(l: &Locale, p: &series::Point) -> String {
    if p.value_suppressed {
        return l.t("masqué", "hidden").to_owned();
    }
    let Some(v) = p.value else {
        return "-".into();
    };
    let shown = match p.kind.as_str() {
        "count" if p.n > 0 => v as f64 / p.n as f64,
        "count" => return "-".into(),
        "presence_share" | "speech_share" | "class_share" => v as f64 / 10_000.0,
        "level_stats" => v as f64 / 1000.0,
        _ => v as f64,
    };
    format_value(l, &p.kind, shown)
}

fn window_peak(l: &Locale, p: &series::Point) -> String {
    match p.kind.as_str() {
        "count" | "level_stats" => {}
        _ => return "-".into(),
    }
    if p.peak_suppressed {
        return l.t("masqué", "hidden").to_owned();
    }
    match p.peak {
        Some(v) if p.kind == "level_stats" => l.number(v as f64 / 1000.0, 3),
        Some(v) => l.int(v),
        None => "-".into(),
    }
}

fn observations(l: &Locale, p: &series::Point) -> String {
    match p.kind.as_str() {
        "count" | "presence_share" => format!("{} {}", l.int(p.n as i64), l.t("images", "frames")),
        "speech_share" | "class_share" => duration(l, p.n as i64),
        "level_stats" => format!("{} {}", l.int(p.n as i64), l.t("mesures", "readings")),
        _ => "-".into(),
    }
}

/// The privacy note of a series over a period, only for what applies: small numbers hidden
/// (some window was suppressed), random noise (some window was noised).
fn privacy_note(l: &Locale, v: &SeriesView) -> Option<String> {
    let suppressed: u64 = v.buckets.iter().map(|b| b.suppressed).sum();
    let k = v.buckets.iter().map(|b| b.k_max).max().unwrap_or(0);
    let eps: Vec<u64> = v
        .privacy
        .iter()
        .filter_map(|(_, e)| *e)
        .filter(|e| *e > 0)
        .collect();
    let mut parts = Vec::new();
    if suppressed > 0 {
        parts.push(match l.lang {
            Lang::Fr => format!("Petits nombres masqués : une valeur sous k = {k} n'est pas publiée ({suppressed} fenêtre(s) sur la période ; cercles rouges creux sur le graphique)."),
            Lang::En => format!("Small numbers hidden: a value below k = {k} is not published ({suppressed} window(s) in the period; hollow red circles on the chart)."),
        });
    }
    if let (Some(lo), Some(hi)) = (eps.iter().min(), eps.iter().max()) {
        let e = |m: u64| l.number(m as f64 / 1000.0, 3);
        let range = if lo == hi {
            e(*lo)
        } else {
            format!("{} – {}", e(*lo), e(*hi))
        };
        parts.push(match l.lang {
            Lang::Fr => format!(
                "Bruit aléatoire ajouté pour protéger la vie privée : ε = {range} par fenêtre."
            ),
            Lang::En => format!("Random noise added to protect privacy: ε = {range} per window."),
        });
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

pub async fn device(
    State(app): State<App>,
    l: Locale,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Response> {
    params::only(&q, &["from", "to", "from_day", "to_day"])?;
    let period = params::local_period(&q, &l)?;
    let dev = id.clone();
    let cal = l.clone();
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
                views.push(series_view(
                    conn,
                    &dev,
                    info,
                    fixed,
                    BucketParam::Auto,
                    Some(&cal),
                )?);
            }
            Ok((o, views, latest, h))
        })
        .await?;
    let (from, to) = views.first().map(|v| (v.from, v.to)).unwrap_or((0, 1));
    let data_end = views.iter().map(|v| v.info.last_ms).max().unwrap_or(to);
    const DAY: i64 = 86_400_000;
    let quick: Vec<(&str, Option<(i64, i64)>)> = vec![
        (l.t("toutes les données", "all data"), None),
        (
            l.t("dernière année", "last year"),
            Some((data_end - 365 * DAY, data_end + DAY)),
        ),
        (
            l.t("30 derniers jours", "last 30 days"),
            Some((data_end - 30 * DAY, data_end + DAY)),
        ),
        (
            l.t("7 derniers jours", "last 7 days"),
            Some((data_end - 7 * DAY, data_end + DAY)),
        ),
        (
            l.t("dernier jour", "last day"),
            Some((data_end - DAY, data_end + 3_600_000)),
        ),
    ];
    let o = &overview;
    let none = l.t("aucune", "none");
    let body = html! {
        h1 { (l.t("Appareil ", "Device ")) (o.id) }
        (health::device_alarms(&l, &device_health, now_ms))
        table.facts {
            caption { (l.t("En bref", "At a glance")) }
            tr { th scope="row" { (l.t("Territoire", "Territory")) } td { (o.territory) } }
            tr { th scope="row" { (l.t("État", "State")) } td { (status_badge(&l, &o.status)) } }
            tr { th scope="row" { (l.t("Dernier contact", "Last seen")) } td { (o.last_seen.as_deref().map(|s| l.label(s)).unwrap_or_else(|| l.t("jamais", "never").to_owned())) } }
            tr { th scope="row" { (l.t("Résultats reçus", "Records stored")) } td id="records" { (l.int(o.records as i64)) } }
            tr { th scope="row" { (l.t("Contrôle d'intégrité", "Audit")) } td { (audit_badge(&l, o.audit))
                @if let Some(c) = o.checkpoint_size { " " (l.t("(point de contrôle signé vérifié jusqu'au résultat n° ", "(signed checkpoint verified at size ")) (c) ")" } } }
            tr { th scope="row" { (l.t("Alarmes ouvertes", "Open alarms")) } td {
                @if o.open_alarms.is_empty() { (none) }
                (alarm_badges(&l, &o.open_alarms))
                " " a href=(super::link("/alarms", [("device", o.id.as_str())])) { (l.t("liste des alarmes", "alarm list")) } } }
            tr { th scope="row" { (l.t("Registre", "Register")) } td { a href=(format!("/register#dev-{}", o.id)) { (l.t("modèles, clé et point de contrôle signé", "models, key and signed checkpoint")) } } }
        }
        (health::device_section(&l, &device_health))
        h2 { (l.t("Période", "Period")) }
        p { (l.t("Du ", "From ")) strong.period-from { (l.datetime(from)) } (l.t(" au ", " to ")) strong.period-to { (l.datetime(to)) } " (" (l.tz_name()) ")." }
        form.period method="get" action=(format!("/device/{}", o.id)) {
            label for="from_day" { (l.t("Du", "From")) } " "
            input id="from_day" type="date" name="from_day" value=(local_day(&l, from)) aria-describedby="period-help";
            " " label for="to_day" { (l.t("au (inclus)", "to (included)")) } " "
            input id="to_day" type="date" name="to_day" value=(local_day(&l, to - 1)) aria-describedby="period-help";
            " " button type="submit" { (l.t("Afficher", "Show")) }
            " " span id="period-help" { (l.t("jours au format AAAA-MM-JJ, ", "days as YYYY-MM-DD, ")) (l.tz_words()) }
        }
        nav.quick aria-label=(l.t("Périodes", "Periods")) {
            @for (label, p) in &quick {
                @match p {
                    None => a href=(format!("/device/{}", o.id)) { (label) },
                    Some((f, t)) => a href=(period_href(&o.id, *f, *t)) { (label) },
                }
                " · "
            }
            (l.t("cliquer sur un point ou une ligne du tableau pour zoomer", "click a point or a table row to zoom in"))
        }
        @if views.is_empty() { p { (l.t("Aucun résultat reçu de cet appareil pour l'instant.", "No aggregate stored for this device yet.")) } }
        @for (i, (v, rows)) in views.iter().zip(&latest).enumerate() {
            @let k = &v.info.key;
            @let cid = html_id(&format!("chart-{}-{}-{}", k.model, k.kind, k.class));
            @let per = duration(&l, v.bucket_ms);
            @let w = wording(&l, &k.kind, &k.class, &per);
            @let kind = k.kind.clone();
            @let fmt = |x: f64| format_value(&l, &kind, x);
            @let share = matches!(k.kind.as_str(), "presence_share" | "speech_share" | "class_share");
            @let scale = Scale { label: &w.axis, format: &fmt, cap: share.then_some(100.0) };
            section.series data-model=(k.model) data-kind=(k.kind) data-class=(k.class) {
                h3 { (w.title) }
                p.meaning { (w.meaning) " " span.model { (l.t("Modèle : ", "Model: ")) (k.model) "." } }
                @if let Some(note) = privacy_note(&l, v) {
                    p.privacy { (note) }
                }
                @if let Some(b) = &v.budget {
                    p.budget title=(budget_day(&l)) data-withheld=(b.budget.withheld) { (budget_text(&l, b)) }
                }
                p.meta {
                    (plural(&l, v.buckets.len(), ("point", "points"), ("point", "points")))
                    (l.t(", un par ", ", one per ")) (per)
                    @if k.kind == "line_count" { (l.t(" (somme des fenêtres)", " (sum of the windows)")) }
                    @else if k.kind == "count" { (l.t(" (moyenne sur les images des fenêtres)", " (average over the windows' frames)")) }
                    @else { (l.t(" (moyenne des fenêtres)", " (mean of the windows)")) }
                    ". "
                    a href=(super::link(&format!("/export/{}/series.csv", o.id), series_query(k, v))) { (l.t("Télécharger (CSV)", "Download (CSV)")) }
                    " · "
                    a href=(super::link(&format!("/api/devices/{}/series", o.id), series_query(k, v))) { "JSON" }
                }
                @let pts: Vec<ChartPoint> = v.buckets.iter().map(|b| ChartPoint {
                    start_ms: b.start_ms,
                    end_ms: b.end_ms,
                    value: b.shown(&k.kind).map(|x| if share { x / 10_000.0 } else { x }),
                    sum: (b.valued > 0).then_some(b.sum),
                    windows: b.windows,
                    suppressed: b.suppressed,
                    k: b.k_max,
                }).collect();
                @let dev = o.id.clone();
                @let wl = rows.first().map(|r| r.length_ms).unwrap_or(v.bucket_ms);
                @let zoom = |s: i64, e: i64| (e - s > wl).then(|| period_href(&dev, s, e));
                (chart::render(&l, &cid, &pts, (v.from, v.to), v.bucket_ms, &scale, &zoom))
                details.data {
                    summary { (l.t("Données du graphique (tableau)", "Chart data (table)")) }
                    table.chart-data id=(format!("data-{i}")) {
                        caption { (w.title) " — " (l.t("un point par ", "one point per ")) (per) }
                        thead { tr {
                            th scope="col" { (l.t("Début", "Start")) }
                            th scope="col" { (w.axis) }
                            th scope="col" { (l.t("Fenêtres", "Windows")) }
                        } }
                        tbody {
                            @for p in &pts {
                                tr {
                                    th scope="row" {
                                        @match zoom(p.start_ms, p.end_ms) {
                                            Some(h) => a href=(h) { (l.datetime(p.start_ms)) },
                                            None => (l.datetime(p.start_ms)),
                                        }
                                    }
                                    td.num { @match p.value { Some(x) => (fmt(x)), None => (l.t("masqué", "hidden")) } }
                                    td.num { (p.windows) @if p.suppressed > 0 { " (" (p.suppressed) " " (l.t("masquées", "hidden")) ")" } }
                                }
                            }
                        }
                    }
                }
                h4 { (l.t("Dernières fenêtres de la période", "Latest windows in the period")) }
                table.windows id=(format!("windows-{i}")) {
                    caption.sr { (w.title) " — " (l.t("dernières fenêtres", "latest windows")) }
                    thead { tr {
                        th scope="col" { (l.t("Début", "Start")) }
                        th scope="col" { (l.t("Durée", "Length")) }
                        th scope="col" { (w.axis) }
                        th scope="col" { @if k.kind == "count" { (l.t("Maximum à la fois", "Most at once")) } @else { (l.t("Maximum", "Peak")) } }
                        th scope="col" { (l.t("Observations", "Observations")) }
                        th scope="col" { (l.t("Remarques", "Notes")) }
                    } }
                    tbody {
                        @for r in rows {
                            tr data-start=(r.start_ms) data-seq=(r.seq) data-withheld=[r.withheld().then_some("true")] {
                                th scope="row" { (l.datetime(r.start_ms)) }
                                td { (duration(&l, r.length_ms)) }
                                td.num.value class=[r.value_suppressed.then_some("suppressed")] data-value=[r.value] { (window_value(&l, r)) }
                                td.num class=[r.peak_suppressed.then_some("suppressed")] { (window_peak(&l, r)) }
                                td.num { (observations(&l, r)) }
                                td {
                                    @if r.value_suppressed { (l.t("moins de ", "below ")) "k = " (r.k) ". " }
                                    @if let Some(e) = r.epsilon_milli.filter(|e| *e > 0) { (l.t("bruit ε = ", "noise ε = ")) (l.number(e as f64 / 1000.0, 3)) ". " }
                                    @if r.withheld() { span.withheld { (withheld_words(&l)) } " " }
                                    @if r.partial { (l.t("fenêtre incomplète ", "partial window ")) }
                                    @if r.clock_jumps > 0 { (l.t("saut(s) d'horloge : ", "clock jump(s): ")) (r.clock_jumps) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout(
        &l,
        &format!("{}{}", l.t("Appareil ", "Device "), overview.id),
        "dashboard",
        body,
    )
    .into_response())
}

/// One model card of the register and the devices that run it.
struct CardEntry<'a> {
    card: &'a crate::enrolment::RawModel,
    anchor: String,
    devices: Vec<(&'a query::RegisterDevice, &'a query::RegisterModel)>,
}

pub async fn register(
    State(app): State<App>,
    l: Locale,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Markup> {
    params::only(&q, &[])?;
    let (reg, uses) = app
        .db(|conn, e| {
            let reg = query::register(conn, e)?;
            // What the operator stated at enrolment, per device.
            let uses: HashMap<String, crate::enrolment::Use> = e
                .devices
                .values()
                .map(|d| (d.id.clone(), d.usage.clone()))
                .collect();
            Ok((reg, uses))
        })
        .await?;
    let mut cards: Vec<CardEntry> = Vec::new();
    for d in &reg {
        for m in &d.models {
            match cards
                .iter_mut()
                .find(|c| c.card.id == m.card.id && c.card.sha256 == m.card.sha256)
            {
                Some(c) => c.devices.push((d, m)),
                None => cards.push(CardEntry {
                    card: &m.card,
                    anchor: String::new(),
                    devices: vec![(d, m)],
                }),
            }
        }
    }
    cards.sort_by(|a, b| (&a.card.id, &a.card.version).cmp(&(&b.card.id, &b.card.version)));
    let ids: Vec<String> = cards.iter().map(|c| c.card.id.clone()).collect();
    for c in &mut cards {
        c.anchor = if ids.iter().filter(|i| **i == c.card.id).count() > 1 {
            format!(
                "model-{}-{}",
                c.card.id,
                &c.card.sha256[..8.min(c.card.sha256.len())]
            )
        } else {
            format!("model-{}", c.card.id)
        };
    }
    let unstated = l.t("non renseigné à l'inscription", "not stated at enrolment");
    let stated = |s: &Option<String>| s.clone().unwrap_or_else(|| unstated.to_owned());
    let none = crate::enrolment::Use::default();
    Ok(layout(
        &l,
        l.t("Registre public", "Public register"),
        "register",
        html! {
            h1 { (l.t("Registre public des appareils et des modèles", "Public register of devices and models")) }
            p.intro {
                (l.t("Cette page liste les modèles d'intelligence artificielle dont ce hub reçoit des résultats, à quoi ils servent, les appareils qui les utilisent, qui en est responsable et sur quelle base légale. Les appareils ne publient que des comptages et des statistiques par intervalle de temps, jamais d'images ni de sons ; les petits nombres sont masqués et, quand c'est indiqué, un bruit aléatoire est ajouté pour protéger la vie privée.",
                     "This page lists the artificial-intelligence models this hub receives results from, what they are for, the devices that run them, who is responsible for them and on what legal basis. Devices publish only counts and statistics per time window, never images or sound; small numbers are hidden and, where stated, random noise is added to protect privacy."))
            }
            details.verify {
                summary { (l.t("Comment chacun peut vérifier l'historique d'un appareil", "How anyone can check a device's history")) }
                p { (l.t("Le plus simple : ", "The simplest way: ")) a href="/verify" { (l.t("vérifier dans votre navigateur", "verify in your browser")) } (l.t(", sans rien installer. Ou bien, hors ligne :", ", with nothing to install. Or, offline:")) }
                ol {
                    li { (l.t("Télécharger la clé publique de l'appareil (", "Download the device's public key (")) code { "device.vkey" } (l.t("), ses résultats signés et son dernier point de contrôle signé, par les liens de sa fiche.", "), its signed records and its latest signed checkpoint from the links in its entry.")) }
                    li { (l.t("Lancer ", "Run ")) code { "hub verify --key device.vkey --records records.jsonl --checkpoint checkpoint.txt" }
                         (l.t(" : chaque signature est vérifiée, l'arbre de hachage recalculé, et l'on vérifie que l'appareil a signé cet arbre.", ": it checks every record's signature, recomputes the hash tree and checks that the device signed that tree.")) }
                    li { (l.t("Un exploitant qui détient le journal de l'appareil peut aussi lancer ", "An operator holding the device's own log can also run ")) code { "edge-agent audit verify LOG_DIR --pubkey device.vkey" } "." }
                }
                p { (l.t("Un point de contrôle signé engage tous les résultats qui le précèdent : un résultat retiré, modifié ou déplacé ensuite ne correspond plus.", "A signed checkpoint commits to every record before it: a record removed, changed or reordered afterwards no longer matches.")) }
            }
            h2 { (l.t("Modèles utilisés", "Models in use")) }
            @if cards.is_empty() { p { (l.t("Aucun modèle n'est inscrit.", "No model is enrolled.")) } }
            @for c in &cards {
                article.model id=(c.anchor) data-model=(c.card.id) {
                    h3 { (c.card.id) @if let Some(v) = &c.card.version { " — " (l.t("version ", "version ")) (v) } }
                    table.facts {
                        caption.sr { (l.t("Fiche du modèle ", "Model card ")) (c.card.id) }
                        tr { th scope="row" { (l.t("Ce que fait le modèle", "What the model does")) } td.purpose { (stated(&c.card.purpose)) } }
                        tr { th scope="row" { (l.t("Jamais utilisé pour", "Never used for")) } td { @if c.card.never_for.is_empty() { "-" } @else { ul { @for n in &c.card.never_for { li { (n) } } } } } }
                        tr { th scope="row" { (l.t("Auteur de la fiche du modèle", "Author of the model card")) } td.owner { (stated(&c.card.owner)) } }
                        tr { th scope="row" { (l.t("Base légale indiquée par la fiche", "Legal basis stated by the card")) } td.legal { (stated(&c.card.legal_basis)) } }
                        tr { th scope="row" { (l.t("Licence", "Licence")) } td.licence { (stated(&c.card.licence)) } }
                        tr { th scope="row" { (l.t("Précision mesurée", "Measured accuracy")) } td.accuracy { (stated(&c.card.accuracy)) } }
                        tr { th scope="row" { (l.t("Empreinte SHA-256 du fichier", "Model file SHA-256")) } td { code { (c.card.sha256) } } }
                    }
                    table.uses {
                        caption { (l.t("Appareils qui utilisent ce modèle", "Devices that run this model")) }
                        thead { tr {
                            th scope="col" { (l.t("Appareil", "Device")) }
                            th scope="col" { (l.t("Lieu", "Site")) }
                            th scope="col" { (l.t("Responsable du traitement", "Controller")) }
                            th scope="col" { (l.t("Finalité", "Purpose")) }
                            th scope="col" { (l.t("Base légale", "Legal basis")) }
                            th scope="col" { (l.t("Résultats depuis", "Results since")) }
                        } }
                        tbody {
                            @for (d, m) in &c.devices {
                                @let u = uses.get(&d.id).unwrap_or(&none);
                                tr data-device=(d.id) {
                                    th scope="row" { a href=(format!("#dev-{}", d.id)) { (d.territory) " / " (d.id) } }
                                    td { @match &d.site { Some(s) => (s.name), None => "-" } }
                                    td.controller { (stated(&u.controller)) }
                                    td.use-purpose { (stated(&u.purpose)) }
                                    td.use-legal { (stated(&u.legal_basis)) }
                                    td.since { (m.since.as_deref().map(|s| l.label(s)).unwrap_or_else(|| l.t("aucun résultat", "no result yet").to_owned())) }
                                }
                                @if let Some(b) = &m.budget {
                                    tr.budget { td colspan="6" title=(budget_day(&l)) data-withheld=(b.budget.withheld) { (d.id) (l.t(" : ", ": ")) (budget_text(&l, b)) } }
                                }
                            }
                        }
                    }
                }
            }
            h2 { (l.t("Appareils : clés et points de contrôle", "Devices: keys and checkpoints")) }
            @if reg.is_empty() { p { (l.t("Aucun appareil n'est inscrit.", "No device is enrolled.")) } }
            @for d in &reg {
                @let u = uses.get(&d.id).unwrap_or(&none);
                article.device id=(format!("dev-{}", d.id)) data-device=(d.id) {
                    h3 { (d.territory) " / " (d.id) }
                    table.facts {
                        caption.sr { (l.t("Fiche de l'appareil ", "Device ")) (d.id) }
                        tr { th scope="row" { (l.t("Inscrit le", "Enrolled")) } td { (d.enrolled.as_deref().map(|s| l.label(s)).unwrap_or_else(|| l.t("avant l'existence du registre", "before the register existed").to_owned())) } }
                        @if let Some(s) = &d.site {
                            tr { th scope="row" { (l.t("Lieu", "Site")) } td { (s.name) " (" (s.lat) ", " (s.lon) ")" } }
                        }
                        tr { th scope="row" { (l.t("Responsable du traitement", "Controller")) } td.controller { (stated(&u.controller)) } }
                        tr { th scope="row" { (l.t("Finalité", "Purpose")) } td.use-purpose { (stated(&u.purpose)) } }
                        tr { th scope="row" { (l.t("Base légale", "Legal basis")) } td.use-legal { (stated(&u.legal_basis)) } }
                        tr { th scope="row" { (l.t("Modèles", "Models")) } td {
                            @if d.models.is_empty() { (l.t("aucun", "none")) }
                            @for (j, m) in d.models.iter().enumerate() {
                                @if j > 0 { ", " }
                                @let anchor = cards.iter().find(|c| c.card.id == m.card.id && c.card.sha256 == m.card.sha256).map(|c| c.anchor.clone()).unwrap_or_default();
                                a href=(format!("#{anchor}")) { (m.card.id) }
                            }
                        } }
                        tr { th scope="row" { (l.t("Résultats détenus par ce hub", "Records held by this hub")) } td { (l.int(d.records as i64)) } }
                        tr { th scope="row" { (l.t("Racine de ces résultats", "Root of these records")) } td { code { (d.root.as_deref().unwrap_or("-")) } } }
                    }
                    h4 { (l.t("Clé publique", "Public key")) }
                    pre.vkey { (d.key) }
                    @for r in &d.retired_keys {
                        p { (l.t("Ancienne clé, en vigueur jusqu'au ", "Retired key, in force until ")) (l.label(&r.until)) " :" }
                        pre.vkey.retired { (r.key) }
                    }
                    h4 { (l.t("Dernier point de contrôle signé vérifié par ce hub", "Latest signed checkpoint verified by this hub")) }
                    @match &d.checkpoint {
                        Some(c) => pre.checkpoint { (c) },
                        None => p { (l.t("Aucun pour l'instant.", "None yet.")) },
                    }
                    p.downloads {
                        a href=(format!("/export/{}/device.vkey", d.id)) { "device.vkey" } " · "
                        @if !d.retired_keys.is_empty() {
                            a href=(format!("/export/{}/keys.txt", d.id)) { "keys.txt" } " · "
                        }
                        a href=(format!("/export/{}/records.jsonl", d.id)) { "records.jsonl" } " · "
                        a href=(format!("/export/{}/checkpoint.txt", d.id)) { "checkpoint.txt" } " · "
                        a.verify href=(format!("/verify?device={}", d.id)) { (l.t("vérifier dans le navigateur", "verify in the browser")) } " · "
                        a href=(format!("/device/{}", d.id)) { (l.t("résultats", "results")) }
                    }
                }
            }
        },
    ))
}

/// The kinds of the alarms listed, each in plain words with what to do.
pub fn alarm_legend(l: &Locale, kinds: &[&str]) -> Markup {
    html! {
        @if !kinds.is_empty() {
            section.legend aria-labelledby="legend-title" {
                h2 id="legend-title" { (l.t("Ce que signifient ces alarmes", "What these alarms mean")) }
                dl {
                    @for k in kinds {
                        @if let Some(a) = i18n::alarm_kind(l, k) {
                            dt id=(format!("kind-{k}")) { (a.title) " " span.code { "(" (k) ")" } }
                            dd { (a.meaning) " " strong { (l.t("Que faire : ", "What to do: ")) } (a.action) }
                        }
                    }
                }
            }
        }
    }
}

pub async fn alarms(
    State(app): State<App>,
    l: Locale,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Markup> {
    params::only(&q, &["device"])?;
    let device = params::opt(&q, "device").map(str::to_owned);
    let d = device.clone();
    let rows = app
        .db(move |conn, _| Ok(query::alarms(conn, d.as_deref(), false, 500)?))
        .await?;
    let mut kinds: Vec<&str> = i18n::ALARM_KINDS
        .iter()
        .copied()
        .filter(|k| rows.iter().any(|a| a.kind == *k))
        .collect();
    kinds.dedup();
    Ok(layout(
        &l,
        l.t("Alarmes", "Alarms"),
        "alarms",
        html! {
            h1 { (l.t("Alarmes", "Alarms")) @if let Some(d) = &device { (l.t(" de ", " of ")) (d) } }
            p { (l.t("Ce que le hub a refusé ou trouvé incohérent dans ce que les appareils envoient. Les administrateurs les acquittent dans l'espace d'administration ; les alarmes acquittées restent listées.",
                     "What the hub refused or found inconsistent in what devices send. Administrators acknowledge them in the admin area; acknowledged alarms stay listed.")) }
            (alarm_legend(&l, &kinds))
            table id="alarms" {
                caption { (l.t("Alarmes, les plus récentes d'abord", "Alarms, newest first")) }
                thead { tr {
                    th scope="col" { "N°" }
                    th scope="col" { (l.t("Date", "At")) }
                    th scope="col" { (l.t("Appareil ou source", "Device or source")) }
                    th scope="col" { (l.t("Type", "Kind")) }
                    th scope="col" { (l.t("N° du résultat", "Seq")) }
                    th scope="col" { (l.t("Messages", "Messages")) }
                    th scope="col" { (l.t("Détail technique", "Technical detail")) }
                    th scope="col" { (l.t("Acquittée", "Acknowledged")) }
                } }
                tbody {
                    @for a in &rows {
                        tr data-alarm=(a.id) data-kind=(a.kind) {
                            th scope="row" { (a.id) }
                            td { (l.label(&a.at)) }
                            td { (a.device.as_deref().or(a.source.as_deref()).unwrap_or("-")) }
                            td { span.badge.alarm title=(a.kind) { (i18n::alarm_kind(&l, &a.kind).map(|k| k.title).unwrap_or(&a.kind)) } }
                            td { (a.seq.map(|s| s.to_string()).unwrap_or_else(|| "-".into())) }
                            td.num { (a.count) }
                            td { (a.detail) }
                            td.acked { @match (&a.acked, &a.acked_by) { (Some(t), Some(b)) => { (l.label(t)) (l.t(" par ", " by ")) (b) }, _ => (l.t("non", "no")) } }
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

/// Plain, like the French State's design system: dark blue on white, visible focus, text at
/// least 4.5:1 against its background.
const STYLE: &str = "
body { font-family: system-ui, 'Marianne', Arial, sans-serif; margin: 0; color: #161616; background: #fff; line-height: 1.5; }
a { color: #000091; }
a.skip { position: absolute; left: -9999px; top: 0; background: #fff; color: #000091; padding: .5em 1em; z-index: 10; }
a.skip:focus { left: 1em; }
:focus-visible { outline: 3px solid #0a76f6; outline-offset: 2px; }
header nav { background: #000091; padding: .6em 1em; }
header nav a { color: #fff; margin-right: 1.2em; text-decoration: none; }
header nav a[aria-current], header nav a:hover { text-decoration: underline; }
header nav a:focus-visible { outline-color: #fff; }
header nav a.brand { font-weight: bold; }
header nav a.lang { float: right; border: 1px solid #fff; padding: 0 .5em; margin-right: 0; }
main { padding: 1em 2em; max-width: 1100px; }
main:focus { outline: none; }
footer { padding: 1em 2em; color: #3a3a3a; font-size: .9em; border-top: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0 1.2em; }
th, td { border-bottom: 1px solid #ddd; padding: .3em .7em; text-align: left; vertical-align: top; }
thead th { border-bottom: 2px solid #3a3a3a; }
th[scope=row] { font-weight: normal; }
table.facts th[scope=row] { font-weight: bold; width: 14em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.suppressed { color: #a94400; font-style: italic; }
.badge { display: inline-block; white-space: nowrap; padding: .1em .5em; border-radius: .8em; background: #e5e5e5; color: #161616; font-size: .85em; }
.badge.ok { background: #b8fec9; color: #0d4a23; }
.badge.off { background: #ffe9e6; color: #8d1a0f; }
.badge.alarm { background: #ce0500; color: #fff; }
table caption { text-align: left; font-weight: bold; padding: .3em 0; }
.sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
table.health td.message { font-weight: 500; }
svg.chart { width: 100%; max-width: 900px; background: #fff; border: 1px solid #ddd; }
svg.chart rect.plot { fill: #fff; }
svg.chart line.grid { stroke: #e5e5e5; }
svg.chart line.tick { stroke: #666; }
svg.chart text { font-size: 12px; fill: #3a3a3a; }
svg.chart polyline.line { fill: none; stroke: #000091; stroke-width: 1.5; }
svg.chart circle.point { fill: #000091; }
svg.chart circle.point.suppressed { fill: #fff; stroke: #ce0500; stroke-width: 1.5; }
details.data summary, details.verify summary { cursor: pointer; color: #000091; }
#drop { border: 2px dashed #6a6af4; padding: 1.5em; border-radius: 4px; }
#drop.over { background: #ececfe; }
#verdict .result { border-left: 6px solid; padding: .5em 1em; margin: .5em 0; }
#verdict .result.ok { border-color: #18753c; background: #f4fbf6; }
#verdict .result.problem { border-color: #ce0500; background: #fef4f4; }
#verdict .headline { font-weight: bold; }
#verdict dt { font-weight: bold; margin-top: .5em; }
#verdict dd { margin-left: 0; overflow-wrap: anywhere; }
p.small { font-size: .875em; overflow-wrap: anywhere; }
pre { background: #f0f0f0; padding: .6em; overflow-x: auto; }
p.privacy, p.budget { color: #a94400; }
p.meaning { color: #3a3a3a; }
span.withheld { color: #a94400; font-style: italic; }
section.legend dt { font-weight: bold; margin-top: .5em; }
section.legend dd { margin-left: 1em; }
span.code { font-weight: normal; font-family: monospace; }
form.inline { display: inline; }
textarea { width: 100%; max-width: 700px; }
label.block { display: block; margin-top: .5em; }
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
    fn the_budget_in_one_sentence() {
        let fr = Locale::new(Lang::Fr, crate::web::i18n::default_time_zone());
        let en = Locale::new(Lang::En, crate::web::i18n::default_time_zone());
        assert_eq!(
            budget_text(&fr, &state(1_234_500, false)),
            "Protection de la vie privée : chaque fenêtre de 10 s dépense au plus ε = 1 ; \
             budget de 8\u{202f}640 par jour et par chaîne ; dépensé le 30/11/2026 : \
             1\u{202f}234,5 (14 %)."
        );
        assert_eq!(
            budget_text(&en, &state(1_234_500, false)),
            "Privacy protection: each window of 10 s spends at most ε = 1; \
             a budget of 8,640 per day and per pipeline; spent on 30/11/2026: 1,234.5 (14%)."
        );
        assert!(budget_text(&fr, &state(1, false)).ends_with(" : 0,001 (moins de 1 %)."));
        assert!(budget_text(&fr, &state(8_640_000, true)).ends_with(
            "(100 %). Budget du jour épuisé : les comptes de la dernière fenêtre ne sont pas publiés."
        ));
        assert_eq!(milli(&fr, 0), "0");
        assert_eq!(milli(&fr, 1_000_050), "1\u{202f}000,05");
    }
}
