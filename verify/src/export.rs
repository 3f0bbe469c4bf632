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

use audit::merkle::{Hash, leaf_hash, verify_consistency};
use audit::{Frontier, VerifierKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::{ContentError, Contents, hex, unhex};

/// What verified.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verified {
    /// Records checked one by one (signature, content).
    pub records: u64,
    /// The seq of the first of them: the size of the leading frontier line, 0 without one.
    pub from_seq: u64,
    pub checkpoint_size: u64,
    pub root: String,
    /// The log's origin, as the keys and the checkpoint name it.
    pub origin: String,
    /// The earliest window start among the records (RFC 3339 as records state it: one fixed
    /// format, so that text order is time order). Pipelines interleave their records.
    pub first_window: Option<String>,
    /// The start and length of the latest window.
    pub last_window: Option<(String, u64)>,
    /// The models that produced the records: one entry per model (id, version, sha256), in the
    /// order they first appear.
    pub models: Vec<ModelSpan>,
    /// How the checkpoint was found to extend the one a reader verified before, if one was
    /// given.
    pub previous: Option<Extends>,
}

/// The records one model produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpan {
    pub id: String,
    pub version: String,
    pub sha256: String,
    /// How many records.
    pub records: u64,
    /// The first and the last of them (other models' records may lie between).
    pub first_seq: u64,
    pub last_seq: u64,
}

/// A checkpoint a reader verified before (the browser page keeps the last one per device).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Previous {
    pub size: u64,
    pub root: Hash,
    /// A consistency proof from `size` to the new checkpoint's size (the hub's
    /// `/api/devices/{id}/consistency`), used when the records do not reach back to `size`.
    pub proof: Option<Vec<Hash>>,
}

/// How the new checkpoint was found to extend a previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extends {
    /// The records given recompute the previous root at its size.
    ByRecords,
    /// The consistency proof verifies.
    ByProof,
    /// Neither was possible (records removed before it, no proof): not checked.
    Unchecked,
}

/// Why an export does not verify: the first problem met, where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("no key given")]
    NoKey,
    #[error("the keys name different devices")]
    KeysDiffer,
    #[error("the checkpoint is not signed by any of the keys for this device's origin")]
    CheckpointSignature,
    #[error("the previous checkpoint is not signed by any of the keys for this device's origin")]
    PreviousSignature,
    #[error("line {line}: not a record nor a frontier line: {message}")]
    Unreadable { line: usize, message: String },
    #[error("line {line}: {message}")]
    BadFrontier { line: usize, message: String },
    #[error(
        "line {line}: the records start after seq {start}, beyond the checkpoint's size {checkpoint}; a later checkpoint is needed"
    )]
    StartsBeyond {
        line: usize,
        start: u64,
        checkpoint: u64,
    },
    #[error(
        "line {line}: the records before it give a tree of {size} leaves with root {root}, the line states {stated_size} leaves with root {stated_root}"
    )]
    FrontierMismatch {
        line: usize,
        size: u64,
        root: String,
        stated_size: u64,
        stated_root: String,
    },
    #[error(
        "line {line}: seq {found} where {expected} was expected (a record is missing or reordered)"
    )]
    Order {
        line: usize,
        found: u64,
        expected: u64,
    },
    #[error("record {seq}: `sig` is not base64 of 64 bytes")]
    SigEncoding { seq: u64 },
    #[error("{0}")]
    Content(ContentError),
    #[error("record {seq}: {source}")]
    Origin { seq: u64, source: ContentError },
    #[error("record {seq}: the signature does not verify")]
    Signature { seq: u64 },
    #[error("the checkpoint covers {checkpoint} records, only {given} were given")]
    Short { checkpoint: u64, given: u64 },
    #[error("the records give root {root} at size {size}, the device signed {signed}")]
    Root {
        size: u64,
        root: String,
        signed: String,
    },
    #[error(
        "the checkpoint covers {size} records, fewer than the {previous} of a checkpoint verified before: the history was cut"
    )]
    Shrunk { size: u64, previous: u64 },
    #[error(
        "the records up to seq {last} do not give the root of the checkpoint verified before (size {previous}): the history was rewritten"
    )]
    Rewritten { previous: u64, last: u64 },
    #[error(
        "the consistency proof from the checkpoint verified before (size {previous}) to this one (size {size}) does not verify: the history was rewritten, or the proof is wrong"
    )]
    Inconsistent { previous: u64, size: u64 },
}

