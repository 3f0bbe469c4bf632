//! The admin area: login and logout, device enrolment (a verifier key and the model cards it
//! may run), key rotation and alarm acknowledgement. Every page needs a session (else a
//! redirect to the login page), every POST a session (else 401) and the session's CSRF token
//! (else 403); a POST whose `Origin` is another site is refused too.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::i18n::{self, Lang, Locale};
use super::pages::{alarm_legend, layout};
use super::{App, WebError, WebResult, params};
use crate::auth::{self, Session};
use crate::dates;
use crate::db::query::{self, AlarmFilter, AlarmRow};
use crate::db::store::Severity;
use crate::enrolment::cards;
use crate::enrolment::{RawDevice, RawSite, Use};
use crate::mqtt::now_ms;

pub const COOKIE: &str = "iat_session";

type Fields = Vec<(String, String)>;

fn field<'a>(f: &'a Fields, name: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    super::cookie(headers, COOKIE)
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
}

async fn current(app: &App, headers: &HeaderMap) -> WebResult<Option<(String, Session)>> {
    let Some(token) = cookie_token(headers) else {
        return Ok(None);
    };
    app.db(move |c, _| Ok(auth::session(c, &token, now_ms())?.map(|s| (token, s))))
        .await
}

/// An admin page: the session, or a redirect to the login page.
async fn page_session(app: &App, headers: &HeaderMap) -> WebResult<Session> {
    current(app, headers)
        .await?
        .map(|(_, s)| s)
        .ok_or(WebError::Login)
}

/// Refuses a cross-site POST when the browser says where it comes from: its `Origin` must be
/// the configured public origin (`[http] public_origin`: behind a reverse proxy, which may
/// rewrite `Host`), or else the host the request was sent to.
pub fn same_origin(headers: &HeaderMap, public_origin: Option<&str>) -> WebResult<()> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    let shown: String = origin.escape_debug().take(200).collect();
    if let Some(public) = public_origin {
        return if crate::config::public_origin(origin).as_deref() == Some(public) {
            Ok(())
        } else {
            Err(WebError::Forbidden(format!(
                "cross-site request from {shown} refused: this hub's public origin is {public} (`public_origin` in the [http] section of its config)"
            )))
        };
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    if !origin_host.is_empty() && origin_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        Err(WebError::Forbidden(format!(
            "cross-site request from {shown} refused (it is not the host {host:?}); behind a reverse proxy, set `public_origin` in the [http] section of the hub's config to the address browsers use"
        )))
    }
}

/// An admin action: a session (else 401) and its CSRF token (else 403).
async fn post_session(
    app: &App,
    headers: &HeaderMap,
    form: &Fields,
) -> WebResult<(String, Session)> {
    same_origin(headers, app.cfg().public_origin.as_deref())?;
    let (token, s) = current(app, headers).await?.ok_or(WebError::Unauthorized)?;
    match field(form, "csrf") {
        Some(c) if auth::same(c, &s.csrf) => Ok((token, s)),
        _ => Err(WebError::Forbidden(
            "missing or wrong CSRF token: reload the admin page and try again".into(),
        )),
    }
}

fn see_other(to: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(
            header::LOCATION,
            HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/admin")),
        )],
    )
        .into_response()
}

fn login_form(l: &Locale, error: Option<&str>) -> Markup {
    layout(
        l,
        l.t("Connexion à l'administration", "Admin login"),
        "admin",
        html! {
            h1 { (l.t("Connexion à l'administration", "Admin login")) }
            @if let Some(e) = error { p.error id="login-error" role="alert" { (e) } }
            form id="login" method="post" action="/admin/login" {
                p { label for="login-name" { (l.t("Identifiant", "Name")) } " " input id="login-name" type="text" name="name" autocomplete="username" required; }
                p { label for="login-password" { (l.t("Mot de passe", "Password")) } " " input id="login-password" type="password" name="password" autocomplete="current-password" required; }
                p { button type="submit" { (l.t("Se connecter", "Log in")) } }
            }
            p { (l.t("Les comptes se créent sur la machine du hub avec ", "Accounts are created on the hub's machine with ")) code { "hub admin passwd --config hub.toml --user NAME" } "." }
        },
    )
}

