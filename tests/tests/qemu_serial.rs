//! Agent <-> QEMU node: the node firmware runs under qemu-system-arm with its frame UART on
//! a TCP socket; a proxy flips bits in some frames and injects truncated and oversized ones,
//! and writes the stream into a pty that the agent's serial source reads. Valid frames must
//! all be accepted in order; every damaged one must be counted and skipped.
//!
//! Needs `qemu-system-arm` and the `thumbv7m-none-eabi` target (CI installs both).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use agent::sources::serial::{Event, SerialSource, answer_hello};
use boards::Qemu;
use node_link::{Decoder, Frame, Message, capabilities};
use serialport::{SerialPort, TTYPort};

/// Bounds a hung run (QEMU or the pty never closing); not a speed check.
const HANG_LIMIT: Duration = Duration::from_secs(120);

/// What the proxy did to the stream.
#[derive(Debug, Default)]
struct Tampering {
    /// Every frame QEMU sent, decoded from the clean stream.
    sent: Vec<Frame>,
    /// Counters of the frames whose bits were flipped.
    flipped: Vec<u32>,
    /// Garbage runs (oversized, truncated) injected between frames.
    injected: u32,
}

/// Frame `i` gets a bit flipped when `i % 4 == 1`; before frames 10 and 20 the proxy
/// injects an oversized run and a truncated copy of the frame.
fn tamper(i: usize, frame: &[u8], out: &mut Vec<u8>, t: &mut Tampering) {
    let body = &frame[..frame.len() - 1]; // without its delimiter
    if i == 10 {
        out.extend(std::iter::repeat_n(0x5A, node_link::MAX_WIRE + 100));
        out.push(0);
        t.injected += 1;
    }
    if i == 20 {
        out.extend_from_slice(&body[..body.len() / 2]);
        out.push(0);
        t.injected += 1;
    }
    let mut body = body.to_vec();
    if i % 4 == 1 {
        let at = 1 + (i * 13) % (body.len() - 1);
        // Pick a bit whose flip leaves no 0x00 behind: one damaged frame, one drop.
        let bit = (0..8)
            .map(|b| (i + b) % 8)
            .find(|&b| body[at] ^ (1 << b) != 0)
            .unwrap();
        body[at] ^= 1 << bit;
    }
    out.extend_from_slice(&body);
    out.push(0);
}

