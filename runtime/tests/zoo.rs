//! The zoo (models/zoo, `cargo xtask models zoo`): int8 networks of shapes that third-party
//! models use and the bundled ones do not. Their golden checks run with the bundled models'
//! (`cargo xtask models check`); here, that the agent's kernels take them: a rewrite that stops
//! firing leaves the model right but slow, which no golden check sees.

use std::path::Path;

use runtime::{LoadOptions, Model};

/// (zoo model, quantised convolutions, convolutions left in float, byte max-poolings)
const EXPECTED: &[(&str, usize, usize, usize)] = &[
    ("zoo-audio-cnn", 5, 0, 2),
    // A dilated convolution: its patches gathered with spaced taps.
    ("zoo-audio-cnn-dilated", 5, 0, 2),
    // Convolutions without bias (tract gives them a scalar zero).
    ("zoo-audio-cnn-nobias", 5, 0, 2),
    // `auto_pad = SAME_UPPER`.
    ("zoo-audio-cnn-same", 5, 0, 2),
    // 1x1 convolutions without bias, the bias a separate Add after the quantiser.
    ("zoo-bias-apart", 2, 0, 0),
    // The excitation's two 1x1 convolutions on a 1x1 map stay in float (tract's product is
    // faster below 16 pixels); the depthwise one is counted by its own rewrite.
    ("zoo-se-block", 3, 2, 0),
    ("zoo-softmax-head", 2, 0, 0),
];

fn load(name: &str) -> Model {
    let card = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/zoo")
        .join(name)
        .join("card.toml");
    let card = modelcard::Card::load(&card).unwrap_or_else(|e| panic!("{name}: {e}"));
    Model::load(&card, LoadOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn the_kernels_take_the_zoo_s_convolutions() {
    let zoo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/zoo");
    let mut on_disk: Vec<String> = std::fs::read_dir(&zoo)
        .expect("models/zoo")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("card.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = EXPECTED.iter().map(|e| e.0.to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "every zoo model has its expectation here");
    for &(name, int8, float, pools) in EXPECTED {
        let model = load(name);
        let r = &model.rewrites;
        let onnx_convs = model.onnx_ops.get("Conv").copied().unwrap_or(0);
        assert_eq!(
            (
                r.int8_convolutions,
                onnx_convs - r.int8_convolutions - r.depthwise,
                r.byte_pools
            ),
            (int8, float, pools),
            "{name}: (QConv, convolutions in float, byte pools); optimised operators {:?}",
            model.optimised_ops
        );
    }
}
