//! Convolutions of QDQ models (1x1 and `KxK` of group 1) run in integer arithmetic.
//!
//! After [`crate::qdq::fuse_pairs`], a quantised 1x1 convolution of a QDQ model reads, in
//! tract's decluttered graph: `FakeQuant -> EinSum (f32 weights) -> Add (f32 bias) -> FakeQuant`
//! (a `KxK` one: `FakeQuant -> Conv -> FakeQuant`). Both sides of the product are on int8
//! grids: the activation is `(q - z) * s` with `q` a byte, each weight row is `w * s_w[o]`
//! with `w` in `[-127, 127]`. tract multiplies them as floats. [`QConv`] multiplies the
//! integers instead, then applies the per-channel scale, the bias and the output quantiser in
//! one pass: the work onnxruntime's `QLinearConv` does for the same model. Where the CPU has
//! AVX-512 VNNI the product and the requantisation are the fused kernels of
//! [`crate::arch::x86_64::vnni`], with AVX2 only the fused kernel of
//! [`crate::arch::x86_64::avx2`]; on aarch64 the NEON product of [`crate::arch::aarch64`] or
//! tract-linalg's i32 kernels (`sdot`), requantised per block, as everywhere with
//! `IAT_KERNELS=portable`.
//!
//! The integer product is exact where the float one rounds, so results can differ from the
//! float path by one quantisation step where a value sits on a rounding tie; `model check`
//! holds them to the card's tolerance of onnxruntime's output.
//!
//! A chain is rewritten only when the weights are provably on a symmetric int8 grid per output
//! channel (each row, divided by its largest magnitude over 127, is within 1e-4 of integers)
//! and the activation comes from a byte quantiser; anything else stays in float.
//!
//! A quantised element-wise activation between two convolutions (LeakyReLU in NanoDet:
//! `DQ -> LeakyRelu -> Q`) is a `LookupTable` over bytes in tract's decluttered graph, with no
//! quantise-dequantise pair on either side of the convolutions; [`rewrite`] then reads the
//! table's bytes and writes the bytes of the quantiser in front of the next table (see there).

use std::sync::Arc;

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::tract_linalg::BinOp;
use tract_onnx::tract_core::tract_linalg::MmmDispatch;
use tract_onnx::tract_core::tract_linalg::mmm::{
    AsInputValue, FusedSpec, MMMInputValue, MatMatMul, Query,
};

use crate::depthwise::Depthwise;
use crate::graph;
use crate::qadd::QAdd;
use crate::qdq::{FakeQuant, ROUND_MAGIC, clamp};

/// `y = requantise(W x + b)` for a 1x1 convolution, `W` int8, `x` bytes, in integers.
#[derive(Debug, Clone)]
pub struct QConv {
    /// Output channels (rows of `W`) and input channels.
    m: usize,
    k: usize,
    /// The activation quantiser in front: multiply by `inv_scale_x` to get `q - z`, then add
    /// `shift_x` to get the signed byte the kernel reads.
    inv_scale_x: f32,
    shift_x: i32,
    /// The kernel, which of its packings, and the weights packed for it once.
    mmm: Box<dyn MatMatMul>,
    packing: usize,
    packed_w: Arc<Box<dyn MMMInputValue>>,
    /// Per output channel: `-shift_x * sum(W[o])`, what the signed shift adds to the sums.
    correction: Arc<Tensor>,
    /// Per output channel: the float value of one unit of the i32 sum (`s_x * s_w[o]`), the bias.
    unit: Arc<Vec<f32>>,
    bias: Arc<Vec<f32>>,
    /// The output quantise-dequantise pair.
    out: FakeQuant,
    /// The output's shape: the convolution's, whose spatial axes are the input's.
    out_shape: TVec<usize>,
    /// The input arrives as the bytes of its quantiser, the output leaves as the bytes of
    /// `out` ([`byte_edges`]).
    bytes_in: bool,
    bytes_out: bool,
    /// The input quantiser's grid is a byte grid (bytes can replace its f32 values).
    input_is_byte_grid: bool,
    /// The same weights for the fused AVX-512 VNNI kernel, where the CPU has it.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    vnni: Option<Arc<crate::arch::x86_64::vnni::Weights>>,
    /// `vnni` holds the weights of [`crate::arch::x86_64::vnni::Weights::run_direct`] for this geometry.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    direct: Option<crate::arch::x86_64::vnni::Window>,
    /// The same weights for the fused AVX2 kernel, where the CPU has AVX2 (used where
    /// `vnni` is not).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    avx2: Option<Arc<crate::arch::x86_64::avx2::Weights>>,
    /// The same weights for the NEON product ([`crate::arch::aarch64`]), on aarch64.
    neon: Option<Arc<crate::arch::aarch64::Weights>>,
    /// For a convolution with a kernel larger than 1x1: how the columns of the product
    /// (output pixels) gather their patches from the input (`None`: 1x1, the input is the
    /// matrix).
    patches: Option<Patches>,
}

/// The geometry of a `KH x KW` convolution of one `[C, H, W]` image, read as a matrix product
/// with `C * KH * KW` rows (channel, then kernel row, then kernel column, as the OIHW weights
/// are laid out) and one column per output pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Patches {
    channels: usize,
    in_hw: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    /// Spacing of the kernel's taps (1: adjacent).
    dilation: [usize; 2],
    pad: [usize; 2],
    out_hw: [usize; 2],
}

impl Patches {
    fn window(&self) -> crate::arch::x86_64::vnni::Window {
        crate::arch::x86_64::vnni::Window {
            in_hw: self.in_hw,
            kernel: self.kernel,
            stride: self.stride,
            pad: self.pad,
            out_hw: self.out_hw,
        }
    }
}

impl PartialEq for QConv {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.packed_w, &other.packed_w) && self.out == other.out
    }
}

impl Eq for QConv {}

/// A float convolution's parameters: weights `[m, k]` (output channels by inputs) and one bias
/// per output channel.
struct FloatConv<'a> {
    weights: &'a [f32],
    bias: Vec<f32>,
    m: usize,
    k: usize,
}

