//! The ARMv7-A slice of the binary: boot in HYP mode, the HYP MMU, the
//! board's device tree, frames and heap, the secondary CPUs (PSCI CPU_ON;
//! they park), a summary, then PSCI SYSTEM_OFF. It runs no VM yet.
//!
//! Everything here is wiring over `chroma_arch::armv7`, `chroma-core`'s
//! page-table walker and frame pool, `chroma-devtree` and
//! `chroma-manifest`. What keeps the rest of `hypervisor/src` (VMs, the
//! scheduler, exits, the NIC) AArch64-only, and so what must move behind
//! arch seams before VMs run here:
//! - `mm.rs`: the EL2 map, its MAIR/TCR/SCTLR and cache calls: an arch
//!   `HypMmu` seam (this module's `mm` is the ARMv7 side of it);
//! - `platform_info.rs`: `GicKind`, `Conduit`, MAX_CPUS and the PA size
//!   come from `chroma_arch::aarch64`; PSCI `CPU_ON` must be the SMC32 ID
//!   on ARMv7 (`chroma-devtree` defaults to the SMC64 one; this slice uses
//!   `chroma_arch::armv7::psci::CPU_ON`);
//! - `sched.rs`, `vm.rs`, `exits.rs`: the vCPU context, guest entry and
//!   the trap decoding are AArch64's (ESR_EL2, VTTBR_EL2, HCR_EL2): an arch
//!   `Vcpu` seam (registers by number, the decoded exit, advance the PC,
//!   inject an abort or UNDEF, enter the guest), as STYLE.md §9 asks;
//! - `guest_mem.rs`: the cache maintenance back-end (`Aarch64CacheOps`);
//! - `vtimer.rs`, the GIC list registers: CNTHP/CNTV and GICH are the same
//!   hardware on ARMv7 but reached through CP15 and MMIO at HYP.

mod console;
mod mm;

use chroma_arch::armv7::{boot, psci, sysreg, vectors};
use chroma_devtree::{parse_board, EnableMethod, Gic, PsciConduit, UartKind};
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Prints one `chroma: ` line.
macro_rules! say {
    ($($argument:tt)*) => {
        console::line(format_args!("chroma: {}", format_args!($($argument)*)))
    };
}

/// The boot CPU's entry from `_start`: HYP mode, MMU off, r2's DTB in `dtb`.
#[no_mangle]
extern "C" fn chroma_primary_main(dtb: usize) -> ! {
    // SAFETY: called once, by the boot CPU in HYP mode, before anything else.
    unsafe { mm::early_mmu_on(dtb) };
    console::init();
    say!(
        "chroma {} starting in HYP mode on ARMv7-A (MPIDR {:#x}, dtb at {:#x})",
        env!("CARGO_PKG_VERSION"),
        sysreg::mpidr(),
        dtb
    );
    let dtb_bytes = device_tree(dtb);
    let board = match parse_board(dtb_bytes) {
        Ok(board) => board,
        Err(error) => fatal(format_args!("the board's device tree: {error}")),
    };
    let ram: alloc_free::Ranges = board
        .memory
        .as_slice()
        .iter()
        .map(|range| (range.base, range.base.saturating_add(range.size)))
        .collect();
    let mut devices = alloc_free::Ranges::default();
    if board.console.kind == UartKind::Pl011 {
        devices.push((board.console.mmio.base, board.console.mmio.size));
    }
    if let Gic::V2 {
        distributor,
        cpu_interface,
        ..
    } = board.gic
    {
        devices.push((distributor.base, distributor.size));
        devices.push((cpu_interface.base, cpu_interface.size));
    }
    let dtb_start = dtb as u64;
    let dtb_range = (dtb_start, dtb_start.saturating_add(dtb_bytes.len() as u64));
    let memory = match mm::init(ram.as_slice(), dtb_range, devices.as_slice()) {
        Ok(summary) => summary,
        Err(error) => fatal(format_args!("HYP memory: {error}")),
    };
    let image = memory.image;
    say!(
        "HYP MMU on: LPAE, 32-bit VA, W^X: text RX {:#x}..{:#x}, rodata R ..{:#x}, data RW XN ..{:#x} (checked with ATS1HR/ATS1HW); HSCTLR {:#x} HTCR {:#x} HTTBR {:#x}",
        image.start,
        image.text_end,
        image.rodata_end,
        image.end,
        sysreg::hsctlr(),
        sysreg::htcr(),
        sysreg::httbr()
    );
    say!(
        "memory: {} KiB of frames, heap {} KiB at {:#x}, HYP tables {} KiB (root {:#x})",
        memory.frame_bytes / 1024,
        memory.heap_bytes / 1024,
        memory.heap_base,
        memory.table_bytes / 1024,
        memory.httbr
    );
    report_board(&board);
    if bootargs(dtb_bytes)
        .is_some_and(|args| args.split_whitespace().any(|word| word == WRITE_TEXT_TEST))
    {
        write_to_text(image.start);
    }
    report_manifest();
    let (major, minor) = psci::version();
    say!("PSCI {major}.{minor} over SMC");
    start_secondaries(&board);
    say!("the ARMv7 back-end runs no VM yet");
    say!("all VMs stopped (0 clean, 0 failed)");
    psci::system_off()
}

