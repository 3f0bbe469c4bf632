//! Microphone source: ALSA capture through the `alsa` crate (PipeWire and PulseAudio systems
//! expose an ALSA `default` device too), mono signed 16-bit at the model's sample rate.
//!
//! Samples live in one chunk-sized buffer, overwritten at each read. An overrun (the model fell
//! behind and the device's ring filled) is counted and recovered; a device that vanishes or
//! stops delivering is reported as lost, and the caller reopens it with a back-off.

use std::time::{Duration, Instant};

use alsa::pcm::{Access, Format, HwParams, PCM};
use alsa::{Direction, ValueOr};

/// What one [`Microphone::read`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// The buffer is full of new samples.
    Chunk,
    /// Nothing arrived within the wait; the device may be slow to start.
    Nothing,
}

/// Why the device is unusable until reopened.
#[derive(Debug, thiserror::Error)]
pub enum MicError {
    #[error("cannot open ALSA capture device `{device}`: {message}")]
    Open { device: String, message: String },
    #[error(
        "ALSA device `{device}` cannot capture mono 16-bit at {rate} Hz ({message}); a `plughw:C,D` or `default` device converts for you"
    )]
    Format {
        device: String,
        rate: u32,
        message: String,
    },
    #[error("ALSA device `{device}`: {message}")]
    Lost { device: String, message: String },
}

/// An open capture device.
pub struct Microphone {
    pcm: PCM,
    device: String,
    /// Overruns since the last call to [`Microphone::take_overruns`].
    overruns: u64,
}

impl Microphone {
    /// Opens `device` (an ALSA PCM name: `default`, `plughw:1,0`, a name from an asoundrc) for
    /// mono S16 capture at exactly `rate` Hz, with a ring of about half a second.
    pub fn open(device: &str, rate: u32) -> Result<Microphone, MicError> {
        let pcm = PCM::new(device, Direction::Capture, false).map_err(|e| MicError::Open {
            device: device.to_owned(),
            message: e.to_string(),
        })?;
        let format = |e: alsa::Error| MicError::Format {
            device: device.to_owned(),
            rate,
            message: e.to_string(),
        };
        {
            let hw = HwParams::any(&pcm).map_err(format)?;
            hw.set_access(Access::RWInterleaved).map_err(format)?;
            hw.set_format(Format::s16()).map_err(format)?;
            hw.set_channels(1).map_err(format)?;
            hw.set_rate(rate, ValueOr::Nearest).map_err(format)?;
            hw.set_buffer_size_near((rate / 2) as alsa::pcm::Frames)
                .map_err(format)?;
            pcm.hw_params(&hw).map_err(format)?;
            let got = pcm
                .hw_params_current()
                .and_then(|h| h.get_rate())
                .map_err(format)?;
            if got != rate {
                return Err(MicError::Format {
                    device: device.to_owned(),
                    rate,
                    message: format!("the device offers {got} Hz"),
                });
            }
        }
        // Started now, not by the first read: the reads wait on the device's poll descriptors
        // first, and a capture stream that is only prepared never becomes readable on a real
        // card (snd-aloop, hardware), only on plugins that fake it.
        let start = |e: alsa::Error| MicError::Open {
            device: device.to_owned(),
            message: e.to_string(),
        };
        pcm.prepare().map_err(start)?;
        pcm.start().map_err(start)?;
        Ok(Microphone {
            pcm,
            device: device.to_owned(),
            overruns: 0,
        })
    }

    /// Fills `buf` with the next samples, waiting at most `wait` for the device to have them.
    /// Overruns are recovered here and counted ([`Microphone::take_overruns`]).
    pub fn read(&mut self, buf: &mut [i16], wait: Duration) -> Result<Read, MicError> {
        let Microphone {
            pcm,
            device,
            overruns,
        } = self;
        let lost = |e: alsa::Error| MicError::Lost {
            device: device.clone(),
            message: e.to_string(),
        };
        let io = pcm.io_i16().map_err(lost)?;
        let deadline = Instant::now() + wait;
        let mut filled = 0;
        while filled < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match pcm.wait(Some(left.as_millis().max(1) as u32)) {
                Ok(true) => {}
                Ok(false) if filled == 0 => return Ok(Read::Nothing),
                Ok(false) => {
                    // Part of a chunk, then silence from the device: not a chunk yet.
                    return Err(MicError::Lost {
                        device: device.clone(),
                        message: format!("no sample for {} ms mid-chunk", wait.as_millis()),
                    });
                }
                Err(e) => recover(pcm, device, overruns, e)?,
            }
            match io.readi(&mut buf[filled..]) {
                Ok(n) => filled += n,
                Err(e) => {
                    // An overrun loses what was in the ring: the chunk restarts.
                    filled = 0;
                    recover(pcm, device, overruns, e)?;
                }
            }
        }
        Ok(Read::Chunk)
    }

    /// Overruns counted since the last call.
    pub fn take_overruns(&mut self) -> u64 {
        std::mem::take(&mut self.overruns)
    }
}

/// An overrun (EPIPE) or a suspend (ESTRPIPE) is recovered; anything else loses the device.
fn recover(pcm: &PCM, device: &str, overruns: &mut u64, e: alsa::Error) -> Result<(), MicError> {
    let errno = e.errno().abs();
    if errno == libc::EPIPE {
        *overruns += 1;
    }
    if errno == libc::EPIPE || errno == libc::ESTRPIPE || errno == libc::EINTR {
        pcm.try_recover(e, true).map_err(|e| MicError::Lost {
            device: device.to_owned(),
            message: format!("cannot recover: {e}"),
        })?;
        // Recovery prepares the stream again; a capture stream must then be started again.
        if pcm.state() == alsa::pcm::State::Prepared {
            pcm.start().map_err(|e| MicError::Lost {
                device: device.to_owned(),
                message: format!("cannot restart after recovery: {e}"),
            })?;
        }
        return Ok(());
    }
    Err(MicError::Lost {
        device: device.to_owned(),
        message: e.to_string(),
    })
}
