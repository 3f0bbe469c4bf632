//! `cargo xtask flash --board B --host user@addr`: installs the agent on a Linux board over
//! SSH, atomically.
//!
//! 1. Locally: the agent for the board's target (cross-built, or `--agent`, whose ELF machine
//!    must match the board), the agent config rewritten for the device (models, samples and
//!    the hub's key copied into the release; the device key and the audit log stay in the
//!    board's persistent folders), every model card's file checked against its sha256, and a
//!    `MANIFEST.sha256` of the whole release.
//! 2. The release is streamed with `tar` over `ssh` into `<releases_dir>/.incoming-<id>`,
//!    checked against its manifest on the device, then renamed to `releases/<id>`: the new
//!    version sits beside the old one.
//! 3. `current` is switched to it with one `rename(2)`; the service is restarted (systemd
//!    boards); the health check is `edge-agent selftest` of the new release (config, device
//!    key, data folder, audit log, every model against its golden vectors) and, under systemd,
//!    the unit still active after a settling time.
//! 4. If the health check fails, `current` is switched back to the previous release, the
//!    service restarted and checked again; the failed release is kept as `<id>.failed` for
//!    inspection. The command then fails, saying so.
//!
//! The device key is generated on the device at the first install (never copied); its
//! verifier key is printed for enrolment at the hub.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use boards::{Board, Install, ServiceManager};
use sha2::{Digest, Sha256};

use crate::sh;

/// The systemd unit's name on the device.
pub const UNIT: &str = "iat-edge-agent.service";

/// Releases kept on the device besides the current and the previous one.
const KEEP_OLD: usize = 2;

/// How a Linux board is reached and where the release is installed.
pub struct Deploy<'a> {
    pub board: &'a Board,
    /// `user@address` (or a host alias of ~/.ssh/config).
    pub host: String,
    pub port: Option<u16>,
    pub identity: Option<PathBuf>,
    /// `-o` options passed to ssh as they are (e.g. `UserKnownHostsFile=...`).
    pub ssh_options: Vec<String>,
    /// The agent binary; `None`: cross-build it for the board.
    pub agent: Option<PathBuf>,
    /// The agent config to install (paths relative to it, as `edge-agent run` reads it).
    pub config: PathBuf,
    /// Install under this folder of the device instead of `/` (an image being prepared, or
    /// a test's temporary root). The unit is written there, but no service is restarted
    /// (the running system is not that tree): the health check is the selftest alone.
    pub root: Option<PathBuf>,
    /// Seconds the service must stay active after a restart (systemd boards).
    pub settle_seconds: u32,
}

