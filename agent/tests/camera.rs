//! Live cameras with real parts and no camera: a video file and an MJPEG stream over HTTP served
//! by this test. The frames go through ffmpeg, as on a device; the faces of the bundled image
//! (2) are counted in every window that saw frames. An RTSP camera (GStreamer's RTSP server on
//! loopback) killed mid-stream and brought back is tested end to end with the hub, in
//! tests/tests/it/camera.rs.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aggregate::{Published, RecordView};
use support::{device, records, root, start, terminate, text, verify};

/// A face-counting pipeline on a camera source `input`, in 2 s windows.
fn camera_pipeline(input: &str, extra: &str) -> String {
    support::faces_pipeline(
        "street",
        "2s",
        &format!(
            "kind = \"camera\"\ninput = \"{input}\"\nwidth = 320\nheight = 256\nfps = 5\n{extra}"
        ),
    )
}

/// Frames analysed in a record's window.
fn frames(r: &RecordView) -> u64 {
    r.aggregates.count.get("face").map_or(0, |c| c.frames)
}

/// The most faces in a frame of a record's window.
fn max_faces(r: &RecordView) -> Option<u64> {
    match r.aggregates.count.get("face").map(|c| &c.max) {
        Some(Published::Value(v)) => Some(*v),
        _ => None,
    }
}

/// Runs the agent for `secs` seconds, stops it, checks the log: its records. Every frame
/// captured was analysed or dropped for a newer one (the one in hand at the stop aside), and
/// the records' windows account for every frame analysed.
fn run_for(dir: &Path, config: &Path, secs: u64) -> (Vec<RecordView>, String) {
    let child = start(config);
    std::thread::sleep(Duration::from_secs(secs));
    let (out, _) = terminate(child, Duration::from_secs(30));
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(verify(dir).status.success());
    let counts: Vec<u64> = log
        .lines()
        .find_map(|l| {
            let (analysed, rest) = l.split_once(" frames or chunks analysed (")?;
            let analysed = analysed.rsplit(' ').next()?.parse().ok()?;
            let (captured, rest) = rest.split_once(" captured, ")?;
            let dropped = rest.split(' ').next()?.parse().ok()?;
            Some(vec![analysed, captured.parse().ok()?, dropped])
        })
        .unwrap_or_else(|| panic!("no closing summary:\n{log}"));
    let [analysed, captured, dropped] = counts[..] else {
        unreachable!()
    };
    assert!(
        analysed > 0 && captured >= analysed + dropped && captured <= analysed + dropped + 1,
        "captured {captured}, analysed {analysed}, dropped {dropped}:\n{log}"
    );
    let recs = records(dir);
    assert_eq!(recs.iter().map(frames).sum::<u64>(), analysed, "{log}");
    (recs, log)
}

/// Windows that saw frames count the 2 faces of the image, and there are some.
fn assert_faces_counted(recs: &[RecordView], log: &str) {
    let seen: Vec<&RecordView> = recs.iter().filter(|r| frames(r) > 0).collect();
    assert!(
        seen.len() >= 2,
        "too few windows with frames: {recs:?}\n{log}"
    );
    for r in &seen {
        assert_eq!(max_faces(r), Some(2), "{r:?}");
    }
}

fn ffmpeg_clip(dir: &Path) -> std::path::PathBuf {
    let clip = dir.join("clip.mp4");
    let o = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-loop",
            "1",
            "-i",
        ])
        .arg(root().join("models/samples/people.png"))
        .args([
            "-t", "3", "-r", "5", "-c:v", "libx264", "-pix_fmt", "yuv420p",
        ])
        .arg(&clip)
        .output()
        .expect("ffmpeg is installed (apt-get install ffmpeg; cargo xtask test installs it)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    clip
}

#[test]
fn a_video_file_is_read_at_its_own_rate_and_looped() {
    let scratch = tempfile::tempdir().unwrap();
    let clip = ffmpeg_clip(scratch.path());
    let (dir, config) = device(&camera_pipeline(clip.to_str().unwrap(), ""));
    // 8 s of a 3 s clip: it loops.
    let (recs, log) = run_for(dir.path(), &config, 8);
    assert_faces_counted(&recs, &log);
    // Frames taken from the source, analysed or dropped for newer ones (a slow CPU analyses
    // fewer): 5 per second, read at the clip's own rate, not as fast as it decodes; more
    // than the clip's 15 frames, so it looped.
    let captured: u64 = log
        .split_once(" captured, ")
        .and_then(|(head, _)| head.rsplit(['(', ' ']).next()?.parse().ok())
        .unwrap_or_else(|| panic!("no capture count:\n{log}"));
    assert!(
        captured <= 8 * 5 + 5,
        "{captured} frames captured in 8 s at 5 fps"
    );
    assert!(
        captured > 15,
        "{captured} frames captured in 8 s of a 3 s clip\n{log}"
    );
}

/// An MJPEG camera: multipart JPEG frames over HTTP, as cheap IP cameras serve them, until
/// `stop` is set.
fn serve_mjpeg(listener: TcpListener, stop: Arc<AtomicBool>) {
    let img = image::open(root().join("models/samples/people.png")).unwrap();
    let mut jpeg = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut jpeg),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    listener.set_nonblocking(true).unwrap();
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut conn, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        conn.set_nonblocking(false).unwrap();
        let mut request = [0u8; 2048];
        let _ = conn.read(&mut request);
        let stop = Arc::clone(&stop);
        let jpeg = jpeg.clone();
        std::thread::spawn(move || {
            let head = "HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n";
            if conn.write_all(head.as_bytes()).is_err() {
                return;
            }
            while !stop.load(Ordering::Relaxed) {
                let part = format!(
                    "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                    jpeg.len()
                );
                if conn.write_all(part.as_bytes()).is_err()
                    || conn.write_all(&jpeg).is_err()
                    || conn.write_all(b"\r\n").is_err()
                {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    }
}

#[test]
fn an_mjpeg_stream_over_http_is_counted() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || serve_mjpeg(listener, stop))
    };
    let (dir, config) = device(&camera_pipeline(
        &format!("http://127.0.0.1:{port}/video.mjpg"),
        "",
    ));
    let (recs, log) = run_for(dir.path(), &config, 7);
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    assert_faces_counted(&recs, &log);
}
