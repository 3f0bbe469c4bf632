//! Damage and tampering: a bit flip anywhere in any file, and deliberate deletions,
//! reorderings and truncations of records, segments and checkpoints, are all detected.

use std::fs;
use std::path::Path;

use audit::frame::{
    ACK_MAGIC, AckSlot, Corruption, encode_ack_slot, encode_frame, encode_segment_header,
};
use audit::merkle::Frontier;
use audit::note::Checkpoint;
use audit::verify::ProblemKind;
use audit::{SignerKey, sign_entry, verify_dir};

use crate::common::*;

/// 12 records over several segments, three checkpoints, and an ack that pruned some
/// segments (so the pruned base, the ack slots and a compacted checkpoint file are covered).
fn small_pruned_log(dir: &Path) {
    let mut log = open(dir, small_segments(420));
    fill(&mut log, 12, &[3, 7, 12]);
    log.ack(4).unwrap();
    assert!(log.first_seq() > 0, "the fixture must have a pruned base");
}

#[test]
fn every_bit_flip_in_every_file_is_detected() {
    let d = tempfile::tempdir().unwrap();
    small_pruned_log(d.path());
    assert!(verify_dir(d.path(), &vkey()).unwrap().is_ok());
    let mut flips = 0;
    let mut misses = Vec::new();
    for file in all_files(d.path()) {
        let good = fs::read(&file).unwrap();
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 1 << (i % 8);
            fs::write(&file, &b).unwrap();
            let report = verify_dir(d.path(), &vkey()).unwrap();
            if report.is_ok() {
                misses.push(format!("{} byte {i}", file.display()));
            }
            flips += 1;
        }
        fs::write(&file, &good).unwrap();
    }
    println!("bit flips: {flips}, missed: {}", misses.len());
    assert!(misses.is_empty(), "undetected flips: {misses:?}");
    assert!(flips > 1500, "only {flips} flips: the fixture is too small");
}

/// Rewrites a segment's records with `f` applied to the list of (seq, payload), renumbering
/// seqs from the segment's first and recomputing every checksum: tampering by someone who
/// knows the format, which only signatures and the Merkle tree can catch.
fn rewrite_records(path: &Path, f: impl FnOnce(&mut Vec<Vec<u8>>)) {
    let (bytes, frames) = record_frames(path);
    let header = segment_header_len_of(path);
    let mut payloads: Vec<Vec<u8>> = frames
        .iter()
        .map(|&(at, len)| bytes[at + 16..at + len - 4].to_vec())
        .collect();
    f(&mut payloads);
    let mut out = bytes[..header].to_vec();
    for (i, p) in payloads.iter().enumerate() {
        out.extend_from_slice(&encode_frame(first_seq_of(path) + i as u64, &[p]));
    }
    fs::write(path, out).unwrap();
}

fn segment_header_len_of(path: &Path) -> usize {
    audit::frame::segment_header_len(first_seq_of(path)) as usize
}

/// Raw frames of checkpoints.log, rewritten by `f` (no renumbering, no checksum repair
/// unless `f` does it).
fn rewrite_checkpoints(dir: &Path, f: impl FnOnce(&mut Vec<Vec<u8>>)) {
    let path = dir.join("checkpoints.log");
    let bytes = fs::read(&path).unwrap();
    let mut frames: Vec<Vec<u8>> = frames(&bytes, 8)
        .iter()
        .map(|&(at, len)| bytes[at..at + len].to_vec())
        .collect();
    f(&mut frames);
    fs::write(&path, [bytes[..8].to_vec(), frames.concat()].concat()).unwrap();
}

/// Frame `seq` of the checkpoints file: a checkpoint of the log at `size` with an all-zero
/// root, signed by `signer`.
fn zero_root_checkpoint(seq: u64, size: u64, signer: &SignerKey) -> Vec<u8> {
    let cp = Checkpoint {
        origin: ORIGIN.into(),
        size,
        root: [0; 32],
        extensions: vec![],
    };
    encode_frame(seq, &[signer.sign_checkpoint(&cp).unwrap().as_bytes()])
}

fn note_payload(frame: &[u8]) -> String {
    String::from_utf8(frame[16..frame.len() - 4].to_vec()).unwrap()
}

type Mutation = fn(&Path);
type Expect = fn(&ProblemKind) -> bool;

fn drop_and_reopen(log: audit::Log, opts: audit::Options) -> audit::Log {
    let dir = log.dir().to_owned();
    drop(log);
    open(&dir, opts)
}

