//! Sound level from PCM samples: equivalent continuous level (Leq) unweighted (Z) and
//! A-weighted, and octave-band levels.
//!
//! A-weighting is the IEC 61672-1 analogue response (poles at 20.6, 107.7, 737.9 and
//! 12194 Hz) mapped to three biquads by the bilinear transform and normalised to 0 dB at
//! 1 kHz; the bilinear warp makes it deviate above ~2 kHz at a 16 kHz sample rate (the
//! tests bound how much). Octave bands are second-order band-passes, one octave wide:
//! good for features, not class-1 filters.

use core::f64::consts::PI;

/// A-weighting poles of IEC 61672-1, in Hz.
const A_POLES_HZ: [f64; 4] = [20.598_997, 107.652_65, 737.862_23, 12_194.217];

/// Levels below this many dB under full scale read as this floor (silence, not -inf).
const FLOOR_DB: f32 = -120.0;

/// One second-order section, transposed direct form II.
#[derive(Debug, Clone, Copy, Default)]
struct Biquad {
    b: [f32; 3],
    a: [f32; 2],
    z: [f32; 2],
}

impl Biquad {
    /// Bilinear transform of `(b0 s² + b1 s + b2) / (a0 s² + a1 s + a2)`.
    fn bilinear(b: [f64; 3], a: [f64; 3], sample_rate: f64) -> Biquad {
        let k = 2.0 * sample_rate;
        let k2 = k * k;
        let a0 = a[0] * k2 + a[1] * k + a[2];
        let num = [
            b[0] * k2 + b[1] * k + b[2],
            2.0 * (b[2] - b[0] * k2),
            b[0] * k2 - b[1] * k + b[2],
        ];
        let den = [2.0 * (a[2] - a[0] * k2), a[0] * k2 - a[1] * k + a[2]];
        Biquad {
            b: num.map(|v| (v / a0) as f32),
            a: den.map(|v| (v / a0) as f32),
            z: [0.0; 2],
        }
    }

    /// Band-pass of one octave around `centre` (0 dB at the centre).
    fn octave_band(centre: f64, sample_rate: f64) -> Biquad {
        let w0 = 2.0 * PI * centre / sample_rate;
        let (sin, cos) = (libm::sin(w0), libm::cos(w0));
        let alpha = sin * libm::sinh(core::f64::consts::LN_2 / 2.0 * w0 / sin);
        let a0 = 1.0 + alpha;
        Biquad {
            b: [alpha / a0, 0.0, -alpha / a0].map(|v| v as f32),
            a: [-2.0 * cos / a0, (1.0 - alpha) / a0].map(|v| v as f32),
            z: [0.0; 2],
        }
    }

    fn run(&mut self, x: f32) -> f32 {
        let y = self.b[0] * x + self.z[0];
        self.z[0] = self.b[1] * x - self.a[0] * y + self.z[1];
        self.z[1] = self.b[2] * x - self.a[1] * y;
        y
    }

    /// |H(e^jw)| at `freq`.
    fn gain(&self, freq: f64, sample_rate: f64) -> f64 {
        let w = 2.0 * PI * freq / sample_rate;
        // H = (b0 + b1 z^-1 + b2 z^-2) / (1 + a1 z^-1 + a2 z^-2), z^-n = cos(nw) - j sin(nw)
        let eval = |c: [f64; 3]| {
            let re = c[0] + c[1] * libm::cos(w) + c[2] * libm::cos(2.0 * w);
            let im = -c[1] * libm::sin(w) - c[2] * libm::sin(2.0 * w);
            libm::sqrt(re * re + im * im)
        };
        let b = self.b.map(f64::from);
        eval(b) / eval([1.0, self.a[0] as f64, self.a[1] as f64])
    }
}

/// Levels over one stretch of samples, in dB re the meter's full-scale calibration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Levels<const BANDS: usize> {
    pub lzeq_db: f32,
    pub laeq_db: f32,
    pub bands_db: [f32; BANDS],
    /// Samples the levels cover.
    pub samples: u32,
}

