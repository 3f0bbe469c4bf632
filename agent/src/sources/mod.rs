//! Where the agent gets sensor data: a serial sensor node, a sensor on the board's own I2C
//! bus, and (later) replay files. Each source validates its input at the edge and hands
//! out `protocol` types, whichever way the data came.

pub mod camera;
pub mod i2c;
pub mod microphone;
pub mod serial;