impl QConv {
    /// Builds the operator from the float weights `[m, k]`, or `None` when they are not on a
    /// symmetric int8 grid per row, or no integer kernel is available.
    fn new(
        float: FloatConv,
        input: &FakeQuant,
        out: FakeQuant,
        out_shape: TVec<usize>,
        patches: Option<Patches>,
    ) -> TractResult<Option<QConv>> {
        let FloatConv {
            weights,
            bias,
            m,
            k,
        } = float;
        // The activation: `q` in `[lo, hi]` (256 values) and `q - z` = x / s.
        if input.hi - input.lo != 255 || input.zero_point != input.dq_zero_point {
            return Ok(None);
        }
        let shift_x = input.dq_zero_point - input.lo - 128;
        let scale_x = input.dq_scale;
        let Some((w_int, scales)) = crate::qdq::symmetric_int8_rows(weights, m, k) else {
            return Ok(None);
        };
        let unit: Vec<f32> = scales.iter().map(|s_w| scale_x * s_w).collect();
        let correction: Vec<i32> = (0..m)
            .map(|o| {
                -shift_x
                    * w_int[o * k..(o + 1) * k]
                        .iter()
                        .map(|&w| w as i32)
                        .sum::<i32>()
            })
            .collect();
        let dispatch = MmmDispatch::native();
        let query = Query::plain(i32::datum_type(), Some(m), Some(k), None);
        let Some((mmm, packing, None)) = dispatch.pick(&query) else {
            return Ok(None);
        };
        let w = Tensor::from_shape(&[m, k], &w_int)?;
        let packed_w = mmm.packings()[packing].0.prepare_one(&w, 1, 0)?;
        // A `KxK` convolution the windowed kernel takes reads the input in place; any
        // other goes through the patch matrix.
        let direct = patches
            .as_ref()
            .filter(|p| p.dilation == [1, 1])
            .map(Patches::window)
            .filter(|win| win.supported() && crate::arch::x86_64::vnni::windows_available());
        // What the fused kernels apply to their sums: the scale and bias in the output
        // quantiser's units, then its clamp and zero point.
        let inv = out.inv_scale;
        let fused_unit = || unit.iter().map(|u| u * inv).collect::<Vec<f32>>();
        let fused_bias = || bias.iter().map(|b| b * inv).collect::<Vec<f32>>();
        let requant = crate::arch::x86_64::vnni::Requant {
            lo: (out.lo - out.zero_point) as f32,
            hi: (out.hi - out.zero_point) as f32,
            zero_point: out.zero_point as f32,
            shift: (out.zero_point - out.dq_zero_point) as f32,
            scale: out.dq_scale,
        };
        let zero_point_x = shift_x + 128;
        let vnni = crate::arch::x86_64::vnni::available().then(|| {
            let (unit, bias) = (fused_unit(), fused_bias());
            Arc::new(match (&patches, direct) {
                (Some(p), Some(_)) => {
                    let w = crate::arch::x86_64::vnni::Weights::direct_layout(
                        &w_int, m, p.channels, p.kernel,
                    );
                    let k = w.len() / m.max(1);
                    crate::arch::x86_64::vnni::Weights::new(
                        &w,
                        m,
                        k,
                        zero_point_x,
                        unit,
                        bias,
                        requant,
                    )
                }
                _ => crate::arch::x86_64::vnni::Weights::new(
                    &w_int,
                    m,
                    k,
                    zero_point_x,
                    unit,
                    bias,
                    requant,
                ),
            })
        });
        // Not kept where VNNI runs instead, except for the tests that compare it.
        let avx2 =
            (crate::arch::x86_64::avx2::available() && (vnni.is_none() || cfg!(test))).then(|| {
                Arc::new(crate::arch::x86_64::avx2::Weights::new(
                    &w_int,
                    m,
                    k,
                    zero_point_x,
                    fused_unit(),
                    fused_bias(),
                    requant,
                ))
            });
        let neon = crate::arch::aarch64::available()
            .then(|| Arc::new(crate::arch::aarch64::Weights::new(&w_int, m, k)));
        Ok(Some(QConv {
            m,
            k,
            inv_scale_x: 1.0 / scale_x,
            shift_x,
            mmm,
            packing,
            packed_w: Arc::new(packed_w),
            correction: Arc::new(Tensor::from_shape(&[m], &correction)?),
            unit: Arc::new(unit),
            bias: Arc::new(bias),
            out,
            out_shape,
            bytes_in: false,
            bytes_out: false,
            input_is_byte_grid: input.is_byte_grid(),
            vnni,
            direct,
            avx2,
            neon,
            patches,
        }))
    }

