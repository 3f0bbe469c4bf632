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
        !crate::arch::portable_requested()
            && std::arch::is_x86_feature_detected!("avx512f")
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

    /// Columns per block such that a block's packed activations (`4 * groups` bytes per
    /// column) take about 32 KiB: a multiple of 16, at least 64.
    pub fn block_columns(&self, n: usize) -> usize {
        ((32 * 1024 / (4 * self.groups).max(1)) / 16 * 16).clamp(64, n.max(64))
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
        #[cfg(target_arch = "x86_64")]
        let vbmi = windows_available();
        for g in 0..self.groups {
            let dst = &mut into[g * padded..g * padded + cols];
            match (row(4 * g), row(4 * g + 1), row(4 * g + 2), row(4 * g + 3)) {
                #[cfg(target_arch = "x86_64")]
                (Some(r0), Some(r1), Some(r2), Some(r3)) if vbmi => {
                    // SAFETY: the CPU has the features (`windows_available`).
                    unsafe { interleave4([r0, r1, r2, r3], flip, dst) }
                }
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
        // Every row's `cols` outputs land inside the destination (the stores are raw).
        super::assert_block(self.groups, padded, x, self.m, cols, out);
        super::tiles(
            self.m,
            padded / 16,
            ROWS,
            VECS,
            |o, v, full_rows, full_vecs| {
                // SAFETY: `tile` needs the features this function is compiled for (which the
                // caller guarantees the CPU has), rows `o..o + R` with `o + R <= m` (`R` is
                // `ROWS` only when `full_rows`) and vectors `v..v + P` with `v + P <= vecs`
                // (`P` is `VECS` only when `full_vecs`), as `tiles` gives them; `x` holds
                // `groups * padded` words and `out` every row's `cols` outputs (both asserted
                // above).
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

    /// One tile: rows `o..o + R`, columns `16 * v..16 * (v + P)` of the block.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW, VL and VNNI; `o + R <= m`, `16 * (v + P) <= padded`,
    /// `x.len() >= groups * padded`, and `out` must hold `(m - 1) * stride + cols` values
    /// (what [`Weights::run_block`] asserts).
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
        // SAFETY: the CPU has the features (the caller's contract). Each load reads the 16
        // words from `g * padded + 16 * (v + p)` with `g < groups` and `16 * (v + p + 1) <=
        // padded`, inside `x` (`x.len() >= groups * padded`). `packed` has `m * groups` words
        // (built so in `new`, never resized) and `(o + r) * groups + g` indexes it since
        // `o + r < m` and `g < groups`. Each store writes `valid = min(16, cols - col)` values
        // from `row * stride + col` with `row < m` and `col + valid <= cols`, so inside the
        // `(m - 1) * stride + cols` values of `out`; columns past `cols` are masked off.
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
                    let sums = _mm512_add_epi32(a, corr);
                    let at = match out {
                        Out::Bytes { stride, .. } | Out::F32 { stride, .. } => row * *stride + col,
                    };
                    store(sums, unit, bias, &self.requant, out, at, valid);
                }
            }
        }
    }
}

/// `dst[j]` = the bytes `rows[0][j]` to `rows[3][j]` (each XORed with `flip`) as one word, 16
/// columns per `vpermb`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn interleave4(rows: [&[u8]; 4], flip: u8, dst: &mut [u32]) {
    let cols = dst.len();
    assert!(rows.iter().all(|r| r.len() >= cols));
    // Output byte `4 * j + i` is byte `j` of row `i`, which the loads put at `16 * i + j`.
    let mut index = [0u8; 64];
    for (b, d) in index.iter_mut().enumerate() {
        *d = ((b % 4) * 16 + b / 4) as u8;
    }
    let mut j = 0;
    // SAFETY: every load reads 16 bytes from `j` of a row, every store 16 words from `j` of
    // `dst`, with `j + 16 <= cols` and every row at least `cols` long.
    unsafe {
        let index = _mm512_loadu_si512(index.as_ptr() as *const _);
        let flip = _mm512_set1_epi8(flip as i8);
        while j + 16 <= cols {
            let load = |r: &[u8]| _mm_loadu_si128(r.as_ptr().add(j) as *const _);
            let v = _mm512_castsi128_si512(load(rows[0]));
            let v = _mm512_inserti32x4::<1>(v, load(rows[1]));
            let v = _mm512_inserti32x4::<2>(v, load(rows[2]));
            let v = _mm512_inserti32x4::<3>(v, load(rows[3]));
            let v = _mm512_xor_si512(_mm512_permutexvar_epi8(index, v), flip);
            _mm512_storeu_si512(dst.as_mut_ptr().add(j) as *mut _, v);
            j += 16;
        }
    }
    for (j, d) in dst.iter_mut().enumerate().skip(j) {
        *d = u32::from_le_bytes([rows[0][j], rows[1][j], rows[2][j], rows[3][j]])
            ^ u32::from_le_bytes([flip; 4]);
    }
}

