//! The browser's verifier: [`verify::export_since`] behind a few plain WebAssembly exports, so
//! that the page needs no generated glue and no JavaScript package.
//!
//! The page's protocol (see `hub/assets/verify.js`):
//! 1. for each input `i` (0: the device's verifier key(s), one per line; 1: the records export;
//!    2: the signed checkpoint; 3: the checkpoint verified before, as JSON
//!    `{"size":N,"root":"<hex>","proof":["<hex>",...]}`, or empty), call `input(i, len)`: it
//!    returns the address of `len` bytes of the module's memory, where the page writes the
//!    input's UTF-8 bytes;
//! 2. call `verify()`: it returns the length of the verdict, a JSON object (see [`verdict`]),
//!    whose bytes start at `output()`.
//!
//! No `unsafe`: the buffers are ordinary vectors that this module owns; the page writes into
//! them between calls, while no Rust code runs.

use std::cell::RefCell;

use serde::Deserialize;
use serde_json::{Value, json};
use verify::{Extends, Previous, Verified};

const INPUTS: usize = 4;

thread_local! {
    static INPUT: RefCell<[Vec<u8>; INPUTS]> = RefCell::new(Default::default());
    static OUTPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Makes input `slot` a buffer of `len` zero bytes and returns its address (0 for a slot that
/// does not exist).
#[unsafe(no_mangle)]
pub extern "C" fn input(slot: u32, len: u32) -> u32 {
    INPUT.with(|i| {
        let mut i = i.borrow_mut();
        match i.get_mut(slot as usize) {
            Some(buf) => {
                *buf = vec![0; len as usize];
                buf.as_mut_ptr() as usize as u32
            }
            None => 0,
        }
    })
}

/// Verifies the inputs; returns the verdict's length in bytes.
#[unsafe(no_mangle)]
pub extern "C" fn verify() -> u32 {
    let text = INPUT.with(|i| {
        let mut i = i.borrow_mut();
        let taken: Vec<Vec<u8>> = i.iter_mut().map(std::mem::take).collect();
        let s = |b: &Vec<u8>| String::from_utf8_lossy(b).into_owned();
        verdict(&s(&taken[0]), &s(&taken[1]), &s(&taken[2]), &s(&taken[3])).to_string()
    });
    OUTPUT.with(|o| {
        let mut o = o.borrow_mut();
        *o = text.into_bytes();
        o.len() as u32
    })
}

/// The address of the last verdict.
#[unsafe(no_mangle)]
pub extern "C" fn output() -> u32 {
    OUTPUT.with(|o| o.borrow().as_ptr() as usize as u32)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviousJson {
    size: u64,
    root: String,
    #[serde(default)]
    proof: Option<Vec<String>>,
}

fn problem(kind: &str, en: String, fr: String) -> Value {
    json!({"ok": false, "problem": {"kind": kind, "en": en, "fr": fr}})
}

/// The verdict, a JSON object:
/// - `ok`: whether everything verified;
/// - `origin`, `records`, `from_seq`, `checkpoint_size`, `root`, `first_window` (RFC 3339),
///   `last_window` (`{"start", "length_ms"}`), `models` (`[{"id", "version", "sha256",
///   "records", "first_seq", "last_seq"}]`, one per model): what verified (before the problem, when there is one);
/// - `previous`: `"by-records"`, `"by-proof"`, `"unchecked"` or null (no previous checkpoint);
/// - `problem`: null, or `{"kind", "en", "fr"}`: the first problem, in English and French.
pub fn verdict(keys: &str, records: &str, checkpoint: &str, previous: &str) -> Value {
    let mut parsed = Vec::new();
    for (n, line) in keys.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match audit::VerifierKey::parse(line.trim()) {
            Ok(k) => parsed.push(k),
            Err(e) => {
                return problem(
                    "key",
                    format!("key file, line {}: not a verifier key ({e})", n + 1),
                    format!(
                        "fichier de clé, ligne {} : pas une clé publique ({e})",
                        n + 1
                    ),
                );
            }
        }
    }
    let previous = if previous.trim().is_empty() {
        None
    } else {
        let p: PreviousJson = match serde_json::from_str(previous) {
            Ok(p) => p,
            Err(e) => {
                return problem(
                    "previous",
                    format!("the previous checkpoint is unreadable: {e}"),
                    format!("le point de contrôle précédent est illisible : {e}"),
                );
            }
        };
        let proof = match p.proof {
            Some(hs) => match hs
                .iter()
                .map(|h| verify::unhex_hash(h))
                .collect::<Option<Vec<_>>>()
            {
                Some(p) => Some(p),
                None => {
                    return problem(
                        "previous",
                        "the consistency proof is not a list of 64-hex-digit hashes".into(),
                        "la preuve de cohérence n'est pas une liste d'empreintes de 64 chiffres hexadécimaux".into(),
                    );
                }
            },
            None => None,
        };
        let Some(root) = verify::unhex_hash(&p.root) else {
            return problem(
                "previous",
                "the previous checkpoint's root is not 64 hex digits".into(),
                "la racine du point de contrôle précédent n'a pas 64 chiffres hexadécimaux".into(),
            );
        };
        Some(Previous {
            size: p.size,
            root,
            proof,
        })
    };
    match verify::export_since(&parsed, records, checkpoint, previous.as_ref()) {
        Ok(v) => summary(&v, Value::Null),
        Err(f) => summary(
            &f.before,
            json!({"kind": f.problem.kind(), "en": f.problem.to_string(), "fr": f.problem.fr()}),
        ),
    }
}

fn summary(v: &Verified, problem: Value) -> Value {
    json!({
        "ok": problem.is_null(),
        "origin": v.origin,
        "records": v.records,
        "from_seq": v.from_seq,
        "checkpoint_size": v.checkpoint_size,
        "root": v.root,
        "first_window": v.first_window,
        "last_window": v.last_window.as_ref().map(|(s, l)| json!({"start": s, "length_ms": l})),
        "models": v.models.iter().map(|m| json!({
            "id": m.id, "version": m.version, "sha256": m.sha256, "records": m.records,
            "first_seq": m.first_seq, "last_seq": m.last_seq,
        })).collect::<Vec<_>>(),
        "previous": v.previous.map(|p| match p {
            Extends::ByRecords => "by-records",
            Extends::ByProof => "by-proof",
            Extends::Unchecked => "unchecked",
        }),
        "problem": problem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> verify::pack::Case {
        verify::pack::cases()
            .into_iter()
            .find(|c| c.name.ends_with("-valid"))
            .expect("the pack's valid case")
    }

    /// The page's protocol, natively: inputs written into the buffers, the verdict read back.
    #[test]
    fn the_exports_carry_the_inputs_and_the_verdict() {
        let c = valid();
        for (slot, name) in ["device.vkey", "records.jsonl", "checkpoint.txt"]
            .iter()
            .enumerate()
        {
            let text = c.file(name).unwrap().as_bytes();
            let at = input(slot as u32, text.len() as u32);
            INPUT.with(|i| {
                let mut i = i.borrow_mut();
                assert_eq!(i[slot].as_ptr() as usize as u32, at);
                i[slot].copy_from_slice(text);
            });
        }
        assert_ne!(input(3, 0), 0, "an empty previous checkpoint");
        assert_eq!(input(4, 10), 0, "no fifth input");
        let n = verify() as usize;
        let out = OUTPUT.with(|o| o.borrow().clone());
        assert_eq!(out.len(), n);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["records"], 24);
        assert_eq!(v["models"].as_array().unwrap().len(), 2, "a model update");
        assert_eq!(v["models"][1]["version"], "1.1.0");
        assert_eq!(v["models"][1]["first_seq"], 16);
        assert_eq!(v["models"][1]["records"], 8);
        assert_eq!(v["first_window"], "2026-03-01T00:00:00.000Z");
        assert_eq!(v["previous"], Value::Null);
    }

    #[test]
    fn bad_inputs_are_named() {
        let c = valid();
        let (k, r, cp) = (
            c.file("device.vkey").unwrap(),
            c.file("records.jsonl").unwrap(),
            c.file("checkpoint.txt").unwrap(),
        );
        let v = verdict("not a key", r, cp, "");
        assert_eq!(v["problem"]["kind"], "key", "{v}");
        assert!(v["problem"]["fr"].as_str().unwrap().contains("ligne 1"));
        let v = verdict(k, r, cp, "{\"size\":3}");
        assert_eq!(v["problem"]["kind"], "previous", "{v}");
        let v = verdict(k, r, cp, "{\"size\":3,\"root\":\"00\"}");
        assert_eq!(v["problem"]["kind"], "previous", "{v}");
        let v = verdict(
            k,
            r,
            cp,
            &format!(
                "{{\"size\":3,\"root\":\"{}\",\"proof\":[\"zz\"]}}",
                "0".repeat(64)
            ),
        );
        assert_eq!(v["problem"]["kind"], "previous", "{v}");
        // A previous root that the records do not give: rewritten.
        let v = verdict(
            k,
            r,
            cp,
            &format!("{{\"size\":3,\"root\":\"{}\"}}", "0".repeat(64)),
        );
        assert_eq!(v["problem"]["kind"], "rewritten", "{v}");
        assert_eq!(v["ok"], false);
    }
}
