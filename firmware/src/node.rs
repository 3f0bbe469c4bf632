//! The node's measurement cycle, independent of the board: read the environment sensor,
//! turn a period of audio into levels and features, and send it all as protocol frames.

use embedded_hal::i2c::I2c;
use heapless::Vec;
use node_link::{
    Block, BlockKind, Decoder, Environment, FaultCode, Frame, Hello, MAX_BLOCK, MAX_WIRE, Message,
    NodeFault, ResetCause, Sound, Status, capabilities, encode_frame,
};
use sensors::bme280::{self, Bme280};
use sensors::sound::SoundMeter;

/// Audio sample rate.
pub const SAMPLE_RATE_HZ: u32 = 16_000;
/// One measurement period ("fast" time weighting: 125 ms).
pub const PERIOD_MS: u16 = 125;
pub const PERIOD_SAMPLES: usize = (SAMPLE_RATE_HZ as usize * PERIOD_MS as usize) / 1000;
/// Feature vectors per period: one per 250 samples (15.6 ms), one value per band.
pub const FEATURE_SLICES: usize = 8;
pub const BANDS: usize = 6;
pub const FIRST_BAND_HZ: u16 = 125;
/// Level that a full-scale square wave stands for: the microphone's calibration.
pub const FULL_SCALE_DB: f32 = 120.0;
/// PCM samples sent per period, for the agent's models and for checking the chain.
pub const PCM_PER_PERIOD: usize = MAX_BLOCK;
/// A status frame every this many cycles.
pub const STATUS_EVERY: u32 = 4;

const _: () = assert!(FEATURE_SLICES * BANDS <= MAX_BLOCK);
const _: () = assert!(PERIOD_SAMPLES.is_multiple_of(FEATURE_SLICES));

/// Where frames go (a UART on a board, a buffer in tests), and what comes back.
pub trait FrameSink {
    fn send(&mut self, bytes: &[u8]);

    /// A byte from the agent, if one is waiting.
    fn poll_byte(&mut self) -> Option<u8> {
        None
    }
}

impl<const N: usize> FrameSink for Vec<u8, N> {
    fn send(&mut self, bytes: &[u8]) {
        // Tests size the buffer; a full buffer truncates, which the decoder then reports.
        let room = (N - self.len()).min(bytes.len());
        self.extend_from_slice(&bytes[..room]).ok();
    }
}

/// What one cycle measured, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub struct Report {
    pub cycle: u32,
    pub environment: Option<Environment>,
    pub laeq_centi_db: i16,
    pub lzeq_centi_db: i16,
    pub frames_sent: u32,
}

pub struct Node<I2C, S> {
    environment: Option<Bme280<I2C>>,
    environment_ok: bool,
    meter: SoundMeter<BANDS>,
    sink: S,
    node_id: u32,
    reset_cause: ResetCause,
    counter: u32,
    cycles: u32,
    sensor_errors: u16,
    /// Frames from the agent (its `HelloAck`).
    inbound: Decoder,
    agent_protocol: Option<u8>,
}

/// Frame payload of a level in dB: hundredths, saturated to `i16`.
fn centi_db(db: f32) -> i16 {
    let v = db * 100.0;
    let v = if v >= 0.0 { v + 0.5 } else { v - 0.5 };
    v.clamp(i16::MIN as f32, i16::MAX as f32) as i16
}

impl<I2C: I2c, S: FrameSink> Node<I2C, S> {
    pub fn new(
        environment: Option<Bme280<I2C>>,
        sink: S,
        node_id: u32,
        reset_cause: ResetCause,
    ) -> Self {
        Self {
            environment,
            environment_ok: false,
            meter: SoundMeter::new(SAMPLE_RATE_HZ, FIRST_BAND_HZ as f32, FULL_SCALE_DB),
            sink,
            node_id,
            reset_cause,
            counter: 0,
            cycles: 0,
            sensor_errors: 0,
            inbound: Decoder::new(),
            agent_protocol: None,
        }
    }

    /// Takes what the agent sent so far; records its `HelloAck`.
    pub fn receive(&mut self) {
        while let Some(byte) = self.sink.poll_byte() {
            if let Some(Ok(Frame {
                message: Message::HelloAck(ack),
                ..
            })) = self.inbound.push(byte)
            {
                defmt::info!(
                    "agent ack: protocol v{=u8}, accepted {=bool}",
                    ack.protocol,
                    ack.accepted
                );
                self.agent_protocol = Some(ack.protocol);
            }
        }
    }

    /// Waits for the agent's `HelloAck` for at most `polls` polls of the link; a node
    /// without an agent (or an agent that does not answer) goes on without one.
    pub fn await_hello_ack(&mut self, polls: u32) -> Option<u8> {
        for _ in 0..polls {
            self.receive();
            if self.agent_protocol.is_some() {
                break;
            }
        }
        if self.agent_protocol.is_none() {
            defmt::info!("no hello ack from the agent; going on");
        }
        self.agent_protocol
    }

