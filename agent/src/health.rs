//! What each pipeline is doing, counted as it goes: frames captured, analysed and dropped,
//! restarts of its source and its last error, and a heartbeat that the systemd watchdog is
//! fed from (a pipeline stuck in a model or a read stops beating, and systemd restarts the
//! service). Counters only: no frame, sample or result is kept here.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// One pipeline's counters, shared by its source, its loop and the status reporter.
#[derive(Debug)]
pub struct PipelineHealth {
    pub name: String,
    /// Frames (or audio chunks) read from the source.
    pub captured: AtomicU64,
    /// Frames (or chunks) that went through the model.
    pub inferred: AtomicU64,
    /// Frames the source replaced by a newer one before the model took them.
    pub dropped: AtomicU64,
    /// Times the source was restarted (a camera child that died or stalled...).
    pub restarts: AtomicU64,
    /// Milliseconds since `origin` of the pipeline loop's last turn.
    beat_ms: AtomicU64,
    started: AtomicBool,
    origin: Instant,
    last_source_error: Mutex<Option<String>>,
}

impl PipelineHealth {
    pub fn new(name: &str) -> PipelineHealth {
        PipelineHealth {
            name: name.to_owned(),
            captured: AtomicU64::new(0),
            inferred: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            beat_ms: AtomicU64::new(0),
            started: AtomicBool::new(false),
            origin: Instant::now(),
            last_source_error: Mutex::new(None),
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
