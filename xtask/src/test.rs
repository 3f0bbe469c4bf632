//! `cargo xtask test`: every test the project has, the way CI runs them.

use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::sh;

/// Linux targets whose agent `xtask test` cross-builds and runs under QEMU. One target: a cold
/// cross build of the agent takes about as long as the host's.
const CI_TARGETS: &[&str] = &["aarch64-unknown-linux-gnu"];
/// Boards whose int8 golden checks run under QEMU user mode without the rest of the cross
/// tests: 32-bit ARM (a Cortex-A7), where the int8 path must be correct and speed is not
/// required (onnxruntime ships no armv7 build to count against).
const GOLDEN_BOARDS: &[&str] = &["raspberry-pi-2"];

pub fn test() -> Result<()> {
    preflight()?;
    // Models too large to commit are fetched first: tests run every real model.
    crate::models::fetch()?;
    crate::lint::lint()?;
    let figures = sh::target_dir().join("iat-figures.txt");
    let _ = std::fs::remove_file(&figures);
    // The end-to-end tests run the hub and agent binaries; `cargo test` builds a package's
    // binaries only for that package's own integration tests.
    crate::models::build_all()?;
    let mut cargo_test = sh::cargo();
    cargo_test.args(["test", "--workspace", "--no-fail-fast"]);
    if let Some(features) = host_kernel_features() {
        cargo_test.env("IAT_REQUIRE_CPU_FEATURES", features);
    }
    sh::run(&mut cargo_test)?;
    postgres_tests()?;
    // Golden checks of every real model, through the agent's own command line.
    crate::models::check()?;
    // The sensor node: every MCU board file is built (flash and RAM use printed); the emulated
    // ones also run their on-target tests and the node app against the log snapshot in QEMU.
    // Boards are data: adding a board file adds it here.
    for board in boards::Board::all(&sh::root().join("boards"))? {
        if board.kind != boards::Kind::Mcu {
            continue;
        }
        if matches!(board.qemu, Some(boards::Qemu::System { .. })) {
            let args = crate::qemu::firmware::QemuArgs {
                board: board.name.clone(),
                overwrite: false,
                app_only: false,
                serial: None,
                elf: None,
            };
            expect_success(
                &format!("qemu --board {}", board.name),
                crate::qemu::firmware::run(&args),
            )?;
        } else {
            let args = crate::build::firmware::BuildArgs {
                board: board.name.clone(),
                debug: false,
            };
            expect_success(
                &format!("build --board {}", board.name),
                crate::build::firmware::run(&args),
            )?;
        }
    }
    // Every MCU board with a probe-rs chip: its firmware checked against the chip and the
    // board file, and its download planned (no probe needed).
    for board in boards::Board::all(&sh::root().join("boards"))? {
        if board.kind != boards::Kind::Mcu || board.chip.is_none() {
            continue;
        }
        let args = crate::flash::FlashArgs {
            board: board.name.clone(),
            dry_run: true,
            ..Default::default()
        };
        expect_success(
            &format!("flash --dry-run --board {}", board.name),
            crate::flash::run(&args),
        )?;
    }
    // The agent cross-built for the Linux targets in CI_TARGETS and run under QEMU user mode
    // on the first board of each target: its records must equal the host agent's. Then the
    // board's whole OS under qemu-system with the agent as a service, publishing to a hub on
    // the host. A cold cross build of tract takes 13-22 minutes here, a warm one a relink.
    cross_tests()?;
    // The delivery, fault and tampering figures of the end-to-end tests (tests/tests/it).
    if let Ok(text) = std::fs::read_to_string(&figures) {
        println!("xtask test: end-to-end figures\n{text}");
    }
    println!("xtask test: all passed");
    Ok(())
}

