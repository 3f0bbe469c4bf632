//! Board files (`boards/*.toml`): the schema, its validation, and lookup by name. It must
//! never let code branch on a board's name: what differs between boards is data here.
//!
//! A board file is parsed into raw structs (`deny_unknown_fields`) and validated once into
//! a [`Board`]; every error names the file and the field. Code that builds or runs
//! firmware reads capabilities and addresses from a [`Board`], never a board's name.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod raw;

/// A board file could not be read, parsed or validated.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {source}")]
    Parse {
        file: PathBuf,
        source: toml::de::Error,
    },
    #[error("{file}: field `{field}`: {message}")]
    Invalid {
        file: PathBuf,
        field: String,
        message: String,
    },
    #[error("no board named `{name}` in {dir} (known: {known})")]
    Unknown {
        name: String,
        dir: PathBuf,
        known: String,
    },
}

/// What runs on the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A Linux computer that runs the agent.
    Linux,
    /// A microcontroller that runs the node firmware.
    Mcu,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Linux => "linux",
            Kind::Mcu => "mcu",
        })
    }
}

/// A memory region of a microcontroller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub origin: u64,
    pub length: u64,
}

impl Region {
    pub fn end(&self) -> u64 {
        self.origin + self.length
    }

    pub fn contains(&self, address: u64) -> bool {
        address >= self.origin && address < self.end()
    }
}

/// Flash and RAM of a microcontroller, for the linker script and for size reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub flash: Region,
    pub ram: Region,
}

/// How a board runs under QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Qemu {
    /// Whole-system emulation (`qemu-system-arm -machine .. -cpu ..`).
    System {
        machine: String,
        cpu: String,
        /// The node app exits (through semihosting) after this many cycles; none: runs on.
        exit_after_cycles: Option<u32>,
    },
    /// User-mode emulation of a Linux binary (`qemu-aarch64 -cpu ..`).
    User { binary: String, cpu: String },
}

/// Full-system emulation of a Linux board: `<system> -M <machine> -cpu <cpu> -m <memory>`,
/// booting Debian's kernel package for `debian_arch` with an initramfs holding the agent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    pub system: String,
    pub machine: String,
    pub cpu: String,
    pub memory_mib: u32,
    /// Debian's name of the architecture (`arm64`, `armhf`).
    pub debian_arch: String,
    /// Debian package whose kernel is booted (a metapackage is followed to its image).
    pub kernel_package: String,
    /// The serial console the kernel writes to (`ttyAMA0` on `virt`).
    pub console: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    I2c,
    Uart,
    Spi,
    Adc,
    I2s,
    /// A bus simulated inside the firmware (emulated boards): sensors on it are models.
    Simulated,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bus {
    pub name: String,
    pub kind: BusKind,
    /// Peripheral base address (MCU).
    pub base: Option<u64>,
    /// Device node (Linux), e.g. `/dev/i2c-1`.
    pub device: Option<String>,
    /// Baud rate (UART) or clock (I2C, SPI) in Hz.
    pub speed_hz: Option<u32>,
    /// Pins in the order the peripheral's driver expects them: `PA2`, or `PA2/AF7` with
    /// the alternate function that connects the pin to the peripheral.
    pub pins: Vec<Pin>,
    /// The node sends its frames on this bus (one UART at most).
    pub frames: bool,
}

/// A GPIO pin: port letter, number, and the alternate function that routes it to its bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    pub port: char,
    pub number: u8,
    pub alternate: Option<u8>,
}

