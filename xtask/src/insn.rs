//! `cargo xtask bench --board B`: instructions executed per inference on a board's CPU, for the
//! agent and for onnxruntime, under QEMU user-mode emulation.
//!
//! Wall time under emulation says nothing about a board; the number of guest instructions a
//! process executes does, within limits that docs/quantised-inference.md states (it ignores
//! vector width, latency and memory stalls). A TCG plugin (`xtask/tools/insn-count.c`, built here with the
//! host's gcc) counts them. Each runtime is run twice on the card's first golden input, single
//! threaded: once with one warm-up and one inference, once with one warm-up and `1 + runs`
//! inferences; the difference divided by `runs` is the figure, so loading, optimisation and
//! the first run's allocations drop out ("runs minus load").
//!
//! onnxruntime's side is its PyPI wheel's `libonnxruntime.so` for the board's architecture
//! (pinned by sha256), driven by `xtask/tools/ort-run.c` cross-compiled with the board's gcc.
//! Both read `/proc/cpuinfo` at start; under qemu-user they would see the host's (onnxruntime
//! stops on it), so the emulated process gets a sysroot whose `proc/cpuinfo` describes the
//! emulated core. The x86-64 gateway's line uses `qemu-x86_64 -cpu max`: AVX2 and FMA without
//! AVX-512, the common gateway CPU, not the development machine's.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use boards::{Board, Kind, Qemu};

use crate::sh;

/// onnxruntime's release, the one the x86 venv pins (models/tools/requirements.txt).
const ORT_VERSION: &str = "1.32.0";

/// onnxruntime's wheel per target: (platform tag, sha256 of the wheel). x86-64 takes the
/// library of the venv's onnxruntime, the one `cargo xtask bench` times.
fn ort_wheel(triple: &str) -> Option<(&'static str, &'static str)> {
    match triple {
        "aarch64-unknown-linux-gnu" => Some((
            "manylinux_2_28_aarch64",
            "2303372a85299b6757b0e11e1cbf13e410ddf7e10c37f4b37e99d1c90e7daf7c",
        )),
        _ => None,
    }
}

/// What `/proc/cpuinfo` says on the board's core, as Linux prints it there.
pub(crate) fn cpuinfo(cpu: &str) -> Option<String> {
    let (part, features) = match cpu {
        // Raspberry Pi 4 (BCM2711): no crypto extensions.
        "cortex-a72" => ("0xd08", "fp asimd evtstrm crc32 cpuid"),
        // Raspberry Pi 5 (BCM2712).
        "cortex-a76" => (
            "0xd0b",
            "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
        ),
        "cortex-a53" => ("0xd03", "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"),
        // Raspberry Pi 2 (BCM2836), 32-bit: armv7 prints its own feature names and
        // architecture.
        "cortex-a7" => {
            return Some(armv7_cpuinfo(
                4,
                "0xc07",
                "half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm",
            ));
        }
        // BeagleBone Black (AM335x), one core.
        "cortex-a8" => {
            return Some(armv7_cpuinfo(
                1,
                "0xc08",
                "half thumb fastmult vfp edsp thumbee neon vfpv3 tls vfpd32",
            ));
        }
        _ => return None,
    };
    let mut text = String::new();
    for n in 0..4 {
        text.push_str(&format!(
            "processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n\
             CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 1\n\n"
        ));
    }
    Some(text)
}

/// `/proc/cpuinfo` of a 32-bit ARM board with `cores` cores.
fn armv7_cpuinfo(cores: usize, part: &str, features: &str) -> String {
    let mut text = String::new();
    for n in 0..cores {
        text.push_str(&format!(
            "processor\t: {n}\nmodel name\t: ARMv7 Processor rev 5 (v7l)\nBogoMIPS\t: 38.40\n\
             Features\t: {features}\nCPU implementer\t: 0x41\nCPU architecture: 7\n\
             CPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 5\n\n"
        ));
    }
    text
}

/// How one target is emulated for counting.
struct Counter {
    qemu: String,
    cpu: String,
    /// `-L`: the cross C library, with a `proc/cpuinfo` of the emulated core.
    sysroot: PathBuf,
    /// The guest's library path (`-E LD_LIBRARY_PATH=`), or none on the host's own arch.
    library_path: Option<String>,
    plugin: PathBuf,
}