/// The hub's tests of its store, web side, health, retention and TLS to the database, its
/// browser tests, and the end-to-end
/// tests that exercise the hub's ingest (delivery, tampering, a fleet, a hub restart), run
/// again on PostgreSQL: a throwaway cluster started here (`crate::postgres`), one database
/// per test (`hub::db::sql::test_database`), removed after.
fn postgres_tests() -> Result<()> {
    let pg = crate::postgres::Cluster::start()?;
    let env = ("IAT_TEST_POSTGRES", pg.conninfo());
    let mut hub = sh::cargo();
    hub.args(["test", "-p", "hub", "--lib"])
        .args(["--test", "web", "--test", "health", "--test", "ops"])
        .args([
            "--test",
            "browser",
            "--test",
            "retention",
            "--test",
            "postgres_tls",
        ])
        .env(env.0, &env.1);
    let hub = sh::run(&mut hub);
    let mut e2e = sh::cargo();
    e2e.args(["test", "-p", "tests", "--test", "it", "--"])
        .args([
            "clean_run_delivers_everything_once_without_alarms",
            "tampered_messages_are_rejected_and_alarmed",
            "a_fleet_s_backlog_and_live_records_are_all_stored_once_and_acknowledged",
            "three_hub_instances_share_a_fleet_and_survive_a_sigkill",
            "three_hub_instances_survive_a_flood_of_rejections_and_a_lost_database_connection",
            "broker_sigstop_black_hole_reset_and_hub_restart",
        ])
        .env(env.0, &env.1);
    let e2e = sh::run(&mut e2e);
    if hub.is_err() || e2e.is_err() {
        eprintln!(
            "xtask test: on PostgreSQL; the server's log: {}",
            pg.dir().join("server.log").display()
        );
        let log = std::fs::read_to_string(pg.dir().join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        for l in tail.iter().rev() {
            eprintln!("  {l}");
        }
    }
    hub?;
    e2e
}

fn cross_tests() -> Result<()> {
    let mut done = Vec::new();
    for board in boards::Board::all(&sh::root().join("boards"))? {
        let emulated = matches!(board.qemu, Some(boards::Qemu::User { .. }));
        if board.kind != boards::Kind::Linux
            || !emulated
            || !CI_TARGETS.contains(&board.target.as_str())
            || done.contains(&board.target)
        {
            continue;
        }
        let job = linux_job(crate::qemu::LinuxJob::Agent {
            board: board.name.clone(),
        });
        expect_success(
            &format!("qemu agent --board {}", board.name),
            crate::qemu::run(&job),
        )?;
        // Instructions per inference on the board's core, the agent's and onnxruntime's, for
        // one int8 zoo network: the whole counting chain (`cargo xtask bench --board`) runs.
        crate::insn::bench(&board.name, &["zoo-audio-cnn".to_owned()], true, 1)?;
        if board.vm.is_some() {
            expect_success(
                &format!("qemu system --board {}", board.name),
                crate::qemu::system::run(&board),
            )?;
        }
        done.push(board.target);
    }
    // Every int8 card on each emulated core of those targets (Cortex-A72 and A76 for
    // aarch64: one binary, other kernels) and of the GOLDEN_BOARDS, its golden check and the
    // same outputs, bit for bit, with the portable paths (`IAT_KERNELS=portable`).
    let mut int8: Vec<std::path::PathBuf> = crate::models::cards()?
        .into_iter()
        .filter(|c| crate::models::id(c).ends_with("-int8"))
        .collect();
    int8.extend(crate::models::zoo_cards()?);
    for board in boards::Board::all(&sh::root().join("boards"))? {
        if board.kind != boards::Kind::Linux
            || !matches!(board.qemu, Some(boards::Qemu::User { .. }))
            || !(CI_TARGETS.contains(&board.target.as_str())
                || GOLDEN_BOARDS.contains(&board.name.as_str()))
        {
            continue;
        }
        let job = linux_job(crate::qemu::LinuxJob::Model {
            cards: int8.clone(),
            board: board.name.clone(),
        });
        expect_success(
            &format!("qemu model --board {}", board.name),
            crate::qemu::run(&job),
        )?;
    }
    if done.len() != CI_TARGETS.len() {
        bail!("no emulated linux board for some of {CI_TARGETS:?} (tested: {done:?})");
    }
    Ok(())
}

/// The CPU features the kernels use (crate `kernels`, `arch::x86_64`) that this host has, as
/// `IAT_REQUIRE_CPU_FEATURES` takes them: a kernel test that would skip for lack of one of
/// them fails instead. `None` off x86_64 Linux or without any of them.
fn host_kernel_features() -> Option<String> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags")?.trim_start().strip_prefix(':'))?
        .split_whitespace()
        .collect();
    // (Rust's feature name, the kernel's flag name in /proc/cpuinfo.)
    let known = [
        ("avx2", "avx2"),
        ("avx512f", "avx512f"),
        ("avx512bw", "avx512bw"),
        ("avx512vl", "avx512vl"),
        ("avx512vnni", "avx512_vnni"),
        ("avx512vbmi", "avx512vbmi"),
    ];
    let have: Vec<&str> = known
        .iter()
        .filter(|(_, flag)| flags.contains(flag))
        .map(|(name, _)| *name)
        .collect();
    (!have.is_empty()).then(|| have.join(","))
}

/// `cargo xtask qemu <job>` for a Linux board (no firmware arguments).
fn linux_job(job: crate::qemu::LinuxJob) -> crate::qemu::QemuJob {
    crate::qemu::QemuJob {
        linux: Some(job),
        firmware: crate::qemu::firmware::QemuArgs {
            board: String::new(),
            overwrite: false,
            app_only: false,
            serial: None,
            elf: None,
        },
    }
}

fn expect_success(what: &str, r: Result<ExitCode>) -> Result<()> {
    let code = r?;
    if code != ExitCode::SUCCESS {
        bail!("{what} failed ({code:?})");
    }
    Ok(())
}

/// Tools the tests need, installed when missing (apt, as root). Under CI a tool that cannot be
/// installed fails the run; nothing is skipped silently.
fn preflight() -> Result<()> {
    // The node's and the boards' Rust targets: `tests/tests/qemu_serial.rs` builds the firmware.
    sh::ensure_toolchain_targets()?;
    sh::ensure_build_deps()?;
    sh::ensure_tools(&[
        ("python3", "python3"),
        ("pip3", "python3-pip"),
        ("qemu-system-arm", "qemu-system-arm"),
        // The end-to-end tests start a real broker (tests/src/broker.rs).
        ("mosquitto", "mosquitto"),
        ("qemu-aarch64", "qemu-user"),
        ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
        // The Linux install test (tests/tests/it/deploy.rs) runs a real sshd on loopback.
        ("sshd", "openssh-server"),
        ("ssh", "openssh-client"),
        // The hub's browser tests drive headless Chromium (hub/tests/browser.rs).
        ("chromium", "chromium"),
        ("chromedriver", "chromium-driver"),
    ])?;
    // The agent's camera tests (agent/tests/camera.rs).
    sh::ensure_camera_tools()
}
