//! Sensor data -> model inputs -> events, as the card says: image and audio preprocessing,
//! recurrent state, CenterFace decoding with non-maximum suppression, speech probability and
//! audio class scores.
//! The core functions take values, not files; file reading sits in [`read_image`] and
//! [`read_wav`].

use std::path::Path;

use tract_onnx::prelude::*;

use modelcard::{Card, ChannelOrder, Dtype, InputRole, Layout, Postprocess, Preprocess};
use runtime::{Model, ModelError, initial_tensor};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{path}: {message}")]
    Input { path: String, message: String },
    #[error("model {model}: {message}")]
    Unsuitable { model: String, message: String },
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// An RGB image, row-major, 3 bytes per pixel.
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

/// The names this card's observations are published under, in the card's order (see
/// [`modelcard::Card::published_labels`]). Nothing else can become a key of a record
/// ([`aggregate::Labels`]).
pub fn observed_labels(card: &Card) -> Vec<String> {
    card.published_labels()
}

/// Reads a PNG or JPEG file.
pub fn read_image(path: &Path) -> Result<Image, PipelineError> {
    let err = |m: String| PipelineError::Input {
        path: path.display().to_string(),
        message: m,
    };
    let img = image::ImageReader::open(path)
        .map_err(|e| err(format!("cannot open: {e}")))?
        .with_guessed_format()
        .map_err(|e| err(format!("cannot read: {e}")))?
        .decode()
        .map_err(|e| err(format!("not a readable PNG or JPEG image: {e}")))?
        .to_rgb8();
    Ok(Image {
        width: img.width(),
        height: img.height(),
        rgb: img.into_raw(),
    })
}

/// Mono audio in [-1, 1].
pub struct Audio {
    pub sample_rate: u32,
    pub samples: Vec<f32>,
}

/// Reads a PCM WAV file (8/16/24/32-bit integer or 32-bit float), mixing channels to mono.
pub fn read_wav(path: &Path) -> Result<Audio, PipelineError> {
    let err = |m: String| PipelineError::Input {
        path: path.display().to_string(),
        message: m,
    };
    let mut reader =
        hound::WavReader::open(path).map_err(|e| err(format!("not a readable WAV file: {e}")))?;
    let spec = reader.spec();
    if spec.channels == 0 {
        return Err(err("WAV header declares 0 channels".into()));
    }
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().collect::<Result<_, _>>(),
        hound::SampleFormat::Int => {
            let full = (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|s| s as f32 / full))
                .collect::<Result<_, _>>()
        }
    }
    .map_err(|e| err(format!("corrupt WAV data: {e}")))?;
    let ch = spec.channels as usize;
    let samples = interleaved
        .chunks_exact(ch)
        .map(|f| f.iter().sum::<f32>() / ch as f32)
        .collect();
    Ok(Audio {
        sample_rate: spec.sample_rate,
        samples,
    })
}

/// Linear-interpolation resampling; enough for level and voice-activity models, which see
/// far less than the Nyquist band of the source.
pub fn resample(samples: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || samples.is_empty() {
        return samples.to_vec();
    }
    let n = (samples.len() as u64 * to as u64 / from as u64) as usize;
    let step = from as f64 / to as f64;
    (0..n)
        .map(|i| {
            let x = i as f64 * step;
            let j = x.floor() as usize;
            let frac = (x - j as f64) as f32;
            let a = samples[j.min(samples.len() - 1)];
            let b = samples[(j + 1).min(samples.len() - 1)];
            a + (b - a) * frac
        })
        .collect()
}

/// One output coordinate's taps: the first source index and the normalised weights.
struct Taps {
    first: usize,
    weights: Vec<f32>,
}

/// The triangle (linear) filter's taps from `from` source samples to `to` output samples,
/// widened by the ratio when shrinking (so that every source sample counts: no aliasing),
/// the same kernel and placement as the `image` crate's `FilterType::Triangle`.
fn triangle_taps(from: usize, to: usize) -> Vec<Taps> {
    let ratio = from as f32 / to as f32;
    let sratio = ratio.max(1.0);
    let support = sratio;
    (0..to)
        .map(|o| {
            let centre = (o as f32 + 0.5) * ratio;
            let left = ((centre - support).floor() as i64).clamp(0, from as i64 - 1) as usize;
            let right =
                ((centre + support).ceil() as i64).clamp(left as i64 + 1, from as i64) as usize;
            let centre = centre - 0.5;
            let mut weights: Vec<f32> = (left..right)
                .map(|i| (1.0 - ((i as f32 - centre) / sratio).abs()).max(0.0))
                .collect();
            let sum: f32 = weights.iter().sum();
            if sum > 0.0 {
                weights.iter_mut().for_each(|w| *w /= sum);
            }
            Taps {
                first: left,
                weights,
            }
        })
        .collect()
}

