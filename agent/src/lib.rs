//! The device service: sources -> pre-processing -> models -> post-processing -> aggregators
//! (privacy rules) -> the signed audit log, which is also the outbox -> MQTT delivery to the
//! hub. It must never write or send a frame, a sample or anything but a sealed aggregate
//! record: frames live in memory for the time of one inference.
//!
//! Map:
//! - [`config`]: the agent's configuration, validated once.
//! - [`service`]: `run`: sources -> models -> aggregators -> the audit log.
//! - [`pipeline`]: pre-processing and post-processing driven by the model card.
//! - [`sources`]: live sources: cameras (a child process writing raw frames), the sensor
//!   node's serial frames, Linux I2C sensors.
//! - [`stop`]: an orderly stop on SIGTERM/SIGINT; [`health`]: what each pipeline is doing;
//!   [`status`]: the retained status report built from it and the board's readings.
//! - [`publish`]: MQTT delivery of the log to the hub, resending above the hub's signed ack.
//!
//! The outbox (the audit log as the only writer of what may leave) is crate `outbox`; model
//! cards are crate `modelcard`, loading and checking models crate `runtime`, the
//! operators crate `kernels`.

pub mod budget;
pub mod config;
pub mod health;
pub mod pipeline;
pub mod publish;
pub mod service;
pub mod sources;
pub mod status;
pub mod stop;