impl Pin {
    /// Parses `PA2` or `PA2/AF7`.
    pub fn parse(text: &str) -> Option<Pin> {
        let (pin, af) = match text.split_once('/') {
            Some((pin, af)) => (pin, Some(af.strip_prefix("AF")?.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let mut chars = pin.chars();
        let (Some('P'), Some(port)) = (chars.next(), chars.next()) else {
            return None;
        };
        let number: u8 = chars.as_str().parse().ok()?;
        let valid = port.is_ascii_uppercase() && number < 16 && af.is_none_or(|a| a < 16);
        valid.then_some(Pin {
            port,
            number,
            alternate: af,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sensor {
    /// Driver name, e.g. `bme280`, `microphone`.
    pub kind: String,
    /// Name of the bus in [`Board::buses`].
    pub bus: String,
    /// Bus address (I2C) or channel (ADC).
    pub address: Option<u16>,
}

/// Where the agent is installed on a Linux board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    /// Where the running release's agent is linked from (`binary -> releases_dir/current/..`).
    pub binary: PathBuf,
    /// The device key (generated on the device, never copied) and the hub's key.
    pub config_dir: PathBuf,
    /// The audit log: kept across releases.
    pub data_dir: PathBuf,
    /// One folder per installed release and the `current` link switched atomically.
    pub releases_dir: PathBuf,
    pub service_user: String,
    pub service_manager: ServiceManager,
}

/// What starts and supervises the agent on a Linux board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceManager {
    /// A systemd unit (`iat-edge-agent.service`), restarted on every switch.
    Systemd,
    /// Nothing supervises the agent (a board whose image starts it otherwise); an install
    /// only switches the release and runs the health check.
    None,
}

/// A validated board file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Board {
    pub name: String,
    pub description: String,
    pub kind: Kind,
    /// Rust target triple.
    pub target: String,
    /// probe-rs chip name, for boards that are flashed through a probe.
    pub chip: Option<String>,
    /// Core clock after reset, in Hz (MCU).
    pub cpu_hz: Option<u32>,
    pub memory: Option<Memory>,
    pub qemu: Option<Qemu>,
    /// Linux boards: the board's OS emulated whole (kernel, init, network) for smoke tests.
    pub vm: Option<Vm>,
    pub buses: Vec<Bus>,
    pub sensors: Vec<Sensor>,
    pub capabilities: BTreeSet<String>,
    /// Cargo features of the firmware crate that this board needs (its HAL, log transport).
    pub firmware_features: Vec<String>,
    pub install: Option<Install>,
}

impl Board {
    /// Reads and validates one board file; its `name` must match the file's stem.
    pub fn load(path: &Path) -> Result<Board, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            file: path.to_owned(),
            source,
        })?;
        let board = Board::parse(path, &text)?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if board.name != stem {
            return Err(Error::Invalid {
                file: path.to_owned(),
                field: "name".into(),
                message: format!("`{}` differs from the file name `{stem}`", board.name),
            });
        }
        Ok(board)
    }

    /// Parses and validates board-file text; `file` only labels errors.
    pub fn parse(file: &Path, text: &str) -> Result<Board, Error> {
        let raw: raw::RawBoard = toml::from_str(text).map_err(|source| Error::Parse {
            file: file.to_owned(),
            source,
        })?;
        raw.validate().map_err(|(field, message)| Error::Invalid {
            file: file.to_owned(),
            field,
            message,
        })
    }

    /// Loads `dir/<name>.toml`.
    pub fn find(dir: &Path, name: &str) -> Result<Board, Error> {
        let path = dir.join(format!("{name}.toml"));
        if !name.is_empty() && !name.contains(['/', '\\', '.']) && path.is_file() {
            return Board::load(&path);
        }
        let known = board_files(dir)?
            .iter()
            .filter_map(|p| p.file_stem()?.to_str().map(str::to_owned))
            .collect::<Vec<_>>()
            .join(", ");
        Err(Error::Unknown {
            name: name.into(),
            dir: dir.to_owned(),
            known,
        })
    }

    /// Loads every board file in `dir`.
    pub fn all(dir: &Path) -> Result<Vec<Board>, Error> {
        board_files(dir)?.iter().map(|p| Board::load(p)).collect()
    }

    pub fn has(&self, capability: &str) -> bool {
        self.capabilities.contains(capability)
    }

    pub fn bus(&self, name: &str) -> Option<&Bus> {
        self.buses.iter().find(|b| b.name == name)
    }

    /// The UART the node sends its frames on.
    pub fn frame_bus(&self) -> Option<&Bus> {
        self.buses.iter().find(|b| b.frames)
    }
}

/// The board files in `dir`: every `*.toml` but the crate's own `Cargo.toml`.
pub fn board_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let io = |source| Error::Io {
        file: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let is_toml = path.extension().is_some_and(|e| e == "toml");
        if is_toml && path.file_name().is_some_and(|n| n != "Cargo.toml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The repository's board directory (this crate's folder).
pub fn boards_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
