//! The int8 matrix product of [`crate::qconv::QConv`] fused with its requantisation, for x86_64
//! CPUs with AVX2 and without AVX-512 VNNI: the common gateway CPU.
//!
//! AVX2's byte product `vpmaddubsw` saturates its 16-bit pair sums (255 * 127 * 2 does not fit),
//! which onnxruntime accepts on these CPUs; here the bits must be the portable path's, so the
//! product is exact: activation bytes and weights widened to 16 bits, `vpmaddwd` summing pairs
//! of products into 8 i32 lanes (16 products per instruction, none rounded). The sums of a tile
//! (4 output channels by 3 vectors of 8 pixels) stay in registers and leave as the output's
//! bytes or f32 values, as in [`super::vnni`]; tract-linalg's AVX2 kernel widens to 32 bits
//! (8 products per `vpmulld`) and stores its sums for a separate requantisation pass.
//!
//! The arithmetic after the sums is the portable path's, operation for operation (`sum as f32
//! * unit + bias`, clamp, ties-to-even rounding by the 1.5 * 2^23 addition): the same bits
//! (tested in `qconv::proptests`).

// Elsewhere the kernel is not built: `available` says no and the weights are never made.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

pub use super::vnni::{Out, Requant};

/// Whether this CPU runs [`Weights::run_block`].
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !crate::arch::portable_requested() && std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Rows of output channels and 8-column vectors of pixels per tile: 12 accumulators, 3
/// activation vectors and a broadcast weight pair fill the 16 registers.
const ROWS: usize = 4;
const VECS: usize = 3;
/// Pixels per vector.
const LANES: usize = 8;

/// Weights `[m, k]` as the kernel reads them: per row, pairs of weights as two i16 in one
/// word (k padded with a zero to an even count), with what each row's sums need afterwards.
#[derive(Debug)]
pub struct Weights {
    m: usize,
    pairs: usize,
    packed: Vec<i32>,
    /// Per row: added to the sums (minus the activations' zero point times the row's sum),
    /// then the scale and bias in the output quantiser's units.
    correction: Vec<i32>,
    unit: Vec<f32>,
    bias: Vec<f32>,
    requant: Requant,
}

impl Weights {
    /// `w` is `[m, k]` row-major. The activations are bytes `q` whose value is
    /// `q - zero_point_x`; `unit[o]` and `bias[o]` are in the output quantiser's units.
    pub fn new(
        w: &[i8],
        m: usize,
        k: usize,
        zero_point_x: i32,
        unit: Vec<f32>,
        bias: Vec<f32>,
        requant: Requant,
    ) -> Weights {
        let pairs = k.div_ceil(2);
        let mut packed = vec![0i32; m * pairs];
        let mut correction = Vec::with_capacity(m);
        for o in 0..m {
            let row = &w[o * k..(o + 1) * k];
            for (p, pair) in row.chunks(2).enumerate() {
                let lo = pair[0] as i16 as u16 as u32;
                let hi = pair.get(1).map_or(0, |&v| v as i16 as u16 as u32);
                packed[o * pairs + p] = (lo | hi << 16) as i32;
            }
            correction.push(-zero_point_x * row.iter().map(|&v| v as i32).sum::<i32>());
        }
        Weights {
            m,
            pairs,
            packed,
            correction,
            unit,
            bias,
            requant,
        }
    }

    /// Columns per block such that a block's packed activations (`4 * pairs` bytes per
    /// column) take about 128 KiB (in L2; each tile's 3 vectors stay in L1 while its rows
    /// are computed): a multiple of the tile's width, at least 4 tiles. Wide blocks spread
    /// the per-row work of gathering a `KxK` convolution's patches over many columns (with
    /// 24 columns per block, that gathering took as many instructions as the products).
    pub fn block_columns(&self, n: usize) -> usize {
        let tile = VECS * LANES;
        ((128 * 1024 / (4 * self.pairs).max(1)) / tile * tile).clamp(4 * tile, n.max(4 * tile))
    }

