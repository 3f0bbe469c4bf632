//! docs/agent-config.md stays true to the parser: every field the parser knows has a row in the
//! field table of its section (the list comes from the parser's own `Deserialize` code, not
//! from this file), every row names a field the parser knows, and every TOML example parses
//! and validates (a `toml,partial` example merged into the document's first complete one).
//! The examples are written for a config file at the repository's root.

#[path = "../../modelcard/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};

use agent::config::Config;
use support::{Doc, Schema, record};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn doc() -> Doc {
    Doc::read(&root().join("docs/agent-config.md"))
}

fn schema() -> Schema {
    let schema = record(|r| agent::config::deserialize_raw(r));
    schema.assert_seen(&[
        ("", "device"),
        ("mqtt.tls", "ca"),
        ("pipeline", "window"),
        ("pipeline.source", "speed"),
        ("pipeline.privacy", "share_step_ppm"),
        ("pipeline.privacy", "unit"),
        ("pipeline.privacy.noise", "epsilon"),
        ("pipeline.privacy.noise", "budget_per_day"),
        ("pipeline.privacy.noise", "sensitivity"),
    ]);
    schema
}

/// Where examples are parsed: a config at the repository's root, so that `models/...` paths
/// resolve.
fn config_path() -> PathBuf {
    root().join("agent.toml")
}

#[test]
fn every_field_the_parser_knows_is_documented() {
    doc().assert_fields(
        "docs/agent-config.md",
        "the agent's config parser",
        &schema(),
    );
}

#[test]
fn every_toml_example_parses() {
    doc().assert_examples_parse("docs/agent-config.md", |text| {
        Config::parse(&config_path(), text)
    });
}

/// The example shipped with the agent is complete and valid too.
#[test]
fn the_example_config_parses() {
    let path = root().join("agent/examples/agent.toml");
    Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
}
