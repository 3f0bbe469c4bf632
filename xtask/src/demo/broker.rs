//! The demo's embedded MQTT broker: rumqttd in a thread of this process, on a free loopback
//! port. Tests use a real mosquitto instead (tests/src/broker.rs).

#![cfg_attr(not(feature = "broker"), allow(unused_imports))]

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Starts the broker and returns its port once it accepts connections.
#[cfg(not(feature = "broker"))]
pub fn start() -> Result<u16> {
    anyhow::bail!(
        "this xtask was built without its `broker` feature; run the job through `cargo xtask`, \
         which turns the feature on"
    )
}

#[cfg(feature = "broker")]
pub fn start() -> Result<u16> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port")?
        .port();
    let text = format!(
        r#"id = 0
[router]
id = 0
max_connections = 100
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 1048576
max_inflight_count = 100
dynamic_filters = true
"#
    );
    let config: rumqttd::Config = toml::from_str(&text).context("the broker's config")?;
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                eprintln!("embedded broker stopped: {e}");
            }
        })
        .context("starting the broker thread")?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("the embedded broker did not start on port {port}")
}
