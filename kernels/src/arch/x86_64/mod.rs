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

/// `Fused` for a kernel's weights whose inherent `block_columns`, `pack_rows` and (x86_64
/// only) `run_block` have the trait's signatures.
macro_rules! fused {
    ($weights:ty) => {
        impl Fused for $weights {
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
                {
                    let _ = (x, cols, out);
                    unreachable!("fused weights exist only on x86_64")
                }
            }
        }
    };
}

fused!(vnni::Weights);
fused!(avx2::Weights);

/// What a fused kernel's `run_block` checks before its raw loads and stores: `x` holds
/// `groups * padded` words and `out` the `cols` outputs of each of the `m` rows. (Checked
/// arithmetic: a wrapped product would let a short buffer pass.)
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn assert_block(
    groups: usize,
    padded: usize,
    x: &[u32],
    m: usize,
    cols: usize,
    out: &vnni::Out,
) {
    assert!(groups.checked_mul(padded).is_some_and(|l| x.len() >= l));
    assert!(
        m == 0
            || cols == 0
            || (m - 1)
                .checked_mul(out.stride())
                .and_then(|l| l.checked_add(cols))
                .is_some_and(|l| out.len() >= l)
    );
}

/// The tiles of an `m x vecs` grid of output rows by vectors of columns: `rows x per` where
/// both fit, narrower or shorter at the edges (one row or one vector).
/// `tile(o, v, full_rows, full_vecs)` computes rows `o..o + R` and vectors `v..v + P`, where
/// `R` is `rows` only when `full_rows` (else 1) and `P` is `per` only when `full_vecs` (else 1).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn tiles(
    m: usize,
    vecs: usize,
    rows: usize,
    per: usize,
    mut tile: impl FnMut(usize, usize, bool, bool),
) {
    let mut o = 0;
    while o < m {
        let full_rows = m - o >= rows;
        let mut v = 0;
        while v < vecs {
            let full_vecs = vecs - v >= per;
            tile(o, v, full_rows, full_vecs);
            v += if full_vecs { per } else { 1 };
        }
        o += if full_rows { rows } else { 1 };
    }
}
