//! The retention rule (issue 16) on the configured store (SQLite, or PostgreSQL under
//! `cargo xtask test`): old months are written to the export folder, verified there, then
//! removed; the hub still recognises resent and forked records and older checkpoints of the
//! removed months, and its export of a device starts with the frontier of what was removed.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use audit::{Checkpoint, Frontier};
use common::*;
use hub::db::retention::{self, Month};
use hub::db::sql::{Connection, Dialect, params};
use hub::enrolment::{Enrolment, RawDevice};

struct Setup {
    _dir: tempfile::TempDir,
    cfg: hub::config::Config,
    enrolment: Enrolment,
    devs: Vec<Dev>,
    entries: Vec<Vec<Vec<u8>>>,
    version: String,
    sha256: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"test-hub\"\nkey = \"hub.key\"\ndb = {}\ndevices = \"devices.toml\"\n\
             [mqtt]\nhost = \"127.0.0.1\"\nport = 1\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\
             [retention]\nmonths = 1\nexport_dir = \"exports\"\n",
            db_value(dir.path()),
        ),
    )
    .expect("config");
    let cfg = hub::config::Config::load(&config).expect("config loads");
    let card = hub::enrolment::cards::load(&repo().join("models/centerface-int8/card.toml"))
        .expect("card");
    let devs = vec![
        Dev {
            id: "dev-1",
            territory: "fr-lyon",
            windows: 0,
            key: key_for("iat/fr-lyon/dev-1", 1),
        },
        Dev {
            id: "dev-2",
            territory: "fr-lyon",
            windows: 0,
            key: key_for("iat/fr-lyon/dev-2", 2),
        },
    ];
    for d in &devs {
        hub::enrolment::enroll(
            &cfg.devices,
            RawDevice {
                id: d.id.into(),
                territory: d.territory.into(),
                key: d.key.verifier().to_string(),
                enrolled: Some("2026-02-28T12:00:00Z".into()),
                models: vec![card.clone()],
                ..Default::default()
            },
        )
        .expect("enroll");
    }
    let enrolment = Enrolment::load(&cfg.devices).expect("enrolment");
    let version = card.version.clone().unwrap_or_default();
    let entries = devs
        .iter()
        .map(|d| {
            (0..40)
                .map(|i| record(d, i, &card.sha256, &version))
                .collect()
        })
        .collect();
    Setup {
        _dir: dir,
        cfg,
        enrolment,
        devs,
        entries,
        version,
        sha256: card.sha256,
    }
}

impl Setup {
    /// Delivers record `seq` of device `d` (its own entry, or `entry`) as stored at `at_ms`.
    fn send(
        &self,
        conn: &Connection,
        d: usize,
        seq: u64,
        entry: Option<&[u8]>,
        at_ms: i64,
    ) -> hub::ingest::Outcome {
        let dev = &self.devs[d];
        let entry = entry.unwrap_or(&self.entries[d][seq as usize]);
        let sig = audit::sign_entry(&dev.key, entry);
        let payload = hub_link::encode_record(seq, entry, &sig).expect("envelope");
        let tx = conn.transaction().expect("tx");
        let topic = hub_link::agg_topic(dev.territory, dev.id, MODEL);
        let (o, _) =
            hub::ingest::handle(&tx, &self.enrolment, &topic, &payload, at_ms).expect("ingest");
        tx.commit().expect("commit");
        o
    }

    /// The device's signed checkpoint at `size`.
    fn checkpoint(&self, d: usize, size: u64) -> String {
        let mut f = Frontier::new();
        for e in &self.entries[d][..size as usize] {
            f.append(audit::merkle::leaf_hash(e));
        }
        self.devs[d]
            .key
            .sign_checkpoint(&Checkpoint {
                origin: self.devs[d].origin(),
                size,
                root: f.root(),
                extensions: vec![],
            })
            .expect("checkpoint")
    }

    fn send_checkpoint(
        &self,
        conn: &Connection,
        d: usize,
        size: u64,
        at_ms: i64,
    ) -> hub::ingest::Outcome {
        let dev = &self.devs[d];
        let tx = conn.transaction().expect("tx");
        let (o, _) = hub::ingest::handle(
            &tx,
            &self.enrolment,
            &hub_link::checkpoint_topic(dev.territory, dev.id),
            self.checkpoint(d, size).as_bytes(),
            at_ms,
        )
        .expect("checkpoint");
        tx.commit().expect("commit");
        o
    }

    fn export(&self, month: Month, d: usize) -> String {
        let p = self
            .cfg
            .retention
            .as_ref()
            .expect("[retention]")
            .export_dir
            .join(month.label())
            .join(format!("{}.jsonl", self.devs[d].id));
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, params![], |r| r.get(0)).expect(sql)
}

