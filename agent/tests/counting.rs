//! Counting on a scene whose crossings are known: a real person, cut from a real photograph
//! (tests/fixtures/scene/walker.png), walks across a real street frame (background.png) along
//! set paths, through the agent's whole path: replayed frames, the real NanoDet int8 model,
//! the tracker, the counting line, the aggregator, the signed log. The counts are asserted
//! exactly, and the published records are checked to hold counts only.
//!
//! The line runs down the image at x = 320 from y = 180 to the bottom; walked from its top to
//! its bottom, its left side is x > 320: a walk to the right is "in", to the left "out".
//!
//! Paths (feet height y, one frame per step, 14 pixels a step):
//! 1. a walker crosses left to right (in 1);
//! 2. a walker crosses right to left (out 1);
//! 3. two walkers cross the line at the same time in opposite directions, their boxes
//!    overlapping as they pass (in 1, out 1);
//! 4. a walker comes to the line, steps onto it and turns back (nothing);
//! 5. a walker crosses above the line's top end (nothing: the line is a segment).
//!
//! Expected: person in 2, out 2.

mod support;

use std::path::Path;

use aggregate::Published;
use image::{RgbImage, imageops};
use support::*;

const STEP: i64 = 14;
/// Pixels of empty frames between paths: the tracker forgets a walker before the next.
const GAP_FRAMES: usize = 8;

fn load(name: &str) -> RgbImage {
    image::open(root().join("agent/tests/fixtures/scene").join(name))
        .unwrap()
        .to_rgb8()
}

/// One walker's positions (left x, feet y) frame by frame.
type Path2 = Vec<(i64, i64)>;

fn walk(from: i64, to: i64, feet: i64) -> Path2 {
    let step = if to > from { STEP } else { -STEP };
    let n = (to - from) / step;
    (0..=n).map(|i| (from + i * step, feet)).collect()
}

/// The scene: for each frame, the walkers in view.
fn scene(walker_w: i64) -> Vec<Vec<(i64, i64)>> {
    let line_x = 320;
    let mut frames: Vec<Vec<(i64, i64)>> = Vec::new();
    let mut add = |paths: Vec<Path2>| {
        let n = paths.iter().map(Vec::len).max().unwrap_or(0);
        for i in 0..n {
            frames.push(paths.iter().filter_map(|p| p.get(i).copied()).collect());
        }
        frames.extend(std::iter::repeat_n(Vec::new(), GAP_FRAMES));
    };
    // 1. left to right.
    add(vec![walk(60, 520, 300)]);
    // 2. right to left.
    add(vec![walk(520, 60, 330)]);
    // 3. two at once, in opposite directions, overlapping as they pass at the line.
    add(vec![walk(60, 540, 280), walk(540 + 6, 60 + 6, 310)]);
    // 4. up to the line, a step onto it (the box straddles it), and back.
    let onto = line_x - walker_w + 20;
    let mut there = walk(60, onto, 320);
    let back: Path2 = there.iter().rev().copied().collect();
    there.extend(back);
    add(vec![there]);
    // 5. above the line's top end (feet at y = 170, the line starts at y = 180).
    add(vec![walk(60, 560, 170)]);
    frames
}

fn render(dir: &Path) -> usize {
    let background = load("background.png");
    let walker = load("walker.png");
    let frames = scene(walker.width() as i64);
    std::fs::create_dir_all(dir).unwrap();
    for (i, walkers) in frames.iter().enumerate() {
        let mut img = background.clone();
        for &(x, feet) in walkers {
            imageops::overlay(&mut img, &walker, x, feet - walker.height() as i64);
        }
        img.save(dir.join(format!("f{i:04}.png"))).unwrap();
    }
    frames.len()
}

