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
/// at `at` of `out`. The caller checks that they land inside `out`.
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
    let y = _mm512_min_ps(_mm512_max_ps(y, lo), hi);
    let rounded = _mm512_add_ps(y, magic);
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
        self.kernel[1] <= 4 && 15 * self.stride[1] + 4 <= 64
    }

    /// Padded rows every output row reads, and their length: enough for the last vector's
    /// lanes (16 output columns each) and for the input row.
    fn padded_size(&self) -> (usize, usize) {
        let [oh, ow] = self.out_hw;
        let rows = (oh.max(1) - 1) * self.stride[0] + self.kernel[0];
        let pitch = ((ow.div_ceil(16).max(1) * 16 - 1) * self.stride[1] + 4)
            .max(self.pad[1] + self.in_hw[1]);
        (rows, pitch)
    }
}

/// Byte planes with their padding written out, as the windowed kernels read them: per plane,
/// `rows` rows of `pitch` bytes, then 64 spare bytes that the last loads may read.
#[derive(Debug, Default)]
pub struct Padded {
    bytes: Vec<u8>,
    planes: usize,
    rows: usize,
    pitch: usize,
}

impl Padded {
    /// Copies the `planes` planes of `x` (`[planes, H, W]` bytes) inside padding `z` (the byte
    /// of 0.0), reusing this buffer.
    pub fn fill(&mut self, x: &[u8], planes: usize, win: &Window, z: u8) {
        let [h, w] = win.in_hw;
        let [py, px] = win.pad;
        let (rows, pitch) = win.padded_size();
        assert!(x.len() >= planes * h * w);
        self.bytes.clear();
        self.bytes.resize(planes * rows * pitch + 64, z);
        for (c, plane) in self.bytes.chunks_exact_mut(rows * pitch).enumerate() {
            let x = &x[c * h * w..(c + 1) * h * w];
            for (row, src) in plane
                .chunks_exact_mut(pitch)
                .skip(py)
                .zip(x.chunks_exact(w.max(1)))
            {
                row[px..px + w].copy_from_slice(src);
            }
        }
        (self.planes, self.rows, self.pitch) = (planes, rows, pitch);
    }

    /// Whether every load of a windowed kernel over `win` stays inside the buffer, and every
    /// output's window inside its row.
    fn fits(&self, win: &Window) -> bool {
        let [oh, ow] = win.out_hw;
        let [sy, sx] = win.stride;
        let (rows, pitch) = win.padded_size();
        (self.rows, self.pitch) == (rows, pitch)
            && win.supported()
            && (ow == 0 || (ow - 1) * sx + win.kernel[1] <= pitch)
            && oh * win.kernel[0] > 0
            && ((oh - 1) * sy + win.kernel[0]) <= rows
            && self.bytes.len() >= self.planes * rows * pitch + 64
            && (ow.div_ceil(16).max(1) - 1) * 16 * sx + 64 <= pitch + 64
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

/// Runs one channel: output row `oy`, column `ox` is the sum over kernel rows `ky` of the
/// taps' word times the 4 bytes at padded row `oy * sy + ky`, column `ox * sx`, requantised
/// into row `oy` of `out` (rows of `ow`). The bytes of 16 output columns come from one
/// 64-byte load rearranged by `vpermb`, and each kernel row is one `vpdpbusd`.
///
/// # Safety
/// The CPU must have what [`windows_available`] checks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub unsafe fn depthwise_plane(
    x: &Padded,
    win: &Window,
    p: &DepthwisePlane,
    requant: &Requant,
    out: &mut Out,
) {
    let [oh, ow] = win.out_hw;
    let [sy, sx] = win.stride;
    assert!(x.fits(win) && p.taps.len() == win.kernel[0]);
    assert!(out.len() >= oh * ow);
    let index = window_index(sx);
    unsafe {
        let corr = _mm512_set1_epi32(p.correction);
        let (unit, bias) = (_mm512_set1_ps(p.unit), _mm512_set1_ps(p.bias));
        let base = x.bytes.as_ptr();
        for oy in 0..oh {
            let mut ox = 0;
            while ox < ow {
                let mut acc = corr;
                for (ky, &w) in p.taps.iter().enumerate() {
                    let at = base.add((oy * sy + ky) * x.pitch + ox * sx);
                    let a = _mm512_permutexvar_epi8(index, _mm512_loadu_si512(at as *const _));
                    acc = _mm512_dpbusd_epi32(acc, a, _mm512_set1_epi32(w));
                }
                store(acc, unit, bias, requant, out, oy * ow + ox, ow - ox);
                ox += 16;
            }
        }
    }
}

impl Out<'_> {
    fn len(&self) -> usize {
        match self {
            Out::Bytes { at, .. } => at.len(),
            Out::F32 { at, .. } => at.len(),
        }
    }

