//! Depthwise convolutions (one filter per channel), vectorised at every stride.
//!
//! tract 0.23.9 runs a depthwise convolution point by point, with a vector kernel only for
//! stride 1; on CenterFace its 17 depthwise layers (4 of stride 2) took 28% of the float run.
//! [`Depthwise`] splits each zero-padded input plane into `stride` column phases, so that every
//! tap of every stride becomes a contiguous multiply-add over an output row held in L1, and
//! runs that loop with FMA where the CPU has it (chosen at run time on x86_64; always on
//! aarch64). A `FakeQuant` reading the convolution alone (a QDQ model's output quantiser) is
//! applied to each row while it is in cache, instead of as one more pass over the tensor.
//!
//! A QDQ model's depthwise convolution that reads and writes bytes, with taps on a symmetric
//! int8 grid, runs in integers instead where the CPU has AVX-512 VNNI and VBMI
//! ([`crate::arch::x86_64::vnni::depthwise_plane`]): exact i32 sums, requantised once. Its outputs can differ
//! from the f32 path's by one quantisation step where a value sits on a rounding tie, so
//! results depend (within that step, which `model check` tolerances cover) on the CPU.

use std::sync::Arc;

use tract_onnx::tract_core::internal::*;

use crate::graph::{self, is_relu, sole_successor};
use crate::qdq::FakeQuant;

/// A depthwise 2-D convolution of a `[C, H, W]` (or `[1, C, H, W]`) f32 input.
#[derive(Debug, Clone, PartialEq)]
pub struct Depthwise {
    channels: usize,
    /// Input and output plane sizes, kernel size, stride, padding before (top, left).
    in_hw: [usize; 2],
    out_hw: [usize; 2],
    kernel_hw: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
    /// `[C, KH, KW]` taps and one bias per channel.
    taps: Arc<Vec<f32>>,
    bias: Arc<Vec<f32>>,
    /// A quantise-dequantise pair applied to the output.
    pub(crate) out_q: Option<FakeQuant>,
    /// The input arrives as the bytes of this grid (see [`crate::qconv::byte_edges`]).
    pub(crate) bytes_in: Option<FakeQuant>,
    /// The output leaves as the bytes of `out_q`.
    pub(crate) bytes_out: bool,
    /// A ReLU follows (before `out_q`).
    relu: bool,
    out_shape: TVec<usize>,
    /// The taps as int8, when they are on a symmetric int8 grid per channel (a QDQ model's).
    int8: Option<Arc<Int8Taps>>,
}

/// A depthwise convolution's taps as int8, for the integer kernel
/// ([`crate::arch::x86_64::vnni::depthwise_plane`]): bytes in, exact i32 sums, requantised once.
#[derive(Debug, PartialEq)]
struct Int8Taps {
    /// `[C, KH]` words: the taps of a kernel row as 4 signed bytes (zero past the kernel's
    /// width, at most 4).
    words: Vec<i32>,
    /// Per channel: the sum of the integer taps, and the value of one unit.
    sums: Vec<i32>,
    scales: Vec<f32>,
}

impl Int8Taps {
    /// `taps` is `[C, KH, KW]`; `None` when a kernel is wider than 4 or a channel's taps are
    /// not on a symmetric int8 grid.
    fn new(taps: &[f32], c: usize, [kh, kw]: [usize; 2]) -> Option<Int8Taps> {
        if kw > 4 || kh == 0 || kw == 0 {
            return None;
        }
        let (ints, scales) = crate::qdq::symmetric_int8_rows(taps, c, kh * kw)?;
        let words = ints
            .chunks_exact(kw)
            .map(|row| {
                let mut b = [0u8; 4];
                for (d, &t) in b.iter_mut().zip(row) {
                    *d = t as u8;
                }
                i32::from_le_bytes(b)
            })
            .collect();
        let sums = ints
            .chunks_exact(kh * kw)
            .map(|k| k.iter().map(|&t| t as i32).sum())
            .collect();
        Some(Int8Taps {
            words,
            sums,
            scales,
        })
    }
}

impl Eq for Depthwise {}

