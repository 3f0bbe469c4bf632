//! Device health through the hub's own entry points: statuses go through `ingest::handle` as
//! MQTT delivers them, time-driven alarms through `health::evaluate` at chosen times, and the
//! pages and API over HTTP. Each alarm kind is raised once while its cause lasts, cleared when
//! it ends and raised again (a new row) when it comes back; a malformed status changes nothing.

mod common;

use std::time::Duration;

use common::{Fixture, MODEL, T0};
use hub::health::{self, Limits};
use hub_link::{Clock, NodeStatus, PipelineStatus, SourceKind, SourceState, Status};
use serde_json::Value;

/// A day after the fixture's data: reports and checks happen from here on.
const R: i64 = T0 + 86_400_000;
const GIB: u64 = 1 << 30;

fn report(at_ms: i64) -> Status {
    Status {
        v: hub_link::status::STATUS_VERSION,
        version: "0.3.1".into(),
        at_ms,
        uptime_s: 60,
        clock: Clock::Synchronised,
        cpu_temp_c: Some(51.5),
        load1: Some(0.7),
        disk_free_bytes: Some(4 * GIB),
        disk_total_bytes: Some(8 * GIB),
        outbox_depth: 0,
        oldest_unacked_s: None,
        pipelines: vec![PipelineStatus {
            model: MODEL.into(),
            source: SourceKind::Camera,
            state: SourceState::Running,
            window_s: 60,
            captured: 1000,
            inferred: 980,
            dropped: 20,
            restarts: 0,
            p50_ms: Some(5.3),
            p99_ms: Some(9.1),
        }],
        node: None,
    }
}

/// Delivers a status payload of a fr-lyon device at `now_ms`, in its own transaction; a status
/// never raises an audit alarm nor asks for an ack.
fn deliver(fx: &Fixture, device: &str, payload: &[u8], now_ms: i64) {
    let conn = fx.conn();
    let tx = conn.transaction().unwrap();
    let e = fx.enrolment.read().unwrap().clone();
    let (o, ack) = hub::ingest::handle(
        &tx,
        &e,
        &hub_link::status_topic("fr-lyon", device),
        payload,
        now_ms,
    )
    .unwrap();
    assert_eq!((o.alarms, ack), (0, None));
    tx.commit().unwrap();
}

fn send(fx: &Fixture, device: &str, s: &Status, now_ms: i64) {
    deliver(fx, device, &s.to_payload(), now_ms);
}

fn evaluate(fx: &Fixture, now_ms: i64, limits: &Limits) -> health::Changes {
    let conn = fx.conn();
    let tx = conn.transaction().unwrap();
    let e = fx.enrolment.read().unwrap().clone();
    let c = health::evaluate(&tx, &e, now_ms, limits).unwrap();
    tx.commit().unwrap();
    c
}

/// Every health alarm of `kind` for `device`, oldest first: (subject, since, raised, cleared).
fn rows(fx: &Fixture, device: &str, kind: &str) -> Vec<(String, i64, i64, Option<i64>)> {
    let mut v: Vec<_> = health::alarms(&fx.conn(), Some(device), Some(i64::MIN), 1000)
        .unwrap()
        .into_iter()
        .filter(|a| a.kind == kind)
        .map(|a| (a.subject, a.since_ms, a.raised_ms, a.cleared_ms))
        .collect();
    v.sort_by_key(|r| r.2);
    v
}

fn audit_alarms(fx: &Fixture) -> i64 {
    fx.conn()
        .query_row("SELECT COUNT(*) FROM alarms", hub::params![], |r| r.get(0))
        .unwrap()
}

/// A report `i` minutes after R, so that each is a different report.
fn nth(i: i64) -> (Status, i64) {
    let at = R + i * 60_000;
    let mut s = report(at);
    s.uptime_s = 60 + 60 * i as u64;
    (s, at)
}

