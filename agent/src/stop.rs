//! Stopping the service in order: a flag set once, by SIGTERM or SIGINT (systemd's stop, a
//! technician's Ctrl-C) or by a caller, that every loop of the service checks and every wait
//! of the service wakes up for. On a stop each pipeline closes its open window as a partial
//! record, the log signs a checkpoint, and the publisher hands over what it can within its
//! drain time (see `edge-agent run`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A stop request shared by the service's threads.
#[derive(Default)]
pub struct Stop {
    requested: AtomicBool,
    lock: Mutex<()>,
    woken: Condvar,
}

impl Stop {
    pub fn new() -> Arc<Stop> {
        Arc::new(Stop::default())
    }

    /// Asks every loop to stop; waits in progress return at once.
    pub fn request(&self) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.requested.store(true, Ordering::SeqCst);
        self.woken.notify_all();
    }

    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Sleeps for `d`, or less if a stop is requested meanwhile; whether one was.
    pub fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.requested() {
                return true;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            guard = self
                .woken
                .wait_timeout(guard, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Requests the stop on the first SIGTERM or SIGINT; a second one ends the process at once
    /// (status 130), for a person who does not want to wait for the drain. The log stays
    /// consistent either way: each append is all-or-nothing on disk.
    pub fn on_signals(self: &Arc<Stop>) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
        let stop = Arc::clone(self);
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if stop.requested() {
                        tracing::warn!("second stop signal ({signal}): exiting now");
                        std::process::exit(130);
                    }
                    let name = if signal == SIGTERM { "SIGTERM" } else { "SIGINT" };
                    tracing::info!(
                        "{name}: closing the open windows, signing a checkpoint, handing over to the hub"
                    );
                    stop.request();
                }
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_wakes_a_sleeper_at_once() {
        let stop = Stop::new();
        let s = Arc::clone(&stop);
        let t = std::thread::spawn(move || {
            let started = Instant::now();
            (s.sleep(Duration::from_secs(60)), started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(50));
        stop.request();
        let (stopped, slept) = t.join().unwrap();
        assert!(stopped);
        assert!(slept < Duration::from_secs(30), "slept {slept:?}");
        // Once requested, a sleep returns at once.
        assert!(stop.sleep(Duration::from_secs(60)));
    }

    #[test]
    fn a_sleep_without_request_runs_its_time() {
        let stop = Stop::new();
        let started = Instant::now();
        assert!(!stop.sleep(Duration::from_millis(30)));
        assert!(started.elapsed() >= Duration::from_millis(30));
    }
}
