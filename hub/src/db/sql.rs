//! One SQL layer over the hub's two stores: SQLite (rusqlite; the embedded default, one file)
//! and PostgreSQL (the synchronous `postgres` client; the production store of a prefecture or
//! a country). The rest of the hub writes each query once, with SQLite's `?N` placeholders,
//! in the SQL both engines share; this module turns `?N` into PostgreSQL's `$N`, caches the
//! prepared statements, and converts values both ways with the types the statement declares.
//! Where the engines differ (`GLOB` and `LIKE`, JSON functions, the schema's column types),
//! the caller asks [`Connection::dialect`] and writes both.
//!
//! The API follows rusqlite's (`execute`, `query_row`, `prepare_cached`, `query_map`,
//! [`OptionalExtension`], [`params!`]), with `&self` everywhere: a transaction is a
//! [`Transaction`] that derefs to its [`Connection`], as rusqlite's does.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use postgres::types::{IsNull, Type};

/// Which engine a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Where the hub's database is: a SQLite file, or a PostgreSQL connection string
/// (`postgres://user@host:port/db` or `host=... dbname=...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Database {
    /// Reads the config's `db` value: a PostgreSQL URL or key-value string, else a file path
    /// (relative paths resolved against `base`).
    pub fn parse(value: &str, base: &Path) -> Database {
        let v = value.trim();
        if v.starts_with("postgres://")
            || v.starts_with("postgresql://")
            || (v.contains('=') && (v.contains("host=") || v.contains("dbname=")))
        {
            Database::Postgres(v.to_owned())
        } else {
            Database::Sqlite(base.join(v))
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Database::Sqlite(_) => Dialect::Sqlite,
            Database::Postgres(_) => Dialect::Postgres,
        }
    }
}

impl fmt::Display for Database {
    /// The file, or the connection string without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(p) => write!(f, "{}", p.display()),
            Database::Postgres(url) => write!(f, "PostgreSQL {}", redact(url)),
        }
    }
}

