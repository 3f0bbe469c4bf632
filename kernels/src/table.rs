//! 256-byte tables over quantised activations, applied 64 bytes at a time.
//!
//! tract folds a quantised element-wise activation (`DQ -> LeakyRelu -> Q`, or any chain of
//! unary operators between a dequantiser and a quantiser) into a `LookupTable` over the bytes,
//! which it applies a byte at a time after copying its input: NanoDet's 28 LeakyReLU tables
//! took 1.3 ms of its int8 run (`edge-agent model profile`). [`ByteTable`] applies the same
//! table with AVX-512 VBMI where the CPU has it ([`crate::arch::x86_64::vbmi`]), a byte at a
//! time elsewhere; [`lookup`] is that step for the requantisations of [`crate::qpool`] and
//! [`crate::qconcat`]. A lookup has one answer: the same bytes as tract.

use std::sync::Arc;

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::quant::LookupTable;

/// `dst[i] = table[src[i]]` over the shorter of the two.
pub fn lookup(table: &[u8; 256], src: &[u8], dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if crate::arch::x86_64::vbmi::available() {
        // SAFETY: the CPU has the features `lookup` is compiled for.
        return unsafe { crate::arch::x86_64::vbmi::lookup(table, src, dst) };
    }
    for (d, &b) in dst.iter_mut().zip(src) {
        *d = table[b as usize];
    }
}

/// tract's `LookupTable` on bytes (`u8`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByteTable {
    pub(crate) table: Arc<[u8; 256]>,
}

impl Op for ByteTable {
    fn name(&self) -> StaticName {
        "ByteTable".into()
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for ByteTable {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs[0].try_as_plain_ram()?;
        let x = x.as_slice::<u8>()?;
        let mut y = Tensor::zero::<u8>(inputs[0].shape())?;
        lookup(
            &self.table,
            x,
            y.try_as_plain_ram_mut()?.as_slice_mut::<u8>()?,
        );
        Ok(tvec!(y.into_tvalue()))
    }

    crate::eval_out_of_plan!();
}

impl TypedOp for ByteTable {
    tract_onnx::tract_core::as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == u8::datum_type());
        Ok(tvec!(u8::datum_type().fact(inputs[0].shape.clone())))
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

/// Replaces every tract `LookupTable` on bytes (`u8` in and out) with a [`ByteTable`].
/// Returns how many.
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    crate::graph::rewrite_each(model, |model, id| {
        let node = model.node(id);
        let Some(lut) = node
            .op_as::<ElementWiseOp>()
            .and_then(|ew| ew.0.downcast_ref::<LookupTable>())
        else {
            return Ok(None);
        };
        let bytes = |o: OutletId| -> TractResult<bool> {
            Ok(model.outlet_fact(o)?.datum_type == u8::datum_type())
        };
        let Ok(table) = <[u8; 256]>::try_from(lut.table.table()) else {
            return Ok(None);
        };
        if node.inputs.len() != 1 || !bytes(node.inputs[0])? || !bytes(id.into())? {
            return Ok(None);
        }
        let op = ByteTable {
            table: Arc::new(table),
        };
        Ok(Some(TypedModelPatch::replace_single_op(
            model,
            node,
            &node.inputs,
            op,
        )?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::quant::lookup_table;
    use tract_onnx::tract_core::tract_linalg::routines::lut_u8;

    #[test]
    fn same_bytes_as_tracts_lookup_table() {
        // Every byte, in lengths around the 64-byte steps.
        let table: Vec<u8> = (0..=255u8).map(|b| b.wrapping_mul(37) ^ 0x5a).collect();
        for n in [0, 1, 63, 64, 65, 127, 128, 200, 256 * 3 + 5] {
            let x: Vec<u8> = (0..n).map(|i| (i * 131 + 7) as u8).collect();
            let mut model = TypedModel::default();
            let s = model.add_source("x", u8::fact([n])).unwrap();
            let y = model
                .wire_node("lut", lookup_table(lut_u8(&table).unwrap()), &[s])
                .unwrap();
            model.select_output_outlets(&y).unwrap();
            let mut ours = model.clone();
            assert_eq!(rewrite(&mut ours).unwrap(), 1);
            assert_eq!(ours.nodes()[1].op.name(), "ByteTable");
            let run = |m: TypedModel| {
                let y = m
                    .into_runnable()
                    .unwrap()
                    .run(tvec!(tensor1(&x).into_tvalue()))
                    .unwrap();
                y[0].try_as_plain_ram()
                    .unwrap()
                    .as_slice::<u8>()
                    .unwrap()
                    .to_vec()
            };
            let got = run(ours);
            assert_eq!(got, run(model), "{n} bytes");
            let want: Vec<u8> = x.iter().map(|&b| table[b as usize]).collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn the_vector_path_is_the_table() {
        if !crate::graph::testing::cpu_has(
            "table::tests::the_vector_path_is_the_table",
            &["avx512f", "avx512bw", "avx512vbmi"],
        ) {
            return;
        }
        let table: [u8; 256] = std::array::from_fn(|i| (255 - i) as u8 ^ (i as u8 >> 3));
        let x: Vec<u8> = (0..1000).map(|i| (i * 97 + 3) as u8).collect();
        let mut y = vec![0u8; 1000];
        lookup(&table, &x, &mut y);
        let want: Vec<u8> = x.iter().map(|&b| table[b as usize]).collect();
        assert_eq!(y, want);
    }
}