impl Depthwise {
    /// An int8 depthwise convolution on bytes in and out for [`crate::bench`]: `c` channels,
    /// a `KH x KW` kernel over `[c, h, w]`; and an input.
    #[cfg(feature = "bench")]
    pub(crate) fn for_bench(
        c: usize,
        in_hw: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 2],
    ) -> TractResult<(Depthwise, Tensor)> {
        let out = |i: usize| (in_hw[i] + 2 * pad[i] - kernel[i]) / stride[i] + 1;
        let out_hw = [out(0), out(1)];
        let taps_per = kernel[0] * kernel[1];
        let taps = crate::bench::weights(c * taps_per, taps_per, 0.004);
        let grid = FakeQuant::byte_grid;
        let op = Depthwise {
            channels: c,
            in_hw,
            out_hw,
            kernel_hw: kernel,
            stride,
            pad,
            int8: Int8Taps::new(&taps, c, kernel).map(Arc::new),
            taps: Arc::new(taps),
            bias: Arc::new((0..c).map(|o| o as f32 * 0.01).collect()),
            out_q: Some(grid(30, 0.05)),
            bytes_in: Some(grid(100, 0.02)),
            bytes_out: true,
            relu: false,
            out_shape: tvec![c, out_hw[0], out_hw[1]],
        };
        let x: Vec<u8> = (0..c * in_hw[0] * in_hw[1])
            .map(|i| (i * 131 % 256) as u8)
            .collect();
        Ok((op, Tensor::from_shape(&[c, in_hw[0], in_hw[1]], &x)?))
    }

    fn plane<S: Source + ?Sized, K: Sink>(
        &self,
        x: &S,
        y: &mut K,
        c: usize,
        scratch: &mut Scratch,
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU has the features the function is compiled for.
                return unsafe { self.plane_avx2_fma(x, y, c, scratch) };
            }
        }
        self.plane_body::<S, K, { cfg!(target_arch = "aarch64") }>(x, y, c, scratch)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn plane_avx2_fma<S: Source + ?Sized, K: Sink>(
        &self,
        x: &S,
        y: &mut K,
        c: usize,
        scratch: &mut Scratch,
    ) {
        self.plane_body::<S, K, true>(x, y, c, scratch)
    }

    /// One channel: `x` reads its input plane, `y` takes its output rows.
    ///
    /// The zero-padded input plane is split into `sy * sx` phases: phase `(a, b)`, row `i`,
    /// column `j` holds padded row `i * sy + a`, column `j * sx + b`. Output `(oy, ox)` then
    /// reads, for tap `(ky, kx)`, phase `(ky % sy, kx % sx)` at row `oy + ky / sy`, column
    /// `ox + kx / sx`. With the phases and the output laid out on the same row length, each
    /// tap is one multiply-add over a block of rows at a fixed offset (the columns past the
    /// output's width are computed and dropped).
    #[inline(always)]
    fn plane_body<S: Source + ?Sized, K: Sink, const FMA: bool>(
        &self,
        x: &S,
        y: &mut K,
        c: usize,
        s: &mut Scratch,
    ) {
        let [h, w] = self.in_hw;
        let [oh, ow] = self.out_hw;
        let [kh, kw] = self.kernel_hw;
        let [sy, sx] = self.stride;
        let [py, px] = self.pad;
        let cols = ow + (kw - 1) / sx;
        let taps = &self.taps[c * kh * kw..(c + 1) * kh * kw];
        // Output rows a block at a time: the block's phases and sums (about 8 KiB of sums)
        // stay in L1 through the taps, and the input is read from memory once.
        let block = (2048 / cols).max(1);
        for oy0 in (0..oh).step_by(block) {
            let n_rows = block.min(oh - oy0);
            // Phase rows this block reads, plus a spare one: the last taps read up to
            // `(kw - 1) / sx` past the end of the last row.
            let rows = n_rows + (kh - 1) / sy;
            let phase_len = (rows + 1) * cols;
            s.phases.clear();
            s.phases.resize(sy * sx * phase_len, 0.0);
            for a in 0..sy {
                for i in 0..rows {
                    let Some(iy) = ((oy0 + i) * sy + a).checked_sub(py).filter(|&iy| iy < h) else {
                        continue;
                    };
                    let row = |b: usize| (a * sx + b) * phase_len + i * cols;
                    if sx == 2 {
                        // Both column phases in one pass over the row: input column `ix` is
                        // padded column `ix + px`, phase `(ix + px) % 2`, column `(ix + px) / 2`.
                        let mut ix = 0;
                        if px % 2 == 1 {
                            x.read(iy * w, 1, &mut s.phases[row(1) + px / 2..][..1]);
                            ix = 1;
                        }
                        let j0 = (ix + px) / 2;
                        let pairs = ((w - ix) / 2).min(cols - j0);
                        let (p0, p1) = s.phases.split_at_mut(row(1));
                        let (p0, p1) = (&mut p0[row(0) + j0..][..pairs], &mut p1[j0..][..pairs]);
                        x.read_pairs(iy * w + ix, p0, p1);
                        let last = ix + 2 * pairs;
                        if last < w && j0 + pairs < cols {
                            x.read(iy * w + last, 1, &mut s.phases[row(0) + j0 + pairs..][..1]);
                        }
                        continue;
                    }
                    for b in 0..sx {
                        // Columns whose padded column `j * sx + b` is inside the input row.
                        let first = px.saturating_sub(b).div_ceil(sx);
                        let end = (w + px).saturating_sub(b).div_ceil(sx).min(cols);
                        if first >= end {
                            continue;
                        }
                        let at = (a * sx + b) * phase_len + i * cols;
                        let from = iy * w + first * sx + b - px;
                        x.read(from, sx, &mut s.phases[at + first..at + end]);
                    }
                }
            }
            let len = n_rows * cols;
            s.acc.clear();
            s.acc.resize(len, self.bias[c]);
            // Taps three at a time: one pass over the sums per three multiply-adds.
            let offset = |t: usize| {
                let (ky, kx) = (t / kw, t % kw);
                ((ky % sy) * sx + kx % sx) * phase_len + (ky / sy) * cols + kx / sx
            };
            let mut t = 0;
            while t + 3 <= kh * kw {
                let (w0, w1, w2) = (taps[t], taps[t + 1], taps[t + 2]);
                let (a0, a1, a2) = (offset(t), offset(t + 1), offset(t + 2));
                let p = &s.phases;
                let (p0, p1, p2) = (&p[a0..a0 + len], &p[a1..a1 + len], &p[a2..a2 + len]);
                for (((acc, &v0), &v1), &v2) in s.acc.iter_mut().zip(p0).zip(p1).zip(p2) {
                    *acc = if FMA {
                        v2.mul_add(w2, v1.mul_add(w1, v0.mul_add(w0, *acc)))
                    } else {
                        *acc + v0 * w0 + v1 * w1 + v2 * w2
                    };
                }
                t += 3;
            }
            for (t, &w0) in taps.iter().enumerate().skip(t) {
                let a0 = offset(t);
                for (acc, &v) in s.acc.iter_mut().zip(&s.phases[a0..a0 + len]) {
                    *acc = if FMA {
                        v.mul_add(w0, *acc)
                    } else {
                        *acc + v * w0
                    };
                }
            }
            if self.relu {
                for a in s.acc.iter_mut() {
                    *a = if *a < 0.0 { 0.0 } else { *a };
                }
            }
            y.put_rows(oy0, &s.acc, cols, ow);
        }
    }
}

