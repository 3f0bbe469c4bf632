//! `cargo xtask qemu system --board B`: the smoke test of a Linux board as it will run. The
//! board's whole OS is emulated (`qemu-system-aarch64 -M virt`): Debian's kernel package for
//! the board's architecture, an initramfs with BusyBox as init, the C library of the cross
//! sysroot, the cross-built agent and its release laid out as `cargo xtask flash --host`
//! installs it. At boot the init script loads the virtio network drivers, brings the network
//! up and starts the agent's service, which replays the bundled speech sample and publishes
//! to a broker on the host (QEMU's user network: the host is 10.0.2.2). The hub on the host
//! verifies and stores every record: the smoke test passes when the hub holds all of them and
//! raised no alarm.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use boards::{Board, Vm};

use crate::sh;

/// No boot plus run takes this long here; past it the machine is killed and the test fails.
const HANG_LIMIT: Duration = Duration::from_secs(1200);

/// The kernel modules the guest needs beyond the kernel image (their dependencies are read
/// from the modules themselves): the network; ALSA's loopback card, a sound card with no
/// hardware that the agent's microphone source captures from; and `vivid`, the kernel's
/// virtual V4L2 camera (the agent's camera source would read it through ffmpeg, which the
/// BusyBox guest does not have: the test checks that the kernel presents the camera).
const MODULES: &[&str] = &["virtio_pci", "virtio_net", "snd-aloop", "vivid"];

/// The microphone pipeline's name, and how long it captures from the loopback card.
const MIC: &str = "mic";
const MIC_SECONDS: u32 = 4;
/// How long the agent is paused while it captures (fault injection: an ALSA overrun).
const PAUSE: &str = "1.5";

const DEVICE: &str = "vm-001";
const TERRITORY: &str = "fr-test";

