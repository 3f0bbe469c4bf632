//! Float 1x1 convolutions with their bias and ReLU in one pass.
//!
//! tract 0.23.9 runs a float 1x1 convolution as a packed matrix product: the activations are
//! copied into the kernel's panels on every run (`OptMatMulPack`), the product written, and the
//! ReLU that follows run as one more pass (`OptMaxByScalar`). On the float CenterFace those
//! three took two thirds of the run (20.3 of 31.0 ms, `model profile`). Yet a 1x1 convolution of a `[C, H, W]` image needs no packing:
//! each input channel is already a contiguous row, so a tile of outputs (a few channels by a
//! few vectors of pixels) is a sum of rows scaled by broadcast weights. [`Pointwise`] does
//! that, with the bias as the sums' starting value and the ReLU applied before the store:
//! explicit AVX-512 registers, or the compiler's vectors for AVX2 + FMA (chosen at run time)
//! and for the baseline (NEON on aarch64). [`Product`], the tiles themselves, also runs the
//! float `KxK` convolutions of [`crate::direct`].

use std::sync::Arc;

use tract_onnx::tract_core::internal::*;

use crate::graph;

/// What follows the sums before the store: a leaky ReLU (`x < 0` scaled by `leaky`), then a
/// lower bound (`max(x, floor)`; a ReLU is a floor of 0).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Activation {
    pub leaky: Option<f32>,
    pub floor: Option<f32>,
}

impl Activation {
    #[inline(always)]
    fn apply(&self, a: f32) -> f32 {
        let a = match self.leaky {
            Some(alpha) if a < 0.0 => a * alpha,
            _ => a,
        };
        match self.floor {
            Some(f) if a < f => f,
            _ => a,
        }
    }
}

/// `y = act(W x + b)` where row `kk` of `x` starts at `rows[kk]` and holds `n` values: for a
/// 1x1 convolution the input channels, for a `KxK` one ([`crate::direct`]) the input
/// channels shifted by each tap.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Product {
    /// Output channels and rows: `W` is `[m, k]`.
    pub m: usize,
    pub k: usize,
    pub weights: Arc<Vec<f32>>,
    pub bias: Arc<Vec<f32>>,
    pub act: Activation,
    /// The weights of every whole tile of `tile` output channels, row by row of `x`:
    /// `[m / tile][k][tile]`, so that a tile reads its weights in order.
    packed: Arc<Vec<f32>>,
    tile: usize,
}

