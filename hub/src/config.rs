//! The hub's configuration and its enrolment file (TOML), validated once: which broker, which
//! key signs acks, where records are stored, and which devices may publish which models.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hub_link::tls::TlsFiles;
use serde::Deserialize;

/// A config or enrolment file that failed to load: the file, the field at fault and what to
/// fix.
pub type ConfigError = modelcard::FileError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    name: String,
    key: String,
    db: String,
    devices: String,
    #[serde(default)]
    gap_timeout: Option<String>,
    #[serde(default)]
    status_stale: Option<String>,
    /// `production` (the default) or `demo`: a production hub refuses to enrol a device
    /// without its controller, purpose and legal basis (the public register states them).
    #[serde(default)]
    mode: Option<String>,
    mqtt: RawMqtt,
    #[serde(default)]
    http: Option<RawHttp>,
    #[serde(default)]
    retention: Option<RawRetention>,
}

/// `[retention]`: how long stored records stay in the database (`crate::db::retention`).
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    /// Full months kept before the current one (UTC months of the time stored).
    months: u32,
    /// Where each removed month is written first, a folder per month.
    export_dir: String,
}

/// The web side: dashboard, API, public register and admin area.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// `127.0.0.1:8080`; the web side starts only when this section is present.
    pub listen: String,
    /// A folder of model folders (`*/card.toml`): the cards the admin enrol form offers.
    #[serde(default)]
    pub cards: Option<String>,
    /// The origin browsers see, `https://hub.example.org`, when a reverse proxy serves the
    /// hub: admin POSTs must come from it (instead of matching the `Host` header, which a
    /// proxy may rewrite); with `https`, the session cookie is also `Secure`.
    #[serde(default)]
    pub public_origin: Option<String>,
    /// Reverse proxies (IP addresses) whose `X-Forwarded-For` names the client, for login
    /// throttling and the per-address connection cap.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// `[http.limits]`: timeouts, caps and sizes (defaults in [`crate::web::limits::Limits`]).
    #[serde(default)]
    pub limits: Option<crate::web::limits::RawLimits>,
    /// The time zone of the dates the pages show: an IANA name (`Europe/Paris`, the default;
    /// read from the system's tzdb) or a POSIX TZ rule (`CET-1CEST,M3.5.0,M10.5.0/3`).
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// What the hub is for: a production hub refuses incomplete enrolments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Production,
    Demo,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "production" => Some(Mode::Production),
            "demo" => Some(Mode::Demo),
            _ => None,
        }
    }
}

/// Where the web side listens and which cards it offers for enrolment.
#[derive(Debug, Clone)]
pub struct Http {
    pub listen: std::net::SocketAddr,
    pub cards: Option<PathBuf>,
    /// Normalised (`scheme://host[:port]`, lower case, no default port): what a browser sends
    /// as `Origin`.
    pub public_origin: Option<String>,
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub limits: crate::web::limits::Limits,
    /// The time zone of the pages' dates.
    pub time_zone: crate::web::i18n::Zone,
}

/// An origin as a browser sends it: `http` or `https`, a host, an optional port, nothing else;
/// lower-cased, without the scheme's default port or a trailing `/`.
pub fn public_origin(s: &str) -> Option<String> {
    let s = s.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, rest) = s.split_once("://")?;
    let default = match scheme {
        "https" => ":443",
        "http" => ":80",
        _ => return None,
    };
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0);
    let (host, port) = if rest.starts_with('[') {
        match rest.rfind("]:") {
            Some(i) => (&rest[..=i], Some(port(&rest[i + 2..])?)),
            None => (rest, None),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(port(p)?)),
            None => (rest, None),
        }
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && (host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            || (host.starts_with('[')
                && host.ends_with(']')
                && host[1..host.len() - 1]
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok()));
    if !host_ok {
        return None;
    }
    let origin = match port {
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    };
    Some(
        origin
            .strip_suffix(default)
            .map(str::to_owned)
            .unwrap_or(origin),
    )
}

/// The broker section, shared in shape with the agent's.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawMqtt {
    pub host: String,
    pub port: u16,
    #[serde(default)]
    pub client_id: Option<String>,
    /// `$share/{group}/...` subscriptions: hub instances with the same group split the load.
    #[serde(default)]
    pub shared_group: Option<String>,
    #[serde(default)]
    pub keep_alive: Option<String>,
    #[serde(default)]
    pub tls: Option<RawTls>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

