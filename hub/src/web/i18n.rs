//! The pages' language and local time, for the people the hub serves: French first, English on
//! request (`?lang=en`, remembered in a cookie, or the browser's `Accept-Language`); dates in
//! the hub's time zone (`[http] time_zone`, Europe/Paris by default) written the French way
//! (« 6 déc. 2026, 14:05 »), numbers with a decimal comma, shares as percentages, and the
//! alarm kinds in plain words with what to do. The JSON API and the CSV exports are not
//! translated: they keep RFC 3339 UTC dates and the stored units.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jiff::tz::TimeZone;
use maud::html;

use super::App;

/// The languages of the pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Fr,
    En,
}

impl Lang {
    /// The `lang` attribute value.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Fr => "fr",
            Lang::En => "en",
        }
    }

    fn parse(s: &str) -> Option<Lang> {
        match s {
            "fr" => Some(Lang::Fr),
            "en" => Some(Lang::En),
            _ => None,
        }
    }
}

/// The cookie that remembers the language chosen with `?lang=`.
pub const COOKIE: &str = "iat_lang";

/// The `lang` of a query string, if it names a language.
fn query_lang(query: Option<&str>) -> Option<Lang> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "lang")
        .and_then(|(_, v)| Lang::parse(v))
}

fn cookie_lang(headers: &HeaderMap) -> Option<Lang> {
    super::cookie(headers, COOKIE).and_then(Lang::parse)
}

/// The browser's preferred language among French and English (`Accept-Language`, by quality,
/// then order); `None` when it names neither.
fn accept_lang(headers: &HeaderMap) -> Option<Lang> {
    let value = headers.get(header::ACCEPT_LANGUAGE)?.to_str().ok()?;
    let mut best: Option<(u32, Lang)> = None;
    for part in value.split(',').take(32) {
        let mut it = part.split(';');
        let tag = it.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = it
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let q = (q.clamp(0.0, 1.0) * 1000.0) as u32;
        let lang = match tag.split('-').next() {
            Some("fr") => Lang::Fr,
            Some("en") => Lang::En,
            _ => continue,
        };
        if q > 0 && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, lang));
        }
    }
    best.map(|(_, l)| l)
}

/// The language of a request: `?lang=`, else the cookie, else `Accept-Language`, else French.
pub fn negotiate(query: Option<&str>, headers: &HeaderMap) -> Lang {
    query_lang(query)
        .or_else(|| cookie_lang(headers))
        .or_else(|| accept_lang(headers))
        .unwrap_or(Lang::Fr)
}

/// Europe/Paris as a POSIX rule (the EU's summer time since 1996): what the pages use when the
/// machine has no tzdb.
pub const PARIS_POSIX: &str = "CET-1CEST,M3.5.0,M10.5.0/3";

/// A time zone and the name it was configured by (what the pages say).
#[derive(Debug, Clone)]
pub struct Zone {
    pub name: String,
    pub tz: TimeZone,
}

impl Zone {
    pub fn utc() -> Zone {
        Zone {
            name: "UTC".into(),
            tz: TimeZone::UTC,
        }
    }
}

/// A time zone by IANA name (from the system's tzdb: `/usr/share/zoneinfo` or `$TZDIR`), or a
/// POSIX TZ rule. Europe/Paris and UTC are known without a tzdb.
pub fn time_zone(name: &str) -> Option<Zone> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 {
        return None;
    }
    let tz = match jiff::tz::db().get(name) {
        Ok(tz) => tz,
        Err(_) => match name {
            "Europe/Paris" => TimeZone::posix(PARIS_POSIX).ok()?,
            "UTC" | "Etc/UTC" => TimeZone::UTC,
            _ if name.contains('/') => return None,
            _ => TimeZone::posix(name).ok()?,
        },
    };
    Some(Zone {
        name: name.to_owned(),
        tz,
    })
}

/// Europe/Paris (UTC only if even its POSIX rule failed, which it does not).
pub fn default_time_zone() -> Zone {
    time_zone("Europe/Paris").unwrap_or_else(Zone::utc)
}

