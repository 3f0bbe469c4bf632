//! [`rewrite`](super::rewrite) on whole QDQ graphs as onnxruntime's `quantize_static` writes
//! them (`Q -> DQ -> Conv -> Q -> DQ -> LeakyRelu -> Q -> DQ -> ...`), parsed and decluttered
//! by tract itself, so that each quantised LeakyReLU becomes tract's `LookupTable` over bytes;
//! the agent's optimised graph against tract's own run of the same graph.
//!
//! With power-of-two scales every sum tract computes in float is exact, as is every product
//! of the integer path, so the two graphs must give the same bits, whichever operators each
//! one chose. With any scales, a convolution's bytes may differ from tract's by one step where
//! tract's float sum and the integer one round to different sides of a tie (the module
//! comment of [`super`]); the graph then exposes those bytes, and everything downstream of an
//! equal byte must be equal.

use proptest::prelude::*;
use tract_onnx::pb::{self, attribute_proto::AttributeType, tensor_proto::DataType as D};
use tract_onnx::prelude::*;

/// What follows a convolution's quantise-dequantise pair.
#[derive(Debug, Clone)]
enum Act {
    /// Nothing: the pair is read by the next convolution (or is the output).
    None,
    /// `LeakyRelu` then its own pair: tract folds `DQ -> LeakyRelu -> Q` into a table.
    Leaky(f32),
    /// The same, with the `LeakyRelu`'s f32 output also a model output. tract still makes the
    /// table (a model output is not a successor), and keeps the dequantiser and the
    /// `LeakyRelu` for that output: the convolution has two readers.
    LeakyAlsoOutput(f32),
    /// The same, with the `LeakyRelu`'s f32 output also read by a `Neg` (a model output): no
    /// table.
    LeakyAlsoRead(f32),
    /// `PRelu` with one slope per channel, then its pair: not element-wise, no table.
    PerChannel(Vec<f32>),
}

/// One convolution and what follows it.
#[derive(Debug, Clone)]
struct Layer {
    m: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    /// Before and after, per axis.
    pad: [usize; 2],
    act: Act,
    /// The convolution's f32 result is also a model output (a second reader).
    raw_output: bool,
}

/// A chain of convolutions on a `[1, c, h, w]` input.
#[derive(Debug, Clone)]
struct Net {
    c: usize,
    hw: [usize; 2],
    /// Power-of-two scales (see the module comment).
    exact: bool,
    /// `int8` activations (`QuantizeLinear` to `i8`) instead of `uint8`: everywhere, or only
    /// on the input (its quantisers and its table).
    signed: bool,
    signed_input: bool,
    /// A LeakyReLU on the input, so that the first convolution reads a table's bytes.
    input_alpha: Option<f32>,
    layers: Vec<Layer>,
    /// The bytes of the last convolution's quantiser are a model output too.
    expose_bytes: bool,
    seed: u32,
}

/// A xorshift generator for the graph's constants.
struct Draw(u32);

impl Draw {
    fn int(&mut self, lo: i32, hi: i32) -> i32 {
        let x = &mut self.0;
        *x ^= *x << 13;
        *x ^= *x >> 17;
        *x ^= *x << 5;
        lo + (*x % (hi - lo + 1) as u32) as i32
    }

    /// A scale: `2^-e` with `e` in `[lo, hi]` for an exact net, else in `[2^-hi, 2^-lo]`.
    fn scale(&mut self, exact: bool, lo: i32, hi: i32) -> f32 {
        if exact {
            2f32.powi(-self.int(lo, hi))
        } else {
            let t = self.int(0, 10_000) as f32 / 10_000.0;
            2f32.powf(-(lo as f32 + t * (hi - lo) as f32))
        }
    }
}

fn attr_ints(name: &str, ints: &[usize]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: ints.iter().map(|&i| i as i64).collect(),
        ..Default::default()
    }
}

