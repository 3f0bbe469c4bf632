//! The edge agent: the Linux service of a field device. It reads sensors, runs quantised ONNX
//! models with tract under the rules of their model cards, and (in later stages) aggregates
//! under privacy rules into a signed audit log that is also its outbox.
//!
//! Code map:
//! - [`card`]: model cards, validated once from TOML.
//! - [`onnx_guard`]: checks on untrusted ONNX files and workarounds for tract's known limits.
//! - [`runtime`]: sha256 check, tract parse, card facts, optimise, run.
//! - [`qdq`]: QDQ models' quantise-dequantise pairs fused into one vectorised operator.
//! - [`qconv`], [`depthwise`], [`qadd`], [`pointwise`], [`direct`], [`pad`], [`vnni`]: the agent's operators for
//!   quantised and float convolutions and residual sums (see `docs/quantised-inference.md`).
//! - [`golden`]: golden vectors from onnxruntime and their comparison.
//! - [`bench`]: latency, load time and memory figures.
//! - [`pipeline`]: preprocessing and postprocessing driven by the card.
//! - [`config`]: the agent's configuration, validated once.
//! - [`agent`]: `run`: sources -> models -> aggregators -> the audit log.
//! - [`outbox`]: the audit log (crate `audit`) as the only writer of what may leave the device.
//! - [`publish`]: MQTT delivery of the log to the hub, resending above the hub's signed ack.
//! - [`sources`]: live sources: the sensor node's serial frames, Linux I2C sensors.

/// `EvalOp::eval_out_of_plan` for the agent's stateless operators: their plain `eval`.
#[macro_export]
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

pub mod agent;
pub mod bench;
pub mod card;
pub mod config;
pub mod depthwise;
pub mod direct;
pub mod golden;
pub mod graph;
pub mod onnx_guard;
pub mod outbox;
pub mod pad;
pub mod pipeline;
pub mod pointwise;
pub mod publish;
pub mod qadd;
pub mod qconv;
pub mod qdq;
pub mod runtime;
pub mod sources;
pub mod vet;
pub mod vnni;