#[test]
fn disk_low_is_raised_once_cleared_above_fifteen_percent_and_raised_again() {
    let fx = Fixture::new();
    let audit = audit_alarms(&fx);
    let disk = |i: i64, free: u64| {
        let (mut s, at) = nth(i);
        s.disk_free_bytes = Some(free);
        (s, at)
    };
    // 5 %, three times: one alarm.
    for i in 0..3 {
        let (s, at) = disk(i, 8 * GIB / 20);
        send(&fx, "dev-1", &s, at);
    }
    assert_eq!(
        rows(&fx, "dev-1", health::DISK_LOW),
        vec![(String::new(), R, R, None)]
    );
    // 12.5 %: between the thresholds, still open.
    let (s, at) = disk(3, GIB);
    send(&fx, "dev-1", &s, at);
    assert_eq!(rows(&fx, "dev-1", health::DISK_LOW)[0].3, None);
    // 25 %: cleared at that report.
    let (s, at) = disk(4, 2 * GIB);
    send(&fx, "dev-1", &s, at);
    assert_eq!(
        rows(&fx, "dev-1", health::DISK_LOW),
        vec![(String::new(), R, R, Some(R + 240_000))]
    );
    // 200 MiB free: low again, a new alarm.
    let (s, at) = disk(5, 200 << 20);
    send(&fx, "dev-1", &s, at);
    let r = rows(&fx, "dev-1", health::DISK_LOW);
    assert_eq!(r.len(), 2);
    assert_eq!(r[1], (String::new(), R + 300_000, R + 300_000, None));
    assert_eq!(audit_alarms(&fx), audit, "health is never an audit alarm");
}

#[test]
fn a_restarting_source_is_raised_once_and_cleared_when_running_without_growth() {
    let fx = Fixture::new();
    let kind = health::SOURCE_RESTARTING;
    let send_n = |i: i64, state: SourceState, restarts: u64| {
        let (mut s, at) = nth(i);
        s.pipelines[0].state = state;
        s.pipelines[0].restarts = restarts;
        send(&fx, "dev-1", &s, at);
    };
    send_n(0, SourceState::Running, 0);
    assert!(rows(&fx, "dev-1", kind).is_empty());
    // The counter grew since the previous report: raised, once.
    send_n(1, SourceState::Running, 1);
    send_n(2, SourceState::Restarting, 2);
    send_n(3, SourceState::Starting, 2);
    assert_eq!(
        rows(&fx, "dev-1", kind),
        vec![(MODEL.to_owned(), R + 60_000, R + 60_000, None)]
    );
    // Running, no growth: cleared.
    send_n(4, SourceState::Running, 2);
    assert_eq!(rows(&fx, "dev-1", kind)[0].3, Some(R + 240_000));
    // Restarting again: a second alarm.
    send_n(5, SourceState::Restarting, 2);
    send_n(6, SourceState::Restarting, 2);
    let r = rows(&fx, "dev-1", kind);
    assert_eq!(r.len(), 2);
    assert_eq!(r[1], (MODEL.to_owned(), R + 300_000, R + 300_000, None));
}

