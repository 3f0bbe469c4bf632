//! Admin accounts and sessions. Passwords are stored as Argon2id PHC strings (the RustCrypto
//! `argon2` crate, its default parameters: 19 MiB, 2 passes); sessions are random 256-bit
//! tokens handed to the browser in an HttpOnly, SameSite=Strict cookie and stored here only as
//! their SHA-256, with an expiry and a per-session CSRF token that every admin form echoes.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rusqlite::{Connection, OptionalExtension, params};
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
    Db(#[from] rusqlite::Error),
}

/// An Argon2id PHC string for `password`, with a fresh random salt.
pub fn hash_password(password: &str) -> std::result::Result<String, AuthError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| AuthError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&bytes).map_err(|e| AuthError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Checks a password against a PHC string (constant time inside argon2).
pub fn verify_password(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
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
    conn.execute("DELETE FROM sessions WHERE name = ?1", [name])?;
    Ok(())
}

/// A password check that costs the same whether or not the account exists.
pub fn check_login(conn: &Connection, name: &str, password: &str) -> Result<bool> {
    let phc: Option<String> = conn
        .query_row("SELECT phc FROM admins WHERE name = ?1", [name], |r| {
            r.get(0)
        })
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
    conn.execute("DELETE FROM sessions WHERE expires_ms <= ?1", [now_ms])?;
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
        [token_hash(token)],
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
        let conn = crate::db::store::open(&dir.path().join("db.sqlite")).unwrap();
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
            .query_row("SELECT phc FROM admins", [], |r| r.get(0))
            .unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
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
}
