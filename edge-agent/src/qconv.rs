//! Pointwise convolutions of QDQ models run in integer arithmetic.
//!
//! After [`crate::qdq::fuse_pairs`], a quantised 1x1 convolution of a QDQ model reads, in
//! tract's decluttered graph: `FakeQuant -> EinSum (f32 weights) -> Add (f32 bias) -> FakeQuant`.
//! Both sides of the matrix product are on int8 grids: the activation is `(q - z) * s` with
//! `q` a byte, each weight row is `w * s_w[o]` with `w` in `[-127, 127]`. tract multiplies them
//! as floats. [`QPointwise`] multiplies the integers instead, with tract-linalg's i32 matrix
//! product kernels (AVX-512 VNNI `vpdpbusd` where the CPU has it, AVX2, NEON on ARM), then
//! applies the per-channel scale, the bias and the output quantiser in one pass: the work
//! onnxruntime's `QLinearConv` does for the same model.
//!
//! The integer product is exact where the float one rounds, so results can differ from the
//! float path by one quantisation step where a value sits on a rounding tie; `model check`
//! holds them to the card's tolerance of onnxruntime's output.
//!
//! A chain is rewritten only when the weights are provably on a symmetric int8 grid per output
//! channel (each row, divided by its largest magnitude over 127, is within 1e-4 of integers)
//! and the activation comes from a byte quantiser; anything else stays in float.

use std::sync::Arc;

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::tract_linalg::BinOp;
use tract_onnx::tract_core::tract_linalg::MmmDispatch;
use tract_onnx::tract_core::tract_linalg::mmm::{
    AsInputValue, FusedSpec, MMMInputValue, MatMatMul, Query,
};

use crate::qdq::FakeQuant;

/// `y = requantise(W x + b)` for a 1x1 convolution, `W` int8, `x` bytes, in integers.
#[derive(Debug, Clone)]
pub struct QPointwise {
    /// Output channels (rows of `W`) and input channels.
    m: usize,
    k: usize,
    /// The activation quantiser in front: multiply by `inv_scale_x` to get `q - z`, then add
    /// `shift_x` to get the signed byte the kernel reads.
    inv_scale_x: f32,
    shift_x: i32,
    /// The kernel, which of its packings, and the weights packed for it once.
    mmm: Box<dyn MatMatMul>,
    packing: usize,
    packed_w: Arc<Box<dyn MMMInputValue>>,
    /// Per output channel: `-shift_x * sum(W[o])`, what the signed shift adds to the sums.
    correction: Arc<Tensor>,
    /// Per output channel: the float value of one unit of the i32 sum (`s_x * s_w[o]`), the bias.
    unit: Arc<Vec<f32>>,
    bias: Arc<Vec<f32>>,
    /// The output quantise-dequantise pair.
    out: FakeQuant,
    /// The output's shape: the convolution's, whose spatial axes are the input's.
    out_shape: TVec<usize>,
}

impl PartialEq for QPointwise {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.packed_w, &other.packed_w) && self.out == other.out
    }
}

impl Eq for QPointwise {}

/// Adding then subtracting 1.5 * 2^23 rounds an f32 of magnitude below 2^22 to an integer,
/// ties to even (see [`crate::qdq`]).
const ROUND_MAGIC: f32 = 12_582_912.0;

/// `v` held to `[lo, hi]`, written as comparisons so that the compiler emits the vector
/// min/max instructions (`f32::max` carries NaN rules that keep some loops scalar).
#[inline(always)]
fn clamp(v: f32, lo: f32, hi: f32) -> f32 {
    let v = if v < lo { lo } else { v };
    if v > hi { hi } else { v }
}

