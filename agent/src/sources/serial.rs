//! Serial source: reads a sensor node's frames from a serial port (or any byte stream),
//! decodes them with the `protocol` crate, and counts what it had to drop.
//!
//! This module depends on nothing else in the agent: it turns bytes into validated
//! [`Frame`]s and leaves windowing and inference to its caller.

use std::io::{self, Read, Write};
use std::time::Duration;

use node_link::{Decoder, Frame, HelloAck, MAX_WIRE, Stats, encode_frame};

/// Why the source stopped.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error("cannot open serial port {path}")]
    Open {
        path: String,
        #[source]
        source: serialport::Error,
    },
    #[error("cannot connect to the node's serial server {addr}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("serial read failed")]
    Read(#[from] io::Error),
    #[error("serial write failed")]
    Write(#[source] io::Error),
}

/// What one call to [`SerialSource::next_event`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A frame that passed COBS, CRC, version and schema checks (boxed: a frame with a
    /// sample block is ~300 bytes).
    Frame(Box<Frame>),
    /// No complete frame within the port's read timeout.
    Idle,
    /// The other end is gone (end of stream, or the pty/USB device hung up).
    Closed,
}

/// Frames from a node. Corrupted frames never come out: they show up in [`Self::stats`].
pub struct SerialSource<R> {
    reader: R,
    decoder: Decoder,
    buf: Box<[u8; 1024]>,
    /// Bytes of `buf` read but not yet fed to the decoder.
    pending: std::ops::Range<usize>,
}

/// A byte stream to a node: a serial port or a serial line served over TCP.
pub trait Port: Read + Write + Send {}
impl<T: Read + Write + Send> Port for T {}

/// Opens the node's link: a serial device (8N1 at `baud`) or `HOST:PORT` over TCP (ser2net,
/// QEMU's `-serial tcp:`), with a read timeout after which [`Event::Idle`] is reported.
pub fn connect(
    input: &crate::config::NodeInput,
    timeout: Duration,
) -> Result<SerialSource<Box<dyn Port>>, SerialError> {
    use crate::config::NodeInput;
    match input {
        NodeInput::Serial { path, baud } => {
            let port = serialport::new(path, *baud)
                .timeout(timeout)
                .open()
                .map_err(|source| SerialError::Open {
                    path: path.clone(),
                    source,
                })?;
            Ok(SerialSource::new(Box::new(port) as Box<dyn Port>))
        }
        NodeInput::Tcp(addr) => {
            let open = |e: io::Error| SerialError::Connect {
                addr: addr.clone(),
                source: e,
            };
            let target = std::net::ToSocketAddrs::to_socket_addrs(addr.as_str())
                .map_err(open)?
                .next()
                .ok_or_else(|| open(io::Error::other("the name resolves to no address")))?;
            let stream = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(5))
                .map_err(open)?;
            stream.set_read_timeout(Some(timeout)).map_err(open)?;
            stream.set_nodelay(true).map_err(open)?;
            Ok(SerialSource::new(Box::new(stream) as Box<dyn Port>))
        }
    }
}

impl SerialSource<Box<dyn serialport::SerialPort>> {
    /// Opens a serial device (8N1, no flow control) with a read timeout after which
    /// [`Event::Idle`] is reported.
    pub fn open(path: &str, baud: u32, timeout: Duration) -> Result<Self, SerialError> {
        let port = serialport::new(path, baud)
            .timeout(timeout)
            .open()
            .map_err(|source| SerialError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self::new(port))
    }
}

impl<R: Read> SerialSource<R> {
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            decoder: Decoder::new(),
            buf: Box::new([0; 1024]),
            pending: 0..0,
        }
    }

    /// Drops and counts of the decoder so far.
    pub fn stats(&self) -> Stats {
        self.decoder.stats()
    }

    /// The next decoded frame, or why there is none right now.
    pub fn next_event(&mut self) -> Result<Event, SerialError> {
        loop {
            for i in self.pending.by_ref() {
                match self.decoder.push(self.buf[i]) {
                    Some(Ok(frame)) => return Ok(Event::Frame(Box::new(frame))),
                    Some(Err(e)) => {
                        let s = self.decoder.stats();
                        tracing::debug!(
                            "serial: dropped a frame ({e:?}); {} frames, {} bytes dropped so far",
                            s.dropped,
                            s.dropped_bytes
                        );
                    }
                    None => {}
                }
            }
            match self.reader.read(&mut self.buf[..]) {
                Ok(0) => {
                    tracing::info!("serial: the node closed the stream");
                    return Ok(Event::Closed);
                }
                Ok(n) => self.pending = 0..n,
                Err(e) => match e.kind() {
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => return Ok(Event::Idle),
                    io::ErrorKind::Interrupted => {}
                    // A pty whose master closed, or a USB adapter unplugged: serialport
                    // reports the hang-up as a broken pipe, a plain read as EIO.
                    io::ErrorKind::BrokenPipe => return Ok(Event::Closed),
                    _ if e.raw_os_error() == Some(EIO) => return Ok(Event::Closed),
                    _ => return Err(e.into()),
                },
            }
        }
    }
}

