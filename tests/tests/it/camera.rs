//! A live RTSP camera that dies and comes back, end to end: GStreamer's RTSP server on
//! loopback, the agent's camera source, mosquitto, the hub. The source restarts with a back-off
//! and picks the stream up again; the records show frames, none during the outage, frames
//! again; the hub, from the device's status reports, raises `source_restarting` during the
//! outage and clears it once the camera is back; everything appended reaches the hub.

use std::io::Read as _;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tests::broker::Mosquitto;
use tests::system::{Device, Hub, root, say, serial};

/// GStreamer's RTSP server on loopback, streaming the bundled image as H.264.
fn rtsp_server(port: u16) -> Child {
    let mut child = Command::new("/usr/bin/python3")
        .arg(root().join("tests/tools/rtsp-server.py"))
        .arg(port.to_string())
        .arg(root().join("models/samples/people.png"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("Debian's python3 with GStreamer's RTSP server (cargo xtask test installs them)");
    let mut ready = [0u8; 6];
    child
        .stdout
        .take()
        .unwrap()
        .read_exact(&mut ready)
        .expect("the RTSP server says ready (see its error above)");
    assert_eq!(&ready, b"ready\n");
    child
}

/// Frames analysed in each stored record's window, in seq order.
fn frames(hub: &Hub, device: &str) -> Vec<u64> {
    hub.records(device)
        .iter()
        .map(|r| {
            let v = aggregate::RecordView::parse(&r.entry).expect("a stored record parses");
            v.aggregates.count.get("face").map_or(0, |c| c.frames)
        })
        .collect()
}

#[test]
fn an_rtsp_camera_outage_is_recovered_and_shown_at_the_hub() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(tmp.path());
    let mut hub = Hub::setup(&tmp.path().join("hub"), broker.port, "", "30s");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pipeline = format!(
        "\n[[pipeline]]\nname = \"street\"\nmodel = \"{{root}}/models/centerface-int8/card.toml\"\n\
         aggregates = [\"count\"]\nwindow = \"2s\"\n[pipeline.source]\nkind = \"camera\"\n\
         input = \"rtsp://127.0.0.1:{port}/cam\"\nwidth = 320\nheight = 256\nfps = 5\n\
         stall_timeout = \"2s\"\n[pipeline.privacy]\nk = 1\n"
    );
    let device = Device::setup_with(
        &tmp.path().join("cam"),
        "cam-1",
        broker.port,
        &hub.vkey(),
        "status_interval = \"1s\"",
        &pipeline,
    );
    hub.enroll_cards(&device, &["models/centerface-int8/card.toml"]);
    hub.start();
    let mut server = rtsp_server(port);
    let mut agent = device.spawn("run");
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", agent.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    std::thread::sleep(Duration::from_secs(8));
    let fds_before = fds();
    // The camera dies: windows go on closing, with no frame; the source restarts, backing off.
    server.kill().unwrap();
    server.wait().unwrap();
    std::thread::sleep(Duration::from_secs(6));
    let conn = || hub::db::store::open(&hub.db).expect("hub db");
    let during = hub::health::alarms(&conn(), Some("cam-1"), None, 10).unwrap();
    let mut server = rtsp_server(port);
    // Restarts back off 1, 2, 4 s...: within 15 s the stream is back.
    std::thread::sleep(Duration::from_secs(15));
    // Each restart started a new ffmpeg with new pipes: none of the dead one's is left open.
    let fds_after = fds();
    assert!(
        fds_before > 0 && fds_after <= fds_before + 1,
        "descriptors {fds_before} -> {fds_after} across the outage"
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(agent.id() as libc::pid_t, libc::SIGTERM) };
    let status = agent.wait().unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    let log = std::fs::read_to_string(device.dir.join("agent.log")).unwrap_or_default();
    assert!(status.success(), "{log}");
    assert!(log.contains("restarting in"), "no restart logged:\n{log}");

    // Everything the device appended is stored at the hub, with no audit alarm.
    let (size, _) = device.log_state();
    assert!(
        hub.wait_stored("cam-1", size, Duration::from_secs(30)),
        "{log}"
    );
    let stats = hub.stats();
    assert!(stats.alarms.is_empty(), "{:?}", stats.alarms);
    // Frames before the outage, none during it, frames again after.
    let f = frames(&hub, "cam-1");
    let first = f.iter().position(|n| *n > 0).expect("frames at first");
    let gap = f[first..].iter().position(|n| *n == 0).map(|g| g + first);
    let gap = gap.unwrap_or_else(|| panic!("no window without frames: {f:?}"));
    assert!(
        f[gap..].iter().any(|n| *n > 0),
        "never picked up again: {f:?}"
    );

    // The hub saw it in the status reports: the alarm raised during the outage, cleared after,
    // and the restart counted in the last report.
    let restarting = |a: &hub::health::HealthAlarm| {
        a.kind == hub::health::SOURCE_RESTARTING && a.subject == "centerface-int8"
    };
    assert!(
        during
            .iter()
            .any(|a| restarting(a) && a.cleared_ms.is_none()),
        "no open source_restarting alarm during the outage: {during:?}"
    );
    let after = hub::health::alarms(&conn(), Some("cam-1"), Some(0), 10).unwrap();
    assert!(
        after
            .iter()
            .any(|a| restarting(a) && a.cleared_ms.is_some()),
        "source_restarting not cleared once the camera was back: {after:?}"
    );
    let last = hub::health::latest(&conn(), "cam-1")
        .unwrap()
        .expect("a report");
    let restarts = last.status.pipelines.first().map_or(0, |p| p.restarts);
    assert!(restarts >= 1, "{:?}", last.status.pipelines);
    say(&format!(
        "FIGURES rtsp-outage: records {} (windows without frames {}) | source restarts {restarts} | agent descriptors before the outage {fds_before}, after {fds_after} | source_restarting raised during it and cleared after",
        f.len(),
        f.iter().filter(|n| **n == 0).count()
    ));
}
