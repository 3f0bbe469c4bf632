//! The device's status report (`docs/mqtt.md`, "Status report"): the pipelines' counters and
//! inference times, and what the board says of itself (temperature, load, disk, clock), read
//! from `/sys` and `/proc` and the kernel's NTP state. Numbers only.

use std::path::Path;
use std::sync::Arc;

use hub_link::{Clock, NodeStatus, STATUS_VERSION, Status};

use crate::health::PipelineHealth;
use crate::publish::Shared;

/// Builds reports for one running agent.
pub struct Reporter {
    started: std::time::Instant,
    health: Vec<Arc<PipelineHealth>>,
    data_dir: std::path::PathBuf,
    /// The oldest unacknowledged record's end, cached by its seq (reading it takes the log).
    oldest: std::sync::Mutex<Option<(u64, Option<i64>)>>,
}

impl Reporter {
    pub fn new(health: &[Arc<PipelineHealth>], data_dir: &Path) -> Reporter {
        Reporter {
            started: std::time::Instant::now(),
            health: health.to_vec(),
            data_dir: data_dir.to_owned(),
            oldest: std::sync::Mutex::new(None),
        }
    }

    /// The report now.
    pub fn report(&self, shared: &Shared) -> Status {
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let (acked, size, oldest_end_ms) = {
            let o = shared.lock();
            let (acked, size) = (o.log().acked(), o.log().size());
            let mut cache = self.oldest.lock().unwrap_or_else(|p| p.into_inner());
            let end = match *cache {
                Some((seq, end)) if seq == acked => end,
                _ if acked >= size => None,
                _ => {
                    let end = o
                        .log()
                        .read(acked)
                        .ok()
                        .and_then(|mut r| r.next())
                        .and_then(Result::ok)
                        .and_then(|record| window_end_ms(&record.entry));
                    *cache = Some((acked, end));
                    end
                }
            };
            (acked, size, end)
        };
        let depth = size.saturating_sub(acked);
        let (free, total) = disk(&self.data_dir).unzip();
        let node = self
            .health
            .iter()
            .filter_map(|h| h.node())
            .reduce(|a, b| NodeStatus {
                frames: a.frames + b.frames,
                dropped: a.dropped + b.dropped,
                missed: a.missed + b.missed,
                sensor_errors: a.sensor_errors + b.sensor_errors,
            });
        Status {
            v: STATUS_VERSION,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            at_ms: now_ms,
            uptime_s: self.started.elapsed().as_secs(),
            clock: clock_state(),
            cpu_temp_c: cpu_temperature(),
            load1: load1(),
            disk_free_bytes: free,
            disk_total_bytes: total,
            outbox_depth: depth,
            oldest_unacked_s: match (depth, oldest_end_ms) {
                (0, _) => None,
                (_, Some(end)) => Some((now_ms - end).max(0) as u64 / 1000),
                (_, None) => None,
            },
            pipelines: self.health.iter().map(|h| h.status()).collect(),
            node,
        }
    }
}

/// When the window of a record (its canonical entry) ended, Unix ms.
fn window_end_ms(entry: &[u8]) -> Option<i64> {
    let view: aggregate::RecordView = serde_json::from_slice(entry).ok()?;
    let start: jiff::Timestamp = view.window.start.parse().ok()?;
    Some(start.as_millisecond() + view.window.length_ms as i64)
}

/// The kernel's NTP state: `adjtimex` answers TIME_ERROR while the clock is unsynchronised.
fn clock_state() -> Clock {
    // SAFETY: timex is plain integers, for which all-zero bytes are a valid value.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: with `modes` = 0 adjtimex only reads the kernel's state into the struct we own.
    let state = unsafe { libc::adjtimex(&mut tx) };
    match state {
        -1 => Clock::Unknown,
        libc::TIME_ERROR => Clock::Unsynchronised,
        _ if tx.status & libc::STA_UNSYNC != 0 => Clock::Unsynchronised,
        _ => Clock::Synchronised,
    }
}

/// The hottest CPU thermal zone, in °C (boards without one: `None`).
fn cpu_temperature() -> Option<f32> {
    let zones = std::fs::read_dir("/sys/class/thermal").ok()?;
    zones
        .filter_map(|z| z.ok())
        .filter(|z| z.file_name().to_string_lossy().starts_with("thermal_zone"))
        .filter_map(|z| {
            let milli: i64 = std::fs::read_to_string(z.path().join("temp"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let c = milli as f32 / 1000.0;
            (-100.0..=250.0).contains(&c).then_some(c)
        })
        .reduce(f32::max)
}

fn load1() -> Option<f32> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let l: f32 = s.split_whitespace().next()?.parse().ok()?;
    (l.is_finite() && l >= 0.0).then_some(l)
}

/// Free (to an unprivileged writer) and total bytes of the file system holding `dir`.
fn disk(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain integers, for which all-zero bytes are a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: the path is NUL-terminated and outlives the call; statvfs writes into `st`.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frag = st.f_frsize as u64;
    let total = (st.f_blocks as u64).saturating_mul(frag);
    let free = (st.f_bavail as u64).saturating_mul(frag).min(total);
    Some((free, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_board_readings_are_plausible_here() {
        let (free, total) = disk(Path::new("/")).expect("statvfs of /");
        assert!(total > 0 && free <= total);
        assert!(load1().is_some_and(|l| l >= 0.0));
        // Whatever the machine's NTP state, adjtimex answers.
        assert_ne!(clock_state(), Clock::Unknown);
    }
}
