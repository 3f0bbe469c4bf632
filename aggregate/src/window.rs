//! Fixed windows on the monotonic clock. Wall time is only a label: it is anchored once, and a
//! reading that departs from the monotonic clock by more than [`JUMP_MS`] is a clock jump,
//! flagged in the window's record and re-anchored, never merged silently.

/// A wall-clock reading further than this from what the monotonic clock predicts is a jump.
pub const JUMP_MS: i64 = 2_000;

/// One reading of both clocks (milliseconds): monotonic since an arbitrary origin, and wall
/// time since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instant {
    pub mono_ms: u64,
    pub wall_ms: i64,
}

/// The bounds of one window, as published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLabel {
    /// Window number on the monotonic clock since the aggregator started.
    pub index: u64,
    /// Wall-clock label of the window's start (Unix ms), from the anchor in force then.
    pub start_wall_ms: i64,
    pub length_ms: u64,
    /// Sum of the clock jumps seen during the window (0: none).
    pub clock_jump_ms: i64,
    /// How many jumps (a jump there and back sums to ~0 but is still counted).
    pub clock_jumps: u32,
}

/// Assigns monotonic instants to windows and labels them with wall time.
#[derive(Debug, Clone)]
pub struct Windows {
    length_ms: u64,
    /// Monotonic time of window 0's start (negative when the clock started less than a window
    /// ago).
    origin_mono: i64,
    anchor: Instant,
    current: u64,
    jump_ms: i64,
    jumps: u32,
}

impl Windows {
    /// Windows of `length_ms`, aligned so that, by the wall clock read at `start`, they begin
    /// on multiples of the length (a 15-minute window starts at :00, :15...). The first window
    /// is therefore usually partial.
    pub fn new(length_ms: u64, start: Instant) -> Windows {
        assert!(length_ms > 0, "window length is validated by the caller");
        let into = start.wall_ms.rem_euclid(length_ms as i64);
        let origin_mono = start.mono_ms as i64 - into;
        Windows {
            length_ms,
            origin_mono,
            anchor: start,
            current: 0,
            jump_ms: 0,
            jumps: 0,
        }
    }

    pub fn length_ms(&self) -> u64 {
        self.length_ms
    }

    /// Index of the window holding a monotonic instant.
    pub fn index_of(&self, mono_ms: u64) -> u64 {
        ((mono_ms as i64 - self.origin_mono).max(0) as u64) / self.length_ms
    }

    /// Monotonic bounds `[start, end)` of window `index` (the start may be negative for
    /// window 0).
    pub fn bounds(&self, index: u64) -> (i64, i64) {
        let start = self.origin_mono + (index * self.length_ms) as i64;
        (start, start + self.length_ms as i64)
    }

    pub fn current(&self) -> u64 {
        self.current
    }

    /// Wall label of a monotonic instant under the current anchor.
    pub fn wall_at(&self, mono_ms: i64) -> i64 {
        self.anchor.wall_ms + (mono_ms - self.anchor.mono_ms as i64)
    }

    /// Takes a reading. Returns the labels of the windows that closed before it (oldest first;
    /// windows with no reading at all are included: a silent window is still a window).
    /// A reading that goes back on the monotonic clock is treated as the current instant.
    pub fn advance(&mut self, now: Instant) -> Vec<WindowLabel> {
        let index = self.index_of(now.mono_ms).max(self.current);
        let mut closed = Vec::new();
        while self.current < index {
            closed.push(self.label(self.current));
            self.current += 1;
            self.jump_ms = 0;
            self.jumps = 0;
        }
        let drift = now.wall_ms - self.wall_at(now.mono_ms as i64);
        if drift.abs() > JUMP_MS {
            self.jump_ms += drift;
            self.jumps += 1;
            self.anchor = now;
        }
        closed
    }

    /// The label of the current window, to close it early (end of a replay, shutdown).
    pub fn close_current(&mut self) -> WindowLabel {
        let l = self.label(self.current);
        self.current += 1;
        self.jump_ms = 0;
        self.jumps = 0;
        l
    }