    /// Announces the node and brings up its sensors.
    pub fn start(&mut self, simulated: bool) {
        // A lone delimiter ends whatever half-frame the receiver holds from before a reset.
        self.sink.send(&[0]);
        let mut caps = capabilities::SOUND | capabilities::FEATURES | capabilities::PCM;
        if self.environment.is_some() {
            caps |= capabilities::ENVIRONMENT;
        }
        if simulated {
            caps |= capabilities::SIMULATED;
        }
        let (major, minor, patch) = (0, 1, 0);
        self.send(Message::Hello(Hello {
            protocol: node_link::VERSION,
            node_id: self.node_id,
            firmware: [major, minor, patch],
            capabilities: caps,
        }));
        if let Some(sensor) = &mut self.environment {
            match sensor.init() {
                Ok(_) => {
                    self.environment_ok = true;
                    defmt::info!("bme280 ready");
                }
                Err(e) => {
                    defmt::warn!("bme280 init failed: {}", defmt::Debug2Format(&e));
                    self.sensor_errors = self.sensor_errors.saturating_add(1);
                    let code = match e {
                        bme280::Error::WrongChip(_) | bme280::Error::Bus(_) => {
                            FaultCode::SensorMissing
                        }
                        _ => FaultCode::SensorBus,
                    };
                    self.send(Message::Fault(NodeFault { code, detail: 0 }));
                }
            }
        }
    }

    /// One period: environment, sound levels, features, a PCM excerpt, sometimes status.
    pub fn cycle(&mut self, samples: &[i16; PERIOD_SAMPLES]) -> Report {
        self.receive();
        let environment = self.read_environment();
        if let Some(env) = environment {
            self.send(Message::Environment(env));
        }

        let mut features: Vec<i16, MAX_BLOCK> = Vec::new();
        for slice in samples.chunks(PERIOD_SAMPLES / FEATURE_SLICES) {
            let levels = self.meter.process(slice);
            for db in levels.bands_db {
                features.push(centi_db(db)).ok();
            }
        }
        let period = self.meter.take_period();
        let sound = Sound {
            period_ms: PERIOD_MS,
            laeq_centi_db: centi_db(period.laeq_db),
            lzeq_centi_db: centi_db(period.lzeq_db),
            first_band_hz: FIRST_BAND_HZ,
            bands_centi_db: period.bands_db.iter().map(|&db| centi_db(db)).collect(),
        };
        let (laeq, lzeq) = (sound.laeq_centi_db, sound.lzeq_centi_db);
        self.send(Message::Sound(sound));
        self.send(Message::Block(Block {
            kind: BlockKind::Features,
            rate_hz: FEATURE_SLICES as u32 * 1000 / PERIOD_MS as u32,
            index: self.cycles.wrapping_mul(FEATURE_SLICES as u32),
            values: features,
        }));
        self.send(Message::Block(Block {
            kind: BlockKind::Pcm16,
            rate_hz: SAMPLE_RATE_HZ,
            index: self.cycles.wrapping_mul(PERIOD_SAMPLES as u32),
            values: Vec::from_slice(&samples[..PCM_PER_PERIOD]).unwrap_or_default(),
        }));

        self.cycles = self.cycles.wrapping_add(1);
        if self.cycles.is_multiple_of(STATUS_EVERY) {
            self.send(Message::Status(Status {
                cycles: self.cycles,
                frames_sent: self.counter + 1,
                sensor_errors: self.sensor_errors,
                reset_cause: self.reset_cause,
                agent_protocol: self.agent_protocol,
            }));
        }
        Report {
            cycle: self.cycles,
            environment,
            laeq_centi_db: laeq,
            lzeq_centi_db: lzeq,
            frames_sent: self.counter,
        }
    }

    pub fn cycles(&self) -> u32 {
        self.cycles
    }

    pub fn frames_sent(&self) -> u32 {
        self.counter
    }

    pub fn sink(&mut self) -> &mut S {
        &mut self.sink
    }

    fn read_environment(&mut self) -> Option<Environment> {
        let sensor = self.environment.as_mut().filter(|_| self.environment_ok)?;
        match sensor.measure() {
            Ok(m) => Some(Environment {
                temperature_centi_c: m.temperature_centi_c,
                humidity_milli_pct: Some(m.humidity_milli_pct()),
                pressure_pa: Some(m.pressure_pa()),
            }),
            Err(e) => {
                defmt::warn!("bme280 read failed: {}", defmt::Debug2Format(&e));
                self.sensor_errors = self.sensor_errors.saturating_add(1);
                self.send(Message::Fault(NodeFault {
                    code: FaultCode::SensorBus,
                    detail: self.sensor_errors,
                }));
                None
            }
        }
    }

    fn send(&mut self, message: Message) {
        let mut buf = [0u8; MAX_WIRE];
        let frame = Frame {
            counter: self.counter,
            message,
        };
        match encode_frame(&frame, &mut buf) {
            Ok(bytes) => {
                self.sink.send(bytes);
                self.counter = self.counter.wrapping_add(1);
            }
            // Every message fits MAX_WIRE by construction (protocol's size tests).
            Err(e) => defmt::error!("frame {=u32} not encoded: {}", frame.counter, e),
        }
    }
}

/// A stable node id from the board name (FNV-1a), for boards without a unique id.
pub const fn node_id(name: &str) -> u32 {
    let bytes = name.as_bytes();
    let mut hash: u32 = 0x811C_9DC5;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash
}
