//! `cargo xtask build --board B` for Linux boards: cross-compiles the agent for the board's
//! target with the `device` profile (fat LTO, stripped), installing the rustup target and
//! naming (or, as root, installing) the Debian cross toolchain it needs. MCU boards go to
//! the firmware build (`firmware.rs`).

pub mod firmware;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use boards::{Board, Kind};

use crate::sh;

/// What a Linux target needs on a Debian host. Keyed by target triple, not by board: boards
/// name their target in their file, and the linker itself is set in `.cargo/config.toml`.
pub struct Toolchain {
    pub triple: &'static str,
    /// The target's C library root, for `qemu-<arch> -L`.
    pub sysroot: &'static str,
    /// `(file or program, Debian package that provides it)`; the first is the C cross
    /// compiler that `.cargo/config.toml` names as the target's linker.
    pub needs: &'static [(&'static str, &'static str)],
}

pub const TOOLCHAINS: &[Toolchain] = &[
    Toolchain {
        triple: "aarch64-unknown-linux-gnu",
        sysroot: "/usr/aarch64-linux-gnu",
        needs: &[
            ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
            // The C library's headers (ring's and alsa-sys's C code), not only its shared
            // object: the compiler's package pulls `libc6-arm64-cross` in, but the headers
            // only as a recommendation that `--no-install-recommends` skips.
            (
                "/usr/aarch64-linux-gnu/include/stdio.h",
                "libc6-dev-arm64-cross",
            ),
            // The agent's ALSA capture links libasound (pkg-config finds it through
            // `.cargo/config.toml`'s PKG_CONFIG_LIBDIR for the target).
            (
                "/usr/lib/aarch64-linux-gnu/pkgconfig/alsa.pc",
                "libasound2-dev:arm64",
            ),
        ],
    },
    Toolchain {
        triple: "x86_64-unknown-linux-gnu",
        sysroot: "/",
        needs: &[("cc", "gcc")],
    },
    Toolchain {
        triple: "armv7-unknown-linux-gnueabihf",
        sysroot: "/usr/arm-linux-gnueabihf",
        needs: &[
            ("arm-linux-gnueabihf-gcc", "gcc-arm-linux-gnueabihf"),
            (
                "/usr/arm-linux-gnueabihf/include/stdio.h",
                "libc6-dev-armhf-cross",
            ),
            (
                "/usr/lib/arm-linux-gnueabihf/pkgconfig/alsa.pc",
                "libasound2-dev:armhf",
            ),
        ],
    },
];

pub fn toolchain(triple: &str) -> Result<&'static Toolchain> {
    TOOLCHAINS.iter().find(|t| t.triple == triple).with_context(|| {
        let known: Vec<_> = TOOLCHAINS.iter().map(|t| t.triple).collect();
        format!(
            "no cross toolchain known for `{triple}` (known: {}); add one to xtask/src/build/mod.rs",
            known.join(", ")
        )
    })
}

/// `cargo xtask build --board B`: firmware for MCU boards, the agent for Linux boards.
pub fn run(args: &crate::build::firmware::BuildArgs) -> Result<ExitCode> {
    let board = Board::find(&sh::root().join("boards"), &args.board)?;
    match board.kind {
        Kind::Mcu => crate::build::firmware::run(args),
        Kind::Linux => {
            let built = build_agent(&board, !args.debug)?;
            println!("{}", built.path.display());
            println!("{}", built.report(&board));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A cross-built agent.
pub struct Built {
    pub path: PathBuf,
    pub bytes: u64,
    pub seconds: f64,
    pub profile: &'static str,
}

impl Built {
    pub fn report(&self, board: &Board) -> String {
        format!(
            "{}: edge-agent for {} ({} profile): {} B ({:.1} MiB), built in {:.1} s",
            board.name,
            board.target,
            self.profile,
            self.bytes,
            self.bytes as f64 / (1024.0 * 1024.0),
            self.seconds
        )
    }
}

/// Builds the agent for a Linux board's target; `device` selects the `device` profile
/// (optimised, fat LTO, symbols stripped), otherwise the dev profile.
pub fn build_agent(board: &Board, device: bool) -> Result<Built> {
    if board.kind != Kind::Linux {
        bail!(
            "board `{}` is a {} board: the agent runs on linux boards",
            board.name,
            board.kind
        );
    }
    let tc = toolchain(&board.target)?;
    sh::ensure_rust_target(tc.triple)?;
    sh::ensure_build_deps()?;
    ensure_toolchain(tc)?;
    let profile = if device { "device" } else { "dev" };
    let started = Instant::now();
    sh::run(sh::cargo().args([
        "build",
        "--package",
        "agent",
        "--bin",
        "edge-agent",
        "--target",
        tc.triple,
        "--profile",
        profile,
    ]))?;
    let seconds = started.elapsed().as_secs_f64();
    let dir = if device { "device" } else { "debug" };
    let path = sh::target_dir()
        .join(tc.triple)
        .join(dir)
        .join("edge-agent");
    let bytes = std::fs::metadata(&path)
        .with_context(|| format!("the build left no {}", path.display()))?
        .len();
    Ok(Built {
        path,
        bytes,
        seconds,
        profile,
    })
}

/// The cross compiler and C library: present, installed by apt as root, or named.
fn ensure_toolchain(tc: &Toolchain) -> Result<()> {
    let present = |what: &str| {
        if what.starts_with('/') {
            Path::new(what).exists()
        } else {
            sh::have(what)
        }
    };
    let missing: Vec<(&str, &str)> = tc
        .needs
        .iter()
        .copied()
        .filter(|(what, _)| !present(what))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    for (what, pkg) in &missing {
        eprintln!("{}: `{what}` is missing (Debian package {pkg})", tc.triple);
    }
    sh::install_packages(&missing.iter().map(|(_, p)| *p).collect::<Vec<_>>())?;
    if let Some((what, pkg)) = tc.needs.iter().find(|(what, _)| !present(what)) {
        bail!("`{what}` is still missing after installing {pkg}");
    }
    Ok(())
}