#[test]
fn tampering_is_detected_precisely() {
    let fixture = tempfile::tempdir().unwrap();
    {
        let mut log = open(fixture.path(), small_segments(420));
        fill(&mut log, 12, &[3, 7]);
        // Force a last segment of several records.
        let mut log = drop_and_reopen(log, small_segments(4096));
        fill(&mut log, 14, &[14]);
    }
    let segs = segments(fixture.path());
    assert!(
        segs.len() >= 4,
        "fixture needs several segments, has {}",
        segs.len()
    );
    for s in &segs {
        assert!(
            record_frames(s).1.len() >= 2,
            "{}: fixture needs 2 records per segment",
            s.display()
        );
    }

    let cases: Vec<(&str, Mutation, Expect)> = vec![
        (
            "delete a record (raw)",
            |d| {
                let s = &segments(d)[1];
                let (b, fr) = record_frames(s);
                let (at, len) = fr[0];
                fs::write(s, [&b[..at], &b[at + len..]].concat()).unwrap();
            },
            |k| {
                matches!(
                    k,
                    ProblemKind::Corrupt(Corruption::SeqMismatch { .. }) | ProblemKind::Gap { .. }
                )
            },
        ),
        (
            "swap two records (raw)",
            |d| {
                let s = &segments(d)[1];
                let (b, fr) = record_frames(s);
                assert!(fr.len() >= 2);
                let (a, b2) = (fr[0], fr[1]);
                let out = [
                    &b[..a.0],
                    &b[b2.0..b2.0 + b2.1],
                    &b[a.0..a.0 + a.1],
                    &b[b2.0 + b2.1..],
                ]
                .concat();
                fs::write(s, out).unwrap();
            },
            |k| matches!(k, ProblemKind::Corrupt(Corruption::SeqMismatch { .. })),
        ),
        (
            "swap two records, renumbered, checksums fixed",
            |d| {
                rewrite_records(segments(d).last().unwrap(), |p| p.swap(0, 1));
            },
            |k| matches!(k, ProblemKind::CheckpointRootMismatch { size: 14 }),
        ),
        (
            "delete the last record, checksums fixed",
            |d| {
                rewrite_records(segments(d).last().unwrap(), |p| {
                    p.pop();
                });
            },
            |k| {
                matches!(
                    k,
                    ProblemKind::TruncatedBelowCheckpoint {
                        size: 14,
                        records: 13
                    }
                )
            },
        ),
        (
            "replace an entry, checksums fixed",
            |d| {
                rewrite_records(&segments(d)[1], |p| {
                    let n = p[0].len() - 64;
                    p[0][64..].copy_from_slice(&vec![b' '; n]);
                });
            },
            |k| matches!(k, ProblemKind::BadRecordSignature),
        ),
        (
            "replace an entry, signed by another key",
            |d| {
                let other = SignerKey::from_seed(ORIGIN, &[1; 32]).unwrap();
                rewrite_records(&segments(d)[1], |p| {
                    let e = b"{\"count\":0}".to_vec();
                    p[0] = [sign_entry(&other, &e).to_vec(), e].concat();
                });
            },
            |k| matches!(k, ProblemKind::BadRecordSignature),
        ),
        (
            "swap two segment files",
            |d| {
                let s = segments(d);
                let tmp = d.join("x");
                fs::rename(&s[1], &tmp).unwrap();
                fs::rename(&s[2], &s[1]).unwrap();
                fs::rename(&tmp, &s[2]).unwrap();
            },
            |k| {
                matches!(
                    k,
                    ProblemKind::Corrupt(Corruption::SegmentNameMismatch { .. })
                )
            },
        ),
        (
            "delete a middle segment",
            |d| fs::remove_file(&segments(d)[1]).unwrap(),
            |k| matches!(k, ProblemKind::Gap { .. }),
        ),
        (
            "delete the first segment (nothing acknowledged)",
            |d| fs::remove_file(&segments(d)[0]).unwrap(),
            |k| matches!(k, ProblemKind::MissingUnacked { acked: 0, .. }),
        ),
        (
            "delete the last segment",
            |d| fs::remove_file(segments(d).last().unwrap()).unwrap(),
            |k| matches!(k, ProblemKind::TruncatedBelowCheckpoint { size: 14, .. }),
        ),
        (
            "cut the last segment at a record boundary",
            |d| {
                let s = segments(d).pop().unwrap();
                let (b, fr) = record_frames(&s);
                fs::write(&s, &b[..fr.last().unwrap().0]).unwrap();
            },
            |k| matches!(k, ProblemKind::TruncatedBelowCheckpoint { size: 14, .. }),
        ),
        (
            "forge a segment header frontier, checksum fixed",
            |d| {
                let s = &segments(d)[2];
                let mut f = Frontier::new();
                for _ in 0..first_seq_of(s) {
                    f.append([7; 32]);
                }
                let b = fs::read(s).unwrap();
                let h = encode_segment_header(&f);
                fs::write(s, [h.as_slice(), &b[h.len()..]].concat()).unwrap();
            },
            |k| matches!(k, ProblemKind::FrontierMismatch),
        ),
        (
            "copy a segment over the next one",
            |d| {
                let s = segments(d);
                fs::copy(&s[1], &s[2]).unwrap();
            },
            |k| {
                matches!(
                    k,
                    ProblemKind::Corrupt(Corruption::SegmentNameMismatch { .. })
                )
            },
        ),
        (
            "stray file among the segments",
            |d| fs::write(d.join("segments/notes.txt"), "hi").unwrap(),
            |k| matches!(k, ProblemKind::UnexpectedFile),
        ),
        (
            "delete the middle checkpoint",
            |d| {
                rewrite_checkpoints(d, |f| {
                    f.remove(1);
                })
            },
            |k| matches!(k, ProblemKind::Corrupt(Corruption::SeqMismatch { .. })),
        ),
        (
            "swap two checkpoints",
            |d| rewrite_checkpoints(d, |f| f.swap(1, 2)),
            |k| matches!(k, ProblemKind::Corrupt(Corruption::SeqMismatch { .. })),
        ),
        (
            "swap two checkpoints, renumbered",
            |d| {
                rewrite_checkpoints(d, |f| {
                    let (a, b) = (note_payload(&f[1]), note_payload(&f[2]));
                    f[1] = encode_frame(1, &[b.as_bytes()]);
                    f[2] = encode_frame(2, &[a.as_bytes()]);
                })
            },
            |k| {
                matches!(
                    k,
                    ProblemKind::CheckpointRollback {
                        size: 7,
                        previous: 14
                    }
                )
            },
        ),
        (
            "a checkpoint signed by an impostor key",
            |d| {
                rewrite_checkpoints(d, |f| {
                    let imp = SignerKey::from_seed(ORIGIN, &[1; 32]).unwrap();
                    f.push(zero_root_checkpoint(3, 14, &imp));
                })
            },
            |k| {
                matches!(
                    k,
                    ProblemKind::BadCheckpoint(audit::note::NoteError::WrongKeyId { .. })
                )
            },
        ),
        (
            "the device signed a second root at the same size (fork)",
            |d| {
                rewrite_checkpoints(d, |f| {
                    f.push(zero_root_checkpoint(3, 14, &key()));
                })
            },
            |k| matches!(k, ProblemKind::CheckpointFork { size: 14 }),
        ),
        (
            "a checkpoint whose root is not the log's",
            |d| {
                rewrite_checkpoints(d, |f| {
                    f.insert(1, zero_root_checkpoint(1, 5, &key()));
                    for (i, fr) in f.iter_mut().enumerate().skip(2) {
                        let n = note_payload(fr);
                        *fr = encode_frame(i as u64, &[n.as_bytes()]);
                    }
                })
            },
            |k| matches!(k, ProblemKind::CheckpointRootMismatch { size: 5 }),
        ),
        (
            "ack beyond the log, checksum fixed",
            |d| {
                let slot = encode_ack_slot(AckSlot {
                    acked: 99,
                    generation: 9,
                });
                let mut b = fs::read(d.join("ack")).unwrap();
                b[28..48].copy_from_slice(&slot);
                fs::write(d.join("ack"), b).unwrap();
            },
            |k| {
                matches!(
                    k,
                    ProblemKind::AckBeyondLog {
                        acked: 99,
                        records: 14
                    }
                )
            },
        ),
        (
            "checkpoints.log deleted",
            |d| fs::remove_file(d.join("checkpoints.log")).unwrap(),
            |k| matches!(k, ProblemKind::MissingFile),
        ),
        (
            "ack file replaced by an empty one",
            |d| fs::write(d.join("ack"), ACK_MAGIC).unwrap(),
            |k| matches!(k, ProblemKind::Corrupt(Corruption::BadMagic("an ack file"))),
        ),
    ];
    for (name, mutate, expected) in cases {
        let d = tempfile::tempdir().unwrap();
        copy_dir(fixture.path(), d.path());
        mutate(d.path());
        let report = verify_dir(d.path(), &vkey()).unwrap();
        let p = report
            .problem
            .unwrap_or_else(|| panic!("{name}: not detected"));
        println!("{name}: {p}");
        assert!(expected(&p.kind), "{name}: unexpected problem: {p}");
    }
}
