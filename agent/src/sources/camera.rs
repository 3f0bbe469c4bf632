//! Live cameras through a child process that writes raw frames to a pipe, as Frigate does:
//! ffmpeg for RTSP IP cameras, MJPEG over HTTP, V4L2 devices and video files; `rpicam-vid`
//! for the Raspberry Pi's CSI camera. The child is started with no output file (its only
//! output is our pipe) and frames live in memory only.
//!
//! A supervisor thread restarts the child with backoff when it exits (ffmpeg exits with
//! status 0 when an RTSP server dies, so every exit is a lost source) or when no frame came
//! for `stall_timeout` (a frozen server is noticed by ffmpeg itself only after seconds). A
//! reader thread keeps only the newest frame: when inference is slower than capture, older
//! frames are dropped and counted, never queued.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::health::PipelineHealth;
use crate::pipeline::Image;
use crate::stop::Stop;

/// Where frames come from.
#[derive(Debug, Clone, PartialEq)]
pub enum CameraInput {
    /// An RTSP IP camera (`rtsp://`, `rtsps://`), over TCP.
    Rtsp(String),
    /// MJPEG over HTTP (`http://`, `https://`); it carries no timestamps, so wall-clock
    /// time stamps them.
    Http(String),
    /// A V4L2 device (`/dev/videoN`: USB cameras, capture cards).
    Device(PathBuf),
    /// A video file, read at its own rate and looped (for trials on site and for tests).
    File(PathBuf),
    /// The Raspberry Pi's CSI camera, through `rpicam-vid`.
    RpiCam,
}

impl CameraInput {
    /// Reads the `input` field of a camera source: a URL, a device, `rpicam` or a file.
    pub fn parse(base: &Path, s: &str) -> Result<CameraInput, String> {
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("rtsp://") || lower.starts_with("rtsps://") {
            Ok(CameraInput::Rtsp(s.to_owned()))
        } else if lower.starts_with("http://") || lower.starts_with("https://") {
            Ok(CameraInput::Http(s.to_owned()))
        } else if s == "rpicam" {
            Ok(CameraInput::RpiCam)
        } else if s.starts_with("/dev/") {
            Ok(CameraInput::Device(PathBuf::from(s)))
        } else if s.contains("://") {
            Err(format!(
                "`{s}`: expected rtsp://, rtsps://, http:// or https://, a /dev/videoN device, \"rpicam\" or a video file"
            ))
        } else {
            let path = base.join(s);
            if !path.is_file() {
                return Err(format!("{} is not a video file", path.display()));
            }
            Ok(CameraInput::File(path))
        }
    }
}

/// A camera source, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraSettings {
    pub input: CameraInput,
    /// The size frames are scaled to (the model's own input size is applied after).
    pub width: u32,
    pub height: u32,
    /// Frames per second asked of the child.
    pub fps: f64,
    /// Without a frame for this long, the child is restarted.
    pub stall_timeout: Duration,
}

impl CameraSettings {
    /// The program this input needs, and the Debian package that has it.
    pub fn program(&self) -> (&'static str, &'static str) {
        match self.input {
            CameraInput::RpiCam => ("rpicam-vid", "rpicam-apps"),
            _ => ("ffmpeg", "ffmpeg"),
        }
    }

    /// Bytes of one frame on the pipe.
    fn frame_len(&self) -> usize {
        let pixels = self.width as usize * self.height as usize;
        match self.input {
            // YUV 4:2:0: a full-size luma plane and two quarter-size chroma planes.
            CameraInput::RpiCam => pixels * 3 / 2,
            _ => pixels * 3,
        }
    }

