//! The hub's configuration and its enrolment file (TOML), validated once: which broker, which
//! key signs acks, where records are stored, and which devices may publish which models.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use audit::VerifierKey;
use serde::{Deserialize, Serialize};
use wire::tls::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{}: field `{field}`: {message}", path.display())]
    Field {
        path: PathBuf,
        field: String,
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    name: String,
    key: String,
    db: String,
    devices: String,
    #[serde(default)]
    gap_timeout: Option<String>,
    mqtt: RawMqtt,
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
    pub mqtt: Mqtt,
}

/// `"250ms"`, `"30s"`, `"2m"` -> a duration.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        _ => None,
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read(path)?;
        let raw: RawConfig = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let field = |field: &str, message: &str| ConfigError::Field {
            path: path.to_owned(),
            field: field.to_owned(),
            message: message.to_owned(),
        };
        let base = path.parent().unwrap_or(Path::new("."));
        if !wire::valid_level(&raw.name) {
            return Err(field("name", "1 to 64 of letters, digits, '-', '_', '.'"));
        }
        let gap_timeout = match &raw.gap_timeout {
            None => Duration::from_secs(30),
            Some(s) => {
                parse_duration(s).ok_or_else(|| field("gap_timeout", "a duration like \"30s\""))?
            }
        };
        let mqtt = mqtt(base, &raw.mqtt, &format!("hub-{}", raw.name))
            .map_err(|(f, m)| field(&format!("mqtt.{f}"), &m))?;
        Ok(Config {
            path: path.to_owned(),
            key: base.join(&raw.key),
            db: base.join(&raw.db),
            devices: base.join(&raw.devices),
            name: raw.name,
            gap_timeout,
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
        && !wire::valid_level(g)
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

/// One enrolled device, as written in the enrolment file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevice {
    pub id: String,
    pub territory: String,
    /// The device's verifier key (`device.vkey`), C2SP form.
    pub key: String,
    #[serde(default, rename = "model")]
    pub models: Vec<RawModel>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub id: String,
    pub sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevices {
    #[serde(default, rename = "device")]
    pub devices: Vec<RawDevice>,
}

/// An enrolled device: its key and the models (id, sha256) it may publish results of.
#[derive(Debug, Clone)]
pub struct Device {
    pub id: String,
    pub territory: String,
    pub key: VerifierKey,
    pub models: Vec<RawModel>,
}

impl Device {
    pub fn origin(&self) -> String {
        wire::origin(&self.territory, &self.id)
    }
}

/// Every enrolled device, by id.
#[derive(Debug, Clone, Default)]
pub struct Enrolment {
    pub devices: BTreeMap<String, Device>,
}

impl Enrolment {
    /// Reads the enrolment file; a missing file means no device is enrolled.
    pub fn load(path: &Path) -> Result<Enrolment, ConfigError> {
        let raw = match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str::<RawDevices>(&text).map_err(|e| ConfigError::Syntax {
                path: path.to_owned(),
                message: e.to_string().trim_end().to_owned(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RawDevices::default(),
            Err(source) => {
                return Err(ConfigError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Enrolment::validate(path, raw)
    }

    pub fn validate(path: &Path, raw: RawDevices) -> Result<Enrolment, ConfigError> {
        let mut devices = BTreeMap::new();
        for (i, d) in raw.devices.into_iter().enumerate() {
            let field = |f: &str, message: String| ConfigError::Field {
                path: path.to_owned(),
                field: format!("device[{i}].{f}"),
                message,
            };
            if !wire::valid_level(&d.id) || !wire::valid_level(&d.territory) {
                return Err(field(
                    "id",
                    "id and territory: letters, digits, '-', '_', '.'".into(),
                ));
            }
            let key = VerifierKey::parse(d.key.trim()).map_err(|e| field("key", e.to_string()))?;
            let origin = wire::origin(&d.territory, &d.id);
            if key.name() != origin {
                return Err(field(
                    "key",
                    format!(
                        "the key is named `{}`, the device's origin is `{origin}`",
                        key.name()
                    ),
                ));
            }
            for (j, m) in d.models.iter().enumerate() {
                if !wire::valid_level(&m.id)
                    || m.sha256.len() != 64
                    || !m
                        .sha256
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    return Err(field(
                        &format!("model[{j}]"),
                        "a model id and its sha256 (64 lower-case hex digits)".into(),
                    ));
                }
            }
            if devices.contains_key(&d.id) {
                return Err(field("id", format!("`{}` is enrolled twice", d.id)));
            }
            devices.insert(
                d.id.clone(),
                Device {
                    id: d.id,
                    territory: d.territory,
                    key,
                    models: d.models,
                },
            );
        }
        Ok(Enrolment { devices })
    }
}

/// Adds (or replaces) a device in the enrolment file, keeping the others.
pub fn enroll(path: &Path, device: RawDevice) -> Result<(), ConfigError> {
    let mut raw = match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str::<RawDevices>(&text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string(),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => RawDevices::default(),
        Err(source) => {
            return Err(ConfigError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    raw.devices.retain(|d| d.id != device.id);
    raw.devices.push(device);
    let text = toml::to_string(&raw).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    // Validate what we are about to write: a bad key is refused now, not at the next start.
    Enrolment::validate(
        path,
        toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string(),
        })?,
    )?;
    std::fs::write(path, text).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })
}
