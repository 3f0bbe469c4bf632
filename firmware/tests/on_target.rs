//! On-target tests (defmt-test): run on the board or under QEMU, exit 0 when all pass.
#![no_std]
#![no_main]

use firmware as _; // logger, panic handler, semihosting exit

/// sin(2 pi t) for t in [0, 1): a Taylor series on [-pi, pi], enough for a test tone.
fn sin_turns(t: f32) -> f32 {
    let x = 2.0 * core::f32::consts::PI * if t > 0.5 { t - 1.0 } else { t };
    let x2 = x * x;
    x * (1.0 - x2 / 6.0 * (1.0 - x2 / 20.0 * (1.0 - x2 / 42.0 * (1.0 - x2 / 72.0))))
}

#[defmt_test::tests]
mod tests {
    use firmware::node::{Node, PERIOD_SAMPLES, SAMPLE_RATE_HZ};
    use heapless::Vec;
    use node_link::{
        BlockKind, Decoder, Environment, Frame, MAX_WIRE, Message, ResetCause, encode_frame,
    };
    use sensors::bme280::Bme280;
    use sensors::sim::{SimBme280, SimMicrophone};
    use sensors::sound::SoundMeter;

    #[test]
    fn frame_round_trip() {
        let frame = Frame {
            counter: 41,
            message: Message::Environment(Environment {
                temperature_centi_c: -1234,
                humidity_milli_pct: Some(55_000),
                pressure_pa: Some(99_000),
            }),
        };
        let mut buf = [0u8; MAX_WIRE];
        let bytes = encode_frame(&frame, &mut buf).unwrap();
        let mut decoder = Decoder::new();
        let mut got = None;
        decoder.feed(bytes, |r| got = Some(r));
        defmt::assert_eq!(got, Some(Ok(frame)));
    }

    #[test]
    fn bme280_compensation_matches_the_datasheet() {
        let mut sensor = Bme280::new(SimBme280::new(0x76), 0x76);
        let cal = sensor.init().unwrap();
        let m = cal.compensate(sensors::bme280::Raw {
            temperature: 519_888,
            pressure: 415_148,
            humidity: 27_000,
        });
        defmt::assert_eq!(m.temperature_centi_c, 2508);
        defmt::assert_eq!(m.pressure_pa(), 100_653);
    }

    #[test]
    fn one_khz_tone_level() {
        let mut meter = SoundMeter::<6>::new(SAMPLE_RATE_HZ, 125.0, 120.0);
        let tone: [i16; 2000] = core::array::from_fn(|i| {
            let t = (i % 16) as f32 / 16.0;
            (10_000.0 * super::sin_turns(t)) as i16
        });
        meter.process(&tone);
        meter.take_period();
        meter.process(&tone);
        let l = meter.take_period();
        // 20 log10(10000 / sqrt(2) / 32768) + 120 = 106.68 dB
        defmt::assert!((l.lzeq_db - 106.68).abs() < 0.1, "{}", l.lzeq_db);
        defmt::assert!((l.laeq_db - l.lzeq_db).abs() < 0.2, "{}", l.laeq_db);
    }

    #[test]
    fn a_node_cycle_sends_decodable_frames() {
        let sink: Vec<u8, 4096> = Vec::new();
        let bme = Bme280::new(SimBme280::new(0x76), 0x76);
        let mut node = Node::new(Some(bme), sink, 7, ResetCause::PowerOn);
        node.start(true);
        let mut mic = SimMicrophone::new(SAMPLE_RATE_HZ);
        let mut samples = [0i16; PERIOD_SAMPLES];
        mic.fill(&mut samples);
        let report = node.cycle(&samples);
        defmt::assert!(report.environment.is_some());

        let mut decoder = Decoder::new();
        let mut kinds: Vec<u8, 8> = Vec::new();
        let bytes: Vec<u8, 4096> = node.sink().clone();
        decoder.feed(&bytes, |r| {
            let frame = r.unwrap();
            let kind = match frame.message {
                Message::Hello(_) => 0,
                Message::Environment(_) => 1,
                Message::Sound(_) => 2,
                Message::Block(b) if b.kind == BlockKind::Features => 3,
                Message::Block(_) => 4,
                _ => 9,
            };
            kinds.push(kind).unwrap();
        });
        defmt::assert_eq!(kinds.as_slice(), &[0, 1, 2, 3, 4]);
        defmt::assert_eq!(decoder.stats().dropped, 0);
    }

    #[test]
    fn a_missing_sensor_is_a_fault_frame_not_a_panic() {
        let sink: Vec<u8, 1024> = Vec::new();
        // The driver talks to 0x77; the simulated chip answers only at 0x76.
        let bme = Bme280::new(SimBme280::new(0x76), 0x77);
        let mut node = Node::new(Some(bme), sink, 7, ResetCause::PowerOn);
        node.start(true);
        let mut faults = 0;
        let bytes: Vec<u8, 1024> = node.sink().clone();
        Decoder::new().feed(&bytes, |r| {
            if let Ok(Frame {
                message: Message::Fault(_),
                ..
            }) = r
            {
                faults += 1;
            }
        });
        defmt::assert_eq!(faults, 1);
    }
}