pub fn run(d: &Deploy) -> Result<ExitCode> {
    let install = d.board.install.as_ref().with_context(|| {
        format!(
            "board `{}` has no [install] section: nothing says where the agent goes",
            d.board.name
        )
    })?;
    let agent = match &d.agent {
        Some(a) => a.clone(),
        None => {
            let built = crate::build::build_agent(d.board, true)?;
            println!("{}", built.report(d.board));
            built.path
        }
    };
    check_machine(&agent, &d.board.target)?;
    let paths = DevicePaths::new(install, d.root.as_deref());
    let stage = sh::target_dir().join("deploy").join(&d.board.name);
    if stage.exists() {
        std::fs::remove_dir_all(&stage).with_context(|| format!("cleaning {}", stage.display()))?;
    }
    std::fs::create_dir_all(&stage)?;
    let identity = stage_release(&stage, &agent, &d.config, &paths)?;
    let (manifest_digest, bytes, files) = write_manifest(&stage)?;
    let id = format!("{}-{}", utc_stamp(), &manifest_digest[..12]);
    println!(
        "release {id}: {files} files, {:.1} MiB, staged in {}",
        bytes as f64 / (1024.0 * 1024.0),
        stage.display()
    );

    upload(d, &stage, &paths, &id, bytes)?;
    let script = install_script(
        d.board,
        install,
        &paths,
        &identity,
        &id,
        d.settle_seconds,
        d.root.is_some(),
    );
    println!(
        "switching {} to {id} on {}",
        paths.current.display(),
        d.host
    );
    let status = ssh(d)
        .arg("sh -s")
        .stdin(Stdio::piped())
        .spawn()
        .context("starting ssh")
        .and_then(|mut child| {
            child
                .stdin
                .take()
                .expect("piped")
                .write_all(script.as_bytes())
                .context("sending the install script")?;
            Ok(child.wait()?)
        })?;
    match status.code() {
        Some(0) => {
            println!(
                "{}: release {id} installed, healthy and running ({})",
                d.host,
                paths.current.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(3) => bail!(
            "the new release {id} failed its health check (output above); {} was switched back \
             to the previous release, which passed its check again. The failed release is kept \
             in {}.failed for inspection",
            paths.current.display(),
            paths.releases.join(&id).display()
        ),
        Some(4) => bail!(
            "the new release {id} failed its health check (output above) and there is no \
             previous release to go back to: the agent is not running. Fix the cause (see \
             `edge-agent selftest` above) and install again"
        ),
        Some(5) => bail!(
            "the new release {id} failed its health check, and so did the previous release \
             after the switch back: the device needs attention (output above)"
        ),
        _ => bail!(
            "installing on {} failed ({status}); nothing was switched unless said above",
            d.host
        ),
    }
}

/// The board's install folders, under `root` when one is given.
pub struct DevicePaths {
    pub releases: PathBuf,
    pub current: PathBuf,
    pub binary: PathBuf,
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
    pub unit: PathBuf,
}

impl DevicePaths {
    pub fn new(i: &Install, root: Option<&Path>) -> DevicePaths {
        let under = |p: &Path| match root {
            None => p.to_path_buf(),
            Some(r) => r.join(p.strip_prefix("/").unwrap_or(p)),
        };
        DevicePaths {
            releases: under(&i.releases_dir).join("releases"),
            current: under(&i.releases_dir).join("current"),
            binary: under(&i.binary),
            config_dir: under(&i.config_dir),
            data_dir: under(&i.data_dir),
            unit: under(Path::new("/etc/systemd/system")).join(UNIT),
        }
    }
}

/// The ELF machine of `agent` must be the board's (a technician with the wrong build gets
/// told here, not by `exec format error` on the device).
fn check_machine(agent: &Path, triple: &str) -> Result<()> {
    use object::{Architecture, Object};
    let data = std::fs::read(agent).with_context(|| format!("reading {}", agent.display()))?;
    let file = object::File::parse(&*data)
        .with_context(|| format!("{} is not an executable (ELF)", agent.display()))?;
    let want = match triple.split('-').next() {
        Some("aarch64") => Architecture::Aarch64,
        Some(a) if a.starts_with("arm") => Architecture::Arm,
        Some("x86_64") => Architecture::X86_64,
        _ => bail!("no ELF machine known for target `{triple}`; add it to xtask/src/flash/ssh.rs"),
    };
    ensure!(
        file.architecture() == want,
        "{} is built for {:?}, the board's target `{triple}` needs {want:?}: build it with \
         `cargo xtask build --board <board>` or leave out --agent",
        agent.display(),
        file.architecture()
    );
    Ok(())
}

/// What the install script needs to know of the config: the device's identity for keygen.
pub struct Identity {
    device: String,
    territory: String,
}

/// Copies the agent, the models, samples and keys its config names, and writes the
/// config rewritten for the device.
pub fn stage_release(
    stage: &Path,
    agent: &Path,
    config: &Path,
    paths: &DevicePaths,
) -> Result<Identity> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("reading the agent config {}", config.display()))?;
    let mut table: toml::Table = text
        .parse()
        .with_context(|| format!("{}: not valid TOML", config.display()))?;
    let base = config.parent().unwrap_or(Path::new("."));
    let field = |t: &toml::Table, name: &str| -> Result<String> {
        t.get(name)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .with_context(|| format!("{}: `{name}` is missing or not a string", config.display()))
    };
    let identity = Identity {
        device: field(&table, "device")?,
        territory: field(&table, "territory")?,
    };
    std::fs::copy(agent, stage.join("edge-agent"))
        .with_context(|| format!("copying {}", agent.display()))?;

    let device_str = |p: &Path| p.display().to_string();
    table.insert("data_dir".into(), device_str(&paths.data_dir).into());
    table.insert(
        "key".into(),
        device_str(&paths.config_dir.join("device.key")).into(),
    );

    let mut models = std::collections::BTreeSet::new();
    if let Some(toml::Value::Array(pipelines)) = table.get_mut("pipeline") {
        for (i, p) in pipelines.iter_mut().enumerate() {
            let p = p
                .as_table_mut()
                .with_context(|| format!("{}: pipeline[{i}] is not a table", config.display()))?;
            let card = base.join(field(p, "model").with_context(|| format!("pipeline[{i}]"))?);
            let dir = card.parent().unwrap_or(Path::new("."));
            let id = dir
                .file_name()
                .with_context(|| format!("pipeline[{i}].model: {}", card.display()))?
                .to_string_lossy()
                .into_owned();
            if models.insert(id.clone()) {
                check_card(&card).with_context(|| format!("pipeline[{i}].model"))?;
                copy_dir(dir, &stage.join("models").join(&id))?;
            }
            let card_name = card.file_name().expect("a card file").to_string_lossy();
            p.insert("model".into(), format!("models/{id}/{card_name}").into());
            if let Some(source) = p.get_mut("source").and_then(|s| s.as_table_mut())
                && source.get("kind").and_then(|k| k.as_str()) == Some("replay")
            {
                let from = base.join(field(source, "path")?);
                let name = from
                    .file_name()
                    .with_context(|| format!("pipeline[{i}].source.path"))?
                    .to_string_lossy()
                    .into_owned();
                let to = stage.join("samples").join(&name);
                if from.is_dir() {
                    copy_dir(&from, &to)?;
                } else {
                    std::fs::create_dir_all(stage.join("samples"))?;
                    std::fs::copy(&from, &to).with_context(|| {
                        format!("pipeline[{i}].source.path: copying {}", from.display())
                    })?;
                }
                source.insert("path".into(), format!("samples/{name}").into());
            }
        }
    }
    if let Some(mqtt) = table.get_mut("mqtt").and_then(|m| m.as_table_mut()) {
        std::fs::create_dir_all(stage.join("keys"))?;
        let hub = base.join(field(mqtt, "hub_key")?);
        std::fs::copy(&hub, stage.join("keys/hub.vkey"))
            .with_context(|| format!("mqtt.hub_key: copying {}", hub.display()))?;
        mqtt.insert("hub_key".into(), "keys/hub.vkey".into());
        if let Some(tls) = mqtt.get_mut("tls").and_then(|t| t.as_table_mut()) {
            for name in ["ca", "cert", "key"] {
                let from = base.join(field(tls, name).with_context(|| "mqtt.tls")?);
                let to = format!("keys/tls-{name}.pem");
                std::fs::copy(&from, stage.join(&to))
                    .with_context(|| format!("mqtt.tls.{name}: copying {}", from.display()))?;
                tls.insert(name.into(), to.into());
            }
        }
    }
    let out = format!(
        "# Installed by `cargo xtask flash` from {}; paths are relative to this release,\n\
         # except the device key and the audit log, which stay across releases.\n{}",
        config.display(),
        toml::to_string(&table).context("writing the device config")?
    );
    std::fs::write(stage.join("agent.toml"), out)?;
    Ok(identity)
}

