//! Board files: the committed ones validate, and a table of broken ones fails with an
//! error that names the field.

use std::path::Path;

use boards::{Board, Error, Kind, Qemu};

#[test]
fn committed_board_files_validate() {
    let all = Board::all(&boards::boards_dir()).unwrap();
    let names: Vec<_> = all.iter().map(|b| b.name.as_str()).collect();
    for expected in [
        "beaglebone-black",
        "lm3s6965evb",
        "nucleo-f411re",
        "raspberry-pi-2",
        "raspberry-pi-4",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let qemu = Board::find(&boards::boards_dir(), "lm3s6965evb").unwrap();
    assert_eq!(qemu.kind, Kind::Mcu);
    assert!(matches!(&qemu.qemu, Some(Qemu::System { machine, .. }) if machine == "lm3s6965evb"));
    assert_eq!(qemu.frame_bus().and_then(|b| b.base), Some(0x4000_C000));
    assert!(qemu.has("uart_pl011"));
    let nucleo = Board::find(&boards::boards_dir(), "nucleo-f411re").unwrap();
    let pins = &nucleo.bus("i2c1").unwrap().pins;
    assert_eq!(
        pins[0],
        boards::Pin {
            port: 'B',
            number: 8,
            alternate: Some(4)
        }
    );
}

#[test]
fn unknown_board_lists_the_known_ones() {
    let err = Board::find(&boards::boards_dir(), "nope").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Unknown { .. }));
    assert!(msg.contains("lm3s6965evb"), "{msg}");
    assert!(Board::find(&boards::boards_dir(), "../Cargo").is_err());
}

const MCU: &str = r#"
name = "x"
kind = "mcu"
target = "thumbv7m-none-eabi"
chip = "C"
cpu_hz = 1
[memory]
flash = { origin = 0, length = 0x1000 }
ram = { origin = 0x2000_0000, length = 0x1000 }
[[buses]]
name = "i2c0"
kind = "i2c"
base = 0x4000_0000
"#;

/// (what is broken, text to append to or replace in a valid file, field the error names)
const BAD: &[(&str, &str, &str)] = &[
    (
        "unknown top-level key",
        "colour = \"red\"\n[memory]",
        "colour",
    ),
    (
        "linux target on mcu",
        "target = \"thumbv7m-none-eabi\"=>target = \"aarch64-unknown-linux-gnu\"",
        "target",
    ),
    ("bad kind", "kind = \"mcu\"=>kind = \"fpga\"", "kind"),
    (
        "zero-length flash",
        "length = 0x1000 }\nram=>length = 0 }\nram",
        "memory.flash.length",
    ),
    (
        "overlapping regions",
        "origin = 0x2000_0000=>origin = 0x800",
        "memory",
    ),
    (
        "sensor on missing bus",
        "\n[[sensors]]\nkind = \"bme280\"\nbus = \"i2c9\"\naddress = 0x76\n",
        "sensors[0].bus",
    ),
    (
        "i2c sensor without address",
        "\n[[sensors]]\nkind = \"bme280\"\nbus = \"i2c0\"\n",
        "sensors[0].address",
    ),
    (
        "10-bit address",
        "\n[[sensors]]\nkind = \"bme280\"\nbus = \"i2c0\"\naddress = 0x176\n",
        "sensors[0].address",
    ),
    (
        "uppercase capability",
        "cpu_hz = 1=>cpu_hz = 1\ncapabilities = [\"Uart\"]",
        "capabilities[0]",
    ),
    (
        "repeated capability",
        "cpu_hz = 1=>cpu_hz = 1\ncapabilities = [\"a\", \"a\"]",
        "capabilities[1]",
    ),
    (
        "mcu bus without base",
        "base = 0x4000_0000=>speed_hz = 1",
        "buses[0].base",
    ),
    (
        "frames on an i2c bus",
        "base = 0x4000_0000=>base = 0x4000_0000\nframes = true",
        "buses[0].frames",
    ),
    (
        "unknown bus key",
        "base = 0x4000_0000=>base = 0x4000_0000\nirq = 3",
        "irq",
    ),
    (
        "install on an mcu",
        "\n[install]\nbinary = \"/b\"\nconfig_dir = \"/c\"\ndata_dir = \"/d\"\nreleases_dir = \"/r\"\nservice_user = \"u\"\nservice_manager = \"systemd\"\n",
        "install",
    ),
    ("no chip and no qemu", "chip = \"C\"=>", "chip"),
    (
        "vm on an mcu",
        "\n[vm]\nsystem = \"qemu-system-arm\"\nmachine = \"virt\"\ncpu = \"cortex-a7\"\nmemory_mib = 512\ndebian_arch = \"armhf\"\nkernel_package = \"linux-image-armmp\"\nconsole = \"ttyAMA0\"\n",
        "vm",
    ),
    (
        "qemu user mode on an mcu",
        "\n[qemu]\nuser = \"qemu-arm\"\ncpu = \"c\"\n",
        "qemu",
    ),
];

#[test]
fn broken_board_files_name_the_field() {
    for (what, edit, field) in BAD {
        let text = match edit.split_once("=>") {
            Some((from, to)) => {
                assert!(MCU.contains(from), "{what}: `{from}` not in the base file");
                MCU.replacen(from, to, 1)
            }
            None if edit.contains("[memory]") => MCU.replacen("[memory]", edit, 1),
            None => format!("{MCU}{edit}"),
        };
        let err = Board::parse(Path::new("boards/x.toml"), &text)
            .expect_err(what)
            .to_string();
        assert!(err.starts_with("boards/x.toml"), "{what}: {err}");
        assert!(err.contains(field), "{what}: `{field}` not named in: {err}");
    }
    Board::parse(Path::new("x.toml"), MCU).expect("the base file is valid");
}

#[test]
fn name_must_match_file_name() {
    let dir = std::env::temp_dir().join(format!("boards-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("y.toml");
    std::fs::write(&path, MCU).unwrap();
    let err = Board::load(&path).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(err.contains("`name`") && err.contains("`y`"), "{err}");
}
