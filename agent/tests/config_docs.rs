//! docs/agent-config.md stays true to the parser: every field the parser knows has a row in the
//! field table of its section (the list comes from the parser's own `Deserialize` code, not
//! from this file), every row names a field the parser knows, and every TOML example parses
//! and validates (a `toml,partial` example merged into the document's first complete one).
//! The examples are written for a config file at the repository's root.

#[path = "../../modelcard/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};

use agent::config::Config;
use support::{Doc, Schema, merge, record};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn doc() -> Doc {
    let path = root().join("docs/agent-config.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Doc::parse(&text)
}

fn schema() -> Schema {
    let schema = record(|r| agent::config::deserialize_raw(r));
    // The recorder reached the nested tables (a guard against a recorder that sees nothing).
    for (table, field) in [
        ("", "device"),
        ("mqtt.tls", "ca"),
        ("pipeline", "window"),
        ("pipeline.source", "speed"),
        ("pipeline.privacy", "share_step_ppm"),
        ("pipeline.privacy.noise", "epsilon"),
    ] {
        assert!(
            schema.tables.get(table).is_some_and(|f| f.contains(field)),
            "the recorder did not see `{field}` in `[{table}]`: {schema:?}"
        );
    }
    schema
}

/// Where examples are parsed: a config at the repository's root, so that `models/...` paths
/// resolve.
fn config_path() -> PathBuf {
    root().join("agent.toml")
}

#[test]
fn every_field_the_parser_knows_is_documented() {
    let problems = doc().check_fields(&schema());
    assert!(
        problems.is_empty(),
        "docs/agent-config.md is out of step with the agent's config parser:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn every_toml_example_parses() {
    let doc = doc();
    let (complete, partial) = doc.toml_blocks();
    assert!(
        !complete.is_empty(),
        "docs/agent-config.md has no complete example"
    );
    for b in &complete {
        if let Err(e) = Config::parse(&config_path(), &b.text) {
            panic!(
                "docs/agent-config.md line {}: the example does not parse: {e}",
                b.line
            );
        }
    }
    let base: toml::Table = toml::from_str(&complete[0].text).expect("parsed above");
    for b in &partial {
        let part: toml::Table = toml::from_str(&b.text)
            .unwrap_or_else(|e| panic!("docs/agent-config.md line {}: not TOML: {e}", b.line));
        let mut merged = base.clone();
        merge(&mut merged, part);
        let text = toml::to_string(&merged).expect("a table serialises");
        if let Err(e) = Config::parse(&config_path(), &text) {
            panic!(
                "docs/agent-config.md line {}: the partial example, merged into the first complete one (line {}), does not parse: {e}",
                b.line, complete[0].line
            );
        }
    }
}

/// The example shipped with the agent is complete and valid too.
#[test]
fn the_example_config_parses() {
    let path = root().join("agent/examples/agent.toml");
    Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
}
