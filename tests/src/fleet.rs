//! A fleet of simulated devices for the hub at scale: real Ed25519 keys, real canonical records
//! signed as the agent signs them, signed checkpoints, over a real MQTT broker, with the agent's
//! delivery rules, the same code as the agent's publisher ([`hub_link::flow`]: a congestion
//! window of unacknowledged records, everything above the hub's ack resent on reconnection or
//! when the ack stops moving, with a timeout that backs off).
//!
//! A run has two phases. **Backlog**: every device starts with `backlog` records already in its
//! log (a network outage that just ended) and sends them as fast as its window allows; the
//! figure is the time until the hub acknowledged all of them. **Live**: each device then
//! appends one record per `window` for `live_for` (steady state); the figure is the delay from a
//! record's append to the hub's ack of it. The report also says what was resent, what the hub
//! refused to acknowledge and whether every ack's root matched the device's own log.
//!
//! Records are generated before the clock starts (signing is not what is measured); live
//! records are signed as they are appended, as on a device. Used by `cargo xtask fleet` (the
//! `fleet` binary) and the hub's scale tests.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use audit::{Checkpoint, Frontier, SignerKey, VerifierKey};
use hub::enrolment::{RawDevice, RawModel};
use hub_link::flow::Flow;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;

/// The model every simulated device runs: the bundled face counter (its card is enrolled).
pub const CARD: &str = "models/centerface-int8/card.toml";

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Plan {
    pub devices: usize,
    /// Devices are spread over this many territories (`fr-t000`...).
    pub territories: usize,
    /// Records already in each device's log when the run starts.
    pub backlog: u64,
    /// One record per device per window in the live phase (and the windows' length).
    pub window: Duration,
    /// How long the live phase lasts (zero: backlog only).
    pub live_for: Duration,
    /// A signed checkpoint every this many records (and at the end of the backlog).
    pub checkpoint_every: u64,
    /// Resend from the acked watermark when the ack has not moved for this long (the agent's
    /// `mqtt.ack_timeout`; it backs off after each resend).
    pub ack_timeout: Duration,
    /// After the live phase, how long to wait for the last acks.
    pub settle: Duration,
    /// Seeds the devices' keys: the same seed gives the same fleet (and enrolment).
    pub seed: u64,
}

impl Default for Plan {
    fn default() -> Plan {
        Plan {
            devices: 100,
            territories: 10,
            backlog: 100,
            window: Duration::from_secs(10),
            live_for: Duration::from_secs(30),
            checkpoint_every: 64,
            ack_timeout: Duration::from_secs(3),
            settle: Duration::from_secs(60),
            seed: 1,
        }
    }
}

/// One simulated device and its log (records kept until the end: resends need them).
pub struct SimDevice {
    pub id: String,
    pub territory: String,
    key: SignerKey,
    payloads: Vec<Vec<u8>>,
    /// When each live record was appended (`None`: the backlog, whose delay is not measured).
    appended: Vec<Option<Instant>>,
    frontier: Frontier,
    /// Signed checkpoints by the log size they cover, in order.
    checkpoints: Vec<(u64, String)>,
    next_checkpoint: u64,
    /// The first window's start (ms since the epoch) and the model it reports for.
    t0_ms: i64,
    window_ms: i64,
    model: (String, String, String),
}