    /// Runs on `x` (`k` rows of `n` activations, on the input quantiser's grid), a block of
    /// columns at a time so that the i32 sums of a block stay in cache between the matrix
    /// product and the requantisation.
    fn run(&self, x: Activations, y: OutputsMut) -> TractResult<()> {
        let (m, k) = (self.m, self.k);
        let quantised;
        let x = match (x, &self.patches) {
            (Activations::F32(x), Some(_)) => {
                quantised = self.unsigned_bytes(x);
                Activations::Bytes(&quantised)
            }
            (x, _) => x,
        };
        let n = match &self.patches {
            Some(p) => p.out_hw[0] * p.out_hw[1],
            None => x.len() / k,
        };
        #[cfg(target_arch = "x86_64")]
        if let Some(vnni) = &self.vnni {
            return self.run_vnni(vnni, &x, y, n);
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = &self.avx2 {
            return self.run_fused(&**avx2, &x, y, n);
        }
        // About 64 KiB of sums per block, a multiple of 16 columns.
        let block = ((16 * 1024 / m.max(1)) / 16 * 16).clamp(16, n.max(16));
        if let Some(neon) = &self.neon {
            return self.run_neon(neon, &x, y, n, block);
        }
        let mut y = y;
        let mut n0 = 0;
        while n0 < n {
            let cols = block.min(n - n0);
            let xq = self.quantise_block(&x, n, n0, cols)?;
            let packed_x = self.mmm.packings()[self.packing].1.prepare_one(&xq, 0, 1)?;
            // SAFETY: `i32` is `Copy` and has no invalid bit pattern; the tensor is written only
            // through the raw-pointer store below and read (as a slice) only after `run`
            // returned `Ok`, having stored all `m * cols` sums. No reference to its memory
            // exists before then.
            let mut acc = unsafe { Tensor::uninitialized::<i32>(&[m, cols])? };
            // SAFETY: the store view wraps `acc`, `[m, cols]` row-major, the shape `run` writes
            // (`m`, `cols`); `packed_w` was packed for this `mmm` and `packing` from `[m, k]`
            // weights, `packed_x` from the `[k, cols]` block `xq` with the same packing, and
            // `correction` has `m` values (one per row of `BinPerRow`).
            unsafe {
                let store = self.mmm.c_view(Some(0), Some(1)).wrap(&acc.view_mut());
                self.mmm.run(
                    m,
                    cols,
                    &[
                        FusedSpec::AddMatMul {
                            a: AsInputValue::Borrowed(&**self.packed_w),
                            b: AsInputValue::Borrowed(&*packed_x),
                            packing: self.packing,
                        },
                        FusedSpec::BinPerRow(self.correction.view(), BinOp::Add),
                        FusedSpec::Store(store),
                    ],
                )?;
            }
            let acc = acc.try_as_plain_ram()?;
            self.requantise_block(acc.as_slice::<i32>()?, &mut y, n, n0, cols);
            n0 += cols;
        }
        Ok(())
    }

    /// [`QConv::run`] with the kernels of [`crate::arch::x86_64::vnni`]: the windowed one where
    /// it takes the geometry, else the fused product ([`QConv::run_fused`]).
    #[cfg(target_arch = "x86_64")]
    fn run_vnni(
        &self,
        vnni: &crate::arch::x86_64::vnni::Weights,
        x: &Activations,
        y: OutputsMut,
        n: usize,
    ) -> TractResult<()> {
        let mut y = y;
        if let (Some(win), Some(p), Activations::Bytes(x)) = (&self.direct, &self.patches, x) {
            let planes = crate::arch::x86_64::vnni::Planes {
                bytes: x,
                planes: p.channels,
                // Padding is the byte of 0.0, as in `gather_patches`.
                zero: (self.shift_x + 128).clamp(0, 255) as u8,
            };
            // SAFETY: `direct` is set only where the CPU has the features
            // (`vnni::windows_available`).
            unsafe { vnni.run_direct(&planes, win, &mut y.vnni_out(0, n)) };
            return Ok(());
        }
        self.run_fused(vnni, x, y, n)
    }

    /// [`QConv::run`] with a fused kernel of [`crate::arch::x86_64`] (VNNI or AVX2): a block
    /// of columns at a time, packed in the kernel's layout, products and requantisation in
    /// registers.
    ///
    /// The kernel must be one this CPU runs (it is built only where its `available()` says
    /// so).
    #[cfg(target_arch = "x86_64")]
    fn run_fused(
        &self,
        kernel: &impl crate::arch::x86_64::Fused,
        x: &Activations,
        y: OutputsMut,
        n: usize,
    ) -> TractResult<()> {
        let mut y = y;
        let block = kernel.block_columns(n);
        // Reused from block to block: the kernel's `pack` writes (or clears) every word, the
        // gathering every byte.
        let (mut packed, mut patches) = (Vec::new(), Vec::new());
        let mut n0 = 0;
        while n0 < n {
            let cols = block.min(n - n0);
            match (x, &self.patches) {
                // Bytes of a 1x1 convolution: the matrix rows are the input's, packed as they
                // are (the kernel reads `q`, unsigned).
                (Activations::Bytes(x), None) => {
                    let row = |r: usize| (r < self.k).then(|| &x[r * n + n0..r * n + n0 + cols]);
                    kernel.pack(row, 0, cols, &mut packed);
                }
                // Bytes of a `KxK` convolution: the block's patches gathered as bytes `q`,
                // then packed.
                (Activations::Bytes(x), Some(p)) => {
                    patches.resize(self.k * cols, 0);
                    self.gather_patches_fast(p, x, &mut patches, n0, cols);
                    let row = |r: usize| (r < self.k).then(|| &patches[r * cols..(r + 1) * cols]);
                    kernel.pack(row, 0, cols, &mut packed);
                }
                _ => {
                    let xq = self.quantise_block(x, n, n0, cols)?;
                    let xq = xq.try_as_plain_ram()?;
                    let xq = xq.as_slice::<i8>()?;
                    // SAFETY: the pointer and length are those of the live `&[i8]` `xq`,
                    // borrowed for the new slice's lifetime; i8 and u8 have the same size and
                    // alignment, and every bit pattern is a valid u8.
                    let xq: &[u8] =
                        unsafe { std::slice::from_raw_parts(xq.as_ptr() as *const u8, xq.len()) };
                    let row = |r: usize| (r < self.k).then(|| &xq[r * cols..(r + 1) * cols]);
                    // `q - 128` back to `q`.
                    kernel.pack(row, 0x80, cols, &mut packed);
                }
            }
            let mut out = y.vnni_out(n0, n);
            // SAFETY: the kernel's weights exist only where the CPU has its features (the
            // caller's contract).
            unsafe { kernel.run(&packed, cols, &mut out) };
            n0 += cols;
        }
        Ok(())
    }

    /// [`QConv::run`] with the NEON product of [`crate::arch::aarch64`]: per block of
    /// columns, the signed bytes transposed to one row per pixel, the exact sums, then the
    /// same requantisation as the portable path.
    fn run_neon(
        &self,
        neon: &crate::arch::aarch64::Weights,
        x: &Activations,
        y: OutputsMut,
        n: usize,
        block: usize,
    ) -> TractResult<()> {
        let m = self.m;
        let correction = self.correction.try_as_plain_ram()?;
        let correction = correction.as_slice::<i32>()?;
        let (mut rows, mut acc) = (Vec::new(), vec![0i32; m * block.min(n)]);
        let mut y = y;
        let mut n0 = 0;
        while n0 < n {
            let cols = block.min(n - n0);
            let xq = self.quantise_block(x, n, n0, cols)?;
            let xq = xq.try_as_plain_ram()?;
            crate::arch::aarch64::transpose_block(
                xq.as_slice::<i8>()?,
                self.k,
                cols,
                neon.row_len(),
                &mut rows,
            );
            crate::arch::aarch64::product(neon, &rows, cols, correction, &mut acc[..m * cols]);
            self.requantise_block(&acc[..m * cols], &mut y, n, n0, cols);
            n0 += cols;
        }
        Ok(())
    }

    /// Columns `n0..n0 + cols` of `x` as the signed bytes the kernel reads, `[k, cols]`.
    fn quantise_block(
        &self,
        x: &Activations,
        n: usize,
        n0: usize,
        cols: usize,
    ) -> TractResult<Tensor> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has the feature the function is compiled for.
            return unsafe { self.quantise_block_avx2(x, n, n0, cols) };
        }
        self.quantise_block_body(x, n, n0, cols)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn quantise_block_avx2(
        &self,
        x: &Activations,
        n: usize,
        n0: usize,
        cols: usize,
    ) -> TractResult<Tensor> {
        self.quantise_block_body(x, n, n0, cols)
    }

