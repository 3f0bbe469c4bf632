//! Checks an ONNX model's protobuf before tract sees it, and works around tract's known
//! limits. Models come from outside the device's trust boundary (a card names a file; the file
//! may be truncated, bit-flipped or hostile), so anything tract would reject late, panic on, or
//! compute wrongly is caught here with a message that says what to do instead.

use std::collections::{BTreeMap, HashMap};

use tract_onnx::pb::{self, attribute_proto::AttributeType, tensor_proto::DataLocation};

/// Why a model cannot run, in terms a model author can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub message: String,
}

impl Rejection {
    fn new(message: impl Into<String>) -> Rejection {
        Rejection {
            message: message.into(),
        }
    }
}

/// What the guard changed in the graph so that tract computes the right numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workarounds {
    /// Softmax nodes whose trailing QuantizeLinear -> DequantizeLinear pair was removed.
    pub float_softmax: Vec<String>,
    /// Nodes renamed because their name was not unique in their graph.
    pub renamed_nodes: usize,
    /// Constant weights' `DequantizeLinear`s computed here, for load time.
    pub folded_dequantisations: usize,
}

/// Operator counts of an ONNX graph (subgraphs included), by `domain:op_type`.
pub fn operator_counts(model: &pb::ModelProto) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    if let Some(g) = &model.graph {
        walk_nodes(g, &mut |n| {
            let key = if n.domain.is_empty() || n.domain == "ai.onnx" {
                n.op_type.clone()
            } else {
                format!("{}:{}", n.domain, n.op_type)
            };
            *counts.entry(key).or_insert(0) += 1;
        });
    }
    counts
}

fn walk_nodes(g: &pb::GraphProto, f: &mut dyn FnMut(&pb::NodeProto)) {
    for n in &g.node {
        f(n);
        for a in &n.attribute {
            if let Some(sub) = &a.g {
                walk_nodes(sub, f);
            }
            for sub in &a.graphs {
                walk_nodes(sub, f);
            }
        }
    }
}

fn walk_graphs<'a>(g: &'a pb::GraphProto, f: &mut dyn FnMut(&'a pb::GraphProto)) {
    f(g);
    for n in &g.node {
        for a in &n.attribute {
            if let Some(sub) = &a.g {
                walk_graphs(sub, f);
            }
            for sub in &a.graphs {
                walk_graphs(sub, f);
            }
        }
    }
}

/// onnxruntime's "QOperator" quantised format: fused quantised operators, mostly in the
/// `com.microsoft` domain, that tract does not implement.
const QOPERATOR_PREFIXES: &[&str] = &["QLinear", "QGemm", "QAttention", "QEmbedLayerNormalization"];

/// Rejects what tract cannot run or would mishandle: unknown operators, external data,
/// tensors whose declared size does not match their bytes, unsupported element types, `If`
/// branches of different shapes.
pub fn check(model: &pb::ModelProto, known_ops: &dyn Fn(&str) -> bool) -> Result<(), Rejection> {
    let Some(graph) = &model.graph else {
        return Err(Rejection::new(
            "the file holds no graph: not an ONNX model, or truncated",
        ));
    };
    if graph.node.is_empty() {
        return Err(Rejection::new(
            "the graph has no nodes: not an ONNX model, or truncated",
        ));
    }
    let mut result = Ok(());
    walk_graphs(graph, &mut |g| {
        if result.is_err() {
            return;
        }
        result = check_graph(g, known_ops);
    });
    result
}

