//! `edge-agent model vet`: a model prepared in a child process under memory and time limits.

use std::path::PathBuf;
use std::process::Command;

fn card(id: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../models/{id}/card.toml"))
}

fn vet(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(["model", "vet"])
        .args(args)
        .output()
        .expect("run edge-agent");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_model_within_the_limits_is_accepted() {
    let card = card("silero-vad-16k");
    let (code, text) = vet(&[card.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("ok ") && text.contains("prepared and run in a child process"),
        "{text}"
    );
}

#[test]
fn a_model_needing_more_memory_than_allowed_is_refused() {
    let card = card("silero-vad-16k");
    let (code, text) = vet(&[card.to_str().unwrap(), "--memory-mib", "4"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("used more than 4 MiB"), "{text}");
    assert!(
        text.contains("silero-vad-16k/card.toml"),
        "names the card: {text}"
    );
}

#[test]
fn a_model_taking_longer_than_allowed_is_refused() {
    // Loading the int8 CenterFace takes hundreds of milliseconds; the limit is 10 ms.
    let card = card("centerface-int8");
    let (code, text) = vet(&[card.to_str().unwrap(), "--seconds", "0.01"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("took longer than 0.01 s"), "{text}");
}