pub fn run(board: &Board) -> Result<ExitCode> {
    let vm = board.vm.as_ref().with_context(|| {
        format!(
            "board `{}` has no [vm] section: its OS cannot be emulated whole",
            board.name
        )
    })?;
    sh::ensure_tools(&[
        (vm.system.as_str(), "qemu-system-arm"),
        ("dpkg-deb", "dpkg"),
    ])?;
    let parts = debian_parts(vm)?;
    let host_agent = crate::models::agent()?;
    let hub = sh::target_dir().join("debug/hub");
    let built = crate::build::build_agent(board, true)?;
    println!("{}", built.report(board));

    let work = sh::target_dir().join("tmp/qemu-system").join(&board.name);
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("cleaning {}", work.display()))?;
    }
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(&rootfs)?;

    // The hub side, on the host: the device enrolled with its key, a broker, the hub.
    let keys = work.join("keys");
    crate::demo::hub::device_keygen(&host_agent, &keys, DEVICE, TERRITORY)?;
    let hub_dir = work.join("hub");
    crate::demo::hub::hub_keygen(&hub, &hub_dir, "vm-hub")?;
    crate::demo::hub::enroll(
        &hub,
        &hub_dir,
        &keys.join("device.vkey"),
        &[sh::root().join("models/silero-vad-16k/card.toml")],
    )?;
    let ports = crate::demo::broker::start()?;
    let port = ports.devices;
    let hub_proc = crate::demo::hub::LocalHub::start(&hub, &hub_dir, "vm-hub", ports.hub, "")?;
    let hub_config = hub_proc.config.clone();
    let result = (|| {
        // The device side: the release as `flash --host` lays it out, the key on the device.
        let install = board
            .install
            .as_ref()
            .context("a linux board has an [install] section")?;
        let config = work.join("agent.toml");
        std::fs::write(&config, agent_config(port, &hub_dir.join("hub.vkey")))?;
        let paths = crate::flash::ssh::DevicePaths::new(install, None);
        let release = rootfs.join(rel(&paths.releases)).join("smoke");
        std::fs::create_dir_all(&release)?;
        crate::flash::ssh::stage_release(&release, &built.path, &config, &paths)?;
        let current = rootfs.join(rel(&paths.current));
        std::os::unix::fs::symlink("releases/smoke", &current)?;
        let key_dir = rootfs.join(rel(&paths.config_dir));
        std::fs::create_dir_all(&key_dir)?;
        for f in ["device.key", "device.vkey"] {
            std::fs::copy(keys.join(f), key_dir.join(f))?;
        }
        let modules = place_system(board, &parts, &rootfs, &paths)?;
        let initrd = work.join("initramfs.cpio");
        let bytes = write_cpio(&rootfs, &initrd)?;
        println!(
            "initramfs: {:.1} MiB (BusyBox {}, kernel {}, modules {})",
            bytes as f64 / (1024.0 * 1024.0),
            parts.busybox_version,
            parts.kernel_version,
            modules.join(" ")
        );
        boot(vm, &parts, &initrd, &work.join("console.log"))
    })();
    drop(hub_proc);
    let console = result?;

    // What the agent said it appended, against what the hub stored and verified.
    let appended: u64 = console
        .lines()
        .find_map(|l| {
            let l = l.trim();
            l.split_once(" records appended to ")
                .and_then(|(n, _)| n.rsplit(' ').next()?.parse().ok())
        })
        .context("the agent in the VM did not report its records (console above)")?;
    let stats = sh::output(
        Command::new(&hub)
            .args(["stats", "--json", "--config"])
            .arg(&hub_config),
    )?;
    let stats: serde_json::Value = serde_json::from_str(&stats).context("hub stats --json")?;
    let stored = stats["devices"]
        .as_array()
        .and_then(|d| {
            d.iter()
                .find(|d| d["device"].as_str().is_some_and(|n| n.ends_with(DEVICE)))
        })
        .and_then(|d| d["stored"].as_u64())
        .unwrap_or(0);
    let alarms = stats["alarms"].as_array().map_or(0, Vec::len);
    println!(
        "{} (qemu-system, {} {} {} MiB): the agent booted as a service appended {appended} records; \
         the hub on the host verified and stored {stored}, alarms {alarms}",
        board.name, vm.machine, vm.cpu, vm.memory_mib
    );
    ensure!(appended > 0, "the agent appended no record");
    // The microphone pipeline captured from the emulated kernel's loopback card: every chunk
    // of its duration (32 ms chunks at 16 kHz).
    // Its summary line: "pipeline mic: N frames or chunks analysed (C captured, D dropped
    // for newer ones, R source restarts)"; overruns count as dropped.
    let (chunks, dropped) = console
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once(&format!("pipeline {MIC}: "))?;
            let numbers: Vec<u64> = rest
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|w| w.parse().ok())
                .collect();
            Some((*numbers.first()?, *numbers.get(2)?))
        })
        .context("the agent in the VM did not report its microphone pipeline (console above)")?;
    let paused = console.contains("IAT-VM: agent paused");
    println!(
        "{}: the microphone source captured {chunks} chunks of 32 ms from ALSA's loopback card (snd-aloop) in the guest; \
         paused {PAUSE} s while capturing: {dropped} overrun(s) counted and recovered",
        board.name
    );
    ensure!(
        paused && dropped >= 1,
        "the agent was paused ({paused}) past its ALSA ring but counted {dropped} overruns"
    );
    ensure!(
        chunks == u64::from(MIC_SECONDS) * 16_000 / 512,
        "the microphone pipeline analysed {chunks} chunks, not {}",
        u64::from(MIC_SECONDS) * 16_000 / 512
    );
    // The virtual camera: the kernel's V4L2 capture devices that vivid presents.
    let cameras: Vec<&str> = console
        .lines()
        .filter_map(|l| l.split_once("IAT-VM: camera ").map(|(_, c)| c.trim()))
        .collect();
    println!(
        "{}: the kernel's virtual camera (vivid) presents {}; the agent's camera source reads \
         such a device through ffmpeg, which this BusyBox guest does not carry (Debian's \
         ffmpeg for arm64 pulls in some 360 packages)",
        board.name,
        cameras.join(", ")
    );
    ensure!(
        cameras.iter().any(|c| c.contains("vid-cap")),
        "the guest shows no vivid capture device (console: {})",
        work.join("console.log").display()
    );
    ensure!(
        stored == appended && alarms == 0,
        "the hub stored {stored} of {appended} records with {alarms} alarms (hub log: {})",
        hub_dir.join("hub.log").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A device path without its leading `/`, to place it inside the root file system.
fn rel(p: &Path) -> &Path {
    p.strip_prefix("/").unwrap_or(p)
}

fn agent_config(port: u16, hub_key: &Path) -> String {
    format!(
        r#"# Written by `cargo xtask qemu system`: the speech pipeline, publishing to the host.
device = "{DEVICE}"
territory = "{TERRITORY}"
data_dir = "var"
key = "keys/device.key"

[checkpoint]
every_records = 8

[mqtt]
host = "10.0.2.2"
port = {port}
hub_key = "{hub_key}"

{speech}
# The microphone source on ALSA's loopback card (snd-aloop): its capture side, device 1,
# gives what is played on device 0, silence here.
[[pipeline]]
name = "{MIC}"
model = "{models}/silero-vad-16k/card.toml"
aggregates = ["speech_share"]
window = "2s"
[pipeline.source]
kind = "microphone"
input = "hw:Loopback,1,0"
duration = "{MIC_SECONDS}s"
[pipeline.privacy]
k = 1
"#,
        hub_key = hub_key.display(),
        speech = crate::qemu::speech_pipeline(),
        models = sh::root().join("models").display(),
    )
}

/// Debian's architecture name for a multiarch triple.
fn parts_arch(multiarch: &str) -> &'static str {
    match multiarch {
        "aarch64-linux-gnu" => "arm64",
        "arm-linux-gnueabihf" => "armhf",
        _ => "amd64",
    }
}

