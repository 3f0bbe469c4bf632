//! The fleet simulator against a real mosquitto and the real hub: a backlog from every device
//! at once, then live records; every record stored once and acknowledged, no alarm (a false
//! GAP, ROLLBACK or FORK would be one), every ack's root the device's own.

use std::sync::Arc;
use std::time::Duration;

use tests::fleet::{Plan, run_local};
use tests::system::{say, serial};

#[test]
fn a_fleet_s_backlog_and_live_records_are_all_stored_once_and_acknowledged() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let plan = Plan {
        devices: 60,
        territories: 6,
        backlog: 150,
        window: Duration::from_millis(500),
        live_for: Duration::from_secs(6),
        checkpoint_every: 40,
        settle: Duration::from_secs(90),
        ..Plan::default()
    };
    let (report, hub) = run_local(plan.clone(), tmp.path(), &|_| {}, Arc::new(|_| {})).unwrap();
    let line = format!(
        "FIGURES fleet-sqlite: {} | {}",
        report.summary(),
        hub.summary()
    );
    say(&line);
    let live = plan.devices as u64 * 12;
    assert_eq!(report.appended, 60 * 150 + live, "{line}");
    assert_eq!(report.devices_behind, 0, "{line}");
    assert_eq!(report.acked, report.appended, "{line}");
    assert_eq!(hub.stored, report.appended, "{line}");
    assert_eq!(hub.devices, plan.devices, "{line}");
    assert!(hub.alarms.is_empty(), "{line}");
    assert_eq!((report.bad_acks, report.root_mismatches), (0, 0), "{line}");
    assert!(report.backlog_drained.is_some(), "{line}");
    assert_eq!(report.latencies_ms.len() as u64, live, "{line}");
    assert_eq!(hub.exit.and_then(|s| s.code()), Some(0), "{line}");
}