pub async fn login_page(
    State(app): State<App>,
    l: Locale,
    headers: HeaderMap,
) -> WebResult<Response> {
    if current(&app, &headers).await?.is_some() {
        return Ok(see_other("/admin"));
    }
    Ok(login_form(&l, None).into_response())
}

/// A login: throttled per account and per client address (429 with `Retry-After`, before any
/// password work), then one of the few Argon2 places (503 when none frees up in time).
pub async fn login(
    State(app): State<App>,
    l: Locale,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    Form(form): Form<Fields>,
) -> WebResult<Response> {
    same_origin(&headers, app.cfg().public_origin.as_deref())?;
    let name = field(&form, "name").unwrap_or("").to_owned();
    let password = field(&form, "password").unwrap_or("").to_owned();
    if name.len() > 64 || password.len() > 1024 {
        return Err(WebError::BadRequest("name or password too long".into()));
    }
    let client = super::server::client_of(&extensions, &headers, &app.cfg().trusted_proxies);
    let begun = app.throttle().begin(&name, client, now_ms());
    if let Err(wait_ms) = begun {
        let secs = (wait_ms as u64).div_ceil(1000).max(1);
        let msg = match l.lang {
            Lang::Fr => format!(
                "Trop d'échecs de connexion pour ce compte ou depuis cette adresse : réessayez dans {secs} s."
            ),
            Lang::En => format!(
                "Too many failed logins for this account or from this address: try again in {secs} s."
            ),
        };
        let mut r = (StatusCode::TOO_MANY_REQUESTS, login_form(&l, Some(&msg))).into_response();
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Ok(r);
    }
    let permit = match app.password_slot().await {
        Ok(p) => p,
        Err(e) => {
            app.throttle().abandoned(&name, client);
            return Err(e);
        }
    };
    let who = name.clone();
    let session = app
        .db(move |c, _| {
            // Held by the blocking work itself: a client that gives up does not free it early.
            let _permit = permit;
            if !auth::check_login(c, &who, &password)? {
                return Ok(None);
            }
            Ok(Some(auth::create_session(c, &who, now_ms())?))
        })
        .await;
    let Some((token, _)) = session? else {
        return Ok((
            StatusCode::UNAUTHORIZED,
            login_form(
                &l,
                Some(l.t(
                    "Identifiant ou mot de passe incorrect.",
                    "Wrong name or password.",
                )),
            ),
        )
            .into_response());
    };
    app.throttle().succeeded(&name, client);
    let cookie = format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        auth::SESSION_TTL_MS / 1000,
        secure(&app)
    );
    let mut r = see_other("/admin");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