/// Requantises 16 sums (`sums * unit + bias`, clamped, rounded) and stores the first `valid`
/// at `at` of `out`.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VL, `valid >= 1`, and the `min(valid, 16)` values from
/// `at` must lie inside `out`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
unsafe fn store(
    sums: __m512i,
    unit: __m512,
    bias: __m512,
    q: &Requant,
    out: &mut Out,
    at: usize,
    valid: usize,
) {
    let mask: __mmask16 = if valid >= 16 { !0 } else { (1u16 << valid) - 1 };
    let (lo, hi) = (_mm512_set1_ps(q.lo), _mm512_set1_ps(q.hi));
    let magic = _mm512_set1_ps(crate::qdq::ROUND_MAGIC);
    let s = _mm512_cvtepi32_ps(sums);
    let y = _mm512_add_ps(_mm512_mul_ps(s, unit), bias);
    // Operands in this order: on a NaN `maxps`/`minps` return the second, so NaN stays NaN
    // and a tie keeps `y`, as `qdq::clamp` does.
    let y = _mm512_min_ps(hi, _mm512_max_ps(lo, y));
    let rounded = _mm512_add_ps(y, magic);
    // SAFETY: the CPU has the features (the caller's contract). The store's mask enables
    // lanes `0..min(valid, 16)`, which the caller keeps inside `out` from `at` (so `at <=
    // out.len()` and the `add` stays in the allocation); masked-off lanes are not accessed.
    unsafe {
        match out {
            Out::Bytes { at: dst, .. } => {
                let bits = _mm512_add_ps(rounded, _mm512_set1_ps(q.zero_point));
                let bytes = _mm512_cvtepi32_epi8(_mm512_castps_si512(bits));
                _mm_mask_storeu_epi8(dst.as_mut_ptr().add(at) as *mut _, mask, bytes);
            }
            Out::F32 { at: dst, .. } => {
                let r = _mm512_sub_ps(rounded, magic);
                let y = _mm512_mul_ps(
                    _mm512_add_ps(r, _mm512_set1_ps(q.shift)),
                    _mm512_set1_ps(q.scale),
                );
                _mm512_mask_storeu_ps(dst.as_mut_ptr().add(at), mask, y);
            }
        }
    }
}

/// Whether this CPU runs the windowed kernels ([`depthwise_plane`], [`Weights::run_direct`]),
/// which also need AVX-512 VBMI's byte permutation.
pub fn windows_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        available() && std::arch::is_x86_feature_detected!("avx512vbmi")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The geometry of a convolution over `[C, H, W]` byte planes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub in_hw: [usize; 2],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// Padding before (top, left); the rest of the padded plane is padding too.
    pub pad: [usize; 2],
    pub out_hw: [usize; 2],
}

impl Window {
    /// Whether the windowed kernels take this geometry: at most 4 kernel columns, and the
    /// 16 lanes' windows within one 64-byte load.
    pub fn supported(&self) -> bool {
        // `stride[1] <= 4` is `15 * stride[1] + 4 <= 64` without an overflowing product.
        (1..=4).contains(&self.kernel[1]) && self.kernel[0] >= 1 && self.stride[1] <= 4
    }
}

/// Unpadded byte planes `[planes, H, W]` as the windowed kernels read them: 64 bytes at a
/// time with a mask, the bytes outside the plane (the padding) reading as `zero`, the byte of
/// 0.0. No padded copy is made.
pub struct Planes<'a> {
    pub bytes: &'a [u8],
    pub planes: usize,
    pub zero: u8,
}

