//! The model runtime: a card's ONNX file checked against its sha256, guarded, given the card's
//! input facts, optimised once by tract (with the quantise-dequantise pairs of QDQ models
//! fused, see [`kernels::qdq`]) and kept runnable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::onnx_guard::{self, Workarounds};
use modelcard::{Card, Dtype, Input, InputRole};

/// A model that could not be loaded; each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "{path}: cannot read the model file: {error} (run `cargo xtask models fetch` if the card's model is fetched)"
    )]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: the file is empty")]
    Empty { path: PathBuf },
    #[error(
        "{path}: sha256 is {actual} but the card {card} says {expected}: the file is not the one the card describes"
    )]
    Sha256 {
        path: PathBuf,
        card: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path}: not a valid ONNX file: {reason}")]
    Decode { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Rejected { path: PathBuf, reason: String },
    #[error("{card}: field `{field}`: {message}")]
    CardMismatch {
        card: PathBuf,
        field: String,
        message: String,
    },
    #[error("{path}: tract cannot {stage} this model: {reason}")]
    Tract {
        path: PathBuf,
        stage: &'static str,
        reason: String,
    },
}

/// Options for loading.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Apply the workarounds for tract's known wrong results (on by default; off only to show
    /// that `model check` catches them).
    pub workarounds: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { workarounds: true }
    }
}

/// Time spent in each loading stage.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadTimes {
    pub read_and_hash: Duration,
    pub decode: Duration,
    pub analyse: Duration,
    pub optimise: Duration,
}

impl LoadTimes {
    pub fn total(&self) -> Duration {
        self.read_and_hash + self.decode + self.analyse + self.optimise
    }
}

type Plan = Arc<TypedRunnableModel>;

/// A loaded, optimised, runnable model with what was learnt while loading it.
pub struct Model {
    pub card: Card,
    plan: Plan,
    pub times: LoadTimes,
    pub onnx_ops: BTreeMap<String, usize>,
    pub optimised_ops: BTreeMap<String, usize>,
    pub workarounds: Workarounds,
    /// What the agent's operators ([`kernels::optimise`]) replaced in tract's graph.
    pub rewrites: kernels::Rewrites,
    pub file_size: u64,
    /// Facts worth telling a person (declared shapes the card replaced...).
    pub notes: Vec<String>,
}

/// The card's `file` names a path inside the card's folder (the card checks the text); a
/// symbolic link there must not lead out of it either: what the card vouches for is what sits
/// beside it.
fn contained(card: &Card) -> Result<(), ModelError> {
    let dir = card.path.parent().unwrap_or(Path::new("."));
    let (Ok(dir), Ok(file)) = (dir.canonicalize(), card.file.canonicalize()) else {
        // Missing: reading the file says so.
        return Ok(());
    };
    if file.starts_with(&dir) {
        return Ok(());
    }
    Err(ModelError::CardMismatch {
        card: card.path.clone(),
        field: "file".into(),
        message: format!(
            "`{}` leads to {}, outside the card's folder (a symbolic link?): put the model file itself beside its card",
            card.file.display(),
            file.display()
        ),
    })
}