impl SimDevice {
    fn new(plan: &Plan, index: usize, model: &RawModel, t0_ms: i64) -> SimDevice {
        let territory = format!("fr-t{:03}", index % plan.territories.max(1));
        let id = format!("sim-{index:05}");
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(index as u64).to_le_bytes());
        seed[8..16].copy_from_slice(&plan.seed.to_le_bytes());
        seed[16] = 0x5a;
        let key = SignerKey::from_seed(&hub_link::origin(&territory, &id), &seed)
            .expect("a valid key name");
        SimDevice {
            id,
            territory,
            key,
            payloads: Vec::new(),
            appended: Vec::new(),
            frontier: Frontier::new(),
            checkpoints: Vec::new(),
            next_checkpoint: plan.checkpoint_every.max(1),
            t0_ms,
            window_ms: plan.window.as_millis().max(1) as i64,
            model: (
                model.id.clone(),
                model.version.clone().unwrap_or_default(),
                model.sha256.clone(),
            ),
        }
    }

    fn origin(&self) -> String {
        hub_link::origin(&self.territory, &self.id)
    }

    /// What the hub enrols for this device.
    pub fn enrolment(&self, model: &RawModel) -> RawDevice {
        RawDevice {
            id: self.id.clone(),
            territory: self.territory.clone(),
            key: self.key.verifier().to_string(),
            controller: Some("Aucun : simulation de charge (données simulées)".into()),
            purpose: Some("Mesurer la tenue du hub à l'échelle nationale".into()),
            legal_basis: Some("Sans objet : aucune donnée personnelle (simulation)".into()),
            models: vec![model.clone()],
            ..Default::default()
        }
    }

    /// Appends the next record (signed, enveloped) and, every `every` records, a checkpoint.
    fn append(&mut self, now: Option<Instant>, every: u64) {
        let seq = self.payloads.len() as u64;
        let entry = record(self, seq);
        let sig = audit::sign_entry(&self.key, &entry);
        self.frontier.append(audit::merkle::leaf_hash(&entry));
        self.payloads
            .push(hub_link::encode_record(seq, &entry, &sig).expect("a record's envelope"));
        self.appended.push(now);
        if seq + 1 >= self.next_checkpoint {
            self.checkpoint();
            self.next_checkpoint = seq + 1 + every.max(1);
        }
    }

    fn checkpoint(&mut self) {
        let size = self.payloads.len() as u64;
        if size == 0 || self.checkpoints.last().is_some_and(|(s, _)| *s == size) {
            return;
        }
        let note = self
            .key
            .sign_checkpoint(&Checkpoint {
                origin: self.origin(),
                size,
                root: self.frontier.root(),
                extensions: vec![],
            })
            .expect("a checkpoint note");
        self.checkpoints.push((size, note));
    }
}

/// A count record like the agent's for the face counter: canonical JSON, values that vary.
fn record(d: &SimDevice, seq: u64) -> Vec<u8> {
    let total = (seq * 7919 + d.id.len() as u64 * 13) % 61;
    let published = |v: u64| {
        if v >= 3 {
            json!(v)
        } else {
            json!("suppressed")
        }
    };
    let frames = 25 * d.window_ms as u64 / 1000;
    let present = total.min(frames);
    let v = json!({
        "v": 1, "type": "aggregate", "device": d.id, "territory": d.territory, "seq": seq,
        "model": {"id": d.model.0, "version": d.model.1, "sha256": d.model.2},
        "window": {"index": seq, "start": aggregate::window::rfc3339(d.t0_ms + seq as i64 * d.window_ms),
                   "length_ms": d.window_ms, "partial": false, "clock_jump_ms": 0, "clock_jumps": 0},
        "aggregates": {
            "count": {"face": {"frames": frames, "max": published(total / 8), "total": published(total)}},
            "presence_share": {"face": {"frames": frames, "present_frames": published(present),
                                        "share_ppm": published(present * 1_000_000 / frames.max(1))}},
        },
        "privacy": {"k": 3, "count_step": 1, "share_step_ppm": 1, "level_step_milli": 1,
                    "noise": {"mechanism": "geometric", "epsilon_milli": 1000, "sensitivity": 1}},
    });
    aggregate::canonical::to_vec(&v).expect("canonical JSON")
}

/// The simulated fleet, its logs generated.
pub struct Fleet {
    pub plan: Plan,
    pub model: RawModel,
    pub devices: Vec<SimDevice>,
}