impl<R: Read + Write> SerialSource<R> {
    /// Sends a frame to the node (the agent's [`HelloAck`]).
    pub fn send(&mut self, frame: &Frame) -> Result<(), SerialError> {
        let mut buf = [0u8; MAX_WIRE];
        let bytes = encode_frame(frame, &mut buf)
            .map_err(|e| SerialError::Write(io::Error::other(format!("{e:?}"))))?;
        self.reader.write_all(bytes).map_err(SerialError::Write)?;
        self.reader.flush().map_err(SerialError::Write)
    }
}

const EIO: i32 = 5;

/// The agent's answer to a node's hello: the highest version both speak, and whether the
/// node is accepted (it must speak at least the version this agent was built with).
pub fn answer_hello(node_protocol: u8) -> HelloAck {
    HelloAck {
        protocol: node_protocol.min(node_link::VERSION),
        accepted: node_protocol >= node_link::VERSION,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use node_link::{Environment, MAX_WIRE, Message, encode_frame};

    fn frame(counter: u32) -> Frame {
        Frame {
            counter,
            message: Message::Environment(Environment {
                temperature_centi_c: counter as i32,
                humidity_milli_pct: None,
                pressure_pa: Some(100_000),
            }),
        }
    }

    /// A reader that hands out its bytes in fixed slices, then reports timeouts or EOF.
    struct Chunks {
        data: Vec<u8>,
        at: usize,
        chunk: usize,
        then: io::ErrorKind,
    }

    impl Read for Chunks {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.at == self.data.len() {
                return match self.then {
                    io::ErrorKind::UnexpectedEof => Ok(0),
                    kind => Err(kind.into()),
                };
            }
            let n = self.chunk.min(out.len()).min(self.data.len() - self.at);
            out[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn wire(frames: &[Frame]) -> Vec<u8> {
        let mut buf = [0u8; MAX_WIRE];
        frames
            .iter()
            .flat_map(|f| encode_frame(f, &mut buf).unwrap().to_vec())
            .collect()
    }

    #[test]
    fn frames_then_idle_then_closed() {
        for (chunk, then, last) in [
            (1, io::ErrorKind::TimedOut, Event::Idle),
            (7, io::ErrorKind::WouldBlock, Event::Idle),
            (4096, io::ErrorKind::UnexpectedEof, Event::Closed),
        ] {
            let frames: Vec<_> = (0..5).map(frame).collect();
            let mut data = b"line noise".to_vec();
            data.push(0);
            data.extend(wire(&frames));
            let mut source = SerialSource::new(Chunks {
                data,
                at: 0,
                chunk,
                then,
            });
            for f in &frames {
                assert_eq!(
                    source.next_event().unwrap(),
                    Event::Frame(Box::new(f.clone())),
                    "chunk {chunk}"
                );
            }
            assert_eq!(source.next_event().unwrap(), last);
            assert_eq!(source.stats().dropped, 1);
            assert_eq!(source.stats().dropped_bytes, 10);
        }
    }

    #[test]
    fn other_read_errors_are_reported() {
        let mut source = SerialSource::new(Chunks {
            data: vec![],
            at: 0,
            chunk: 1,
            then: io::ErrorKind::PermissionDenied,
        });
        assert!(matches!(source.next_event(), Err(SerialError::Read(_))));
    }

    #[test]
    fn hello_answers() {
        let v = node_link::VERSION;
        assert_eq!(
            answer_hello(v),
            HelloAck {
                protocol: v,
                accepted: true
            }
        );
        assert_eq!(
            answer_hello(v + 1),
            HelloAck {
                protocol: v,
                accepted: true
            }
        );
        assert_eq!(
            answer_hello(0),
            HelloAck {
                protocol: 0,
                accepted: false
            }
        );
    }

    #[test]
    fn missing_device_is_an_open_error() {
        let err = SerialSource::open("/nonexistent/tty", 115_200, Duration::from_millis(10))
            .err()
            .expect("no such device");
        assert!(err.to_string().contains("/nonexistent/tty"), "{err}");
    }
}
