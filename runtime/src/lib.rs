//! Models under their cards: a model runs only if its bytes match the card's sha256, its ONNX
//! file passed the guard, tract parsed and optimised it with the card's shapes, and the
//! kernels' rewrites were applied. Also the golden checks against onnxruntime's vectors and
//! the vetting of an untrusted model in a child process under limits. This crate must never
//! write a file or open a socket: results leave through the agent's aggregator alone.
//!
//! Map:
//! - [`load`]: sha256 check, guard, tract parse, card facts, optimise, run ([`Model`]).
//! - [`onnx_guard`]: checks on untrusted ONNX files and workarounds for tract's known limits.
//! - [`golden`]: golden vectors from onnxruntime and their comparison with the card's tolerance.
//! - [`vet`]: preparing a model in a child process under memory and time limits.
//! - [`bench`] (feature `tools`): latency, load time, memory and per-operator profiles.

#[cfg(feature = "tools")]
pub mod bench;
pub mod golden;
pub mod load;
pub mod onnx_guard;
pub mod vet;

pub use load::{
    LoadOptions, LoadTimes, Model, ModelError, NodeTime, datum_type, hex, initial_tensor,
};