#[test]
fn a_backlog_needs_three_growing_reports_and_an_old_result() {
    let fx = Fixture::new();
    let kind = health::BACKLOG;
    let send_n = |i: i64, depth: u64, oldest: Option<u64>| {
        let (mut s, at) = nth(i);
        s.outbox_depth = depth;
        s.oldest_unacked_s = oldest;
        send(&fx, "dev-1", &s, at);
    };
    // Growing but young (threshold: 600 s, the windows are 60 s).
    send_n(0, 10, Some(300));
    send_n(1, 20, Some(360));
    send_n(2, 30, Some(420));
    assert!(rows(&fx, "dev-1", kind).is_empty());
    // Old but the last three depths did not all grow.
    send_n(3, 30, Some(700));
    assert!(rows(&fx, "dev-1", kind).is_empty());
    send_n(4, 40, Some(760));
    assert!(
        rows(&fx, "dev-1", kind).is_empty(),
        "30, 30, 40 is not growth"
    );
    send_n(5, 50, Some(820));
    assert_eq!(
        rows(&fx, "dev-1", kind),
        vec![(String::new(), R + 300_000 - 820_000, R + 300_000, None)]
    );
    send_n(6, 60, Some(880));
    send_n(7, 60, Some(940));
    assert_eq!(rows(&fx, "dev-1", kind).len(), 1);
    // The hub acknowledged: nothing older than the threshold waits.
    send_n(8, 5, Some(20));
    assert_eq!(rows(&fx, "dev-1", kind)[0].3, Some(R + 480_000));
    for (i, d) in [(9, 6), (10, 7), (11, 8)] {
        send_n(i, d, Some(601 + i as u64));
    }
    let r = rows(&fx, "dev-1", kind);
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].3, None);
}

#[test]
fn offline_by_last_will_and_by_staleness() {
    let fx = Fixture::new();
    let l = Limits::new(Duration::from_secs(180));
    let kind = health::OFFLINE;
    let status = |id: &str| -> Value {
        let d: Value =
            serde_json::from_str(&get(&fx.url(&format!("/api/devices/{id}"))).1).unwrap();
        d["device"]["status"].clone()
    };
    // No pipeline: this test is about presence alone.
    let nth = |i| {
        let (mut s, at) = nth(i);
        s.pipelines.clear();
        (s, at)
    };
    // The fixture's dev-2 published its last will: offline since then.
    assert_eq!(
        rows(&fx, "dev-2", kind),
        vec![(String::new(), T0 + 2000, T0 + 2000, None)]
    );
    let (s, _) = nth(0);
    send(&fx, "dev-1", &s, R);
    assert_eq!(evaluate(&fx, R + 180_000, &l), health::Changes::default());
    assert!(rows(&fx, "dev-1", kind).is_empty());
    assert_eq!(status("dev-1"), "online");
    // No report for more than status_stale: offline since the last report, once.
    assert_eq!(evaluate(&fx, R + 181_000, &l).raised, 1);
    assert_eq!(evaluate(&fx, R + 600_000, &l).raised, 0);
    assert_eq!(
        rows(&fx, "dev-1", kind),
        vec![(String::new(), R, R + 181_000, None)]
    );
    assert_eq!(status("dev-1"), "offline", "the dashboard sees it too");
    // A report: online again.
    let (s, at) = nth(11);
    send(&fx, "dev-1", &s, at);
    assert_eq!(rows(&fx, "dev-1", kind)[0].3, Some(R + 660_000));
    assert_eq!(status("dev-1"), "online");
    // The last will: offline at once, a second row; checks do not add a third.
    deliver(&fx, "dev-1", b"offline", R + 700_000);
    evaluate(&fx, R + 2_000_000, &l);
    let r = rows(&fx, "dev-1", kind);
    assert_eq!(r.len(), 2);
    assert_eq!(r[1], (String::new(), R + 700_000, R + 700_000, None));
    // An older agent's bare `online` clears it, and is never stale: it sends no reports.
    deliver(&fx, "dev-2", b"online", R);
    assert_eq!(rows(&fx, "dev-2", kind)[0].3, Some(R));
    evaluate(&fx, R + 86_400_000, &l);
    assert_eq!(rows(&fx, "dev-2", kind).len(), 1);
    assert_eq!(status("dev-2"), "online");
}

