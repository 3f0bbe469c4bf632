//! The agent's operators over tract and the graph rewrites that install them: int8 and float
//! convolutions, residual sums, quantise-dequantise pairs, poolings, concatenations and tables
//! of quantised bytes, resizes and paddings, each giving tract's
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
//! - [`qpool`], [`qconcat`]: max pooling and concatenation of quantised activations on their
//!   bytes, requantised by tables.
//! - [`pointwise`]: float 1x1 convolutions on a register-tiled product.
//! - [`direct`]: float `KxK` convolutions without patch copies.
//! - [`pad`]: paddings on the last axis.
//! - [`table`]: tract's tables over bytes (quantised element-wise activations), vectorised.
//! - [`resize`]: resizes of an image's height and width (bilinear upsampling in a detector's
//!   neck), with tract's plans.
//! - [`arch`]: kernels for one architecture's instructions (AVX-512 VNNI and VBMI), chosen at
//!   run time.

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
pub mod qconcat;
pub mod qconv;
pub mod qdq;
pub mod qpool;
pub mod resize;
pub mod table;

use tract_onnx::tract_core::internal::{TractResult, TypedModel};

/// How many operators each rewrite of [`optimise`] installed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rewrites {
    /// QuantizeLinear -> DequantizeLinear pairs run as one operator ([`qdq`]).
    pub fused_qdq_pairs: usize,
    /// Quantised convolutions run as integer matrix products ([`qconv`]).
    pub int8_convolutions: usize,
    /// Depthwise convolutions run by [`depthwise`].
    pub depthwise: usize,
    /// Quantised sums run by [`qadd`].
    pub quantised_adds: usize,
    /// Activations passed as bytes between the int8 operators ([`qconv::byte_edges`]).
    pub byte_edges: usize,
    /// Float 1x1 convolutions run by [`pointwise`].
    pub float_pointwise: usize,
    /// Float `KxK` convolutions run by [`direct`].
    pub float_direct: usize,
    /// Max poolings run on bytes by [`qpool`].
    pub byte_pools: usize,
    /// Concatenations run on bytes by [`qconcat`].
    pub byte_concats: usize,
    /// Paddings run by [`pad`].
    pub pads: usize,
    /// Resizes run by [`resize`].
    pub resizes: usize,
    /// Tables over bytes run by [`table`].
    pub byte_tables: usize,
    /// What computes the products of the int8 convolutions on this CPU ([`qconv::kernel_family`]).
    pub int8_kernel: &'static str,
}

/// Whether [`optimise`] installs the float convolutions ([`pointwise`], [`direct`]).
pub const FLOAT_CONVOLUTIONS: bool = !cfg!(target_arch = "aarch64");

/// tract's `into_optimized` with this crate's operators installed: the pair fusion and the
/// convolution rewrites between its two stages (after decluttering, when constants are folded
/// and the quantisers' parameters known; before code generation), the paddings after it.
pub fn optimise(model: &mut TypedModel) -> TractResult<Rewrites> {
    graph::declutter(model)?;
    let fused_qdq_pairs = qdq::fuse_pairs(model)?;
    // Max poolings and concatenations between quantisers, on bytes: the convolutions after
    // them then read bytes.
    let byte_pools = qpool::rewrite(model)?;
    let byte_concats = qconcat::rewrite(model)?;
    // The convolutions tract runs slowly: quantised 1x1 ones as integer matrix products,
    // depthwise ones with a kernel vectorised at every stride, float 1x1 ones with their bias
    // and ReLU without packing, float `KxK` ones without patch copies.
    let int8_convolutions = qconv::rewrite(model)?;
    let depthwise = depthwise::rewrite(model)?;
    // Not on aarch64: there tract-linalg's hand-written NEON f32 kernels beat these portable
    // ones, which the compiler vectorises (float CenterFace on a Cortex-A72, `cargo xtask
    // bench --board raspberry-pi-4`: 559.7 M instructions per inference with them, 267 M
    // without, onnxruntime 281.1 M).
    let (float_pointwise, float_direct) = if FLOAT_CONVOLUTIONS {
        (pointwise::rewrite(model)?, direct::rewrite(model)?)
    } else {
        (0, 0)
    };
    // Sums of quantised activations with their output quantiser.
    let quantised_adds = qadd::rewrite(model)?;
    // Between the int8 operators, activations travel as bytes where every reader takes them.
    let byte_edges = qconv::byte_edges(model)?;
    // Resizes, and tract's tables of quantised element-wise activations, in fewer passes.
    let resizes = resize::rewrite(model)?;
    let byte_tables = table::rewrite(model)?;
    model.optimize()?;
    // tract's code generation adds paddings in front of convolutions: replaced after it.
    let pads = pad::rewrite(model)?;
    Ok(Rewrites {
        fused_qdq_pairs,
        int8_convolutions,
        depthwise,
        quantised_adds,
        byte_edges,
        float_pointwise,
        float_direct,
        byte_pools,
        byte_concats,
        pads,
        resizes,
        byte_tables,
        int8_kernel: qconv::kernel_family(),
    })
}
