//! C2SP `signed-note` and `tlog-checkpoint`: Ed25519 signer and verifier keys, signing,
//! strict parsing and verification of checkpoints.
//!
//! Pure code: no IO. Key strings follow the Go `note` package conventions:
//! verifier `<name>+<hex8 key id>+<base64(0x01 || public key)>` and signer
//! `PRIVATE+KEY+<name>+<hex8 key id>+<base64(0x01 || seed)>`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::merkle::Hash;

/// The signature type byte of Ed25519 in C2SP signed notes.
pub const ALG_ED25519: u8 = 0x01;
/// Every signature line starts with an em dash (U+2014) and a space.
const SIG_PREFIX: &str = "\u{2014} ";
/// Verifiers must accept 16 signatures; more than this is refused as abuse.
const MAX_SIGNATURES: usize = 64;

/// A malformed key string, note or checkpoint, or a note that does not verify.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NoteError {
    #[error("key name {0:?} is empty or holds a space, a plus sign or a control character")]
    BadKeyName(String),
    #[error("verifier key: {0}")]
    BadVerifierKey(&'static str),
    #[error("signer key: {0}")]
    BadSignerKey(&'static str),
    #[error("note does not end with a newline")]
    MissingFinalNewline,
    #[error("note holds a control character at byte {0}")]
    ControlCharacter(usize),
    #[error("note has no blank line before its signatures")]
    NoSignatureBlock,
    #[error("note has no signature lines")]
    NoSignatures,
    #[error("note has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    #[error("signature line {line}: {what}")]
    BadSignatureLine { line: usize, what: &'static str },
    #[error("signature by {name} has key id {found:08x}, the verifier key has {expected:08x}")]
    WrongKeyId {
        name: String,
        found: u32,
        expected: u32,
    },
    #[error("no signature by {name}+{id:08x}")]
    NoKnownSignature { name: String, id: u32 },
    #[error("signature by {name}+{id:08x} does not verify")]
    BadSignature { name: String, id: u32 },
    #[error("checkpoint line {line}: {what}")]
    BadCheckpoint { line: usize, what: &'static str },
    #[error("checkpoint origin {found:?} is not the expected {expected:?}")]
    WrongOrigin { found: String, expected: String },
}

/// A key name is non-empty and holds no Unicode space, no `+` and no control character.
pub fn check_key_name(name: &str) -> Result<(), NoteError> {
    let bad = |c: char| c.is_whitespace() || c == '+' || c.is_control();
    if name.is_empty() || name.chars().any(bad) {
        return Err(NoteError::BadKeyName(name.to_owned()));
    }
    Ok(())
}

/// `SHA-256(name || 0x0A || 0x01 || public key)[..4]`, big-endian.
pub fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_ED25519]);
    h.update(public);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// A checked key name and the id of `public` under it.
fn named(name: &str, public: &[u8; 32]) -> Result<(String, u32), NoteError> {
    check_key_name(name)?;
    Ok((name.to_owned(), key_id(name, public)))
}

/// The public half: verifies checkpoints and record signatures of one device.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

impl VerifierKey {
    /// The verifier of `key` under `name`.
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, NoteError> {
        let (name, id) = named(name, key.as_bytes())?;
        Ok(Self { name, id, key })
    }

    /// Parses `<name>+<hex8 key id>+<base64(0x01 || 32-byte public key)>`.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let s = s.strip_suffix('\n').unwrap_or(s);
        let mut parts = s.splitn(3, '+');
        // The base64 key may itself hold '+'.
        let (Some(name), Some(hex), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::BadVerifierKey("expected <name>+<key id>+<key>"));
        };
        check_key_name(name)?;
        let id = parse_hex8(hex).ok_or(NoteError::BadVerifierKey("key id is not 8 hex digits"))?;
        let raw = decode_b64(b64).ok_or(NoteError::BadVerifierKey("key is not valid base64"))?;
        let Some((&ALG_ED25519, public)) = raw.split_first() else {
            return Err(NoteError::BadVerifierKey("key type is not Ed25519 (0x01)"));
        };
        let public: &[u8; 32] = public
            .try_into()
            .map_err(|_| NoteError::BadVerifierKey("Ed25519 key is not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(public)
            .map_err(|_| NoteError::BadVerifierKey("not a valid Ed25519 public key"))?;
        if key_id(name, public) != id {
            return Err(NoteError::BadVerifierKey(
                "key id does not match the name and key",
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            id,
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Verifies a signed note and returns its text (with its final newline). Signatures by
    /// other keys are skipped, as the signed-note spec requires; at least one by this key must
    /// be present, and every one by this key must verify.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let parsed = parse_note(note)?;
        let mut verified = false;
        let mut other_id = None;
        for (line, sig) in parsed.signatures.iter().enumerate() {
            if sig.name != self.name {
                continue;
            }
            if sig.id != self.id {
                other_id = Some(sig.id);
                continue;
            }
            let bytes: &[u8; 64] =
                sig.sig
                    .as_slice()
                    .try_into()
                    .map_err(|_| NoteError::BadSignatureLine {
                        line: line + 1,
                        what: "Ed25519 signature is not 64 bytes",
                    })?;
            let s = ed25519_dalek::Signature::from_bytes(bytes);
            self.key
                .verify_strict(parsed.text.as_bytes(), &s)
                .map_err(|_| NoteError::BadSignature {
                    name: self.name.clone(),
                    id: self.id,
                })?;
            verified = true;
        }
        if verified {
            return Ok(parsed.text);
        }
        Err(match other_id {
            Some(found) => NoteError::WrongKeyId {
                name: self.name.clone(),
                found,
                expected: self.id,
            },
            None => NoteError::NoKnownSignature {
                name: self.name.clone(),
                id: self.id,
            },
        })
    }

    /// Verifies a signed checkpoint note and parses its text; the origin must be `origin`
    /// when given.
    pub fn open_checkpoint(
        &self,
        note: &str,
        origin: Option<&str>,
    ) -> Result<Checkpoint, NoteError> {
        let cp = Checkpoint::parse(self.open(note)?)?;
        if let Some(expected) = origin
            && cp.origin != expected
        {
            return Err(NoteError::WrongOrigin {
                found: cp.origin,
                expected: expected.to_owned(),
            });
        }
        Ok(cp)
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = [0u8; 33];
        raw[0] = ALG_ED25519;
        raw[1..].copy_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.id, B64.encode(raw))
    }
}

/// The private half: the device's Ed25519 key and the name it signs under.
#[derive(Clone)]
pub struct SignerKey {
    name: String,
    id: u32,
    key: SigningKey,
}

impl fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        write!(f, "SignerKey({}+{:08x})", self.name, self.id)
    }
}

impl SignerKey {
    /// The signer for a 32-byte Ed25519 seed (RFC 8032 private key).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        let key = SigningKey::from_bytes(seed);
        let (name, id) = named(name, key.verifying_key().as_bytes())?;
        Ok(Self { name, id, key })
    }

    /// Parses `PRIVATE+KEY+<name>+<hex8 key id>+<base64(0x01 || 32-byte seed)>`.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let s = s.strip_suffix('\n').unwrap_or(s);
        let Some(rest) = s.strip_prefix("PRIVATE+KEY+") else {
            return Err(NoteError::BadSignerKey("does not start with PRIVATE+KEY+"));
        };
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(hex), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::BadSignerKey(
                "expected PRIVATE+KEY+<name>+<key id>+<key>",
            ));
        };
        check_key_name(name)?;
        let id = parse_hex8(hex).ok_or(NoteError::BadSignerKey("key id is not 8 hex digits"))?;
        let raw = Zeroizing::new(
            decode_b64(b64).ok_or(NoteError::BadSignerKey("key is not valid base64"))?,
        );
        let Some((&ALG_ED25519, seed)) = raw.split_first() else {
            return Err(NoteError::BadSignerKey("key type is not Ed25519 (0x01)"));
        };
        let seed: &[u8; 32] = seed
            .try_into()
            .map_err(|_| NoteError::BadSignerKey("Ed25519 seed is not 32 bytes"))?;
        let key = Self::from_seed(name, seed)?;
        if key.id != id {
            return Err(NoteError::BadSignerKey(
                "key id does not match the name and key",
            ));
        }
        Ok(key)
    }

    /// The signer key string (a secret: keep it in a 0600 file).
    pub fn to_private_string(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new([0u8; 33]);
        raw[0] = ALG_ED25519;
        raw[1..].copy_from_slice(self.key.as_bytes());
        Zeroizing::new(format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.id,
            B64.encode(*raw)
        ))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// Signs a note text: it must end in a newline and hold no control character but newlines.
    /// Returns the text, a blank line and one signature line.
    pub fn sign_note(&self, text: &str) -> Result<String, NoteError> {
        check_note_text(text)?;
        let sig = self.key.sign(text.as_bytes());
        let mut raw = Vec::with_capacity(68);
        raw.extend_from_slice(&self.id.to_be_bytes());
        raw.extend_from_slice(&sig.to_bytes());
        Ok(format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            B64.encode(raw)
        ))
    }

    /// Signs a checkpoint as a note.
    pub fn sign_checkpoint(&self, cp: &Checkpoint) -> Result<String, NoteError> {
        self.sign_note(&cp.to_text()?)
    }
}