    /// The child's command line: raw frames on stdout, errors only on stderr, nothing
    /// written anywhere else.
    pub fn command(&self) -> Command {
        let (w, h, fps) = (self.width, self.height, self.fps);
        if self.input == CameraInput::RpiCam {
            let mut c = Command::new("rpicam-vid");
            c.args(["-t", "0", "--nopreview", "--codec", "yuv420"])
                .args(["--width", &w.to_string(), "--height", &h.to_string()])
                .args(["--framerate", &fps.to_string(), "-o", "-"]);
            return c;
        }
        let mut c = Command::new("ffmpeg");
        c.args(["-hide_banner", "-loglevel", "error", "-nostdin"]);
        match &self.input {
            CameraInput::Rtsp(url) => {
                // TCP: no lost packets on a lossy link; a socket timeout of 5 s.
                c.args(["-rtsp_transport", "tcp", "-timeout", "5000000", "-i", url]);
            }
            CameraInput::Http(url) => {
                c.args([
                    "-use_wallclock_as_timestamps",
                    "1",
                    "-rw_timeout",
                    "5000000",
                ])
                .args(["-i", url]);
            }
            CameraInput::Device(dev) => {
                c.args(["-f", "v4l2", "-video_size", &format!("{w}x{h}"), "-i"])
                    .arg(dev);
            }
            CameraInput::File(path) => {
                c.args(["-re", "-stream_loop", "-1", "-i"]).arg(path);
            }
            CameraInput::RpiCam => unreachable!("handled above"),
        }
        c.args(["-an", "-sn", "-dn", "-vf"])
            .arg(format!("fps={fps},scale={w}:{h}"))
            .args(["-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1"]);
        c
    }
}

/// One captured frame.
pub struct Frame {
    pub image: Image,
    pub captured: Instant,
}

/// The newest frame, not yet taken.
struct Slot {
    frame: Option<(Vec<u8>, Instant)>,
}

struct Shared {
    settings: CameraSettings,
    name: String,
    slot: Mutex<Slot>,
    fresh: Condvar,
    health: Arc<PipelineHealth>,
    /// Milliseconds since `origin` when the last frame arrived.
    last_frame_ms: AtomicU64,
    origin: Instant,
    closing: Arc<Stop>,
}

/// A running camera: frames from [`Camera::next`] until it is dropped.
pub struct Camera {
    shared: Arc<Shared>,
    supervisor: Option<JoinHandle<()>>,
}

/// How long a new child may take to deliver its first frame (connecting, probing the stream,
/// starting a decoder), when `stall_timeout` is shorter.
const FIRST_FRAME: Duration = Duration::from_secs(15);

