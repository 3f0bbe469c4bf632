//! Builds the browser's verifier (crate `verify-web` for `wasm32-unknown-unknown`, profile
//! `wasm`) so that the hub embeds it and serves it with the page `/verify`: the code a citizen
//! runs in the browser is the code that the hub and `hub verify` run.
//!
//! A nested cargo with its own target directory (beside this build's, so it is reused across
//! builds). `IAT_VERIFIER_WASM=<file>` embeds a module built elsewhere instead.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-unknown-unknown";

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    let root = manifest
        .parent()
        .expect("the hub is in the workspace")
        .to_owned();
    println!("cargo:rerun-if-env-changed=IAT_VERIFIER_WASM");
    for p in [
        "verify",
        "verify-web",
        "audit/src",
        "audit/Cargo.toml",
        "aggregate/src",
        "aggregate/Cargo.toml",
        "hub-link/src",
        "hub-link/Cargo.toml",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    let wasm = match std::env::var_os("IAT_VERIFIER_WASM") {
        Some(p) => PathBuf::from(p),
        None => build(&root, &out),
    };
    let dest = out.join("verify_web.wasm");
    if let Err(e) = std::fs::copy(&wasm, &dest) {
        panic!("copying {} to {}: {e}", wasm.display(), dest.display());
    }
}

fn build(root: &Path, out: &Path) -> PathBuf {
    // OUT_DIR is <target>[/<triple>]/<profile>/build/hub-<hash>/out.
    let target_dir = out
        .ancestors()
        .nth(4)
        .map(|t| t.join("verify-web"))
        .unwrap_or_else(|| out.join("verify-web"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--quiet",
            "-p",
            "verify-web",
            "--profile",
            "wasm",
            "--target",
            TARGET,
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // What this build was given for the host (flags, clippy's wrapper, its target) is not for
    // the module.
    for v in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
    ] {
        cmd.env_remove(v);
    }
    let output = match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("running cargo to build the browser's verifier: {e}"),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains(TARGET) && stderr.contains("target may not be installed")
            || stderr.contains("can't find crate for `core`")
        {
            format!(
                "\nthe hub embeds the browser's verifier, built for {TARGET}: run `rustup target add {TARGET}` (`cargo xtask test` and `cargo xtask demo` add it), or set IAT_VERIFIER_WASM to a module built elsewhere"
            )
        } else {
            String::new()
        };
        panic!(
            "building the browser's verifier (crate verify-web, {TARGET}) failed:\n{stderr}{hint}"
        );
    }
    target_dir.join(TARGET).join("wasm").join("verify_web.wasm")
}