pub async fn logout(
    State(app): State<App>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> WebResult<Response> {
    let (token, _) = post_session(&app, &headers, &form).await?;
    app.db(move |c, _| Ok(auth::end_session(c, &token)?))
        .await?;
    let mut r = see_other("/");
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
        secure(&app)
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

/// `; Secure` when browsers reach the hub over https (its public origin says so).
fn secure(app: &App) -> &'static str {
    match &app.cfg().public_origin {
        Some(o) if o.starts_with("https://") => "; Secure",
        _ => "",
    }
}

fn csrf_input(s: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

pub async fn home(State(app): State<App>, l: Locale, headers: HeaderMap) -> WebResult<Markup> {
    let s = page_session(&app, &headers).await?;
    let (catalogue, card_errors) = match &app.cfg().cards {
        Some(dir) => {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || cards::catalogue(&dir))
                .await
                .map_err(|e| WebError::Internal(e.to_string()))?
        }
        None => (Vec::new(), Vec::new()),
    };
    let (devices, open) = app
        .db(|c, e| {
            let open = AlarmFilter {
                open_only: true,
                ..AlarmFilter::default()
            };
            Ok((query::devices(c, e)?, query::alarm_page(c, &open, 1, 20)?))
        })
        .await?;
    let production = app.cfg().mode == crate::config::Mode::Production;
    Ok(layout(
        &l,
        l.t("Administration", "Admin"),
        "admin",
        html! {
            h1 { (l.t("Administration", "Admin")) }
            p { (l.t("Connecté en tant que ", "Logged in as ")) strong id="admin-name" { (s.name) } ". "
                form.inline method="post" action="/admin/logout" { (csrf_input(&s)) button type="submit" { (l.t("Se déconnecter", "Log out")) } } }
            h2 { (l.t("Alarmes ouvertes", "Open alarms")) }
            @if open.alarms.is_empty() { p id="no-open-alarms" { (l.t("Aucune.", "None.")) } }
            @else {
                p { (open.total) (l.t(" alarme(s) ouverte(s), pour ", " open alarm(s) standing for ")) (open.messages) (l.t(" événement(s) ou message(s), les plus graves d'abord. ", " event(s) or message(s), the most serious first. "))
                    a href="/admin/alarms?open=true" { (l.t("Toutes les alarmes, avec filtres", "All alarms, with filters")) } "." }
                (alarm_table(&l, &s, &open.alarms, "open-alarms", "admin"))
                @let kinds: Vec<&str> = i18n::ALARM_KINDS.iter().copied().filter(|k| open.alarms.iter().any(|a| a.kind == *k)).collect();
                (alarm_legend(&l, &kinds))
            }
            h2 { (l.t("Inscrire un appareil", "Enrol a device")) }
            @if app.cfg().cards.is_none() {
                p.error { (l.t("Pas de catalogue de fiches : indiquer `cards` dans la section [http] de la configuration du hub (un dossier de dossiers de modèles).", "No card catalogue: set `cards` in the [http] section of the hub's config to a folder of model folders.")) }
            }
            @for e in &card_errors { p.error { (l.t("Fiche non proposée : ", "Card not offered: ")) (e.to_string()) } }
            form id="enrol" method="post" action="/admin/enrol" {
                (csrf_input(&s))
                p { label.block for="enrol-vkey" { (l.t("Clé de vérification de l'appareil (son fichier ", "Device verifier key (the device's ")) code { "device.vkey" } ")" }
                    textarea id="enrol-vkey" name="vkey" rows="2" required placeholder="iat/TERRITORY/DEVICE+xxxxxxxx+..." {} }
                fieldset { legend { (l.t("Modèles qu'il peut faire tourner", "Models it may run")) }
                    @for c in &catalogue {
                        @let cid = format!("card-{}", c.id);
                        input id=(cid) type="checkbox" name="card" value=(c.id); " " label for=(cid) { (c.id) " " (c.version.as_deref().unwrap_or("")) } br;
                    }
                }
                fieldset { legend { (l.t("Pour le registre public", "For the public register")) @if production { (l.t(" (obligatoire)", " (required)")) } }
                    p { label.block for="enrol-controller" { (l.t("Responsable du traitement (ex. : Ville de Lyon, direction de la voirie)", "Controller (e.g. City of Lyon, roads department)")) }
                        input id="enrol-controller" type="text" name="controller" size="60" maxlength="500" required[production]; }
                    p { label.block for="enrol-purpose" { (l.t("Finalité (à quoi servent ses résultats ici)", "Purpose (what its results are used for here)")) }
                        textarea id="enrol-purpose" name="purpose" rows="2" maxlength="500" required[production] {} }
                    p { label.block for="enrol-legal" { (l.t("Base légale (ex. : RGPD art. 6.1.e, délibération n° ...)", "Legal basis (e.g. GDPR art. 6.1.e, council decision no. ...)")) }
                        input id="enrol-legal" type="text" name="legal_basis" size="60" maxlength="500" required[production]; }
                }
                fieldset { legend { (l.t("Lieu (facultatif ; pour l'export open data)", "Site (optional; for the open-data export)")) }
                    label for="enrol-site" { (l.t("Nom", "Name")) } " " input id="enrol-site" type="text" name="site_name"; " "
                    label for="enrol-lat" { "Latitude" } " " input id="enrol-lat" type="text" name="lat" size="10"; " "
                    label for="enrol-lon" { "Longitude" } " " input id="enrol-lon" type="text" name="lon" size="10"; " "
                    label for="enrol-insee" { (l.t("Code INSEE", "INSEE code")) } " " input id="enrol-insee" type="text" name="insee" size="6";
                }
                p { button type="submit" { (l.t("Inscrire", "Enrol")) } }
            }
            h2 { (l.t("Changer la clé d'un appareil", "Rotate a device key")) }
            p { (l.t("L'ancienne clé reste au registre comme retirée : les résultats signés avant le changement se vérifient toujours avec elle.", "The old key is kept in the register as retired: records signed before the rotation still verify with it.")) }
            form id="rotate" method="post" action="/admin/rotate" {
                (csrf_input(&s))
                p { label for="rotate-device" { (l.t("Appareil", "Device")) } " " select id="rotate-device" name="device" {
                    @for d in &devices { option value=(d.id) { (d.territory) " / " (d.id) } }
                } }
                p { label.block for="rotate-vkey" { (l.t("Nouvelle clé de vérification", "New verifier key")) } textarea id="rotate-vkey" name="vkey" rows="2" required {} }
                p { button type="submit" { (l.t("Changer la clé", "Rotate")) } }
            }
        },
    ))
}

pub async fn enrol(
    State(app): State<App>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> WebResult<Response> {
    let _ = post_session(&app, &headers, &form).await?;
    let vkey = field(&form, "vkey").unwrap_or("").trim().to_owned();
    let key = audit::VerifierKey::parse(&vkey)
        .map_err(|e| WebError::BadRequest(format!("the verifier key: {e}")))?;
    let (territory, device) = crate::enrolment::device_of_key(&key).ok_or_else(|| {
        WebError::BadRequest(format!(
            "the key is named `{}`, not a device origin `iat/TERRITORY/DEVICE`",
            key.name()
        ))
    })?;
    let chosen: Vec<&str> = form
        .iter()
        .filter(|(k, _)| k == "card")
        .map(|(_, v)| v.as_str())
        .collect();
    if chosen.is_empty() {
        return Err(WebError::BadRequest(
            "choose at least one model card".into(),
        ));
    }
    let Some(dir) = app.cfg().cards.clone() else {
        return Err(WebError::BadRequest(
            "no card catalogue is configured (`cards` in [http])".into(),
        ));
    };
    let (catalogue, _) = tokio::task::spawn_blocking(move || cards::catalogue(&dir))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?;
    let mut models = Vec::new();
    for id in chosen {
        let card = catalogue
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| WebError::BadRequest(format!("no card {id:?} in the catalogue")))?;
        models.push(card.clone());
    }
    let site = site(&form)?;
    let usage = Use::new(
        field(&form, "controller"),
        field(&form, "purpose"),
        field(&form, "legal_basis"),
    );
    usage
        .check(app.cfg().mode == crate::config::Mode::Production)
        .map_err(|e| WebError::BadRequest(format!("{territory}/{device} not enrolled: {e}")))?;
    let raw = RawDevice {
        id: device.clone(),
        territory: territory.clone(),
        key: key.to_string(),
        enrolled: Some(dates::format(now_ms())),
        site,
        retired_keys: Vec::new(),
        models,
        controller: usage.controller,
        purpose: usage.purpose,
        legal_basis: usage.legal_basis,
    };
    app.change_enrolment(move |path| crate::enrolment::enroll(path, raw))
        .await?;
    tracing::info!("hub web: enrolled {territory}/{device}");
    Ok(see_other("/admin"))
}

fn site(form: &Fields) -> WebResult<Option<RawSite>> {
    let get = |n: &str| field(form, n).map(str::trim).filter(|s| !s.is_empty());
    let (name, lat, lon) = (get("site_name"), get("lat"), get("lon"));
    if name.is_none() && lat.is_none() && lon.is_none() {
        return Ok(None);
    }
    let (Some(name), Some(lat), Some(lon)) = (name, lat, lon) else {
        return Err(WebError::BadRequest(
            "a site needs a name, a latitude and a longitude (or none of them)".into(),
        ));
    };
    let num = |s: &str, what: &str, lim: f64| -> WebResult<f64> {
        s.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && v.abs() <= lim)
            .ok_or_else(|| {
                WebError::BadRequest(format!("{what}: {s:?} is not a number in [-{lim}, {lim}]"))
            })
    };
    let insee = get("insee").map(str::to_owned);
    if let Some(i) = &insee
        && (i.len() != 5 || !i.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return Err(WebError::BadRequest("INSEE code: 5 characters".into()));
    }
    if name.chars().count() > 200 {
        return Err(WebError::BadRequest(
            "site name: at most 200 characters".into(),
        ));
    }
    Ok(Some(RawSite {
        name: name.to_owned(),
        lat: num(lat, "latitude", 90.0)?,
        lon: num(lon, "longitude", 180.0)?,
        insee,
    }))
}

