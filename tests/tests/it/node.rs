//! The sensor node end to end: the node firmware under QEMU -> its UART on a loopback TCP port
//! -> `edge-agent run` with a `node` source -> mosquitto -> the hub. Every sound and
//! environment frame the node sent becomes one reading of the window's level statistics; the
//! link's counters reach the hub in the status report; the records verify and name the
//! measurement card.

use std::time::{Duration, Instant};

use tests::broker::Mosquitto;
use tests::node::{self, QemuNode};
use tests::system::{Device, Hub, Spy, serial};

const PIPELINE: &str = r#"
[[pipeline]]
name = "node"
model = "{root}/models/node-levels/card.toml"
aggregates = ["level_stats"]
window = "1s"
[pipeline.source]
kind = "node"
input = "tcp:127.0.0.1:PORT"
[pipeline.privacy]
k = 1
"#;

#[test]
fn the_qemu_node_feeds_the_agent_and_the_hub() {
    let _g = serial();
    let board = node::board();
    let elf = node::build(&board);
    let tmp = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(tmp.path());
    let spy = Spy::start(broker.port, None);
    let mut hub = Hub::setup(&tmp.path().join("hub"), broker.port, "", "30s");
    let mut qemu = QemuNode::start(&board, &elf);
    let dev = Device::setup_with(
        &tmp.path().join("dev"),
        "n-001",
        broker.port,
        &hub.vkey(),
        "",
        &PIPELINE.replace("PORT", &qemu.port.to_string()),
    );
    hub.enroll_cards(&dev, &["models/node-levels/card.toml"]);
    hub.start();
    let agent = dev.spawn("run");
    // The node runs its board's cycles, then exits; the agent then retries the closed link.
    let started = Instant::now();
    while qemu.exited().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the QEMU node did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child's pid, which stays ours until we wait for it.
    unsafe { libc::kill(agent.id() as libc::pid_t, libc::SIGTERM) };
    let mut agent = agent;
    let status = agent.wait().unwrap();
    let log = std::fs::read_to_string(dev.dir.join("agent.log")).unwrap_or_default();
    assert!(status.success(), "agent failed: {log}");
    assert!(log.contains("node 0x"), "no hello from the node: {log}");
    assert!(log.contains("node: the link closed"), "{log}");

    let (size, _) = dev.log_state();
    assert!(dev.verify_log());
    assert!(
        hub.wait_stored(&dev.id, size, Duration::from_secs(10)),
        "{log}"
    );
    let (_, violations) = spy.finish();
    assert!(violations.is_empty(), "{violations:?}");
    let records: Vec<aggregate::RecordView> = hub
        .records(&dev.id)
        .iter()
        .map(|r| aggregate::RecordView::parse(&r.entry).unwrap())
        .collect();
    assert!(records.iter().all(|r| r.model.id == "node-levels"));
    let readings = |name: &str| -> u64 {
        records
            .iter()
            .filter_map(|r| r.aggregates.level_stats.get(name))
            .map(|l| l.n)
            .sum()
    };
    // The board runs 8 cycles: one sound frame each, and an environment frame each (its
    // simulated BME280 always answers).
    let Some(boards::Qemu::System {
        exit_after_cycles: Some(cycles),
        ..
    }) = board.qemu
    else {
        panic!("the emulated node's board sets exit_after_cycles");
    };
    assert_eq!(readings("laeq_db"), cycles as u64, "{records:?}");
    assert_eq!(readings("lzeq_db"), cycles as u64);
    assert_eq!(readings("temperature_c"), cycles as u64);
    assert_eq!(readings("pressure_hpa"), cycles as u64);
    // The simulated sensors read plausible values.
    let t = records
        .iter()
        .find_map(|r| r.aggregates.level_stats.get("temperature_c"))
        .unwrap();
    assert!(
        t.mean_milli
            .is_some_and(|m| (-40_000..=85_000).contains(&m)),
        "{t:?}"
    );

    // The status report: a node source, its frames and no drop on a clean link.
    let conn = hub::db::store::open(&hub.db).unwrap();
    let report = hub::health::latest(&conn, &dev.id)
        .unwrap()
        .expect("the hub kept the device's status report");
    let p = &report.status.pipelines[0];
    assert_eq!(p.source, hub_link::SourceKind::Node);
    assert_eq!(p.model, "node-levels");
    let n = report.status.node.as_ref().expect("node counters");
    assert!(n.frames >= 2 * cycles as u64, "{n:?}");
    assert_eq!((n.dropped, n.missed), (0, 0), "{n:?}");
}
