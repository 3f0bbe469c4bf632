//! The demo's embedded MQTT broker: rumqttd in a thread of this process, on free loopback
//! ports: one for the devices (MQTT 3.1.1, as the agent speaks), one for the hub (MQTT 5, as
//! the hub speaks since issue 21), on the same router. Tests use a real mosquitto instead
//! (tests/src/broker.rs), which takes both on one port.

#![cfg_attr(not(feature = "broker"), allow(unused_imports))]

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Where the embedded broker listens.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// MQTT 3.1.1, for the agents.
    pub devices: u16,
    /// MQTT 5, for the hub.
    pub hub: u16,
}

/// Starts the broker and returns its ports once it accepts connections.
#[cfg(not(feature = "broker"))]
pub fn start() -> Result<Ports> {
    anyhow::bail!(
        "this xtask was built without its `broker` feature; run the job through `cargo xtask`, \
         which turns the feature on"
    )
}

#[cfg(feature = "broker")]
pub fn start() -> Result<Ports> {
    let free = || {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port")
            .map(|a| a.port())
    };
    let ports = Ports {
        devices: free()?,
        hub: free()?,
    };
    let connections = "connection_timeout_ms = 60000
max_payload_size = 1048576
max_inflight_count = 100
dynamic_filters = true";
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
listen = "127.0.0.1:{}"
next_connection_delay_ms = 1
[v4.1.connections]
{connections}
[v5.1]
name = "v5-1"
listen = "127.0.0.1:{}"
next_connection_delay_ms = 1
[v5.1.connections]
{connections}
"#,
        ports.devices, ports.hub
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
        if TcpStream::connect(("127.0.0.1", ports.devices)).is_ok()
            && TcpStream::connect(("127.0.0.1", ports.hub)).is_ok()
        {
            return Ok(ports);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!(
        "the embedded broker did not start on ports {} and {}",
        ports.devices,
        ports.hub
    )
}
