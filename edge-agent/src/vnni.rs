//! The int8 matrix product of [`crate::qconv::QConv`] fused with its requantisation, for CPUs
//! with AVX-512 VNNI (`vpdpbusd`: 64 byte products summed into 16 i32 lanes per instruction).
//!
//! tract-linalg's VNNI kernel stores its i32 sums, which the operator then reads back to
//! requantise; for the short sums of CenterFace's convolutions (16 to 960 products) that store and
//! load cost more than the products. Here the sums of a tile stay in registers and leave as the
//! output's bytes (or f32 values): the i32 sums never reach memory.
//!
//! The arithmetic is the portable path's, operation for operation (exact integer sums, then
//! `sum as f32 * unit + bias`, clamp, ties-to-even rounding by the 1.5 * 2^23 addition), so
//! both give the same bits; the tests check that.

// Elsewhere the kernel is not built: `available` says no and the weights are never made.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether this CPU runs [`Weights::run_block`].
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Rows of output channels and 16-column vectors of pixels per tile.
const ROWS: usize = 4;
const VECS: usize = 4;

/// The requantisation of one output channel (row): `clamp(sum * unit + bias, lo, hi)`,
/// rounded, then either `+ zero_point` as a byte or `(r + shift) * scale` as f32.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Requant {
    pub lo: f32,
    pub hi: f32,
    pub zero_point: f32,
    pub shift: f32,
    pub scale: f32,
}