/// The boot command-line word that makes chroma write to its own text once
/// the final map is on: a test of W^X and of the HYP exception report
/// (tests/tests/armv7.rs). `/chosen/bootargs` is the hypervisor's own command
/// line, set by whoever boots the board (QEMU: `-append`); no guest reaches it.
const WRITE_TEXT_TEST: &str = "chroma.test=hyp-write-text";

/// `/chosen/bootargs` of the board's device tree, if any.
fn bootargs(dtb: &[u8]) -> Option<&str> {
    fdt::Fdt::new(dtb)
        .ok()?
        .find_node("/chosen")?
        .property("bootargs")?
        .as_str()
}

/// Writes to the first word of the image's text, which the final map keeps
/// read-only: the HYP data abort is reported and the machine powers off.
fn write_to_text(text: u64) -> ! {
    say!("test: writing to the text page at {text:#x}; W^X must fault");
    if let Ok(address) = usize::try_from(text) {
        // SAFETY: this store is meant to fault (a permission fault on a
        // read-only page); the data abort vector reports it and powers off.
        // Were W^X broken, the word overwritten is the zImage header's first
        // NOP, which never runs again, and the fatal line below follows.
        unsafe { core::ptr::write_volatile(address as *mut u32, 0xe1a0_0000) };
    }
    fatal(format_args!(
        "the write to text at {text:#x} did not fault: W^X is not enforced"
    ))
}

/// CPUs that reached Rust with their HYP MMU on (the boot CPU included).
static CPUS_ONLINE: AtomicUsize = AtomicUsize::new(1);

/// How long the boot CPU waits for the secondaries (spins of a few cycles).
const SECONDARY_WAIT_SPINS: u32 = 50_000_000;

/// Starts every other CPU of the device tree with PSCI CPU_ON (SMC32) and
/// waits until each says it is online; they then park. A CPU that does not
/// start is reported, not fatal.
fn start_secondaries(board: &chroma_devtree::BoardInfo) {
    let own = sysreg::mpidr() & 0x00ff_ffff;
    let entry = u32::try_from(boot::secondary_entry_address()).unwrap_or(0);
    let mut started = 0usize;
    let secondaries = board
        .cpus
        .as_slice()
        .iter()
        .map(|cpu| cpu.mpidr)
        .filter(|mpidr| *mpidr != u64::from(own));
    for (index, mpidr) in (1..boot::MAX_CPUS).zip(secondaries) {
        let (Ok(target), Ok(context)) = (u32::try_from(mpidr), u32::try_from(index)) else {
            say!("CPU {mpidr:#x}: MPIDR beyond 32 bits, not started");
            continue;
        };
        match psci::cpu_on(target, entry, context) {
            0 => started += 1,
            status => say!("CPU {mpidr:#x}: PSCI CPU_ON failed ({status})"),
        }
    }
    let mut spins = 0u32;
    while CPUS_ONLINE.load(Ordering::Acquire) < started + 1 && spins < SECONDARY_WAIT_SPINS {
        core::hint::spin_loop();
        spins += 1;
    }
    say!(
        "{} of {} CPU(s) online in HYP mode with the HYP MMU on",
        CPUS_ONLINE.load(Ordering::Acquire),
        started + 1
    );
}

