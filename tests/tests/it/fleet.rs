//! The fleet simulator against a real mosquitto and the real hub: a backlog from every device
//! at once, then live records; every record stored once and acknowledged, no alarm (a false
//! GAP, ROLLBACK or FORK would be one), every ack's root the device's own.

use std::sync::Arc;
use std::time::Duration;

use tests::fleet::{Hubs, Plan, run_local};
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
    let (report, hub) = run_local(
        plan.clone(),
        &Hubs::default(),
        tmp.path(),
        &|_| {},
        Arc::new(|_| {}),
    )
    .unwrap();
    let line = format!(
        "FIGURES fleet-{}: {} | {}",
        store(),
        report.summary(),
        hub.summary()
    );
    say(&line);
    let live = plan.devices as u64 * 12;
    all_stored_once(&plan, &report, &hub, live, &line);
    assert!(report.backlog_drained.is_some(), "{line}");
    assert_eq!(report.latencies_ms.len() as u64, live, "{line}");
    assert!(hub.exited_cleanly(), "{line}");
}

/// Every record appended (the backlog and `live` more) stored once and acknowledged, by every
/// device, with acks that verify and name the device's own root, and no alarm.
fn all_stored_once(
    plan: &Plan,
    report: &tests::fleet::Report,
    hub: &tests::fleet::HubOutcome,
    live: u64,
    line: &str,
) {
    assert_eq!(
        report.appended,
        plan.devices as u64 * plan.backlog + live,
        "{line}"
    );
    assert_eq!(report.devices_behind, 0, "{line}");
    assert_eq!(report.acked, report.appended, "{line}");
    assert_eq!(hub.stored, report.appended, "{line}");
    assert_eq!(hub.devices, plan.devices, "{line}");
    assert!(
        hub.alarms.keys().all(|k| k == hub::ingest::UNENROLLED),
        "{line}"
    );
    assert_eq!(hub.rejected, hub.flooded, "{line}");
    assert_eq!((report.bad_acks, report.root_mismatches), (0, 0), "{line}");
}

/// The store the hubs of this run use.
fn store() -> &'static str {
    match std::env::var(hub::db::sql::TEST_POSTGRES) {
        Ok(v) if !v.trim().is_empty() => "postgres",
        _ => "sqlite",
    }
}

/// Whether this run's store takes several hub instances (PostgreSQL); says so when not.
fn several_instances_possible() -> bool {
    let pg = store() == "postgres";
    if !pg {
        say(
            "skipped: several hub instances need PostgreSQL (`cargo xtask test` runs this test on a throwaway cluster)",
        );
    }
    pg
}

/// Issue 16: three hub instances on one PostgreSQL database share the broker's subscription,
/// so one device's records arrive at all three, in any order; one instance is SIGKILLed in
/// the middle and started again. Every record is stored once and acknowledged, no alarm is
/// raised (a false GAP or ROLLBACK from records or checkpoints judged out of order would be
/// one), every ack's root is the device's own.
#[test]
fn three_hub_instances_share_a_fleet_and_survive_a_sigkill() {
    if !several_instances_possible() {
        return;
    }
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let plan = Plan {
        devices: 1000,
        territories: 100,
        backlog: 12,
        window: Duration::from_secs(2),
        live_for: Duration::from_secs(10),
        checkpoint_every: 4,
        settle: Duration::from_secs(120),
        ..Plan::default()
    };
    let hubs = Hubs {
        instances: 3,
        kill_after: Some(Duration::from_secs(4)),
        down_for: Duration::from_secs(2),
        ..Hubs::default()
    };
    let (report, hub) =
        run_local(plan.clone(), &hubs, tmp.path(), &|_| {}, Arc::new(|_| {})).unwrap();
    let line = format!(
        "FIGURES fleet-postgres-3-instances: {} | {}",
        report.summary(),
        hub.summary()
    );
    say(&line);
    all_stored_once(&plan, &report, &hub, plan.devices as u64 * 5, &line);
    assert!(hub.killed, "{line}");
    assert_eq!(hub.exits.len(), 3, "{line}");
    assert!(hub.exited_cleanly(), "{line}");
}

/// Issue 16: three instances share the fleet while unenrolled senders flood them with
/// rejected traffic (counted by every instance into the same coalesced alarm rows, where
/// transactions of different instances could lock rows in opposite orders before they were
/// counted under one lock at the end), and PostgreSQL ends every hub connection in the middle of the run (a restart, a
/// failover). Each instance connects again and goes on: every record is stored once and
/// acknowledged, every rejected message is counted once, no batch is given up.
#[test]
fn three_hub_instances_survive_a_flood_of_rejections_and_a_lost_database_connection() {
    if !several_instances_possible() {
        return;
    }
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let plan = Plan {
        devices: 300,
        territories: 30,
        backlog: 20,
        window: Duration::from_secs(1),
        live_for: Duration::from_secs(10),
        checkpoint_every: 5,
        settle: Duration::from_secs(120),
        ..Plan::default()
    };
    let hubs = Hubs {
        instances: 3,
        flood: 1500,
        sever_db_after: Some(Duration::from_secs(5)),
        ..Hubs::default()
    };
    let (report, hub) =
        run_local(plan.clone(), &hubs, tmp.path(), &|_| {}, Arc::new(|_| {})).unwrap();
    let line = format!(
        "FIGURES fleet-postgres-3-instances-flood: {} | {} | flood {} messages, {} counted; {} reconnection(s) to the database; {} batch(es) given up",
        report.summary(),
        hub.summary(),
        hub.flooded,
        hub.rejected,
        hub.db_reconnections,
        hub.batches_given_up
    );
    say(&line);
    all_stored_once(&plan, &report, &hub, plan.devices as u64 * 10, &line);
    assert!(hub.flooded > 10_000, "{line}");
    assert!(hub.db_reconnections >= 3, "{line}");
    assert_eq!(hub.batches_given_up, 0, "{line}");
    // Coalesced: at most 32 topics, 32 territories and one row for anywhere per hour.
    let rows = hub
        .alarms
        .get(hub::ingest::UNENROLLED)
        .copied()
        .unwrap_or(0);
    assert!((1..=2 * 65).contains(&rows), "{line}");
    assert!(hub.exited_cleanly(), "{line}");
}
