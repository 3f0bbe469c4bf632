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

/// tract 0.23.9 computes wrong values for `DequantizeLinear -> Softmax -> QuantizeLinear ->
/// DequantizeLinear` once decluttered ([1, 1] instead of [0.73, 0.27]). Removing the
/// QuantizeLinear -> DequantizeLinear pair after the Softmax keeps the Softmax in float: the
/// result differs from the quantised one by at most half a quantisation step, which the golden
/// check's tolerance covers.
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
            let q = only_consumer(&s.output[0], "QuantizeLinear")?;
            let dq = only_consumer(g.node[q].output.first()?, "DequantizeLinear")?;
            Some((si, q, dq))
        });
        let Some((si, q, dq)) = found else { break };
        let softmax_out = g.node[si].output[0].clone();
        let dq_out = g.node[dq].output[0].clone();
        let name = if g.node[si].name.is_empty() {
            softmax_out.clone()
        } else {
            g.node[si].name.clone()
        };
        // The Softmax now produces what the DequantizeLinear produced: consumers and graph
        // outputs keep their names.
        g.node[si].output[0] = dq_out;
        let (first, second) = if q > dq { (q, dq) } else { (dq, q) };
        g.node.remove(first);
        g.node.remove(second);
        done.float_softmax.push(name);
    }
    done
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
