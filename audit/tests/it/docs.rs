//! The worked examples of docs/audit-format.md are generated here from a fixed seed key and
//! asserted byte for byte, so the document stays true. `UPDATE_DOCS=1` rewrites them.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

use audit::entry::RECORD_DOMAIN;
use audit::frame::{encode_segment_header, initial_ack_file};
use audit::merkle::{Frontier, consistency_proof, inclusion_proof, leaf_hash, root_from_leaves};
use audit::note::{Checkpoint, key_id};
use audit::{Log, Options, SignerKey, sign_entry, verify_dir};

const BEGIN: &str = "<!-- BEGIN GENERATED EXAMPLES (audit/tests/it/docs.rs) -->\n";
const END: &str = "<!-- END GENERATED EXAMPLES -->";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Hex in lines of 32 bytes.
fn hex_block(b: &[u8]) -> String {
    b.chunks(32).map(hex).collect::<Vec<_>>().join("\n")
}

fn examples() -> String {
    let name = "iat.example/device/0001";
    let seed: [u8; 32] = std::array::from_fn(|i| i as u8);
    let key = SignerKey::from_seed(name, &seed).unwrap();
    let v = key.verifier();
    let public = v.verifying_key().to_bytes();
    let entries: [&[u8]; 3] = [
        br#"{"count":3,"kind":"people","seq":0}"#,
        br#"{"count":5,"kind":"people","seq":1}"#,
        br#"{"count":4,"kind":"people","seq":2}"#,
    ];
    let leaves: Vec<_> = entries.iter().map(|e| leaf_hash(e)).collect();
    let mut o = String::new();
    let w = &mut o;

    writeln!(w, "### Keys\n").unwrap();
    writeln!(
        w,
        "Seed (RFC 8032 private key) `000102…1f`, key name `{name}`.\n"
    )
    .unwrap();
    writeln!(w, "```text").unwrap();
    writeln!(w, "public key      {}", hex(&public)).unwrap();
    writeln!(
        w,
        "key id input    {} || 0a 01 || public key",
        hex(name.as_bytes())
    )
    .unwrap();
    writeln!(w, "key id          {:08x}", key_id(name, &public)).unwrap();
    writeln!(w, "verifier key    {v}").unwrap();
    writeln!(w, "signer key      {}", key.to_private_string().as_str()).unwrap();
    writeln!(w, "```\n").unwrap();

    writeln!(w, "### Records and leaves\n").unwrap();
    writeln!(
        w,
        "Illustrative entries (the real schema is in record-format.md):\n"
    )
    .unwrap();
    writeln!(w, "```text").unwrap();
    for (i, e) in entries.iter().enumerate() {
        writeln!(w, "entry {i}         {}", std::str::from_utf8(e).unwrap()).unwrap();
        writeln!(w, "leaf hash {i}     {}", hex(&leaves[i])).unwrap();
    }
    let sig0 = sign_entry(&key, entries[0]);
    writeln!(
        w,
        "signed message 0 {}{}",
        hex(RECORD_DOMAIN),
        hex(entries[0])
    )
    .unwrap();
    writeln!(w, "signature 0     {}", hex(&sig0)).unwrap();
    writeln!(w, "```\n").unwrap();

    writeln!(w, "### Tree, frontier and proofs\n").unwrap();
    writeln!(w, "```text").unwrap();
    let mut f = Frontier::new();
    for (i, l) in leaves.iter().enumerate() {
        f.append(*l);
        writeln!(w, "root at size {}  {}", i + 1, hex(&f.root())).unwrap();
    }
    writeln!(
        w,
        "node(leaf 0, leaf 1) {}",
        hex(&root_from_leaves(&leaves[..2]))
    )
    .unwrap();
    writeln!(
        w,
        "frontier at size 3 (bytes)\n{}",
        hex_block(&f.to_bytes())
    )
    .unwrap();
    let ip = inclusion_proof(&leaves, 1).unwrap();
    writeln!(
        w,
        "inclusion proof of leaf 1 in size 3: [{}]",
        ip.iter().map(|h| hex(h)).collect::<Vec<_>>().join(", ")
    )
    .unwrap();
    let cp = consistency_proof(&leaves, 2).unwrap();
    writeln!(
        w,
        "consistency proof from size 2 to 3: [{}]",
        cp.iter().map(|h| hex(h)).collect::<Vec<_>>().join(", ")
    )
    .unwrap();
    writeln!(w, "```\n").unwrap();

    // The same records through the real store, to show the bytes on disk.
    let d = tempfile::tempdir().unwrap();
    let note = {
        let mut log = Log::open(d.path(), name, &key, Options::default()).unwrap();
        for e in entries {
            log.append(e).unwrap();
        }
        let note = log.checkpoint().unwrap();
        log.ack(0).unwrap();
        note
    };
    assert!(verify_dir(d.path(), &v).unwrap().is_ok());
    let seg = fs::read(d.path().join("segments/00000000000000000000.log")).unwrap();
    let h0 = encode_segment_header(&Frontier::new());
    assert_eq!(&seg[..h0.len()], h0.as_slice());
    let r0 = &seg[h0.len()..h0.len() + 84 + entries[0].len()];

    writeln!(w, "### Segment `segments/00000000000000000000.log`\n").unwrap();
    writeln!(w, "```text").unwrap();
    writeln!(
        w,
        "segment header (magic, frontier of size 0, crc)\n{}",
        hex_block(&h0)
    )
    .unwrap();
    writeln!(w, "record 0 frame:").unwrap();
    writeln!(w, "  length        {}", hex(&r0[0..4])).unwrap();
    writeln!(w, "  seq           {}", hex(&r0[4..12])).unwrap();
    writeln!(w, "  header crc    {}", hex(&r0[12..16])).unwrap();
    writeln!(w, "  signature     {}", hex(&r0[16..80])).unwrap();
    writeln!(w, "  entry         {}", hex(&r0[80..r0.len() - 4])).unwrap();
    writeln!(w, "  payload crc   {}", hex(&r0[r0.len() - 4..])).unwrap();
    writeln!(w, "segment length  {} bytes", seg.len()).unwrap();
    let mut f2 = Frontier::new();
    f2.append(leaves[0]);
    f2.append(leaves[1]);
    writeln!(
        w,
        "header of a segment starting at seq 2 (frontier: one node)\n{}",
        hex_block(&encode_segment_header(&f2))
    )
    .unwrap();
    writeln!(w, "```\n").unwrap();

    let sig_line = note.lines().last().unwrap();
    let b64 = sig_line.rsplit(' ').next().unwrap();
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    writeln!(w, "### Checkpoint at size 3 (`checkpoints.log`, frame 0)\n").unwrap();
    writeln!(w, "```text\n{note}```\n").unwrap();
    writeln!(w, "```text").unwrap();
    writeln!(w, "signature line key id   {}", hex(&raw[..4])).unwrap();
    writeln!(w, "signature line Ed25519  {}", hex(&raw[4..])).unwrap();
    let ck = fs::read(d.path().join("checkpoints.log")).unwrap();
    writeln!(
        w,
        "checkpoints.log         {} (magic) + frame: header {} + {} note bytes + crc {}",
        hex(&ck[..8]),
        hex(&ck[8..24]),
        ck.len() - 28,
        hex(&ck[ck.len() - 4..])
    )
    .unwrap();
    let cpt = Checkpoint::parse(v.open(&note).unwrap()).unwrap();
    assert_eq!(cpt.root, root_from_leaves(&leaves));
    writeln!(w, "```\n").unwrap();

    writeln!(w, "### `ack` after acknowledging seq 0\n").unwrap();
    writeln!(w, "```text").unwrap();
    writeln!(w, "as created   {}", hex(&initial_ack_file())).unwrap();
    writeln!(
        w,
        "after ack(0) {}",
        hex(&fs::read(d.path().join("ack")).unwrap())
    )
    .unwrap();
    writeln!(w, "```").unwrap();
    o
}

#[test]
fn format_document_examples_are_current() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/audit-format.md");
    let doc = fs::read_to_string(&path).unwrap();
    let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) else {
        panic!("{}: generated-examples markers not found", path.display());
    };
    let current = &doc[b + BEGIN.len()..e];
    let fresh = examples();
    if current != fresh {
        if std::env::var_os("UPDATE_DOCS").is_some() {
            let new = format!("{}{BEGIN}{fresh}{}", &doc[..b], &doc[e..]);
            fs::write(&path, new).unwrap();
            println!("updated {}", path.display());
        } else {
            panic!(
                "{} examples are out of date; rerun with UPDATE_DOCS=1",
                path.display()
            );
        }
    }
}
