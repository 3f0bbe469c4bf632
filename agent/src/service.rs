//! `edge-agent run`: each pipeline reads its source, runs its model, and feeds its aggregator
//! in a thread of its own; records (and only records) travel over a channel to the one thread
//! that appends them to the audit log, which is also the outbox.
//!
//! Raw frames live in this module's stack frames for the time of one inference; nothing here
//! writes them anywhere.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use aggregate::{Aggregator, Instant, ModelRef, Observation, Outbox, Record};
use rand::rngs::StdRng;

use crate::config::{Config, Pipeline, Source, Speed};
use crate::pipeline::{self, PipelineError, SpeechStream};
use modelcard::Postprocess;
use runtime::{LoadOptions, Model, ModelError};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("pipeline `{pipeline}`: {source}")]
    Pipeline {
        pipeline: String,
        source: PipelineError,
    },
    #[error("pipeline `{pipeline}`: {source}")]
    Model {
        pipeline: String,
        source: ModelError,
    },
    #[error("pipeline `{pipeline}`: {path}: {message}")]
    Source {
        pipeline: String,
        path: PathBuf,
        message: String,
    },
    #[error("pipeline `{pipeline}` stopped unexpectedly")]
    Crashed { pipeline: String },
    #[error("audit log: {0}")]
    Outbox(String),
}

/// What a run did, for the person who started it.
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Frames or chunks that went through a model, per pipeline.
    pub frames: Vec<(String, u64)>,
}

/// The two clocks of the device, as one reading.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// The system's clocks: CLOCK_MONOTONIC (through std's Instant) and the wall clock.
pub struct SystemClock {
    origin: std::time::Instant,
}

impl SystemClock {
    pub fn new() -> SystemClock {
        SystemClock {
            origin: std::time::Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        let mono_ms = self.origin.elapsed().as_millis() as u64;
        let wall_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_else(|e| -(e.duration().as_millis() as i64));
        Instant { mono_ms, wall_ms }
    }
}

/// Runs every pipeline to the end of its source, appending each closed window's record to
/// `outbox`; `on_record` sees each appended sequence number (progress).
pub fn run<O: Outbox>(
    config: &Config,
    clock: &dyn Clock,
    outbox: &mut O,
    on_record: &mut dyn FnMut(u64, &mut O),
) -> Result<RunSummary, RunError>
where
    O::Error: std::fmt::Display,
{
    let (tx, rx) = mpsc::sync_channel::<Record>(64);
    let mut summary = RunSummary::default();
    std::thread::scope(|scope| {
        let handles: Vec<_> = config
            .pipelines
            .iter()
            .map(|p| {
                let tx = tx.clone();
                (
                    p.name.clone(),
                    scope.spawn(move || run_pipeline(p, clock, &tx)),
                )
            })
            .collect();
        drop(tx);
        // The writer: the only place records go.
        let mut write_error = None;
        for record in rx {
            match outbox.append(record) {
                Ok(seq) => {
                    summary.records += 1;
                    summary.first_seq.get_or_insert(seq);
                    summary.last_seq = Some(seq);
                    on_record(seq, outbox);
                }
                Err(e) => {
                    tracing::error!("audit log: cannot append a record: {e}");
                    write_error = Some(RunError::Outbox(e.to_string()));
                    break;
                }
            }
        }
        let mut first_error = write_error;
        for (name, h) in handles {
            match h.join() {
                Ok(Ok(frames)) => summary.frames.push((name, frames)),
                Ok(Err(e)) => {
                    tracing::error!("{e}");
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    tracing::error!("pipeline `{name}` panicked");
                    first_error.get_or_insert(RunError::Crashed { pipeline: name });
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(summary),
        }
    })
}

/// A clock for a replay: virtual (the data's own timing) when accelerated, the real clocks
/// otherwise, after sleeping until the frame is due.
struct ReplayClock<'a> {
    real: &'a dyn Clock,
    speed: Speed,
    start: Instant,
    started: std::time::Instant,
}

impl ReplayClock<'_> {
    fn at(&self, offset_us: u64) -> Instant {
        match self.speed {
            Speed::Accelerated => Instant {
                mono_ms: self.start.mono_ms + offset_us / 1000,
                wall_ms: self.start.wall_ms + (offset_us / 1000) as i64,
            },
            Speed::Realtime(factor) => {
                let due = Duration::from_secs_f64(offset_us as f64 / 1e6 / factor);
                if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                    std::thread::sleep(wait);
                }
                self.real.now()
            }
        }
    }
}

