//! "Only aggregates leave the device", checked by the compiler at the outbox: each program in
//! `tests/ui/` tries to put something other than a sealed record into the audit log that is
//! the device's outbox, and must fail to compile with the error recorded beside it. (A record
//! built by hand and a label outside the card's set are refused one step earlier, in crate
//! `aggregate`'s own compile-fail tests.)

#[test]
fn only_records_reach_the_log() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