impl Counter {
    /// Instructions executed by `program args` under emulation, and its stdout.
    fn count(&self, program: &Path, args: &[String], label: &str) -> Result<(u64, String)> {
        // Per core: benches of two boards may run at once.
        let out_file = sh::target_dir().join(format!("tmp/insn/{}/{label}.count", self.cpu));
        std::fs::create_dir_all(out_file.parent().expect("has a parent"))?;
        let _ = std::fs::remove_file(&out_file);
        let mut cmd = Command::new(&self.qemu);
        cmd.args(["-cpu", &self.cpu]).arg("-L").arg(&self.sysroot);
        if let Some(path) = &self.library_path {
            cmd.arg("-E").arg(format!("LD_LIBRARY_PATH={path}"));
        }
        cmd.arg("-plugin")
            .arg(&self.plugin)
            .arg(program)
            .args(args)
            .env("IAT_INSN_OUT", &out_file)
            .current_dir(sh::root())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let out = cmd
            .output()
            .with_context(|| format!("cannot start {}", self.qemu))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(
            out.status.success(),
            "{label}: `{} {}` failed under {} -cpu {} ({}):\n{}{}",
            program.display(),
            args.join(" "),
            self.qemu,
            self.cpu,
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&out_file).with_context(|| {
            format!(
                "{label}: the instruction counter wrote nothing to {} (was the plugin loaded?)",
                out_file.display()
            )
        })?;
        let lines: Vec<&str> = text.lines().collect();
        ensure!(
            lines.len() == 1,
            "{label}: {} processes counted (a fork?): the count would be ambiguous",
            lines.len()
        );
        let n = lines[0]
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse::<u64>().ok())
            .with_context(|| format!("{label}: unreadable count `{}`", lines[0]))?;
        eprintln!(
            "  {label}: {n} instructions in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok((n, stdout))
    }

    /// Instructions per inference: (count with `1 + runs` - count with 1) / `runs`, where
    /// `args(k)` runs one warm-up and `k` inferences.
    fn per_inference(
        &self,
        program: &Path,
        args: impl Fn(usize) -> Vec<String>,
        runs: usize,
        label: &str,
    ) -> Result<f64> {
        let (one, _) = self.count(program, &args(1), &format!("{label}-1"))?;
        let (many, _) = self.count(program, &args(1 + runs), &format!("{label}-{}", 1 + runs))?;
        ensure!(
            many > one,
            "{label}: {many} instructions for {} inferences, not more than {one} for one",
            1 + runs
        );
        Ok((many - one) as f64 / runs as f64)
    }
}

/// The QEMU plugin API version this qemu-user accepts: 1 up to QEMU 8.2, 2 from 9.0.
fn plugin_version(qemu: &str) -> Result<u32> {
    let out = sh::output(Command::new(qemu).arg("--version"))?;
    let major = out
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse::<u32>().ok())
        .with_context(|| format!("cannot read the version of {qemu}: {out}"))?;
    Ok(if major >= 9 { 2 } else { 1 })
}

/// Builds the counting plugin for this qemu (host gcc), once per API version.
fn plugin(qemu: &str) -> Result<PathBuf> {
    sh::ensure_tools(&[("gcc", "gcc")])?;
    let version = plugin_version(qemu)?;
    let source = sh::root().join("xtask/tools/insn-count.c");
    let out = sh::target_dir().join(format!("tools/insn-count-v{version}.so"));
    if fresh(&out, &source) {
        return Ok(out);
    }
    std::fs::create_dir_all(out.parent().expect("has a parent"))?;
    sh::run(
        Command::new("gcc")
            .args(["-O2", "-shared", "-fPIC", "-fvisibility=hidden", "-Wall"])
            .arg(format!("-DIAT_PLUGIN_VERSION={version}"))
            .arg("-o")
            .arg(&out)
            .arg(&source),
    )?;
    Ok(out)
}

/// Whether `out` exists and is newer than `source`.
fn fresh(out: &Path, source: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((modified(out), modified(source)), (Some(o), Some(s)) if o >= s)
}

/// `ort-run` for the target, built with the target's C compiler.
fn ort_runner(triple: &str) -> Result<PathBuf> {
    let toolchain = crate::build::toolchain(triple)?;
    sh::ensure_tools(&toolchain.needs[..1])?;
    let compiler = toolchain.needs[0].0;
    let source = sh::root().join("xtask/tools/ort-run.c");
    let out = sh::target_dir().join(format!("tools/{triple}/ort-run"));
    if fresh(&out, &source) {
        return Ok(out);
    }
    std::fs::create_dir_all(out.parent().expect("has a parent"))?;
    sh::run(
        Command::new(compiler)
            .args(["-O2", "-Wall", "-o"])
            .arg(&out)
            .arg(&source)
            .arg("-ldl"),
    )?;
    Ok(out)
}

