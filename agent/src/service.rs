//! `edge-agent run`: each pipeline reads its source, runs its model, and feeds its aggregator
//! in a thread of its own; records (and only records) travel over a channel to the one thread
//! that appends them to the audit log, which is also the outbox.
//!
//! Raw frames live in this module's stack frames for the time of one inference; nothing here
//! writes them anywhere.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use aggregate::{Aggregator, Instant, Label, ModelRef, Observation, Outbox, Record};
use rand::rngs::StdRng;

use crate::config::{Config, MicSettings, Pipeline, Source, Speed};
use crate::health::PipelineHealth;
use crate::pipeline::{self, AudioScores, AudioStream, PipelineError};
use crate::sources::camera::{Camera, CameraSettings};
use crate::sources::microphone::{MicError, Microphone, Read};
use crate::stop::Stop;
use modelcard::Postprocess;

mod levels;
use runtime::{LoadOptions, Model, ModelError};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("pipeline `{pipeline}`: privacy budget: {source}")]
    Budget {
        pipeline: String,
        source: crate::budget::BudgetError,
    },
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

/// Runs every pipeline until the end of its source or a stop request, appending each closed
/// window's record to `outbox`; `on_record` sees each appended sequence number (progress). On
/// a stop, each pipeline closes its open window as a partial record before it returns.
pub fn run<O: Outbox>(
    config: &Config,
    clock: &dyn Clock,
    stop: &Stop,
    health: &[Arc<PipelineHealth>],
    outbox: &mut O,
    on_record: &mut dyn FnMut(u64, &mut O),
) -> Result<RunSummary, RunError>
where
    O::Error: std::fmt::Display,
{
    assert_eq!(
        health.len(),
        config.pipelines.len(),
        "one health per pipeline"
    );
    let (tx, rx) = mpsc::sync_channel::<Record>(64);
    let mut summary = RunSummary::default();
    std::thread::scope(|scope| {
        let handles: Vec<_> = config
            .pipelines
            .iter()
            .zip(health)
            .map(|(p, h)| {
                let tx = tx.clone();
                let run = move || run_pipeline(p, clock, stop, h, &tx);
                (p.name.clone(), scope.spawn(run))
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
                    // The pipelines cannot publish anything more: stop them.
                    stop.request();
                    break;
                }
            }
        }
        let mut first_error = write_error;
        for (name, h) in handles {
            match h.join() {
                Ok(Ok(())) => {}
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

/// The health counters of each configured pipeline, in order.
pub fn health_of(config: &Config) -> Vec<Arc<PipelineHealth>> {
    config
        .pipelines
        .iter()
        .map(|p| {
            let source = match &p.source {
                Source::Replay { .. } => hub_link::SourceKind::Replay,
                Source::Camera(_) => hub_link::SourceKind::Camera,
                Source::Microphone(_) => hub_link::SourceKind::Microphone,
                Source::Node(_) => hub_link::SourceKind::Node,
                Source::I2c(_) => hub_link::SourceKind::I2c,
            };
            Arc::new(PipelineHealth::new(
                &p.name,
                &p.card.id,
                source,
                p.window_ms,
            ))
        })
        .collect()
}

/// A clock for a replay: virtual (the data's own timing) when accelerated, the real clocks
/// otherwise, after sleeping until the frame is due (a stop request ends the sleep).
struct ReplayClock<'a> {
    real: &'a dyn Clock,
    speed: Speed,
    start: Instant,
    started: std::time::Instant,
}

impl ReplayClock<'_> {
    fn at(&self, offset_us: u64, stop: &Stop) -> Instant {
        match self.speed {
            Speed::Accelerated => Instant {
                mono_ms: self.start.mono_ms + offset_us / 1000,
                wall_ms: self.start.wall_ms + (offset_us / 1000) as i64,
            },
            Speed::Realtime(factor) => {
                let due = Duration::from_secs_f64(offset_us as f64 / 1e6 / factor);
                if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                    stop.sleep(wait);
                }
                self.real.now()
            }
        }
    }
}

/// What a card's outputs let the agent observe.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    /// An audio model on chunks: a voice-activity model's speech spans, or an audio-event
    /// classifier's spans per class.
    Audio,
    /// A face detector on images: objects per frame.
    Faces,
    /// An object detector on images: objects per frame and class, tracked across counting
    /// lines.
    Objects,
}

