//! The device's retained status report (`docs/mqtt.md`, "Status"): what a technician and the
//! hub read to know whether a device is well. Typed and bounded: numbers, enums and ids only,
//! no free text, so it cannot carry a sample, an image or an error message quoting a stream.

use serde::{Deserialize, Serialize};

use crate::{OFFLINE, ONLINE, WireError, valid_level};

/// The status format's version.
pub const STATUS_VERSION: u8 = 1;
/// Largest status payload accepted (a report with the most pipelines is far below).
pub const MAX_STATUS_BYTES: usize = 8 * 1024;
/// Most pipelines one report may list.
pub const MAX_PIPELINES: usize = 16;

/// Whether the device's clock is disciplined (by NTP, GNSS...). Records are stamped with it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Clock {
    /// The kernel says the clock is synchronised.
    Synchronised,
    /// The kernel says it is not (no NTP server reached since boot, for example).
    Unsynchronised,
    /// The device cannot tell.
    Unknown,
}

/// Where a pipeline's input comes from (the `[pipeline.source] kind` of its configuration).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Replay,
    Camera,
    Microphone,
    Node,
    I2c,
}

/// What a pipeline's source is doing now.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceState {
    /// Not delivered anything yet (a camera's first frame, a model still loading).
    Starting,
    /// Delivering.
    Running,
    /// Lost (a camera child died, a stream stalled, an ALSA device vanished) and being
    /// restarted after a back-off.
    Restarting,
    /// A replay reached its end; nothing more will come.
    Ended,
}

/// One pipeline's counters since the agent started.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineStatus {
    /// The model id (the records' `model`).
    pub model: String,
    pub source: SourceKind,
    pub state: SourceState,
    /// The pipeline's aggregation window, in seconds (the hub's "silent for two windows").
    pub window_s: u32,
    /// Frames or audio chunks read from the source.
    pub captured: u64,
    /// Frames or chunks that went through the model.
    pub inferred: u64,
    /// Frames replaced by a newer one before the model took them, and audio overruns.
    pub dropped: u64,
    /// Times the source was restarted.
    pub restarts: u64,
    /// Inference time over the last frames, median and 99th percentile, in milliseconds
    /// (absent before the first).
    pub p50_ms: Option<f32>,
    pub p99_ms: Option<f32>,
}

/// The sensor node's link counters, when a pipeline reads one.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct NodeStatus {
    /// Frames that decoded.
    pub frames: u64,
    /// Frames dropped by the agent's decoder (bad COBS, CRC, version or schema).
    pub dropped: u64,
    /// Frames the node numbered but the agent never received.
    pub missed: u64,
    /// Sensor read errors the node reported.
    pub sensor_errors: u64,
}

/// The retained status report of a device.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Status {
    /// [`STATUS_VERSION`].
    pub v: u8,
    /// The agent's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// When the report was made, Unix milliseconds by the device's clock.
    pub at_ms: i64,
    /// Seconds since the agent started.
    pub uptime_s: u64,
    pub clock: Clock,
    /// The SoC's temperature, when the board exposes a thermal zone.
    pub cpu_temp_c: Option<f32>,
    /// One-minute load average.
    pub load1: Option<f32>,
    /// Free and total bytes of the file system holding the outbox.
    pub disk_free_bytes: Option<u64>,
    pub disk_total_bytes: Option<u64>,
    /// Records appended to the log but not yet acknowledged by the hub.
    pub outbox_depth: u64,
    /// Age of the oldest of those, in seconds (absent when there is none).
    pub oldest_unacked_s: Option<u64>,
    pub pipelines: Vec<PipelineStatus>,
    pub node: Option<NodeStatus>,
}

/// What a status topic carries.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusPayload {
    /// The last will, or an orderly stop.
    Offline,
    /// The bare `online` of agents before the status report (still accepted).
    Online,
    Report(Box<Status>),
}

