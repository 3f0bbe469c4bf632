//! What each pipeline is doing, counted as it goes: frames captured, analysed and dropped,
//! restarts of its source and its last error, and a heartbeat that the systemd watchdog is
//! fed from (a pipeline stuck in a model or a read stops beating, and systemd restarts the
//! service). Counters only: no frame, sample or result is kept here.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hub_link::{SourceKind, SourceState};

/// Inference times kept for the percentiles: the last this many frames.
const LATENCIES: usize = 512;

/// One pipeline's counters, shared by its source, its loop and the status reporter.
#[derive(Debug)]
pub struct PipelineHealth {
    pub name: String,
    /// The model id (the records' `model`).
    pub model: String,
    pub source: SourceKind,
    /// The aggregation window, in seconds.
    pub window_s: u32,
    /// Frames (or audio chunks) read from the source.
    pub captured: AtomicU64,
    /// Frames (or chunks) that went through the model.
    pub inferred: AtomicU64,
    /// Frames the source replaced by a newer one before the model took them.
    pub dropped: AtomicU64,
    /// Times the source was restarted (a camera child that died or stalled...).
    pub restarts: AtomicU64,
    /// Microseconds spent on frames from taking them to their observation, and of those, in
    /// the network itself (image pipelines).
    pub handling_us: AtomicU64,
    pub network_us: AtomicU64,
    /// Milliseconds since `origin` of the pipeline loop's last turn.
    beat_ms: AtomicU64,
    started: AtomicBool,
    origin: Instant,
    last_source_error: Mutex<Option<String>>,
    state: AtomicU8,
    latencies: Mutex<Latencies>,
    node: Mutex<Option<hub_link::NodeStatus>>,
}

/// A ring of the last inference times, in microseconds.
#[derive(Debug)]
struct Latencies {
    us: Vec<u32>,
    next: usize,
}

impl PipelineHealth {
    pub fn new(name: &str, model: &str, source: SourceKind, window_ms: u64) -> PipelineHealth {
        PipelineHealth {
            name: name.to_owned(),
            model: model.to_owned(),
            source,
            window_s: (window_ms / 1000).clamp(1, u32::MAX as u64) as u32,
            captured: AtomicU64::new(0),
            inferred: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            handling_us: AtomicU64::new(0),
            network_us: AtomicU64::new(0),
            beat_ms: AtomicU64::new(0),
            started: AtomicBool::new(false),
            origin: Instant::now(),
            last_source_error: Mutex::new(None),
            state: AtomicU8::new(state_code(SourceState::Starting)),
            latencies: Mutex::new(Latencies {
                us: Vec::with_capacity(LATENCIES),
                next: 0,
            }),
            node: Mutex::new(None),
        }
    }

    /// The sensor node link's counters, for a pipeline that reads a node.
    pub fn set_node(&self, n: hub_link::NodeStatus) {
        *self.node.lock().unwrap_or_else(|p| p.into_inner()) = Some(n);
    }

    pub fn node(&self) -> Option<hub_link::NodeStatus> {
        self.node.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_state(&self, state: SourceState) {
        self.state.store(state_code(state), Ordering::Relaxed);
    }

    pub fn state(&self) -> SourceState {
        match self.state.load(Ordering::Relaxed) {
            0 => SourceState::Starting,
            1 => SourceState::Running,
            2 => SourceState::Restarting,
            _ => SourceState::Ended,
        }
    }

    /// A frame took `total` from being taken to being observed, `network` of it in the model.
    pub fn handled(&self, total: Duration, network: Duration) {
        self.handling_us
            .fetch_add(total.as_micros() as u64, Ordering::Relaxed);
        self.network_us
            .fetch_add(network.as_micros() as u64, Ordering::Relaxed);
    }

    /// One inference took `d`.
    pub fn inference(&self, d: Duration) {
        let us = d.as_micros().min(u32::MAX as u128) as u32;
        let mut l = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
        if l.us.len() < LATENCIES {
            l.us.push(us);
        } else {
            let i = l.next;
            l.us[i] = us;
        }
        l.next = (l.next + 1) % LATENCIES;
    }

    /// The median and 99th percentile of the last inference times, in milliseconds.
    pub fn percentiles_ms(&self) -> Option<(f32, f32)> {
        let mut v = self
            .latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .us
            .clone();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        // Nearest rank.
        let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some((rank(0.50) as f32 / 1000.0, rank(0.99) as f32 / 1000.0))
    }

    /// This pipeline's part of the status report.
    pub fn status(&self) -> hub_link::PipelineStatus {
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let p = self.percentiles_ms();
        hub_link::PipelineStatus {
            model: self.model.clone(),
            source: self.source,
            state: self.state(),
            window_s: self.window_s,
            captured: count(&self.captured),
            inferred: count(&self.inferred),
            dropped: count(&self.dropped),
            restarts: count(&self.restarts),
            p50_ms: p.map(|p| p.0),
            p99_ms: p.map(|p| p.1),
        }
    }

    /// The pipeline's loop turned (a frame analysed, or a wait for one ended).
    pub fn beat(&self) {
        self.started.store(true, Ordering::Relaxed);
        self.beat_ms
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether the pipeline's model is loaded and its loop has turned once.
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }

    /// Milliseconds since the loop last turned (since the pipeline was created, before).
    pub fn since_beat_ms(&self) -> u64 {
        (self.origin.elapsed().as_millis() as u64)
            .saturating_sub(self.beat_ms.load(Ordering::Relaxed))
    }

    pub fn set_source_error(&self, e: String) {
        *self
            .last_source_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(e);
    }

    pub fn source_error(&self) -> Option<String> {
        self.last_source_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn state_code(s: SourceState) -> u8 {
    match s {
        SourceState::Starting => 0,
        SourceState::Running => 1,
        SourceState::Restarting => 2,
        SourceState::Ended => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_over_the_last_frames() {
        let h = PipelineHealth::new("p", "m", SourceKind::Camera, 60_000);
        assert_eq!(h.percentiles_ms(), None);
        for ms in 1..=100u64 {
            h.inference(Duration::from_millis(ms));
        }
        assert_eq!(h.percentiles_ms(), Some((50.0, 99.0)));
        // The ring forgets the oldest: 512 frames of 2 ms push the 1..100 out.
        for _ in 0..LATENCIES {
            h.inference(Duration::from_millis(2));
        }
        assert_eq!(h.percentiles_ms(), Some((2.0, 2.0)));
        assert_eq!(h.status().window_s, 60);
        assert_eq!(h.status().state, SourceState::Starting);
        h.set_state(SourceState::Restarting);
        assert_eq!(h.status().state, SourceState::Restarting);
    }
}
