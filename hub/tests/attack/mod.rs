//! The attack tests' system: a real mosquitto on a free loopback port (plain, or the project's
//! shipped configuration `hub/mosquitto/`), the `hub` binary as a process, a well-behaved
//! enrolled device publishing signed records (and resending what the hub has not stored, as the
//! agent does), attackers, and the figures of a run (records stored, peak RSS, reconnects).

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use audit::SignerKey;
use hub::enrolment::RawDevice;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

use crate::common;

/// A free loopback port (bound then released: good enough for tests on one machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a loopback port")
}

pub fn wait_port(port: u16, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Waits for `cond`, at most `timeout`; returns whether it became true.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct Mosquitto {
    pub port: u16,
    pub log: PathBuf,
    child: Child,
}

impl Mosquitto {
    /// A broker with no limit, anonymous, without ACLs: the hub's own defences alone.
    pub fn plain(dir: &Path) -> Mosquitto {
        let port = free_port();
        Mosquitto::spawn(
            dir,
            port,
            &format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 100000\n"
            ),
        )
    }

    /// The project's broker configuration, `hub/mosquitto/iat.conf`, line for line, with the
    /// listener's port and the files it names replaced by the test's own (its CA and broker
    /// certificate, `acl`).
    pub fn shipped(
        dir: &Path,
        ca: &Path,
        server: &hub_link::tls::TlsFiles,
        acl: &Path,
    ) -> Mosquitto {
        let path = common::repo().join("hub/mosquitto/iat.conf");
        let text = std::fs::read_to_string(&path).expect("hub/mosquitto/iat.conf");
        let port = free_port();
        let mut replaced = Vec::new();
        let conf: Vec<String> = text
            .lines()
            .map(|line| {
                let key = line.split_whitespace().next().unwrap_or("");
                let value = match key {
                    "listener" => format!("{port} 127.0.0.1"),
                    "cafile" => ca.display().to_string(),
                    "certfile" => server.cert.display().to_string(),
                    "keyfile" => server.key.display().to_string(),
                    "acl_file" => acl.display().to_string(),
                    _ => return line.to_owned(),
                };
                replaced.push(key);
                format!("{key} {value}")
            })
            .collect();
        replaced.sort_unstable();
        assert_eq!(
            replaced,
            ["acl_file", "cafile", "certfile", "keyfile", "listener"],
            "{} changed shape: update the test",
            path.display()
        );
        Mosquitto::spawn(dir, port, &conf.join("\n"))
    }

    /// mosquitto with `conf` (which must open a listener on `port`).
    pub fn spawn(dir: &Path, port: u16, conf: &str) -> Mosquitto {
        let path = dir.join(format!("mosquitto-{port}.conf"));
        let log = dir.join(format!("mosquitto-{port}.log"));
        // Its log on stderr, into a file: run as root, mosquitto drops to its own user, which
        // may not write into the test's folder.
        std::fs::write(&path, format!("{conf}\nlog_dest stderr\nlog_type all\n"))
            .expect("writing mosquitto.conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("mosquitto's log file"))
            .spawn()
            .expect("mosquitto is installed (apt-get install mosquitto)");
        let mut m = Mosquitto { port, log, child };
        if !wait_port(port, Duration::from_secs(10)) {
            let _ = m.child.kill();
            let _ = m.child.wait();
            panic!(
                "mosquitto did not start on port {port}:\n{}",
                std::fs::read_to_string(&m.log).unwrap_or_default()
            );
        }
        m
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway certificate authority for the shipped (TLS) broker configuration.
pub struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub pem: PathBuf,
}

impl Ca {
    pub fn new(dir: &Path) -> Ca {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "iat-test-ca");
        let key = KeyPair::generate().expect("CA key");
        let cert = p.self_signed(&key).expect("CA certificate");
        let pem = dir.join("ca.pem");
        std::fs::write(&pem, cert.pem()).expect("ca.pem");
        Ca {
            issuer: rcgen::Issuer::new(p, key),
            pem,
        }
    }

    /// A certificate for `cn` (`server`: the broker's, for 127.0.0.1).
    pub fn issue(&self, dir: &Path, cn: &str, server: bool) -> hub_link::tls::TlsFiles {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
        let sans = if server {
            vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
        } else {
            vec![]
        };
        let mut p = CertificateParams::new(sans).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &self.issuer).expect("certificate");
        let (c, k) = (dir.join(format!("{cn}.pem")), dir.join(format!("{cn}.key")));
        std::fs::write(&c, cert.pem()).expect("cert file");
        std::fs::write(&k, key.serialize_pem()).expect("key file");
        hub_link::tls::TlsFiles {
            ca: self.pem.clone(),
            cert: c,
            key: k,
        }
    }
}

