//! The enrolment file (TOML): which devices may publish, under which keys (current and
//! retired), from which site, and which models each may run, with the public metadata of each
//! model card (crate `modelcard`, read in [`cards`]). Written by `hub enroll` and the admin
//! area, one atomic rename at a time; read by ingest, the dashboard and the register.

pub mod cards;

use std::collections::BTreeMap;
use std::path::Path;

use audit::VerifierKey;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// One enrolled device, as written in the enrolment file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevice {
    pub id: String,
    pub territory: String,
    /// The device's verifier key (`device.vkey`), C2SP form.
    pub key: String,
    /// Who is responsible for the processing (the data controller: a town hall, a
    /// community...), as the operator states it at enrolment for the public register.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// What this device's results are used for, here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// The legal basis of the processing (GDPR art. 6), with its reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_basis: Option<String>,
    /// When the device was enrolled (RFC 3339), for the public register.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolled: Option<String>,
    /// Where it is, for the open-data export (`site` of the national counting schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<RawSite>,
    /// Keys the device used before a rotation: older records verify with them.
    #[serde(default, rename = "retired_key", skip_serializing_if = "Vec::is_empty")]
    pub retired_keys: Vec<RetiredKey>,
    #[serde(default, rename = "model")]
    pub models: Vec<RawModel>,
}

/// What the operator states of a device's use at enrolment: the public register shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Use {
    pub controller: Option<String>,
    pub purpose: Option<String>,
    pub legal_basis: Option<String>,
}

/// The most a stated field may hold.
pub const MAX_STATED: usize = 500;

