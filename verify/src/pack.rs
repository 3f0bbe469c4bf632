//! The specification pack (`docs/spec/vectors/`): a device's published history, valid and
//! tampered in every way the formats must catch, each case with the verdict a verifier must
//! reach. Outside implementers run their verifier on it; the project runs `hub verify`, this
//! crate and the browser's WebAssembly build on it in its tests.
//!
//! Each case is a folder with `device.vkey` (the device's verifier key), `records.jsonl` (the
//! register's export: one envelope per line, frontier lines where records were removed),
//! `checkpoint.txt` (a signed checkpoint note), optionally `previous.txt` (a checkpoint the
//! reader verified on an earlier visit: the new one must extend it) and `expected.json`
//! (`{"description", "verdict": "ok" | "problem", "kind", "records"}`: for `ok`, the number
//! of records checked one by one; for `problem`, the kind, as [`Problem::kind`] names it).
//!
//! Everything is deterministic (keys from fixed seeds, Ed25519 signatures are deterministic),
//! so `cargo xtask spec-pack` regenerates the same bytes and a test checks the committed pack
//! is current.

use std::collections::BTreeMap;

use audit::merkle::leaf_hash;
use audit::{Checkpoint, Frontier, SignerKey};
use serde_json::{Value, json};

#[cfg(doc)]
use crate::export::Problem;
use crate::export::frontier_line;

const TERRITORY: &str = "fr-exemple";
const DEVICE: &str = "capteur-1";
const RECORDS: u64 = 24;
/// 2026-03-01T00:00:00Z.
const T0: i64 = 1_772_323_200_000;
const WINDOW_MS: i64 = 900_000;
/// The model changes at this seq (an update): records before it name version 1.0.0.
const UPDATE_AT: u64 = 16;

/// One case of the pack.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    /// The files, by name: `device.vkey`, `records.jsonl`, `checkpoint.txt`, maybe
    /// `previous.txt`, and `expected.json`.
    pub files: BTreeMap<String, String>,
}

/// What a case expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    Ok { records: u64 },
    Problem { kind: String },
}

impl Case {
    /// The verdict `expected.json` states.
    pub fn expected(&self) -> Result<Expected, String> {
        let text = self
            .files
            .get("expected.json")
            .ok_or_else(|| format!("{}: no expected.json", self.name))?;
        let v: Value =
            serde_json::from_str(text).map_err(|e| format!("{}/expected.json: {e}", self.name))?;
        match v["verdict"].as_str() {
            Some("ok") => Ok(Expected::Ok {
                records: v["records"]
                    .as_u64()
                    .ok_or_else(|| format!("{}/expected.json: `records`", self.name))?,
            }),
            Some("problem") => Ok(Expected::Problem {
                kind: v["kind"]
                    .as_str()
                    .ok_or_else(|| format!("{}/expected.json: `kind`", self.name))?
                    .to_owned(),
            }),
            _ => Err(format!(
                "{}/expected.json: `verdict` is \"ok\" or \"problem\"",
                self.name
            )),
        }
    }

    pub fn file(&self, name: &str) -> Option<&str> {
        self.files.get(name).map(String::as_str)
    }
}

fn origin() -> String {
    hub_link::origin(TERRITORY, DEVICE)
}

fn key(seed: u8, name: &str) -> SignerKey {
    SignerKey::from_seed(name, &[seed; 32]).expect("a valid key name")
}

/// The value published for window `i` (small ones suppressed, k = 3).
fn total(i: u64) -> Value {
    let v = (i * 7919 + 13) % 61;
    if v >= 3 {
        json!(v)
    } else {
        json!("suppressed")
    }
}

/// The body of record `i`, as `device` publishes it, before canonicalisation.
fn body(i: u64, device: &str) -> Value {
    let (version, sha256) = if i < UPDATE_AT {
        (
            "1.0.0",
            "1111111111111111111111111111111111111111111111111111111111111111",
        )
    } else {
        (
            "1.1.0",
            "2222222222222222222222222222222222222222222222222222222222222222",
        )
    };
    json!({
        "v": 1, "type": "aggregate", "device": device, "territory": TERRITORY, "seq": i,
        "model": {"id": "compteur-pietons", "version": version, "sha256": sha256},
        "window": {"index": i, "start": aggregate::window::rfc3339(T0 + i as i64 * WINDOW_MS),
                   "length_ms": WINDOW_MS, "partial": i == 0, "clock_jump_ms": 0, "clock_jumps": 0},
        "aggregates": {"count": {"person": {"frames": 900, "max": total(i / 3), "total": total(i)}}},
        "privacy": {"k": 3, "count_step": 1, "share_step_ppm": 1, "level_step_milli": 1,
                    "noise": {"mechanism": "geometric", "epsilon_milli": 1000, "sensitivity": 1}},
    })
}

