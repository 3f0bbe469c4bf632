//! Acknowledgement and pruning: only fully acknowledged segments go, verification continues
//! from the pruned base, and the outbox cap is an explicit error.

use std::fs;

use audit::merkle::{consistency_proof, root_from_leaves, verify_consistency};
use audit::{Options, StoreError, verify_dir};

use crate::common::*;

#[test]
fn ack_removes_only_fully_acknowledged_segments_and_verification_continues() {
    let d = tempfile::tempdir().unwrap();
    let mut log = open(d.path(), small_segments(700));
    fill(&mut log, 40, &[10, 25, 40]);
    let before: Vec<u64> = segments(d.path()).iter().map(|p| first_seq_of(p)).collect();
    assert!(before.len() >= 5, "{before:?}");
    let c40 = log.last_checkpoint().unwrap().to_owned();

    for acked_through in [0u64, 3, 11, 19, 26, 38, 39] {
        log.ack(acked_through).unwrap();
        let acked = acked_through + 1;
        let kept: Vec<u64> = segments(d.path()).iter().map(|p| first_seq_of(p)).collect();
        // A segment is gone iff the next one starts at or below the watermark.
        for (i, s) in before.iter().enumerate() {
            let next = before.get(i + 1).copied();
            let removable = next.is_some_and(|n| n <= acked);
            assert_eq!(
                !kept.contains(s),
                removable,
                "ack {acked_through}: segment {s}, kept {kept:?}"
            );
        }
        assert_eq!(log.first_seq(), kept[0]);
        assert!(log.first_seq() <= acked);
        // Resending works from the first kept record; pruned ones are an explicit error.
        let got: Vec<u64> = stored_entries(&log).iter().map(|(s, _)| *s).collect();
        assert_eq!(got, (kept[0]..40).collect::<Vec<_>>());
        if kept[0] > 0 {
            let err = log.read(kept[0] - 1).unwrap_err();
            assert!(matches!(err, StoreError::Pruned { .. }), "{err}");
        }
        let report = verify_dir(d.path(), &vkey()).unwrap();
        assert!(report.is_ok(), "ack {acked_through}: {report}");
        assert_eq!(
            (report.first_seq, report.size, report.acked),
            (kept[0], 40, acked)
        );
        assert_eq!(report.root, root_from_leaves(&leaves(40)));
        assert!(report.checkpoints >= 1);
    }
    // The latest checkpoint is always kept; the file holds nothing below the base otherwise.
    assert_eq!(log.last_checkpoint(), Some(c40.as_str()));
    let err = log.ack(40).unwrap_err();
    assert!(
        matches!(err, StoreError::AckBeyondEnd { seq: 40, size: 40 }),
        "{err}"
    );
    drop(log);

    // Reopen from the pruned state and continue: the new checkpoint extends the old one.
    let mut log = open(d.path(), small_segments(700));
    assert_eq!(log.size(), 40);
    fill(&mut log, 55, &[55]);
    let c55 = log.last_checkpoint().unwrap().to_owned();
    drop(log);
    let v = vkey();
    let (a, b) = (
        v.open_checkpoint(&c40, None).unwrap(),
        v.open_checkpoint(&c55, None).unwrap(),
    );
    let proof = consistency_proof(&leaves(55), 40).unwrap();
    verify_consistency(40, 55, &a.root, &b.root, &proof).unwrap();
    let report = verify_dir(d.path(), &v).unwrap();
    assert!(report.is_ok(), "{report}");
}

#[test]
fn outbox_cap_is_an_explicit_error_until_records_are_acknowledged() {
    let d = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_max_bytes: 600,
        max_total_bytes: Some(3000),
        ..Options::default()
    };
    let mut log = open(d.path(), opts);
    let mut n = 0;
    let err = loop {
        match log.append(&entry(n)) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
        assert!(n < 100, "the cap never applied");
    };
    assert!(matches!(err, StoreError::Full { cap: 3000, .. }), "{err}");
    assert!(log.total_bytes() <= 3000);
    let on_disk: u64 = all_files(d.path())
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(on_disk, log.total_bytes());
    // Nothing was dropped: every appended record is there.
    assert_eq!(stored_entries(&log).len() as u64, n);
    log.ack(n - 1).unwrap();
    assert!(log.total_bytes() < 3000);
    assert_eq!(log.append(&entry(n)).unwrap(), n);
    drop(log);
    assert!(verify_dir(d.path(), &vkey()).unwrap().is_ok());
}
