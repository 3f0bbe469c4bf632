//! Concatenation of quantised activations on their bytes.
//!
//! A QDQ model concatenates dequantised activations and quantises the result:
//! `Concat(DQ(a), DQ(b)) -> Q -> DQ` (NanoDet's twelve concatenations of LeakyReLU outputs,
//! each input on its own grid). tract writes the f32 values of every input, copies them, and
//! quantises them again. [`ByteConcat`] copies the bytes instead, each input's through the
//! table of the output quantiser applied to its bytes' values (a copy where an input is on
//! the output's grid); a dequantiser after it gives the pair's f32 values to readers that want
//! them, and a [`crate::qconv::QConv`] reads the bytes. The same bits as tract (tested).

use std::sync::Arc;

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::array::TypedConcat;

use crate::graph;
use crate::qdq::FakeQuant;

/// Byte tensors joined along `axis`, each through its table when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByteConcat {
    axis: usize,
    /// Per input: its length along `axis`, and its table.
    parts: Vec<(usize, Option<Arc<[u8; 256]>>)>,
    out_shape: TVec<usize>,
}

impl ByteConcat {
    fn run(&self, xs: &[&[u8]], y: &mut [u8]) {
        let inner: usize = self.out_shape[self.axis + 1..].iter().product();
        let outer: usize = self.out_shape[..self.axis].iter().product();
        let row = self.out_shape[self.axis] * inner;
        for i in 0..outer {
            let mut at = i * row;
            for (x, (len, table)) in xs.iter().zip(&self.parts) {
                let n = len * inner;
                let (src, dst) = (&x[i * n..(i + 1) * n], &mut y[at..at + n]);
                match table {
                    None => dst.copy_from_slice(src),
                    Some(t) => crate::table::lookup(t, src, dst),
                }
                at += n;
            }
        }
    }
}

impl Op for ByteConcat {
    fn name(&self) -> StaticName {
        "ByteConcat".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let tables = self.parts.iter().filter(|p| p.1.is_some()).count();
        Ok(vec![format!(
            "{} inputs along axis {}, {} requantised",
            self.parts.len(),
            self.axis,
            tables
        )])
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for ByteConcat {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == self.parts.len());
        let inner: usize = self.out_shape[self.axis + 1..].iter().product();
        let outer: usize = self.out_shape[..self.axis].iter().product();
        let rams = inputs
            .iter()
            .map(|x| x.try_as_plain_ram())
            .collect::<TractResult<Vec<_>>>()?;
        let xs = rams
            .iter()
            .map(|r| r.as_slice::<u8>())
            .collect::<TractResult<Vec<_>>>()?;
        for (x, (len, _)) in xs.iter().zip(&self.parts) {
            ensure!(
                x.len() == outer * len * inner,
                "ByteConcat: an input of {} bytes for {:?}",
                x.len(),
                self.out_shape
            );
        }
        let mut y = Tensor::zero::<u8>(&self.out_shape)?;
        self.run(&xs, y.try_as_plain_ram_mut()?.as_slice_mut::<u8>()?);
        Ok(tvec!(y.into_tvalue()))
    }

    crate::eval_out_of_plan!();
}

impl TypedOp for ByteConcat {
    tract_onnx::tract_core::as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.iter().all(|i| i.datum_type == u8::datum_type()));
        Ok(tvec!(u8::datum_type().fact(&*self.out_shape)))
    }
}

/// Replaces every `Concat` of dequantised bytes read only by a `FakeQuant` (a quantiser to
/// bytes) with a [`ByteConcat`] and a dequantiser. Returns how many. Runs after
/// [`crate::qdq::fuse_pairs`], before [`crate::qconv::rewrite`] (whose convolutions then read
/// the bytes).
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    graph::rewrite_each(model, concat_at)
}