    #[inline(always)]
    fn quantise_block_body(
        &self,
        x: &Activations,
        n: usize,
        n0: usize,
        cols: usize,
    ) -> TractResult<Tensor> {
        // Zeros: filled through a `&mut [i8]`, which must not cover uninitialised memory.
        let mut xq = Tensor::zero::<i8>(&[self.k, cols])?;
        let mut ram = xq.try_as_plain_ram_mut()?;
        let dst = ram.as_slice_mut::<i8>()?;
        if let Some(p) = &self.patches {
            let Activations::Bytes(x) = x else {
                bail!("QConv: patches are gathered from bytes (see `QConv::run`)")
            };
            // SAFETY: the pointer and length are those of the live `&mut [i8]` `dst`, whose
            // borrow the new slice takes over for its lifetime; i8 and u8 have the same size
            // and alignment, and every bit pattern is valid for both.
            let dst: &mut [u8] =
                unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut u8, dst.len()) };
            // The signed byte `q - 128`.
            self.gather_patches(p, x, dst, n0, cols, 0x80);
            return Ok(xq);
        }
        match x {
            Activations::F32(x) => {
                let (inv, shift) = (self.inv_scale_x, self.shift_x as f32);
                for (row, src) in dst.chunks_exact_mut(cols).zip(x.chunks_exact(n)) {
                    for (d, &v) in row.iter_mut().zip(&src[n0..n0 + cols]) {
                        // Clamped, then rounded by the magic addition, which leaves the
                        // integer in the low bits of the sum: its low byte is the i8.
                        *d = (clamp(v * inv + shift, -128.0, 127.0) + ROUND_MAGIC).to_bits() as u8
                            as i8;
                    }
                }
            }
            // Bytes of a byte grid: the kernel's signed byte is `q - 128`.
            Activations::Bytes(x) => {
                for (row, src) in dst.chunks_exact_mut(cols).zip(x.chunks_exact(n)) {
                    for (d, &q) in row.iter_mut().zip(&src[n0..n0 + cols]) {
                        *d = (q ^ 0x80) as i8;
                    }
                }
            }
        }
        Ok(xq)
    }

    /// [`QConv::gather_patches`] of the bytes `q` (as the fused kernels read them), compiled
    /// for AVX2 where the CPU has it.
    #[cfg(target_arch = "x86_64")]
    fn gather_patches_fast(&self, p: &Patches, x: &[u8], dst: &mut [u8], n0: usize, cols: usize) {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has the feature the function is compiled for.
            return unsafe { self.gather_patches_avx2(p, x, dst, n0, cols) };
        }
        self.gather_patches(p, x, dst, n0, cols, 0)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn gather_patches_avx2(
        &self,
        p: &Patches,
        x: &[u8],
        dst: &mut [u8],
        n0: usize,
        cols: usize,
    ) {
        self.gather_patches(p, x, dst, n0, cols, 0)
    }

    /// `dst.len()` input bytes from `start`, `step` apart, each XORed with `flip` (0x80: the
    /// kernel's signed bytes `q - 128`; 0: the bytes `q`).
    #[inline(always)]
    fn flipped_bytes(x: &[u8], start: usize, step: usize, flip: u8, dst: &mut [u8]) {
        let n = dst.len();
        if step == 1 {
            for (d, &q) in dst.iter_mut().zip(&x[start..start + n]) {
                *d = q ^ flip;
            }
            return;
        }
        // Whole groups of `step` bytes vectorise; the last byte may start a partial one.
        let whole = ((x.len() - start) / step).min(n);
        for (d, g) in dst[..whole].iter_mut().zip(x[start..].chunks_exact(step)) {
            *d = g[0] ^ flip;
        }
        for (i, d) in dst.iter_mut().enumerate().skip(whole) {
            *d = x[start + i * step] ^ flip;
        }
    }

    /// f32 activations as bytes `u` whose signed byte `u ^ 0x80` is the one the kernel reads
    /// (the input quantiser's `q` on a byte grid): a convolution with a kernel larger than 1x1
    /// reads every input value up to `KH * KW` times, so its input is quantised once, here.
    fn unsigned_bytes(&self, x: &[f32]) -> Vec<u8> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has the feature the function is compiled for.
            return unsafe { self.unsigned_bytes_avx2(x) };
        }
        self.unsigned_bytes_body(x)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn unsigned_bytes_avx2(&self, x: &[f32]) -> Vec<u8> {
        self.unsigned_bytes_body(x)
    }

    #[inline(always)]
    fn unsigned_bytes_body(&self, x: &[f32]) -> Vec<u8> {
        let (inv, shift) = (self.inv_scale_x, self.shift_x as f32);
        // As in `quantise_block_body`, then 128 added to the rounded integer (exact).
        x.iter()
            .map(|&v| {
                ((clamp(v * inv + shift, -128.0, 127.0) + ROUND_MAGIC) + 128.0).to_bits() as u8
            })
            .collect()
    }

    /// Columns `n0..n0 + cols` of the patch matrix (im2col) as the input's bytes XORed with
    /// `flip` (0x80: the portable kernel's signed bytes), `[k, cols]`; padding reads as the
    /// byte of 0.0.
    #[inline(always)]
    fn gather_patches(
        &self,
        p: &Patches,
        x: &[u8],
        dst: &mut [u8],
        n0: usize,
        cols: usize,
        flip: u8,
    ) {
        let [h, w] = p.in_hw;
        let [kh, kw] = p.kernel;
        let [sy, sx] = p.stride;
        let [py, px] = p.pad;
        let ow = p.out_hw[1];
        let zero = (self.shift_x.clamp(-128, 127) as i8 as u8) ^ 0x80 ^ flip;
        for (r, row) in dst.chunks_exact_mut(cols).enumerate() {
            let (c, ky, kx) = (r / (kh * kw), (r / kw) % kh, r % kw);
            // The tap's offset in the input: dilated taps are spaced.
            let (ky, kx) = (ky * p.dilation[0], kx * p.dilation[1]);
            // Output columns whose input column `ox * sx + kx - px` is inside the row.
            let ox_lo = px.saturating_sub(kx).div_ceil(sx).min(ow);
            let ox_hi = if w + px > kx {
                ((w - 1 + px - kx) / sx + 1).min(ow)
            } else {
                0
            }
            .max(ox_lo);
            let mut j = 0;
            while j < cols {
                let (oy, ox0) = ((n0 + j) / ow, (n0 + j) % ow);
                let ox1 = ow.min(ox0 + cols - j);
                let seg = &mut row[j..j + (ox1 - ox0)];
                match (oy * sy + ky).checked_sub(py).filter(|&iy| iy < h) {
                    None => seg.fill(zero),
                    Some(iy) => {
                        // Padding on the left, the input, padding on the right. (Most
                        // segments have none: no call to fill nothing, which took a tenth of
                        // the gathering's instructions.)
                        let (a, b) = (ox_lo.clamp(ox0, ox1), ox_hi.clamp(ox0, ox1));
                        if a > ox0 {
                            seg[..a - ox0].fill(zero);
                        }
                        if b < ox1 {
                            seg[b - ox0..].fill(zero);
                        }
                        if a < b {
                            let start = (c * h + iy) * w + a * sx + kx - px;
                            Self::flipped_bytes(x, start, sx, flip, &mut seg[a - ox0..b - ox0]);
                        }
                    }
                }
                j += ox1 - ox0;
            }
        }
    }

    /// Per-channel scale, bias and the output quantise-dequantise pair, from the block's sums
    /// (`[m, cols]`) into columns `n0..n0 + cols` of `y` (`[m, n]`).
    fn requantise_block(&self, acc: &[i32], y: &mut OutputsMut, n: usize, n0: usize, cols: usize) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has the feature the function is compiled for.
            return unsafe { self.requantise_block_avx2(acc, y, n, n0, cols) };
        }
        self.requantise_block_body(acc, y, n, n0, cols)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn requantise_block_avx2(
        &self,
        acc: &[i32],
        y: &mut OutputsMut,
        n: usize,
        n0: usize,
        cols: usize,
    ) {
        self.requantise_block_body(acc, y, n, n0, cols)
    }

    /// The loops, compiled for the baseline and for AVX2 (the same arithmetic: no FMA).
    #[inline(always)]
    fn requantise_block_body(
        &self,
        acc: &[i32],
        y: &mut OutputsMut,
        n: usize,
        n0: usize,
        cols: usize,
    ) {
        let q = &self.out;
        let lo = (q.lo - q.zero_point) as f32;
        let hi = (q.hi - q.zero_point) as f32;
        let shift = (q.zero_point - q.dq_zero_point) as f32;
        let (inv, scale, z) = (q.inv_scale, q.dq_scale, q.zero_point as f32);
        for (o, sums) in acc.chunks_exact(cols).enumerate() {
            let (u, b) = (self.unit[o] * inv, self.bias[o] * inv);
            let at = o * n + n0..o * n + n0 + cols;
            match y {
                OutputsMut::F32(y) => {
                    for (d, &a) in y[at].iter_mut().zip(sums) {
                        let r = (clamp(a as f32 * u + b, lo, hi) + ROUND_MAGIC) - ROUND_MAGIC;
                        *d = (r + shift) * scale;
                    }
                }
                // The rounded value's low byte once the zero point is added: the byte.
                OutputsMut::Bytes(y) => {
                    for (d, &a) in y[at].iter_mut().zip(sums) {
                        *d = ((clamp(a as f32 * u + b, lo, hi) + ROUND_MAGIC) + z).to_bits() as u8;
                    }
                }
            }
        }
    }
}

