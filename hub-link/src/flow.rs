//! How fast a device sends its log to the hub: the delivery rules of `docs/mqtt.md` as a state
//! machine with no I/O and no clock of its own (the caller passes `now`), shared by the agent's
//! publisher and the fleet simulator so that what is simulated is what devices do.
//!
//! Delivery is at least once, in order, from the hub's cumulative ack (the watermark). What a
//! single device can get away with, ten thousand after a regional outage cannot: all of them
//! sending their whole backlog at once, then all of them resending it whenever an ack is slow,
//! fill the broker's queue for the hub faster than the hub drains it, the broker drops what
//! overflows, and resends multiply the load (measured with `cargo xtask fleet`: 1,000 devices
//! with 1,000 records each made 18 million publishes and never drained). So, as TCP does:
//!
//! - **a congestion window** of unacknowledged records: it starts small, doubles with each
//!   round of acks (slow start) up to a threshold, then grows by one record per window of
//!   acks; a timeout halves the threshold and starts again from the small window;
//! - **a retransmission timeout from the measured round trip** (RFC 6298: smoothed time from
//!   sending a record to its ack, plus four times its variation, never below the configured
//!   `ack_timeout`): a hub working through a long queue acks late, and that is not a loss.
//!   Records sent again are not timed (Karn). Each timeout without progress doubles it (up to
//!   [`MAX_TIMEOUT`]); every timeout is drawn between itself and half as much again, so that
//!   devices that lost the hub together do not come back in step.

use std::time::{Duration, Instant};

/// The window a device starts with, and restarts from after a timeout (records).
pub const INITIAL_WINDOW: u64 = 16;
/// The largest window (records unacknowledged at once): bounds the memory a backlog takes.
pub const MAX_WINDOW: u64 = 2048;
/// The longest wait for an ack before resending, however many timeouts in a row.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// A jitter seed from a device's id: devices differ, a device is the same at every start.
pub fn seed(device: &str) -> u64 {
    device
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b.into()))
}

/// One device's delivery state.
#[derive(Debug, Clone)]
pub struct Flow {
    acked: u64,
    cursor: u64,
    /// Congestion window, in records (fractional growth in congestion avoidance).
    window: f64,
    /// Slow-start threshold.
    threshold: f64,
    base_timeout: Duration,
    timeout: Duration,
    /// Smoothed round trip and its variation, once one was measured.
    srtt: Option<(Duration, Duration)>,
    /// The record being timed (sent for the first time) and when.
    timing: Option<(u64, Instant)>,
    /// Records below this were sent at least once.
    sent_below: u64,
    last_progress: Instant,
    rng: u64,
    resends: u64,
}

impl Flow {
    /// A flow whose hub has acknowledged `acked` records; `ack_timeout` is the wait after
    /// progress; `seed` varies the jitter between devices ([`seed`] of the device's id).
    pub fn new(acked: u64, ack_timeout: Duration, now: Instant, seed: u64) -> Flow {
        let mut f = Flow {
            acked,
            cursor: acked,
            window: INITIAL_WINDOW as f64,
            threshold: MAX_WINDOW as f64,
            base_timeout: ack_timeout,
            timeout: ack_timeout,
            srtt: None,
            timing: None,
            sent_below: acked,
            last_progress: now,
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            resends: 0,
        };
        f.timeout = f.jittered(ack_timeout);
        f
    }

    /// Records acknowledged by the hub (the watermark).
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The next record to send.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Records that may be unacknowledged at once, now.
    pub fn window(&self) -> u64 {
        (self.window as u64).clamp(1, MAX_WINDOW)
    }

    /// The current wait for an ack before resending.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Timeouts so far (each one a resend from the watermark).
    pub fn resends(&self) -> u64 {
        self.resends
    }

    /// A (re)connection: whatever the broker or the client kept or dropped, everything above
    /// the watermark is sent again. The window and the timeout carry on: a reconnection says
    /// nothing about the hub's pace.
    pub fn connected(&mut self, now: Instant) {
        self.cursor = self.acked;
        self.last_progress = now;
        // What was being timed is sent again: its ack would time both sends.
        self.timing = None;
    }