fn check_graph(g: &pb::GraphProto, known_ops: &dyn Fn(&str) -> bool) -> Result<(), Rejection> {
    for t in &g.initializer {
        check_tensor(t, &format!("initializer `{}`", t.name))?;
    }
    // Every output of a graph is produced inside it (tract indexes them without checking).
    let defined: std::collections::HashSet<&str> = g
        .input
        .iter()
        .map(|i| i.name.as_str())
        .chain(g.initializer.iter().map(|t| t.name.as_str()))
        .chain(
            g.node
                .iter()
                .flat_map(|n| n.output.iter().map(String::as_str)),
        )
        .collect();
    if let Some(o) = g.output.iter().find(|o| !defined.contains(o.name.as_str())) {
        return Err(Rejection::new(format!(
            "graph `{}` declares output `{}` that no node, input or initializer produces: the file is corrupt",
            g.name, o.name
        )));
    }
    for n in &g.node {
        let node = if n.name.is_empty() {
            n.output.first().cloned().unwrap_or_default()
        } else {
            n.name.clone()
        };
        if !known_ops(&n.op_type) {
            let hint = if QOPERATOR_PREFIXES.iter().any(|p| n.op_type.starts_with(p)) {
                "this is onnxruntime's QOperator quantisation format, which tract does not run; \
                 quantise the model again in QDQ format \
                 (onnxruntime.quantization.quantize_static(..., quant_format=QuantFormat.QDQ))"
            } else {
                "tract does not implement this operator; export the model with other operators \
                 (a different opset or exporter option) or replace the layer"
            };
            let domain = if n.domain.is_empty() {
                String::new()
            } else {
                format!(", domain {}", n.domain)
            };
            return Err(Rejection::new(format!(
                "unsupported operator {} (node `{node}`{domain}): {hint}",
                n.op_type
            )));
        }
        for a in &n.attribute {
            if let Some(t) = &a.t {
                check_tensor(t, &format!("attribute `{}` of node `{node}`", a.name))?;
            }
            for t in &a.tensors {
                check_tensor(t, &format!("attribute `{}` of node `{node}`", a.name))?;
            }
            if a.r#type == AttributeType::Graph as i32 && a.g.is_none() {
                return Err(Rejection::new(format!(
                    "node `{node}`: attribute `{}` lacks its graph",
                    a.name
                )));
            }
        }
        if n.op_type == "If" {
            check_if(n, &node)?;
        }
    }
    Ok(())
}

/// Byte size of the element types tract loads; `None` for types it cannot load.
fn element_size(data_type: i32) -> Option<usize> {
    use pb::tensor_proto::DataType as D;
    Some(match D::try_from(data_type).ok()? {
        D::Float | D::Int32 | D::Uint32 => 4,
        D::Uint8 | D::Int8 | D::Bool => 1,
        D::Uint16 | D::Int16 | D::Float16 => 2,
        D::Int64 | D::Double | D::Uint64 => 8,
        D::String => 0,
        _ => return None,
    })
}

fn check_tensor(t: &pb::TensorProto, what: &str) -> Result<(), Rejection> {
    if t.data_location == Some(DataLocation::External as i32) || !t.external_data.is_empty() {
        return Err(Rejection::new(format!(
            "{what} refers to external data: a device model must be one self-contained file \
             (save it with onnx.save(model, path, save_as_external_data=False))"
        )));
    }
    let Some(size) = element_size(t.data_type) else {
        return Err(Rejection::new(format!(
            "{what} has element type {} which tract cannot load",
            t.data_type
        )));
    };
    let mut elems: u64 = 1;
    for &d in &t.dims {
        if d < 0 {
            return Err(Rejection::new(format!(
                "{what} has a negative dimension ({d})"
            )));
        }
        elems = elems
            .checked_mul(d as u64)
            .filter(|&e| e <= 1 << 32)
            .ok_or_else(|| {
                Rejection::new(format!("{what} declares absurd dimensions {:?}", t.dims))
            })?;
    }
    if !t.raw_data.is_empty() {
        if size == 0 {
            return Err(Rejection::new(format!(
                "{what} stores strings as raw bytes, which tract cannot load"
            )));
        }
        if t.raw_data.len() as u64 != elems * size as u64 {
            return Err(Rejection::new(format!(
                "{what} declares {elems} elements ({:?}) but holds {} bytes: the file is corrupt",
                t.dims,
                t.raw_data.len()
            )));
        }
    } else {
        let held = t.float_data.len()
            + t.int32_data.len()
            + t.int64_data.len()
            + t.double_data.len()
            + t.uint64_data.len()
            + t.string_data.len();
        if held as u64 != elems {
            return Err(Rejection::new(format!(
                "{what} declares {elems} elements ({:?}) but holds {held}: the file is corrupt",
                t.dims
            )));
        }
    }
    Ok(())
}

/// Static shape of a value, where the graph declares one (unknown dims as `None`).
fn declared_shape(v: &pb::ValueInfoProto) -> Option<Vec<Option<i64>>> {
    use pb::type_proto::Value;
    let Some(Value::TensorType(t)) = v.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    let shape = t.shape.as_ref()?;
    Some(
        shape
            .dim
            .iter()
            .map(|d| match d.value {
                Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => Some(v),
                _ => None,
            })
            .collect(),
    )
}

