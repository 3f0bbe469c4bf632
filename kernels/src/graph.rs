//! Reading tract's decluttered graph: the patterns the agent's operators replace
//! ([`crate::qconv`], [`crate::depthwise`], [`crate::pointwise`], ...), the facts they check,
//! and what their rewrites and evaluations share.

use std::sync::Arc;

use std::collections::HashSet;
use tract_onnx::tract_core::internal::*;

use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::change_axes::AxisChange;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::dummy::Dummy;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::optim::change_axes::change_axes;
use tract_onnx::tract_core::optim::{Optimizer, OptimizerSession, TypedPass};

/// The f32 constant behind `outlet`, if it is one.
pub(crate) fn konst(model: &TypedModel, outlet: OutletId) -> TractResult<Option<Arc<Tensor>>> {
    Ok(model
        .outlet_fact(outlet)?
        .konst
        .clone()
        .filter(|k| k.datum_type() == f32::datum_type()))
}

/// tract's declutter, except that convolutions keep the layout of the ONNX file (channels
/// first). On a host with a channel-last depthwise kernel (aarch64: tract-linalg's
/// `depthwise_c_f32`), tract's `Conv` asks for its input channel-last and its `ChangeAxes` pass
/// carries that through the graph, so the depthwise and the 1x1 convolutions around it reach
/// the rewrites as `HWC`, which they do not take: on aarch64 most of them stayed float. With
/// this declutter every architecture gets the same graph, and the same operators.
pub fn declutter(model: &mut TypedModel) -> TractResult<()> {
    let mut optimizer = Optimizer::declutter();
    let mut replaced = 0;
    for pass in optimizer.passes.iter_mut() {
        if format!("{pass:?}") == "ChangeAxes" {
            *pass = Box::<KeepConvLayout>::default();
            replaced += 1;
        }
    }
    ensure!(
        replaced == 1,
        "tract's declutter has {replaced} ChangeAxes passes, not one: the pinned tract changed, \
         review kernels::graph::declutter"
    );
    optimizer.optimize(model)
}

/// tract's `ChangeAxes` pass without the suggestions of convolutions: the other operators'
/// suggested changes, and the removal of axes of size 1, are made as tract makes them.
#[derive(Clone, Debug, Default)]
struct KeepConvLayout {
    /// Changes already proposed (each is tried once).
    tried: HashSet<AxisChange>,
    /// The node to resume from: the one whose change was last applied.
    from: usize,
}

impl TypedPass for KeepConvLayout {
    fn reset(&mut self) -> TractResult<()> {
        self.tried.clear();
        self.from = 0;
        Ok(())
    }

    fn next(
        &mut self,
        _session: &mut OptimizerSession,
        model: &TypedModel,
    ) -> TractResult<Option<TypedModelPatch>> {
        let mut explored = HashSet::new();
        let mut locked = model.output_outlets()?.to_vec();
        locked.extend(model.input_outlets()?.iter());
        for node in &model.nodes()[self.from..] {
            if node.op_is::<Dummy>() {
                continue;
            }
            let suggested = if node.op_is::<Conv>() {
                tvec!()
            } else {
                node.op.suggested_axis_changes()?
            };
            let unit_axes = node.outputs.iter().enumerate().flat_map(|(slot, o)| {
                o.fact
                    .shape
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| d.is_one())
                    .map(move |(axis, _)| AxisChange {
                        outlet: OutletId::new(node.id, slot),
                        op: AxisOp::Rm(axis),
                    })
                    .collect::<Vec<_>>()
            });
            let changes = suggested
                .into_iter()
                .map(|(io, op)| AxisChange {
                    outlet: io.as_outlet(node),
                    op,
                })
                .chain(unit_axes);
            for change in changes {
                if self.tried.insert(change.clone())
                    && let Some((patch, _)) =
                        change_axes(model, &change, &locked, &[], &mut explored)?
                {
                    self.from = node.id;
                    return Ok(Some(patch));
                }
            }
        }
        Ok(None)
    }
}

