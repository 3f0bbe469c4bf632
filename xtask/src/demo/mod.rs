//! `cargo xtask demo`: the whole system on one machine, on embedded defaults: a device key,
//! the hub's key and enrolment, an embedded MQTT broker ([`broker`], rumqttd), the hub
//! ([`hub`]) and the agent on the bundled models and samples; then what the hub stored and
//! what a local authority reads on the device.

pub mod broker;
pub mod hub;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::sh;

/// The README's main command: the whole system on embedded defaults. A device key and a hub
/// key; an embedded MQTT broker (rumqttd, in this process); the hub verifying and storing;
/// the agent replaying the bundled samples through two real models into its signed audit log
/// and publishing it; then what the hub stored, the log verified as a local authority would,
/// and every model checked against onnxruntime's outputs.
pub fn demo() -> Result<()> {
    let (agent, hub) = crate::models::binaries()?;
    let root = sh::root();
    let demo = sh::target_dir().join("demo");
    if demo.exists() {
        std::fs::remove_dir_all(&demo).with_context(|| format!("cleaning {}", demo.display()))?;
    }
    std::fs::create_dir_all(&demo)?;
    let keys = demo.join("keys");
    println!(
        "== 1. a device key (Ed25519; the private half never leaves the device) and the hub's key"
    );
    crate::demo::hub::device_keygen(&agent, &keys, "demo-001", "fr-demo")?;
    let hub_dir = demo.join("hub");
    crate::demo::hub::hub_keygen(&hub, &hub_dir, "demo-hub")?;
    println!("== 2. the hub enrols the device with the model cards it may run");
    crate::demo::hub::enroll(
        &hub,
        &hub_dir,
        &keys.join("device.vkey"),
        &[
            root.join("models/silero-vad-16k/card.toml"),
            root.join("models/firered-aed/card.toml"),
            root.join("models/centerface-int8/card.toml"),
            root.join("models/nanodet-int8/card.toml"),
            root.join("models/node-levels/card.toml"),
        ],
    )?;
    let ports = crate::demo::broker::start()?;
    let port = ports.devices;
    println!(
        "== 3. an embedded MQTT broker (rumqttd) on 127.0.0.1:{port} (devices) and :{} (the hub, MQTT 5); the hub subscribes",
        ports.hub
    );
    // The hub's web side (dashboard, API, register) on a free loopback port.
    let http_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let hub_proc = crate::demo::hub::LocalHub::start(
        &hub,
        &hub_dir,
        "demo-hub",
        ports.hub,
        &format!(
            "[http]\nlisten = \"127.0.0.1:{http_port}\"\ncards = \"{}\"\n",
            root.join("models").display()
        ),
    )?;
    let hub_config = hub_proc.config.clone();
    println!("   the hub's dashboard: http://127.0.0.1:{http_port}/ (while it runs)");
    // The example config, with its paths pointing here, publishing to the embedded broker.
    let example = std::fs::read_to_string(root.join("agent/examples/agent.toml"))?;
    let config = example
        .replace("../../models/", &format!("{}/models/", root.display()))
        .replace("../../var/demo", &demo.join("data").display().to_string())
        .replace("../../var/keys", &keys.display().to_string())
        + &format!(
            "\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nhub_key = \"{}\"\n",
            hub_dir.join("hub.vkey").display()
        );
    // A live camera: GStreamer's RTSP server on loopback streams the people sample as H.264;
    // the agent reads it through ffmpeg like any IP camera.
    sh::ensure_camera_tools()?;
    let rtsp_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let camera = RtspCamera::start(rtsp_port, &root.join("models/samples/people.png"), 25, None)?;
    // The sensor node: its firmware under QEMU, its UART served on a loopback TCP port that
    // the agent's `node` source reads like a serial line.
    let node = NodeVm::start()?;
    // A street: the bundled clip, read by the camera source at its own rate, counted across a
    // line by NanoDet int8 and the tracker.
    let street = crate::models::street_video()?;
    let config = config
        + &format!(
            r#"
[[pipeline]]
name = "node"
model = "{models}/node-levels/card.toml"
aggregates = ["level_stats"]
window = "5s"
[pipeline.source]
kind = "node"
input = "tcp:127.0.0.1:{node_port}"
[pipeline.privacy]
k = 1

[[pipeline]]
name = "camera"
model = "{models}/centerface-int8/card.toml"
aggregates = ["count", "presence_share"]
window = "10s"
[pipeline.source]
kind = "camera"
input = "rtsp://127.0.0.1:{rtsp_port}/cam"
width = 640
height = 480
fps = 5.0
[pipeline.privacy]
k = 3
unit = "person-window"
# Epsilon 1 per 10-second window (its max, total and present frames together): 8640 windows a
# day need a daily budget of 8640 (docs/privacy.md).
noise = {{ mechanism = "geometric", epsilon = 1.0, budget_per_day = 8640 }}

[[pipeline]]
name = "rue"
model = "{models}/nanodet-int8/card.toml"
aggregates = ["count", "line_count"]
window = "10s"
threshold = 0.4
classes = ["person", "bicycle", "car", "motorcycle", "bus", "truck"]
# A line across the street's middle, from the top of the pavement to the bottom of the image;
# walking down it, its left is the right half of the image: crossing rightwards is "in".
[[pipeline.line]]
name = "milieu"
from = [320, 130]
to = [320, 360]
in = "left"
[pipeline.source]
kind = "camera"
input = "{street}"
width = 640
height = 360
fps = 5.0
# The demonstration shows exact counts (no noise, nothing suppressed); a deployment sets `k`,
# `unit` and `noise` as docs/privacy.md says.
[pipeline.privacy]
k = 1
"#,
            models = root.join("models").display(),
            node_port = node.port,
            street = street.display()
        );
    let config_path = demo.join("agent.toml");
    std::fs::write(&config_path, config)?;
    println!(
        "== 4. the agent replays the bundled samples: speech -> Silero VAD and FireRedVAD AED, people -> CenterFace int8,"
    );
    println!(
        "      watches a live RTSP camera (rtsp://127.0.0.1:{rtsp_port}/cam) with CenterFace int8,"
    );
    println!(
        "      counts people and vehicles crossing a line on a street clip with NanoDet int8 and a tracker,"
    );
    println!(
        "      reads the sensor node's sound levels and environment (its firmware under QEMU runs {}",
        node.cycles
    );
    println!(
        "      cycles, then stops: the agent retries the link as it would for an unplugged node);"
    );
    println!("      appends each window's record to its signed log and publishes it to the hub");
    println!(
        "      (frames and audio stay in memory; only aggregates reach the log and the wire)."
    );
    println!(
        "      A camera never ends: after {} s the demo stops the agent as systemd does (SIGTERM),",
        CAMERA_SECONDS
    );
    println!("      which closes the open windows as partial records and signs a last checkpoint.");
    let ran = run_for(&agent, &config_path, Duration::from_secs(CAMERA_SECONDS));
    drop(camera);
    drop(node);
    drop(hub_proc);
    ran?;
    println!(
        "== 5. what the hub stored, after verifying every signature, the order and the checkpoints"
    );
    sh::run(
        Command::new(&hub)
            .args(["stats", "--config"])
            .arg(&hub_config),
    )?;
    let records = sh::output(
        Command::new(&hub)
            .args(["records", "--entries", "--device", "demo-001", "--config"])
            .arg(&hub_config),
    )?;
    println!("   first stored records (canonical JSON, as published):");
    for line in records.lines().take(3) {
        println!("   {line}");
    }
    println!(
        "== 5b. what anyone can check from the public register: the hub's export, verified against the device's key"
    );
    let export = hub_dir.join("export");
    std::fs::create_dir_all(&export)?;
    for (flag, file) in [
        (None, "records.jsonl"),
        (Some("--checkpoint"), "checkpoint.txt"),
    ] {
        let mut cmd = Command::new(&hub);
        cmd.args(["records", "--device", "demo-001", "--config"])
            .arg(&hub_config)
            .args(flag);
        let text = sh::output(&mut cmd)?;
        std::fs::write(export.join(file), text)
            .with_context(|| format!("writing {}", export.join(file).display()))?;
    }
    sh::run(
        Command::new(&hub)
            .arg("verify")
            .arg("--key")
            .arg(keys.join("device.vkey"))
            .arg("--records")
            .arg(export.join("records.jsonl"))
            .arg("--checkpoint")
            .arg(export.join("checkpoint.txt")),
    )?;
    println!(
        "   the same check runs in a browser at http://127.0.0.1:{http_port}/verify?device=demo-001 while `hub run` serves (below)"
    );
    let log = demo.join("data/log");
    let vkey = keys.join("device.vkey");
    println!(
        "== 6. what a local authority reads on the device: the records, verified against its key"
    );
    sh::run(
        Command::new(&agent)
            .args(["audit", "show"])
            .arg(&log)
            .arg("--pubkey")
            .arg(&vkey),
    )?;
    println!("== 7. every bundled model against onnxruntime's outputs");
    crate::models::fetch()?;
    crate::models::check_with(&agent)?;
    println!("== demo done. Look at:");
    println!(
        "   {}               the agent's config",
        config_path.display()
    );
    println!(
        "   {}                the audit log (docs/audit-format.md)",
        log.display()
    );
    println!(
        "   {} stats --config {}",
        hub.display(),
        hub_config.display()
    );
    println!(
        "   {} run --config {}\n      keeps the hub running: its dashboard, API and public register at http://127.0.0.1:{http_port}/",
        hub.display(),
        hub_config.display()
    );
    println!(
        "   {} audit show {} --pubkey {} --json",
        agent.display(),
        log.display(),
        vkey.display()
    );
    Ok(())
}

