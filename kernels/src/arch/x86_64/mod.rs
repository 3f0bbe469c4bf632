//! x86_64: AVX-512 VNNI and VBMI int8 kernels, and the AVX2 one for CPUs without AVX-512.
//! Compiled on every target so that the operators keep one shape; off x86_64 `available()`
//! says no and nothing here runs.

pub mod avx2;
pub mod vbmi;
pub mod vnni;

/// A fused int8 product of [`crate::qconv::QConv`] ([`vnni::Weights`], [`avx2::Weights`]): a
/// block of columns is packed in the kernel's layout, then multiplied and requantised.
pub trait Fused {
    /// Columns per block for `n` columns in all.
    fn block_columns(&self, n: usize) -> usize;
    /// Packs rows `row(r)` of a block (`None` past the last), each byte XORed with `flip`.
    fn pack<'a>(
        &self,
        row: impl Fn(usize) -> Option<&'a [u8]>,
        flip: u8,
        cols: usize,
        into: &mut Vec<u32>,
    );
    /// Multiplies a packed block and writes its requantised outputs.
    ///
    /// # Safety
    /// The CPU must have the kernel's features (its `available()`).
    unsafe fn run(&self, x: &[u32], cols: usize, out: &mut vnni::Out);
}

impl Fused for vnni::Weights {
    fn block_columns(&self, n: usize) -> usize {
        self.block_columns(n)
    }

    fn pack<'a>(
        &self,
        row: impl Fn(usize) -> Option<&'a [u8]>,
        flip: u8,
        cols: usize,
        into: &mut Vec<u32>,
    ) {
        self.pack_rows(row, flip, cols, into)
    }

    unsafe fn run(&self, x: &[u32], cols: usize, out: &mut vnni::Out) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's contract.
        unsafe {
            self.run_block(x, cols, out)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("vnni::Weights exist only on x86_64 ({x:?}, {cols})")
    }
}

impl Fused for avx2::Weights {
    fn block_columns(&self, n: usize) -> usize {
        self.block_columns(n)
    }

    fn pack<'a>(
        &self,
        row: impl Fn(usize) -> Option<&'a [u8]>,
        flip: u8,
        cols: usize,
        into: &mut Vec<u32>,
    ) {
        self.pack_rows(row, flip, cols, into)
    }

    unsafe fn run(&self, x: &[u32], cols: usize, out: &mut vnni::Out) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's contract.
        unsafe {
            self.run_block(x, cols, out)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("avx2::Weights exist only on x86_64 ({x:?}, {cols})")
    }
}