    /// An ack for `count` records (already checked: the device's own, not beyond its log).
    /// Returns how many records it newly acknowledges.
    pub fn ack(&mut self, count: u64, now: Instant) -> u64 {
        if count <= self.acked {
            return 0;
        }
        let newly = count - self.acked;
        self.acked = count;
        self.cursor = self.cursor.max(count);
        self.sent_below = self.sent_below.max(count);
        self.last_progress = now;
        let mut sampled = false;
        if let Some((seq, at)) = self.timing
            && seq < count
        {
            self.timing = None;
            sampled = true;
            let r = now.duration_since(at);
            self.srtt = Some(match self.srtt {
                None => (r, r / 2),
                Some((srtt, var)) => {
                    let diff = srtt.abs_diff(r);
                    (
                        srtt.mul_f64(0.875) + r.mul_f64(0.125),
                        var.mul_f64(0.75) + diff.mul_f64(0.25),
                    )
                }
            });
        }
        // A new measurement sets the timeout; without one (what was acked had been sent
        // again), a backed-off timeout stays until a record sent once is acked (Karn).
        if let Some((srtt, var)) = sampled.then_some(self.srtt).flatten() {
            let rto = srtt + (var * 4).max(srtt / 2);
            self.timeout = self.jittered(rto.max(self.base_timeout));
        }
        if self.window < self.threshold {
            self.window = (self.window + newly as f64).min(self.threshold);
        } else {
            self.window += newly as f64 / self.window;
        }
        self.window = self.window.min(MAX_WINDOW as f64);
        newly
    }

    /// The record to send next, if the log (of `size` records) has one and the window allows.
    pub fn next(&self, size: u64) -> Option<u64> {
        (self.cursor < size && self.cursor - self.acked < self.window()).then_some(self.cursor)
    }

    /// The record [`Flow::next`] gave was handed to the client. The first one in flight starts
    /// the wait for an ack.
    pub fn sent(&mut self, now: Instant) {
        if self.cursor == self.acked {
            self.last_progress = now;
        }
        if self.cursor >= self.sent_below {
            // A first send: time it if nothing else is being timed.
            if self.timing.is_none() {
                self.timing = Some((self.cursor, now));
            }
            self.sent_below = self.cursor + 1;
        }
        self.cursor += 1;
    }

    /// The smoothed round trip from sending a record to its ack, once one was measured.
    pub fn round_trip(&self) -> Option<Duration> {
        self.srtt.map(|(s, _)| s)
    }

    /// Time passes: with records in flight and no progress for the timeout since the last ack
    /// or the first record sent, go back to the watermark (returns true: resend), halve the
    /// threshold, restart from the small window and double the timeout.
    pub fn tick(&mut self, now: Instant) -> bool {
        if self.cursor == self.acked {
            // Nothing in flight: nothing is late.
            return false;
        }
        if now.duration_since(self.last_progress) < self.timeout {
            return false;
        }
        self.resends += 1;
        self.cursor = self.acked;
        // What is sent again is not timed: its ack could be for either send.
        self.timing = None;
        self.threshold = (self.window / 2.0).max(INITIAL_WINDOW as f64);
        self.window = INITIAL_WINDOW as f64;
        let doubled = self.timeout.saturating_mul(2).min(MAX_TIMEOUT);
        self.timeout = self.jittered(doubled);
        self.last_progress = now;
        true
    }

