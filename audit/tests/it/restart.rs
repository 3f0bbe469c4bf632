//! Restart continuity: append, close, reopen, append: the same tree as one run, and the
//! checkpoints before and after are consistent.

use audit::merkle::{consistency_proof, root_from_leaves, verify_consistency};
use audit::note::Checkpoint;
use audit::verify_dir;

use crate::common::*;

#[test]
fn reopened_log_continues_the_same_tree() {
    // (records before the restart, records after, segment size)
    let cases = [
        (0, 5, 1 << 20),
        (1, 1, 1 << 20),
        (7, 9, 400),
        (16, 17, 300),
        (33, 31, 1000),
    ];
    for (n, m, seg) in cases {
        let d = tempfile::tempdir().unwrap();
        let c1 = {
            let mut log = open(d.path(), small_segments(seg));
            fill(&mut log, n, &[]);
            log.checkpoint().unwrap()
        };
        let c2 = {
            let mut log = open(d.path(), small_segments(seg));
            assert_eq!(log.size(), n, "case {n}+{m}");
            assert_eq!(log.last_checkpoint(), Some(c1.as_str()));
            fill(&mut log, n + m, &[]);
            log.checkpoint().unwrap()
        };
        let all = leaves(n + m);
        let v = vkey();
        let cp1: Checkpoint = v.open_checkpoint(&c1, Some(ORIGIN)).unwrap();
        let cp2: Checkpoint = v.open_checkpoint(&c2, Some(ORIGIN)).unwrap();
        assert_eq!((cp1.size, cp2.size), (n, n + m));
        assert_eq!(cp2.root, root_from_leaves(&all), "case {n}+{m}");
        let proof = consistency_proof(&all, n).unwrap();
        verify_consistency(n, n + m, &cp1.root, &cp2.root, &proof).unwrap();
        let report = verify_dir(d.path(), &v).unwrap();
        assert!(report.is_ok(), "case {n}+{m}: {report}");
        assert_eq!((report.records, report.checkpoints), (n + m, 2));
    }
}

#[test]
fn a_second_opener_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let _log = open(d.path(), Default::default());
    let err = audit::Log::open(d.path(), ORIGIN, &key(), Default::default()).unwrap_err();
    assert!(matches!(err, audit::StoreError::Locked(_)), "{err}");
}

#[test]
fn opening_with_another_key_or_origin_is_refused() {
    let d = tempfile::tempdir().unwrap();
    {
        let mut log = open(d.path(), Default::default());
        fill(&mut log, 2, &[2]);
    }
    let other = audit::SignerKey::from_seed(ORIGIN, &[1; 32]).unwrap();
    let err = audit::Log::open(d.path(), ORIGIN, &other, Default::default()).unwrap_err();
    assert!(
        matches!(err, audit::StoreError::ForeignCheckpoint { .. }),
        "{err}"
    );
    let err =
        audit::Log::open(d.path(), "iat.example/other", &key(), Default::default()).unwrap_err();
    assert!(
        matches!(err, audit::StoreError::ForeignCheckpoint { .. }),
        "{err}"
    );
}

#[test]
fn a_deleted_ack_or_checkpoint_file_is_not_silently_recreated() {
    for file in ["ack", "checkpoints.log"] {
        let d = tempfile::tempdir().unwrap();
        {
            let mut log = open(d.path(), Default::default());
            fill(&mut log, 2, &[2]);
        }
        std::fs::remove_file(d.path().join(file)).unwrap();
        let err = audit::Log::open(d.path(), ORIGIN, &key(), Default::default()).unwrap_err();
        assert!(
            matches!(err, audit::StoreError::MissingFile(_)),
            "{file}: {err}"
        );
        assert!(!d.path().join(file).exists());
    }
}