impl QPointwise {
    /// Builds the operator from the float weights `[m, k]`, or `None` when they are not on a
    /// symmetric int8 grid per row, or no integer kernel is available.
    fn new(
        weights: &[f32],
        bias: Vec<f32>,
        m: usize,
        k: usize,
        input: &FakeQuant,
        out: FakeQuant,
        out_shape: TVec<usize>,
    ) -> TractResult<Option<QPointwise>> {
        // The activation: `q` in `[lo, hi]` (256 values) and `q - z` = x / s.
        if input.hi - input.lo != 255 || input.zero_point != input.dq_zero_point {
            return Ok(None);
        }
        let shift_x = input.dq_zero_point - input.lo - 128;
        let scale_x = input.dq_scale;
        let mut w_int = vec![0i8; m * k];
        let mut unit = Vec::with_capacity(m);
        let mut correction = Vec::with_capacity(m);
        for o in 0..m {
            let row = &weights[o * k..(o + 1) * k];
            let max = row.iter().fold(0f32, |a, &w| a.max(w.abs()));
            let s_w = if max > 0.0 { max / 127.0 } else { 1.0 };
            let mut sum = 0i32;
            for (dst, &w) in w_int[o * k..(o + 1) * k].iter_mut().zip(row) {
                let q = (w / s_w).round();
                if !(-127.0..=127.0).contains(&q) || (q * s_w - w).abs() > 1e-4 * s_w {
                    return Ok(None);
                }
                *dst = q as i8;
                sum += q as i32;
            }
            unit.push(scale_x * s_w);
            correction.push(-shift_x * sum);
        }
        let dispatch = MmmDispatch::native();
        let query = Query::plain(i32::datum_type(), Some(m), Some(k), None);
        let Some((mmm, packing, None)) = dispatch.pick(&query) else {
            return Ok(None);
        };
        let w = Tensor::from_shape(&[m, k], &w_int)?;
        let packed_w = mmm.packings()[packing].0.prepare_one(&w, 1, 0)?;
        Ok(Some(QPointwise {
            m,
            k,
            inv_scale_x: 1.0 / scale_x,
            shift_x,
            mmm,
            packing,
            packed_w: Arc::new(packed_w),
            correction: Arc::new(Tensor::from_shape(&[m], &correction)?),
            unit: Arc::new(unit),
            bias: Arc::new(bias),
            out,
            out_shape,
        }))
    }

    /// Runs on `x` (`k` rows of `n` activations, on the input quantiser's grid), a block of
    /// columns at a time so that the i32 sums of a block stay in cache between the matrix
    /// product and the requantisation.
    fn run(&self, x: &[f32]) -> TractResult<Tensor> {
        let (m, k) = (self.m, self.k);
        let n = x.len() / k;
        let mut y = unsafe { Tensor::uninitialized::<f32>(&[m, n])? };
        let mut y_ram = y.try_as_plain_ram_mut()?;
        let y_all = y_ram.as_slice_mut::<f32>()?;
        // About 64 KiB of sums per block, a multiple of 16 columns.
        let block = ((16 * 1024 / m.max(1)) / 16 * 16).clamp(16, n.max(16));
        let mut n0 = 0;
        while n0 < n {
            let cols = block.min(n - n0);
            let xq = self.quantise_block(x, n, n0, cols)?;
            let packed_x = self.mmm.packings()[self.packing].1.prepare_one(&xq, 0, 1)?;
            let mut acc = unsafe { Tensor::uninitialized::<i32>(&[m, cols])? };
            unsafe {
                let store = self.mmm.c_view(Some(0), Some(1)).wrap(&acc.view_mut());
                self.mmm.run(
                    m,
                    cols,
                    &[
                        FusedSpec::AddMatMul {
                            a: AsInputValue::Borrowed(&**self.packed_w),
                            b: AsInputValue::Borrowed(&*packed_x),
                            packing: self.packing,
                        },
                        FusedSpec::BinPerRow(self.correction.view(), BinOp::Add),
                        FusedSpec::Store(store),
                    ],
                )?;
            }
            let acc = acc.try_as_plain_ram()?;
            self.requantise_block(acc.as_slice::<i32>()?, y_all, n, n0, cols);
            n0 += cols;
        }
        Ok(y)
    }

    /// Columns `n0..n0 + cols` of `x` as the signed bytes the kernel reads, `[k, cols]`.
    fn quantise_block(&self, x: &[f32], n: usize, n0: usize, cols: usize) -> TractResult<Tensor> {
        let mut xq = unsafe { Tensor::uninitialized::<i8>(&[self.k, cols])? };
        let mut ram = xq.try_as_plain_ram_mut()?;
        let dst = ram.as_slice_mut::<i8>()?;
        let (inv, shift) = (self.inv_scale_x, self.shift_x as f32);
        for (row, src) in dst.chunks_exact_mut(cols).zip(x.chunks_exact(n)) {
            for (d, &v) in row.iter_mut().zip(&src[n0..n0 + cols]) {
                // Clamped, then rounded by the magic addition, which leaves the integer in
                // the low bits of the sum: its low byte is the two's complement i8.
                *d = (clamp(v * inv + shift, -128.0, 127.0) + ROUND_MAGIC).to_bits() as u8 as i8;
            }
        }
        Ok(xq)
    }

