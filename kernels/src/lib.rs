//! The agent's operators over tract and the graph rewrites that install them: int8 and float
//! convolutions, residual sums, quantise-dequantise pairs and paddings, each giving tract's
//! results (bit for bit, or within one quantisation step where a test says so). This crate
//! must never read files, the network or a model card: it takes a typed tract graph and
//! returns a faster one with the same meaning.
//!
//! It uses tract's internals (`TypedOp`, `EvalOp`, the optimiser's patches), so tract is
//! pinned exactly in the workspace. Design and measurements: `docs/quantised-inference.md`.
//!
//! Map:
//! - [`graph`]: the patterns the rewrites share (1x1 chains, 2-D geometry, ReLU, sole reader)
//!   and the one rewrite loop.
//! - [`qdq`]: QuantizeLinear -> DequantizeLinear pairs as one vectorised operator.
//! - [`qconv`]: quantised convolutions as integer products, requantised in one pass; bytes
//!   between int8 operators ([`qconv::byte_edges`]).
//! - [`depthwise`]: depthwise convolutions, integer or float.
//! - [`qadd`]: quantised residual sums.
//! - [`pointwise`]: float 1x1 convolutions on a register-tiled product.
//! - [`direct`]: float `KxK` convolutions without patch copies.
//! - [`pad`]: paddings on the last axis.
//! - [`arch`]: kernels for one architecture's instructions (AVX-512 VNNI), chosen at run time.

/// `EvalOp::eval_out_of_plan` for the crate's stateless operators: their plain `eval`.
macro_rules! eval_out_of_plan {
    () => {
        fn eval_out_of_plan(&self, inputs: TVec<TValue>) -> TractResult<Option<TVec<TValue>>> {
            Ok(Some(EvalOp::eval(
                self,
                &EvalContext::out_of_plan(),
                inputs,
            )?))
        }
    };
}
pub(crate) use eval_out_of_plan;

pub mod arch;
#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench;
pub mod depthwise;
pub mod direct;
pub mod graph;
pub mod pad;
pub mod pointwise;
pub mod qadd;
pub mod qconv;
pub mod qdq;
