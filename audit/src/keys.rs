//! Key files: the device's private signer key (mode 0600) and its public verifier key.
//!
//! The private file holds one line, `PRIVATE+KEY+<name>+<key id>+<base64(0x01 || seed)>`; the
//! public file one line, the verifier key `<name>+<key id>+<base64(0x01 || public key)>`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;
use zeroize::Zeroizing;

use crate::note::{NoteError, SignerKey, VerifierKey};

/// The conventional file names inside a key directory.
pub const PRIVATE_KEY_FILE: &str = "device.key";
pub const PUBLIC_KEY_FILE: &str = "device.vkey";

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("{}: {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error("{} already exists; refusing to overwrite a key", .0.display())]
    Exists(PathBuf),
    #[error("{}: readable or writable by others (mode {mode:o}); run chmod 600", path.display())]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{}: {source}", path.display())]
    Malformed { path: PathBuf, source: NoteError },
    #[error("{}: not UTF-8 text", .0.display())]
    NotText(PathBuf),
    #[error("{}: verifier key {found} does not match the private key in {} ({expected})", path.display(), other_path.display())]
    PairMismatch {
        path: PathBuf,
        found: String,
        other_path: PathBuf,
        expected: String,
    },
    #[error("cannot get random bytes: {0}")]
    Random(String),
}

fn io_err(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> KeyError {
    let path = path.to_owned();
    move |source| KeyError::Io { path, op, source }
}

/// Generates a key named `name` (a schema-less URL such as `iat.example/device/0042`, which
/// should also be the log's origin) and writes the private key to `private` and the verifier
/// key to `public`. Refuses to overwrite either file. The private file is created with mode
/// 0600 in the same system call that creates it, so it is never readable by others.
pub fn generate(private: &Path, public: &Path, name: &str) -> Result<SignerKey, KeyError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
    let key = SignerKey::from_seed(name, &seed).map_err(|source| KeyError::Malformed {
        path: private.to_owned(),
        source,
    })?;
    for p in [private, public] {
        if p.exists() {
            return Err(KeyError::Exists(p.to_owned()));
        }
    }
    let secret = key.to_private_string();
    write_new(private, 0o600, secret.as_bytes())?;
    if let Err(e) = write_new(public, 0o644, format!("{}\n", key.verifier()).as_bytes()) {
        // Do not leave half a key pair behind; the private file is ours, just created.
        let _ = fs::remove_file(private);
        return Err(e);
    }
    for p in [private, public] {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(dir, "sync"))?;
        }
    }
    Ok(key)
}

/// Generates `device.key` and `device.vkey` in `dir`.
pub fn generate_in(dir: &Path, name: &str) -> Result<SignerKey, KeyError> {
    generate(
        &dir.join(PRIVATE_KEY_FILE),
        &dir.join(PUBLIC_KEY_FILE),
        name,
    )
}

fn write_new(path: &Path, mode: u32, bytes: &[u8]) -> Result<(), KeyError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => KeyError::Exists(path.to_owned()),
            _ => KeyError::Io {
                path: path.to_owned(),
                op: "create",
                source: e,
            },
        })?;
    let mut line = Zeroizing::new(bytes.to_vec());
    if !line.ends_with(b"\n") {
        line.push(b'\n');
    }
    f.write_all(&line)
        .and_then(|_| f.sync_all())
        .map_err(io_err(path, "write"))
}

/// Loads the private key; the file must not be readable or writable by group or others.
pub fn load_private(path: &Path) -> Result<SignerKey, KeyError> {
    let f = File::open(path).map_err(io_err(path, "open"))?;
    let mode = f
        .metadata()
        .map_err(io_err(path, "stat"))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    let bytes = Zeroizing::new(fs::read(path).map_err(io_err(path, "read"))?);
    let text = std::str::from_utf8(&bytes).map_err(|_| KeyError::NotText(path.to_owned()))?;
    SignerKey::parse(text).map_err(|source| KeyError::Malformed {
        path: path.to_owned(),
        source,
    })
}

