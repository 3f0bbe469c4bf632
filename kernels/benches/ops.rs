//! The main int8 operators on a representative geometry (`kernels::bench`):
//! `cargo bench -p kernels`.

use criterion::{Criterion, criterion_group, criterion_main};

fn operators(c: &mut Criterion) {
    for case in kernels::bench::cases().expect("the benchmark's operators build") {
        c.bench_function(case.name, |b| {
            b.iter(|| std::hint::black_box(case.run().expect("the operator runs")))
        });
    }
}

criterion_group!(benches, operators);
criterion_main!(benches);