const MONTHS_FR: [&str; 12] = [
    "janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.", "oct.", "nov.",
    "déc.",
];
const MONTHS_EN: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// What a page needs to speak to its reader: the language, the time zone, and the path and
/// query of the page (for the language switch).
#[derive(Debug, Clone)]
pub struct Locale {
    pub lang: Lang,
    pub zone: Zone,
    /// The request's path and query without `lang`.
    pub here: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Locale
where
    App: axum::extract::FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = <App as axum::extract::FromRef<S>>::from_ref(state);
        Ok(Locale {
            lang: negotiate(parts.uri.query(), &parts.headers),
            zone: app.cfg().time_zone.clone(),
            here: without_lang(parts.uri.path(), parts.uri.query()),
        })
    }
}

fn without_lang(path: &str, query: Option<&str>) -> String {
    // Only a path of this site: never `//host/...` (another site) nor a backslash, which some
    // browsers read as a slash.
    if !path.starts_with('/') || path.starts_with("//") || path.contains('\\') {
        return "/".into();
    }
    let rest: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("lang="))
        .collect();
    if rest.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", rest.join("&"))
    }
}

impl Locale {
    /// A locale for tests and error pages.
    pub fn new(lang: Lang, zone: Zone) -> Locale {
        Locale {
            lang,
            zone,
            here: "/".into(),
        }
    }

    /// The French or the English text.
    pub fn t<'a>(&self, fr: &'a str, en: &'a str) -> &'a str {
        match self.lang {
            Lang::Fr => fr,
            Lang::En => en,
        }
    }

    /// The link to this page in the other language.
    pub fn switch_href(&self) -> String {
        let other = match self.lang {
            Lang::Fr => "en",
            Lang::En => "fr",
        };
        let sep = if self.here.contains('?') { '&' } else { '?' };
        format!("{}{sep}lang={other}", self.here)
    }

    /// The time zone.
    pub fn tz(&self) -> &TimeZone {
        &self.zone.tz
    }

    /// Local civil time at `ms` (`None` outside jiff's range).
    pub fn zoned(&self, ms: i64) -> Option<jiff::civil::DateTime> {
        Some(
            self.zone
                .tz
                .to_datetime(jiff::Timestamp::from_millisecond(ms).ok()?),
        )
    }

    /// The day of the month as written before it: `1er` (French), `1`, `2`...
    fn day_of(&self, d: i8) -> String {
        match (self.lang, d) {
            (Lang::Fr, 1) => "1er".into(),
            (_, d) => d.to_string(),
        }
    }

