//! Residual additions of QDQ models, on bytes.
//!
//! In a QDQ model an `Add` of two quantised activations (MobileNet's residual connections,
//! a feature pyramid's lateral sums) is followed by its output quantiser: after
//! [`crate::qdq::fuse_pairs`], `FakeQuant(a + b)`. tract runs the two as two passes over f32
//! tensors, and the convolutions around them must read and write f32 for it. [`QAdd`] runs
//! both in one pass and, through [`crate::qconv::byte_edges`], reads the bytes of its inputs'
//! quantisers and writes its own quantiser's bytes where its neighbours take them.
//!
//! The numbers are the f32 path's: each input byte becomes exactly the value that path
//! carried, the sum is the same f32 addition and the quantiser the same `FakeQuant`, so the
//! output has the same bits (tested).

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;

use crate::graph::{self, sole_successor};
use crate::qdq::FakeQuant;

/// `FakeQuant(a + b)` of two tensors of the same shape.
#[derive(Debug, Clone, PartialEq)]
pub struct QAdd {
    /// Per input: it arrives as the bytes of this grid (its producer's quantiser).
    pub(crate) bytes_in: [Option<FakeQuant>; 2],
    /// The output quantiser; the output leaves as its bytes when `bytes_out`.
    pub(crate) out: FakeQuant,
    pub(crate) bytes_out: bool,
    shape: TVec<usize>,
}

impl Eq for QAdd {}

/// An input: f32 values, or the bytes of a grid.
enum Input<'a> {
    F32(&'a [f32]),
    Bytes(&'a [u8], &'a FakeQuant),
}