/// A tlog-checkpoint: the log's origin, tree size and root, and optional extension lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note text: origin, decimal size, base64 root, extension lines, each ending in `\n`.
    pub fn to_text(&self) -> Result<String, NoteError> {
        let mut t = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for e in &self.extensions {
            t.push_str(e);
            t.push('\n');
        }
        // What we emit must parse back: catches an empty or multi-line origin or extension.
        if Checkpoint::parse(&t).as_ref() != Ok(self) {
            return Err(NoteError::BadCheckpoint {
                line: 1,
                what: "origin or extension line",
            });
        }
        Ok(t)
    }

    /// Parses a checkpoint note text (without signatures), strictly.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let bad = |line, what| NoteError::BadCheckpoint { line, what };
        let Some(body) = text.strip_suffix('\n') else {
            return Err(NoteError::MissingFinalNewline);
        };
        check_note_text(text)?;
        let lines: Vec<&str> = body.split('\n').collect();
        if lines.len() < 3 {
            return Err(bad(
                lines.len() + 1,
                "missing (origin, size and root hash are required)",
            ));
        }
        if let Some(i) = lines.iter().position(|l| l.is_empty()) {
            return Err(bad(i + 1, "empty line"));
        }
        let origin = lines[0].to_owned();
        let size_line = lines[1];
        if !size_line.bytes().all(|b| b.is_ascii_digit())
            || (size_line.len() > 1 && size_line.starts_with('0'))
        {
            return Err(bad(
                2,
                "tree size is not a decimal number without leading zeros",
            ));
        }
        let size: u64 = size_line
            .parse()
            .map_err(|_| bad(2, "tree size does not fit in 64 bits"))?;
        let root = decode_b64(lines[2])
            .and_then(|r| <[u8; 32]>::try_from(r).ok())
            .ok_or(bad(3, "root hash is not base64 of 32 bytes"))?;
        let extensions = lines[3..].iter().map(|l| (*l).to_owned()).collect();
        Ok(Self {
            origin,
            size,
            root,
            extensions,
        })
    }
}