    /// Per-channel scale, bias and the output quantise-dequantise pair, from the block's sums
    /// (`[m, cols]`) into columns `n0..n0 + cols` of `y` (`[m, n]`).
    fn requantise_block(&self, acc: &[i32], y: &mut [f32], n: usize, n0: usize, cols: usize) {
        let q = &self.out;
        let lo = (q.lo - q.zero_point) as f32;
        let hi = (q.hi - q.zero_point) as f32;
        let shift = (q.zero_point - q.dq_zero_point) as f32;
        let (inv, scale) = (q.inv_scale, q.dq_scale);
        for (o, (sums, out)) in acc
            .chunks_exact(cols)
            .zip(y.chunks_exact_mut(n))
            .enumerate()
        {
            let (u, b) = (self.unit[o] * inv, self.bias[o] * inv);
            for (d, &a) in out[n0..n0 + cols].iter_mut().zip(sums) {
                let r = (clamp(a as f32 * u + b, lo, hi) + ROUND_MAGIC) - ROUND_MAGIC;
                *d = (r + shift) * scale;
            }
        }
    }
}

impl Op for QPointwise {
    fn name(&self) -> StaticName {
        "QPointwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{}x{} int8 weights, kernel {}",
            self.m,
            self.k,
            self.mmm.name()
        )])
    }

    fn as_typed(&self) -> Option<&dyn TypedOp> {
        Some(self)
    }
}

impl EvalOp for QPointwise {
    fn eval_out_of_plan(&self, inputs: TVec<TValue>) -> TractResult<Option<TVec<TValue>>> {
        Ok(Some(EvalOp::eval(
            self,
            &EvalContext::out_of_plan(),
            inputs,
        )?))
    }

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs[0].try_as_plain_ram()?;
        let y = self.run(x.as_slice::<f32>()?)?;
        Ok(tvec!(y.into_shape(&self.out_shape)?.into_tvalue()))
    }
}

impl TypedOp for QPointwise {
    fn as_op(&self) -> &dyn Op {
        self
    }

    fn as_op_mut(&mut self) -> &mut dyn Op {
        self
    }

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type());
        Ok(tvec!(f32::datum_type().fact(&*self.out_shape)))
    }
}

/// The f32 constant behind `outlet`, if it is one.
fn konst(model: &TypedModel, outlet: OutletId) -> TractResult<Option<Arc<Tensor>>> {
    let fact = model.outlet_fact(outlet)?;
    Ok(fact
        .konst
        .clone()
        .filter(|k| k.datum_type() == f32::datum_type()))
}

/// The only node reading `node`'s single output, if there is exactly one.
fn sole_successor(model: &TypedModel, node: &TypedNode) -> Option<usize> {
    match &*node.outputs {
        [o] if o.successors.len() == 1
            && !model.output_outlets().ok()?.contains(&node.id.into()) =>
        {
            Some(o.successors[0].node)
        }
        _ => None,
    }
}

/// Replaces every `FakeQuant -> EinSum -> Add -> FakeQuant` chain that is a quantised 1x1
/// convolution with a [`QPointwise`]. Returns how many were replaced. Runs after
/// [`crate::qdq::fuse_pairs`], before tract's code generation.
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    let mut n = 0;
    // One patch at a time: a chain's input is often the previous chain's output, replaced
    // by the previous patch. Node ids stay valid until the compaction at the end.
    for id in 0..model.nodes().len() {
        if let Some(patch) = chain_at(model, id)? {
            patch.apply(model)?;
            n += 1;
        }
    }
    if n > 0 {
        model.compact()?;
    }
    Ok(n)
}

/// The grid an f32 activation is on: the output pair of a `FakeQuant` or a [`QPointwise`].
fn grid_of(node: &TypedNode) -> Option<&FakeQuant> {
    node.op_as::<FakeQuant>()
        .or_else(|| node.op_as::<QPointwise>().map(|q| &q.out))
}