/// The longest wait between two restarts of the child.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Camera {
    /// Starts the child and its supervisor. Fails at once only when the program is not
    /// installed: everything else (a camera that is down, a wrong URL) is retried, and shows
    /// in the pipeline's health.
    pub fn start(
        name: &str,
        settings: CameraSettings,
        health: Arc<PipelineHealth>,
    ) -> Result<Camera, String> {
        let (program, package) = settings.program();
        if !on_path(program) {
            return Err(format!(
                "`{program}` is not installed (Debian: apt-get install {package})"
            ));
        }
        let shared = Arc::new(Shared {
            settings,
            name: name.to_owned(),
            slot: Mutex::new(Slot { frame: None }),
            fresh: Condvar::new(),
            health,
            last_frame_ms: AtomicU64::new(0),
            origin: Instant::now(),
            closing: Stop::new(),
        });
        let s = Arc::clone(&shared);
        let supervisor = std::thread::Builder::new()
            .name(format!("camera {name}"))
            .spawn(move || supervise(&s))
            .map_err(|e| format!("cannot start the camera thread: {e}"))?;
        Ok(Camera {
            shared,
            supervisor: Some(supervisor),
        })
    }

    /// The newest frame not yet taken, waiting at most `wait` for one.
    pub fn next(&self, wait: Duration) -> Option<Frame> {
        let s = &self.shared;
        let deadline = Instant::now() + wait;
        let mut slot = s.slot.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some((rgb, captured)) = slot.frame.take() {
                return Some(Frame {
                    image: Image {
                        width: s.settings.width,
                        height: s.settings.height,
                        rgb,
                    },
                    captured,
                });
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            slot = s
                .fresh
                .wait_timeout(slot, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.shared.closing.request();
        if let Some(h) = self.supervisor.take() {
            let _ = h.join();
        }
    }
}

/// Whether `program` is an executable file on PATH.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// Runs the child until closing, restarting it when it ends or stalls.
fn supervise(s: &Shared) {
    let mut backoff = Duration::from_secs(1);
    let mut first = true;
    while !s.closing.requested() {
        if !first {
            s.health.restarts.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        let started = Instant::now();
        let frames_before = s.health.captured.load(Ordering::Relaxed);
        let reason = run_child(s);
        if s.closing.requested() {
            break;
        }
        // A child that delivered frames for a while earns a quick restart; one that keeps
        // failing waits longer each time, up to MAX_BACKOFF.
        let delivered = s.health.captured.load(Ordering::Relaxed) > frames_before;
        if delivered && started.elapsed() > MAX_BACKOFF {
            backoff = Duration::from_secs(1);
        }
        tracing::warn!(
            "pipeline `{}`: camera: {reason}; restarting in {} s",
            s.name,
            backoff.as_secs()
        );
        s.health.set_source_error(reason);
        s.health.set_state(hub_link::SourceState::Restarting);
        if s.closing.sleep(backoff) {
            break;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One life of the child: why it ended.
fn run_child(s: &Shared) -> String {
    let spawned = s
        .settings
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return format!("cannot start `{}`: {e}", s.settings.program().0),
    };
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let last_error: Arc<Mutex<Option<String>>> = Arc::default();
    let errors = {
        let last_error = Arc::clone(&last_error);
        let name = s.name.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let line = line.trim().to_owned();
                if !line.is_empty() {
                    tracing::debug!("pipeline `{name}`: camera: {line}");
                    *last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(line);
                }
            }
        })
    };
    let ended = Arc::new(AtomicBool::new(false));
    let (reason, status, read) = std::thread::scope(|scope| {
        let ended = &ended;
        let reader = scope.spawn(move || read_frames(s, stdout, ended));
        let reason = watch(s, &mut child, ended);
        // Ending the child ends the reader's read.
        let _ = child.kill();
        let status = child.wait();
        let read = reader
            .join()
            .unwrap_or_else(|_| Err("the reader panicked".into()));
        (reason, status, read)
    });
    let _ = errors.join();
    let stderr = last_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .map(|l| format!(" ({l})"))
        .unwrap_or_default();
    let how = match (reason, read, status) {
        (Some(r), _, _) => r,
        (None, Err(e), _) => e,
        (None, Ok(()), Ok(st)) => format!("the stream ended ({st})"),
        (None, Ok(()), Err(e)) => format!("the stream ended ({e})"),
    };
    format!("{how}{stderr}")
}

/// Waits while the child delivers; `Some(reason)` when we end it (stall, closing), `None`
/// when it ended by itself.
fn watch(s: &Shared, child: &mut Child, ended: &AtomicBool) -> Option<String> {
    let started = s.origin.elapsed().as_millis() as u64;
    let stall_ms = s.settings.stall_timeout.as_millis() as u64;
    loop {
        if s.closing.sleep(Duration::from_millis(100)) {
            return Some("closing".into());
        }
        if ended.load(Ordering::SeqCst) {
            return None;
        }
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        let last = s.last_frame_ms.load(Ordering::Relaxed);
        let now = s.origin.elapsed().as_millis() as u64;
        if last < started {
            // Connecting and starting a decoder take a while: the first frame gets longer.
            let grace = stall_ms.max(FIRST_FRAME.as_millis() as u64);
            if now - started > grace {
                return Some(format!(
                    "no frame {:.1} s after the start",
                    (now - started) as f64 / 1e3
                ));
            }
        } else if now.saturating_sub(last) > stall_ms {
            return Some(format!(
                "no frame for {:.1} s",
                now.saturating_sub(last) as f64 / 1e3
            ));
        }
    }
}

/// Reads whole frames from the child's stdout into the slot until the pipe ends.
fn read_frames(s: &Shared, mut out: impl Read, ended: &AtomicBool) -> Result<(), String> {
    let len = s.settings.frame_len();
    let (w, h) = (s.settings.width as usize, s.settings.height as usize);
    // A buffer to read into again: the frame a newer one replaced before it was taken.
    let mut spare: Option<Vec<u8>> = None;
    let result = loop {
        let mut buf = spare.take().unwrap_or_else(|| vec![0u8; len]);
        match read_full(&mut out, &mut buf) {
            Ok(true) => {}
            Ok(false) => break Ok(()),
            Err(e) => break Err(format!("reading frames: {e}")),
        }
        let rgb = match s.settings.input {
            CameraInput::RpiCam => {
                let rgb = yuv420_to_rgb(&buf, w, h);
                spare = Some(buf);
                rgb
            }
            _ => buf,
        };
        s.last_frame_ms
            .store(s.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
        s.health.captured.fetch_add(1, Ordering::Relaxed);
        s.health.set_state(hub_link::SourceState::Running);
        let mut slot = s.slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((old, _)) = slot.frame.replace((rgb, Instant::now())) {
            // Not taken in time: the newest frame wins.
            s.health.dropped.fetch_add(1, Ordering::Relaxed);
            if old.len() == len {
                spare = Some(old);
            }
        }
        drop(slot);
        s.fresh.notify_one();
    };
    ended.store(true, Ordering::SeqCst);
    result
}

/// Fills `buf` entirely; `false` at a clean end of stream before the first byte. A frame cut
/// short by the end of the stream is discarded (the stream ended).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Planar YUV 4:2:0 (BT.601, limited range, as the Pi's ISP writes it) to packed RGB.
pub fn yuv420_to_rgb(yuv: &[u8], w: usize, h: usize) -> Vec<u8> {
    let (y_plane, chroma) = yuv.split_at(w * h);
    let (u_plane, v_plane) = chroma.split_at((w / 2) * (h / 2));
    let mut rgb = Vec::with_capacity(w * h * 3);
    for row in 0..h {
        for col in 0..w {
            let y = y_plane[row * w + col] as f32 - 16.0;
            let c = (row / 2) * (w / 2) + col / 2;
            let u = u_plane[c] as f32 - 128.0;
            let v = v_plane[c] as f32 - 128.0;
            let px = |x: f32| x.round().clamp(0.0, 255.0) as u8;
            rgb.push(px(1.164 * y + 1.596 * v));
            rgb.push(px(1.164 * y - 0.392 * u - 0.813 * v));
            rgb.push(px(1.164 * y + 2.017 * u));
        }
    }
    rgb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_told_apart_and_bad_ones_named() {
        let base = Path::new("/");
        assert_eq!(
            CameraInput::parse(base, "rtsp://127.0.0.1:8554/cam"),
            Ok(CameraInput::Rtsp("rtsp://127.0.0.1:8554/cam".into()))
        );
        assert_eq!(
            CameraInput::parse(base, "http://cam.local/mjpeg"),
            Ok(CameraInput::Http("http://cam.local/mjpeg".into()))
        );
        assert_eq!(
            CameraInput::parse(base, "/dev/video0"),
            Ok(CameraInput::Device("/dev/video0".into()))
        );
        assert_eq!(CameraInput::parse(base, "rpicam"), Ok(CameraInput::RpiCam));
        let e = CameraInput::parse(base, "ftp://x/y").unwrap_err();
        assert!(e.contains("rtsp://"), "{e}");
        let e = CameraInput::parse(base, "no-such-clip.mp4").unwrap_err();
        assert!(e.contains("no-such-clip.mp4"), "{e}");
    }

    #[test]
    fn the_child_writes_raw_frames_to_the_pipe_and_nothing_else() {
        let s = CameraSettings {
            input: CameraInput::Rtsp("rtsp://127.0.0.1/cam".into()),
            width: 640,
            height: 480,
            fps: 5.0,
            stall_timeout: Duration::from_secs(10),
        };
        let c = s.command();
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(c.get_program(), "ffmpeg");
        // The only output is the pipe.
        assert_eq!(args.last().map(String::as_str), Some("pipe:1"));
        assert!(args.windows(2).any(|w| w == ["-f", "rawvideo"]));
        assert!(args.windows(2).any(|w| w == ["-pix_fmt", "rgb24"]));
        assert!(args.contains(&"fps=5,scale=640:480".to_owned()));
        assert_eq!(s.frame_len(), 640 * 480 * 3);
    }

    #[test]
    fn grey_yuv_is_grey_rgb() {
        let (w, h) = (4, 2);
        let mut yuv = vec![126u8; w * h];
        yuv.extend(vec![128u8; 2 * (w / 2) * (h / 2)]);
        let rgb = yuv420_to_rgb(&yuv, w, h);
        assert_eq!(rgb.len(), w * h * 3);
        assert!(rgb.iter().all(|&c| c == 128), "{rgb:?}");
    }
}
