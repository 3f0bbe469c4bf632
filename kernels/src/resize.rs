//! Resizes of an image's height and width in one pass, with tract's plans and arithmetic.
//!
//! tract 0.23.9's `Resize` copies its input, then resamples one axis at a time; along the last
//! axis its loop handles one value per iteration (a `fill`, the taps' slices, an inner loop
//! over one element). NanoDet's four bilinear resizes of 128 channels took 7.0 of 43.6 ms of
//! the int8 model's run (`edge-agent model profile`). [`PlaneResize`] takes tract's own
//! resampling plans (the input rows and columns each output row and column reads, and their
//! weights) and its arithmetic (from 0.0, the product of each tap whose weight is not zero
//! added in order; the height first, then the width), one output row at a time: the same
//! bits as tract, for every interpolator and coordinate transform tract's `Resize` takes.

use std::sync::Arc;

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::nn::resize::{AxisPlan, Resize};

/// One axis's plan, as flat arrays: output position `o` reads `indices[o * window + k]` with
/// weight `weights[o * window + k]`, `k < window`.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    window: usize,
    indices: Vec<usize>,
    weights: Vec<f32>,
}

impl Plan {
    /// tract's plan, when no output position lies outside the input (tract's `Resize` fills
    /// those with 0.0; its plans have none) and every index is inside the axis.
    fn of(plan: AxisPlan, len_in: usize) -> Option<Plan> {
        let fits = !plan.extrapolated.contains(&true)
            && plan.window > 0
            && plan.indices.len() == plan.window * plan.extrapolated.len()
            && plan.weights.len() == plan.indices.len()
            && plan.indices.iter().all(|&i| i < len_in);
        fits.then_some(Plan {
            window: plan.window,
            indices: plan.indices,
            weights: plan.weights,
        })
    }
}

/// tract's `Resize` of an f32 tensor `[..., h, w]` along its last two axes.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaneResize {
    in_shape: TVec<usize>,
    out_shape: TVec<usize>,
    /// The plans for the height and the width; `None` where tract leaves the axis as it is.
    rows: Option<Arc<Plan>>,
    cols: Option<Arc<Plan>>,
}

impl Eq for PlaneResize {}

impl PlaneResize {
    fn hw(shape: &[usize]) -> [usize; 2] {
        [shape[shape.len() - 2], shape[shape.len() - 1]]
    }

    fn run(&self, x: &[f32], y: &mut [f32]) {
        let [h, w] = Self::hw(&self.in_shape);
        let [oh, ow] = Self::hw(&self.out_shape);
        let mut row = vec![0f32; w];
        for (xp, yp) in x.chunks_exact(h * w).zip(y.chunks_exact_mut(oh * ow)) {
            for (yo, y_row) in yp.chunks_exact_mut(ow).enumerate() {
                let src: &[f32] = match &self.rows {
                    None => &xp[yo * w..(yo + 1) * w],
                    Some(p) => {
                        // As tract: from 0.0, each tap with a weight added in order.
                        row.fill(0.0);
                        let taps = yo * p.window..(yo + 1) * p.window;
                        for (&i, &wt) in p.indices[taps.clone()].iter().zip(&p.weights[taps]) {
                            if wt == 0.0 {
                                continue;
                            }
                            for (d, &s) in row.iter_mut().zip(&xp[i * w..(i + 1) * w]) {
                                *d += wt * s;
                            }
                        }
                        &row
                    }
                };
                match &self.cols {
                    None => y_row.copy_from_slice(src),
                    // Two taps (linear, nearest): tract's sum from 0.0, a tap without weight
                    // adding 0.0 instead of being skipped, which gives the same value (the
                    // sum is never -0.0).
                    Some(p) if p.window == 2 => {
                        for ((d, i), wt) in y_row
                            .iter_mut()
                            .zip(p.indices.chunks_exact(2))
                            .zip(p.weights.chunks_exact(2))
                        {
                            let t0 = if wt[0] != 0.0 { wt[0] * src[i[0]] } else { 0.0 };
                            let t1 = if wt[1] != 0.0 { wt[1] * src[i[1]] } else { 0.0 };
                            *d = (0.0 + t0) + t1;
                        }
                    }
                    Some(p) => {
                        for ((d, indices), weights) in y_row
                            .iter_mut()
                            .zip(p.indices.chunks_exact(p.window))
                            .zip(p.weights.chunks_exact(p.window))
                        {
                            let mut acc = 0f32;
                            for (&i, &wt) in indices.iter().zip(weights) {
                                if wt != 0.0 {
                                    acc += wt * src[i];
                                }
                            }
                            *d = acc;
                        }
                    }
                }
            }
        }
    }
}

