//! Kernels written for one architecture's instructions, chosen at run time by the operators
//! that use them; each gives the same bits as the portable path beside its operator (tested).
//!
//! The portable paths live with their operators (`crate::qconv`, `crate::pointwise`, ...):
//! what runs where no kernel here applies.

pub mod aarch64;
pub mod x86_64;