/// The patch replacing the chain whose `EinSum` is node `id`, if it is one.
fn chain_at(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let node = model.node(id);
    {
        let Some(einsum) = node.op_as::<EinSum>() else {
            return Ok(None);
        };
        if einsum.q_params.is_some() || einsum.operating_dt != f32::datum_type() {
            return Ok(None);
        }
        let axes = einsum.axes.to_string();
        if axes != "IHW,OI->OHW" && axes != "NIHW,OI->OHW" {
            return Ok(None);
        }
        let [x, w] = [node.inputs[0], node.inputs[1]];
        let Some(input_q) = grid_of(model.node(x.node)) else {
            return Ok(None);
        };
        let Some(w) = konst(model, w)? else {
            return Ok(None);
        };
        let Some(add) = sole_successor(model, node) else {
            return Ok(None);
        };
        let add = model.node(add);
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
        let Some(bias) = konst(model, add.inputs[bias_input])? else {
            return Ok(None);
        };
        let Some(out_node) = sole_successor(model, add) else {
            return Ok(None);
        };
        let out_node = model.node(out_node);
        let Some(out_q) = out_node.op_as::<FakeQuant>() else {
            return Ok(None);
        };
        let (Some(x_shape), Some(out_shape)) = (
            model.outlet_fact(x)?.shape.as_concrete().map(TVec::from),
            model
                .outlet_fact(out_node.id.into())?
                .shape
                .as_concrete()
                .map(TVec::from),
        ) else {
            return Ok(None);
        };
        let (m, k) = (w.shape()[0], w.shape()[1]);
        if bias.len() != m || x_shape.iter().product::<usize>() % k != 0 {
            return Ok(None);
        }
        let w = w.try_as_plain_ram()?;
        let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        let Some(op) = QPointwise::new(
            w.as_slice::<f32>()?,
            bias,
            m,
            k,
            input_q,
            out_q.clone(),
            out_shape,
        )?
        else {
            return Ok(None);
        };
        Ok(Some(TypedModelPatch::replace_single_op(
            model,
            out_node,
            &[x],
            op,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(zero_point: i32, scale: f32) -> FakeQuant {
        FakeQuant {
            inv_scale: 1.0 / scale,
            zero_point,
            lo: 0,
            hi: 255,
            dq_zero_point: zero_point,
            dq_scale: scale,
        }
    }

    /// Deterministic integers in `[lo, hi]`.
    fn ints(n: usize, seed: u32, lo: i32, hi: i32) -> Vec<i32> {
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

    #[test]
    fn integer_product_matches_the_float_definition() {
        // Sizes off the kernels' tiles, and more columns than one block.
        let (m, k, n) = (37, 21, 1500);
        let input = grid(131, 0.05);
        let output = grid(7, 0.2);
        let s_w: Vec<f32> = (0..m).map(|o| 0.001 * (o + 1) as f32).collect();
        let w_int = ints(m * k, 3, -127, 127);
        // Each row reaches +-127 somewhere, as a symmetric MinMax quantiser makes it.
        let w: Vec<f32> = (0..m * k)
            .map(|i| {
                let q = if i % k == 0 { 127 } else { w_int[i] };
                q as f32 * s_w[i / k]
            })
            .collect();
        let bias: Vec<f32> = (0..m).map(|o| 0.3 * o as f32 - 5.0).collect();
        let x: Vec<f32> = ints(k * n, 5, 0, 255)
            .into_iter()
            .map(|q| (q - 131) as f32 * 0.05)
            .collect();
        let op = QPointwise::new(&w, bias.clone(), m, k, &input, output.clone(), tvec![m, n])
            .unwrap()
            .expect("weights on the int8 grid are taken");
        let y = op.run(&x).unwrap();
        let y = y.try_as_plain_ram().unwrap();
        let y = y.as_slice::<f32>().unwrap();
        let mut ties = 0;
        for o in 0..m {
            for j in 0..n {
                let mut acc = bias[o] as f64;
                for i in 0..k {
                    acc += w[o * k + i] as f64 * x[i * n + j] as f64;
                }
                let mut want = [acc as f32];
                output.apply(&mut want);
                let got = y[o * n + j];
                if got != want[0] {
                    // Only where the exact value is within rounding of a tie.
                    assert!(
                        (got - want[0]).abs() <= 0.2 + 1e-6,
                        "row {o} column {j}: got {got}, the definition gives {}",
                        want[0]
                    );
                    ties += 1;
                }
            }
        }
        assert!(ties * 1000 < m * n, "{ties} of {} outputs differ", m * n);
    }

    #[test]
    fn weights_off_the_int8_grid_stay_in_float() {
        let w = [0.5f32, 0.25, 0.1234567, -0.5];
        let op = QPointwise::new(
            &w,
            vec![0.0, 0.0],
            2,
            2,
            &grid(0, 0.1),
            grid(0, 0.1),
            tvec![2, 1],
        )
        .unwrap();
        assert!(op.is_none());
    }
}