/// The `[mqtt.tls]` section of a hub config.
pub fn tls_section(f: &hub_link::tls::TlsFiles) -> String {
    format!(
        "[mqtt.tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        f.ca.display(),
        f.cert.display(),
        f.key.display()
    )
}

/// The card every test device is enrolled with.
pub fn card() -> hub::enrolment::RawModel {
    hub::enrolment::cards::load(&common::repo().join("models/centerface-int8/card.toml"))
        .expect("the centerface-int8 card")
}

/// An enrolled device of a test: its id, territory and key.
pub struct Device {
    pub dev: common::Dev,
}

impl Device {
    pub fn new(territory: &'static str, id: &'static str, seed: u8) -> Device {
        Device {
            dev: common::Dev {
                id,
                territory,
                windows: 0,
                key: common::key_for(&hub_link::origin(territory, id), seed),
            },
        }
    }

    pub fn key(&self) -> &SignerKey {
        &self.dev.key
    }

    pub fn topic(&self) -> String {
        hub_link::agg_topic(self.dev.territory, self.dev.id, common::MODEL)
    }

    /// The MQTT payload of record `seq`.
    pub fn payload(&self, seq: u64) -> Vec<u8> {
        let card = card();
        let entry = common::record(
            &self.dev,
            seq,
            &card.sha256,
            card.version.as_deref().unwrap_or(""),
        );
        let sig = audit::sign_entry(&self.dev.key, &entry);
        hub_link::encode_record(seq, &entry, &sig).expect("envelope")
    }
}

/// The `hub` binary, its config, key and enrolment in a folder.
pub struct Hub {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub db: PathBuf,
    pub stderr: PathBuf,
    child: Option<Child>,
}

/// The `hub` binary under test: this build's, or `IAT_HUB_BIN` (to measure another build, an
/// older one for instance, under the same attacks).
pub fn hub_bin() -> PathBuf {
    std::env::var_os("IAT_HUB_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_hub")))
}

impl Hub {
    /// A hub for the broker on `port`; `extra`: more top-level lines of its config, `mqtt`:
    /// more lines of its `[mqtt]` section, `tail`: sections after it (`[http]`...).
    pub fn setup(dir: &Path, port: u16, mqtt: &str, tail: &str) -> Hub {
        std::fs::create_dir_all(dir).expect("hub dir");
        let out = Command::new(hub_bin())
            .args(["keygen", "--name", "attack-hub", "--dir"])
            .arg(dir)
            .output()
            .expect("hub keygen");
        assert!(out.status.success(), "{out:?}");
        let config = dir.join("hub.toml");
        std::fs::write(
            &config,
            format!(
                "name = \"attack-hub\"\nkey = \"hub.key\"\ndb = \"hub.sqlite\"\ndevices = \"devices.toml\"\n\
                 gap_timeout = \"5s\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"hub\"\n{mqtt}\n{tail}\n"
            ),
        )
        .expect("hub.toml");
        Hub {
            db: dir.join("hub.sqlite"),
            stderr: dir.join("hub.stderr"),
            dir: dir.to_owned(),
            config,
            child: None,
        }
    }

