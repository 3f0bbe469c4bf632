//! Kernels written for one architecture's instructions, chosen at run time by the operators
//! that use them; each gives the same bits as the portable path beside its operator (tested).
//!
//! The portable paths live with their operators (`crate::qconv`, `crate::pointwise`, ...):
//! they are what ARM runs today, through tract-linalg's NEON products.

pub mod x86_64;
