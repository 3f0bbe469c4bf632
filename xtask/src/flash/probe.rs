//! Writing the node firmware of an MCU board through a debug probe with the probe-rs library.
//! Before anything is written, the firmware ELF's loadable segments are checked against the
//! board file's regions *and* the probe-rs chip's memory map, and the download is planned
//! (flash algorithm, sectors to erase, pages to program). `--dry-run` stops there (and lets
//! probe-rs plan the same download against its fake probe); without it, the firmware is
//! written with a progress bar and read back to verify it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail, ensure};
use boards::{Board, Region};
use object::{Object, ObjectSegment};
use probe_rs::config::{MemoryRegion, NvmRegion, Registry, Target};
use probe_rs::flashing::{DownloadOptions, FlashLoader, FlashProgress, ProgressEvent};
use probe_rs::probe::list::Lister;
use probe_rs::probe::{Probe, fake_probe::FakeProbe};
use probe_rs::{Permissions, Session};

use super::FlashArgs;

pub fn run(args: &FlashArgs, board: &Board) -> Result<ExitCode> {
    ensure!(
        args.host.is_none() && args.agent.is_none() && args.root.is_none(),
        "board `{}` is an MCU board, flashed through a debug probe: --host, --agent and --root \
         are for Linux boards",
        board.name
    );
    let chip = board.chip.as_deref().with_context(|| {
        format!(
            "board `{}` names no probe-rs `chip` in its file: it cannot be flashed through a probe",
            board.name
        )
    })?;
    let elf = match &args.elf {
        Some(elf) => elf.clone(),
        None => {
            crate::build::firmware::build(board, crate::build::firmware::What::Node, true)?
                .remove(0)
                .1
        }
    };
    let target = Registry::from_builtin_families()
        .get_target_by_name(chip)
        .with_context(|| {
            format!(
                "probe-rs does not know chip `{chip}` (board `{}`)",
                board.name
            )
        })?;
    let segments = segments(&elf)?;
    let plan = plan(board, &target, &segments)?;
    println!("{}", plan.describe(board, &target, &elf));

    let mut loader = target.flash_loader();
    for s in &segments {
        // probe-rs checks each chunk against its own memory map too.
        loader
            .add_data(s.address, &s.data)
            .with_context(|| format!("segment at {:#010x} (probe-rs)", s.address))?;
    }

    if args.dry_run {
        match fake_session(&target) {
            Ok(mut session) => {
                let mut options = DownloadOptions::default();
                options.dry_run = true;
                loader
                    .commit(&mut session, options)
                    .context("probe-rs could not plan the download")?;
                println!(
                    "probe-rs planned the download against its fake probe: nothing written (dry run)"
                );
            }
            Err(e) => println!(
                "probe-rs's fake probe cannot attach to {chip} ({e:#}); the plan above is xtask's \
                 own: nothing written (dry run)"
            ),
        }
        return Ok(ExitCode::SUCCESS);
    }

    let probes = Lister::new().list_all();
    let Some(info) = probes.first() else {
        bail!(
            "no debug probe found (probes seen: none). Connect the board's debug probe (on \
             development boards, the on-board one's USB port), check `lsusb` and the udev rules for non-root access \
             (https://probe.rs/docs/getting-started/probe-setup/), or run with --dry-run to \
             check and plan without a probe"
        );
    };
    if probes.len() > 1 {
        let all: Vec<_> = probes.iter().map(|p| p.to_string()).collect();
        bail!(
            "{} probes found ({}); unplug all but the board's",
            probes.len(),
            all.join("; ")
        );
    }
    println!("probe: {info}");
    let probe = info.open().context("opening the probe")?;
    let mut session = probe
        .attach(target.clone(), Permissions::default())
        .with_context(|| format!("attaching to {chip}"))?;
    write(&mut session, &loader, plan.bytes)?;
    println!(
        "{}: {} B written and verified; reset the board to run it",
        board.name, plan.bytes
    );
    Ok(ExitCode::SUCCESS)
}

/// A session on probe-rs's fake probe with a mocked core: enough for it to plan a download.
fn fake_session(target: &Target) -> Result<Session> {
    let probe = Probe::from_specific_probe(Box::new(FakeProbe::with_mocked_core()));
    Ok(probe.attach(target.clone(), Permissions::default())?)
}

/// Erase, program and verify, with one progress bar per operation.
fn write(session: &mut Session, loader: &FlashLoader, bytes: u64) -> Result<()> {
    use indicatif::{ProgressBar, ProgressStyle};
    let style = ProgressStyle::with_template("{msg:>9} [{bar:40}] {bytes}/{total_bytes}")
        .expect("static template")
        .progress_chars("=> ");
    let mut bar: Option<ProgressBar> = None;
    let progress = FlashProgress::new(move |event| match event {
        ProgressEvent::AddProgressBar { operation, total } => {
            let b = ProgressBar::new(total.unwrap_or(bytes)).with_style(style.clone());
            b.set_message(format!("{operation:?}"));
            if let Some(old) = bar.replace(b) {
                old.finish();
            }
        }
        ProgressEvent::Progress { size, .. } => {
            if let Some(b) = &bar {
                b.inc(size);
            }
        }
        ProgressEvent::Finished(_) | ProgressEvent::Failed(_) => {
            if let Some(b) = &bar {
                b.finish();
            }
        }
        _ => {}
    });
    let mut options = DownloadOptions::default();
    options.progress = progress;
    options.verify = true;
    loader
        .commit(session, options)
        .context("writing the firmware")?;
    Ok(())
}

