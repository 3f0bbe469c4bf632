//! Kernels written for one architecture's instructions, chosen at run time by the operators
//! that use them; each gives the same bits as the portable path beside its operator (tested).
//!
//! The portable paths live with their operators (`crate::qconv`, `crate::pointwise`, ...):
//! what runs where no kernel here applies.

pub mod aarch64;
pub mod x86_64;

/// `IAT_KERNELS=portable` in the environment: the kernels of this module are not used, and
/// every operator runs its portable path (read once per process). For comparing the two on
/// one machine: `cargo xtask qemu model` requires the same outputs, bit for bit.
pub fn portable_requested() -> bool {
    static PORTABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PORTABLE.get_or_init(|| std::env::var("IAT_KERNELS").is_ok_and(|v| v == "portable"))
}