    /// The activation bytes of a block in the layout the kernel loads: per pair of rows, per
    /// column, the two bytes `q` as the two i16 of one word; columns padded with zeros to a
    /// multiple of 8. `row(r)` is row `r` of the block (`cols` bytes, `None` past `k`), each
    /// byte XORed with `flip` (0x80 for `q - 128` signed bytes, 0 for `q`).
    pub fn pack_rows<'a>(
        &self,
        row: impl Fn(usize) -> Option<&'a [u8]>,
        flip: u8,
        cols: usize,
        into: &mut Vec<u32>,
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has the feature the function is compiled for.
            return unsafe { self.pack_rows_avx2(row, flip, cols, into) };
        }
        self.pack_rows_body(row, flip, cols, into)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn pack_rows_avx2<'a>(
        &self,
        row: impl Fn(usize) -> Option<&'a [u8]>,
        flip: u8,
        cols: usize,
        into: &mut Vec<u32>,
    ) {
        self.pack_rows_body(row, flip, cols, into)
    }

    /// The loops, compiled for the baseline and for AVX2 (where the compiler widens and
    /// interleaves 16 columns at a time).
    #[inline(always)]
    fn pack_rows_body<'a>(
        &self,
        row: impl Fn(usize) -> Option<&'a [u8]>,
        flip: u8,
        cols: usize,
        into: &mut Vec<u32>,
    ) {
        let padded = cols.div_ceil(LANES) * LANES;
        // Every word is written below: resized (from the last block's size), not cleared.
        into.resize(self.pairs * padded, 0);
        let flip = flip as u32;
        for p in 0..self.pairs {
            let (dst, pad) = into[p * padded..(p + 1) * padded].split_at_mut(cols);
            pad.fill(0);
            match (row(2 * p), row(2 * p + 1)) {
                (Some(r0), Some(r1)) => {
                    for (d, (&a, &b)) in dst.iter_mut().zip(r0[..cols].iter().zip(&r1[..cols])) {
                        *d = (a as u32 ^ flip) | (b as u32 ^ flip) << 16;
                    }
                }
                // The last pair of an odd `k`: the missing row is zero (its weight is zero).
                (Some(r0), None) => {
                    for (d, &a) in dst.iter_mut().zip(&r0[..cols]) {
                        *d = a as u32 ^ flip;
                    }
                }
                // (No row: not a pair of the block.)
                _ => dst.fill(0),
            }
        }
    }

    /// Multiplies the block packed by [`Weights::pack_rows`] (`cols` columns) and writes the
    /// requantised outputs.
    ///
    /// # Safety
    /// The CPU must have AVX2 ([`available`]).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    pub unsafe fn run_block(&self, x: &[u32], cols: usize, out: &mut Out) {
        let padded = cols.div_ceil(LANES) * LANES;
        // Every row's `cols` outputs land inside the destination (the stores are raw).
        super::assert_block(self.pairs, padded, x, self.m, cols, out);
        super::tiles(
            self.m,
            padded / LANES,
            ROWS,
            VECS,
            |o, v, full_rows, full_vecs| {
                // SAFETY: `tile` needs AVX2 (which the caller guarantees the CPU has), rows
                // `o..o + R` with `o + R <= m` (`R` is `ROWS` only when `full_rows`) and vectors
                // `v..v + P` with `v + P <= vecs` (`P` is `VECS` only when `full_vecs`), as
                // `tiles` gives them; `x` holds `pairs * padded` words and `out` every row's
                // `cols` outputs (both asserted above).
                unsafe {
                    match (full_rows, full_vecs) {
                        (true, true) => self.tile::<ROWS, VECS>(x, padded, cols, o, v, out),
                        (true, false) => self.tile::<ROWS, 1>(x, padded, cols, o, v, out),
                        (false, true) => self.tile::<1, VECS>(x, padded, cols, o, v, out),
                        (false, false) => self.tile::<1, 1>(x, padded, cols, o, v, out),
                    }
                }
            },
        );
    }

    /// One tile: rows `o..o + R`, columns `8 * v..8 * (v + P)` of the block.
    ///
    /// # Safety
    /// The CPU must have AVX2; `o + R <= m`, `8 * (v + P) <= padded`, `x.len() >= pairs *
    /// padded`, and `out` must hold `(m - 1) * stride + cols` values (what
    /// [`Weights::run_block`] asserts).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn tile<const R: usize, const P: usize>(
        &self,
        x: &[u32],
        padded: usize,
        cols: usize,
        o: usize,
        v: usize,
        out: &mut Out,
    ) {
        // SAFETY: the CPU has AVX2 (the caller's contract). Each load reads the 8 words from
        // `p * padded + 8 * (v + j)` with `p < pairs` and `8 * (v + j + 1) <= padded`, inside
        // `x` (`x.len() >= pairs * padded`). `packed` has `m * pairs` words (built so in
        // `new`, never resized) and `(o + r) * pairs + p` indexes it since `o + r < m` and
        // `p < pairs`. Each store writes `valid = min(8, cols - col)` values from `row *
        // stride + col` with `row < m` and `col + valid <= cols`, so inside the `(m - 1) *
        // stride + cols` values of `out`.
        unsafe {
            let mut acc = [[_mm256_setzero_si256(); P]; R];
            let xp = x.as_ptr();
            let wp = self.packed.as_ptr();
            for p in 0..self.pairs {
                let mut a = [_mm256_setzero_si256(); P];
                for (j, a) in a.iter_mut().enumerate() {
                    *a = _mm256_loadu_si256(xp.add(p * padded + (v + j) * LANES) as *const _);
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let w = _mm256_set1_epi32(*wp.add((o + r) * self.pairs + p));
                    for j in 0..P {
                        acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(a[j], w));
                    }
                }
            }
            let stride = out.stride();
            for (r, acc) in acc.iter().enumerate() {
                let row = o + r;
                let corr = _mm256_set1_epi32(self.correction[row]);
                let unit = _mm256_set1_ps(self.unit[row]);
                let bias = _mm256_set1_ps(self.bias[row]);
                for (j, &a) in acc.iter().enumerate() {
                    let col = (v + j) * LANES;
                    let valid = cols.saturating_sub(col).min(LANES);
                    if valid == 0 {
                        continue;
                    }
                    let sums = _mm256_add_epi32(a, corr);
                    store(
                        sums,
                        unit,
                        bias,
                        &self.requant,
                        out,
                        row * stride + col,
                        valid,
                    );
                }
            }
        }
    }
}

