//! Pipelines on measurement cards: levels read from a sensor by a documented method (the
//! sensor node's sound levels and environment over its serial link; a BME280 on the board's
//! bus) go into the aggregator as `level_stats` observations. There is no network: the card's
//! `file` is the method, whose hash is checked before the first reading.
//!
//! What the node sends besides the card's levels (octave bands, feature vectors, a PCM
//! excerpt) is dropped on arrival.

use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use aggregate::{Aggregator, Instant, Label, Observation, Record};
use modelcard::Measurement;
use node_link::Message;
use rand::rngs::StdRng;
use sha2::{Digest, Sha256};

use super::{Clock, RunError, later};
use crate::config::{I2cSettings, NodeSettings, Pipeline, Source};
use crate::health::PipelineHealth;
use crate::sources::i2c::I2cEnvironment;
use crate::sources::serial::{self, Event, answer_hello};
use crate::stop::Stop;

/// The longest wait between two attempts to reopen a source.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One sensor pipeline's loop, from its source to the channel of records.
pub(super) struct Levels<'a> {
    p: &'a Pipeline,
    agg: Aggregator<StdRng>,
    /// The card's levels, by name.
    labels: Vec<(String, Label)>,
    health: &'a Arc<PipelineHealth>,
    stop: &'a Stop,
    tx: &'a mpsc::SyncSender<Record>,
    clock: &'a dyn Clock,
    now: Instant,
}

