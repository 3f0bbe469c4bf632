//! Faults during a stream of thousands of records: broker SIGKILL and restart (no
//! persistence), agent SIGKILL at random points, broker SIGSTOP/SIGCONT, a black-holed and a
//! reset link (fault proxy), hub restart. Pass: 0 lost, 0 duplicates stored, every stored
//! record verified, no alarm.

use std::process::Child;
use std::time::{Duration, Instant};

use tests::broker::Mosquitto;
use tests::proxy::{Mode, Proxy};
use tests::system::{Device, Hub, Spy, delivery, figures, serial};

/// A seeded generator for kill times (reproducible runs).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

struct Rig {
    _tmp: tempfile::TempDir,
    broker: Mosquitto,
    hub: Hub,
    dev: Device,
    spy: Spy,
    proxy: Option<Proxy>,
}

/// Broker, spy, hub and one device; with `proxy`, the device reaches the broker through the
/// fault proxy.
fn rig(repeat: u32, proxy: bool) -> Rig {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(tmp.path());
    let spy = Spy::start(broker.port, None);
    let mut hub = Hub::setup(&tmp.path().join("hub"), broker.port, "", "60s");
    let proxy = proxy.then(|| Proxy::start(broker.port));
    let port = proxy.as_ref().map_or(broker.port, |p| p.port);
    let dev = hub.enroll_new(&tmp.path().join("dev"), "d-001", port, repeat);
    hub.start();
    Rig {
        _tmp: tmp,
        broker,
        hub,
        dev,
        spy,
        proxy,
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(Some(s)) = child.try_wait() {
            return s.success();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    false
}

/// Ends a run: the agent drains, the hub catches up; figures are printed and checked.
fn finish(name: &str, r: Rig, mut agent: Child, started: Instant, extra: &str) {
    let ok = wait_exit(&mut agent, Duration::from_secs(90));
    let log = std::fs::read_to_string(r.dev.dir.join("agent.log")).unwrap_or_default();
    assert!(ok, "the agent did not finish cleanly:\n{log}");
    let (size, _) = r.dev.log_state();
    let caught_up = r.hub.wait_stored(&r.dev.id, size, Duration::from_secs(20));
    let elapsed = started.elapsed();
    let d = delivery(&r.hub, &r.dev);
    let stats = r.hub.stats();
    let (seen, violations) = r.spy.finish();
    figures(
        name,
        &d,
        stats.alarms.len(),
        stats.alarms.len(),
        (seen, violations.len()),
        &format!("| {:.1} s {extra}", elapsed.as_secs_f64()),
    );
    assert!(caught_up, "the hub holds {} of {size}", d.stored);
    assert!(size >= 1000, "only {size} records");
    d.assert_clean(&stats.alarms, &violations);
    assert!(r.dev.verify_log());
    drop(r.broker);
}

#[test]
fn broker_sigkill_and_restart_during_a_stream() {
    let _g = serial();
    let mut r = rig(150, false);
    let started = Instant::now();
    let agent = r.dev.spawn("run");
    let mut rng = Lcg(0x5EED_0001);
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(800 + rng.below(1200)));
        r.broker.kill();
        std::thread::sleep(Duration::from_millis(300 + rng.below(700)));
        r.broker.restart();
    }
    finish("broker-sigkill-x4", r, agent, started, "");
}

#[test]
fn agent_sigkill_at_random_points() {
    let _g = serial();
    let r = rig(40, false);
    let started = Instant::now();
    let mut rng = Lcg(0x5EED_0002);
    let mut kills = 0;
    for _ in 0..5 {
        let mut a = r.dev.spawn("run");
        std::thread::sleep(Duration::from_millis(200 + rng.below(1500)));
        let _ = a.kill(); // SIGKILL
        let _ = a.wait();
        kills += 1;
    }
    // The last start runs to the end and drains everything, including the killed runs' records.
    let agent = r.dev.spawn("run");
    finish(
        "agent-sigkill-x5",
        r,
        agent,
        started,
        &format!("({kills} kills)"),
    );
}

#[test]
fn broker_sigstop_black_hole_reset_and_hub_restart() {
    let _g = serial();
    let mut r = rig(150, true);
    let started = Instant::now();
    let agent = r.dev.spawn("run");
    std::thread::sleep(Duration::from_millis(1500));
    // A hung broker: longer than keep-alive (2 s) on both sides.
    r.broker.signal("-STOP");
    std::thread::sleep(Duration::from_secs(4));
    r.broker.signal("-CONT");
    std::thread::sleep(Duration::from_millis(1500));
    // A black-holed link between the device and the broker.
    let proxy = r.proxy.as_ref().unwrap();
    proxy.set(Mode::Pause);
    std::thread::sleep(Duration::from_secs(4));
    proxy.set(Mode::Pass);
    std::thread::sleep(Duration::from_millis(1000));
    // Connections reset, new ones refused for a while; then a slow link.
    proxy.set(Mode::Drop);
    std::thread::sleep(Duration::from_millis(1500));
    proxy.set_delay(Duration::from_millis(20));
    proxy.set(Mode::Pass);
    std::thread::sleep(Duration::from_millis(1000));
    proxy.set_delay(Duration::ZERO);
    // The hub killed and restarted.
    r.hub.kill();
    std::thread::sleep(Duration::from_millis(1500));
    r.hub.start();
    finish("stop-blackhole-reset-hub-restart", r, agent, started, "");
}
