//! The end-to-end test harness: a real mosquitto on a free loopback port, a TCP fault proxy,
//! the hub and agent binaries as processes, and a spy subscribed to `#` that checks every
//! payload on the broker (the privacy test at the wire). End-to-end tests live in tests/tests/.
//! It must never send traffic beyond loopback, nor run without bounds in count and time.

pub mod broker;
pub mod fleet;
pub mod node;
pub mod proxy;
pub mod system;