impl Op for PlaneResize {
    fn name(&self) -> StaticName {
        "PlaneResize".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let taps = |p: &Option<Arc<Plan>>| p.as_ref().map_or(1, |p| p.window);
        Ok(vec![format!(
            "{:?} -> {:?}, {}x{} taps",
            self.in_shape,
            self.out_shape,
            taps(&self.rows),
            taps(&self.cols)
        )])
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for PlaneResize {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        crate::graph::eval_f32(&inputs[..1], &self.out_shape, |x, y| {
            ensure!(
                x.len() == self.in_shape.iter().product::<usize>(),
                "PlaneResize: an input of {} values for {:?}",
                x.len(),
                self.in_shape
            );
            self.run(x, y);
            Ok(())
        })
    }

    crate::eval_out_of_plan!();
}

impl TypedOp for PlaneResize {
    tract_onnx::tract_core::as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type());
        Ok(tvec!(f32::datum_type().fact(&*self.out_shape)))
    }
}

/// Replaces tract's `Resize` of an f32 tensor of known shape, with constant scales or sizes,
/// that changes at most its last two axes. Returns how many.
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    crate::graph::rewrite_each(model, resize_at)
}

/// The [`PlaneResize`] computing what the `Resize` of `node` computes (see its `eval`), if
/// there is one.
fn plane_resize(model: &TypedModel, node: &TypedNode) -> TractResult<Option<PlaneResize>> {
    let Some(resize) = node.op_as::<Resize>() else {
        return Ok(None);
    };
    let (Some(in_shape), Some(out_shape)) = (
        crate::graph::concrete_shape(model, node.inputs[0])?,
        crate::graph::concrete_shape(model, node.id.into())?,
    ) else {
        return Ok(None);
    };
    let rank = in_shape.len();
    if model.outlet_fact(node.inputs[0])?.datum_type != f32::datum_type()
        || rank < 2
        || out_shape.len() != rank
        || in_shape.contains(&0)
        || out_shape.contains(&0)
    {
        return Ok(None);
    }
    // The scales tract's `eval` uses: the scales input when it has one per axis, else the
    // ratios of the sizes.
    let konst = |ix: Option<usize>| -> TractResult<Option<Arc<Tensor>>> {
        Ok(match ix.and_then(|ix| node.inputs.get(ix)) {
            Some(&input) => model.outlet_fact(input)?.konst.clone(),
            None => None,
        })
    };
    let scales = konst(resize.optional_scales_input)?;
    let scales: Vec<f32> = match &scales {
        Some(s) if s.len() == rank => {
            if s.datum_type() != f32::datum_type() {
                return Ok(None);
            }
            s.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()
        }
        Some(_) | None => {
            if resize.optional_sizes_input.is_some()
                && konst(resize.optional_sizes_input)?.is_none()
            {
                return Ok(None);
            }
            out_shape
                .iter()
                .zip(&in_shape)
                .map(|(&o, &i)| o as f32 / i as f32)
                .collect()
        }
    };
    // tract leaves an axis as it is when its length and scale are unchanged.
    let kept = |axis: usize| in_shape[axis] == out_shape[axis] && scales[axis] == 1.0;
    if !(0..rank - 2).all(kept) {
        return Ok(None);
    }
    let mut plans = [None, None];
    for (p, axis) in plans.iter_mut().zip([rank - 2, rank - 1]) {
        if kept(axis) {
            continue;
        }
        let (len_in, len_out) = (in_shape[axis], out_shape[axis]);
        let Some(plan) = Plan::of(resize.plan_axis(scales[axis], len_in, len_out), len_in) else {
            return Ok(None);
        };
        *p = Some(Arc::new(plan));
    }
    let [rows, cols] = plans;
    Ok(Some(PlaneResize {
        in_shape,
        out_shape,
        rows,
        cols,
    }))
}