/// An output plane the integer kernel writes: bytes of the output quantiser, or their values.
#[cfg(target_arch = "x86_64")]
trait IntOut {
    fn plane(&mut self, range: std::ops::Range<usize>) -> crate::arch::x86_64::vnni::Out<'_>;
}

#[cfg(target_arch = "x86_64")]
impl IntOut for [u8] {
    fn plane(&mut self, range: std::ops::Range<usize>) -> crate::arch::x86_64::vnni::Out<'_> {
        let stride = range.len();
        crate::arch::x86_64::vnni::Out::Bytes {
            at: &mut self[range],
            stride,
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl IntOut for [f32] {
    fn plane(&mut self, range: std::ops::Range<usize>) -> crate::arch::x86_64::vnni::Out<'_> {
        let stride = range.len();
        crate::arch::x86_64::vnni::Out::F32 {
            at: &mut self[range],
            stride,
        }
    }
}

impl Depthwise {
    #[cfg(target_arch = "x86_64")]
    fn window(&self) -> crate::arch::x86_64::vnni::Window {
        crate::arch::x86_64::vnni::Window {
            in_hw: self.in_hw,
            kernel: self.kernel_hw,
            stride: self.stride,
            pad: self.pad,
            out_hw: self.out_hw,
        }
    }

    /// The convolution in integers ([`crate::arch::x86_64::vnni::depthwise_plane`]): input bytes `x` of
    /// `grid`, outputs on `q`'s grid, a channel at a time (padding is the byte of 0.0, the
    /// input's zero point).
    #[cfg(target_arch = "x86_64")]
    fn run_int8<Y: IntOut + ?Sized>(
        &self,
        int8: &Int8Taps,
        grid: &FakeQuant,
        q: &FakeQuant,
        x: &[u8],
        y: &mut Y,
    ) {
        let [oh, ow] = self.out_hw;
        let kh = self.kernel_hw[0];
        let win = self.window();
        let planes = crate::arch::x86_64::vnni::Planes {
            bytes: x,
            planes: self.channels,
            zero: grid.dq_zero_point as u8,
        };
        let lo = (q.lo - q.zero_point) as f32;
        let requant = crate::arch::x86_64::vnni::Requant {
            // A ReLU in front of the quantiser raises its lower bound to 0 (the scale is
            // positive).
            lo: if self.relu { lo.max(0.0) } else { lo },
            hi: (q.hi - q.zero_point) as f32,
            zero_point: q.zero_point as f32,
            shift: (q.zero_point - q.dq_zero_point) as f32,
            scale: q.dq_scale,
        };
        for c in 0..self.channels {
            let p = crate::arch::x86_64::vnni::DepthwisePlane {
                taps: &int8.words[c * kh..(c + 1) * kh],
                correction: -grid.dq_zero_point * int8.sums[c],
                unit: grid.dq_scale * int8.scales[c] * q.inv_scale,
                bias: self.bias[c] * q.inv_scale,
            };
            let mut out = y.plane(c * oh * ow..(c + 1) * oh * ow);
            // SAFETY: the caller checked `windows_available`.
            unsafe {
                crate::arch::x86_64::vnni::depthwise_plane(&planes, c, &win, &p, &requant, &mut out)
            };
        }
    }
}

/// Where a channel's input comes from: f32 values, or a quantiser's bytes turned into the
/// values the f32 path would carry.
trait Source {
    /// `dst.len()` values from `start`, `step` apart.
    fn read(&self, start: usize, step: usize, dst: &mut [f32]);
    /// Values from `start` alternately into `even` and `odd` (of equal lengths).
    fn read_pairs(&self, start: usize, even: &mut [f32], odd: &mut [f32]);
}

impl Source for [f32] {
    #[inline(always)]
    fn read(&self, start: usize, step: usize, dst: &mut [f32]) {
        if step == 1 {
            dst.copy_from_slice(&self[start..start + dst.len()]);
            return;
        }
        // Whole groups of `step` vectorise; the last value may start a partial group.
        let whole = ((self.len() - start) / step).min(dst.len());
        for (d, g) in dst[..whole]
            .iter_mut()
            .zip(self[start..].chunks_exact(step))
        {
            *d = g[0];
        }
        for (i, d) in dst.iter_mut().enumerate().skip(whole) {
            *d = self[start + i * step];
        }
    }

