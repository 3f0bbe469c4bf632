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
    mqtt: RawMqtt,
    #[serde(default)]
    http: Option<RawHttp>,
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
}

/// Where the web side listens and which cards it offers for enrolment.
#[derive(Debug, Clone)]
pub struct Http {
    pub listen: std::net::SocketAddr,
    pub cards: Option<PathBuf>,
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
    pub db: PathBuf,
    pub devices: PathBuf,
    pub gap_timeout: Duration,
    /// A device whose latest status report is older than this is offline (health alarm):
    /// three times the agents' default `status_interval` unless set.
    pub status_stale: Duration,
    pub mqtt: Mqtt,
    pub http: Option<Http>,
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
        let mqtt = mqtt(base, &raw.mqtt, &format!("hub-{}", raw.name))
            .map_err(|(f, m)| field(&format!("mqtt.{f}"), &m))?;
        let http = match &raw.http {
            None => None,
            Some(h) => Some(Http {
                listen: h.listen.parse().map_err(|_| {
                    field("http.listen", "an address and port like \"127.0.0.1:8080\"")
                })?,
                cards: h.cards.as_ref().map(|c| base.join(c)),
            }),
        };
        Ok(Config {
            http,
            path: path.to_owned(),
            key: base.join(&raw.key),
            db: base.join(&raw.db),
            devices: base.join(&raw.devices),
            name: raw.name,
            gap_timeout,
            status_stale,
            mqtt,
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
        None => Duration::from_secs(5),
        Some(s) => parse_duration(s).filter(|d| d.as_secs() >= 1).ok_or((
            "keep_alive".to_owned(),
            "a duration of at least 1s".to_owned(),
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
