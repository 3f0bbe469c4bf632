//! The outbox is the device's only writer to its audit log: no other crate that runs on the
//! device opens an `audit::Log` (whose `append` takes any bytes, as a format crate must for
//! verifiers and tests). The compiler closes the routes through the outbox (`tests/ui`); this
//! test closes the route around it, by reading the device crates' sources.

use std::path::{Path, PathBuf};

/// The crates that run on a device, besides this one and `audit`.
const DEVICE_CRATES: &[&str] = &["agent", "runtime", "kernels", "modelcard", "aggregate"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_device_crate_opens_the_log_but_the_outbox() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut offenders = Vec::new();
    let mut read = 0;
    for c in DEVICE_CRATES {
        let mut files = Vec::new();
        rust_files(&root.join(c).join("src"), &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).expect("source file");
            read += 1;
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if code.contains("Log::open") || code.contains("audit::Log") {
                    offenders.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(read > 20, "read only {read} source files: wrong root?");
    assert!(
        offenders.is_empty(),
        "only crate `outbox` may open the audit log on a device:\n{}",
        offenders.join("\n")
    );
}
