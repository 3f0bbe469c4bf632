//! Real models on the bundled samples against what is known to be in them: the speech segments
//! of models/samples/speech.wav (models/samples/manifest.toml) and the two faces of
//! models/samples/people.png.

use std::path::{Path, PathBuf};

use agent::pipeline::{self, AudioStream};
use modelcard::Card;
use runtime::{LoadOptions, Model};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn model(id: &str) -> Model {
    let card = Card::load(&root().join(format!("models/{id}/card.toml"))).unwrap();
    Model::load(&card, LoadOptions::default()).unwrap()
}

/// (kind, start sample, end sample) from the samples' manifest.
fn segments() -> Vec<(String, usize, usize)> {
    let text = std::fs::read_to_string(root().join("models/samples/manifest.toml")).unwrap();
    let v: toml::Table = toml::from_str(&text).unwrap();
    v["speech"]["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().to_string(),
                s["start"].as_integer().unwrap() as usize,
                s["end"].as_integer().unwrap() as usize,
            )
        })
        .collect()
}

#[test]
fn silero_finds_speech_where_the_sample_has_speech() {
    let m = model("silero-vad-16k");
    let audio = pipeline::read_wav(&root().join("models/samples/speech.wav")).unwrap();
    assert_eq!(audio.sample_rate, 16_000);
    let mut stream = AudioStream::new(&m).unwrap();
    let n = stream.chunk_len();
    let flags: Vec<bool> = audio
        .samples
        .chunks_exact(n)
        .map(|c| stream.push(c).unwrap().values[0] >= 0.5)
        .collect();
    for (kind, start, end) in segments() {
        // Chunks entirely inside the segment.
        let chunks: Vec<bool> = (start.div_ceil(n)..end / n).map(|i| flags[i]).collect();
        let share = chunks.iter().filter(|&&f| f).count() as f64 / chunks.len() as f64;
        eprintln!(
            "{kind:>13} {:>6.2}s: speech in {:.1}% of chunks",
            (end - start) as f64 / 16e3,
            share * 100.0
        );
        if kind.contains("speech") {
            // Speech with its pauses between words: most chunks, not all.
            assert!(
                share > 0.6,
                "{kind} at {start}..{end}: only {share:.2} flagged"
            );
        } else {
            assert!(
                share < 0.02,
                "{kind} at {start}..{end}: {share:.2} flagged as speech"
            );
        }
    }
}

#[test]
fn centerface_counts_the_two_faces_of_the_sample() {
    let img = pipeline::read_image(&root().join("models/samples/people.png")).unwrap();
    for id in ["centerface-int8", "centerface"] {
        let card = root().join(format!("models/{id}/card.toml"));
        let card = Card::load(&card).unwrap();
        if card.fetched && !card.file.exists() {
            panic!(
                "{} is missing: run `cargo xtask models fetch` (cargo xtask test does)",
                card.file.display()
            );
        }
        let m = Model::load(&card, LoadOptions::default()).unwrap();
        let faces = pipeline::detect_faces(&m, &img, 0.5).unwrap();
        assert_eq!(faces.len(), 2, "{id}: {faces:?}");
        // One face per panel: the left one (x < 160) and the right one.
        let mut centres: Vec<f32> = faces.iter().map(|d| (d.x1 + d.x2) / 2.0).collect();
        centres.sort_by(f32::total_cmp);
        assert!(
            centres[0] < 160.0 && centres[1] > 160.0,
            "{id}: {centres:?}"
        );
    }
}
