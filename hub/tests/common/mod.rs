//! A hub holding real data for the web tests: devices with deterministic Ed25519 keys,
//! enrolled with the repository's centerface-int8 card, canonical records signed and ingested
//! through `ingest::handle` exactly as MQTT delivers them (so the series table is filled by
//! ingest), a signed checkpoint, a status, a FORK alarm, an admin account, and the web side
//! running on a free port.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use audit::{Checkpoint, Frontier, SignerKey};
use hub::enrolment::{Enrolment, RawDevice};
use serde_json::json;

pub const ADMIN: &str = "admin";
pub const PASSWORD: &str = "correct horse battery staple";
pub const K: u64 = 3;
pub const WINDOW_MS: i64 = 900_000;
pub const MODEL: &str = "centerface-int8";
/// 2026-03-01T00:00:00Z
pub const T0: i64 = 1_772_323_200_000;

/// A device of the fixture.
pub struct Dev {
    pub id: &'static str,
    pub territory: &'static str,
    pub windows: u64,
    pub key: SignerKey,
}

impl Dev {
    pub fn origin(&self) -> String {
        hub_link::origin(self.territory, self.id)
    }
}

/// The published `count.face.total` of window `i`: small values are suppressed.
pub fn total(i: u64) -> Option<u64> {
    let v = (i * 7919 + 13) % 61;
    (v >= K).then_some(v)
}

pub fn max(i: u64) -> Option<u64> {
    total(i).map(|t| t / 8).filter(|m| *m >= K)
}

fn published(v: Option<u64>) -> serde_json::Value {
    match v {
        Some(v) => json!(v),
        None => json!("suppressed"),
    }
}

pub fn key_for(origin: &str, seed: u8) -> SignerKey {
    SignerKey::from_seed(origin, &[seed; 32]).expect("key")
}