/// Applies the patch `at` proposes for each node, in id order, then compacts the model.
/// Returns how many were applied. One patch at a time: a chain's input is often the previous
/// chain's output, replaced by the previous patch; node ids stay valid until the compaction.
pub(crate) fn rewrite_each(
    model: &mut TypedModel,
    mut at: impl FnMut(&TypedModel, usize) -> TractResult<Option<TypedModelPatch>>,
) -> TractResult<usize> {
    let mut n = 0;
    for id in 0..model.nodes().len() {
        if let Some(patch) = at(model, id)? {
            patch.apply(model)?;
            n += 1;
        }
    }
    if n > 0 {
        model.compact()?;
    }
    Ok(n)
}

/// `EvalOp::eval` of an operator from one f32 tensor to one f32 tensor of `shape`: `run` gets
/// the input's values and the output's (zeros) and fills the output.
pub(crate) fn eval_f32(
    inputs: &[TValue],
    shape: &[usize],
    run: impl FnOnce(&[f32], &mut [f32]) -> TractResult<()>,
) -> TractResult<TVec<TValue>> {
    let x = inputs[0].try_as_plain_ram()?;
    // Zeros, not `Tensor::uninitialized`: `run` gets a `&mut [f32]`, which must not cover
    // uninitialised memory.
    let mut y = Tensor::zero::<f32>(shape)?;
    {
        let mut ram = y.try_as_plain_ram_mut()?;
        run(x.as_slice::<f32>()?, ram.as_slice_mut::<f32>()?)?;
    }
    Ok(tvec!(y.into_tvalue()))
}

/// The type of a tensor an operator reads or writes as bytes (`u8`) or as values (`f32`).
pub(crate) fn bytes_or_f32(bytes: bool) -> DatumType {
    if bytes {
        u8::datum_type()
    } else {
        f32::datum_type()
    }
}

/// An output tensor of bytes or values of `shape`, zeros: the output is written through a
/// `&mut [_]`, which must not cover uninitialised memory.
pub(crate) fn zeroed_output(bytes: bool, shape: &[usize]) -> TractResult<Tensor> {
    Tensor::zero_dt(bytes_or_f32(bytes), shape)
}

/// The shape of `outlet` when every dimension is known.
pub(crate) fn concrete_shape(
    model: &TypedModel,
    outlet: OutletId,
) -> TractResult<Option<TVec<usize>>> {
    Ok(model
        .outlet_fact(outlet)?
        .shape
        .as_concrete()
        .map(TVec::from))
}

/// The only node reading `node`'s single output, if there is exactly one and the output is
/// not one of the model's.
pub(crate) fn sole_successor(model: &TypedModel, node: &TypedNode) -> Option<usize> {
    match &*node.outputs {
        [o] if o.successors.len() == 1
            && !model.output_outlets().ok()?.contains(&node.id.into()) =>
        {
            Some(o.successors[0].node)
        }
        _ => None,
    }
}

/// Whether `node` is `max(x, 0)` with a constant zero: a ReLU, as tract declutters it.
pub(crate) fn is_relu(model: &TypedModel, node: &TypedNode) -> TractResult<bool> {
    if node
        .op_as::<TypedBinOp>()
        .is_none_or(|b| b.0.name() != "Max")
        || node.inputs.len() != 2
    {
        return Ok(false);
    }
    for input in &node.inputs {
        if let Some(k) = konst(model, *input)? {
            let zeros = k
                .try_as_plain_ram()?
                .as_slice::<f32>()?
                .iter()
                .all(|&v| v == 0.0);
            return Ok(zeros && k.len() == 1);
        }
    }
    Ok(false)
}

/// A float 1x1 convolution of one channels-first image as tract declutters it: an `EinSum`
/// with constant weights `[m, k]`, read only by an `Add` of a constant bias of `m` values,
/// or without bias (zeros).
pub(crate) struct Conv1x1<'a> {
    pub x: OutletId,
    pub m: usize,
    pub k: usize,
    pub weights: Arc<Tensor>,
    pub bias: Arc<Tensor>,
    /// The `Add` (the `EinSum` itself without bias): what the convolution's readers read.
    pub add: &'a TypedNode,
}