/// Fixed-point weights: each output's taps sum to exactly `1 << WEIGHT_BITS`.
const WEIGHT_BITS: u32 = 14;

/// [`Taps`] with integer weights (rounded, the largest one absorbing the rounding so that a
/// flat image stays flat).
struct FixedTaps {
    first: usize,
    weights: Vec<i32>,
}

fn fixed_taps(taps: Vec<Taps>) -> Vec<FixedTaps> {
    let one = 1i32 << WEIGHT_BITS;
    taps.into_iter()
        .map(|t| {
            let mut weights: Vec<i32> = t
                .weights
                .iter()
                .map(|w| (w * one as f32).round() as i32)
                .collect();
            let sum: i32 = weights.iter().sum();
            if let Some(i) = (0..weights.len()).max_by_key(|&i| weights[i]) {
                weights[i] += one - sum;
            }
            FixedTaps {
                first: t.first,
                weights,
            }
        })
        .collect()
}

/// Resizes an RGB image (rows of `sw` pixels, 3 bytes each) to `dw` x `dh` with a separable
/// triangle filter, in fixed point: columns of the source rows first (one output row at a
/// time, contiguous, which the compiler vectorises), then along each output row. Within one
/// level of the `image` crate's float resampler. This runs on every camera frame whose size is
/// not the model's, beside the network: it must cost little next to it.
pub fn resize_rgb(src: &[u8], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, which the function is compiled for.
        return unsafe { resize_rgb_avx2(src, sw, sh, dw, dh) };
    }
    resize_rgb_body(src, sw, sh, dw, dh)
}

/// [`resize_rgb`] compiled for AVX2: 8 lanes of 32-bit products (x86-64's baseline, SSE2,
/// has no 32-bit multiply in vectors).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn resize_rgb_avx2(src: &[u8], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<u8> {
    resize_rgb_body(src, sw, sh, dw, dh)
}