/// Debian's kernel and BusyBox for the board's architecture, unpacked in the target folder.
struct Parts {
    kernel: PathBuf,
    modules: PathBuf,
    busybox: PathBuf,
    kernel_version: String,
    busybox_version: String,
}

fn debian_parts(vm: &Vm) -> Result<Parts> {
    let arch = &vm.debian_arch;
    // One cache per (architecture, kernel package): a board that changes kernel flavour gets
    // its own parts, not the old ones.
    let cache = sh::target_dir()
        .join("vm-parts")
        .join(format!("{arch}-{}", vm.kernel_package));
    let unpacked = cache.join("root");
    let done = cache.join("versions.txt");
    if !done.exists() {
        ensure_foreign_arch(arch)?;
        if cache.exists() {
            std::fs::remove_dir_all(&cache)?;
        }
        std::fs::create_dir_all(&unpacked)?;
        let image = image_package(&vm.kernel_package, arch)?;
        let mut versions = String::new();
        for pkg in [image.as_str(), "busybox-static"] {
            let full = format!("{pkg}:{arch}");
            sh::run(
                Command::new("apt-get")
                    .args(["download", "-q", &full])
                    .current_dir(&cache),
            )
            .with_context(|| format!("downloading Debian's {full}"))?;
            let deb = std::fs::read_dir(&cache)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| {
                    p.extension().is_some_and(|e| e == "deb")
                        && p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{pkg}_")))
                })
                .with_context(|| format!("apt-get download left no {pkg}_*.deb"))?;
            sh::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
            versions.push_str(&format!(
                "{}\n",
                deb.file_name().expect("a file").to_string_lossy()
            ));
            std::fs::remove_file(&deb)?;
        }
        std::fs::write(&done, versions)?;
    }
    let versions = std::fs::read_to_string(&done)?;
    let boot = unpacked.join("boot");
    let kernel = std::fs::read_dir(&boot)
        .with_context(|| format!("reading {}", boot.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("no vmlinuz-* in {}", boot.display()))?;
    let kernel_version = kernel
        .file_name()
        .expect("a file")
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_string();
    let modules = unpacked.join("lib/modules").join(&kernel_version);
    let busybox_version = versions
        .lines()
        .find(|l| l.starts_with("busybox-static_"))
        .and_then(|l| l.split('_').nth(1))
        .unwrap_or("?")
        .replace("%3a", ":");
    Ok(Parts {
        kernel,
        modules,
        busybox: unpacked.join("bin/busybox"),
        kernel_version,
        busybox_version,
    })
}

