//! `cargo bench -p hub --bench web`: page load time and API latency of the web side for a hub
//! holding one year of 15-minute aggregates for 100 devices (35,040 windows each, 3,504,000
//! rows of the real `series` table, written through `hub::db::series::insert`).
//!
//! The fixture is generated once and cached in `$CARGO_TARGET_DIR/iat-bench/web-fixture`
//! (or target/iat-bench/...). It holds the derived series rows, the enrolment (100 devices
//! with the centerface-int8 card), each device's state row and status; it does not hold the
//! 3.5 million signed record blobs (about 2.6 GB) that real ingest would also have stored: no
//! page or API call measured here reads them.
//!
//! Figures: p50/p90 over N requests per endpoint over loopback HTTP, rotating over devices.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hub::config;
use hub::db::series::Point;
use hub::enrolment::{Enrolment, RawDevice};

const DEVICES: usize = 100;
const WINDOWS: i64 = 35_040;
const WINDOW_MS: i64 = 900_000;
/// 2025-01-01T00:00:00Z
const T0: i64 = 1_735_689_600_000;
const K: u64 = 3;
const FIXTURE_VERSION: &str = "web-fixture v2";

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t),
        None => std::env::current_exe()
            .ok()
            .and_then(|p| p.ancestors().nth(3).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("target")),
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn device_id(i: usize) -> String {
    format!("dev-{i:03}")
}

/// A plausible day of people counting: busy by day, quiet (and suppressed) at night.
fn value(dev: usize, w: i64) -> Option<i64> {
    let hour = (w % 96) / 4;
    let base: i64 = match hour {
        0..=5 => 1,
        6..=8 => 40,
        9..=16 => 25,
        17..=19 => 45,
        _ => 8,
    };
    let jitter = ((w * 7919 + dev as i64 * 104_729) % 11) - 5;
    let v = (base + jitter).max(0);
    (v as u64 >= K).then_some(v)
}