/// The TLS part of a connection string, with libpq's names: `sslrootcert=FILE` (the CA that
/// signed the server's certificate: TLS is then required and the server's name or address is
/// checked against the certificate, libpq's `verify-full`), `sslcert=FILE` and `sslkey=FILE`
/// (a client certificate, for `cert` authentication), `sslmode` (`disable`, `prefer` without a
/// CA; `require`, `verify-ca`, `verify-full` need `sslrootcert`). In the key-value form
/// (`host=db.example.org sslmode=verify-full sslrootcert=/etc/iat/pg-ca.pem`) or as URL
/// query parameters. Returns the string for the client (the file names taken out, `sslmode`
/// set) and the TLS config, `None` for a connection in clear.
pub fn pg_tls(url: &str) -> Result<(String, Option<rustls::ClientConfig>)> {
    const KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];
    let mut found: HashMap<&'static str, String> = HashMap::new();
    let rest = if let Some((base, query)) = url.split_once('?').filter(|_| url.contains("://")) {
        let mut keep = Vec::new();
        for kv in query.split('&') {
            match kv.split_once('=') {
                Some((k, v)) if KEYS.contains(&k) => {
                    let k = KEYS.iter().find(|x| **x == k).expect("in KEYS");
                    found.insert(k, percent_decode(v));
                }
                _ => keep.push(kv),
            }
        }
        if keep.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", keep.join("&"))
        }
    } else {
        let mut keep = Vec::new();
        for kv in url.split_whitespace() {
            match kv.split_once('=') {
                Some((k, v)) if KEYS.contains(&k) => {
                    let k = KEYS.iter().find(|x| **x == k).expect("in KEYS");
                    found.insert(k, v.trim_matches('\'').to_owned());
                }
                _ => keep.push(kv),
            }
        }
        keep.join(" ")
    };
    let mode = found.get("sslmode").map(String::as_str).unwrap_or("prefer");
    let tls_wanted = match mode {
        "disable" | "allow" | "prefer" => found.contains_key("sslrootcert"),
        "require" | "verify-ca" | "verify-full" => true,
        other => {
            return Err(Error::Config(format!(
                "sslmode={other}: one of disable, prefer, require, verify-ca, verify-full"
            )));
        }
    };
    let with = |k: &str, v: &str| -> String {
        if rest.contains("://") {
            let sep = if rest.contains('?') { '&' } else { '?' };
            format!("{rest}{sep}{k}={v}")
        } else {
            format!("{rest} {k}={v}")
        }
    };
    if !tls_wanted {
        if found.contains_key("sslcert") || found.contains_key("sslkey") {
            return Err(Error::Config(
                "sslcert and sslkey need sslrootcert, the CA that signed the server's certificate"
                    .into(),
            ));
        }
        // Without a CA the hub never uses TLS: `prefer` would be unverified.
        return Ok((with("sslmode", "disable"), None));
    }
    if mode == "disable" {
        return Err(Error::Config(
            "sslmode=disable with sslrootcert: remove one of them".into(),
        ));
    }
    let Some(ca) = found.get("sslrootcert") else {
        return Err(Error::Config(format!(
            "sslmode={mode} needs sslrootcert=FILE, the CA that signed the server's certificate (the hub always checks it)"
        )));
    };
    let client = match (found.get("sslcert"), found.get("sslkey")) {
        (Some(c), Some(k)) => Some((Path::new(c), Path::new(k))),
        (None, None) => None,
        _ => {
            return Err(Error::Config(
                "sslcert and sslkey go together (the client certificate and its key)".into(),
            ));
        }
    };
    let config = hub_link::tls::config(Path::new(ca), client)?;
    Ok((with("sslmode", "require"), Some(config)))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(hex) = b.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(v) = u8::from_str_radix(hex, 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A connection string with any password replaced by `***`.
fn redact(url: &str) -> String {
    if let Some(rest) = url.split_once("://").map(|(_, r)| r)
        && let Some((auth, _)) = rest.split_once('@')
        && let Some((user, _)) = auth.split_once(':')
    {
        return url.replacen(auth, &format!("{user}:***"), 1);
    }
    url.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The environment variable that points the tests at a PostgreSQL cluster: a key-value
/// connection string to its maintenance database (`host=/tmp/pg port=5433 user=postgres
/// dbname=postgres`). `cargo xtask test` starts a throwaway cluster and sets it for a second
/// run of the hub's tests.
pub const TEST_POSTGRES: &str = "IAT_TEST_POSTGRES";

/// For tests: a new, empty database. In the cluster named by [`TEST_POSTGRES`] when it is
/// set (a database per call, dropped with the cluster), else a SQLite file in `dir`.
pub fn test_database(dir: &Path) -> Database {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    match std::env::var(TEST_POSTGRES) {
        Ok(admin) if !admin.trim().is_empty() => {
            let name = format!(
                "t_{}_{}_{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0)
            );
            let mut c = postgres::Client::connect(&admin, postgres::NoTls)
                .unwrap_or_else(|e| panic!("{TEST_POSTGRES}={admin}: {}", pg_message(&e)));
            c.batch_execute(&format!("CREATE DATABASE {name}"))
                .unwrap_or_else(|e| panic!("creating database {name}: {}", pg_message(&e)));
            Database::Postgres(format!("{admin} dbname={name}"))
        }
        _ => Database::Sqlite(dir.join("hub.sqlite")),
    }
}

/// An error of either engine, or a value that does not fit the type asked for.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", pg_message(.0))]
    Postgres(#[from] postgres::Error),
    /// `query_row` found no row (see [`OptionalExtension::optional`]).
    #[error("the query returned no row")]
    NoRow,
    /// A column's value is not of the type asked for (a damaged database, or a query that
    /// needs a cast).
    #[error("column {column}: {what}")]
    Conversion { column: usize, what: String },
    /// The connection string asks for something the hub cannot do (what to change).
    #[error("the PostgreSQL connection string: {0}")]
    Config(String),
    /// A TLS file of the connection string could not be used.
    #[error("the PostgreSQL connection string: {0}")]
    Tls(#[from] hub_link::tls::TlsError),
}

impl Error {
    /// A value the caller found malformed in column `column`.
    pub fn conversion(column: usize, what: impl fmt::Display) -> Error {
        Error::Conversion {
            column,
            what: what.to_string(),
        }
    }

    /// True when running the same transaction again may succeed: PostgreSQL aborted it for
    /// another one (a deadlock between two hub instances, a serialisation failure, or a row
    /// that another instance inserted first).
    pub fn is_retryable(&self) -> bool {
        use postgres::error::SqlState;
        match self {
            Error::Postgres(e) => e.code().is_some_and(|c| {
                *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::UNIQUE_VIOLATION
            }),
            _ => false,
        }
    }
}

impl Error {
    /// True when the connection to PostgreSQL is gone (the server restarted or failed over, an
    /// administrator ended the session, the network dropped): a new connection may succeed.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            Error::Postgres(e) => {
                e.is_closed()
                    || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
                    || e.code().is_some_and(|c| {
                        let c = c.code();
                        c.starts_with("08") || c.starts_with("57P")
                    })
            }
            _ => false,
        }
    }
}

/// PostgreSQL's own message (its `Display` says only "db error").
fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut m = format!("PostgreSQL {}: {}", db.code().code(), db.message());
            if let Some(d) = db.detail() {
                m.push_str(&format!(" ({d})"));
            }
            m
        }
        None => match std::error::Error::source(e) {
            Some(s) => format!("PostgreSQL: {e}: {s}"),
            None => format!("PostgreSQL: {e}"),
        },
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `query_row(...).optional()`: no row is `None`, as in rusqlite.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::NoRow) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A value as both engines see it: SQLite's storage classes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

impl ValueRef<'_> {
    fn kind(&self) -> &'static str {
        match self {
            ValueRef::Null => "NULL",
            ValueRef::Int(_) => "an integer",
            ValueRef::Real(_) => "a real",
            ValueRef::Text(_) => "a text",
            ValueRef::Blob(_) => "a blob",
        }
    }
}

/// A query parameter.
pub trait ToSql {
    fn value(&self) -> ValueRef<'_>;
}

macro_rules! int_to_sql {
    ($($t:ty),*) => {$(
        impl ToSql for $t {
            fn value(&self) -> ValueRef<'_> {
                ValueRef::Int(*self as i64)
            }
        }
    )*};
}
int_to_sql!(i64, i32, u32, u16, u8);

