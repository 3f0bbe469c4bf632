//! The privacy budget a pipeline has spent in the current UTC day, kept on disk so that a
//! restart (which opens an extra, partial window) cannot spend a day's budget twice.
//!
//! One small file per pipeline, `<data_dir>/privacy-budget/<pipeline>`, holding
//! `<day> <spent_milli>` (days since 1970-01-01 UTC, epsilon in thousandths). It is written
//! (to a temporary file, synced, then renamed) before the record that spent it is handed to
//! the log: a crash in between over-counts, never under-counts.

use std::io::Write;
use std::path::{Path, PathBuf};

use aggregate::BudgetState;

/// The budget file of pipeline `name` under `data_dir`. Characters other than ASCII
/// letters, digits, `-` and `_` are written as `%XX`, so that two names never share a file.
pub fn path(data_dir: &Path, name: &str) -> PathBuf {
    let mut file = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            file.push(b as char);
        } else {
            file.push_str(&format!("%{b:02X}"));
        }
    }
    data_dir.join("privacy-budget").join(file)
}

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: not a privacy budget (`<day> <spent_milli>`): {text:?}; it is the record of what this pipeline spent today: restore it, or delete it to start the day's budget afresh (the records already published show what was spent)"
    )]
    Corrupt { path: PathBuf, text: String },
}

/// What the file says was spent; nothing (a new pipeline) when it does not exist.
pub fn load(path: &Path) -> Result<Option<BudgetState>, BudgetError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(BudgetError::Io {
                path: path.into(),
                source,
            });
        }
    };
    let mut it = text.split_ascii_whitespace();
    match (
        it.next().and_then(|d| d.parse::<i64>().ok()),
        it.next().and_then(|s| s.parse::<u64>().ok()),
        it.next(),
    ) {
        (Some(day), Some(spent_milli), None) => Ok(Some(BudgetState { day, spent_milli })),
        _ => Err(BudgetError::Corrupt {
            path: path.into(),
            text: text.chars().take(80).collect(),
        }),
    }
}

/// Writes the state durably (temporary file, fsync, rename, fsync of the directory).
pub fn save(path: &Path, state: BudgetState) -> Result<(), BudgetError> {
    let io = |source| BudgetError::Io {
        path: path.into(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    writeln!(f, "{} {}", state.day, state.spent_milli).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_budget_reads_back_and_names_are_kept_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (path(dir.path(), "a b"), path(dir.path(), "a_b"));
        assert_ne!(a, b);
        assert_eq!(load(&a).unwrap(), None);
        let s = BudgetState {
            day: 20_422,
            spent_milli: 4_995,
        };
        save(&a, s).unwrap();
        assert_eq!(load(&a).unwrap(), Some(s));
        assert_eq!(load(&b).unwrap(), None);
    }

    #[test]
    fn a_damaged_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), "faces");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "20422 lots\n").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(
            e.contains("faces") && e.contains("not a privacy budget"),
            "{e}"
        );
    }
}
