//! aarch64 kernels: the integer product of a quantised convolution in plain NEON (ARMv8.0,
//! the Raspberry Pi 4's Cortex-A72), for cores without the dot-product instructions.
//!
//! tract-linalg's i8 kernel for ARMv8.0 widens both operands to i16 and multiplies by element
//! (`smlal`), four products per instruction. [`product`] multiplies 16 bytes by 16 bytes
//! instead: `smull` and `smlal2` leave eight sums of two products in i16 lanes, `sadalp` adds
//! them into four i32 lanes, 16 products for three instructions. Pairs of products fit in i16
//! because the weights are on a symmetric grid (`|w| <= 127`): `2 * 128 * 127 = 32512`.
//! Both operands are read along the input channels, so the activations come as one row of
//! `k` bytes per output pixel (the transpose of the portable path's block); the sums are
//! exact, so the outputs are those of the portable path, bit for bit.
//!
//! Chosen at run time ([`available`]); `IAT_KERNELS=portable` in the environment turns it
//! off, to compare with the portable path on the same machine.

/// Output channels and pixels per tile; bytes of input channels per step.
pub const ROWS: usize = 4;
pub const COLS: usize = 4;
pub const STEP: usize = 16;

/// Whether the NEON product runs here: on aarch64 (NEON is part of the baseline) without
/// the dot-product extension, unless `IAT_KERNELS=portable`. Where the core has `sdot`
/// (ARMv8.2: the Raspberry Pi 5's Cortex-A76), tract-linalg's `sdot` kernel does 16 products
/// per instruction and is faster (centerface-int8 on a Cortex-A76: 253 M instructions per
/// inference with it, 360.8 M with this kernel).
pub fn available() -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        !super::portable_requested() && !std::arch::is_aarch64_feature_detected!("dotprod")
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        false
    }
}

/// Whether the core has the dot-product instructions (`sdot`), which tract-linalg's i8
/// kernel then uses.
pub fn has_dotprod() -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("dotprod")
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        false
    }
}

/// Int8 weights `[m, k]` packed for [`product`]: per group of [`ROWS`] rows and per step of
/// [`STEP`] input channels, the rows' 16 bytes one after the other; rows and channels past
/// the matrix are zeros.
#[derive(Debug, Clone)]
pub struct Weights {
    m: usize,
    /// Input channels rounded up to a whole step.
    kp: usize,
    packed: Vec<i8>,
}

impl Weights {
    pub fn new(w: &[i8], m: usize, k: usize) -> Weights {
        assert_eq!(w.len(), m * k, "weights are [m, k]");
        debug_assert!(
            w.iter().all(|&v| v != i8::MIN),
            "weights on a symmetric grid"
        );
        let kp = k.div_ceil(STEP) * STEP;
        let groups = m.div_ceil(ROWS);
        let mut packed = vec![0i8; groups * kp * ROWS];
        for g in 0..groups {
            for t in 0..kp / STEP {
                for r in 0..ROWS {
                    let o = g * ROWS + r;
                    if o >= m {
                        continue;
                    }
                    let at = ((g * (kp / STEP) + t) * ROWS + r) * STEP;
                    for i in 0..STEP {
                        let c = t * STEP + i;
                        if c < k {
                            packed[at + i] = w[o * k + c];
                        }
                    }
                }
            }
        }
        Weights { m, kp, packed }
    }

    /// Bytes per pixel row that [`product`] reads: the input channels rounded up to a step.
    pub fn row_len(&self) -> usize {
        self.kp
    }
}

/// `acc[o * cols + j] = correction[o] + sum_c w[o][c] * x[j * kp + c]` for `o < m`, `j < cols`,
/// where `x` holds `cols.next_multiple_of(COLS)` rows of `kp` ([`Weights::row_len`]) signed
/// bytes, zero past the input channels (and the padding rows whatever they hold).
pub fn product(w: &Weights, x: &[i8], cols: usize, correction: &[i32], acc: &mut [i32]) {
    let kp = w.kp;
    let cols_p = cols.next_multiple_of(COLS);
    assert!(x.len() >= cols_p * kp, "activation rows");
    assert!(acc.len() >= w.m * cols && correction.len() >= w.m);
    #[cfg(target_arch = "aarch64")]
    {
        // SAFETY: NEON is in aarch64's baseline; the lengths were checked above.
        unsafe { neon::product(w, x, cols, correction, acc) }
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        let _ = (kp, cols_p);
        reference(w, x, cols, correction, acc)
    }
}

/// [`product`] in scalar code: what the NEON kernel is tested against.
pub fn reference(w: &Weights, x: &[i8], cols: usize, correction: &[i32], acc: &mut [i32]) {
    let kp = w.kp;
    for o in 0..w.m {
        let (g, r) = (o / ROWS, o % ROWS);
        for j in 0..cols {
            let mut s = correction[o];
            for t in 0..kp / STEP {
                let at = ((g * (kp / STEP) + t) * ROWS + r) * STEP;
                for i in 0..STEP {
                    s += w.packed[at + i] as i32 * x[j * kp + t * STEP + i] as i32;
                }
            }
            acc[o * cols + j] = s;
        }
    }
}