/// apt needs the board's architecture among dpkg's foreign ones to download its packages.
fn ensure_foreign_arch(arch: &str) -> Result<()> {
    let native = sh::output(Command::new("dpkg").arg("--print-architecture"))?;
    let foreign = sh::output(Command::new("dpkg").arg("--print-foreign-architectures"))?;
    if native.trim() == arch || foreign.lines().any(|l| l.trim() == arch) {
        return Ok(());
    }
    if !sh::is_root() {
        bail!(
            "apt cannot download {arch} packages yet; run: sudo dpkg --add-architecture {arch} \
             && sudo apt-get update"
        );
    }
    sh::run(Command::new("dpkg").args(["--add-architecture", arch]))?;
    sh::run(Command::new("apt-get").args(["update", "-qq"]))
}

/// Follows a kernel metapackage (`linux-image-cloud-arm64`) to the image it depends on.
fn image_package(package: &str, arch: &str) -> Result<String> {
    let out = sh::output(Command::new("apt-cache").args([
        "depends",
        "--important",
        &format!("{package}:{arch}"),
    ]))?;
    let dep = out.lines().find_map(|l| {
        let d = l.trim().strip_prefix("Depends:")?.trim();
        let d = d.split(':').next()?.trim();
        d.starts_with("linux-image-").then(|| d.to_string())
    });
    Ok(dep.unwrap_or_else(|| package.to_string()))
}