/// Where a block's outputs go: row `o`, column `j` of the block is `at[o * stride + j]`.
pub enum Out<'a> {
    Bytes { at: &'a mut [u8], stride: usize },
    F32 { at: &'a mut [f32], stride: usize },
}

/// Weights `[m, k]` as the kernel reads them: per row, groups of 4 signed bytes as one i32
/// (k padded with zeros to a multiple of 4), with what each row's sums need afterwards.
#[derive(Debug)]
pub struct Weights {
    m: usize,
    groups: usize,
    packed: Vec<i32>,
    /// Per row: added to the sums (the activations' zero point times the row's sum), then
    /// the scale and bias in the output quantiser's units.
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
        let groups = k.div_ceil(4);
        let mut packed = vec![0i32; m * groups];
        let mut correction = Vec::with_capacity(m);
        for o in 0..m {
            let row = &w[o * k..(o + 1) * k];
            for (g, chunk) in row.chunks(4).enumerate() {
                let mut b = [0u8; 4];
                for (d, &v) in b.iter_mut().zip(chunk) {
                    *d = v as u8;
                }
                packed[o * groups + g] = i32::from_le_bytes(b);
            }
            correction.push(-zero_point_x * row.iter().map(|&v| v as i32).sum::<i32>());
        }
        Weights {
            m,
            groups,
            packed,
            correction,
            unit,
            bias,
            requant,
        }
    }

    /// The activation bytes of a block in the layout the kernel loads: per group of 4 rows,
    /// per column, the 4 bytes `q` as one word; columns padded with zeros to a multiple of 16.
    /// `row(r)` is row `r` of the block (`cols` bytes, `None` past `k`), each byte XORed with
    /// `flip` (0x80 for `q - 128` signed bytes, 0 for `q`).
    pub fn pack_rows<'a>(
        &self,
        row: impl Fn(usize) -> Option<&'a [u8]>,
        flip: u8,
        cols: usize,
        into: &mut Vec<u32>,
    ) {
        let padded = cols.div_ceil(16) * 16;
        into.clear();
        into.resize(self.groups * padded, 0);
        let flip4 = u32::from_le_bytes([flip; 4]);
        for g in 0..self.groups {
            let dst = &mut into[g * padded..g * padded + cols];
            match (row(4 * g), row(4 * g + 1), row(4 * g + 2), row(4 * g + 3)) {
                (Some(r0), Some(r1), Some(r2), Some(r3)) => {
                    let rows = r0[..cols]
                        .iter()
                        .zip(&r1[..cols])
                        .zip(&r2[..cols])
                        .zip(&r3[..cols]);
                    for (d, (((&a, &b), &c), &e)) in dst.iter_mut().zip(rows) {
                        *d = u32::from_le_bytes([a, b, c, e]) ^ flip4;
                    }
                }
                // The last group of a `k` that is not a multiple of 4: missing rows are zero
                // bytes (their weights are zero too).
                (r0, r1, r2, r3) => {
                    for (i, r) in [r0, r1, r2, r3].into_iter().enumerate() {
                        let Some(r) = r else { break };
                        for (d, &v) in dst.iter_mut().zip(&r[..cols]) {
                            *d |= ((v ^ flip) as u32) << (8 * i);
                        }
                    }
                }
            }
        }
    }

    /// Multiplies the block packed by [`Weights::pack_rows`] (`cols` columns) and writes the
    /// requantised outputs.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW, VL and VNNI ([`available`]).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn run_block(&self, x: &[u32], cols: usize, out: &mut Out) {
        let padded = cols.div_ceil(16) * 16;
        assert!(x.len() >= self.groups * padded);
        // Every row's `cols` outputs land inside the destination (the stores are raw).
        let (len, stride) = match out {
            Out::Bytes { at, stride } => (at.len(), *stride),
            Out::F32 { at, stride } => (at.len(), *stride),
        };
        assert!(self.m == 0 || cols == 0 || len >= (self.m - 1) * stride + cols);
        let vecs = padded / 16;
        let mut o = 0;
        while o < self.m {
            let full_rows = self.m - o >= ROWS;
            let mut v = 0;
            while v < vecs {
                let full_vecs = vecs - v >= VECS;
                unsafe {
                    match (full_rows, full_vecs) {
                        (true, true) => self.tile::<ROWS, VECS>(x, padded, cols, o, v, out),
                        (true, false) => self.tile::<ROWS, 1>(x, padded, cols, o, v, out),
                        (false, true) => self.tile::<1, VECS>(x, padded, cols, o, v, out),
                        (false, false) => self.tile::<1, 1>(x, padded, cols, o, v, out),
                    }
                }
                v += if full_vecs { VECS } else { 1 };
            }
            o += if full_rows { ROWS } else { 1 };
        }
    }

    /// One tile: rows `o..o + R`, columns `16 * v..16 * (v + P)` of the block.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
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
        unsafe {
            let mut acc = [[_mm512_setzero_si512(); P]; R];
            let xp = x.as_ptr();
            for g in 0..self.groups {
                let mut a = [_mm512_setzero_si512(); P];
                for (p, a) in a.iter_mut().enumerate() {
                    *a = _mm512_loadu_si512(xp.add(g * padded + (v + p) * 16) as *const _);
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let w =
                        _mm512_set1_epi32(*self.packed.get_unchecked((o + r) * self.groups + g));
                    for p in 0..P {
                        acc[p] = _mm512_dpbusd_epi32(acc[p], a[p], w);
                    }
                }
            }
            let q = self.requant;
            let (lo, hi) = (_mm512_set1_ps(q.lo), _mm512_set1_ps(q.hi));
            let magic = _mm512_set1_ps(crate::qdq::ROUND_MAGIC);
            for (r, acc) in acc.iter().enumerate() {
                let row = o + r;
                let corr = _mm512_set1_epi32(self.correction[row]);
                let unit = _mm512_set1_ps(self.unit[row]);
                let bias = _mm512_set1_ps(self.bias[row]);
                for (p, &a) in acc.iter().enumerate() {
                    let col = (v + p) * 16;
                    let valid = cols.saturating_sub(col).min(16);
                    if valid == 0 {
                        continue;
                    }
                    let mask: __mmask16 = if valid == 16 { !0 } else { (1u16 << valid) - 1 };
                    let s = _mm512_cvtepi32_ps(_mm512_add_epi32(a, corr));
                    let y = _mm512_add_ps(_mm512_mul_ps(s, unit), bias);
                    let y = _mm512_min_ps(_mm512_max_ps(y, lo), hi);
                    let rounded = _mm512_add_ps(y, magic);
                    match out {
                        Out::Bytes { at, stride } => {
                            let bits = _mm512_add_ps(rounded, _mm512_set1_ps(q.zero_point));
                            let bytes = _mm512_cvtepi32_epi8(_mm512_castps_si512(bits));
                            let dst = at.as_mut_ptr().add(row * *stride + col);
                            _mm_mask_storeu_epi8(dst as *mut _, mask, bytes);
                        }
                        Out::F32 { at, stride } => {
                            let r = _mm512_sub_ps(rounded, magic);
                            let y = _mm512_mul_ps(
                                _mm512_add_ps(r, _mm512_set1_ps(q.shift)),
                                _mm512_set1_ps(q.scale),
                            );
                            let dst = at.as_mut_ptr().add(row * *stride + col);
                            _mm512_mask_storeu_ps(dst, mask, y);
                        }
                    }
                }
            }
        }
    }
}
