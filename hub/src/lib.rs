//! The hub: subscribes to every device's records and checkpoints, verifies them (enrolment,
//! signature, model, order, continuity, consistency with signed checkpoints), stores them in
//! SQLite idempotently on (device, seq), acknowledges with a note signed by the hub's key and
//! raises GAP, FORK, ROLLBACK and EQUIVOCATION alarms with their evidence.
//!
//! Code map:
//! - [`config`]: the hub's config and the enrolment file (devices, keys, allowed models).
//! - [`store`]: the SQLite schema, per-device state, alarms, statistics.
//! - [`ingest`]: verification of one message inside a transaction; gap detection; acks.
//! - [`service`]: the MQTT loop (one polling thread, batches, acks after commit).
//!
//! Wire format: `docs/mqtt.md` (crate `wire`).

pub mod config;
pub mod ingest;
pub mod service;
pub mod store;