fn seqs(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<hub_link::Envelope>(l).ok())
        .map(|e| e.seq)
        .collect()
}

#[test]
fn old_months_are_exported_verified_and_removed_and_still_count() {
    let s = setup();
    let conn = hub::db::store::open(&s.cfg.db).expect("db");
    let pg = conn.dialect() == Dialect::Postgres;
    let now = hub::mqtt::now_ms();
    let this = Month::of(now);
    let (m0, m1, m2) = (this.minus(3), this.minus(2), this.minus(1));
    let at = |m: Month, i: i64| m.start_ms() + 3_600_000 + i * 1000;
    // The monthly partitions of the three past months, as a hub running then made them.
    retention::ensure_partitions(&conn, m0.start_ms()).expect("partitions");
    // dev-1: seqs 0..10 in m0, 10..20 in m1, 20..30 in m2; a checkpoint at 25.
    for i in 0..30u64 {
        let m = [m0, m1, m2][i as usize / 10];
        assert_eq!(s.send(&conn, 0, i, None, at(m, i as i64)).stored, 1);
    }
    assert_eq!(s.send_checkpoint(&conn, 0, 25, at(m2, 99)).alarms, 0);
    // dev-2: seqs 0..5 in m0, 5 in m1, then 6 in m0 again (its hub's clock behind).
    for i in 0..7u64 {
        let m = if i == 5 { m1 } else { m0 };
        assert_eq!(s.send(&conn, 1, i, None, at(m, 100 + i as i64)).stored, 1);
    }
    assert_eq!(s.send_checkpoint(&conn, 1, 7, at(m1, 200)).alarms, 0);

    let rule = s.cfg.retention.clone().expect("[retention]");
    let never = AtomicBool::new(false);
    let report = retention::run(&conn, &rule, now, &never).expect("retention");
    assert!(!report.busy);
    assert_eq!(
        report.months,
        vec![(m0.label(), 2, 15), (m1.label(), 2, 12)],
        "m0: dev-1's 10 and dev-2's 5; m1: dev-1's 10 and dev-2's 2"
    );
    assert_eq!(report.moved, 1, "dev-2's seq 6 moved on behind seq 5");
    // Only m2's records are left, in the database and (PostgreSQL) in the partitions.
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM records"), 10);
    assert_eq!(
        count(&conn, "SELECT MIN(seq) FROM records WHERE device = 'dev-1'"),
        20
    );
    if pg {
        let parts = |m: Month| {
            count(
                &conn,
                &format!(
                    "SELECT COUNT(*) FROM pg_class WHERE relname = '{}'",
                    m.table()
                ),
            )
        };
        assert_eq!((parts(m0), parts(m1), parts(m2), parts(this)), (0, 0, 1, 1));
    }

    // The exports: each month a frontier line, the records in order, a frontier line.
    let e0 = s.export(m0, 0);
    assert_eq!(seqs(&e0), (0..10).collect::<Vec<_>>());
    assert!(
        e0.lines()
            .next()
            .unwrap()
            .starts_with("{\"frontier\":{\"size\":0,\"nodes\":[]}}"),
        "{e0}"
    );
    assert_eq!(seqs(&s.export(m1, 0)), (10..20).collect::<Vec<_>>());
    assert_eq!(seqs(&s.export(m0, 1)), (0..5).collect::<Vec<_>>());
    assert_eq!(seqs(&s.export(m1, 1)), vec![5, 6]);

    // The hub's own export starts with the frontier of what was removed; with the monthly
    // files before it, oldest first, the whole log verifies against the device's checkpoint.
    let web_cfg = hub::web::WebConfig::from_config(&s.cfg).expect("[http]");
    let web = hub::web::start(
        web_cfg,
        Arc::new(RwLock::new(
            Enrolment::load(&s.cfg.devices).expect("enrolment"),
        )),
    )
    .expect("web");
    let live: String = ureq::get(format!("http://{}/export/dev-1/records.jsonl", web.addr))
        .call()
        .expect("GET")
        .body_mut()
        .read_to_string()
        .expect("body");
    assert_eq!(seqs(&live), (20..30).collect::<Vec<_>>());
    let key = [s.devs[0].key.verifier()];
    let cp = s.checkpoint(0, 25);
    let whole = format!("{e0}{}{live}", s.export(m1, 0));
    let v = verify::export(&key, &whole, &cp).expect("the months and the export verify as one");
    assert_eq!((v.from_seq, v.records, v.checkpoint_size), (0, 30, 25));
    let v = verify::export(&key, &live, &cp).expect("the export alone verifies");
    assert_eq!((v.from_seq, v.records), (20, 10));
    // The leaves of removed and kept records together: the consistency proof the browser's
    // verifier asks for, from a checkpoint seen in m1 (seq 15) to this one, links both roots.
    let leaves = hub::db::store::leaves(&conn, "dev-1", 25)
        .expect("leaves")
        .expect("all 25 held");
    let leaf_root = |n: usize| {
        let mut f = Frontier::new();
        for l in &leaves[..n] {
            f.append(*l);
        }
        f.root()
    };
    assert_eq!(verify::hex(&leaf_root(25)), v.root);
    let proof = audit::merkle::consistency_proof(&leaves, 15).unwrap();
    audit::merkle::verify_consistency(15, 25, &leaf_root(15), &leaf_root(25), &proof)
        .expect("a proof across the removed months");
    assert_eq!(
        hub::db::store::leaves(&conn, "dev-1", 31).expect("leaves"),
        None,
        "the hub holds 30"
    );
    // Tampering with an export is caught: a record changed, a frontier line changed, a month
    // left out in the middle.
    let changed = whole.replacen("\\\"frames\\\":900", "\\\"frames\\\":901", 1);
    assert_ne!(changed, whole);
    assert!(verify::export(&key, &changed, &cp).is_err());
    let lines: Vec<&str> = e0.lines().collect();
    let forged_end = e0.replace(
        lines[lines.len() - 1],
        &verify::export::frontier_line(&Frontier::new()),
    );
    let err = verify::export(&key, &format!("{forged_end}{}{live}", s.export(m1, 0)), &cp)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the records before it give a tree of 10 leaves"),
        "{err}"
    );
    let err = verify::export(&key, &format!("{e0}{live}"), &cp)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the records before it give a tree of 10 leaves"),
        "{err}"
    );

    // The hub still knows the removed records: a resend is a duplicate, a different signed
    // record a FORK naming the export, an older checkpoint inside the removed months is stale,
    // not a rewritten history.
    let o = s.send(&conn, 0, 3, None, now);
    assert_eq!((o.stored, o.duplicates, o.alarms), (0, 1, 0));
    let forged = String::from_utf8(s.entries[0][12].clone())
        .unwrap()
        .replace("\"frames\":900", "\"frames\":899")
        .into_bytes();
    assert_eq!(s.send(&conn, 0, 12, Some(&forged), now).alarms, 1);
    let evidence: String = conn
        .query_row(
            "SELECT evidence FROM alarms WHERE kind = 'FORK' AND device = 'dev-1' AND seq = 12",
            params![],
            |r| r.get(0),
        )
        .expect("the FORK alarm");
    assert!(
        evidence.contains(&format!("in the export of {}", m1.label())),
        "{evidence}"
    );
    for size in [5, 10, 15, 22] {
        assert_eq!(
            s.send_checkpoint(&conn, 0, size, now).alarms,
            0,
            "checkpoint at {size}"
        );
    }
    // Ingest goes on, a later checkpoint verifies, and a second run has nothing to do.
    for i in 30..40u64 {
        assert_eq!(s.send(&conn, 0, i, None, now).stored, 1);
    }
    assert_eq!(s.send_checkpoint(&conn, 0, 40, now).alarms, 0);
    let again = retention::run(&conn, &rule, now, &never).expect("retention");
    assert_eq!((again.months.len(), again.moved), (0, 0));

    // The commands: `hub verify` takes the months then the export, `hub retention` says there
    // is nothing left to remove.
    let dir = s.cfg.path.parent().unwrap();
    let files = [
        ("vkey", s.devs[0].key.verifier().to_string()),
        ("live.jsonl", live.clone()),
        ("cp.txt", cp.clone()),
    ];
    for (name, text) in &files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let hub = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hub"))
            .args(args)
            .current_dir(dir)
            .output()
            .expect("hub runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    // `hub verify` on the files given, in order, with the checkpoint at 25.
    let hub_verify = |records: &[&str]| {
        let mut args = vec!["verify", "--key", "vkey"];
        for r in records {
            args.extend(["--records", r]);
        }
        args.extend(["--checkpoint", "cp.txt"]);
        hub(&args)
    };
    let (m0f, m1f) = (
        format!("exports/{}/dev-1.jsonl", m0.label()),
        format!("exports/{}/dev-1.jsonl", m1.label()),
    );
    let (ok, out) = hub_verify(&[&m0f, &m1f, "live.jsonl"]);
    assert!(ok && out.contains("OK: 30 record(s)"), "{out}");
    let (ok, out) = hub_verify(&[&m1f, "live.jsonl"]);
    assert!(
        ok && out.contains("OK: 20 record(s) signed by the device from seq 10"),
        "{out}"
    );
    let (ok, out) = hub_verify(&[&m0f, "live.jsonl"]);
    assert!(!ok && out.contains("verification failed"), "{out}");
    // `hub records` prints what the register serves; `--entries` only the entries, to read.
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(["records", "--config", "hub.toml", "--device", "dev-1"])
        .current_dir(dir)
        .output()
        .expect("hub records");
    assert!(printed.status.success());
    let live_now: String = ureq::get(format!("http://{}/export/dev-1/records.jsonl", web.addr))
        .call()
        .expect("GET")
        .body_mut()
        .read_to_string()
        .expect("body");
    assert_eq!(String::from_utf8_lossy(&printed.stdout), live_now);
    let entries = std::process::Command::new(env!("CARGO_BIN_EXE_hub"))
        .args([
            "records",
            "--config",
            "hub.toml",
            "--device",
            "dev-1",
            "--entries",
        ])
        .current_dir(dir)
        .output()
        .expect("hub records --entries");
    assert!(entries.status.success());
    let out = String::from_utf8_lossy(&entries.stdout);
    assert_eq!(out.lines().count(), 20, "{out}");
    assert!(
        out.lines().all(|l| l.starts_with("{\"aggregates\"")),
        "{out}"
    );
    let (ok, out) = hub(&["retention", "--config", "hub.toml"]);
    assert!(ok && out.contains("nothing to remove"), "{out}");
    let _ = (&s.version, &s.sha256);
    drop(web);
}