/// tract builds one graph for an `If`; branches whose outputs differ in rank or static shape
/// cannot be unified, and tract's own error is far from the cause.
fn check_if(n: &pb::NodeProto, node: &str) -> Result<(), Rejection> {
    let branch = |name: &str| {
        n.attribute
            .iter()
            .find(|a| a.name == name)
            .and_then(|a| a.g.as_ref())
    };
    let (Some(then), Some(els)) = (branch("then_branch"), branch("else_branch")) else {
        return Err(Rejection::new(format!(
            "If node `{node}` lacks a then_branch or else_branch"
        )));
    };
    if then.output.len() != els.output.len() {
        return Err(Rejection::new(format!(
            "If node `{node}`: its branches have different numbers of outputs"
        )));
    }
    for (i, (a, b)) in then.output.iter().zip(&els.output).enumerate() {
        if let (Some(sa), Some(sb)) = (declared_shape(a), declared_shape(b)) {
            let differ = sa.len() != sb.len()
                || sa
                    .iter()
                    .zip(&sb)
                    .any(|(x, y)| matches!((x, y), (Some(x), Some(y)) if x != y));
            if differ {
                return Err(Rejection::new(format!(
                    "If node `{node}`: output {i} has shape {} in then_branch and {} in else_branch; \
                     tract cannot run an If whose branches differ in shape. Use an export without \
                     this If (for Silero VAD: silero_vad_openvino_16k.onnx or the op18 if-less model)",
                    show_shape(&sa),
                    show_shape(&sb)
                )));
            }
        }
    }
    Ok(())
}

fn show_shape(s: &[Option<i64>]) -> String {
    let dims: Vec<String> = s
        .iter()
        .map(|d| d.map_or("?".into(), |d| d.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}

/// A graph input: name, declared element type, declared shape (unknown dims as `None`).
pub type GraphInput = (String, Option<i32>, Option<Vec<Option<i64>>>);

/// The declared input facts of the graph (names that are not initializers), for comparing with
/// a model card.
pub fn graph_inputs(model: &pb::ModelProto) -> Vec<GraphInput> {
    use pb::type_proto::Value;
    let Some(g) = &model.graph else { return vec![] };
    let inits: std::collections::HashSet<&str> =
        g.initializer.iter().map(|t| t.name.as_str()).collect();
    g.input
        .iter()
        .filter(|i| !inits.contains(i.name.as_str()))
        .map(|i| {
            let elem = match i.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                Some(Value::TensorType(t)) => Some(t.elem_type),
                _ => None,
            };
            (i.name.clone(), elem, declared_shape(i))
        })
        .collect()
}

/// Operators that only change a tensor's shape, which tract moves across a quantiser.
const SHAPE_ONLY: &[&str] = &["Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"];

/// tract 0.23.9 computes wrong values for `DequantizeLinear -> Softmax -> QuantizeLinear ->
/// DequantizeLinear` once decluttered ([1, 1] instead of [0.73, 0.27]), also when shape-only
/// operators stand between the Softmax and the pair (`Softmax -> Q -> DQ -> Reshape -> Q ->
/// DQ`, what onnxruntime's quantize_static emits for a classifier ending in Softmax).
/// Removing each QuantizeLinear -> DequantizeLinear pair after the Softmax keeps it in float:
/// the result differs from the quantised one by at most half a quantisation step per pair,
/// which the golden check's tolerance covers.
pub fn float_softmax(model: &mut pb::ModelProto) -> Workarounds {
    let mut done = Workarounds::default();
    let Some(g) = model.graph.as_mut() else {
        return done;
    };
    loop {
        let producers: HashMap<String, usize> = g
            .node
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.output.iter().map(move |o| (o.clone(), i)))
            .collect();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in g.node.iter().enumerate() {
            for inp in &n.input {
                consumers.entry(inp.as_str()).or_default().push(i);
            }
        }
        let graph_outputs: Vec<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
        let only_consumer = |name: &str, op: &str| -> Option<usize> {
            if graph_outputs.contains(&name) {
                return None;
            }
            match consumers.get(name).map(Vec::as_slice) {
                Some([c]) if g.node[*c].op_type == op => Some(*c),
                _ => None,
            }
        };
        let found = g.node.iter().enumerate().find_map(|(si, s)| {
            if s.op_type != "Softmax" || s.output.len() != 1 {
                return None;
            }
            let fed_by_dq = s
                .input
                .first()
                .and_then(|i| producers.get(i))
                .is_some_and(|&p| g.node[p].op_type == "DequantizeLinear");
            if !fed_by_dq {
                return None;
            }
            // The pair may come after operators that only change the shape (onnxruntime's
            // quantize_static quantises a Reshape after the Softmax too): tract moves them.
            let mut out = &s.output[0];
            for _ in 0..g.node.len() {
                if let Some(q) = only_consumer(out, "QuantizeLinear") {
                    let dq = only_consumer(g.node[q].output.first()?, "DequantizeLinear")?;
                    return Some((si, out.clone(), q, dq));
                }
                let next = SHAPE_ONLY
                    .iter()
                    .find_map(|op| only_consumer(out, op))
                    .filter(|&c| g.node[c].output.len() == 1)?;
                out = &g.node[next].output[0];
            }
            None
        });
        let Some((si, before_q, q, dq)) = found else {
            break;
        };
        let softmax_out = g.node[si].output[0].clone();
        let dq_out = g.node[dq].output[0].clone();
        // A nameless Softmax is named after its output, once: the next pass after the same
        // Softmax (behind a shape operator) then reports it under the same name.
        if g.node[si].name.is_empty() {
            g.node[si].name = softmax_out.clone();
        }
        let name = g.node[si].name.clone();
        // What fed the QuantizeLinear (the Softmax or the last shape operator after it) now
        // produces what the DequantizeLinear produced: consumers and graph outputs keep
        // their names.
        if let Some(o) = g
            .node
            .iter_mut()
            .flat_map(|n| n.output.iter_mut())
            .find(|o| **o == before_q)
        {
            *o = dq_out;
        }
        let (first, second) = if q > dq { (q, dq) } else { (dq, q) };
        g.node.remove(first);
        g.node.remove(second);
        if !done.float_softmax.contains(&name) {
            done.float_softmax.push(name);
        }
    }
    done
}