impl Problem {
    /// The same, in French, for the register's readers.
    pub fn fr(&self) -> String {
        match self {
            Problem::NoKey => "aucune clé donnée".into(),
            Problem::KeysDiffer => "les clés nomment des appareils différents".into(),
            Problem::CheckpointSignature => {
                "le point de contrôle n'est signé par aucune des clés de cet appareil".into()
            }
            Problem::PreviousSignature => {
                "le point de contrôle précédent n'est signé par aucune des clés de cet appareil"
                    .into()
            }
            Problem::Unreadable { line, message } => {
                format!("ligne {line} : ni un résultat ni une ligne de frontière ({message})")
            }
            Problem::BadFrontier { line, message } => {
                format!("ligne {line} : ligne de frontière invalide ({message})")
            }
            Problem::StartsBeyond {
                line,
                start,
                checkpoint,
            } => format!(
                "ligne {line} : les résultats commencent après le n° {start}, au-delà des {checkpoint} résultats du point de contrôle ; il faut un point de contrôle plus récent"
            ),
            Problem::FrontierMismatch {
                line,
                size,
                stated_size,
                ..
            } => format!(
                "ligne {line} : les résultats qui précèdent donnent un arbre de {size} feuilles dont la racine diffère de celle que la ligne annonce ({stated_size} feuilles)"
            ),
            Problem::Order {
                line,
                found,
                expected,
            } => format!(
                "ligne {line} : résultat n° {found} là où le n° {expected} était attendu (un résultat manque ou a été déplacé)"
            ),
            Problem::SigEncoding { seq } => format!(
                "résultat n° {seq} : la signature n'est pas lisible (64 octets en base64 attendus)"
            ),
            Problem::Content(e) => content_fr(e),
            Problem::Origin { seq, source } => {
                format!("résultat n° {seq} : {}", content_fr(source))
            }
            Problem::Signature { seq } => format!(
                "résultat n° {seq} : la signature ne correspond pas (le résultat a été modifié, ou n'a pas été signé par cet appareil)"
            ),
            Problem::Short { checkpoint, given } => format!(
                "le point de contrôle engage {checkpoint} résultats, seuls {given} ont été fournis (des résultats manquent)"
            ),
            Problem::Root { size, .. } => format!(
                "les {size} premiers résultats ne donnent pas la racine que l'appareil a signée (un résultat a été modifié, retiré ou ajouté)"
            ),
            Problem::Shrunk { size, previous } => format!(
                "le point de contrôle engage {size} résultats, moins que les {previous} d'un point de contrôle vérifié auparavant : l'historique a été raccourci"
            ),
            Problem::Rewritten { previous, last } => format!(
                "les résultats jusqu'au n° {last} ne redonnent pas la racine du point de contrôle vérifié auparavant ({previous} résultats) : l'historique a été réécrit"
            ),
            Problem::Inconsistent { previous, size } => format!(
                "la preuve de cohérence entre le point de contrôle vérifié auparavant ({previous} résultats) et celui-ci ({size}) ne se vérifie pas : l'historique a été réécrit, ou la preuve est fausse"
            ),
        }
    }

