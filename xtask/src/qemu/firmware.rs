//! `cargo xtask qemu`: runs the firmware of an emulated board under `qemu-system-arm` with
//! semihosting, decodes its defmt log on the host, and compares the log of each run with a
//! committed snapshot (`firmware/snapshots/`, refreshed by `--overwrite`). Exits with the
//! firmware's status.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use boards::{Board, Qemu};

use crate::build::firmware::What;

/// No firmware run takes this long; past it QEMU is killed and the run fails. A bound on a
/// hung run, not a speed check.
const HANG_LIMIT: Duration = Duration::from_secs(120);

#[derive(clap::Args)]
pub struct QemuArgs {
    /// Board file name in boards/ (an emulated board, with a `[qemu]` section).
    #[arg(long, default_value = "lm3s6965evb")]
    pub board: String,
    /// Rewrite the snapshots with this run's logs instead of comparing.
    #[arg(long)]
    pub overwrite: bool,
    /// Run only the node app, not the on-target tests.
    #[arg(long)]
    pub app_only: bool,
    /// Where QEMU connects the frame UART (a QEMU chardev: `tcp:127.0.0.1:4000`, `pty`);
    /// by default it goes nowhere. The snapshot is not checked when set.
    #[arg(long)]
    pub serial: Option<String>,
    /// Run this ELF (no build, no snapshot): what the firmware's cargo runner can call.
    #[arg(long)]
    pub elf: Option<PathBuf>,
}

pub fn run(args: &QemuArgs) -> Result<ExitCode> {
    let board = crate::build::firmware::load_board(&args.board)?;
    let Some(Qemu::System { machine, cpu, .. }) = &board.qemu else {
        bail!(
            "board `{}` has no `[qemu]` machine: it cannot be emulated",
            board.name
        );
    };
    let qemu = QemuCmd {
        machine,
        cpu,
        serial: args.serial.as_deref(),
    };

    if let Some(elf) = &args.elf {
        let run = qemu.run(elf)?;
        print!("{}", run.log);
        return Ok(exit_code(run.status));
    }

    let mut runs = Vec::new();
    if !args.app_only {
        for (name, elf) in crate::build::firmware::build(&board, What::Tests, false)? {
            runs.push((name, elf));
        }
    }
    let node = crate::build::firmware::build(&board, What::Node, true)?;
    runs.extend(node);

    let mut failed = false;
    for (name, elf) in &runs {
        println!("== {name} ({})", elf.display());
        let run = qemu.run(elf)?;
        print!("{}", run.log);
        if run.status != 0 {
            eprintln!("{name}: firmware exited with status {}", run.status);
            if !run.stderr.trim().is_empty() {
                eprintln!("qemu stderr:\n{}", run.stderr);
            }
            failed = true;
        }
        if args.serial.is_none() && !check_snapshot(&board, name, &run.log, args.overwrite)? {
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn exit_code(status: i32) -> ExitCode {
    ExitCode::from(u8::try_from(status).unwrap_or(1))
}

struct QemuCmd<'a> {
    machine: &'a str,
    cpu: &'a str,
    serial: Option<&'a str>,
}

struct Run {
    status: i32,
    log: String,
    stderr: String,
}

impl QemuCmd<'_> {
    fn run(&self, elf: &Path) -> Result<Run> {
        let elf_bytes = std::fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
        let mut child = Command::new("qemu-system-arm")
            .args(["-machine", self.machine, "-cpu", self.cpu])
            .args(["-nographic", "-monitor", "none"])
            .args(["-serial", self.serial.unwrap_or("none")])
            .args(["-semihosting-config", "enable=on,target=native"])
            .arg("-kernel")
            .arg(elf)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting qemu-system-arm (apt-get install qemu-system-arm)")?;
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let result = stdout.read_to_end(&mut out).map(|_| out);
            tx.send(()).ok();
            result
        });
        let err_reader = std::thread::spawn(move || {
            let mut err = String::new();
            stderr.read_to_string(&mut err).ok();
            err
        });
        if rx.recv_timeout(HANG_LIMIT).is_err() {
            child.kill().ok();
            child.wait().ok();
            bail!(
                "{} did not finish within {HANG_LIMIT:?}; killed",
                elf.display()
            );
        }
        let raw = reader.join().expect("reader thread")?;
        let status = child.wait()?.code().unwrap_or(-1);
        let stderr = err_reader.join().unwrap_or_default();
        let log = decode_defmt(&elf_bytes, &raw)?;
        Ok(Run {
            status,
            log,
            stderr,
        })
    }
}

/// Decodes a defmt byte stream with the ELF's table into one line per log frame:
/// `LEVEL message`, with no timestamps or locations, so the text is stable across builds.
#[cfg(not(feature = "defmt"))]
fn decode_defmt(_elf: &[u8], _raw: &[u8]) -> Result<String> {
    anyhow::bail!(
        "this xtask was built without its `defmt` feature; run the job through `cargo xtask`, \
         which turns the feature on"
    )
}

#[cfg(feature = "defmt")]
fn decode_defmt(elf: &[u8], raw: &[u8]) -> Result<String> {
    let table = defmt_decoder::Table::parse(elf)?.context("the ELF has no defmt table")?;
    let mut decoder = table.new_stream_decoder();
    decoder.received(raw);
    let mut log = String::new();
    loop {
        match decoder.decode() {
            Ok(frame) => {
                let level = frame
                    .level()
                    .map(|l| l.as_str().to_uppercase())
                    .unwrap_or_default();
                log.push_str(&format!("{level:<5} {}\n", frame.display_message()));
            }
            Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
            Err(defmt_decoder::DecodeError::Malformed) => {
                // rzcobs-framed encodings resynchronise on the next frame; raw ones cannot.
                log.push_str("(malformed defmt frame)\n");
                if !table.encoding().can_recover() {
                    break;
                }
            }
        }
    }
    Ok(log)
}

fn snapshot_path(board: &Board, run: &str) -> PathBuf {
    crate::build::firmware::repo_root().join(format!("firmware/snapshots/{}-{run}.out", board.name))
}

/// Compares `log` with the committed snapshot (or writes it with `overwrite`); prints a
/// line diff and returns false on a mismatch.
fn check_snapshot(board: &Board, run: &str, log: &str, overwrite: bool) -> Result<bool> {
    let path = snapshot_path(board, run);
    if overwrite {
        std::fs::create_dir_all(path.parent().unwrap())?;
        std::fs::write(&path, log).with_context(|| format!("writing {}", path.display()))?;
        println!("snapshot written: {}", path.display());
        return Ok(true);
    }
    let expected = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!(
                "{}: {e} (run with --overwrite to create it)",
                path.display()
            );
            return Ok(false);
        }
    };
    if expected == log {
        println!("snapshot matches: {}", path.display());
        return Ok(true);
    }
    eprintln!(
        "snapshot differs: {} (--overwrite to accept)",
        path.display()
    );
    let (old, new): (Vec<_>, Vec<_>) = (expected.lines().collect(), log.lines().collect());
    for i in 0..old.len().max(new.len()) {
        match (old.get(i), new.get(i)) {
            (Some(a), Some(b)) if a == b => {}
            (a, b) => {
                if let Some(a) = a {
                    eprintln!("-{a}");
                }
                if let Some(b) = b {
                    eprintln!("+{b}");
                }
            }
        }
    }
    Ok(false)
}