impl Window {
    /// Whether `x` holds the planes of this window.
    fn holds(&self, x: &Planes) -> bool {
        // Checked: a wrapped product would let a short `x` pass. (Then every row offset
        // `(c * h + iy) * w` with `c < planes`, `iy < h` is below `x.bytes.len()`.)
        self.supported()
            && x.planes
                .checked_mul(self.in_hw[0])
                .and_then(|p| p.checked_mul(self.in_hw[1]))
                .is_some_and(|len| x.bytes.len() >= len)
    }

    /// For the output vector from column `ox`: the offset of its first load from the start
    /// of an input row (negative into the left padding) and the mask of the load's bytes
    /// inside the row.
    fn columns(&self, ox: usize) -> (isize, u64) {
        // In i128, where these sums of `usize` values cannot overflow: the mask selects the
        // bytes `start + i` (`i < 64`) with `0 <= start + i < w`, inside the row whatever
        // the geometry, and is empty when `start` does not fit an `isize`.
        let start = ox as i128 * self.stride[1] as i128 - self.pad[1] as i128;
        let w = self.in_hw[1] as i128;
        let lo = (-start).clamp(0, 64);
        let hi = (w - start).clamp(lo, 64);
        let below = |n: i128| if n >= 64 { !0u64 } else { (1u64 << n) - 1 };
        match isize::try_from(start) {
            Ok(start) => (start, below(hi) & !below(lo)),
            Err(_) => (0, 0),
        }
    }
}

/// The 64 bytes of input row `iy` (padded coordinates: `iy - pad` in the plane) of plane `c`
/// from column `start`, `zero` outside the plane.
///
/// # Safety
/// The CPU must have AVX-512 F and BW. `x` must hold `win`'s planes ([`Window::holds`]), `c`
/// be one of them, and `mask` cover only bytes inside the row (as [`Window::columns`] makes
/// it): masked-off bytes are not read.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn load_row(
    x: &Planes,
    win: &Window,
    c: usize,
    iy: usize,
    (start, mask): (isize, u64),
    zero: __m512i,
) -> __m512i {
    let [h, w] = win.in_hw;
    match iy.checked_sub(win.pad[0]).filter(|&iy| iy < h) {
        Some(iy) => {
            let row = x.bytes.as_ptr().wrapping_add((c * h + iy) * w);
            // SAFETY: the CPU has AVX-512 F and BW (the caller's contract). Row `iy` of plane
            // `c` is bytes `(c * h + iy) * w..+ w` of `x.bytes`, inside it since `c < planes`,
            // `iy < h` and `x.bytes.len() >= planes * h * w` (`Window::holds`). The mask
            // selects only bytes `start + i` with `0 <= start + i < w` (`Window::columns`),
            // so inside that row; masked-off bytes are not accessed, which is why the pointer
            // itself is only formed with wrapping arithmetic.
            unsafe { _mm512_mask_loadu_epi8(zero, mask, row.wrapping_offset(start) as *const _) }
        }
        None => zero,
    }
}

/// Lane `i`, byte `j` of the permutation reads byte `i * sx + j` of a 64-byte load: the
/// 4-byte window of output column `i` at stride `sx`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn window_index(sx: usize) -> __m512i {
    let mut index = [0u8; 64];
    for (b, d) in index.iter_mut().enumerate() {
        *d = ((b / 4) * sx + b % 4) as u8;
    }
    // SAFETY: the array is 64 bytes.
    unsafe { _mm512_loadu_si512(index.as_ptr() as *const _) }
}

/// One channel of an int8 depthwise convolution: plane 0 of `x`.
pub struct DepthwisePlane<'a> {
    /// One word per kernel row: the taps of columns 0 to 3 as signed bytes (zero past the
    /// kernel's width).
    pub taps: &'a [i32],
    /// Added to the sums (minus the input zero point times the sum of the taps), then the
    /// scale and bias in the output quantiser's units.
    pub correction: i32,
    pub unit: f32,
    pub bias: f32,
}

