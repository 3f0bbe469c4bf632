//! A device and a hub on this machine, as the demo and the VM smoke test set them up: the
//! device key (`edge-agent keygen`), the hub's key, the device enrolled, and `hub run` in the
//! background on an embedded broker's port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use anyhow::{Context, Result};

use crate::sh;

/// `edge-agent keygen`: the device's key pair in `dir`.
pub fn device_keygen(agent: &Path, dir: &Path, device: &str, territory: &str) -> Result<()> {
    sh::run(
        Command::new(agent)
            .args([
                "keygen",
                "--device",
                device,
                "--territory",
                territory,
                "--dir",
            ])
            .arg(dir),
    )
}

/// `hub keygen`: the hub's key pair in `dir`.
pub fn hub_keygen(hub: &Path, dir: &Path, name: &str) -> Result<()> {
    sh::run(
        Command::new(hub)
            .args(["keygen", "--name", name, "--dir"])
            .arg(dir),
    )
}

/// What the demo states in the public register for its device: no controller, purpose or legal
/// basis of a real processing, since there is none (example data on this machine), said
/// plainly rather than with placeholders.
pub const DEMO_CONTROLLER: &str =
    "Aucun : démonstration locale (cargo xtask demo) sur la machine de la personne qui la lance";
pub const DEMO_PURPOSE: &str = "Démonstration du système : résultats calculés sur les fichiers d'exemple du dépôt, pas sur un lieu réel";
pub const DEMO_LEGAL_BASIS: &str =
    "Sans objet : aucune donnée personnelle traitée (images et sons d'exemple, aucun lieu public)";

/// `hub enroll` of the device whose verifier key is `vkey`, allowed these model cards, with the
/// demo's register statements; the enrolment file is `dir/devices.toml`.
pub fn enroll(hub: &Path, dir: &Path, vkey: &Path, cards: &[PathBuf]) -> Result<()> {
    let mut cmd = Command::new(hub);
    cmd.arg("enroll")
        .arg("--devices")
        .arg(dir.join("devices.toml"))
        .arg("--device-key")
        .arg(vkey)
        .args(["--controller", DEMO_CONTROLLER])
        .args(["--purpose", DEMO_PURPOSE])
        .args(["--legal-basis", DEMO_LEGAL_BASIS]);
    for card in cards {
        cmd.arg("--card").arg(card);
    }
    sh::run(&mut cmd)
}

/// A running `hub run`; killed when dropped.
pub struct LocalHub {
    pub config: PathBuf,
    child: Child,
}

impl LocalHub {
    /// Writes `dir/hub.toml` (subscribing to the broker on `broker_port`, then `extra`) and
    /// starts the hub, its log in `dir/hub.log`.
    pub fn start(
        hub: &Path,
        dir: &Path,
        name: &str,
        broker_port: u16,
        extra: &str,
    ) -> Result<LocalHub> {
        let config = dir.join("hub.toml");
        std::fs::write(
            &config,
            format!(
                "name = \"{name}\"\nmode = \"demo\"\nkey = \"hub.key\"\ndb = \"hub.sqlite\"\ndevices = \"devices.toml\"\n\
                 [mqtt]\nhost = \"127.0.0.1\"\nport = {broker_port}\n{extra}"
            ),
        )?;
        let child = Command::new(hub)
            .args(["run", "--config"])
            .arg(&config)
            .stderr(std::fs::File::create(dir.join("hub.log"))?)
            .spawn()
            .context("starting the hub")?;
        Ok(LocalHub { config, child })
    }
}

impl Drop for LocalHub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
