//! Labels: the class, flag and level names that become keys of published records. They come
//! from a closed set, given once when an [`crate::Aggregator`] is made (the model card's output
//! labels); an observation names its class by a [`Label`] taken from that set, never by a
//! free string, so a key that the card does not declare cannot reach a record, and a record
//! has at most [`MAX_LABELS`] keys per aggregate.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};

/// Most labels one set may hold.
pub const MAX_LABELS: usize = 64;
/// Longest label, in bytes.
pub const MAX_LABEL_LEN: usize = 64;

/// A name from a closed [`Labels`] set. It has no public constructor and no `Deserialize`:
/// the only way to hold one is [`Labels::get`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label(Arc<str>);

impl Label {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Label {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Why a set of labels, or a label, was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("no label given: a model that feeds aggregates names its classes in its card")]
    Empty,
    #[error("{count} labels; at most {MAX_LABELS} may become keys of published records")]
    TooMany { count: usize },
    #[error(
        "label {label:?}: 1 to {MAX_LABEL_LEN} characters among letters, digits, '_', '-' and '.'"
    )]
    Invalid { label: String },
    #[error("label {label:?} is given twice")]
    Duplicate { label: String },
    #[error("label {label:?} is not one of {known:?}")]
    Unknown { label: String, known: Vec<String> },
}

/// A closed set of labels, validated once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels(BTreeSet<Label>);

fn valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LABEL_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl Labels {
    /// The set of `names`: each valid, none twice, at least one and at most [`MAX_LABELS`].
    pub fn new<I, S>(names: I) -> Result<Labels, LabelError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = BTreeSet::new();
        for name in names {
            let name = name.as_ref();
            if !valid(name) {
                return Err(LabelError::Invalid {
                    label: name.to_owned(),
                });
            }
            if !set.insert(Label(Arc::from(name))) {
                return Err(LabelError::Duplicate {
                    label: name.to_owned(),
                });
            }
            if set.len() > MAX_LABELS {
                return Err(LabelError::TooMany { count: set.len() });
            }
        }
        if set.is_empty() {
            return Err(LabelError::Empty);
        }
        Ok(Labels(set))
    }

    /// The label called `name`, if the set holds it.
    pub fn get(&self, name: &str) -> Result<Label, LabelError> {
        self.0
            .iter()
            .find(|l| l.as_str() == name)
            .cloned()
            .ok_or_else(|| LabelError::Unknown {
                label: name.to_owned(),
                known: self.0.iter().map(|l| l.as_str().to_owned()).collect(),
            })
    }

    pub fn contains(&self, label: &Label) -> bool {
        self.0.contains(label)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_is_closed_and_bounded() {
        let l = Labels::new(["face", "person"]).unwrap();
        assert_eq!(l.get("face").unwrap().as_str(), "face");
        assert!(matches!(l.get("car"), Err(LabelError::Unknown { .. })));
        assert_eq!(Labels::new(Vec::<&str>::new()), Err(LabelError::Empty));
        let many: Vec<String> = (0..=MAX_LABELS).map(|i| format!("c{i}")).collect();
        assert!(matches!(
            Labels::new(&many),
            Err(LabelError::TooMany { .. })
        ));
        assert!(Labels::new(&many[..MAX_LABELS]).is_ok());
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in ["", "a b", "é", "x\"y", &"a".repeat(MAX_LABEL_LEN + 1)] {
            assert!(
                matches!(Labels::new([bad]), Err(LabelError::Invalid { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            Labels::new(["a", "a"]),
            Err(LabelError::Duplicate { .. })
        ));
    }
}
