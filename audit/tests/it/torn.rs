//! Torn writes: every crash point of the last append, of a segment creation and of a
//! checkpoint leaves a log that opens with every earlier (durable) record present.

use std::fs::{self, OpenOptions};

use audit::frame::{SEGMENT_MAGIC, segment_header_len};
use audit::merkle::root_from_leaves;
use audit::verify::ProblemKind;
use audit::{Log, StoreError, verify_dir};

use crate::common::*;

fn truncate(path: &std::path::Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn last_record_cut_at_every_byte_recovers_the_records_before_it() {
    let src = tempfile::tempdir().unwrap();
    {
        let mut log = open(src.path(), small_segments(1 << 20));
        fill(&mut log, 4, &[4]);
        fill(&mut log, 5, &[]);
    }
    let last_seg = segments(src.path()).pop().unwrap();
    let (_, frames) = record_frames(&last_seg);
    let (start, len) = *frames.last().unwrap();
    let mut cases = 0;
    for cut in start..start + len {
        let d = tempfile::tempdir().unwrap();
        copy_dir(src.path(), d.path());
        let seg = d
            .path()
            .join("segments")
            .join(last_seg.file_name().unwrap());
        truncate(&seg, cut as u64);
        let report = verify_dir(d.path(), &vkey()).unwrap();
        if cut == start {
            assert!(report.is_ok(), "cut {cut}: {report}");
        } else {
            let p = report.problem.expect("a torn tail is reported");
            assert_eq!(p.kind, ProblemKind::TornTail, "cut {cut}: {p}");
            assert_eq!(
                (p.offset, p.seq),
                (Some(start as u64), Some(4)),
                "cut {cut}"
            );
        }
        let mut log = open(d.path(), small_segments(1 << 20));
        assert_eq!(log.size(), 4, "cut {cut}");
        assert_eq!(log.root(), root_from_leaves(&leaves(4)), "cut {cut}");
        let got: Vec<Vec<u8>> = stored_entries(&log).into_iter().map(|(_, e)| e).collect();
        assert_eq!(got, (0..4).map(entry).collect::<Vec<_>>(), "cut {cut}");
        // The log goes on as if the torn append never happened.
        fill(&mut log, 6, &[6]);
        drop(log);
        assert!(verify_dir(d.path(), &vkey()).unwrap().is_ok(), "cut {cut}");
        cases += 1;
    }
    assert_eq!(cases, len);
}

#[test]
fn segment_creation_cut_at_every_byte_recovers() {
    let src = tempfile::tempdir().unwrap();
    let header = {
        let mut log = open(src.path(), small_segments(1 << 20));
        fill(&mut log, 5, &[5]);
        audit::frame::encode_segment_header(log.frontier())
    };
    assert_eq!(header.len() as u64, segment_header_len(5));
    for cut in 0..=header.len() {
        let d = tempfile::tempdir().unwrap();
        copy_dir(src.path(), d.path());
        let seg = d.path().join("segments/00000000000000000005.log");
        // A crash while creating segment 5: a prefix of its header, or zeros.
        let mut bytes = header[..cut].to_vec();
        if cut == header.len() {
            bytes = vec![0; cut];
        }
        fs::write(&seg, &bytes).unwrap();
        let report = verify_dir(d.path(), &vkey()).unwrap();
        let kind = report.problem.map(|p| p.kind);
        assert_eq!(kind, Some(ProblemKind::TornSegmentHeader), "cut {cut}");
        let mut log = open(d.path(), small_segments(1 << 20));
        assert_eq!(log.size(), 5, "cut {cut}");
        assert!(!seg.exists() || fs::read(&seg).unwrap().starts_with(SEGMENT_MAGIC));
        fill(&mut log, 7, &[7]);
        drop(log);
        assert!(verify_dir(d.path(), &vkey()).unwrap().is_ok(), "cut {cut}");
    }
}

#[test]
fn checkpoint_cut_at_every_byte_recovers_the_previous_checkpoint() {
    let src = tempfile::tempdir().unwrap();
    let first = {
        let mut log = open(src.path(), small_segments(1 << 20));
        fill(&mut log, 3, &[3]);
        let first = log.last_checkpoint().unwrap().to_owned();
        fill(&mut log, 6, &[6]);
        first
    };
    let ck = src.path().join("checkpoints.log");
    let bytes = fs::read(&ck).unwrap();
    let (start, len) = *frames(&bytes, 8).last().unwrap();
    for cut in start..start + len {
        let d = tempfile::tempdir().unwrap();
        copy_dir(src.path(), d.path());
        truncate(&d.path().join("checkpoints.log"), cut as u64);
        let log = open(d.path(), small_segments(1 << 20));
        assert_eq!(log.last_checkpoint(), Some(first.as_str()), "cut {cut}");
        assert_eq!(log.size(), 6);
    }
}

#[test]
fn zero_filled_tail_is_cut_but_garbage_is_refused() {
    let src = tempfile::tempdir().unwrap();
    {
        let mut log = open(src.path(), small_segments(1 << 20));
        fill(&mut log, 3, &[]);
    }
    let seg = segments(src.path()).pop().unwrap();
    let good = fs::read(&seg).unwrap();

    // Zeros after the last record (a file extended but never written): cut on open.
    fs::write(&seg, [good.as_slice(), &[0u8; 5000]].concat()).unwrap();
    let log = open(src.path(), small_segments(1 << 20));
    assert_eq!(log.size(), 3);
    drop(log);
    assert_eq!(fs::read(&seg).unwrap(), good);

    // Anything else after the last record is damage: refused, nothing cut.
    let mut garbage = good.clone();
    garbage.extend_from_slice(&[0x5a; 40]);
    fs::write(&seg, &garbage).unwrap();
    let err = Log::open(src.path(), ORIGIN, &key(), small_segments(1 << 20)).unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { offset, .. } if offset == good.len() as u64),
        "{err}"
    );
    assert_eq!(fs::read(&seg).unwrap(), garbage);
}
