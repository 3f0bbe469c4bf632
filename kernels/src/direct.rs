//! Float `KxK` convolutions (group 1, stride 1) without a patch matrix.
//!
//! tract 0.23.9 runs such a convolution as `Im2col` (the patches copied into the matrix
//! kernel's panels on every run) then a packed matrix product, then the activation as more
//! passes. On the openWakeWord embedding, whose twenty convolutions are 1x3 and 3x1 ones on
//! small images (K of 3 to 288), the patch copies took as long as the products.
//!
//! With the input plane zero-padded once into rows of `pitch` values, output `(oy, ox)` of
//! tap `(ky, kx)` reads padded value `(oy + ky) * pitch + ox + kx`: computing the outputs on
//! rows of `pitch` too (the last `kw - 1` of each row are dropped), every tap of every channel
//! is one contiguous row shifted by a constant. The convolution is then the product of
//! [`crate::pointwise::Product`] with `C * KH * KW` such rows, read in place, with the bias,
//! a leaky ReLU and a lower bound (the model's `Max` with a constant) applied before the store.

use std::sync::Arc;

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::nn::LeakyRelu;

use crate::graph::{self, sole_successor};
use crate::pointwise::{Activation, Product};

/// A stride-1 convolution of one `[C, H, W]` image.
#[derive(Debug, Clone, PartialEq)]
pub struct Direct {
    product: Product,
    channels: usize,
    in_hw: [usize; 2],
    out_hw: [usize; 2],
    /// Padding before (top, left).
    pad: [usize; 2],
    /// The padded plane: `rows` rows of `pitch` values (`oh + kh - 1` by `ow + kw - 1`).
    rows: usize,
    pitch: usize,
    /// Where each row of the product (channel, kernel row, kernel column) starts in the
    /// padded planes.
    starts: Arc<Vec<usize>>,
    out_shape: TVec<usize>,
}

impl Eq for Direct {}

impl Direct {
    /// The padded planes of `x`, with room for the last rows' reads.
    fn padded(&self, x: &[f32]) -> Vec<f32> {
        let [h, w] = self.in_hw;
        let [py, px] = self.pad;
        let plane = self.rows * self.pitch;
        let mut padded = vec![0f32; self.channels * plane + self.pitch + 16];
        for (c, dst) in padded
            .chunks_exact_mut(plane)
            .take(self.channels)
            .enumerate()
        {
            let src = &x[c * h * w..(c + 1) * h * w];
            for (iy, src) in src.chunks_exact(w).enumerate() {
                let Some(row) = dst.chunks_exact_mut(self.pitch).nth(iy + py) else {
                    break;
                };
                // Input columns that land inside the padded row.
                let n = w.min(self.pitch.saturating_sub(px));
                row[px..px + n].copy_from_slice(&src[..n]);
            }
        }
        padded
    }

    fn run(&self, x: &[f32], y: &mut [f32]) {
        let [oh, ow] = self.out_hw;
        // Whole vectors of outputs (16 values, a multiple of every vector width): the last
        // ones past the plane are computed from the padding's spare zeros and dropped.
        let n = (oh * self.pitch).next_multiple_of(16);
        let padded = self.padded(x);
        if self.pitch == ow && n == oh * ow {
            return self.product.run(&padded, &self.starts, n, y);
        }
        let mut wide = vec![0f32; self.product.m * n];
        self.product.run(&padded, &self.starts, n, &mut wide);
        for (o, dst) in y.chunks_exact_mut(oh * ow).enumerate() {
            let src = &wide[o * n..o * n + oh * self.pitch];
            for (dst, src) in dst.chunks_exact_mut(ow).zip(src.chunks_exact(self.pitch)) {
                dst.copy_from_slice(&src[..ow]);
            }
        }
    }
}

impl Op for Direct {
    fn name(&self) -> StaticName {
        "DirectConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let p = &self.product;
        Ok(vec![format!(
            "{} channels to {}, {} taps each, {:?}",
            self.channels,
            p.m,
            p.k / self.channels.max(1),
            p.act
        )])
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for Direct {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        graph::eval_f32(&inputs, &self.out_shape, |x, out| {
            let [h, w] = self.in_hw;
            ensure!(
                x.len() == self.channels * h * w,
                "DirectConv: an input of {} values for {} channels of {h}x{w}",
                x.len(),
                self.channels
            );
            ensure!(out.len() == self.product.m * self.out_hw[0] * self.out_hw[1]);
            self.run(x, out);
            Ok(())
        })
    }

    crate::eval_out_of_plan!();
}

impl TypedOp for Direct {
    tract_onnx::tract_core::as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type());
        Ok(tvec!(f32::datum_type().fact(&*self.out_shape)))
    }
}

/// The constant scalar `node` takes the maximum with, if it is `max(x, c)`.
fn max_with_scalar(model: &TypedModel, node: &TypedNode) -> TractResult<Option<f32>> {
    if node
        .op_as::<TypedBinOp>()
        .is_none_or(|b| b.0.name() != "Max")
        || node.inputs.len() != 2
    {
        return Ok(None);
    }
    let Some(k) = graph::konst(model, node.inputs[1])? else {
        return Ok(None);
    };
    if k.len() != 1 || graph::konst(model, node.inputs[0])?.is_some() {
        return Ok(None);
    }
    Ok(Some(k.try_as_plain_ram()?.as_slice::<f32>()?[0]))
}

/// Replaces every float group-1 stride-1 convolution with a kernel larger than 1x1 (and the
/// leaky ReLU and constant lower bound reading it alone) with a [`Direct`]. Returns how many.
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    graph::rewrite_each(model, direct_at)
}