#[derive(Debug, Clone, Copy)]
struct Energy<const BANDS: usize> {
    z: f64,
    a: f64,
    bands: [f64; BANDS],
    samples: u32,
}

impl<const BANDS: usize> Energy<BANDS> {
    const ZERO: Self = Energy {
        z: 0.0,
        a: 0.0,
        bands: [0.0; BANDS],
        samples: 0,
    };
}

/// Sound-level meter over a stream of 16-bit samples, with `BANDS` octave bands.
pub struct SoundMeter<const BANDS: usize> {
    sample_rate_hz: u32,
    first_band_hz: f32,
    full_scale_db: f32,
    a_weighting: [Biquad; 3],
    a_gain: f32,
    bands: [Biquad; BANDS],
    period: Energy<BANDS>,
}

impl<const BANDS: usize> SoundMeter<BANDS> {
    /// `full_scale_db` is the level a full-scale square wave (RMS = 32768) stands for:
    /// the microphone's calibration. Bands are centred on `first_band_hz * 2^i`.
    pub fn new(sample_rate_hz: u32, first_band_hz: f32, full_scale_db: f32) -> Self {
        let fs = sample_rate_hz as f64;
        let w = A_POLES_HZ.map(|f| 2.0 * PI * f);
        let a_weighting = [
            Biquad::bilinear([1.0, 0.0, 0.0], [1.0, 2.0 * w[0], w[0] * w[0]], fs),
            Biquad::bilinear([1.0, 0.0, 0.0], [1.0, w[1] + w[2], w[1] * w[2]], fs),
            Biquad::bilinear([0.0, 0.0, 1.0], [1.0, 2.0 * w[3], w[3] * w[3]], fs),
        ];
        let at_1k: f64 = a_weighting.iter().map(|s| s.gain(1000.0, fs)).product();
        let bands = core::array::from_fn(|i| {
            Biquad::octave_band(first_band_hz as f64 * libm::pow(2.0, i as f64), fs)
        });
        Self {
            sample_rate_hz,
            first_band_hz,
            full_scale_db,
            a_weighting,
            a_gain: (1.0 / at_1k) as f32,
            bands,
            period: Energy::ZERO,
        }
    }

    pub fn sample_rate_hz(&self) -> u32 {
        self.sample_rate_hz
    }

    pub fn first_band_hz(&self) -> f32 {
        self.first_band_hz
    }

    /// Filters `samples`, adds them to the running period and returns their own levels
    /// (a short-time feature vector).
    pub fn process(&mut self, samples: &[i16]) -> Levels<BANDS> {
        let mut e = Energy::<BANDS>::ZERO;
        for &s in samples {
            let x = s as f32;
            e.z += (x * x) as f64;
            let mut a = x * self.a_gain;
            for section in &mut self.a_weighting {
                a = section.run(a);
            }
            e.a += (a * a) as f64;
            for (band, energy) in self.bands.iter_mut().zip(&mut e.bands) {
                let y = band.run(x);
                *energy += (y * y) as f64;
            }
        }
        e.samples = samples.len() as u32;
        let p = &mut self.period;
        p.z += e.z;
        p.a += e.a;
        for (total, part) in p.bands.iter_mut().zip(e.bands) {
            *total += part;
        }
        p.samples += e.samples;
        self.levels(&e)
    }

    /// Levels over everything processed since the last call, then starts a new period.
    pub fn take_period(&mut self) -> Levels<BANDS> {
        let levels = self.levels(&self.period);
        self.period = Energy::ZERO;
        levels
    }

    fn levels(&self, e: &Energy<BANDS>) -> Levels<BANDS> {
        let n = e.samples.max(1) as f64;
        let db = |energy: f64| {
            let ms = energy / n / (32768.0 * 32768.0);
            let rel = if ms > 0.0 {
                (10.0 * libm::log10(ms)) as f32
            } else {
                FLOOR_DB
            };
            rel.max(FLOOR_DB) + self.full_scale_db
        };
        Levels {
            lzeq_db: db(e.z),
            laeq_db: db(e.a),
            bands_db: e.bands.map(db),
            samples: e.samples,
        }
    }
}
