//! The MQTT publisher: delivers the audit log (the outbox) to the hub, at least once, in order.
//!
//! Delivery is the application's job (rumqttc drops its in-flight messages when a broker
//! answers `session_present = 0`, and a broker's PUBACK does not mean the hub stored anything):
//! the only acknowledgement that counts is the hub's signed ack on `.../ack`; on each one the
//! log's watermark advances and acknowledged segments are pruned. On every (re)connect, and
//! when the ack has not moved for the retransmission timeout (at least `ack_timeout`, from the
//! measured round trip), every record above the watermark is sent again; the hub is
//! idempotent on (device, seq). Records are read from the log in small
//! batches, within a congestion window of unacknowledged records that grows with the hub's
//! acks and shrinks when they stop, and resends back off ([`hub_link::flow`]): memory stays
//! bounded whatever the backlog, and a fleet coming back from an outage does not bury its hub.
//!
//! Threads: one only polls the rumqttc connection and forwards what matters (connection
//! up/down, acks); this one decides what to send. Wire format: `docs/mqtt.md`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aggregate::{Outbox, Record};
use audit::{StoreError, VerifierKey};
use rumqttc::{Client, Event, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

use crate::config::Mqtt;
use outbox::AuditOutbox;

/// Records read from the log at a time.
const BATCH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("audit log: {0}")]
    Log(#[from] StoreError),
    #[error("{0}")]
    Tls(#[from] hub_link::tls::TlsError),
    #[error("a stored record cannot be published: {0}")]
    Wire(#[from] hub_link::WireError),
    #[error("mqtt: {0}")]
    Client(#[from] rumqttc::ClientError),
}

/// The outbox shared by the writer (pipelines) and the publisher.
pub struct Shared {
    outbox: Mutex<AuditOutbox>,
    appended: Condvar,
}

impl Shared {
    pub fn new(outbox: AuditOutbox) -> Arc<Shared> {
        Arc::new(Shared {
            outbox: Mutex::new(outbox),
            appended: Condvar::new(),
        })
    }

    /// The outbox; a writer that panicked while holding it left it consistent (every append is
    /// all-or-nothing on disk), so a poisoned lock is taken anyway.
    pub fn lock(&self) -> MutexGuard<'_, AuditOutbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writer's handle: appends and wakes the publisher.
pub struct SharedOutbox(pub Arc<Shared>);

impl Outbox for SharedOutbox {
    type Error = StoreError;

    fn append(&mut self, record: Record) -> Result<u64, StoreError> {
        let seq = self.0.lock().append(record)?;
        self.0.appended.notify_all();
        Ok(seq)
    }
}

/// What a publisher did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PublishStats {
    pub published: u64,
    pub resends: u64,
    pub connections: u64,
    pub acked: u64,
    pub size: u64,
}

enum Polled {
    Connected,
    Ack(Vec<u8>),
    /// The connection failed or broke, and why.
    Down(String),
}

/// MQTT options of a device: client id = device id (brokers key their ACLs on it), clean
/// session, retained last will `offline` on the status topic, TLS when configured.
pub fn mqtt_options(m: &Mqtt, territory: &str, device: &str) -> Result<MqttOptions, PublishError> {
    let mut o = MqttOptions::new(device, &m.host, m.port);
    o.set_keep_alive(m.keep_alive);
    o.set_clean_session(true);
    o.set_max_packet_size(2 << 20, 2 << 20);
    o.set_last_will(LastWill::new(
        hub_link::status_topic(territory, device),
        hub_link::OFFLINE,
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(files) = &m.tls {
        let cfg = hub_link::tls::client_config(files)?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(cfg)));
    }
    Ok(o)
}

/// Who publishes to whom: the device's MQTT settings and identity, the hub's key (acks that
/// do not verify with it are ignored), and the status report to publish, retained, at each
/// connection and every `status_interval`.
#[derive(Clone, Copy)]
pub struct Link<'a> {
    pub mqtt: &'a Mqtt,
    pub hub: &'a VerifierKey,
    pub territory: &'a str,
    pub device: &'a str,
    pub report: &'a (dyn Fn() -> Vec<u8> + Sync),
}

/// Publishes until `stop` is set and everything is acknowledged, or until `stop` has been set
/// for `drain` without that happening. `on_ack` sees each new watermark.
pub fn run(
    shared: &Shared,
    link: &Link<'_>,
    stop: &AtomicBool,
    drain: Duration,
) -> Result<PublishStats, PublishError> {
    let Link {
        mqtt: m,
        hub,
        territory,
        device,
        report,
    } = *link;
    let (client, mut connection) = Client::new(mqtt_options(m, territory, device)?, 512);
    let (tx, rx) = mpsc::sync_channel::<Polled>(1024);
    let ack_topic = hub_link::ack_topic(territory, device);
    let poller_stop = Arc::new(AtomicBool::new(false));
    let ps = poller_stop.clone();
    let at = ack_topic.clone();
    let poller = std::thread::Builder::new()
        .name("agent-mqtt-poll".into())
        .spawn(move || {
            for ev in connection.iter() {
                let msg = match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => Polled::Connected,
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == at => {
                        Polled::Ack(p.payload.to_vec())
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        if tx.send(Polled::Down(e.to_string())).is_err()
                            || ps.load(Ordering::Relaxed)
                        {
                            break;
                        }
                        // Reconnection happens on the next poll; do not spin on a dead broker.
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    }
                };
                if tx.send(msg).is_err() || ps.load(Ordering::Relaxed) {
                    break;
                }
            }
        })
        .expect("spawning a thread");

    let origin = hub_link::origin(territory, device);
    let mut stats = PublishStats::default();
    let (acked, mut size) = {
        let o = shared.lock();
        (o.log().acked(), o.log().size())
    };
    let mut flow = hub_link::flow::Flow::new(
        acked,
        m.ack_timeout,
        Instant::now(),
        hub_link::flow::seed(device),
    );
    let mut connected = false;
    // A broken connection is reported once; the attempts to reconnect are debug.
    let mut down_reported = false;
    let mut published_checkpoint: Option<String> = None;
    let mut stop_at: Option<Instant> = None;
    let mut last_status = Instant::now();
    let status = hub_link::status_topic(territory, device);
    let agg_prefix = hub_link::device_base(territory, device);
    let checkpoint_topic = hub_link::checkpoint_topic(territory, device);
    loop {
        // Wait for news: an event, or (while connected with nothing in flight) a new record.
        let ev = rx.recv_timeout(Duration::from_millis(20));
        let mut events: Vec<Polled> = Vec::new();
        match ev {
            Ok(e) => {
                events.push(e);
                events.extend(rx.try_iter().take(256));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        for e in events {
            match e {
                Polled::Connected => {
                    connected = true;
                    down_reported = false;
                    stats.connections += 1;
                    tracing::info!(
                        "publisher: connected to {}:{} (connection {}); sending from record {}",
                        m.host,
                        m.port,
                        stats.connections,
                        flow.acked()
                    );
                    // Whatever the broker or rumqttc kept or dropped: resend from the watermark.
                    flow.connected(Instant::now());
                    published_checkpoint = None;
                    client.try_subscribe(ack_topic.as_str(), QoS::AtLeastOnce)?;
                    client.try_publish(status.as_str(), QoS::AtLeastOnce, true, report())?;
                    last_status = Instant::now();
                }
                Polled::Down(e) => {
                    if !down_reported {
                        down_reported = true;
                        tracing::warn!(
                            "publisher: no connection to {}:{} ({e}); reconnecting",
                            m.host,
                            m.port
                        );
                    } else {
                        tracing::debug!("publisher: cannot reach {}:{}: {e}", m.host, m.port);
                    }
                    connected = false;
                }
                Polled::Ack(payload) => {
                    let ack = match hub_link::Ack::open(hub, &payload) {
                        Ok(a) if a.origin == origin => a,
                        Ok(a) => {
                            tracing::warn!("publisher: ignoring an ack for {}", a.origin);
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!("publisher: ignoring an ack that does not verify: {e}");
                            continue;
                        }
                    };
                    let mut o = shared.lock();
                    size = o.log().size();
                    if ack.count > size {
                        tracing::warn!(
                            "publisher: the hub acknowledges {} records, the log holds {size}",
                            ack.count
                        );
                        continue;
                    }
                    if ack.count == size && ack.root != o.log().root() {
                        tracing::warn!(
                            "publisher: the hub's root differs from the log's: not pruning"
                        );
                        continue;
                    }
                    if ack.count > flow.acked() {
                        o.ack(ack.count - 1)?;
                        flow.ack(ack.count, Instant::now());
                        tracing::debug!(
                            "publisher: the hub acknowledged {} of {size} records (window {})",
                            ack.count,
                            flow.window()
                        );
                    }
                }
            }
        }
        size = shared.lock().log().size();
        if connected
            && last_status.elapsed() >= m.status_interval
            && client
                .try_publish(status.as_str(), QoS::AtLeastOnce, true, report())
                .is_ok()
        {
            last_status = Instant::now();
        }
        if connected {
            'send: while let Some(cursor) = flow.next(size) {
                let room = flow.window() - (cursor - flow.acked());
                let batch: Vec<audit::Record> = {
                    let o = shared.lock();
                    o.log()
                        .read(cursor)?
                        .take(BATCH.min(room as usize))
                        .collect::<Result<_, _>>()?
                };
                if batch.is_empty() {
                    break;
                }
                for r in batch {
                    let payload = hub_link::encode_record(r.seq, &r.entry, &r.signature)?;
                    let view = aggregate::RecordView::parse(&r.entry)
                        .map_err(|e| hub_link::WireError::Record(e.to_string()))?;
                    let topic = format!("{agg_prefix}/agg/{}", view.model.id);
                    if client
                        .try_publish(topic, QoS::AtLeastOnce, false, payload)
                        .is_err()
                    {
                        // The request queue is full: the poller drains it; try again soon.
                        break 'send;
                    }
                    flow.sent(Instant::now());
                    stats.published += 1;
                }
            }
            // The latest checkpoint, once the records it covers are on their way.
            let note = shared.lock().log().last_checkpoint().map(str::to_owned);
            if let Some(note) = note
                && published_checkpoint.as_ref() != Some(&note)
                && checkpoint_size(&note).is_some_and(|s| s <= flow.cursor())
                && client
                    .try_publish(
                        checkpoint_topic.as_str(),
                        QoS::AtLeastOnce,
                        false,
                        note.clone(),
                    )
                    .is_ok()
            {
                published_checkpoint = Some(note);
            }
            let waited = flow.timeout();
            if flow.tick(Instant::now()) {
                tracing::info!(
                    "publisher: no acknowledgement from the hub for {waited:?}: resending from record {} (next wait {:?})",
                    flow.acked(),
                    flow.timeout()
                );
                stats.resends += 1;
                published_checkpoint = None;
            }
        }
        if stop.load(Ordering::Relaxed) {
            let since = *stop_at.get_or_insert_with(Instant::now);
            let last =
                published_checkpoint.is_some() || shared.lock().log().last_checkpoint().is_none();
            let acked = flow.acked();
            if (acked == size && last) || since.elapsed() >= drain {
                if acked < size {
                    tracing::warn!(
                        "publisher: stopping with {} records unacknowledged (they stay in the log)",
                        size - acked
                    );
                }
                break;
            }
        } else if connected && flow.cursor() >= size {
            // Idle: sleep until a record is appended (or a short while, for acks and timers).
            let o = shared.lock();
            if o.log().size() == size {
                let _ = shared
                    .appended
                    .wait_timeout(o, Duration::from_millis(50))
                    .map_err(|_| ());
            }
        }
    }
    // A clean stop: the final counters, then say so (the last will covers the other cases).
    if connected {
        let _ = client.try_publish(status.as_str(), QoS::AtLeastOnce, true, report());
    }
    let _ = client.try_publish(status.as_str(), QoS::AtLeastOnce, true, hub_link::OFFLINE);
    std::thread::sleep(Duration::from_millis(100));
    poller_stop.store(true, Ordering::Relaxed);
    let _ = client.disconnect();
    drop(rx);
    let _ = poller.join();
    stats.acked = flow.acked();
    stats.size = size;
    Ok(stats)
}

fn checkpoint_size(note: &str) -> Option<u64> {
    let text = audit::note::parse_note(note).ok()?.text;
    audit::Checkpoint::parse(text).ok().map(|c| c.size)
}