    /// `d` to half as much again, at most [`MAX_TIMEOUT`]: never shorter than `d`.
    fn jittered(&mut self, d: Duration) -> Duration {
        // xorshift64: enough to spread devices apart, no dependency.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let f = 1.0 + (self.rng >> 11) as f64 / (1u64 << 53) as f64 * 0.5;
        d.mul_f64(f).min(MAX_TIMEOUT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> (Flow, Instant) {
        let t = Instant::now();
        (Flow::new(0, Duration::from_secs(3), t, 7), t)
    }

    fn send_all(f: &mut Flow, size: u64, t: Instant) -> u64 {
        let mut n = 0;
        while f.next(size).is_some() {
            f.sent(t);
            n += 1;
        }
        n
    }

    #[test]
    fn the_window_starts_small_and_doubles_per_round_of_acks() {
        let (mut f, t) = flow();
        assert_eq!(send_all(&mut f, 10_000, t), INITIAL_WINDOW);
        f.ack(16, t);
        assert_eq!(send_all(&mut f, 10_000, t), 32);
        f.ack(48, t);
        assert_eq!(f.window(), 64);
        // Never beyond the maximum, however long it goes well.
        for _ in 0..20 {
            send_all(&mut f, u64::MAX, t);
            let c = f.cursor();
            f.ack(c, t);
        }
        assert_eq!(f.window(), MAX_WINDOW);
        assert_eq!(f.resends(), 0);
    }

    #[test]
    fn a_timeout_resends_from_the_watermark_halves_and_backs_off() {
        let (mut f, t) = flow();
        for _ in 0..4 {
            send_all(&mut f, 10_000, t);
            let c = f.cursor();
            f.ack(c, t);
        }
        let before = f.window();
        assert_eq!(before, 256);
        send_all(&mut f, 10_000, t);
        let acked = f.acked();
        let first = f.timeout();
        assert!(first >= Duration::from_millis(3000) && first <= Duration::from_millis(4500));
        assert!(!f.tick(t + first - Duration::from_millis(1)));
        assert!(f.tick(t + first));
        assert_eq!(f.cursor(), acked, "resend from the watermark");
        assert_eq!(f.window(), INITIAL_WINDOW);
        // Slow start again up to half the old window, then one record per round.
        let second = f.timeout();
        assert!(second >= first * 2 && second <= first * 3, "{second:?}");
        let mut now = t + first;
        let mut timeouts = vec![first, second];
        for _ in 0..12 {
            send_all(&mut f, 10_000, now);
            now += f.timeout();
            assert!(f.tick(now));
            timeouts.push(f.timeout());
        }
        assert!(timeouts.iter().all(|d| *d <= MAX_TIMEOUT));
        assert_eq!(*timeouts.last().unwrap(), MAX_TIMEOUT);
        // Progress on records sent again: the backed-off timeout stays (their ack may be for
        // either send); once a record sent once is acked quickly, back to `ack_timeout`.
        send_all(&mut f, 10_000, now);
        let c = f.cursor();
        assert!(f.ack(c, now) > 0);
        assert_eq!(f.timeout(), MAX_TIMEOUT);
        // (Records up to 496 had been sent before the timeouts.)
        for _ in 0..30 {
            send_all(&mut f, 10_000, now);
            let c = f.cursor();
            now += Duration::from_millis(50);
            f.ack(c, now);
        }
        assert!(
            f.timeout() <= Duration::from_millis(4500),
            "{:?}",
            f.timeout()
        );
        assert_eq!(f.resends(), 13);
    }

    #[test]
    fn nothing_in_flight_is_never_late_and_a_reconnection_resends() {
        let (mut f, t) = flow();
        // Nothing to send for an hour: no timeout; then a record: its wait starts when sent.
        assert!(!f.tick(t + Duration::from_secs(3600)));
        let later = t + Duration::from_secs(3600);
        f.sent(later);
        assert!(!f.tick(later + Duration::from_secs(2)));
        assert!(f.tick(later + Duration::from_secs(5)));
        f.connected(later);
        send_all(&mut f, 5, t);
        assert_eq!(f.cursor(), 5);
        f.connected(t);
        assert_eq!(f.cursor(), 0);
        assert_eq!(send_all(&mut f, 5, t), 5);
        // An old or repeated ack changes nothing.
        assert_eq!(f.ack(3, t), 3);
        assert_eq!(f.ack(2, t), 0);
        assert_eq!(f.ack(3, t), 0);
        assert_eq!(f.acked(), 3);
    }

    #[test]
    fn a_slow_hub_lengthens_the_timeout_instead_of_causing_resends() {
        let (mut f, t) = flow();
        // Every ack comes 8 s after the records were sent (a hub working through a queue):
        // past the 3 s ack timeout at first, then never again.
        let mut now = t;
        let mut resends_late = 0;
        for round in 0..30 {
            send_all(&mut f, u64::MAX, now);
            let c = f.cursor();
            let acked_at = now + Duration::from_secs(8);
            // Time passes in steps of 100 ms until the ack comes.
            let mut s = now;
            while s < acked_at {
                s += Duration::from_millis(100);
                if f.tick(s) && round >= 5 {
                    resends_late += 1;
                }
            }
            // The hub acks everything it was sent (late, not lost).
            f.ack(c, acked_at);
            now = acked_at;
        }
        let rtt = f.round_trip().unwrap();
        assert!(rtt >= Duration::from_secs(7), "{rtt:?}");
        assert!(f.timeout() >= Duration::from_secs(6), "{:?}", f.timeout());
        assert_eq!(resends_late, 0, "resends once the round trip was learnt");
    }

    #[test]
    fn devices_with_different_seeds_time_out_at_different_moments() {
        let t = Instant::now();
        let mut seen: Vec<Duration> = (0..50)
            .map(|s| Flow::new(0, Duration::from_secs(10), t, s).timeout())
            .collect();
        seen.sort();
        seen.dedup();
        assert!(seen.len() > 40, "{seen:?}");
        assert!(
            seen.iter()
                .all(|d| d.as_secs_f64() >= 10.0 && d.as_secs_f64() <= 15.0)
        );
    }
}