fn run_pipeline(
    p: &Pipeline,
    clock: &dyn Clock,
    tx: &mpsc::SyncSender<Record>,
) -> Result<u64, RunError> {
    let model = Model::load(&p.card, LoadOptions::default()).map_err(|source| RunError::Model {
        pipeline: p.name.clone(),
        source,
    })?;
    tracing::info!(
        "pipeline `{}`: model {} {} loaded; window {} ms",
        p.name,
        p.card.id,
        p.card.version,
        p.window_ms
    );
    let Source::Replay {
        path,
        speed,
        fps,
        repeat,
        start_wall_ms,
    } = &p.source;
    let mut start = clock.now();
    if let (Speed::Accelerated, Some(w)) = (speed, start_wall_ms) {
        start.wall_ms = *w;
    }
    let rc = ReplayClock {
        real: clock,
        speed: *speed,
        start,
        started: std::time::Instant::now(),
    };
    let model_ref = ModelRef {
        id: p.card.id.clone(),
        version: p.card.version.clone(),
        sha256: p.card.sha256.clone(),
    };
    // The noise generator: ChaCha12 seeded by the operating system.
    let rng: StdRng = rand::make_rng();
    let mut agg = Aggregator::new(
        model_ref,
        &p.kinds,
        p.labels.clone(),
        p.rules,
        p.window_ms,
        rc.at(0),
        rng,
    );
    let send = |records: Vec<Record>| -> Result<(), RunError> {
        for r in records {
            tx.send(r)
                .map_err(|_| RunError::Outbox("the log writer stopped".into()))?;
        }
        Ok(())
    };
    let perr = |source: PipelineError| RunError::Pipeline {
        pipeline: p.name.clone(),
        source,
    };
    let post: Vec<Postprocess> = p.card.outputs.iter().map(|o| o.postprocess).collect();
    // What the observations are published under: the card's first observed label.
    let label = pipeline::observed_labels(&p.card)
        .first()
        .and_then(|name| agg.label(name).ok())
        .ok_or_else(|| {
            perr(PipelineError::Unsuitable {
                model: p.card.id.clone(),
                message: "its card names no label for the output the agent observes".into(),
            })
        })?;
    let mut frames = 0u64;
    let mut offset_us = 0u64;
    if post.contains(&Postprocess::SpeechProbability) {
        tracing::debug!(
            "pipeline `{}`: replaying audio from {}",
            p.name,
            path.display()
        );
        for _ in 0..*repeat {
            let audio = pipeline::read_wav(path).map_err(perr)?;
            let mut stream = SpeechStream::new(&model).map_err(perr)?;
            let rate = stream.sample_rate();
            let samples = pipeline::resample(&audio.samples, audio.sample_rate, rate);
            let n = stream.chunk_len();
            let chunk_us = n as u64 * 1_000_000 / rate as u64;
            for chunk in samples.chunks_exact(n) {
                let prob = stream.push(chunk).map_err(perr)?;
                offset_us += chunk_us;
                let obs = Observation::Span {
                    flag: &label,
                    on: prob >= p.threshold,
                    duration_us: chunk_us,
                };
                send(agg.observe(rc.at(offset_us), obs))?;
                frames += 1;
            }
        }
    } else if post.contains(&Postprocess::CenterFace) {
        tracing::debug!(
            "pipeline `{}`: replaying images from {}",
            p.name,
            path.display()
        );
        let files = image_files(path).map_err(|message| RunError::Source {
            pipeline: p.name.clone(),
            path: path.clone(),
            message,
        })?;
        let frame_us = (1e6 / fps) as u64;
        for _ in 0..*repeat {
            for f in &files {
                let img = pipeline::read_image(f).map_err(perr)?;
                let faces = pipeline::detect_faces(&model, &img, p.threshold).map_err(perr)?;
                let obs = Observation::Frame {
                    class: &label,
                    count: faces.len() as u32,
                };
                send(agg.observe(rc.at(offset_us), obs))?;
                offset_us += frame_us;
                frames += 1;
            }
        }
    } else {
        return Err(perr(PipelineError::Unsuitable {
            model: p.card.id.clone(),
            message: "the agent runs face-detection and voice-activity models; this card has neither output"
                .into(),
        }));
    }
    send(agg.finish(rc.at(offset_us)))?;
    tracing::info!(
        "pipeline `{}`: end of its source after {frames} frames or chunks",
        p.name
    );
    Ok(frames)
}

/// One image file, or the images of a folder in name order.
fn image_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("cannot list the folder: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| {
                let x = x.to_string_lossy().to_ascii_lowercase();
                x == "png" || x == "jpg" || x == "jpeg"
            })
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err("no .png, .jpg or .jpeg image in the folder".into());
    }
    Ok(files)
}