impl ToSql for bool {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Int(*self as i64)
    }
}
impl ToSql for f64 {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Real(*self)
    }
}
impl ToSql for str {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}
impl ToSql for String {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}
impl ToSql for [u8] {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}
impl ToSql for Vec<u8> {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}
impl<const N: usize> ToSql for [u8; N] {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}
impl<T: ToSql + ?Sized> ToSql for &T {
    fn value(&self) -> ValueRef<'_> {
        (**self).value()
    }
}
impl<T: ToSql> ToSql for Option<T> {
    fn value(&self) -> ValueRef<'_> {
        match self {
            Some(v) => v.value(),
            None => ValueRef::Null,
        }
    }
}

/// The parameters of one statement: `params![a, b]`.
pub type Params<'a> = &'a [&'a dyn ToSql];

/// `params![a, b, c]`: a statement's parameters, as rusqlite's macro.
#[macro_export]
macro_rules! params {
    () => { &[] as &[&dyn $crate::db::sql::ToSql] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::db::sql::ToSql),+] as &[&dyn $crate::db::sql::ToSql] };
}
pub use params;

/// A column value read into a Rust type.
pub trait FromSql: Sized {
    fn from_value(v: ValueRef<'_>) -> std::result::Result<Self, String>;
}

fn wrong<T>(v: ValueRef<'_>, want: &str) -> std::result::Result<T, String> {
    Err(format!("{} where {want} was expected", v.kind()))
}

impl FromSql for i64 {
    fn from_value(v: ValueRef<'_>) -> std::result::Result<Self, String> {
        match v {
            ValueRef::Int(i) => Ok(i),
            _ => wrong(v, "an integer"),
        }
    }
}
macro_rules! int_from_sql {
    ($($t:ty),*) => {$(
        impl FromSql for $t {
            fn from_value(v: ValueRef<'_>) -> std::result::Result<Self, String> {
                let i = i64::from_value(v)?;
                <$t>::try_from(i).map_err(|_| format!("{i} is out of range for {}", stringify!($t)))
            }
        }
    )*};
}
int_from_sql!(u64, i32, u32, usize);

impl FromSql for bool {
    fn from_value(v: ValueRef<'_>) -> std::result::Result<Self, String> {
        Ok(i64::from_value(v)? != 0)
    }
}
impl FromSql for f64 {
    fn from_value(v: ValueRef<'_>) -> std::result::Result<Self, String> {
        match v {
            ValueRef::Real(f) => Ok(f),
            ValueRef::Int(i) => Ok(i as f64),
            _ => wrong(v, "a number"),
        }
    }
}
impl FromSql for String {
    fn from_value(v: ValueRef<'_>) -> std::result::Result<Self, String> {
        match v {
            ValueRef::Text(s) => Ok(s.to_owned()),
            _ => wrong(v, "a text"),
        }
    }
}
impl FromSql for Vec<u8> {
    fn from_value(v: ValueRef<'_>) -> std::result::Result<Self, String> {
        match v {
            ValueRef::Blob(b) => Ok(b.to_vec()),
            _ => wrong(v, "a blob"),
        }
    }
}
impl<T: FromSql> FromSql for Option<T> {
    fn from_value(v: ValueRef<'_>) -> std::result::Result<Self, String> {
        match v {
            ValueRef::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// A column value of any type (for tests and diagnostics).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl FromSql for Value {
    fn from_value(v: ValueRef<'_>) -> std::result::Result<Self, String> {
        Ok(match v {
            ValueRef::Null => Value::Null,
            ValueRef::Int(i) => Value::Int(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(t) => Value::Text(t.to_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        })
    }
}

/// A column index (rusqlite's `get::<_, T>(i)` shape).
pub trait ColumnIndex {
    fn index(&self) -> usize;
}
impl ColumnIndex for usize {
    fn index(&self) -> usize {
        *self
    }
}

/// One row of a result.
#[derive(Clone, Copy)]
pub enum Row<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Postgres(&'a postgres::Row),
}

impl Row<'_> {
    /// The number of columns.
    pub fn len(&self) -> usize {
        match self {
            Row::Sqlite(r) => r.as_ref().column_count(),
            Row::Postgres(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Column `i` as a `T`.
    pub fn get<I: ColumnIndex, T: FromSql>(&self, i: I) -> Result<T> {
        let i = i.index();
        let conv = |e: String| Error::Conversion { column: i, what: e };
        match self {
            Row::Sqlite(r) => {
                let v = match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => ValueRef::Null,
                    rusqlite::types::ValueRef::Integer(v) => ValueRef::Int(v),
                    rusqlite::types::ValueRef::Real(v) => ValueRef::Real(v),
                    rusqlite::types::ValueRef::Text(t) => {
                        ValueRef::Text(std::str::from_utf8(t).map_err(|e| conv(e.to_string()))?)
                    }
                    rusqlite::types::ValueRef::Blob(b) => ValueRef::Blob(b),
                };
                T::from_value(v).map_err(conv)
            }
            Row::Postgres(r) => {
                let Some(col) = r.columns().get(i) else {
                    return Err(conv(format!("no column {i} (the row has {})", r.len())));
                };
                let ty = col.type_().clone();
                let v = match ty {
                    Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(ValueRef::Int),
                    Type::INT4 => r
                        .try_get::<_, Option<i32>>(i)?
                        .map(|v| ValueRef::Int(v.into())),
                    Type::INT2 => r
                        .try_get::<_, Option<i16>>(i)?
                        .map(|v| ValueRef::Int(v.into())),
                    Type::BOOL => r
                        .try_get::<_, Option<bool>>(i)?
                        .map(|v| ValueRef::Int(v.into())),
                    Type::FLOAT8 => r.try_get::<_, Option<f64>>(i)?.map(ValueRef::Real),
                    Type::FLOAT4 => r
                        .try_get::<_, Option<f32>>(i)?
                        .map(|v| ValueRef::Real(v.into())),
                    Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
                        r.try_get::<_, Option<&str>>(i)?.map(ValueRef::Text)
                    }
                    Type::BYTEA => r.try_get::<_, Option<&[u8]>>(i)?.map(ValueRef::Blob),
                    other => {
                        return Err(conv(format!(
                            "PostgreSQL type {other} is not read by the hub (cast it to BIGINT, \
                             DOUBLE PRECISION, TEXT or BYTEA in the query)"
                        )));
                    }
                };
                T::from_value(v.unwrap_or(ValueRef::Null)).map_err(conv)
            }
        }
    }
}

/// A value written into a PostgreSQL parameter of the type the statement declares.
#[derive(Debug)]
struct PgParam<'a>(ValueRef<'a>);

impl postgres::types::ToSql for PgParam<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match (self.0, ty) {
            (ValueRef::Null, _) => Ok(IsNull::Yes),
            (ValueRef::Int(v), &Type::INT8) => v.to_sql(ty, out),
            (ValueRef::Int(v), &Type::INT4) => i32::try_from(v)?.to_sql(ty, out),
            (ValueRef::Int(v), &Type::INT2) => i16::try_from(v)?.to_sql(ty, out),
            (ValueRef::Int(v), &Type::BOOL) => (v != 0).to_sql(ty, out),
            (ValueRef::Int(v), &Type::FLOAT8) => (v as f64).to_sql(ty, out),
            (ValueRef::Int(v), &Type::TEXT | &Type::VARCHAR) => v.to_string().to_sql(ty, out),
            (ValueRef::Real(v), &Type::FLOAT8) => v.to_sql(ty, out),
            (ValueRef::Real(v), &Type::FLOAT4) => (v as f32).to_sql(ty, out),
            (ValueRef::Text(s), &Type::TEXT | &Type::VARCHAR | &Type::NAME | &Type::BPCHAR) => {
                s.to_sql(ty, out)
            }
            (ValueRef::Text(s), &Type::UNKNOWN) => s.to_sql(&Type::TEXT, out),
            (ValueRef::Blob(b), &Type::BYTEA) => b.to_sql(ty, out),
            (v, ty) => Err(format!("{} given for a parameter of type {ty}", v.kind()).into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// `?N` (and bare `?`) placeholders turned into `$N`, outside quoted strings and identifiers.
pub fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut quote: Option<char> = None;
    let mut next = 0u32;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                if digits.is_empty() {
                    next += 1;
                    digits = next.to_string();
                } else if let Ok(n) = digits.parse::<u32>() {
                    next = next.max(n);
                }
                out.push('$');
                out.push_str(&digits);
            }
            None => out.push(c),
        }
    }
    out
}

/// The sizes multi-row statements are cut into: a few distinct statement texts to prepare,
/// whatever the number of rows.
const CHUNKS: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// `n` rows cut into chunks of the sizes of [`CHUNKS`], largest first: (start, len).
pub fn chunks(n: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    for c in CHUNKS {
        while n - at >= c {
            out.push((at, c));
            at += c;
        }
    }
    out
}

/// `(?1, ?2, ..., ?w), (?w+1, ...)`: the placeholders of `rows` rows of `width` values.
pub fn row_placeholders(rows: usize, width: usize) -> String {
    let mut s = String::with_capacity(rows * width * 5);
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..width {
            if c > 0 {
                s.push_str(", ");
            }
            s.push('?');
            s.push_str(&(r * width + c + 1).to_string());
        }
        s.push(')');
    }
    s
}

/// Writes `rows` (each `width` values) with multi-row statements:
/// `{head} VALUES (...), (...) {tail}`, in chunks of [`CHUNKS`] rows. One round trip per
/// chunk instead of one per row.
pub fn insert_rows(
    conn: &Connection,
    head: &str,
    tail: &str,
    width: usize,
    rows: &[Vec<&dyn ToSql>],
) -> Result<()> {
    for (at, n) in chunks(rows.len()) {
        let sql = format!("{head} VALUES {} {tail}", row_placeholders(n, width));
        let params: Vec<&dyn ToSql> = rows[at..at + n].iter().flatten().copied().collect();
        conn.execute(&sql, &params)?;
    }
    Ok(())
}

/// Prepared statements kept per connection (PostgreSQL: one parse per query text, not per
/// call). Bounded: dynamic query texts cannot grow it without limit.
const PG_CACHE: usize = 256;

struct Pg {
    /// `None` only while being dropped.
    client: RefCell<Option<postgres::Client>>,
    cache: RefCell<HashMap<String, postgres::Statement>>,
    /// A transaction is open (a [`Transaction`], or the read-only one of a stream).
    in_tx: Cell<bool>,
    /// Cursors declared so far (their names).
    cursors: Cell<u64>,
}

impl Pg {
    fn client(&self) -> std::cell::RefMut<'_, postgres::Client> {
        std::cell::RefMut::map(self.client.borrow_mut(), |c| {
            c.as_mut()
                .expect("the client is kept until the connection is dropped")
        })
    }
}

