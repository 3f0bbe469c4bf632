//! `edge-agent keygen`: the device's Ed25519 key pair.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

pub fn keygen(dir: &Path, device: &str, territory: &str) -> Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = verify::origin(territory, device);
    let key = audit::keys::generate_in(dir, &name)?;
    say!(
        "wrote {} (private, mode 0600) and {}",
        dir.join("device.key").display(),
        dir.join("device.vkey").display()
    );
    say!("verifier key: {}", key.verifier());
    Ok(ExitCode::SUCCESS)
}
