//! Sound levels of synthetic tones against their analytic values and the IEC 61672-1
//! A-weighting table.

use sensors::sim::SimMicrophone;
use sensors::sound::SoundMeter;

const FS: u32 = 16_000;
const FULL_SCALE_DB: f32 = 120.0;

fn tone(freq: f32, amplitude: f32, n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| {
            (amplitude * (2.0 * std::f32::consts::PI * freq * i as f32 / FS as f32).sin()).round()
                as i16
        })
        .collect()
}

/// Levels of one second of a tone, after half a second for the filters to settle.
fn measure(freq: f32, amplitude: f32) -> sensors::sound::Levels<6> {
    let mut meter = SoundMeter::<6>::new(FS, 125.0, FULL_SCALE_DB);
    let samples = tone(freq, amplitude, FS as usize * 3 / 2);
    meter.process(&samples[..FS as usize / 2]);
    meter.take_period();
    for chunk in samples[FS as usize / 2..].chunks(2000) {
        meter.process(chunk);
    }
    meter.take_period()
}

#[test]
fn a_weighting_follows_iec_61672() {
    // (frequency, A-weighting in dB from IEC 61672-1 table 3, tolerance)
    let table = [
        (63.0, -26.2, 0.5),
        (125.0, -16.1, 0.5),
        (250.0, -8.6, 0.3),
        (500.0, -3.2, 0.3),
        (1000.0, 0.0, 0.2),
        (2000.0, 1.2, 0.5),
        (4000.0, 1.0, 1.5),
    ];
    for (freq, weight, tolerance) in table {
        let l = measure(freq, 10_000.0);
        let got = l.laeq_db - l.lzeq_db;
        assert!(
            (got - weight).abs() <= tolerance,
            "{freq} Hz: {got:.2} dB, want {weight}"
        );
    }
}

#[test]
fn unweighted_level_is_the_rms_level() {
    for amplitude in [100.0f32, 1000.0, 10_000.0, 32_000.0] {
        let l = measure(1000.0, amplitude);
        let want = 20.0 * (amplitude / 2f32.sqrt() / 32768.0).log10() + FULL_SCALE_DB;
        assert!(
            (l.lzeq_db - want).abs() < 0.05,
            "amplitude {amplitude}: {} vs {want}",
            l.lzeq_db
        );
    }
}

#[test]
fn a_tone_lands_in_its_octave_band() {
    for (i, freq) in [125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0]
        .into_iter()
        .enumerate()
    {
        let l = measure(freq, 8000.0);
        let loudest = (0..6)
            .max_by(|&a, &b| l.bands_db[a].total_cmp(&l.bands_db[b]))
            .unwrap();
        assert_eq!(loudest, i, "{freq} Hz: {:?}", l.bands_db);
        assert!(
            (l.bands_db[i] - l.lzeq_db).abs() < 0.3,
            "{freq} Hz centre gain"
        );
    }
}

#[test]
fn silence_reads_the_floor_not_minus_infinity() {
    let mut meter = SoundMeter::<6>::new(FS, 125.0, FULL_SCALE_DB);
    let l = meter.process(&[0; 2000]);
    assert_eq!(l.lzeq_db, 0.0);
    assert_eq!(l.laeq_db, 0.0);
    assert!(meter.take_period().bands_db.iter().all(|&b| b == 0.0));
}

#[test]
fn simulated_microphone_levels_step_as_designed() {
    let mut mic = SimMicrophone::new(FS);
    let mut meter = SoundMeter::<6>::new(FS, 125.0, FULL_SCALE_DB);
    let mut block = [0i16; 2000];
    let mut levels = vec![];
    for _ in 0..8 {
        mic.fill(&mut block);
        meter.process(&block);
        levels.push(meter.take_period().lzeq_db);
    }
    // Tone amplitudes 2000, 2000, 6000, 6000, 12000, 12000, 4000, 4000 (plus faint noise).
    for (got, amplitude) in levels.iter().zip([
        2000.0f32, 2000.0, 6000.0, 6000.0, 12000.0, 12000.0, 4000.0, 4000.0,
    ]) {
        let want = 20.0 * (amplitude / 2f32.sqrt() / 32768.0).log10() + FULL_SCALE_DB;
        assert!((got - want).abs() < 0.2, "{levels:?}");
    }
}