impl Product {
    /// Output channels per tile on this CPU (the `R` of [`Product::run_body`]).
    fn tile_rows() -> usize {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return 8;
        }
        4
    }

    pub fn new(m: usize, k: usize, weights: Vec<f32>, bias: Vec<f32>, act: Activation) -> Product {
        Self::with_tiles(m, k, weights, bias, act, Self::tile_rows())
    }

    /// [`Product::new`] with the weights packed for tiles of `r` channels.
    fn with_tiles(
        m: usize,
        k: usize,
        weights: Vec<f32>,
        bias: Vec<f32>,
        act: Activation,
        r: usize,
    ) -> Product {
        let mut packed = Vec::with_capacity(m / r * r * k);
        for tile in 0..m / r {
            for kk in 0..k {
                packed.extend((0..r).map(|i| weights[(tile * r + i) * k + kk]));
            }
        }
        Product {
            m,
            k,
            weights: Arc::new(weights),
            bias: Arc::new(bias),
            act,
            packed: Arc::new(packed),
            tile: r,
        }
    }

    /// `y` is `[m, n]`; every row of `x` must have `n` values from its start.
    pub fn run(&self, x: &[f32], rows: &[usize], n: usize, y: &mut [f32]) {
        // Checked arithmetic: a wrapped sum or product would let a short `x` or `y` pass.
        assert!(rows.len() == self.k && self.m.checked_mul(n).is_some_and(|l| y.len() >= l));
        assert!(
            n == 0
                || rows
                    .iter()
                    .all(|&r| r.checked_add(n).is_some_and(|end| end <= x.len()))
        );
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has the features the function is compiled for.
                return unsafe { self.run_avx512(x, rows, n, y) };
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: as above.
                return unsafe { self.run_avx2(x, rows, n, y) };
            }
        }
        // aarch64 always has FMA (and 32 vector registers for the 4 x 2 x 4 tile).
        self.run_body::<4, 2, 4, { cfg!(target_arch = "aarch64") }>(x, rows, n, y)
    }

    /// The tiles of [`Product::run_body`] written with AVX-512 registers (the generic tile's
    /// accumulators spilled to the stack at this size).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn run_avx512(&self, x: &[f32], rows: &[usize], n: usize, y: &mut [f32]) {
        const R: usize = 8;
        let m = self.m;
        let mut j = 0;
        while j + 16 <= n {
            let wide = j + 48 <= n;
            let mut o = 0;
            while o + R <= m {
                // SAFETY: `tile_avx512` needs AVX-512 F, which this function is compiled for
                // and its caller checked; `run` asserted that every row of `x` has `n` values
                // from its start and that `y` holds `m * n`; here `o + R <= m` and the tile's
                // columns end at `j + 16 * P <= n` (`P = 3` only when `j + 48 <= n`).
                unsafe {
                    if wide {
                        self.tile_avx512::<R, 3>(x, rows, y, n, o, j)
                    } else {
                        self.tile_avx512::<R, 1>(x, rows, y, n, o, j)
                    }
                }
                o += R;
            }
            while o < m {
                // SAFETY: as above, with one output channel `o < m`.
                unsafe {
                    if wide {
                        self.tile_avx512::<1, 3>(x, rows, y, n, o, j)
                    } else {
                        self.tile_avx512::<1, 1>(x, rows, y, n, o, j)
                    }
                }
                o += 1;
            }
            j += if wide { 48 } else { 16 };
        }
        self.columns_dot::<2, 6, 8, true>(x, rows, n, y, j);
    }

    /// Outputs `o..o + R` at pixels `j..j + 16 * P`.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F; rows and outputs as [`Product::run`] checks them, with
    /// `j + 16 * P <= n`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile_avx512<const R: usize, const P: usize>(
        &self,
        x: &[f32],
        rows: &[usize],
        y: &mut [f32],
        n: usize,
        o: usize,
        j: usize,
    ) {
        use std::arch::x86_64::*;
        let weights = self.tile_weights::<R>(o);
        // SAFETY: the CPU has AVX-512 F (the caller's contract). Each load reads 16 values
        // from `start + j + 16 * p`, ending by `start + j + 16 * P <= start + n <= x.len()`
        // (`run` checked every row). Each store writes 16 values from `(o + r) * n + j + 16 *
        // p`, ending by `(o + r + 1) * n <= m * n <= y.len()` since `o + r < m`.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); P]; R];
            for (r, acc) in acc.iter_mut().enumerate() {
                *acc = [_mm512_set1_ps(self.bias[o + r]); P];
            }
            for (&start, w) in rows.iter().zip(weights.chunks_exact(R)) {
                let row = x.as_ptr().add(start + j);
                let mut a = [_mm512_setzero_ps(); P];
                for (p, a) in a.iter_mut().enumerate() {
                    *a = _mm512_loadu_ps(row.add(16 * p));
                }
                for (acc, &w) in acc.iter_mut().zip(w) {
                    let w = _mm512_set1_ps(w);
                    for p in 0..P {
                        acc[p] = _mm512_fmadd_ps(a[p], w, acc[p]);
                    }
                }
            }
            let zero = _mm512_setzero_ps();
            for (r, acc) in acc.iter().enumerate() {
                let out = y.as_mut_ptr().add((o + r) * n + j);
                for (p, &a) in acc.iter().enumerate() {
                    let a = match self.act.leaky {
                        Some(alpha) => {
                            let negative = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, zero);
                            _mm512_mask_mul_ps(a, negative, a, _mm512_set1_ps(alpha))
                        }
                        None => a,
                    };
                    let a = match self.act.floor {
                        Some(f) => _mm512_max_ps(a, _mm512_set1_ps(f)),
                        None => a,
                    };
                    _mm512_storeu_ps(out.add(16 * p), a);
                }
            }
        }
    }

    /// Columns `from..n`, fewer than one vector of pixels: each output is a dot product along
    /// `k` of its channel's weights with its column, the columns first gathered contiguous.
    /// Tiles of `R` channels by up to `C` columns, vectors of `L` along `k`: a small image (a
    /// squeeze-and-excitation block's 1x1, a 7x7 or 3x2 map) runs in vectors, not one
    /// multiply at a time.
    #[inline(always)]
    fn columns_dot<const R: usize, const C: usize, const L: usize, const FMA: bool>(
        &self,
        x: &[f32],
        rows: &[usize],
        n: usize,
        y: &mut [f32],
        from: usize,
    ) {
        if from >= n {
            return;
        }
        let (k, t) = (self.k, n - from);
        let mut cols = vec![0f32; t * k];
        for (kk, &start) in rows.iter().enumerate() {
            for (c, &v) in x[start + from..start + n].iter().enumerate() {
                cols[c * k + kk] = v;
            }
        }
        // Channels outside, columns inside: a tile's weights are read from memory once and
        // stay in the cache for every column.
        let mut o = 0;
        while o + R <= self.m {
            self.dot_columns::<R, C, L, FMA>(&cols, t, n, y, from, o);
            o += R;
        }
        while o < self.m {
            self.dot_columns::<1, C, L, FMA>(&cols, t, n, y, from, o);
            o += 1;
        }
    }

    /// Outputs `o..o + R` at every gathered column (`t` of them, pixels `from..`).
    #[inline(always)]
    fn dot_columns<const R: usize, const C: usize, const L: usize, const FMA: bool>(
        &self,
        cols: &[f32],
        t: usize,
        n: usize,
        y: &mut [f32],
        from: usize,
        o: usize,
    ) {
        let mut c = 0;
        while c + C <= t {
            self.dot_tile::<R, C, L, FMA>(cols, n, y, from, o, c);
            c += C;
        }
        while c < t {
            self.dot_tile::<R, 1, L, FMA>(cols, n, y, from, o, c);
            c += 1;
        }
    }

    /// Outputs `o..o + R` at gathered columns `c..c + C`.
    #[inline(always)]
    fn dot_tile<const R: usize, const C: usize, const L: usize, const FMA: bool>(
        &self,
        cols: &[f32],
        n: usize,
        y: &mut [f32],
        from: usize,
        o: usize,
        c: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        if FMA
            && L == 8
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA; the tile's bounds are the same as here
            // (`cols` holds `k` values per gathered column, outputs `o + R <= m`).
            return unsafe { self.dot_tile_avx2::<R, C>(cols, n, y, from, o, c) };
        }
        let k = self.k;
        let w: [&[f32]; R] = std::array::from_fn(|r| &self.weights[(o + r) * k..(o + r + 1) * k]);
        let xs: [&[f32]; C] = std::array::from_fn(|i| &cols[(c + i) * k..(c + i + 1) * k]);
        let mut acc = [[[0f32; L]; C]; R];
        let whole = k / L * L;
        let mut kk = 0;
        while kk < whole {
            let xv: [&[f32; L]; C] =
                std::array::from_fn(|i| xs[i][kk..kk + L].try_into().expect("L values"));
            for (acc, w) in acc.iter_mut().zip(&w) {
                let wv: &[f32; L] = w[kk..kk + L].try_into().expect("L values");
                for (acc, xv) in acc.iter_mut().zip(&xv) {
                    for l in 0..L {
                        acc[l] = if FMA {
                            wv[l].mul_add(xv[l], acc[l])
                        } else {
                            acc[l] + wv[l] * xv[l]
                        };
                    }
                }
            }
            kk += L;
        }
        for (r, acc) in acc.iter().enumerate() {
            for (i, acc) in acc.iter().enumerate() {
                let mut sum = self.bias[o + r] + acc.iter().sum::<f32>();
                for (&wv, &xv) in w[r][whole..].iter().zip(&xs[i][whole..]) {
                    sum = if FMA {
                        wv.mul_add(xv, sum)
                    } else {
                        sum + wv * xv
                    };
                }
                y[(o + r) * n + from + c + i] = self.act.apply(sum);
            }
        }
    }

    /// [`Product::dot_tile`] in AVX2 registers: `R x C` accumulators of 8 lanes along `k`.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `o + R <= m`, `cols` holds `c + C` gathered columns
    /// of `k` values, `y` holds `m * n` and `from + c + C <= n`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn dot_tile_avx2<const R: usize, const C: usize>(
        &self,
        cols: &[f32],
        n: usize,
        y: &mut [f32],
        from: usize,
        o: usize,
        c: usize,
    ) {
        use std::arch::x86_64::*;
        let k = self.k;
        let w: [&[f32]; R] = std::array::from_fn(|r| &self.weights[(o + r) * k..(o + r + 1) * k]);
        let xs: [&[f32]; C] = std::array::from_fn(|i| &cols[(c + i) * k..(c + i + 1) * k]);
        let whole = k / 8 * 8;
        // SAFETY: AVX2 and FMA are the caller's contract; every load reads 8 values from
        // `kk < whole <= k` in a slice of `k` values, so `kk + 8 <= k`.
        let sums: [[f32; C]; R] = unsafe {
            let wp: [*const f32; R] = std::array::from_fn(|r| w[r].as_ptr());
            let xp: [*const f32; C] = std::array::from_fn(|i| xs[i].as_ptr());
            let mut acc = [[_mm256_setzero_ps(); C]; R];
            let mut kk = 0;
            while kk < whole {
                let xv: [__m256; C] = std::array::from_fn(|i| _mm256_loadu_ps(xp[i].add(kk)));
                #[allow(clippy::needless_range_loop)] // constant bounds: unrolled, in registers
                for r in 0..R {
                    let wv = _mm256_loadu_ps(wp[r].add(kk));
                    for i in 0..C {
                        acc[r][i] = _mm256_fmadd_ps(wv, xv[i], acc[r][i]);
                    }
                }
                kk += 8;
            }
            acc.map(|acc| {
                acc.map(|a| {
                    let quad = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
                    let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
                    let one = _mm_add_ss(pair, _mm_shuffle_ps::<1>(pair, pair));
                    _mm_cvtss_f32(one)
                })
            })
        };
        for (r, sums) in sums.iter().enumerate() {
            for (i, &s) in sums.iter().enumerate() {
                let mut sum = self.bias[o + r] + s;
                for (&wv, &xv) in w[r][whole..].iter().zip(&xs[i][whole..]) {
                    sum = wv.mul_add(xv, sum);
                }
                y[(o + r) * n + from + c + i] = self.act.apply(sum);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, x: &[f32], rows: &[usize], n: usize, y: &mut [f32]) {
        self.run_body::<4, 2, 8, true>(x, rows, n, y)
    }

    /// Tiles of `R` channels by `P` vectors of `L` pixels; the pixels past the last whole
    /// tile column and the channels past the last whole tile row go one at a time.
    #[inline(always)]
    fn run_body<const R: usize, const P: usize, const L: usize, const FMA: bool>(
        &self,
        x: &[f32],
        rows: &[usize],
        n: usize,
        y: &mut [f32],
    ) {
        let m = self.m;
        // Tiles of P vectors, then of one vector, then single pixels.
        let mut j = 0;
        while j + P * L <= n {
            let mut o = 0;
            while o + R <= m {
                self.tile::<R, P, L, FMA>(x, rows, y, n, o, j);
                o += R;
            }
            while o < m {
                self.tile::<1, P, L, FMA>(x, rows, y, n, o, j);
                o += 1;
            }
            j += P * L;
        }
        while j + L <= n {
            let mut o = 0;
            while o + R <= m {
                self.tile::<R, 1, L, FMA>(x, rows, y, n, o, j);
                o += R;
            }
            while o < m {
                self.tile::<1, 1, L, FMA>(x, rows, y, n, o, j);
                o += 1;
            }
            j += L;
        }
        self.columns_dot::<2, 4, L, FMA>(x, rows, n, y, j);
    }

    /// The weights of output channels `o..o + R`, `R` per row of `x`: a single channel's are
    /// its row, a whole tile's are packed.
    #[inline(always)]
    fn tile_weights<const R: usize>(&self, o: usize) -> &[f32] {
        let k = self.k;
        if R == 1 {
            &self.weights[o * k..(o + 1) * k]
        } else {
            assert!(R == self.tile && o.is_multiple_of(R));
            &self.packed[o * k..(o + R) * k]
        }
    }

    /// Outputs `o..o + R` at pixels `j..j + P * L`.
    #[inline(always)]
    fn tile<const R: usize, const P: usize, const L: usize, const FMA: bool>(
        &self,
        x: &[f32],
        rows: &[usize],
        y: &mut [f32],
        n: usize,
        o: usize,
        j: usize,
    ) {
        let mut acc = [[[0f32; L]; P]; R];
        for (r, acc) in acc.iter_mut().enumerate() {
            *acc = [[self.bias[o + r]; L]; P];
        }
        let weights = self.tile_weights::<R>(o);
        for (&start, w) in rows.iter().zip(weights.chunks_exact(R)) {
            let row = &x[start + j..start + j + P * L];
            for (acc, &w) in acc.iter_mut().zip(w) {
                for (p, acc) in acc.iter_mut().enumerate() {
                    for (l, a) in acc.iter_mut().enumerate() {
                        let v = row[p * L + l];
                        *a = if FMA { v.mul_add(w, *a) } else { *a + v * w };
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let out = &mut y[(o + r) * n + j..(o + r) * n + j + P * L];
            for (p, acc) in acc.iter().enumerate() {
                for (l, &a) in acc.iter().enumerate() {
                    out[p * L + l] = self.act.apply(a);
                }
            }
        }
    }
}

/// `y = max(W x + b, 0)` (or without the max) for a 1x1 convolution of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Pointwise {
    product: Product,
    /// Where each input channel starts: `kk * n` (for the `n` of `out_shape`).
    rows: Arc<Vec<usize>>,
    out_shape: TVec<usize>,
}

impl Eq for Pointwise {}

impl Pointwise {
    /// A float 1x1 convolution of `k` channels to `m` with its bias and ReLU over an `hw`
    /// image, for [`crate::bench`]; and an input.
    #[cfg(feature = "bench")]
    pub(crate) fn for_bench(
        m: usize,
        k: usize,
        hw: [usize; 2],
    ) -> TractResult<(Pointwise, Tensor)> {
        let n = hw[0] * hw[1];
        let wave = |len: usize, step: usize| -> Vec<f32> {
            (0..len)
                .map(|i| (i * step % 2001) as f32 / 1000.0 - 1.0)
                .collect()
        };
        let op = Pointwise {
            product: Product::new(
                m,
                k,
                wave(m * k, 37).iter().map(|w| w / k as f32).collect(),
                wave(m, 11),
                Activation {
                    leaky: None,
                    floor: Some(0.0),
                },
            ),
            rows: Arc::new((0..k).map(|kk| kk * n).collect()),
            out_shape: tvec![m, hw[0], hw[1]],
        };
        Ok((op, Tensor::from_shape(&[k, hw[0], hw[1]], &wave(k * n, 7))?))
    }
}

impl Op for Pointwise {
    fn name(&self) -> StaticName {
        "Pointwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let p = &self.product;
        Ok(vec![format!("{}x{} weights, {:?}", p.m, p.k, p.act)])
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for Pointwise {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        graph::eval_f32(&inputs, &self.out_shape, |x, out| {
            let p = &self.product;
            let n = x.len() / p.k.max(1);
            ensure!(
                x.len() == p.k * n && self.rows.last().is_none_or(|&r| r + n == x.len()),
                "Pointwise: an input of {} values for {} channels",
                x.len(),
                p.k
            );
            ensure!(out.len() == p.m * n);
            p.run(x, &self.rows, n, out);
            Ok(())
        })
    }

    crate::eval_out_of_plan!();
}

impl TypedOp for Pointwise {
    tract_onnx::tract_core::as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type());
        Ok(tvec!(f32::datum_type().fact(&*self.out_shape)))
    }
}

/// The fewest pixels for which [`rewrite`] takes a 1x1 convolution.
const MIN_PIXELS: usize = 16;

/// Replaces each float `EinSum -> Add (bias) [-> Max(0)]` that is a 1x1 convolution of one
/// channels-first image with a [`Pointwise`]. Returns how many were replaced.
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    graph::rewrite_each(model, pointwise_at)
}

fn pointwise_at(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let Some(conv) = graph::conv1x1_at(model, model.node(id))? else {
        return Ok(None);
    };
    let mut last = conv.add;
    let mut relu = false;
    if let Some(next) = graph::sole_successor(model, last).map(|n| model.node(n))
        && graph::is_relu(model, next)?
    {
        relu = true;
        last = next;
    }
    let Some(out_shape) = graph::concrete_shape(model, last.id.into())? else {
        return Ok(None);
    };
    let n = out_shape.iter().product::<usize>() / conv.m.max(1);
    // Fewer pixels than the widest vector: no tile fills, and tract's own matrix product,
    // which packs the weights, is faster (`cargo bench -p kernels -- 1x1`: 1024 to 1024
    // channels on 3x2 pixels, 0.21 ms against 0.53 ms here).
    if n < MIN_PIXELS {
        return Ok(None);
    }
    let op = Pointwise {
        product: Product::new(
            conv.m,
            conv.k,
            conv.weights.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
            conv.bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
            Activation {
                leaky: None,
                floor: relu.then_some(0.0),
            },
        ),
        rows: Arc::new((0..conv.k).map(|kk| kk * n).collect()),
        out_shape,
    };
    Ok(Some(TypedModelPatch::replace_single_op(
        model,
        last,
        &[conv.x],
        op,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::testing::values;

    #[test]
    fn matches_the_definition_on_whole_and_partial_tiles() {
        // Channel counts around the tile heights, pixel counts around the tile widths.
        for (m, k, n) in [
            (1, 1, 1),
            (7, 5, 33),
            (13, 24, 100),
            (6, 3, 64),
            (25, 16, 257),
            // Fewer pixels than a vector holds: every column through the dot products.
            (9, 20, 3),
            (17, 33, 6),
            (5, 7, 1),
            (12, 40, 49),
        ] {
            for (relu, leaky) in [(false, None), (true, None), (true, Some(0.2))] {
                let act = Activation {
                    leaky,
                    floor: relu.then_some(if leaky.is_some() { -0.1 } else { 0.0 }),
                };
                let op = Product::new(m, k, values(m * k, 3), values(m, 5), act);
                let x = values(k * n, 7);
                let rows: Vec<usize> = (0..k).map(|kk| kk * n).collect();
                let mut y = vec![f32::NAN; m * n];
                op.run(&x, &rows, n, &mut y);
                // The portable tiles (what ARM runs), with and without FMA, give the same
                // values within rounding.
                let portable = Product::with_tiles(m, k, values(m * k, 3), values(m, 5), act, 4);
                for fma in [false, true] {
                    let mut y4 = vec![f32::NAN; m * n];
                    if fma {
                        portable.run_body::<4, 2, 4, true>(&x, &rows, n, &mut y4);
                    } else {
                        portable.run_body::<4, 2, 4, false>(&x, &rows, n, &mut y4);
                    }
                    for (a, b) in y.iter().zip(&y4) {
                        assert!(
                            (a - b).abs() <= 1e-5,
                            "m {m} k {k} n {n} {act:?}: {a} vs {b}"
                        );
                    }
                }
                for o in 0..m {
                    for j in 0..n {
                        let mut want = op.bias[o] as f64;
                        for kk in 0..k {
                            want += op.weights[o * k + kk] as f64 * x[kk * n + j] as f64;
                        }
                        if let Some(alpha) = leaky
                            && want < 0.0
                        {
                            want *= alpha as f64;
                        }
                        if let Some(floor) = act.floor {
                            want = want.max(floor as f64);
                        }
                        let got = y[o * n + j];
                        assert!(
                            (got as f64 - want).abs() <= 1e-5,
                            "m {m} k {k} n {n} {act:?}: output ({o}, {j}) is {got}, the definition gives {want}"
                        );
                    }
                }
            }
        }
    }

    /// `EinSum` (16 channels to 16, on 8x16 pixels) then `Add` of a constant of `bias_shape`.
    fn conv_then_add(bias_shape: &[usize]) -> TypedModel {
        use tract_onnx::tract_core::ops::einsum::EinSum;
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([16, 8, 16])).unwrap();
        let w = model
            .add_const("w", Tensor::from_shape(&[16, 16], &values(256, 1)).unwrap())
            .unwrap();
        let axes = "IHW,OI->OHW".parse().unwrap();
        let y = model
            .wire_node("conv", EinSum::new(axes, f32::datum_type()), &[x, w])
            .unwrap();
        let n: usize = bias_shape.iter().product();
        let b = model
            .add_const("b", Tensor::from_shape(bias_shape, &values(n, 2)).unwrap())
            .unwrap();
        let sum = model
            .wire_node("bias", tract_onnx::tract_core::ops::math::add(), &[y[0], b])
            .unwrap();
        model.select_output_outlets(&sum).unwrap();
        model
    }

    #[test]
    fn only_a_bias_along_the_channels_is_taken() {
        let adds = |model: &TypedModel| {
            model
                .nodes()
                .iter()
                .filter(|n| {
                    n.op_as::<tract_onnx::tract_core::ops::binary::TypedBinOp>()
                        .is_some()
                })
                .count()
        };
        let mut along = conv_then_add(&[16, 1, 1]);
        assert_eq!(rewrite(&mut along).unwrap(), 1);
        assert_eq!(adds(&along), 0, "the bias is taken into the operator");
        // 16 values, as many as the channels, but along the pixels of a row: the convolution
        // is taken without bias, and the Add stays.
        let mut across = conv_then_add(&[1, 1, 16]);
        assert_eq!(rewrite(&mut across).unwrap(), 1);
        assert_eq!(adds(&across), 1, "the row constant is still added");
    }
}