/// tract 0.23.9 dequantises a QDQ model's constant weights (`DequantizeLinear` of an int8
/// initializer, per output channel) while analysing the model, with generic broadcasting
/// operators, and does it twice: for the int8 CenterFace, tract's analysis took 251.6 of the
/// 386.6 ms load (`model bench`), more than half of it in those operators (`perf`). Each such node whose inputs are all initializers becomes an f32 initializer
/// here, computed with tract's own arithmetic (per tensor `(q - z) as f32 * s`; per axis
/// `(q as f32 - z as f32) * s`), so tract sees the same constants it would have computed.
/// Returns how many were folded; anything unusual is left to tract.
pub fn fold_constant_dequantisation(model: &mut pb::ModelProto) -> usize {
    let Some(g) = model.graph.as_mut() else {
        return 0;
    };
    let initializers: HashMap<&str, &pb::TensorProto> =
        g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let outputs: Vec<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
    let mut folded: Vec<(usize, pb::TensorProto)> = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        if n.op_type != "DequantizeLinear"
            || !(n.domain.is_empty() || n.domain == "ai.onnx")
            || n.output.len() != 1
            || !(2..=3).contains(&n.input.len())
            || outputs.contains(&n.output[0].as_str())
        {
            continue;
        }
        let constant = |k: usize| initializers.get(n.input[k].as_str()).copied();
        let (Some(x), Some(scale)) = (constant(0), constant(1)) else {
            continue;
        };
        let zero_point = match n.input.get(2).filter(|z| !z.is_empty()) {
            Some(_) => match constant(2) {
                Some(z) => Some(z),
                None => continue,
            },
            None => None,
        };
        let axis = match n.attribute.iter().find(|a| a.name == "axis") {
            Some(a) if a.r#type == AttributeType::Int as i32 => a.i,
            Some(_) => continue,
            None => 1,
        };
        if let Some(mut t) = dequantised(x, scale, zero_point, axis) {
            t.name = n.output[0].clone();
            folded.push((i, t));
        }
    }
    let count = folded.len();
    for (i, _) in folded.iter().rev() {
        g.node.remove(*i);
    }
    g.initializer.extend(folded.into_iter().map(|(_, t)| t));
    if count > 0 {
        // The int8 initializers only those nodes read.
        let mut read: std::collections::HashSet<String> = std::collections::HashSet::new();
        walk_nodes(g, &mut |n| read.extend(n.input.iter().cloned()));
        read.extend(g.output.iter().map(|o| o.name.clone()));
        g.initializer.retain(|t| read.contains(&t.name));
    }
    count
}