impl Drop for Pg {
    /// The synchronous client closes its connection by blocking on its own runtime, which
    /// panics on a tokio worker thread (a pool of connections dropped with the web server):
    /// there it is closed on a thread of its own.
    fn drop(&mut self) {
        if let Some(c) = self.client.get_mut().take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            std::thread::spawn(move || drop(c));
        }
    }
}

enum Inner {
    Sqlite(rusqlite::Connection),
    Postgres(Box<Pg>),
}

/// A connection to the hub's database.
pub struct Connection {
    inner: Inner,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Connection({:?})", self.dialect())
    }
}

impl Connection {
    pub fn from_sqlite(conn: rusqlite::Connection) -> Connection {
        Connection {
            inner: Inner::Sqlite(conn),
        }
    }

    /// Connects to PostgreSQL: in clear (a local socket, a link the hub trusts), or over TLS
    /// when the connection string names the CA of the server's certificate ([`pg_tls`]).
    pub fn connect_postgres(url: &str) -> Result<Connection> {
        let (url, tls) = pg_tls(url)?;
        let mut client = match tls {
            None => postgres::Client::connect(&url, postgres::NoTls)?,
            Some(config) => postgres::Client::connect(
                &url,
                tokio_postgres_rustls::MakeRustlsConnect::new(config),
            )?,
        };
        // The schema's `CREATE ... IF NOT EXISTS` would otherwise log a NOTICE per table at
        // every start and every command.
        client.batch_execute("SET client_min_messages = warning")?;
        Ok(Connection {
            inner: Inner::Postgres(Box::new(Pg {
                client: RefCell::new(Some(client)),
                cache: RefCell::new(HashMap::new()),
                in_tx: Cell::new(false),
                cursors: Cell::new(0),
            })),
        })
    }