fn generate(dir: &Path) -> anyhow::Result<()> {
    let t = Instant::now();
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("hub.toml"),
        format!(
            "name = \"bench-hub\"\nkey = \"hub.key\"\ndb = \"hub.sqlite\"\ndevices = \"devices.toml\"\n\
             [mqtt]\nhost = \"127.0.0.1\"\nport = 1\n[http]\nlisten = \"127.0.0.1:0\"\ncards = \"{}\"\n",
            repo().join("models").display()
        ),
    )?;
    let cfg = config::Config::load(&dir.join("hub.toml"))?;
    let card = hub::enrolment::cards::load(&repo().join("models/centerface-int8/card.toml"))?;
    let conn = hub::db::store::open(&cfg.db)?;
    if let Some(c) = conn.sqlite() {
        c.pragma_update(None, "synchronous", "OFF")?;
    }
    for d in 0..DEVICES {
        let id = device_id(d);
        let territory = format!("fr-{}", ["lyon", "nantes", "lille", "rennes"][d % 4]);
        let key = audit::SignerKey::from_seed(
            &hub_link::origin(&territory, &id),
            &[(d % 251) as u8 + 1; 32],
        )?;
        hub::enrolment::enroll(
            &cfg.devices,
            RawDevice {
                id: id.clone(),
                territory: territory.clone(),
                key: key.verifier().to_string(),
                enrolled: Some(hub::dates::format(T0)),
                site: None,
                retired_keys: vec![],
                models: vec![card.clone()],
                ..Default::default()
            },
        )?;
        let points: Vec<Point> = (0..WINDOWS)
            .map(|w| {
                let v = value(d, w);
                Point {
                    device: id.clone(),
                    model: card.id.clone(),
                    kind: "count".into(),
                    class: "face".into(),
                    start_ms: T0 + w * WINDOW_MS,
                    seq: w as u64,
                    length_ms: WINDOW_MS,
                    partial: w == 0,
                    clock_jumps: 0,
                    n: 900,
                    value: v,
                    value_suppressed: v.is_none(),
                    peak: v.map(|v| v / 4).filter(|p| *p as u64 >= K),
                    peak_suppressed: v.is_none_or(|v| ((v / 4) as u64) < K),
                    k: K,
                    epsilon_milli: Some(1000),
                    budget: None,
                }
            })
            .collect();
        let tx = conn.transaction()?;
        hub::db::series::insert(&tx, &points)?;
        hub::db::store::save_state(
            &tx,
            &id,
            &hub::db::store::DeviceState {
                next_seq: WINDOWS as u64,
                ..Default::default()
            },
        )?;
        hub::db::store::status(&tx, &id, if d % 10 == 3 { "offline" } else { "online" }, T0)?;
        tx.commit()?;
        if d % 10 == 9 {
            eprintln!(
                "fixture: {} devices, {:.0} s",
                d + 1,
                t.elapsed().as_secs_f64()
            );
        }
    }
    if let Some(c) = conn.sqlite() {
        c.pragma_update(None, "synchronous", "FULL")?;
    }
    conn.execute_batch("ANALYZE")?;
    drop(conn);
    std::fs::write(dir.join("ready"), FIXTURE_VERSION)?;
    eprintln!(
        "fixture: {} series rows generated in {:.1} s",
        DEVICES as i64 * WINDOWS,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn measure(agent: &ureq::Agent, base: &str, label: &str, n: usize, path: &dyn Fn(usize) -> String) {
    let mut times = Vec::with_capacity(n);
    let mut bytes = 0usize;
    // One warm-up request (SQLite page cache, connection pool).
    let _ = agent.get(&format!("{base}{}", path(0))).call();
    for i in 0..n {
        let url = format!("{base}{}", path(i));
        let t = Instant::now();
        let mut r = agent.get(&url).call().expect("request");
        let body = r
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_vec()
            .expect("body");
        times.push(t.elapsed());
        assert_eq!(r.status().as_u16(), 200, "{url}");
        bytes = body.len();
    }
    times.sort();
    println!(
        "BENCH web {label:<44} p50 {:>8.1} ms  p90 {:>8.1} ms  ({n} requests, {} KiB)",
        percentile(&times, 0.5).as_secs_f64() * 1000.0,
        percentile(&times, 0.9).as_secs_f64() * 1000.0,
        bytes / 1024
    );
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("web bench: run with `cargo bench -p hub --bench web`");
        return Ok(());
    }
    let dir = target_dir().join("iat-bench/web-fixture");
    let ready = std::fs::read_to_string(dir.join("ready")).unwrap_or_default();
    if ready != FIXTURE_VERSION {
        eprintln!("fixture: generating {} (once; cached)", dir.display());
        generate(&dir)?;
    } else {
        eprintln!("fixture: cached in {}", dir.display());
    }
    let cfg = config::Config::load(&dir.join("hub.toml"))?;
    let rows: i64 = hub::db::store::open(&cfg.db)?.query_row(
        "SELECT COUNT(*) FROM series",
        hub::params![],
        |r| r.get(0),
    )?;
    println!(
        "BENCH web fixture: {DEVICES} devices x {WINDOWS} windows of 15 min = {rows} series rows, database {} MiB",
        match &cfg.db {
            hub::db::sql::Database::Sqlite(p) => std::fs::metadata(p)?.len() >> 20,
            hub::db::sql::Database::Postgres(_) => 0,
        }
    );
    let enrolment = Arc::new(RwLock::new(Enrolment::load(&cfg.devices)?));
    let web = hub::web::start(
        hub::web::WebConfig::from_config(&cfg).expect("[http]"),
        enrolment,
    )?;
    let base = format!("http://{}", web.addr);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let dev = |i: usize| device_id(i * 37 % DEVICES);
    let series = "model=centerface-int8&kind=count&class=face";
    measure(
        &agent,
        &base,
        "page  / (dashboard, 100 devices)",
        30,
        &|_| "/".into(),
    );
    measure(
        &agent,
        &base,
        "page  /device/{id} (1-year chart, daily points)",
        30,
        &|i| format!("/device/{}", dev(i)),
    );
    measure(
        &agent,
        &base,
        "page  /device/{id}?from..to (30 days, 2-h points)",
        30,
        &|i| format!("/device/{}?from=2025-06-01&to=2025-07-01", dev(i)),
    );
    measure(&agent, &base, "page  /register (100 devices)", 30, &|_| {
        "/register".into()
    });
    measure(
        &agent,
        &base,
        "api   series, 1 device, 1 year, auto (daily)",
        30,
        &|i| format!("/api/devices/{}/series?{series}", dev(i)),
    );
    measure(
        &agent,
        &base,
        "api   series, 1 device, 1 year, every window",
        20,
        &|i| format!("/api/devices/{}/series?{series}&bucket=window", dev(i)),
    );
    measure(
        &agent,
        &base,
        "api   /api/devices (100 devices)",
        30,
        &|_| "/api/devices".into(),
    );
    measure(
        &agent,
        &base,
        "csv   series.csv, 1 device, 1 year (35,040 lines)",
        20,
        &|i| format!("/export/{}/series.csv?{series}", dev(i)),
    );
    measure(
        &agent,
        &base,
        "csv   open-data measures, 1 device, 1 year",
        20,
        &|i| format!("/export/comptage/measures.csv?device={}", dev(i)),
    );
    web.stop();
    Ok(())
}
