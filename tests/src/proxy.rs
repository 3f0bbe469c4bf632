//! A TCP fault proxy between clients and the broker: pass, pause (hold bytes without closing:
//! a black hole), drop (close every connection and refuse new ones), delay each chunk.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass = 0,
    Pause = 1,
    Drop = 2,
}

struct State {
    mode: AtomicU8,
    delay_ms: AtomicU64,
    stop: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
}

pub struct Proxy {
    pub port: u16,
    state: Arc<State>,
}

impl Proxy {
    pub fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(State {
            mode: AtomicU8::new(Mode::Pass as u8),
            delay_ms: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if st.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                if st.mode.load(Ordering::Relaxed) == Mode::Drop as u8 {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                for s in [&client, &server] {
                    if let Ok(c) = s.try_clone() {
                        st.conns.lock().unwrap_or_else(|p| p.into_inner()).push(c);
                    }
                }
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    let st = st.clone();
                    std::thread::spawn(move || pump(from, to, &st));
                }
            }
        });
        Proxy { port, state }
    }

    pub fn set(&self, mode: Mode) {
        self.state.mode.store(mode as u8, Ordering::Relaxed);
        if mode == Mode::Drop {
            // Reset every open connection.
            for c in self
                .state
                .conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..)
            {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }

    pub fn set_delay(&self, d: Duration) {
        self.state
            .delay_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, st: &State) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // A paused link holds the bytes (a black hole that keeps the socket open).
        while st.mode.load(Ordering::Relaxed) == Mode::Pause as u8 {
            std::thread::sleep(Duration::from_millis(10));
        }
        if st.mode.load(Ordering::Relaxed) == Mode::Drop as u8 {
            break;
        }
        let d = st.delay_ms.load(Ordering::Relaxed);
        if d > 0 {
            std::thread::sleep(Duration::from_millis(d));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        self.set(Mode::Drop);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
