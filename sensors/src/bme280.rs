//! Bosch BME280 temperature, pressure and humidity sensor over I2C.
//!
//! Register map and the integer compensation formulas follow the BME280 datasheet
//! (BST-BME280-DS002, sections 4.2.2 "Trimming parameter readout", 4.2.3 "Compensation
//! formulas" and 5.4 "Register description"). The sensor is used in forced mode with 1x
//! oversampling and the IIR filter off ("weather monitoring", datasheet 3.5.1).

use embedded_hal::i2c::I2c;

/// Value of the `id` register.
pub const CHIP_ID: u8 = 0x60;
/// Address with SDO to GND; 0x77 with SDO to VDDIO.
pub const DEFAULT_ADDRESS: u8 = 0x76;

/// Register addresses (datasheet table 18).
pub mod reg {
    /// First trimming block: `dig_T1` .. `dig_H1` (0x88..=0xA1, 26 bytes).
    pub const CALIB_00: u8 = 0x88;
    pub const ID: u8 = 0xD0;
    pub const RESET: u8 = 0xE0;
    /// Second trimming block: `dig_H2` .. `dig_H6` (0xE1..=0xE7, 7 bytes).
    pub const CALIB_26: u8 = 0xE1;
    pub const CTRL_HUM: u8 = 0xF2;
    pub const STATUS: u8 = 0xF3;
    pub const CTRL_MEAS: u8 = 0xF4;
    pub const CONFIG: u8 = 0xF5;
    /// `press_msb` .. `hum_lsb` (0xF7..=0xFE, 8 bytes), read in one burst for consistency.
    pub const DATA: u8 = 0xF7;
}

/// `ctrl_hum`: humidity oversampling x1.
const CTRL_HUM_X1: u8 = 0b001;
/// `ctrl_meas`: osrs_t x1 (bits 7:5), osrs_p x1 (bits 4:2), mode (bits 1:0).
const CTRL_MEAS_SLEEP: u8 = (0b001 << 5) | (0b001 << 2);
const CTRL_MEAS_FORCED: u8 = CTRL_MEAS_SLEEP | 0b01;
/// `status.measuring`: a conversion is running.
const STATUS_MEASURING: u8 = 1 << 3;
/// Status reads before giving up on a conversion (x1 oversampling takes ~10 ms).
const MAX_POLLS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error<E> {
    /// The I2C transfer failed.
    Bus(E),
    /// The device answered with another chip id (0x58 is a BMP280, without humidity).
    WrongChip(u8),
    /// The conversion did not finish.
    Timeout,
    /// `measure` before a successful `init`.
    NotInitialised,
}

/// Trimming parameters, read once from the device's NVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Calibration {
    pub t1: u16,
    pub t2: i16,
    pub t3: i16,
    pub p1: u16,
    pub p2: i16,
    pub p3: i16,
    pub p4: i16,
    pub p5: i16,
    pub p6: i16,
    pub p7: i16,
    pub p8: i16,
    pub p9: i16,
    pub h1: u8,
    pub h2: i16,
    pub h3: u8,
    pub h4: i16,
    pub h5: i16,
    pub h6: i8,
}

/// Uncompensated ADC values (20-bit temperature and pressure, 16-bit humidity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Raw {
    pub temperature: i32,
    pub pressure: i32,
    pub humidity: i32,
}

impl Raw {
    /// Decodes the 8-byte burst from [`reg::DATA`].
    pub fn from_registers(d: &[u8; 8]) -> Raw {
        let twenty = |msb: u8, lsb: u8, xlsb: u8| {
            ((msb as i32) << 12) | ((lsb as i32) << 4) | ((xlsb as i32) >> 4)
        };
        Raw {
            pressure: twenty(d[0], d[1], d[2]),
            temperature: twenty(d[3], d[4], d[5]),
            humidity: ((d[6] as i32) << 8) | d[7] as i32,
        }
    }
}