    fn month(&self, m: i8) -> &'static str {
        let i = usize::try_from(m - 1).unwrap_or(0).min(11);
        match self.lang {
            Lang::Fr => MONTHS_FR[i],
            Lang::En => MONTHS_EN[i],
        }
    }

    /// `6 déc.` / `6 Dec`.
    pub fn day_month(&self, ms: i64) -> String {
        match self.zoned(ms) {
            Some(z) => format!("{} {}", self.day_of(z.day()), self.month(z.month())),
            None => crate::dates::format(ms),
        }
    }

    /// `déc. 2026` / `Dec 2026`.
    pub fn month_year(&self, ms: i64) -> String {
        match self.zoned(ms) {
            Some(z) => format!("{} {}", self.month(z.month()), z.year()),
            None => crate::dates::format(ms),
        }
    }

    /// `6 déc. 2026`.
    pub fn date(&self, ms: i64) -> String {
        match self.zoned(ms) {
            Some(z) => format!(
                "{} {} {}",
                self.day_of(z.day()),
                self.month(z.month()),
                z.year()
            ),
            None => crate::dates::format(ms),
        }
    }

    /// `14:05`.
    pub fn time(&self, ms: i64) -> String {
        match self.zoned(ms) {
            Some(z) => format!("{:02}:{:02}", z.hour(), z.minute()),
            None => crate::dates::format(ms),
        }
    }

    /// `6 déc. 2026, 14:05` (with the seconds when they are not zero: windows of 10 s).
    pub fn datetime(&self, ms: i64) -> String {
        match self.zoned(ms) {
            Some(z) if z.second() != 0 => format!(
                "{} {} {}, {:02}:{:02}:{:02}",
                self.day_of(z.day()),
                self.month(z.month()),
                z.year(),
                z.hour(),
                z.minute(),
                z.second()
            ),
            Some(z) => format!(
                "{} {} {}, {:02}:{:02}",
                self.day_of(z.day()),
                self.month(z.month()),
                z.year(),
                z.hour(),
                z.minute()
            ),
            None => crate::dates::format(ms),
        }
    }

    /// A date label of the stored kind (RFC 3339) in local time, or the label itself when it
    /// is not a date.
    pub fn label(&self, rfc3339: &str) -> String {
        match crate::dates::parse(rfc3339) {
            Some(ms) => self.datetime(ms),
            None => rfc3339.to_owned(),
        }
    }

    /// When something started, as short as `now_ms` allows (to follow "depuis"/"since"):
    /// `14:05` the same local day, `le 6 déc. à 14:05` / `6 Dec, 14:05` the same year,
    /// `le 6 déc. 2025 à 14:05` / `6 Dec 2025, 14:05` otherwise.
    pub fn since(&self, ms: i64, now_ms: i64) -> String {
        let (Some(d), Some(n)) = (self.zoned(ms), self.zoned(now_ms)) else {
            return crate::dates::format(ms);
        };
        let hm = format!("{:02}:{:02}", d.hour(), d.minute());
        let dm = format!("{} {}", self.day_of(d.day()), self.month(d.month()));
        match self.lang {
            _ if d.date() == n.date() => hm,
            Lang::Fr if d.year() == n.year() => format!("le {dm} à {hm}"),
            Lang::Fr => format!("le {dm} {} à {hm}", d.year()),
            Lang::En if d.year() == n.year() => format!("{dm}, {hm}"),
            Lang::En => format!("{dm} {}, {hm}", d.year()),
        }
    }

    /// A duration in words, two units at most: `3 j 4 h` / `3 d 4 h`, `4 h 12 min`.
    pub fn secs(&self, secs: u64) -> String {
        match self.lang {
            Lang::Fr => crate::dates::duree(secs),
            Lang::En => crate::dates::duration_en(secs),
        }
    }

    /// What the times of a page are, in words: `heure de Paris` / `Paris time` for
    /// Europe/Paris, `heure locale, America/Cayenne` / `local time, America/Cayenne` otherwise.
    pub fn tz_words(&self) -> String {
        match (self.zone.name.as_str(), self.lang) {
            ("Europe/Paris", Lang::Fr) => "heure de Paris".into(),
            ("Europe/Paris", Lang::En) => "Paris time".into(),
            (name, Lang::Fr) => format!("heure locale, {name}"),
            (name, Lang::En) => format!("local time, {name}"),
        }
    }

    /// A number with exactly `places` decimals and the language's decimal mark: `0,70`.
    pub fn fixed(&self, v: f64, places: usize) -> String {
        if !v.is_finite() {
            return "-".into();
        }
        format!("{v:.places$}").replace('.', self.t(",", "."))
    }

    /// A size for people, in powers of 1000 as disks are sold: `240 Mo` / `240 MB`,
    /// `7,5 Go` / `7.5 GB`.
    pub fn bytes(&self, n: u64) -> String {
        let n = n as f64;
        if n >= 1e9 {
            format!("{}\u{a0}{}", self.fixed(n / 1e9, 1), self.t("Go", "GB"))
        } else {
            format!("{}\u{a0}{}", self.fixed(n / 1e6, 0), self.t("Mo", "MB"))
        }
    }

    /// The instant of a local civil time; in a gap or an overlap of a time change, the
    /// instant a clock on the wall would show it first (jiff's "compatible" choice).
    pub fn instant(&self, dt: jiff::civil::DateTime) -> Option<i64> {
        Some(self.zone.tz.to_timestamp(dt).ok()?.as_millisecond())
    }

    /// The first instant of the local day `date`.
    pub fn day_start(&self, date: jiff::civil::Date) -> Option<i64> {
        self.instant(date.to_datetime(jiff::civil::Time::midnight()))
    }

    /// The local day of `ms`.
    pub fn local_date(&self, ms: i64) -> Option<jiff::civil::Date> {
        self.zoned(ms).map(|d| d.date())
    }

    /// The time zone's name as readers know it (`Europe/Paris`), or its rule.
    pub fn tz_name(&self) -> &str {
        &self.zone.name
    }

    /// A whole number with its groups of three digits: `12 345` / `12,345`.
    pub fn int(&self, n: i64) -> String {
        let digits = n.unsigned_abs().to_string();
        let sep = self.t("\u{202f}", ",");
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push_str(sep);
            }
            out.push(c);
        }
        if n < 0 { format!("-{out}") } else { out }
    }

    /// A number with at most `decimals` decimals (trailing zeros dropped) and the language's
    /// decimal mark: `1,5` / `1.5`.
    pub fn number(&self, v: f64, decimals: usize) -> String {
        if !v.is_finite() {
            return "-".into();
        }
        let s = format!("{:.*}", decimals, v.abs());
        let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
        let frac = frac.trim_end_matches('0');
        let int: i64 = int.parse().unwrap_or(0);
        let sign = if v < 0.0 && (int != 0 || !frac.is_empty()) {
            "-"
        } else {
            ""
        };
        if frac.is_empty() {
            format!("{sign}{}", self.int(int))
        } else {
            format!("{sign}{}{}{frac}", self.int(int), self.t(",", "."))
        }
    }

    /// A share in parts per million as a percentage: `12,5 %` / `12.5%` (one decimal, two
    /// below 1 %).
    pub fn percent_ppm(&self, ppm: f64) -> String {
        let p = ppm / 10_000.0;
        let decimals = if p != 0.0 && p.abs() < 1.0 { 2 } else { 1 };
        format!("{}{}%", self.number(p, decimals), self.t("\u{a0}", ""))
    }
}