    /// A short, stable name of the kind of problem (the specification pack's verdicts).
    pub fn kind(&self) -> &'static str {
        match self {
            Problem::NoKey => "no-key",
            Problem::KeysDiffer => "keys-differ",
            Problem::CheckpointSignature => "checkpoint-signature",
            Problem::PreviousSignature => "previous-signature",
            Problem::Unreadable { .. } => "unreadable-line",
            Problem::BadFrontier { .. } => "bad-frontier",
            Problem::StartsBeyond { .. } => "starts-beyond-checkpoint",
            Problem::FrontierMismatch { .. } => "frontier-mismatch",
            Problem::Order { .. } => "order",
            Problem::SigEncoding { .. } => "signature-encoding",
            Problem::Content(ContentError::Seq { .. }) => "content-seq",
            Problem::Content(ContentError::Device { .. }) => "content-device",
            Problem::Content(ContentError::Rule { .. }) => "content-rule",
            Problem::Content(_) => "content-unreadable",
            Problem::Origin { .. } => "origin",
            Problem::Signature { .. } => "signature",
            Problem::Short { .. } => "short",
            Problem::Root { .. } => "root",
            Problem::Shrunk { .. } => "shrunk",
            Problem::Rewritten { .. } | Problem::Inconsistent { .. } => "rewritten",
        }
    }
}

fn content_fr(e: &ContentError) -> String {
    match e {
        ContentError::Unreadable { seq, message } => {
            format!("résultat n° {seq} : contenu illisible ou non conforme au format ({message})")
        }
        ContentError::Seq { seq, found } => {
            format!("résultat n° {seq} : son contenu annonce le n° {found}")
        }
        ContentError::Device { seq, found, first } => {
            format!("résultat n° {seq} : publié par {found}, les résultats précédents par {first}")
        }
        ContentError::Rule { seq, message } => format!(
            "résultat n° {seq} : une valeur publiée enfreint les règles de confidentialité que le résultat annonce lui-même (un comptage sous le seuil k, un masquage incohérent…) ; détail : {message}"
        ),
        ContentError::Origin { device, origin } => format!(
            "les résultats viennent de l'appareil {device}, pas de celui que nomme la clé ({origin})"
        ),
    }
}

/// A verification that stopped at a problem, with what verified before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub problem: Problem,
    /// The records checked one by one before the problem (their roots not checked).
    pub before: Box<Verified>,
}

impl Previous {
    /// A checkpoint note verified on an earlier visit (`hub verify --previous`, the pack's
    /// `previous.txt`): it must be signed by one of `keys`, for their origin.
    pub fn from_note(keys: &[VerifierKey], note: &str) -> Result<Previous, Problem> {
        let origin = keys.first().ok_or(Problem::NoKey)?.name().to_owned();
        keys.iter()
            .find_map(|k| k.open_checkpoint(note, Some(&origin)).ok())
            .map(|cp| Previous {
                size: cp.size,
                root: cp.root,
                proof: None,
            })
            .ok_or(Problem::PreviousSignature)
    }
}

/// Verifies `records` (JSON lines) against `keys` and the signed `checkpoint` note.
pub fn export(keys: &[VerifierKey], records: &str, checkpoint: &str) -> Result<Verified, Problem> {
    export_since(keys, records, checkpoint, None).map_err(|f| f.problem)
}

/// [`export`], and, given a checkpoint verified before, that the new one extends it: the
/// records recompute its root at its size, or else its consistency proof verifies.
pub fn export_since(
    keys: &[VerifierKey],
    records: &str,
    checkpoint: &str,
    previous: Option<&Previous>,
) -> Result<Verified, Failure> {
    let mut v = Verified::default();
    match run(keys, records, checkpoint, previous, &mut v) {
        Ok(()) => Ok(v),
        Err(problem) => Err(Failure {
            problem,
            before: Box::new(v),
        }),
    }
}

