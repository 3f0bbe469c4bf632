//! The agent's configuration file (TOML), validated once into [`Config`]: device identity,
//! where the audit log lives, and one pipeline per model (source, window, aggregates, privacy
//! rules). Errors name the file and the field.

use std::path::{Path, PathBuf};

use aggregate::{Kind, Labels, RawRules, Rules};
use serde::Deserialize;

use modelcard::Card;

use crate::sources::camera::{CameraInput, CameraSettings};

/// A config that failed to load: the file, the field at fault and what to fix.
pub type ConfigError = modelcard::FileError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    device: String,
    territory: String,
    data_dir: String,
    key: String,
    #[serde(default)]
    checkpoint: Option<RawCheckpoint>,
    #[serde(default)]
    outbox: Option<RawOutbox>,
    #[serde(default)]
    mqtt: Option<RawMqtt>,
    pipeline: Vec<RawPipeline>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    host: String,
    port: u16,
    /// The hub's verifier key file (`hub keygen`): acks that do not verify with it are ignored.
    hub_key: String,
    #[serde(default)]
    keep_alive: Option<String>,
    #[serde(default)]
    ack_timeout: Option<String>,
    #[serde(default)]
    drain_timeout: Option<String>,
    #[serde(default)]
    status_interval: Option<String>,
    #[serde(default)]
    tls: Option<RawTls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: String,
    cert: String,
    key: String,
}

/// Where records are published, and how delivery is paced.
#[derive(Debug, Clone)]
pub struct Mqtt {
    pub host: String,
    pub port: u16,
    pub hub_key: PathBuf,
    pub keep_alive: std::time::Duration,
    /// Without progress of the hub's acknowledgement for this long, everything above it is
    /// sent again.
    pub ack_timeout: std::time::Duration,
    /// After the pipelines end, how long `run` waits for the hub to acknowledge the rest.
    pub drain_timeout: std::time::Duration,
    /// How often the retained status report is published (also on each connection).
    pub status_interval: std::time::Duration,
    pub tls: Option<hub_link::tls::TlsFiles>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheckpoint {
    every_records: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutbox {
    max_bytes: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    name: String,
    model: String,
    aggregates: Vec<String>,
    window: String,
    #[serde(default)]
    threshold: Option<f32>,
    /// The classes published, a subset of the card's (a detector's).
    #[serde(default)]
    classes: Option<Vec<String>>,
    /// Counting lines (`[[pipeline.line]]`), for `line_count`.
    #[serde(default, rename = "line")]
    lines: Vec<RawLine>,
    /// Counting zones (`[[pipeline.zone]]`), for `line_count` too.
    #[serde(default, rename = "zone")]
    zones: Vec<RawZone>,
    source: RawSource,
    privacy: RawRules,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    name: String,
    points: Vec<[f64; 2]>,
    #[serde(default)]
    classes: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine {
    name: String,
    from: [f64; 2],
    to: [f64; 2],
    #[serde(rename = "in")]
    in_side: String,
    #[serde(default)]
    classes: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    kind: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    input: Option<String>,
    #[serde(default)]
    width: Option<u32>,
    #[serde(default)]
    height: Option<u32>,
    #[serde(default)]
    stall_timeout: Option<String>,
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    baud: Option<u32>,
    #[serde(default)]
    address: Option<i64>,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    speed: Option<toml::Value>,
    #[serde(default)]
    fps: Option<f64>,
    #[serde(default)]
    repeat: Option<u32>,
    #[serde(default)]
    start: Option<String>,
}

/// How fast a replay runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// As fast as the model runs, on a virtual clock driven by the data's own timing.
    Accelerated,
    /// At the data's rate times this factor, on the real clocks.
    Realtime(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A WAV file, or an image file or folder of images, replayed.
    Replay {
        path: PathBuf,
        speed: Speed,
        /// Frames per second for images.
        fps: f64,
        repeat: u32,
        /// Wall-clock time at the start of an accelerated replay (Unix ms); default: now.
        start_wall_ms: Option<i64>,
    },
    /// A live camera, through a child process writing raw frames to a pipe.
    Camera(CameraSettings),
    /// An ALSA capture device.
    Microphone(MicSettings),
    /// The sensor node over its serial link.
    Node(NodeSettings),
    /// A BME280 on the board's own I2C bus.
    I2c(I2cSettings),
}

/// Where the sensor node's byte stream comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeInput {
    /// A serial device (`/dev/ttyACM0`, `/dev/serial/by-id/...`), 8N1 at `baud`.
    Serial { path: String, baud: u32 },
    /// A serial line served over TCP (`tcp:HOST:PORT`: ser2net, QEMU's `-serial tcp:`).
    Tcp(String),
}

/// A node source's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSettings {
    pub input: NodeInput,
    /// Without a frame for this long, the link is reopened.
    pub stall_timeout: std::time::Duration,
}

/// An I2C source's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct I2cSettings {
    /// The bus device, `/dev/i2c-N`.
    pub bus: String,
    pub address: u8,
    /// Time between two measurements.
    pub interval: std::time::Duration,
}

