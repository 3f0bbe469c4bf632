//! Linux I2C source: a BME280 on the board's own bus (`/dev/i2c-N`), read through
//! linux-embedded-hal with the same driver the node firmware uses, and reported as the
//! same `node_link::Environment` a node would send.

use embedded_hal::i2c::I2c;
use linux_embedded_hal::I2cdev;
use node_link::Environment;
use sensors::bme280::{self, Bme280};

#[derive(Debug, thiserror::Error)]
pub enum I2cSourceError {
    #[error("cannot open i2c device {path}")]
    Open {
        path: String,
        #[source]
        source: linux_embedded_hal::I2CError,
    },
    #[error("bme280 at {address:#04x}: {detail}")]
    Sensor { address: u8, detail: String },
}

/// Environment readings from a BME280 on a Linux I2C bus (or any embedded-hal bus).
pub struct I2cEnvironment<I2C> {
    sensor: Bme280<I2C>,
    address: u8,
}

impl I2cEnvironment<I2cdev> {
    /// Opens `/dev/i2c-N` and initialises the BME280 at `address`.
    pub fn open(path: &str, address: u8) -> Result<Self, I2cSourceError> {
        let bus = I2cdev::new(path).map_err(|e| I2cSourceError::Open {
            path: path.to_owned(),
            source: e.into(),
        })?;
        Self::new(bus, address)
    }
}

impl<I2C: I2c> I2cEnvironment<I2C> {
    pub fn new(bus: I2C, address: u8) -> Result<Self, I2cSourceError> {
        let mut sensor = Bme280::new(bus, address);
        sensor.init().map_err(|e| sensor_error(address, e))?;
        Ok(Self { sensor, address })
    }

    /// One forced-mode measurement.
    pub fn read(&mut self) -> Result<Environment, I2cSourceError> {
        let m = self
            .sensor
            .measure()
            .map_err(|e| sensor_error(self.address, e))?;
        Ok(Environment {
            temperature_centi_c: m.temperature_centi_c,
            humidity_milli_pct: Some(m.humidity_milli_pct()),
            pressure_pa: Some(m.pressure_pa()),
        })
    }
}

fn sensor_error<E: embedded_hal::i2c::Error>(address: u8, e: bme280::Error<E>) -> I2cSourceError {
    let detail = match e {
        bme280::Error::Bus(e) => format!("bus error: {:?}", e.kind()),
        bme280::Error::WrongChip(id) => format!("chip id {id:#04x}, not a BME280 (0x60)"),
        bme280::Error::Timeout => "conversion did not finish".into(),
        bme280::Error::NotInitialised => "not initialised".into(),
    };
    I2cSourceError::Sensor { address, detail }
}

#[cfg(test)]
mod tests {
    use embedded_hal::i2c::ErrorKind;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};
    use sensors::bme280::reg;
    use sensors::sim::{CALIB_00, CALIB_26};

    use super::*;

    /// The transactions of the BME280 datasheet's start-up and one forced measurement,
    /// as the kernel's i2c-dev would carry them (this machine has no i2c-stub module).
    fn session(address: u8) -> Vec<T> {
        vec![
            T::write_read(address, vec![reg::ID], vec![0x60]),
            T::write_read(address, vec![reg::CALIB_00], CALIB_00.to_vec()),
            T::write_read(address, vec![reg::CALIB_26], CALIB_26.to_vec()),
            T::write(address, vec![reg::CTRL_HUM, 0x01]),
            T::write(address, vec![reg::CONFIG, 0x00]),
            T::write(address, vec![reg::CTRL_MEAS, 0x24]),
            T::write(address, vec![reg::CTRL_MEAS, 0x25]),
            T::write_read(address, vec![reg::STATUS], vec![0x00]),
            T::write_read(
                address,
                vec![reg::DATA],
                vec![0x65, 0x5A, 0xC0, 0x7E, 0xED, 0x00, 0x69, 0x78],
            ),
        ]
    }

    #[test]
    fn reads_the_datasheet_example_as_a_protocol_environment() {
        let mut bus = Mock::new(&session(0x77));
        let mut source = I2cEnvironment::new(bus.clone(), 0x77).unwrap();
        let env = source.read().unwrap();
        assert_eq!(env.temperature_centi_c, 2508);
        assert_eq!(env.pressure_pa, Some(100_653));
        assert!(env.humidity_milli_pct.is_some());
        bus.done();
    }

    #[test]
    fn errors_name_the_address_and_cause() {
        let t = [T::write_read(0x76, vec![reg::ID], vec![0x58])];
        let mut bus = Mock::new(&t);
        let err = I2cEnvironment::new(bus.clone(), 0x76)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("0x76") && err.contains("0x58"), "{err}");
        bus.done();

        let t = [T::write_read(0x76, vec![reg::ID], vec![0]).with_error(ErrorKind::Other)];
        let mut bus = Mock::new(&t);
        let err = I2cEnvironment::new(bus.clone(), 0x76)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("bus error"), "{err}");
        bus.done();
    }

    #[test]
    fn missing_device_is_an_open_error() {
        let err = I2cEnvironment::open("/nonexistent/i2c-9", 0x76)
            .err()
            .unwrap();
        assert!(err.to_string().contains("/nonexistent/i2c-9"), "{err}");
    }
}