    /// True when this is a PostgreSQL connection that has closed (it cannot be used again).
    pub fn is_closed(&self) -> bool {
        match &self.inner {
            Inner::Sqlite(_) => false,
            Inner::Postgres(pg) => pg.client.borrow().as_ref().is_none_or(|c| c.is_closed()),
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self.inner {
            Inner::Sqlite(_) => Dialect::Sqlite,
            Inner::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The SQLite connection underneath (pragmas, SQLite-only maintenance).
    pub fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.inner {
            Inner::Sqlite(c) => Some(c),
            Inner::Postgres(_) => None,
        }
    }

    fn pg_statement(pg: &Pg, sql: &str) -> Result<postgres::Statement> {
        if let Some(s) = pg.cache.borrow().get(sql) {
            return Ok(s.clone());
        }
        let stmt = pg.client().prepare(&to_postgres(sql))?;
        let mut cache = pg.cache.borrow_mut();
        if cache.len() >= PG_CACHE {
            cache.clear();
        }
        cache.insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }

    fn pg_params<'p>(params: Params<'p>) -> Vec<PgParam<'p>> {
        params.iter().map(|p| PgParam(p.value())).collect()
    }

    /// Runs one statement; the number of rows it changed.
    pub fn execute(&self, sql: &str, params: Params<'_>) -> Result<usize> {
        match &self.inner {
            Inner::Sqlite(c) => {
                let mut s = c.prepare_cached(sql)?;
                Ok(s.execute(rusqlite::params_from_iter(params.iter().map(SqliteParam)))?)
            }
            Inner::Postgres(pg) => {
                let stmt = Self::pg_statement(pg, sql)?;
                let p = Self::pg_params(params);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    p.iter().map(|v| v as _).collect();
                Ok(pg.client().execute(&stmt, &refs)? as usize)
            }
        }
    }

