//! `cargo xtask <job>`: every workflow of the project (build, test, demo, bench, models...).
//! CI runs only these jobs, so a laptop and CI do the same thing.

fn main() {}
