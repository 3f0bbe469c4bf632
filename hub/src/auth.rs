//! Admin accounts and sessions. Passwords are stored as Argon2id PHC strings (the RustCrypto
//! `argon2` crate, its default parameters: 19 MiB, 2 passes); sessions are random 256-bit
//! tokens handed to the browser in an HttpOnly, SameSite=Strict cookie and stored here only as
//! their SHA-256, with an expiry and a per-session CSRF token that every admin form echoes.

use crate::db::sql::{Connection, OptionalExtension, params};
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::db::store::Result;

/// How long a session lasts without a new login.
pub const SESSION_TTL_MS: i64 = 8 * 3600 * 1000;

/// Shortest password `hub admin passwd` accepts.
pub const MIN_PASSWORD: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("admin names: 1 to 64 of letters, digits, '-', '_', '.'")]
    BadName,
    #[error("the password must have at least {MIN_PASSWORD} characters")]
    ShortPassword,
    #[error("hashing the password: {0}")]
    Hash(String),
    #[error("database: {0}")]
    Db(#[from] crate::db::sql::Error),
}

/// Argon2's working memory (19 MiB with the default parameters), kept for the next check
/// instead of being allocated and freed each time: the allocator would keep each freed copy in
/// the arena of the thread that used it, and the hub grew by 19 MiB per blocking thread that
/// ever checked a password (issue 21: 1.98 GB after 250 parallel logins). At most
/// [`KEPT_MEMORIES`] are kept; the web side runs at most as many checks at once.
static MEMORIES: std::sync::Mutex<Vec<Vec<Block>>> = std::sync::Mutex::new(Vec::new());

/// How many working memories are kept between checks.
pub const KEPT_MEMORIES: usize = 4;

/// `argon` over `password` and `salt` into `out`, in a kept working memory.
fn argon2_into(
    argon: &Argon2<'_>,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> argon2::Result<()> {
    let mut memory = MEMORIES
        .lock()
        .ok()
        .and_then(|mut m| m.pop())
        .unwrap_or_default();
    memory.resize(argon.params().block_count(), Block::new());
    let r = argon.hash_password_into_with_memory(password, salt, out, &mut memory[..]);
    if let Ok(mut m) = MEMORIES.lock()
        && m.len() < KEPT_MEMORIES
    {
        m.push(memory);
    }
    r
}

/// An Argon2id PHC string for `password`, with a fresh random salt (the RustCrypto defaults:
/// 19 MiB, 2 passes, 1 lane).
pub fn hash_password(password: &str) -> std::result::Result<String, AuthError> {
    let err = |e: &dyn std::fmt::Display| AuthError::Hash(e.to_string());
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| err(&e))?;
    let salt = SaltString::encode_b64(&bytes).map_err(|e| err(&e))?;
    let params = Params::default();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2_into(&argon, password.as_bytes(), &bytes, &mut out).map_err(|e| err(&e))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| err(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| err(&e))?),
    };
    Ok(hash.to_string())
}

/// Checks a password against a PHC string (its algorithm, version and parameters), with a
/// constant-time comparison of the outputs.
pub fn verify_password(phc: &str, password: &str) -> bool {
    let check = || -> Option<bool> {
        let h = PasswordHash::new(phc).ok()?;
        let expected = h.hash?;
        let algorithm = Algorithm::try_from(h.algorithm).ok()?;
        let version = match h.version {
            Some(v) => Version::try_from(v).ok()?,
            None => Version::default(),
        };
        let params = Params::try_from(&h).ok()?;
        let mut salt = [0u8; 64];
        let salt = h.salt?.decode_b64(&mut salt).ok()?;
        let argon = Argon2::new(algorithm, version, params);
        let mut out = vec![0u8; expected.len()];
        argon2_into(&argon, password.as_bytes(), salt, &mut out).ok()?;
        Some(Output::new(&out).ok()? == expected)
    };
    check().unwrap_or(false)
}

/// Creates or replaces an admin account.
pub fn set_password(
    conn: &Connection,
    name: &str,
    password: &str,
    now_ms: i64,
) -> std::result::Result<(), AuthError> {
    if !hub_link::valid_level(name) {
        return Err(AuthError::BadName);
    }
    if password.chars().count() < MIN_PASSWORD {
        return Err(AuthError::ShortPassword);
    }
    let phc = hash_password(password)?;
    conn.execute(
        "INSERT INTO admins (name, phc, updated_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT(name) DO UPDATE SET phc = ?2, updated_ms = ?3",
        params![name, phc, now_ms],
    )?;
    // A new password ends the account's sessions.
    conn.execute("DELETE FROM sessions WHERE name = ?1", crate::params![name])?;
    Ok(())
}

/// A password check that costs the same whether or not the account exists.
pub fn check_login(conn: &Connection, name: &str, password: &str) -> Result<bool> {
    let phc: Option<String> = conn
        .query_row(
            "SELECT phc FROM admins WHERE name = ?1",
            crate::params![name],
            |r| r.get(0),
        )
        .optional()?;
    match phc {
        Some(p) => Ok(verify_password(&p, password)),
        None => {
            // Same work as a real check, so that response times do not reveal account names.
            let _ = verify_password(dummy_phc(), password);
            Ok(false)
        }
    }
}

