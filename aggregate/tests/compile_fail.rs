//! The invariant "only aggregates leave the device", checked by the compiler: each program in
//! `tests/ui/` tries to hand something else to an outbox, or to forge a record, and must fail
//! to compile with the error recorded beside it.

#[test]
fn raw_data_cannot_reach_an_outbox() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