impl Use {
    /// Trimmed, empty fields as `None`.
    pub fn new(controller: Option<&str>, purpose: Option<&str>, legal_basis: Option<&str>) -> Use {
        let clean = |s: Option<&str>| {
            s.map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Use {
            controller: clean(controller),
            purpose: clean(purpose),
            legal_basis: clean(legal_basis),
        }
    }

    /// The fields a production hub requires, by their names in the enrolment file, that are
    /// missing; and an error for one that is too long or holds control characters.
    pub fn check(&self, production: bool) -> Result<(), String> {
        for (name, v) in [
            ("controller", &self.controller),
            ("purpose", &self.purpose),
            ("legal_basis", &self.legal_basis),
        ] {
            match v {
                None if production => {
                    return Err(format!(
                        "`{name}` is missing: a production hub states the controller, purpose and legal basis of every device in its public register (set `mode = \"demo\"` in the hub's config for a demonstration)"
                    ));
                }
                Some(s) if s.chars().count() > MAX_STATED => {
                    return Err(format!("`{name}`: at most {MAX_STATED} characters"));
                }
                Some(s) if s.chars().any(|c| c.is_control() && c != '\n') => {
                    return Err(format!("`{name}`: no control characters"));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// A device's location, as the national counting schema's `site` file describes one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawSite {
    pub name: String,
    pub lat: f64,
    pub lon: f64,
    /// INSEE code of the commune.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insee: Option<String>,
}

/// A key replaced by a rotation, and until when it was in force.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetiredKey {
    pub key: String,
    pub until: String,
}

/// A model a device may run: its id and hash (what ingest checks), and the card's public
/// metadata copied at enrolment (what the register shows; the hub does not read model folders
/// at run time).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub id: String,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_basis: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licence: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub never_for: Vec<String>,
    /// `image` or `audio`... (the card's first input preprocessing), for the open-data export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
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
    pub enrolled: Option<String>,
    pub site: Option<RawSite>,
    pub retired_keys: Vec<RetiredKey>,
    /// Controller, purpose and legal basis, as stated at enrolment.
    pub usage: Use,
}

impl Device {
    pub fn origin(&self) -> String {
        hub_link::origin(&self.territory, &self.id)
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
        Enrolment::validate(path, read_raw(path)?)
    }

    pub fn validate(path: &Path, raw: RawDevices) -> Result<Enrolment, ConfigError> {
        let mut devices = BTreeMap::new();
        for (i, d) in raw.devices.into_iter().enumerate() {
            let field = |f: &str, message: String| {
                ConfigError::field(path, format!("device[{i}].{f}"), message)
            };
            if !hub_link::valid_level(&d.id) || !hub_link::valid_level(&d.territory) {
                return Err(field(
                    "id",
                    "id and territory: letters, digits, '-', '_', '.'".into(),
                ));
            }
            let key = VerifierKey::parse(d.key.trim()).map_err(|e| field("key", e.to_string()))?;
            let origin = hub_link::origin(&d.territory, &d.id);
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
                if !hub_link::valid_level(&m.id)
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
            if let Some(site) = &d.site
                && (!(-90.0..=90.0).contains(&site.lat) || !(-180.0..=180.0).contains(&site.lon))
            {
                return Err(field(
                    "site",
                    "lat in [-90, 90] and lon in [-180, 180]".into(),
                ));
            }
            let usage = Use::new(
                d.controller.as_deref(),
                d.purpose.as_deref(),
                d.legal_basis.as_deref(),
            );
            // Loading never requires them (devices enrolled before they existed still load);
            // enrolment does, on a production hub.
            usage.check(false).map_err(|m| field("controller", m))?;
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
                    enrolled: d.enrolled,
                    site: d.site,
                    retired_keys: d.retired_keys,
                    usage,
                },
            );
        }
        Ok(Enrolment { devices })
    }
}

impl Enrolment {
    /// A mosquitto ACL file (`acl_file`) made from the enrolment: each device, known to the
    /// broker by its certificate's CN (`use_identity_as_username`), may publish only its own
    /// topics, and of its records only those of its enrolled models, so that it can neither
    /// speak for another device or territory nor keep more retained messages than it has
    /// topics (models + 2); the hub's users read every device's records, checkpoints and
    /// statuses and write the acks. Anyone else may do nothing. `hub_users` must not be
    /// device ids.
    pub fn broker_acl(&self, hub_users: &[String]) -> Result<String, String> {
        if let Some(u) = hub_users.iter().find(|u| self.devices.contains_key(*u)) {
            return Err(format!(
                "the hub user `{u}` is also an enrolled device id: give the hub's certificate another CN"
            ));
        }
        if let Some(u) = hub_users.iter().find(|u| !hub_link::valid_level(u)) {
            return Err(format!(
                "the hub user {u:?}: 1 to 64 of letters, digits, '-', '_', '.'"
            ));
        }
        let p = hub_link::PREFIX;
        let mut out = format!(
            "# mosquitto ACL made by `hub acl` from the hub's enrolment ({} device(s)).\n\
             # Each device may publish only its own topics; regenerate it after every enrolment and\n\
             # reload mosquitto (`systemctl reload mosquitto`). hub/mosquitto/README.md.\n",
            self.devices.len()
        );
        for u in hub_users {
            out.push_str(&format!(
                "\nuser {u}\ntopic read {p}/+/+/agg/+\ntopic read {p}/+/+/checkpoint\n\
                 topic read {p}/+/+/status\ntopic write {p}/+/+/ack\n"
            ));
        }
        for d in self.devices.values() {
            let base = hub_link::device_base(&d.territory, &d.id);
            out.push_str(&format!("\nuser {}\n", d.id));
            let mut models: Vec<&str> = d.models.iter().map(|m| m.id.as_str()).collect();
            models.sort_unstable();
            models.dedup();
            for m in models {
                out.push_str(&format!("topic write {base}/agg/{m}\n"));
            }
            out.push_str(&format!(
                "topic write {base}/checkpoint\ntopic write {base}/status\ntopic read {base}/ack\n"
            ));
        }
        Ok(out)
    }
}

/// Adds (or replaces) a device in the enrolment file, keeping the others.
pub fn enroll(path: &Path, device: RawDevice) -> Result<(), ConfigError> {
    enroll_many(path, [device])
}

/// Adds (or replaces) devices in the enrolment file in one write, keeping the others: a fleet
/// of thousands is one read, one validation and one rename, not one per device.
pub fn enroll_many(
    path: &Path,
    devices: impl IntoIterator<Item = RawDevice>,
) -> Result<(), ConfigError> {
    let mut raw = read_raw(path)?;
    let devices: Vec<RawDevice> = devices.into_iter().collect();
    let new: std::collections::HashSet<&str> = devices.iter().map(|d| d.id.as_str()).collect();
    raw.devices.retain(|d| !new.contains(d.id.as_str()));
    raw.devices.extend(devices);
    write_raw(path, &raw)
}

/// Replaces a device's key, keeping the old one as retired (until `now`, RFC 3339): records
/// signed before the rotation still verify with it. The new key must name the same device.
pub fn rotate_key(path: &Path, device: &str, new_key: &str, now: &str) -> Result<(), ConfigError> {
    let mut raw = read_raw(path)?;
    let Some(d) = raw.devices.iter_mut().find(|d| d.id == device) else {
        return Err(ConfigError::field(
            path,
            "device",
            format!("`{device}` is not enrolled"),
        ));
    };
    let old = std::mem::replace(&mut d.key, new_key.trim().to_owned());
    if old.trim() == d.key {
        return Err(ConfigError::field(
            path,
            "key",
            "the new key is the current key",
        ));
    }
    d.retired_keys.push(RetiredKey {
        key: old,
        until: now.to_owned(),
    });
    write_raw(path, &raw)
}

fn read_raw(path: &Path) -> Result<RawDevices, ConfigError> {
    match modelcard::file::read_optional(path, "enrolment file")? {
        Some(text) => modelcard::file::parse(path, &text),
        None => Ok(RawDevices::default()),
    }
}

fn write_raw(path: &Path, raw: &RawDevices) -> Result<(), ConfigError> {
    let text = toml::to_string(raw).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    // Validate what we are about to write: a bad key is refused now, not at the next start.
    Enrolment::validate(path, modelcard::file::parse(path, &text)?)?;
    // Write then rename: a crash never leaves a half-written enrolment file.
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| ConfigError::io(path, "enrolment file", source))
}

