//! The audit log: signed records in an RFC 6962 Merkle tree with signed checkpoints. It must
//! never lose or rewrite an entry once `append` returned, nor prune one the hub did not ack.
//!
//! Code map:
//! - [`merkle`]: hashing, the compact [`merkle::Frontier`], inclusion and consistency proofs.
//! - [`note`]: C2SP signed notes and tlog checkpoints; signer and verifier keys.
//! - [`entry`]: the per-record signature (domain-separated).
//! - [`frame`]: the on-disk encodings (frames, segment headers, ack slots).
//! - [`keys`]: key files (IO; feature `files`, on by default, as for the next two).
//! - [`store`]: the append-only segmented log that is also the outbox (IO).
//! - [`verify`]: independent verification of a log directory (IO).
//!
//! Invariants: `merkle`, `note`, `entry` and `frame` do no IO; an append returns only once its
//! record is durable; nothing is ever dropped silently (a full outbox is an error); recovery
//! cuts only what an interrupted write can leave, and refuses any other damage.
//! The format is specified in `docs/audit-format.md`.

pub mod entry;
pub mod frame;
#[cfg(feature = "files")]
pub mod keys;
pub mod merkle;
pub mod note;
#[cfg(feature = "files")]
mod segment;
#[cfg(feature = "files")]
pub mod store;
#[cfg(feature = "files")]
pub mod verify;

pub use entry::{sign_entry, verify_entry};

/// The seqs `first..end` (end excluded) for people, unambiguous: `no record`, `seq 7`,
/// `seqs 0 to 23` (both included).
pub fn seqs(first: u64, end: u64) -> String {
    match end.saturating_sub(first) {
        0 => "no record".to_owned(),
        1 => format!("seq {first}"),
        _ => format!("seqs {first} to {}", end - 1),
    }
}
pub use merkle::{Frontier, Hash};
pub use note::{Checkpoint, SignerKey, VerifierKey};
#[cfg(feature = "files")]
pub use store::{Log, Options, Record, StoreError};
#[cfg(feature = "files")]
pub use verify::{Problem, ProblemKind, Report, verify_dir, verify_dir_with};