/// The integers of an int8, uint8 or int32 tensor.
fn integers(t: &pb::TensorProto) -> Option<Vec<i32>> {
    use pb::tensor_proto::DataType as D;
    let raw = &t.raw_data;
    Some(match D::try_from(t.data_type).ok()? {
        D::Int8 if !raw.is_empty() => raw.iter().map(|&b| b as i8 as i32).collect(),
        D::Uint8 if !raw.is_empty() => raw.iter().map(|&b| b as i32).collect(),
        D::Int32 if !raw.is_empty() => raw
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        D::Int8 | D::Uint8 | D::Int32 => t.int32_data.clone(),
        _ => return None,
    })
}

/// The values of an f32 tensor.
fn floats(t: &pb::TensorProto) -> Option<Vec<f32>> {
    if t.data_type != pb::tensor_proto::DataType::Float as i32 {
        return None;
    }
    Some(if t.raw_data.is_empty() {
        t.float_data.clone()
    } else {
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    })
}

/// `DequantizeLinear(x, scale, zero_point)` of constants, as tract 0.23.9 computes it
/// (`tract_onnx::ops::quant::DequantizeLinear::wire`), or `None` when tract would take a path
/// this does not mirror.
fn dequantised(
    x: &pb::TensorProto,
    scale: &pb::TensorProto,
    zero_point: Option<&pb::TensorProto>,
    axis: i64,
) -> Option<pb::TensorProto> {
    let q = integers(x)?;
    let scales = floats(scale)?;
    let zero_points = match zero_point {
        Some(z) if z.data_type == x.data_type => integers(z)?,
        Some(_) => return None,
        None => vec![0],
    };
    let len = x
        .dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))?;
    if q.len() != len || scales.is_empty() || zero_points.is_empty() {
        return None;
    }
    let values: Vec<f32> = if scales.len() == 1 && zero_points.len() == 1 {
        let (s, z) = (scales[0], zero_points[0]);
        q.iter().map(|&q| q.wrapping_sub(z) as f32 * s).collect()
    } else {
        let rank = x.dims.len() as i64;
        let axis = if axis < 0 { axis + rank } else { axis };
        if !(0..rank).contains(&axis) {
            return None;
        }
        let axis = axis as usize;
        let channels = x.dims[axis] as usize;
        let per_channel = |v: usize| v == 1 || v == channels;
        if !per_channel(scales.len()) || !per_channel(zero_points.len()) || channels == 0 {
            return None;
        }
        let inner: usize = x.dims[axis + 1..].iter().map(|&d| d as usize).product();
        let at = |len: usize, c: usize| if len == 1 { 0 } else { c };
        q.iter()
            .enumerate()
            .map(|(i, &q)| {
                let c = (i / inner.max(1)) % channels;
                let z = zero_points[at(zero_points.len(), c)] as f32;
                (q as f32 - z) * scales[at(scales.len(), c)]
            })
            .collect()
    };
    Some(pb::TensorProto {
        dims: x.dims.clone(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    })
}

/// Some exporters give many nodes the same name (Silero's OpenVINO export has fifteen
/// `F0::anon` constants); tract needs unique node names. Duplicates are renamed after their
/// first output (unique in a valid graph), with a suffix if that name is taken too.
pub fn unique_node_names(model: &mut pb::ModelProto) -> usize {
    fn fix(g: &mut pb::GraphProto) -> usize {
        let mut renamed = 0;
        let mut count: HashMap<String, usize> = HashMap::new();
        for n in &g.node {
            *count.entry(n.name.clone()).or_insert(0) += 1;
        }
        let mut taken: std::collections::HashSet<String> =
            g.node.iter().map(|n| n.name.clone()).collect();
        for n in &mut g.node {
            if !n.name.is_empty() && count[&n.name] > 1 {
                let base = n
                    .output
                    .first()
                    .filter(|o| !o.is_empty())
                    .cloned()
                    .unwrap_or_else(|| n.name.clone());
                let mut name = base.clone();
                let mut k = 1;
                while taken.contains(&name) {
                    name = format!("{base}#{k}");
                    k += 1;
                }
                taken.insert(name.clone());
                n.name = name;
                renamed += 1;
            }
            for a in &mut n.attribute {
                if let Some(sub) = a.g.as_mut() {
                    renamed += fix(sub);
                }
                for sub in &mut a.graphs {
                    renamed += fix(sub);
                }
            }
        }
        renamed
    }
    model.graph.as_mut().map_or(0, fix)
}

