//! Model cards as the hub publishes them: the public metadata (purpose, owner, legal basis,
//! licence, accuracy...) copied into the enrolment file when a device is enrolled, and the
//! catalogue of cards the admin enrol form offers. Cards are parsed and validated by crate
//! `modelcard`, as strictly as the agent reads them; the hub keeps only what it publishes.

use std::path::{Path, PathBuf};

use modelcard::{Card, InputRole, Preprocess};

use crate::enrolment::RawModel;

#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error(transparent)]
    Card(#[from] modelcard::CardError),
}

/// Parses a card's text into the model entry of an enrolment.
pub fn parse(path: &Path, text: &str) -> Result<RawModel, CardError> {
    let invalid = |message: String| CardError::Invalid {
        path: path.to_owned(),
        message,
    };
    let c = Card::parse(path, text)?;
    if !hub_link::valid_level(&c.id) {
        return Err(invalid(format!(
            "`id` {:?}: letters, digits, '-', '_', '.'",
            c.id
        )));
    }
    let Some(legal_basis) = c.legal_basis else {
        return Err(invalid(
            "`legal_basis` is missing: the public register states the legal basis of every model a device runs".into(),
        ));
    };
    // What the model reads: a measurement card reads a sensor, not a network input.
    let sensor = c.measurement.as_ref().map(|_| "sensor".to_owned());
    let input = sensor.or_else(|| {
        c.inputs.iter().find_map(|i| match &i.role {
            InputRole::Data(Preprocess::Image { .. }) => Some("image".to_owned()),
            InputRole::Data(Preprocess::Audio { .. }) => Some("audio".to_owned()),
            InputRole::Data(Preprocess::Tensor) => Some("tensor".to_owned()),
            _ => None,
        })
    });
    Ok(RawModel {
        id: c.id,
        sha256: c.sha256,
        version: Some(c.version),
        task: Some(c.task),
        purpose: Some(c.purpose),
        owner: Some(c.owner),
        legal_basis: Some(legal_basis),
        licence: Some(c.licence),
        accuracy: c.accuracy,
        never_for: c.never_for,
        input,
    })
}

/// Reads one card file.
pub fn load(path: &Path) -> Result<RawModel, CardError> {
    parse(path, &modelcard::file::read(path, "model card")?)
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