/// Runs one channel (plane `c` of `x`): output row `oy`, column `ox` is the sum over kernel
/// rows `ky` of the taps' word times the 4 bytes at padded row `oy * sy + ky`, column
/// `ox * sx`, requantised into row `oy` of `out` (rows of `ow`). The bytes of 16 output
/// columns come from one 64-byte load rearranged by `vpermb`, and each kernel row is one
/// `vpdpbusd`.
///
/// # Safety
/// The CPU must have what [`windows_available`] checks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub unsafe fn depthwise_plane(
    x: &Planes,
    c: usize,
    win: &Window,
    p: &DepthwisePlane,
    requant: &Requant,
    out: &mut Out,
) {
    let [oh, ow] = win.out_hw;
    let sy = win.stride[0];
    assert!(win.holds(x) && c < x.planes && p.taps.len() == win.kernel[0]);
    assert!(oh.checked_mul(ow).is_some_and(|l| out.len() >= l));
    let index = window_index(win.stride[1]);
    // Down the columns of 16 outputs: each column's load masks are worked out once (and
    // this order measured faster than along the rows).
    // SAFETY: the CPU has the features (the caller's contract). `load_row` gets planes that
    // `win` holds and `c < planes` (asserted above) and the mask of `win.columns`, which
    // covers only bytes inside a row. Each `store` writes `min(16, ow - ox) >= 1` values
    // from `oy * ow + ox` with `oy < oh`, `ox < ow`: they end by `(oy + 1) * ow <= oh * ow
    // <= out.len()` (asserted above).
    unsafe {
        let zero = _mm512_set1_epi8(x.zero as i8);
        let corr = _mm512_set1_epi32(p.correction);
        let (unit, bias) = (_mm512_set1_ps(p.unit), _mm512_set1_ps(p.bias));
        for ox in (0..ow).step_by(16) {
            let columns = win.columns(ox);
            for oy in 0..oh {
                let mut acc = corr;
                for (ky, &w) in p.taps.iter().enumerate() {
                    let bytes = load_row(x, win, c, oy * sy + ky, columns, zero);
                    let a = _mm512_permutexvar_epi8(index, bytes);
                    acc = _mm512_dpbusd_epi32(acc, a, _mm512_set1_epi32(w));
                }
                store(acc, unit, bias, requant, out, oy * ow + ox, ow - ox);
            }
        }
    }
}

impl Out<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Out::Bytes { at, .. } => at.len(),
            Out::F32 { at, .. } => at.len(),
        }
    }

    pub(crate) fn stride(&self) -> usize {
        match self {
            Out::Bytes { stride, .. } | Out::F32 { stride, .. } => *stride,
        }
    }
}

impl Weights {
    /// The weights `w` (`[m, C * KH * KW]`, OIHW) of a `KH x KW` convolution (`KW <= 4`) as
    /// the `[m, C * KH * 4]` matrix that [`Weights::new`] takes for [`Weights::run_direct`]:
    /// each kernel row becomes one group of 4 bytes, zero past `KW`.
    pub fn direct_layout(w: &[i8], m: usize, channels: usize, [kh, kw]: [usize; 2]) -> Vec<i8> {
        let k = channels * kh * kw;
        let mut rows = vec![0i8; m * channels * kh * 4];
        for (o, row) in rows.chunks_exact_mut(channels * kh * 4).enumerate() {
            for (g, group) in row.chunks_exact_mut(4).enumerate() {
                group[..kw].copy_from_slice(&w[o * k + g * kw..o * k + (g + 1) * kw]);
            }
        }
        rows
    }

