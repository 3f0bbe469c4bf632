//! docs/model-card.md stays true to the parser: every field the parser knows has a row in the
//! field table of its section (the list comes from the parser's own `Deserialize` code, not
//! from this file), every row names a field the parser knows, and every TOML example parses
//! and validates (a `toml,partial` example merged into the document's first complete one).

mod support;

use std::path::{Path, PathBuf};

use modelcard::Card;
use support::{Doc, Schema, record};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn doc() -> Doc {
    Doc::read(&root().join("docs/model-card.md"))
}

fn schema() -> Schema {
    let schema = record(|r| modelcard::deserialize_raw(r));
    schema.assert_seen(&[
        ("", "schema"),
        ("provenance", "package_sha256"),
        ("inputs", "preprocess"),
        ("inputs.preprocess", "sample_rate"),
        ("inputs.quant", "zero_point"),
        ("outputs.check", "steps"),
    ]);
    schema
}

/// Where examples are parsed: a card in a model folder (paths in a card are relative to it).
fn card_path() -> PathBuf {
    root().join("models/example/card.toml")
}

#[test]
fn every_field_the_parser_knows_is_documented() {
    doc().assert_fields("docs/model-card.md", "modelcard's parser", &schema());
}

#[test]
fn every_toml_example_parses() {
    doc().assert_examples_parse("docs/model-card.md", |text| Card::parse(&card_path(), text));
}

/// The real cards are the schema's first users: each one parses.
#[test]
fn the_bundled_cards_parse() {
    let mut n = 0;
    for entry in std::fs::read_dir(root().join("models")).expect("models/") {
        let card = entry.expect("entry").path().join("card.toml");
        if card.is_file() {
            Card::load(&card).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n > 0, "no card under models/");
}