    /// Runs several statements without parameters (schema, maintenance).
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Inner::Postgres(pg) => Ok(pg.client().batch_execute(sql)?),
        }
    }

    /// The first row of a query, through `f`; [`Error::NoRow`] when there is none.
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        f: impl FnOnce(Row<'_>) -> Result<T>,
    ) -> Result<T> {
        match &self.inner {
            Inner::Sqlite(c) => {
                let mut s = c.prepare_cached(sql)?;
                let mut rows =
                    s.query(rusqlite::params_from_iter(params.iter().map(SqliteParam)))?;
                match rows.next()? {
                    Some(r) => f(Row::Sqlite(r)),
                    None => Err(Error::NoRow),
                }
            }
            Inner::Postgres(pg) => {
                let rows = self.pg_query(pg, sql, params)?;
                match rows.first() {
                    Some(r) => f(Row::Postgres(r)),
                    None => Err(Error::NoRow),
                }
            }
        }
    }

    fn pg_query(&self, pg: &Pg, sql: &str, params: Params<'_>) -> Result<Vec<postgres::Row>> {
        let stmt = Self::pg_statement(pg, sql)?;
        let p = Self::pg_params(params);
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = p.iter().map(|v| v as _).collect();
        Ok(pg.client().query(&stmt, &refs)?)
    }

    /// A statement to run several times or to read rows from.
    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        self.prepare_cached(sql)
    }

    /// As [`Connection::prepare`]; both engines keep the prepared statement.
    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>> {
        Ok(match &self.inner {
            Inner::Sqlite(c) => Statement::Sqlite(Box::new(c.prepare_cached(sql)?)),
            Inner::Postgres(pg) => {
                // Prepared now, so that a bad query fails here as with SQLite.
                Self::pg_statement(pg, sql)?;
                Statement::Postgres {
                    conn: self,
                    sql: sql.to_owned(),
                }
            }
        })
    }

    /// Starts a transaction that writes (SQLite: `BEGIN IMMEDIATE`, so that two writers wait
    /// for each other rather than fail at commit). Dropped without [`Transaction::commit`], it
    /// rolls back.
    pub fn transaction(&self) -> Result<Transaction<'_>> {
        match self.dialect() {
            Dialect::Sqlite => self.execute_batch("BEGIN IMMEDIATE")?,
            Dialect::Postgres => self.execute_batch("BEGIN")?,
        }
        self.set_in_tx(true);
        Ok(Transaction {
            conn: self,
            open: Cell::new(true),
        })
    }
}

impl Connection {
    fn set_in_tx(&self, open: bool) {
        if let Inner::Postgres(pg) = &self.inner {
            pg.in_tx.set(open);
        }
    }
}

/// Rows a PostgreSQL stream fetches at a time.
const STREAM_FETCH: usize = 500;

struct SqliteParam<'a>(&'a &'a dyn ToSql);

impl rusqlite::ToSql for SqliteParam<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef as V};
        Ok(ToSqlOutput::Borrowed(match self.0.value() {
            ValueRef::Null => V::Null,
            ValueRef::Int(i) => V::Integer(i),
            ValueRef::Real(f) => V::Real(f),
            ValueRef::Text(s) => V::Text(s.as_bytes()),
            ValueRef::Blob(b) => V::Blob(b),
        }))
    }
}

/// A prepared statement.
pub enum Statement<'c> {
    Sqlite(Box<rusqlite::CachedStatement<'c>>),
    Postgres { conn: &'c Connection, sql: String },
}

impl Statement<'_> {
    /// Every row through `f` (read at once: call sites that stream use [`Statement::query`]).
    pub fn query_map<T>(
        &mut self,
        params: Params<'_>,
        mut f: impl FnMut(Row<'_>) -> Result<T>,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let mut out = Vec::new();
        let mut rows = self.query(params)?;
        while let Some(r) = rows.next()? {
            out.push(f(r));
        }
        Ok(out.into_iter())
    }

    /// The rows, one at a time (SQLite reads them as they are asked for; PostgreSQL's are in
    /// memory).
    pub fn query(&mut self, params: Params<'_>) -> Result<Rows<'_>> {
        match self {
            Statement::Sqlite(s) => Ok(Rows::Sqlite(
                s.query(rusqlite::params_from_iter(params.iter().map(SqliteParam)))?,
            )),
            Statement::Postgres { conn, sql } => {
                let Inner::Postgres(pg) = &conn.inner else {
                    unreachable!("a PostgreSQL statement on a PostgreSQL connection")
                };
                Ok(Rows::Postgres {
                    rows: conn.pg_query(pg, sql, params)?,
                    at: 0,
                })
            }
        }
    }

    /// The rows, one at a time, without holding them all in memory on either engine: on
    /// PostgreSQL a cursor fetched [`STREAM_FETCH`] rows at a time, inside the open
    /// transaction or a read-only one of its own (ended when the rows are dropped). For
    /// exports; other reads use [`Statement::query`] (one round trip).
    pub fn stream(&mut self, params: Params<'_>) -> Result<Rows<'_>> {
        let Statement::Postgres { conn, sql } = self else {
            return self.query(params);
        };
        let Inner::Postgres(pg) = &conn.inner else {
            unreachable!("a PostgreSQL statement on a PostgreSQL connection")
        };
        let own_tx = !pg.in_tx.get();
        if own_tx {
            conn.execute_batch("BEGIN READ ONLY")?;
            pg.in_tx.set(true);
        }
        let n = pg.cursors.get() + 1;
        pg.cursors.set(n);
        let cursor = Cursor {
            conn,
            name: format!("iat_stream_{n}"),
            own_tx,
        };
        conn.execute(
            &format!("DECLARE {} NO SCROLL CURSOR FOR {sql}", cursor.name),
            params,
        )?;
        Ok(Rows::PostgresCursor {
            cursor,
            rows: Vec::new(),
            at: 0,
            done: false,
        })
    }

    /// Runs the statement; the number of rows it changed.
    pub fn execute(&mut self, params: Params<'_>) -> Result<usize> {
        match self {
            Statement::Sqlite(s) => {
                Ok(s.execute(rusqlite::params_from_iter(params.iter().map(SqliteParam)))?)
            }
            Statement::Postgres { conn, sql } => conn.execute(sql, params),
        }
    }

    /// The first row through `f`.
    pub fn query_row<T>(
        &mut self,
        params: Params<'_>,
        f: impl FnOnce(Row<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut rows = self.query(params)?;
        match rows.next()? {
            Some(r) => f(r),
            None => Err(Error::NoRow),
        }
    }
}

/// The rows of a query.
pub enum Rows<'s> {
    Sqlite(rusqlite::Rows<'s>),
    Postgres {
        rows: Vec<postgres::Row>,
        at: usize,
    },
    /// [`Statement::stream`] on PostgreSQL.
    PostgresCursor {
        cursor: Cursor<'s>,
        rows: Vec<postgres::Row>,
        at: usize,
        done: bool,
    },
}

/// A declared cursor: closed (and its read-only transaction ended) when dropped.
pub struct Cursor<'c> {
    conn: &'c Connection,
    name: String,
    own_tx: bool,
}

impl Drop for Cursor<'_> {
    fn drop(&mut self) {
        let end = if self.own_tx {
            self.conn.set_in_tx(false);
            // Ends the cursor with its transaction, whatever state it is in.
            "ROLLBACK".to_owned()
        } else {
            format!("CLOSE {}", self.name)
        };
        if let Err(e) = self.conn.execute_batch(&end) {
            tracing::debug!("closing a cursor: {e}");
        }
    }
}

impl Rows<'_> {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Row<'_>>> {
        match self {
            Rows::Sqlite(r) => Ok(r.next()?.map(Row::Sqlite)),
            Rows::Postgres { rows, at } => {
                let r = rows.get(*at);
                if r.is_some() {
                    *at += 1;
                }
                Ok(r.map(Row::Postgres))
            }
            Rows::PostgresCursor {
                cursor,
                rows,
                at,
                done,
            } => {
                if *at == rows.len() && !*done {
                    let Inner::Postgres(pg) = &cursor.conn.inner else {
                        unreachable!("a PostgreSQL cursor on a PostgreSQL connection")
                    };
                    *rows = pg.client().query(
                        &format!("FETCH FORWARD {STREAM_FETCH} FROM {}", cursor.name),
                        &[],
                    )?;
                    *at = 0;
                    *done = rows.len() < STREAM_FETCH;
                }
                let r = rows.get(*at);
                if r.is_some() {
                    *at += 1;
                }
                Ok(r.map(Row::Postgres))
            }
        }
    }
}

/// A transaction: derefs to its connection; rolls back when dropped uncommitted.
pub struct Transaction<'c> {
    conn: &'c Connection,
    open: Cell<bool>,
}