impl Fleet {
    /// Creates the devices and signs their backlogs (on every core; `progress` is called with
    /// the number of records signed so far).
    pub fn generate(
        plan: Plan,
        model: RawModel,
        progress: &(dyn Fn(u64) + Sync),
    ) -> anyhow::Result<Fleet> {
        anyhow::ensure!(plan.devices > 0, "a fleet needs at least one device");
        let window_ms = plan.window.as_millis().max(1) as i64;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        // The backlog's windows end now: live records follow on in real time.
        let t0_ms = (now_ms / window_ms - plan.backlog as i64) * window_ms;
        let mut devices: Vec<SimDevice> = (0..plan.devices)
            .map(|i| SimDevice::new(&plan, i, &model, t0_ms))
            .collect();
        let signed = AtomicU64::new(0);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per = devices.len().div_ceil(threads);
        std::thread::scope(|s| {
            for chunk in devices.chunks_mut(per) {
                let (plan, signed) = (&plan, &signed);
                s.spawn(move || {
                    for d in chunk {
                        for _ in 0..plan.backlog {
                            d.append(None, plan.checkpoint_every);
                            let n = signed.fetch_add(1, Ordering::Relaxed) + 1;
                            if n % 4096 == 0 {
                                progress(n);
                            }
                        }
                        d.checkpoint();
                    }
                });
            }
        });
        progress(signed.load(Ordering::Relaxed));
        Ok(Fleet {
            plan,
            model,
            devices,
        })
    }

    /// Enrols every device in the hub's enrolment file, in one write.
    pub fn enroll(&self, devices_toml: &Path) -> anyhow::Result<()> {
        hub::enrolment::enroll_many(
            devices_toml,
            self.devices.iter().map(|d| d.enrolment(&self.model)),
        )?;
        Ok(())
    }

    /// Connects every device to the broker and runs both phases. `progress` is called with the
    /// number of records acknowledged so far (of `backlog × devices` plus the live ones).
    pub fn run(
        self,
        host: &str,
        port: u16,
        hub: VerifierKey,
        progress: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> anyhow::Result<Report> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        rt.block_on(self.run_async(host.to_owned(), port, hub, progress))
    }

