//! Float 1x1 convolutions with their bias and ReLU in one pass.
//!
//! tract 0.23.9 runs a float 1x1 convolution as a packed matrix product: the activations are
//! copied into the kernel's panels on every run (`OptMatMulPack`), the product written, and the
//! ReLU that follows run as one more pass (`OptMaxByScalar`). On the float CenterFace those
//! three took two thirds of the run (20.3 of 31.0 ms, `model profile`). Yet a 1x1 convolution of a `[C, H, W]` image needs no packing:
//! each input channel is already a contiguous row, so a tile of outputs (a few channels by a
//! few vectors of pixels) is a sum of rows scaled by broadcast weights. [`Pointwise`] does
//! that, with the bias as the sums' starting value and the ReLU applied before the store,
//! compiled for AVX-512 and for AVX2 + FMA (chosen at run time) and for the baseline (NEON on
//! aarch64).

use std::sync::Arc;

use tract_onnx::tract_core::internal::*;

use crate::graph;

/// `y = max(W x + b, 0)` (or without the max) for a 1x1 convolution of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Pointwise {
    /// Output channels and input channels: `W` is `[m, k]`.
    m: usize,
    k: usize,
    weights: Arc<Vec<f32>>,
    bias: Arc<Vec<f32>>,
    relu: bool,
    out_shape: TVec<usize>,
}

impl Eq for Pointwise {}

impl Pointwise {
    /// `x` is `[k, n]`, `y` is `[m, n]`.
    fn run(&self, x: &[f32], y: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has the features the function is compiled for.
                return unsafe { self.run_avx512(x, y) };
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: as above.
                return unsafe { self.run_avx2(x, y) };
            }
        }
        // aarch64 always has FMA (and 32 vector registers for the 4 x 2 x 4 tile).
        self.run_body::<4, 2, 4, { cfg!(target_arch = "aarch64") }>(x, y)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn run_avx512(&self, x: &[f32], y: &mut [f32]) {
        self.run_body::<6, 2, 16, true>(x, y)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, x: &[f32], y: &mut [f32]) {
        self.run_body::<4, 2, 8, true>(x, y)
    }

    /// Tiles of `R` channels by `P` vectors of `L` pixels; the pixels past the last whole
    /// tile column and the channels past the last whole tile row go one at a time.
    #[inline(always)]
    fn run_body<const R: usize, const P: usize, const L: usize, const FMA: bool>(
        &self,
        x: &[f32],
        y: &mut [f32],
    ) {
        let (m, k) = (self.m, self.k);
        let n = x.len() / k.max(1);
        // Tiles of P vectors, then of one vector, then single pixels.
        let mut j = 0;
        while j + P * L <= n {
            let mut o = 0;
            while o + R <= m {
                self.tile::<R, P, L, FMA>(x, y, n, o, j);
                o += R;
            }
            while o < m {
                self.tile::<1, P, L, FMA>(x, y, n, o, j);
                o += 1;
            }
            j += P * L;
        }
        while j + L <= n {
            let mut o = 0;
            while o + R <= m {
                self.tile::<R, 1, L, FMA>(x, y, n, o, j);
                o += R;
            }
            while o < m {
                self.tile::<1, 1, L, FMA>(x, y, n, o, j);
                o += 1;
            }
            j += L;
        }
        let whole = j;
        for j in whole..n {
            for o in 0..m {
                let w = &self.weights[o * k..(o + 1) * k];
                let mut acc = self.bias[o];
                for (kk, &w) in w.iter().enumerate() {
                    let v = x[kk * n + j];
                    acc = if FMA { v.mul_add(w, acc) } else { acc + v * w };
                }
                y[o * n + j] = if self.relu { acc.max(0.0) } else { acc };
            }
        }
    }

    /// Outputs `o..o + R` at pixels `j..j + P * L`.
    #[inline(always)]
    fn tile<const R: usize, const P: usize, const L: usize, const FMA: bool>(
        &self,
        x: &[f32],
        y: &mut [f32],
        n: usize,
        o: usize,
        j: usize,
    ) {
        let k = self.k;
        let mut acc = [[[0f32; L]; P]; R];
        for (r, acc) in acc.iter_mut().enumerate() {
            *acc = [[self.bias[o + r]; L]; P];
        }
        for kk in 0..k {
            let row = &x[kk * n + j..kk * n + j + P * L];
            for (r, acc) in acc.iter_mut().enumerate() {
                let w = self.weights[(o + r) * k + kk];
                for (p, acc) in acc.iter_mut().enumerate() {
                    for (l, a) in acc.iter_mut().enumerate() {
                        let v = row[p * L + l];
                        *a = if FMA { v.mul_add(w, *a) } else { *a + v * w };
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let out = &mut y[(o + r) * n + j..(o + r) * n + j + P * L];
            for (p, acc) in acc.iter().enumerate() {
                for (l, &a) in acc.iter().enumerate() {
                    out[p * L + l] = if self.relu && a < 0.0 { 0.0 } else { a };
                }
            }
        }
    }
}

impl Op for Pointwise {
    fn name(&self) -> StaticName {
        "Pointwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{}x{} weights{}",
            self.m,
            self.k,
            if self.relu { ", ReLU" } else { "" }
        )])
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for Pointwise {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs[0].try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        ensure!(x.len() % self.k.max(1) == 0);
        let mut y = unsafe { Tensor::uninitialized::<f32>(&self.out_shape)? };
        {
            let mut ram = y.try_as_plain_ram_mut()?;
            let out = ram.as_slice_mut::<f32>()?;
            ensure!(out.len() == self.m * (x.len() / self.k.max(1)));
            self.run(x, out);
        }
        Ok(tvec!(y.into_tvalue()))
    }

    crate::eval_out_of_plan!();
}