impl Model {
    /// Loads the card's model: sha256 before parsing, guard, input facts, optimise.
    pub fn load(card: &Card, options: LoadOptions) -> Result<Model, ModelError> {
        if card.measurement.is_some() {
            return Err(ModelError::CardMismatch {
                card: card.path.clone(),
                field: "measurement".into(),
                message:
                    "a measurement card describes a sensor method: there is no network to load"
                        .into(),
            });
        }
        let path = card.file.clone();
        contained(card)?;
        let t0 = Instant::now();
        let bytes = std::fs::read(&path).map_err(|error| ModelError::Io {
            path: path.clone(),
            error,
        })?;
        if bytes.is_empty() {
            return Err(ModelError::Empty { path });
        }
        let actual = hex(&Sha256::digest(&bytes));
        if actual != card.sha256 {
            return Err(ModelError::Sha256 {
                path,
                card: card.path.clone(),
                expected: card.sha256.clone(),
                actual,
            });
        }
        let file_size = bytes.len() as u64;
        let read_and_hash = t0.elapsed();

        let t1 = Instant::now();
        // Declared output shapes are not trusted: the card's input facts decide them, and the
        // optimised model's outputs are checked against the card below.
        let onnx = tract_onnx::onnx().with_ignore_output_shapes(true);
        let mut proto = {
            use prost::Message;
            pb::ModelProto::decode(bytes.as_slice()).map_err(|e| ModelError::Decode {
                path: path.clone(),
                reason: e.to_string(),
            })?
        };
        drop(bytes);
        let known = |op: &str| onnx.op_register.0.contains_key(op);
        onnx_guard::check(&proto, &known).map_err(|r| ModelError::Rejected {
            path: path.clone(),
            reason: r.message,
        })?;
        let overrides = check_card_inputs(card, &proto)?;
        let onnx_ops = onnx_guard::operator_counts(&proto);
        let mut workarounds = if options.workarounds {
            onnx_guard::float_softmax(&mut proto)
        } else {
            Workarounds::default()
        };
        // Not a numeric workaround: duplicate names only stop tract from building the graph.
        workarounds.renamed_nodes = onnx_guard::unique_node_names(&mut proto);
        // Nor this one: the same constants, computed once here instead of twice by tract.
        workarounds.folded_dequantisations = onnx_guard::fold_constant_dequantisation(&mut proto);
        let decode = t1.elapsed();

        let t2 = Instant::now();
        let tract_err = |stage: &'static str| {
            let path = path.clone();
            move |e: TractError| ModelError::Tract {
                path,
                stage,
                reason: format!("{e:#}"),
            }
        };
        let typed = guarded(&path, "parse", || {
            let mut model = onnx
                .model_for_proto_model(&proto)
                .map_err(tract_err("parse"))?;
            apply_card(card, &mut model)?;
            model.into_typed().map_err(|e| match overrides.first() {
                // The card's shape replaced the file's and does not fit: that is the card's
                // field to fix (or the file's declaration was right).
                Some(o) => ModelError::CardMismatch {
                    card: card.path.clone(),
                    field: format!("inputs[{}].shape", o.index),
                    message: format!(
                        "card says {:?}, the file declares {}, and the model cannot run with the card's shape: {e:#}",
                        card.inputs[o.index].shape, o.declared
                    ),
                },
                None => ModelError::Tract { path: path.clone(), stage: "analyse", reason: format!("{e:#}") },
            })
        })?;
        let analyse = t2.elapsed();

        let t3 = Instant::now();
        let (plan, optimised_ops, rewrites) = guarded(&path, "optimise", || {
            let mut optimised = typed;
            let rewrites = kernels::optimise(&mut optimised).map_err(tract_err("optimise"))?;
            check_card_outputs(card, &optimised)?;
            let ops = typed_operator_counts(&optimised);
            let plan = optimised.into_runnable().map_err(tract_err("plan"))?;
            Ok((plan, ops, rewrites))
        })?;
        let optimise = t3.elapsed();

        Ok(Model {
            card: card.clone(),
            plan,
            times: LoadTimes {
                read_and_hash,
                decode,
                analyse,
                optimise,
            },
            onnx_ops,
            optimised_ops,
            workarounds,
            rewrites,
            file_size,
            notes: overrides
                .iter()
                .map(|o| {
                    let i = &card.inputs[o.index];
                    format!(
                        "input `{}`: the file declares {}, the card's {:?} applies",
                        i.name, o.declared, i.shape
                    )
                })
                .collect(),
        })
    }

    /// Runs the model once on tensors in the card's input order.
    pub fn run(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>, ModelError> {
        let path = &self.card.file;
        guarded(path, "run", || {
            self.plan.run(inputs).map_err(|e| ModelError::Tract {
                path: path.clone(),
                stage: "run",
                reason: format!("{e:#}"),
            })
        })
    }

    /// Runs the model once, timing every operator: `(node name, operator name, time)` in
    /// execution order. For `model profile`; slower than [`Model::run`] by the timing only.
    pub fn run_profiled(&self, inputs: TVec<TValue>) -> Result<Vec<NodeTime>, ModelError> {
        let path = &self.card.file;
        guarded(path, "run", || {
            let mut times = Vec::new();
            let err = |e: TractError| ModelError::Tract {
                path: path.clone(),
                stage: "run",
                reason: format!("{e:#}"),
            };
            let mut state = TypedSimpleState::new(&self.plan).map_err(err)?;
            state
                .run_plan_with_eval(inputs, |ctx, op_state, node, inputs| {
                    let shapes = |ts: &[TValue]| {
                        ts.iter()
                            .map(|t| format!("{:?}", t.shape()))
                            .collect::<Vec<_>>()
                            .join(" ")
                    };
                    let input_shapes = shapes(&inputs);
                    let t = Instant::now();
                    let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                    let time = t.elapsed();
                    let output_shapes = out.as_ref().map(|o| shapes(o)).unwrap_or_default();
                    times.push(NodeTime {
                        name: node.name.clone(),
                        op: node.op.name().to_string(),
                        shapes: format!("{input_shapes} -> {output_shapes}"),
                        time,
                    });
                    out
                })
                .map_err(err)?;
            Ok(times)
        })
    }

    /// Input tensors for one step where data inputs are given, state inputs start at zero and
    /// constants take the card's value.
    pub fn initial_inputs(&self) -> Vec<Tensor> {
        self.card.inputs.iter().map(initial_tensor).collect()
    }
}