#[test]
fn a_month_partition_takes_over_its_rows_from_the_default_partition() {
    let s = setup();
    let conn = hub::db::store::open(&s.cfg.db).expect("db");
    if conn.dialect() != Dialect::Postgres {
        eprintln!("skipped on SQLite: monthly partitions are PostgreSQL's");
        return;
    }
    // A record stored at a time no monthly partition covers yet lands in the default one...
    let later = Month::of(hub::mqtt::now_ms())
        .minus(0)
        .next()
        .next()
        .next()
        .next();
    assert_eq!(s.send(&conn, 0, 0, None, later.start_ms() + 5).stored, 1);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM records_default"), 1);
    // ...and moves to that month's partition when it is made.
    retention::ensure_partitions(&conn, later.start_ms()).expect("partitions");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM records_default"), 0);
    assert_eq!(
        count(&conn, &format!("SELECT COUNT(*) FROM {}", later.table())),
        1
    );
    assert_eq!(s.send(&conn, 0, 1, None, later.start_ms() + 6).stored, 1);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM records"), 2);
}

/// A month is dropped only when every record in it was written to the export: a row the
/// export did not write (here one of no known device, as a hub whose clock ran a month behind
/// could store during the export) keeps the month on PostgreSQL, and is never removed on
/// SQLite (which removes device by device).
#[test]
fn a_record_the_export_did_not_write_is_never_removed() {
    let s = setup();
    let conn = hub::db::store::open(&s.cfg.db).expect("db");
    let now = hub::mqtt::now_ms();
    let old = Month::of(now).minus(3);
    retention::ensure_partitions(&conn, old.start_ms()).expect("partitions");
    for i in 0..5u64 {
        assert_eq!(
            s.send(&conn, 0, i, None, old.start_ms() + i as i64).stored,
            1
        );
    }
    conn.execute(
        "INSERT INTO records (device, seq, model, entry, sig, leaf, stored_ms)
         VALUES ('stray', 0, 'm', ?1, ?2, ?3, ?4)",
        params![vec![1u8], vec![0u8; 64], vec![0u8; 32], old.start_ms() + 99],
    )
    .expect("a stray row");
    let rule = s.cfg.retention.clone().expect("[retention]");
    let out = retention::run(&conn, &rule, now, &AtomicBool::new(false));
    let stray = count(&conn, "SELECT COUNT(*) FROM records WHERE device = 'stray'");
    assert_eq!(stray, 1, "the row nobody exported is still there");
    if conn.dialect() == Dialect::Postgres {
        let e = out.expect_err("the month is kept").to_string();
        assert!(
            e.contains("6 record(s)") && e.contains("5 were written"),
            "{e}"
        );
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM records"), 6);
    } else {
        out.expect("device by device");
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM records"), 1);
    }
    // dev-1's five were written to the month's file either way.
    assert_eq!(seqs(&s.export(old, 0)), (0..5).collect::<Vec<_>>());
}