/// The 1x1 convolution whose `EinSum` is `node`, if it is one.
pub(crate) fn conv1x1_at<'a>(
    model: &'a TypedModel,
    node: &'a TypedNode,
) -> TractResult<Option<Conv1x1<'a>>> {
    let Some(einsum) = node.op_as::<EinSum>() else {
        return Ok(None);
    };
    if einsum.q_params.is_some() || einsum.operating_dt != f32::datum_type() {
        return Ok(None);
    }
    if !matches!(
        &*einsum.axes.to_string(),
        "IHW,OI->OHW" | "NIHW,OI->OHW" | "IHW,OI->NOHW" | "NIHW,OI->NOHW"
    ) {
        return Ok(None);
    }
    let x = node.inputs[0];
    let Some(weights) = konst(model, node.inputs[1])?.filter(|w| w.rank() == 2) else {
        return Ok(None);
    };
    let (m, k) = (weights.shape()[0], weights.shape()[1]);
    // Channels first in memory: `[I, H, W]`, or `[1, I, H, W]` (one image).
    let channels_first = match concrete_shape(model, x)?.as_deref() {
        Some(&[i, _, _]) => i == k,
        Some(&[1, i, _, _]) => i == k,
        _ => false,
    };
    if model.outlet_fact(x)?.datum_type != f32::datum_type() || !channels_first {
        return Ok(None);
    }
    let product = concrete_shape(model, node.id.into())?;
    let (bias, add) = match bias_add(model, node, m, product.as_deref())? {
        Some(found) => found,
        // No bias after it (a convolution without bias, or one whose bias Add comes after
        // a quantiser): the product alone, with a bias of zeros.
        None if product
            .as_ref()
            .is_some_and(|p| p.len() >= 3 && p[p.len() - 3] == m) =>
        {
            (Arc::new(tensor1(&vec![0f32; m])), node)
        }
        None => return Ok(None),
    };
    Ok(Some(Conv1x1 {
        x,
        m,
        k,
        weights,
        bias,
        add,
    }))
}

/// The `Add` of a constant bias of `m` values along the output channels that alone reads the
/// product `node` (of shape `product`), and the bias.
fn bias_add<'a>(
    model: &'a TypedModel,
    node: &'a TypedNode,
    m: usize,
    product: Option<&[usize]>,
) -> TractResult<Option<(Arc<Tensor>, &'a TypedNode)>> {
    let Some(add) = sole_successor(model, node).map(|n| model.node(n)) else {
        return Ok(None);
    };
    if add
        .op_as::<TypedBinOp>()
        .is_none_or(|b| b.0.name() != "Add")
    {
        return Ok(None);
    }
    let bias_input = if add.inputs[0] == node.id.into() {
        1
    } else {
        0
    };
    let Some(bias) = konst(model, add.inputs[bias_input])?.filter(|b| b.len() == m) else {
        return Ok(None);
    };
    // The bias must run along the output channels (right-aligned against the product's
    // shape, every other axis 1), and the sum must keep the product's shape: a constant of
    // `m` values along another axis, or one that broadcasts the sum wider, is not a bias.
    let (Some(product), Some(sum)) = (product, concrete_shape(model, add.id.into())?) else {
        return Ok(None);
    };
    let channel_axis = product.len() - 3;
    let offset = product.len().checked_sub(bias.rank());
    let along_channels = offset.is_some_and(|offset| {
        bias.shape().iter().enumerate().all(|(i, &d)| {
            if offset + i == channel_axis {
                d == m
            } else {
                d == 1
            }
        }) && (m == 1 || offset <= channel_axis)
    });
    if *product != *sum || product[channel_axis] != m || !along_channels {
        return Ok(None);
    }
    Ok(Some((bias, add)))
}