/// BusyBox, the C library, the kernel modules and the init script, in the root file system.
/// Returns the modules in load order.
fn place_system(
    board: &Board,
    parts: &Parts,
    rootfs: &Path,
    paths: &crate::flash::ssh::DevicePaths,
) -> Result<Vec<String>> {
    for d in [
        "bin",
        "lib/modules",
        "proc",
        "sys",
        "dev",
        "tmp",
        "etc/init.d",
    ] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::copy(&parts.busybox, rootfs.join("bin/busybox"))
        .with_context(|| format!("copying {}", parts.busybox.display()))?;
    // The agent's C library: the dynamic loader and the libraries it links (readelf -d).
    let libs = Path::new(crate::build::toolchain(&board.target)?.sysroot).join("lib");
    let mut copied = 0;
    for e in std::fs::read_dir(&libs).with_context(|| format!("reading {}", libs.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("ld-linux")
            || ["libc.so.6", "libm.so.6", "libgcc_s.so.1"].contains(&name.as_str())
        {
            std::fs::copy(e.path(), rootfs.join("lib").join(&name))?;
            copied += 1;
        }
    }
    ensure!(
        copied >= 4,
        "the C library in {} is incomplete",
        libs.display()
    );
    // libasound (the agent's microphone source) from Debian's multiarch package of the
    // target, and ALSA's configuration (without it no device opens).
    let multiarch = Path::new(crate::build::toolchain(&board.target)?.sysroot)
        .file_name()
        .context("a sysroot named after its triple")?
        .to_string_lossy()
        .into_owned();
    let asound = Path::new("/usr/lib")
        .join(&multiarch)
        .join("libasound.so.2");
    std::fs::copy(&asound, rootfs.join("lib/libasound.so.2")).with_context(|| {
        format!(
            "copying {} (Debian package libasound2:{})",
            asound.display(),
            parts_arch(&multiarch)
        )
    })?;
    let alsa_conf = rootfs.join("usr/share/alsa");
    std::fs::create_dir_all(&alsa_conf)?;
    sh::run(
        Command::new("cp")
            .args([
                "-a",
                "/usr/share/alsa/alsa.conf",
                "/usr/share/alsa/pcm",
                "/usr/share/alsa/cards",
            ])
            .arg(&alsa_conf),
    )?;
    let order = module_order(&parts.modules, MODULES)?;
    for (name, path) in &order {
        std::fs::copy(path, rootfs.join("lib/modules").join(format!("{name}.ko")))?;
    }
    let names: Vec<String> = order.iter().map(|(n, _)| n.clone()).collect();
    let service = format!(
        "#!/bin/sh\n\
         # The agent's service: what the board's systemd unit runs, started by init here.\n\
         echo \"IAT-VM: agent service starting at $(cut -d' ' -f1 /proc/uptime) s\"\n\
         mkdir -p /tmp\n\
         {current}/edge-agent run --config {current}/agent.toml > /tmp/agent.log 2>&1 &\n\
         pid=$!\n\
         # Fault injection: once the microphone captures, the agent is paused (SIGSTOP) for\n\
         # {PAUSE} s, longer than its ALSA ring of 0.5 s: the next read finds an overrun.\n\
         i=0\n\
         while [ $i -lt 1200 ] && ! grep -q 'pipeline `{MIC}`: model' /tmp/agent.log; do sleep 0.1; i=$((i+1)); done\n\
         sleep 1\n\
         kill -STOP $pid && echo \"IAT-VM: agent paused\"\n\
         sleep {PAUSE}\n\
         kill -CONT $pid\n\
         wait $pid\n\
         status=$?\n\
         cat /tmp/agent.log\n\
         echo \"IAT-VM: agent exited $status\"\n\
         exit $status\n",
        current = paths.current.display()
    );
    write_exec(&rootfs.join("etc/init.d/iat-edge-agent"), &service)?;
    let init = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         export PATH=/bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sys /sys\n\
         mount -t devtmpfs dev /dev\n\
         mkdir -p {data}\n\
         mount -t tmpfs -o size=64m tmpfs {data}\n\
         for m in {modules}; do insmod /lib/modules/$m.ko || echo \"IAT-VM: insmod $m failed\"; done\n\
         for v in /sys/class/video4linux/video*; do [ -e $v/name ] && echo \"IAT-VM: camera /dev/$(basename $v) $(cat $v/name)\"; done\n\
         ip link set lo up\n\
         ip link set eth0 up\n\
         ip addr add 10.0.2.15/24 dev eth0\n\
         ip route add default via 10.0.2.2\n\
         echo \"IAT-VM: {board} booted, network up ($(uname -r), $(uname -m))\"\n\
         /etc/init.d/iat-edge-agent\n\
         sync\n\
         poweroff -f\n",
        data = paths.data_dir.display(),
        modules = names.join(" "),
        board = board.name,
    );
    write_exec(&rootfs.join("init"), &init)?;
    Ok(names)
}