/// One operator's run in [`Model::run_profiled`].
#[derive(Debug, Clone)]
pub struct NodeTime {
    pub name: String,
    pub op: String,
    /// Input and output shapes, `[..] [..] -> [..]`.
    pub shapes: String,
    pub time: Duration,
}

/// Zeros for data and state inputs, the value for constants.
pub fn initial_tensor(input: &Input) -> Tensor {
    let shape = &input.shape;
    match &input.role {
        InputRole::Constant(v) => match input.dtype {
            Dtype::F32 => tensor_from(shape, v.iter().map(|&x| x as f32).collect()),
            Dtype::I64 => tensor_from(shape, v.iter().map(|&x| x as i64).collect()),
            Dtype::I32 => tensor_from(shape, v.iter().map(|&x| x as i32).collect()),
            Dtype::U8 => tensor_from(shape, v.iter().map(|&x| x as u8).collect()),
            Dtype::I8 => tensor_from(shape, v.iter().map(|&x| x as i8).collect()),
        },
        _ => Tensor::zero_dt(datum_type(input.dtype), shape)
            .expect("zero tensor of a validated shape"),
    }
}

fn tensor_from<T: Datum + Copy>(shape: &[usize], v: Vec<T>) -> Tensor {
    tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), v)
        .expect("validated shape and length")
        .into()
}

pub fn datum_type(d: Dtype) -> DatumType {
    match d {
        Dtype::F32 => f32::datum_type(),
        Dtype::I64 => i64::datum_type(),
        Dtype::I32 => i32::datum_type(),
        Dtype::U8 => u8::datum_type(),
        Dtype::I8 => i8::datum_type(),
    }
}

/// Runs `f`, turning a panic inside tract into an error: a hostile file must never bring the
/// agent down. (The device profile keeps `panic = "unwind"` for this reason.)
fn guarded<T>(
    path: &std::path::Path,
    stage: &'static str,
    f: impl FnOnce() -> Result<T, ModelError>,
) -> Result<T, ModelError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown cause".into());
            Err(ModelError::Tract {
                path: path.to_owned(),
                stage,
                reason: format!("internal failure in tract: {what}"),
            })
        }
    }
}

/// An input whose static shape in the file differs from the card's: the card applies (some
/// exporters write placeholder shapes), and tract's analysis decides whether it fits.
struct ShapeOverride {
    index: usize,
    declared: String,
}