/// One signature line of a note, decoded but not verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub id: u32,
    pub sig: Vec<u8>,
}

/// A signed note split into its text and signature lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note<'a> {
    /// The signed text, with its final newline.
    pub text: &'a str,
    pub signatures: Vec<NoteSignature>,
}

/// Splits a signed note at its last blank line and decodes every signature line; any
/// malformed line is an error.
pub fn parse_note(note: &str) -> Result<Note<'_>, NoteError> {
    if !note.ends_with('\n') {
        return Err(NoteError::MissingFinalNewline);
    }
    check_note_text(note)?;
    let split = note.rfind("\n\n").ok_or(NoteError::NoSignatureBlock)?;
    let text = &note[..=split];
    let block = &note[split + 2..];
    if block.is_empty() {
        return Err(NoteError::NoSignatures);
    }
    let mut signatures = Vec::new();
    for (i, line) in block
        .strip_suffix('\n')
        .unwrap_or(block)
        .split('\n')
        .enumerate()
    {
        let bad = |what| NoteError::BadSignatureLine { line: i + 1, what };
        if signatures.len() == MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures);
        }
        let rest = line
            .strip_prefix(SIG_PREFIX)
            .ok_or(bad("does not start with an em dash"))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or(bad("no space between name and signature"))?;
        check_key_name(name).map_err(|_| bad("bad key name"))?;
        let raw = decode_b64(b64).ok_or(bad("signature is not valid base64"))?;
        if raw.len() < 5 {
            return Err(bad("signature is shorter than a key id and one byte"));
        }
        let id = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        signatures.push(NoteSignature {
            name: name.to_owned(),
            id,
            sig: raw[4..].to_vec(),
        });
    }
    Ok(Note { text, signatures })
}