/// The card's model file must have the sha256 the card pins: a release never carries a model
/// its card does not describe.
fn check_card(card: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(card).with_context(|| format!("reading {}", card.display()))?;
    let t: toml::Table = text
        .parse()
        .with_context(|| format!("{}: not valid TOML", card.display()))?;
    let get = |k: &str| {
        t.get(k)
            .and_then(|v| v.as_str())
            .with_context(|| format!("{}: `{k}` is missing", card.display()))
    };
    let file = card.parent().unwrap_or(Path::new(".")).join(get("file")?);
    let want = get("sha256")?;
    let bytes = std::fs::read(&file).with_context(|| {
        format!(
            "{}: its model file {} (fetch it with `cargo xtask models fetch`)",
            card.display(),
            file.display()
        )
    })?;
    let got = hex(&Sha256::digest(&bytes));
    ensure!(
        got == want,
        "{}: sha256 {got}, the card pins {want}",
        file.display()
    );
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type()?.is_dir() {
            if e.file_name() == "__pycache__" {
                continue;
            }
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `MANIFEST.sha256` (the `sha256sum -c` format); returns its own digest, the
/// release's size and its number of files.
fn write_manifest(stage: &Path) -> Result<(String, u64, usize)> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.is_dir() {
                walk(&p, base, out)?;
            } else {
                let rel = p.strip_prefix(base).expect("inside").to_string_lossy();
                out.push((rel.into_owned(), p));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(stage, stage, &mut files)?;
    files.sort();
    let mut manifest = String::new();
    let mut bytes = 0;
    for (rel, path) in &files {
        let data = std::fs::read(path)?;
        bytes += data.len() as u64;
        manifest.push_str(&format!("{}  ./{rel}\n", hex(&Sha256::digest(&data))));
    }
    std::fs::write(stage.join("MANIFEST.sha256"), &manifest)?;
    Ok((
        hex(&Sha256::digest(manifest.as_bytes())),
        bytes,
        files.len(),
    ))
}

/// `20261130T101500Z`, from the system clock.
fn utc_stamp() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    // `2026-11-30T10:15:00.123Z` -> `20261130T101500Z`
    let full = aggregate::window::rfc3339(ms);
    let mut stamp: String = full[..19]
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    stamp.push('Z');
    stamp
}

fn ssh(d: &Deploy) -> Command {
    let mut c = Command::new("ssh");
    c.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]);
    if let Some(p) = d.port {
        c.arg("-p").arg(p.to_string());
    }
    if let Some(i) = &d.identity {
        c.arg("-i").arg(i);
    }
    for o in &d.ssh_options {
        c.arg("-o").arg(o);
    }
    c.arg(&d.host);
    c
}