/// Loads a verifier key file.
pub fn load_verifier(path: &Path) -> Result<VerifierKey, KeyError> {
    let bytes = fs::read(path).map_err(io_err(path, "read"))?;
    let text = String::from_utf8(bytes).map_err(|_| KeyError::NotText(path.to_owned()))?;
    VerifierKey::parse(&text).map_err(|source| KeyError::Malformed {
        path: path.to_owned(),
        source,
    })
}

/// Loads `device.key` and `device.vkey` from `dir` and checks they are one pair.
pub fn load_pair(dir: &Path) -> Result<(SignerKey, VerifierKey), KeyError> {
    let (pp, vp) = (dir.join(PRIVATE_KEY_FILE), dir.join(PUBLIC_KEY_FILE));
    let (s, v) = (load_private(&pp)?, load_verifier(&vp)?);
    if s.verifier() != v {
        return Err(KeyError::PairMismatch {
            path: vp,
            found: v.to_string(),
            other_path: pp,
            expected: s.verifier().to_string(),
        });
    }
    Ok((s, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_writes_0600_and_refuses_to_overwrite() {
        let d = tempfile::tempdir().unwrap();
        let k = generate_in(d.path(), "iat.example/dev7").unwrap();
        let pp = d.path().join(PRIVATE_KEY_FILE);
        let mode = fs::metadata(&pp).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (s, v) = load_pair(d.path()).unwrap();
        assert_eq!(s.verifier(), k.verifier());
        assert_eq!(v, k.verifier());
        let before = fs::read(&pp).unwrap();
        let err = generate_in(d.path(), "iat.example/dev7").unwrap_err();
        assert!(matches!(err, KeyError::Exists(_)), "{err}");
        assert_eq!(fs::read(&pp).unwrap(), before);
    }

    #[test]
    fn bad_key_files_are_refused_with_clear_errors() {
        let d = tempfile::tempdir().unwrap();
        let k = generate_in(d.path(), "iat.example/dev7").unwrap();
        let pp = d.path().join(PRIVATE_KEY_FILE);
        let vp = d.path().join(PUBLIC_KEY_FILE);
        let good_private = fs::read_to_string(&pp).unwrap();
        let good_public = fs::read_to_string(&vp).unwrap();

        fs::set_permissions(&pp, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_private(&pp).unwrap_err().to_string();
        assert!(
            err.contains("mode 644") && err.contains("chmod 600"),
            "{err}"
        );
        fs::set_permissions(&pp, fs::Permissions::from_mode(0o600)).unwrap();

        let parts: Vec<&str> = good_private.trim_end().splitn(5, '+').collect();
        let (head, b64) = (parts[..4].join("+"), parts[4]);
        let private_cases: Vec<(String, &str)> = vec![
            (format!("{head}+{}", &b64[..b64.len() - 1]), "base64"),
            (format!("{head}+{}", &b64[..b64.len() - 4]), "32 bytes"),
            (format!("{head}+AQID"), "32 bytes"),
            (good_private.replacen("PRIVATE+KEY+", "", 1), "PRIVATE+KEY+"),
            (format!("{head}+!{}", &b64[1..]), "base64"),
        ];
        for (text, want) in private_cases {
            fs::write(&pp, &text).unwrap();
            let err = load_private(&pp).unwrap_err().to_string();
            assert!(
                err.contains(want) && err.contains("device.key"),
                "{text:?}: {err}"
            );
        }
        fs::write(&pp, &good_private).unwrap();
        assert_eq!(load_private(&pp).unwrap().verifier(), k.verifier());

        let public_cases: Vec<(String, &str)> = vec![
            (good_public.replace('+', "-"), "expected"),
            (format!("{}=", good_public.trim_end()), "base64"),
        ];
        for (text, want) in public_cases {
            fs::write(&vp, &text).unwrap();
            let err = load_verifier(&vp).unwrap_err().to_string();
            assert!(
                err.contains(want) && err.contains("device.vkey"),
                "{text:?}: {err}"
            );
        }
        let other = SignerKey::from_seed("iat.example/dev7", &[5; 32]).unwrap();
        fs::write(&vp, other.verifier().to_string()).unwrap();
        assert!(matches!(
            load_pair(d.path()),
            Err(KeyError::PairMismatch { .. })
        ));
        assert!(matches!(
            load_private(&d.path().join("nope")),
            Err(KeyError::Io { .. })
        ));
    }
}
