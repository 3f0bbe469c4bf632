//! Sensor drivers and sound-level processing for sensor nodes and Linux boards.
#![no_std]