    pub fn enroll(&self, d: &Device) {
        hub::enrolment::enroll(
            &self.dir.join("devices.toml"),
            RawDevice {
                id: d.dev.id.into(),
                territory: d.dev.territory.into(),
                key: d.dev.key.verifier().to_string(),
                enrolled: Some("2026-02-28T12:00:00Z".into()),
                site: None,
                retired_keys: vec![],
                models: vec![card()],
                ..Default::default()
            },
        )
        .expect("enroll");
    }

    pub fn start(&mut self) {
        let err = std::fs::File::create(&self.stderr).expect("hub stderr file");
        let child = Command::new(hub_bin())
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("starting the hub");
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("the hub runs")
    }

    /// Whether the hub still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends `signal` and waits (at most `timeout`) for the exit status.
    pub fn signal_and_wait(&mut self, signal: i32, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("kill(1)");
        assert!(sent.success(), "kill -{signal} {}", child.id());
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                use std::os::unix::process::ExitStatusExt;
                return Some(status.code().unwrap_or(128 + status.signal().unwrap_or(0)));
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// How many times the hub connected to the broker (its log says so at each CONNACK).
    pub fn connections(&self) -> usize {
        self.log().matches("hub: connected to").count()
    }

    pub fn conn(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open_with_flags(
            &self.db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .expect("the hub's database");
        c.busy_timeout(Duration::from_secs(10))
            .expect("busy timeout");
        c
    }

    /// Records stored for a device (0 before the database exists).
    pub fn stored(&self, device: &str) -> u64 {
        if !self.db.exists() {
            return 0;
        }
        self.conn()
            .query_row(
                "SELECT COUNT(*) FROM records WHERE device = ?1",
                [device],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .unwrap_or(0)
    }

    /// Peak resident memory of the hub so far (VmHWM, KiB).
    pub fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn db_bytes(&self) -> u64 {
        ["hub.sqlite", "hub.sqlite-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(self.dir.join(f)).ok())
            .map(|m| m.len())
            .sum()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub const SIGTERM: i32 = 15;

/// MQTT options for a test client (`tls`: the client's files, for the shipped broker).
pub fn options(id: &str, port: u16, tls: Option<&hub_link::tls::TlsFiles>) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(8 << 20, 8 << 20);
    if let Some(files) = tls {
        let cfg = hub_link::tls::client_config(files).expect("client TLS config");
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(cfg)));
    }
    o
}

/// A client that publishes and counts its PUBACKs; the event loop runs in its own thread.
pub struct Publisher {
    pub client: Client,
    pub acked: Arc<AtomicU64>,
    pub connected: Arc<AtomicU64>,
    /// Errors of the connection (refusals, disconnections by the broker).
    pub errors: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Publisher {
    pub fn connect(id: &str, port: u16, tls: Option<&hub_link::tls::TlsFiles>) -> Publisher {
        let (client, mut connection) = Client::new(options(id, port, tls), 50_000);
        let acked = Arc::new(AtomicU64::new(0));
        let connected = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, c, e, s) = (
            acked.clone(),
            connected.clone(),
            errors.clone(),
            stop.clone(),
        );
        let thread = std::thread::spawn(move || {
            for ev in connection.iter() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                match ev {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(err) => {
                        if let Ok(mut v) = e.lock() {
                            v.push(err.to_string());
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        });
        let p = Publisher {
            client,
            acked,
            connected,
            errors,
            stop,
            thread: Some(thread),
        };
        wait_for(Duration::from_secs(10), || {
            p.connected.load(Ordering::Relaxed) > 0 || !p.errors.lock().unwrap().is_empty()
        });
        p
    }

    pub fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .expect("queueing a publish");
    }

    /// Waits until `n` PUBACKs arrived (false after `timeout`).
    pub fn wait_acked(&self, n: u64, timeout: Duration) -> bool {
        wait_for(timeout, || self.acked.load(Ordering::Relaxed) >= n)
    }

    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.client.disconnect();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A well-behaved device in a thread: a record every `every`, and, like the agent, everything
/// the hub has not stored published again when the hub's count stops moving for a second.
pub struct GoodDevice {
    pub published: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GoodDevice {
    pub fn start(
        device: Device,
        hub_db: PathBuf,
        port: u16,
        tls: Option<hub_link::tls::TlsFiles>,
        every: Duration,
    ) -> GoodDevice {
        let published = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (published.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let publisher = Publisher::connect(device.dev.id, port, tls.as_ref());
            let topic = device.topic();
            let stored = |db: &Path| -> u64 {
                rusqlite::Connection::open_with_flags(
                    db,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .and_then(|c| {
                    c.query_row(
                        "SELECT COUNT(*) FROM records WHERE device = ?1",
                        [device.dev.id],
                        |r| r.get::<_, i64>(0),
                    )
                })
                .map(|n| n as u64)
                .unwrap_or(0)
            };
            let mut next = 0u64;
            let mut last_stored = (0u64, Instant::now());
            while !s.load(Ordering::Relaxed) {
                publisher.publish(&topic, device.payload(next), false);
                next += 1;
                p.store(next, Ordering::Relaxed);
                let now = stored(&hub_db);
                if now != last_stored.0 {
                    last_stored = (now, Instant::now());
                } else if now < next && last_stored.1.elapsed() > Duration::from_secs(1) {
                    for seq in now..next {
                        publisher.publish(&topic, device.payload(seq), false);
                    }
                    last_stored.1 = Instant::now();
                }
                std::thread::sleep(every);
            }
        });
        GoodDevice {
            published,
            stop,
            thread: Some(thread),
        }
    }

    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
}

impl Drop for GoodDevice {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One line of figures per attack (never asserted on: machines differ), printed and appended
/// to `<target>/iat-figures.txt`, which `cargo xtask test` prints at the end (cargo hides a
/// passing test's output).
pub fn figures(attack: &str, items: &[(&str, String)]) {
    let parts: Vec<String> = items.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let line = format!("FIGURES attack {attack}: {}", parts.join(" | "));
    println!("{line}");
    let file = std::env::current_exe()
        .ok()
        .and_then(|e| e.ancestors().nth(3).map(|t| t.join("iat-figures.txt")));
    if let Some(f) = file {
        use std::io::Write;
        if let Ok(mut out) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(f)
        {
            let _ = writeln!(out, "{line}");
        }
    }
}

/// A hub with the web side on a free port, its good device `dev-1` of fr-lyon enrolled and
/// publishing; returns once the hub stores its records.
pub fn running_hub(tmp: &Path, broker: &Mosquitto) -> (Hub, GoodDevice, String) {
    let (hub, dev, web) = running_hub_with(tmp, broker, "", |_| {});
    (hub, dev, format!("http://127.0.0.1:{web}"))
}

/// The same with more lines in the `[http]` section, and `prepare` run on the hub (enrolled,
/// not started yet); returns the web side's port.
pub fn running_hub_with(
    tmp: &Path,
    broker: &Mosquitto,
    http: &str,
    prepare: impl FnOnce(&Hub),
) -> (Hub, GoodDevice, u16) {
    let web = free_port();
    let good = Device::new("fr-lyon", "dev-1", 1);
    let mut hub = Hub::setup(
        &tmp.join("hub"),
        broker.port,
        "",
        &format!("[http]\nlisten = \"127.0.0.1:{web}\"\n{http}"),
    );
    hub.enroll(&good);
    prepare(&hub);
    hub.start();
    let dev = GoodDevice::start(
        good,
        hub.db.clone(),
        broker.port,
        None,
        Duration::from_millis(20),
    );
    assert!(
        wait_for(Duration::from_secs(20), || hub.stored("dev-1") > 0),
        "the hub stores nothing:\n{}",
        hub.log()
    );
    (hub, dev, web)
}
