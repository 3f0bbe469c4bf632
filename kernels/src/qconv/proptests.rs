//! Property tests over random geometries: the portable int8 path of [`QConv`] (tract-linalg's
//! integer product and the separate requantisation) against a naive integer reference, and,
//! where the CPU has them, the fused VNNI and AVX2 kernels against the portable path, bit for
//! bit.

use proptest::prelude::*;

use super::*;
use crate::graph::testing::byte_grid;

/// A random convolution: `c` input channels, `m` output channels, an `h x w` input, a
/// `kh x kw` kernel (`None`: a 1x1 convolution read as a `[k, n]` matrix), strides, paddings
/// before, the input and output grids, and the seed of the data.
#[derive(Debug, Clone)]
struct Case {
    c: usize,
    m: usize,
    in_hw: [usize; 2],
    kernel: Option<[usize; 2]>,
    stride: [usize; 2],
    pad: [usize; 2],
    zero_x: i32,
    scale_x: f32,
    zero_y: i32,
    scale_y: f32,
    seed: u32,
}

impl Case {
    fn out_hw(&self) -> [usize; 2] {
        match self.kernel {
            None => self.in_hw,
            Some(k) => {
                [0, 1].map(|i| (self.in_hw[i] + 2 * self.pad[i] - k[i]) / self.stride[i] + 1)
            }
        }
    }

    fn k(&self) -> usize {
        let [kh, kw] = self.kernel.unwrap_or([1, 1]);
        self.c * kh * kw
    }
}

fn case(with_kernel: bool) -> impl Strategy<Value = Case> {
    let kernel = if with_kernel {
        (1usize..=4, 1usize..=5)
            .prop_map(|(a, b)| Some([a, b]))
            .boxed()
    } else {
        Just(None).boxed()
    };
    (
        (1usize..=6, 1usize..=10, 0usize..=12, 0usize..=40, kernel),
        (1usize..=3, 1usize..=3, 0usize..=3, 0usize..=4),
        (
            0i32..=255,
            0.004f32..0.1,
            0i32..=255,
            0.01f32..0.5,
            any::<u32>(),
        ),
    )
        .prop_map(
            |((c, m, h, w, kernel), (sy, sx, py, px), (zero_x, scale_x, zero_y, scale_y, seed))| {
                let [kh, kw] = kernel.unwrap_or([1, 1]);
                // Paddings smaller than the kernel, and at least one output pixel.
                let pad = [py % kh, px % kw];
                Case {
                    c,
                    m,
                    in_hw: [kh + h, kw + w],
                    kernel,
                    stride: [sy, sx],
                    pad,
                    zero_x,
                    scale_x,
                    zero_y,
                    scale_y,
                    seed,
                }
            },
        )
}

/// The operator of `case`, the signed weights `[m, k]` it holds, and the input bytes.
fn build(case: &Case) -> (QConv, Vec<i32>, Vec<u8>) {
    let (m, k) = (case.m, case.k());
    let ints = crate::graph::testing::ints;
    let mut w_int = ints(m * k, case.seed, -127, 127);
    // Each row reaches +-127, as a symmetric MinMax quantiser makes it.
    for (o, row) in w_int.chunks_exact_mut(k).enumerate() {
        row[o % k] = if o % 2 == 0 { 127 } else { -127 };
    }
    let s_w: Vec<f32> = (0..m).map(|o| 0.0005 * (o + 1) as f32).collect();
    let w: Vec<f32> = (0..m * k).map(|i| w_int[i] as f32 * s_w[i / k]).collect();
    let bias: Vec<f32> = ints(m, case.seed ^ 0x55, -2000, 2000)
        .into_iter()
        .map(|b| b as f32 / 1000.0)
        .collect();
    let [oh, ow] = case.out_hw();
    let patches = case.kernel.map(|kernel| Patches {
        channels: case.c,
        in_hw: case.in_hw,
        kernel,
        stride: case.stride,
        dilation: [1, 1],
        pad: case.pad,
        out_hw: [oh, ow],
    });
    let x_len = match case.kernel {
        Some(_) => case.c * case.in_hw[0] * case.in_hw[1],
        None => k * oh * ow,
    };
    let x: Vec<u8> = ints(x_len, case.seed.wrapping_add(7), 0, 255)
        .into_iter()
        .map(|q| q as u8)
        .collect();
    let op = QConv::new(
        FloatConv {
            weights: &w,
            bias,
            m,
            k,
        },
        &byte_grid(case.zero_x, case.scale_x),
        byte_grid(case.zero_y, case.scale_y),
        tvec![m, oh * ow],
        patches,
    )
    .unwrap()
    .expect("weights on the int8 grid are taken");
    (op, w_int, x)
}

