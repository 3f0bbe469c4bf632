//! Bad input never panics: a table of broken models, cards and golden files, each run through
//! the real command line, each expected to fail with a clear message and a non-zero exit.

use std::path::{Path, PathBuf};
use std::process::Command;

use modelcard::Card;
use runtime::{LoadOptions, Model, hex};
use sha2::{Digest, Sha256};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A private copy of the fixtures, so each case can break its own.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(&fixtures(), dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Rewrites the card's top-level `sha256 = ...` line.
fn set_card_sha(card: &Path, sha: &str) {
    let text = std::fs::read_to_string(card).unwrap();
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("sha256 =") {
                format!("sha256 = \"{sha}\"")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(card, out.join("\n") + "\n").unwrap();
}

/// Replaces the model file's bytes and (optionally) the card's sha256 to match, so that the
/// parser itself is exercised rather than the hash check.
fn write_model(dir: &Path, bytes: &[u8], update_sha: bool) {
    std::fs::write(dir.join("tiny_float.onnx"), bytes).unwrap();
    if update_sha {
        set_card_sha(&dir.join("tiny_float.card.toml"), &sha256(bytes));
    }
}

fn edit_card(dir: &Path, from: &str, to: &str) {
    let card = dir.join("tiny_float.card.toml");
    let text = std::fs::read_to_string(&card).unwrap();
    assert!(text.contains(from), "fixture card lacks `{from}`");
    std::fs::write(&card, text.replacen(from, to, 1)).unwrap();
}

fn model_proto(dir: &Path) -> tract_onnx::pb::ModelProto {
    use prost::Message;
    tract_onnx::pb::ModelProto::decode(
        std::fs::read(dir.join("tiny_float.onnx"))
            .unwrap()
            .as_slice(),
    )
    .unwrap()
}

fn save_proto(dir: &Path, proto: &tract_onnx::pb::ModelProto) {
    use prost::Message;
    write_model(dir, &proto.encode_to_vec(), true);
}

struct Case {
    name: &'static str,
    card: &'static str,
    break_it: fn(&Path),
    args: &'static [&'static str],
    exit: i32,
    /// Every one of these must appear in stderr or stdout.
    says: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "clean model passes",
        card: "tiny_float.card.toml",
        break_it: |_| {},
        args: &[],
        exit: 0,
        says: &["all outputs within tolerance"],
    },
    Case {
        name: "model file a symbolic link out of the card's folder",
        card: "tiny_float.card.toml",
        break_it: |d| {
            // The same bytes (the sha256 would pass), but not beside the card.
            std::fs::remove_file(d.join("tiny_float.onnx")).unwrap();
            std::os::unix::fs::symlink(
                fixtures().join("tiny_float.onnx"),
                d.join("tiny_float.onnx"),
            )
            .unwrap();
        },
        args: &[],
        exit: 2,
        says: &["outside the card's folder", "tiny_float.onnx"],
    },
    Case {
        name: "empty model file",
        card: "tiny_float.card.toml",
        break_it: |d| write_model(d, b"", true),
        args: &[],
        exit: 2,
        says: &["tiny_float.onnx", "the file is empty"],
    },
    Case {
        name: "truncated model file",
        card: "tiny_float.card.toml",
        break_it: |d| {
            let b = std::fs::read(d.join("tiny_float.onnx")).unwrap();
            write_model(d, &b[..b.len() / 2], true);
        },
        args: &[],
        exit: 2,
        says: &["tiny_float.onnx"],
    },
    Case {
        name: "bit flip caught by the sha256",
        card: "tiny_float.card.toml",
        break_it: |d| {
            let mut b = std::fs::read(d.join("tiny_float.onnx")).unwrap();
            b[10] ^= 0x04;
            write_model(d, &b, false);
        },
        args: &[],
        exit: 2,
        says: &[
            "tiny_float.onnx",
            "sha256",
            "not the one the card describes",
        ],
    },
    Case {
        name: "garbage bytes",
        card: "tiny_float.card.toml",
        break_it: |d| write_model(d, &[0xff; 64], true),
        args: &[],
        exit: 2,
        says: &["tiny_float.onnx", "not a valid ONNX file"],
    },
    Case {
        name: "card sha256 does not match",
        card: "tiny_float.card.toml",
        break_it: |d| set_card_sha(&d.join("tiny_float.card.toml"), &"0".repeat(64)),
        args: &[],
        exit: 2,
        says: &["sha256", "tiny_float.card.toml"],
    },
    Case {
        name: "card sha256 is not hex",
        card: "tiny_float.card.toml",
        break_it: |d| set_card_sha(&d.join("tiny_float.card.toml"), "abc"),
        args: &[],
        exit: 2,
        says: &["tiny_float.card.toml", "field `sha256`"],
    },
    Case {
        name: "unknown field in the card",
        card: "tiny_float.card.toml",
        break_it: |d| edit_card(d, "schema = 1", "schema = 1\ncolour = \"blue\""),
        args: &[],
        exit: 2,
        says: &["tiny_float.card.toml", "unknown field", "colour"],
    },
    Case {
        name: "wrong input shape in the card",
        card: "tiny_float.card.toml",
        break_it: |d| edit_card(d, "shape = [1, 4]", "shape = [1, 5]"),
        args: &[],
        exit: 2,
        says: &["tiny_float.card.toml", "inputs[0].shape"],
    },
    Case {
        name: "wrong input type in the card",
        card: "tiny_float.card.toml",
        break_it: |d| edit_card(d, "dtype = \"f32\"", "dtype = \"i64\""),
        args: &[],
        exit: 2,
        says: &["tiny_float.card.toml", "inputs[0].dtype"],
    },
    Case {
        name: "missing golden vectors",
        card: "tiny_float.card.toml",
        break_it: |d| std::fs::remove_dir_all(d.join("tiny_float_golden")).unwrap(),
        args: &[],
        exit: 2,
        says: &["tiny_float_golden", "check.vectors"],
    },
    Case {
        name: "missing golden output file",
        card: "tiny_float.card.toml",
        break_it: |d| {
            std::fs::remove_file(d.join("tiny_float_golden/test_data_set_0/output_0.pb")).unwrap()
        },
        args: &[],
        exit: 2,
        says: &["test_data_set_0", "0 output files"],
    },
    Case {
        name: "corrupt golden file",
        card: "tiny_float.card.toml",
        break_it: |d| {
            std::fs::write(
                d.join("tiny_float_golden/test_data_set_0/input_0.pb"),
                [0xff; 7],
            )
            .unwrap()
        },
        args: &[],
        exit: 2,
        says: &["input_0.pb"],
    },
    Case {
        name: "card path escaping its folder",
        card: "tiny_float.card.toml",
        break_it: |d| {
            edit_card(
                d,
                "file = \"tiny_float.onnx\"",
                "file = \"../tiny_float.onnx\"",
            )
        },
        args: &[],
        exit: 2,
        says: &["field `file`", "inside the card's folder"],
    },
    Case {
        name: "external data",
        card: "tiny_float.card.toml",
        break_it: |d| {
            let mut p = model_proto(d);
            let t = &mut p.graph.as_mut().unwrap().initializer[0];
            t.data_location = Some(tract_onnx::pb::tensor_proto::DataLocation::External as i32);
            t.external_data
                .push(tract_onnx::pb::StringStringEntryProto {
                    key: "location".into(),
                    value: "../../etc/passwd".into(),
                });
            save_proto(d, &p);
        },
        args: &[],
        exit: 2,
        says: &["tiny_float.onnx", "external data"],
    },
    Case {
        name: "huge declared dimensions",
        card: "tiny_float.card.toml",
        break_it: |d| {
            let mut p = model_proto(d);
            p.graph.as_mut().unwrap().initializer[0].dims = vec![1 << 40, 1 << 40];
            save_proto(d, &p);
        },
        args: &[],
        exit: 2,
        says: &["tiny_float.onnx", "absurd dimensions"],
    },
    Case {
        name: "tensor bytes do not match its dimensions",
        card: "tiny_float.card.toml",
        break_it: |d| {
            let mut p = model_proto(d);
            let t = &mut p.graph.as_mut().unwrap().initializer[0];
            t.dims = vec![1000];
            save_proto(d, &p);
        },
        args: &[],
        exit: 2,
        says: &["tiny_float.onnx", "the file is corrupt"],
    },
    Case {
        name: "QOperator model",
        card: "qlinear_add.card.toml",
        break_it: |_| {},
        args: &[],
        exit: 2,
        says: &["qlinear_add.onnx", "unsupported operator QLinear", "QDQ"],
    },
    Case {
        name: "If with branches of different shapes",
        card: "if_shapes.card.toml",
        break_it: |_| {},
        args: &[],
        exit: 2,
        says: &["if_shapes.onnx", "If node", "then_branch"],
    },
    Case {
        name: "quantised softmax: wrong numbers are caught without the workaround",
        card: "softmax_qdq.card.toml",
        break_it: |_| {},
        args: &["--no-workarounds"],
        exit: 1,
        says: &["FAIL", "model check: FAILED"],
    },
    Case {
        name: "quantised softmax: the workaround gives onnxruntime's numbers",
        card: "softmax_qdq.card.toml",
        break_it: |_| {},
        args: &[],
        exit: 0,
        says: &["runs in float", "all outputs within tolerance"],
    },
];

