//! What an operator's monitoring reads: `GET /metrics` for Prometheus (OpenMetrics text) and
//! `GET /healthz` for a load balancer or systemd's companion checks.
//!
//! Counters of the ingest loop live in this process ([`global`]); what the database knows
//! (devices online, open alarms by kind) is read at each scrape, and the time those reads take
//! is itself a metric (the database's latency as a reader sees it). The write side's latency is
//! the histogram of batch commits.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::db::sql::Connection;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::db::store::Result;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `stored`, `duplicate`, `held` (waiting for a missing predecessor) or `rejected`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// The hub's metrics. Cheap to update (atomics); one per process.
pub struct Metrics {
    registry: Registry,
    pub messages: Counter,
    pub records: Family<OutcomeLabel, Counter>,
    pub alarms_raised: Counter,
    pub connections: Counter,
    pub connected: Gauge,
    pub queued_bytes: Gauge,
    pub batch_seconds: Histogram,
    /// Batches run again after PostgreSQL aborted them for another hub instance's transaction.
    pub retries: Counter,
    /// Batches given up after as many retries (not acknowledged: their devices resend them).
    pub batches_dropped: Counter,
    /// New connections to the database after the previous one was lost.
    pub db_reconnects: Counter,
    devices_enrolled: Gauge,
    devices_online: Gauge,
    alarms_open: Family<KindLabel, Gauge>,
    health_alarms_open: Family<KindLabel, Gauge>,
    scrape_db_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// When the ingest loop last went round (Unix ms; 0: no ingest loop in this process).
    loop_ms: AtomicI64,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("iat_hub");
        let m = Metrics {
            messages: Counter::default(),
            records: Family::default(),
            alarms_raised: Counter::default(),
            connections: Counter::default(),
            connected: Gauge::default(),
            queued_bytes: Gauge::default(),
            // 0.5 ms to about 16 s.
            batch_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            retries: Counter::default(),
            batches_dropped: Counter::default(),
            db_reconnects: Counter::default(),
            devices_enrolled: Gauge::default(),
            devices_online: Gauge::default(),
            alarms_open: Family::default(),
            health_alarms_open: Family::default(),
            scrape_db_seconds: Gauge::default(),
            loop_ms: AtomicI64::new(0),
            registry: Registry::default(),
        };
        registry.register(
            "messages",
            "MQTT messages received on the hub's topics",
            m.messages.clone(),
        );
        registry.register(
            "records",
            "Messages by what ingest did with them: stored, duplicate, held (waiting for a missing predecessor) or rejected (bad signature, malformed, unenrolled, not allowed, oversized...)",
            m.records.clone(),
        );
        registry.register(
            "alarms_raised",
            "Audit alarms raised (rejected traffic: one per source, kind and period)",
            m.alarms_raised.clone(),
        );
        registry.register(
            "broker_connections",
            "Connections made to the broker (the first one and every reconnection)",
            m.connections.clone(),
        );
        registry.register(
            "broker_connected",
            "1 while the hub is connected to the broker",
            m.connected.clone(),
        );
        registry.register_with_unit(
            "ingest_queue",
            "Payload bytes received and not yet verified",
            Unit::Bytes,
            m.queued_bytes.clone(),
        );
        registry.register_with_unit(
            "db_batch",
            "Time to verify, store and commit one batch of messages (the write side's latency)",
            Unit::Seconds,
            m.batch_seconds.clone(),
        );
        registry.register(
            "db_batch_retries",
            "Batches run again after PostgreSQL aborted their transaction for another hub instance's (deadlock, row inserted first)",
            m.retries.clone(),
        );
        registry.register(
            "db_batches_dropped",
            "Batches given up after 10 attempts; not acknowledged, so their devices send the records again",
            m.batches_dropped.clone(),
        );
        registry.register(
            "db_reconnects",
            "Connections made to the database again after the previous one was lost (server restart, failover)",
            m.db_reconnects.clone(),
        );
        registry.register(
            "devices_enrolled",
            "Devices in the enrolment file",
            m.devices_enrolled.clone(),
        );
        registry.register(
            "devices_online",
            "Devices whose latest status is online and that have no open offline alarm",
            m.devices_online.clone(),
        );
        registry.register(
            "alarms_open",
            "Audit alarms not acknowledged, by kind",
            m.alarms_open.clone(),
        );
        registry.register(
            "health_alarms_open",
            "Health alarms whose cause lasts, by kind",
            m.health_alarms_open.clone(),
        );
        registry.register_with_unit(
            "db_scrape",
            "Time the database took to answer this scrape's reads (the read side's latency)",
            Unit::Seconds,
            m.scrape_db_seconds.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The ingest loop went round at `now_ms`.
    pub fn tick(&self, now_ms: i64) {
        self.loop_ms.store(now_ms, Ordering::Relaxed);
    }

    /// When the ingest loop last went round, if it runs in this process.
    pub fn last_tick_ms(&self) -> Option<i64> {
        Some(self.loop_ms.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }

    /// Counts what one batch did.
    pub fn batch(&self, o: crate::ingest::Outcome, messages: u64, took: Duration) {
        self.messages.inc_by(messages);
        for (outcome, n) in [
            ("stored", o.stored),
            ("duplicate", o.duplicates),
            ("held", o.held),
            ("rejected", o.rejected),
        ] {
            if n > 0 {
                self.records
                    .get_or_create(&OutcomeLabel { outcome })
                    .inc_by(n);
            }
        }
        self.alarms_raised.inc_by(o.alarms);
        self.batch_seconds.observe(took.as_secs_f64());
    }

    /// The OpenMetrics text of every metric, after reading what the database knows.
    pub fn scrape(&self, conn: &Connection, enrolled: usize) -> Result<String> {
        let started = std::time::Instant::now();
        let online: i64 = conn.query_row(
            "SELECT COUNT(*) FROM presence p WHERE p.status = 'online' AND NOT EXISTS
               (SELECT 1 FROM health_alarms h WHERE h.device = p.device AND h.kind = ?1
                  AND h.cleared_ms IS NULL)",
            crate::params![crate::health::OFFLINE],
            |r| r.get(0),
        )?;
        let audit = kinds(
            conn,
            "SELECT kind, COUNT(*) FROM alarms WHERE acked_ms IS NULL GROUP BY kind",
        )?;
        let health = kinds(
            conn,
            "SELECT kind, COUNT(*) FROM health_alarms WHERE cleared_ms IS NULL GROUP BY kind",
        )?;
        self.scrape_db_seconds.set(started.elapsed().as_secs_f64());
        self.devices_online.set(online);
        self.devices_enrolled
            .set(i64::try_from(enrolled).unwrap_or(i64::MAX));
        // Kinds no longer open disappear rather than stay at their last value.
        self.alarms_open.clear();
        for (kind, n) in audit {
            self.alarms_open.get_or_create(&KindLabel { kind }).set(n);
        }
        self.health_alarms_open.clear();
        for (kind, n) in health {
            self.health_alarms_open
                .get_or_create(&KindLabel { kind })
                .set(n);
        }
        let mut out = String::new();
        // Writing into a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        Ok(out)
    }
}

fn kinds(conn: &Connection, sql: &str) -> Result<Vec<(String, i64)>> {
    let mut q = conn.prepare_cached(sql)?;
    let rows = q.query_map(crate::params![], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// This process's metrics.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_names_every_metric_and_reads_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::store::open(crate::db::sql::test_database(dir.path())).unwrap();
        conn.execute_batch(
            "INSERT INTO presence (device, status, status_ms, seen_ms) VALUES
               ('a', 'online', 1, 1), ('b', 'online', 1, 1), ('c', 'offline', 1, 1);
             INSERT INTO alarms (at_ms, device, kind, detail) VALUES
               (1, 'a', 'GAP', 'x'), (2, 'a', 'GAP', 'y'), (3, 'b', 'FORK', 'z');
             INSERT INTO health_alarms (device, kind, subject, since_ms, raised_ms, detail)
               VALUES ('b', 'offline', '', 1, 1, 'gone');",
        )
        .unwrap();
        let m = Metrics::new();
        m.batch(
            crate::ingest::Outcome {
                stored: 5,
                duplicates: 1,
                held: 0,
                alarms: 1,
                rejected: 2,
            },
            8,
            Duration::from_millis(3),
        );
        let text = m.scrape(&conn, 4).unwrap();
        for want in [
            "iat_hub_messages_total 8",
            "iat_hub_records_total{outcome=\"stored\"} 5",
            "iat_hub_records_total{outcome=\"rejected\"} 2",
            "iat_hub_alarms_raised_total 1",
            "iat_hub_devices_enrolled 4",
            // b is online by its status but its reports stopped: not online.
            "iat_hub_devices_online 1",
            "iat_hub_alarms_open{kind=\"GAP\"} 2",
            "iat_hub_alarms_open{kind=\"FORK\"} 1",
            "iat_hub_health_alarms_open{kind=\"offline\"} 1",
            "iat_hub_db_batch_seconds_count 1",
            "# TYPE iat_hub_db_scrape_seconds gauge",
            "# EOF",
        ] {
            assert!(text.contains(want), "lacks {want:?}:\n{text}");
        }
        assert!(!text.contains("outcome=\"held\""), "no zero series made up");
        // Acknowledged alarms leave the gauge.
        conn.execute(
            "UPDATE alarms SET acked_ms = 9 WHERE kind = 'FORK'",
            crate::params![],
        )
        .unwrap();
        let text = m.scrape(&conn, 4).unwrap();
        assert!(!text.contains("kind=\"FORK\""), "{text}");
        assert_eq!(m.last_tick_ms(), None);
        m.tick(42);
        assert_eq!(m.last_tick_ms(), Some(42));
    }
}