pub async fn rotate(
    State(app): State<App>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> WebResult<Response> {
    let _ = post_session(&app, &headers, &form).await?;
    let device = field(&form, "device").unwrap_or("").to_owned();
    let vkey = field(&form, "vkey").unwrap_or("").trim().to_owned();
    audit::VerifierKey::parse(&vkey)
        .map_err(|e| WebError::BadRequest(format!("the new verifier key: {e}")))?;
    let now = dates::format(now_ms());
    let d = device.clone();
    app.change_enrolment(move |path| crate::enrolment::rotate_key(path, &d, &vkey, &now))
        .await?;
    tracing::info!("hub web: rotated the key of {device}");
    Ok(see_other("/admin"))
}

pub async fn ack(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<Fields>,
) -> WebResult<Response> {
    let (_, s) = post_session(&app, &headers, &form).await?;
    let id: i64 = id
        .parse()
        .map_err(|_| WebError::BadRequest(format!("alarm id {id:?} is not a number")))?;
    let done = app
        .db(move |c, _| Ok(query::ack_alarm(c, id, &s.name, now_ms())?))
        .await?;
    if !done {
        return Err(WebError::NotFound(format!("no open alarm #{id}")));
    }
    // Back where the button was (a fixed choice: never a redirect to a given address).
    Ok(see_other(match field(&form, "back") {
        Some("alarms") => "/admin/alarms?open=true",
        _ => "/admin",
    }))
}

/// A severity in words.
fn severity(l: &Locale, s: Severity) -> &'static str {
    match (s, l.lang) {
        (Severity::Critical, i18n::Lang::Fr) => "critique",
        (Severity::High, i18n::Lang::Fr) => "élevée",
        (Severity::Warning, i18n::Lang::Fr) => "avertissement",
        (Severity::Notice, i18n::Lang::Fr) => "information",
        (s, i18n::Lang::En) => s.name(),
    }
}