/// A compensated reading, in the datasheet's fixed-point units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Measurement {
    /// Hundredths of a degree Celsius.
    pub temperature_centi_c: i32,
    /// Pascals in Q24.8 (divide by 256).
    pub pressure_q24_8: u32,
    /// Percent relative humidity in Q22.10 (divide by 1024).
    pub humidity_q22_10: u32,
}

impl Measurement {
    pub fn pressure_pa(&self) -> u32 {
        self.pressure_q24_8 / 256
    }

    pub fn humidity_milli_pct(&self) -> u32 {
        ((self.humidity_q22_10 as u64 * 1000) / 1024) as u32
    }
}

impl Calibration {
    /// Decodes both trimming blocks (datasheet table 16).
    pub fn from_registers(a: &[u8; 26], b: &[u8; 7]) -> Calibration {
        let u = |i: usize| u16::from_le_bytes([a[i], a[i + 1]]);
        let s = |i: usize| i16::from_le_bytes([a[i], a[i + 1]]);
        Calibration {
            t1: u(0),
            t2: s(2),
            t3: s(4),
            p1: u(6),
            p2: s(8),
            p3: s(10),
            p4: s(12),
            p5: s(14),
            p6: s(16),
            p7: s(18),
            p8: s(20),
            p9: s(22),
            // a[24] (0xA0) is unused.
            h1: a[25],
            h2: i16::from_le_bytes([b[0], b[1]]),
            h3: b[2],
            // dig_H4 = 0xE4[7:0] << 4 | 0xE5[3:0]; dig_H5 = 0xE6[7:0] << 4 | 0xE5[7:4]; signed.
            h4: ((b[3] as i8 as i16) << 4) | (b[4] & 0x0F) as i16,
            h5: ((b[5] as i8 as i16) << 4) | (b[4] >> 4) as i16,
            h6: b[6] as i8,
        }
    }

    /// The datasheet's integer compensation (4.2.3). Intermediates are 64-bit and wrap, so
    /// garbage from a broken bus gives a garbage value, never a panic.
    pub fn compensate(&self, raw: Raw) -> Measurement {
        let t_fine = self.t_fine(raw.temperature);
        Measurement {
            temperature_centi_c: ((t_fine * 5 + 128) >> 8) as i32,
            pressure_q24_8: self.pressure(raw.pressure, t_fine),
            humidity_q22_10: self.humidity(raw.humidity, t_fine),
        }
    }

    fn t_fine(&self, adc_t: i32) -> i64 {
        let adc_t = adc_t as i64;
        let (t1, t2, t3) = (self.t1 as i64, self.t2 as i64, self.t3 as i64);
        let var1 = (((adc_t >> 3) - (t1 << 1)) * t2) >> 11;
        let var2 = (((((adc_t >> 4) - t1) * ((adc_t >> 4) - t1)) >> 12) * t3) >> 14;
        var1 + var2
    }

    fn pressure(&self, adc_p: i32, t_fine: i64) -> u32 {
        let c = |v: i16| v as i64;
        let mut var1 = t_fine.wrapping_sub(128_000);
        let mut var2 = var1.wrapping_mul(var1).wrapping_mul(c(self.p6));
        var2 = var2.wrapping_add(var1.wrapping_mul(c(self.p5)) << 17);
        var2 = var2.wrapping_add(c(self.p4) << 35);
        var1 = (var1.wrapping_mul(var1).wrapping_mul(c(self.p3)) >> 8)
            .wrapping_add(var1.wrapping_mul(c(self.p2)) << 12);
        var1 = ((1i64 << 47).wrapping_add(var1)).wrapping_mul(self.p1 as i64) >> 33;
        if var1 == 0 {
            // Avoids a division by zero (datasheet: "avoid exception caused by division by zero").
            return 0;
        }
        let mut p = 1_048_576i64 - adc_p as i64;
        p = ((p << 31).wrapping_sub(var2)).wrapping_mul(3125) / var1;
        let var1 = c(self.p9).wrapping_mul(p >> 13).wrapping_mul(p >> 13) >> 25;
        let var2 = c(self.p8).wrapping_mul(p) >> 19;
        (((p.wrapping_add(var1).wrapping_add(var2)) >> 8) + (c(self.p7) << 4)) as u32
    }