#[inline(always)]
fn resize_rgb_body(src: &[u8], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<u8> {
    let rows = fixed_taps(triangle_taps(sh, dh));
    let cols = fixed_taps(triangle_taps(sw, dw));
    let mut out = vec![0u8; dw * dh * 3];
    // One output row before the horizontal pass, with 8 fractional bits (at most 255 << 8).
    let mut row = vec![0i32; sw * 3];
    let mut row4 = vec![0i32; sw * 4];
    for (y, t) in rows.iter().enumerate() {
        row.iter_mut().for_each(|v| *v = 0);
        for (k, &w) in t.weights.iter().enumerate() {
            let line = &src[(t.first + k) * sw * 3..(t.first + k + 1) * sw * 3];
            for (acc, &p) in row.iter_mut().zip(line) {
                *acc += w * i32::from(p);
            }
        }
        // Each pixel to 4 lanes (the 4th unused), so that the horizontal pass works on whole
        // pixels in vectors.
        let shift = WEIGHT_BITS - 8;
        for (p4, p) in row4.chunks_exact_mut(4).zip(row.chunks_exact(3)) {
            for c in 0..3 {
                p4[c] = (p[c] + (1 << (shift - 1))) >> shift;
            }
        }
        // Horizontal: at most (255 << 8) << 14 per sum, within i32.
        let dst = &mut out[y * dw * 3..(y + 1) * dw * 3];
        for (px, c) in dst.chunks_exact_mut(3).zip(&cols) {
            let span = &row4[c.first * 4..(c.first + c.weights.len()) * 4];
            let mut sum = [0i32; 4];
            for (p, &w) in span.chunks_exact(4).zip(&c.weights) {
                for l in 0..4 {
                    sum[l] += w * p[l];
                }
            }
            let bits = WEIGHT_BITS + 8;
            for (d, v) in px.iter_mut().zip(sum) {
                *d = ((v + (1 << (bits - 1))) >> bits).clamp(0, 255) as u8;
            }
        }
    }
    out
}

/// Resize of an RGB image to the model's size (a triangle filter, [`resize_rgb`]), then the
/// card's normalisation, into the model's layout.
pub fn image_tensor(img: &Image, pre: &Preprocess, shape: &[usize], dtype: Dtype) -> Tensor {
    let Preprocess::Image {
        channels,
        layout,
        scale,
        mean,
        std,
    } = *pre
    else {
        unreachable!("image_tensor is called for image inputs")
    };
    let (h, w) = match layout {
        Layout::Nchw => (shape[2], shape[3]),
        Layout::Nhwc => (shape[1], shape[2]),
    };
    // The frame is read in place (no copy); resized only when its size is not the model's.
    let resized;
    let pixels: &[u8] = if (img.width as usize, img.height as usize) == (w, h) {
        &img.rgb
    } else {
        resized = resize_rgb(&img.rgb, img.width as usize, img.height as usize, w, h);
        &resized
    };
    // Per channel of the model's order: which byte of a pixel, and the card's normalisation
    // `(p * scale - mean) / std` (computed as written: the same floats as before).
    // A byte has 256 values: each channel's normalisation is a table, computed as written,
    // so the floats are the same as computing it per pixel.
    let map: [(usize, [f32; 256]); 3] = std::array::from_fn(|c| {
        let src_c = match channels {
            ChannelOrder::Rgb => c,
            ChannelOrder::Bgr => 2 - c,
        };
        let table = std::array::from_fn(|p| (p as f32 * scale - mean[c]) / std[c]);
        (src_c, table)
    });
    // In the model's order.
    let mut data: Vec<f32> = Vec::with_capacity(3 * h * w);
    match layout {
        Layout::Nchw => {
            // One pass over the pixels, each channel to its plane.
            data.resize(3 * h * w, 0.0);
            let (p0, rest) = data.split_at_mut(h * w);
            let (p1, p2) = rest.split_at_mut(h * w);
            let [(c0, t0), (c1, t1), (c2, t2)] = &map;
            for (((px, a), b), c) in pixels.chunks_exact(3).zip(p0).zip(p1).zip(p2) {
                *a = t0[px[*c0] as usize];
                *b = t1[px[*c1] as usize];
                *c = t2[px[*c2] as usize];
            }
        }
        Layout::Nhwc => {
            data.resize(3 * h * w, 0.0);
            let [(c0, t0), (c1, t1), (c2, t2)] = &map;
            for (px, out) in pixels.chunks_exact(3).zip(data.chunks_exact_mut(3)) {
                out[0] = t0[px[*c0] as usize];
                out[1] = t1[px[*c1] as usize];
                out[2] = t2[px[*c2] as usize];
            }
        }
    }
    let t: Tensor = tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), data)
        .expect("shape from card")
        .into();
    match dtype {
        Dtype::U8 => t.cast_to::<u8>().expect("f32 to u8").into_owned(),
        _ => t,
    }
}

/// A face (or head) found by CenterFace, in input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    pub score: f32,
}

impl Detection {
    fn area(&self) -> f32 {
        (self.x2 - self.x1).max(0.0) * (self.y2 - self.y1).max(0.0)
    }

    fn iou(&self, o: &Detection) -> f32 {
        let w = (self.x2.min(o.x2) - self.x1.max(o.x1)).max(0.0);
        let h = (self.y2.min(o.y2) - self.y1.max(o.y1)).max(0.0);
        let inter = w * h;
        let union = self.area() + o.area() - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }
}

/// Decodes CenterFace's heatmap, scale and offset heads (stride 4) into boxes above
/// `threshold`, then suppresses overlaps above `iou` (greedy NMS, highest score first).
pub fn centerface_decode(
    heat: &Tensor,
    scale: &Tensor,
    offset: &Tensor,
    threshold: f32,
    iou: f32,
) -> Vec<Detection> {
    let (Ok(heat), Ok(scale), Ok(offset)) = (
        heat.to_plain_array_view::<f32>(),
        scale.to_plain_array_view::<f32>(),
        offset.to_plain_array_view::<f32>(),
    ) else {
        return vec![];
    };
    let (h, w) = (heat.shape()[2], heat.shape()[3]);
    let (in_h, in_w) = ((h * 4) as f32, (w * 4) as f32);
    let mut dets = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let score = heat[[0, 0, y, x]];
            // NaN scores are skipped too.
            if score.is_nan() || score <= threshold {
                continue;
            }
            let bh = scale[[0, 0, y, x]].exp() * 4.0;
            let bw = scale[[0, 1, y, x]].exp() * 4.0;
            let (oy, ox) = (offset[[0, 0, y, x]], offset[[0, 1, y, x]]);
            let x1 = ((x as f32 + ox + 0.5) * 4.0 - bw / 2.0).max(0.0);
            let y1 = ((y as f32 + oy + 0.5) * 4.0 - bh / 2.0).max(0.0);
            let d = Detection {
                x1,
                y1,
                x2: (x1 + bw).min(in_w),
                y2: (y1 + bh).min(in_h),
                score,
            };
            if d.area().is_finite() && d.area() > 0.0 {
                dets.push(d);
            }
        }
    }
    nms(dets, iou)
}