/// How long the demo watches the live camera before stopping the agent.
const CAMERA_SECONDS: u64 = 25;

/// `edge-agent run`, stopped with SIGTERM after `live` (the replays end by themselves, the
/// camera does not); fails unless it exits 0.
fn run_for(agent: &Path, config: &Path, live: Duration) -> Result<()> {
    let mut child = Command::new(agent)
        .args(["run", "--config"])
        .arg(config)
        .spawn()
        .with_context(|| format!("starting {}", agent.display()))?;
    let started = Instant::now();
    while started.elapsed() < live {
        if let Some(status) = child.try_wait()? {
            bail!("the agent stopped early ({status}); its messages are above");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // SAFETY: kill(2) on our own child's pid, which stays ours until we wait for it.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait()?;
    if !status.success() {
        bail!("the agent failed after SIGTERM ({status}); its messages are above");
    }
    Ok(())
}

/// The loopback RTSP camera (`tests/tools/rtsp-server.py`), stopped when dropped.
pub struct RtspCamera(Child);

impl RtspCamera {
    /// Streams `image` at `fps`, scaled to `size` (width, height) if given.
    pub fn start(
        port: u16,
        image: &Path,
        fps: u32,
        size: Option<(u32, u32)>,
    ) -> Result<RtspCamera> {
        use std::io::Read;
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(sh::root().join("tests/tools/rtsp-server.py"))
            .arg(port.to_string())
            .arg(image)
            .arg(fps.to_string());
        if let Some((w, h)) = size {
            cmd.arg(format!("{w}x{h}"));
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the RTSP camera with Debian's /usr/bin/python3")?;
        let mut ready = [0u8; 6];
        let said = child
            .stdout
            .take()
            .context("the RTSP camera's output")?
            .read_exact(&mut ready);
        if said.is_err() || &ready != b"ready\n" {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the RTSP camera did not start (its error is above); it needs Debian's python3-gst-1.0 and gir1.2-gst-rtsp-server-1.0"
            );
        }
        Ok(RtspCamera(child))
    }
}

impl Drop for RtspCamera {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The sensor node's firmware under qemu-system-arm, its frame UART a TCP server on `port`
/// (the guest starts when the agent connects). Killed when dropped.
struct NodeVm {
    port: u16,
    cycles: u32,
    child: Child,
}

impl NodeVm {
    fn start() -> Result<NodeVm> {
        sh::ensure_tools(&[("qemu-system-arm", "qemu-system-arm")])?;
        let board = boards::Board::find(&sh::root().join("boards"), "lm3s6965evb")?;
        let Some(boards::Qemu::System {
            machine,
            cpu,
            exit_after_cycles,
        }) = &board.qemu
        else {
            bail!("board {} has no [qemu] machine", board.name);
        };
        let (_, elf) =
            crate::build::firmware::build(&board, crate::build::firmware::What::Node, true)?
                .into_iter()
                .next()
                .context("the node firmware's ELF")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("qemu-system-arm")
            .args([
                "-machine",
                machine,
                "-cpu",
                cpu,
                "-nographic",
                "-monitor",
                "none",
            ])
            .args([
                "-serial",
                &format!("tcp:127.0.0.1:{port},server=on,wait=on"),
            ])
            .args(["-semihosting-config", "enable=on,target=native", "-kernel"])
            .arg(&elf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting qemu-system-arm for the sensor node")?;
        Ok(NodeVm {
            port,
            cycles: exit_after_cycles.unwrap_or(0),
            child,
        })
    }
}

impl Drop for NodeVm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