/// Single-quotes a string for the device's POSIX shell.
fn q(s: impl AsRef<str>) -> String {
    format!("'{}'", s.as_ref().replace('\'', r"'\''"))
}

fn qp(p: &Path) -> String {
    q(p.display().to_string())
}

/// Streams the staged release into `<releases>/.incoming-<id>` with a progress bar.
fn upload(d: &Deploy, stage: &Path, paths: &DevicePaths, id: &str, bytes: u64) -> Result<()> {
    let incoming = paths.releases.join(format!(".incoming-{id}"));
    let remote = format!(
        "set -e; rm -rf {inc}; mkdir -p {inc}; tar -xf - -C {inc}",
        inc = qp(&incoming)
    );
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(stage)
        .args(["-cf", "-", "."])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting tar")?;
    let mut ssh = ssh(d)
        .arg(remote)
        .stdin(Stdio::piped())
        .spawn()
        .context("starting ssh")?;
    let bar = indicatif::ProgressBar::new(bytes);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_message(format!("upload to {}", d.host));
    let (mut from, mut to) = (
        tar.stdout.take().expect("piped"),
        ssh.stdin.take().expect("piped"),
    );
    let mut buf = vec![0u8; 64 * 1024];
    let copied = (|| -> std::io::Result<()> {
        loop {
            let n = from.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            to.write_all(&buf[..n])?;
            bar.inc(n as u64);
        }
    })();
    drop(to);
    bar.finish_and_clear();
    let tar_status = tar.wait()?;
    let ssh_status = ssh.wait()?;
    ensure!(tar_status.success(), "tar of {} failed", stage.display());
    ensure!(
        ssh_status.success() && copied.is_ok(),
        "uploading to {} failed (ssh {ssh_status}{}): check that `ssh{} {}` works without a \
         password (a key in ssh-agent or --identity) and that the user may write {}",
        d.host,
        copied.err().map(|e| format!(", {e}")).unwrap_or_default(),
        d.port.map(|p| format!(" -p {p}")).unwrap_or_default(),
        d.host,
        paths.releases.display()
    );
    println!("uploaded {:.1} MiB", bytes as f64 / (1024.0 * 1024.0));
    Ok(())
}

