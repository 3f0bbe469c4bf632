//! Model cards as the hub needs them: the public metadata (purpose, owner, legal basis,
//! licence, accuracy...) copied into the enrolment file when a device is enrolled, and the
//! catalogue of cards the admin enrol form offers. The full card (inputs, outputs, checks) is
//! the agent's business (`edge-agent/src/card.rs`); the hub reads only what it publishes.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::RawModel;

#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

/// The part of a card the hub reads. Not `deny_unknown_fields`: the card has many sections
/// the hub has no use for, and the agent validates cards strictly.
#[derive(Deserialize)]
struct RawCard {
    id: String,
    version: String,
    sha256: String,
    #[serde(default)]
    task: Option<String>,
    purpose: String,
    owner: String,
    licence: String,
    legal_basis: String,
    #[serde(default)]
    never_for: Vec<String>,
    #[serde(default)]
    accuracy: Option<RawAccuracy>,
    #[serde(default)]
    inputs: Vec<RawInput>,
}

#[derive(Deserialize)]
struct RawAccuracy {
    summary: String,
}

#[derive(Deserialize)]
struct RawInput {
    #[serde(default)]
    preprocess: Option<RawPreprocess>,
}

#[derive(Deserialize)]
struct RawPreprocess {
    kind: String,
}

/// Parses a card's text into the model entry of an enrolment.
pub fn parse(path: &Path, text: &str) -> Result<RawModel, CardError> {
    let invalid = |message: String| CardError::Invalid {
        path: path.to_owned(),
        message,
    };
    let c: RawCard = toml::from_str(text).map_err(|e| invalid(e.to_string().trim().to_owned()))?;
    if !wire::valid_level(&c.id) {
        return Err(invalid(format!(
            "`id` {:?}: letters, digits, '-', '_', '.'",
            c.id
        )));
    }
    if c.sha256.len() != 64
        || !c
            .sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(invalid("`sha256`: 64 lower-case hex digits".into()));
    }
    Ok(RawModel {
        id: c.id,
        sha256: c.sha256,
        version: Some(c.version),
        task: c.task,
        purpose: Some(c.purpose),
        owner: Some(c.owner),
        legal_basis: Some(c.legal_basis),
        licence: Some(c.licence),
        accuracy: c.accuracy.map(|a| a.summary),
        never_for: c.never_for,
        input: c
            .inputs
            .into_iter()
            .find_map(|i| i.preprocess.map(|p| p.kind)),
    })
}

/// Reads one card file.
pub fn load(path: &Path) -> Result<RawModel, CardError> {
    let text = std::fs::read_to_string(path).map_err(|source| CardError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Every `*/card.toml` under `dir`, sorted by id; cards that do not parse are returned as
/// errors beside the good ones (the admin page lists both).
pub fn catalogue(dir: &Path) -> (Vec<RawModel>, Vec<CardError>) {
    let mut cards = Vec::new();
    let mut errors = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(source) => {
            errors.push(CardError::Io {
                path: dir.to_owned(),
                source,
            });
            return (cards, errors);
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("card.toml"))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    for p in paths {
        match load(&p) {
            Ok(c) => cards.push(c),
            Err(e) => errors.push(e),
        }
    }
    cards.sort_by(|a, b| a.id.cmp(&b.id));
    (cards, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_repository_cards() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
        let (cards, errors) = catalogue(&dir);
        assert!(errors.is_empty(), "{errors:?}");
        let c = cards
            .iter()
            .find(|c| c.id == "centerface-int8")
            .expect("centerface-int8 card");
        assert_eq!(c.input.as_deref(), Some("image"));
        assert!(c.purpose.as_deref().unwrap_or("").contains("faces"));
        assert!(c.legal_basis.is_some() && c.licence.is_some() && c.accuracy.is_some());
    }

    #[test]
    fn rejects_bad_cards() {
        let p = Path::new("card.toml");
        for bad in [
            "",
            "id = \"x\"",
            "id = \"a b\"\nversion=\"1\"\nsha256=\"00\"\npurpose=\"p\"\nowner=\"o\"\nlicence=\"l\"\nlegal_basis=\"b\"",
            "id = \"a\"\nversion=\"1\"\nsha256=\"XYZ\"\npurpose=\"p\"\nowner=\"o\"\nlicence=\"l\"\nlegal_basis=\"b\"",
        ] {
            assert!(parse(p, bad).is_err(), "{bad}");
        }
    }
}
