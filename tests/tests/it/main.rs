//! End-to-end tests against a real mosquitto: delivery, faults, tampering, TLS. One binary,
//! one module per concern; each test prints a FIGURES line (see `tests::system::figures`).

mod bench;
mod camera;
mod clean;
mod deploy;
mod faults;
mod fleet;
mod node;
mod tamper;
mod tls;
