//! The system under test as processes: the hub and devices (the real binaries, built by
//! `cargo test --workspace`), a spy on `#`, and the checks that turn a run into figures.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

/// A binary of the workspace in target/<profile>/: beside this executable (a binary such as
/// `fleet`), or one folder up (a test, in target/<profile>/deps).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("target/<profile>");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target/<profile>/deps");
    }
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing: build it first (`cargo build --workspace --bins`; `cargo test --workspace` does)",
        p.display()
    );
    p
}

pub fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().expect("starting a binary");
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

pub struct Hub {
    pub dir: PathBuf,
    /// Its store: a SQLite file in `dir`, or a database of the PostgreSQL cluster named by
    /// `IAT_TEST_POSTGRES` (`hub::db::sql::test_database`).
    pub db: hub::db::sql::Database,
    pub config: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Hub {
    /// A hub with its key, config and (empty) enrolment in `dir`. `mqtt_extra`: more lines of
    /// the `[mqtt]` section (TLS).
    pub fn setup(dir: &Path, port: u16, mqtt_extra: &str, gap_timeout: &str) -> Hub {
        std::fs::create_dir_all(dir).expect("hub dir");
        run(Command::new(bin("hub"))
            .args(["keygen", "--name", "test-hub", "--dir"])
            .arg(dir));
        let config = dir.join("hub.toml");
        let db = hub::db::sql::test_database(dir);
        let db_value = toml::Value::String(match &db {
            hub::db::sql::Database::Sqlite(p) => p.display().to_string(),
            hub::db::sql::Database::Postgres(s) => s.clone(),
        });
        std::fs::write(
            &config,
            format!(
                "name = \"test-hub\"\nkey = \"hub.key\"\ndb = {db_value}\ndevices = \"devices.toml\"\n\
                 gap_timeout = \"{gap_timeout}\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nkeep_alive = \"5s\"\n{mqtt_extra}"
            ),
        )
        .expect("hub.toml");
        Hub {
            dir: dir.to_owned(),
            db,
            config,
            child: None,
            starts: 0,
        }
    }

    /// Another instance of this hub (`mqtt.shared_group` must be set in both): the same key,
    /// enrolment and database, its own folder (config, logs) and MQTT client id.
    pub fn instance(&self, dir: &Path, client_id: &str) -> Hub {
        std::fs::create_dir_all(dir).expect("hub instance dir");
        let config = std::fs::read_to_string(&self.config).expect("hub.toml");
        let abs = |f: &str| toml::Value::String(self.dir.join(f).display().to_string());
        let config = config
            .replace("key = \"hub.key\"", &format!("key = {}", abs("hub.key")))
            .replace(
                "devices = \"devices.toml\"",
                &format!("devices = {}", abs("devices.toml")),
            )
            .replace(
                "client_id = \"hub-0\"",
                &format!("client_id = \"{client_id}\""),
            );
        std::fs::write(dir.join("hub.toml"), config).expect("instance hub.toml");
        Hub {
            dir: dir.to_owned(),
            db: self.db.clone(),
            config: dir.join("hub.toml"),
            child: None,
            starts: 0,
        }
    }

    pub fn vkey(&self) -> PathBuf {
        self.dir.join("hub.vkey")
    }

    /// Waits until the log of its latest start contains `needle` (false on timeout).
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let log = self.dir.join(format!("hub-{}.log", self.starts));
        let start = Instant::now();
        while start.elapsed() < timeout {
            if std::fs::read_to_string(&log).is_ok_and(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn enroll(&self, device: &Device) {
        self.enroll_cards(device, &["models/silero-vad-16k/card.toml"]);
    }

    /// Enrols `device` with these cards (paths from the repository's root).
    pub fn enroll_cards(&self, device: &Device, cards: &[&str]) {
        let mut cmd = Command::new(bin("hub"));
        cmd.arg("enroll")
            .arg("--devices")
            .arg(self.dir.join("devices.toml"))
            .arg("--device-key")
            .arg(device.vkey())
            .args([
                "--controller",
                "Aucun : test de bout en bout (données simulées)",
            ])
            .args([
                "--purpose",
                "Tester la chaîne complète sur des données simulées",
            ])
            .args([
                "--legal-basis",
                "Sans objet : aucune donnée personnelle (test)",
            ]);
        for c in cards {
            cmd.arg("--card").arg(root().join(c));
        }
        run(&mut cmd);
    }

    /// A device set up in `dir` as [`Device::setup`] does, with no more `[mqtt]` lines, and
    /// enrolled here.
    pub fn enroll_new(&self, dir: &Path, id: &str, port: u16, repeat: u32) -> Device {
        let device = Device::setup(dir, id, port, &self.vkey(), repeat, "");
        self.enroll(&device);
        device
    }

    pub fn start(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("hub-{}.log", self.starts)))
            .expect("hub log");
        let child = Command::new(bin("hub"))
            .args(["run", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting the hub");
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the hub as systemd does (SIGTERM) and waits for it at most `limit`: its exit
    /// status (`None` if it had to be killed).
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: kill(2) on our own child's pid, which stays ours until we wait for it.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    pub fn stats(&self) -> hub::db::store::Stats {
        let conn = hub::db::store::open(&self.db).expect("hub db");
        hub::db::store::stats(&conn).expect("hub stats")
    }

    pub fn records(&self, device: &str) -> Vec<hub::db::store::StoredRecord> {
        let conn = hub::db::store::open(&self.db).expect("hub db");
        hub::db::store::records(&conn, device).expect("hub records")
    }

    /// Waits until the hub stored `count` records of `device` (false on timeout).
    pub fn wait_stored(&self, device: &str, count: u64, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self
                .stats()
                .devices
                .iter()
                .any(|d| d.device == device && d.next_seq >= count)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Say why in the test's output: the end of the hub's last log.
        let log = self.dir.join(format!("hub-{}.log", self.starts));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        eprintln!(
            "hub: {device} not at {count} records after {timeout:?}; {} ends:\n{}",
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        false
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Device {
    pub id: String,
    pub territory: String,
    pub dir: PathBuf,
    pub config: PathBuf,
}

impl Device {
    /// A device whose one pipeline replays the speech sample `repeat` times in 1 s windows
    /// (~18 records per repeat), publishing to the broker on `port`.
    pub fn setup(
        dir: &Path,
        id: &str,
        port: u16,
        hub_vkey: &Path,
        repeat: u32,
        mqtt_extra: &str,
    ) -> Device {
        let pipeline = include_str!("../fixtures/speech-pipeline.toml")
            .replace("repeat = 1\n", &format!("repeat = {repeat}\n"));
        Device::setup_with(dir, id, port, hub_vkey, mqtt_extra, &pipeline)
    }

    /// A device running `pipelines` (TOML, `{root}` standing for the repository's root).
    pub fn setup_with(
        dir: &Path,
        id: &str,
        port: u16,
        hub_vkey: &Path,
        mqtt_extra: &str,
        pipelines: &str,
    ) -> Device {
        std::fs::create_dir_all(dir).expect("device dir");
        let territory = "fr-test";
        run(Command::new(bin("edge-agent"))
            .args(["keygen", "--device", id, "--territory", territory, "--dir"])
            .arg(dir.join("keys")));
        let root = root();
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                r#"device = "{id}"
territory = "{territory}"
data_dir = "data"
key = "keys/device.key"
[checkpoint]
every_records = 16
[mqtt]
host = "127.0.0.1"
port = {port}
hub_key = "{hub}"
keep_alive = "2s"
ack_timeout = "2s"
drain_timeout = "60s"
{mqtt_extra}
{pipeline}"#,
                pipeline = pipelines.replace("{root}", &root.display().to_string()),
                hub = hub_vkey.display(),
            ),
        )
        .expect("agent.toml");
        Device {
            id: id.to_owned(),
            territory: territory.to_owned(),
            dir: dir.to_owned(),
            config,
        }
    }

    pub fn vkey(&self) -> PathBuf {
        self.dir.join("keys/device.vkey")
    }

    pub fn spawn(&self, cmd: &str) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .expect("agent log");
        Command::new(bin("edge-agent"))
            .args([cmd, "--config"])
            .arg(&self.config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting the agent")
    }

    /// The log's size and root (the agent must not be running).
    pub fn log_state(&self) -> (u64, [u8; 32]) {
        let key = audit::keys::load_private(&self.dir.join("keys/device.key")).expect("key");
        let log = audit::Log::open(
            &self.dir.join("data/log"),
            &hub_link::origin(&self.territory, &self.id),
            &key,
            audit::Options::default(),
        )
        .expect("opening the device log");
        (log.size(), log.root())
    }

    pub fn verify_log(&self) -> bool {
        Command::new(bin("edge-agent"))
            .args(["audit", "verify"])
            .arg(self.dir.join("data/log"))
            .arg("--pubkey")
            .arg(self.vkey())
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

/// A client subscribed to `#` that checks every payload's schema.
pub struct Spy {
    pub seen: Arc<AtomicU64>,
    pub violations: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    client: Client,
}

impl Spy {
    pub fn start(port: u16, extra: Option<rumqttc::Transport>) -> Spy {
        let mut o = MqttOptions::new(format!("spy-{port}"), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(2));
        o.set_max_packet_size(4 << 20, 4 << 20);
        if let Some(t) = extra {
            o.set_transport(t);
        }
        let (client, mut conn) = Client::new(o, 64);
        let seen = Arc::new(AtomicU64::new(0));
        let violations = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, v, st, c) = (
            seen.clone(),
            violations.clone(),
            stop.clone(),
            client.clone(),
        );
        std::thread::spawn(move || {
            for ev in conn.iter() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c.try_subscribe("#", QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        s.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = hub_link::check_payload(&p.topic, &p.payload) {
                            v.lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(format!("{}: {e}", p.topic));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        });
        Spy {
            seen,
            violations,
            stop,
            client,
        }
    }

    /// (payloads seen, violations).
    pub fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.client.disconnect();
        let v = self
            .violations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (self.seen.load(Ordering::Relaxed), v)
    }
}

/// What a run delivered, checked against the device's log.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delivery {
    pub sent: u64,
    pub stored: u64,
    pub lost: u64,
    pub duplicates_stored: u64,
    pub duplicates_received: u64,
    pub unverified: u64,
}

/// Compares what the hub stored for `device` with the device's log: every record present
/// once, every one verified again here (signature, seq, canonical record), the same root.
pub fn delivery(hub: &Hub, device: &Device) -> Delivery {
    let (size, root) = device.log_state();
    let key = audit::keys::load_verifier(&device.vkey()).expect("device vkey");
    let records = hub.records(&device.id);
    let mut seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    seqs.dedup();
    let mut frontier = audit::Frontier::new();
    let mut unverified = 0;
    for (i, r) in records.iter().enumerate() {
        let sig: Option<[u8; 64]> = r.signature.as_slice().try_into().ok();
        let ok = r.seq == i as u64
            && sig.is_some_and(|s| audit::verify_entry(&key, &r.entry, &s).is_ok())
            && aggregate_seq(&r.entry) == Some(r.seq);
        if !ok {
            unverified += 1;
        }
        frontier.append(audit::merkle::leaf_hash(&r.entry));
    }
    let stats = hub.stats();
    let dev = stats.devices.iter().find(|d| d.device == device.id);
    let stored = records.len() as u64;
    if stored == size {
        assert_eq!(
            frontier.root(),
            root,
            "the hub's tree differs from the device's"
        );
    }
    Delivery {
        sent: size,
        stored,
        lost: size.saturating_sub(stored),
        duplicates_stored: stored - seqs.len() as u64,
        duplicates_received: dev.map_or(0, |d| d.duplicates),
        unverified,
    }
}

impl Delivery {
    /// Panics unless the run was clean: every record stored once and verified, no alarm, and
    /// nothing on the wire but aggregates, checkpoints, acks and status (the spy's
    /// `violations`).
    pub fn assert_clean(&self, alarms: &[hub::db::store::Alarm], violations: &[String]) {
        assert_eq!(
            (self.lost, self.duplicates_stored, self.unverified),
            (0, 0, 0),
            "{self:?}"
        );
        assert!(alarms.is_empty(), "false alarms: {alarms:?}");
        assert!(violations.is_empty(), "{violations:?}");
    }
}

fn aggregate_seq(entry: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(entry).ok()?;
    v.get("seq")?.as_u64()
}

/// Where figures go: `<target>/iat-figures.txt`, which `cargo xtask test` prints at the end
/// (cargo hides a passing test's output).
pub fn figures_file() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.ancestors()
        .nth(3)
        .unwrap_or(Path::new("."))
        .join("iat-figures.txt")
}

/// One test at a time for the heavy ones: they start processes and measure time, on 2 cores.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Prints one line of figures and appends it to [`figures_file`].
pub fn figures(
    test: &str,
    d: &Delivery,
    alarms: usize,
    false_alarms: usize,
    wire: (u64, usize),
    extra: &str,
) {
    let line = format!(
        "FIGURES {test}: records sent {} stored {} lost {} duplicates stored {} (received and ignored {}) unverified {} | alarms {alarms} false alarms {false_alarms} | wire payloads {} non-aggregate {} {extra}",
        d.sent,
        d.stored,
        d.lost,
        d.duplicates_stored,
        d.duplicates_received,
        d.unverified,
        wire.0,
        wire.1
    );
    say(&line);
}

/// Prints a line and appends it to [`figures_file`].
pub fn say(line: &str) {
    println!("{line}");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(figures_file())
    {
        use std::io::Write as _;
        let _ = writeln!(f, "{line}");
    }
}
