//! Figures, not pass/fail thresholds: hub ingest (records verified and stored per second, in
//! process, no broker), end-to-end publish throughput (agent -> mosquitto -> hub, acked), and
//! latency from a window's close to its storage at the hub (real-time replay).

use std::time::{Duration, Instant};

use tests::broker::Mosquitto;
use tests::system::{Hub, say, serial};

#[test]
fn throughput_and_latency() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(tmp.path());
    let mut hub = Hub::setup(&tmp.path().join("hub"), broker.port, "", "30s");
    let dev = hub.enroll_new(&tmp.path().join("dev"), "d-001", broker.port, 100);
    hub.start();

    // End to end: the agent appends and publishes; done when the hub acked everything.
    let t = Instant::now();
    assert!(dev.spawn("run").wait().unwrap().success());
    let e2e = t.elapsed();
    let (size, _) = dev.log_state();
    assert!(hub.wait_stored(&dev.id, size, Duration::from_secs(20)));

    // Hub ingest, in process on a fresh database, from the same payloads.
    let recs = hub.records(&dev.id);
    let payloads: Vec<Vec<u8>> = recs
        .iter()
        .map(|r| {
            hub_link::encode_record(r.seq, &r.entry, &r.signature.clone().try_into().unwrap())
                .unwrap()
        })
        .collect();
    let enrolment = hub::enrolment::Enrolment::load(&tmp.path().join("hub/devices.toml")).unwrap();
    let conn = hub::db::store::open(&tmp.path().join("bench.sqlite")).unwrap();
    let topic = "iat/v1/fr-test/d-001/agg/silero-vad-16k";
    let t = Instant::now();
    for chunk in payloads.chunks(512) {
        let tx = conn.transaction().unwrap();
        for p in chunk {
            let (o, _) = hub::ingest::handle(&tx, &enrolment, topic, p, 0).unwrap();
            assert_eq!(o.stored, 1);
        }
        tx.commit().unwrap();
    }
    let ingest = t.elapsed();

    // Latency: a real-time replay (4x), so window labels are wall-clock times.
    hub.kill();
    let lat = hub.enroll_new(&tmp.path().join("lat"), "d-lat", broker.port, 1);
    let cfg = std::fs::read_to_string(&lat.config)
        .unwrap()
        .replace("start = \"2026-11-30T10:00:00Z\"", "speed = 4.0");
    std::fs::write(&lat.config, cfg).unwrap();
    hub.start();
    assert!(lat.spawn("run").wait().unwrap().success());
    let (lsize, _) = lat.log_state();
    assert!(hub.wait_stored(&lat.id, lsize, Duration::from_secs(20)));
    let conn = hub::db::store::open(&tmp.path().join("hub/hub.sqlite")).unwrap();
    let mut q = conn
        .prepare("SELECT entry, stored_ms FROM records WHERE device = 'd-lat' ORDER BY seq")
        .unwrap();
    let mut lats: Vec<i64> = q
        .query_map(hub::params![], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
        })
        .unwrap()
        .filter_map(|r| r.ok())
        .filter_map(|(e, stored)| {
            let v: serde_json::Value = serde_json::from_slice(&e).ok()?;
            let w = &v["window"];
            if w["partial"].as_bool()? {
                return None; // closed by the end of the data, not by the clock
            }
            let start = w["start"].as_str()?;
            let close = parse_ms(start)? + w["length_ms"].as_i64()?;
            Some(stored - close)
        })
        .collect();
    lats.sort();
    let pct = |p: usize| lats.get((lats.len() * p / 100).min(lats.len().saturating_sub(1)));
    say(&format!(
        "BENCH hub ingest (verify + store, in process, 512 per transaction): {:.0} records/s ({} records in {:.2} s)",
        payloads.len() as f64 / ingest.as_secs_f64(),
        payloads.len(),
        ingest.as_secs_f64()
    ));
    say(&format!(
        "BENCH agent run -> mosquitto -> hub, all acknowledged: {:.0} records/s ({size} records in {:.2} s, inference and fsync included)",
        size as f64 / e2e.as_secs_f64(),
        e2e.as_secs_f64()
    ));
    say(&format!(
        "BENCH latency window close -> stored at the hub: p50 {:?} ms, max {:?} ms over {} windows",
        pct(50),
        lats.last(),
        lats.len()
    ));
    assert!(!lats.is_empty());
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` -> Unix ms.
fn parse_ms(s: &str) -> Option<i64> {
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (h, mi, se, ms) = (n(11..13)?, n(14..16)?, n(17..19)?, n(20..23)?);
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + se * 1000 + ms)
}