#[test]
fn a_silent_model_is_raised_after_two_windows_and_cleared_by_a_record() {
    let fx = Fixture::new();
    // Long enough that the reports stay fresh through this test.
    let l = Limits::new(Duration::from_secs(3600));
    let kind = health::MODEL_SILENT;
    // The agent started 60 s before its report; the last record of dev-1 is a day older.
    let (s, _) = nth(0);
    send(&fx, "dev-1", &s, R);
    let start = R - 60_000;
    assert_eq!(evaluate(&fx, start + 120_000, &l).raised, 0);
    assert_eq!(evaluate(&fx, start + 120_001, &l).raised, 1);
    evaluate(&fx, start + 300_000, &l);
    assert_eq!(
        rows(&fx, "dev-1", kind),
        vec![(MODEL.to_owned(), start, start + 120_001, None)]
    );
    // A verified record arrives: cleared at the next check.
    let card =
        hub::enrolment::cards::load(&common::repo().join("models/centerface-int8/card.toml"))
            .unwrap();
    let dev = &fx.devs[0];
    let entry = common::record(
        dev,
        288,
        &card.sha256,
        card.version.as_deref().unwrap_or(""),
    );
    let sig = audit::sign_entry(&dev.key, &entry);
    let payload = hub_link::encode_record(288, &entry, &sig).unwrap();
    let arrived = start + 400_000;
    {
        let conn = fx.conn();
        let tx = conn.transaction().unwrap();
        let e = fx.enrolment.read().unwrap().clone();
        let (o, _) = hub::ingest::handle(
            &tx,
            &e,
            &hub_link::agg_topic("fr-lyon", "dev-1", MODEL),
            &payload,
            arrived,
        )
        .unwrap();
        assert_eq!(o.stored, 1);
        tx.commit().unwrap();
    }
    assert_eq!(evaluate(&fx, arrived + 1000, &l).cleared, 1);
    assert_eq!(rows(&fx, "dev-1", kind)[0].3, Some(arrived + 1000));
    // Two windows later without another: a new alarm, since that record.
    assert_eq!(evaluate(&fx, arrived + 120_000, &l).raised, 0);
    assert_eq!(evaluate(&fx, arrived + 120_001, &l).raised, 1);
    let r = rows(&fx, "dev-1", kind);
    assert_eq!(r.len(), 2);
    assert_eq!(r[1], (MODEL.to_owned(), arrived, arrived + 120_001, None));
    // A replay that ended is not silent.
    let (mut s, at) = nth(20);
    s.pipelines[0].state = SourceState::Ended;
    send(&fx, "dev-1", &s, at);
    evaluate(&fx, at + 1000, &l);
    assert_eq!(rows(&fx, "dev-1", kind)[1].3, Some(at + 1000));
}

#[test]
fn a_silent_model_of_an_offline_device_is_not_raised() {
    let fx = Fixture::new();
    let l = Limits::new(Duration::from_secs(180));
    let (s, _) = nth(0);
    send(&fx, "dev-1", &s, R);
    // Stale at R + 181 s: offline, and the model's silence is not added to it.
    evaluate(&fx, R + 600_000, &l);
    assert_eq!(rows(&fx, "dev-1", health::OFFLINE).len(), 1);
    assert!(rows(&fx, "dev-1", health::MODEL_SILENT).is_empty());
}

/// Everything the health side and presence store, as text.
fn snapshot(fx: &Fixture) -> String {
    let conn = fx.conn();
    let mut out = String::new();
    for q in [
        "SELECT device, received_ms, report FROM health_reports ORDER BY id",
        "SELECT id, device, kind, subject, since_ms, raised_ms, cleared_ms, detail FROM health_alarms ORDER BY id",
        "SELECT device, status, status_ms, seen_ms FROM presence ORDER BY device",
        "SELECT id, kind, device FROM alarms ORDER BY id",
    ] {
        let mut st = conn.prepare(q).unwrap();
        let mut rows = st.query(hub::params![]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            for i in 0..r.len() {
                let v: hub::db::sql::Value = r.get(i).unwrap();
                out.push_str(&format!("{v:?}|"));
            }
            out.push('\n');
        }
    }
    out
}

