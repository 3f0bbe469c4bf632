//! The hub's MQTT side: one thread only polls the rumqttc connection and forwards events; the
//! caller's thread verifies and stores messages in batches (one SQLite transaction each), then
//! publishes one signed, retained ack per device touched, after the commit. Between batches it
//! raises GAP alarms (every second) and evaluates the time-driven health alarms (every
//! [`crate::health::CHECK_EVERY`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use audit::SignerKey;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

use crate::config::{Config, Mqtt};
use crate::db::store;
use crate::enrolment::Enrolment;
use crate::ingest::{self, Outcome};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("{0}")]
    Tls(#[from] hub_link::tls::TlsError),
    #[error("mqtt: {0}")]
    Client(#[from] rumqttc::ClientError),
}

/// MQTT options for a broker section (TLS with a client certificate when configured).
pub fn mqtt_options(m: &Mqtt) -> Result<MqttOptions, ServeError> {
    let mut o = MqttOptions::new(&m.client_id, &m.host, m.port);
    o.set_keep_alive(m.keep_alive);
    o.set_clean_session(true);
    o.set_max_packet_size(2 << 20, 2 << 20);
    if let Some(files) = &m.tls {
        let cfg = hub_link::tls::client_config(files)?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(cfg)));
    }
    Ok(o)
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
    Publish(String, Vec<u8>),
    Down(String),
}

/// Serves until `stop` is set. Progress and alarms go to stderr.
pub fn serve(
    config: &Config,
    enrolment: &RwLock<Enrolment>,
    key: &SignerKey,
    stop: &AtomicBool,
) -> Result<Totals, ServeError> {
    let mut conn = store::open(&config.db)?;
    let opts = mqtt_options(&config.mqtt)?;
    let (client, mut connection) = Client::new(opts, 4096);
    // Bounded: under overload the poller waits for the verifier instead of growing memory.
    let (tx, rx) = mpsc::sync_channel::<Polled>(16_384);
    let poller_stop = Arc::new(AtomicBool::new(false));
    let ps = poller_stop.clone();
    let poller = std::thread::Builder::new()
        .name("hub-mqtt-poll".into())
        .spawn(move || {
            for ev in connection.iter() {
                if ps.load(Ordering::Relaxed) {
                    break;
                }
                let msg = match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => Polled::ConnAck,
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        Polled::Publish(p.topic, p.payload.to_vec())
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        if tx.send(Polled::Down(e.to_string())).is_err()
                            || ps.load(Ordering::Relaxed)
                        {
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
        })
        .expect("spawning a thread");
    let mut filters = hub_link::hub_filters(config.mqtt.shared_group.as_deref());
    // Retained statuses and last wills, for the dashboard's online/offline (every instance
    // wants them all: not shared).
    filters.push(hub_link::status_topic("+", "+"));
    let gap_ms = config.gap_timeout.as_millis() as i64;
    let mut totals = Totals::default();
    let mut last_gap_check = Instant::now();
    let limits = crate::health::Limits::new(config.status_stale);
    let mut last_health_check = Instant::now();
    let mut batch: Vec<(String, Vec<u8>)> = Vec::new();
    // A broken connection is reported once; the attempts to reconnect every 300 ms are debug.
    let mut down_reported = false;
    while !stop.load(Ordering::Relaxed) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(first) => {
                let mut next = Some(first);
                while let Some(m) = next.take() {
                    match m {
                        Polled::ConnAck => {
                            totals.connections += 1;
                            down_reported = false;
                            tracing::info!(
                                "hub: connected to {}:{}",
                                config.mqtt.host,
                                config.mqtt.port
                            );
                            for f in &filters {
                                client.try_subscribe(f.as_str(), QoS::AtLeastOnce)?;
                            }
                        }
                        Polled::Publish(t, p) => batch.push((t, p)),
                        Polled::Down(e) if !down_reported => {
                            down_reported = true;
                            tracing::warn!("hub: broker connection: {e}; reconnecting");
                        }
                        Polled::Down(e) => tracing::debug!("hub: broker connection: {e}"),
                    }
                    if batch.len() < 512 {
                        next = rx.try_recv().ok();
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let now_ms = now_ms();
        if !batch.is_empty() {
            // The admin area may replace the enrolment; each batch sees one version of it.
            let enrolment = enrolment.read().unwrap_or_else(|p| p.into_inner());
            let enrolment = &*enrolment;
            let t = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut touched = std::collections::BTreeSet::new();
            for (topic, payload) in batch.drain(..) {
                totals.messages += 1;
                let (o, dev) = ingest::handle(&t, enrolment, &topic, &payload, now_ms)?;
                if o.alarms > 0 {
                    tracing::warn!("hub: ALARM on {topic} (see `hub stats`)");
                }
                totals.outcome += o;
                if let Some(d) = dev {
                    touched.insert(d);
                }
            }
            let mut acks = Vec::new();
            for d in &touched {
                if let Some(a) = ingest::ack(&t, enrolment, d)? {
                    acks.push(a);
                }
            }
            t.commit()?;
            // Only after the commit: an ack promises the records are durable here.
            for (topic, ack) in acks {
                match ack.sign(key) {
                    Ok(note) => {
                        // A full request queue drops this ack; the next one (or the device's
                        // ack timeout and resend) makes up for it.
                        let _ =
                            client.try_publish(topic, QoS::AtLeastOnce, true, note.into_bytes());
                    }
                    Err(e) => tracing::error!("hub: cannot sign an ack: {e}"),
                }
            }
        }
        if last_gap_check.elapsed() >= Duration::from_secs(1) {
            last_gap_check = Instant::now();
            let t = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let g = ingest::check_gaps(&t, now_ms, gap_ms)?;
            t.commit()?;
            if g > 0 {
                tracing::warn!("hub: ALARM GAP on {g} device(s)");
            }
            totals.gaps += g;
        }
        if last_health_check.elapsed() >= crate::health::CHECK_EVERY {
            last_health_check = Instant::now();
            let enrolment = enrolment.read().unwrap_or_else(|p| p.into_inner());
            let t = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let c = crate::health::evaluate(&t, &enrolment, now_ms, &limits)?;
            t.commit()?;
            totals.health += c;
        }
    }
    poller_stop.store(true, Ordering::Relaxed);
    let _ = client.disconnect();
    drop(rx);
    let _ = poller.join();
    Ok(totals)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