impl TypedOp for Pointwise {
    tract_onnx::tract_core::as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type());
        Ok(tvec!(f32::datum_type().fact(&*self.out_shape)))
    }
}

/// Replaces each float `EinSum -> Add (bias) [-> Max(0)]` that is a 1x1 convolution of one
/// channels-first image with a [`Pointwise`]. Returns how many were replaced.
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    let mut n = 0;
    for id in 0..model.nodes().len() {
        if let Some(patch) = pointwise_at(model, id)? {
            patch.apply(model)?;
            n += 1;
        }
    }
    if n > 0 {
        model.compact()?;
    }
    Ok(n)
}

fn pointwise_at(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let Some(conv) = graph::conv1x1_at(model, model.node(id))? else {
        return Ok(None);
    };
    let mut last = conv.add;
    let mut relu = false;
    if let Some(next) = graph::sole_successor(model, last).map(|n| model.node(n))
        && graph::is_relu(model, next)?
    {
        relu = true;
        last = next;
    }
    let Some(out_shape) = graph::concrete_shape(model, last.id.into())? else {
        return Ok(None);
    };
    let op = Pointwise {
        m: conv.m,
        k: conv.k,
        weights: Arc::new(conv.weights.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()),
        bias: Arc::new(conv.bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()),
        relu,
        out_shape,
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

    #[test]
    fn matches_the_definition_on_whole_and_partial_tiles() {
        // Channel counts around the tile heights, pixel counts around the tile widths.
        for (m, k, n) in [
            (1, 1, 1),
            (7, 5, 33),
            (13, 24, 100),
            (6, 3, 64),
            (25, 16, 257),
        ] {
            for relu in [false, true] {
                let op = Pointwise {
                    m,
                    k,
                    weights: Arc::new(values(m * k, 3)),
                    bias: Arc::new(values(m, 5)),
                    relu,
                    out_shape: tvec![m, n],
                };
                let x = values(k * n, 7);
                let mut y = vec![f32::NAN; m * n];
                op.run(&x, &mut y);
                for o in 0..m {
                    for j in 0..n {
                        let mut want = op.bias[o] as f64;
                        for kk in 0..k {
                            want += op.weights[o * k + kk] as f64 * x[kk * n + j] as f64;
                        }
                        if relu {
                            want = want.max(0.0);
                        }
                        let got = y[o * n + j];
                        assert!(
                            (got as f64 - want).abs() <= 1e-5,
                            "m {m} k {k} n {n} relu {relu}: output ({o}, {j}) is {got}, the definition gives {want}"
                        );
                    }
                }
            }
        }
    }

    /// `EinSum` (16 channels to 16, on 8x16 pixels) then `Add` of a constant of `bias_shape`.
    fn conv_then_add(bias_shape: &[usize]) -> TypedModel {
        use tract_onnx::tract_core::ops::einsum::EinSum;
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([16, 8, 16])).unwrap();
        let w = model
            .add_const("w", Tensor::from_shape(&[16, 16], &values(256, 1)).unwrap())
            .unwrap();
        let axes = "IHW,OI->OHW".parse().unwrap();
        let y = model
            .wire_node("conv", EinSum::new(axes, f32::datum_type()), &[x, w])
            .unwrap();
        let n: usize = bias_shape.iter().product();
        let b = model
            .add_const("b", Tensor::from_shape(bias_shape, &values(n, 2)).unwrap())
            .unwrap();
        let sum = model
            .wire_node("bias", tract_onnx::tract_core::ops::math::add(), &[y[0], b])
            .unwrap();
        model.select_output_outlets(&sum).unwrap();
        model
    }

    #[test]
    fn only_a_bias_along_the_channels_is_taken() {
        assert_eq!(rewrite(&mut conv_then_add(&[16, 1, 1])).unwrap(), 1);
        // 16 values, as many as the channels, but along the pixels of a row.
        assert_eq!(rewrite(&mut conv_then_add(&[1, 1, 16])).unwrap(), 0);
    }
}
