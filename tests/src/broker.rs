//! mosquitto, started by the test on a free loopback port, killed and restarted on demand.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound then released: good enough for tests on one machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a loopback port")
}

/// Waits until something accepts connections on the port.
pub fn wait_port(port: u16, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

pub struct Mosquitto {
    pub port: u16,
    conf: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    /// Plain TCP on loopback, anonymous, no persistence.
    pub fn start(dir: &Path) -> Mosquitto {
        Mosquitto::start_with(dir, "allow_anonymous true\n")
    }

    /// With extra configuration lines (TLS, ACL...), after the listener line.
    pub fn start_with(dir: &Path, extra: &str) -> Mosquitto {
        let port = free_port();
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\npersistence false\nmax_queued_messages 100000\n{extra}"
            ),
        )
        .expect("writing mosquitto.conf");
        let mut m = Mosquitto {
            port,
            conf,
            child: None,
        };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (cargo xtask test installs it)");
        self.child = Some(child);
        assert!(
            wait_port(self.port, Duration::from_secs(10)),
            "mosquitto did not start on port {}",
            self.port
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL (no persistence: everything it held is gone).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        // The port may linger briefly in the kernel; mosquitto retries binding itself not.
        for _ in 0..50 {
            if TcpListener::bind(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.spawn();
    }

    /// SIGSTOP / SIGCONT: a hung broker.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.signal("-CONT");
        self.kill();
    }
}
