//! Representative int8 operators for `benches/ops.rs`, on bytes in and out as they run in
//! int8 CenterFace (an 80 x 80 feature map). Not an API: the benchmark needs the operators'
//! private constructors.

use tract_onnx::tract_core::internal::*;

use crate::depthwise::Depthwise;
use crate::qadd::QAdd;
use crate::qconv::QConv;

/// `len` deterministic int8-range weights times `step`, period `per`: the first of each period at
/// the top of the range (so every output channel has a full-scale weight), the rest spread over
/// it. What the operators' bench constructors quantise.
pub(crate) fn weights(len: usize, per: usize, step: f32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let q = if i % per == 0 {
                127
            } else {
                (i * 37 % 255) as i32 - 127
            };
            q as f32 * step
        })
        .collect()
}

/// One operator with its inputs.
pub struct Case {
    pub name: &'static str,
    op: Box<dyn EvalOp>,
    inputs: TVec<TValue>,
}

impl Case {
    /// One evaluation (the inputs are shared, not copied).
    pub fn run(&self) -> TractResult<TVec<TValue>> {
        self.op
            .eval(&EvalContext::out_of_plan(), self.inputs.clone())
    }
}

/// One timed evaluation.
pub type Runner = Box<dyn Fn() -> TractResult<()>>;

/// Float 1x1 convolutions with bias and ReLU, [`crate::pointwise::Pointwise`] beside tract's
/// own optimised plan of the same convolution (`EinSum`, `Add`, `Max`): from a wide map to
/// the small ones whose pixels do not fill a vector (a 7x7 map; a 3x2 map, 1024 channels).
pub fn pointwise_cases() -> TractResult<Vec<(String, Runner)>> {
    use crate::pointwise::Pointwise;
    let mut cases: Vec<(String, Runner)> = vec![];
    for (m, k, hw) in [
        (64, 32, [80, 80]),
        (256, 256, [7, 7]),
        (1024, 1024, [3, 2]),
        (128, 512, [1, 1]),
    ] {
        let geometry = format!("{k}->{m} {}x{}", hw[0], hw[1]);
        let (op, x) = Pointwise::for_bench(m, k, hw)?;
        let x = x.into_tvalue();
        let ours = {
            let x = x.clone();
            move || {
                op.eval(&EvalContext::out_of_plan(), tvec!(x.clone()))?;
                Ok(())
            }
        };
        cases.push((format!("pointwise 1x1 {geometry}"), Box::new(ours)));
        let plan = tract_plan(m, k, hw)?;
        let theirs = move || {
            plan.run(tvec!(x.clone()))?;
            Ok(())
        };
        cases.push((format!("tract 1x1 {geometry}"), Box::new(theirs)));
    }
    Ok(cases)
}

/// tract's optimised plan of `relu(W x + b)` for a `[k, h, w]` image.
fn tract_plan(m: usize, k: usize, hw: [usize; 2]) -> TractResult<Arc<TypedSimplePlan>> {
    use tract_onnx::tract_core::ops::einsum::EinSum;
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact([k, hw[0], hw[1]]))?;
    let w: Vec<f32> = (0..m * k)
        .map(|i| (i * 37 % 2001) as f32 / 1000.0 - 1.0)
        .collect();
    let w = model.add_const("w", Tensor::from_shape(&[m, k], &w)?)?;
    let y = model.wire_node(
        "conv",
        EinSum::new("IHW,OI->OHW".parse()?, f32::datum_type()),
        &[x, w],
    )?;
    let b: Vec<f32> = (0..m).map(|i| i as f32 * 0.01).collect();
    let b = model.add_const("b", Tensor::from_shape(&[m, 1, 1], &b)?)?;
    let y = model.wire_node("bias", tract_onnx::tract_core::ops::math::add(), &[y[0], b])?;
    let zero = model.add_const("zero", tensor3(&[[[0f32]]]))?;
    let y = model.wire_node(
        "relu",
        tract_onnx::tract_core::ops::math::max(),
        &[y[0], zero],
    )?;
    model.select_output_outlets(&y)?;
    model.into_optimized()?.into_runnable()
}

/// The operators timed by `cargo bench -p kernels`; the `portable` ones without the AVX-512
/// kernels (the same as the others off x86_64 or without AVX-512 VNNI).
pub fn cases() -> TractResult<Vec<Case>> {
    let hw = [80, 80];
    let mut cases = vec![];
    for (name, portable) in [
        ("qconv 1x1 32->64", false),
        ("qconv 1x1 32->64 portable", true),
    ] {
        let (op, x) = QConv::for_bench(32, 64, hw, [1, 1], [1, 1], [0, 0], portable)?;
        cases.push(Case {
            name,
            op: Box::new(op),
            inputs: tvec!(x.into_tvalue()),
        });
    }
    for (name, portable) in [
        ("qconv 3x3 16->32", false),
        ("qconv 3x3 16->32 portable", true),
    ] {
        let (op, x) = QConv::for_bench(16, 32, hw, [3, 3], [1, 1], [1, 1], portable)?;
        cases.push(Case {
            name,
            op: Box::new(op),
            inputs: tvec!(x.into_tvalue()),
        });
    }
    // A stem (3 channels in, stride 2, wide rows) and a deep layer of short rows (13 columns,
    // NanoDet's last stage): the windowed kernel's two ends.
    for (name, c, m, in_hw, stride) in [
        (
            "qconv 3x3 3->32 stride 2 256x320",
            3,
            32,
            [256, 320],
            [2, 2],
        ),
        ("qconv 3x3 256->256 13x13", 256, 256, [13, 13], [1, 1]),
    ] {
        let (op, x) = QConv::for_bench(c, m, in_hw, [3, 3], stride, [1, 1], false)?;
        cases.push(Case {
            name,
            op: Box::new(op),
            inputs: tvec!(x.into_tvalue()),
        });
    }
    let (op, x) = Depthwise::for_bench(64, hw, [3, 3], [1, 1], [1, 1])?;
    cases.push(Case {
        name: "depthwise 3x3 64",
        op: Box::new(op),
        inputs: tvec!(x.into_tvalue()),
    });
    let (op, [a, b]) = QAdd::for_bench(&[64, hw[0], hw[1]])?;
    cases.push(Case {
        name: "qadd 64x80x80",
        op: Box::new(op),
        inputs: tvec!(a.into_tvalue(), b.into_tvalue()),
    });
    Ok(cases)
}
