//! BME280 driver against the I2C transactions the datasheet prescribes (embedded-hal-mock),
//! and its compensation against the datasheet's worked example.

use embedded_hal::i2c::ErrorKind;
use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};
use sensors::bme280::{Bme280, Calibration, Error, Raw, reg};
use sensors::sim::{CALIB_00, CALIB_26, SimBme280};

const ADDR: u8 = 0x76;

/// Datasheet example: adc_T = 519888, adc_P = 415148; humidity 27000. Burst order is
/// press_msb, press_lsb, press_xlsb, temp_msb, temp_lsb, temp_xlsb, hum_msb, hum_lsb.
const DATA: [u8; 8] = [0x65, 0x5A, 0xC0, 0x7E, 0xED, 0x00, 0x69, 0x78];

fn init_transactions(id: u8) -> Vec<T> {
    let mut t = vec![T::write_read(ADDR, vec![reg::ID], vec![id])];
    if id == 0x60 {
        t.extend([
            T::write_read(ADDR, vec![reg::CALIB_00], CALIB_00.to_vec()),
            T::write_read(ADDR, vec![reg::CALIB_26], CALIB_26.to_vec()),
            T::write(ADDR, vec![reg::CTRL_HUM, 0x01]),
            T::write(ADDR, vec![reg::CONFIG, 0x00]),
            T::write(ADDR, vec![reg::CTRL_MEAS, 0x24]),
        ]);
    }
    t
}

#[test]
fn init_then_forced_measurement() {
    let mut t = init_transactions(0x60);
    t.extend([
        T::write(ADDR, vec![reg::CTRL_MEAS, 0x25]),
        T::write_read(ADDR, vec![reg::STATUS], vec![0x08]),
        T::write_read(ADDR, vec![reg::STATUS], vec![0x00]),
        T::write_read(ADDR, vec![reg::DATA], DATA.to_vec()),
    ]);
    let mut bus = Mock::new(&t);
    let mut sensor = Bme280::new(bus.clone(), ADDR);
    let cal = sensor.init().unwrap();
    assert_eq!((cal.t1, cal.t2, cal.t3), (27504, 26435, -1000));
    assert_eq!((cal.p1, cal.p2, cal.p9), (36477, -10685, 6000));
    assert_eq!(
        (cal.h1, cal.h2, cal.h3, cal.h4, cal.h5, cal.h6),
        (75, 362, 0, 313, 50, 30)
    );
    let m = sensor.measure().unwrap();
    // Datasheet: 25.08 degC and 100653.27 Pa for this trimming and these raw values (the
    // pressure from the floating-point formula; the 64-bit integer one lands 0.02 Pa off).
    assert_eq!(m.temperature_centi_c, 2508);
    assert_eq!(m.pressure_pa(), 100_653);
    assert!(
        (m.pressure_q24_8 as f64 / 256.0 - 100_653.27).abs() < 0.05,
        "{m:?}"
    );
    bus.done();
}

/// The datasheet's double-precision humidity formula, as an independent reference.
fn humidity_reference(cal: &Calibration, adc_h: f64, t_fine: f64) -> f64 {
    let (h1, h2, h3) = (cal.h1 as f64, cal.h2 as f64, cal.h3 as f64);
    let (h4, h5, h6) = (cal.h4 as f64, cal.h5 as f64, cal.h6 as f64);
    let v = t_fine - 76800.0;
    let v = (adc_h - (h4 * 64.0 + h5 / 16384.0 * v))
        * (h2 / 65536.0 * (1.0 + h6 / 67108864.0 * v * (1.0 + h3 / 67108864.0 * v)));
    (v * (1.0 - h1 * v / 524288.0)).clamp(0.0, 100.0)
}

#[test]
fn humidity_matches_the_floating_point_formula() {
    let cal = Calibration::from_registers(&CALIB_00, &CALIB_26);
    // t_fine for adc_T = 519888 is 128422 (datasheet example).
    for adc_h in [0, 20_000, 27_000, 30_000, 35_000, 45_000, 65_535] {
        let m = cal.compensate(Raw {
            temperature: 519_888,
            pressure: 415_148,
            humidity: adc_h,
        });
        let got = m.humidity_q22_10 as f64 / 1024.0;
        let want = humidity_reference(&cal, adc_h as f64, 128_422.0);
        assert!((got - want).abs() < 0.05, "adc_h {adc_h}: {got} vs {want}");
    }
}

#[test]
fn failures_are_reported_not_panicked() {
    // A BMP280 (id 0x58) has no humidity: refused.
    let mut bus = Mock::new(&init_transactions(0x58));
    assert_eq!(
        Bme280::new(bus.clone(), ADDR).init(),
        Err(Error::WrongChip(0x58))
    );
    bus.done();

    // Nothing answers at the address.
    let t = [T::write_read(ADDR, vec![reg::ID], vec![0]).with_error(ErrorKind::Other)];
    let mut bus = Mock::new(&t);
    assert_eq!(
        Bme280::new(bus.clone(), ADDR).init(),
        Err(Error::Bus(ErrorKind::Other))
    );
    bus.done();

    // measure() before init() touches no bus.
    let mut bus = Mock::new(&[]);
    assert_eq!(
        Bme280::new(bus.clone(), ADDR).measure(),
        Err(Error::NotInitialised)
    );
    bus.done();
}

#[test]
fn garbage_registers_never_panic() {
    for fill in [0x00u8, 0xFF, 0x80, 0x7F] {
        let cal = Calibration::from_registers(&[fill; 26], &[fill; 7]);
        let _ = cal.compensate(Raw::from_registers(&[fill; 8]));
    }
}

#[test]
fn simulated_sensor_runs_the_real_driver() {
    let mut sensor = Bme280::new(SimBme280::new(ADDR), ADDR);
    sensor.init().unwrap();
    let readings: Vec<_> = (0..64).map(|_| sensor.measure().unwrap()).collect();
    for m in &readings {
        assert!((1500..3500).contains(&m.temperature_centi_c), "{m:?}");
        assert!((95_000..106_000).contains(&m.pressure_pa()), "{m:?}");
        assert!((20_000..80_000).contains(&m.humidity_milli_pct()), "{m:?}");
    }
    assert_ne!(readings[0], readings[10], "the simulated weather drifts");
    assert!(matches!(
        Bme280::new(SimBme280::new(ADDR), 0x77).init(),
        Err(Error::Bus(ErrorKind::NoAcknowledge(_)))
    ));
}