    /// A `KH x KW` convolution of the planes `x` ([`Weights::direct_layout`]'s weights):
    /// every group of the product is a kernel row of a channel, and its bytes for 16 output
    /// columns are one load and one `vpermb` (no patch matrix is built). Output channel `o`,
    /// pixel `(oy, ox)` goes to `o * stride + oy * ow + ox` of `out`.
    ///
    /// The output is cut into vectors of 16 columns of one row (the last of a row partial),
    /// taken `VECS` at a time whichever rows they come from: an output row of 13 or 26
    /// columns (NanoDet's deep layers) still gives a tile `VECS` independent sums per output
    /// channel, where one row at a time left the multiply-adds waiting on each other.
    ///
    /// # Safety
    /// The CPU must have what [`windows_available`] checks.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    pub unsafe fn run_direct(&self, x: &Planes, win: &Window, out: &mut Out) {
        let [oh, ow] = win.out_hw;
        assert!(win.holds(x) && Some(self.groups) == x.planes.checked_mul(win.kernel[0]));
        assert!(
            self.m == 0
                || (self.m - 1)
                    .checked_mul(out.stride())
                    .and_then(|l| l.checked_add(oh.checked_mul(ow)?))
                    .is_some_and(|l| out.len() >= l)
        );
        let index = window_index(win.stride[1]);
        let per_row = ow.div_ceil(16);
        // Vector `v` is columns `16 * (v % per_row)..` of output row `v / per_row`.
        let vectors = oh * per_row;
        let at = |v: usize| (v / per_row, 16 * (v % per_row));
        let mut v = 0;
        while v < vectors {
            let full_vecs = vectors - v >= VECS;
            // (Worked out once for all output channels: two divisions each.)
            let chunk: [(usize, usize); VECS] = std::array::from_fn(|p| at(v + p));
            let mut o = 0;
            while o < self.m {
                let full_rows = self.m - o >= ROWS;
                // SAFETY: `window_tile` needs the features this function is compiled for
                // (the caller's contract), planes that `win` holds with `groups = planes *
                // KH`, `out` holding `(m - 1) * stride + oh * ow` values (all asserted
                // above), vectors inside the output (`v + P <= vectors`, so `oy < oh` and
                // `ox < ow`), `o + R <= m` (`R` is `ROWS` only when `full_rows`).
                unsafe {
                    match (full_rows, full_vecs) {
                        (true, true) => {
                            self.window_tile::<ROWS, VECS>(x, win, index, chunk, o, out)
                        }
                        (true, false) => {
                            self.window_tile::<ROWS, 1>(x, win, index, [chunk[0]], o, out)
                        }
                        (false, true) => self.window_tile::<1, VECS>(x, win, index, chunk, o, out),
                        (false, false) => {
                            self.window_tile::<1, 1>(x, win, index, [chunk[0]], o, out)
                        }
                    }
                }
                o += if full_rows { ROWS } else { 1 };
            }
            v += if full_vecs { VECS } else { 1 };
        }
    }

    /// Output channels `o..o + R` by the `P` vectors `(oy, ox)` (16 columns from `ox` of
    /// output row `oy`, fewer at the end of the row).
    ///
    /// # Safety
    /// The CPU must have what [`windows_available`] checks; `win` must hold `x` with
    /// `groups == x.planes * KH`, `o + R <= m`, every `oy < oh` and `ox < ow`, and `out` must
    /// hold `(m - 1) * stride + oh * ow` values (what [`Weights::run_direct`] asserts).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[inline]
    unsafe fn window_tile<const R: usize, const P: usize>(
        &self,
        x: &Planes,
        win: &Window,
        index: __m512i,
        vectors: [(usize, usize); P],
        o: usize,
        out: &mut Out,
    ) {
        let ow = win.out_hw[1];
        let sy = win.stride[0];
        let kh = win.kernel[0];
        // SAFETY: the CPU has the features (the caller's contract). `load_row` gets planes
        // that `win` holds, `c < planes` and the masks of `win.columns` (only bytes inside a
        // row); the loads of the first loop read what `load_row` reads: row `iy < h` of plane
        // `c < planes`, bytes `(c * h + iy) * w + start + i` for the mask's `i` only, inside
        // `x.bytes` (`Window::holds`; pointers formed with wrapping arithmetic, masked-off
        // bytes not accessed, an empty mask for a row in the padding). `packed` has
        // `m * groups` words (built so in `new`) and `(o + r) * groups + g` indexes it since
        // `o + r < m` and `g = c * KH + ky < planes * KH = groups`. Each store writes
        // `min(16, ow - ox) >= 1` values from `row * stride + oy * ow + ox` with `row < m`,
        // `oy < oh`, `ox < ow`: they end by `(m - 1) * stride + oh * ow <= out.len()`.
        unsafe {
            let zero = _mm512_set1_epi8(x.zero as i8);
            let columns = vectors.map(|(_, ox)| win.columns(ox));
            let mut acc = [[_mm512_setzero_si512(); P]; R];
            if x.planes >= 8 {
                // Kernel row by kernel row: where each vector's input row starts in a plane
                // (or that it lies in the padding, an empty mask reading `zero` as
                // `load_row` does) is worked out once for all channels, and every load is
                // the same masked load. (With few channels, that work is not repaid:
                // channel by channel below, as `load_row` reads.)
                let [h, w] = win.in_hw;
                for ky in 0..kh {
                    let loads = std::array::from_fn::<_, P, _>(|p| {
                        let (start, mask) = columns[p];
                        match (vectors[p].0 * sy + ky)
                            .checked_sub(win.pad[0])
                            .filter(|&iy| iy < h)
                        {
                            Some(iy) => ((iy * w) as isize + start, mask),
                            None => (0, 0),
                        }
                    });
                    for c in 0..x.planes {
                        let plane = x.bytes.as_ptr().wrapping_add(c * h * w);
                        let mut a = [zero; P];
                        for (p, a) in a.iter_mut().enumerate() {
                            let (at, mask) = loads[p];
                            let at = plane.wrapping_offset(at);
                            let bytes = _mm512_mask_loadu_epi8(zero, mask, at as *const _);
                            *a = _mm512_permutexvar_epi8(index, bytes);
                        }
                        let g = c * kh + ky;
                        for (r, acc) in acc.iter_mut().enumerate() {
                            let w = _mm512_set1_epi32(
                                *self.packed.get_unchecked((o + r) * self.groups + g),
                            );
                            for p in 0..P {
                                acc[p] = _mm512_dpbusd_epi32(acc[p], a[p], w);
                            }
                        }
                    }
                }
            } else {
                let mut g = 0;
                for c in 0..x.planes {
                    for ky in 0..kh {
                        let mut a = [_mm512_setzero_si512(); P];
                        for (p, a) in a.iter_mut().enumerate() {
                            let iy = vectors[p].0 * sy + ky;
                            let bytes = load_row(x, win, c, iy, columns[p], zero);
                            *a = _mm512_permutexvar_epi8(index, bytes);
                        }
                        for (r, acc) in acc.iter_mut().enumerate() {
                            let w = _mm512_set1_epi32(
                                *self.packed.get_unchecked((o + r) * self.groups + g),
                            );
                            for p in 0..P {
                                acc[p] = _mm512_dpbusd_epi32(acc[p], a[p], w);
                            }
                        }
                        g += 1;
                    }
                }
            }
            let stride = out.stride();
            for (r, acc) in acc.iter().enumerate() {
                let row = o + r;
                let corr = _mm512_set1_epi32(self.correction[row]);
                let unit = _mm512_set1_ps(self.unit[row]);
                let bias = _mm512_set1_ps(self.bias[row]);
                for (p, &a) in acc.iter().enumerate() {
                    let (oy, ox) = vectors[p];
                    let sums = _mm512_add_epi32(a, corr);
                    let at = row * stride + oy * ow + ox;
                    store(sums, unit, bias, &self.requant, out, at, ow - ox);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn interleaved_rows_are_the_rows_bytes_as_words() {
        if !crate::graph::testing::cpu_has(
            "arch::x86_64::vnni::tests::interleaved_rows_are_the_rows_bytes_as_words",
            crate::graph::testing::WINDOWS,
        ) {
            return;
        }
        let bytes: Vec<u8> = crate::graph::testing::ints(4 * 50, 3, 0, 255)
            .into_iter()
            .map(|b| b as u8)
            .collect();
        let rows: Vec<&[u8]> = bytes.chunks_exact(50).collect();
        // Whole vectors of 16 columns, and a tail.
        for cols in [0, 5, 16, 47, 50] {
            for flip in [0, 0x80] {
                let mut got = vec![0u32; cols];
                // SAFETY: the CPU has the features (checked above).
                unsafe { super::interleave4([rows[0], rows[1], rows[2], rows[3]], flip, &mut got) };
                for (j, &g) in got.iter().enumerate() {
                    let want = [rows[0][j], rows[1][j], rows[2][j], rows[3][j]].map(|b| b ^ flip);
                    assert_eq!(
                        g.to_le_bytes(),
                        want,
                        "column {j} of {cols}, flip {flip:#x}"
                    );
                }
            }
        }
    }
}
