//! A clean run: agent -> mosquitto -> hub, every record stored once, verified, acknowledged;
//! no alarm; every payload on the broker is an aggregate record, checkpoint, ack or status;
//! SIGTERM stops the hub with status 0.

use std::time::Duration;

use tests::broker::Mosquitto;
use tests::system::{Hub, Spy, delivery, figures, serial};

#[test]
fn clean_run_delivers_everything_once_without_alarms() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(tmp.path());
    let spy = Spy::start(broker.port, None);
    let mut hub = Hub::setup(&tmp.path().join("hub"), broker.port, "", "30s");
    let dev = hub.enroll_new(&tmp.path().join("dev"), "d-001", broker.port, 3);
    hub.start();
    let status = dev.spawn("run").wait().unwrap();
    assert!(
        status.success(),
        "agent failed: {}",
        std::fs::read_to_string(dev.dir.join("agent.log")).unwrap_or_default()
    );
    let (size, _) = dev.log_state();
    assert!(hub.wait_stored(&dev.id, size, Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(300));
    let d = delivery(&hub, &dev);
    let stats = hub.stats();
    let (seen, violations) = spy.finish();
    figures(
        "clean",
        &d,
        stats.alarms.len(),
        stats.alarms.len(),
        (seen, violations.len()),
        "",
    );
    assert!(size >= 50, "{size} records");
    d.assert_clean(&stats.alarms, &violations);
    assert!(seen > size, "the spy saw {seen} payloads");
    assert!(dev.verify_log());
    // The agent's status reports reached the hub and passed its checks; the last one, sent
    // at the orderly stop, holds the pipeline's final counters; a clean run raises no health
    // alarm but `offline` (the agent stopped).
    let conn = hub::db::store::open(&hub.db).unwrap();
    let report = hub::health::latest(&conn, &dev.id)
        .unwrap()
        .expect("the hub kept the device's status report");
    let p = &report.status.pipelines;
    assert_eq!(p.len(), 1, "{report:?}");
    assert_eq!(p[0].model, "silero-vad-16k");
    assert_eq!(p[0].source, hub_link::SourceKind::Replay);
    assert!(
        p[0].inferred > 0 && p[0].inferred == p[0].captured,
        "{report:?}"
    );
    assert_eq!(p[0].state, hub_link::SourceState::Ended);
    assert!(p[0].p50_ms.is_some_and(|m| m > 0.0), "{report:?}");
    assert_eq!(report.status.outbox_depth, 0, "{report:?}");
    let health = hub::health::alarms(&conn, Some(&dev.id), Some(i64::MIN), 100).unwrap();
    assert!(
        health.iter().all(|a| a.kind == hub::health::OFFLINE),
        "{health:?}"
    );
    // An orderly stop: SIGTERM ends the hub with status 0, and nothing stored is lost.
    let status = hub.terminate(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "the hub after SIGTERM: {status:?}"
    );
    assert_eq!(hub.stats().devices[0].next_seq, size);
}
