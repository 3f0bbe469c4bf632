//! Quantise-dequantise pairs run as one pass over the activation.
//!
//! A QDQ model (onnxruntime's `quantize_static(..., QuantFormat.QDQ)`) puts a
//! `QuantizeLinear -> DequantizeLinear` pair on every activation. tract 0.23.9 keeps both as
//! element-wise operators with a scalar loop each and an 8-bit tensor in between: on the int8
//! CenterFace they took 45% of the run time (per-node profile), more than the convolutions.
//! The pair computes `(clamp(round(x / s) + z, lo, hi) - z') * s'`, a function from f32 to f32;
//! [`FakeQuant`] computes exactly that in one loop the compiler vectorises, and [`fuse_pairs`]
//! puts it in place of each pair before tract optimises the model.
//!
//! The numbers are the ones tract computed with the pair (same multiplication by tract's
//! reciprocal of the scale, same ties-to-even rounding, same saturation), checked in the tests
//! below against tract's own operators; only a NaN input differs (tract's pair gives the zero
//! point, this gives the low bound).

use std::sync::Arc;

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::quant::{DequantizeLinearF32, QuantizeLinearI8, QuantizeLinearU8};

/// `QuantizeLinear` followed by `DequantizeLinear`, f32 to f32.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeQuant {
    /// What tract's quantiser multiplies by: the reciprocal of the ONNX scale.
    pub inv_scale: f32,
    /// The quantiser's zero point and the saturation bounds of its integer type.
    pub zero_point: i32,
    pub lo: i32,
    pub hi: i32,
    /// The dequantiser's zero point and scale (usually the quantiser's own).
    pub dq_zero_point: i32,
    pub dq_scale: f32,
}

impl Eq for FakeQuant {}

/// Adding then subtracting 1.5 * 2^23 rounds an f32 of magnitude below 2^22 to an integer,
/// ties to even, in the default rounding mode, with two vectorisable additions (where
/// `f32::round_ties_even` is a library call on baseline x86_64).
pub(crate) const ROUND_MAGIC: f32 = 12_582_912.0;

/// `v` held to `[lo, hi]`, written as comparisons so that the compiler emits the vector
/// min/max instructions (`f32::max` carries NaN rules that keep some loops scalar).
#[inline(always)]
pub(crate) fn clamp(v: f32, lo: f32, hi: f32) -> f32 {
    let v = if v < lo { lo } else { v };
    if v > hi { hi } else { v }
}

/// Float weights `[m, k]` read as int8 rows: per row `o`, the integers `w` in `[-127, 127]`
/// and the scale `s_w[o]` (the row's largest magnitude over 127) with `w * s_w[o]` within
/// 1e-4 steps of every weight; `None` when a row is not on such a grid (then it was not
/// quantised symmetrically per channel, and stays in float).
pub(crate) fn symmetric_int8_rows(
    weights: &[f32],
    m: usize,
    k: usize,
) -> Option<(Vec<i8>, Vec<f32>)> {
    if weights.len() != m * k {
        return None;
    }
    let mut ints = vec![0i8; m * k];
    let mut scales = Vec::with_capacity(m);
    for o in 0..m {
        let row = &weights[o * k..(o + 1) * k];
        let max = row.iter().fold(0f32, |a, &w| a.max(w.abs()));
        let s_w = if max > 0.0 { max / 127.0 } else { 1.0 };
        for (dst, &w) in ints[o * k..(o + 1) * k].iter_mut().zip(row) {
            let q = (w / s_w).round();
            if !(-127.0..=127.0).contains(&q) || (q * s_w - w).abs() > 1e-4 * s_w {
                return None;
            }
            *dst = q as i8;
        }
        scales.push(s_w);
    }
    Some((ints, scales))
}

impl FakeQuant {
    /// A quantiser on bytes (`[0, 255]`) with this zero point and scale, dequantised on the
    /// same grid.
    pub fn byte_grid(zero_point: i32, scale: f32) -> FakeQuant {
        FakeQuant {
            inv_scale: 1.0 / scale,
            zero_point,
            lo: 0,
            hi: 255,
            dq_zero_point: zero_point,
            dq_scale: scale,
        }
    }

