//! Golden vectors: inputs and expected outputs produced by an independent runtime
//! (onnxruntime), stored in the ONNX backend-test layout (`test_data_set_N/input_K.pb`,
//! `output_K.pb`, each a serialized TensorProto), compared with the card's tolerance.

use std::path::{Path, PathBuf};

use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::load::{Model, ModelError, datum_type};
use modelcard::{Card, Dtype, Output};

#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(transparent)]
    Model(#[from] ModelError),
}

fn file_err(path: &Path, message: impl Into<String>) -> GoldenError {
    GoldenError::File {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// One set of inputs with the outputs expected for them.
pub struct Vector {
    pub dir: PathBuf,
    /// In the card's input order.
    pub inputs: Vec<Tensor>,
    /// In the card's output order.
    pub outputs: Vec<Tensor>,
}

/// The worst difference found on one output.
#[derive(Debug, Clone)]
pub struct OutputReport {
    pub name: String,
    /// Largest |got - expected|.
    pub max_abs: f64,
    /// Largest |got - expected| / allowed (<= 1 passes).
    pub worst_ratio: f64,
    /// Flat index of the worst element, with the values there.
    pub worst_at: usize,
    pub got: f64,
    pub expected: f64,
    pub elements: usize,
    pub mismatches: usize,
    /// A shape or type mismatch (the output fails whatever the values).
    pub structural: Option<String>,
    /// The first 16 hex digits of the sha256 of the output's values (as f64 bits): equal
    /// digests from two runs mean the same output, bit for bit.
    pub digest: String,
}

impl OutputReport {
    pub fn passed(&self) -> bool {
        self.structural.is_none() && self.mismatches == 0
    }
}

pub struct VectorReport {
    pub dir: PathBuf,
    pub outputs: Vec<OutputReport>,
}

impl VectorReport {
    pub fn passed(&self) -> bool {
        self.outputs.iter().all(OutputReport::passed)
    }
}

/// Reads every `test_data_set_*` folder under the card's vectors folder.
pub fn load_vectors(card: &Card) -> Result<Vec<Vector>, GoldenError> {
    let Some(check) = &card.check else {
        return Err(file_err(
            &card.path,
            "a measurement card has no network, hence no golden vectors to check",
        ));
    };
    let root = &check.vectors;
    let entries = std::fs::read_dir(root).map_err(|e| {
        file_err(
            root,
            format!(
                "cannot read the golden vectors folder (field `check.vectors` of {}): {e}",
                card.path.display()
            ),
        )
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
        })
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        return Err(file_err(
            root,
            "no test_data_set_N folder: the golden vectors are missing",
        ));
    }
    dirs.into_iter().map(|d| load_vector(card, &d)).collect()
}

fn load_vector(card: &Card, dir: &Path) -> Result<Vector, GoldenError> {
    let inputs = load_set(
        dir,
        "input",
        card.inputs
            .iter()
            .map(|i| (i.name.as_str(), i.dtype, &i.shape[..]))
            .collect(),
    )?;
    let outputs = load_set(
        dir,
        "output",
        card.outputs
            .iter()
            .map(|o| (o.name.as_str(), o.dtype, &o.shape[..]))
            .collect(),
    )?;
    Ok(Vector {
        dir: dir.to_owned(),
        inputs,
        outputs,
    })
}

/// Reads `{prefix}_K.pb` for K = 0.. and orders them as `wanted` (by the tensor's name when it
/// has one, else by K).
fn load_set(
    dir: &Path,
    prefix: &str,
    wanted: Vec<(&str, Dtype, &[usize])>,
) -> Result<Vec<Tensor>, GoldenError> {
    let mut found: Vec<(String, Tensor, PathBuf)> = Vec::new();
    for k in 0.. {
        let path = dir.join(format!("{prefix}_{k}.pb"));
        if !path.exists() {
            break;
        }
        let bytes =
            std::fs::read(&path).map_err(|e| file_err(&path, format!("cannot read: {e}")))?;
        let proto: pb::TensorProto = {
            use prost::Message;
            pb::TensorProto::decode(bytes.as_slice())
                .map_err(|e| file_err(&path, format!("not a TensorProto: {e}")))?
        };
        let tensor = tensor_from_proto(&proto).map_err(|m| file_err(&path, m))?;
        found.push((proto.name.clone(), tensor, path));
    }
    if found.len() != wanted.len() {
        return Err(file_err(
            dir,
            format!(
                "{} {prefix} files for {} {prefix}s in the card (expected {prefix}_0.pb ..)",
                found.len(),
                wanted.len()
            ),
        ));
    }
    let named = found.iter().all(|(n, _, _)| !n.is_empty());
    let mut out = Vec::with_capacity(wanted.len());
    for (k, (name, dtype, shape)) in wanted.iter().enumerate() {
        let (_, tensor, path) = if named {
            found
                .iter()
                .find(|(n, _, _)| n == name)
                .ok_or_else(|| file_err(dir, format!("no {prefix} file holds `{name}`")))?
        } else {
            &found[k]
        };
        if tensor.datum_type() != datum_type(*dtype) {
            return Err(file_err(
                path,
                format!(
                    "`{name}` is {:?} but the card says {dtype}",
                    tensor.datum_type()
                ),
            ));
        }
        if tensor.shape() != *shape {
            return Err(file_err(
                path,
                format!(
                    "`{name}` has shape {:?} but the card says {shape:?}",
                    tensor.shape()
                ),
            ));
        }
        out.push(tensor.clone());
    }
    Ok(out)
}

/// A TensorProto into a tensor, for the element types a card allows; bounded by the bytes the
/// file actually holds.
fn tensor_from_proto(t: &pb::TensorProto) -> Result<Tensor, String> {
    use pb::tensor_proto::DataType as D;
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect::<Result<_, _>>()?;
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("absurd dimensions")?;
    let dt =
        D::try_from(t.data_type).map_err(|_| format!("unknown element type {}", t.data_type))?;
    fn build<T: Datum + Copy>(
        dims: &[usize],
        n: usize,
        raw: &[u8],
        typed: Vec<T>,
        from_le: fn(&[u8]) -> T,
    ) -> Result<Tensor, String> {
        let size = std::mem::size_of::<T>();
        let values: Vec<T> = if !raw.is_empty() {
            if raw.len() != n * size {
                return Err(format!(
                    "{} bytes of data for {n} elements of {size} bytes",
                    raw.len()
                ));
            }
            raw.chunks_exact(size).map(from_le).collect()
        } else {
            typed
        };
        if values.len() != n {
            return Err(format!("{} values for {n} elements", values.len()));
        }
        tract_ndarray::ArrayD::from_shape_vec(dims.to_vec(), values)
            .map(Into::into)
            .map_err(|e| e.to_string())
    }
    match dt {
        D::Float => build(&dims, n, &t.raw_data, t.float_data.clone(), |b| {
            f32::from_le_bytes(b.try_into().unwrap())
        }),
        D::Int64 => build(&dims, n, &t.raw_data, t.int64_data.clone(), |b| {
            i64::from_le_bytes(b.try_into().unwrap())
        }),
        D::Int32 => build(&dims, n, &t.raw_data, t.int32_data.clone(), |b| {
            i32::from_le_bytes(b.try_into().unwrap())
        }),
        D::Uint8 => build(
            &dims,
            n,
            &t.raw_data,
            t.int32_data.iter().map(|&x| x as u8).collect(),
            |b| b[0],
        ),
        D::Int8 => build(
            &dims,
            n,
            &t.raw_data,
            t.int32_data.iter().map(|&x| x as i8).collect(),
            |b| b[0] as i8,
        ),
        other => Err(format!("element type {other:?} is not one a card allows")),
    }
}

/// Runs every vector and compares each output with the card's tolerance.
pub fn check(model: &Model, vectors: &[Vector]) -> Result<Vec<VectorReport>, GoldenError> {
    let card = &model.card;
    let mut reports = Vec::new();
    for v in vectors {
        let inputs: TVec<TValue> = v.inputs.iter().cloned().map(TValue::from).collect();
        let got = model.run(inputs)?;
        let outputs = card
            .outputs
            .iter()
            .zip(&v.outputs)
            .zip(got.iter())
            .map(|((o, expected), got)| compare(o, got, expected))
            .collect();
        reports.push(VectorReport {
            dir: v.dir.clone(),
            outputs,
        });
    }
    Ok(reports)
}

fn compare(output: &Output, got: &Tensor, expected: &Tensor) -> OutputReport {
    let t = output.tolerance;
    let mut r = OutputReport {
        name: output.name.clone(),
        max_abs: 0.0,
        worst_ratio: 0.0,
        worst_at: 0,
        got: 0.0,
        expected: 0.0,
        elements: expected.len(),
        mismatches: 0,
        structural: None,
        digest: String::new(),
    };
    if got.shape() != expected.shape() {
        r.structural = Some(format!(
            "shape {:?}, expected {:?}",
            got.shape(),
            expected.shape()
        ));
        return r;
    }
    let (Ok(g), Ok(e)) = (got.cast_to::<f64>(), expected.cast_to::<f64>()) else {
        r.structural = Some(format!(
            "type {:?}, expected {:?}",
            got.datum_type(),
            expected.datum_type()
        ));
        return r;
    };
    let (Ok(g), Ok(e)) = (
        g.to_plain_array_view::<f64>(),
        e.to_plain_array_view::<f64>(),
    ) else {
        r.structural = Some("values not readable".into());
        return r;
    };
    let mut hash = <sha2::Sha256 as sha2::Digest>::new();
    for v in g.iter() {
        sha2::Digest::update(&mut hash, v.to_bits().to_le_bytes());
    }
    r.digest = sha2::Digest::finalize(hash)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    for (i, (&g, &e)) in g.iter().zip(e.iter()).enumerate() {
        let diff = (g - e).abs();
        let allowed = if output.dtype.is_integer() {
            t.steps as f64
        } else {
            t.abs + t.rel * e.abs()
        };
        // NaN anywhere is a mismatch whatever the tolerance.
        let ratio = if diff.is_nan() || g.is_nan() != e.is_nan() {
            f64::INFINITY
        } else if diff == 0.0 {
            0.0
        } else if allowed == 0.0 {
            f64::INFINITY
        } else {
            diff / allowed
        };
        if ratio > 1.0 {
            r.mismatches += 1;
        }
        if diff > r.max_abs || diff.is_nan() {
            r.max_abs = diff;
        }
        if ratio > r.worst_ratio || (i == 0 && r.worst_ratio == 0.0) {
            r.worst_ratio = ratio;
            r.worst_at = i;
            r.got = g;
            r.expected = e;
        }
    }
    r
}