/// Greedy non-maximum suppression.
pub fn nms(mut dets: Vec<Detection>, iou: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for d in dets {
        if kept.iter().all(|k| k.iou(&d) <= iou) {
            kept.push(d);
        }
    }
    kept
}

/// Runs a face-detection card on one image; returns the detections (which stay in memory:
/// only their count may be aggregated).
pub fn detect_faces(
    model: &Model,
    img: &Image,
    threshold: f32,
) -> Result<Vec<Detection>, PipelineError> {
    detect_faces_timed(model, img, threshold).map(|(d, _)| d)
}

/// [`detect_faces`], with the time the network itself took (the rest is pre- and
/// post-processing: the capture path's overhead).
pub fn detect_faces_timed(
    model: &Model,
    img: &Image,
    threshold: f32,
) -> Result<(Vec<Detection>, std::time::Duration), PipelineError> {
    let card = &model.card;
    let heads: Vec<usize> = card
        .outputs
        .iter()
        .enumerate()
        .filter(|(_, o)| o.postprocess == Postprocess::CenterFace)
        .map(|(i, _)| i)
        .collect();
    if heads.len() != 4 {
        return Err(unsuitable(card, "it does not have CenterFace outputs"));
    }
    let (out, took) = run_image(model, img)?;
    Ok((
        centerface_decode(
            &out[heads[0]],
            &out[heads[1]],
            &out[heads[2]],
            threshold,
            0.3,
        ),
        took,
    ))
}

fn unsuitable(card: &Card, message: &str) -> PipelineError {
    PipelineError::Unsuitable {
        model: card.id.clone(),
        message: message.into(),
    }
}

/// Runs an image card on one frame: the frame for its image input, the card's initial values
/// for the others. Returns the outputs and the time the network itself took.
fn run_image(
    model: &Model,
    img: &Image,
) -> Result<(TVec<TValue>, std::time::Duration), PipelineError> {
    let card = &model.card;
    let (ix, input) = card
        .data_inputs()
        .next()
        .ok_or_else(|| unsuitable(card, "no data input"))?;
    let InputRole::Data(pre @ Preprocess::Image { .. }) = &input.role else {
        return Err(unsuitable(card, "its data input is not an image"));
    };
    // The image for the data input (not zeros first, then the image).
    let inputs: TVec<TValue> = card
        .inputs
        .iter()
        .enumerate()
        .map(|(i, other)| {
            if i == ix {
                image_tensor(img, pre, &input.shape, input.dtype)
            } else {
                runtime::initial_tensor(other)
            }
        })
        .map(TValue::from)
        .collect();
    let t = std::time::Instant::now();
    let out = model.run(inputs)?;
    Ok((out, t.elapsed()))
}

/// An object found by a detector, in frame pixels; `class` indexes the card's class labels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Object {
    pub rect: counting::Rect,
    pub score: f32,
    pub class: usize,
}

/// IoU above which the weaker of two boxes of one class is dropped.
const OBJECT_NMS_IOU: f32 = 0.6;

/// One level of a dense detection head: its stride and its two outputs.
pub struct GflLevel<'a> {
    pub stride: usize,
    pub scores: &'a Tensor,
    pub boxes: &'a Tensor,
}

