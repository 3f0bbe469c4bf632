//! Test support shared by the reference-doc tests of `modelcard` (tests/docs.rs) and `agent`
//! (tests/config_docs.rs, which includes this file by path):
//!
//! - [`record`]: the field names a parser knows, read from its own `Deserialize` code by a
//!   recording deserializer, so that the list is never written by hand;
//! - [`Doc`]: a reference document's sections, field tables and TOML examples;
//! - [`merge`]: a partial example merged into a complete one;
//! - [`Schema::assert_seen`], [`Doc::assert_fields`] and [`Doc::assert_examples_parse`]: the
//!   checks both tests make, with the document's name in their messages.
//!
//! The recorder follows what serde's derive asks for: `deserialize_struct` gives a struct's
//! field names (recorded, then each field's type is deserialized in turn), `Option`, sequences,
//! tuples and maps recurse into their element type, and `deserialize_enum` records the variant
//! names and visits one variant per pass (passes repeat until every variant of the widest enum
//! has been visited). Types that deserialize through `deserialize_any` (`toml::Value`,
//! `#[serde(flatten)]`, untagged enums) are leaves: their contents are not recorded.

#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde::de::{self, DeserializeSeed, Visitor};

/// What a parser knows: for each table path (`""` for the top level, `"pipeline.source"`,
/// `"inputs.preprocess"`...; arrays of tables and inline tables are named like tables), its
/// field names; and for each enum met, its variant names.
#[derive(Debug, Default)]
pub struct Schema {
    pub tables: BTreeMap<String, BTreeSet<String>>,
    pub variants: BTreeMap<String, BTreeSet<String>>,
}

impl Schema {
    /// Every `(table path, field)` pair.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tables
            .iter()
            .flat_map(|(t, fs)| fs.iter().map(move |f| (t.as_str(), f.as_str())))
    }

    /// Panics unless the recorder saw each `(table, field)`: a guard against a recorder that
    /// does not reach the nested tables.
    pub fn assert_seen(&self, expected: &[(&str, &str)]) {
        for (table, field) in expected {
            assert!(
                self.tables.get(*table).is_some_and(|f| f.contains(*field)),
                "the recorder did not see `{field}` in `[{table}]`: {self:?}"
            );
        }
    }
}

#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

#[derive(Default)]
struct State {
    schema: Schema,
    pass: usize,
    widest_enum: usize,
}

/// A deserializer that hands every primitive a neutral value and records every struct's
/// fields and every enum's variants under the path where they were met.
pub struct Recorder<'a> {
    path: String,
    state: &'a RefCell<State>,
}

/// Runs `drive` (which deserializes the parser's raw type from the recorder it is given) until
/// every enum variant has been visited, and returns what was recorded.
pub fn record(drive: impl Fn(Recorder<'_>) -> Result<(), Error>) -> Schema {
    let state = RefCell::new(State::default());
    loop {
        drive(Recorder {
            path: String::new(),
            state: &state,
        })
        .expect("the recorder satisfies the parser's Deserialize");
        let mut s = state.borrow_mut();
        if s.pass + 1 >= s.widest_enum {
            break;
        }
        s.pass += 1;
    }
    state.into_inner().schema
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

impl<'a> Recorder<'a> {
    fn at(&self, path: String) -> Recorder<'a> {
        Recorder {
            path,
            state: self.state,
        }
    }
}

impl<'de, 'a> de::Deserializer<'de> for Recorder<'a> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        // A self-describing type: nothing to learn about fields; a string is accepted by most.
        v.visit_str("")
    }
    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_bool(false)
    }
    fn deserialize_i8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_i64(0)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_i64(0)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_i64(0)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_i64(0)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_u64(0)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_u64(0)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_u64(0)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_u64(0)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_f64(0.0)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_f64(0.0)
    }
    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_char('x')
    }
    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_str("")
    }
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_str("")
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_bytes(&[])
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_bytes(&[])
    }
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_some(self)
    }
    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_unit()
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, Error> {
        v.visit_unit()
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, Error> {
        v.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        // One element: enough to learn the element type's fields.
        v.visit_seq(Elements { of: self, left: 1 })
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, Error> {
        v.visit_seq(Elements {
            of: self,
            left: len,
        })
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        v: V,
    ) -> Result<V::Value, Error> {
        v.visit_seq(Elements {
            of: self,
            left: len,
        })
    }
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        // One entry, its value recorded under `<path>.*`.
        let value = self.at(join(&self.path, "*"));
        v.visit_map(OneEntry {
            key: Some(self),
            value: Some(value),
        })
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        self.state
            .borrow_mut()
            .schema
            .tables
            .entry(self.path.clone())
            .or_default()
            .extend(fields.iter().map(|f| f.to_string()));
        v.visit_map(Fields {
            of: self,
            fields,
            next: 0,
        })
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        let chosen = {
            let mut s = self.state.borrow_mut();
            s.schema
                .variants
                .entry(self.path.clone())
                .or_default()
                .extend(variants.iter().map(|f| f.to_string()));
            s.widest_enum = s.widest_enum.max(variants.len());
            variants
                .get(s.pass.min(variants.len().saturating_sub(1)))
                .copied()
                .ok_or_else(|| Error(format!("enum at `{}` has no variant", self.path)))?
        };
        v.visit_enum(Variant { of: self, chosen })
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_str("")
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_unit()
    }
}

