//! TLS to PostgreSQL (a database on another host): the hub connects over TLS to the cluster of
//! `cargo xtask test` (its TCP port on 127.0.0.1, TLS turned on here with a throwaway CA),
//! checks the server's certificate against the CA the connection string names, and refuses a
//! server whose certificate another CA signed. Skipped without `IAT_TEST_POSTGRES`.

mod attack;
mod common;

use std::os::unix::fs::PermissionsExt;

use hub::db::sql::{Connection, Database, params};

/// The value of `key` in a key-value connection string.
fn value<'a>(conninfo: &'a str, key: &str) -> Option<&'a str> {
    conninfo
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .next_back()
}

/// 1 when this session of the server is encrypted, 0 when it is in clear.
fn encrypted(c: &Connection) -> i64 {
    c.query_row(
        "SELECT CASE WHEN ssl THEN 1 ELSE 0 END FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        params![],
        |r| r.get(0),
    )
    .expect("pg_stat_ssl")
}

/// Turns the cluster's TLS settings back to their defaults when dropped.
struct ResetTls(String);

impl Drop for ResetTls {
    fn drop(&mut self) {
        let a = admin(&self.0);
        for sql in [
            "ALTER SYSTEM RESET ssl",
            "ALTER SYSTEM RESET ssl_cert_file",
            "ALTER SYSTEM RESET ssl_key_file",
            "SELECT pg_reload_conf()",
        ] {
            if let Err(e) = a.execute_batch(sql) {
                eprintln!("{sql}: {e}");
            }
        }
    }
}

fn admin(conninfo: &str) -> Connection {
    Connection::connect_postgres(conninfo).expect("the cluster's socket")
}

#[test]
fn the_hub_reaches_postgresql_over_verified_tls_only() {
    let Ok(admin_info) = std::env::var(hub::db::sql::TEST_POSTGRES) else {
        eprintln!(
            "skipped: no {} (cargo xtask test sets it)",
            hub::db::sql::TEST_POSTGRES
        );
        return;
    };
    let port = value(&admin_info, "port").expect("a port in the connection string");
    let dir = tempfile::Builder::new()
        .prefix("iat-pg-tls-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    // The server's user reads the certificate and key from here.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ca = attack::Ca::new(dir.path());
    let server = ca.issue(dir.path(), "server", true);
    std::fs::set_permissions(&server.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&server.cert, std::fs::Permissions::from_mode(0o644)).unwrap();
    let a = admin(&admin_info);
    let owner: String = a
        .query_row("SELECT current_setting('data_directory')", params![], |r| {
            r.get(0)
        })
        .expect("data directory");
    // PostgreSQL reads its key only when the server's user owns it.
    let uid = std::fs::metadata(&owner)
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .expect("the data directory's owner");
    for f in [&server.key, &server.cert] {
        std::os::unix::fs::chown(f, Some(uid), None).expect("chown to the server's user");
    }
    // Undone however the test ends: the files go with the test's folder, and a server
    // restarted with `ssl = on` and no certificate would not start.
    let _reset = ResetTls(admin_info.clone());
    for sql in [
        format!(
            "ALTER SYSTEM SET ssl_cert_file = '{}'",
            server.cert.display()
        ),
        format!("ALTER SYSTEM SET ssl_key_file = '{}'", server.key.display()),
        "ALTER SYSTEM SET ssl = on".to_owned(),
        "SELECT pg_reload_conf()".to_owned(),
    ] {
        a.execute_batch(&sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let listen: String = a
        .query_row(
            "SELECT current_setting('listen_addresses')",
            params![],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        listen.contains("127.0.0.1") || listen == "*",
        "the test cluster must listen on 127.0.0.1 (listen_addresses = {listen:?})"
    );
    let Database::Postgres(own) = hub::db::sql::test_database(dir.path()) else {
        unreachable!("IAT_TEST_POSTGRES is set")
    };
    let dbname = value(&own, "dbname").expect("dbname").to_owned();
    let tcp = |extra: &str| {
        Database::Postgres(format!(
            "host=127.0.0.1 port={port} user=postgres dbname={dbname} {extra}"
        ))
    };
    let verified = tcp(&format!(
        "sslmode=verify-full sslrootcert={}",
        ca.pem.display()
    ));
    // The reload reaches the server within moments; new connections then speak TLS.
    let start = std::time::Instant::now();
    let conn = loop {
        match hub::db::store::open(&verified) {
            Ok(c) => break c,
            Err(e) if start.elapsed() < std::time::Duration::from_secs(10) => {
                eprintln!("waiting for TLS: {e}");
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Err(e) => panic!("the hub over TLS: {e}"),
        }
    };
    assert_eq!(encrypted(&conn), 1, "the hub's session is encrypted");
    assert_eq!(
        hub::db::store::schema_version(&conn).unwrap(),
        hub::db::store::SCHEMA_VERSION
    );
    // A server whose certificate the named CA did not sign is refused, and said so.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let stranger = attack::Ca::new(&other);
    let e = hub::db::store::open(tcp(&format!(
        "sslmode=verify-full sslrootcert={}",
        stranger.pem.display()
    )))
    .unwrap_err()
    .to_string();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    eprintln!("another CA, refused: {e}");
    // Without a CA the hub does not use TLS and says what to add when TLS is asked for.
    let e = hub::db::store::open(tcp("sslmode=require"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("sslrootcert"), "{e}");
    eprintln!("sslmode=require without a CA, refused: {e}");
    let plain = hub::db::store::open(tcp("")).expect("in clear");
    assert_eq!(encrypted(&plain), 0);
}