/// A table of alarms with their acknowledge buttons (`back`: the page to return to).
fn alarm_table(l: &Locale, s: &Session, rows: &[AlarmRow], id: &str, back: &str) -> Markup {
    html! {
        table id=(id) {
            caption { (l.t("Alarmes, les plus graves d'abord", "Alarms, the most serious first")) }
            thead { tr {
                th scope="col" { "N°" }
                th scope="col" { (l.t("Gravité", "Severity")) }
                th scope="col" { (l.t("Type", "Kind")) }
                th scope="col" { (l.t("Appareil ou source", "Device or source")) }
                th scope="col" { (l.t("Messages", "Messages")) }
                th scope="col" { (l.t("Premier", "First")) }
                th scope="col" { (l.t("Dernier", "Last")) }
                th scope="col" { (l.t("Détail et preuves", "Detail and evidence")) }
                th scope="col" { (l.t("Acquittement", "Acknowledged")) }
            } }
            tbody {
                @for a in rows {
                    tr data-alarm=(a.id) data-kind=(a.kind) data-severity=(a.severity.name()) data-count=(a.count) {
                        th scope="row" { (a.id) }
                        td { span class={ "badge sev-" (a.severity.name()) } { (severity(l, a.severity)) } }
                        td { span.badge.alarm title=(a.kind) { (i18n::alarm_kind(l, &a.kind).map(|k| k.title).unwrap_or(&a.kind)) } }
                        td {
                            @if let Some(d) = &a.device { (d) }
                            @else if let Some(src) = &a.source { code { (src) } }
                            @else { "-" }
                        }
                        td.num { (a.count) }
                        td { (l.label(&a.at)) }
                        td { (a.last.as_deref().map(|t| l.label(t)).unwrap_or_default()) }
                        td {
                            (a.detail)
                            @if let Some(e) = &a.evidence {
                                details { summary { (l.t("preuves", "evidence")) } pre { (e) } }
                            }
                        }
                        td {
                            @match (&a.acked, &a.acked_by) {
                                (Some(t), Some(b)) => { (l.label(t)) (l.t(" par ", " by ")) (b) },
                                _ => {
                                    form.inline method="post" action=(format!("/admin/alarms/{}/ack", a.id)) {
                                        (csrf_input(s))
                                        input type="hidden" name="back" value=(back);
                                        button type="submit" aria-label=(format!("{} {}", l.t("Acquitter l'alarme n°", "Acknowledge alarm #"), a.id)) { (l.t("Acquitter", "Acknowledge")) }
                                    }
                                },
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Every alarm, filtered by device, kind, severity and state, a page at a time; the most
/// serious first, so that no flood of rejected traffic hides a FORK or a GAP.
pub async fn alarms(
    State(app): State<App>,
    l: Locale,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Markup> {
    let s = page_session(&app, &headers).await?;
    params::only(
        &q,
        &["device", "kind", "severity", "open", "page", "per_page"],
    )?;
    let (filter, page, per_page) = params::alarm_filter(&q, 50)?;
    let f = filter.clone();
    let p = app
        .db(move |c, _| Ok(query::alarm_page(c, &f, page, per_page)?))
        .await?;
    let link = |page: u64| {
        let (page, per_page) = (page.to_string(), per_page.to_string());
        let filters = [
            ("device", filter.device.as_deref()),
            ("kind", filter.kind.as_deref()),
            ("severity", filter.severity.map(|s| s.name())),
            ("open", filter.open_only.then_some("true")),
        ];
        let pairs = [
            ("page", Some(page.as_str())),
            ("per_page", Some(per_page.as_str())),
        ]
        .into_iter()
        .chain(filters)
        .filter_map(|(k, v)| Some((k, v?)));
        super::link("/admin/alarms", pairs)
    };
    let kinds = i18n::ALARM_KINDS;
    let shown: Vec<&str> = kinds
        .iter()
        .copied()
        .filter(|k| p.alarms.iter().any(|a| a.kind == *k))
        .collect();
    Ok(layout(
        &l,
        l.t("Alarmes · Administration", "Alarms · Admin"),
        "admin",
        html! {
            h1 { (l.t("Alarmes", "Alarms")) }
            p { (l.t("Les plus graves d'abord (critique : preuve de falsification signée par un appareil ; élevée : résultats manquants, ou signature invalide sur le canal d'un appareil ; avertissement : message d'un appareil inutilisable ; information : trafic refusé avant toute vérification), puis les plus récentes. Le trafic refusé est compté par source et par type : une ligne par heure avec le nombre de messages et les premiers en preuve.",
                     "The most serious first (critical: proof of tampering signed by a device; high: records missing, or a signature that does not verify on a device's topic; warning: a device's message that cannot be used; notice: traffic refused before anything was verified), then the newest. Rejected traffic is counted per source and kind: one row per hour with the number of messages and the first few as evidence.")) }
            form id="alarm-filter" method="get" action="/admin/alarms" {
                label for="f-device" { (l.t("Appareil", "Device")) } " " input id="f-device" type="text" name="device" size="16" value=[filter.device.as_deref()]; " "
                label for="f-kind" { (l.t("Type", "Kind")) } " " select id="f-kind" name="kind" {
                    option value="" { (l.t("tous", "any")) }
                    @for k in kinds { option value=(k) selected[filter.kind.as_deref() == Some(k)] { (i18n::alarm_kind(&l, k).map(|a| a.title).unwrap_or(k)) " (" (k) ")" } }
                } " "
                label for="f-severity" { (l.t("Gravité", "Severity")) } " " select id="f-severity" name="severity" {
                    option value="" { (l.t("toutes", "any")) }
                    @for v in Severity::ALL { option value=(v.name()) selected[filter.severity == Some(v)] { (severity(&l, v)) (l.t(" et plus", " and above")) } }
                } " "
                input id="f-open" type="checkbox" name="open" value="true" checked[filter.open_only]; " " label for="f-open" { (l.t("non acquittées seulement", "not acknowledged only")) } " "
                button type="submit" { (l.t("Filtrer", "Filter")) }
            }
            p id="alarm-count" { (p.total) (l.t(" alarme(s), ", " alarm(s), ")) (p.messages) (l.t(" événement(s) ou message(s) ; page ", " event(s) or message(s); page ")) (p.page) (l.t(" sur ", " of ")) (p.pages) "." }
            (alarm_legend(&l, &shown))
            @if !p.alarms.is_empty() { (alarm_table(&l, &s, &p.alarms, "alarms", "alarms")) }
            nav.pages aria-label=(l.t("pages", "pages")) {
                @if p.page > 1 { a rel="prev" href=(link(p.page - 1)) { (l.t("Précédente", "Previous")) } " " }
                @if p.page < p.pages { a rel="next" href=(link(p.page + 1)) { (l.t("Suivante", "Next")) } }
            }
        },
    ))
}
