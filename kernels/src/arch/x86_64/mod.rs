//! x86_64: AVX-512 VNNI and VBMI int8 kernels. Compiled on every target so that the operators
//! keep one shape; off x86_64 `available()` says no and nothing here runs.

pub mod vbmi;
pub mod vnni;
