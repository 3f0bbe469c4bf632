//! Simulated sensors for emulated boards and tests: a BME280 register model behind the
//! embedded-hal I2C trait (so the real driver runs against it) and a microphone.
//! Both are deterministic: the same run gives the same frames and the same log.

use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation};

use crate::bme280::{CHIP_ID, reg};

/// Trimming block 0x88..=0xA1: the datasheet's worked example (T1 = 27504, T2 = 26435,
/// T3 = -1000, P1 = 36477, P2 = -10685, P3 = 3024, P4 = 2855, P5 = 140, P6 = -7,
/// P7 = 15500, P8 = -14600, P9 = 6000) and H1 = 75.
pub const CALIB_00: [u8; 26] = [
    0x70, 0x6B, 0x43, 0x67, 0x18, 0xFC, // T1..T3
    0x7D, 0x8E, 0x43, 0xD6, 0xD0, 0x0B, 0x27, 0x0B, 0x8C, 0x00, 0xF9, 0xFF, // P1..P6
    0x8C, 0x3C, 0xF8, 0xC6, 0x70, 0x17, // P7..P9
    0x00, 0x4B, // unused, H1
];

/// Trimming block 0xE1..=0xE7: H2 = 362, H3 = 0, H4 = 313, H5 = 50, H6 = 30.
pub const CALIB_26: [u8; 7] = [0x6A, 0x01, 0x00, 0x13, 0x29, 0x03, 0x1E];

/// A BME280 on a simulated bus, with slowly drifting weather.
pub struct SimBme280 {
    address: u8,
    regs: [u8; 256],
    pointer: u8,
    conversions: u32,
    /// Status reads left before the running conversion completes.
    busy_reads: u8,
}

impl SimBme280 {
    pub fn new(address: u8) -> Self {
        let mut regs = [0u8; 256];
        regs[reg::ID as usize] = CHIP_ID;
        regs[reg::CALIB_00 as usize..][..26].copy_from_slice(&CALIB_00);
        regs[reg::CALIB_26 as usize..][..7].copy_from_slice(&CALIB_26);
        Self {
            address,
            regs,
            pointer: 0,
            conversions: 0,
            busy_reads: 0,
        }
    }

    fn convert(&mut self) {
        // A triangle wave of +-32 steps: temperature and humidity swing, pressure drifts.
        let phase = (self.conversions % 64) as i32;
        let step = if phase < 32 { phase } else { 64 - phase } - 16;
        let adc_t = 519_888 + step * 400;
        let adc_p = 415_148 - step * 150;
        let adc_h = 27_000 - step * 60;
        let d = &mut self.regs[reg::DATA as usize..][..8];
        d[0] = (adc_p >> 12) as u8;
        d[1] = (adc_p >> 4) as u8;
        d[2] = ((adc_p & 0xF) << 4) as u8;
        d[3] = (adc_t >> 12) as u8;
        d[4] = (adc_t >> 4) as u8;
        d[5] = ((adc_t & 0xF) << 4) as u8;
        d[6] = (adc_h >> 8) as u8;
        d[7] = adc_h as u8;
        self.conversions += 1;
        self.busy_reads = 1;
    }

    fn write(&mut self, bytes: &[u8]) {
        let Some((&first, rest)) = bytes.split_first() else {
            return;
        };
        self.pointer = first;
        // BME280 I2C writes are (register, value) pairs after the first register.
        let mut register = first;
        for (i, &value) in rest.iter().enumerate() {
            if i % 2 == 1 {
                register = value;
                continue;
            }
            self.regs[register as usize] = value;
            if register == reg::CTRL_MEAS && value & 0b11 != 0 {
                self.convert();
            }
        }
    }

    fn read(&mut self, buf: &mut [u8]) {
        for b in buf.iter_mut() {
            *b = if self.pointer == reg::STATUS && self.busy_reads > 0 {
                self.busy_reads -= 1;
                1 << 3
            } else {
                self.regs[self.pointer as usize]
            };
            self.pointer = self.pointer.wrapping_add(1);
        }
    }
}

impl ErrorType for SimBme280 {
    type Error = ErrorKind;
}

impl I2c for SimBme280 {
    fn transaction(&mut self, address: u8, ops: &mut [Operation<'_>]) -> Result<(), ErrorKind> {
        if address != self.address {
            return Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address));
        }
        for op in ops {
            match op {
                Operation::Write(bytes) => self.write(bytes),
                Operation::Read(buf) => self.read(buf),
            }
        }
        Ok(())
    }
}

/// A microphone hearing a tone whose level changes every block, over a little noise.
pub struct SimMicrophone {
    sample_rate_hz: u32,
    n: u32,
    noise: u32,
}

impl SimMicrophone {
    pub fn new(sample_rate_hz: u32) -> Self {
        Self {
            sample_rate_hz,
            n: 0,
            noise: 0x1234_5678,
        }
    }

    /// Fills `out` with the next samples.
    pub fn fill(&mut self, out: &mut [i16]) {
        for s in out.iter_mut() {
            // The tone steps between 250 Hz and 1 kHz and between four levels, every 1/8 s.
            let block = self.n / (self.sample_rate_hz / 8);
            let freq = if block.is_multiple_of(2) {
                1000.0
            } else {
                250.0
            };
            let amplitude = [2000.0, 6000.0, 12000.0, 4000.0][(block / 2 % 4) as usize];
            // Both tones are whole hertz: the phase repeats every second, so f32 stays exact.
            let t = (self.n % self.sample_rate_hz) as f32 / self.sample_rate_hz as f32;
            let tone = amplitude * libm::sinf(2.0 * core::f32::consts::PI * freq * t);
            // xorshift32: deterministic noise, about -50 dB below full scale.
            self.noise ^= self.noise << 13;
            self.noise ^= self.noise >> 17;
            self.noise ^= self.noise << 5;
            let noise = (self.noise >> 24) as i32 - 128;
            *s = (tone as i32 + noise).clamp(i16::MIN as i32, i16::MAX as i32) as i16;
            self.n = self.n.wrapping_add(1);
        }
    }
}
