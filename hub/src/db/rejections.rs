//! Rejected traffic, counted per source and kind and coalesced into one alarm row per period
//! (issue 21): 20,000 messages from 20,000 bot topics make a handful of rows with their counts
//! and a few samples, never 20,000 rows, so the database stays bounded and real alarms stay in
//! sight.
//!
//! A source is where a message came from, at three scopes: a device's topics (`iat/v1/T/D`),
//! a territory's (`iat/v1/T/+`) and anywhere (`*`). Messages of an enrolled device's topics
//! always count at the first scope (enrolled devices are few). Others start there too, but
//! once [`MAX_SOURCES`] rows of a kind are open in a period, new sources fold into their
//! territory, and past as many territories into one row for anywhere: at most
//! `2 x MAX_SOURCES + 1` rows per kind and period, whatever the flood. Each row keeps the
//! count, the first and last time, and the first [`SAMPLES`] messages' topic, size, reason
//! and first bytes.
//!
//! A batch counts its rejections in memory ([`Tally`]) and writes them at its end, one
//! statement per row, in key order, under one advisory lock on PostgreSQL: hub instances
//! sharing the database count into the same rows without deadlocking one another.

use crate::db::sql::{OptionalExtension, Transaction, params};

use crate::db::store::{Result, Severity};

/// One row per kind and source for this long (UTC hours).
pub const PERIOD_MS: i64 = 3_600_000;

/// Open rows per kind, period and scope before new sources fold into a wider scope.
pub const MAX_SOURCES: i64 = 32;

/// Messages kept as evidence per row, and the first bytes kept of each.
pub const SAMPLES: i64 = 3;
pub const SAMPLE_BYTES: usize = 1024;

/// Where rejected traffic came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The device's topics, `iat/v1/T/D` (sanitised when the topic did not parse).
    pub topic: String,
    /// The territory's, `iat/v1/T/+`; `None` when the source must not fold (an enrolled
    /// device's topics).
    pub prefix: Option<String>,
}

impl Source {
    /// The topics of a device (enrolled or not) whose topic parsed.
    pub fn device(territory: &str, device: &str, enrolled: bool) -> Source {
        Source {
            topic: hub_link::device_base(territory, device),
            prefix: (!enrolled).then(|| format!("{}/{territory}/+", hub_link::PREFIX)),
        }
    }

    /// A topic that did not parse: its first four levels, each shortened to 64 characters with
    /// anything outside the topic alphabet shown as `?`.
    pub fn unparsed(topic: &str) -> Source {
        let levels: Vec<String> = topic
            .split('/')
            .take(4)
            .map(|l| {
                l.chars()
                    .take(64)
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                            c
                        } else {
                            '?'
                        }
                    })
                    .collect()
            })
            .collect();
        let prefix = match levels.len() {
            0..=2 => None,
            _ => Some(format!("{}/+", levels[..3].join("/"))),
        };
        Source {
            topic: levels.join("/"),
            prefix: prefix.or_else(|| Some("*".to_owned())),
        }
    }
}

/// One rejected message.
#[derive(Debug, Clone)]
pub struct Rejection<'a> {
    pub kind: &'a str,
    /// The device the message is attributed to: only when its signature verified. Traffic on
    /// an enrolled device's topic that did not verify is not the device's doing.
    pub device: Option<&'a str>,
    pub seq: Option<u64>,
    pub source: Source,
    /// What is wrong with it, one line (the first message's becomes the row's detail).
    pub reason: String,
    pub topic: &'a str,
    /// Its size, and its payload (or the first bytes of it).
    pub len: usize,
    pub payload: &'a [u8],
}

/// The advisory lock under which a transaction counts its rejections on PostgreSQL ("iat-rej"
/// in ASCII). Coalesced rows are shared by every hub instance: counted under one lock, taken
/// last in the transaction (after the device locks), two instances never wait for each other
/// in a cycle, and never both open a row for the same source.
const LOCK: i64 = 0x0069_6174_2d72_656a;

/// A rejected message kept as evidence until the end of the batch.
#[derive(Debug, Clone)]
struct Kept {
    kind: String,
    device: Option<String>,
    seq: Option<u64>,
    source: Source,
    reason: String,
    topic: String,
    len: usize,
    head: Vec<u8>,
}

impl Kept {
    fn of(r: &Rejection) -> Kept {
        Kept {
            kind: r.kind.to_owned(),
            device: r.device.map(str::to_owned),
            seq: r.seq,
            source: r.source.clone(),
            reason: r.reason.clone(),
            topic: r.topic.to_owned(),
            len: r.len,
            head: r.payload[..r.payload.len().min(SAMPLE_BYTES)].to_vec(),
        }
    }