    /// Whether the quantised values are bytes (`u8`, `[0, 255]`) with the dequantiser's zero
    /// point, so that an activation can travel as its bytes ([`FakeQuant::quantise_bytes`]) and be
    /// read back exactly ([`FakeQuant::dequantise_bytes`]).
    pub fn is_byte_grid(&self) -> bool {
        self.lo == 0 && self.hi == 255 && self.zero_point == self.dq_zero_point
    }

    /// The quantised bytes of `xs` (for a byte grid): what [`FakeQuant::apply`] would give,
    /// before dequantisation.
    pub fn quantise_bytes(&self, xs: &[f32], out: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has the feature the function is compiled for.
            return unsafe { self.quantise_bytes_avx2(xs, out) };
        }
        self.quantise_bytes_body(xs, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn quantise_bytes_avx2(&self, xs: &[f32], out: &mut [u8]) {
        self.quantise_bytes_body(xs, out)
    }

    /// [`FakeQuant::quantise_bytes`]'s loop, for callers already compiled for a wider
    /// instruction set.
    #[inline(always)]
    pub(crate) fn quantise_bytes_body(&self, xs: &[f32], out: &mut [u8]) {
        let lo = (self.lo - self.zero_point) as f32;
        let hi = (self.hi - self.zero_point) as f32;
        let (inv, z) = (self.inv_scale, self.zero_point as f32);
        for (d, &x) in out.iter_mut().zip(xs) {
            let v = clamp(x * inv, lo, hi);
            // The magic addition rounds (ties to even, before the zero point is added, as in
            // `apply`) and leaves the integer in the low bits, where adding the zero point is
            // exact: the low byte is the quantised value.
            *d = ((v + ROUND_MAGIC) + z).to_bits() as u8;
        }
    }

    /// The f32 values of bytes of this grid, as [`FakeQuant::apply`] produces them.
    pub fn dequantise_bytes(&self, qs: &[u8], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has the feature the function is compiled for.
            return unsafe { self.dequantise_bytes_avx2(qs, out) };
        }
        self.dequantise_bytes_body(qs, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn dequantise_bytes_avx2(&self, qs: &[u8], out: &mut [f32]) {
        self.dequantise_bytes_body(qs, out)
    }

    #[inline(always)]
    fn dequantise_bytes_body(&self, qs: &[u8], out: &mut [f32]) {
        let (z, s) = (self.dq_zero_point, self.dq_scale);
        for (d, &q) in out.iter_mut().zip(qs) {
            *d = (q as i32 - z) as f32 * s;
        }
    }

    /// Applies the pair in place.
    pub fn apply(&self, xs: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has the feature the function is compiled for.
            return unsafe { self.apply_avx2(xs) };
        }
        self.apply_body(xs)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn apply_avx2(&self, xs: &mut [f32]) {
        self.apply_body(xs)
    }

    /// [`FakeQuant::apply`]'s loop, for callers already compiled for a wider instruction set.
    #[inline(always)]
    pub(crate) fn apply_body(&self, xs: &mut [f32]) {
        // Rounding and clamping to integer bounds commute, so the clamp comes first: the
        // value is then small enough for the magic-number rounding.
        let lo = (self.lo - self.zero_point) as f32;
        let hi = (self.hi - self.zero_point) as f32;
        let shift = (self.zero_point - self.dq_zero_point) as f32;
        let (inv, scale) = (self.inv_scale, self.dq_scale);
        for x in xs.iter_mut() {
            let v = (*x * inv).max(lo).min(hi);
            let r = (v + ROUND_MAGIC) - ROUND_MAGIC;
            *x = (r + shift) * scale;
        }
    }
}

impl Op for FakeQuant {
    fn name(&self) -> StaticName {
        "FakeQuant".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "1/scale {} zero point {} in [{}, {}], then scale {} zero point {}",
            self.inv_scale, self.zero_point, self.lo, self.hi, self.dq_scale, self.dq_zero_point
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Accurate
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for FakeQuant {
    fn eval(&self, _ctx: &EvalContext, mut inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = inputs.pop().context("FakeQuant takes one input")?;
        // In place when the plan hands over the only reference, which it does for an
        // activation with no other reader.
        let mut t = input.into_tensor();
        self.apply(t.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?);
        Ok(tvec!(t.into_tvalue()))
    }

    crate::eval_out_of_plan!();
}

impl TypedOp for FakeQuant {
    tract_onnx::tract_core::as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type());
        Ok(tvec!(f32::datum_type().fact(inputs[0].shape.clone())))
    }

    fn axes_mapping(
        &self,
        inputs: &[&TypedFact],
        outputs: &[&TypedFact],
    ) -> TractResult<AxesMapping> {
        AxesMapping::natural(inputs, outputs)
    }

    fn change_axes(
        &self,
        model: &TypedModel,
        node: &TypedNode,
        _io: InOut,
        change: &AxisOp,
    ) -> TractResult<Option<AxisChangeConsequence>> {
        Ok(Some(AxisChangeConsequence::new(model, node, None, change)))
    }
}

/// The quantiser's (1/scale, zero point, lo, hi) when `node` is tract's per-tensor
/// `QuantizeLinear` from f32.
fn quantiser(model: &TypedModel, node: &TypedNode) -> TractResult<Option<(f32, i32, i32, i32)>> {
    let Some(ew) = node.op_as::<ElementWiseOp>() else {
        return Ok(None);
    };
    if model.outlet_fact(node.inputs[0])?.datum_type != f32::datum_type() {
        return Ok(None);
    }
    if let Some(q) = ew.0.downcast_ref::<QuantizeLinearU8>() {
        return Ok(Some((
            q.scale,
            q.zero_point as i32,
            u8::MIN as i32,
            u8::MAX as i32,
        )));
    }
    if let Some(q) = ew.0.downcast_ref::<QuantizeLinearI8>() {
        return Ok(Some((
            q.scale,
            q.zero_point as i32,
            i8::MIN as i32,
            i8::MAX as i32,
        )));
    }
    Ok(None)
}

/// `node` as a quantiser writing bytes: tract's per-tensor `QuantizeLinear` from f32 to `u8`,
/// as the pair that dequantises on its own grid (what the bytes it writes stand for). A
/// QDQ model has one without its `DequantizeLinear` where tract folded that dequantiser into a
/// `LookupTable` (see [`crate::qconv`]).
pub(crate) fn byte_quantiser(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Option<FakeQuant>> {
    let Some((inv_scale, zero_point, 0, 255)) = quantiser(model, node)? else {
        return Ok(None);
    };
    if model.outlet_fact(node.id.into())?.datum_type != u8::datum_type() {
        return Ok(None);
    }
    Ok(Some(FakeQuant {
        inv_scale,
        zero_point,
        lo: 0,
        hi: 255,
        dq_zero_point: zero_point,
        dq_scale: 1.0 / inv_scale,
    }))
}

/// `node` as a dequantiser of bytes: tract's `DequantizeLinear` of a `u8` tensor, as the byte
/// grid it reads and the tensor it reads them from.
pub(crate) fn byte_dequantiser(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Option<(FakeQuant, OutletId)>> {
    let Some(dq) = node.op_as::<DequantizeLinearF32>() else {
        return Ok(None);
    };
    let [input] = &*node.inputs else {
        return Ok(None);
    };
    let fact = model.outlet_fact(*input)?;
    if fact.datum_type != u8::datum_type()
        || fact.konst.is_some()
        || !(0..=255).contains(&dq.zero_point)
    {
        return Ok(None);
    }
    Ok(Some((
        FakeQuant::byte_grid(dq.zero_point, dq.scale),
        *input,
    )))
}

/// For each byte of the grid `from`, the byte the quantiser of `to` (a quantiser to bytes,
/// `[0, 255]`) gives its value: tract's `QuantizeLinear` of tract's `DequantizeLinear`, as one
/// table. `None` when it is the identity (the same grid).
pub(crate) fn requantisation_table(from: &FakeQuant, to: &FakeQuant) -> Option<Arc<[u8; 256]>> {
    let bytes: [u8; 256] = std::array::from_fn(|b| b as u8);
    let mut values = [0f32; 256];
    from.dequantise_bytes(&bytes, &mut values);
    let mut table = [0u8; 256];
    to.quantise_bytes_body(&values, &mut table);
    (table != bytes).then(|| Arc::new(table))
}

/// The patch putting `op`, an operator on bytes reading `inputs` (byte tensors) and writing
/// the bytes of the quantise-dequantise pair `q` (a quantiser to bytes), in place of the
/// [`FakeQuant`] node `q_node`, followed by tract's dequantiser of those bytes for its
/// readers. A [`crate::qconv::QConv`] reads the bytes themselves ([`byte_dequantiser`]).
pub(crate) fn bytes_then_dequantised(
    model: &TypedModel,
    q_node: &TypedNode,
    inputs: &[OutletId],
    op: impl TypedOp,
    q: &FakeQuant,
) -> TractResult<TypedModelPatch> {
    let mut patch = TypedModelPatch::default();
    let taps = inputs
        .iter()
        .map(|&i| patch.tap_model(model, i))
        .collect::<TractResult<TVec<_>>>()?;
    let bytes = patch.wire_node(format!("{}.bytes", q_node.name), op, &taps)?;
    let dq = DequantizeLinearF32::new(q.dq_scale, q.dq_zero_point);
    let values = patch.wire_node(&q_node.name, dq, &bytes)?;
    patch.shunt_outside(model, q_node.id.into(), values[0])?;
    Ok(patch)
}

/// Replaces every `DequantizeLinear` fed by a per-tensor `QuantizeLinear` of an f32 with a
/// [`FakeQuant`] of that f32; a quantiser left without readers goes with the next compaction.
/// Returns how many pairs were replaced.
pub fn fuse_pairs(model: &mut TypedModel) -> TractResult<usize> {
    let mut patches = Vec::new();
    for node in model.nodes() {
        let Some(dq) = node.op_as::<DequantizeLinearF32>() else {
            continue;
        };
        let q_node = model.node(node.inputs[0].node);
        let Some((inv_scale, zero_point, lo, hi)) = quantiser(model, q_node)? else {
            continue;
        };
        let op = FakeQuant {
            inv_scale,
            zero_point,
            lo,
            hi,
            dq_zero_point: dq.zero_point,
            dq_scale: dq.scale,
        };
        patches.push(TypedModelPatch::replace_single_op(
            model,
            node,
            &[q_node.inputs[0]],
            op,
        )?);
    }
    let n = patches.len();
    for patch in patches {
        patch.apply(model)?;
    }
    if n > 0 {
        model.compact()?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::quant::{quantize_linear_i8, quantize_linear_u8};

    /// Values around every rounding tie and both saturation ends of a scale. (Beyond
    /// `i32::MAX * scale` tract's quantiser overflows its `i32` and panics or wraps; the
    /// saturation test below covers those values.)
    fn probe(scale: f32) -> Vec<f32> {
        let mut xs = vec![0.0, -0.0, 1e5 * scale, -1e5 * scale];
        for i in -700..700 {
            let v = i as f32 * 0.5 * scale;
            xs.extend([v, v * (1.0 + 1e-6), v * (1.0 - 1e-6), v + 1e-7]);
        }
        xs
    }

    /// tract's own pair, run as tract runs it.
    fn tract_pair(q: Box<dyn TypedOp>, dq: DequantizeLinearF32, xs: &[f32]) -> Vec<f32> {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([xs.len()])).unwrap();
        let q = model.wire_node("q", q, &[x]).unwrap();
        let y = model.wire_node("dq", dq, &q).unwrap();
        model.select_output_outlets(&y).unwrap();
        let out = model
            .into_runnable()
            .unwrap()
            .run(tvec!(tensor1(xs).into_tvalue()))
            .unwrap();
        out[0]
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec()
    }

    fn fused(model_q: Box<dyn TypedOp>, dq: DequantizeLinearF32, xs: &[f32]) -> (usize, Vec<f32>) {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([xs.len()])).unwrap();
        let q = model.wire_node("q", model_q, &[x]).unwrap();
        let y = model.wire_node("dq", dq, &q).unwrap();
        model.select_output_outlets(&y).unwrap();
        let n = fuse_pairs(&mut model).unwrap();
        let names: Vec<String> = model
            .nodes()
            .iter()
            .map(|n| n.op.name().to_string())
            .collect();
        assert_eq!(names, ["Source", "FakeQuant"], "the pair is one operator");
        let out = model
            .into_runnable()
            .unwrap()
            .run(tvec!(tensor1(xs).into_tvalue()))
            .unwrap();
        (
            n,
            out[0]
                .try_as_plain_ram()
                .unwrap()
                .as_slice::<f32>()
                .unwrap()
                .to_vec(),
        )
    }

    #[test]
    fn same_numbers_as_tracts_pair() {
        // (ONNX scale, zero point) as onnxruntime's quantiser writes them: uint8 activations
        // with any zero point, int8 symmetric.
        for (scale, zp) in [(0.0235f32, 0u8), (0.0137, 128), (1.0, 3), (0.5, 255)] {
            let xs = probe(scale);
            let q = || Box::new(quantize_linear_u8(scale.recip(), zp)) as Box<dyn TypedOp>;
            let dq = DequantizeLinearF32::new(scale, zp as i32);
            let (n, got) = fused(q(), dq.clone(), &xs);
            assert_eq!(n, 1);
            assert_eq!(
                got,
                tract_pair(q(), dq, &xs),
                "u8 scale {scale} zero point {zp}"
            );
        }
        for (scale, zp) in [(0.0071f32, 0i8), (0.25, -5), (2.0, 127)] {
            let xs = probe(scale);
            let q = || Box::new(quantize_linear_i8(scale.recip(), zp)) as Box<dyn TypedOp>;
            let dq = DequantizeLinearF32::new(scale, zp as i32);
            let (_, got) = fused(q(), dq.clone(), &xs);
            assert_eq!(
                got,
                tract_pair(q(), dq, &xs),
                "i8 scale {scale} zero point {zp}"
            );
        }
    }

    #[test]
    fn saturates_far_outside_the_range() {
        // ONNX: saturate(round(x / scale) + zero_point), whatever the magnitude.
        let op = FakeQuant {
            inv_scale: 10.0,
            zero_point: 7,
            lo: 0,
            hi: 255,
            dq_zero_point: 7,
            dq_scale: 0.1,
        };
        let mut xs = [
            f32::MAX,
            f32::INFINITY,
            3e9,
            f32::MIN,
            f32::NEG_INFINITY,
            -3e9,
        ];
        op.apply(&mut xs);
        let (top, bottom) = ((255 - 7) as f32 * 0.1, (0 - 7) as f32 * 0.1);
        assert_eq!(xs, [top, top, top, bottom, bottom, bottom]);
    }

    #[test]
    fn a_dequantiser_of_an_integer_input_stays() {
        // Weights and biases are stored quantised: their DequantizeLinear reads a constant or
        // an input, not a quantiser, and must be left to tract.
        let mut model = TypedModel::default();
        let x = model.add_source("x", u8::fact([4])).unwrap();
        let y = model
            .wire_node("dq", DequantizeLinearF32::new(0.5, 3), &[x])
            .unwrap();
        model.select_output_outlets(&y).unwrap();
        assert_eq!(fuse_pairs(&mut model).unwrap(), 0);
        assert_eq!(model.nodes().len(), 2);
    }
}