/// A float 2-D convolution of one channels-first image (`CHW`, or `NCHW` with one image),
/// OIHW constant kernel and constant bias, explicit, no or `SAME` padding.
pub(crate) struct ConvNode {
    pub x: OutletId,
    pub group: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub in_hw: [usize; 2],
    pub out_hw: [usize; 2],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// Spacing of the kernel's taps; only [`crate::qconv`] takes more than 1.
    pub dilation: [usize; 2],
    /// Padding before (top, left); the padding after follows from the output size.
    pub pad: [usize; 2],
    pub weights: Arc<Tensor>,
    pub bias: Arc<Tensor>,
    pub out_shape: TVec<usize>,
}

/// The convolution `node`, if it is one of those.
pub(crate) fn conv_at(model: &TypedModel, node: &TypedNode) -> TractResult<Option<ConvNode>> {
    let Some(conv) = node.op_as::<Conv>() else {
        return Ok(None);
    };
    let spec = &conv.pool_spec;
    if conv.q_params.is_some()
        || conv.kernel_fmt != KernelFormat::OIHW
        || spec.kernel_shape.len() != 2
        || spec.dilations.as_ref().is_some_and(|d| d.len() != 2)
        || node.inputs.len() != 3
    {
        return Ok(None);
    }
    let dilation = spec.dilations.as_ref().map_or([1, 1], |d| [d[0], d[1]]);
    let x = node.inputs[0];
    if model.outlet_fact(x)?.datum_type != f32::datum_type() {
        return Ok(None);
    }
    let (Some(x_shape), Some(y_shape)) = (
        concrete_shape(model, x)?,
        concrete_shape(model, node.id.into())?,
    ) else {
        return Ok(None);
    };
    let (in_hw, out_hw) = match (spec.data_format, &*x_shape, &*y_shape) {
        (DataFormat::CHW, &[_, h, w], &[_, oh, ow]) => ([h, w], [oh, ow]),
        (DataFormat::NCHW, &[1, _, h, w], &[1, _, oh, ow]) => ([h, w], [oh, ow]),
        _ => return Ok(None),
    };
    let stride = spec
        .strides
        .as_ref()
        .map_or([1, 1], |s| [s[0], s.get(1).copied().unwrap_or(s[0])]);
    let kernel = [spec.kernel_shape[0], spec.kernel_shape[1]];
    // `auto_pad = SAME_UPPER / SAME_LOWER` (Keras and TensorFlow exports): the padding that
    // gives the output its size, the odd one after (upper) or before (lower).
    let same = |upper: bool| -> [usize; 2] {
        std::array::from_fn(|i| {
            let reach = (kernel[i] - 1) * dilation[i] + 1;
            let total = ((out_hw[i].max(1) - 1) * stride[i] + reach).saturating_sub(in_hw[i]);
            if upper { total / 2 } else { total - total / 2 }
        })
    };
    let pad = match &spec.padding {
        PaddingSpec::Explicit(before, _) if before.len() == 2 => [before[0], before[1]],
        PaddingSpec::Valid => [0, 0],
        PaddingSpec::SameUpper => same(true),
        PaddingSpec::SameLower => same(false),
        _ => return Ok(None),
    };
    let (Some(weights), Some(mut bias)) =
        (konst(model, node.inputs[1])?, konst(model, node.inputs[2])?)
    else {
        return Ok(None);
    };
    // A convolution without bias has a scalar zero: one value per output channel instead.
    if bias.len() == 1 && spec.output_channels > 1 {
        let b = *bias
            .try_as_plain_ram()?
            .as_slice::<f32>()?
            .first()
            .unwrap_or(&0.0);
        bias = Arc::new(tensor1(&vec![b; spec.output_channels]));
    }
    if stride.contains(&0) || dilation.contains(&0) || out_hw.contains(&0) || conv.group == 0 {
        return Ok(None);
    }
    Ok(Some(ConvNode {
        x,
        group: conv.group,
        in_channels: spec.input_channels,
        out_channels: spec.output_channels,
        in_hw,
        out_hw,
        kernel,
        stride,
        dilation,
        pad,
        weights,
        bias,
        out_shape: y_shape,
    }))
}

