//! Verification of what the hub's register publishes (`hub verify`): a device's
//! records (one MQTT envelope per line, as `/export/{device}/records.jsonl` serves them),
//! its verifier key(s) and a signed checkpoint. Every record must be canonical, in seq order,
//! signed by one of the keys; the checkpoint must be signed by one of them and its root must
//! be the Merkle root of the first `size` records. Pure: takes texts, returns a report.
//!
//! Records the hub removed under its retention rule are replaced by a *frontier line*
//! (`{"frontier":{"size":N,"nodes":["<hex>",...]}}`: the roots of the perfect subtrees of the
//! first N leaves, largest first). As the first line it stands for records 0..N-1, and the
//! records go on from seq N; anywhere else it must equal what the records before it give
//! (the monthly retention exports end with one, so that files concatenated in order verify
//! as one). A frontier line cannot be forged: the device's signed root covers it.

use audit::merkle::leaf_hash;
use audit::{Frontier, VerifierKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::{Contents, hex};

/// What verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Records checked one by one (signature, content).
    pub records: u64,
    /// The seq of the first of them: the size of the leading frontier line, 0 without one.
    pub from_seq: u64,
    pub checkpoint_size: u64,
    pub root: String,
}

/// Verifies `records` (JSON lines) against `keys` and the signed `checkpoint` note.
pub fn export(keys: &[VerifierKey], records: &str, checkpoint: &str) -> Result<Verified, String> {
    let first = keys.first().ok_or("no key given")?;
    let origin = first.name().to_owned();
    if keys.iter().any(|k| k.name() != origin) {
        return Err("the keys name different devices".into());
    }
    let cp = keys
        .iter()
        .find_map(|k| k.open_checkpoint(checkpoint, Some(&origin)).ok())
        .ok_or("the checkpoint is not signed by any of the keys for this device's origin")?;
    let mut frontier = Frontier::new();
    let mut contents = Contents::new();
    let mut root_at_cp = (cp.size == 0).then(|| frontier.root());
    let mut from_seq = None;
    for (n, line) in records.lines().enumerate() {
        let n = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        let env = match serde_json::from_str::<hub_link::Envelope>(line) {
            Ok(env) => env,
            Err(e) => {
                let Ok(Stated { frontier: stated }) = serde_json::from_str::<Stated>(line) else {
                    return Err(format!("line {n}: {e}"));
                };
                let stated = stated.parse().map_err(|e| format!("line {n}: {e}"))?;
                if from_seq.is_none() {
                    // Leading: the records removed under the hub's retention rule.
                    if cp.size < stated.size() {
                        return Err(format!(
                            "line {n}: the records start after seq {}, beyond the checkpoint's size {}; a later checkpoint is needed",
                            stated.size(),
                            cp.size
                        ));
                    }
                    from_seq = Some(stated.size());
                    if stated.size() == cp.size {
                        root_at_cp = Some(stated.root());
                    }
                    frontier = stated;
                } else if stated != frontier {
                    return Err(format!(
                        "line {n}: the records before it give a tree of {} leaves with root {}, the line states {} leaves with root {}",
                        frontier.size(),
                        hex(&frontier.root()),
                        stated.size(),
                        hex(&stated.root())
                    ));
                }
                continue;
            }
        };
        from_seq.get_or_insert(0);
        let i = frontier.size();
        if env.seq != i {
            return Err(format!(
                "line {n}: seq {} where {i} was expected (a record is missing or reordered)",
                env.seq
            ));
        }
        let sig: [u8; 64] = B64
            .decode(&env.sig)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| format!("record {i}: `sig` is not base64 of 64 bytes"))?;
        let entry = env.entry.as_bytes();
        contents.check(i, entry).map_err(|e| e.to_string())?;
        contents
            .check_origin(&origin)
            .map_err(|e| format!("record {i}: {e}"))?;
        if !keys
            .iter()
            .any(|k| audit::verify_entry(k, entry, &sig).is_ok())
        {
            return Err(format!("record {i}: the signature does not verify"));
        }
        frontier.append(leaf_hash(entry));
        if frontier.size() == cp.size {
            root_at_cp = Some(frontier.root());
        }
    }
    let Some(root) = root_at_cp else {
        return Err(format!(
            "the checkpoint covers {} records, only {} were given",
            cp.size,
            frontier.size()
        ));
    };
    if root != cp.root {
        return Err(format!(
            "the records give root {} at size {}, the device signed {}",
            hex(&root),
            cp.size,
            hex(&cp.root)
        ));
    }
    let from_seq = from_seq.unwrap_or(0);
    Ok(Verified {
        records: frontier.size() - from_seq,
        from_seq,
        checkpoint_size: cp.size,
        root: hex(&root),
    })
}

/// A frontier line of a records export.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Stated {
    frontier: FrontierLine,
}

/// A frontier as an export states it (see the module's documentation).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontierLine {
    pub size: u64,
    pub nodes: Vec<String>,
}

impl FrontierLine {
    fn parse(&self) -> Result<Frontier, String> {
        let mut bytes = self.size.to_le_bytes().to_vec();
        for (i, n) in self.nodes.iter().enumerate() {
            let h = unhex(n)
                .filter(|h| h.len() == 32)
                .ok_or_else(|| format!("frontier node {i} is not 64 hex digits"))?;
            bytes.extend_from_slice(&h);
        }
        Frontier::from_bytes(&bytes).map_err(|_| {
            format!(
                "a frontier of {} leaves has {} nodes (one per set bit of the size), not {}",
                self.size,
                self.size.count_ones(),
                self.nodes.len()
            )
        })
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// The frontier line of `f`, without its newline: what an export writes where records were
/// removed (first line) and at the end of a monthly retention export.
pub fn frontier_line(f: &Frontier) -> String {
    let nodes: Vec<String> = f
        .nodes()
        .iter()
        .map(|n| format!("\"{}\"", hex(n)))
        .collect();
    format!(
        "{{\"frontier\":{{\"size\":{},\"nodes\":[{}]}}}}",
        f.size(),
        nodes.join(",")
    )
}
