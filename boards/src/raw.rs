//! The board file as written (`deny_unknown_fields`), and its validation into a [`Board`].

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Deserialize;

use crate::{
    Board, Bus, BusKind, Install, Kind, Memory, Pin, Qemu, Region, Sensor, ServiceManager, Vm,
};

/// A validation failure: the field's path and what is wrong with it.
type Invalid = (String, String);

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    (field.into(), message.into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBoard {
    name: String,
    #[serde(default)]
    description: String,
    kind: Kind,
    target: String,
    chip: Option<String>,
    cpu_hz: Option<u32>,
    memory: Option<RawMemory>,
    qemu: Option<RawQemu>,
    vm: Option<Vm>,
    #[serde(default)]
    buses: Vec<RawBus>,
    #[serde(default)]
    sensors: Vec<RawSensor>,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    firmware_features: Vec<String>,
    install: Option<RawInstall>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMemory {
    flash: RawRegion,
    ram: RawRegion,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    origin: u64,
    length: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQemu {
    machine: Option<String>,
    user: Option<String>,
    cpu: String,
    exit_after_cycles: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBus {
    name: String,
    kind: BusKind,
    base: Option<u64>,
    device: Option<String>,
    speed_hz: Option<u32>,
    #[serde(default)]
    pins: Vec<String>,
    #[serde(default)]
    frames: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSensor {
    kind: String,
    bus: String,
    address: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstall {
    binary: PathBuf,
    config_dir: PathBuf,
    data_dir: PathBuf,
    releases_dir: PathBuf,
    service_user: String,
    service_manager: ServiceManager,
}

/// Names that become identifiers (cfgs, features, constants): lowercase, digits, `_`, `-`.
fn check_ident(field: &str, value: &str) -> Result<(), Invalid> {
    let ok = !value.is_empty()
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("`{value}` must be lowercase letters, digits, `_` or `-`"),
        ))
    }
}

fn check_region(field: &str, r: &RawRegion) -> Result<Region, Invalid> {
    if r.length == 0 {
        return Err(invalid(format!("{field}.length"), "must not be zero"));
    }
    if r.origin
        .checked_add(r.length)
        .is_none_or(|end| end > 1 << 32)
    {
        return Err(invalid(field, "region ends past the 32-bit address space"));
    }
    Ok(Region {
        origin: r.origin,
        length: r.length,
    })
}

impl RawBoard {
    pub(crate) fn validate(self) -> Result<Board, Invalid> {
        check_ident("name", &self.name)?;
        let for_kind = |ok: bool, field: &str, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(invalid(field, format!("{what} on a `{}` board", self.kind)))
            }
        };
        match self.kind {
            Kind::Mcu => {
                for_kind(
                    self.target.starts_with("thumb"),
                    "target",
                    "needs a thumb* target",
                )?;
                for_kind(self.memory.is_some(), "memory", "is required")?;
                for_kind(self.cpu_hz.is_some(), "cpu_hz", "is required")?;
                for_kind(self.install.is_none(), "install", "is not allowed")?;
                for_kind(self.vm.is_none(), "vm", "is not allowed")?;
                for_kind(
                    self.chip.is_some() || self.qemu.is_some(),
                    "chip",
                    "is required unless the board is emulated (`qemu`)",
                )?;
            }
            Kind::Linux => {
                for_kind(
                    self.target.contains("-linux-"),
                    "target",
                    "needs a *-linux-* target",
                )?;
                for_kind(self.install.is_some(), "install", "is required")?;
                for_kind(self.memory.is_none(), "memory", "is not allowed")?;
                for_kind(self.chip.is_none(), "chip", "is not allowed")?;
                for_kind(
                    self.firmware_features.is_empty(),
                    "firmware_features",
                    "is not allowed",
                )?;
            }
        }

        if let Some(vm) = &self.vm {
            if vm.memory_mib < 256 {
                return Err(invalid("vm.memory_mib", "must be at least 256"));
            }
            for (field, v) in [
                ("vm.system", &vm.system),
                ("vm.machine", &vm.machine),
                ("vm.cpu", &vm.cpu),
                ("vm.debian_arch", &vm.debian_arch),
                ("vm.kernel_package", &vm.kernel_package),
            ] {
                check_ident(field, v)?;
            }
            if vm.console.is_empty() || !vm.console.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(invalid(
                    "vm.console",
                    "must be a device name such as `ttyAMA0`",
                ));
            }
        }
        let memory = match &self.memory {
            None => None,
            Some(m) => {
                let flash = check_region("memory.flash", &m.flash)?;
                let ram = check_region("memory.ram", &m.ram)?;
                if flash.origin < ram.end() && ram.origin < flash.end() {
                    return Err(invalid("memory", "flash and ram overlap"));
                }
                Some(Memory { flash, ram })
            }
        };

        let qemu = match self.qemu {
            None => None,
            Some(q) => Some(match (self.kind, q.machine, q.user) {
                (Kind::Mcu, Some(machine), None) => Qemu::System {
                    machine,
                    cpu: q.cpu,
                    exit_after_cycles: q.exit_after_cycles,
                },
                (Kind::Linux, None, Some(binary)) if q.exit_after_cycles.is_none() => {
                    Qemu::User { binary, cpu: q.cpu }
                }
                (Kind::Mcu, ..) => {
                    return Err(invalid(
                        "qemu",
                        "an mcu board needs `machine` (and no `user`)",
                    ));
                }
                (Kind::Linux, ..) => {
                    return Err(invalid(
                        "qemu",
                        "a linux board needs `user` (and no `machine` or `exit_after_cycles`)",
                    ));
                }
            }),
        };

        let mut buses: Vec<Bus> = Vec::new();
        for (i, b) in self.buses.into_iter().enumerate() {
            let field = format!("buses[{i}]");
            check_ident(&format!("{field}.name"), &b.name)?;
            if buses.iter().any(|other| other.name == b.name) {
                return Err(invalid(
                    format!("{field}.name"),
                    format!("`{}` is declared twice", b.name),
                ));
            }
            if b.frames && b.kind != BusKind::Uart {
                return Err(invalid(
                    format!("{field}.frames"),
                    "only a uart can carry frames",
                ));
            }
            match self.kind {
                Kind::Mcu if b.kind != BusKind::Simulated && b.base.is_none() => {
                    return Err(invalid(
                        format!("{field}.base"),
                        "is required on an mcu board",
                    ));
                }
                Kind::Linux if b.device.is_none() => {
                    return Err(invalid(
                        format!("{field}.device"),
                        "is required on a linux board",
                    ));
                }
                _ => {}
            }
            let mut pins = Vec::new();
            for (j, p) in b.pins.iter().enumerate() {
                let pin = Pin::parse(p).ok_or_else(|| {
                    invalid(
                        format!("{field}.pins[{j}]"),
                        format!("`{p}` is not a pin like `PA2` or `PA2/AF7`"),
                    )
                })?;
                pins.push(pin);
            }
            buses.push(Bus {
                name: b.name,
                kind: b.kind,
                base: b.base,
                device: b.device,
                speed_hz: b.speed_hz,
                pins,
                frames: b.frames,
            });
        }
        if buses.iter().filter(|b| b.frames).count() > 1 {
            return Err(invalid("buses", "only one bus may carry frames"));
        }

        let mut sensors = Vec::new();
        for (i, s) in self.sensors.into_iter().enumerate() {
            let field = format!("sensors[{i}]");
            check_ident(&format!("{field}.kind"), &s.kind)?;
            let Some(bus) = buses.iter().find(|b| b.name == s.bus) else {
                return Err(invalid(
                    format!("{field}.bus"),
                    format!("no bus named `{}`", s.bus),
                ));
            };
            match (bus.kind, s.address) {
                (BusKind::I2c, None) => {
                    return Err(invalid(
                        format!("{field}.address"),
                        "is required on an i2c bus",
                    ));
                }
                (BusKind::I2c, Some(a)) if a > 0x7F => {
                    return Err(invalid(
                        format!("{field}.address"),
                        "is not a 7-bit i2c address",
                    ));
                }
                _ => {}
            }
            sensors.push(Sensor {
                kind: s.kind,
                bus: s.bus,
                address: s.address,
            });
        }

        let mut capabilities = BTreeSet::new();
        for (i, c) in self.capabilities.into_iter().enumerate() {
            check_ident(&format!("capabilities[{i}]"), &c)?;
            if !capabilities.insert(c.clone()) {
                return Err(invalid(
                    format!("capabilities[{i}]"),
                    format!("`{c}` is listed twice"),
                ));
            }
        }
        for (i, f) in self.firmware_features.iter().enumerate() {
            check_ident(&format!("firmware_features[{i}]"), f)?;
        }

        let install = self.install.map(|i| Install {
            binary: i.binary,
            config_dir: i.config_dir,
            data_dir: i.data_dir,
            releases_dir: i.releases_dir,
            service_user: i.service_user,
            service_manager: i.service_manager,
        });
        if let Some(i) = &install {
            for (field, path) in [
                ("install.binary", &i.binary),
                ("install.config_dir", &i.config_dir),
                ("install.data_dir", &i.data_dir),
                ("install.releases_dir", &i.releases_dir),
            ] {
                if !path.is_absolute() {
                    return Err(invalid(field, "must be an absolute path"));
                }
            }
        }

        Ok(Board {
            name: self.name,
            description: self.description,
            kind: self.kind,
            target: self.target,
            chip: self.chip,
            cpu_hz: self.cpu_hz,
            memory,
            qemu,
            vm: self.vm,
            buses,
            sensors,
            capabilities,
            firmware_features: self.firmware_features,
            install,
        })
    }
}