#[test]
fn a_malformed_or_repeated_status_changes_nothing() {
    let fx = Fixture::new();
    let (mut s, _) = nth(0);
    s.disk_free_bytes = Some(GIB / 10);
    send(&fx, "dev-1", &s, R);
    let before = snapshot(&fx);
    assert!(before.contains("disk_low"), "{before}");
    let good = String::from_utf8(s.to_payload()).unwrap();
    let mut bad: Vec<Vec<u8>> = vec![
        b"garbage".to_vec(),
        b"".to_vec(),
        b"OFFLINE".to_vec(),
        vec![0xff, 0xfe],
        good.replacen('{', "{\"note\":\"frame 12: 3 faces\",", 1)
            .into_bytes(),
        good.replace("\"v\":1", "\"v\":2").into_bytes(),
        good.replace("\"outbox_depth\":0", "\"outbox_depth\":-1")
            .into_bytes(),
        vec![b' '; hub_link::status::MAX_STATUS_BYTES + 1],
    ];
    let mut wide = s.clone();
    wide.disk_free_bytes = Some(9 * GIB);
    bad.push(wide.to_payload());
    for (i, p) in bad.iter().enumerate() {
        deliver(&fx, "dev-1", p, R + 60_000 + i as i64);
    }
    // The same report again (a retained message redelivered): not even its time changes.
    send(&fx, "dev-1", &s, R + 120_000);
    assert_eq!(snapshot(&fx), before);
    // And a device that is not enrolled, or enrolled in another territory, is ignored.
    let e = fx.enrolment.read().unwrap().clone();
    let conn = fx.conn();
    let tx = conn.transaction().unwrap();
    for topic in [
        hub_link::status_topic("fr-lyon", "ghost"),
        hub_link::status_topic("fr-nantes", "dev-1"),
    ] {
        let (o, ack) = hub::ingest::handle(&tx, &e, &topic, b"offline", R).unwrap();
        assert_eq!((o.alarms, ack), (0, None));
        hub::ingest::handle(&tx, &e, &topic, &s.to_payload(), R).unwrap();
    }
    tx.commit().unwrap();
    assert_eq!(snapshot(&fx), before);
}

fn get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent.get(url).call().unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

