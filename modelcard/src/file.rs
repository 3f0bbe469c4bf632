//! The hand-written TOML files of the project (model cards, the agent's config, the hub's
//! config and enrolment file) report their errors one way: the file, then the field when one
//! is at fault, then what to fix. Reading and parsing live here once.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A TOML file that could not be read, did not parse, or holds a field that is not valid.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{}: cannot read the {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        /// What the file is, for the message: "model card", "config"...
        what: &'static str,
        source: std::io::Error,
    },
    /// Not TOML, or not the expected tables and keys (toml's own message, with line and caret).
    #[error("{}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{}: field `{field}`: {message}", path.display())]
    Field {
        path: PathBuf,
        field: String,
        message: String,
    },
}

impl FileError {
    /// Field `field` of `path` is not valid: `message` says what it must be.
    pub fn field(path: &Path, field: impl Into<String>, message: impl Into<String>) -> Self {
        FileError::Field {
            path: path.to_owned(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// `path` could not be read or written.
    pub fn io(path: &Path, what: &'static str, source: std::io::Error) -> Self {
        FileError::Io {
            path: path.to_owned(),
            what,
            source,
        }
    }

    /// The file at fault.
    pub fn path(&self) -> &Path {
        match self {
            FileError::Io { path, .. }
            | FileError::Syntax { path, .. }
            | FileError::Field { path, .. } => path,
        }
    }
}

/// The text of `path`; `what` names the file in the error ("config", "model card"...).
pub fn read(path: &Path, what: &'static str) -> Result<String, FileError> {
    std::fs::read_to_string(path).map_err(|e| FileError::io(path, what, e))
}

/// The text of `path`, or `None` when there is no such file (a file that may not exist yet).
pub fn read_optional(path: &Path, what: &'static str) -> Result<Option<String>, FileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FileError::io(path, what, e)),
    }
}

/// `text` (the contents of `path`) parsed as `T`; toml's message, which shows the line and a
/// caret under the fault, is kept whole and indented under the file's name.
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, FileError> {
    toml::from_str(text).map_err(|e| FileError::Syntax {
        path: path.to_owned(),
        message: e.to_string().trim_end().replace('\n', "\n  "),
    })
}