impl<'a> Levels<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        p: &'a Pipeline,
        m: &Measurement,
        agg: Aggregator<StdRng>,
        health: &'a Arc<PipelineHealth>,
        stop: &'a Stop,
        tx: &'a mpsc::SyncSender<Record>,
        clock: &'a dyn Clock,
        start: Instant,
    ) -> Result<Levels<'a>, RunError> {
        check_method(p)?;
        let labels = m
            .levels
            .iter()
            .map(|n| {
                agg.label(n)
                    .map(|l| (n.clone(), l))
                    .map_err(|e| source_err(p, format!("level `{n}`: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Levels {
            p,
            agg,
            labels,
            health,
            stop,
            tx,
            clock,
            now: start,
        })
    }

    /// Runs the source until a stop request; the aggregator and the instant of the end.
    pub(super) fn run(mut self) -> Result<(Aggregator<StdRng>, Instant), RunError> {
        match &self.p.source {
            Source::Node(s) => self.node(s)?,
            Source::I2c(s) => self.i2c(s)?,
            _ => unreachable!("Config::parse pairs measurement cards with sensor sources"),
        }
        Ok((self.agg, later(self.now, self.clock.now())))
    }

    fn send(&self, records: Vec<Record>) -> Result<(), RunError> {
        super::deliver(self.p, self.tx, records)
    }

    /// Closes the windows that are due.
    fn tick(&mut self) -> Result<(), RunError> {
        self.now = later(self.now, self.clock.now());
        let records = self.agg.tick(self.now);
        self.health.beat();
        self.send(records)
    }

    /// Readings `(level name, value)` taken now; those the card does not list are dropped.
    fn observe(&mut self, readings: &[(&str, f64)]) -> Result<(), RunError> {
        self.now = later(self.now, self.clock.now());
        let mut any = false;
        for (name, value) in readings {
            let Some((_, label)) = self.labels.iter().find(|(n, _)| n == name) else {
                continue;
            };
            let label = label.clone();
            let records = self.agg.observe(
                self.now,
                Observation::Level {
                    name: &label,
                    value: *value,
                },
            );
            self.send(records)?;
            any = true;
        }
        if any {
            self.health.inferred.fetch_add(1, Ordering::Relaxed);
        }
        self.health.beat();
        Ok(())
    }

    /// Waits `backoff` (closing windows on time), then doubles it up to [`MAX_BACKOFF`].
    fn back_off(&mut self, backoff: &mut Duration, why: &str) -> Result<(), RunError> {
        tracing::warn!(
            "pipeline `{}`: {why}; retrying in {} s",
            self.p.name,
            backoff.as_secs()
        );
        self.health.set_source_error(why.to_owned());
        self.health.set_state(hub_link::SourceState::Restarting);
        let until = std::time::Instant::now() + *backoff;
        while std::time::Instant::now() < until && !self.stop.requested() {
            self.tick()?;
            self.stop.sleep(Duration::from_millis(250));
        }
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        Ok(())
    }

    /// The sensor node: its Sound and Environment frames become levels; its hello is
    /// answered; its status and the link's drop counters reach the status report. A link that
    /// closes or stalls is reopened.
    fn node(&mut self, s: &NodeSettings) -> Result<(), RunError> {
        let mut backoff = Duration::from_secs(1);
        let mut opened = 0u64;
        let mut sensor_errors = 0u64;
        // Counters of the links before the current one.
        let mut before = hub_link::NodeStatus::default();
        while !self.stop.requested() {
            let mut link = match serial::connect(&s.input, Duration::from_millis(250)) {
                Ok(l) => l,
                Err(e) => {
                    self.back_off(&mut backoff, &format!("node: {}", chain(&e)))?;
                    continue;
                }
            };
            opened += 1;
            if opened > 1 {
                self.health.restarts.fetch_add(1, Ordering::Relaxed);
            }
            let mut last_frame = std::time::Instant::now();
            let why = loop {
                if self.stop.requested() {
                    return Ok(());
                }
                let event = match link.next_event() {
                    Ok(e) => e,
                    Err(e) => break format!("node: {}", chain(&e)),
                };
                let st = link.stats();
                self.health.set_node(hub_link::NodeStatus {
                    frames: before.frames + st.frames as u64,
                    dropped: before.dropped + st.dropped as u64,
                    missed: before.missed + st.missed as u64,
                    sensor_errors,
                });
                let frame = match event {
                    Event::Frame(f) => f,
                    Event::Idle => {
                        self.tick()?;
                        if last_frame.elapsed() >= s.stall_timeout {
                            break format!("node: no frame for {} s", s.stall_timeout.as_secs());
                        }
                        continue;
                    }
                    Event::Closed => break "node: the link closed".to_owned(),
                };
                last_frame = std::time::Instant::now();
                backoff = Duration::from_secs(1);
                self.health.set_state(hub_link::SourceState::Running);
                self.health.captured.fetch_add(1, Ordering::Relaxed);
                match frame.message {
                    Message::Hello(h) => {
                        let ack = answer_hello(h.protocol);
                        if !ack.accepted {
                            tracing::error!(
                                "pipeline `{}`: the node speaks protocol {}, this agent needs {}: update its firmware",
                                self.p.name,
                                h.protocol,
                                node_link::VERSION
                            );
                        }
                        let reply = node_link::Frame {
                            counter: 0,
                            message: Message::HelloAck(ack),
                        };
                        if let Err(e) = link.send(&reply) {
                            break format!("node: {}", chain(&e));
                        }
                        tracing::info!(
                            "pipeline `{}`: node {:#010x}, firmware {}.{}.{}, protocol {}",
                            self.p.name,
                            h.node_id,
                            h.firmware[0],
                            h.firmware[1],
                            h.firmware[2],
                            h.protocol
                        );
                    }
                    Message::Sound(snd) => self.observe(&[
                        ("laeq_db", snd.laeq_centi_db as f64 / 100.0),
                        ("lzeq_db", snd.lzeq_centi_db as f64 / 100.0),
                    ])?,
                    Message::Environment(env) => self.observe(&environment(&env))?,
                    Message::Status(st) => sensor_errors = st.sensor_errors as u64,
                    _ => self.tick()?,
                }
            };
            let st = link.stats();
            before.frames += st.frames as u64;
            before.dropped += st.dropped as u64;
            before.missed += st.missed as u64;
            drop(link);
            if self.stop.requested() {
                break;
            }
            self.back_off(&mut backoff, &why)?;
        }
        Ok(())
    }

    /// A BME280 on the board's bus, read every `interval`; a failing bus or sensor is
    /// reopened with a back-off, never replaced by an invented value.
    fn i2c(&mut self, s: &I2cSettings) -> Result<(), RunError> {
        let mut backoff = Duration::from_secs(1);
        let mut opened = 0u64;
        while !self.stop.requested() {
            let mut sensor = match I2cEnvironment::open(&s.bus, s.address) {
                Ok(x) => x,
                Err(e) => {
                    self.back_off(&mut backoff, &format!("i2c: {}", chain(&e)))?;
                    continue;
                }
            };
            opened += 1;
            if opened > 1 {
                self.health.restarts.fetch_add(1, Ordering::Relaxed);
            }
            let why = loop {
                if self.stop.requested() {
                    return Ok(());
                }
                match sensor.read() {
                    Ok(env) => {
                        backoff = Duration::from_secs(1);
                        self.health.set_state(hub_link::SourceState::Running);
                        self.health.captured.fetch_add(1, Ordering::Relaxed);
                        self.observe(&environment(&env))?;
                    }
                    Err(e) => break format!("i2c: {}", chain(&e)),
                }
                let next = std::time::Instant::now() + s.interval;
                while std::time::Instant::now() < next && !self.stop.requested() {
                    self.tick()?;
                    self.stop.sleep(
                        next.saturating_duration_since(std::time::Instant::now())
                            .min(Duration::from_millis(250)),
                    );
                }
            };
            self.back_off(&mut backoff, &why)?;
        }
        Ok(())
    }
}

/// An environment reading as levels, in the units of their names.
fn environment(env: &node_link::Environment) -> Vec<(&'static str, f64)> {
    let mut v = vec![("temperature_c", env.temperature_centi_c as f64 / 100.0)];
    if let Some(h) = env.humidity_milli_pct {
        v.push(("humidity_pct", h as f64 / 1000.0));
    }
    if let Some(p) = env.pressure_pa {
        v.push(("pressure_hpa", p as f64 / 100.0));
    }
    v
}

/// An error and its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn source_err(p: &Pipeline, message: String) -> RunError {
    RunError::Source {
        pipeline: p.name.clone(),
        path: p.card.path.clone(),
        message,
    }
}

/// The method file is the one the card names: records name the method by this hash.
fn check_method(p: &Pipeline) -> Result<(), RunError> {
    let bytes = std::fs::read(&p.card.file).map_err(|e| RunError::Source {
        pipeline: p.name.clone(),
        path: p.card.file.clone(),
        message: format!("cannot read the method the card names: {e}"),
    })?;
    let actual: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if !actual.eq_ignore_ascii_case(&p.card.sha256) {
        return Err(RunError::Source {
            pipeline: p.name.clone(),
            path: p.card.file.clone(),
            message: format!(
                "sha256 is {actual} but the card {} says {}: the method is not the one the card describes",
                p.card.path.display(),
                p.card.sha256
            ),
        });
    }
    Ok(())
}