    fn view(&self) -> Rejection<'_> {
        Rejection {
            kind: &self.kind,
            device: self.device.as_deref(),
            seq: self.seq,
            source: self.source.clone(),
            reason: self.reason.clone(),
            topic: &self.topic,
            len: self.len,
            payload: &self.head,
        }
    }
}

/// The messages of one source and kind in a batch: how many, and the first [`SAMPLES`].
#[derive(Debug)]
struct Group {
    n: i64,
    kept: Vec<Kept>,
}

/// The rejections of one batch, counted in memory by kind and source, then written together
/// at its end ([`Tally::write`]): one statement per row touched instead of one per message,
/// rows touched in key order, under [`LOCK`] on PostgreSQL.
#[derive(Debug, Default)]
pub struct Tally {
    groups: std::collections::BTreeMap<(String, String, Option<String>), Group>,
}

impl Tally {
    pub fn add(&mut self, r: &Rejection) {
        let key = (
            r.kind.to_owned(),
            r.source.topic.clone(),
            r.source.prefix.clone(),
        );
        let g = self.groups.entry(key).or_insert(Group {
            n: 0,
            kept: Vec::new(),
        });
        g.n += 1;
        if (g.kept.len() as i64) < SAMPLES {
            g.kept.push(Kept::of(r));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Counts every group into its period's row. Returns the topic of the first message of
    /// each group that opened a new row (a new alarm).
    pub fn write(self, tx: &Transaction, now_ms: i64) -> Result<Vec<String>> {
        if self.groups.is_empty() {
            return Ok(Vec::new());
        }
        if tx.dialect() == crate::db::sql::Dialect::Postgres {
            tx.query_row(
                "SELECT pg_advisory_xact_lock(?1)",
                params![LOCK],
                |_| Ok(()),
            )?;
        }
        let mut opened = Vec::new();
        for g in self.groups.into_values() {
            if count_group(tx, &g, now_ms)? {
                opened.push(g.kept[0].topic.clone());
            }
        }
        Ok(opened)
    }
}

/// Counts a rejected message into its period's row; returns true when it opened a new row
/// (a new alarm), false when it was counted into an open one.
pub fn count(tx: &Transaction, r: &Rejection, now_ms: i64) -> Result<bool> {
    let mut t = Tally::default();
    t.add(r);
    Ok(!t.write(tx, now_ms)?.is_empty())
}

/// The samples of `g` numbered from `from` (1-based) up to [`SAMPLES`], joined; `None` when
/// the row has all its samples already.
fn samples(g: &Group, from: i64) -> Option<String> {
    let out: String = g
        .kept
        .iter()
        .zip(from..=SAMPLES)
        .map(|(k, n)| sample(&k.view(), n))
        .collect();
    (!out.is_empty()).then_some(out)
}

/// Counts the `g.n` messages of one source and kind into the first row with room, from the
/// source's own scope outwards.
fn count_group(tx: &Transaction, g: &Group, now_ms: i64) -> Result<bool> {
    let first = g.kept[0].view();
    let r = &first;
    let period = now_ms - now_ms.rem_euclid(PERIOD_MS);
    let mut scopes: Vec<(String, i64)> = vec![(r.source.topic.clone(), 0)];
    if let Some(p) = &r.source.prefix {
        if p != "*" {
            scopes.push((p.clone(), 1));
        }
        scopes.push(("*".to_owned(), 2));
    }
    let last = scopes.len() - 1;
    for (i, (source, scope)) in scopes.iter().enumerate() {
        let open: Option<(i64, i64)> = tx
            .prepare_cached(
                "SELECT id, count FROM alarms
                 WHERE kind = ?1 AND period_ms = ?2 AND source = ?3 AND acked_ms IS NULL",
            )?
            .query_row(params![r.kind, period, source], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        if let Some((id, n)) = open {
            tx.prepare_cached(
                "UPDATE alarms SET count = count + ?4, last_ms = ?2,
                   evidence = COALESCE(evidence || CAST(?3 AS TEXT), evidence)
                 WHERE id = ?1",
            )?
            .execute(params![id, now_ms, samples(g, n + 1), g.n])?;
            return Ok(false);
        }
        let room = i == last || {
            let n: i64 = tx
                .prepare_cached(
                    "SELECT COUNT(*) FROM alarms WHERE kind = ?1 AND period_ms = ?2
                     AND scope = ?3 AND source IS NOT NULL AND acked_ms IS NULL",
                )?
                .query_row(params![r.kind, period, scope], |row| row.get(0))?;
            n < MAX_SOURCES
        };
        if !room {
            continue;
        }
        tx.prepare_cached(
            "INSERT INTO alarms (at_ms, device, kind, seq, detail, topic, evidence, severity,
               count, last_ms, source, scope, period_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?12, ?1, ?9, ?10, ?11)",
        )?
        .execute(params![
            now_ms,
            r.device,
            r.kind,
            r.seq.map(|s| s as i64),
            detail(r, source, *scope),
            shorten(r.topic, 200),
            samples(g, 1),
            Severity::of(r.kind) as i64,
            source,
            scope,
            period,
            g.n
        ])?;
        return Ok(true);
    }
    Ok(false) // not reached: the last scope always has room
}

/// The row's description, from its first message.
fn detail(r: &Rejection, source: &str, scope: i64) -> String {
    let reason = shorten(&r.reason, 300);
    match scope {
        0 if r.device.is_none() && r.source.prefix.is_none() => {
            format!("unverified traffic on the topics of an enrolled device ({source}): {reason}")
        }
        0 => reason,
        1 => format!(
            "more than {MAX_SOURCES} sources this period; every other one under {source}: {reason}"
        ),
        _ => format!(
            "more than {MAX_SOURCES} sources and {MAX_SOURCES} territories this period; every other message: {reason}"
        ),
    }
}

/// One sample of evidence: the topic, size and reason, then the first bytes (escaped text, or
/// hex when they are not UTF-8).
fn sample(r: &Rejection, n: i64) -> String {
    let head = &r.payload[..r.payload.len().min(SAMPLE_BYTES)];
    let body = match std::str::from_utf8(head) {
        Ok(s) => shorten(&s.escape_debug().to_string(), 4 * SAMPLE_BYTES),
        Err(_) => {
            let hex: String = head.iter().map(|b| format!("{b:02x}")).collect();
            format!("(not UTF-8, hex) {hex}")
        }
    };
    format!(
        "sample {n}: topic {}, {} bytes{}, {}\n{body}\n",
        shorten(r.topic, 200),
        r.len,
        if r.len > head.len() {
            format!(" (the first {} shown)", head.len())
        } else {
            String::new()
        },
        shorten(&r.reason, 300)
    )
}

/// At most `n` characters, control characters escaped: a sender's text in a log or a page
/// cannot forge a line.
fn shorten(s: &str, n: usize) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_debug().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .take(n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unparsed_topics_are_sanitised_and_fold() {
        let s = Source::unparsed("iat/v1/fr evil/bot\n1/agg/x");
        assert_eq!(s.topic, "iat/v1/fr?evil/bot?1");
        assert_eq!(s.prefix.as_deref(), Some("iat/v1/fr?evil/+"));
        assert_eq!(Source::unparsed("x").prefix.as_deref(), Some("*"));
        let long = format!("iat/v1/{}/d", "a".repeat(500));
        assert!(Source::unparsed(&long).topic.len() < 100);
    }

    #[test]
    fn enrolled_sources_never_fold() {
        assert_eq!(Source::device("t", "d", true).prefix, None);
        assert_eq!(
            Source::device("t", "d", false).prefix.as_deref(),
            Some("iat/v1/t/+")
        );
    }

    fn rejection<'a>(topic: &'a str, source: Source, payload: &'a [u8]) -> Rejection<'a> {
        Rejection {
            kind: crate::ingest::UNENROLLED,
            device: None,
            seq: None,
            source,
            reason: "not enrolled".into(),
            topic,
            len: payload.len(),
            payload,
        }
    }

    /// (source, scope, count) of the open rows, by source.
    fn rows(tx: &Transaction) -> Vec<(String, i64, i64)> {
        let mut q = tx
            .prepare(
                "SELECT source, scope, count FROM alarms WHERE acked_ms IS NULL ORDER BY source",
            )
            .unwrap();
        q.query_map(crate::params![], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_>>()
            .unwrap()
    }

    #[test]
    fn sources_fold_into_territories_then_anywhere() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::store::open(crate::db::sql::test_database(dir.path())).unwrap();
        let tx = conn.transaction().unwrap();
        let now = 10 * PERIOD_MS + 5;
        let mut new_rows = 0;
        // 40 devices of one territory, then 40 territories of one device each, twice over.
        for _ in 0..2 {
            for i in 0..40 {
                let topic = format!("iat/v1/fr-bots/bot-{i}/agg/x");
                let r = rejection(
                    &topic,
                    Source::device("fr-bots", &format!("bot-{i}"), false),
                    b"{}",
                );
                new_rows += count(&tx, &r, now).unwrap() as usize;
            }
            for i in 0..40 {
                let topic = format!("iat/v1/t-{i}/bot/agg/x");
                let r = rejection(
                    &topic,
                    Source::device(&format!("t-{i}"), "bot", false),
                    b"{}",
                );
                new_rows += count(&tx, &r, now).unwrap() as usize;
            }
        }
        let open = rows(&tx);
        // 32 devices, fr-bots/+ and 31 more territories, then `*` for the other 9.
        assert_eq!(new_rows, open.len());
        assert_eq!(open.iter().filter(|r| r.1 == 0).count(), 32);
        assert_eq!(open.iter().filter(|r| r.1 == 1).count(), 32);
        let star = open
            .iter()
            .find(|r| r.0 == "*")
            .expect("the row for anywhere");
        assert_eq!((star.1, star.2), (2, 2 * 9));
        let bots = open.iter().find(|r| r.0 == "iat/v1/fr-bots/+").unwrap();
        assert_eq!(bots.2, 2 * 8);
        assert_eq!(open.iter().map(|r| r.2).sum::<i64>(), 160);
        // Evidence: the first 3 messages of a row, no more.
        let evidence: String = tx
            .query_row(
                "SELECT evidence FROM alarms WHERE source = '*'",
                crate::params![],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(evidence.matches("sample ").count(), SAMPLES as usize);
        // Acknowledged, a row closes: the next message opens a new one; the next hour too.
        tx.execute(
            "UPDATE alarms SET acked_ms = 1 WHERE source = '*'",
            crate::params![],
        )
        .unwrap();
        let r = rejection(
            "iat/v1/t-39/bot/agg/x",
            Source::device("t-39", "bot", false),
            b"{}",
        );
        assert!(count(&tx, &r, now).unwrap());
        assert!(!count(&tx, &r, now + 1).unwrap());
        assert!(count(&tx, &r, now + PERIOD_MS).unwrap());
    }

    #[test]
    fn enrolled_sources_keep_their_row_and_binary_evidence_is_hex() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::store::open(crate::db::sql::test_database(dir.path())).unwrap();
        let tx = conn.transaction().unwrap();
        for i in 0..100 {
            let d = format!("dev-{i}");
            let topic = format!("iat/v1/fr-lyon/{d}/checkpoint");
            let r = Rejection {
                kind: crate::ingest::MALFORMED,
                ..rejection(
                    &topic,
                    Source::device("fr-lyon", &d, true),
                    &[0xff, 0x00, 0x41],
                )
            };
            assert!(count(&tx, &r, 0).unwrap());
        }
        let open = rows(&tx);
        assert_eq!(open.len(), 100);
        assert!(open.iter().all(|r| r.1 == 0));
        let (detail, evidence, severity): (String, String, i64) = tx
            .query_row(
                "SELECT detail, evidence, severity FROM alarms WHERE source = 'iat/v1/fr-lyon/dev-7'",
                crate::params![],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert!(
            detail.starts_with("unverified traffic on the topics of an enrolled device"),
            "{detail}"
        );
        assert!(evidence.contains("(not UTF-8, hex) ff0041"), "{evidence}");
        assert_eq!(severity, Severity::Notice as i64);
    }

    /// A batch's rejections are written as one count per source: the same rows, counts and
    /// samples as message by message.
    #[test]
    fn a_batch_counts_each_source_once_with_its_first_samples() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::store::open(crate::db::sql::test_database(dir.path())).unwrap();
        let tx = conn.transaction().unwrap();
        let now = 3 * PERIOD_MS;
        let topics: Vec<String> = (0..5)
            .map(|i| format!("iat/v1/t-{}/bot/agg/{i}", i % 2))
            .collect();
        let mut tally = Tally::default();
        for (i, topic) in topics.iter().enumerate() {
            let payload = format!("payload {i}");
            let r = rejection(
                topic,
                Source::device(&format!("t-{}", i % 2), "bot", false),
                payload.as_bytes(),
            );
            tally.add(&r);
        }
        let opened = tally.write(&tx, now).unwrap();
        assert_eq!(opened, vec![topics[0].clone(), topics[1].clone()]);
        let open = rows(&tx);
        assert_eq!(
            open,
            vec![
                ("iat/v1/t-0/bot".to_owned(), 0, 3),
                ("iat/v1/t-1/bot".to_owned(), 0, 2)
            ]
        );
        // Two more of t-1: its third sample is the first of them; nothing new opens.
        let mut tally = Tally::default();
        for i in 5..7 {
            let payload = format!("payload {i}");
            let r = rejection(
                &topics[1],
                Source::device("t-1", "bot", false),
                payload.as_bytes(),
            );
            tally.add(&r);
        }
        assert!(tally.write(&tx, now).unwrap().is_empty());
        let evidence: String = tx
            .query_row(
                "SELECT evidence FROM alarms WHERE source = 'iat/v1/t-1/bot'",
                crate::params![],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(evidence.matches("sample ").count(), 3, "{evidence}");
        assert!(evidence.contains("sample 3:"), "{evidence}");
        assert!(evidence.contains("payload 5") && !evidence.contains("payload 6"));
        assert_eq!(rows(&tx)[1].2, 4);
    }

    #[test]
    fn shorten_escapes_control_characters() {
        assert_eq!(shorten("a\nb", 10), "a\\nb");
        assert_eq!(shorten("abcdef", 3), "abc");
    }
}