/// The patch for the `Concat` at `id`, if it is one [`rewrite`] takes.
fn concat_at(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let node = model.node(id);
    let Some(concat) = node.op_as::<TypedConcat>() else {
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
    let Some(out_shape) = graph::concrete_shape(model, id.into())? else {
        return Ok(None);
    };
    let axis = concat.axis;
    if axis >= out_shape.len() || node.inputs.is_empty() {
        return Ok(None);
    }
    let mut parts = Vec::new();
    let mut bytes = Vec::new();
    for &input in &node.inputs {
        let Some((grid, wire)) = crate::qdq::byte_dequantiser(model, model.node(input.node))?
        else {
            return Ok(None);
        };
        let Some(shape) = graph::concrete_shape(model, input)? else {
            return Ok(None);
        };
        let others_match = shape.len() == out_shape.len()
            && (0..shape.len()).all(|a| a == axis || shape[a] == out_shape[a]);
        if !others_match {
            return Ok(None);
        }
        parts.push((shape[axis], crate::qdq::requantisation_table(&grid, q)));
        bytes.push(wire);
    }
    if parts.iter().map(|p| p.0).sum::<usize>() != out_shape[axis] {
        return Ok(None);
    }
    let op = ByteConcat {
        axis,
        parts,
        out_shape,
    };
    Ok(Some(crate::qdq::bytes_then_dequantised(
        model, q_node, &bytes, op, q,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::quant::{DequantizeLinearF32, quantize_linear_u8};

    /// `Concat(DQ_i(x_i)) -> Q -> DQ` of byte sources of `shapes` along `axis`.
    fn model(
        shapes: &[[usize; 4]],
        grids: &[(i32, f32)],
        axis: usize,
        out: (u8, f32),
    ) -> TypedModel {
        let mut model = TypedModel::default();
        let mut xs = tvec![];
        for (i, (shape, &(z, s))) in shapes.iter().zip(grids).enumerate() {
            let x = model.add_source(format!("x{i}"), u8::fact(shape)).unwrap();
            xs.push(
                model
                    .wire_node(format!("dq{i}"), DequantizeLinearF32::new(s, z), &[x])
                    .unwrap()[0],
            );
        }
        let y = model
            .wire_node("concat", TypedConcat::new(axis), &xs)
            .unwrap();
        let y = model
            .wire_node("q", quantize_linear_u8(1.0 / out.1, out.0), &y)
            .unwrap();
        let y = model
            .wire_node("dq", DequantizeLinearF32::new(out.1, out.0 as i32), &y)
            .unwrap();
        model.select_output_outlets(&y).unwrap();
        model
    }

    fn run(model: TypedModel, xs: &[Tensor]) -> Vec<u32> {
        let y = model
            .into_runnable()
            .unwrap()
            .run(xs.iter().map(|x| x.clone().into_tvalue()).collect())
            .unwrap();
        let y = y[0].try_as_plain_ram().unwrap();
        y.as_slice::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    #[test]
    fn same_bits_as_tracts_concatenation() {
        // NanoDet's (channels, two grids, the output's a third), other axes, three inputs,
        // one of them on the output's grid (copied).
        /// The inputs' shapes, their grids, the axis.
        type Case<'a> = (&'a [[usize; 4]], &'a [(i32, f32)], usize);
        let cases: [Case; 4] = [
            (
                &[[1, 8, 5, 7], [1, 3, 5, 7]],
                &[(27, 0.016243959), (43, 0.014035405)],
                1,
            ),
            (&[[1, 2, 4, 7], [1, 2, 1, 7]], &[(0, 0.1), (255, 0.02)], 2),
            (
                &[[1, 2, 3, 1], [1, 2, 3, 4], [1, 2, 3, 2]],
                &[(36, 0.016884055), (3, 0.2), (128, 0.001)],
                3,
            ),
            (
                &[[2, 1, 3, 3], [1, 1, 3, 3]],
                &[(36, 0.016884055), (36, 0.016884055)],
                0,
            ),
        ];
        let out = (36u8, 0.016884055f32);
        for (shapes, grids, axis) in cases {
            let xs: Vec<Tensor> = shapes
                .iter()
                .enumerate()
                .map(|(i, shape)| {
                    let n = shape.iter().product();
                    let b: Vec<u8> = crate::graph::testing::ints(n, 40 + i as u32, 0, 255)
                        .into_iter()
                        .map(|b| b as u8)
                        .collect();
                    Tensor::from_shape(shape, &b).unwrap()
                })
                .collect();
            let mut tract = model(shapes, grids, axis, out);
            tract.declutter().unwrap();
            let mut ours = tract.clone();
            crate::qdq::fuse_pairs(&mut ours).unwrap();
            assert_eq!(rewrite(&mut ours).unwrap(), 1, "{shapes:?}");
            let op = ours
                .nodes()
                .iter()
                .find_map(|n| n.op_as::<ByteConcat>())
                .unwrap();
            let copies: Vec<bool> = op.parts.iter().map(|p| p.1.is_none()).collect();
            let want: Vec<bool> = grids.iter().map(|&g| g == (36, 0.016884055)).collect();
            assert_eq!(copies, want);
            assert_eq!(run(ours, &xs), run(tract, &xs), "{shapes:?} along {axis}");
        }
    }

    #[test]
    fn an_input_that_is_not_dequantised_bytes_is_left_to_tract() {
        let mut m = TypedModel::default();
        let a = m.add_source("a", u8::fact([1, 2, 3, 3])).unwrap();
        let a = m
            .wire_node("dq", DequantizeLinearF32::new(0.1, 3), &[a])
            .unwrap()[0];
        let b = m.add_source("b", f32::fact([1, 2, 3, 3])).unwrap();
        let y = m.wire_node("concat", TypedConcat::new(1), &[a, b]).unwrap();
        let y = m.wire_node("q", quantize_linear_u8(10.0, 3), &y).unwrap();
        let y = m
            .wire_node("dq2", DequantizeLinearF32::new(0.1, 3), &y)
            .unwrap();
        m.select_output_outlets(&y).unwrap();
        crate::qdq::fuse_pairs(&mut m).unwrap();
        assert_eq!(rewrite(&mut m).unwrap(), 0);
    }
}