fn attr_int(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn attr_float(name: &str, f: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f,
        ..Default::default()
    }
}

fn value(name: &str, data_type: D, dims: &[usize]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: data_type as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(Value::DimValue(d as i64)),
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

/// The graph under construction.
struct Graph {
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    outputs: Vec<pb::ValueInfoProto>,
    signed: bool,
}

impl Graph {
    fn name(&self, prefix: &str) -> String {
        format!("{prefix}_{}", self.nodes.len() + self.inits.len())
    }

    fn init(&mut self, data_type: D, dims: &[usize], raw: Vec<u8>) -> String {
        let name = self.name("c");
        self.inits.push(pb::TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type as i32,
            raw_data: raw,
            ..Default::default()
        });
        name
    }

    fn f32s(&mut self, dims: &[usize], v: &[f32]) -> String {
        self.init(
            D::Float,
            dims,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    }

    fn node(&mut self, op: &str, inputs: &[&str], attribute: Vec<pb::AttributeProto>) -> String {
        let output = self.name(op);
        self.nodes.push(pb::NodeProto {
            op_type: op.into(),
            name: output.clone(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            attribute,
            ..Default::default()
        });
        output
    }

    /// `QuantizeLinear` on the activations' type, then `DequantizeLinear`: the quantised
    /// tensor's and the dequantised one's names.
    fn qdq(&mut self, x: &str, draw: &mut Draw, scale: f32) -> (String, String) {
        let (zp_type, zp) = if self.signed {
            (D::Int8, draw.int(-128, 127) as i8 as u8)
        } else {
            (D::Uint8, draw.int(0, 255) as u8)
        };
        let s = self.f32s(&[], &[scale]);
        let z = self.init(zp_type, &[], vec![zp]);
        let q = self.node("QuantizeLinear", &[x, &s, &z], vec![]);
        let dq = self.node("DequantizeLinear", &[&q, &s, &z], vec![]);
        (q, dq)
    }

    fn output(&mut self, name: &str, data_type: D, dims: &[usize]) {
        self.outputs.push(value(name, data_type, dims));
    }
}

impl Net {
    fn out_hw(&self, upto: usize) -> [usize; 2] {
        self.layers[..upto].iter().fold(self.hw, |hw, l| {
            [0, 1].map(|i| (hw[i] + 2 * l.pad[i] - l.kernel[i]) / l.stride[i] + 1)
        })
    }

    /// The ONNX model, as `quantize_static` (QDQ, symmetric int8 weights per channel, int32
    /// biases) writes it.
    fn proto(&self) -> pb::ModelProto {
        let mut draw = Draw(self.seed.wrapping_mul(2_654_435_761).max(1));
        let mut g = Graph {
            nodes: vec![],
            inits: vec![],
            outputs: vec![],
            signed: self.signed || self.signed_input,
        };
        let exact = self.exact;
        let activations = if self.signed { D::Int8 } else { D::Uint8 };
        let mut scale_x = draw.scale(exact, 6, 7);
        let (_, mut x) = g.qdq("x", &mut draw, scale_x);
        if let Some(alpha) = self.input_alpha {
            let a = g.node("LeakyRelu", &[&x], vec![attr_float("alpha", alpha)]);
            scale_x = draw.scale(exact, 6, 7);
            x = g.qdq(&a, &mut draw, scale_x).1;
        }
        g.signed = self.signed;
        let mut c = self.c;
        for (i, l) in self.layers.iter().enumerate() {
            let [kh, kw] = l.kernel;
            let k = c * kh * kw;
            let s_w: Vec<f32> = (0..l.m).map(|_| draw.scale(exact, 7, 9)).collect();
            // Symmetric MinMax: each row reaches +-127.
            let w: Vec<u8> = (0..l.m * k)
                .map(|j| match j % k {
                    0 if (j / k).is_multiple_of(2) => 127,
                    0 => -127,
                    _ => draw.int(-127, 127),
                })
                .map(|q| q as i8 as u8)
                .collect();
            let w = g.init(D::Int8, &[l.m, c, kh, kw], w);
            let w_s = g.f32s(&[l.m], &s_w);
            let w_z = g.init(D::Int8, &[l.m], vec![0; l.m]);
            let w = g.node(
                "DequantizeLinear",
                &[&w, &w_s, &w_z],
                vec![attr_int("axis", 0)],
            );
            let b: Vec<u8> = (0..l.m)
                .flat_map(|_| draw.int(-3000, 3000).to_le_bytes())
                .collect();
            let b = g.init(D::Int32, &[l.m], b);
            let b_s: Vec<f32> = s_w.iter().map(|s| s * scale_x).collect();
            let b_s = g.f32s(&[l.m], &b_s);
            let b = g.node("DequantizeLinear", &[&b, &b_s], vec![attr_int("axis", 0)]);
            let [py, px] = l.pad;
            let conv = g.node(
                "Conv",
                &[&x, &w, &b],
                vec![
                    attr_ints("kernel_shape", &l.kernel),
                    attr_ints("strides", &l.stride),
                    attr_ints("pads", &[py, px, py, px]),
                ],
            );
            let [oh, ow] = self.out_hw(i + 1);
            let dims = [1, l.m, oh, ow];
            if l.raw_output {
                g.output(&conv, D::Float, &dims);
            }
            scale_x = draw.scale(exact, 3, 5);
            let (q, dq) = g.qdq(&conv, &mut draw, scale_x);
            x = dq;
            let last = i + 1 == self.layers.len();
            match &l.act {
                Act::None => {}
                Act::Leaky(alpha) | Act::LeakyAlsoOutput(alpha) | Act::LeakyAlsoRead(alpha) => {
                    if last && self.expose_bytes {
                        g.output(&q, activations, &dims);
                    }
                    let a = g.node("LeakyRelu", &[&x], vec![attr_float("alpha", *alpha)]);
                    if matches!(l.act, Act::LeakyAlsoOutput(_)) {
                        g.output(&a, D::Float, &dims);
                    }
                    if matches!(l.act, Act::LeakyAlsoRead(_)) {
                        let neg = g.node("Neg", &[&a], vec![]);
                        g.output(&neg, D::Float, &dims);
                    }
                    scale_x = draw.scale(exact, 4, 6);
                    x = g.qdq(&a, &mut draw, scale_x).1;
                }
                Act::PerChannel(slopes) => {
                    let s = g.f32s(&[l.m, 1, 1], slopes);
                    let a = g.node("PRelu", &[&x, &s], vec![]);
                    scale_x = draw.scale(exact, 4, 6);
                    x = g.qdq(&a, &mut draw, scale_x).1;
                }
            }
            c = l.m;
        }
        let [oh, ow] = self.out_hw(self.layers.len());
        g.output(&x, D::Float, &[1, c, oh, ow]);
        pb::ModelProto {
            ir_version: 7,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(pb::GraphProto {
                name: "net".into(),
                node: g.nodes,
                initializer: g.inits,
                input: vec![value("x", D::Float, &[1, self.c, self.hw[0], self.hw[1]])],
                output: g.outputs,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn input(&self) -> Tensor {
        let [h, w] = self.hw;
        let x: Vec<f32> =
            crate::graph::testing::ints(self.c * h * w, self.seed ^ 0xabc, -2000, 2000)
                .into_iter()
                .map(|i| i as f32 / 1000.0)
                .collect();
        Tensor::from_shape(&[1, self.c, h, w], &x).unwrap()
    }
}

/// What each run gave: tract's outputs and the agent's, the rewrites, the agent's operators.
struct Runs {
    tract: TVec<Tensor>,
    agent: TVec<Tensor>,
    rewrites: crate::Rewrites,
    /// The names of the agent's operators, and how many of its `QConv`s write the bytes a
    /// table reads.
    ops: Vec<String>,
    into_tables: usize,
}

fn runs(net: &Net) -> Runs {
    let typed = tract_onnx::onnx()
        .model_for_proto_model(&net.proto())
        .unwrap()
        .into_typed()
        .unwrap();
    let x = net.input();
    let run = |m: TypedModel| -> TVec<Tensor> {
        m.into_runnable()
            .unwrap()
            .run(tvec!(x.clone().into_tvalue()))
            .unwrap()
            .into_iter()
            .map(|t| t.into_tensor())
            .collect()
    };
    let tract = run(typed.clone().into_optimized().unwrap());
    let mut agent = typed;
    let rewrites = crate::optimise(&mut agent).unwrap();
    let ops = agent
        .nodes()
        .iter()
        .map(|n| n.op.name().to_string())
        .collect();
    let into_tables = agent
        .nodes()
        .iter()
        .filter(|n| n.op_is::<super::QConv>())
        .filter(|n| {
            n.outputs[0]
                .successors
                .iter()
                .any(|s| is_table(&agent.node(s.node).op.name()))
        })
        .count();
    Runs {
        tract,
        agent: run(agent),
        rewrites,
        ops,
        into_tables,
    }
}

/// Whether an operator is a table over bytes: tract's, or the agent's for `u8`.
fn is_table(op: &str) -> bool {
    op == "LookupTable" || op == "ByteTable"
}

impl Runs {
    fn count(&self, op: &str) -> usize {
        self.ops.iter().filter(|o| *o == op).count()
    }

    fn tables(&self) -> usize {
        self.ops.iter().filter(|o| is_table(o)).count()
    }

    /// Every output the same, bit for bit.
    fn same_bits(&self) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.tract.len(), self.agent.len());
        for (i, (t, a)) in self.tract.iter().zip(&self.agent).enumerate() {
            prop_assert_eq!(t.datum_type(), a.datum_type(), "output {}", i);
            prop_assert_eq!(t.shape(), a.shape(), "output {}", i);
            // Bits, not values: `==` on f32 would equate 0.0 and -0.0.
            let bits = |t: &Tensor| -> Vec<u32> {
                let t = t.cast_to::<f32>().unwrap();
                let t = t.try_as_plain_ram().unwrap();
                t.as_slice::<f32>()
                    .unwrap()
                    .iter()
                    .map(|f| f.to_bits())
                    .collect()
            };
            prop_assert!(
                bits(t) == bits(a),
                "output {}: tract {:?}\nagent {:?}",
                i,
                t,
                a
            );
        }
        Ok(())
    }
}

fn layer(kernel_max: usize) -> impl Strategy<Value = Layer> {
    (
        // (Not one channel: tract writes a 1x1 convolution with one input or output channel as
        // an `EinSum` with weights of rank 1, which [`crate::graph::conv1x1_at`] does not take.)
        2usize..=6,
        (1usize..=kernel_max, 1usize..=kernel_max),
        (1usize..=2, 1usize..=2),
        (0usize..=2, 0usize..=2),
        prop_oneof![Just(None), (1u32..=300).prop_map(Some)],
    )
        .prop_map(|(m, (kh, kw), (sy, sx), (py, px), alpha)| Layer {
            m,
            kernel: [kh, kw],
            // (Along an axis where the kernel is 1, tract moves the stride out of the
            // convolution into a `Downsample`, which it pushes up the graph, between the
            // previous convolution and its bias: neither is then the pattern the rewrite takes.)
            stride: [if kh == 1 { 1 } else { sy }, if kw == 1 { 1 } else { sx }],
            pad: [py % kh, px % kw],
            act: alpha.map_or(Act::None, |a| Act::Leaky(a as f32 / 1000.0)),
            raw_output: false,
        })
}

fn net(exact: bool, layers: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Net> {
    (
        2usize..=5,
        (3usize..=24, 3usize..=40),
        prop_oneof![Just(None), (1u32..=300).prop_map(Some)],
        prop::collection::vec(layer(3), layers),
        any::<u32>(),
    )
        .prop_map(move |(c, hw, alpha, layers, seed)| Net {
            c,
            // At least one output pixel after every layer: the smallest input that gives
            // one, from the last layer back, added to the size drawn.
            hw: {
                let need = |a: usize| {
                    layers.iter().rev().fold(1, |out, l| {
                        ((out - 1) * l.stride[a] + l.kernel[a])
                            .saturating_sub(2 * l.pad[a])
                            .max(1)
                    })
                };
                [hw.0 + need(0), hw.1 + need(1)]
            },
            exact,
            signed: false,
            signed_input: false,
            input_alpha: alpha.map(|a| a as f32 / 1000.0),
            layers,
            expose_bytes: false,
            seed,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Chains of one to three convolutions, each followed or not by a quantised LeakyReLU:
    /// every convolution runs as a `QConv`, writing a table's bytes where one follows, and the
    /// outputs are tract's bits.
    #[test]
    fn exact_scales_give_tracts_bits(net in net(true, 1..=3)) {
        let runs = runs(&net);
        let tables = net.layers.iter().filter(|l| matches!(l.act, Act::Leaky(_))).count();
        prop_assert_eq!(runs.rewrites.int8_convolutions, net.layers.len());
        prop_assert_eq!(runs.tables(), tables + net.input_alpha.is_some() as usize);
        prop_assert_eq!(runs.into_tables, tables);
        runs.same_bits()?;
    }

    /// One convolution between two tables with any scales: its bytes within one step of
    /// tract's (and rarely off), the table's output equal wherever the bytes are.
    #[test]
    fn any_scales_within_one_step(net in net(false, 1..=1), alpha in 1u32..=300) {
        let mut net = net;
        net.layers[0].act = Act::Leaky(alpha as f32 / 1000.0);
        net.expose_bytes = true;
        let runs = runs(&net);
        prop_assert_eq!(runs.rewrites.int8_convolutions, 1);
        prop_assert_eq!(runs.into_tables, 1);
        let plain = |t: &Tensor| {
            t.try_as_plain_ram().unwrap().as_slice::<u8>().unwrap().to_vec()
        };
        let (tq, aq) = (plain(&runs.tract[0]), plain(&runs.agent[0]));
        let values = |t: &Tensor| {
            t.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec()
        };
        let (ty, ay) = (values(&runs.tract[1]), values(&runs.agent[1]));
        let mut off = 0;
        for (i, (t, a)) in tq.iter().zip(&aq).enumerate() {
            prop_assert!(t.abs_diff(*a) <= 1, "byte {} is {} against tract's {}", i, a, t);
            if t == a {
                prop_assert_eq!(ty[i].to_bits(), ay[i].to_bits(), "value {}", i);
            } else {
                off += 1;
            }
        }
        prop_assert!(off * 100 <= tq.len().max(100), "{} of {} bytes off by one", off, tq.len());
    }
}

/// A net of two 3x3 convolutions (the second with a stride of 2), each followed by a
/// quantised LeakyReLU, on powers of two.
fn two_layers() -> Net {
    let layer = |m, stride| Layer {
        m,
        kernel: [3, 3],
        stride: [stride, stride],
        pad: [1, 1],
        act: Act::Leaky(0.1),
        raw_output: false,
    };
    Net {
        c: 3,
        hw: [14, 37],
        exact: true,
        signed: false,
        signed_input: false,
        input_alpha: Some(0.2),
        layers: vec![layer(5, 1), layer(4, 2)],
        expose_bytes: false,
        seed: 7,
    }
}

#[test]
fn the_fused_pattern_is_the_one_tract_makes() {
    // The baseline of the cases below: both convolutions run as `QConv`s writing bytes, no
    // float `Conv` and no quantise-dequantise pair left around them.
    let runs = runs(&two_layers());
    assert_eq!(runs.rewrites.int8_convolutions, 2);
    assert_eq!(runs.into_tables, 2);
    assert_eq!(runs.tables(), 3);
    assert_eq!(runs.count("DequantizeLinearF32"), 1, "only the output's");
    runs.same_bits().unwrap();
}

#[test]
fn int8_activations_are_not_read_as_bytes() {
    // `QuantizeLinear` to i8: tract's tables read and write i8, which `QConv`'s byte path does
    // not take (neither the bytes it reads nor those it writes): the convolutions stay in
    // float and give tract's bits. With and without a table in front of the first one.
    for input_alpha in [Some(0.2), None] {
        let net = Net {
            signed: true,
            input_alpha,
            ..two_layers()
        };
        let runs = runs(&net);
        assert_eq!(runs.rewrites.int8_convolutions, 0, "{input_alpha:?}");
        assert_eq!(runs.count("QConv"), 0);
        assert_eq!(runs.tables(), 2 + input_alpha.is_some() as usize);
        runs.same_bits().unwrap();
    }
    // Only the input in i8: the first convolution reads an i8 table and stays in float, the
    // second one (bytes to bytes) is rewritten.
    let net = Net {
        signed_input: true,
        ..two_layers()
    };
    let runs = runs(&net);
    assert_eq!(runs.rewrites.int8_convolutions, 1);
    assert_eq!(runs.into_tables, 1);
    runs.same_bits().unwrap();
}

#[test]
fn a_convolution_with_another_reader_stays_in_float() {
    // The first convolution's f32 result is also a model output: replacing its quantiser
    // would leave the float convolution to run as well. Only the second one is rewritten.
    let mut net = two_layers();
    net.layers[0].raw_output = true;
    let runs = runs(&net);
    assert_eq!(runs.rewrites.int8_convolutions, 1);
    assert_eq!(runs.into_tables, 1);
    runs.same_bits().unwrap();
}

#[test]
fn an_activation_that_is_also_an_output_leaves_its_convolution_in_float() {
    // The first LeakyReLU's f32 output is also a model output: tract makes the table for the
    // next convolution and keeps `DQ -> LeakyRelu` for the output, so the first convolution
    // is read by two quantisers (the table's, and the pair in front of the float LeakyReLU)
    // and stays in float.
    let mut net = two_layers();
    net.layers[0].act = Act::LeakyAlsoOutput(0.1);
    let runs = runs(&net);
    assert_eq!(runs.rewrites.int8_convolutions, 1);
    assert_eq!(runs.into_tables, 1);
    assert_eq!(runs.tables(), 3);
    runs.same_bits().unwrap();
}

#[test]
fn an_activation_with_another_reader_stays_in_float() {
    // The first LeakyReLU is also read by another operator: tract makes no table of it, so
    // the convolution before it writes f32 values on its quantiser's grid (a `FakeQuant`
    // pair), the LeakyReLU runs in float, and only the other two tables remain.
    let mut net = two_layers();
    net.layers[0].act = Act::LeakyAlsoRead(0.1);
    let runs = runs(&net);
    assert_eq!(runs.rewrites.int8_convolutions, 2);
    assert_eq!(runs.into_tables, 1);
    assert_eq!(runs.tables(), 2);
    runs.same_bits().unwrap();
}

#[test]
fn a_slope_per_channel_stays_in_float() {
    // PRelu with one slope per channel is not element-wise: no table, the convolution writes
    // f32 values and the PRelu runs in float.
    let mut net = two_layers();
    net.layers[0].act = Act::PerChannel(vec![0.1, 0.25, 0.0, 0.5, 1.5]);
    let runs = runs(&net);
    assert_eq!(runs.rewrites.int8_convolutions, 2);
    assert_eq!(runs.into_tables, 1);
    assert_eq!(runs.tables(), 2);
    runs.same_bits().unwrap();
}
