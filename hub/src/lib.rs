//! The hub: subscribes to every device's records and checkpoints, verifies them (enrolment,
//! signature, model, order, continuity, consistency with signed checkpoints), stores them in
//! SQLite idempotently on (device, seq), acknowledges with a note signed by the hub's key and
//! raises GAP, FORK, ROLLBACK and EQUIVOCATION alarms with their evidence. It must never store
//! a record it could not verify, acknowledge one before it is committed, nor show a suppressed
//! count as a number.
//!
//! Code map:
//! - [`config`]: the hub's config (broker, key, database, web), validated once.
//! - [`enrolment`]: the enrolment file (devices, keys, sites, allowed models) and the
//!   model-card metadata copied at enrolment ([`enrolment::cards`]).
//! - [`mqtt`]: the MQTT loop (MQTT 5 with a maximum packet size, one polling thread, batches
//!   bounded in bytes, acks after commit, the orderly stop).
//! - [`ingest`]: verification of one message inside a transaction; gap detection; acks;
//!   rejected traffic counted per source and kind ([`db::rejections`]).
//! - [`health`]: device health: status reports, health alarms (offline, silent model,
//!   backlog, low disk, restarting source), their plain-French wording.
//! - [`db`]: the SQLite schema and per-device state, the derived series, rejected traffic
//!   coalesced per source, the read side.
//! - [`auth`]: admin passwords (Argon2id) and sessions.
//! - [`web`]: the dashboard, the JSON API, the exports (CSV, records, open-data counting
//!   schema), the register and the admin area.
//! - [`dates`]: dates for labels and queries.
//! - [`metrics`]: `/metrics` (Prometheus) and `/healthz`.
//!
//! Wire format: `docs/mqtt.md` (crate `hub-link`); record verification shared with the agent
//! and `hub verify`: crate `verify`. The hub must never accept a record it could not verify,
//! nor acknowledge one before it is committed.

pub mod auth;
pub mod config;
pub mod dates;
pub mod db;
pub mod enrolment;
pub mod health;
pub mod ingest;
pub mod metrics;
pub mod mqtt;
pub mod web;