fn write_exec(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The modules to load, dependencies first, from the `depends=` of each module's modinfo.
fn module_order(dir: &Path, wanted: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    fn find(dir: &Path, file: &str) -> Option<PathBuf> {
        for e in std::fs::read_dir(dir).ok()? {
            let p = e.ok()?.path();
            if p.is_dir() {
                if let Some(f) = find(&p, file) {
                    return Some(f);
                }
            } else if p.file_name().is_some_and(|n| n == file) {
                return Some(p);
            }
        }
        None
    }
    fn visit(dir: &Path, name: &str, out: &mut Vec<(String, PathBuf)>, depth: usize) -> Result<()> {
        ensure!(depth < 32, "module dependencies of {name} loop");
        if out.iter().any(|(n, _)| n == name) {
            return Ok(());
        }
        // modinfo's `depends=` spells names with `_`; files may use `-` (snd-timer.ko).
        let path = find(dir, &format!("{name}.ko"))
            .or_else(|| find(dir, &format!("{}.ko", name.replace('_', "-"))))
            .with_context(|| format!("module {name}.ko is not in {}", dir.display()))?;
        let data = std::fs::read(&path)?;
        let deps = data
            .windows(8)
            .position(|w| w == b"depends=")
            .map(|at| {
                let rest = &data[at + 8..];
                let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                String::from_utf8_lossy(&rest[..end]).into_owned()
            })
            .unwrap_or_default();
        for d in deps.split(',').filter(|d| !d.is_empty()) {
            visit(dir, &d.replace('-', "_"), out, depth + 1)?;
        }
        out.push((name.to_string(), path));
        Ok(())
    }
    let mut out = Vec::new();
    for w in wanted {
        visit(dir, w, &mut out, 0)?;
    }
    Ok(out)
}

/// Writes `rootfs` as an uncompressed initramfs (the kernel's "newc" cpio format): folders,
/// files with their modes, symbolic links. Returns its size.
fn write_cpio(rootfs: &Path, out: &Path) -> Result<u64> {
    use std::os::unix::fs::PermissionsExt;
    fn walk(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        entries.sort();
        for p in entries {
            out.push(p.strip_prefix(base).expect("inside").to_path_buf());
            if p.symlink_metadata()?.is_dir() {
                walk(&p, base, out)?;
            }
        }
        Ok(())
    }
    let mut names = Vec::new();
    walk(rootfs, rootfs, &mut names)?;
    let mut w = std::io::BufWriter::new(std::fs::File::create(out)?);
    let mut written = 0u64;
    let mut entry = |w: &mut std::io::BufWriter<std::fs::File>,
                     ino: u32,
                     name: &str,
                     mode: u32,
                     data: &[u8]|
     -> Result<()> {
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        let mut n = header.len() + name.len() + 1;
        w.write_all(header.as_bytes())?;
        w.write_all(name.as_bytes())?;
        w.write_all(&[0])?;
        let pad = (4 - n % 4) % 4;
        w.write_all(&[0; 3][..pad])?;
        n += pad;
        w.write_all(data)?;
        let pad = (4 - data.len() % 4) % 4;
        w.write_all(&[0; 3][..pad])?;
        written += (n + data.len() + pad) as u64;
        Ok(())
    };
    for (i, rel) in names.iter().enumerate() {
        let path = rootfs.join(rel);
        let meta = path.symlink_metadata()?;
        let name = rel.to_string_lossy();
        let ino = u32::try_from(i + 1).unwrap_or(u32::MAX);
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)?;
            entry(
                &mut w,
                ino,
                &name,
                0o120777,
                target.to_string_lossy().as_bytes(),
            )?;
        } else if meta.is_dir() {
            entry(&mut w, ino, &name, 0o040755, &[])?;
        } else {
            let perm = meta.permissions().mode() & 0o777;
            let data = std::fs::read(&path)?;
            entry(&mut w, ino, &name, 0o100000 | perm, &data)?;
        }
    }
    entry(&mut w, 0, "TRAILER!!!", 0, &[])?;
    w.flush()?;
    Ok(written)
}

/// Boots the machine; its console is echoed, kept in `log` and returned once it powers off.
fn boot(vm: &Vm, parts: &Parts, initrd: &Path, log: &Path) -> Result<String> {
    let mut cmd = Command::new(&vm.system);
    cmd.args(["-M", &vm.machine, "-cpu", &vm.cpu, "-m"])
        .arg(vm.memory_mib.to_string())
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(&parts.kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!("console={} rdinit=/init quiet", vm.console))
        .args([
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0,romfile=",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    eprintln!("$ {cmd:?}");
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", vm.system))?;
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            println!("[vm {:6.1} s] {line}", started.elapsed().as_secs_f64());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let status = sh::wait_within(&mut child, started, HANG_LIMIT, "the emulated machine")?;
    let console = reader.join().unwrap_or_default();
    std::fs::write(log, &console)?;
    println!(
        "the emulated machine ran {:.1} s and powered off ({status}); console kept in {}",
        started.elapsed().as_secs_f64(),
        log.display()
    );
    ensure!(
        console.contains("IAT-VM: agent exited 0"),
        "the agent's service did not exit cleanly in the emulated machine (console above)"
    );
    Ok(console)
}