/// Deterministic test data: the tests need varied values, not statistics.
#[cfg(test)]
pub(crate) mod testing {
    /// What the fused AVX2 product kernel needs (`arch::x86_64::avx2::available`).
    pub const AVX2: &[&str] = &["avx2"];
    /// What the VNNI product kernel needs (`arch::x86_64::vnni::available`).
    pub const VNNI: &[&str] = &["avx512f", "avx512bw", "avx512vl", "avx512vnni"];
    /// What the windowed kernels need (`arch::x86_64::vnni::windows_available`).
    pub const WINDOWS: &[&str] = &[
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512vnni",
        "avx512vbmi",
    ];

    /// Whether this CPU has every one of `features` (names as `is_x86_feature_detected!`
    /// spells them), for a test that skips without them. When one is missing it prints a line
    /// naming `test` and the missing features, and panics if the comma-separated list in the
    /// environment variable `IAT_REQUIRE_CPU_FEATURES` names any of them (`cargo xtask test`
    /// sets it to the features its host has, so a skip there is a failure).
    pub fn cpu_has(test: &str, features: &[&str]) -> bool {
        let missing: Vec<&str> = features.iter().copied().filter(|f| !detected(f)).collect();
        if missing.is_empty() {
            return true;
        }
        eprintln!("SKIPPED {test}: this CPU lacks {}", missing.join(", "));
        let required = std::env::var("IAT_REQUIRE_CPU_FEATURES").unwrap_or_default();
        let wanted = required_of(&missing, &required);
        assert!(
            wanted.is_empty(),
            "{test}: IAT_REQUIRE_CPU_FEATURES={required} requires {}, which this CPU lacks",
            wanted.join(", ")
        );
        false
    }

    /// The features of `missing` that the list `required` (comma-separated) names.
    fn required_of<'a>(missing: &[&'a str], required: &str) -> Vec<&'a str> {
        let required: Vec<&str> = required.split(',').map(str::trim).collect();
        missing
            .iter()
            .copied()
            .filter(|f| required.contains(f))
            .collect()
    }

    fn detected(feature: &str) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match feature {
                "avx2" => std::arch::is_x86_feature_detected!("avx2"),
                "fma" => std::arch::is_x86_feature_detected!("fma"),
                "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
                "avx512bw" => std::arch::is_x86_feature_detected!("avx512bw"),
                "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
                "avx512vnni" => std::arch::is_x86_feature_detected!("avx512vnni"),
                "avx512vbmi" => std::arch::is_x86_feature_detected!("avx512vbmi"),
                _ => panic!("cpu_has: unknown feature {feature:?}"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = feature;
            false
        }
    }

    #[test]
    fn required_features_are_those_the_list_names() {
        let missing = ["avx512vnni", "avx512vbmi"];
        assert_eq!(required_of(&missing, ""), Vec::<&str>::new());
        assert_eq!(required_of(&missing, "avx512f,avx512vbmi"), ["avx512vbmi"]);
        assert_eq!(required_of(&missing, " avx512vnni , avx512vbmi"), missing);
        assert_eq!(required_of(&missing, "avx512vnnix"), Vec::<&str>::new());
    }

    /// `n` integers in `[lo, hi]` from a xorshift generator.
    pub fn ints(n: usize, seed: u32, lo: i32, hi: i32) -> Vec<i32> {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                lo + (x % (hi - lo + 1) as u32) as i32
            })
            .collect()
    }

    /// A quantiser on bytes (`[0, 255]`) with this zero point and scale.
    pub fn byte_grid(zero_point: i32, scale: f32) -> crate::qdq::FakeQuant {
        crate::qdq::FakeQuant::byte_grid(zero_point, scale)
    }

    /// `n` values in `[-1, 1]`, steps of 0.001.
    pub fn values(n: usize, seed: u32) -> Vec<f32> {
        ints(n, seed, 0, 2000)
            .into_iter()
            .map(|i| i as f32 / 1000.0 - 1.0)
            .collect()
    }
}