    async fn run_async(
        self,
        host: String,
        port: u16,
        hub: VerifierKey,
        progress: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> anyhow::Result<Report> {
        let plan = Arc::new(self.plan.clone());
        let hub = Arc::new(hub);
        let acked = Arc::new(AtomicU64::new(0));
        let backlog_total = plan.backlog * self.devices.len() as u64;
        let backlog_left = Arc::new(AtomicU64::new(self.devices.len() as u64));
        let start = Instant::now();
        let backlog_done = Arc::new(std::sync::Mutex::new(None::<Duration>));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        let n = self.devices.len();
        for (i, d) in self.devices.into_iter().enumerate() {
            // Live records are spread over the window, not all at its start.
            let offset = plan.window.mul_f64(i as f64 / n as f64);
            let ctx = DeviceCtx {
                plan: plan.clone(),
                hub: hub.clone(),
                acked_total: acked.clone(),
                backlog_left: backlog_left.clone(),
                backlog_done: backlog_done.clone(),
                progress: progress.clone(),
                stop: stop.clone(),
                start,
                offset,
                host: host.clone(),
                port,
            };
            tasks.push(tokio::spawn(simulate(d, ctx)));
        }
        let mut report = Report {
            devices: n,
            backlog_records: backlog_total,
            ..Report::default()
        };
        for t in tasks {
            let r = t.await?;
            report.add(r);
        }
        stop.store(true, Ordering::Relaxed);
        report.elapsed = start.elapsed();
        report.backlog_drained = *backlog_done.lock().unwrap_or_else(|p| p.into_inner());
        report.finish();
        Ok(report)
    }
}

struct DeviceCtx {
    plan: Arc<Plan>,
    hub: Arc<VerifierKey>,
    acked_total: Arc<AtomicU64>,
    backlog_left: Arc<AtomicU64>,
    backlog_done: Arc<std::sync::Mutex<Option<Duration>>>,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
    stop: Arc<AtomicBool>,
    start: Instant,
    offset: Duration,
    host: String,
    port: u16,
}

/// What one device saw.
#[derive(Debug, Default)]
struct DeviceReport {
    appended: u64,
    acked: u64,
    publishes: u64,
    resends: u64,
    reconnections: u64,
    bad_acks: u64,
    root_mismatches: u64,
    /// (append time since the start, append-to-ack delay) of each live record.
    live_latencies_ms: Vec<(Duration, f64)>,
}

enum Polled {
    Up,
    Down,
    Ack(Vec<u8>),
}

async fn simulate(mut d: SimDevice, ctx: DeviceCtx) -> DeviceReport {
    let plan = &ctx.plan;
    let mut report = DeviceReport {
        appended: d.payloads.len() as u64,
        ..DeviceReport::default()
    };
    let base = hub_link::device_base(&d.territory, &d.id);
    let ack_topic = hub_link::ack_topic(&d.territory, &d.id);
    let agg_topic = format!("{base}/agg/{}", d.model.0);
    let ckpt_topic = hub_link::checkpoint_topic(&d.territory, &d.id);
    let origin = d.origin();
    let mut options = MqttOptions::new(d.id.clone(), ctx.host.clone(), ctx.port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(2 << 20, 2 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let poll_stop = ctx.stop.clone();
    let ack_filter = ack_topic.clone();
    let poller = tokio::spawn(async move {
        while !poll_stop.load(Ordering::Relaxed) {
            let event = match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => Polled::Up,
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == ack_filter => {
                    Polled::Ack(p.payload.to_vec())
                }
                Ok(_) => continue,
                Err(_) => {
                    let _ = tx.send(Polled::Down);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if tx.send(event).is_err() {
                break;
            }
        }
    });

    let backlog = d.payloads.len() as u64;
    let live_records = (plan.live_for.as_secs_f64() / plan.window.as_secs_f64()).floor() as u64;
    let live_start = ctx.start + ctx.offset;
    let mut flow = Flow::new(
        0,
        plan.ack_timeout,
        Instant::now(),
        hub_link::flow::seed(&d.id),
    );
    let mut connected = false;
    let mut published_ckpt: Option<usize> = None;
    let mut backlog_reported = backlog == 0;
    if backlog_reported {
        mark_backlog_done(&ctx);
    }
    let deadline = live_start + plan.live_for + plan.settle;
    loop {
        let size = d.payloads.len() as u64;
        let live_done = size >= backlog + live_records;
        if live_done && flow.acked() >= size {
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        // The next live record's time, if any is still to come.
        let next_live =
            (!live_done).then(|| live_start + plan.window.mul_f64((size - backlog) as f64));
        let wake = next_live
            .unwrap_or(deadline)
            .min(Instant::now() + Duration::from_millis(200));
        let event = tokio::select! {
            e = rx.recv() => e,
            _ = tokio::time::sleep_until(wake.into()) => None,
        };
        match event {
            Some(Polled::Up) => {
                if connected {
                    report.reconnections += 1;
                }
                connected = true;
                let _ = client.subscribe(ack_topic.clone(), QoS::AtLeastOnce).await;
                flow.connected(Instant::now());
                published_ckpt = None;
            }
            Some(Polled::Down) => connected = false,
            Some(Polled::Ack(payload)) => match hub_link::Ack::open(&ctx.hub, &payload) {
                Ok(a) if a.origin == origin && a.count <= size => {
                    if a.count == size && a.root != d.frontier.root() {
                        report.root_mismatches += 1;
                    }
                    if a.count > flow.acked() {
                        let now = Instant::now();
                        for seq in flow.acked()..a.count {
                            if let Some(t) = d.appended[seq as usize] {
                                report.live_latencies_ms.push((
                                    t.duration_since(ctx.start),
                                    now.duration_since(t).as_secs_f64() * 1000.0,
                                ));
                            }
                        }
                        let newly = flow.ack(a.count, now);
                        let total = ctx.acked_total.fetch_add(newly, Ordering::Relaxed) + newly;
                        (ctx.progress)(total);
                        if !backlog_reported && flow.acked() >= backlog {
                            backlog_reported = true;
                            mark_backlog_done(&ctx);
                        }
                    }
                }
                _ => report.bad_acks += 1,
            },
            None => {}
        }
        // Live records fall due (all of them if this task was held up): each is appended at
        // its window's end, which is where its delay to the ack starts.
        loop {
            let n = d.payloads.len() as u64;
            if n >= backlog + live_records {
                break;
            }
            let due = live_start + plan.window.mul_f64((n - backlog) as f64);
            if Instant::now() < due {
                break;
            }
            d.append(Some(due), plan.checkpoint_every);
            report.appended += 1;
            if n + 1 == backlog + live_records {
                d.checkpoint();
            }
        }
        if !connected {
            continue;
        }
        let size = d.payloads.len() as u64;
        while let Some(cursor) = flow.next(size) {
            let payload = d.payloads[cursor as usize].clone();
            if client
                .publish(agg_topic.clone(), QoS::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                break;
            }
            flow.sent(Instant::now());
            report.publishes += 1;
        }
        // The latest checkpoint, once the records it covers are on their way: only the latest,
        // as the agent (the hub takes a smaller checkpoint after a larger one for a rollback).
        let latest = d.checkpoints.len().checked_sub(1);
        if let Some(i) = latest
            && d.checkpoints[i].0 <= flow.cursor()
            && published_ckpt != Some(i)
            && client
                .publish(
                    ckpt_topic.clone(),
                    QoS::AtLeastOnce,
                    false,
                    d.checkpoints[i].1.clone(),
                )
                .await
                .is_ok()
        {
            published_ckpt = Some(i);
        }
        if flow.tick(Instant::now()) {
            report.resends += 1;
            published_ckpt = None;
        }
    }
    report.acked = flow.acked();
    let _ = client.disconnect().await;
    poller.abort();
    report
}

fn mark_backlog_done(ctx: &DeviceCtx) {
    if ctx.backlog_left.fetch_sub(1, Ordering::AcqRel) == 1 {
        *ctx.backlog_done.lock().unwrap_or_else(|p| p.into_inner()) = Some(ctx.start.elapsed());
    }
}

/// What the fleet saw of the hub.
#[derive(Debug, Default)]
pub struct Report {
    pub devices: usize,
    pub backlog_records: u64,
    /// From the start until every device's backlog was acknowledged (None: it never was).
    pub backlog_drained: Option<Duration>,
    pub elapsed: Duration,
    pub appended: u64,
    pub acked: u64,
    /// Records published (first sends and resends).
    pub publishes: u64,
    /// Times a device went back to its acked watermark because the ack stopped moving.
    pub resends: u64,
    pub reconnections: u64,
    /// Acks that did not verify with the hub's key, named another device or counted records
    /// the device does not have.
    pub bad_acks: u64,
    /// Acks whose root differs from the device's own log at the same size.
    pub root_mismatches: u64,
    /// Devices whose log was not wholly acknowledged at the end.
    pub devices_behind: usize,
    /// Append-to-ack delay of every live record, sorted.
    pub latencies_ms: Vec<f64>,
    /// The same for the live records appended after the backlog was drained.
    pub steady_latencies_ms: Vec<f64>,
    live: Vec<(Duration, f64)>,
}

impl Report {
    fn add(&mut self, d: DeviceReport) {
        self.appended += d.appended;
        self.acked += d.acked;
        self.publishes += d.publishes;
        self.resends += d.resends;
        self.reconnections += d.reconnections;
        self.bad_acks += d.bad_acks;
        self.root_mismatches += d.root_mismatches;
        if d.acked < d.appended {
            self.devices_behind += 1;
        }
        self.live.extend(d.live_latencies_ms);
    }

    /// Sorts the delays, and keeps apart those of records appended once every backlog was
    /// acknowledged (the steady state).
    fn finish(&mut self) {
        let drained = self.backlog_drained.unwrap_or(Duration::MAX);
        self.latencies_ms = self.live.iter().map(|(_, l)| *l).collect();
        self.latencies_ms.sort_unstable_by(f64::total_cmp);
        self.steady_latencies_ms = (self.live.iter())
            .filter(|(t, _)| *t >= drained)
            .map(|(_, l)| *l)
            .collect();
        self.steady_latencies_ms.sort_unstable_by(f64::total_cmp);
    }

    /// The `q` quantile (0..=1) of the live records' append-to-ack delay, in ms.
    pub fn latency_ms(&self, q: f64) -> Option<f64> {
        quantile(&self.latencies_ms, q)
    }

    /// The same, at steady state (records appended after the backlog was drained).
    pub fn steady_latency_ms(&self, q: f64) -> Option<f64> {
        quantile(&self.steady_latencies_ms, q)
    }

    /// Backlog records acknowledged per second while draining.
    pub fn drain_rate(&self) -> Option<f64> {
        self.backlog_drained
            .map(|t| self.backlog_records as f64 / t.as_secs_f64().max(1e-9))
    }

    /// One line of figures.
    pub fn summary(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
        format!(
            "devices {} | backlog {} records drained in {} ({} records/s) | records appended {} acked {} | live records {} append-to-ack p50 {} ms p99 {} ms max {} ms; at steady state ({} records) p50 {} ms p99 {} ms | publishes {} resends {} reconnections {} | bad acks {} root mismatches {} devices behind {}",
            self.devices,
            self.backlog_records,
            self.backlog_drained
                .map_or("never".into(), |t| format!("{:.1} s", t.as_secs_f64())),
            self.drain_rate()
                .filter(|_| self.backlog_records > 0)
                .map_or("-".into(), |r| format!("{r:.0}")),
            self.appended,
            self.acked,
            self.latencies_ms.len(),
            ms(self.latency_ms(0.5)),
            ms(self.latency_ms(0.99)),
            ms(self.latency_ms(1.0)),
            self.steady_latencies_ms.len(),
            ms(self.steady_latency_ms(0.5)),
            ms(self.steady_latency_ms(0.99)),
            self.publishes,
            self.resends,
            self.reconnections,
            self.bad_acks,
            self.root_mismatches,
            self.devices_behind,
        )
    }
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let n = sorted.len();
    (n > 0).then(|| sorted[((n - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize])
}

/// Raises this process's open-file limit to its hard limit (a thousand connections need more
/// than the usual 1,024; children such as the broker inherit it).
pub fn raise_open_files() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on this process with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
    l.rlim_cur
}

/// The broker's count of subscriptions, read from its `$SYS` topic.
struct SubscriptionWatch {
    count: Arc<AtomicU64>,
    _client: rumqttc::Client,
}

impl SubscriptionWatch {
    fn start(port: u16) -> anyhow::Result<SubscriptionWatch> {
        let (client, mut connection) =
            rumqttc::Client::new(MqttOptions::new("fleet-watch", "127.0.0.1", port), 16);
        client.subscribe("$SYS/broker/subscriptions/count", QoS::AtMostOnce)?;
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        std::thread::spawn(move || {
            for ev in connection.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Some(n) = std::str::from_utf8(&p.payload)
                            .ok()
                            .and_then(|t| t.trim().parse().ok())
                        {
                            c.store(n, Ordering::Relaxed);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        Ok(SubscriptionWatch {
            count,
            _client: client,
        })
    }

    fn wait_for(&self, n: u64, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        while self.count.load(Ordering::Relaxed) < n {
            anyhow::ensure!(
                start.elapsed() < timeout,
                "the hub did not subscribe within {timeout:?} (the broker counts {} subscriptions): see its log in hub/",
                self.count.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

/// What the hub made of a run, read from its database after an orderly stop.
#[derive(Debug)]
pub struct HubOutcome {
    /// Records stored, over all devices.
    pub stored: u64,
    /// Records received again and ignored (resends of stored ones).
    pub duplicates: u64,
    /// Devices the hub stored something of.
    pub devices: usize,
    /// Alarms by kind.
    pub alarms: std::collections::BTreeMap<String, u64>,
    /// Each instance's exit status on SIGTERM (None: it had to be killed).
    pub exits: Vec<Option<std::process::ExitStatus>>,
    /// Whether one instance was SIGKILLed and started again during the run.
    pub killed: bool,
    /// Messages published by the hostile flood ([`Hubs::flood`]), and how many of them the
    /// hub counted into its alarm rows of rejected traffic.
    pub flooded: u64,
    pub rejected: u64,
    /// Lines of the instances' logs saying a batch was given up (not acknowledged) after
    /// repeated aborts, and that an instance connected to the database again.
    pub batches_given_up: usize,
    pub db_reconnections: usize,
}

/// How the hub side of a run is set up.
#[derive(Debug, Clone)]
pub struct Hubs {
    /// Hub instances on one database and one broker, sharing the subscription (`$share`):
    /// each record goes to one of them. 1: a lone hub.
    pub instances: usize,
    /// SIGKILL the last instance this long after the clock starts...
    pub kill_after: Option<Duration>,
    /// ... and start it again this long after.
    pub down_for: Duration,
    /// Messages per second published, while the fleet runs, by unenrolled senders on 40
    /// territories of 25 topics each (0: none): rejected traffic that every instance counts
    /// into the same coalesced alarm rows.
    pub flood: u64,
    /// End every hub connection to PostgreSQL this long after the clock starts (as a restart
    /// or a failover of the server would).
    pub sever_db_after: Option<Duration>,
}

impl Default for Hubs {
    fn default() -> Hubs {
        Hubs {
            instances: 1,
            kill_after: None,
            down_for: Duration::from_secs(2),
            flood: 0,
            sever_db_after: None,
        }
    }
}

/// A whole run on this machine: a mosquitto and the hub (the workspace's binary; one or
/// several instances on its store: a SQLite file, or PostgreSQL when `IAT_TEST_POSTGRES`
/// names a cluster) in `dir`, the fleet generated, enrolled and run against them, the hubs
/// stopped with SIGTERM. `signed` and `acked` report progress (records signed before the
/// clock starts, records acknowledged after).
pub fn run_local(
    plan: Plan,
    hubs: &Hubs,
    dir: &Path,
    signed: &(dyn Fn(u64) + Sync),
    acked: Arc<dyn Fn(u64) + Send + Sync>,
) -> anyhow::Result<(Report, HubOutcome)> {
    anyhow::ensure!(hubs.instances >= 1, "at least one hub instance");
    let model = hub::enrolment::cards::load(&crate::system::root().join(CARD))?;
    let fleet = Fleet::generate(plan, model, signed)?;
    // $SYS every second: the run waits until the hub has subscribed (what a device publishes
    // before is lost for it and waits for its ack timeout: not what is measured here).
    let broker =
        crate::broker::Mosquitto::start_with(dir, "allow_anonymous true\nsys_interval 1\n");
    let shared = if hubs.instances > 1 {
        "shared_group = \"hubs\"\nclient_id = \"hub-0\"\n"
    } else {
        ""
    };
    let mut first = crate::system::Hub::setup(&dir.join("hub"), broker.port, shared, "60s");
    fleet.enroll(&first.dir.join("devices.toml"))?;
    let vkey = VerifierKey::parse(std::fs::read_to_string(first.vkey())?.trim())?;
    let watch = SubscriptionWatch::start(broker.port)?;
    first.start();
    let mut others: Vec<crate::system::Hub> = (1..hubs.instances)
        .map(|i| first.instance(&dir.join(format!("hub-{i}")), &format!("hub-{i}")))
        .collect();
    for h in &mut others {
        h.start();
    }
    // The hub subscribes to records, checkpoints and statuses; the watch itself is one. The
    // broker counts a shared subscription once, whatever the number of instances in its group:
    // the other instances are waited for by their logs, then given the time to subscribe.
    watch.wait_for(4, Duration::from_secs(30))?;
    for h in &others {
        anyhow::ensure!(
            h.wait_log("connected to", Duration::from_secs(30)),
            "hub instance in {} did not connect within 30 s: see its log",
            h.dir.display()
        );
    }
    if !others.is_empty() {
        std::thread::sleep(Duration::from_millis(500));
    }
    // The instance that is killed and started again, on a thread of its own.
    let victim = match (hubs.kill_after, others.pop()) {
        (Some(after), Some(mut h)) => {
            let down = hubs.down_for;
            Some(std::thread::spawn(move || {
                std::thread::sleep(after);
                h.kill();
                std::thread::sleep(down);
                h.start();
                h
            }))
        }
        (_, h) => {
            others.extend(h);
            None
        }
    };
    let running = Arc::new(AtomicBool::new(true));
    let flood = (hubs.flood > 0).then(|| flood(broker.port, hubs.flood, running.clone()));
    let sever = hubs.sever_db_after.map(|after| {
        let (db, running) = (first.db.clone(), running.clone());
        std::thread::spawn(move || sever_db(&db, after, &running))
    });
    let report = fleet.run("127.0.0.1", broker.port, vkey, acked);
    running.store(false, Ordering::Relaxed);
    let flooded = match flood {
        Some(f) => f
            .join()
            .map_err(|_| anyhow::anyhow!("the flood thread panicked"))?,
        None => 0,
    };
    if let Some(s) = sever {
        s.join()
            .map_err(|_| anyhow::anyhow!("the thread ending database connections panicked"))??;
    }
    let report = report?;
    if flooded > 0 {
        // The last of the flood through the broker and the hubs' batches before they stop.
        std::thread::sleep(Duration::from_secs(3));
    }
    let mut exits = vec![first.terminate(Duration::from_secs(30))];
    let killed = victim.is_some();
    if let Some(v) = victim {
        others.push(
            v.join()
                .map_err(|_| anyhow::anyhow!("the thread killing a hub panicked"))?,
        );
    }
    for h in &mut others {
        exits.push(h.terminate(Duration::from_secs(30)));
    }
    let stats = first.stats();
    let mut alarms = std::collections::BTreeMap::new();
    for a in &stats.alarms {
        *alarms.entry(a.kind.clone()).or_default() += 1;
    }
    let rejected = stats
        .alarms
        .iter()
        .filter(|a| a.source.is_some())
        .map(|a| a.count)
        .sum();
    let logs: String = std::iter::once(&first)
        .chain(&others)
        .flat_map(|h| std::fs::read_dir(&h.dir).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect();
    let outcome = HubOutcome {
        stored: stats.devices.iter().map(|d| d.stored).sum(),
        duplicates: stats.devices.iter().map(|d| d.duplicates).sum(),
        devices: stats.devices.len(),
        alarms,
        exits,
        killed,
        flooded,
        rejected,
        batches_given_up: logs.matches("failed 10 times").count(),
        db_reconnections: logs.matches("connected to the database again").count(),
    };
    Ok((report, outcome))
}

/// Publishes `per_second` messages a second from unenrolled senders until `running` ends;
/// returns how many were published.
fn flood(port: u16, per_second: u64, running: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut o = rumqttc::MqttOptions::new("fleet-flood", "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut connection) = rumqttc::Client::new(o, 1024);
        let poller = std::thread::spawn(move || {
            for ev in connection.iter() {
                match ev {
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        let start = Instant::now();
        let mut sent = 0u64;
        while running.load(Ordering::Relaxed) {
            let due = (start.elapsed().as_secs_f64() * per_second as f64) as u64;
            if sent >= due {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            // The 1,000 topics in a scattered order: batches of different instances meet
            // the same alarm rows in different orders.
            let i = sent.wrapping_mul(7919) % 1000;
            let topic = format!("iat/v1/bots-{}/bot-{}/agg/m", i % 40, i / 40);
            let payload = format!("{{\"seq\":{sent},\"junk\":true}}");
            if client
                .publish(topic, QoS::AtLeastOnce, false, payload.into_bytes())
                .is_ok()
            {
                sent += 1;
            }
        }
        let _ = client.disconnect();
        let _ = poller.join();
        sent
    })
}

/// Ends every other session on the hub's PostgreSQL database once, `after` the start (unless
/// the run ended first).
fn sever_db(
    db: &hub::db::sql::Database,
    after: Duration,
    running: &AtomicBool,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < after {
        if !running.load(Ordering::Relaxed) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let conn = hub::db::store::open_existing(db)?;
    let ended: i64 = conn.query_row(
        "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()) AS t",
        hub::params![],
        |r| r.get(0),
    )?;
    crate::system::say(&format!(
        "ended {ended} PostgreSQL session(s) of the hub instances"
    ));
    Ok(())
}

impl HubOutcome {
    /// True when every instance exited with status 0 on SIGTERM.
    pub fn exited_cleanly(&self) -> bool {
        self.exits
            .iter()
            .all(|e| e.and_then(|s| s.code()) == Some(0))
    }

    pub fn summary(&self) -> String {
        format!(
            "hub{} stored {} records of {} devices | duplicates received and ignored {} | alarms {:?} | exit on SIGTERM {:?}",
            match (self.exits.len(), self.killed) {
                (1, _) => String::new(),
                (n, false) => format!(" ({n} instances)"),
                (n, true) => format!(" ({n} instances, one SIGKILLed and restarted)"),
            },
            self.stored,
            self.devices,
            self.duplicates,
            self.alarms,
            self.exits
                .iter()
                .map(|e| e.and_then(|s| s.code()))
                .collect::<Vec<_>>()
        )
    }
}