    #[inline(always)]
    fn read_pairs(&self, start: usize, even: &mut [f32], odd: &mut [f32]) {
        let src = &self[start..start + 2 * even.len()];
        for ((e, o), g) in even.iter_mut().zip(odd.iter_mut()).zip(src.chunks_exact(2)) {
            *e = g[0];
            *o = g[1];
        }
    }
}

/// Bytes of a grid with zero point `z` and scale `s`: the value of `q` is `(q - z) * s`.
struct Bytes<'a> {
    q: &'a [u8],
    z: i32,
    s: f32,
}

impl Source for Bytes<'_> {
    #[inline(always)]
    fn read(&self, start: usize, step: usize, dst: &mut [f32]) {
        let (z, s) = (self.z, self.s);
        let value = |q: u8| (q as i32 - z) as f32 * s;
        if step == 1 {
            for (d, &q) in dst.iter_mut().zip(&self.q[start..]) {
                *d = value(q);
            }
            return;
        }
        let whole = ((self.q.len() - start) / step).min(dst.len());
        for (d, g) in dst[..whole]
            .iter_mut()
            .zip(self.q[start..].chunks_exact(step))
        {
            *d = value(g[0]);
        }
        for (i, d) in dst.iter_mut().enumerate().skip(whole) {
            *d = value(self.q[start + i * step]);
        }
    }

    #[inline(always)]
    fn read_pairs(&self, start: usize, even: &mut [f32], odd: &mut [f32]) {
        let (z, s) = (self.z, self.s);
        let src = &self.q[start..start + 2 * even.len()];
        for ((e, o), g) in even.iter_mut().zip(odd.iter_mut()).zip(src.chunks_exact(2)) {
            *e = (g[0] as i32 - z) as f32 * s;
            *o = (g[1] as i32 - z) as f32 * s;
        }
    }
}

/// Where a channel's output rows go.
trait Sink {
    /// Output rows from `oy0`: the first `ow` of every `cols` values of `rows`.
    fn put_rows(&mut self, oy0: usize, rows: &[f32], cols: usize, ow: usize);
}

/// f32 rows, with the output quantise-dequantise pair applied when there is one.
struct Values<'a> {
    y: &'a mut [f32],
    q: Option<&'a FakeQuant>,
}

impl Sink for Values<'_> {
    #[inline(always)]
    fn put_rows(&mut self, oy0: usize, rows: &[f32], cols: usize, ow: usize) {
        let n = rows.len() / cols;
        let out = &mut self.y[oy0 * ow..(oy0 + n) * ow];
        for (out, row) in out.chunks_exact_mut(ow).zip(rows.chunks_exact(cols)) {
            out.copy_from_slice(&row[..ow]);
        }
        if let Some(q) = self.q {
            q.apply_body(out);
        }
    }
}

/// The output quantiser's bytes.
struct QuantisedBytes<'a> {
    y: &'a mut [u8],
    q: &'a FakeQuant,
}

impl Sink for QuantisedBytes<'_> {
    #[inline(always)]
    fn put_rows(&mut self, oy0: usize, rows: &[f32], cols: usize, ow: usize) {
        let n = rows.len() / cols;
        let out = &mut self.y[oy0 * ow..(oy0 + n) * ow];
        for (out, row) in out.chunks_exact_mut(ow).zip(rows.chunks_exact(cols)) {
            self.q.quantise_bytes_body(&row[..ow], out);
        }
    }
}