#[test]
fn agent_decodes_real_frames_from_the_qemu_node() {
    let board = tests::node::board();
    let Some(Qemu::System {
        machine,
        cpu,
        exit_after_cycles,
    }) = &board.qemu
    else {
        panic!("lm3s6965evb has no qemu machine");
    };
    let elf = tests::node::build(&board);

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut qemu = Command::new("qemu-system-arm")
        .args([
            "-machine",
            machine,
            "-cpu",
            cpu,
            "-nographic",
            "-monitor",
            "none",
        ])
        .args(["-serial", &format!("tcp:127.0.0.1:{port}")])
        .args(["-semihosting-config", "enable=on,target=native", "-kernel"])
        .arg(&elf)
        .stdin(Stdio::null())
        .stdout(Stdio::null()) // the defmt log; `cargo xtask qemu` checks it
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-arm is installed (apt-get install qemu-system-arm)");
    let (mut uart, _) = listener.accept().unwrap();

    let (mut master, slave) = TTYPort::pair().unwrap();
    let slave_path = slave.name().expect("pty slave has a path");
    let mut source = SerialSource::open(&slave_path, 115_200, Duration::from_millis(200)).unwrap();

    // Agent -> node: whatever the agent writes to the pty goes to QEMU's UART.
    let finished = Arc::new(AtomicBool::new(false));
    let (mut from_agent, mut to_node) = (
        master.try_clone_native().unwrap(),
        uart.try_clone().unwrap(),
    );
    let stop = finished.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            match from_agent.read(&mut buf) {
                Ok(n) if n > 0 => {
                    if to_node.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
    });

    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut t = Tampering::default();
        let mut clean = Decoder::new();
        let mut pending = Vec::new();
        let mut index = 0;
        let mut buf = [0u8; 512];
        loop {
            let n = uart.read(&mut buf).expect("reading QEMU's UART");
            if n == 0 {
                break; // QEMU exited
            }
            let mut out = Vec::new();
            for &b in &buf[..n] {
                pending.push(b);
                if b != 0 {
                    continue;
                }
                if pending.len() > 1 {
                    let mut decoded = None;
                    for &x in &pending {
                        decoded = clean.push(x).or(decoded);
                    }
                    let frame = decoded.unwrap().expect("QEMU's own stream is clean");
                    if index % 4 == 1 {
                        t.flipped.push(frame.counter);
                    }
                    t.sent.push(frame);
                    tamper(index, &pending, &mut out, &mut t);
                    index += 1;
                } else {
                    out.push(0); // the node's lone start-up delimiter
                }
                pending.clear();
            }
            master.write_all(&out).expect("writing the pty");
        }
        // The pty stays open (inside `master`) until the reader has drained it.
        done_tx.send((t, master)).ok();
    });

    let mut got = Vec::new();
    let mut done = None;
    let mut idle = Duration::ZERO;
    loop {
        if done.is_none() {
            done = done_rx.try_recv().ok();
        }
        if let Some((t, _)) = &done {
            let s = source.stats();
            if (s.frames + s.dropped) as usize >= t.sent.len() + t.injected as usize {
                break;
            }
        }
        match source.next_event().unwrap() {
            Event::Frame(frame) => {
                if let Message::Hello(hello) = frame.message {
                    let ack = Message::HelloAck(answer_hello(hello.protocol));
                    source
                        .send(&Frame {
                            counter: 0,
                            message: ack,
                        })
                        .unwrap();
                }
                got.push(*frame)
            }
            Event::Idle => {
                idle += Duration::from_millis(200);
                assert!(
                    idle < HANG_LIMIT,
                    "no end of stream; got {} frames",
                    got.len()
                );
            }
            Event::Closed => break,
        }
    }
    finished.store(true, Ordering::Relaxed);
    assert!(qemu.wait().unwrap().success(), "the node firmware failed");
    let (t, _master) = done.expect("the proxy finished");

    // What QEMU sent: a hello, then one sound frame per cycle, counters without gaps.
    let counters: Vec<u32> = t.sent.iter().map(|f| f.counter).collect();
    assert_eq!(counters, (0..t.sent.len() as u32).collect::<Vec<_>>());
    assert!(
        matches!(t.sent[0].message, Message::Hello(h) if h.capabilities & capabilities::SIMULATED != 0),
        "{:?}",
        t.sent[0]
    );
    let sounds = t
        .sent
        .iter()
        .filter(|f| matches!(f.message, Message::Sound(_)))
        .count();
    assert_eq!(Some(sounds as u32), *exit_after_cycles);
    assert!(
        t.flipped.len() >= 5,
        "too little damage to prove anything: {t:?}"
    );
    // The node waited for the agent's hello ack, and says so in every status frame.
    let statuses: Vec<_> = t
        .sent
        .iter()
        .filter_map(|f| match f.message {
            Message::Status(s) => Some(s),
            _ => None,
        })
        .collect();
    assert!(!statuses.is_empty());
    for s in &statuses {
        assert_eq!(s.agent_protocol, Some(node_link::VERSION), "{s:?}");
    }

    // What the agent made of it: every intact frame, in order; every damaged one counted.
    let intact: Vec<Frame> = t
        .sent
        .iter()
        .filter(|f| !t.flipped.contains(&f.counter))
        .cloned()
        .collect();
    assert_eq!(got, intact);
    let s = source.stats();
    assert_eq!(s.frames as usize, intact.len());
    assert_eq!(s.dropped, t.flipped.len() as u32 + t.injected, "{s:?}");
    assert_eq!(s.oversize, 1, "{s:?}");
    assert_eq!(
        s.crc + s.cobs + s.truncated + s.malformed,
        t.flipped.len() as u32 + 1,
        "{s:?}"
    );
    let last = intact.last().unwrap().counter;
    let missed = t.flipped.iter().filter(|&&c| c < last).count() as u32;
    assert_eq!(s.missed, missed, "{s:?}");
    eprintln!(
        "qemu node: {} frames sent, {} flipped, {} injected; agent: {s:?}",
        t.sent.len(),
        t.flipped.len(),
        t.injected
    );
}
