//! Max pooling of a quantised activation on its bytes.
//!
//! In a QDQ model a max pooling reads a dequantised activation and is read by a quantiser:
//! `DQ -> MaxPool -> Q -> DQ` (NanoDet's stem, after the table tract makes of a quantised
//! LeakyReLU). tract pools the f32 values (2.5 ms of NanoDet's int8 run for one
//! `[32, 208, 208]` input, `edge-agent model profile`) and quantises them again. A
//! dequantiser is non-decreasing, so the largest of the values is the value of the largest
//! byte: [`BytePool`] pools the bytes, then maps each result through the table of the
//! quantiser applied to its value (none where both grids are the same, as `quantize_static`
//! makes them). A dequantiser after it gives the pair's f32 values to readers that want
//! them; a [`crate::qconv::QConv`] reads the bytes. The same bits as tract (tested).

use std::sync::Arc;

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::MaxPool;
use tract_onnx::tract_core::ops::nn::DataFormat;

use crate::graph;
use crate::qdq::FakeQuant;

/// The largest byte of each `KH x KW` window of `[C, H, W]` byte planes (the taps inside the
/// plane; every window has one), through `table` when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BytePool {
    planes: usize,
    in_hw: [usize; 2],
    out_hw: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    /// Padding before (top, left).
    pad: [usize; 2],
    table: Option<Arc<[u8; 256]>>,
    out_shape: TVec<usize>,
}

impl BytePool {
    /// The input positions along one axis that output `o` reads: `o * stride + k - pad` for
    /// `k < kernel`, inside `[0, len)`.
    fn taps(
        o: usize,
        stride: usize,
        kernel: usize,
        pad: usize,
        len: usize,
    ) -> std::ops::Range<usize> {
        let start = o * stride;
        let lo = start.saturating_sub(pad).min(len);
        let hi = (start + kernel).saturating_sub(pad).min(len);
        lo..hi.max(lo)
    }

    fn run(&self, x: &[u8], y: &mut [u8]) {
        let [h, w] = self.in_hw;
        let [oh, ow] = self.out_hw;
        let ([kw, sx], left) = ([self.kernel[1], self.stride[1]], self.pad[1]);
        // Output column `ox` reads positions `ox * sx + k` (`k < kw`) of a row padded with
        // `left` bytes in front: zeros there and past the row. Every window holds a byte of
        // the row (checked by `rewrite`), and no byte is below zero, so the zeros never win.
        let span = (ow - 1) * sx + 1;
        let mut padded = vec![0u8; (left + w).max(span + kw - 1)];
        let mut windows = vec![0u8; span];
        let mut pooled = vec![0u8; ow];
        for (xp, yp) in x.chunks_exact(h * w).zip(y.chunks_exact_mut(oh * ow)) {
            for (oy, y_row) in yp.chunks_exact_mut(ow).enumerate() {
                // The column maxima of the window's rows, ...
                let row = &mut padded[left..left + w];
                row.fill(0);
                for iy in Self::taps(oy, self.stride[0], self.kernel[0], self.pad[0], h) {
                    for (m, &b) in row.iter_mut().zip(&xp[iy * w..(iy + 1) * w]) {
                        *m = (*m).max(b);
                    }
                }
                // ... the maxima of every `kw` of them, one window per column, ...
                windows.copy_from_slice(&padded[..span]);
                for k in 1..kw {
                    for (m, &b) in windows.iter_mut().zip(&padded[k..k + span]) {
                        *m = (*m).max(b);
                    }
                }
                // ... one window every `sx` columns.
                let out = if self.table.is_some() {
                    &mut pooled[..]
                } else {
                    &mut *y_row
                };
                for (d, &m) in out.iter_mut().zip(windows.iter().step_by(sx)) {
                    *d = m;
                }
                if let Some(t) = &self.table {
                    crate::table::lookup(t, &pooled, y_row);
                }
            }
        }
    }
}