/// Requantises 8 sums (`sums * unit + bias`, clamped, rounded) and stores the first `valid`
/// at `at` of `out`.
///
/// # Safety
/// The CPU must have AVX2, `1 <= valid <= 8`, and the `valid` values from `at` must lie
/// inside `out`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store(
    sums: __m256i,
    unit: __m256,
    bias: __m256,
    q: &Requant,
    out: &mut Out,
    at: usize,
    valid: usize,
) {
    let (lo, hi) = (_mm256_set1_ps(q.lo), _mm256_set1_ps(q.hi));
    let magic = _mm256_set1_ps(crate::qdq::ROUND_MAGIC);
    let s = _mm256_cvtepi32_ps(sums);
    let y = _mm256_add_ps(_mm256_mul_ps(s, unit), bias);
    // Operands in this order: on a NaN `maxps`/`minps` return the second, so NaN stays NaN
    // and a tie keeps `y`, as `qdq::clamp` does.
    let y = _mm256_min_ps(hi, _mm256_max_ps(lo, y));
    let rounded = _mm256_add_ps(y, magic);
    // SAFETY: the CPU has AVX2 (the caller's contract). The stores write `valid` values from
    // `at`, which the caller keeps inside `out`: 8 with one store when `valid` is 8, else
    // through a copy of exactly `valid` values.
    unsafe {
        match out {
            Out::Bytes { at: dst, .. } => {
                // The rounded value's low byte once the zero point is added: byte 0 of
                // each lane, gathered into the low 4 bytes of each 128-bit half, then the
                // two halves' words side by side.
                let bits =
                    _mm256_castps_si256(_mm256_add_ps(rounded, _mm256_set1_ps(q.zero_point)));
                let gather = _mm256_setr_epi8(
                    0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1,
                    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                );
                let bytes = _mm256_shuffle_epi8(bits, gather);
                let bytes =
                    _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0));
                let eight = _mm256_castsi256_si128(bytes);
                if valid == LANES {
                    _mm_storel_epi64(dst.as_mut_ptr().add(at) as *mut _, eight);
                } else {
                    let mut tmp = [0u8; 16];
                    _mm_storeu_si128(tmp.as_mut_ptr() as *mut _, eight);
                    dst[at..at + valid].copy_from_slice(&tmp[..valid]);
                }
            }
            Out::F32 { at: dst, .. } => {
                let r = _mm256_sub_ps(rounded, magic);
                let y = _mm256_mul_ps(
                    _mm256_add_ps(r, _mm256_set1_ps(q.shift)),
                    _mm256_set1_ps(q.scale),
                );
                if valid == LANES {
                    _mm256_storeu_ps(dst.as_mut_ptr().add(at), y);
                } else {
                    let mut tmp = [0f32; LANES];
                    _mm256_storeu_ps(tmp.as_mut_ptr(), y);
                    dst[at..at + valid].copy_from_slice(&tmp[..valid]);
                }
            }
        }
    }
}