impl<'a> Input<'a> {
    fn new(x: &'a PlainView<'a>, grid: &'a Option<FakeQuant>) -> TractResult<Input<'a>> {
        Ok(match grid {
            Some(grid) => Input::Bytes(x.as_slice::<u8>()?, grid),
            None => Input::F32(x.as_slice::<f32>()?),
        })
    }

    fn len(&self) -> usize {
        match self {
            Input::F32(x) => x.len(),
            Input::Bytes(q, _) => q.len(),
        }
    }

    /// The values from `start` into `dst`.
    #[inline(always)]
    fn read(&self, start: usize, dst: &mut [f32]) {
        match self {
            Input::F32(x) => dst.copy_from_slice(&x[start..start + dst.len()]),
            Input::Bytes(q, grid) => {
                let (z, s) = (grid.dq_zero_point, grid.dq_scale);
                let n = dst.len();
                for (d, &q) in dst.iter_mut().zip(&q[start..start + n]) {
                    *d = (q as i32 - z) as f32 * s;
                }
            }
        }
    }
}

/// The output: f32 values on the quantiser's grid, or its bytes.
enum Output<'a> {
    F32(&'a mut [f32]),
    Bytes(&'a mut [u8]),
}

impl QAdd {
    /// A sum of two byte tensors of `shape` into bytes, for [`crate::bench`]; and its inputs.
    #[cfg(feature = "bench")]
    pub(crate) fn for_bench(shape: &[usize]) -> TractResult<(QAdd, [Tensor; 2])> {
        let grid = FakeQuant::byte_grid;
        let op = QAdd {
            bytes_in: [Some(grid(120, 0.031)), Some(grid(7, 0.0123))],
            out: grid(64, 0.05),
            bytes_out: true,
            shape: shape.into(),
        };
        let len = shape.iter().product::<usize>();
        let input = |step: usize| -> TractResult<Tensor> {
            let x: Vec<u8> = (0..len).map(|i| (i * step % 256) as u8).collect();
            Tensor::from_shape(shape, &x)
        };
        Ok((op, [input(131)?, input(71)?]))
    }

    fn run(&self, a: &Input, b: &Input, y: &mut Output) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has the feature the function is compiled for.
            return unsafe { self.run_avx2(a, b, y) };
        }
        self.run_body(a, b, y)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn run_avx2(&self, a: &Input, b: &Input, y: &mut Output) {
        self.run_body(a, b, y)
    }

    /// A chunk at a time in two buffers that stay in L1.
    #[inline(always)]
    fn run_body(&self, a: &Input, b: &Input, y: &mut Output) {
        const CHUNK: usize = 512;
        let (mut sum, mut other) = ([0f32; CHUNK], [0f32; CHUNK]);
        let len = self.shape.iter().product::<usize>();
        for start in (0..len).step_by(CHUNK) {
            let n = CHUNK.min(len - start);
            let (sum, other) = (&mut sum[..n], &mut other[..n]);
            a.read(start, sum);
            b.read(start, other);
            for (s, &o) in sum.iter_mut().zip(other.iter()) {
                *s += o;
            }
            match y {
                Output::F32(y) => {
                    let y = &mut y[start..start + n];
                    y.copy_from_slice(sum);
                    self.out.apply_body(y);
                }
                Output::Bytes(y) => self.out.quantise_bytes_body(sum, &mut y[start..start + n]),
            }
        }
    }
}

impl Op for QAdd {
    fn name(&self) -> StaticName {
        "QAdd".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let side = |b: bool| if b { "bytes" } else { "f32" };
        Ok(vec![format!(
            "{} + {} -> {}",
            side(self.bytes_in[0].is_some()),
            side(self.bytes_in[1].is_some()),
            side(self.bytes_out)
        )])
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for QAdd {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 2, "QAdd: {} inputs", inputs.len());
        let len = self.shape.iter().product::<usize>();
        let (a, b) = (inputs[0].try_as_plain_ram()?, inputs[1].try_as_plain_ram()?);
        let (a, b) = (
            Input::new(&a, &self.bytes_in[0])?,
            Input::new(&b, &self.bytes_in[1])?,
        );
        ensure!(
            a.len() == len && b.len() == len,
            "QAdd: inputs of {:?} and {:?} for a sum of {:?}",
            inputs[0].shape(),
            inputs[1].shape(),
            self.shape
        );
        let mut y = graph::zeroed_output(self.bytes_out, &self.shape)?;
        {
            let mut ram = y.try_as_plain_ram_mut()?;
            let mut out = if self.bytes_out {
                Output::Bytes(ram.as_slice_mut::<u8>()?)
            } else {
                Output::F32(ram.as_slice_mut::<f32>()?)
            };
            self.run(&a, &b, &mut out);
        }
        Ok(tvec!(y.into_tvalue()))
    }

    crate::eval_out_of_plan!();
}

impl TypedOp for QAdd {
    tract_onnx::tract_core::as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 2);
        for (fact, grid) in inputs.iter().zip(&self.bytes_in) {
            ensure!(fact.datum_type == graph::bytes_or_f32(grid.is_some()));
        }
        Ok(tvec!(
            graph::bytes_or_f32(self.bytes_out).fact(&*self.shape)
        ))
    }
}

/// Replaces every `Add` of two f32 tensors of the output's shape (no constant, no
/// broadcasting) read only by a `FakeQuant` of that shape with one [`QAdd`]. Returns how many.
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    graph::rewrite_each(model, sum_at)
}