/// The transpose of a `[k, cols]` block of signed bytes into `cols.next_multiple_of(COLS)`
/// rows of `kp` bytes, zero past `k` (and in the padding rows).
pub fn transpose_block(src: &[i8], k: usize, cols: usize, kp: usize, dst: &mut Vec<i8>) {
    let cols_p = cols.next_multiple_of(COLS);
    dst.clear();
    dst.resize(cols_p * kp, 0);
    // Eight channels at a time: each source row is read along, eight destination rows are
    // written at once.
    let mut c = 0;
    while c + 8 <= k {
        let rows: [&[i8]; 8] = std::array::from_fn(|i| &src[(c + i) * cols..(c + i + 1) * cols]);
        for j in 0..cols {
            let d = &mut dst[j * kp + c..j * kp + c + 8];
            for i in 0..8 {
                d[i] = rows[i][j];
            }
        }
        c += 8;
    }
    for c in c..k {
        for j in 0..cols {
            dst[j * kp + c] = src[c * cols + j];
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    use super::{COLS, ROWS, STEP, Weights};

    /// See [`super::product`]; the caller checked the lengths.
    pub unsafe fn product(w: &Weights, x: &[i8], cols: usize, correction: &[i32], acc: &mut [i32]) {
        let kp = w.kp;
        let steps = kp / STEP;
        for g in 0..w.m.div_ceil(ROWS) {
            let wg = &w.packed[g * steps * ROWS * STEP..(g + 1) * steps * ROWS * STEP];
            let rows = (w.m - g * ROWS).min(ROWS);
            let mut j0 = 0;
            while j0 < cols {
                // SAFETY: `wg` holds `steps` steps of ROWS x STEP bytes; `x` holds COLS rows
                // of `kp` bytes from `j0` (the caller checked `cols` rounded up to COLS).
                let sums = unsafe { tile(wg.as_ptr(), x.as_ptr().add(j0 * kp), kp, steps) };
                let n = (cols - j0).min(COLS);
                for (r, s) in sums.iter().enumerate().take(rows) {
                    let o = g * ROWS + r;
                    let mut lanes = [0i32; 4];
                    // SAFETY: four i32 lanes into a four-element array.
                    unsafe {
                        vst1q_s32(
                            lanes.as_mut_ptr(),
                            vaddq_s32(*s, vdupq_n_s32(correction[o])),
                        )
                    };
                    acc[o * cols + j0..o * cols + j0 + n].copy_from_slice(&lanes[..n]);
                }
                j0 += COLS;
            }
        }
    }

    /// One tile: ROWS output channels by COLS pixels, as one vector of COLS sums per row.
    #[inline(always)]
    unsafe fn tile(w: *const i8, x: *const i8, kp: usize, steps: usize) -> [int32x4_t; ROWS] {
        // SAFETY: the caller guarantees `steps` steps of weights at `w` and COLS rows of
        // `kp >= steps * STEP` bytes at `x`, all that the loads below read.
        unsafe {
            let mut acc = [[vdupq_n_s32(0); COLS]; ROWS];
            for t in 0..steps {
                let wv: [int8x16_t; ROWS] =
                    std::array::from_fn(|r| vld1q_s8(w.add((t * ROWS + r) * STEP)));
                let xv: [int8x16_t; COLS] =
                    std::array::from_fn(|c| vld1q_s8(x.add(c * kp + t * STEP)));
                for r in 0..ROWS {
                    for c in 0..COLS {
                        let p = vmull_s8(vget_low_s8(wv[r]), vget_low_s8(xv[c]));
                        let p = vmlal_high_s8(p, wv[r], xv[c]);
                        acc[r][c] = vpadalq_s16(acc[r][c], p);
                    }
                }
            }
            std::array::from_fn(|r| {
                let a = &acc[r];
                vpaddq_s32(vpaddq_s32(a[0], a[1]), vpaddq_s32(a[2], a[3]))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes: weights on the symmetric grid, activations over the whole byte.
    fn case(m: usize, k: usize, cols: usize, seed: u32) -> (Vec<i8>, Vec<i8>, Vec<i32>) {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s
        };
        let w = (0..m * k)
            .map(|_| (next() % 255) as i32 - 127)
            .map(|v| v as i8)
            .collect();
        let x = (0..k * cols).map(|_| next() as u8 as i8).collect();
        let corr = (0..m).map(|_| (next() % 20_001) as i32 - 10_000).collect();
        (w, x, corr)
    }

    /// The product against plain integer sums of the untransposed operands, on shapes that
    /// leave partial row groups, steps and column tiles, and on the extremes of the grids.
    #[test]
    fn product_is_the_exact_integer_product() {
        for (m, k, cols) in [
            (1, 1, 1),
            (3, 5, 3),
            (4, 16, 4),
            (5, 17, 7),
            (24, 144, 33),
            (96, 27, 64),
        ] {
            for (seed, extreme) in [(1, false), (2, false), (3, true)] {
                let (mut w, mut x, corr) = case(m, k, cols, seed);
                if extreme {
                    w.fill(-127);
                    x.fill(-128);
                }
                let packed = Weights::new(&w, m, k);
                let mut xt = Vec::new();
                transpose_block(&x, k, cols, packed.row_len(), &mut xt);
                let mut got = vec![0; m * cols];
                product(&packed, &xt, cols, &corr, &mut got);
                let mut by_reference = vec![0; m * cols];
                reference(&packed, &xt, cols, &corr, &mut by_reference);
                for o in 0..m {
                    for j in 0..cols {
                        let want = corr[o]
                            + (0..k)
                                .map(|c| w[o * k + c] as i32 * x[c * cols + j] as i32)
                                .sum::<i32>();
                        assert_eq!(
                            got[o * cols + j],
                            want,
                            "{m}x{k}x{cols} seed {seed}: [{o}][{j}]"
                        );
                        assert_eq!(by_reference[o * cols + j], want);
                    }
                }
            }
        }
    }
}
