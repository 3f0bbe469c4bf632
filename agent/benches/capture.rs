//! The capture path's own cost per camera frame, beside the network: the resize of a 640x480
//! frame to a 320x256 model input, and the card's normalisation into the input tensor.
//! `cargo bench -p agent --bench capture`.

use criterion::{Criterion, criterion_group, criterion_main};

fn frame(w: usize, h: usize) -> Vec<u8> {
    (0..w * h * 3)
        .map(|i| {
            let (p, c) = (i / 3, i % 3);
            ((p % w * 7 + p / w * 3 + c * 50) % 256) as u8
        })
        .collect()
}

fn capture(c: &mut Criterion) {
    let src = frame(640, 480);
    c.bench_function("resize 640x480 -> 320x256", |b| {
        b.iter(|| agent::pipeline::resize_rgb(std::hint::black_box(&src), 640, 480, 320, 256))
    });
    let card = modelcard::Card::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models/centerface-int8/card.toml"),
    )
    .expect("the bundled card");
    let (_, input) = card.data_inputs().next().expect("an image input");
    let modelcard::InputRole::Data(pre) = &input.role else {
        panic!("not a data input")
    };
    let img = agent::pipeline::Image {
        width: 640,
        height: 480,
        rgb: src.clone(),
    };
    c.bench_function("image tensor from 640x480 (resize + normalise)", |b| {
        b.iter(|| {
            agent::pipeline::image_tensor(
                std::hint::black_box(&img),
                pre,
                &input.shape,
                input.dtype,
            )
        })
    });
}

criterion_group!(benches, capture);
criterion_main!(benches);