impl Status {
    /// The payload: compact JSON.
    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a status serialises")
    }

    /// Checks the bounds that the types do not: ids, finite numbers, counts.
    pub fn validate(&self) -> Result<(), String> {
        if self.v != STATUS_VERSION {
            return Err(format!(
                "version {} (this hub reads {STATUS_VERSION})",
                self.v
            ));
        }
        if self.version.is_empty()
            || self.version.len() > 32
            || !self
                .version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
        {
            return Err("`version` must be 1-32 of A-Za-z0-9.-+".into());
        }
        if self.pipelines.len() > MAX_PIPELINES {
            return Err(format!("more than {MAX_PIPELINES} pipelines"));
        }
        let finite = |name: &str, v: Option<f32>, lo: f32, hi: f32| match v {
            Some(x) if !(x.is_finite() && (lo..=hi).contains(&x)) => {
                Err(format!("`{name}` = {x} is outside {lo}..={hi}"))
            }
            _ => Ok(()),
        };
        finite("cpu_temp_c", self.cpu_temp_c, -100.0, 250.0)?;
        finite("load1", self.load1, 0.0, 1e6)?;
        if let (Some(free), Some(total)) = (self.disk_free_bytes, self.disk_total_bytes)
            && free > total
        {
            return Err("`disk_free_bytes` exceeds `disk_total_bytes`".into());
        }
        for (i, p) in self.pipelines.iter().enumerate() {
            if !valid_level(&p.model) {
                return Err(format!("pipelines[{i}].model is not a model id"));
            }
            finite("p50_ms", p.p50_ms, 0.0, 1e9).map_err(|e| format!("pipelines[{i}]: {e}"))?;
            finite("p99_ms", p.p99_ms, 0.0, 1e9).map_err(|e| format!("pipelines[{i}]: {e}"))?;
        }
        Ok(())
    }
}

/// Parses a status payload: `offline`, `online`, or a report that parses strictly (no unknown
/// or duplicate field) and passes [`Status::validate`].
pub fn parse_status(payload: &[u8]) -> Result<StatusPayload, WireError> {
    match payload {
        OFFLINE => return Ok(StatusPayload::Offline),
        ONLINE => return Ok(StatusPayload::Online),
        _ => {}
    }
    if payload.len() > MAX_STATUS_BYTES {
        return Err(WireError::Status(format!(
            "{} bytes (at most {MAX_STATUS_BYTES})",
            payload.len()
        )));
    }
    let s: Status =
        serde_json::from_slice(payload).map_err(|e| WireError::Status(e.to_string()))?;
    s.validate().map_err(WireError::Status)?;
    Ok(StatusPayload::Report(Box::new(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> Status {
        Status {
            v: STATUS_VERSION,
            version: "0.1.0".into(),
            at_ms: 1_780_000_000_000,
            uptime_s: 3600,
            clock: Clock::Synchronised,
            cpu_temp_c: Some(51.5),
            load1: Some(0.7),
            disk_free_bytes: Some(1 << 30),
            disk_total_bytes: Some(8 << 30),
            outbox_depth: 3,
            oldest_unacked_s: Some(12),
            pipelines: vec![PipelineStatus {
                model: "centerface-int8".into(),
                source: SourceKind::Camera,
                state: SourceState::Running,
                window_s: 60,
                captured: 1000,
                inferred: 980,
                dropped: 20,
                restarts: 1,
                p50_ms: Some(5.3),
                p99_ms: Some(9.1),
            }],
            node: Some(NodeStatus::default()),
        }
    }

    #[test]
    fn a_report_round_trips() {
        let s = sample();
        let p = s.to_payload();
        assert_eq!(
            parse_status(&p).unwrap(),
            StatusPayload::Report(Box::new(s))
        );
        assert_eq!(parse_status(b"offline").unwrap(), StatusPayload::Offline);
        assert_eq!(parse_status(b"online").unwrap(), StatusPayload::Online);
    }

    #[test]
    fn reports_that_could_carry_anything_else_are_refused() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_payload()).unwrap();
        v["note"] = "a free text field".into();
        let extra = serde_json::to_vec(&v).unwrap();
        assert!(parse_status(&extra).is_err(), "unknown field");

        let p = String::from_utf8(sample().to_payload()).unwrap();
        let dup = p.replacen("\"v\":1,", "\"v\":1,\"v\":1,", 1);
        assert!(parse_status(dup.as_bytes()).is_err(), "duplicate field");

        let mut s = sample();
        s.pipelines[0].model = "a/b".into();
        assert!(parse_status(&s.to_payload()).is_err(), "model id");
        let mut s = sample();
        s.version = "x".repeat(33);
        assert!(parse_status(&s.to_payload()).is_err(), "long version");
        let mut s = sample();
        s.pipelines = vec![s.pipelines[0].clone(); MAX_PIPELINES + 1];
        assert!(parse_status(&s.to_payload()).is_err(), "too many pipelines");
        let mut s = sample();
        s.v = 2;
        assert!(parse_status(&s.to_payload()).is_err(), "version");
        let mut s = sample();
        s.disk_free_bytes = Some(9 << 30);
        assert!(parse_status(&s.to_payload()).is_err(), "free > total");
        let p = String::from_utf8(sample().to_payload()).unwrap();
        let nan = p.replace("\"load1\":0.7", "\"load1\":-1.0");
        assert!(parse_status(nan.as_bytes()).is_err(), "negative load");
        assert!(
            parse_status(&vec![b' '; MAX_STATUS_BYTES + 1]).is_err(),
            "size"
        );
        assert!(parse_status(b"frame 12: 3 faces").is_err());
    }
}