struct Elements<'a> {
    of: Recorder<'a>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Elements<'_> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(self.of.at(self.of.path.clone())).map(Some)
    }
}

struct OneEntry<'a> {
    key: Option<Recorder<'a>>,
    value: Option<Recorder<'a>>,
}

impl<'de> de::MapAccess<'de> for OneEntry<'_> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        self.key.take().map(|k| seed.deserialize(k)).transpose()
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Error> {
        let value = self
            .value
            .take()
            .ok_or_else(|| Error("value without key".into()))?;
        seed.deserialize(value)
    }
}

struct Fields<'a> {
    of: Recorder<'a>,
    fields: &'static [&'static str],
    next: usize,
}

impl<'de> de::MapAccess<'de> for Fields<'_> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.fields.get(self.next) {
            None => Ok(None),
            Some(&name) => seed
                .deserialize(de::value::StrDeserializer::<Error>::new(name))
                .map(Some),
        }
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Error> {
        let name = self.fields[self.next];
        self.next += 1;
        seed.deserialize(self.of.at(join(&self.of.path, name)))
    }
}

struct Variant<'a> {
    of: Recorder<'a>,
    chosen: &'static str,
}

impl<'de, 'a> de::EnumAccess<'de> for Variant<'a> {
    type Error = Error;
    type Variant = Recorder<'a>;
    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Recorder<'a>), Error> {
        let value = seed.deserialize(de::value::StrDeserializer::<Error>::new(self.chosen))?;
        Ok((value, self.of.at(join(&self.of.path, self.chosen))))
    }
}

impl<'de> de::VariantAccess<'de> for Recorder<'_> {
    type Error = Error;
    fn unit_variant(self) -> Result<(), Error> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_tuple(self, len, v)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_struct(self, "", fields, v)
    }
}

// ---- the reference document -----------------------------------------------------------------

/// A section: a heading and the lines up to the next heading (of any level).
pub struct Section {
    pub heading: String,
    pub lines: Vec<String>,
}

/// A fenced code block: its info string (`toml`, `toml,partial`...) and its text.
pub struct Block {
    pub info: String,
    pub text: String,
    /// 1-based line of the opening fence, for messages.
    pub line: usize,
}

pub struct Doc {
    pub sections: Vec<Section>,
    pub blocks: Vec<Block>,
}

impl Doc {
    /// Reads and parses the document at `path`.
    pub fn read(path: &Path) -> Doc {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Doc::parse(&text)
    }

    pub fn parse(text: &str) -> Doc {
        let mut sections = vec![Section {
            heading: String::new(),
            lines: Vec::new(),
        }];
        let mut blocks = Vec::new();
        let mut fence: Option<Block> = None;
        for (i, line) in text.lines().enumerate() {
            if let Some(b) = &mut fence {
                if line.trim_start().starts_with("```") {
                    blocks.push(fence.take().expect("open fence"));
                } else {
                    b.text.push_str(line);
                    b.text.push('\n');
                }
                continue;
            }
            if let Some(info) = line.trim_start().strip_prefix("```") {
                fence = Some(Block {
                    info: info.trim().to_owned(),
                    text: String::new(),
                    line: i + 1,
                });
                continue;
            }
            if line.starts_with('#') {
                sections.push(Section {
                    heading: line.to_owned(),
                    lines: Vec::new(),
                });
            } else {
                sections
                    .last_mut()
                    .expect("one section")
                    .lines
                    .push(line.to_owned());
            }
        }
        assert!(fence.is_none(), "a code fence is never closed");
        Doc { sections, blocks }
    }

    /// The table paths a section documents: every `` `[path]` `` or `` `[[path]]` `` in its
    /// heading, and `""` (the top level) for a heading that says "Top-level fields".
    pub fn section_paths(heading: &str) -> Vec<String> {
        let mut out = Vec::new();
        if heading.contains("Top-level fields") {
            out.push(String::new());
        }
        for part in heading.split('`').skip(1).step_by(2) {
            let inner = part
                .strip_prefix("[[")
                .and_then(|p| p.strip_suffix("]]"))
                .or_else(|| part.strip_prefix('[').and_then(|p| p.strip_suffix(']')));
            if let Some(p) = inner {
                out.push(p.to_owned());
            }
        }
        out
    }

