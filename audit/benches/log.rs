//! Audit log benchmarks: durable appends per second, bytes on disk per record (SD-card wear),
//! restart (open) time, and `verify_dir` throughput. Run: `cargo bench -p audit --bench log`.
//!
//! The temporary logs live under `$AUDIT_BENCH_DIR` (default: the system temp dir), so the
//! figures are those of that file system's storage.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use audit::{Log, Options, SignerKey, verify_dir};
use criterion::{Criterion, Throughput};

const ORIGIN: &str = "iat.example/bench-device";

fn key() -> SignerKey {
    SignerKey::from_seed(ORIGIN, &[1; 32]).unwrap()
}

/// A typical aggregate record as canonical JSON, about 400 bytes.
fn entry(seq: u64) -> Vec<u8> {
    let e = format!(
        concat!(
            r#"{{"agent":"iat-edge-agent/0.1.0","board":"raspberry-pi-4","count":{},"#,
            r#""device":"iat.example/device/0042","kind":"people_count","#,
            r#""model":{{"id":"centerface-int8","sha256":"9b0c4f3e5a1d2c7b8e6f0a9d3c5b7e1f2a4c6e8d0b2f4a6c8e0d2f4b6a8c0e2f4"}},"#,
            r#""privacy":{{"k_min":5,"noise":"none"}},"schema":"iat.aggregate/1","seq":{},"#,
            r#""window":{{"end":"2026-05-01T10:15:00Z","start":"2026-05-01T10:00:00Z"}}}}"#
        ),
        seq % 17,
        seq
    );
    e.into_bytes()
}

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("AUDIT_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

/// Bytes this process handed to the block layer so far (Linux `/proc/self/io`).
fn write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
}

fn build(dir: &Path, n: u64, checkpoint_every: u64) -> Log {
    let mut log = Log::open(dir, ORIGIN, &key(), Options::default()).unwrap();
    for s in 0..n {
        log.append(&entry(s)).unwrap();
        if (s + 1) % checkpoint_every == 0 {
            log.checkpoint().unwrap();
        }
    }
    log
}

/// The figures criterion does not give: on-disk bytes per record, what actually went to the
/// storage, and restart time.
fn disk_figures() {
    let n = 2000;
    let every = 100;
    let d = bench_dir();
    let before = write_bytes();
    let t = Instant::now();
    let log = build(d.path(), n, every);
    let elapsed = t.elapsed();
    let after = write_bytes();
    let entry_len = entry(n / 2).len();
    println!("--- audit log: {n} records of ~{entry_len} B, a checkpoint every {every} ---");
    println!(
        "appends with fdatasync: {:.0}/s ({:.2} ms each, checkpoints included)",
        n as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e3 / n as f64
    );
    let total = log.total_bytes();
    println!(
        "bytes on disk per record: {:.1} (entry {entry_len} + frame {} + checkpoints and headers {:.1})",
        total as f64 / n as f64,
        audit::frame::RECORD_OVERHEAD,
        total as f64 / n as f64 - entry_len as f64 - audit::frame::RECORD_OVERHEAD as f64
    );
    if let (Some(b), Some(a)) = (before, after) {
        println!(
            "bytes submitted to storage per record (page-granular fdatasync, /proc/self/io): {:.0}",
            (a - b) as f64 / n as f64
        );
    }
    drop(log);
    let t = Instant::now();
    let log = Log::open(d.path(), ORIGIN, &key(), Options::default()).unwrap();
    println!(
        "open (restart) of that log: {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(log.size(), n);
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(1));
    let d = bench_dir();
    let mut log = Log::open(d.path(), ORIGIN, &key(), Options::default()).unwrap();
    let mut seq = 0;
    g.bench_function("append_400B_fdatasync", |b| {
        b.iter(|| {
            log.append(black_box(&entry(seq))).unwrap();
            seq += 1;
        })
    });
    g.finish();
    drop(log);

    let n = 5000;
    let vd = bench_dir();
    drop(build(vd.path(), n, 100));
    let bytes = dir_bytes(vd.path());
    let v = key().verifier();
    let mut g = c.benchmark_group("verify_dir");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(n));
    g.bench_function(format!("{n}_records"), |b| {
        b.iter(|| assert!(verify_dir(vd.path(), &v).unwrap().is_ok()))
    });
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function(format!("{n}_records_{bytes}_bytes"), |b| {
        b.iter(|| assert!(verify_dir(vd.path(), &v).unwrap().is_ok()))
    });
    g.finish();

    let mut g = c.benchmark_group("open");
    g.sample_size(20);
    g.bench_function(format!("restart_{n}_records"), |b| {
        b.iter(|| Log::open(vd.path(), ORIGIN, &key(), Options::default()).unwrap())
    });
    g.finish();
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(p).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                total += e.metadata().unwrap().len();
            }
        }
    }
    total
}

fn main() {
    disk_figures();
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
