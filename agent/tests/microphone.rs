//! The microphone source on a real ALSA device with no sound card: an asoundrc whose `file`
//! PCM plugin reads the bundled speech sample (raw samples, header stripped) in place of a
//! `null` slave's silence. That plugin delivers as fast as it is read and, past the end of its
//! file, stale buffer contents: so the source captures exactly the file's length (`duration`).

mod support;

use std::path::Path;
use std::time::Duration;

use support::{agent, device, records, terminate, text, verify};

/// Speech time (ms) and observed time (ms) over the records. A window that closed on the
/// clock before any chunk arrived (a loaded machine) is on record with no share: it adds nothing.
fn speech_ms(recs: &[aggregate::RecordView]) -> (u64, u64) {
    recs.iter()
        .filter_map(|r| r.aggregates.speech_share.get("speech"))
        .fold((0, 0), |(s, o), v| {
            (
                s + v.observed_ms * v.share_ppm / 1_000_000,
                o + v.observed_ms,
            )
        })
}

/// An ALSA configuration in `home` with a capture device `speech` reading `raw`.
fn asoundrc(home: &Path, raw: &Path) {
    std::fs::write(
        home.join(".asoundrc"),
        format!(
            "pcm.speech {{\n  type file\n  slave.pcm \"null\"\n  file \"/dev/null\"\n  infile \"{}\"\n  format \"raw\"\n}}\n",
            raw.display()
        ),
    )
    .unwrap();
}

fn mic_pipeline(source: &str) -> String {
    format!(
        "\n[[pipeline]]\nname = \"speech\"\nmodel = \"{{root}}/models/silero-vad-16k/card.toml\"\n\
         aggregates = [\"speech_share\"]\nwindow = \"1s\"\n[pipeline.source]\n{source}\n\
         [pipeline.privacy]\nk = 1\n"
    )
}