impl Transaction<'_> {
    /// Commits; when COMMIT fails, the transaction is rolled back as it is dropped.
    pub fn commit(self) -> Result<()> {
        self.conn.execute_batch("COMMIT")?;
        self.open.set(false);
        self.conn.set_in_tx(false);
        Ok(())
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if self.open.get() {
            self.conn.set_in_tx(false);
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::warn!("rolling back a transaction: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream reads every row once, in order, with its parameters, outside a transaction
    /// and inside one; the connection is usable afterwards (a cursor dropped half-read too).
    #[test]
    fn a_stream_reads_every_row_in_order_on_either_engine() {
        let dir = tempfile::tempdir().unwrap();
        let conn = match test_database(dir.path()) {
            Database::Sqlite(p) => Connection::from_sqlite(rusqlite::Connection::open(p).unwrap()),
            Database::Postgres(url) => Connection::connect_postgres(&url).unwrap(),
        };
        conn.execute_batch("CREATE TABLE t (a BIGINT NOT NULL, b TEXT NOT NULL)")
            .unwrap();
        let tx = conn.transaction().unwrap();
        let n = 3 * STREAM_FETCH as i64 + 17;
        for a in 0..n {
            tx.execute(
                "INSERT INTO t (a, b) VALUES (?1, ?2)",
                params![a, format!("v{a}")],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        let read = |c: &Connection, from: i64, stop_at: Option<i64>| -> Vec<i64> {
            let mut q = c
                .prepare_cached("SELECT a, b FROM t WHERE a >= ?1 ORDER BY a")
                .unwrap();
            let mut rows = q.stream(params![from]).unwrap();
            let mut out = Vec::new();
            while let Some(r) = rows.next().unwrap() {
                let (a, b): (i64, String) = (r.get(0).unwrap(), r.get(1).unwrap());
                assert_eq!(b, format!("v{a}"));
                out.push(a);
                if stop_at == Some(a) {
                    break;
                }
            }
            out
        };
        assert_eq!(read(&conn, 5, None), (5..n).collect::<Vec<_>>());
        assert_eq!(read(&conn, 0, Some(3)), vec![0, 1, 2, 3]);
        let tx = conn.transaction().unwrap();
        tx.execute(
            "INSERT INTO t (a, b) VALUES (?1, ?2)",
            params![n, format!("v{n}")],
        )
        .unwrap();
        assert_eq!(read(&tx, n - 2, None), vec![n - 2, n - 1, n]);
        assert_eq!(read(&tx, 0, Some(0)), vec![0]);
        tx.commit().unwrap();
        let count: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", params![], |r| r.get(0))
            .unwrap();
        assert_eq!(count, n + 1, "the insert beside the streams committed");
    }

    #[test]
    fn tls_settings_are_read_with_libpq_names_and_refused_when_incomplete() {
        let (s, tls) = pg_tls("host=/run/postgresql dbname=iat").unwrap();
        assert_eq!(s, "host=/run/postgresql dbname=iat sslmode=disable");
        assert!(tls.is_none());
        for bad in [
            "host=db sslmode=require",
            "host=db sslmode=verify-full",
            "host=db sslmode=sometimes",
            "host=db sslcert=/c.pem sslkey=/k.pem",
            "host=db sslmode=disable sslrootcert=/ca.pem",
            "postgres://hub@db/iat?sslmode=verify-ca",
        ] {
            assert!(matches!(pg_tls(bad), Err(Error::Config(_))), "{bad}");
        }
        // A CA file that is not there is named.
        let e = pg_tls("host=db sslrootcert=/nonexistent/ca.pem").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        let e =
            pg_tls("postgres://hub@db:5433/iat?sslrootcert=%2Fnone%2Fca.pem&application_name=x")
                .unwrap_err();
        assert!(e.to_string().contains("/none/ca.pem"), "{e}");
        assert_eq!(percent_decode("a%2Fb%zz%"), "a/b%zz%");
        assert_eq!(percent_decode("%C3%A9t%C3%A9"), "été");
    }

    #[test]
    fn rows_are_cut_into_few_distinct_chunk_sizes() {
        for n in [0usize, 1, 7, 64, 100, 513] {
            let c = chunks(n);
            assert_eq!(c.iter().map(|(_, l)| l).sum::<usize>(), n);
            let mut at = 0;
            for (s, l) in &c {
                assert_eq!(*s, at);
                assert!(CHUNKS.contains(l));
                at += l;
            }
        }
        assert_eq!(chunks(100), vec![(0, 64), (64, 32), (96, 4)]);
        assert_eq!(row_placeholders(2, 3), "(?1, ?2, ?3), (?4, ?5, ?6)");
        let c = Connection::from_sqlite(rusqlite::Connection::open_in_memory().unwrap());
        c.execute_batch("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)")
            .unwrap();
        let names: Vec<String> = (0..100).map(|i| format!("n{i}")).collect();
        let ids: Vec<i64> = (0..100).collect();
        let rows: Vec<Vec<&dyn ToSql>> = ids
            .iter()
            .zip(&names)
            .map(|(i, n)| vec![i as &dyn ToSql, n as &dyn ToSql])
            .collect();
        insert_rows(&c, "INSERT INTO t (a, b)", "", 2, &rows).unwrap();
        let (n, last): (i64, String) = c
            .query_row("SELECT COUNT(*), MAX(b) FROM t", params![], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((n, last.as_str()), (100, "n99"));
    }

    #[test]
    fn placeholders_become_numbered_outside_strings() {
        assert_eq!(
            to_postgres("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND d IN (?2, ?10)"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND d IN ($2, $10)"
        );
        assert_eq!(to_postgres("VALUES (?, ?)"), "VALUES ($1, $2)");
        assert_eq!(to_postgres("x = \"a?\" OR y = ?"), "x = \"a?\" OR y = $1");
    }

    #[test]
    fn the_config_value_names_the_engine_and_hides_the_password() {
        let base = Path::new("/etc/iat");
        assert_eq!(
            Database::parse("hub.sqlite", base),
            Database::Sqlite("/etc/iat/hub.sqlite".into())
        );
        let url = "postgres://hub:s3cret@db.example:5432/iat";
        let d = Database::parse(url, base);
        assert_eq!(d, Database::Postgres(url.into()));
        assert_eq!(
            d.to_string(),
            "PostgreSQL postgres://hub:***@db.example:5432/iat"
        );
        let kv = Database::parse("host=/run/pg dbname=iat password=x", base);
        assert_eq!(
            kv.to_string(),
            "PostgreSQL host=/run/pg dbname=iat password=***"
        );
    }

    #[test]
    fn sqlite_values_round_trip_and_wrong_types_name_the_column() {
        let c = Connection::from_sqlite(rusqlite::Connection::open_in_memory().unwrap());
        c.execute_batch("CREATE TABLE t (i INTEGER, r REAL, s TEXT, b BLOB)")
            .unwrap();
        let blob = [1u8, 2, 3];
        c.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3, ?4)",
            params![-5i64, 2.5f64, "é", blob],
        )
        .unwrap();
        c.execute("INSERT INTO t VALUES (?1, NULL, NULL, NULL)", params![7i64])
            .unwrap();
        type Line = (i64, Option<f64>, Option<String>, Option<Vec<u8>>);
        let got: Vec<Line> = c
            .prepare("SELECT i, r, s, b FROM t ORDER BY i")
            .unwrap()
            .query_map(params![], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(
            got,
            vec![
                (-5, Some(2.5), Some("é".into()), Some(vec![1, 2, 3])),
                (7, None, None, None)
            ]
        );
        let e = c
            .query_row("SELECT s FROM t WHERE i = -5", params![], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap_err();
        assert!(e.to_string().starts_with("column 0: a text"), "{e}");
        let none = c
            .query_row("SELECT i FROM t WHERE i = 99", params![], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .unwrap();
        assert_eq!(none, None);
        // A transaction dropped without commit leaves nothing.
        {
            let tx = c.transaction().unwrap();
            tx.execute("DELETE FROM t", params![]).unwrap();
        }
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM t", params![], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
    }
}