/// Where the broker is and how to reach it.
#[derive(Debug, Clone)]
pub struct Mqtt {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub shared_group: Option<String>,
    pub keep_alive: Duration,
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub name: String,
    pub key: PathBuf,
    /// The store: a SQLite file (the default), or a PostgreSQL connection string.
    pub db: crate::db::sql::Database,
    pub devices: PathBuf,
    pub gap_timeout: Duration,
    /// A device whose latest status report is older than this is offline (health alarm):
    /// three times the agents' default `status_interval` unless set.
    pub status_stale: Duration,
    pub mqtt: Mqtt,
    pub http: Option<Http>,
    pub mode: Mode,
    /// Records older than the kept months are exported, then removed; kept forever without.
    pub retention: Option<crate::db::retention::Rule>,
}

/// A duration in jiff's friendly format (`"250ms"`, `"30s"`, `"2m"`, `"1h 30m"`) or ISO 8601
/// (`"PT2M"`); not negative.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let d: jiff::SignedDuration = s.trim().parse().ok()?;
    Duration::try_from(d).ok()
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = modelcard::file::read(path, "hub config")?;
        let raw: RawConfig = modelcard::file::parse(path, &text)?;
        let field = |field: &str, message: &str| ConfigError::field(path, field, message);
        let base = path.parent().unwrap_or(Path::new("."));
        if !hub_link::valid_level(&raw.name) {
            return Err(field("name", "1 to 64 of letters, digits, '-', '_', '.'"));
        }
        let gap_timeout = match &raw.gap_timeout {
            None => Duration::from_secs(30),
            Some(s) => {
                parse_duration(s).ok_or_else(|| field("gap_timeout", "a duration like \"30s\""))?
            }
        };
        let status_stale = match &raw.status_stale {
            None => crate::health::DEFAULT_STATUS_STALE,
            Some(s) => parse_duration(s)
                .filter(|d| d.as_secs() >= 1 && d.as_secs() <= 366 * 86_400)
                .ok_or_else(|| {
                    field("status_stale", "a duration from 1s to 8784h, like \"180s\"")
                })?,
        };
        let mode = match &raw.mode {
            None => Mode::default(),
            Some(m) => Mode::parse(m).ok_or_else(|| field("mode", "\"production\" or \"demo\""))?,
        };
        let mqtt = mqtt(base, &raw.mqtt, &format!("hub-{}", raw.name))
            .map_err(|(f, m)| field(&format!("mqtt.{f}"), &m))?;
        let http = match &raw.http {
            None => None,
            Some(h) => Some(Http {
                listen: h.listen.parse().map_err(|_| {
                    field("http.listen", "an address and port like \"127.0.0.1:8080\"")
                })?,
                cards: h.cards.as_ref().map(|c| base.join(c)),
                public_origin: match &h.public_origin {
                    None => None,
                    Some(o) => Some(public_origin(o).ok_or_else(|| {
                        field(
                            "http.public_origin",
                            "the address browsers use, scheme and host only, like \"https://hub.example.org\" (no path)",
                        )
                    })?),
                },
                trusted_proxies: crate::web::limits::trusted_proxies(&h.trusted_proxies)
                    .map_err(|m| field("http.trusted_proxies", &m))?,
                limits: crate::web::limits::Limits::from_raw(
                    &h.limits.clone().unwrap_or_default(),
                )
                .map_err(|(f, m)| field(&format!("http.limits.{f}"), &m))?,
                time_zone: match &h.time_zone {
                    None => crate::web::i18n::default_time_zone(),
                    Some(z) => crate::web::i18n::time_zone(z).ok_or_else(|| {
                        field(
                            "http.time_zone",
                            "an IANA time zone known to this machine's tzdb (/usr/share/zoneinfo), like \"Europe/Paris\", or a POSIX TZ rule like \"CET-1CEST,M3.5.0,M10.5.0/3\"",
                        )
                    })?,
                },
            }),
        };
        let retention = match &raw.retention {
            None => None,
            Some(r) => {
                if !(1..=1200).contains(&r.months) {
                    return Err(field(
                        "retention.months",
                        "a number of months from 1 to 1200 (the current month is always kept)",
                    ));
                }
                if r.export_dir.trim().is_empty() {
                    return Err(field(
                        "retention.export_dir",
                        "a folder where removed months are written first, like \"exports\"",
                    ));
                }
                Some(crate::db::retention::Rule {
                    months: r.months,
                    export_dir: base.join(&r.export_dir),
                })
            }
        };
        Ok(Config {
            retention,
            http,
            path: path.to_owned(),
            key: base.join(&raw.key),
            db: crate::db::sql::Database::parse(&raw.db, base),
            devices: base.join(&raw.devices),
            name: raw.name,
            gap_timeout,
            status_stale,
            mqtt,
            mode,
        })
    }

    /// The name of the hub's key (and of its signature lines on acks).
    pub fn key_name(&self) -> String {
        format!("iat-hub/{}", self.name)
    }
}