/// What computes the int8 products on this CPU: AVX-512 VNNI (x86_64, windowed for the
/// `KxK` geometries it takes), the fused AVX2 kernel (x86_64 without VNNI), NEON (aarch64
/// without `sdot`), or tract-linalg's i32 kernels elsewhere (`sdot` on ARMv8.2, armv7, or any
/// CPU with `IAT_KERNELS=portable`).
pub fn kernel_family() -> &'static str {
    if crate::arch::x86_64::vnni::available() {
        "avx512-vnni"
    } else if crate::arch::x86_64::avx2::available() {
        "avx2 vpmaddwd"
    } else if crate::arch::aarch64::available() {
        "neon smull/sadalp"
    } else if crate::arch::aarch64::has_dotprod() {
        "tract-linalg i32 (sdot)"
    } else {
        "tract-linalg i32"
    }
}

/// An operator's input: f32 values on a quantiser's grid, or that quantiser's bytes.
enum Activations<'a> {
    F32(&'a [f32]),
    Bytes(&'a [u8]),
}

impl Activations<'_> {
    fn len(&self) -> usize {
        match self {
            Activations::F32(x) => x.len(),
            Activations::Bytes(x) => x.len(),
        }
    }
}

/// An operator's output, as f32 values or as bytes.
enum OutputsMut<'a> {
    F32(&'a mut [f32]),
    Bytes(&'a mut [u8]),
}

impl OutputsMut<'_> {
    /// The output from `n0` for the fused kernels, rows of `stride`.
    #[cfg(target_arch = "x86_64")]
    fn vnni_out(&mut self, n0: usize, stride: usize) -> crate::arch::x86_64::vnni::Out<'_> {
        match self {
            OutputsMut::Bytes(y) => crate::arch::x86_64::vnni::Out::Bytes {
                at: &mut y[n0..],
                stride,
            },
            OutputsMut::F32(y) => crate::arch::x86_64::vnni::Out::F32 {
                at: &mut y[n0..],
                stride,
            },
        }
    }
}

impl QConv {
    /// A convolution on bytes in and out for [`crate::bench`]: `c` channels in, `m` out, a
    /// `KH x KW` kernel over `[c, h, w]`, with this CPU's kernels (AVX-512, AVX2, NEON) unless
    /// `portable`; and an input.
    #[cfg(feature = "bench")]
    pub(crate) fn for_bench(
        c: usize,
        m: usize,
        in_hw: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 2],
        portable: bool,
    ) -> TractResult<(QConv, Tensor)> {
        let k = c * kernel[0] * kernel[1];
        let out = |i: usize| (in_hw[i] + 2 * pad[i] - kernel[i]) / stride[i] + 1;
        let out_hw = [out(0), out(1)];
        let w = crate::bench::weights(m * k, k, 0.002);
        let patches = (kernel != [1, 1]).then_some(Patches {
            channels: c,
            in_hw,
            kernel,
            stride,
            dilation: [1, 1],
            pad,
            out_hw,
        });
        let grid = FakeQuant::byte_grid;
        let Some(mut op) = QConv::new(
            FloatConv {
                weights: &w,
                bias: (0..m).map(|o| o as f32 * 0.01).collect(),
                m,
                k,
            },
            &grid(100, 0.02),
            grid(30, 0.05),
            tvec![m, out_hw[0], out_hw[1]],
            patches,
        )?
        else {
            bail!("QConv::for_bench: no integer kernel");
        };
        (op.bytes_in, op.bytes_out) = (true, true);
        if portable {
            (op.vnni, op.direct, op.avx2, op.neon) = (None, None, None, None);
        }
        let x: Vec<u8> = (0..c * in_hw[0] * in_hw[1])
            .map(|i| (i * 131 % 256) as u8)
            .collect();
        let x = Tensor::from_shape(&[c, in_hw[0], in_hw[1]], &x)?;
        Ok((op, x))
    }

    /// The kernel that computes the product here: what `model inspect` names.
    pub(crate) fn kernel_name(&self) -> String {
        if self.direct.is_some() {
            "avx512-vnni windowed".into()
        } else if self.vnni.is_some() {
            "avx512-vnni".into()
        } else if self.avx2.is_some() {
            "avx2 vpmaddwd".into()
        } else if self.neon.is_some() {
            "neon smull/sadalp".into()
        } else {
            format!("tract {}", self.mmm.name())
        }
    }

    /// Whether this operator reads its input on `grid` (it was built on that quantiser).
    fn read_grid_is(&self, grid: &FakeQuant) -> bool {
        self.inv_scale_x == 1.0 / grid.dq_scale
            && self.shift_x == grid.dq_zero_point - grid.lo - 128
    }
}