#[test]
fn line_counts_on_the_known_crossings_scene_are_exact() {
    let pipeline = "\n[[pipeline]]\nname = \"street\"\n\
        model = \"{root}/models/nanodet-int8/card.toml\"\n\
        aggregates = [\"count\", \"line_count\"]\nwindow = \"1h\"\nthreshold = 0.4\n\
        classes = [\"person\", \"bicycle\", \"car\"]\n\
        [[pipeline.line]]\nname = \"passage\"\nfrom = [320, 180]\nto = [320, 360]\nin = \"left\"\n\
        [pipeline.source]\nkind = \"replay\"\npath = \"frames\"\nfps = 5.0\nspeed = \"accelerated\"\n\
        start = \"2026-11-30T10:00:00Z\"\n\
        [pipeline.privacy]\nk = 1\n";
    let (dir, config) = device(pipeline);
    let n = render(&dir.path().join("frames"));
    let o = agent(&["run", "--config", config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let records = records(dir.path());
    assert!(verify(dir.path()).status.success());
    let mut ins = 0;
    let mut outs = 0;
    let mut frames = 0;
    for r in &records {
        let line = &r.aggregates.line_count["passage"];
        assert_eq!(
            line.keys().collect::<Vec<_>>(),
            ["bicycle", "car", "person"],
            "every class of the line, zeros included"
        );
        let v = |p: &Published| match p {
            Published::Value(v) => *v,
            Published::Suppressed => panic!("k = 1 suppresses nothing"),
        };
        ins += v(&line["person"].inward);
        outs += v(&line["person"].outward);
        for c in ["bicycle", "car"] {
            assert_eq!(
                (v(&line[c].inward), v(&line[c].outward)),
                (0, 0),
                "no {c} in the scene"
            );
        }
        frames += r.aggregates.count["person"].frames;
    }
    assert_eq!(frames, n as u64, "every frame analysed");
    assert_eq!((ins, outs), (2, 2), "person crossings in and out");
}

/// What a counting run publishes is counts: every record parses as the schema (which has no
/// field for a position, a box, a track or an image), its keys are the pipeline's classes and
/// line, and its values are integers or "suppressed".
#[test]
fn a_counting_run_publishes_counts_only() {
    let pipeline = "\n[[pipeline]]\nname = \"street\"\n\
        model = \"{root}/models/nanodet-int8/card.toml\"\n\
        aggregates = [\"count\", \"presence_share\", \"line_count\"]\nwindow = \"10s\"\n\
        classes = [\"person\", \"car\"]\n\
        [[pipeline.line]]\nname = \"passage\"\nfrom = [320, 180]\nto = [320, 360]\nin = \"right\"\n\
        [pipeline.source]\nkind = \"replay\"\npath = \"frames\"\nfps = 5.0\nspeed = \"accelerated\"\n\
        start = \"2026-11-30T10:00:00Z\"\n\
        [pipeline.privacy]\nk = 2\nunit = \"person-window\"\n\
        noise = { mechanism = \"geometric\", epsilon = 1.0, budget_per_day = 8640 }\n";
    let (dir, config) = device(pipeline);
    render(&dir.path().join("frames"));
    let o = agent(&["run", "--config", config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let log = std::fs::read_dir(dir.path().join("data/log")).unwrap();
    assert!(log.count() > 0);
    let records = records(dir.path());
    assert!(records.len() >= 2);
    for r in &records {
        let json = serde_json::to_value(&r.aggregates).unwrap();
        let kinds: Vec<&String> = json.as_object().unwrap().keys().collect();
        for k in &kinds {
            assert!(
                ["count", "presence_share", "line_count"].contains(&k.as_str()),
                "unexpected aggregate {k}"
            );
        }
        let mut leaves = Vec::new();
        collect_leaves(&json, "", &mut leaves);
        for (path, leaf) in &leaves {
            let ok = leaf.is_u64() || leaf.as_str() == Some("suppressed");
            assert!(ok, "{path} = {leaf}: not a count");
            let keys: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            assert!(
                keys.iter().all(|k| [
                    "count",
                    "presence_share",
                    "line_count",
                    "person",
                    "car",
                    "passage",
                    "frames",
                    "max",
                    "total",
                    "present_frames",
                    "share_ppm",
                    "in",
                    "out"
                ]
                .contains(k)),
                "{path}: a key that is not a class, a line or a count"
            );
        }
    }
    // Nothing but the log, the budget and the keys in the device's folder: no frame kept.
    let mut stored = Vec::new();
    collect_files(&dir.path().join("data"), &mut stored);
    for f in &stored {
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
        assert!(
            !["png", "jpg", "jpeg", "raw", "rgb"].contains(&ext),
            "{} looks like an image",
            f.display()
        );
    }
}

fn collect_leaves(v: &serde_json::Value, path: &str, out: &mut Vec<(String, serde_json::Value)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                collect_leaves(v, &format!("{path}/{k}"), out);
            }
        }
        other => out.push((path.to_string(), other.clone())),
    }
}

fn collect_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, out);
        } else {
            out.push(p);
        }
    }
}