/// The systemd unit: the agent of the `current` release, as the board's service user, with
/// write access to the data folder only. `Type=notify`: the agent says when its models are
/// loaded, and pets the watchdog while every pipeline's loop turns (a pipeline stuck for
/// `WatchdogSec` gets the service restarted). A stop (SIGTERM) closes the open windows as
/// partial records, signs a checkpoint and hands the rest to the hub within the config's
/// `mqtt.drain_timeout` (30 s by default), well inside `TimeoutStopSec`. The service user is in
/// the groups that own cameras (`video`), sound devices (`audio`) and serial ports (`dialout`).
fn unit_text(install: &Install, paths: &DevicePaths) -> String {
    format!(
        "# Installed by `cargo xtask flash`.\n\
         [Unit]\n\
         Description=IAT edge agent: private, audited aggregates\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         User={user}\n\
         SupplementaryGroups=video audio dialout\n\
         Type=notify\n\
         NotifyAccess=main\n\
         ExecStart={current}/edge-agent run --config {current}/agent.toml\n\
         WatchdogSec=60\n\
         TimeoutStopSec=90\n\
         Restart=on-failure\n\
         RestartSec=10\n\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         ProtectHome=yes\n\
         PrivateTmp=yes\n\
         ReadWritePaths={data}\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        user = install.service_user,
        current = paths.current.display(),
        data = paths.data_dir.display(),
    )
}