/// onnxruntime's shared library for the target, from its PyPI wheel (sha256-pinned).
fn ort_library(triple: &str, python: &Path) -> Result<PathBuf> {
    if triple == "x86_64-unknown-linux-gnu" {
        let package = sh::output(Command::new(python).args([
            "-c",
            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
        ]))?;
        let lib = Path::new(package.trim()).join(format!("capi/libonnxruntime.so.{ORT_VERSION}"));
        ensure!(
            lib.is_file(),
            "the venv's onnxruntime has no {}",
            lib.display()
        );
        return Ok(lib);
    }
    let dir = sh::target_dir().join(format!("tools/{triple}/onnxruntime-{ORT_VERSION}"));
    let lib = dir.join(format!("libonnxruntime.so.{ORT_VERSION}"));
    if lib.is_file() {
        return Ok(lib);
    }
    let (platform, sha256) = ort_wheel(triple)
        .with_context(|| format!("onnxruntime publishes no wheel for {triple}"))?;
    let wheels = dir.join("wheel");
    std::fs::create_dir_all(&wheels)?;
    sh::run(
        Command::new(python)
            .args(["-m", "pip", "download", "--quiet", "--no-deps"])
            .args(["--only-binary=:all:", "--python-version", "3.11"])
            .args(["--platform", platform])
            .arg(format!("onnxruntime=={ORT_VERSION}"))
            .arg("-d")
            .arg(&wheels),
    )?;
    let wheel = std::fs::read_dir(&wheels)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .with_context(|| format!("pip left no wheel in {}", wheels.display()))?;
    let got = sh::output(Command::new("sha256sum").arg(&wheel))?;
    let got = got.split_whitespace().next().unwrap_or_default();
    ensure!(
        got == sha256,
        "{}: sha256 {got}, expected {sha256}: not the wheel this bench pins",
        wheel.display()
    );
    // The wheel is a zip; Python's zipfile takes the one member out.
    let member = format!("onnxruntime/capi/libonnxruntime.so.{ORT_VERSION}");
    sh::run(
        Command::new(python)
            .arg("-c")
            .arg(
                "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); \
                 open(sys.argv[3], 'wb').write(z.read(sys.argv[2]))",
            )
            .arg(&wheel)
            .arg(&member)
            .arg(&lib),
    )?;
    Ok(lib)
}