/// A secondary CPU's entry after PSCI CPU_ON: HYP mode, its stack, HVBAR and
/// the boot CPU's final map already loaded. It reports and parks.
#[no_mangle]
extern "C" fn chroma_secondary_main(cpu: usize) -> ! {
    say!(
        "CPU {cpu} (MPIDR {:#x}) online, HSCTLR {:#x}",
        sysreg::mpidr(),
        sysreg::hsctlr()
    );
    CPUS_ONLINE.fetch_add(1, Ordering::AcqRel);
    boot::park()
}

/// The device tree at `dtb`, bounded by its header's size (empty if there is
/// no FDT magic there).
fn device_tree(dtb: usize) -> &'static [u8] {
    // SAFETY: the boot protocol passes a device tree in r2, in RAM the early
    // map covers; its 8-byte header is read first, unaligned-safe.
    let header = unsafe { core::ptr::read_unaligned(dtb as *const [u8; 8]) };
    let [m0, m1, m2, m3, s0, s1, s2, s3] = header;
    if [m0, m1, m2, m3] != [0xd0, 0x0d, 0xfe, 0xed] {
        fatal(format_args!("no flattened device tree at r2 ({dtb:#x})"));
    }
    let total = usize::try_from(u32::from_be_bytes([s0, s1, s2, s3])).unwrap_or(0);
    // SAFETY: as above, `total` bytes from the header's own size field.
    unsafe { core::slice::from_raw_parts(dtb as *const u8, total) }
}

/// Prints what the device tree says about the board, using the heap.
fn report_board(board: &chroma_devtree::BoardInfo) {
    extern crate alloc;
    use alloc::vec::Vec;
    let ram: Vec<(u64, u64)> = board
        .memory
        .as_slice()
        .iter()
        .map(|range| (range.base, range.size))
        .collect();
    for (base, size) in &ram {
        say!(
            "RAM {:#x}..{:#x} ({} MiB)",
            base,
            base.saturating_add(*size),
            size >> 20
        );
    }
    let cpus: Vec<u64> = board.cpus.as_slice().iter().map(|cpu| cpu.mpidr).collect();
    let psci_cpus = board
        .cpus
        .as_slice()
        .iter()
        .filter(|cpu| cpu.enable_method == EnableMethod::Psci)
        .count();
    say!(
        "{} CPU(s) in the device tree (MPIDRs {:x?}), {} started by PSCI",
        cpus.len(),
        cpus,
        psci_cpus
    );
    match board.gic {
        Gic::V2 {
            distributor,
            cpu_interface,
            hyp_interface,
            virtual_cpu_interface,
            ..
        } => say!(
            "GICv2: GICD {:#x}, GICC {:#x}, GICH {}, GICV {}",
            distributor.base,
            cpu_interface.base,
            if hyp_interface.is_some() {
                "present"
            } else {
                "absent"
            },
            if virtual_cpu_interface.is_some() {
                "present"
            } else {
                "absent"
            }
        ),
        Gic::V3 { distributor, .. } => {
            say!(
                "GICv3 at {:#x} (not driven by this slice)",
                distributor.base
            )
        }
        Gic::NotGic { registers, .. } => {
            say!("interrupt controller at {:#x} is not a GIC", registers.base)
        }
    }
    let conduit = match board.psci.map(|psci| psci.conduit) {
        Some(PsciConduit::Smc) => "smc",
        Some(PsciConduit::Hvc) => "hvc",
        None => "none",
    };
    say!(
        "console {:?} at {:#x}; PSCI conduit in the device tree: {}",
        board.console.kind,
        board.console.mmio.base,
        conduit
    );
}

