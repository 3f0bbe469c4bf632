//! docs/model-card.md stays true to the parser: every field the parser knows has a row in the
//! field table of its section (the list comes from the parser's own `Deserialize` code, not
//! from this file), every row names a field the parser knows, and every TOML example parses
//! and validates (a `toml,partial` example merged into the document's first complete one).

mod support;

use std::path::{Path, PathBuf};

use modelcard::Card;
use support::{Doc, Schema, merge, record};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn doc() -> Doc {
    let path = root().join("docs/model-card.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Doc::parse(&text)
}

fn schema() -> Schema {
    let schema = record(|r| modelcard::deserialize_raw(r));
    // The recorder reached the nested tables (a guard against a recorder that sees nothing).
    for (table, field) in [
        ("", "schema"),
        ("provenance", "package_sha256"),
        ("inputs", "preprocess"),
        ("inputs.preprocess", "sample_rate"),
        ("inputs.quant", "zero_point"),
        ("outputs.check", "steps"),
    ] {
        assert!(
            schema.tables.get(table).is_some_and(|f| f.contains(field)),
            "the recorder did not see `{field}` in `[{table}]`: {schema:?}"
        );
    }
    schema
}

/// Where examples are parsed: a card in a model folder (paths in a card are relative to it).
fn card_path() -> PathBuf {
    root().join("models/example/card.toml")
}

#[test]
fn every_field_the_parser_knows_is_documented() {
    let problems = doc().check_fields(&schema());
    assert!(
        problems.is_empty(),
        "docs/model-card.md is out of step with modelcard's parser:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn every_toml_example_parses() {
    let doc = doc();
    let (complete, partial) = doc.toml_blocks();
    assert!(
        !complete.is_empty(),
        "docs/model-card.md has no complete example"
    );
    for b in &complete {
        if let Err(e) = Card::parse(&card_path(), &b.text) {
            panic!(
                "docs/model-card.md line {}: the example does not parse: {e}",
                b.line
            );
        }
    }
    let base: toml::Table = toml::from_str(&complete[0].text).expect("parsed above");
    for b in &partial {
        let part: toml::Table = toml::from_str(&b.text)
            .unwrap_or_else(|e| panic!("docs/model-card.md line {}: not TOML: {e}", b.line));
        let mut merged = base.clone();
        merge(&mut merged, part);
        let text = toml::to_string(&merged).expect("a table serialises");
        if let Err(e) = Card::parse(&card_path(), &text) {
            panic!(
                "docs/model-card.md line {}: the partial example, merged into the first complete one (line {}), does not parse: {e}",
                b.line, complete[0].line
            );
        }
    }
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