/// The patch for the `Resize` at `id`, if it is one [`rewrite`] takes.
fn resize_at(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let node = model.node(id);
    let Some(op) = plane_resize(model, node)? else {
        return Ok(None);
    };
    Ok(Some(TypedModelPatch::replace_single_op(
        model,
        node,
        &node.inputs[..1],
        op,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::nn::resize::{CoordTransformer, Interpolator, Nearest};

    /// A model `x -> Resize(x, aux)` of tract's `Resize`, with its scales (`sizes: false`) or
    /// sizes as a constant.
    fn model(op: Resize, shape: &[usize], aux: Tensor) -> TypedModel {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact(shape)).unwrap();
        let aux = model.add_const("aux", aux).unwrap();
        let y = model.wire_node("resize", op, &[x, aux]).unwrap();
        model.select_output_outlets(&y).unwrap();
        model
    }

    fn run(model: TypedModel, x: &Tensor) -> Tensor {
        model
            .into_runnable()
            .unwrap()
            .run(tvec!(x.clone().into_tvalue()))
            .unwrap()
            .remove(0)
            .into_tensor()
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        let t = t.try_as_plain_ram().unwrap();
        t.as_slice::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    #[test]
    fn same_bits_as_tracts_resize() {
        let transforms = [
            CoordTransformer::HalfPixel,
            CoordTransformer::AlignCorners,
            CoordTransformer::Asymmetric,
            CoordTransformer::PytorchHalfPixel,
            CoordTransformer::HalfPixelSymmetric,
            CoordTransformer::TfHalfPixelForNn,
        ];
        let interpolators = [
            Interpolator::Linear,
            Interpolator::Nearest,
            Interpolator::Cubic,
        ];
        // (input, output): up and down by 2 (NanoDet's), uneven ratios, one axis only, a
        // single row or column, and rank 3.
        let shapes: [(&[usize], &[usize]); 7] = [
            (&[1, 3, 13, 13], &[1, 3, 26, 26]),
            (&[1, 2, 52, 50], &[1, 2, 26, 25]),
            (&[1, 2, 7, 11], &[1, 2, 10, 4]),
            (&[2, 1, 9, 5], &[2, 1, 9, 17]),
            (&[1, 4, 6, 8], &[1, 4, 15, 8]),
            (&[1, 1, 1, 6], &[1, 1, 3, 1]),
            (&[3, 5, 7], &[3, 11, 2]),
        ];
        let mut checked = 0;
        for (in_shape, out_shape) in shapes {
            let n: usize = in_shape.iter().product();
            let x: Vec<f32> = crate::graph::testing::values(n, n as u32)
                .into_iter()
                .enumerate()
                // Some exact zeros, and some values far from the others.
                .map(|(i, v)| match i % 17 {
                    0 => 0.0,
                    5 => v * 1e4,
                    _ => v,
                })
                .collect();
            let x = Tensor::from_shape(in_shape, &x).unwrap();
            let sizes: Vec<i64> = out_shape.iter().map(|&d| d as i64).collect();
            let scales: Vec<f32> = out_shape
                .iter()
                .zip(in_shape)
                .map(|(&o, &i)| o as f32 / i as f32)
                .collect();
            for transform in &transforms {
                for interpolator in &interpolators {
                    for by_sizes in [true, false] {
                        let op = Resize {
                            coord_transformer: transform.clone(),
                            interpolator: interpolator.clone(),
                            nearest: Nearest::Floor,
                            optional_scales_input: (!by_sizes).then_some(1),
                            optional_sizes_input: by_sizes.then_some(1),
                        };
                        let aux = if by_sizes {
                            tensor1(&sizes)
                        } else {
                            tensor1(&scales)
                        };
                        let tract = model(op, in_shape, aux);
                        let mut ours = tract.clone();
                        assert_eq!(rewrite(&mut ours).unwrap(), 1);
                        assert_eq!(ours.nodes().last().unwrap().op.name(), "PlaneResize");
                        let want = run(tract, &x);
                        let got = run(ours, &x);
                        assert_eq!(got.shape(), want.shape());
                        assert!(
                            bits(&got) == bits(&want),
                            "{in_shape:?} -> {out_shape:?}, {transform:?}, {interpolator:?}, sizes {by_sizes}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 7 * 6 * 3 * 2);
    }

    #[test]
    fn other_axes_are_left_to_tract() {
        // Resizing the channels: not a plane resize.
        let op = Resize {
            coord_transformer: CoordTransformer::HalfPixel,
            interpolator: Interpolator::Linear,
            nearest: Nearest::Floor,
            optional_scales_input: None,
            optional_sizes_input: Some(1),
        };
        let mut m = model(op, &[1, 3, 4, 4], tensor1(&[1i64, 6, 8, 8]));
        assert_eq!(rewrite(&mut m).unwrap(), 0);
        assert_eq!(m.nodes().last().unwrap().op.name(), "Resize");
    }
}
