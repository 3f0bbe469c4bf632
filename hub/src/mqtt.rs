//! The hub's MQTT side: one thread only polls the rumqttc connection and forwards events; the
//! caller's thread verifies and stores messages in batches (one SQLite transaction each), then
//! publishes one signed, retained ack per device touched, after the commit. Between batches it
//! raises GAP alarms (every second) and evaluates the time-driven health alarms (every
//! [`crate::health::CHECK_EVERY`]).
//!
//! No single sender can stop it (issue 21). The hub speaks MQTT 5 to the broker so that it can
//! say what it accepts: a Maximum Packet Size of [`MAX_PACKET`] in its CONNECT, which the
//! broker honours by *skipping* a larger message for the hub (MQTT 5 §3.1.2.11.4) where an
//! MQTT 3.1.1 client can only drop the connection, and be sent the same retained message again
//! at the next subscription, forever. Records and checkpoints are subscribed to without
//! retained messages (a device never retains them), statuses with them (presence). Payloads
//! over [`MAX_PAYLOAD`] are not parsed: the poller forwards their size and first bytes, and
//! ingest counts them as `OVERSIZED`. What waits between the poller and the verifier is
//! bounded in messages and in bytes.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use audit::SignerKey;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, RetainForwardRule};
use rumqttc::v5::{Client, ConnectionError, Event, MqttOptions, StateError};
use rumqttc::{TlsConfiguration, Transport};

use crate::config::{Config, Mqtt};
use crate::db::store;
use crate::enrolment::Enrolment;
use crate::ingest::{self, Message, Outcome};

/// The largest payload the hub reads (256 KiB): a record, a checkpoint or a status is a few
/// KiB at most. A larger message is counted (`OVERSIZED`, with its first bytes), never parsed.
pub const MAX_PAYLOAD: usize = 256 * 1024;

/// The Maximum Packet Size the hub asks of the broker (1 MiB): a broker skips a larger message
/// for the hub instead of sending it. Between [`MAX_PAYLOAD`] and this, messages reach the
/// hub and are counted as `OVERSIZED`; above it only the broker's log sees them.
pub const MAX_PACKET: u32 = 1 << 20;

/// Bytes of payload waiting between the poller and the verifier; beyond, the poller waits
/// (and TCP pushes back on the broker) instead of growing memory.
const MAX_QUEUED_BYTES: usize = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("database: {0}")]
    Db(#[from] crate::db::sql::Error),
    #[error("{0}")]
    Tls(#[from] hub_link::tls::TlsError),
}

/// MQTT 5 options for a broker section (TLS with a client certificate when configured).
pub fn mqtt_options(m: &Mqtt) -> Result<MqttOptions, ServeError> {
    let mut o = MqttOptions::new(&m.client_id, &m.host, m.port);
    o.set_keep_alive(m.keep_alive);
    o.set_clean_start(true);
    // Also the limit rumqttc applies to what it reads: a broker that ignores the property
    // makes it drop the connection, which `describe` explains.
    o.set_max_packet_size(Some(MAX_PACKET));
    // Acks in flight at once (as MQTT 3.1.1's default): rumqttc's MQTT 5 state preallocates a
    // slot per allowed packet id, 65,535 of them (about 14 MB) by default.
    o.set_outgoing_inflight_upper_limit(100);
    if let Some(files) = &m.tls {
        let cfg = hub_link::tls::client_config(files)?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(cfg)));
    }
    Ok(o)
}

/// What the hub subscribes to: records and checkpoints without retained messages (a device
/// publishes them unretained; a retained one would come back at every reconnection), and every
/// device's retained status and last will (presence; every instance wants them all: not
/// shared).
pub fn filters(shared_group: Option<&str>) -> Vec<Filter> {
    let mut out: Vec<Filter> = hub_link::hub_filters(shared_group)
        .into_iter()
        .map(|f| Filter {
            retain_forward_rule: RetainForwardRule::Never,
            ..Filter::new(f, QoS::AtLeastOnce)
        })
        .collect();
    out.push(Filter::new(
        hub_link::status_topic("+", "+"),
        QoS::AtLeastOnce,
    ));
    out
}