#[test]
fn a_microphone_hears_what_the_replay_hears() {
    let wav = support::root().join("models/samples/speech.wav");
    let mut reader = hound::WavReader::open(&wav).unwrap();
    assert_eq!(reader.spec().sample_rate, 16_000);
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let home = tempfile::tempdir().unwrap();
    let raw = home.path().join("speech.raw");
    std::fs::write(
        &raw,
        samples
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    asoundrc(home.path(), &raw);
    let duration_ms = samples.len() as u64 * 1000 / 16_000;

    // The replay of the same file.
    let (replay_dir, replay_config) = device(&mic_pipeline(
        "kind = \"replay\"\npath = \"{root}/models/samples/speech.wav\"",
    ));
    let o = agent(&["run", "--config", replay_config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let replay = speech_ms(&records(replay_dir.path()));

    let (dir, config) = device(&mic_pipeline(&format!(
        "kind = \"microphone\"\ninput = \"speech\"\nduration = \"{duration_ms}ms\""
    )));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(verify(dir.path()).status.success());
    let mic = speech_ms(&records(dir.path()));
    // The same chunks (553 of 32 ms), the same decisions: a single chunk decided otherwise
    // would move the speech time by 32 ms; per-window rounding moves it by under 1 ms each.
    assert_eq!(
        mic.1, replay.1,
        "observed time: microphone {mic:?}, replay {replay:?}"
    );
    assert_eq!(mic.1, 553 * 32);
    assert!(
        mic.0.abs_diff(replay.0) < 32,
        "speech time: microphone {mic:?}, replay {replay:?}"
    );
    assert!(replay.0 > 5_000, "the sample holds speech: {replay:?}");
    let out = text(&o);
    assert!(
        out.contains("553 frames or chunks analysed (553 captured, 0 dropped"),
        "{out}"
    );
}

#[test]
fn a_missing_device_is_retried_and_the_service_still_stops_cleanly() {
    let home = tempfile::tempdir().unwrap();
    // The device's file does not exist yet: opening fails, and is retried with a back-off.
    let raw = home.path().join("later.raw");
    asoundrc(home.path(), &raw);
    let (dir, config) = device(&mic_pipeline("kind = \"microphone\"\ninput = \"speech\""));
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    let (o, _) = terminate(child, Duration::from_secs(20));
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("microphone: cannot open ALSA capture device `speech`"),
        "{out}"
    );
    assert!(
        out.contains("reopening in 1 s") && out.contains("reopening in 2 s"),
        "{out}"
    );
    // Windows kept closing on time while the device was missing: empty, but on record.
    assert!(verify(dir.path()).status.success());
    let recs = records(dir.path());
    assert!(recs.len() >= 3, "{recs:?}");
    assert!(
        recs.iter().all(|r| r
            .aggregates
            .speech_share
            .get("speech")
            .is_none_or(|v| v.observed_ms == 0)),
        "{recs:?}"
    );
}

/// systemd's side of `Type=notify` with `WatchdogSec`: READY once the pipeline runs, WATCHDOG
/// while it turns, none once its read is stuck (a FIFO whose writer stops writing without
/// closing: ALSA's `file` plugin blocks in read(2)), STOPPING on SIGTERM.
#[test]
fn a_stuck_pipeline_stops_petting_systemd_s_watchdog() {
    use std::io::Write as _;
    use std::os::unix::net::UnixDatagram;

    let home = tempfile::tempdir().unwrap();
    let fifo = home.path().join("mic.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    asoundrc(home.path(), &fifo);
    let socket_path = home.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let (_dir, config) = device(&mic_pipeline("kind = \"microphone\"\ninput = \"speech\""));
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("HOME", home.path())
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1500000")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // The "microphone": 4 s of speech as fast as the agent reads, then nothing, the FIFO kept
    // open (no end of file) until `release` says so.
    let wav = support::root().join("models/samples/speech.wav");
    let samples: Vec<u8> = hound::WavReader::open(&wav)
        .unwrap()
        .samples::<i16>()
        .take(4 * 16_000)
        .flat_map(|s| s.unwrap().to_le_bytes())
        .collect();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        let _ = f.write_all(&samples);
        let _ = released.recv();
        // Unblock the reader with silence, then close: the agent can stop.
        let _ = f.write_all(&vec![0u8; 64_000]);
    });

    // Notifications: (time since start, text).
    let start = std::time::Instant::now();
    let mut seen: Vec<(Duration, String)> = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < Duration::from_secs(12) {
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push((
                start.elapsed(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
    }
    let (o, _) = {
        let _ = release.send(());
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(n) = socket.recv(&mut buf) {
                seen.push((
                    start.elapsed(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                ));
            }
            if seen.iter().any(|(_, s)| s.contains("STOPPING=1")) {
                break;
            }
        }
        (child.wait_with_output().unwrap(), ())
    };
    writer.join().unwrap();
    let out = text(&o);
    let at = |what: &str| -> Vec<Duration> {
        seen.iter()
            .filter(|(_, s)| s.lines().any(|l| l == what))
            .map(|(t, _)| *t)
            .collect()
    };
    let ready = at("READY=1");
    let pets = at("WATCHDOG=1");
    assert_eq!(ready.len(), 1, "READY once: {seen:?}\n{out}");
    assert!(
        pets.iter().filter(|t| **t > ready[0]).count() >= 2,
        "petted while the pipeline ran: {seen:?}"
    );
    // Stuck from about 4 s of audio on (read faster than real time): the petting stops, and
    // stays stopped for the rest of the 12 s.
    let last_pet = *pets.last().unwrap();
    assert!(
        last_pet < Duration::from_secs(9),
        "still petted at {last_pet:?} with the pipeline stuck: {seen:?}\n{out}"
    );
    assert!(
        out.contains("has not moved for") && out.contains("no longer petting systemd's watchdog"),
        "{out}"
    );
    assert!(
        !at("STOPPING=1").is_empty(),
        "STOPPING on SIGTERM: {seen:?}\n{out}"
    );
    assert!(o.status.success(), "{out}");
}