/// The text must end in a newline and hold no ASCII control character other than newline.
fn check_note_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::MissingFinalNewline);
    }
    if let Some(i) = text.bytes().position(|b| b < 0x20 && b != b'\n') {
        return Err(NoteError::ControlCharacter(i));
    }
    Ok(())
}

/// Exactly eight lowercase hex digits.
fn parse_hex8(s: &str) -> Option<u32> {
    let ok = s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ok.then(|| u32::from_str_radix(s, 16).ok()).flatten()
}

/// Standard base64 with padding, canonical only (the engine rejects non-zero trailing bits).
fn decode_b64(s: &str) -> Option<Vec<u8>> {
    B64.decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> SignerKey {
        SignerKey::from_seed("example.org/dev1", &[7u8; 32]).unwrap()
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "example.org/dev1".into(),
            size: 3,
            root: [9; 32],
            extensions: vec![],
        }
    }

    #[test]
    fn key_strings_round_trip() {
        let s = signer();
        let v = s.verifier();
        assert_eq!(VerifierKey::parse(&v.to_string()).unwrap(), v);
        let p = s.to_private_string();
        let back = SignerKey::parse(&p).unwrap();
        assert_eq!(back.verifier(), v);
        assert_eq!(
            format!("{s:?}"),
            format!("SignerKey(example.org/dev1+{:08x})", s.id())
        );
    }

    #[test]
    fn bad_verifier_keys_are_refused() {
        let good = signer().verifier().to_string();
        let (name, rest) = good.split_once('+').unwrap();
        let (id, key) = rest.split_once('+').unwrap();
        let raw = B64.decode(key).unwrap();
        let cases: Vec<(String, &str)> = vec![
            (format!("{name}+{id}"), "expected"),
            (format!("{name}+{id}+{key}+x"), "base64"),
            (format!("+{id}+{key}"), "key name"),
            (format!("a b+{id}+{key}"), "key name"),
            (format!("{name}+{}+{key}", id.to_uppercase()), "8 hex"),
            (format!("{name}+{}+{key}", &id[1..]), "8 hex"),
            (format!("{name}+00000000+{key}"), "key id does not match"),
            (format!("other+{id}+{key}"), "key id does not match"),
            (format!("{name}+{id}+{}", &key[1..]), "base64"),
            (
                format!("{name}+{id}+{}", B64.encode(&raw[..32])),
                "32 bytes",
            ),
            (
                format!(
                    "{name}+{id}+{}",
                    B64.encode([&[2u8][..], &raw[1..]].concat())
                ),
                "Ed25519",
            ),
        ];
        for (s, want) in cases {
            let err = VerifierKey::parse(&s).unwrap_err().to_string();
            assert!(err.contains(want), "{s:?}: {err:?} should mention {want:?}");
        }
    }

    #[test]
    fn checkpoint_signs_and_opens() {
        let s = signer();
        let note = s.sign_checkpoint(&checkpoint()).unwrap();
        assert!(note.starts_with("example.org/dev1\n3\nCQkJ"));
        let cp = s
            .verifier()
            .open_checkpoint(&note, Some("example.org/dev1"))
            .unwrap();
        assert_eq!(cp, checkpoint());
        let err = s
            .verifier()
            .open_checkpoint(&note, Some("other"))
            .unwrap_err();
        assert!(matches!(err, NoteError::WrongOrigin { .. }));
    }

    #[test]
    fn foreign_signatures_are_ignored_but_ours_is_required() {
        let s = signer();
        let other = SignerKey::from_seed("witness.example", &[1; 32]).unwrap();
        let note = s.sign_checkpoint(&checkpoint()).unwrap();
        let extra = other.sign_checkpoint(&checkpoint()).unwrap();
        let line = extra.lines().last().unwrap();
        let both = format!("{note}{line}\n");
        s.verifier().open(&both).unwrap();
        let err = s.verifier().open(&extra).unwrap_err();
        assert!(matches!(err, NoteError::NoKnownSignature { .. }), "{err}");
        // Same name, other key: the key id differs, and the error says so.
        let impostor = SignerKey::from_seed("example.org/dev1", &[8; 32]).unwrap();
        let forged = impostor.sign_checkpoint(&checkpoint()).unwrap();
        let err = s.verifier().open(&forged).unwrap_err();
        assert!(matches!(err, NoteError::WrongKeyId { .. }), "{err}");
    }

    #[test]
    fn malformed_notes_are_refused() {
        let note = signer().sign_checkpoint(&checkpoint()).unwrap();
        let v = signer().verifier();
        let sig_line = note.lines().last().unwrap().to_owned();
        let b64 = sig_line.rsplit(' ').next().unwrap();
        let mut raw = B64.decode(b64).unwrap();
        raw[10] ^= 1;
        let flipped = note.replace(b64, &B64.encode(&raw));
        let cases: Vec<(String, &str)> = vec![
            (note.trim_end_matches('\n').to_owned(), "newline"),
            (note.replace("\n\n", "\n"), "no blank line"),
            (
                format!("{}\n", note.split("\n\n").next().unwrap()) + "\n",
                "no signature lines",
            ),
            (note.replace('\u{2014}', "-"), "em dash"),
            (note.replace("dev1 ", "dev1\u{a0}"), "no space"),
            (note.replace(b64, "!!!!"), "base64"),
            (note.replace(b64, "AAAAAA=="), "shorter"),
            (flipped, "does not verify"),
            (note.replace("\n3\n", "\n03\n"), "does not verify"),
            (note.replace("dev1\n", "dev1\r\n"), "control character"),
            (format!("{note}{sig_line}"), "newline"),
            (format!("{note}garbage\n"), "em dash"),
        ];
        for (n, want) in cases {
            let err = v.open(&n).unwrap_err().to_string();
            assert!(err.contains(want), "{n:?}: {err:?} should mention {want:?}");
        }
    }

    #[test]
    fn malformed_checkpoint_texts_are_refused() {
        let root = B64.encode([9u8; 32]);
        let cases: Vec<(String, &str)> = vec![
            ("o\n3\n".into(), "missing"),
            (format!("o\n3\n{root}"), "newline"),
            (format!("\n3\n{root}\n"), "empty line"),
            (format!("o\n03\n{root}\n"), "leading zeros"),
            (format!("o\n+3\n{root}\n"), "leading zeros"),
            (format!("o\n-1\n{root}\n"), "leading zeros"),
            (format!("o\n99999999999999999999\n{root}\n"), "64 bits"),
            (format!("o\n3\n{}\n", &root[..40]), "32 bytes"),
            (format!("o\n3\n{}\n", B64.encode([9u8; 31])), "32 bytes"),
            (format!("o\n3\n{root}\n\next\n"), "empty line"),
        ];
        for (t, want) in cases {
            let err = Checkpoint::parse(&t).unwrap_err().to_string();
            assert!(err.contains(want), "{t:?}: {err:?} should mention {want:?}");
        }
        let with_ext = Checkpoint::parse(&format!("o\n0\n{root}\nx y\n")).unwrap();
        assert_eq!(with_ext.extensions, vec!["x y".to_owned()]);
        assert_eq!(with_ext.to_text().unwrap(), format!("o\n0\n{root}\nx y\n"));
    }

    #[test]
    fn checkpoints_that_would_not_parse_back_are_not_signed() {
        let mut cp = checkpoint();
        cp.origin = "two\nlines".into();
        assert!(signer().sign_checkpoint(&cp).is_err());
        let mut cp = checkpoint();
        cp.extensions = vec![String::new()];
        assert!(signer().sign_checkpoint(&cp).is_err());
    }
}