impl Family {
    fn of(card: &modelcard::Card) -> Result<Family, PipelineError> {
        let post: Vec<Postprocess> = card.outputs.iter().map(|o| o.postprocess).collect();
        if post.contains(&Postprocess::SpeechProbability)
            || post.contains(&Postprocess::ClassScores)
        {
            Ok(Family::Audio)
        } else if post.contains(&Postprocess::CenterFace) {
            Ok(Family::Faces)
        } else if post.contains(&Postprocess::GflScores) {
            Ok(Family::Objects)
        } else {
            Err(PipelineError::Unsuitable {
                model: card.id.clone(),
                message: "the agent runs face-detection, object-detection, voice-activity and audio-classifier models; this card has none of their outputs"
                    .into(),
            })
        }
    }
}

/// An object detector's state: its heads, the card's class index of each published class,
/// their labels, the tracker and lines, and the lines' labels.
struct Objects {
    heads: pipeline::ObjectHeads,
    wanted: Vec<usize>,
    classes: Vec<Label>,
    counter: counting::Counter,
    lines: Vec<Label>,
}

impl Objects {
    fn new(p: &Pipeline, agg: &Aggregator<StdRng>, fps: f64) -> Result<Objects, PipelineError> {
        let heads = pipeline::ObjectHeads::of(&p.card)?;
        let all = p
            .card
            .outputs
            .iter()
            .find(|o| o.postprocess == Postprocess::GflScores)
            .map(|o| o.labels.clone())
            .unwrap_or_default();
        let unsuitable = |m: String| PipelineError::Unsuitable {
            model: p.card.id.clone(),
            message: m,
        };
        let mut wanted = Vec::new();
        let mut classes = Vec::new();
        for c in &p.classes {
            let i = all.iter().position(|l| l == c).ok_or_else(|| {
                unsuitable(format!("class `{c}` is not among its outputs' labels"))
            })?;
            wanted.push(i);
            classes.push(agg.label(c).map_err(|e| unsuitable(e.to_string()))?);
        }
        let lines = p
            .lines
            .iter()
            .map(|l| agg.label(&l.name).map_err(|e| unsuitable(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        // Tracks survive a second without a detection (an occlusion, a missed frame).
        let keep_frames = fps.clamp(1.0, 120.0).round() as usize;
        let counter = counting::Counter::new(
            p.lines.clone(),
            classes.len(),
            counting::Settings {
                threshold: p.threshold,
                keep_frames,
            },
        );
        Ok(Objects {
            heads,
            wanted,
            classes,
            counter,
            lines,
        })
    }
}

/// Detections the tracker sees below the pipeline's threshold (ByteTrack's second pass keeps
/// partly hidden objects on their tracks with them); never counted on their own.
const TRACK_LOW_SCORE: f32 = 0.1;

/// One pipeline's loop, from its model to the channel of records.
struct Run<'a> {
    p: &'a Pipeline,
    model: &'a Model,
    agg: Aggregator<StdRng>,
    label: Label,
    /// An audio model's classes, in its scores' order: each one's label if published.
    flags: Vec<Option<Label>>,
    objects: Option<Objects>,
    health: &'a Arc<PipelineHealth>,
    stop: &'a Stop,
    tx: &'a mpsc::SyncSender<Record>,
}

impl Run<'_> {
    fn send(&self, records: Vec<Record>) -> Result<(), RunError> {
        deliver(self.p, self.tx, records)
    }

    fn err(&self, source: PipelineError) -> RunError {
        RunError::Pipeline {
            pipeline: self.p.name.clone(),
            source,
        }
    }

    fn observe(&mut self, at: Instant, obs: Observation<'_>) -> Result<(), RunError> {
        let records = self.agg.observe(at, obs);
        self.health.inferred.fetch_add(1, Ordering::Relaxed);
        self.health.beat();
        self.send(records)
    }

    /// One image through the pipeline's detector.
    fn frame(&mut self, at: Instant, img: &pipeline::Image) -> Result<(), RunError> {
        if self.objects.is_some() {
            self.objects(at, img)
        } else {
            self.faces(at, img)
        }
    }

    /// Objects per class in one image, and the counting lines they crossed.
    fn objects(&mut self, at: Instant, img: &pipeline::Image) -> Result<(), RunError> {
        let t = std::time::Instant::now();
        let Some(o) = self.objects.as_mut() else {
            return Ok(());
        };
        let low = TRACK_LOW_SCORE.min(self.p.threshold);
        let result = pipeline::detect_objects_timed(self.model, &o.heads, img, &o.wanted, low);
        let (found, network) = result.map_err(|e| self.err(e))?;
        self.health.inference(network);
        let Some(o) = self.objects.as_mut() else {
            return Ok(());
        };
        // The card's class index -> the pipeline's.
        let detections: Vec<counting::Detection> = found
            .iter()
            .filter_map(|d| {
                let class = o.wanted.iter().position(|w| *w == d.class)?;
                Some(counting::Detection {
                    rect: d.rect,
                    score: d.score,
                    class,
                })
            })
            .collect();
        let crossings = o.counter.update(&detections);
        let mut per_class = vec![0u32; o.classes.len()];
        for d in &detections {
            if d.score >= self.p.threshold {
                per_class[d.class] += 1;
            }
        }
        let (classes, lines) = (o.classes.clone(), o.lines.clone());
        let mut records = Vec::new();
        for (class, count) in classes.iter().zip(per_class) {
            records.extend(self.agg.observe(at, Observation::Frame { class, count }));
        }
        for c in crossings {
            records.extend(self.agg.observe(
                at,
                Observation::Crossing {
                    line: &lines[c.line],
                    class: &classes[c.class],
                    inward: c.inward,
                },
            ));
        }
        self.health.inferred.fetch_add(1, Ordering::Relaxed);
        self.health.beat();
        self.send(records)?;
        self.health.handled(t.elapsed(), network);
        Ok(())
    }

    /// A face count for one image.
    fn faces(&mut self, at: Instant, img: &pipeline::Image) -> Result<(), RunError> {
        let t = std::time::Instant::now();
        let (faces, network) = pipeline::detect_faces_timed(self.model, img, self.p.threshold)
            .map_err(|e| self.err(e))?;
        self.health.inference(network);
        let label = self.label.clone();
        self.observe(
            at,
            Observation::Frame {
                class: &label,
                count: faces.len() as u32,
            },
        )?;
        // From the frame to its observation: the network's share and the rest.
        self.health.handled(t.elapsed(), network);
        Ok(())
    }

    /// The WAV file, `repeat` times; the instant of its end.
    fn replay_audio(
        &mut self,
        path: &Path,
        repeat: u32,
        rc: &ReplayClock,
    ) -> Result<Instant, RunError> {
        let mut offset_us = 0u64;
        for _ in 0..repeat {
            let audio = pipeline::read_wav(path).map_err(|e| self.err(e))?;
            let model = self.model;
            let mut stream = AudioStream::new(model).map_err(|e| self.err(e))?;
            let rate = stream.sample_rate();
            let samples = pipeline::resample(&audio.samples, audio.sample_rate, rate);
            let n = stream.chunk_len();
            let chunk_us = n as u64 * 1_000_000 / rate as u64;
            for chunk in samples.chunks_exact(n) {
                if self.stop.requested() {
                    return Ok(rc.at(offset_us, self.stop));
                }
                self.health.captured.fetch_add(1, Ordering::Relaxed);
                let t = std::time::Instant::now();
                let scores = stream.push(chunk).map_err(|e| self.err(e))?;
                self.health.inference(t.elapsed());
                offset_us += chunk_us;
                let at = rc.at(offset_us, self.stop);
                self.observe_audio(at, chunk_us, &scores)?;
            }
        }
        Ok(rc.at(offset_us, self.stop))
    }

    /// One audio chunk's scores; `end` is the instant the chunk ends. Per frame of the chunk
    /// (its share of `chunk_us`, observed at its middle, so that a window boundary inside the
    /// chunk splits it where it falls), per published class, a span on or off by the pipeline's
    /// threshold. The scores go no further.
    fn observe_audio(
        &mut self,
        end: Instant,
        chunk_us: u64,
        scores: &AudioScores,
    ) -> Result<(), RunError> {
        let frames = scores.frames as u64;
        for f in 0..scores.frames {
            // Whole microseconds, the remainder on the last frames: they add up to the chunk.
            let i = f as u64;
            let (from_us, to_us) = (i * chunk_us / frames, (i + 1) * chunk_us / frames);
            let back_ms = (chunk_us - (from_us + to_us) / 2) / 1000;
            let at = Instant {
                mono_ms: end.mono_ms.saturating_sub(back_ms),
                wall_ms: end.wall_ms - back_ms as i64,
            };
            for c in 0..self.flags.len() {
                let Some(flag) = self.flags[c].clone() else {
                    continue;
                };
                let on = scores
                    .frame(f)
                    .get(c)
                    .is_some_and(|p| *p >= self.p.threshold);
                let obs = Observation::Span {
                    flag: &flag,
                    on,
                    duration_us: to_us - from_us,
                };
                let records = self.agg.observe(at, obs);
                self.send(records)?;
            }
        }
        // One chunk analysed.
        self.health.inferred.fetch_add(1, Ordering::Relaxed);
        self.health.beat();
        Ok(())
    }

    /// The image file or folder, `repeat` times at `fps`; the instant of its end.
    fn replay_images(
        &mut self,
        path: &Path,
        fps: f64,
        repeat: u32,
        rc: &ReplayClock,
    ) -> Result<Instant, RunError> {
        let files = image_files(path).map_err(|message| RunError::Source {
            pipeline: self.p.name.clone(),
            path: path.to_owned(),
            message,
        })?;
        let frame_us = (1e6 / fps) as u64;
        let mut offset_us = 0u64;
        for _ in 0..repeat {
            for f in &files {
                let at = rc.at(offset_us, self.stop);
                if self.stop.requested() {
                    return Ok(at);
                }
                let img = pipeline::read_image(f).map_err(|e| self.err(e))?;
                self.health.captured.fetch_add(1, Ordering::Relaxed);
                self.frame(at, &img)?;
                offset_us += frame_us;
            }
        }
        Ok(rc.at(offset_us, self.stop))
    }

    /// A live camera until a stop request; windows close on time while it is down.
    fn camera(
        &mut self,
        settings: &CameraSettings,
        clock: &dyn Clock,
    ) -> Result<Instant, RunError> {
        let camera = Camera::start(&self.p.name, settings.clone(), Arc::clone(self.health))
            .map_err(|message| RunError::Source {
                pipeline: self.p.name.clone(),
                path: PathBuf::from(settings.program().0),
                message,
            })?;
        while !self.stop.requested() {
            match camera.next(Duration::from_millis(250)) {
                Some(frame) => self.frame(clock.now(), &frame.image)?,
                None => {
                    let records = self.agg.tick(clock.now());
                    self.health.beat();
                    self.send(records)?;
                }
            }
        }
        Ok(clock.now())
    }

    /// A live microphone until a stop request (or its `duration`). Time is the sample clock,
    /// anchored to the system's clocks each time the device is opened: windows hold exactly
    /// the audio captured in them, whatever the scheduling.
    fn microphone(
        &mut self,
        settings: &MicSettings,
        clock: &dyn Clock,
    ) -> Result<Instant, RunError> {
        let mut stream = AudioStream::new(self.model).map_err(|e| self.err(e))?;
        let rate = stream.sample_rate();
        let n = stream.chunk_len();
        let mut raw = vec![0i16; n];
        let mut chunk = vec![0f32; n];
        let chunk_us = n as u64 * 1_000_000 / rate as u64;
        let limit = settings
            .duration
            .map(|d| (d.as_micros() * rate as u128 / 1_000_000) as u64);
        let mut total = 0u64;
        let mut backoff = Duration::from_secs(1);
        let mut opened = 0u64;
        let mut now = clock.now();
        'device: while !self.stop.requested() {
            let lost = match Microphone::open(&settings.input, rate) {
                Err(e) => e,
                Ok(mut mic) => {
                    opened += 1;
                    if opened > 1 {
                        self.health.restarts.fetch_add(1, Ordering::Relaxed);
                    }
                    // Never behind what was already observed (a file-fed device runs ahead).
                    let anchor = later(now, clock.now());
                    let mut offset_us = 0u64;
                    let mut last_sample = std::time::Instant::now();
                    loop {
                        if self.stop.requested() {
                            break 'device;
                        }
                        if limit.is_some_and(|l| total + n as u64 > l) {
                            self.health.set_state(hub_link::SourceState::Ended);
                            return Ok(now);
                        }
                        let got = mic.read(&mut raw, Duration::from_millis(250));
                        self.health
                            .dropped
                            .fetch_add(mic.take_overruns(), Ordering::Relaxed);
                        match got {
                            Ok(Read::Chunk) => {}
                            Ok(Read::Nothing) => {
                                now = later(now, clock.now());
                                let records = self.agg.tick(now);
                                self.health.beat();
                                self.send(records)?;
                                if last_sample.elapsed() >= settings.stall_timeout {
                                    break MicError::Lost {
                                        device: settings.input.clone(),
                                        message: format!(
                                            "no sample for {} s",
                                            settings.stall_timeout.as_secs()
                                        ),
                                    };
                                }
                                continue;
                            }
                            Err(e) => break e,
                        }
                        last_sample = std::time::Instant::now();
                        backoff = Duration::from_secs(1);
                        self.health.set_state(hub_link::SourceState::Running);
                        self.health.captured.fetch_add(1, Ordering::Relaxed);
                        total += n as u64;
                        for (f, s) in chunk.iter_mut().zip(&raw) {
                            *f = *s as f32 / 32768.0;
                        }
                        let t = std::time::Instant::now();
                        let scores = stream.push(&chunk).map_err(|e| self.err(e))?;
                        self.health.inference(t.elapsed());
                        offset_us += chunk_us;
                        now = Instant {
                            mono_ms: anchor.mono_ms + offset_us / 1000,
                            wall_ms: anchor.wall_ms + (offset_us / 1000) as i64,
                        };
                        self.observe_audio(now, chunk_us, &scores)?;
                    }
                }
            };
            // Lost or not opened: say why, keep closing windows on time, try again later.
            tracing::warn!(
                "pipeline `{}`: microphone: {lost}; reopening in {} s",
                self.p.name,
                backoff.as_secs()
            );
            self.health.set_source_error(lost.to_string());
            self.health.set_state(hub_link::SourceState::Restarting);
            let until = std::time::Instant::now() + backoff;
            while std::time::Instant::now() < until && !self.stop.requested() {
                now = later(now, clock.now());
                let records = self.agg.tick(now);
                self.health.beat();
                self.send(records)?;
                self.stop.sleep(Duration::from_millis(250));
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
            // The stream's state belongs to audio that is gone.
            stream = AudioStream::new(self.model).map_err(|e| self.err(e))?;
        }
        Ok(later(now, clock.now()))
    }
}

/// The later of two readings, by the monotonic clock.
fn later(a: Instant, b: Instant) -> Instant {
    if b.mono_ms > a.mono_ms { b } else { a }
}

fn run_pipeline(
    p: &Pipeline,
    clock: &dyn Clock,
    stop: &Stop,
    health: &Arc<PipelineHealth>,
    tx: &mpsc::SyncSender<Record>,
) -> Result<(), RunError> {
    let perr = |source: PipelineError| RunError::Pipeline {
        pipeline: p.name.clone(),
        source,
    };
    if let Some(m) = &p.card.measurement {
        health.beat();
        let start = clock.now();
        let agg = aggregator(p, start)?;
        let levels = levels::Levels::new(p, m, agg, health, stop, tx, clock, start)?;
        tracing::info!(
            "pipeline `{}`: measurement {} {} ({} source); window {} ms",
            p.name,
            p.card.id,
            p.card.version,
            m.source.name(),
            p.window_ms
        );
        let (agg, end) = levels.run()?;
        return finish(p, agg, end, stop, health, tx);
    }
    let family = Family::of(&p.card).map_err(perr)?;
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
    health.beat();
    if matches!(p.source, Source::Replay { .. }) {
        health.set_state(hub_link::SourceState::Running);
    }
    let mut start = clock.now();
    if let Source::Replay {
        speed: Speed::Accelerated,
        start_wall_ms: Some(w),
        ..
    } = &p.source
    {
        start.wall_ms = *w;
    }
    let rc = ReplayClock {
        real: clock,
        speed: match &p.source {
            Source::Replay { speed, .. } => *speed,
            _ => Speed::Realtime(1.0),
        },
        start,
        started: std::time::Instant::now(),
    };
    let agg = aggregator(p, start)?;
    let objects = match family {
        Family::Objects => {
            let fps = match &p.source {
                Source::Replay { fps, .. } => *fps,
                Source::Camera(c) => c.fps,
                _ => 1.0,
            };
            Some(Objects::new(p, &agg, fps).map_err(perr)?)
        }
        _ => None,
    };
    // What a face detector's observations are published under: the pipeline's first class.
    let label = p
        .classes
        .first()
        .and_then(|name| agg.label(name).ok())
        .ok_or_else(|| {
            perr(PipelineError::Unsuitable {
                model: p.card.id.clone(),
                message: "its card names no label for the output the agent observes".into(),
            })
        })?;
    let flags = audio_flags(&p.card, &p.classes, &agg);
    let mut run = Run {
        p,
        model: &model,
        agg,
        label,
        flags,
        objects,
        health,
        stop,
        tx,
    };
    let end = match (&p.source, family) {
        (Source::Replay { path, repeat, .. }, Family::Audio) => {
            tracing::debug!(
                "pipeline `{}`: replaying audio from {}",
                p.name,
                path.display()
            );
            run.replay_audio(path, *repeat, &rc)?
        }
        (
            Source::Replay {
                path, fps, repeat, ..
            },
            Family::Faces | Family::Objects,
        ) => {
            tracing::debug!(
                "pipeline `{}`: replaying images from {}",
                p.name,
                path.display()
            );
            run.replay_images(path, *fps, *repeat, &rc)?
        }
        (Source::Camera(settings), Family::Faces | Family::Objects) => {
            run.camera(settings, clock)?
        }
        (Source::Microphone(settings), Family::Audio) => run.microphone(settings, clock)?,
        (Source::Microphone(_), Family::Faces | Family::Objects) => {
            return Err(perr(PipelineError::Unsuitable {
                model: p.card.id.clone(),
                message: "a microphone feeds audio models; this card's input is an image".into(),
            }));
        }
        (Source::Camera(_), Family::Audio) => {
            return Err(perr(PipelineError::Unsuitable {
                model: p.card.id.clone(),
                message: "a camera feeds image models; this card's input is audio".into(),
            }));
        }
        (Source::Node(_) | Source::I2c(_), _) => {
            return Err(perr(PipelineError::Unsuitable {
                model: p.card.id.clone(),
                message: "a sensor source takes a measurement card, not a model".into(),
            }));
        }
    };
    let Run { agg, .. } = run;
    finish(p, agg, end, stop, health, tx)
}

/// Hands records to the log writer, each after the privacy budget it spent is on disk (a
/// crash in between over-counts the day's spending, never under-counts it).
fn deliver(
    p: &Pipeline,
    tx: &mpsc::SyncSender<Record>,
    records: Vec<Record>,
) -> Result<(), RunError> {
    for r in records {
        if let Some(b) = r.budget() {
            crate::budget::save(&p.budget_file, b).map_err(|source| RunError::Budget {
                pipeline: p.name.clone(),
                source,
            })?;
        }
        tx.send(r)
            .map_err(|_| RunError::Outbox("the log writer stopped".into()))?;
    }
    Ok(())
}

/// The pipeline's aggregator, its windows starting at `start`, charging the privacy budget
/// already spent today (kept on disk across restarts).
/// An audio card's classes in its scores' order (the speech-probability or class-scores
/// output's labels): each one's label in the aggregator's set if the pipeline publishes it.
fn audio_flags(
    card: &modelcard::Card,
    published: &[String],
    agg: &Aggregator<StdRng>,
) -> Vec<Option<Label>> {
    card.audio_scores()
        .map(|(_, o)| {
            o.labels
                .iter()
                .map(|l| published.contains(l).then(|| agg.label(l).ok()).flatten())
                .collect()
        })
        .unwrap_or_default()
}

fn aggregator(p: &Pipeline, start: Instant) -> Result<Aggregator<StdRng>, RunError> {
    let model_ref = ModelRef {
        id: p.card.id.clone(),
        version: p.card.version.clone(),
        sha256: p.card.sha256.clone(),
    };
    // The noise generator: ChaCha12 seeded by the operating system.
    let rng: StdRng = rand::make_rng();
    let lines = p
        .lines
        .iter()
        .filter_map(|l| {
            let classes = if l.classes.is_empty() {
                p.classes.clone()
            } else {
                l.classes.iter().map(|&i| p.classes[i].clone()).collect()
            };
            let classes = classes
                .iter()
                .map(|c| p.labels.get(c).ok())
                .collect::<Option<Vec<_>>>()?;
            Some((p.labels.get(&l.name).ok()?, classes))
        })
        .collect();
    let agg = Aggregator::new(
        model_ref,
        &p.kinds,
        p.labels.clone(),
        p.rules,
        p.window_ms,
        start,
        rng,
    )
    .with_lines(lines);
    if p.rules.noise.is_none() {
        return Ok(agg);
    }
    let spent = crate::budget::load(&p.budget_file).map_err(|source| RunError::Budget {
        pipeline: p.name.clone(),
        source,
    })?;
    Ok(match spent {
        Some(s) => agg.with_budget(s),
        None => agg,
    })
}

/// The end of a pipeline: its open window closed now (a partial record at a stop).
fn finish(
    p: &Pipeline,
    agg: Aggregator<StdRng>,
    end: Instant,
    stop: &Stop,
    health: &Arc<PipelineHealth>,
    tx: &mpsc::SyncSender<Record>,
) -> Result<(), RunError> {
    if !stop.requested() {
        health.set_state(hub_link::SourceState::Ended);
    }
    let frames = health.inferred.load(Ordering::Relaxed);
    // The open window, closed now: a partial record at a stop.
    deliver(p, tx, agg.finish(end))?;
    if stop.requested() {
        tracing::info!(
            "pipeline `{}`: stopped after {frames} frames or chunks",
            p.name
        );
    } else {
        tracing::info!(
            "pipeline `{}`: end of its source after {frames} frames or chunks",
            p.name
        );
    }
    Ok(())
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