/// The canonical record of window `i` of a device.
pub fn record(dev: &Dev, i: u64, sha256: &str, version: &str) -> Vec<u8> {
    let present = total(i).map(|t| t.min(900));
    let share = present.map(|p| p * 1_000_000 / 900);
    let v = json!({
        "v": 1, "type": "aggregate", "device": dev.id, "territory": dev.territory, "seq": i,
        "model": {"id": MODEL, "version": version, "sha256": sha256},
        "window": {"index": i, "start": aggregate::window::rfc3339(T0 + i as i64 * WINDOW_MS),
                   "length_ms": WINDOW_MS, "partial": i == 0, "clock_jump_ms": 0, "clock_jumps": 0},
        "aggregates": {
            "count": {"face": {"frames": 900, "max": published(max(i)), "total": published(total(i))}},
            "presence_share": {"face": {"frames": 900, "present_frames": published(present), "share_ppm": published(share)}},
        },
        "privacy": {"k": K, "count_step": 1, "share_step_ppm": 1, "level_step_milli": 1,
                    "noise": {"mechanism": "geometric", "epsilon_milli": 1000, "sensitivity": 1}},
    });
    aggregate::canonical::to_vec(&v).expect("canonical")
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The config's `db` value (a TOML string) for a new test database: a SQLite file, or a
/// database of the PostgreSQL cluster named by `IAT_TEST_POSTGRES`.
pub fn db_value(dir: &std::path::Path) -> String {
    let v = match hub::db::sql::test_database(dir) {
        hub::db::sql::Database::Sqlite(p) => p.display().to_string(),
        hub::db::sql::Database::Postgres(s) => s,
    };
    toml::Value::String(v).to_string()
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub devices_path: PathBuf,
    pub db: hub::db::sql::Database,
    pub devs: Vec<Dev>,
    pub enrolment: Arc<RwLock<Enrolment>>,
    pub web: Option<hub::web::Running>,
    pub base: String,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("hub.toml");
        std::fs::write(
            &config,
            format!(
                "name = \"test-hub\"\nkey = \"hub.key\"\ndb = {}\ndevices = \"devices.toml\"\n\
                 [mqtt]\nhost = \"127.0.0.1\"\nport = 1\n[http]\nlisten = \"127.0.0.1:0\"\ncards = \"{}\"\n",
                db_value(dir.path()),
                repo().join("models").display()
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
                windows: 288,
                key: key_for("iat/fr-lyon/dev-1", 1),
            },
            Dev {
                id: "dev-2",
                territory: "fr-lyon",
                windows: 96,
                key: key_for("iat/fr-lyon/dev-2", 2),
            },
            Dev {
                id: "cam-9",
                territory: "fr-nantes",
                windows: 40,
                key: key_for("iat/fr-nantes/cam-9", 9),
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
                    site: None,
                    retired_keys: vec![],
                    models: vec![card.clone()],
                    ..Default::default()
                },
            )
            .expect("enroll");
        }
        let enrolment = Enrolment::load(&cfg.devices).expect("enrolment");
        let conn = hub::db::store::open(&cfg.db).expect("db");
        let version = card.version.clone().unwrap_or_default();
        let tx = conn.transaction().expect("tx");
        for d in &devs {
            let mut frontier = Frontier::new();
            let topic = hub_link::agg_topic(d.territory, d.id, MODEL);
            for i in 0..d.windows {
                let entry = record(d, i, &card.sha256, &version);
                let sig = audit::sign_entry(&d.key, &entry);
                let payload = hub_link::encode_record(i, &entry, &sig).expect("envelope");
                let (o, _) =
                    hub::ingest::handle(&tx, &enrolment, &topic, &payload, T0).expect("ingest");
                assert_eq!(o.stored, 1, "record {i} of {} stored", d.id);
                frontier.append(audit::merkle::leaf_hash(&entry));
            }
            let note = d
                .key
                .sign_checkpoint(&Checkpoint {
                    origin: d.origin(),
                    size: d.windows,
                    root: frontier.root(),
                    extensions: vec![],
                })
                .expect("checkpoint");
            let (o, _) = hub::ingest::handle(
                &tx,
                &enrolment,
                &hub_link::checkpoint_topic(d.territory, d.id),
                note.as_bytes(),
                T0 + 1000,
            )
            .expect("checkpoint");
            assert_eq!(o.alarms, 0);
        }
        // dev-1 says it is online; dev-2's last will says offline.
        for (device, status) in [("dev-1", "online"), ("dev-2", "offline")] {
            hub::ingest::handle(
                &tx,
                &enrolment,
                &hub_link::status_topic("fr-lyon", device),
                status.as_bytes(),
                T0 + 2000,
            )
            .expect("status");
        }
        // cam-9 signs a second, different record for seq 5: a FORK.
        let cam = &devs[2];
        let mut forged = record(cam, 5, &card.sha256, &version);
        let text = String::from_utf8(forged.clone())
            .unwrap()
            .replace("\"frames\":900", "\"frames\":899");
        forged = text.into_bytes();
        let sig = audit::sign_entry(&cam.key, &forged);
        let (o, _) = hub::ingest::handle(
            &tx,
            &enrolment,
            &hub_link::agg_topic(cam.territory, cam.id, MODEL),
            &hub_link::encode_record(5, &forged, &sig).expect("envelope"),
            T0 + 3000,
        )
        .expect("fork");
        assert_eq!(o.alarms, 1, "the fork is an alarm");
        tx.commit().expect("commit");
        hub::auth::set_password(&conn, ADMIN, PASSWORD, T0).expect("admin");
        drop(conn);
        let enrolment = Arc::new(RwLock::new(enrolment));
        let web_cfg = hub::web::WebConfig::from_config(&cfg).expect("[http]");
        let web = hub::web::start(web_cfg, enrolment.clone()).expect("web starts");
        let base = format!("http://{}", web.addr);
        Fixture {
            devices_path: cfg.devices.clone(),
            db: cfg.db.clone(),
            dir,
            config,
            devs,
            enrolment,
            web: Some(web),
            base,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// True on SQLite; on PostgreSQL says which SQLite-only part of a test is skipped (the
    /// migrations of SQLite files made by older hubs: PostgreSQL starts at the current schema).
    pub fn on_sqlite(&self, what: &str) -> bool {
        let sqlite = matches!(self.db, hub::db::sql::Database::Sqlite(_));
        if !sqlite {
            eprintln!("skipped on PostgreSQL: {what}");
        }
        sqlite
    }

    pub fn conn(&self) -> hub::db::sql::Connection {
        hub::db::store::open(&self.db).expect("db")
    }
}

/// The device of [`Fixture::add_v2_device`]: record v2, 10-second windows, a daily budget.
pub const V2_DEVICE: &str = "v2-1";
pub const V2_TERRITORY: &str = "fr-lyon";
pub const V2_WINDOW_MS: i64 = 10_000;
/// Its daily budget (ε = 8640) and what the day had spent before its first record.
pub const V2_BUDGET_MILLI: u64 = 8_640_000;
pub const V2_SPENT_BEFORE: u64 = 8_635_000;
/// Each record noises 3 values (count max and total, presence) at 0.333: 0.999 in all.
pub const V2_PER_VALUE_MILLI: u64 = 333;
pub const V2_RECORDS: u64 = 7;
/// Records 0 to 4 are paid for; from record 5 the budget cannot pay 0.999: withheld.
pub const V2_PAID: u64 = 5;

/// The canonical v2 record of window `i` of [`V2_DEVICE`]: published while the day's budget
/// pays for it, withheld (empty count and presence maps, no noise) after.
pub fn record_v2(i: u64, sha256: &str, version: &str) -> Vec<u8> {
    let withheld = i >= V2_PAID;
    let epsilon = V2_PER_VALUE_MILLI * 3;
    let spent = V2_SPENT_BEFORE + epsilon * (i + 1).min(V2_PAID);
    let (aggregates, epsilon, noise) = if withheld {
        (
            json!({"count": {}, "presence_share": {}}),
            0,
            serde_json::Value::Null,
        )
    } else {
        (
            json!({
                "count": {"face": {"frames": 100, "max": 4, "total": 40 + i}},
                "presence_share": {"face": {"frames": 100, "present_frames": 50, "share_ppm": 500_000}},
            }),
            epsilon,
            json!({"mechanism": "geometric", "epsilon_milli": V2_PER_VALUE_MILLI, "values": 3}),
        )
    };
    let v = json!({
        "v": 2, "type": "aggregate", "device": V2_DEVICE, "territory": V2_TERRITORY, "seq": i,
        "model": {"id": MODEL, "version": version, "sha256": sha256},
        "window": {"index": i, "start": aggregate::window::rfc3339(T0 + i as i64 * V2_WINDOW_MS),
                   "length_ms": V2_WINDOW_MS, "partial": false, "clock_jump_ms": 0, "clock_jumps": 0},
        "aggregates": aggregates,
        "privacy": {"k": K, "count_step": 1, "share_step_ppm": 1, "level_step_milli": 1,
                    "unit": "person-window", "epsilon_milli": epsilon, "noise": noise,
                    "budget": {"day": "2026-03-01", "epsilon_milli": V2_BUDGET_MILLI,
                               "spent_milli": spent, "withheld": withheld}},
    });
    let bytes = aggregate::canonical::to_vec(&v).expect("canonical");
    aggregate::RecordView::parse(&bytes).expect("a valid v2 record");
    bytes
}

impl Fixture {
    /// Enrols [`V2_DEVICE`] and ingests its [`V2_RECORDS`] v2 records as MQTT delivers them.
    pub fn add_v2_device(&self) {
        self.add_device(
            (V2_TERRITORY, V2_DEVICE),
            "models/centerface-int8/card.toml",
            21,
            V2_RECORDS,
            &record_v2,
        );
    }

    /// Enrols a device (`(territory, id)`, its key from `seed`) with one model card and
    /// ingests `n` records made by `record(i, sha256, version)`, as MQTT delivers them; the
    /// Merkle tree of those records.
    fn add_device(
        &self,
        (territory, id): (&str, &str),
        card: &str,
        seed: u8,
        n: u64,
        record: &dyn Fn(u64, &str, &str) -> Vec<u8>,
    ) -> Frontier {
        let card = hub::enrolment::cards::load(&repo().join(card)).expect("card");
        let key = key_for(&hub_link::origin(territory, id), seed);
        hub::enrolment::enroll(
            &self.devices_path,
            RawDevice {
                id: id.into(),
                territory: territory.into(),
                key: key.verifier().to_string(),
                enrolled: Some("2026-02-28T12:00:00Z".into()),
                site: None,
                retired_keys: vec![],
                models: vec![card.clone()],
                ..Default::default()
            },
        )
        .expect("enroll");
        let enrolment = Enrolment::load(&self.devices_path).expect("enrolment");
        let version = card.version.clone().unwrap_or_default();
        let conn = self.conn();
        let tx = conn.transaction().expect("tx");
        let topic = hub_link::agg_topic(territory, id, &card.id);
        let mut frontier = Frontier::new();
        for i in 0..n {
            let entry = record(i, &card.sha256, &version);
            let sig = audit::sign_entry(&key, &entry);
            let payload = hub_link::encode_record(i, &entry, &sig).expect("envelope");
            let (o, _) =
                hub::ingest::handle(&tx, &enrolment, &topic, &payload, T0).expect("ingest");
            assert_eq!(o.stored, 1, "record {i} of {id} stored");
            frontier.append(audit::merkle::leaf_hash(&entry));
        }
        tx.commit().expect("commit");
        *self.enrolment.write().unwrap() = enrolment;
        frontier
    }

    /// [`Fixture::add_device`], then the device's signed checkpoint over its `n` records,
    /// verified and stored by the hub as MQTT delivers it.
    pub fn add_device_with_checkpoint(
        &self,
        (territory, id): (&str, &str),
        card: &str,
        seed: u8,
        n: u64,
        record: &dyn Fn(u64, &str, &str) -> Vec<u8>,
    ) {
        let frontier = self.add_device((territory, id), card, seed, n, record);
        let key = key_for(&hub_link::origin(territory, id), seed);
        let note = key
            .sign_checkpoint(&Checkpoint {
                origin: hub_link::origin(territory, id),
                size: n,
                root: frontier.root(),
                extensions: vec![],
            })
            .expect("checkpoint");
        let enrolment = self.enrolment.read().unwrap().clone();
        let conn = self.conn();
        let tx = conn.transaction().expect("tx");
        let (o, _) = hub::ingest::handle(
            &tx,
            &enrolment,
            &hub_link::checkpoint_topic(territory, id),
            note.as_bytes(),
            T0 + 1000,
        )
        .expect("checkpoint");
        assert_eq!(o.alarms, 0, "the checkpoint of {id} verifies");
        tx.commit().expect("commit");
    }
}

/// A counting device: one line `rue` counting person and bicycle, 15-minute windows, `k` 3,
/// no noise (record v3).
pub const LINE_DEVICE: &str = "cpt-1";
pub const LINE_TERRITORY: &str = "fr-lyon";
pub const LINE_MODEL: &str = "nanodet";
pub const LINE_RECORDS: u64 = 4;

/// People in across the line in window `i` (always published), and bicycles out (below `k`,
/// hence suppressed, in even windows).
pub fn line_people_in(i: u64) -> u64 {
    5 + i
}

pub fn line_bicycles_out(i: u64) -> Option<u64> {
    (i % 2 == 1).then_some(3 + i)
}

/// The canonical v3 record of window `i` of [`LINE_DEVICE`].
pub fn record_v3_lines(i: u64, sha256: &str, version: &str) -> Vec<u8> {
    let bikes_out = match line_bicycles_out(i) {
        Some(v) => json!(v),
        None => json!("suppressed"),
    };
    let v = json!({
        "v": 3, "type": "aggregate", "device": LINE_DEVICE, "territory": LINE_TERRITORY, "seq": i,
        "model": {"id": LINE_MODEL, "version": version, "sha256": sha256},
        "window": {"index": i, "start": aggregate::window::rfc3339(T0 + i as i64 * WINDOW_MS),
                   "length_ms": WINDOW_MS, "partial": false, "clock_jump_ms": 0, "clock_jumps": 0},
        "aggregates": {"line_count": {"rue": {
            "bicycle": {"in": "suppressed", "out": bikes_out},
            "person": {"in": line_people_in(i), "out": 4},
        }}},
        "privacy": {"k": K, "count_step": 1, "share_step_ppm": 1, "level_step_milli": 1,
                    "unit": "none", "epsilon_milli": 0, "noise": null},
    });
    let bytes = aggregate::canonical::to_vec(&v).expect("canonical");
    aggregate::RecordView::parse(&bytes).expect("a valid v3 record");
    bytes
}

impl Fixture {
    /// Enrols [`LINE_DEVICE`] with the NanoDet card and ingests its [`LINE_RECORDS`] records.
    pub fn add_line_device(&self) {
        self.add_device(
            (LINE_TERRITORY, LINE_DEVICE),
            "models/nanodet/card.toml",
            31,
            LINE_RECORDS,
            &record_v3_lines,
        );
    }
}

/// A sound device: FireRedVAD's AED (speech, singing, music) in 15-minute windows, unit
/// "none" (record v4).
pub const SOUND_DEVICE: &str = "son-1";
pub const SOUND_TERRITORY: &str = "fr-lyon";
pub const SOUND_MODEL: &str = "firered-aed";
pub const SOUND_RECORDS: u64 = 3;

/// The share of window `i` with music, in ppm.
pub fn sound_music_ppm(i: u64) -> u64 {
    250_000 * (i + 1)
}

/// The canonical v4 record of window `i` of [`SOUND_DEVICE`].
pub fn record_v4_sounds(i: u64, sha256: &str, version: &str) -> Vec<u8> {
    let share = |ppm: u64| json!({"observed_ms": WINDOW_MS, "share_ppm": ppm});
    let v = json!({
        "v": 4, "type": "aggregate", "device": SOUND_DEVICE, "territory": SOUND_TERRITORY, "seq": i,
        "model": {"id": SOUND_MODEL, "version": version, "sha256": sha256},
        "window": {"index": i, "start": aggregate::window::rfc3339(T0 + i as i64 * WINDOW_MS),
                   "length_ms": WINDOW_MS, "partial": false, "clock_jump_ms": 0, "clock_jumps": 0},
        "aggregates": {"class_share": {
            "music": share(sound_music_ppm(i)), "singing": share(0), "speech": share(100_000),
        }},
        "privacy": {"k": K, "count_step": 1, "share_step_ppm": 1, "level_step_milli": 1,
                    "unit": "none", "epsilon_milli": 0, "noise": null},
    });
    let bytes = aggregate::canonical::to_vec(&v).expect("canonical");
    aggregate::RecordView::parse(&bytes).expect("a valid v4 record");
    bytes
}

impl Fixture {
    /// Enrols [`SOUND_DEVICE`] with the AED card and ingests its [`SOUND_RECORDS`] records.
    pub fn add_sound_device(&self) {
        self.add_device(
            (SOUND_TERRITORY, SOUND_DEVICE),
            "models/firered-aed/card.toml",
            32,
            SOUND_RECORDS,
            &record_v4_sounds,
        );
    }
}

/// A counting device over a whole year (issue 21: a device page at year zoom): NanoDet on a
/// square, 2-hour windows from a year before [`T0`] to `T0`, people present at once
/// (`count`) and crossing the line `parvis` each way (`line_count`), `k` 3, no noise
/// (record v4), enrolled with its controller, purpose and legal basis.
pub const YEAR_DEVICE: &str = "place-1";
pub const YEAR_TERRITORY: &str = "fr-lyon";
pub const YEAR_WINDOW_MS: i64 = 2 * 3_600_000;
pub const YEAR_RECORDS: u64 = 365 * 12;
/// Frames analysed per window (one a second).
pub const YEAR_FRAMES: u64 = 7_200;

/// People in view at once on average in window `i`, in hundredths: busy afternoons, quiet
/// nights, busier summers.
pub fn year_present_centi(i: u64) -> u64 {
    let hour = (i % 12) * 2;
    let day = i / 12;
    let daily = match hour {
        0..=5 => 5,
        6..=9 => 60,
        10..=13 => 180,
        14..=19 => 260,
        _ => 90,
    };
    let season = 100 + (((day as f64) / 365.0 * std::f64::consts::TAU).cos() * -30.0) as i64;
    (daily * season as u64 / 100) + (i * 37 % 23)
}

/// People crossing the line inwards in window `i` (below `k` at night: suppressed).
pub fn year_people_in(i: u64) -> u64 {
    year_present_centi(i) / 4
}

/// The canonical v4 record of window `i` of [`YEAR_DEVICE`].
pub fn record_year(i: u64, sha256: &str, version: &str) -> Vec<u8> {
    let start = T0 - 365 * 86_400_000 + i as i64 * YEAR_WINDOW_MS;
    let published = |v: u64| {
        if v >= K {
            json!(v)
        } else {
            json!("suppressed")
        }
    };
    let total = year_present_centi(i) * YEAR_FRAMES / 100;
    let v = json!({
        "v": 4, "type": "aggregate", "device": YEAR_DEVICE, "territory": YEAR_TERRITORY, "seq": i,
        "model": {"id": "nanodet", "version": version, "sha256": sha256},
        "window": {"index": i, "start": aggregate::window::rfc3339(start),
                   "length_ms": YEAR_WINDOW_MS, "partial": false, "clock_jump_ms": 0, "clock_jumps": 0},
        "aggregates": {
            "count": {"person": {"frames": YEAR_FRAMES, "max": published(year_present_centi(i) / 40), "total": published(total)}},
            "line_count": {"parvis": {"person": {"in": published(year_people_in(i)), "out": published(year_people_in(i + 1))}}},
        },
        "privacy": {"k": K, "count_step": 1, "share_step_ppm": 1, "level_step_milli": 1,
                    "unit": "none", "epsilon_milli": 0, "noise": null},
    });
    let bytes = aggregate::canonical::to_vec(&v).expect("canonical");
    aggregate::RecordView::parse(&bytes).expect("a valid v4 record");
    bytes
}

impl Fixture {
    /// Enrols [`YEAR_DEVICE`] (with what a town states in the register) and ingests its
    /// [`YEAR_RECORDS`] records.
    pub fn add_year_device(&self) {
        let card =
            hub::enrolment::cards::load(&repo().join("models/nanodet/card.toml")).expect("card");
        let key = key_for(&hub_link::origin(YEAR_TERRITORY, YEAR_DEVICE), 41);
        hub::enrolment::enroll(
            &self.devices_path,
            RawDevice {
                id: YEAR_DEVICE.into(),
                territory: YEAR_TERRITORY.into(),
                key: key.verifier().to_string(),
                enrolled: Some("2025-02-20T09:30:00Z".into()),
                site: Some(hub::enrolment::RawSite {
                    name: "Place des Terreaux (test)".into(),
                    lat: 45.7676,
                    lon: 4.8344,
                    insee: Some("69381".into()),
                }),
                models: vec![card.clone()],
                controller: Some("Ville de Lyon, direction des espaces publics (données de test)".into()),
                purpose: Some("Mesurer la fréquentation de la place pour adapter le nettoyage et l'éclairage (données de test)".into()),
                legal_basis: Some("RGPD art. 6.1.e, mission d'intérêt public (données de test)".into()),
                ..Default::default()
            },
        )
        .expect("enroll");
        let enrolment = Enrolment::load(&self.devices_path).expect("enrolment");
        let version = card.version.clone().unwrap_or_default();
        let conn = self.conn();
        let tx = conn.transaction().expect("tx");
        let topic = hub_link::agg_topic(YEAR_TERRITORY, YEAR_DEVICE, &card.id);
        for i in 0..YEAR_RECORDS {
            let entry = record_year(i, &card.sha256, &version);
            let sig = audit::sign_entry(&key, &entry);
            let payload = hub_link::encode_record(i, &entry, &sig).expect("envelope");
            let (o, _) =
                hub::ingest::handle(&tx, &enrolment, &topic, &payload, T0).expect("ingest");
            assert_eq!(o.stored, 1, "record {i} of {YEAR_DEVICE} stored");
        }
        tx.commit().expect("commit");
        *self.enrolment.write().unwrap() = enrolment;
    }
}