/// Decodes a Generalized-Focal-Loss head (docs/model-card.md, `gfl-scores`): at every cell and
/// wanted class scoring above `threshold`, a box whose sides are the expectations of their
/// distance distributions; then non-maximum suppression per class. Boxes are in input pixels,
/// clipped to the `w` x `h` input. Malformed tensors give no object.
pub fn gfl_decode(
    levels: &[GflLevel<'_>],
    w: usize,
    h: usize,
    wanted: &[usize],
    threshold: f32,
) -> Vec<Object> {
    let mut found = Vec::new();
    for level in levels {
        let (Some(scores), Some(boxes)) = (f32_slice(level.scores), f32_slice(level.boxes)) else {
            continue;
        };
        let (Some(&classes), Some(&values)) =
            (level.scores.shape().last(), level.boxes.shape().last())
        else {
            continue;
        };
        let (stride, cols) = (level.stride, w.div_ceil(level.stride.max(1)));
        let bins = values / 4;
        if classes == 0 || bins < 2 || cols == 0 {
            continue;
        }
        let cells = (scores.len() / classes).min(boxes.len() / values);
        for cell in 0..cells {
            let row_scores = &scores[cell * classes..(cell + 1) * classes];
            let mut sides: Option<[f32; 4]> = None;
            for &c in wanted {
                let Some(&score) = row_scores.get(c) else {
                    continue;
                };
                // NaN scores are skipped too.
                if score.is_nan() || score <= threshold {
                    continue;
                }
                let d = *sides.get_or_insert_with(|| {
                    let v = &boxes[cell * values..(cell + 1) * values];
                    std::array::from_fn(|k| {
                        expected_bin(&v[k * bins..(k + 1) * bins]) * stride as f32
                    })
                });
                let cx = ((cell % cols) as f32 + 0.5) * stride as f32;
                let cy = ((cell / cols) as f32 + 0.5) * stride as f32;
                let rect = counting::Rect {
                    x1: (cx - d[0]).max(0.0),
                    y1: (cy - d[1]).max(0.0),
                    x2: (cx + d[2]).min(w as f32),
                    y2: (cy + d[3]).min(h as f32),
                };
                if rect.is_valid() {
                    found.push(Object {
                        rect,
                        score,
                        class: c,
                    });
                }
            }
        }
    }
    nms_per_class(found, OBJECT_NMS_IOU)
}

/// A float tensor's values in order, if it is one.
fn f32_slice(t: &Tensor) -> Option<&[f32]> {
    t.to_plain_array_view::<f32>().ok()?.to_slice()
}

/// The expectation of bin index under the softmax of `logits` (a GFL side, in strides).
fn expected_bin(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return 0.0;
    }
    let (mut sum, mut weighted) = (0.0f32, 0.0f32);
    for (i, l) in logits.iter().enumerate() {
        let e = (l - max).exp();
        sum += e;
        weighted += e * i as f32;
    }
    if sum > 0.0 { weighted / sum } else { 0.0 }
}