    fn label(&self, index: u64) -> WindowLabel {
        WindowLabel {
            index,
            start_wall_ms: self.wall_at(self.bounds(index).0),
            length_ms: self.length_ms,
            clock_jump_ms: self.jump_ms,
            clock_jumps: self.jumps,
        }
    }
}

/// RFC 3339 UTC with milliseconds (`2026-11-30T10:15:00.000Z`), from Unix milliseconds.
///
/// Always three fractional digits and `Z`: the label is part of signed records
/// (docs/record-format.md). A time outside years -9999..=9999 (a wildly wrong wall clock) is
/// clamped to the nearest end of that range.
pub fn rfc3339(unix_ms: i64) -> String {
    // Civil time in UTC: its range holds every four-digit year, whole (a `Timestamp` stops a
    // day short of either end, to leave room for offsets).
    const EPOCH: jiff::civil::DateTime = jiff::civil::datetime(1970, 1, 1, 0, 0, 0, 0);
    let t = EPOCH
        .checked_add(jiff::SignedDuration::from_millis(unix_ms))
        .unwrap_or(if unix_ms < 0 {
            jiff::civil::DateTime::MIN
        } else {
            jiff::civil::DateTime::MAX
        });
    format!("{t:.3}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_796_038_500_000; // 2026-11-30T11:35:00Z

    fn at(mono_ms: u64, wall_ms: i64) -> Instant {
        Instant { mono_ms, wall_ms }
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(T0 + 1), "2026-11-30T11:35:00.001Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(-62_167_219_200_000), "0000-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        // A wall clock out of any sensible range is clamped, not a panic.
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert!(rfc3339(i64::MIN).starts_with("-009999-01-01T00:00:00.000"));
    }

    #[test]
    fn windows_align_on_wall_multiples_and_close_in_order() {
        // Start 2 minutes into a 5-minute window.
        let mut w = Windows::new(300_000, at(1_000, T0 + 120_000));
        assert_eq!(w.advance(at(100_000, T0 + 219_000)), vec![]);
        // 12 minutes later: windows 0 and 1 closed, including the empty one.
        let closed = w.advance(at(1_000 + 720_000, T0 + 840_000));
        assert_eq!(
            closed.iter().map(|l| l.index).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert_eq!(closed[0].start_wall_ms, T0);
        assert_eq!(rfc3339(closed[1].start_wall_ms), "2026-11-30T11:40:00.000Z");
        assert!(closed.iter().all(|l| l.clock_jumps == 0));
    }

    #[test]
    fn a_clock_jump_is_flagged_in_its_window_only() {
        let mut w = Windows::new(60_000, at(0, T0));
        w.advance(at(10_000, T0 + 10_000));
        // NTP steps the clock 1 hour back at 20 s.
        w.advance(at(20_000, T0 + 20_000 - 3_600_000));
        // A 1.5 s drift is not a jump.
        w.advance(at(30_000, T0 + 30_000 - 3_600_000 + 1_500));
        let closed = w.advance(at(70_000, T0 + 70_000 - 3_600_000));
        assert_eq!(closed.len(), 1);
        assert_eq!(
            (closed[0].clock_jumps, closed[0].clock_jump_ms),
            (1, -3_600_000)
        );
        let next = w.close_current();
        assert_eq!((next.clock_jumps, next.clock_jump_ms), (0, 0));
        // The next label follows the new anchor.
        assert_eq!(next.start_wall_ms, T0 + 60_000 - 3_600_000);
    }

    #[test]
    fn rtc_reset_to_1970_is_a_jump_not_a_malformed_window() {
        let mut w = Windows::new(60_000, at(0, T0));
        w.advance(at(5_000, 5_000));
        let l = w.close_current();
        assert_eq!(l.clock_jumps, 1);
        assert_eq!(l.clock_jump_ms, 5_000 - (T0 + 5_000));
        assert_eq!(l.index, 0);
    }

    #[test]
    fn monotonic_going_back_stays_in_the_current_window() {
        let mut w = Windows::new(60_000, at(100_000, T0));
        w.advance(at(190_000, T0 + 90_000));
        assert_eq!(w.advance(at(50_000, T0 + 90_500)), vec![]);
        assert_eq!(w.current(), 1);
    }
}
