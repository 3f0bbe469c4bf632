//! Verification of what the hub's register publishes (`hub verify`): a device's
//! records (one MQTT envelope per line, as `/export/{device}/records.jsonl` serves them),
//! its verifier key(s) and a signed checkpoint. Every record must be canonical, in seq order
//! from 0, signed by one of the keys; the checkpoint must be signed by one of them and its root
//! must be the Merkle root of the first `size` records. Pure: takes texts, returns a report.

use audit::merkle::leaf_hash;
use audit::{Frontier, VerifierKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::{Contents, hex};

/// What verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
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
    for (i, line) in records.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let i = i as u64;
        let env: hub_link::Envelope =
            serde_json::from_str(line).map_err(|e| format!("record line {}: {e}", i + 1))?;
        if env.seq != i {
            return Err(format!(
                "record line {}: seq {} where {i} was expected (a record is missing or reordered)",
                i + 1,
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
    Ok(Verified {
        records: frontier.size(),
        checkpoint_size: cp.size,
        root: hex(&root),
    })
}