/// The patch for the `Add` at `id`, if it is one [`rewrite`] takes.
fn sum_at(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let node = model.node(id);
    if node
        .op_as::<TypedBinOp>()
        .is_none_or(|b| b.0.name() != "Add")
        || node.inputs.len() != 2
    {
        return Ok(None);
    }
    let Some(shape) = graph::concrete_shape(model, id.into())? else {
        return Ok(None);
    };
    let mut plain = true;
    for &input in &node.inputs {
        let fact = model.outlet_fact(input)?;
        plain &= fact.konst.is_none()
            && fact.datum_type == f32::datum_type()
            && graph::concrete_shape(model, input)?.as_deref() == Some(&shape[..]);
    }
    let Some(next) = sole_successor(model, node).map(|n| model.node(n)) else {
        return Ok(None);
    };
    let Some(q) = next.op_as::<FakeQuant>() else {
        return Ok(None);
    };
    if !plain || graph::concrete_shape(model, next.id.into())?.as_deref() != Some(&shape[..]) {
        return Ok(None);
    }
    let op = QAdd {
        bytes_in: [None, None],
        out: q.clone(),
        bytes_out: false,
        shape,
    };
    let inputs = node.inputs.clone();
    Ok(Some(TypedModelPatch::replace_single_op(
        model, next, &inputs, op,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::testing::{byte_grid as grid, ints};

    fn eval(op: &QAdd, a: Tensor, b: Tensor) -> Tensor {
        let y = EvalOp::eval(
            op,
            &EvalContext::out_of_plan(),
            tvec!(a.into_tvalue(), b.into_tvalue()),
        )
        .unwrap();
        y[0].clone().into_tensor()
    }

    /// Every combination of bytes and f32 on each side gives the bits of `FakeQuant(a + b)`
    /// computed on the f32 values, over more than one chunk and a partial one.
    #[test]
    fn bytes_and_values_give_the_f32_path_s_bits() {
        let (ga, gb, out) = (grid(120, 0.031), grid(7, 0.0123), grid(64, 0.05));
        let len = 3 * 17 * 23;
        let bytes = |seed| -> Vec<u8> {
            ints(len, seed, 0, 255)
                .into_iter()
                .map(|q| q as u8)
                .collect()
        };
        let (qa, qb) = (bytes(1), bytes(2));
        let (mut va, mut vb) = (vec![0f32; len], vec![0f32; len]);
        ga.dequantise_bytes(&qa, &mut va);
        gb.dequantise_bytes(&qb, &mut vb);
        let mut want: Vec<f32> = va.iter().zip(&vb).map(|(a, b)| a + b).collect();
        out.apply(&mut want);
        let shape = [3, 17, 23];
        for (a_bytes, b_bytes, bytes_out) in [
            (false, false, false),
            (true, false, true),
            (false, true, false),
            (true, true, true),
            (true, true, false),
        ] {
            let op = QAdd {
                bytes_in: [a_bytes.then(|| ga.clone()), b_bytes.then(|| gb.clone())],
                out: out.clone(),
                bytes_out,
                shape: shape.iter().copied().collect(),
            };
            let side = |bytes: bool, q: &[u8], v: &[f32]| {
                if bytes {
                    Tensor::from_shape(&shape, q).unwrap()
                } else {
                    Tensor::from_shape(&shape, v).unwrap()
                }
            };
            let y = eval(&op, side(a_bytes, &qa, &va), side(b_bytes, &qb, &vb));
            let ram = y.try_as_plain_ram().unwrap();
            let got = if bytes_out {
                let mut v = vec![0f32; len];
                out.dequantise_bytes(ram.as_slice::<u8>().unwrap(), &mut v);
                v
            } else {
                ram.as_slice::<f32>().unwrap().to_vec()
            };
            assert_eq!(
                got, want,
                "bytes in {a_bytes}/{b_bytes}, bytes out {bytes_out}"
            );
        }
    }

    #[test]
    fn inputs_of_the_wrong_size_are_errors() {
        let op = QAdd {
            bytes_in: [None, None],
            out: grid(0, 0.1),
            bytes_out: false,
            shape: tvec![2, 3],
        };
        let (a, b) = (
            Tensor::from_shape(&[6], &[0f32; 6]).unwrap(),
            Tensor::from_shape(&[5], &[0f32; 5]).unwrap(),
        );
        let err = EvalOp::eval(
            &op,
            &EvalContext::out_of_plan(),
            tvec!(a.into_tvalue(), b.into_tvalue()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("QAdd"), "{err}");
    }
}