/// Names of the ONNX element types, for messages.
pub fn elem_type_name(t: i32) -> &'static str {
    match t {
        1 => "f32",
        2 => "u8",
        3 => "i8",
        4 => "u16",
        5 => "i16",
        6 => "i32",
        7 => "i64",
        8 => "string",
        9 => "bool",
        10 => "f16",
        11 => "f64",
        12 => "u32",
        13 => "u64",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::tensor_proto::DataType as D;
    use tract_onnx::prelude::*;

    fn tensor(name: &str, dims: &[i64], data_type: D, raw: Vec<u8>) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: data_type as i32,
            raw_data: raw,
            ..Default::default()
        }
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn node(op: &str, inputs: &[&str], output: &str, axis: Option<i64>) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            name: output.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute: axis
                .map(|i| pb::AttributeProto {
                    name: "axis".into(),
                    r#type: AttributeType::Int as i32,
                    i,
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    fn value(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
        use pb::tensor_shape_proto::{Dimension, dimension::Value};
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: D::Float as i32,
                    shape: Some(pb::TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|&d| Dimension {
                                value: Some(Value::DimValue(d)),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// `Conv(x, DQ(w int8, per output channel, zero points)) + DQ(c uint8, per tensor)`,
    /// with an int32 bias `DQ(b)`: the weight forms a QDQ model's quantiser writes.
    fn model() -> pb::ModelProto {
        let w: Vec<u8> = (0..4 * 3 * 3 * 3)
            .map(|i: i32| (i * 37 % 255 - 127) as i8 as u8)
            .collect();
        let c: Vec<u8> = (0..4).map(|i| 60 + 50 * i as u8).collect();
        let b: Vec<u8> = [-700i32, 12, 3000, -5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let graph = pb::GraphProto {
            name: "g".into(),
            node: vec![
                node("DequantizeLinear", &["w", "w_s", "w_z"], "w_f", Some(0)),
                node("DequantizeLinear", &["b", "b_s"], "b_f", None),
                node("DequantizeLinear", &["c", "c_s", "c_z"], "c_f", None),
                node("Conv", &["x", "w_f", "b_f"], "conv", None),
                node("Add", &["conv", "c_f"], "y", None),
            ],
            initializer: vec![
                tensor("w", &[4, 3, 3, 3], D::Int8, w),
                tensor("w_s", &[4], D::Float, f32s(&[0.013, 0.002, 0.1, 0.0071])),
                tensor("w_z", &[4], D::Int8, vec![0, 3, 0xfe, 0]),
                tensor("b", &[4], D::Int32, b),
                tensor("b_s", &[], D::Float, f32s(&[0.00037])),
                tensor("c", &[1, 4, 1, 1], D::Uint8, c),
                tensor("c_s", &[], D::Float, f32s(&[0.021])),
                tensor("c_z", &[], D::Uint8, vec![128]),
            ],
            input: vec![value("x", &[1, 3, 5, 5])],
            output: vec![value("y", &[1, 4, 3, 3])],
            ..Default::default()
        };
        pb::ModelProto {
            ir_version: 7,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(graph),
            ..Default::default()
        }
    }

    fn run(proto: &pb::ModelProto) -> Vec<f32> {
        let plan = tract_onnx::onnx()
            .model_for_proto_model(proto)
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let x: Vec<f32> = (0..75).map(|i| (i as f32 * 0.37).sin()).collect();
        let x = Tensor::from_shape(&[1, 3, 5, 5], &x).unwrap();
        let y = plan.run(tvec!(x.into_tvalue())).unwrap();
        y[0].try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn folded_weights_give_tract_s_bits() {
        let original = model();
        let mut folded = original.clone();
        assert_eq!(fold_constant_dequantisation(&mut folded), 3);
        let g = folded.graph.as_ref().unwrap();
        assert!(g.node.iter().all(|n| n.op_type != "DequantizeLinear"));
        // The integer initializers went with the nodes that read them.
        let names: Vec<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["w_f", "b_f", "c_f"]);
        assert_eq!(run(&folded), run(&original));
    }

    #[test]
    fn dequantisations_it_does_not_mirror_are_left_to_tract() {
        let mut m = model();
        let g = m.graph.as_mut().unwrap();
        // A zero point of another type than the weights, and an axis out of range.
        g.initializer[2] = tensor("w_z", &[4], D::Uint8, vec![0; 4]);
        g.node[2].attribute.push(pb::AttributeProto {
            name: "axis".into(),
            r#type: AttributeType::Int as i32,
            i: 9,
            ..Default::default()
        });
        g.initializer[7] = tensor("c_z", &[4], D::Uint8, vec![128; 4]);
        assert_eq!(fold_constant_dequantisation(&mut m), 1);
    }
}