/// A microphone source's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MicSettings {
    /// The ALSA PCM name (`default`, `plughw:1,0`, a name from an asoundrc).
    pub input: String,
    /// Without a sample for this long, the device is reopened.
    pub stall_timeout: std::time::Duration,
    /// Capture this much audio, then end (like `arecord -d`); default: until stopped.
    pub duration: Option<std::time::Duration>,
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub card: Card,
    pub kinds: Vec<Kind>,
    /// The closed set of names its records may hold: its classes and its lines' names.
    pub labels: Labels,
    /// The classes it publishes: the card's published labels, or the subset the config names.
    pub classes: Vec<String>,
    /// Counting lines, in frame pixels; their classes index `classes`.
    pub lines: Vec<counting::Line>,
    pub window_ms: u64,
    pub threshold: f32,
    pub source: Source,
    pub rules: Rules,
    /// Where the pipeline's spent privacy budget is kept (`crate::budget`).
    pub budget_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub device: String,
    pub territory: String,
    pub data_dir: PathBuf,
    pub key: PathBuf,
    pub checkpoint_every: u64,
    pub outbox_max_bytes: Option<u64>,
    pub mqtt: Option<Mqtt>,
    pub pipelines: Vec<Pipeline>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::parse(path, &modelcard::file::read(path, "config")?)
    }

    /// Validates config text; relative paths are resolved against the config file's folder.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = modelcard::file::parse(path, text)?;
        let err = |field: String, message: String| ConfigError::field(path, field, message);
        let base = path.parent().unwrap_or(Path::new("."));
        for (field, v) in [("device", &raw.device), ("territory", &raw.territory)] {
            // Both are MQTT topic levels: no wildcards, separators or empty names.
            if v.is_empty()
                || v.len() > 64
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            {
                return Err(err(
                    field.into(),
                    "1 to 64 characters among letters, digits, '-', '_' and '.'".into(),
                ));
            }
        }
        let checkpoint_every = raw.checkpoint.map_or(16, |c| c.every_records);
        if checkpoint_every == 0 {
            return Err(err(
                "checkpoint.every_records".into(),
                "must be at least 1".into(),
            ));
        }
        let outbox_max_bytes = raw.outbox.map(|o| o.max_bytes);
        if outbox_max_bytes.is_some_and(|b| b < 64 * 1024) {
            return Err(err(
                "outbox.max_bytes".into(),
                "must be at least 65536".into(),
            ));
        }
        let mqtt = match &raw.mqtt {
            None => None,
            Some(m) => {
                let dur = |name: &str, v: &Option<String>, default_ms: u64| match v {
                    None => Ok(std::time::Duration::from_millis(default_ms)),
                    Some(s) => parse_duration_ms(s)
                        .filter(|&ms| ms >= 100)
                        .map(std::time::Duration::from_millis)
                        .ok_or_else(|| {
                            err(
                                format!("mqtt.{name}"),
                                format!("`{s}` is not a duration of at least 100ms"),
                            )
                        }),
                };
                Some(Mqtt {
                    host: m.host.clone(),
                    port: m.port,
                    hub_key: base.join(&m.hub_key),
                    keep_alive: dur("keep_alive", &m.keep_alive, 5_000)?,
                    ack_timeout: dur("ack_timeout", &m.ack_timeout, 3_000)?,
                    drain_timeout: dur("drain_timeout", &m.drain_timeout, 30_000)?,
                    status_interval: dur("status_interval", &m.status_interval, 60_000)?,
                    tls: m.tls.as_ref().map(|t| hub_link::tls::TlsFiles {
                        ca: base.join(&t.ca),
                        cert: base.join(&t.cert),
                        key: base.join(&t.key),
                    }),
                })
            }
        };
        if raw.pipeline.is_empty() {
            return Err(err(
                "pipeline".into(),
                "configure at least one [[pipeline]]".into(),
            ));
        }
        let mut pipelines = Vec::new();
        for (i, p) in raw.pipeline.into_iter().enumerate() {
            let f = |name: &str| format!("pipeline[{i}].{name}");
            if p.name.is_empty() || pipelines.iter().any(|q: &Pipeline| q.name == p.name) {
                return Err(err(f("name"), "must be non-empty and unique".into()));
            }
            let card_path = base.join(&p.model);
            let card = Card::load(&card_path).map_err(|e| err(f("model"), e.to_string()))?;
            if p.aggregates.is_empty() {
                return Err(err(
                    f("aggregates"),
                    "ask for at least one aggregate".into(),
                ));
            }
            let published = crate::pipeline::observed_labels(&card);
            let classes = match &p.classes {
                None => published,
                Some(cs) => {
                    if cs.is_empty() {
                        return Err(err(f("classes"), "name at least one class (or leave `classes` out for all of the card's)".into()));
                    }
                    for (j, c) in cs.iter().enumerate() {
                        if !published.contains(c) || cs[..j].contains(c) {
                            return Err(err(
                                format!("pipeline[{i}].classes[{j}]"),
                                format!(
                                    "`{c}` is not one of the classes model card {} publishes ({}), or is named twice",
                                    card.path.display(),
                                    published.join(", ")
                                ),
                            ));
                        }
                    }
                    cs.clone()
                }
            };
            let mut lines = lines(&p.lines, &classes, &|field, msg| {
                err(format!("pipeline[{i}].line{field}"), msg)
            })?;
            for (j, z) in p.zones.iter().enumerate() {
                let f = |name: &str| format!("pipeline[{i}].zone[{j}].{name}");
                let taken: Vec<&str> = lines.iter().map(|l| l.name.as_str()).collect();
                check_name(&z.name, &taken, &classes).map_err(|m| err(f("name"), m))?;
                let idx = class_indices(z.classes.as_deref(), &classes)
                    .map_err(|(k, m)| err(format!("pipeline[{i}].zone[{j}].classes{k}"), m))?;
                if z.points.iter().flatten().any(|v| *v < 0.0) {
                    return Err(err(
                        f("points"),
                        "points are in frame pixels, from the top-left corner: no negative values"
                            .into(),
                    ));
                }
                let points = z
                    .points
                    .iter()
                    .map(|v| [v[0] as f32, v[1] as f32])
                    .collect();
                lines.push(
                    counting::Line::zone(&z.name, points, idx)
                        .map_err(|e| err(f("points"), e.to_string()))?,
                );
            }
            let names = classes.iter().chain(lines.iter().map(|l| &l.name));
            let labels = Labels::new(names).map_err(|e| {
                err(
                    f("model"),
                    format!(
                        "model card {}: the names its records would hold (its classes and the lines'): {e}",
                        card.path.display()
                    ),
                )
            })?;
            let mut kinds = Vec::new();
            for (j, a) in p.aggregates.iter().enumerate() {
                let kind = Kind::parse(a).ok_or_else(|| {
                    err(
                        format!("pipeline[{i}].aggregates[{j}]"),
                        format!("unknown aggregate `{a}`"),
                    )
                })?;
                if !card.aggregates.iter().any(|c| c == a) {
                    return Err(err(
                        format!("pipeline[{i}].aggregates[{j}]"),
                        format!(
                            "model card {} does not allow `{a}` (it allows: {})",
                            card.path.display(),
                            card.aggregates.join(", ")
                        ),
                    ));
                }
                kinds.push(kind);
            }
            let counts_lines = kinds.contains(&Kind::LineCount);
            if counts_lines == lines.is_empty() {
                return Err(err(
                    if counts_lines {
                        f("line")
                    } else {
                        f("aggregates")
                    },
                    if counts_lines {
                        "aggregate `line_count` needs at least one [[pipeline.line]] or [[pipeline.zone]]".into()
                    } else {
                        "counting lines and zones are published by aggregate `line_count`: add it to `aggregates`".into()
                    },
                ));
            }
            let window_ms = parse_duration_ms(&p.window).ok_or_else(|| {
                err(
                    f("window"),
                    format!(
                        "`{}` is not a duration like \"30s\", \"1m\", \"15m\" or \"1h\"",
                        p.window
                    ),
                )
            })?;
            if !(1_000..=86_400_000).contains(&window_ms) {
                return Err(err(f("window"), "must be between 1s and 24h".into()));
            }
            let threshold = p.threshold.unwrap_or(0.5);
            if !(threshold > 0.0 && threshold < 1.0) {
                return Err(err(f("threshold"), "must be in (0, 1)".into()));
            }
            let rules = Rules::validate(&p.privacy, &kinds, window_ms)
                .map_err(|e| err(format!("pipeline[{i}].privacy.{}", e.field), e.message))?;
            let source = source(base, &p.source, &|name, msg| {
                err(format!("pipeline[{i}].source.{name}"), msg)
            })?;
            // A camera's frame size is known: a line or zone outside it could never count.
            if let Source::Camera(c) = &source {
                let (w, h) = (c.width as f32, c.height as f32);
                let zones_from = p.lines.len();
                for (j, l) in lines.iter().enumerate() {
                    if let Some(pt) = l.points().into_iter().find(|q| q[0] > w || q[1] > h) {
                        let field = if j < zones_from {
                            format!("pipeline[{i}].line[{j}]")
                        } else {
                            format!("pipeline[{i}].zone[{}]", j - zones_from)
                        };
                        return Err(err(
                            field,
                            format!(
                                "point [{}, {}] is outside the camera's {}x{} frame (points are frame pixels from the top-left corner)",
                                pt[0], pt[1], c.width, c.height
                            ),
                        ));
                    }
                }
            }
            // A sensor source reads levels by a documented method (a measurement card of the
            // same source); the other sources feed a network.
            let wanted = match &source {
                Source::Node(_) => Some(modelcard::MeasurementSource::Node),
                Source::I2c(_) => Some(modelcard::MeasurementSource::Bme280),
                _ => None,
            };
            let has = card.measurement.as_ref().map(|m| m.source);
            if wanted != has {
                return Err(err(
                    f("model"),
                    match (wanted, has) {
                        (Some(w), _) => format!(
                            "a `{}` source needs a measurement card of source `{}` (such as models/{}/card.toml); {} is not one",
                            p.source.kind,
                            w.name(),
                            if w == modelcard::MeasurementSource::Node {
                                "node-levels"
                            } else {
                                "bme280-environment"
                            },
                            card.path.display()
                        ),
                        (None, _) => format!(
                            "{} is a measurement card: it goes with a `node` or `i2c` source, not `{}`",
                            card.path.display(),
                            p.source.kind
                        ),
                    },
                ));
            }
            pipelines.push(Pipeline {
                budget_file: crate::budget::path(&base.join(&raw.data_dir), &p.name),
                name: p.name,
                card,
                kinds,
                labels,
                classes,
                lines,
                window_ms,
                threshold,
                source,
                rules,
            });
        }
        Ok(Config {
            path: path.to_owned(),
            device: raw.device,
            territory: raw.territory,
            data_dir: base.join(raw.data_dir),
            key: base.join(raw.key),
            checkpoint_every,
            outbox_max_bytes,
            mqtt,
            pipelines,
        })
    }
}