impl Op for BytePool {
    fn name(&self) -> StaticName {
        "BytePool".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "max {}x{}, stride {:?}, {}",
            self.kernel[0],
            self.kernel[1],
            self.stride,
            if self.table.is_some() {
                "requantised"
            } else {
                "same grid"
            }
        )])
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for BytePool {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs[0].try_as_plain_ram()?;
        let x = x.as_slice::<u8>()?;
        ensure!(
            x.len() == self.planes * self.in_hw[0] * self.in_hw[1],
            "BytePool: an input of {} bytes for {} planes of {:?}",
            x.len(),
            self.planes,
            self.in_hw
        );
        let mut y = Tensor::zero::<u8>(&self.out_shape)?;
        self.run(x, y.try_as_plain_ram_mut()?.as_slice_mut::<u8>()?);
        Ok(tvec!(y.into_tvalue()))
    }

    crate::eval_out_of_plan!();
}

impl TypedOp for BytePool {
    tract_onnx::tract_core::as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == u8::datum_type());
        Ok(tvec!(u8::datum_type().fact(&*self.out_shape)))
    }
}

/// Replaces every `DQ (bytes) -> MaxPool -> FakeQuant` (a quantiser to bytes) of one
/// channels-first image with a [`BytePool`] and a dequantiser. Returns how many. Runs after
/// [`crate::qdq::fuse_pairs`], before [`crate::qconv::rewrite`] (whose convolutions then read
/// the bytes).
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    graph::rewrite_each(model, pool_at)
}

/// The patch for the `MaxPool` at `id`, if it is one [`rewrite`] takes.
fn pool_at(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let node = model.node(id);
    let Some(pool) = node.op_as::<MaxPool>() else {
        return Ok(None);
    };
    let spec = &pool.pool_spec;
    // The bytes pooled: those a dequantiser reads, or those of the quantise-dequantise pair
    // that only this pool reads (`Conv -> Q -> DQ -> MaxPool`, quantize_static's form after a
    // convolution: the pair then becomes a quantiser to bytes, which the convolution's
    // QConv writes directly).
    let input = model.node(node.inputs[0].node);
    let (grid, source) = if let Some((grid, bytes)) = crate::qdq::byte_dequantiser(model, input)? {
        (grid, Pooled::Bytes(bytes))
    } else if let Some(fq) = input
        .op_as::<FakeQuant>()
        .filter(|f| f.is_byte_grid() && (0..=255).contains(&f.zero_point))
        .filter(|_| graph::sole_successor(model, input) == Some(id))
    {
        let grid = FakeQuant::byte_grid(fq.dq_zero_point, fq.dq_scale);
        (grid, Pooled::Quantised(input.inputs[0], fq.clone()))
    } else {
        return Ok(None);
    };
    let Some(q_node) = graph::sole_successor(model, node).map(|n| model.node(n)) else {
        return Ok(None);
    };
    let Some(q) = q_node
        .op_as::<FakeQuant>()
        .filter(|q| q.lo == 0 && q.hi == 255)
    else {
        return Ok(None);
    };
    if pool.with_index_outputs.is_some()
        || spec.kernel_shape.len() != 2
        || spec.dilations().iter().any(|&d| d != 1)
    {
        return Ok(None);
    }
    let (Some(x_shape), Some(y_shape)) = (
        graph::concrete_shape(model, node.inputs[0])?,
        graph::concrete_shape(model, id.into())?,
    ) else {
        return Ok(None);
    };
    let (planes, in_hw, out_hw) = match (spec.data_format, &*x_shape, &*y_shape) {
        (DataFormat::CHW, &[c, h, w], &[c2, oh, ow]) if c == c2 => (c, [h, w], [oh, ow]),
        (DataFormat::NCHW, &[1, c, h, w], &[1, c2, oh, ow]) if c == c2 => (c, [h, w], [oh, ow]),
        _ => return Ok(None),
    };
    if in_hw.contains(&0) || out_hw.contains(&0) {
        return Ok(None);
    }
    let padding = spec.computed_padding(&in_hw);
    let pad = [padding[0].pad_before, padding[1].pad_before];
    let strides = spec.strides();
    let stride = [strides[0], strides[1]];
    let kernel = [spec.kernel_shape[0], spec.kernel_shape[1]];
    // Every window must hold a tap inside the plane (tract's would otherwise give the lowest
    // f32, which no byte stands for).
    let len = [in_hw[0], in_hw[1]];
    let windows_hold_taps = (0..2).all(|a| {
        stride[a] > 0
            && (0..out_hw[a])
                .all(|o| !BytePool::taps(o, stride[a], kernel[a], pad[a], len[a]).is_empty())
    });
    if !windows_hold_taps {
        return Ok(None);
    }
    let op = BytePool {
        planes,
        in_hw,
        out_hw,
        kernel,
        stride,
        pad,
        table: crate::qdq::requantisation_table(&grid, q),
        out_shape: y_shape,
    };
    match source {
        Pooled::Bytes(bytes) => Ok(Some(crate::qdq::bytes_then_dequantised(
            model,
            q_node,
            &[bytes],
            op,
            q,
        )?)),
        Pooled::Quantised(x, fq) => {
            use tract_onnx::tract_core::ops::quant::{DequantizeLinearF32, quantize_linear_u8};
            let mut patch = TypedModelPatch::default();
            let x = patch.tap_model(model, x)?;
            // tract's own quantiser, with the pair's (its `scale` multiplies): the same bytes.
            let quantiser = quantize_linear_u8(fq.inv_scale, fq.zero_point as u8);
            let bytes = patch.wire_node(format!("{}.bytes", input.name), quantiser, &[x])?;
            let pooled = patch.wire_node(format!("{}.bytes", q_node.name), op, &bytes)?;
            let dq = DequantizeLinearF32::new(q.dq_scale, q.dq_zero_point);
            let values = patch.wire_node(&q_node.name, dq, &pooled)?;
            patch.shunt_outside(model, q_node.id.into(), values[0])?;
            Ok(Some(patch))
        }
    }
}

