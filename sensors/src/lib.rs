//! Sensor drivers and sound-level processing for sensor nodes and Linux boards. They must
//! never keep or hand on raw samples beyond the features they compute.
//!
//! Drivers take their bus in `new()` and are generic over embedded-hal 1.0 traits, so the
//! same code reads a BME280 on a microcontroller's I2C peripheral, on a Linux `/dev/i2c-*`
//! (linux-embedded-hal) and on the simulated bus of an emulated board ([`sim`]).
#![no_std]
#![forbid(unsafe_code)]

pub mod bme280;
pub mod sim;
pub mod sound;
