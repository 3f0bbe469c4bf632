//! Integration tests of the audit log: crashes, damage, tampering, restarts, pruning, full
//! disks, and the worked examples of docs/audit-format.md. One test binary, a module per theme.

mod common;
mod diskfull;
mod docs;
mod prune;
mod restart;
mod sigkill;
mod tamper;
mod torn;