    /// Field names of the field tables of a section: the first cell, in backticks, of each row
    /// of a table whose header's first cell is `field`.
    pub fn field_rows(section: &Section) -> Vec<String> {
        let mut out = Vec::new();
        let mut in_field_table = false;
        for line in &section.lines {
            let line = line.trim();
            if !line.starts_with('|') {
                in_field_table = false;
                continue;
            }
            let first = line
                .trim_matches('|')
                .split('|')
                .next()
                .unwrap_or("")
                .trim();
            if first == "field" {
                in_field_table = true;
                continue;
            }
            if in_field_table && !first.starts_with("--") {
                let name = first.trim_matches('`');
                assert!(
                    first.starts_with('`') && first.ends_with('`') && !name.is_empty(),
                    "{}: field table row without a field name in backticks: {line}",
                    section.heading
                );
                out.push(name.to_owned());
            }
        }
        out
    }

    /// Checks the document against the schema: every field has a row in its table's section,
    /// every row and every section names something the parser knows. Returns the problems.
    pub fn check_fields(&self, schema: &Schema) -> Vec<String> {
        let mut problems = Vec::new();
        let mut documented: BTreeSet<(String, String)> = BTreeSet::new();
        for s in &self.sections {
            let paths = Self::section_paths(&s.heading);
            let rows = Self::field_rows(s);
            if paths.is_empty() {
                if !rows.is_empty() {
                    problems.push(format!(
                        "{}: a field table under a heading that names no `[table]`",
                        s.heading
                    ));
                }
                continue;
            }
            for p in &paths {
                let Some(known) = schema.tables.get(p) else {
                    problems.push(format!("{}: the parser has no table `[{p}]`", s.heading));
                    continue;
                };
                for r in &rows {
                    if known.contains(r) {
                        documented.insert((p.clone(), r.clone()));
                    } else {
                        problems.push(format!(
                            "{}: `{r}` is documented but the parser has no field `{r}` in `[{p}]`",
                            s.heading
                        ));
                    }
                }
            }
        }
        for (table, field) in schema.fields() {
            if !documented.contains(&(table.to_owned(), field.to_owned())) {
                let table = if table.is_empty() {
                    "the top level".to_owned()
                } else {
                    format!("`[{table}]`")
                };
                problems.push(format!(
                    "field `{field}` of {table} has no row in its section's field table"
                ));
            }
        }
        problems
    }

    /// TOML blocks: `toml` (complete) and `toml,partial`; any other `toml,...` info string is
    /// an error, so that an example cannot opt out silently.
    pub fn toml_blocks(&self) -> (Vec<&Block>, Vec<&Block>) {
        let (mut complete, mut partial) = (Vec::new(), Vec::new());
        for b in &self.blocks {
            match b.info.as_str() {
                "toml" => complete.push(b),
                "toml,partial" => partial.push(b),
                other if other.starts_with("toml") => {
                    panic!("line {}: unknown TOML block kind `{other}`", b.line)
                }
                _ => {}
            }
        }
        (complete, partial)
    }

    /// Panics with every problem [`Doc::check_fields`] finds; `name` is the document's path,
    /// `parser` says whose parser it describes.
    pub fn assert_fields(&self, name: &str, parser: &str, schema: &Schema) {
        let problems = self.check_fields(schema);
        assert!(
            problems.is_empty(),
            "{name} is out of step with {parser}:\n  {}",
            problems.join("\n  ")
        );
    }

    /// Panics unless the document has a complete TOML example and `parse` accepts every
    /// complete example and every partial one merged into the first complete one; `name` is
    /// the document's path.
    pub fn assert_examples_parse<T, E: fmt::Display>(
        &self,
        name: &str,
        parse: impl Fn(&str) -> Result<T, E>,
    ) {
        let (complete, partial) = self.toml_blocks();
        assert!(!complete.is_empty(), "{name} has no complete example");
        for b in &complete {
            if let Err(e) = parse(&b.text) {
                panic!("{name} line {}: the example does not parse: {e}", b.line);
            }
        }
        let base: toml::Table = toml::from_str(&complete[0].text).expect("parsed above");
        for b in &partial {
            let part: toml::Table = toml::from_str(&b.text)
                .unwrap_or_else(|e| panic!("{name} line {}: not TOML: {e}", b.line));
            let mut merged = base.clone();
            merge(&mut merged, part);
            let text = toml::to_string(&merged).expect("a table serialises");
            if let Err(e) = parse(&text) {
                panic!(
                    "{name} line {}: the partial example, merged into the first complete one (line {}), does not parse: {e}",
                    b.line, complete[0].line
                );
            }
        }
    }
}

/// `partial` merged into `base`: tables merge key by key, anything else (values, arrays,
/// arrays of tables) is replaced.
pub fn merge(base: &mut toml::Table, partial: toml::Table) {
    for (k, v) in partial {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(p)) => merge(b, p),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}