fn canonical(v: &Value) -> Vec<u8> {
    aggregate::canonical::to_vec(v).expect("a canonical record")
}

/// The envelope line of `entry` at `seq`, signed by `key`.
fn line(key: &SignerKey, seq: u64, entry: &[u8]) -> String {
    let sig = audit::sign_entry(key, entry);
    String::from_utf8(hub_link::encode_record(seq, entry, &sig).expect("an envelope"))
        .expect("UTF-8")
}

/// An envelope whose body does not match its seq (built by hand: the encoder refuses it).
fn raw_line(seq: u64, entry: &[u8], sig: &[u8; 64]) -> String {
    use base64::Engine;
    serde_json::to_string(&hub_link::Envelope {
        seq,
        entry: std::str::from_utf8(entry).expect("UTF-8").to_owned(),
        sig: base64::engine::general_purpose::STANDARD.encode(sig),
    })
    .expect("JSON")
}

fn checkpoint(key: &SignerKey, entries: &[Vec<u8>]) -> String {
    let mut f = Frontier::new();
    for e in entries {
        f.append(leaf_hash(e));
    }
    key.sign_checkpoint(&Checkpoint {
        origin: key.name().to_owned(),
        size: f.size(),
        root: f.root(),
        extensions: vec![],
    })
    .expect("a checkpoint")
}

fn lines(ls: &[String]) -> String {
    ls.iter().map(|l| format!("{l}\n")).collect()
}

