//! The messages a node and the agent exchange. Units are fixed-point integers so that a
//! frame means the same on every platform and compares exactly in tests.

use heapless::Vec;
use serde::{Deserialize, Serialize};

/// Most band levels in one [`Sound`] message.
pub const MAX_BANDS: usize = 10;

/// Most values in one [`Block`] of samples or features.
pub const MAX_BLOCK: usize = 128;

/// Every message kind of the wire format. New kinds go at the end (postcard tags by index).
// `Block` makes every message ~270 bytes; boxing it would need an allocator the nodes lack.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Message {
    /// Node -> agent, first frame after boot.
    Hello(Hello),
    /// Agent -> node, answer to [`Hello`].
    HelloAck(HelloAck),
    /// Temperature, humidity and pressure.
    Environment(Environment),
    /// Sound level over a short period and its band levels.
    Sound(Sound),
    /// Raw samples or features for the agent's models.
    Block(Block),
    /// Periodic node health.
    Status(Status),
    /// A fault the node detected and survived.
    Fault(NodeFault),
}

/// Capability bits a node announces in [`Hello::capabilities`].
pub mod capabilities {
    /// Sends [`super::Environment`] messages.
    pub const ENVIRONMENT: u32 = 1 << 0;
    /// Sends [`super::Sound`] messages.
    pub const SOUND: u32 = 1 << 1;
    /// Sends raw PCM [`super::Block`]s.
    pub const PCM: u32 = 1 << 2;
    /// Sends feature [`super::Block`]s.
    pub const FEATURES: u32 = 1 << 3;
    /// The sensor is simulated (emulated board or test rig): not for publication.
    pub const SIMULATED: u32 = 1 << 31;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Hello {
    /// Highest wire-format version the node speaks.
    pub protocol: u8,
    /// Node identity (from the board's unique id where it has one).
    pub node_id: u32,
    /// Firmware version, major/minor/patch.
    pub firmware: [u8; 3],
    /// [`capabilities`] bits.
    pub capabilities: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct HelloAck {
    /// Version the agent will speak (at most the node's).
    pub protocol: u8,
    /// Whether the agent accepts this node.
    pub accepted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Environment {
    /// Temperature in hundredths of a degree Celsius.
    pub temperature_centi_c: i32,
    /// Relative humidity in thousandths of a percent, if the sensor measures it.
    pub humidity_milli_pct: Option<u32>,
    /// Pressure in pascals, if the sensor measures it.
    pub pressure_pa: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Sound {
    /// Length of the measurement period in milliseconds (e.g. 125, "fast").
    pub period_ms: u16,
    /// A-weighted equivalent level over the period, hundredths of a dB.
    pub laeq_centi_db: i16,
    /// Unweighted (Z) equivalent level over the period, hundredths of a dB.
    pub lzeq_centi_db: i16,
    /// Centre of the first band in Hz; each next band is one octave higher.
    pub first_band_hz: u16,
    /// Unweighted band levels, hundredths of a dB.
    pub bands_centi_db: Vec<i16, MAX_BANDS>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum BlockKind {
    /// Signed 16-bit PCM samples.
    Pcm16,
    /// Model features (e.g. log band energies), scaled by the agent's model card.
    Features,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Block {
    pub kind: BlockKind,
    /// Samples (or feature vectors) per second.
    pub rate_hz: u32,
    /// Index of the first value in the node's stream, to detect gaps.
    pub index: u32,
    pub values: Vec<i16, MAX_BLOCK>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ResetCause {
    PowerOn,
    Watchdog,
    Software,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Status {
    /// Measurement cycles since boot.
    pub cycles: u32,
    /// Frames sent since boot, this one included.
    pub frames_sent: u32,
    /// Sensor reads that failed since boot.
    pub sensor_errors: u16,
    pub reset_cause: ResetCause,
    /// Wire-format version the agent accepted in its [`HelloAck`]; none before an ack.
    pub agent_protocol: Option<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FaultCode {
    /// The sensor did not answer, or answered with the wrong chip id.
    SensorMissing,
    /// A bus transfer to the sensor failed.
    SensorBus,
    /// The sensor answered with an impossible value.
    SensorData,
    /// Audio samples were lost.
    AudioOverrun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NodeFault {
    pub code: FaultCode,
    /// Code-specific detail (e.g. a bus address).
    pub detail: u16,
}