/// Validates a broker section; relative TLS paths are resolved against `base`.
pub fn mqtt(base: &Path, raw: &RawMqtt, default_id: &str) -> Result<Mqtt, (String, String)> {
    let keep_alive = match &raw.keep_alive {
        // The broker answers a PINGREQ behind everything it queued for the hub: under a
        // flood, 5 s made the hub drop its own connection (and, with a clean start, the
        // broker's queue for it), measured with `cargo xtask fleet`. A broker that dies
        // closes the TCP connection anyway; the keep-alive is for a silent link.
        None => Duration::from_secs(30),
        // The MQTT 5 client refuses less than 5 s.
        Some(s) => parse_duration(s).filter(|d| d.as_secs() >= 5).ok_or((
            "keep_alive".to_owned(),
            "a duration of at least 5s (the MQTT 5 client's minimum)".to_owned(),
        ))?,
    };
    if let Some(g) = &raw.shared_group
        && !hub_link::valid_level(g)
    {
        return Err((
            "shared_group".into(),
            "letters, digits, '-', '_', '.'".into(),
        ));
    }
    Ok(Mqtt {
        host: raw.host.clone(),
        port: raw.port,
        client_id: raw
            .client_id
            .clone()
            .unwrap_or_else(|| default_id.to_owned()),
        shared_group: raw.shared_group.clone(),
        keep_alive,
        tls: raw.tls.as_ref().map(|t| TlsFiles {
            ca: base.join(&t.ca),
            cert: base.join(&t.cert),
            key: base.join(&t.key),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_stale_defaults_to_three_status_intervals_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        let load = |extra: &str| {
            std::fs::write(
                &path,
                format!(
                    "name = \"h\"\nkey = \"k\"\ndb = \"d\"\ndevices = \"e\"\n{extra}\n[mqtt]\nhost = \"127.0.0.1\"\nport = 1883\n"
                ),
            )
            .unwrap();
            Config::load(&path)
        };
        assert_eq!(load("").unwrap().status_stale, Duration::from_secs(180));
        assert_eq!(
            load("status_stale = \"5m\"").unwrap().status_stale,
            Duration::from_secs(300)
        );
        for bad in ["\"0s\"", "\"soon\"", "\"9000h\"", "180"] {
            let e = load(&format!("status_stale = {bad}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("status_stale"), "{bad}: {e}");
        }
    }

    #[test]
    fn public_origins_are_normalised_and_checked() {
        for (given, origin) in [
            ("https://Hub.Example.org", "https://hub.example.org"),
            ("https://hub.example.org/", "https://hub.example.org"),
            ("https://hub.example.org:443", "https://hub.example.org"),
            ("http://hub.example.org:80", "http://hub.example.org"),
            (
                "https://hub.example.org:8443",
                "https://hub.example.org:8443",
            ),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("https://[::1]:8443", "https://[::1]:8443"),
            ("https://[::1]", "https://[::1]"),
        ] {
            assert_eq!(public_origin(given).as_deref(), Some(origin), "{given}");
        }
        for bad in [
            "hub.example.org",
            "ftp://hub.example.org",
            "https://hub.example.org/admin",
            "https://user@hub.example.org",
            "https://",
            "https://hub.example.org:0",
            "https://hub.example.org:99999",
            "https://hub example.org",
        ] {
            assert_eq!(public_origin(bad), None, "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(
            &path,
            "name = \"h\"\nkey = \"k\"\ndb = \"d\"\ndevices = \"e\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = 1883\n\
             [http]\nlisten = \"127.0.0.1:0\"\npublic_origin = \"https://hub.example.org/admin\"\n",
        )
        .unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("http.public_origin"), "{e}");
    }

    #[test]
    fn time_zone_and_mode_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        let load = |top: &str, http: &str| {
            std::fs::write(
                &path,
                format!(
                    "name = \"h\"\nkey = \"k\"\ndb = \"d\"\ndevices = \"e\"\n{top}\n[mqtt]\nhost = \"127.0.0.1\"\nport = 1883\n\
                     [http]\nlisten = \"127.0.0.1:0\"\n{http}\n"
                ),
            )
            .unwrap();
            Config::load(&path)
        };
        let c = load("", "").unwrap();
        assert_eq!(c.mode, Mode::Production);
        assert_eq!(c.http.unwrap().time_zone.name, "Europe/Paris");
        assert_eq!(load("mode = \"demo\"", "").unwrap().mode, Mode::Demo);
        let utc = load("", "time_zone = \"UTC\"").unwrap();
        assert_eq!(utc.http.unwrap().time_zone.name, "UTC");
        let e = load("mode = \"staging\"", "").unwrap_err().to_string();
        assert!(e.contains("mode"), "{e}");
        for bad in ["Europe/Nowhere", "", "../../etc/passwd"] {
            let e = load("", &format!("time_zone = {bad:?}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("http.time_zone"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h 30m"), Some(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("PT2M"), Some(Duration::from_secs(120)));
        for bad in ["", "m", "30", "-5s", "5 parsecs"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