/// The naive reference: exact integer sums `sum(w * (q - z_x))` over the taps inside the
/// input (the padding is the byte of 0.0), then `sum * unit + bias` in the output's units,
/// clamped to the byte range and rounded to even: the output bytes, `[m, oh * ow]`.
fn reference(case: &Case, op: &QConv, w_int: &[i32], x: &[u8]) -> Vec<u8> {
    let (m, c) = (case.m, case.c);
    let [h, w] = case.in_hw;
    let [oh, ow] = case.out_hw();
    let [kh, kw] = case.kernel.unwrap_or([1, 1]);
    let out = byte_grid(case.zero_y, case.scale_y);
    let mut y = vec![0u8; m * oh * ow];
    for o in 0..m {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut sum = 0i32;
                for ci in 0..c {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let tap = w_int[((o * c + ci) * kh + ky) * kw + kx];
                            let q = match case.kernel {
                                // 1x1: row `ci` of the `[k, n]` matrix.
                                None => x[ci * oh * ow + oy * ow + ox] as i32,
                                Some(_) => {
                                    let iy =
                                        (oy * case.stride[0] + ky) as isize - case.pad[0] as isize;
                                    let ix =
                                        (ox * case.stride[1] + kx) as isize - case.pad[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    x[(ci * h + iy as usize) * w + ix as usize] as i32
                                }
                            };
                            sum += tap * (q - case.zero_x);
                        }
                    }
                }
                let (u, b) = (op.unit[o] * out.inv_scale, op.bias[o] * out.inv_scale);
                let lo = (out.lo - out.zero_point) as f32;
                let hi = (out.hi - out.zero_point) as f32;
                let r = (sum as f32 * u + b).clamp(lo, hi).round_ties_even();
                y[(o * oh + oy) * ow + ox] = (r as i32 + out.zero_point) as u8;
            }
        }
    }
    y
}

/// `op` on the bytes `x` and on their f32 values: the output bytes, and the f32 outputs.
fn run(op: &QConv, case: &Case, x: &[u8]) -> (Vec<u8>, Vec<f32>) {
    let len = op.m * op.out_shape[1];
    let mut bytes = vec![0u8; len];
    op.run(Activations::Bytes(x), OutputsMut::Bytes(&mut bytes))
        .unwrap();
    let mut xf = vec![0f32; x.len()];
    byte_grid(case.zero_x, case.scale_x).dequantise_bytes(x, &mut xf);
    let mut values = vec![f32::NAN; len];
    op.run(Activations::F32(&xf), OutputsMut::F32(&mut values))
        .unwrap();
    (bytes, values)
}

fn portable(op: &QConv) -> QConv {
    QConv {
        vnni: None,
        direct: None,
        avx2: None,
        neon: None,
        ..op.clone()
    }
}

fn check_portable(case: &Case) -> Result<(), TestCaseError> {
    let (op, w_int, x) = build(case);
    let want = reference(case, &op, &w_int, &x);
    let (bytes, values) = run(&portable(&op), case, &x);
    prop_assert_eq!(&bytes, &want, "bytes out");
    let mut from_bytes = vec![0f32; want.len()];
    byte_grid(case.zero_y, case.scale_y).dequantise_bytes(&want, &mut from_bytes);
    prop_assert_eq!(values, from_bytes, "f32 out");
    Ok(())
}

