//! Per-record signatures: the device signs each log entry, domain-separated from checkpoints.
//!
//! Pure code: no IO. The signed message is `b"iat-record-v1\n" || entry`, so a record signature
//! can never be replayed as a note signature (a note text never starts with that prefix and a
//! checkpoint's first line is its origin) nor the other way round.

use ed25519_dalek::{Signature, Signer as _};
use thiserror::Error;

use crate::note::{SignerKey, VerifierKey};

/// The prefix of every signed record message.
pub const RECORD_DOMAIN: &[u8] = b"iat-record-v1\n";

/// A record signature that does not verify.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("record signature does not verify")]
pub struct BadEntrySignature;

fn message(entry: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(RECORD_DOMAIN.len() + entry.len());
    m.extend_from_slice(RECORD_DOMAIN);
    m.extend_from_slice(entry);
    m
}

/// The Ed25519 signature of `RECORD_DOMAIN || entry`.
pub fn sign_entry(key: &SignerKey, entry: &[u8]) -> [u8; 64] {
    key.signing_key().sign(&message(entry)).to_bytes()
}

/// Checks a record signature (strict RFC 8032 verification: no malleable or small-order forms).
pub fn verify_entry(
    key: &VerifierKey,
    entry: &[u8],
    signature: &[u8; 64],
) -> Result<(), BadEntrySignature> {
    let sig = Signature::from_bytes(signature);
    key.verifying_key()
        .verify_strict(&message(entry), &sig)
        .map_err(|_| BadEntrySignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_are_bound_to_entry_key_and_domain() {
        let k = SignerKey::from_seed("d", &[3; 32]).unwrap();
        let v = k.verifier();
        let entry = br#"{"count":3}"#;
        let sig = sign_entry(&k, entry);
        verify_entry(&v, entry, &sig).unwrap();
        assert!(verify_entry(&v, br#"{"count":4}"#, &sig).is_err());
        let mut flipped = sig;
        flipped[0] ^= 1;
        assert!(verify_entry(&v, entry, &flipped).is_err());
        let other = SignerKey::from_seed("d", &[4; 32]).unwrap().verifier();
        assert!(verify_entry(&other, entry, &sig).is_err());
        // Without the domain prefix, the same key's plain signature is not a record signature.
        let plain = k.signing_key().sign(entry).to_bytes();
        assert!(verify_entry(&v, entry, &plain).is_err());
    }
}
