//! The specification pack (`docs/spec/vectors/`, module `verify::pack`): the committed pack is
//! what the generator makes, and this crate reaches every case's expected verdict.
//! `IAT_WRITE_SPEC_PACK=1 cargo test -p verify --test pack` rewrites the pack after a change
//! to the generator.

use std::path::PathBuf;

use verify::pack::{self, Expected};

/// The pack's folder, rewritten first (once) when `IAT_WRITE_SPEC_PACK` is set.
fn dir() -> PathBuf {
    static WRITE: std::sync::Once = std::sync::Once::new();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/spec/vectors");
    WRITE.call_once(|| {
        if std::env::var_os("IAT_WRITE_SPEC_PACK").is_some() {
            pack::write(&dir).expect("writing the pack");
        }
    });
    dir
}

#[test]
fn the_committed_pack_is_what_the_generator_makes() {
    let committed = pack::read(&dir()).expect("reading docs/spec/vectors");
    let made = pack::cases();
    let names = |c: &[pack::Case]| c.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&committed),
        names(&made),
        "the pack's cases (IAT_WRITE_SPEC_PACK=1 rewrites it)"
    );
    for (c, m) in committed.iter().zip(&made) {
        assert_eq!(
            c.files, m.files,
            "case {}: the committed files differ from the generator's (IAT_WRITE_SPEC_PACK=1 rewrites them)",
            c.name
        );
    }
    assert!(made.len() >= 20, "{} cases", made.len());
}

#[test]
fn this_crate_reaches_every_verdict_of_the_pack() {
    for c in pack::read(&dir()).expect("the pack") {
        let keys: Vec<audit::VerifierKey> = c
            .file("device.vkey")
            .expect("key")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| audit::VerifierKey::parse(l.trim()).expect("key"))
            .collect();
        let previous = c
            .file("previous.txt")
            .map(|n| verify::Previous::from_note(&keys, n).expect("previous"));
        let got = verify::export_since(
            &keys,
            c.file("records.jsonl").expect("records"),
            c.file("checkpoint.txt").expect("checkpoint"),
            previous.as_ref(),
        );
        match (c.expected().expect("expected.json"), got) {
            (Expected::Ok { records }, Ok(v)) => {
                assert_eq!(v.records, records, "{}", c.name);
                if previous.is_some() {
                    assert_eq!(v.previous, Some(verify::Extends::ByRecords), "{}", c.name);
                }
            }
            (Expected::Problem { kind }, Err(f)) => {
                assert_eq!(f.problem.kind(), kind, "{}: {}", c.name, f.problem);
                assert!(!f.problem.fr().is_empty());
            }
            (want, got) => panic!("{}: expected {want:?}, got {got:?}", c.name),
        }
    }
}