fn check_vnni(test: &str, case: &Case) -> Result<(), TestCaseError> {
    if !crate::graph::testing::cpu_has(test, crate::graph::testing::VNNI) {
        return Ok(());
    }
    let (op, _, x) = build(case);
    prop_assert!(op.vnni.is_some());
    same_as_portable(&op, case, &x)
}

/// `op` gives the portable path's bytes and f32 bits.
fn same_as_portable(op: &QConv, case: &Case, x: &[u8]) -> Result<(), TestCaseError> {
    let (bytes, values) = run(op, case, x);
    let (want_bytes, want_values) = run(&portable(op), case, x);
    prop_assert_eq!(bytes, want_bytes, "bytes out");
    // Bits, not values: `==` on f32 would equate 0.0 and -0.0.
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    prop_assert_eq!(bits(&values), bits(&want_values), "f32 out");
    Ok(())
}

/// The fused AVX2 kernel (also where VNNI would run instead), against tract-linalg's product
/// and the separate requantisation.
fn check_avx2(test: &str, case: &Case) -> Result<(), TestCaseError> {
    if !crate::graph::testing::cpu_has(test, crate::graph::testing::AVX2) {
        return Ok(());
    }
    let (op, _, x) = build(case);
    prop_assert_eq!(op.avx2.is_some(), !crate::arch::portable_requested());
    if op.avx2.is_none() {
        return Ok(());
    }
    let op = QConv {
        vnni: None,
        direct: None,
        ..op
    };
    same_as_portable(&op, case, &x)
}

/// On aarch64 the NEON product (unless `IAT_KERNELS=portable`), against tract-linalg's.
fn check_neon(case: &Case) -> Result<(), TestCaseError> {
    let (op, _, x) = build(case);
    prop_assert_eq!(op.neon.is_some(), crate::arch::aarch64::available());
    if op.neon.is_none() {
        return Ok(());
    }
    same_as_portable(&op, case, &x)
}

proptest! {
    // Modest counts: each case runs the operator four to eight times, in the dev profile.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn portable_1x1_equals_the_integer_reference(case in case(false)) {
        check_portable(&case)?;
    }

    #[test]
    fn portable_kxk_equals_the_integer_reference(case in case(true)) {
        check_portable(&case)?;
    }

    /// The fused product (`run_block`) on a 1x1 convolution's bytes and on quantised f32.
    #[test]
    fn vnni_1x1_equals_the_portable_path(case in case(false)) {
        check_vnni("qconv::proptests::vnni_1x1_equals_the_portable_path", &case)?;
    }

    /// The windowed kernel (`run_direct`) where the geometry suits it, else the product on
    /// gathered patches.
    #[test]
    fn vnni_kxk_equals_the_portable_path(case in case(true)) {
        check_vnni("qconv::proptests::vnni_kxk_equals_the_portable_path", &case)?;
    }

    /// The fused AVX2 product, 1x1 and `KxK` (on patches).
    #[test]
    fn avx2_1x1_equals_the_portable_path(case in case(false)) {
        check_avx2("qconv::proptests::avx2_1x1_equals_the_portable_path", &case)?;
    }

    #[test]
    fn avx2_kxk_equals_the_portable_path(case in case(true)) {
        check_avx2("qconv::proptests::avx2_kxk_equals_the_portable_path", &case)?;
    }

    /// The NEON product on aarch64, 1x1 and `KxK` (on patches).
    #[test]
    fn neon_equals_the_portable_path(case in case(false)) {
        check_neon(&case)?;
    }

    #[test]
    fn neon_kxk_equals_the_portable_path(case in case(true)) {
        check_neon(&case)?;
    }
}