/// A sysroot for `-L`: the cross C library's folders, and `proc/cpuinfo` of the core.
pub(crate) fn sysroot(cross: &str, cpu: &str) -> Result<PathBuf> {
    let root = sh::target_dir().join(format!("tools/sysroot-{cpu}"));
    std::fs::create_dir_all(root.join("proc"))?;
    for entry in std::fs::read_dir(cross).with_context(|| format!("reading {cross}"))? {
        let entry = entry?;
        let link = root.join(entry.file_name());
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(entry.path(), &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
    }
    let text = cpuinfo(cpu).with_context(|| {
        format!("no /proc/cpuinfo known for `{cpu}`: add it to xtask/src/insn.rs")
    })?;
    std::fs::write(root.join("proc/cpuinfo"), text)?;
    Ok(root)
}

/// One model's line.
struct Row {
    model: String,
    agent: f64,
    ort: f64,
}

/// `cargo xtask bench --board B [--zoo] [MODEL...]`.
pub fn bench(board_name: &str, only: &[String], zoo: bool, runs: usize) -> Result<()> {
    let board = Board::find(&sh::root().join("boards"), board_name)?;
    ensure!(
        board.kind == Kind::Linux,
        "board `{board_name}` is a {} board: `bench --board` counts the agent of Linux boards",
        board.kind
    );
    let runs = runs.max(1);
    crate::models::fetch()?;
    let python = crate::bench::venv_python()?;
    let (qemu, cpu, agent, cross) = if board.target == "x86_64-unknown-linux-gnu" {
        // The gateway: the host's release agent, on an emulated CPU without AVX-512.
        sh::ensure_tools(&[("qemu-x86_64", "qemu-user")])?;
        let agent = crate::models::agent_release()?;
        ("qemu-x86_64".to_owned(), "max".to_owned(), agent, None)
    } else {
        let Some(Qemu::User { binary, cpu }) = &board.qemu else {
            bail!("board `{board_name}` has no user-mode `[qemu]` section: it cannot be emulated");
        };
        sh::ensure_tools(&[(binary.as_str(), "qemu-user")])?;
        let built = crate::build::build_agent(&board, true)?;
        println!("{}", built.report(&board));
        let cross = crate::build::toolchain(&board.target)?.sysroot;
        (binary.clone(), cpu.clone(), built.path, Some(cross))
    };
    let counter = Counter {
        plugin: plugin(&qemu)?,
        sysroot: match cross {
            Some(cross) => sysroot(cross, &cpu)?,
            None => PathBuf::from("/"),
        },
        library_path: cross.map(|c| format!("{c}/lib")),
        qemu,
        cpu,
    };
    if cross.is_some() {
        // onnxruntime is C++: its runtime library for the target.
        sh::ensure_files(&[(
            "/usr/aarch64-linux-gnu/lib/libstdc++.so.6",
            "libstdc++6-arm64-cross",
        )])?;
    }
    let ort_lib = ort_library(&board.target, &python)?;
    let ort_run = ort_runner(&board.target)?;

    let cards = crate::bench::selected_cards(only, zoo)?;
    let mut rows = Vec::new();
    for card in &cards {
        let id = crate::models::id(card);
        eprintln!("bench {id} on {} ({})", board.name, counter.cpu);
        let work = sh::target_dir().join(format!("tmp/insn/{}/{id}", counter.cpu));
        let prepared = sh::output(
            Command::new(&python)
                .arg(sh::root().join("models/tools/ort_inputs.py"))
                .arg(card)
                .arg(&work),
        )?;
        let prepared: serde_json::Value = serde_json::from_str(prepared.trim())
            .with_context(|| format!("ort_inputs.py output: {prepared}"))?;
        let model = prepared["model"].as_str().context("no model")?.to_owned();
        let inputs: Vec<String> = prepared["inputs"]
            .as_array()
            .context("no inputs")?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let card_arg = card.display().to_string();
        let ours = counter.per_inference(
            &agent,
            |k| {
                let k = k.to_string();
                [
                    "model", "bench", "--json", "--warmup", "1", "--runs", &k, &card_arg,
                ]
                .map(str::to_owned)
                .to_vec()
            },
            runs,
            &format!("{id}-agent"),
        )?;
        let ort = counter.per_inference(
            &ort_run,
            |k| {
                let mut a = vec![
                    ort_lib.display().to_string(),
                    model.clone(),
                    (1 + k).to_string(),
                ];
                a.extend(inputs.iter().cloned());
                a
            },
            runs,
            &format!("{id}-ort"),
        )?;
        rows.push(Row {
            model: id,
            agent: ours,
            ort,
        });
    }
    println!();
    println!(
        "{} ({} -cpu {}): guest instructions per inference, one thread, golden input 0, \
         ({} runs minus 1) / {runs}",
        board.name,
        counter.qemu,
        counter.cpu,
        1 + runs
    );
    println!(
        "{:<22} {:>12} {:>12} {:>7}",
        "model", "agent", "onnxruntime", "ratio"
    );
    for r in rows {
        println!(
            "{:<22} {:>10.1} M {:>10.1} M {:>7.2}",
            r.model,
            r.agent / 1e6,
            r.ort / 1e6,
            r.agent / r.ort
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A static aarch64 program that executes `1 + 2 * iterations + 3` instructions: a
    /// countdown loop of two instructions, then `exit(0)`.
    fn countdown(dir: &Path, iterations: u32) -> PathBuf {
        let source = dir.join(format!("countdown-{iterations}.S"));
        std::fs::write(
            &source,
            format!(
                ".global _start\n_start:\n  mov x0, #{iterations}\n1:\n  subs x0, x0, #1\n  \
                 b.ne 1b\n  mov x8, #93\n  mov x0, #0\n  svc #0\n"
            ),
        )
        .unwrap();
        let program = dir.join(format!("countdown-{iterations}"));
        sh::run(
            Command::new("aarch64-linux-gnu-gcc")
                .args(["-nostdlib", "-static", "-o"])
                .arg(&program)
                .arg(&source),
        )
        .unwrap();
        program
    }

    /// The counting plugin, loaded into Debian's qemu-user, counts every instruction of a
    /// program whose count is known, exactly, and nothing else.
    #[test]
    fn plugin_counts_a_known_program_exactly() {
        sh::ensure_tools(&[
            ("qemu-aarch64", "qemu-user"),
            ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
            ("gcc", "gcc"),
        ])
        .unwrap();
        let dir = sh::target_dir().join("tmp/insn-test");
        std::fs::create_dir_all(&dir).unwrap();
        let counter = Counter {
            qemu: "qemu-aarch64".into(),
            cpu: "cortex-a72".into(),
            sysroot: PathBuf::from("/usr/aarch64-linux-gnu"),
            library_path: None,
            plugin: plugin("qemu-aarch64").unwrap(),
        };
        for iterations in [10, 60_000] {
            let program = countdown(&dir, iterations);
            let (n, _) = counter
                .count(&program, &[], &format!("countdown-{iterations}"))
                .unwrap();
            assert_eq!(
                n,
                1 + 2 * u64::from(iterations) + 3,
                "{iterations} iterations"
            );
        }
    }
}