    fn stride(&self) -> usize {
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

    /// A `KH x KW` convolution of the padded planes `x` ([`Weights::direct`]'s weights):
    /// every group of the product is a kernel row of a channel, and its bytes for 16 output
    /// columns are one load and one `vpermb` (no patch matrix is built). Output channel `o`,
    /// pixel `(oy, ox)` goes to `o * stride + oy * ow + ox` of `out`.
    ///
    /// # Safety
    /// The CPU must have what [`windows_available`] checks.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    pub unsafe fn run_direct(&self, x: &Padded, win: &Window, out: &mut Out) {
        let [oh, ow] = win.out_hw;
        assert!(x.fits(win) && self.groups == x.planes * win.kernel[0]);
        assert!(self.m == 0 || out.len() >= (self.m - 1) * out.stride() + oh * ow);
        let index = window_index(win.stride[1]);
        let vecs = ow.div_ceil(16);
        for oy in 0..oh {
            let mut o = 0;
            while o < self.m {
                let full_rows = self.m - o >= ROWS;
                let mut v = 0;
                while v < vecs {
                    let full_vecs = vecs - v >= VECS;
                    let at = (oy, 16 * v, o);
                    unsafe {
                        match (full_rows, full_vecs) {
                            (true, true) => self.window_tile::<ROWS, VECS>(x, win, index, at, out),
                            (true, false) => self.window_tile::<ROWS, 1>(x, win, index, at, out),
                            (false, true) => self.window_tile::<1, VECS>(x, win, index, at, out),
                            (false, false) => self.window_tile::<1, 1>(x, win, index, at, out),
                        }
                    }
                    v += if full_vecs { VECS } else { 1 };
                }
                o += if full_rows { ROWS } else { 1 };
            }
        }
    }

    /// Output channels `o..o + R` by columns `ox..ox + 16 * P` of output row `oy`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[inline]
    unsafe fn window_tile<const R: usize, const P: usize>(
        &self,
        x: &Padded,
        win: &Window,
        index: __m512i,
        (oy, ox, o): (usize, usize, usize),
        out: &mut Out,
    ) {
        let ow = win.out_hw[1];
        let [sy, sx] = win.stride;
        let kh = win.kernel[0];
        unsafe {
            let mut acc = [[_mm512_setzero_si512(); P]; R];
            let plane = x.rows * x.pitch;
            let mut g = 0;
            for c in 0..x.planes {
                for ky in 0..kh {
                    let row = x
                        .bytes
                        .as_ptr()
                        .add(c * plane + (oy * sy + ky) * x.pitch + ox * sx);
                    let mut a = [_mm512_setzero_si512(); P];
                    for (p, a) in a.iter_mut().enumerate() {
                        let bytes = _mm512_loadu_si512(row.add(16 * p * sx) as *const _);
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
            let stride = out.stride();
            for (r, acc) in acc.iter().enumerate() {
                let row = o + r;
                let corr = _mm512_set1_epi32(self.correction[row]);
                let unit = _mm512_set1_ps(self.unit[row]);
                let bias = _mm512_set1_ps(self.bias[row]);
                for (p, &a) in acc.iter().enumerate() {
                    let col = ox + 16 * p;
                    if col >= ow {
                        continue;
                    }
                    let sums = _mm512_add_epi32(a, corr);
                    let at = row * stride + oy * ow + col;
                    store(sums, unit, bias, &self.requant, out, at, ow - col);
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
        if !super::windows_available() {
            eprintln!("skipped: this CPU has no AVX-512 VBMI");
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