#[test]
fn the_device_page_dashboard_and_api_show_health_in_french() {
    let fx = Fixture::new();
    // Reports close to the real time: the API lists alarms cleared in the last 7 days.
    let now = hub::mqtt::now_ms();
    let mut s = report(now);
    s.uptime_s = 3 * 86_400 + 4 * 3_600 + 125;
    s.disk_free_bytes = Some(GIB / 4); // 3 % of 8 GiB
    s.outbox_depth = 3;
    s.oldest_unacked_s = Some(12);
    s.node = Some(NodeStatus {
        frames: 12_345,
        dropped: 1,
        missed: 2,
        sensor_errors: 0,
    });
    s.pipelines[0].state = SourceState::Restarting;
    s.pipelines[0].restarts = 4;
    s.clock = Clock::Unsynchronised;
    send(&fx, "dev-1", &s, now - 60_000);

    let (code, page) = get(&fx.url("/device/dev-1"));
    assert_eq!(code, 200, "{page}");
    for want in [
        "État de l'appareil",
        "Alertes de fonctionnement (2)",
        "Le disque est presque plein (3\u{a0}% libre)",
        "La caméra redémarre (modèle centerface-int8)",
        "✓ en ligne",
        "0.3.1",
        "<td id=\"uptime\">3 j 4 h</td>",
        "non synchronisée",
        "51,5\u{a0}°C",
        "0,70",
        "268\u{a0}Mo libres sur 8,6\u{a0}Go (3\u{a0}%)",
        "3 résultats en attente de l'accusé de réception du hub, le plus ancien depuis 12 s",
        "12\u{202f}345 trames reçues",
        "<th scope=\"col\">Inférence p99 (ms)</th>",
        "<td class=\"state\">en redémarrage</td>",
        "<td class=\"num\">9,1</td>",
        "(heure de Paris)",
    ] {
        assert!(page.contains(want), "device page lacks {want:?}");
    }
    assert!(
        page.find("id=\"health-alarms\"").unwrap() < page.find("Territoire").unwrap(),
        "the alarms come first"
    );
    // The same page in English: every part of the device's health, not only the frame.
    let (code, en) = get(&fx.url("/device/dev-1?lang=en"));
    assert_eq!(code, 200);
    for want in [
        "Device state",
        "Operating alerts (2)",
        "The disk is almost full (3% free)",
        "The camera is restarting (model centerface-int8)",
        "✓ online",
        "<td id=\"uptime\">3 d 4 h</td>",
        "not synchronised",
        "51.5\u{a0}°C",
        "268\u{a0}MB free of 8.6\u{a0}GB (3%)",
        "3 results waiting for the hub's acknowledgement, the oldest for 12 s",
        "12,345 frames received",
        "<th scope=\"col\">p99 inference (ms)</th>",
        "<td class=\"state\">restarting</td>",
        "<td class=\"num\">9.1</td>",
        "(Paris time)",
    ] {
        assert!(en.contains(want), "English device page lacks {want:?}");
    }
    for french in [
        "État de l'appareil",
        "redémarre",
        "libres sur",
        "en attente",
        "heure de Paris",
    ] {
        assert!(!en.contains(french), "English device page says {french:?}");
    }

    // dev-2's last will (T0 + 2 s: 01:00 in Paris on 1 March 2026).
    let (_, page2) = get(&fx.url("/device/dev-2"));
    assert!(page2.contains("✗ hors ligne"), "dev-2 page");
    assert!(
        page2.contains("Appareil hors ligne depuis le 1er mars"),
        "dev-2 page"
    );
    assert!(page2.contains("à 01:00"));
    assert!(page2.contains("aucun rapport reçu"));

    let (_, dash) = get(&fx.url("/"));
    assert!(
        dash.contains("3 alertes de fonctionnement en cours."),
        "dashboard"
    );
    for want in [
        "data-device=\"dev-1\" data-kind=\"disk_low\"",
        "data-device=\"dev-1\" data-kind=\"source_restarting\"",
        "data-device=\"dev-2\" data-kind=\"offline\"",
        "Le disque est presque plein (3\u{a0}% libre)",
    ] {
        assert!(dash.contains(want), "dashboard lacks {want:?}");
    }

    // The API: the report as the device sent it, open and recently cleared alarms.
    let mut fine = s.clone();
    fine.at_ms += 60_000;
    fine.pipelines[0].state = SourceState::Running;
    send(&fx, "dev-1", &fine, now);
    let (code, body) = get(&fx.url("/api/devices/dev-1/health"));
    assert_eq!(code, 200, "{body}");
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["online"], true);
    assert_eq!(h["report"]["version"], "0.3.1");
    assert_eq!(h["report"]["pipelines"][0]["restarts"], 4);
    let alarms = h["alarms"].as_array().unwrap();
    let find = |k: &str| alarms.iter().find(|a| a["kind"] == k).unwrap().clone();
    assert_eq!(alarms.len(), 2);
    assert_eq!(find("disk_low")["open"], true);
    assert_eq!(
        find("disk_low")["message"],
        "Le disque est presque plein (3\u{a0}% libre)"
    );
    assert_eq!(find("source_restarting")["open"], false);
    assert_eq!(find("source_restarting")["subject"], MODEL);
    assert_eq!(
        find("source_restarting")["cleared"],
        hub::dates::format(now)
    );
    let devs: Value = serde_json::from_str(&get(&fx.url("/api/devices")).1).unwrap();
    let d1 = devs["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "dev-1")
        .unwrap()
        .clone();
    assert_eq!(d1["health_alarms"], 1);
    assert_eq!(get(&fx.url("/api/devices/nope/health")).0, 404);
    assert_eq!(get(&fx.url("/api/devices/dev-1/health?x=1")).0, 400);
}