/// The patch for the convolution at `id`, if it is one [`rewrite`] takes.
fn direct_at(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let Some(conv) = graph::conv_at(model, model.node(id))? else {
        return Ok(None);
    };
    let [kh, kw] = conv.kernel;
    let (c, m) = (conv.in_channels, conv.out_channels);
    let [oh, ow] = conv.out_hw;
    if conv.group != 1
        || conv.stride != [1, 1]
        || conv.dilation != [1, 1]
        || kh * kw <= 1
        || conv.weights.len() != m * c * kh * kw
        || (conv.bias.len() != m && conv.bias.len() != 1)
    {
        return Ok(None);
    }
    let mut last = model.node(id);
    let mut act = Activation::default();
    if let Some(next) = sole_successor(model, last).map(|n| model.node(n))
        && let Some(leaky) = next
            .op_as::<ElementWiseOp>()
            .and_then(|e| e.0.downcast_ref::<LeakyRelu>())
    {
        act.leaky = Some(leaky.alpha);
        last = next;
    }
    if let Some(next) = sole_successor(model, last).map(|n| model.node(n))
        && let Some(floor) = max_with_scalar(model, next)?
    {
        act.floor = Some(floor);
        last = next;
    }
    // An activation that broadcasts to another shape is not fused (nor is the
    // convolution replaced).
    if graph::concrete_shape(model, last.id.into())?.as_deref() != Some(&conv.out_shape[..]) {
        return Ok(None);
    }
    let bias = conv.bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    let bias = if bias.len() == 1 {
        vec![bias[0]; m]
    } else {
        bias
    };
    let (rows, pitch) = (oh + kh - 1, ow + kw - 1);
    let starts = (0..c)
        .flat_map(|ci| (0..kh).flat_map(move |ky| (0..kw).map(move |kx| (ci, ky, kx))))
        .map(|(ci, ky, kx)| ci * rows * pitch + ky * pitch + kx)
        .collect();
    let op = Direct {
        product: Product::new(
            m,
            c * kh * kw,
            conv.weights.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
            bias,
            act,
        ),
        channels: c,
        in_hw: conv.in_hw,
        out_hw: conv.out_hw,
        pad: conv.pad,
        rows,
        pitch,
        starts: Arc::new(starts),
        out_shape: conv.out_shape.clone(),
    };
    Ok(Some(TypedModelPatch::replace_single_op(
        model,
        last,
        &[conv.x],
        op,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::testing::values;

    /// Against the definition, over kernel shapes, paddings (none, symmetric, one-sided),
    /// sizes around the vector widths, channel counts around the tile heights, and the
    /// activations.
    #[test]
    fn matches_the_definition() {
        let mut cases = 0;
        for (kernel, pad) in [
            ([3, 3], [1, 1]),
            ([1, 3], [0, 1]),
            ([3, 1], [0, 0]),
            ([2, 2], [1, 0]),
            ([5, 3], [2, 1]),
        ] {
            for (c, m, in_hw) in [(1, 24, [9, 34]), (3, 7, [5, 5]), (5, 13, [4, 17])] {
                for act in [
                    Activation::default(),
                    Activation {
                        leaky: Some(0.2),
                        floor: Some(-0.4),
                    },
                ] {
                    let [kh, kw] = kernel;
                    let [h, w] = in_hw;
                    // Symmetric padding as in the model exports.
                    let out = |i: usize| in_hw[i] + 2 * pad[i] + 1 - kernel[i];
                    let (oh, ow) = (out(0), out(1));
                    let (rows, pitch) = (oh + kh - 1, ow + kw - 1);
                    let starts = (0..c)
                        .flat_map(|ci| {
                            (0..kh).flat_map(move |ky| (0..kw).map(move |kx| (ci, ky, kx)))
                        })
                        .map(|(ci, ky, kx)| ci * rows * pitch + ky * pitch + kx)
                        .collect();
                    let op = Direct {
                        product: Product::new(
                            m,
                            c * kh * kw,
                            values(m * c * kh * kw, 3),
                            values(m, 5),
                            act,
                        ),
                        channels: c,
                        in_hw,
                        out_hw: [oh, ow],
                        pad,
                        rows,
                        pitch,
                        starts: Arc::new(starts),
                        out_shape: tvec![m, oh, ow],
                    };
                    let x = values(c * h * w, 7);
                    let mut y = vec![f32::NAN; m * oh * ow];
                    op.run(&x, &mut y);
                    for o in 0..m {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let mut want = op.product.bias[o] as f64;
                                for ci in 0..c {
                                    for ky in 0..kh {
                                        for kx in 0..kw {
                                            let iy = (oy + ky).checked_sub(pad[0]);
                                            let ix = (ox + kx).checked_sub(pad[1]);
                                            if let (Some(iy), Some(ix)) = (iy, ix)
                                                && iy < h
                                                && ix < w
                                            {
                                                want += op.product.weights
                                                    [((o * c + ci) * kh + ky) * kw + kx]
                                                    as f64
                                                    * x[(ci * h + iy) * w + ix] as f64;
                                            }
                                        }
                                    }
                                }
                                if want < 0.0 && act.leaky.is_some() {
                                    want *= 0.2f32 as f64;
                                }
                                if let Some(f) = act.floor {
                                    want = want.max(f as f64);
                                }
                                let got = y[(o * oh + oy) * ow + ox];
                                assert!(
                                    (got as f64 - want).abs() <= 1e-4,
                                    "kernel {kernel:?} pad {pad:?} {c}->{m} {in_hw:?} {act:?}: \
                                     ({o}, {oy}, {ox}) is {got}, the definition gives {want}"
                                );
                            }
                        }
                    }
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, 30);
    }
}