/// What a [`BytePool`] reads: bytes already, or f32 values that a byte quantiser (the
/// quantise half of this pair) turns into bytes.
enum Pooled {
    Bytes(OutletId),
    Quantised(OutletId, FakeQuant),
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};
    use tract_onnx::tract_core::ops::quant::{DequantizeLinearF32, quantize_linear_u8};

    /// `bytes -> DQ(z_in, s_in) -> MaxPool -> Q(z_out, s_out) -> DQ` on `[1, c, h, w]`.
    fn model(
        shape: [usize; 4],
        (kernel, stride, padding): ([usize; 2], [usize; 2], PaddingSpec),
        (z_in, s_in): (i32, f32),
        (z_out, s_out): (u8, f32),
    ) -> TypedModel {
        let mut model = TypedModel::default();
        let x = model.add_source("x", u8::fact(shape)).unwrap();
        let x = model
            .wire_node("dq", DequantizeLinearF32::new(s_in, z_in), &[x])
            .unwrap();
        let spec = PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: kernel[..].into(),
            padding,
            dilations: None,
            strides: Some(stride[..].into()),
            input_channels: shape[1],
            output_channels: shape[1],
        };
        let y = model
            .wire_node("pool", MaxPool::new(spec, None), &x)
            .unwrap();
        let y = model
            .wire_node("q", quantize_linear_u8(1.0 / s_out, z_out), &y)
            .unwrap();
        let y = model
            .wire_node("dq_out", DequantizeLinearF32::new(s_out, z_out as i32), &y)
            .unwrap();
        model.select_output_outlets(&y).unwrap();
        model
    }

    fn run(model: TypedModel, x: &Tensor) -> Vec<u32> {
        let y = model
            .into_runnable()
            .unwrap()
            .run(tvec!(x.clone().into_tvalue()))
            .unwrap();
        let y = y[0].try_as_plain_ram().unwrap();
        y.as_slice::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    #[test]
    fn same_bits_as_tracts_pooling() {
        let geometries = [
            // NanoDet's stem: 3x3, stride 2, padding 1.
            (
                [3, 3],
                [2, 2],
                PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]),
            ),
            ([2, 2], [2, 2], PaddingSpec::Valid),
            (
                [3, 2],
                [1, 3],
                PaddingSpec::Explicit(tvec![2, 0], tvec![0, 1]),
            ),
            ([5, 5], [1, 1], PaddingSpec::SameUpper),
            (
                [3, 3],
                [2, 2],
                PaddingSpec::ExplicitOnnxPool(tvec![1, 1], tvec![1, 1], true),
            ),
        ];
        // The same grid on both sides (no table), and requantised: finer, coarser, shifted.
        let grids = [
            ((20, 0.0173f32), (20u8, 0.0173f32)),
            ((20, 0.0173), (128, 0.01)),
            ((200, 0.05), (3, 0.2)),
            ((0, 0.1), (255, 0.02)),
        ];
        let shape = [1, 3, 11, 14];
        let x: Vec<u8> = crate::graph::testing::ints(3 * 11 * 14, 21, 0, 255)
            .into_iter()
            .map(|b| b as u8)
            .collect();
        let x = Tensor::from_shape(&shape, &x).unwrap();
        for geometry in &geometries {
            for (from, to) in grids {
                let mut tract = model(shape, geometry.clone(), from, to);
                tract.declutter().unwrap();
                let mut ours = tract.clone();
                crate::qdq::fuse_pairs(&mut ours).unwrap();
                assert_eq!(rewrite(&mut ours).unwrap(), 1, "{geometry:?}");
                let names: Vec<_> = ours.nodes().iter().map(|n| n.op.name()).collect();
                assert!(!names.iter().any(|n| n == "MaxPool"), "{names:?}");
                let table = ours
                    .nodes()
                    .iter()
                    .find_map(|n| n.op_as::<BytePool>())
                    .unwrap()
                    .table
                    .is_some();
                assert_eq!(table, from != (to.0 as i32, to.1));
                assert_eq!(
                    run(ours, &x),
                    run(tract, &x),
                    "{geometry:?}, grids {from:?} -> {to:?}"
                );
            }
        }
    }

    #[test]
    fn a_pair_read_only_by_the_pool_becomes_its_bytes() {
        // `f32 -> Q -> DQ -> MaxPool -> Q -> DQ` (quantize_static after a convolution).
        let shape = [1, 3, 9, 10];
        let (z_in, s_in) = (37u8, 0.021f32);
        let mut tract = TypedModel::default();
        let x = tract.add_source("x", f32::fact(shape)).unwrap();
        let x = tract
            .wire_node("q_in", quantize_linear_u8(1.0 / s_in, z_in), &[x])
            .unwrap();
        let x = tract
            .wire_node("dq_in", DequantizeLinearF32::new(s_in, z_in as i32), &x)
            .unwrap();
        let spec = PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec![3, 3],
            padding: PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]),
            dilations: None,
            strides: Some(tvec![2, 2]),
            input_channels: shape[1],
            output_channels: shape[1],
        };
        let y = tract
            .wire_node("pool", MaxPool::new(spec, None), &x)
            .unwrap();
        let y = tract
            .wire_node("q", quantize_linear_u8(1.0 / 0.03, 90), &y)
            .unwrap();
        let y = tract
            .wire_node("dq_out", DequantizeLinearF32::new(0.03, 90), &y)
            .unwrap();
        tract.select_output_outlets(&y).unwrap();
        tract.declutter().unwrap();
        let mut ours = tract.clone();
        crate::qdq::fuse_pairs(&mut ours).unwrap();
        assert_eq!(rewrite(&mut ours).unwrap(), 1);
        let names: Vec<_> = ours.nodes().iter().map(|n| n.op.name()).collect();
        assert!(
            !names.iter().any(|n| n == "MaxPool" || n == "FakeQuant"),
            "{names:?}"
        );
        // Values around and beyond the input grid, both saturation ends included.
        let values: Vec<f32> = crate::graph::testing::ints(3 * 9 * 10, 5, -400, 6000)
            .into_iter()
            .map(|i| i as f32 * 0.001)
            .collect();
        let x = Tensor::from_shape(&shape, &values).unwrap();
        assert_eq!(run(ours, &x), run(tract, &x));
    }

    #[test]
    fn windows_without_taps_are_left_to_tract() {
        // A padding as large as the kernel: the first window reads padding only.
        let mut m = model(
            [1, 2, 6, 6],
            (
                [2, 2],
                [1, 1],
                PaddingSpec::Explicit(tvec![2, 0], tvec![0, 0]),
            ),
            (0, 0.1),
            (0, 0.1),
        );
        m.declutter().unwrap();
        crate::qdq::fuse_pairs(&mut m).unwrap();
        assert_eq!(rewrite(&mut m).unwrap(), 0);
    }
}
