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

fn float(c: &mut Criterion) {
    for (name, run) in kernels::bench::pointwise_cases().expect("the float cases build") {
        c.bench_function(&name, |b| b.iter(|| run().expect("the case runs")));
    }
}

criterion_group!(benches, operators, float);
criterion_main!(benches);
