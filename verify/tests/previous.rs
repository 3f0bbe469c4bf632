//! A checkpoint verified earlier (the browser page keeps one per device): the new checkpoint
//! must extend it, shown by the records themselves when they reach back to it, else by a
//! consistency proof; without either, the comparison is reported as not done.

use audit::merkle::{Hash, consistency_proof, leaf_hash};
use audit::{Frontier, VerifierKey};
use verify::export::frontier_line;
use verify::{Extends, Previous};

/// The pack's valid case: its key, its records' lines, their leaves, its checkpoint.
fn valid() -> (Vec<VerifierKey>, Vec<String>, Vec<Hash>, String) {
    let case = verify::pack::cases()
        .into_iter()
        .find(|c| c.name.ends_with("-valid"))
        .expect("the valid case");
    let key = VerifierKey::parse(case.file("device.vkey").unwrap().trim()).unwrap();
    let lines: Vec<String> = case
        .file("records.jsonl")
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let leaves = lines
        .iter()
        .map(|l| {
            let env: hub_link::Envelope = serde_json::from_str(l).unwrap();
            leaf_hash(env.entry.as_bytes())
        })
        .collect();
    (
        vec![key],
        lines,
        leaves,
        case.file("checkpoint.txt").unwrap().to_owned(),
    )
}

fn root(leaves: &[Hash]) -> Hash {
    let mut f = Frontier::new();
    for l in leaves {
        f.append(*l);
    }
    f.root()
}

/// The export after the hub removed the first `n` records.
fn after_retention(lines: &[String], leaves: &[Hash], n: usize) -> String {
    let mut f = Frontier::new();
    for l in &leaves[..n] {
        f.append(*l);
    }
    let mut out = format!("{}\n", frontier_line(&f));
    for l in &lines[n..] {
        out.push_str(l);
        out.push('\n');
    }
    out
}

#[test]
fn records_that_reach_back_show_the_extension() {
    let (keys, lines, leaves, cp) = valid();
    let prev = Previous {
        size: 12,
        root: root(&leaves[..12]),
        proof: None,
    };
    let v = verify::export_since(&keys, &(lines.join("\n") + "\n"), &cp, Some(&prev)).unwrap();
    assert_eq!(v.previous, Some(Extends::ByRecords));
    // The same size, another root: rewritten.
    let other = Previous {
        root: root(&leaves[1..13]),
        ..prev
    };
    let f = verify::export_since(&keys, &(lines.join("\n") + "\n"), &cp, Some(&other)).unwrap_err();
    assert_eq!(f.problem.kind(), "rewritten", "{}", f.problem);
}

#[test]
fn past_removed_records_a_consistency_proof_shows_it() {
    let (keys, lines, leaves, cp) = valid();
    let records = after_retention(&lines, &leaves, 16);
    let mut prev = Previous {
        size: 12,
        root: root(&leaves[..12]),
        proof: None,
    };
    let v = verify::export_since(&keys, &records, &cp, Some(&prev)).unwrap();
    assert_eq!(
        v.previous,
        Some(Extends::Unchecked),
        "no proof, records removed"
    );
    assert_eq!((v.from_seq, v.records), (16, 8));

    prev.proof = Some(consistency_proof(&leaves, 12).unwrap());
    let v = verify::export_since(&keys, &records, &cp, Some(&prev)).unwrap();
    assert_eq!(v.previous, Some(Extends::ByProof));

    // A proof for another old tree (a history rewritten before seq 12) does not verify.
    let mut rewritten = leaves.clone();
    rewritten[3] = [7; 32];
    let bad = Previous {
        size: 12,
        root: root(&rewritten[..12]),
        proof: Some(consistency_proof(&leaves, 12).unwrap()),
    };
    let f = verify::export_since(&keys, &records, &cp, Some(&bad)).unwrap_err();
    assert_eq!(f.problem.kind(), "rewritten", "{}", f.problem);
    assert!(f.problem.fr().contains("preuve de cohérence"));
}

#[test]
fn a_checkpoint_smaller_than_the_previous_is_a_cut_history() {
    let (keys, lines, leaves, cp) = valid();
    let prev = Previous {
        size: 30,
        root: root(&leaves[..20]),
        proof: None,
    };
    let f = verify::export_since(&keys, &(lines.join("\n") + "\n"), &cp, Some(&prev)).unwrap_err();
    assert_eq!(f.problem.kind(), "shrunk");
}