/// The script run on the device (POSIX sh, coreutils): verify, place, switch, restart, check,
/// roll back. Exit 0: healthy; 3: rolled back; 4: failed with nothing to go back to; 5: the
/// previous release failed too.
fn install_script(
    board: &Board,
    install: &Install,
    paths: &DevicePaths,
    identity: &Identity,
    id: &str,
    settle: u32,
    rooted: bool,
) -> String {
    let systemd = install.service_manager == ServiceManager::Systemd;
    // Under --root the running system is not the tree being installed: write the unit, but
    // restart and watch nothing.
    let manage = systemd && !rooted;
    let mut s = String::new();
    let line = |s: &mut String, l: &str| {
        s.push_str(l);
        s.push('\n');
    };
    line(&mut s, "set -eu");
    line(&mut s, &format!("RELEASES={}", qp(&paths.releases)));
    line(&mut s, &format!("CURRENT={}", qp(&paths.current)));
    line(&mut s, &format!("ID={}", q(id)));
    line(&mut s, &format!("BIN={}", qp(&paths.binary)));
    line(&mut s, &format!("CONFIG_DIR={}", qp(&paths.config_dir)));
    line(&mut s, &format!("DATA_DIR={}", qp(&paths.data_dir)));
    line(&mut s, &format!("SYSTEMD={}", u8::from(manage)));
    line(&mut s, &format!("WRITE_UNIT={}", u8::from(systemd)));
    line(&mut s, &format!("SETTLE={settle}"));
    line(
        &mut s,
        &format!("SERVICE_USER={}", q(&install.service_user)),
    );
    line(&mut s, &format!("UNIT_FILE={}", qp(&paths.unit)));
    line(&mut s, &format!("UNIT={}", q(UNIT)));
    line(&mut s, &format!("BOARD={}", q(&board.name)));
    line(&mut s, "step() { echo \"[device] $*\"; }");
    line(
        &mut s,
        r#"
cd "$RELEASES/.incoming-$ID"
sha256sum -c --quiet MANIFEST.sha256 || { step "the release arrived damaged (manifest)"; exit 1; }
cd /
rm -rf "${RELEASES:?}/$ID"
mv "$RELEASES/.incoming-$ID" "$RELEASES/$ID"
step "release $ID placed beside the others ($(ls "$RELEASES" | wc -l) in $RELEASES)"
mkdir -p "$CONFIG_DIR" "$DATA_DIR"
if [ "$SYSTEMD" = 1 ] && ! id "$SERVICE_USER" >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
  step "service user $SERVICE_USER created"
fi
if [ ! -f "$CONFIG_DIR/device.key" ]; then"#,
    );
    line(
        &mut s,
        &format!(
            "  \"$RELEASES/$ID/edge-agent\" keygen --dir \"$CONFIG_DIR\" --device {} --territory {}",
            q(&identity.device),
            q(&identity.territory)
        ),
    );
    line(
        &mut s,
        r#"  step "NEW DEVICE KEY generated on the device; enrol it at the hub:"
  cat "$CONFIG_DIR/device.vkey"
fi
if id "$SERVICE_USER" >/dev/null 2>&1; then
  chown -R "$SERVICE_USER" "$DATA_DIR"
  chown "$SERVICE_USER" "$CONFIG_DIR/device.key"
fi
PREV=$(readlink "$CURRENT" 2>/dev/null || true)
switch() {
  ln -sfn "$1" "$CURRENT.new"
  mv -T "$CURRENT.new" "$CURRENT"
  mkdir -p "$(dirname "$BIN")"
  ln -sfn "$CURRENT/edge-agent" "$BIN.new"
  mv -T "$BIN.new" "$BIN"
}
restart() {
  if [ "$SYSTEMD" = 1 ]; then
    systemctl daemon-reload
    systemctl enable --quiet "$UNIT"
    systemctl restart "$UNIT"
  fi
}
healthy() {
  step "health check: edge-agent selftest of $(readlink "$CURRENT")"
  "$CURRENT/edge-agent" selftest --config "$CURRENT/agent.toml" || return 1
  if [ "$SYSTEMD" = 1 ]; then
    sleep "$SETTLE"
    systemctl is-active --quiet "$UNIT" || { step "$UNIT is not active"; systemctl status --no-pager "$UNIT" || true; return 1; }
  fi
  return 0
}
if [ "$WRITE_UNIT" = 1 ]; then
  mkdir -p "$(dirname "$UNIT_FILE")"
  cat > "$UNIT_FILE.new" <<'IAT_UNIT_EOF'"#,
    );
    s.push_str(&unit_text(install, paths));
    line(
        &mut s,
        r#"IAT_UNIT_EOF
  mv "$UNIT_FILE.new" "$UNIT_FILE"
fi
switch "releases/$ID"
step "switched $CURRENT -> releases/$ID (was ${PREV:-nothing})"
restart
if healthy; then
  step "release $ID is healthy on $BOARD"
  # Keep the current, the previous and a few older releases.
  ls -1t "$RELEASES" | grep -v -x -e "$ID" -e "$(basename "${PREV:-none}")" | tail -n +KEEP_PLUS_ONE | while read -r old; do
    rm -rf "${RELEASES:?}/$old"; step "pruned release $old"
  done
  exit 0
fi
step "release $ID FAILED its health check"
if [ -z "$PREV" ]; then
  rm -f "$CURRENT"
  mv "$RELEASES/$ID" "$RELEASES/$ID.failed"
  step "no previous release to go back to"
  exit 4
fi
switch "$PREV"
mv "$RELEASES/$ID" "$RELEASES/$ID.failed"
restart
step "rolled back: $CURRENT -> $PREV"
if healthy; then
  step "the previous release is healthy again"
  exit 3
fi
exit 5"#
            .replace("KEEP_PLUS_ONE", &(KEEP_OLD + 1).to_string())
            .as_str(),
    );
    s
}