/// Prints what the manifest after the image holds.
fn report_manifest() {
    let bytes = mm::manifest_bytes();
    if bytes.is_empty() {
        say!("no VM manifest after the image");
        return;
    }
    match chroma_manifest::Manifest::parse(bytes) {
        Ok(manifest) => say!(
            "manifest: {} bytes, {} VM(s): {}",
            bytes.len(),
            manifest.vm_count(),
            VmNames(&manifest)
        ),
        Err(error) => say!("manifest: {} bytes, invalid: {error}", bytes.len()),
    }
}

/// The VM names of a manifest, comma-separated.
struct VmNames<'a, 'b>(&'a chroma_manifest::Manifest<'b>);

impl core::fmt::Display for VmNames<'_, '_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (index, vm) in self.0.vms().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            f.write_str(vm.name)?;
        }
        Ok(())
    }
}

/// The entry when the loader did not enter in HYP mode: refuse, and stop.
/// MMU off, no lock used; the CPU parks (there is no safe way off: without
/// HYP mode the PSCI conduit may not be reachable).
#[no_mangle]
extern "C" fn chroma_wrong_mode(mode: u32) -> ! {
    let name = match mode {
        0b1_0000 => "User",
        0b1_0001 => "FIQ",
        0b1_0010 => "IRQ",
        0b1_0011 => "SVC",
        0b1_0110 => "Monitor",
        0b1_0111 => "Abort",
        0b1_1011 => "Undefined",
        0b1_1111 => "System",
        _ => "an unknown",
    };
    console::emergency(format_args!(
        "chroma: fatal: entered in {name} mode (CPSR.M {mode:#07b}), not HYP mode: chroma needs the Virtualization Extensions and a HYP-mode entry (QEMU: -M virt,virtualization=on)"
    ));
    chroma_arch::armv7::boot::park()
}

/// An exception taken in HYP mode: a hypervisor bug here. Report and stop.
#[no_mangle]
extern "C" fn chroma_hyp_exception(frame: &vectors::HypFrame, kind: u32) -> ! {
    vectors::report_hyp_exception(frame, kind, console::emergency);
    psci::system_off()
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    console::emergency(format_args!(
        "chroma: PANIC on CPU {:#x}: {}",
        sysreg::mpidr() & 0x00ff_ffff,
        info
    ));
    psci::system_off()
}

/// Stops the machine with a message: the hypervisor cannot continue.
fn fatal(args: core::fmt::Arguments) -> ! {
    console::emergency(format_args!("chroma: fatal: {args}"));
    psci::system_off()
}

/// A few (start, end) ranges without the heap (used before it exists).
mod alloc_free {
    /// Most ranges kept.
    const MAX: usize = 16;

    /// A fixed-capacity list of ranges; pushes beyond it are dropped.
    #[derive(Default)]
    pub struct Ranges {
        items: [(u64, u64); MAX],
        len: usize,
    }

    impl Ranges {
        /// Appends a range (dropped when full).
        pub fn push(&mut self, range: (u64, u64)) {
            if let Some(slot) = self.items.get_mut(self.len) {
                *slot = range;
                self.len += 1;
            }
        }

        /// The ranges.
        pub fn as_slice(&self) -> &[(u64, u64)] {
            self.items.get(..self.len).unwrap_or(&[])
        }
    }

    impl FromIterator<(u64, u64)> for Ranges {
        fn from_iter<I: IntoIterator<Item = (u64, u64)>>(iter: I) -> Self {
            let mut ranges = Ranges::default();
            for range in iter {
                ranges.push(range);
            }
            ranges
        }
    }
}
