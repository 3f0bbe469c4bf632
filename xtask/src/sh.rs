//! Running commands: each one is echoed before it runs, and a failure names it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// Where cargo puts build outputs: `CARGO_TARGET_DIR` when set (CI keeps one outside the
/// clone), else `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command, inheriting stdio; fails if it does not exit 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = show(cmd);
    eprintln!("$ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs a command and returns its stdout; stderr passes through.
pub fn output(cmd: &mut Command) -> Result<String> {
    let shown = show(cmd);
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !out.status.success() {
        bail!("`{shown}` failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// Makes sure each `(program, debian_package)` is on PATH: installs the missing packages with
/// apt when running as root, otherwise fails naming the command to run.
pub fn ensure_tools(tools: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(p, _)| !have(p))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    install_packages(&missing)?;
    let still: Vec<&str> = tools
        .iter()
        .filter(|(p, _)| !have(p))
        .map(|(p, _)| *p)
        .collect();
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(", "));
    }
    Ok(())
}

/// Like [`ensure_tools`] for what is not a program: each `(file, debian_package)` exists, or its
/// package is installed.
pub fn ensure_files(files: &[(&str, &str)]) -> Result<()> {
    let mut missing: Vec<&str> = files
        .iter()
        .filter(|(f, _)| !std::path::Path::new(f).exists())
        .map(|(_, pkg)| *pkg)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    install_packages(&missing)?;
    let still: Vec<&str> = files
        .iter()
        .filter(|(f, _)| !std::path::Path::new(f).exists())
        .map(|(f, _)| *f)
        .collect();
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(", "));
    }
    Ok(())
}

/// Installs Debian packages with apt when running as root; otherwise fails naming the command
/// to run.
pub fn install_packages(packages: &[&str]) -> Result<()> {
    if !is_root() {
        bail!(
            "missing tools; install them with: sudo apt-get install --no-install-recommends {}",
            packages.join(" ")
        );
    }
    // A package of another architecture (`libasound2-dev:arm64`, for a cross build) needs
    // that architecture known to dpkg first.
    let foreign = output(Command::new("dpkg").arg("--print-foreign-architectures"))?;
    let mut added: Vec<&str> = Vec::new();
    for arch in packages
        .iter()
        .filter_map(|p| p.split_once(':').map(|(_, a)| a))
    {
        if arch != "all" && !foreign.lines().any(|l| l.trim() == arch) && !added.contains(&arch) {
            run(Command::new("dpkg").args(["--add-architecture", arch]))?;
            added.push(arch);
        }
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// The C libraries the workspace links on this machine (the agent's ALSA capture, through
/// pkg-config): installed when missing, before anything builds the agent.
pub fn ensure_build_deps() -> Result<()> {
    ensure_tools(&[("pkg-config", "pkg-config")])?;
    // The hub embeds the browser's verifier, built for WebAssembly by hub/build.rs.
    ensure_rust_target("wasm32-unknown-unknown")?;
    let alsa = format!(
        "/usr/lib/{}-linux-gnu/pkgconfig/alsa.pc",
        std::env::consts::ARCH
    );
    ensure_files(&[(alsa.as_str(), "libasound2-dev")])
}

/// What a camera source and the loopback RTSP camera (`tests/tools/rtsp-server.py`) need:
/// ffmpeg reads the streams; GStreamer's RTSP server, through Debian's python3, plays one.
pub fn ensure_camera_tools() -> Result<()> {
    ensure_tools(&[("ffmpeg", "ffmpeg")])?;
    // Debian's multiarch folder of this machine.
    let lib = format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH);
    let files = [
        (
            "/usr/lib/python3/dist-packages/gi/overrides/Gst.py".to_owned(),
            "python3-gst-1.0",
        ),
        (
            format!("{lib}/girepository-1.0/GstRtspServer-1.0.typelib"),
            "gir1.2-gst-rtsp-server-1.0",
        ),
        (
            format!("{lib}/gstreamer-1.0/libgstx264.so"),
            "gstreamer1.0-plugins-ugly",
        ),
        (
            format!("{lib}/gstreamer-1.0/libgstrtp.so"),
            "gstreamer1.0-plugins-good",
        ),
        (
            format!("{lib}/gstreamer-1.0/libgstpng.so"),
            "gstreamer1.0-plugins-good",
        ),
        (
            format!("{lib}/gstreamer-1.0/libgstvideoconvertscale.so"),
            "gstreamer1.0-plugins-base",
        ),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(f, p)| (f.as_str(), *p)).collect();
    ensure_files(&files)
}

/// Whether this process runs as root (and may install Debian packages).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Waits for `child` until `limit` has passed since `started`; past it the child is killed and
/// the error names `what`.
pub fn wait_within(
    child: &mut std::process::Child,
    started: std::time::Instant,
    limit: std::time::Duration,
    what: &str,
) -> Result<std::process::ExitStatus> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if started.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            bail!("{what} did not finish within {limit:?}; killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Adds the Rust standard library for `triple` when rustup does not have it yet.
pub fn ensure_rust_target(triple: &str) -> Result<()> {
    if !have("rustup") {
        bail!(
            "rustup is needed to add the `{triple}` standard library (or install it by other means)"
        );
    }
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|l| l.trim() == triple) {
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add", triple]))
}

/// Every target that `rust-toolchain.toml` lists (the boards' targets), added when missing: a
/// toolchain installed before the project's targets were listed, or by other means, lacks them,
/// and a build for the node then fails with "can't find crate for `core`".
pub fn ensure_toolchain_targets() -> Result<()> {
    let path = root().join("rust-toolchain.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let file: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let targets = file
        .get("toolchain")
        .and_then(|t| t.get("targets"))
        .and_then(|t| t.as_array())
        .map(|a| a.iter().filter_map(|t| t.as_str()).collect::<Vec<_>>())
        .unwrap_or_default();
    for t in targets {
        ensure_rust_target(t)?;
    }
    Ok(())
}
