//! A full disk (a 64 KiB tmpfs): appends fail with `NoSpace`, leave no partial record, lose
//! nothing that was appended, and work again once space returns.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use audit::{StoreError, verify_dir};

use crate::common::*;

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &Path) -> Result<Mount, String> {
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    Ok(Mount(dir.to_owned()))
}

#[test]
fn disk_full_is_reported_and_appends_resume_when_space_returns() {
    let mnt = tempfile::tempdir().unwrap();
    let _mount = match mount_tmpfs(mnt.path()) {
        Ok(m) => m,
        Err(why) => {
            println!("skipped: mounting a tmpfs is not permitted here ({why})");
            return;
        }
    };
    // Leave the log about 24 KiB: a filler takes the rest.
    let filler = mnt.path().join("filler");
    fs::write(&filler, vec![1u8; 36 * 1024]).unwrap();
    let dir = mnt.path().join("log");
    let mut log = open(&dir, small_segments(6000));
    let mut appended = Vec::new();
    let err = loop {
        let seq = log.size();
        match log.append(&entry(seq)) {
            Ok(s) => appended.push(s),
            Err(e) => break e,
        }
        if seq % 10 == 9 {
            // Checkpoints may fail too once the disk is full; that is reported, not hidden.
            if let Err(e) = log.checkpoint() {
                assert!(matches!(e, StoreError::NoSpace { .. }), "{e}");
            }
        }
        assert!(appended.len() < 10_000, "the disk never filled");
    };
    assert!(matches!(err, StoreError::NoSpace { .. }), "{err}");
    assert!(err.to_string().contains("no space left"), "{err}");
    let n = appended.len() as u64;
    assert!(n > 10, "only {n} records fit");
    // Still full: still an error, still nothing half-written.
    assert!(matches!(
        log.append(&entry(n)),
        Err(StoreError::NoSpace { .. })
    ));
    assert_eq!(log.size(), n);
    drop(log);
    let report = verify_dir(&dir, &vkey()).unwrap();
    assert!(report.is_ok(), "after ENOSPC: {report}");
    assert_eq!(report.size, n);

    // Space returns: the same log goes on.
    let mut log = open(&dir, small_segments(6000));
    assert_eq!(log.size(), n);
    assert!(matches!(
        log.append(&entry(n)),
        Err(StoreError::NoSpace { .. })
    ));
    fs::remove_file(&filler).unwrap();
    fill(&mut log, n + 20, &[n + 20]);
    let got: Vec<u64> = stored_entries(&log).iter().map(|(s, _)| *s).collect();
    assert_eq!(got, (0..n + 20).collect::<Vec<_>>());
    drop(log);
    let report = verify_dir(&dir, &vkey()).unwrap();
    assert!(report.is_ok(), "after space returned: {report}");
    println!("disk full after {n} records; resumed to {}", n + 20);
}