/// Buffers reused across the channels of one run.
#[derive(Default)]
struct Scratch {
    phases: Vec<f32>,
    acc: Vec<f32>,
}

impl Op for Depthwise {
    fn name(&self) -> StaticName {
        "Depthwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} channels, kernel {:?}, stride {:?}, padding {:?}{}{}",
            self.channels,
            self.kernel_hw,
            self.stride,
            self.pad,
            if self.relu { ", ReLU" } else { "" },
            if self.out_q.is_some() {
                ", output quantised"
            } else {
                ""
            }
        )])
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for Depthwise {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs[0].try_as_plain_ram()?;
        let [h, w] = self.in_hw;
        let [oh, ow] = self.out_hw;
        ensure!(x.len() == self.channels * h * w);
        let mut scratch = Scratch::default();
        let mut y = graph::zeroed_output(self.bytes_out, &self.out_shape)?;
        let mut y_ram = y.try_as_plain_ram_mut()?;
        #[cfg(target_arch = "x86_64")]
        // (A ReLU is folded into the quantiser's lower bound, which needs a positive scale.)
        if let (Some(grid), Some(q), Some(int8)) = (&self.bytes_in, &self.out_q, &self.int8)
            && q.inv_scale > 0.0
            && q.inv_scale.is_finite()
            && crate::arch::x86_64::vnni::windows_available()
            && self.window().supported()
        {
            let x = x.as_slice::<u8>()?;
            if self.bytes_out {
                self.run_int8(int8, grid, q, x, y_ram.as_slice_mut::<u8>()?);
            } else {
                self.run_int8(int8, grid, q, x, y_ram.as_slice_mut::<f32>()?);
            }
            return Ok(tvec!(y.into_tvalue()));
        }
        for c in 0..self.channels {
            let (plane_in, plane_out) =
                (h * w * c..h * w * (c + 1), oh * ow * c..oh * ow * (c + 1));
            let (y, q) = (&mut y_ram, self.out_q.as_ref());
            match (&self.bytes_in, self.bytes_out, q) {
                (Some(grid), true, Some(q)) => {
                    let x = Bytes {
                        q: &x.as_slice::<u8>()?[plane_in],
                        z: grid.dq_zero_point,
                        s: grid.dq_scale,
                    };
                    let y = &mut y.as_slice_mut::<u8>()?[plane_out];
                    self.plane(&x, &mut QuantisedBytes { y, q }, c, &mut scratch);
                }
                (Some(grid), false, q) => {
                    let x = Bytes {
                        q: &x.as_slice::<u8>()?[plane_in],
                        z: grid.dq_zero_point,
                        s: grid.dq_scale,
                    };
                    let y = &mut y.as_slice_mut::<f32>()?[plane_out];
                    self.plane(&x, &mut Values { y, q }, c, &mut scratch);
                }
                (None, true, Some(q)) => {
                    let x = &x.as_slice::<f32>()?[plane_in];
                    let y = &mut y.as_slice_mut::<u8>()?[plane_out];
                    self.plane(x, &mut QuantisedBytes { y, q }, c, &mut scratch);
                }
                (None, false, q) => {
                    let x = &x.as_slice::<f32>()?[plane_in];
                    let y = &mut y.as_slice_mut::<f32>()?[plane_out];
                    self.plane(x, &mut Values { y, q }, c, &mut scratch);
                }
                (_, true, None) => bail!("Depthwise: bytes out without an output quantiser"),
            }
        }
        Ok(tvec!(y.into_tvalue()))
    }

    crate::eval_out_of_plan!();
}

impl TypedOp for Depthwise {
    tract_onnx::tract_core::as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == graph::bytes_or_f32(self.bytes_in.is_some()));
        Ok(tvec!(
            graph::bytes_or_f32(self.bytes_out).fact(&*self.out_shape)
        ))
    }
}

/// The operator for node `id` when it is a float depthwise `Conv` (see [`graph::conv_at`]).
fn depthwise_at(model: &TypedModel, id: usize) -> TractResult<Option<(Depthwise, OutletId)>> {
    let Some(conv) = graph::conv_at(model, model.node(id))? else {
        return Ok(None);
    };
    let c = conv.in_channels;
    let [kh, kw] = conv.kernel;
    if conv.group != c
        || conv.dilation != [1, 1]
        || conv.out_channels != c
        || conv.weights.len() != c * kh * kw
        || (conv.bias.len() != c && conv.bias.len() != 1)
    {
        return Ok(None);
    }
    let bias = conv.bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    let bias = if bias.len() == 1 {
        vec![bias[0]; c]
    } else {
        bias
    };
    let taps = conv.weights.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    Ok(Some((
        Depthwise {
            channels: c,
            in_hw: conv.in_hw,
            out_hw: conv.out_hw,
            kernel_hw: conv.kernel,
            stride: conv.stride,
            pad: conv.pad,
            int8: Int8Taps::new(&taps, c, conv.kernel).map(Arc::new),
            taps: Arc::new(taps),
            bias: Arc::new(bias),
            out_q: None,
            bytes_in: None,
            bytes_out: false,
            relu: false,
            out_shape: conv.out_shape,
        },
        conv.x,
    )))
}