impl Op for QConv {
    fn name(&self) -> StaticName {
        "QConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{}x{} int8 weights, kernel {}",
            self.m,
            self.k,
            self.kernel_name()
        )])
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for QConv {
    crate::eval_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs[0].try_as_plain_ram()?;
        let x = if self.bytes_in {
            Activations::Bytes(x.as_slice::<u8>()?)
        } else {
            Activations::F32(x.as_slice::<f32>()?)
        };
        let (n, input_fits) = match &self.patches {
            Some(p) => (
                p.out_hw[0] * p.out_hw[1],
                x.len() == p.channels * p.in_hw[0] * p.in_hw[1],
            ),
            None => (x.len() / self.k.max(1), x.len() % self.k.max(1) == 0),
        };
        ensure!(
            input_fits && self.out_shape.iter().product::<usize>() == self.m * n,
            "QConv: input of {} values for {} channels and an output of {:?}",
            x.len(),
            self.k,
            self.out_shape
        );
        let mut y = graph::zeroed_output(self.bytes_out, &self.out_shape)?;
        {
            let mut ram = y.try_as_plain_ram_mut()?;
            let out = if self.bytes_out {
                OutputsMut::Bytes(ram.as_slice_mut::<u8>()?)
            } else {
                OutputsMut::F32(ram.as_slice_mut::<f32>()?)
            };
            self.run(x, out)?;
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for QConv {
    tract_onnx::tract_core::as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == graph::bytes_or_f32(self.bytes_in));
        Ok(tvec!(
            graph::bytes_or_f32(self.bytes_out).fact(&*self.out_shape)
        ))
    }
}

/// Lets activations travel as bytes between the agent's int8 operators: where a
/// [`QConv`], a [`Depthwise`] or a [`QAdd`] with a quantised output on a byte grid is read
/// only by operators that can read bytes of that grid (a `QConv` built on it, a `Depthwise`,
/// a `QAdd`),
/// the tensor between them becomes the quantiser's bytes instead of their f32 values: a
/// quarter of the memory traffic, and the same numbers (each reader turns a byte into the
/// value the f32 path would have carried). Returns how many edges were changed.
pub fn byte_edges(model: &mut TypedModel) -> TractResult<usize> {
    let outputs = model.output_outlets()?.to_vec();
    let mut changed = 0;
    for id in 0..model.nodes().len() {
        let node = model.node(id);
        let grid = match (
            node.op_as::<QConv>(),
            node.op_as::<Depthwise>(),
            node.op_as::<QAdd>(),
        ) {
            (Some(q), _, _) => Some(q.out.clone()),
            (_, Some(d), _) => d.out_q.clone(),
            (_, _, Some(a)) => Some(a.out.clone()),
            _ => None,
        };
        let Some(grid) = grid.filter(FakeQuant::is_byte_grid) else {
            continue;
        };
        // (An operator that replaced tract's quantiser to bytes writes bytes already.)
        if model.outlet_fact(OutletId::new(id, 0))?.datum_type != f32::datum_type() {
            continue;
        }
        let [output] = &*node.outputs else { continue };
        let readers = &output.successors;
        if readers.is_empty() || outputs.contains(&OutletId::new(id, 0)) {
            continue;
        }
        let all_read_bytes = readers.iter().all(|r| {
            let reader = model.node(r.node);
            (r.slot == 0
                && (reader.op_as::<Depthwise>().is_some()
                    || reader
                        .op_as::<QConv>()
                        .is_some_and(|q| q.input_is_byte_grid && q.read_grid_is(&grid))))
                || reader.op_as::<QAdd>().is_some()
        });
        if !all_read_bytes {
            continue;
        }
        let readers: Vec<InletId> = readers.to_vec();
        for r in readers {
            let node = model.node_mut(r.node);
            if let Some(q) = node.op_as_mut::<QConv>() {
                q.bytes_in = true;
            } else if let Some(d) = node.op_as_mut::<Depthwise>() {
                d.bytes_in = Some(grid.clone());
            } else if let Some(a) = node.op_as_mut::<QAdd>() {
                a.bytes_in[r.slot] = Some(grid.clone());
            }
        }
        let node = model.node_mut(id);
        if let Some(q) = node.op_as_mut::<QConv>() {
            q.bytes_out = true;
        } else if let Some(d) = node.op_as_mut::<Depthwise>() {
            d.bytes_out = true;
        } else if let Some(a) = node.op_as_mut::<QAdd>() {
            a.bytes_out = true;
        }
        let fact = model.outlet_fact(OutletId::new(id, 0))?.clone();
        let mut fact = u8::datum_type().fact(fact.shape.clone());
        fact.konst = None;
        model.set_outlet_fact(OutletId::new(id, 0), fact)?;
        changed += 1;
    }
    Ok(changed)
}

/// Replaces every quantised convolution with a [`QConv`]: a 1x1 one (`EinSum -> Add`) or a
/// `KxK` one (`Conv`, group 1) whose input is on a byte quantiser's grid and whose result is
/// read only by a quantiser. Returns how many were replaced. Runs after
/// [`crate::qdq::fuse_pairs`], before tract's code generation.
///
/// Each side takes two forms in tract's decluttered graph of a QDQ model. Where an activation
/// has a `QuantizeLinear -> DequantizeLinear` pair, the pair is a `FakeQuant` (f32 values on a
/// grid). Where the model quantises an element-wise activation (`DQ -> LeakyRelu -> Q`, and any
/// other chain of unary operators between a dequantiser and a quantiser), tract folds the
/// three into a `LookupTable` over the bytes, so that the convolution reads a
/// `DequantizeLinear` of the table's bytes and writes into a bare `QuantizeLinear` (to `u8`)
/// that feeds the next table: `LookupTable -> DequantizeLinear -> Conv -> QuantizeLinear ->
/// LookupTable`. Then the [`QConv`] reads the table's bytes and writes the quantiser's bytes
/// (NanoDet's 28 `KxK` convolutions with LeakyReLU activations), as onnxruntime runs the same
/// model (`QLinearConv`, then `QLinearLeakyRelu`'s table).
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    graph::rewrite_each(model, |model, id| {
        Ok(chain_at(model, id)?.or(conv_at(model, id)?))
    })
}

/// The grid an f32 activation is on: the output pair of a `FakeQuant` or a [`QConv`].
fn grid_of(node: &TypedNode) -> Option<&FakeQuant> {
    node.op_as::<FakeQuant>()
        .or_else(|| node.op_as::<QConv>().map(|q| &q.out))
}

