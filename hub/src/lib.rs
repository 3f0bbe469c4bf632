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
//! - [`series`]: the derived, indexed table of aggregate values that charts and exports read.
//! - [`query`]: the read side (device state, alarms, the public register).
//! - [`cards`]: the model-card metadata copied at enrolment.
//! - [`auth`]: admin passwords (Argon2id) and sessions.
//! - [`web`]: the dashboard, JSON/CSV API, open-data export, register and admin area.
//! - [`verify`]: independent verification of exported records against a signed checkpoint.
//! - [`dates`]: UTC dates for labels and queries.
//!
//! Wire format: `docs/mqtt.md` (crate `wire`).

pub mod auth;
pub mod cards;
pub mod config;
pub mod dates;
pub mod ingest;
pub mod query;
pub mod series;
pub mod service;
pub mod store;

pub mod web;