/// Replaces tract's float depthwise convolutions with [`Depthwise`], taking in a
/// `FakeQuant` that is the convolution's only reader. Returns how many were replaced.
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    graph::rewrite_each(model, chain_at)
}

/// The patch for the depthwise convolution at `id` and what reads it alone, if [`rewrite`]
/// takes it.
fn chain_at(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let Some((mut op, x)) = depthwise_at(model, id)? else {
        return Ok(None);
    };
    // Then what reads the convolution alone: a ReLU, a quantise-dequantise pair, or a
    // ReLU then a pair.
    let mut last = model.node(id);
    if let Some(next) = sole_successor(model, last).map(|n| model.node(n))
        && is_relu(model, next)?
    {
        op.relu = true;
        last = next;
    }
    if let Some(next) = sole_successor(model, last).map(|n| model.node(n))
        && let Some(q) = next.op_as::<FakeQuant>()
    {
        op.out_q = Some(q.clone());
        last = next;
    }
    // A ReLU or quantiser that broadcasts to another shape is not fused (nor is the
    // convolution replaced: tract keeps the whole chain).
    if graph::concrete_shape(model, last.id.into())?.as_deref() != Some(&op.out_shape[..]) {
        return Ok(None);
    }
    Ok(Some(TypedModelPatch::replace_single_op(
        model,
        last,
        &[x],
        op,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::testing::values;

    /// The definition, one output at a time.
    fn reference(op: &Depthwise, x: &[f32]) -> Vec<f32> {
        let [h, w] = op.in_hw;
        let [oh, ow] = op.out_hw;
        let [kh, kw] = op.kernel_hw;
        let mut y = vec![0f32; op.channels * oh * ow];
        for c in 0..op.channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = op.bias[c] as f64;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * op.stride[0] + ky) as isize - op.pad[0] as isize;
                            let ix = (ox * op.stride[1] + kx) as isize - op.pad[1] as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                acc += op.taps[(c * kh + ky) * kw + kx] as f64
                                    * x[(c * h + iy as usize) * w + ix as usize] as f64;
                            }
                        }
                    }
                    y[(c * oh + oy) * ow + ox] = acc as f32;
                }
            }
        }
        y
    }

    fn op(
        c: usize,
        in_hw: [usize; 2],
        k: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 2],
    ) -> Depthwise {
        // Output size for equal padding on both sides.
        let out = |i: usize| (in_hw[i] + 2 * pad[i] - k[i]) / stride[i] + 1;
        let out_hw = [out(0), out(1)];
        Depthwise {
            channels: c,
            in_hw,
            out_hw,
            kernel_hw: k,
            stride,
            pad,
            taps: Arc::new(values(c * k[0] * k[1], 7)),
            bias: Arc::new(values(c, 11)),
            out_q: None,
            bytes_in: None,
            bytes_out: false,
            relu: false,
            out_shape: tvec![c, out_hw[0], out_hw[1]],
            int8: None,
        }
    }

    /// The integer kernel against its definition: exact integer sums over the taps inside the
    /// input, then the requantisation, output for output; and within one output step of the
    /// float convolution.
    #[test]
    fn the_integer_kernel_matches_its_definition() {
        if !crate::graph::testing::cpu_has(
            "depthwise::tests::the_integer_kernel_matches_its_definition",
            crate::graph::testing::WINDOWS,
        ) {
            return;
        }
        let (input, output) = (
            FakeQuant {
                inv_scale: 100.0,
                zero_point: 100,
                lo: 0,
                hi: 255,
                dq_zero_point: 100,
                dq_scale: 0.01,
            },
            FakeQuant {
                inv_scale: 20.0,
                zero_point: 30,
                lo: 0,
                hi: 255,
                dq_zero_point: 30,
                dq_scale: 0.05,
            },
        );
        let mut cases = 0;
        for stride in [[1, 1], [2, 2], [3, 3], [1, 2], [2, 1]] {
            for k in [[3, 3], [5, 3], [1, 1], [3, 1], [2, 4]] {
                for pad in [[0, 0], [1, 1], [2, 1]] {
                    for in_hw in [[7, 9], [8, 8], [5, 33], [6, 130]] {
                        if pad[0] >= k[0] || pad[1] >= k[1] || in_hw[0] + 2 * pad[0] < k[0] {
                            continue;
                        }
                        for (relu, bytes_out) in [(false, true), (true, true), (true, false)] {
                            let c = 3;
                            let mut op = op(c, in_hw, k, stride, pad);
                            // Taps on a symmetric int8 grid per channel (whose largest
                            // magnitude is 127 steps).
                            let mut ints =
                                crate::graph::testing::ints(c * k[0] * k[1], 5, -127, 127);
                            for (ch, t) in ints.chunks_exact_mut(k[0] * k[1]).enumerate() {
                                t[ch % t.len()] = if ch % 2 == 0 { 127 } else { -127 };
                            }
                            let scales = [0.01f32, 0.003, 0.02];
                            let taps: Vec<f32> = ints
                                .iter()
                                .enumerate()
                                .map(|(i, &t)| t as f32 * scales[i / (k[0] * k[1])])
                                .collect();
                            op.int8 = Int8Taps::new(&taps, c, k).map(Arc::new);
                            assert!(op.int8.is_some());
                            op.taps = Arc::new(taps);
                            (op.relu, op.bytes_out) = (relu, bytes_out);
                            op.bytes_in = Some(input.clone());
                            op.out_q = Some(output.clone());
                            let [h, w] = in_hw;
                            let x: Vec<u8> = crate::graph::testing::ints(c * h * w, 9, 0, 255)
                                .into_iter()
                                .map(|q| q as u8)
                                .collect();
                            let run = |op: &Depthwise| {
                                let x = Tensor::from_shape(&[c, h, w], &x).unwrap();
                                let y = EvalOp::eval(
                                    op,
                                    &EvalContext::out_of_plan(),
                                    tvec!(x.into_tvalue()),
                                )
                                .unwrap();
                                let y = y[0].clone().into_tensor();
                                if bytes_out {
                                    let mut v = vec![0f32; y.len()];
                                    output.dequantise_bytes(
                                        y.try_as_plain_ram().unwrap().as_slice::<u8>().unwrap(),
                                        &mut v,
                                    );
                                    v
                                } else {
                                    y.try_as_plain_ram()
                                        .unwrap()
                                        .as_slice::<f32>()
                                        .unwrap()
                                        .to_vec()
                                }
                            };
                            let got = run(&op);
                            let float = run(&Depthwise {
                                int8: None,
                                ..op.clone()
                            });
                            let [oh, ow] = op.out_hw;
                            let [kh, kw] = k;
                            for ch in 0..c {
                                for oy in 0..oh {
                                    for ox in 0..ow {
                                        let mut acc = 0i32;
                                        for ky in 0..kh {
                                            for kx in 0..kw {
                                                let iy = (oy * stride[0] + ky).checked_sub(pad[0]);
                                                let ix = (ox * stride[1] + kx).checked_sub(pad[1]);
                                                if let (Some(iy), Some(ix)) = (iy, ix)
                                                    && iy < h
                                                    && ix < w
                                                {
                                                    acc += ints[(ch * kh + ky) * kw + kx]
                                                        * (x[(ch * h + iy) * w + ix] as i32 - 100);
                                                }
                                            }
                                        }
                                        let unit = 0.01 * scales[ch] * output.inv_scale;
                                        let v = acc as f32 * unit + op.bias[ch] * output.inv_scale;
                                        let lo = if relu { 0.0 } else { -30.0 };
                                        let r = v.clamp(lo, 225.0).round_ties_even();
                                        let want = r * 0.05;
                                        let i = (ch * oh + oy) * ow + ox;
                                        let at = format!(
                                            "stride {stride:?} kernel {k:?} pad {pad:?} input \
                                             {in_hw:?} relu {relu}: channel {ch} ({oy}, {ox})"
                                        );
                                        assert_eq!(got[i], want, "{at}");
                                        assert!((got[i] - float[i]).abs() <= 0.05 + 1e-6, "{at}");
                                    }
                                }
                            }
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert!(cases > 300, "only {cases} cases ran");
    }

    #[test]
    fn matches_the_definition_at_every_stride_padding_and_size() {
        let mut cases = 0;
        for stride in [[1, 1], [2, 2], [3, 3], [1, 2], [2, 1]] {
            for k in [[3, 3], [5, 5], [1, 1], [3, 1]] {
                for pad in [[0, 0], [1, 1], [2, 2], [1, 0]] {
                    // Odd and even sizes, wider and narrower than a vector, and a height
                    // spanning several row blocks (2048 / cols rows each).
                    for in_hw in [[7, 9], [8, 8], [5, 33], [300, 12]] {
                        if pad[0] >= k[0] || pad[1] >= k[1] || in_hw[0] + 2 * pad[0] < k[0] {
                            continue;
                        }
                        let op = op(3, in_hw, k, stride, pad);
                        let x = values(3 * in_hw[0] * in_hw[1], 3);
                        let mut y = vec![f32::NAN; op.out_shape.iter().product()];
                        let mut scratch = Scratch::default();
                        let (h, w) = (in_hw[0], in_hw[1]);
                        let plane = op.out_hw[0] * op.out_hw[1];
                        for c in 0..3 {
                            op.plane(
                                &x[c * h * w..(c + 1) * h * w],
                                &mut Values {
                                    y: &mut y[c * plane..(c + 1) * plane],
                                    q: None,
                                },
                                c,
                                &mut scratch,
                            );
                        }
                        // The same values read from bytes (values on a grid of 0.01 around
                        // byte 100) give the same bits as read from f32.
                        let q: Vec<u8> = x
                            .iter()
                            .map(|&v| ((v * 100.0).round() + 100.0) as u8)
                            .collect();
                        let on_grid: Vec<f32> =
                            q.iter().map(|&q| (q as i32 - 100) as f32 * 0.01).collect();
                        let (mut from_f32, mut from_bytes) = (y.clone(), y.clone());
                        for c in 0..3 {
                            let (xs, ys) = (c * h * w..(c + 1) * h * w, c * plane..(c + 1) * plane);
                            let bytes = Bytes {
                                q: &q[xs.clone()],
                                z: 100,
                                s: 0.01,
                            };
                            op.plane(
                                &bytes,
                                &mut Values {
                                    y: &mut from_bytes[ys.clone()],
                                    q: None,
                                },
                                c,
                                &mut scratch,
                            );
                            op.plane(
                                &on_grid[xs],
                                &mut Values {
                                    y: &mut from_f32[ys],
                                    q: None,
                                },
                                c,
                                &mut scratch,
                            );
                        }
                        assert_eq!(
                            from_bytes, from_f32,
                            "stride {stride:?} kernel {k:?} pad {pad:?} input {in_hw:?}: bytes"
                        );
                        let want = reference(&op, &x);
                        for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                            assert!(
                                (a - b).abs() <= 1e-5,
                                "stride {stride:?} kernel {k:?} pad {pad:?} input {in_hw:?}: \
                                 output {i} is {a}, the definition gives {b}"
                            );
                        }
                        cases += 1;
                    }
                }
            }
        }
        assert!(cases > 100, "only {cases} cases ran");
    }

    #[test]
    fn a_fused_output_quantiser_is_applied() {
        let mut op = op(2, [6, 6], [3, 3], [2, 2], [1, 1]);
        let q = FakeQuant {
            inv_scale: 10.0,
            zero_point: 3,
            lo: 0,
            hi: 255,
            dq_zero_point: 3,
            dq_scale: 0.1,
        };
        op.out_q = Some(q.clone());
        let x = values(2 * 36, 5);
        // The same convolution reading and writing bytes gives the same values.
        let input_grid = FakeQuant {
            dq_scale: 0.01,
            inv_scale: 100.0,
            zero_point: 100,
            dq_zero_point: 100,
            ..q.clone()
        };
        let x_bytes: Vec<u8> = x
            .iter()
            .map(|&v| (v * 100.0).round() as i32 + 100)
            .map(|b| b as u8)
            .collect();
        let mut x_grid = vec![0f32; x.len()];
        input_grid.dequantise_bytes(&x_bytes, &mut x_grid);
        let run = |op: &Depthwise, input: Tensor| {
            EvalOp::eval(op, &EvalContext::out_of_plan(), tvec!(input.into_tvalue())).unwrap()
        };
        let on_grid = run(&op, Tensor::from_shape(&[2, 6, 6], &x_grid).unwrap());
        let mut bytes_op = op.clone();
        bytes_op.bytes_in = Some(input_grid);
        bytes_op.bytes_out = true;
        let bytes = run(&bytes_op, Tensor::from_shape(&[2, 6, 6], &x_bytes).unwrap());
        let mut dequantise_bytes = vec![0f32; on_grid[0].len()];
        q.dequantise_bytes(
            bytes[0]
                .try_as_plain_ram()
                .unwrap()
                .as_slice::<u8>()
                .unwrap(),
            &mut dequantise_bytes,
        );
        assert_eq!(
            on_grid[0]
                .try_as_plain_ram()
                .unwrap()
                .as_slice::<f32>()
                .unwrap(),
            &dequantise_bytes[..]
        );
        let out = EvalOp::eval(
            &op,
            &EvalContext::out_of_plan(),
            tvec!(Tensor::from_shape(&[2, 6, 6], &x).unwrap().into_tvalue()),
        )
        .unwrap();
        let mut want = reference(&op, &x);
        q.apply(&mut want);
        let got = out[0].try_as_plain_ram().unwrap();
        for (a, b) in got.as_slice::<f32>().unwrap().iter().zip(&want) {
            // On the output grid, and the same step as the definition (a value within
            // rounding of a tie may land on either side).
            assert!(
                (a / 0.1 - (a / 0.1).round()).abs() < 1e-4,
                "{a} is off the grid"
            );
            assert!(
                (a - b).abs() <= 0.1 + 1e-6,
                "got {a}, the definition gives {b}"
            );
        }
    }
}