/// A line's or zone's name: label-safe, not taken by another line or zone, not a class.
fn check_name(name: &str, taken: &[&str], classes: &[String]) -> Result<(), String> {
    if aggregate::Labels::new([name]).is_err() {
        return Err("1 to 64 characters among letters, digits, `_`, `-` and `.`".into());
    }
    if taken.contains(&name) || classes.iter().any(|c| c == name) {
        return Err(format!(
            "`{name}` is already the name of another line or zone, or of a class"
        ));
    }
    Ok(())
}

/// The indices of a line's classes among the pipeline's (empty: all); on error, the field's
/// index suffix and the message.
fn class_indices(
    wanted: Option<&[String]>,
    classes: &[String],
) -> Result<Vec<usize>, (String, String)> {
    let Some(wanted) = wanted else {
        return Ok(Vec::new());
    };
    if wanted.is_empty() {
        return Err((
            String::new(),
            "name at least one class (or leave `classes` out for all)".into(),
        ));
    }
    let mut idx = Vec::new();
    for (k, c) in wanted.iter().enumerate() {
        match classes.iter().position(|x| x == c) {
            Some(n) if !idx.contains(&n) => idx.push(n),
            _ => {
                return Err((
                    format!("[{k}]"),
                    format!(
                        "`{c}` is not one of the pipeline's classes ({}), or is named twice",
                        classes.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(idx)
}

/// Validates the counting lines: label-safe, unique names distinct from the classes, two
/// distinct points, an "in" side, classes among the pipeline's.
fn lines(
    raw: &[RawLine],
    classes: &[String],
    err: &dyn Fn(String, String) -> ConfigError,
) -> Result<Vec<counting::Line>, ConfigError> {
    let mut out: Vec<counting::Line> = Vec::new();
    for (j, l) in raw.iter().enumerate() {
        let f = |name: &str| format!("[{j}].{name}");
        let taken: Vec<&str> = out.iter().map(|l| l.name.as_str()).collect();
        check_name(&l.name, &taken, classes).map_err(|m| err(f("name"), m))?;
        let in_side = match l.in_side.as_str() {
            "left" => counting::Side::Left,
            "right" => counting::Side::Right,
            other => {
                return Err(err(
                    f("in"),
                    format!(
                        "`{other}` is not a side: \"left\" or \"right\" (seen on the image, facing from `from` to `to`)"
                    ),
                ));
            }
        };
        let idx = class_indices(l.classes.as_deref(), classes)
            .map_err(|(k, m)| err(format!("[{j}].classes{k}"), m))?;
        if l.from.iter().chain(&l.to).any(|v| *v < 0.0) {
            return Err(err(
                f("from"),
                "points are in frame pixels, from the top-left corner: no negative values".into(),
            ));
        }
        let point = |v: [f64; 2]| [v[0] as f32, v[1] as f32];
        let line = counting::Line::new(&l.name, point(l.from), point(l.to), idx, in_side)
            .map_err(|e| err(f("to"), e.to_string()))?;
        out.push(line);
    }
    Ok(out)
}

fn source(
    base: &Path,
    raw: &RawSource,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Source, ConfigError> {
    // Each kind takes its own fields; one of another kind is a mistake worth naming.
    let fields = [
        ("path", raw.path.is_some()),
        ("speed", raw.speed.is_some()),
        ("repeat", raw.repeat.is_some()),
        ("start", raw.start.is_some()),
        ("input", raw.input.is_some()),
        ("width", raw.width.is_some()),
        ("height", raw.height.is_some()),
        ("stall_timeout", raw.stall_timeout.is_some()),
        ("duration", raw.duration.is_some()),
        ("baud", raw.baud.is_some()),
        ("address", raw.address.is_some()),
        ("interval", raw.interval.is_some()),
    ];
    let only = |allowed: &[&str]| -> Result<(), ConfigError> {
        match fields.iter().find(|(f, set)| *set && !allowed.contains(f)) {
            Some((f, _)) => Err(err(
                f,
                format!(
                    "not a field of a `{}` source (its fields: kind, {})",
                    raw.kind,
                    allowed.join(", ")
                ),
            )),
            None => Ok(()),
        }
    };
    let stall = |default_s: u64| -> Result<std::time::Duration, ConfigError> {
        match &raw.stall_timeout {
            None => Ok(std::time::Duration::from_secs(default_s)),
            Some(s) => parse_duration_ms(s)
                .filter(|ms| (1_000..=600_000).contains(ms))
                .map(std::time::Duration::from_millis)
                .ok_or_else(|| {
                    err(
                        "stall_timeout",
                        format!("`{s}`: a duration between 1s and 10m"),
                    )
                }),
        }
    };
    match raw.kind.as_str() {
        "node" => {
            only(&["input", "baud", "stall_timeout"])?;
            let input = raw.input.as_deref().ok_or_else(|| {
                err(
                    "input",
                    "missing: the node's serial device (/dev/ttyACM0...) or tcp:HOST:PORT".into(),
                )
            })?;
            let input = match input.strip_prefix("tcp:") {
                Some(addr) => {
                    let ok = addr.rsplit_once(':').is_some_and(|(h, p)| {
                        !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0)
                    });
                    if !ok || raw.baud.is_some() {
                        return Err(err(
                            "input",
                            format!(
                                "`{input}`: tcp:HOST:PORT (and no baud: the serial server sets it)"
                            ),
                        ));
                    }
                    NodeInput::Tcp(addr.to_owned())
                }
                None if input.starts_with('/') => {
                    let baud = raw.baud.unwrap_or(115_200);
                    if !(1_200..=4_000_000).contains(&baud) {
                        return Err(err("baud", format!("{baud}: between 1200 and 4000000")));
                    }
                    NodeInput::Serial {
                        path: input.to_owned(),
                        baud,
                    }
                }
                None => {
                    return Err(err(
                        "input",
                        format!("`{input}`: a serial device path (/dev/...) or tcp:HOST:PORT"),
                    ));
                }
            };
            Ok(Source::Node(NodeSettings {
                input,
                stall_timeout: stall(10)?,
            }))
        }
        "i2c" => {
            only(&["input", "address", "interval"])?;
            let bus = raw.input.clone().unwrap_or_else(|| "/dev/i2c-1".into());
            if !bus.starts_with("/dev/") {
                return Err(err(
                    "input",
                    format!("`{bus}`: an I2C bus device, /dev/i2c-N"),
                ));
            }
            let address = raw.address.unwrap_or(0x76);
            let address = u8::try_from(address)
                .ok()
                .filter(|a| (0x03..=0x77).contains(a))
                .ok_or_else(|| {
                    err(
                        "address",
                        format!(
                            "{address}: a 7-bit I2C address (a BME280 answers at 0x76 or 0x77)"
                        ),
                    )
                })?;
            let interval = match &raw.interval {
                None => std::time::Duration::from_secs(10),
                Some(s) => parse_duration_ms(s)
                    .filter(|ms| (1_000..=3_600_000).contains(ms))
                    .map(std::time::Duration::from_millis)
                    .ok_or_else(|| {
                        err("interval", format!("`{s}`: a duration between 1s and 1h"))
                    })?,
            };
            Ok(Source::I2c(I2cSettings {
                bus,
                address,
                interval,
            }))
        }
        "microphone" => {
            only(&["input", "stall_timeout", "duration"])?;
            let input = raw.input.clone().unwrap_or_else(|| "default".into());
            if input.is_empty() || input.len() > 256 || input.chars().any(|c| c.is_control()) {
                return Err(err(
                    "input",
                    "an ALSA device name such as \"default\" or \"plughw:1,0\"".into(),
                ));
            }
            let duration = match &raw.duration {
                None => None,
                Some(s) => Some(
                    parse_duration_ms(s)
                        .filter(|&ms| ms >= 1)
                        .map(std::time::Duration::from_millis)
                        .ok_or_else(|| {
                            err("duration", format!("`{s}` is not a duration like \"30s\""))
                        })?,
                ),
            };
            Ok(Source::Microphone(MicSettings {
                input,
                stall_timeout: stall(5)?,
                duration,
            }))
        }
        "camera" => {
            only(&["input", "width", "height", "fps", "stall_timeout"])?;
            let input = raw
                .input
                .as_deref()
                .ok_or_else(|| err("input", "missing: an rtsp:// or http:// URL, a /dev/videoN device, \"rpicam\" or a video file".into()))?;
            let input = CameraInput::parse(base, input).map_err(|m| err("input", m))?;
            let side = |name: &str, v: Option<u32>, default: u32| -> Result<u32, ConfigError> {
                let v = v.unwrap_or(default);
                if !(16..=4096).contains(&v) || !v.is_multiple_of(2) {
                    return Err(err(
                        name,
                        format!("{v}: an even number of pixels in [16, 4096]"),
                    ));
                }
                Ok(v)
            };
            let width = side("width", raw.width, 640)?;
            let height = side("height", raw.height, 480)?;
            let fps = raw.fps.unwrap_or(5.0);
            if !(fps.is_finite() && fps > 0.0 && fps <= 60.0) {
                return Err(err("fps", "must be in (0, 60]".into()));
            }
            let stall_timeout = stall(10)?;
            Ok(Source::Camera(CameraSettings {
                input,
                width,
                height,
                fps,
                stall_timeout,
            }))
        }
        "replay" => {
            only(&["path", "speed", "fps", "repeat", "start"])?;
            let Some(raw_path) = &raw.path else {
                return Err(err(
                    "path",
                    "missing: a WAV file, an image or a folder of images".into(),
                ));
            };
            let speed = match &raw.speed {
                None => Speed::Accelerated,
                Some(toml::Value::String(s)) if s == "accelerated" => Speed::Accelerated,
                Some(toml::Value::String(s)) if s == "realtime" => Speed::Realtime(1.0),
                Some(toml::Value::Float(f)) if f.is_finite() && *f > 0.0 && *f <= 1000.0 => {
                    Speed::Realtime(*f)
                }
                Some(toml::Value::Integer(n)) if (1..=1000).contains(n) => {
                    Speed::Realtime(*n as f64)
                }
                Some(other) => {
                    return Err(err(
                        "speed",
                        format!(
                            "`{other}`: expected \"accelerated\", \"realtime\" or a factor in (0, 1000]"
                        ),
                    ));
                }
            };
            let fps = raw.fps.unwrap_or(1.0);
            if !(fps.is_finite() && fps > 0.0 && fps <= 1000.0) {
                return Err(err("fps", "must be in (0, 1000]".into()));
            }
            let repeat = raw.repeat.unwrap_or(1);
            if repeat == 0 {
                return Err(err("repeat", "must be at least 1".into()));
            }
            let start_wall_ms = match &raw.start {
                None => None,
                Some(s) => Some(parse_rfc3339_ms(s).ok_or_else(|| {
                    err(
                        "start",
                        format!("`{s}` is not an RFC 3339 UTC time like 2026-11-30T10:00:00Z"),
                    )
                })?),
            };
            let path = base.join(raw_path);
            if !path.exists() {
                return Err(err("path", format!("{} does not exist", path.display())));
            }
            Ok(Source::Replay {
                path,
                speed,
                fps,
                repeat,
                start_wall_ms,
            })
        }
        other => Err(err(
            "kind",
            format!(
                "unknown source kind `{other}` (expected camera, microphone, node, i2c or replay)"
            ),
        )),
    }
}

/// Drives the raw config's `Deserialize` with any deserializer, for the test that checks every
/// field the parser knows is documented (agent/tests/config_docs.rs). Not part of the API.
#[doc(hidden)]
pub fn deserialize_raw<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    RawConfig::deserialize(d).map(drop)
}

/// A duration in jiff's friendly format (`"250ms"`, `"30s"`, `"15m"`, `"1h"`, `"1h 30m"`,
/// `"1.5s"`) or ISO 8601 (`"PT15M"`) -> milliseconds. Not negative, whole milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let d: jiff::SignedDuration = s.trim().parse().ok()?;
    if d.is_negative() || d.subsec_nanos() % 1_000_000 != 0 {
        return None;
    }
    u64::try_from(d.as_millis()).ok()
}

/// An RFC 3339 time in UTC (`YYYY-MM-DDTHH:MM:SS[.fff]Z`) -> Unix milliseconds. Any time
/// with an offset other than `Z`, or an impossible date, is refused.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    if !s.ends_with('Z') {
        return None;
    }
    let t: jiff::Timestamp = s.parse().ok()?;
    if t.subsec_nanosecond() % 1_000_000 != 0 {
        return None;
    }
    Some(t.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counting pipeline on the repository's NanoDet int8 card, with `extra` TOML lines in
    /// its table and `lines` after it.
    fn counting_with(aggregates: &str, extra: &str, lines: &str) -> Result<Config, ConfigError> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let text = format!(
            "device = \"d\"\nterritory = \"t\"\ndata_dir = \"data\"\nkey = \"k\"\n\
             [[pipeline]]\nname = \"rue\"\nmodel = \"{}/models/nanodet-int8/card.toml\"\n\
             aggregates = [{aggregates}]\nwindow = \"15m\"\n{extra}\n{lines}\n\
             [pipeline.source]\nkind = \"replay\"\npath = \"models/samples\"\n\
             [pipeline.privacy]\nk = 3\n",
            root.display()
        );
        Config::parse(&root.join("test.toml"), &text)
    }

    fn counting(extra: &str, lines: &str) -> Result<Config, ConfigError> {
        counting_with("\"line_count\"", extra, lines)
    }

    const LINE: &str =
        "[[pipeline.line]]\nname = \"nord\"\nfrom = [0, 100]\nto = [640, 100]\nin = \"left\"";

    #[test]
    fn counting_lines_and_zones_are_validated_naming_the_field() {
        let ok = counting("classes = [\"person\", \"bicycle\"]", LINE).unwrap();
        let p = &ok.pipelines[0];
        assert_eq!(p.classes, ["person", "bicycle"]);
        assert_eq!(p.lines.len(), 1);
        assert!(p.labels.get("nord").is_ok() && p.labels.get("person").is_ok());
        assert!(
            p.labels.get("car").is_err(),
            "narrowed to the pipeline's classes"
        );
        let zone = "[[pipeline.zone]]\nname = \"parvis\"\npoints = [[0, 0], [100, 0], [100, 100]]";
        assert_eq!(counting("", zone).unwrap().pipelines[0].lines.len(), 1);
        let cases: &[(&str, String, &str)] = &[
            ("", String::new(), "pipeline[0].line"),
            (
                "classes = [\"toothbrush\"]",
                LINE.into(),
                "pipeline[0].classes[0]",
            ),
            ("classes = []", LINE.into(), "pipeline[0].classes"),
            ("", LINE.replace("left", "up"), "pipeline[0].line[0].in"),
            (
                "",
                LINE.replace("nord", "person"),
                "pipeline[0].line[0].name",
            ),
            (
                "",
                LINE.replace("nord", "no spaces"),
                "pipeline[0].line[0].name",
            ),
            (
                "",
                LINE.replace("[640, 100]", "[0, 100]"),
                "pipeline[0].line[0].to",
            ),
            (
                "",
                LINE.replace("[0, 100]", "[-5, 100]"),
                "pipeline[0].line[0].from",
            ),
            (
                "",
                format!("{LINE}\nclasses = [\"car\", \"car\"]"),
                "pipeline[0].line[0].classes[1]",
            ),
            ("", format!("{LINE}\n{LINE}"), "pipeline[0].line[1].name"),
            (
                "",
                zone.replace("[100, 100]]", "[200, 0]]"),
                "pipeline[0].zone[0].points",
            ),
            (
                "",
                format!("{LINE}\n{}", zone.replace("parvis", "nord")),
                "pipeline[0].zone[0].name",
            ),
        ];
        for (extra, lines, field) in cases {
            let e = counting(extra, lines).unwrap_err().to_string();
            assert!(
                e.contains(&format!("`{field}`")) || e.contains(field),
                "{field}: {e}"
            );
        }
        // A camera's frame bounds its lines.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let camera = format!(
            "device = \"d\"\nterritory = \"t\"\ndata_dir = \"data\"\nkey = \"k\"\n\
             [[pipeline]]\nname = \"rue\"\nmodel = \"{}/models/nanodet-int8/card.toml\"\n\
             aggregates = [\"line_count\"]\nwindow = \"15m\"\n{}\n\
             [pipeline.source]\nkind = \"camera\"\ninput = \"/dev/video0\"\nwidth = 320\nheight = 240\n\
             [pipeline.privacy]\nk = 3\n",
            root.display(),
            LINE
        );
        let e = Config::parse(&root.join("test.toml"), &camera)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pipeline[0].line[0]") && e.contains("320x240"),
            "{e}"
        );
        // Lines without `line_count` are refused too.
        let e = counting_with("\"count\"", "", LINE)
            .unwrap_err()
            .to_string();
        assert!(e.contains("pipeline[0].aggregates"), "{e}");
    }

    #[test]
    fn durations_and_times() {
        assert_eq!(parse_duration_ms("15m"), Some(900_000));
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("1h"), Some(3_600_000));
        assert_eq!(parse_duration_ms("m"), None);
        assert_eq!(parse_duration_ms("5 parsecs"), None);
        assert_eq!(parse_duration_ms("15min"), Some(900_000));
        assert_eq!(parse_duration_ms("2 mins 30 sec"), Some(150_000));
        assert_eq!(parse_duration_ms("24hours"), Some(86_400_000));
        assert_eq!(parse_duration_ms("1d"), None);
        assert_eq!(parse_duration_ms("1h 30m"), Some(5_400_000));
        assert_eq!(parse_duration_ms("1.5s"), Some(1_500));
        assert_eq!(parse_duration_ms("PT15M"), Some(900_000));
        assert_eq!(parse_duration_ms("-5s"), None);
        assert_eq!(parse_duration_ms("1.5ms"), None);
        assert_eq!(parse_duration_ms(""), None);
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2026-11-30T11:35:00.001Z"),
            Some(1_796_038_500_001)
        );
        assert_eq!(
            aggregate::window::rfc3339(parse_rfc3339_ms("2000-02-29T23:59:59Z").unwrap()),
            "2000-02-29T23:59:59.000Z"
        );
        assert_eq!(parse_rfc3339_ms("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
        assert_eq!(parse_rfc3339_ms("2026-02-30T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("2026-11-30T10:00:00+01:00"), None);
        assert_eq!(parse_rfc3339_ms("2026-11-30T10:00:00.0001Z"), None);
    }
}