fn dummy_phc() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not an account, never matches").unwrap_or_default())
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    // The OS random source failing is not recoverable in a meaningful way for a login.
    getrandom::fill(&mut b).expect("the operating system's random source");
    URL_SAFE_NO_PAD.encode(b)
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A logged-in admin.
#[derive(Debug, Clone)]
pub struct Session {
    pub name: String,
    pub csrf: String,
}

/// Opens a session; returns the cookie token (given to the browser, never stored).
pub fn create_session(conn: &Connection, name: &str, now_ms: i64) -> Result<(String, Session)> {
    conn.execute(
        "DELETE FROM sessions WHERE expires_ms <= ?1",
        crate::params![now_ms],
    )?;
    let token = random_token();
    let csrf = random_token();
    conn.execute(
        "INSERT INTO sessions (token_hash, name, csrf, expires_ms) VALUES (?1, ?2, ?3, ?4)",
        params![token_hash(&token), name, csrf, now_ms + SESSION_TTL_MS],
    )?;
    Ok((
        token,
        Session {
            name: name.to_owned(),
            csrf,
        },
    ))
}

/// The session a cookie token opens, if it exists and has not expired.
pub fn session(conn: &Connection, token: &str, now_ms: i64) -> Result<Option<Session>> {
    conn.query_row(
        "SELECT s.name, s.csrf FROM sessions s JOIN admins a ON a.name = s.name
         WHERE s.token_hash = ?1 AND s.expires_ms > ?2",
        params![token_hash(token), now_ms],
        |r| {
            Ok(Session {
                name: r.get(0)?,
                csrf: r.get(1)?,
            })
        },
    )
    .optional()
}

pub fn end_session(conn: &Connection, token: &str) -> Result<()> {
    conn.execute(
        "DELETE FROM sessions WHERE token_hash = ?1",
        crate::params![token_hash(token)],
    )?;
    Ok(())
}

/// Compares two secrets without an early exit.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::store::open(crate::db::sql::test_database(dir.path())).unwrap();
        assert!(matches!(
            set_password(&conn, "alice", "short", 0),
            Err(AuthError::ShortPassword)
        ));
        assert!(matches!(
            set_password(&conn, "a b", "long enough password", 0),
            Err(AuthError::BadName)
        ));
        set_password(&conn, "alice", "correct horse battery", 0).unwrap();
        let phc: String = conn
            .query_row("SELECT phc FROM admins", crate::params![], |r| r.get(0))
            .unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        // The crate's own verifier agrees with ours, both ways.
        {
            use argon2::password_hash::{PasswordHasher, PasswordVerifier};
            let h = PasswordHash::new(&phc).unwrap();
            assert!(
                Argon2::default()
                    .verify_password(b"correct horse battery", &h)
                    .is_ok()
            );
            let salt = SaltString::encode_b64(b"sixteen byte salt").unwrap();
            let theirs = Argon2::default()
                .hash_password(b"correct horse battery", &salt)
                .unwrap()
                .to_string();
            assert!(verify_password(&theirs, "correct horse battery"));
            assert!(!verify_password(&theirs, "correct horse batterY"));
        }
        assert!(check_login(&conn, "alice", "correct horse battery").unwrap());
        assert!(!check_login(&conn, "alice", "correct horse batterY").unwrap());
        assert!(!check_login(&conn, "bob", "correct horse battery").unwrap());

        let (token, s) = create_session(&conn, "alice", 1000).unwrap();
        assert_eq!(session(&conn, &token, 2000).unwrap().unwrap().csrf, s.csrf);
        assert!(session(&conn, "forged", 2000).unwrap().is_none());
        assert!(
            session(&conn, &token, 1000 + SESSION_TTL_MS)
                .unwrap()
                .is_none(),
            "expired"
        );
        // A new password ends existing sessions.
        set_password(&conn, "alice", "another long password", 0).unwrap();
        assert!(session(&conn, &token, 2000).unwrap().is_none());
        let (token, _) = create_session(&conn, "alice", 1000).unwrap();
        end_session(&conn, &token).unwrap();
        assert!(session(&conn, &token, 2000).unwrap().is_none());
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }

    /// Issue 21: a wrong name costs a whole Argon2 check too, so that response times do not
    /// tell which accounts exist: the fastest of 7 tries each, interleaved (other tests run
    /// beside this one), are within a factor of 2; a lookup that skipped the check would be
    /// thousands of times faster.
    #[test]
    fn unknown_names_cost_a_password_check() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::store::open(crate::db::sql::test_database(dir.path())).unwrap();
        set_password(&conn, "alice", "correct horse battery", 0).unwrap();
        let time = |name: &str| {
            let start = std::time::Instant::now();
            assert!(!check_login(&conn, name, "wrong password, long").unwrap());
            start.elapsed()
        };
        let _ = time("warm-up");
        let (mut known, mut unknown) = (std::time::Duration::MAX, std::time::Duration::MAX);
        for _ in 0..7 {
            known = known.min(time("alice"));
            unknown = unknown.min(time("nobody"));
        }
        let ratio = unknown.as_secs_f64() / known.as_secs_f64();
        assert!(
            (0.5..2.0).contains(&ratio),
            "known {known:?}, unknown {unknown:?}"
        );
    }
}