/// The card's inputs must be exactly the graph's inputs, with the same element types.
fn check_card_inputs(
    card: &Card,
    proto: &pb::ModelProto,
) -> Result<Vec<ShapeOverride>, ModelError> {
    let graph_inputs = onnx_guard::graph_inputs(proto);
    let mismatch = |field: String, message: String| ModelError::CardMismatch {
        card: card.path.clone(),
        field,
        message,
    };
    let mut overrides = Vec::new();
    for (i, input) in card.inputs.iter().enumerate() {
        let Some((_, elem, shape)) = graph_inputs.iter().find(|(n, _, _)| *n == input.name) else {
            let names: Vec<&str> = graph_inputs.iter().map(|(n, _, _)| n.as_str()).collect();
            return Err(mismatch(
                format!("inputs[{i}].name"),
                format!(
                    "the model has no input `{}` (its inputs: {})",
                    input.name,
                    names.join(", ")
                ),
            ));
        };
        if let Some(elem) = elem {
            let name = onnx_guard::elem_type_name(*elem);
            if name != input.dtype.to_string() {
                return Err(mismatch(
                    format!("inputs[{i}].dtype"),
                    format!(
                        "card says {} but the model's input `{}` is {name}",
                        input.dtype, input.name
                    ),
                ));
            }
        }
        if let Some(shape) = shape {
            let compatible = shape.len() == input.shape.len()
                && shape
                    .iter()
                    .zip(&input.shape)
                    .all(|(d, &c)| d.is_none_or(|d| d as usize == c));
            if !compatible {
                let dims: Vec<String> = shape
                    .iter()
                    .map(|d| d.map_or("?".into(), |d| d.to_string()))
                    .collect();
                overrides.push(ShapeOverride {
                    index: i,
                    declared: format!("[{}]", dims.join(", ")),
                });
            }
        }
    }
    if let Some((name, _, _)) = graph_inputs
        .iter()
        .find(|(n, _, _)| !card.inputs.iter().any(|i| i.name == *n))
    {
        return Err(mismatch(
            "inputs".into(),
            format!("the model's input `{name}` is not described by the card"),
        ));
    }
    Ok(overrides)
}

/// Input order and facts, and output selection, from the card.
fn apply_card(card: &Card, model: &mut InferenceModel) -> Result<(), ModelError> {
    let mismatch = |field: String, message: String| ModelError::CardMismatch {
        card: card.path.clone(),
        field,
        message,
    };
    let tract = |e: TractError| ModelError::Tract {
        path: card.file.clone(),
        stage: "apply the card's facts to",
        reason: format!("{e:#}"),
    };
    let inputs = model.input_outlets().map_err(tract)?.to_vec();
    let mut order = Vec::with_capacity(card.inputs.len());
    for (i, input) in card.inputs.iter().enumerate() {
        let outlet = inputs
            .iter()
            .find(|o| model.node(o.node).name == input.name)
            .ok_or_else(|| {
                mismatch(
                    format!("inputs[{i}].name"),
                    format!("the model has no input `{}`", input.name),
                )
            })?;
        order.push(*outlet);
    }
    // tract feeds inputs in the model's order; make it the card's.
    model.set_input_outlets(&order).map_err(tract)?;
    for (ix, input) in card.inputs.iter().enumerate() {
        let shape: TVec<i64> = input.shape.iter().map(|&d| d as i64).collect();
        model
            .set_input_fact(ix, InferenceFact::dt_shape(datum_type(input.dtype), shape))
            .map_err(tract)?;
    }
    for (i, o) in card.outputs.iter().enumerate() {
        if model.find_outlet_label(&o.name).is_none() {
            return Err(mismatch(
                format!("outputs[{i}].name"),
                format!("the model has no output `{}`", o.name),
            ));
        }
    }
    model
        .select_outputs_by_name(card.outputs.iter().map(|o| o.name.as_str()))
        .map_err(tract)?;
    Ok(())
}

/// The optimised model's outputs must have the card's types and shapes.
fn check_card_outputs(card: &Card, model: &TypedModel) -> Result<(), ModelError> {
    for (i, (o, outlet)) in card
        .outputs
        .iter()
        .zip(model.output_outlets().unwrap_or(&[]))
        .enumerate()
    {
        let Ok(fact) = model.outlet_fact(*outlet) else {
            continue;
        };
        let shape: Option<Vec<usize>> = fact.shape.as_concrete().map(|s| s.to_vec());
        let dt = fact.datum_type.unquantized();
        let mismatch = |field: &str, card_says: String, computed: String| {
            Err(ModelError::CardMismatch {
                card: card.path.clone(),
                field: format!("outputs[{i}].{field}"),
                message: format!(
                    "card says {card_says} but the model computes {computed} for `{}`",
                    o.name
                ),
            })
        };
        if dt != datum_type(o.dtype).unquantized() {
            return mismatch("dtype", o.dtype.to_string(), format!("{dt:?}"));
        }
        if let Some(shape) = shape
            && shape != o.shape
        {
            return mismatch("shape", format!("{:?}", o.shape), format!("{shape:?}"));
        }
    }
    Ok(())
}

fn typed_operator_counts(model: &TypedModel) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for node in model.nodes() {
        *counts.entry(node.op.name().to_string()).or_insert(0) += 1;
    }
    counts
}

/// Lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