/// An alarm kind in plain words: what it means, what to do.
pub struct AlarmKind {
    pub title: &'static str,
    pub meaning: &'static str,
    pub action: &'static str,
}

/// The kinds of alarm the hub raises on what devices send ([`crate::ingest`]), in the order of
/// their gravity.
pub const ALARM_KINDS: [&str; 10] = [
    crate::ingest::FORK,
    crate::ingest::EQUIVOCATION,
    crate::ingest::ROLLBACK,
    crate::ingest::GAP,
    crate::ingest::BAD_SIGNATURE,
    crate::ingest::NOT_ALLOWED,
    crate::ingest::MISMATCH,
    crate::ingest::MALFORMED,
    crate::ingest::UNENROLLED,
    crate::ingest::OVERSIZED,
];

/// The plain words of an alarm kind (`None`: a kind this hub does not raise).
pub fn alarm_kind(l: &Locale, kind: &str) -> Option<AlarmKind> {
    use crate::ingest::*;
    let k = |t: [&'static str; 2], m: [&'static str; 2], a: [&'static str; 2]| {
        let i = usize::from(l.lang == Lang::En);
        AlarmKind {
            title: t[i],
            meaning: m[i],
            action: a[i],
        }
    };
    Some(match kind {
        FORK => k(
            ["Historique contradictoire", "Contradictory history"],
            [
                "L'appareil a signé deux versions différentes d'un même résultat, ou deux historiques différents : preuve qu'un journal a été modifié ou qu'une clé est utilisée ailleurs.",
                "The device signed two different versions of one result, or two different histories: proof that a log was altered or that its key is used elsewhere.",
            ],
            [
                "Traiter comme un incident de sécurité : isoler l'appareil, conserver les preuves ci-dessous, changer sa clé (rotation) après vérification.",
                "Treat it as a security incident: isolate the device, keep the evidence below, rotate its key once checked.",
            ],
        ),
        EQUIVOCATION => k(
            ["Double discours", "Equivocation"],
            [
                "L'appareil a signé deux points de contrôle incompatibles de son historique.",
                "The device signed two checkpoints of its history that cannot both be true.",
            ],
            [
                "Comme pour un historique contradictoire : incident de sécurité, preuves conservées, clé changée.",
                "As for a contradictory history: a security incident; keep the evidence, rotate the key.",
            ],
        ),
        ROLLBACK => k(
            ["Retour en arrière", "Rollback"],
            [
                "L'appareil présente un historique plus court que celui qu'il avait déjà signé : des résultats ont disparu de son journal.",
                "The device presents a shorter history than one it already signed: results vanished from its log.",
            ],
            [
                "Vérifier si l'appareil a été réinstallé ou restauré d'une sauvegarde ; sinon, incident de sécurité.",
                "Check whether the device was reinstalled or restored from a backup; otherwise, a security incident.",
            ],
        ),
        GAP => k(
            ["Résultats manquants", "Missing results"],
            [
                "Des résultats numérotés ne sont pas arrivés : la suite a un trou.",
                "Numbered results did not arrive: the sequence has a hole.",
            ],
            [
                "Souvent une coupure de réseau : l'appareil renvoie ce qui manque à son retour. Si le trou reste, vérifier son stockage.",
                "Often a network outage: the device resends what is missing when it is back. If the hole stays, check its storage.",
            ],
        ),
        BAD_SIGNATURE => k(
            ["Signature invalide", "Bad signature"],
            [
                "Un message sur le canal d'un appareil n'est pas signé par sa clé.",
                "A message on a device's channel is not signed by its key.",
            ],
            [
                "Vérifier que la clé enregistrée est la bonne (rotation récente ?) ; sinon quelqu'un se fait passer pour l'appareil.",
                "Check that the enrolled key is the right one (a recent rotation?); otherwise someone is impersonating the device.",
            ],
        ),
        NOT_ALLOWED => k(
            ["Modèle non autorisé", "Model not allowed"],
            [
                "L'appareil a publié les résultats d'un modèle qui ne figure pas dans son inscription.",
                "The device published results of a model it is not enrolled for.",
            ],
            [
                "Inscrire ce modèle (avec sa fiche) s'il est prévu ; sinon, retirer le modèle de l'appareil.",
                "Enrol the model (with its card) if it is intended; otherwise remove it from the device.",
            ],
        ),
        MISMATCH => k(
            ["Message mal adressé", "Misaddressed message"],
            [
                "Un résultat est arrivé sous le nom d'un autre appareil ou d'un autre modèle que le sien.",
                "A result arrived under another device's or model's name than its own.",
            ],
            [
                "Vérifier la configuration de l'appareil (identifiant, territoire) et les droits du serveur de messages.",
                "Check the device's configuration (id, territory) and the broker's access rules.",
            ],
        ),
        MALFORMED => k(
            ["Message illisible", "Unreadable message"],
            [
                "Un message n'a pas le format attendu ; il est ignoré.",
                "A message does not have the expected format; it is ignored.",
            ],
            [
                "Vérifier la version du logiciel de l'appareil ; un flot de tels messages peut être une attaque.",
                "Check the device's software version; a flood of them may be an attack.",
            ],
        ),
        UNENROLLED => k(
            ["Appareil inconnu", "Unknown device"],
            [
                "Un appareil qui n'est pas inscrit sur ce hub a envoyé des messages ; ils sont refusés.",
                "A device not enrolled on this hub sent messages; they are refused.",
            ],
            [
                "L'inscrire s'il est attendu ; sinon rien à faire (le trafic refusé est compté, pas stocké).",
                "Enrol it if it is expected; otherwise nothing to do (refused traffic is counted, not stored).",
            ],
        ),
        OVERSIZED => k(
            ["Message trop gros", "Oversized message"],
            [
                "Un message dépassait la taille maximale ; il a été ignoré sans interrompre la réception.",
                "A message exceeded the size limit; it was skipped without stopping ingest.",
            ],
            [
                "Rien à faire s'il est isolé ; répété, vérifier l'appareil ou la source et les limites du serveur de messages.",
                "Nothing if it is isolated; if repeated, check the device or source and the broker's limits.",
            ],
        ),
        _ => return None,
    })
}