fn rect_iou(a: &counting::Rect, b: &counting::Rect) -> f32 {
    let w = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
    let h = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
    let inter = w * h;
    let area = |r: &counting::Rect| (r.x2 - r.x1) * (r.y2 - r.y1);
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Greedy non-maximum suppression within each class.
fn nms_per_class(mut objects: Vec<Object>, iou: f32) -> Vec<Object> {
    objects.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Object> = Vec::new();
    for o in objects {
        if kept
            .iter()
            .all(|k| k.class != o.class || rect_iou(&k.rect, &o.rect) <= iou)
        {
            kept.push(o);
        }
    }
    kept
}

/// A dense detector's levels, by stride (pairs of gfl-scores and gfl-boxes outputs), and the
/// indices of the card's class labels a pipeline publishes.
pub struct ObjectHeads {
    levels: Vec<(usize, usize, usize)>,
    input: (usize, usize),
}

impl ObjectHeads {
    pub fn of(card: &Card) -> Result<ObjectHeads, PipelineError> {
        let mut levels = Vec::new();
        for (i, o) in card.outputs.iter().enumerate() {
            if o.postprocess != Postprocess::GflScores {
                continue;
            }
            let partner = card
                .outputs
                .iter()
                .position(|b| b.postprocess == Postprocess::GflBoxes && b.stride == o.stride);
            if let (Some(stride), Some(b)) = (o.stride, partner) {
                levels.push((stride as usize, i, b));
            }
        }
        let input = card.image_size().map(|(h, w)| (w, h));
        match (levels.is_empty(), input) {
            (false, Some(input)) => Ok(ObjectHeads { levels, input }),
            _ => Err(unsuitable(
                card,
                "it does not have a dense detection head (gfl-scores and gfl-boxes) on an image input",
            )),
        }
    }
}

/// Runs a detector card on one frame: objects of the `wanted` classes (indices of the card's
/// class labels) scoring above `threshold`, in the frame's pixels, and the time the network
/// took. They stay in memory: only counts may be aggregated.
pub fn detect_objects_timed(
    model: &Model,
    heads: &ObjectHeads,
    img: &Image,
    wanted: &[usize],
    threshold: f32,
) -> Result<(Vec<Object>, std::time::Duration), PipelineError> {
    let (out, took) = run_image(model, img)?;
    let levels: Vec<GflLevel<'_>> = heads
        .levels
        .iter()
        .filter_map(|&(stride, s, b)| {
            Some(GflLevel {
                stride,
                scores: out.get(s)?,
                boxes: out.get(b)?,
            })
        })
        .collect();
    let (w, h) = heads.input;
    let (sx, sy) = (img.width as f32 / w as f32, img.height as f32 / h as f32);
    let objects = gfl_decode(&levels, w, h, wanted, threshold)
        .into_iter()
        .map(|o| Object {
            rect: counting::Rect {
                x1: o.rect.x1 * sx,
                y1: o.rect.y1 * sy,
                x2: o.rect.x2 * sx,
                y2: o.rect.y2 * sy,
            },
            ..o
        })
        .collect();
    Ok((objects, took))
}

/// What an audio model says of one chunk: per frame (successive equal parts of the chunk), per
/// class, a probability. A voice-activity card gives one frame of one class (speech).
#[derive(Debug, Clone, PartialEq)]
pub struct AudioScores {
    pub frames: usize,
    pub classes: usize,
    /// Row-major: frame after frame, each with its `classes` probabilities.
    pub values: Vec<f32>,
}

impl AudioScores {
    /// The probabilities of frame `f`, one per class in the card's label order.
    pub fn frame(&self, f: usize) -> &[f32] {
        &self.values[f * self.classes..(f + 1) * self.classes]
    }
}

/// Streams audio through an audio card (voice activity, or an audio-event classifier) chunk by
/// chunk, carrying the recurrent state and the context samples; returns each chunk's scores.
pub struct AudioStream<'m> {
    model: &'m Model,
    data_ix: usize,
    score_ix: usize,
    frames: usize,
    classes: usize,
    chunk: usize,
    context: usize,
    gain: f32,
    history: Vec<f32>,
    state: Vec<Tensor>,
}