/// The territory and device a device key names (`iat/TERRITORY/DEVICE`), if it is one.
pub fn device_of_key(key: &VerifierKey) -> Option<(String, String)> {
    let (territory, device) = key.name().strip_prefix("iat/")?.split_once('/')?;
    (hub_link::valid_level(territory) && hub_link::valid_level(device))
        .then(|| (territory.to_owned(), device.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(territory: &str, id: &str, models: &[&str]) -> Device {
        let key = audit::SignerKey::from_seed(&hub_link::origin(territory, id), &[1; 32])
            .expect("key")
            .verifier();
        Device {
            id: id.into(),
            territory: territory.into(),
            key,
            models: models
                .iter()
                .map(|m| RawModel {
                    id: (*m).into(),
                    sha256: "ab".repeat(32),
                    ..RawModel::default()
                })
                .collect(),
            enrolled: None,
            site: None,
            retired_keys: vec![],
            usage: Use::default(),
        }
    }

    #[test]
    fn a_production_enrolment_names_the_missing_field() {
        let full = Use::new(Some("Ville de Lyon"), Some("comptage"), Some("art. 6.1.e"));
        assert!(full.check(true).is_ok());
        let e = Use::new(Some("Ville de Lyon"), Some("  "), Some("art. 6.1.e"))
            .check(true)
            .unwrap_err();
        assert!(e.contains("`purpose` is missing"), "{e}");
        let e = Use::new(None, None, None).check(true).unwrap_err();
        assert!(e.contains("`controller`"), "{e}");
        assert!(Use::new(None, None, None).check(false).is_ok());
        let long = "x".repeat(MAX_STATED + 1);
        assert!(Use::new(Some(&long), None, None).check(false).is_err());
        assert!(Use::new(Some("a\u{7}b"), None, None).check(false).is_err());
    }

    #[test]
    fn the_broker_acl_grants_each_device_its_own_topics_only() {
        let mut e = Enrolment::default();
        for d in [
            device("fr-lyon", "dev-1", &["vad", "faces", "vad"]),
            device("fr-nantes", "cam-9", &[]),
        ] {
            e.devices.insert(d.id.clone(), d);
        }
        let acl = e.broker_acl(&["hub".into()]).unwrap();
        let block = |user: &str| -> Vec<String> {
            acl.split("\n\n")
                .find(|b| b.starts_with(&format!("user {user}\n")))
                .unwrap_or_else(|| panic!("no block for {user}:\n{acl}"))
                .lines()
                .skip(1)
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(
            block("dev-1"),
            [
                "topic write iat/v1/fr-lyon/dev-1/agg/faces",
                "topic write iat/v1/fr-lyon/dev-1/agg/vad",
                "topic write iat/v1/fr-lyon/dev-1/checkpoint",
                "topic write iat/v1/fr-lyon/dev-1/status",
                "topic read iat/v1/fr-lyon/dev-1/ack",
            ]
        );
        assert_eq!(block("cam-9").len(), 3);
        assert!(block("hub").contains(&"topic write iat/v1/+/+/ack".to_owned()));
        assert!(!acl.contains("pattern"), "no rule for anyone else");
        let e2 = e.broker_acl(&["dev-1".into()]).unwrap_err();
        assert!(e2.contains("also an enrolled device id"), "{e2}");
        assert!(e.broker_acl(&["a b".into()]).is_err());
    }
}