/// A loadable segment of the ELF, at its load (physical) address.
pub struct Segment {
    pub address: u64,
    pub data: Vec<u8>,
}

/// The PT_LOAD segments with bytes in the file, at their load addresses: what goes to flash.
pub fn segments(elf: &Path) -> Result<Vec<Segment>> {
    let bytes = std::fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
    let file =
        object::File::parse(&*bytes).with_context(|| format!("parsing {}", elf.display()))?;
    let mut out = Vec::new();
    for seg in file.segments() {
        let data = seg.data()?;
        if data.is_empty() {
            continue; // .bss and the like: nothing to write
        }
        let address = match &file {
            object::File::Elf32(f) => {
                use object::read::elf::ProgramHeader as _;
                let e = f.endian();
                // Find the program header of this segment to read its physical address.
                f.elf_program_headers()
                    .iter()
                    .find(|ph| u64::from(ph.p_vaddr(e)) == seg.address())
                    .map(|ph| u64::from(ph.p_paddr(e)))
                    .unwrap_or(seg.address())
            }
            _ => seg.address(),
        };
        out.push(Segment {
            address,
            data: data.to_vec(),
        });
    }
    ensure!(!out.is_empty(), "{} has no loadable bytes", elf.display());
    Ok(out)
}

/// What a download would do.
pub struct Plan {
    rows: Vec<String>,
    pub bytes: u64,
    pub sectors: usize,
    pub sector_bytes: u64,
    pub pages: u64,
    pub algorithm: String,
}

impl Plan {
    fn describe(&self, board: &Board, target: &Target, elf: &Path) -> String {
        let mut s = format!(
            "{}: chip {} (probe-rs), firmware {}\n",
            board.name,
            target.name,
            elf.display()
        );
        for row in &self.rows {
            s.push_str(row);
            s.push('\n');
        }
        s.push_str(&format!(
            "plan: erase {} sector(s) ({} B), program {} page(s), {} B, with algorithm {}, then \
             read back to verify",
            self.sectors, self.sector_bytes, self.pages, self.bytes, self.algorithm
        ));
        s
    }
}

/// Checks every segment against the board file's flash region and the chip's flash (NVM)
/// regions, and works out the sectors and pages the chip's flash algorithm would touch.
pub fn plan(board: &Board, target: &Target, segments: &[Segment]) -> Result<Plan> {
    let memory = board.memory.context("an mcu board file without [memory]")?;
    let nvm: Vec<&NvmRegion> = target
        .memory_map
        .iter()
        .filter_map(|r| match r {
            MemoryRegion::Nvm(n) if !n.is_alias => Some(n),
            _ => None,
        })
        .collect();
    let mut rows = Vec::new();
    let mut bytes = 0;
    let mut touched = std::collections::BTreeSet::new();
    let mut pages = std::collections::BTreeSet::new();
    let mut algorithm = None;
    for s in segments {
        let (start, len) = (s.address, s.data.len() as u64);
        let end = start + len;
        ensure!(
            within(&memory.flash, start, end),
            "segment {start:#010x}..{end:#010x} ({len} B) is outside the flash of board file `{}` \
             ({:#010x}..{:#010x})",
            board.name,
            memory.flash.origin,
            memory.flash.end()
        );
        let region = nvm
            .iter()
            .find(|n| n.range.start <= start && end <= n.range.end)
            .with_context(|| {
                format!(
                    "segment {start:#010x}..{end:#010x} is in no flash region of chip {}",
                    target.name
                )
            })?;
        let algo = target
            .flash_algorithms
            .iter()
            .filter(|a| {
                let r = &a.flash_properties.address_range;
                r.start <= start && end <= r.end
            })
            .max_by_key(|a| a.default)
            .with_context(|| {
                format!(
                    "chip {} has no flash algorithm for {start:#010x}",
                    target.name
                )
            })?;
        let props = &algo.flash_properties;
        let page = u64::from(props.page_size);
        pages.extend(start / page..end.div_ceil(page));
        let mut at = start;
        while at < end {
            let (sector, size) = sector_of(props, at)?;
            touched.insert((sector, size));
            at = sector + size;
        }
        algorithm = Some(algo.name.clone());
        let region_name = region.name.clone().unwrap_or_else(|| "flash".into());
        rows.push(format!(
            "  segment {start:#010x}..{end:#010x} {len:>7} B -> {region_name} \
             ({:#010x}..{:#010x}) of {}; board flash {:#010x}..{:#010x}: ok",
            region.range.start,
            region.range.end,
            target.name,
            memory.flash.origin,
            memory.flash.end()
        ));
        bytes += len;
    }
    let sector_bytes = touched.iter().map(|(_, size)| size).sum();
    Ok(Plan {
        rows,
        bytes,
        sectors: touched.len(),
        sector_bytes,
        pages: pages.len() as u64,
        algorithm: algorithm.unwrap_or_default(),
    })
}

/// The sector holding `address`: its start and size, from the algorithm's sector table.
fn sector_of(props: &probe_rs::config::FlashProperties, address: u64) -> Result<(u64, u64)> {
    let offset = address - props.address_range.start;
    let desc = props
        .sectors
        .iter()
        .rev()
        .find(|d| d.address <= offset)
        .context("a flash algorithm without a sector table")?;
    ensure!(desc.size > 0, "a flash sector of size 0");
    let start =
        props.address_range.start + desc.address + (offset - desc.address) / desc.size * desc.size;
    Ok((start, desc.size))
}

fn within(region: &Region, start: u64, end: u64) -> bool {
    region.origin <= start && end <= region.end()
}