/// A connection error in words that say what to do.
fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::v5::mqttbytes::Error::PayloadSizeLimitExceeded { pkt_size, max },
        )) => format!(
            "the broker sent a packet of {pkt_size} bytes although this hub asked for at most \
             {max} (MQTT 5 Maximum Packet Size); the broker does not honour it: cap the message \
             size at the broker (mosquitto: `max_packet_size`, see hub/mosquitto/iat.conf)"
        ),
        e => e.to_string(),
    }
}

/// Running totals, printed at the end and as the hub goes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub messages: u64,
    pub outcome: Outcome,
    pub gaps: u64,
    pub health: crate::health::Changes,
    pub connections: u64,
}

enum Polled {
    ConnAck,
    Publish(Message),
    Down(String),
}

/// The first bytes of an oversized payload kept as evidence.
const OVERSIZED_HEAD: usize = 256;

/// Messages verified in one transaction at most.
const BATCH: usize = 512;

/// How long an orderly stop may spend on what the poller had already handed over; what is
/// left is resent by the devices (nothing unacknowledged is ever dropped from their logs).
const DRAIN_FOR: Duration = Duration::from_secs(3);

/// Serves until `stop` is set, then stops in order: the messages already received are
/// verified, stored and acknowledged, the broker connection is closed, the database too.
/// Progress and alarms go to stderr.
pub fn serve(
    config: &Config,
    enrolment: &RwLock<Enrolment>,
    key: &SignerKey,
    stop: &AtomicBool,
) -> Result<Totals, ServeError> {
    let mut conn = store::open(&config.db)?;
    let opts = mqtt_options(&config.mqtt)?;
    let (client, connection) = Client::new(opts, 4096);
    // Bounded in count and in bytes: under overload the poller waits for the verifier instead
    // of growing memory.
    let (tx, rx) = mpsc::sync_channel::<Polled>(16_384);
    let queued = Arc::new(AtomicUsize::new(0));
    let stopping = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let poller = {
        let (queued, stopping) = (queued.clone(), stopping.clone());
        std::thread::Builder::new()
            .name("hub-mqtt-poll".into())
            .spawn(move || {
                poll(connection, &tx, &queued, &stopping);
                let _ = done_tx.send(());
            })
            .expect("spawning a thread")
    };
    let maintenance = maintenance(config, stopping.clone());
    let filters = filters(config.mqtt.shared_group.as_deref());
    let mut s = Serving {
        enrolment,
        key,
        client: &client,
        totals: Totals::default(),
        queued: &queued,
    };
    let gap_ms = config.gap_timeout.as_millis() as i64;
    let mut last_gap_check = Instant::now();
    let limits = crate::health::Limits::new(config.status_stale);
    let mut last_health_check = Instant::now();
    let mut leader = Leader::default();
    let mut batch: Vec<Message> = Vec::new();
    // A broken connection is reported once; the attempts to reconnect every 300 ms are debug.
    let mut down_reported = false;
    // Subscriptions wait for room in the client's request queue (never blocking this thread,
    // which the poller may be waiting for).
    let mut subscribe = false;
    let metrics = crate::metrics::global();
    while !stop.load(Ordering::Relaxed) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(first) => {
                let mut next = Some(first);
                while let Some(m) = next.take() {
                    match m {
                        Polled::ConnAck => {
                            s.totals.connections += 1;
                            metrics.connections.inc();
                            metrics.connected.set(1);
                            down_reported = false;
                            tracing::info!(
                                "hub: connected to {}:{}",
                                config.mqtt.host,
                                config.mqtt.port
                            );
                            subscribe = true;
                        }
                        Polled::Publish(m) => batch.push(m),
                        Polled::Down(e) if !down_reported => {
                            down_reported = true;
                            metrics.connected.set(0);
                            tracing::warn!("hub: broker connection: {e}; reconnecting");
                        }
                        Polled::Down(e) => tracing::debug!("hub: broker connection: {e}"),
                    }
                    if batch.len() < BATCH {
                        next = rx.try_recv().ok();
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if subscribe {
            match client.try_subscribe_many(filters.clone()) {
                Ok(()) => subscribe = false,
                Err(e) => tracing::debug!("hub: subscribing: {e}; trying again"),
            }
        }
        let now_ms = now_ms();
        if let Err(e) = s.batch(&mut conn, &mut batch, now_ms) {
            match recover(BATCH_WORK, e, &mut conn, &config.db, stop)? {
                // Not acknowledged: the devices send these records again.
                Recovered::GaveUp => s.drop_batch(&mut batch),
                Recovered::Reconnected => leader = Leader::default(),
            }
        }
        metrics.tick(now_ms);
        metrics
            .queued_bytes
            .set(i64::try_from(queued.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
        // The time-driven checks run in one instance only when several share a database.
        // A check that fails for another instance's transaction or a lost connection runs at
        // the next turn.
        if last_gap_check.elapsed() >= Duration::from_secs(1) {
            last_gap_check = Instant::now();
            let g = leader.check(&conn).and_then(|lead| {
                if !lead {
                    return Ok(0);
                }
                retrying(&conn, |t| ingest::check_gaps(t, now_ms, gap_ms))
            });
            match g {
                Ok(g) => {
                    if g > 0 {
                        tracing::warn!("hub: ALARM GAP on {g} device(s)");
                    }
                    s.totals.gaps += g;
                }
                Err(e) => {
                    if recover(CHECK_WORK, e, &mut conn, &config.db, stop)?
                        == Recovered::Reconnected
                    {
                        leader = Leader::default();
                    }
                }
            }
        }
        if last_health_check.elapsed() >= crate::health::CHECK_EVERY {
            last_health_check = Instant::now();
            let enrolment = enrolment.read().unwrap_or_else(|p| p.into_inner());
            let c = leader.check(&conn).and_then(|lead| {
                if !lead {
                    return Ok(Default::default());
                }
                retrying(&conn, |t| {
                    crate::health::evaluate(t, &enrolment, now_ms, &limits)
                })
            });
            match c {
                Ok(c) => s.totals.health += c,
                Err(e) => {
                    if recover(CHECK_WORK, e, &mut conn, &config.db, stop)?
                        == Recovered::Reconnected
                    {
                        leader = Leader::default();
                    }
                }
            }
        }
    }
    // The orderly stop. The poller forwards nothing more; what it had handed over is verified,
    // stored and acknowledged (for DRAIN_FOR at most), then the acks and a DISCONNECT go out
    // in that order on the same connection, and the database is closed.
    stopping.store(true, Ordering::Relaxed);
    let drain_until = Instant::now() + DRAIN_FOR;
    let mut left = 0u64;
    while let Ok(m) = rx.try_recv() {
        if let Polled::Publish(m) = m {
            if Instant::now() < drain_until {
                batch.push(m);
            } else {
                left += 1;
            }
        }
        if batch.len() >= BATCH {
            left += s.last_batch(&mut conn, &mut batch)?;
        }
    }
    left += s.last_batch(&mut conn, &mut batch)?;
    if left > 0 {
        tracing::warn!(
            "hub: stopping: {left} message(s) received but not verified in time; their devices send them again"
        );
    }
    let _ = client.try_disconnect();
    // The poller ends on the DISCONNECT or on the connection's end; a broker that does not
    // answer does not hold the stop. Until then, whatever it still hands over is left to the
    // devices' resends.
    let closed_by = Instant::now() + Duration::from_secs(5);
    loop {
        if done_rx.try_recv().is_ok() {
            let _ = poller.join();
            break;
        }
        while rx.try_recv().is_ok() {}
        if Instant::now() > closed_by {
            tracing::warn!("hub: stopping: the broker connection did not close within 5 s");
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let totals = s.totals;
    metrics.connected.set(0);
    drop(conn);
    let _ = maintenance.join();
    Ok(totals)
}

/// How often the maintenance thread makes the coming monthly partitions and applies the
/// retention rule.
const MAINTAIN_EVERY: Duration = Duration::from_secs(3600);

/// The maintenance thread, on its own connection so that a long export never holds ingest:
/// at start and every [`MAINTAIN_EVERY`], the coming monthly partitions (PostgreSQL) and the
/// retention rule (one instance at a time). Failures are logged and tried again at the next
/// turn. Ends when `stopping` is set (an export under way finishes its device first).
fn maintenance(config: &Config, stopping: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let (db, rule) = (config.db.clone(), config.retention.clone());
    std::thread::Builder::new()
        .name("hub-maintenance".into())
        .spawn(move || {
            let mut last: Option<Instant> = None;
            while !stopping.load(Ordering::Relaxed) {
                if last.is_none_or(|t| t.elapsed() >= MAINTAIN_EVERY) {
                    last = Some(Instant::now());
                    if let Err(e) = maintain(&db, rule.as_ref(), &stopping) {
                        tracing::warn!("hub: maintenance: {e}; tried again in an hour");
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
        .expect("spawning a thread")
}

fn maintain(
    db: &crate::db::sql::Database,
    rule: Option<&crate::db::retention::Rule>,
    stop: &AtomicBool,
) -> Result<(), crate::db::retention::RetentionError> {
    let conn = store::open_existing(db)?;
    crate::db::retention::ensure_partitions(&conn, now_ms())?;
    if let Some(rule) = rule {
        crate::db::retention::run(&conn, rule, now_ms(), stop)?;
    }
    Ok(())
}

/// The poller: polls the connection and forwards what ingest needs, bounded in bytes.
fn poll(
    mut connection: rumqttc::v5::Connection,
    tx: &mpsc::SyncSender<Polled>,
    queued: &AtomicUsize,
    stopping: &AtomicBool,
) {
    for ev in connection.iter() {
        let stop = stopping.load(Ordering::Relaxed);
        let msg = match ev {
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) if stop => break,
            Ok(_) if stop => continue,
            Ok(Event::Incoming(Packet::ConnAck(_))) => Polled::ConnAck,
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                let len = p.payload.len();
                if len > MAX_PAYLOAD {
                    Polled::Publish(Message::Oversized {
                        topic,
                        len,
                        head: p.payload[..OVERSIZED_HEAD].to_vec(),
                    })
                } else {
                    while queued.load(Ordering::Relaxed) > MAX_QUEUED_BYTES
                        && !stopping.load(Ordering::Relaxed)
                    {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    queued.fetch_add(len, Ordering::Relaxed);
                    Polled::Publish(Message::Whole {
                        topic,
                        payload: p.payload.to_vec(),
                    })
                }
            }
            Ok(_) => continue,
            Err(e) => {
                if stop || tx.send(Polled::Down(describe(&e))).is_err() {
                    break;
                }
                // Reconnection happens on the next poll; do not spin on a dead broker.
                std::thread::sleep(Duration::from_millis(300));
                continue;
            }
        };
        if tx.send(msg).is_err() {
            break;
        }
    }
}

/// The verifier's side of [`serve`].
struct Serving<'a> {
    enrolment: &'a RwLock<Enrolment>,
    key: &'a SignerKey,
    client: &'a Client,
    totals: Totals,
    queued: &'a AtomicUsize,
}

/// What failed, and what becomes of it when given up (see [`recover`]).
const BATCH_WORK: (&str, &str) = (
    "a batch",
    "its messages are not acknowledged and their devices send them again",
);
const CHECK_WORK: (&str, &str) = ("a time-driven check", "it runs again at its next turn");

/// How the serving loop got past a database error.
#[derive(Debug, PartialEq, Eq)]
enum Recovered {
    /// The transaction failed as often as [`retrying`] allows: its work is given up.
    GaveUp,
    /// The connection was lost and a new one is open (or the hub is stopping): the work is
    /// still to do.
    Reconnected,
}

/// After a database error in the serving loop: a lost connection is opened again (with a
/// growing delay, until the database answers or the hub is told to stop); a transaction that
/// other instances kept aborting is given up; anything else ends the service.
fn recover(
    work: (&str, &str),
    e: crate::db::sql::Error,
    conn: &mut crate::db::sql::Connection,
    db: &crate::db::sql::Database,
    stop: &AtomicBool,
) -> Result<Recovered, ServeError> {
    if e.is_retryable() {
        tracing::error!(
            "hub: {what} failed 10 times for other instances' transactions ({e}); {then}",
            what = work.0,
            then = work.1
        );
        return Ok(Recovered::GaveUp);
    }
    if !(e.is_connection_lost() || conn.is_closed()) {
        return Err(e.into());
    }
    tracing::warn!(
        "hub: the database connection is lost ({e}); reconnecting. Messages wait meanwhile (the devices keep theirs until acknowledged)"
    );
    let mut delay = Duration::from_millis(200);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(delay);
        match store::open_existing(db) {
            Ok(c) => {
                *conn = c;
                crate::metrics::global().db_reconnects.inc();
                tracing::info!("hub: connected to the database again");
                return Ok(Recovered::Reconnected);
            }
            Err(e) => {
                tracing::debug!("hub: connecting to the database: {e}");
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    Ok(Recovered::Reconnected)
}

/// Runs `f` in a transaction, again when PostgreSQL aborted it for another hub instance's.
fn retrying<T>(
    conn: &crate::db::sql::Connection,
    mut f: impl FnMut(&crate::db::sql::Transaction) -> Result<T, crate::db::sql::Error>,
) -> Result<T, crate::db::sql::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let t = conn.transaction()?;
        match f(&t).and_then(|v| t.commit().map(|()| v)) {
            Err(e) if e.is_retryable() && attempt < 10 => {
                tracing::debug!("hub: transaction, attempt {attempt}: {e}; again");
                crate::metrics::global().retries.inc();
                std::thread::sleep(Duration::from_millis(attempt * 5));
            }
            r => return r,
        }
    }
}

/// Which instance runs the time-driven checks (GAP timeouts, health) when several hub
/// instances share a PostgreSQL database: the one holding a session-level advisory lock. It
/// keeps it while its connection lives; when it dies, another instance takes it at its next
/// check. With SQLite there is one instance: always this one.
#[derive(Default)]
struct Leader {
    held: bool,
}

/// The advisory lock of the time-driven checks ("iat-chk" in ASCII).
const LEADER_LOCK: i64 = 0x0069_6174_2d63_686b;

impl Leader {
    fn check(&mut self, conn: &crate::db::sql::Connection) -> Result<bool, crate::db::sql::Error> {
        if self.held || conn.dialect() == crate::db::sql::Dialect::Sqlite {
            return Ok(true);
        }
        self.held = conn.query_row(
            "SELECT pg_try_advisory_lock(?1)",
            crate::params![LEADER_LOCK],
            |r| r.get::<_, bool>(0),
        )?;
        if self.held {
            tracing::info!("hub: this instance runs the time-driven checks (GAP, health)");
        }
        Ok(self.held)
    }
}

/// What one transaction of a batch did: its outcome, the acks to publish once committed, the
/// topics of messages that raised an alarm.
type Attempt = (ingest::Outcome, Vec<(String, hub_link::Ack)>, Vec<String>);

impl Serving<'_> {
    fn attempt(
        t: &crate::db::sql::Transaction,
        enrolment: &Enrolment,
        (batch, pre): (&[Message], &[Option<ingest::Preverified>]),
        devices: &std::collections::BTreeSet<String>,
        now_ms: i64,
    ) -> Result<Attempt, crate::db::sql::Error> {
        let mut b = ingest::Batch::begin(t, devices)?;
        let mut outcome = ingest::Outcome::default();
        let mut touched = std::collections::BTreeSet::new();
        let mut alarmed = Vec::new();
        for (i, m) in batch.iter().enumerate() {
            let p = pre.get(i).and_then(Option::as_ref);
            let (o, dev) = b.handle_message(enrolment, m, p, now_ms)?;
            if o.alarms > 0 {
                alarmed.push(m.topic().to_owned());
            }
            outcome += o;
            if let Some(d) = dev {
                touched.insert(d);
            }
        }
        let mut acks = Vec::new();
        for d in &touched {
            if let Some(a) = b.ack(enrolment, d)? {
                acks.push(a);
            }
        }
        let opened = b.finish(now_ms)?;
        outcome.alarms += opened.len() as u64;
        alarmed.extend(opened);
        Ok((outcome, acks, alarmed))
    }

    /// Verifies and stores a batch in one transaction, then acknowledges each device touched.
    /// On PostgreSQL the batch first locks the state of every device it names, in order: other
    /// hub instances on the same database (a shared subscription) wait for this commit before
    /// they judge a record of those devices, and this one for theirs. A transaction that
    /// PostgreSQL aborts for another instance's (a deadlock, a row inserted first) runs again.
    fn batch(
        &mut self,
        conn: &mut crate::db::sql::Connection,
        batch: &mut Vec<Message>,
        now_ms: i64,
    ) -> Result<(), crate::db::sql::Error> {
        if batch.is_empty() {
            return Ok(());
        }
        // The admin area may replace the enrolment; each batch sees one version of it.
        let enrolment = self.enrolment.read().unwrap_or_else(|p| p.into_inner());
        let enrolment = &*enrolment;
        let started = Instant::now();
        let messages = batch.len() as u64;
        let devices: std::collections::BTreeSet<String> = batch
            .iter()
            .filter_map(|m| hub_link::Topic::parse(m.topic()).ok())
            .filter(|t| ingest::enrolled(enrolment, t))
            .map(|t| t.device)
            .collect();
        let pre = ingest::preverify(enrolment, batch);
        let (outcome, acks, alarmed) = retrying(conn, |t| {
            Self::attempt(t, enrolment, (batch, &pre), &devices, now_ms)
        })?;
        self.totals.messages += messages;
        self.totals.outcome += outcome;
        for topic in alarmed {
            // Once per new alarm: a flood of rejections is counted, not logged line by line.
            // The topic is the sender's text: escaped and shortened.
            let topic: String = topic.escape_debug().take(200).collect();
            tracing::warn!("hub: ALARM on {topic} (see `hub stats`)");
        }
        self.release(batch);
        crate::metrics::global().batch(outcome, messages, started.elapsed());
        // Only after the commit: an ack promises the records are durable here. Signed on two
        // threads (a backlog touches hundreds of devices per batch), published in order.
        let key = self.key;
        let sign = |acks: &[(String, hub_link::Ack)]| -> Vec<_> {
            acks.iter().map(|(_, a)| a.sign(key)).collect()
        };
        let half = acks.len() / 2;
        let notes = if half < 8 {
            sign(&acks)
        } else {
            let (first, second) = acks.split_at(half);
            std::thread::scope(|s| {
                let other = s.spawn(|| sign(second));
                let mut out = sign(first);
                match other.join() {
                    Ok(more) => out.extend(more),
                    Err(_) => out.extend(sign(second)),
                }
                out
            })
        };
        for ((topic, _), note) in acks.into_iter().zip(notes) {
            match note {
                Ok(note) => {
                    // A full request queue drops this ack; the next one (or the device's
                    // ack timeout and resend) makes up for it.
                    let _ =
                        self.client
                            .try_publish(topic, QoS::AtLeastOnce, true, note.into_bytes());
                }
                Err(e) => tracing::error!("hub: cannot sign an ack: {e}"),
            }
        }
        Ok(())
    }
}

impl Serving<'_> {
    /// Empties `batch`, counting its bytes out of the queue.
    fn release(&self, batch: &mut Vec<Message>) {
        let bytes: usize = batch
            .drain(..)
            .map(|m| match m {
                Message::Whole { payload, .. } => payload.len(),
                Message::Oversized { .. } => 0,
            })
            .sum();
        self.queued.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Gives up a batch: nothing of it is acknowledged.
    fn drop_batch(&mut self, batch: &mut Vec<Message>) {
        crate::metrics::global().batches_dropped.inc();
        self.totals.messages += batch.len() as u64;
        self.release(batch);
    }

    /// A batch of the orderly stop: stored if the database answers; otherwise left to the
    /// devices' resends. Returns how many messages were left.
    fn last_batch(
        &mut self,
        conn: &mut crate::db::sql::Connection,
        batch: &mut Vec<Message>,
    ) -> Result<u64, ServeError> {
        match self.batch(conn, batch, now_ms()) {
            Ok(()) => Ok(0),
            Err(e) if e.is_retryable() || e.is_connection_lost() || conn.is_closed() => {
                tracing::warn!("hub: stopping: a batch could not be stored: {e}");
                let n = batch.len() as u64;
                self.drop_batch(batch);
                Ok(n)
            }
            Err(e) => Err(e.into()),
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