    fn humidity(&self, adc_h: i32, t_fine: i64) -> u32 {
        let (h1, h2, h3) = (self.h1 as i64, self.h2 as i64, self.h3 as i64);
        let (h4, h5, h6) = (self.h4 as i64, self.h5 as i64, self.h6 as i64);
        let adc_h = adc_h as i64;
        let mut v = t_fine - 76_800;
        v = (((adc_h << 14) - (h4 << 20) - (h5 * v) + 16_384) >> 15)
            * (((((((v * h6) >> 10) * (((v * h3) >> 11) + 32_768)) >> 10) + 2_097_152) * h2
                + 8_192)
                >> 14);
        v -= ((((v >> 15) * (v >> 15)) >> 7) * h1) >> 4;
        (v.clamp(0, 419_430_400) >> 12) as u32
    }
}

/// A BME280 on an I2C bus.
pub struct Bme280<I2C> {
    i2c: I2C,
    address: u8,
    calibration: Option<Calibration>,
}

impl<I2C: I2c> Bme280<I2C> {
    pub fn new(i2c: I2C, address: u8) -> Self {
        Self {
            i2c,
            address,
            calibration: None,
        }
    }

    /// Checks the chip id, reads the trimming parameters and sets the oversampling.
    pub fn init(&mut self) -> Result<Calibration, Error<I2C::Error>> {
        let mut id = [0u8];
        self.read(reg::ID, &mut id)?;
        if id[0] != CHIP_ID {
            return Err(Error::WrongChip(id[0]));
        }
        let mut a = [0u8; 26];
        let mut b = [0u8; 7];
        self.read(reg::CALIB_00, &mut a)?;
        self.read(reg::CALIB_26, &mut b)?;
        // ctrl_hum only takes effect after a write to ctrl_meas (datasheet 5.4.3).
        self.write(reg::CTRL_HUM, CTRL_HUM_X1)?;
        self.write(reg::CONFIG, 0)?;
        self.write(reg::CTRL_MEAS, CTRL_MEAS_SLEEP)?;
        let calibration = Calibration::from_registers(&a, &b);
        self.calibration = Some(calibration);
        Ok(calibration)
    }

    /// Runs one forced-mode conversion and returns the compensated values.
    pub fn measure(&mut self) -> Result<Measurement, Error<I2C::Error>> {
        let calibration = self.calibration.ok_or(Error::NotInitialised)?;
        self.write(reg::CTRL_MEAS, CTRL_MEAS_FORCED)?;
        let mut status = [STATUS_MEASURING];
        let mut polls = 0;
        while status[0] & STATUS_MEASURING != 0 {
            if polls == MAX_POLLS {
                return Err(Error::Timeout);
            }
            self.read(reg::STATUS, &mut status)?;
            polls += 1;
        }
        let mut data = [0u8; 8];
        self.read(reg::DATA, &mut data)?;
        Ok(calibration.compensate(Raw::from_registers(&data)))
    }

    /// Gives the bus back.
    pub fn release(self) -> I2C {
        self.i2c
    }

    fn read(&mut self, register: u8, buf: &mut [u8]) -> Result<(), Error<I2C::Error>> {
        self.i2c
            .write_read(self.address, &[register], buf)
            .map_err(Error::Bus)
    }

    fn write(&mut self, register: u8, value: u8) -> Result<(), Error<I2C::Error>> {
        self.i2c
            .write(self.address, &[register, value])
            .map_err(Error::Bus)
    }
}