/// Every case, in order.
pub fn cases() -> Vec<Case> {
    let device = key(7, &origin());
    let other = key(8, &origin());
    let entries: Vec<Vec<u8>> = (0..RECORDS).map(|i| canonical(&body(i, DEVICE))).collect();
    let good: Vec<String> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| line(&device, i as u64, e))
        .collect();
    let cp = checkpoint(&device, &entries);
    let vkey = format!("{}\n", device.verifier());
    let mut out = Vec::new();
    let mut case = |name: &str,
                    description: &str,
                    records: String,
                    checkpoint: &str,
                    previous: Option<String>,
                    expected: Value| {
        let mut files = BTreeMap::new();
        files.insert("device.vkey".to_owned(), vkey.clone());
        files.insert("records.jsonl".to_owned(), records);
        files.insert("checkpoint.txt".to_owned(), checkpoint.to_owned());
        if let Some(p) = previous {
            files.insert("previous.txt".to_owned(), p);
        }
        let mut e = json!({"description": description});
        if let (Value::Object(e), Value::Object(x)) = (&mut e, expected) {
            e.extend(x);
        }
        files.insert(
            "expected.json".to_owned(),
            format!("{}\n", serde_json::to_string_pretty(&e).expect("JSON")),
        );
        out.push(Case {
            name: format!("{:02}-{name}", out.len() + 1),
            files,
        });
    };
    let ok = |n: u64| json!({"verdict": "ok", "records": n});
    let problem = |kind: &str| json!({"verdict": "problem", "kind": kind});

    case(
        "valid",
        "24 records by one device, a model update at seq 16, and its checkpoint over all of them",
        lines(&good),
        &cp,
        None,
        ok(RECORDS),
    );
    let mut f = Frontier::new();
    for e in &entries[..10] {
        f.append(leaf_hash(e));
    }
    case(
        "valid-after-retention",
        "the first 10 records removed under the hub's retention rule: a frontier line stands for them",
        lines(&[vec![frontier_line(&f)], good[10..].to_vec()].concat()),
        &cp,
        None,
        ok(RECORDS - 10),
    );
    case(
        "valid-monthly-exports",
        "a month's export (records 0 to 9, then the frontier after them) followed by the rest: they verify as one",
        lines(
            &[
                good[..10].to_vec(),
                vec![frontier_line(&f)],
                good[10..].to_vec(),
            ]
            .concat(),
        ),
        &cp,
        None,
        ok(RECORDS),
    );
    case(
        "valid-extends-previous",
        "a checkpoint verified on an earlier visit (12 records): the new one extends it",
        lines(&good),
        &cp,
        Some(checkpoint(&device, &entries[..12])),
        ok(RECORDS),
    );
    case(
        "valid-checkpoint-older-than-records",
        "more records than the checkpoint covers (records arrive before the next checkpoint): the first 20 are checked against it, all 24 one by one",
        lines(&good),
        &checkpoint(&device, &entries[..20]),
        None,
        ok(RECORDS),
    );
    let mut altered = good.clone();
    altered[7] = good[7].replacen("\\\"frames\\\":900", "\\\"frames\\\":901", 1);
    case(
        "record-altered",
        "record 7's contents changed after signing (one value), its signature kept",
        lines(&altered),
        &cp,
        None,
        problem("signature"),
    );
    let mut removed = good.clone();
    removed.remove(7);
    case(
        "record-removed",
        "record 7 removed",
        lines(&removed),
        &cp,
        None,
        problem("order"),
    );
    let mut swapped = good.clone();
    swapped.swap(7, 8);
    case(
        "records-reordered",
        "records 7 and 8 swapped",
        lines(&swapped),
        &cp,
        None,
        problem("order"),
    );
    let mut resigned = good.clone();
    resigned[7] = line(&other, 7, &entries[7]);
    case(
        "record-signed-by-another-key",
        "record 7 signed by a key that is not the device's (same origin name)",
        lines(&resigned),
        &cp,
        None,
        problem("signature"),
    );
    case(
        "checkpoint-signed-by-another-key",
        "the checkpoint signed by a key that is not the device's",
        lines(&good),
        &checkpoint(&other, &entries),
        None,
        problem("checkpoint-signature"),
    );
    let mut replaced = entries.clone();
    replaced[7] = canonical(&{
        let mut b = body(7, DEVICE);
        b["aggregates"]["count"]["person"]["total"] = json!(42);
        b
    });
    let replaced_lines: Vec<String> = replaced
        .iter()
        .enumerate()
        .map(|(i, e)| line(&device, i as u64, e))
        .collect();
    case(
        "record-replaced-by-device-key",
        "record 7 replaced by another record the device's key signed (a rewritten history): the checkpoint's root no longer matches",
        lines(&replaced_lines),
        &cp,
        None,
        problem("root"),
    );
    case(
        "records-missing-at-end",
        "the last 4 records the checkpoint covers are not given",
        lines(&good[..20]),
        &cp,
        None,
        problem("short"),
    );
    let body_seq = canonical(&body(8, DEVICE));
    case(
        "record-seq-mismatch",
        "the envelope of position 7 carries record 8's body, signed by the device",
        lines(
            &[
                good[..7].to_vec(),
                vec![raw_line(
                    7,
                    &body_seq,
                    &audit::sign_entry(&device, &body_seq),
                )],
            ]
            .concat(),
        ),
        &cp,
        None,
        problem("content-seq"),
    );
    let elsewhere = canonical(&body(7, "capteur-2"));
    case(
        "record-of-another-device",
        "record 7 names another device, signed by this device's key",
        lines(&[good[..7].to_vec(), vec![line(&device, 7, &elsewhere)]].concat()),
        &cp,
        None,
        problem("content-device"),
    );
    let mut forged = Frontier::new();
    for e in &replaced[..10] {
        forged.append(leaf_hash(e));
    }
    case(
        "frontier-forged",
        "a leading frontier line that does not stand for the device's first 10 records",
        lines(&[vec![frontier_line(&forged)], good[10..].to_vec()].concat()),
        &cp,
        None,
        problem("root"),
    );
    case(
        "frontier-mid-stream-wrong",
        "a frontier line after record 9 that does not match the records before it",
        lines(
            &[
                good[..10].to_vec(),
                vec![frontier_line(&forged)],
                good[10..].to_vec(),
            ]
            .concat(),
        ),
        &cp,
        None,
        problem("frontier-mismatch"),
    );
    let mut bad_sig = good.clone();
    bad_sig[3] = good[3].replacen("\"sig\":\"", "\"sig\":\"!", 1);
    case(
        "signature-not-base64",
        "record 3's signature is not base64",
        lines(&bad_sig),
        &cp,
        None,
        problem("signature-encoding"),
    );
    let mut garbage = good.clone();
    garbage.insert(5, "this is not JSON".to_owned());
    case(
        "line-not-json",
        "a line that is neither a record nor a frontier line",
        lines(&garbage),
        &cp,
        None,
        problem("unreadable-line"),
    );
    let not_canonical = good[4].replacen("{\\\"aggregates\\\"", "{ \\\"aggregates\\\"", 1);
    let nc_entry: Value = serde_json::from_str(&not_canonical).expect("JSON");
    let nc_body = nc_entry["entry"]
        .as_str()
        .expect("entry")
        .as_bytes()
        .to_vec();
    case(
        "record-not-canonical",
        "record 4's body has a space the canonical form does not, signed by the device",
        lines(
            &[
                good[..4].to_vec(),
                vec![raw_line(4, &nc_body, &audit::sign_entry(&device, &nc_body))],
            ]
            .concat(),
        ),
        &cp,
        None,
        problem("content-unreadable"),
    );
    case(
        "checkpoint-older-than-previous",
        "a checkpoint over 12 records, where the reader verified one over 20 before: the history was cut",
        lines(&good[..12]),
        &checkpoint(&device, &entries[..12]),
        Some(checkpoint(&device, &entries[..20])),
        problem("shrunk"),
    );
    case(
        "history-rewritten-since-previous",
        "the reader verified a checkpoint over 12 records of another history (record 7 different) signed by the device: the records do not give its root",
        lines(&good),
        &cp,
        Some(checkpoint(&device, &replaced[..12])),
        problem("rewritten"),
    );
    let foreign: Vec<String> = (0..RECORDS)
        .map(|i| line(&device, i, &canonical(&body(i, "capteur-2"))))
        .collect();
    case(
        "records-of-another-origin",
        "every record names device capteur-2, signed by capteur-1's key",
        lines(&foreign),
        &cp,
        None,
        problem("origin"),
    );
    let bad_nodes = frontier_line(&f).replace("\"size\":10", "\"size\":11");
    case(
        "frontier-wrong-node-count",
        "a leading frontier line for 11 leaves with the 2 nodes of 10 (11 has 3 bits set)",
        lines(&[vec![bad_nodes], good[10..].to_vec()].concat()),
        &cp,
        None,
        problem("bad-frontier"),
    );
    let mut f20 = Frontier::new();
    for e in &entries[..20] {
        f20.append(leaf_hash(e));
    }
    case(
        "records-start-after-checkpoint",
        "an export whose first 20 records were removed, with a checkpoint over 12: a later checkpoint is needed",
        lines(&[vec![frontier_line(&f20)], good[20..].to_vec()].concat()),
        &checkpoint(&device, &entries[..12]),
        None,
        problem("starts-beyond-checkpoint"),
    );
    let below_k = canonical(&{
        let mut b = body(7, DEVICE);
        b["aggregates"]["count"]["person"]["total"] = json!(2);
        b
    });
    case(
        "record-count-below-k",
        "record 7 publishes a total of 2 people where its own privacy block says counts below k = 3 are suppressed (signed by the device)",
        lines(&[good[..7].to_vec(), vec![line(&device, 7, &below_k)]].concat()),
        &cp,
        None,
        problem("content-rule"),
    );
    out
}

/// Writes the pack into `dir` (one folder per case), replacing what is there.
pub fn write(dir: &std::path::Path) -> std::io::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    for c in cases() {
        let d = dir.join(&c.name);
        std::fs::create_dir_all(&d)?;
        for (name, text) in &c.files {
            std::fs::write(d.join(name), text)?;
        }
    }
    Ok(())
}

/// Reads the pack from `dir`: every folder of it, in name order.
pub fn read(dir: &std::path::Path) -> std::io::Result<Vec<Case>> {
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let mut files = BTreeMap::new();
        for e in std::fs::read_dir(dir.join(&name))? {
            let e = e?;
            files.insert(
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path())?,
            );
        }
        out.push(Case { name, files });
    }
    Ok(out)
}