#[test]
fn bad_inputs_fail_clearly_without_panicking() {
    let mut failures = Vec::new();
    for case in CASES {
        let dir = workspace();
        (case.break_it)(dir.path());
        let out = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
            .args(["model", "check"])
            .args(case.args)
            .arg(dir.path().join(case.card))
            .output()
            .expect("run edge-agent");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let code = out.status.code().unwrap_or(-1);
        let missing: Vec<&&str> = case.says.iter().filter(|s| !text.contains(**s)).collect();
        if code != case.exit || !missing.is_empty() || text.contains("panicked") {
            failures.push(format!(
                "case `{}`: exit {code} (want {}), missing {missing:?}\n{text}",
                case.name, case.exit
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n---\n")
    );
}

/// Every single-bit flip of a valid model, with the card's sha256 updated to match, either
/// loads or fails with an error: never a panic.
#[test]
fn no_bit_flip_of_a_model_panics() {
    let dir = workspace();
    let good = std::fs::read(dir.path().join("tiny_float.onnx")).unwrap();
    let card_text = std::fs::read_to_string(dir.path().join("tiny_float.card.toml")).unwrap();
    // A panic caught by the runtime's guard still counts: the guard is a last line of
    // defence, and each panic it catches is a loader bug to fix.
    static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    // Panics of this test's thread only: other tests run in parallel in this process.
    let me = std::thread::current().id();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == me {
            PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        eprintln!("panic: {info}");
    }));
    let (mut loaded, mut rejected) = (0, 0);
    for byte in 0..good.len() {
        for bit in [0u8, 3, 7] {
            let mut b = good.clone();
            b[byte] ^= 1 << bit;
            std::fs::write(dir.path().join("tiny_float.onnx"), &b).unwrap();
            let text: String = card_text
                .lines()
                .map(|l| {
                    if l.starts_with("sha256 =") {
                        format!("sha256 = \"{}\"\n", sha256(&b))
                    } else {
                        format!("{l}\n")
                    }
                })
                .collect();
            let card = Card::parse(&dir.path().join("tiny_float.card.toml"), &text).unwrap();
            let result =
                std::panic::catch_unwind(|| Model::load(&card, LoadOptions::default()).map(|_| ()));
            match result {
                Ok(Ok(())) => loaded += 1,
                Ok(Err(_)) => rejected += 1,
                Err(_) => panic!("loading with byte {byte} bit {bit} flipped panicked"),
            }
        }
    }
    let _ = std::panic::take_hook();
    assert_eq!(
        PANICS.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "panics while loading flipped models"
    );
    // Both outcomes occur: flips in weights still load, flips in structure are rejected.
    assert!(
        loaded > 0 && rejected > 0,
        "loaded {loaded}, rejected {rejected}"
    );
    eprintln!(
        "{} flipped models: {loaded} loaded, {rejected} rejected, no panic",
        loaded + rejected
    );
}