fn run(
    keys: &[VerifierKey],
    records: &str,
    checkpoint: &str,
    previous: Option<&Previous>,
    v: &mut Verified,
) -> Result<(), Problem> {
    let first = keys.first().ok_or(Problem::NoKey)?;
    let origin = first.name().to_owned();
    if keys.iter().any(|k| k.name() != origin) {
        return Err(Problem::KeysDiffer);
    }
    v.origin = origin.clone();
    let cp = keys
        .iter()
        .find_map(|k| k.open_checkpoint(checkpoint, Some(&origin)).ok())
        .ok_or(Problem::CheckpointSignature)?;
    v.checkpoint_size = cp.size;
    if let Some(p) = previous
        && p.size > cp.size
    {
        return Err(Problem::Shrunk {
            size: cp.size,
            previous: p.size,
        });
    }
    let mut frontier = Frontier::new();
    let mut contents = Contents::new();
    let mut root_at_cp = (cp.size == 0).then(|| frontier.root());
    let mut root_at_prev = previous.filter(|p| p.size == 0).map(|_| frontier.root());
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
                    return Err(Problem::Unreadable {
                        line: n,
                        message: e.to_string(),
                    });
                };
                let stated = stated
                    .parse()
                    .map_err(|message| Problem::BadFrontier { line: n, message })?;
                if from_seq.is_none() {
                    // Leading: the records removed under the hub's retention rule.
                    if cp.size < stated.size() {
                        return Err(Problem::StartsBeyond {
                            line: n,
                            start: stated.size(),
                            checkpoint: cp.size,
                        });
                    }
                    from_seq = Some(stated.size());
                    v.from_seq = stated.size();
                    if stated.size() == cp.size {
                        root_at_cp = Some(stated.root());
                    }
                    if previous.is_some_and(|p| p.size == stated.size()) {
                        root_at_prev = Some(stated.root());
                    }
                    frontier = stated;
                } else if stated != frontier {
                    return Err(Problem::FrontierMismatch {
                        line: n,
                        size: frontier.size(),
                        root: hex(&frontier.root()),
                        stated_size: stated.size(),
                        stated_root: hex(&stated.root()),
                    });
                }
                continue;
            }
        };
        from_seq.get_or_insert(0);
        let i = frontier.size();
        if env.seq != i {
            return Err(Problem::Order {
                line: n,
                found: env.seq,
                expected: i,
            });
        }
        let sig: [u8; 64] = B64
            .decode(&env.sig)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or(Problem::SigEncoding { seq: i })?;
        let entry = env.entry.as_bytes();
        let view = contents.check(i, entry).map_err(Problem::Content)?;
        contents
            .check_origin(&origin)
            .map_err(|source| Problem::Origin { seq: i, source })?;
        if !keys
            .iter()
            .any(|k| audit::verify_entry(k, entry, &sig).is_ok())
        {
            return Err(Problem::Signature { seq: i });
        }
        frontier.append(leaf_hash(entry));
        v.records += 1;
        if v.first_window
            .as_ref()
            .is_none_or(|f| view.window.start < *f)
        {
            v.first_window = Some(view.window.start.clone());
        }
        let end = (view.window.start, view.window.length_ms);
        if v.last_window.as_ref().is_none_or(|l| end > *l) {
            v.last_window = Some(end);
        }
        let m = view.model;
        match v
            .models
            .iter_mut()
            .find(|s| s.id == m.id && s.version == m.version && s.sha256 == m.sha256)
        {
            Some(s) => {
                s.last_seq = i;
                s.records += 1;
            }
            None => v.models.push(ModelSpan {
                id: m.id,
                version: m.version,
                sha256: m.sha256,
                records: 1,
                first_seq: i,
                last_seq: i,
            }),
        }
        if frontier.size() == cp.size {
            root_at_cp = Some(frontier.root());
        }
        if previous.is_some_and(|p| p.size == frontier.size()) {
            root_at_prev = Some(frontier.root());
        }
    }
    let Some(root) = root_at_cp else {
        return Err(Problem::Short {
            checkpoint: cp.size,
            given: frontier.size(),
        });
    };
    if root != cp.root {
        return Err(Problem::Root {
            size: cp.size,
            root: hex(&root),
            signed: hex(&cp.root),
        });
    }
    v.root = hex(&root);
    if let Some(p) = previous {
        v.previous = Some(match (root_at_prev, &p.proof) {
            (Some(r), _) if r == p.root => Extends::ByRecords,
            (Some(_), _) => {
                return Err(Problem::Rewritten {
                    previous: p.size,
                    last: p.size.saturating_sub(1),
                });
            }
            (None, Some(proof)) => {
                verify_consistency(p.size, cp.size, &p.root, &cp.root, proof).map_err(|_| {
                    Problem::Inconsistent {
                        previous: p.size,
                        size: cp.size,
                    }
                })?;
                Extends::ByProof
            }
            (None, None) => Extends::Unchecked,
        });
    }
    Ok(())
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
