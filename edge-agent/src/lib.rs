//! The agent library: its parts, usable from the binary and from end-to-end tests.

pub mod sources;