/// What a quantised convolution reads: its f32 input `x` on the grid of the `FakeQuant` or
/// [`QConv`] that wrote it, or, when `x` is tract's dequantiser of a byte tensor, those bytes.
/// The grid, the wire to read and whether it carries bytes.
fn quantised_input(
    model: &TypedModel,
    x: OutletId,
) -> TractResult<Option<(FakeQuant, OutletId, bool)>> {
    let node = model.node(x.node);
    if let Some(grid) = grid_of(node) {
        return Ok(Some((grid.clone(), x, false)));
    }
    Ok(crate::qdq::byte_dequantiser(model, node)?.map(|(grid, bytes)| (grid, bytes, true)))
}

/// What a quantised convolution writes, when `node` is its result's only reader: a
/// `FakeQuant` (f32 values on its grid) or tract's quantiser to `u8` (its bytes). The output
/// pair and whether it writes bytes.
fn quantised_output(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Option<(FakeQuant, bool)>> {
    if let Some(q) = node.op_as::<FakeQuant>() {
        return Ok(Some((q.clone(), false)));
    }
    Ok(crate::qdq::byte_quantiser(model, node)?.map(|q| (q, true)))
}

/// The patch replacing a float `Conv` (group 1, see [`graph::conv_at`]) read only by a
/// `FakeQuant`, with its input on a quantiser's grid: a quantised `KH x KW` convolution.
fn conv_at(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let node = model.node(id);
    let Some(conv) = graph::conv_at(model, node)? else {
        return Ok(None);
    };
    let (m, c) = (conv.out_channels, conv.in_channels);
    let k = c * conv.kernel[0] * conv.kernel[1];
    if conv.group != 1 || conv.weights.len() != m * k || conv.bias.len() != m {
        return Ok(None);
    }
    let patches = Patches {
        channels: c,
        in_hw: conv.in_hw,
        kernel: conv.kernel,
        stride: conv.stride,
        dilation: conv.dilation,
        pad: conv.pad,
        out_hw: conv.out_hw,
    };
    let float = (&*conv.weights, &*conv.bias, m, k);
    quantised_patch(model, node, conv.x, float, Some(patches))
}

/// The patch replacing the chain whose `EinSum` is node `id`, if it is one.
fn chain_at(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let Some(conv) = graph::conv1x1_at(model, model.node(id))? else {
        return Ok(None);
    };
    let float = (&*conv.weights, &*conv.bias, conv.m, conv.k);
    quantised_patch(model, conv.add, conv.x, float, None)
}

/// The [`QConv`] for a float convolution (weights `[m, k]`, bias) whose result is `last`,
/// when its input `x` is on a byte quantiser's grid ([`quantised_input`]) and `last` is read
/// only by a quantiser ([`quantised_output`]).
fn quantised_patch(
    model: &TypedModel,
    last: &TypedNode,
    x: OutletId,
    (weights, bias, m, k): (&Tensor, &Tensor, usize, usize),
    patches: Option<Patches>,
) -> TractResult<Option<TypedModelPatch>> {
    let Some((input_q, x, bytes_in)) = quantised_input(model, x)? else {
        return Ok(None);
    };
    let Some(out_node) = graph::sole_successor(model, last).map(|n| model.node(n)) else {
        return Ok(None);
    };
    let Some((out_q, bytes_out)) = quantised_output(model, out_node)? else {
        return Ok(None);
    };
    let Some(out_shape) = graph::concrete_shape(model, out_node.id.into())? else {
        return Ok(None);
    };
    let weights = weights.try_as_plain_ram()?;
    let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    let float = FloatConv {
        weights: weights.as_slice::<f32>()?,
        bias,
        m,
        k,
    };
    let Some(mut op) = QConv::new(float, &input_q, out_q, out_shape, patches)? else {
        return Ok(None);
    };
    (op.bytes_in, op.bytes_out) = (bytes_in, bytes_out);
    Ok(Some(TypedModelPatch::replace_single_op(
        model,
        out_node,
        &[x],
        op,
    )?))
}

#[cfg(test)]
mod graphs;
#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::testing::{byte_grid as grid, ints};

    /// Runs `op` on f32 values and on the same values as bytes (bytes out), checks that both
    /// give the same values and that the portable path agrees; the f32 outputs.
    fn run_both(op: &QConv, x: &[f32], x_bytes: &[u8], output: &FakeQuant) -> Vec<f32> {
        let len = op.m * (x.len() / op.k);
        let len = match &op.patches {
            Some(p) => op.m * p.out_hw[0] * p.out_hw[1],
            None => len,
        };
        let mut y = vec![f32::NAN; len];
        op.run(Activations::F32(x), OutputsMut::F32(&mut y))
            .unwrap();
        let mut y_bytes = vec![0u8; len];
        op.run(Activations::Bytes(x_bytes), OutputsMut::Bytes(&mut y_bytes))
            .unwrap();
        let mut from_bytes = vec![0f32; len];
        output.dequantise_bytes(&y_bytes, &mut from_bytes);
        assert_eq!(from_bytes, y, "bytes in and out give the f32 path's values");
        portable_path_agrees(op, x, x_bytes, &y, &y_bytes);
        y
    }

    /// Where this CPU runs a fused kernel (VNNI or AVX2), the portable path (tract-linalg's
    /// kernel and the separate requantisation) gives the same bits, from f32 and from bytes.
    fn portable_path_agrees(op: &QConv, x: &[f32], x_bytes: &[u8], y: &[f32], y_bytes: &[u8]) {
        if op.vnni.is_none() && op.avx2.is_none() {
            // (Then the CPU lacks a feature: say so, and fail where it is required.)
            assert!(!crate::graph::testing::cpu_has(
                "qconv::tests (fused kernel against the portable path)",
                crate::graph::testing::AVX2,
            ));
            return;
        }
        let portable = QConv {
            vnni: None,
            avx2: None,
            neon: None,
            ..op.clone()
        };
        let mut y_portable = vec![f32::NAN; y.len()];
        portable
            .run(Activations::F32(x), OutputsMut::F32(&mut y_portable))
            .unwrap();
        assert_eq!(
            y_portable, y,
            "the fused kernel gives the portable path's values"
        );
        let mut bytes_portable = vec![0u8; y.len()];
        portable
            .run(
                Activations::Bytes(x_bytes),
                OutputsMut::Bytes(&mut bytes_portable),
            )
            .unwrap();
        assert_eq!(bytes_portable, y_bytes);
    }

    #[test]
    fn integer_product_matches_the_float_definition() {
        // Sizes off the kernels' tiles, an odd `k`, and more columns than one block of every
        // kernel (the fused AVX2 one: 984 and 516).
        let (m, k, n) = (37, 65, 1500);
        let input = grid(131, 0.05);
        let output = grid(7, 0.2);
        let s_w: Vec<f32> = (0..m).map(|o| 0.001 * (o + 1) as f32).collect();
        let w_int = ints(m * k, 3, -127, 127);
        // Each row reaches +-127 somewhere, as a symmetric MinMax quantiser makes it.
        let w: Vec<f32> = (0..m * k)
            .map(|i| {
                let q = if i % k == 0 { 127 } else { w_int[i] };
                q as f32 * s_w[i / k]
            })
            .collect();
        let bias: Vec<f32> = (0..m).map(|o| 0.3 * o as f32 - 5.0).collect();
        let x: Vec<f32> = ints(k * n, 5, 0, 255)
            .into_iter()
            .map(|q| (q - 131) as f32 * 0.05)
            .collect();
        let op = QConv::new(
            FloatConv {
                weights: &w,
                bias: bias.clone(),
                m,
                k,
            },
            &input,
            output.clone(),
            tvec![m, n],
            None,
        )
        .unwrap()
        .expect("weights on the int8 grid are taken");
        // The same product on bytes: the input quantiser's bytes in, the output's bytes out.
        let x_bytes: Vec<u8> = x
            .iter()
            .map(|&v| (v / 0.05).round() as i32 + 131)
            .map(|q| q as u8)
            .collect();
        let y = run_both(&op, &x, &x_bytes, &output);
        let mut ties = 0;
        for o in 0..m {
            for j in 0..n {
                let mut acc = bias[o] as f64;
                for i in 0..k {
                    acc += w[o * k + i] as f64 * x[i * n + j] as f64;
                }
                let mut want = [acc as f32];
                output.apply(&mut want);
                let got = y[o * n + j];
                if got != want[0] {
                    // Only where the exact value is within rounding of a tie.
                    assert!(
                        (got - want[0]).abs() <= 0.2 + 1e-6,
                        "row {o} column {j}: got {got}, the definition gives {}",
                        want[0]
                    );
                    ties += 1;
                }
            }
        }
        assert!(ties * 1000 < m * n, "{ties} of {} outputs differ", m * n);
    }

    #[test]
    fn patches_match_the_convolution_definition() {
        // Several strides and paddings, a kernel wider than tall (which the windowed kernel
        // does not take), odd sizes, and rows of more than 64 outputs (whole tiles of the
        // windowed kernel).
        for (stride, pad, kernel, in_hw, dilation) in [
            ([1, 1], [1, 1], [3, 3], [11, 13], [1, 1]),
            ([2, 2], [1, 1], [3, 3], [11, 13], [1, 1]),
            ([2, 1], [0, 2], [3, 5], [11, 13], [1, 1]),
            ([3, 3], [2, 0], [5, 1], [11, 13], [1, 1]),
            ([1, 1], [1, 1], [3, 3], [5, 83], [1, 1]),
            ([2, 2], [0, 1], [2, 4], [9, 150], [1, 1]),
            // Dilated: spaced taps (an audio CNN's context), padding smaller than the reach.
            ([1, 1], [2, 2], [3, 3], [11, 13], [2, 2]),
            ([2, 1], [1, 3], [3, 2], [17, 19], [3, 4]),
        ] {
            let (c, m) = (3, 5);
            let reach = |i: usize| (kernel[i] - 1) * dilation[i] + 1;
            let out = |i: usize| (in_hw[i] + 2 * pad[i] - reach(i)) / stride[i] + 1;
            let out_hw = [out(0), out(1)];
            let k = c * kernel[0] * kernel[1];
            let n = out_hw[0] * out_hw[1];
            let (input, output) = (grid(20, 0.03), grid(90, 0.07));
            let w: Vec<f32> = (0..m * k)
                .map(|i| {
                    let q = if i % k == 0 {
                        -127
                    } else {
                        ints(1, i as u32 + 9, -127, 127)[0]
                    };
                    q as f32 * 0.002
                })
                .collect();
            let bias = vec![0.25f32; m];
            let x_bytes: Vec<u8> = ints(c * in_hw[0] * in_hw[1], 17, 0, 255)
                .into_iter()
                .map(|q| q as u8)
                .collect();
            let mut x = vec![0f32; x_bytes.len()];
            input.dequantise_bytes(&x_bytes, &mut x);
            let patches = Patches {
                channels: c,
                in_hw,
                kernel,
                stride,
                dilation,
                pad,
                out_hw,
            };
            let op = QConv::new(
                FloatConv {
                    weights: &w,
                    bias: bias.clone(),
                    m,
                    k,
                },
                &input,
                output.clone(),
                tvec![m, n],
                Some(patches),
            )
            .unwrap()
            .unwrap();
            let y = run_both(&op, &x, &x_bytes, &output);
            for o in 0..m {
                for oy in 0..out_hw[0] {
                    for ox in 0..out_hw[1] {
                        let mut acc = bias[o] as f64;
                        for ci in 0..c {
                            for ky in 0..kernel[0] {
                                for kx in 0..kernel[1] {
                                    let iy = (oy * stride[0] + ky * dilation[0]) as isize
                                        - pad[0] as isize;
                                    let ix = (ox * stride[1] + kx * dilation[1]) as isize
                                        - pad[1] as isize;
                                    if iy < 0
                                        || ix < 0
                                        || iy >= in_hw[0] as isize
                                        || ix >= in_hw[1] as isize
                                    {
                                        continue;
                                    }
                                    let wi = ((o * c + ci) * kernel[0] + ky) * kernel[1] + kx;
                                    let xi = (ci * in_hw[0] + iy as usize) * in_hw[1] + ix as usize;
                                    acc += w[wi] as f64 * x[xi] as f64;
                                }
                            }
                        }
                        let mut want = [acc as f32];
                        output.apply(&mut want);
                        let got = y[(o * out_hw[0] + oy) * out_hw[1] + ox];
                        assert!(
                            (got - want[0]).abs() <= 0.07 + 1e-6,
                            "stride {stride:?} pad {pad:?} channel {o} at ({oy}, {ox}): got {got}, the definition gives {}",
                            want[0]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn weights_off_the_int8_grid_stay_in_float() {
        let w = [0.5f32, 0.25, 0.1234567, -0.5];
        let op = QConv::new(
            FloatConv {
                weights: &w,
                bias: vec![0.0, 0.0],
                m: 2,
                k: 2,
            },
            &grid(0, 0.1),
            grid(0, 0.1),
            tvec![2, 1],
            None,
        )
        .unwrap();
        assert!(op.is_none());
    }
}