impl<'m> AudioStream<'m> {
    pub fn new(model: &'m Model) -> Result<AudioStream<'m>, PipelineError> {
        let card = &model.card;
        let unsuitable = |m: &str| PipelineError::Unsuitable {
            model: card.id.clone(),
            message: m.into(),
        };
        let (data_ix, input) = card
            .data_inputs()
            .next()
            .ok_or_else(|| unsuitable("no data input"))?;
        let InputRole::Data(Preprocess::Audio {
            chunk,
            context,
            gain,
            ..
        }) = input.role
        else {
            return Err(unsuitable("its data input is not audio"));
        };
        let (score_ix, out) = card
            .audio_scores()
            .ok_or_else(|| unsuitable("it has no speech-probability or class-scores output"))?;
        // Validated by the card: a probability is one value; class scores [1, classes] or
        // [1, frames, classes].
        let (frames, classes) = match (out.postprocess, out.shape.as_slice()) {
            (Postprocess::ClassScores, [1, c]) => (1, *c),
            (Postprocess::ClassScores, [1, f, c]) => (*f, *c),
            _ => (1, 1),
        };
        if frames == 0 || classes == 0 {
            return Err(unsuitable("its scores have no frame or no class"));
        }
        Ok(AudioStream {
            model,
            data_ix,
            score_ix,
            frames,
            classes,
            chunk,
            context,
            gain,
            history: vec![0.0; context],
            state: card.inputs.iter().map(initial_tensor).collect(),
        })
    }

    pub fn sample_rate(&self) -> u32 {
        match self.model.card.inputs[self.data_ix].role {
            InputRole::Data(Preprocess::Audio { sample_rate, .. }) => sample_rate,
            _ => unreachable!("checked in new"),
        }
    }

    pub fn chunk_len(&self) -> usize {
        self.chunk
    }

    /// Frames per chunk of the scores.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// One chunk of exactly `chunk_len()` samples in [-1, 1].
    pub fn push(&mut self, chunk: &[f32]) -> Result<AudioScores, PipelineError> {
        assert_eq!(
            chunk.len(),
            self.chunk,
            "AudioStream::push takes whole chunks"
        );
        let card = &self.model.card;
        let mut window = Vec::with_capacity(self.context + self.chunk);
        window.extend_from_slice(&self.history);
        window.extend(chunk.iter().map(|s| s * self.gain));
        if self.context > 0 {
            self.history
                .copy_from_slice(&window[window.len() - self.context..]);
        }
        let shape = card.inputs[self.data_ix].shape.clone();
        self.state[self.data_ix] = tract_ndarray::ArrayD::from_shape_vec(shape, window)
            .expect("card shape")
            .into();
        let out = self
            .model
            .run(self.state.iter().cloned().map(TValue::from).collect())?;
        for (i, input) in card.inputs.iter().enumerate() {
            if let InputRole::State { from } = &input.role {
                let o = card
                    .outputs
                    .iter()
                    .position(|o| o.name == *from)
                    .expect("validated card");
                self.state[i] = out[o].clone().into_tensor();
            }
        }
        let bad = |e: String| PipelineError::Unsuitable {
            model: card.id.clone(),
            message: format!("output `{}`: {e}", card.outputs[self.score_ix].name),
        };
        let scores = out[self.score_ix]
            .cast_to::<f32>()
            .map_err(|e| bad(format!("not numbers: {e}")))?;
        let values: Vec<f32> = scores
            .to_plain_array_view::<f32>()
            .map_err(|e| bad(e.to_string()))?
            .iter()
            .copied()
            .collect();
        if values.len() != self.frames * self.classes {
            return Err(bad(format!(
                "{} values, the card says {} frames of {} classes",
                values.len(),
                self.frames,
                self.classes
            )));
        }
        Ok(AudioScores {
            frames: self.frames,
            classes: self.classes,
            values,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resampler_matches_the_image_crate_s_triangle_filter() {
        // A frame with edges and gradients, shrunk, enlarged and reshaped.
        let (sw, sh) = (64usize, 48usize);
        let src: Vec<u8> = (0..sw * sh * 3)
            .map(|i| {
                let (p, c) = (i / 3, i % 3);
                let (x, y) = (p % sw, p / sw);
                (((x * 7 + y * 3 + c * 50) % 256) as u8)
                    ^ if (x / 8 + y / 8) % 2 == 0 { 0 } else { 0x80 }
            })
            .collect();
        let img =
            image::ImageBuffer::<image::Rgb<u8>, &[u8]>::from_raw(sw as u32, sh as u32, &src[..])
                .unwrap();
        for (dw, dh) in [(32, 24), (20, 16), (64, 48), (100, 60), (7, 5)] {
            let ours = resize_rgb(&src, sw, sh, dw, dh);
            let theirs = image::imageops::resize(
                &img,
                dw as u32,
                dh as u32,
                image::imageops::FilterType::Triangle,
            );
            let worst = ours
                .iter()
                .zip(theirs.as_raw())
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap();
            assert!(worst <= 1, "{dw}x{dh}: differs by up to {worst}");
        }
    }

    fn det(x1: f32, y1: f32, x2: f32, y2: f32, score: f32) -> Detection {
        Detection {
            x1,
            y1,
            x2,
            y2,
            score,
        }
    }

    /// A GFL level of `cols` x `rows` cells, 3 classes, 4 bins: all scores 0 and flat
    /// distances except where `set` says.
    fn level(
        cols: usize,
        rows: usize,
        set: &[(usize, usize, f32, [usize; 4])],
    ) -> (Tensor, Tensor) {
        let cells = cols * rows;
        let mut scores = vec![0f32; cells * 3];
        let mut boxes = vec![0f32; cells * 16];
        for &(cell, class, score, bins) in set {
            scores[cell * 3 + class] = score;
            for (side, b) in bins.iter().enumerate() {
                boxes[cell * 16 + side * 4 + b] = 30.0; // a softmax peaked on bin b
            }
        }
        (
            tract_ndarray::Array3::from_shape_vec((1, cells, 3), scores)
                .unwrap()
                .into(),
            tract_ndarray::Array3::from_shape_vec((1, cells, 16), boxes)
                .unwrap()
                .into(),
        )
    }

    #[test]
    fn gfl_decodes_a_cell_into_a_box_around_its_centre() {
        // 8 x 4 cells at stride 8: a 64 x 32 input. Cell 10 is column 2, row 1: centre (20, 12).
        let (s, b) = level(8, 4, &[(10, 1, 0.9, [1, 1, 2, 0])]);
        let lv = [GflLevel {
            stride: 8,
            scores: &s,
            boxes: &b,
        }];
        let found = gfl_decode(&lv, 64, 32, &[0, 1, 2], 0.5);
        assert_eq!(found.len(), 1);
        let o = found[0];
        assert_eq!((o.class, o.score), (1, 0.9));
        let r = o.rect;
        assert!(
            (r.x1 - 12.0).abs() < 1e-3 && (r.y1 - 4.0).abs() < 1e-3,
            "{r:?}"
        );
        assert!(
            (r.x2 - 36.0).abs() < 1e-3 && (r.y2 - 12.0).abs() < 1e-3,
            "{r:?}"
        );
        // A class not wanted, or below the threshold, gives nothing.
        assert!(gfl_decode(&lv, 64, 32, &[0, 2], 0.5).is_empty());
        assert!(gfl_decode(&lv, 64, 32, &[1], 0.95).is_empty());
    }

    #[test]
    fn gfl_suppresses_overlaps_within_a_class_only() {
        // Two neighbouring cells with the same large box, one of another class beside.
        let big = [3, 3, 3, 3];
        let (s, b) = level(
            8,
            4,
            &[(10, 0, 0.9, big), (11, 0, 0.8, big), (11, 2, 0.7, big)],
        );
        let lv = [GflLevel {
            stride: 8,
            scores: &s,
            boxes: &b,
        }];
        let found = gfl_decode(&lv, 64, 32, &[0, 1, 2], 0.5);
        let classes: Vec<(usize, f32)> = found.iter().map(|o| (o.class, o.score)).collect();
        assert_eq!(classes, vec![(0, 0.9), (2, 0.7)]);
    }

    #[test]
    fn gfl_survives_malformed_outputs() {
        let nan: Tensor = tract_ndarray::Array3::from_elem((1, 32, 3), f32::NAN).into();
        let (_, b) = level(8, 4, &[]);
        let short: Tensor = tract_ndarray::Array3::from_elem((1, 3, 16), 0f32).into();
        let ints: Tensor = tract_ndarray::Array3::from_elem((1, 32, 3), 1i64).into();
        for (s, b) in [(&nan, &b), (&nan, &short), (&ints, &b)] {
            let lv = [GflLevel {
                stride: 8,
                scores: s,
                boxes: b,
            }];
            assert!(gfl_decode(&lv, 64, 32, &[0, 1, 2], 0.5).is_empty());
        }
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes_and_separate_ones() {
        let kept = nms(
            vec![
                det(0., 0., 10., 10., 0.6),
                det(1., 1., 11., 11., 0.9),
                det(50., 50., 60., 60., 0.7),
            ],
            0.3,
        );
        assert_eq!(
            kept,
            vec![det(1., 1., 11., 11., 0.9), det(50., 50., 60., 60., 0.7)]
        );
    }

    #[test]
    fn centerface_decodes_a_peak_into_a_box_at_its_place() {
        let (h, w) = (8, 10);
        let mut heat = tract_ndarray::Array4::<f32>::zeros((1, 1, h, w));
        heat[[0, 0, 3, 5]] = 0.9;
        let mut scale = tract_ndarray::Array4::<f32>::zeros((1, 2, h, w));
        // exp(ln 2) * 4 = 8 pixels high and wide.
        scale.fill(2f32.ln());
        let offset = tract_ndarray::Array4::<f32>::zeros((1, 2, h, w));
        let d = centerface_decode(
            &heat.into_dyn().into(),
            &scale.into_dyn().into(),
            &offset.into_dyn().into(),
            0.5,
            0.3,
        );
        assert_eq!(d.len(), 1);
        // centre at ((5 + 0.5) * 4, (3 + 0.5) * 4) = (22, 14)
        assert_eq!(d[0], det(18., 10., 26., 18., 0.9));
    }

    #[test]
    fn resampling_keeps_duration_and_a_constant_signal() {
        let out = resample(&[0.5; 480], 48_000, 16_000);
        assert_eq!(out.len(), 160);
        assert!(out.iter().all(|&s| (s - 0.5).abs() < 1e-6));
    }
}