/// Sets the language cookie when a page is asked for with `?lang=`, and shows the errors of
/// the pages (not of the API and exports) as a page in the reader's language.
pub async fn language(req: Request, next: Next) -> Response {
    let chosen = query_lang(req.uri().query());
    let lang = negotiate(req.uri().query(), req.headers());
    let path = req.uri().path().to_owned();
    let here = without_lang(&path, req.uri().query());
    let mut resp = next.run(req).await;
    if let Some(l) = chosen
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Lax",
            l.code()
        ))
    {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    let plain = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error())
        || !plain
        || path.starts_with("/api/")
        || path.starts_with("/export/")
    {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let l = Locale {
        here,
        ..Locale::new(lang, Zone::utc())
    };
    let title = match status.as_u16() {
        404 => l.t("Page introuvable", "Page not found"),
        400 => l.t("Demande incorrecte", "Bad request"),
        401 | 403 => l.t("Accès refusé", "Access refused"),
        _ => l.t("Erreur du serveur", "Server error"),
    };
    let page = super::pages::layout(
        &l,
        title,
        "",
        html! {
            h1 { (title) }
            p.error id="error-detail" { (l.t("Détail (en anglais) : ", "Detail: ")) (text.trim()) }
            p { a href="/" { (l.t("Retour au tableau de bord", "Back to the dashboard")) } }
        },
    );
    let mut out = (status, page).into_response();
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().append(k, v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fr() -> Locale {
        Locale::new(Lang::Fr, time_zone("Europe/Paris").expect("Paris"))
    }

    #[test]
    fn languages_are_negotiated() {
        let mut h = HeaderMap::new();
        assert_eq!(negotiate(None, &h), Lang::Fr);
        h.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("de-DE, en-GB;q=0.8, fr;q=0.5"),
        );
        assert_eq!(negotiate(None, &h), Lang::En);
        h.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("fr-FR,fr;q=0.9,en;q=0.8"),
        );
        assert_eq!(negotiate(None, &h), Lang::Fr);
        assert_eq!(negotiate(Some("from=x&lang=en"), &h), Lang::En);
        h.insert(header::COOKIE, HeaderValue::from_static("a=b; iat_lang=en"));
        assert_eq!(negotiate(None, &h), Lang::En);
        assert_eq!(negotiate(Some("lang=fr"), &h), Lang::Fr);
        assert_eq!(negotiate(Some("lang=<x>"), &h), Lang::En, "cookie");
        assert_eq!(without_lang("/d", Some("lang=en&from=1")), "/d?from=1");
        assert_eq!(without_lang("/d", Some("lang=en")), "/d");
        // The language switch never links to another site.
        assert_eq!(without_lang("//evil.example/x", Some("a=1")), "/");
        assert_eq!(without_lang("/\\evil.example", None), "/");
    }

    #[test]
    fn french_dates_numbers_and_shares() {
        let l = fr();
        let at = |s: &str| crate::dates::parse(s).unwrap();
        // Winter: UTC+1; summer: UTC+2 (with or without a tzdb on the machine).
        assert_eq!(l.datetime(at("2026-12-06T13:05:00Z")), "6 déc. 2026, 14:05");
        assert_eq!(
            l.datetime(at("2026-07-14T10:00:10Z")),
            "14 juil. 2026, 12:00:10"
        );
        assert_eq!(l.tz_name(), "Europe/Paris");
        // Without a tzdb, Europe/Paris is its POSIX rule: the same times.
        let p = Locale::new(
            Lang::Fr,
            Zone {
                name: "Europe/Paris".into(),
                tz: TimeZone::posix(PARIS_POSIX).unwrap(),
            },
        );
        for t in [
            "2026-03-29T00:59:00Z",
            "2026-03-29T01:00:00Z",
            "2026-10-25T00:59:00Z",
            "2026-10-25T01:00:00Z",
            "2031-07-01T12:00:00Z",
        ] {
            assert_eq!(p.datetime(at(t)), l.datetime(at(t)), "{t}");
        }
        assert_eq!(
            p.datetime(at("2026-03-29T01:00:00Z")),
            "29 mars 2026, 03:00"
        );
        assert_eq!(l.percent_ppm(125_000.0), "12,5\u{a0}%");
        assert_eq!(l.percent_ppm(1_000_000.0), "100\u{a0}%");
        assert_eq!(l.percent_ppm(0.0), "0\u{a0}%");
        assert_eq!(l.percent_ppm(4_200.0), "0,42\u{a0}%");
        assert_eq!(l.number(1234.56, 1), "1\u{202f}234,6");
        assert_eq!(l.number(-0.04, 1), "0");
        assert_eq!(l.number(f64::NAN, 1), "-");
        let en = Locale::new(Lang::En, Zone::utc());
        assert_eq!(en.datetime(at("2026-12-06T13:05:00Z")), "6 Dec 2026, 13:05");
        assert_eq!(en.percent_ppm(125_000.0), "12.5%");
        assert_eq!(en.int(1_234_567), "1,234,567");
        assert!(time_zone("Mars/Olympus").is_none());
        assert!(time_zone("").is_none());
        assert!(time_zone("UTC").is_some());
        assert!(time_zone("EST5EDT,M3.2.0,M11.1.0").is_some());
    }

    #[test]
    fn every_alarm_kind_is_explained_in_both_languages() {
        for lang in [Lang::Fr, Lang::En] {
            let l = Locale::new(lang, Zone::utc());
            for k in ALARM_KINDS {
                let a = alarm_kind(&l, k).unwrap_or_else(|| panic!("{k}"));
                assert!(!a.title.is_empty() && a.meaning.len() > 20 && a.action.len() > 20);
            }
            assert!(alarm_kind(&l, "NOPE").is_none());
        }
    }
}
