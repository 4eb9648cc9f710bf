//! What the hypervisor takes from the board's device tree, and the guest
//! device tree it generates for each VM (both through `chroma-devtree`).

use crate::arch::cpu::Conduit;
use crate::arch::gic::GicKind;
use alloc::vec::Vec;
use chroma_core::vgic::GicVersion;
use chroma_devtree::{
    build_guest_dtb, parse_board, EnableMethod, Gic, GuestDtbSpec, GuestGic, PsciConduit, UartKind,
};
use chroma_manifest::VmSpec;
use chroma_platform::uart::UartModel;

/// The maintenance interrupt's number on a board without a GIC (PPI 9's,
/// as a GIC-400 has it): the software virtual CPU interface never raises it.
const NO_MAINTENANCE_INTID: u32 = 25;

/// Most RAM ranges and device windows kept.
const MAX_RANGES: usize = 8;
/// Most device windows the EL2 map holds.
const MAX_DEVICES: usize = 16;

/// How a secondary CPU is started, from its `enable-method` and `/psci`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecondaryStart {
    /// PSCI CPU_ON through this conduit.
    Psci(Conduit),
    /// The spin table: the CPU waits (in WFE) for an entry address at this
    /// `cpu-release-addr`.
    SpinTable(u64),
    /// A method this build cannot use (PSCI over HVC at EL2, none): named
    /// for the log.
    Unsupported(&'static str),
}

/// Why the board cannot run chroma.
#[derive(Clone, Copy, Debug)]
pub enum BoardError {
    /// No flattened device tree at the address the boot loader passed.
    NoDeviceTree,
    /// The device tree lacks something or is malformed.
    DeviceTree(chroma_devtree::DevtreeError),
    /// The interrupt controller is not one this build drives.
    InterruptController(chroma_devtree::OtherController, u64),
    /// A GICv2 without the virtualization extensions.
    NoVirtualGic(&'static str),
    /// A GICv3 on the ARMv7 back-end, which has no GICv3 CPU interface.
    #[cfg(target_arch = "arm")]
    Gicv3OnArmv7(u64),
}

impl core::fmt::Display for BoardError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BoardError::NoDeviceTree => f.write_str("no flattened device tree at x0 (bad magic)"),
            BoardError::DeviceTree(e) => write!(f, "the board's device tree: {e}"),
            BoardError::InterruptController(kind, base) => write!(
                f,
                "the board's interrupt controller is {kind} at {base:#x}, not a GIC; this build drives GICv2 and GICv3 only"
            ),
            BoardError::NoVirtualGic(what) => f.write_str(what),
            #[cfg(target_arch = "arm")]
            BoardError::Gicv3OnArmv7(base) => write!(
                f,
                "the board's GIC at {base:#x} is a GICv3; the ARMv7 back-end drives GICv2 only (no ARMv7-A core has the GICv3 CPU interface)"
            ),
        }
    }
}

/// The board, as the hypervisor needs it.
pub struct BoardInfo {
    /// RAM ranges (start, end).
    pub memory: [Option<(u64, u64)>; MAX_RANGES],
    /// Device windows to map at EL2 (base, size).
    pub devices: [Option<(u64, u64)>; MAX_DEVICES],
    /// The console UART (a PL011 or the Raspberry Pi's mini UART), when
    /// the device tree's console is one this build drives.
    pub uart: Option<(UartModel, u64)>,
    /// The console the device tree names, when it is not a PL011.
    pub other_console: Option<chroma_devtree::UartKind>,
    /// The physical GIC.
    pub gic: GicKind,
    /// GICv2 virtual CPU interface (mapped into guests as their GICC).
    pub gicv: Option<u64>,
    /// MPIDR of each CPU and how it starts, in device-tree order.
    pub cpus: [Option<(u64, SecondaryStart)>; crate::arch::MAX_CPUS],
    /// INTID of the virtual interface's maintenance interrupt.
    pub maintenance_intid: u32,
    /// INTID of the EL2 physical timer.
    pub hyp_timer_intid: u32,
    /// INTID of the virtual timer.
    pub virt_timer_intid: u32,
    /// Guest IPA size in bits.
    pub ipa_bits: u8,
    /// Where the device tree itself lies (start, end): not free memory.
    pub dtb_range: (u64, u64),
    /// The board's virtio-mmio windows (base, size, INTID): uplink candidates.
    pub virtio: [Option<(u64, u64, u32)>; 32],
    /// RAM the firmware reserved (`/memreserve/`): (start, end), never
    /// handed out.
    pub reserved: [Option<(u64, u64)>; chroma_devtree::MAX_RESERVED],
}

/// Reads the device tree at `dtb`.
pub fn discover(dtb: usize) -> Result<BoardInfo, BoardError> {
    // SAFETY: the boot loader passed a device tree at `dtb` (boot protocol); its header's totalsize bounds it, and the early map covers its GiB.
    let header = unsafe { core::slice::from_raw_parts(dtb as *const u8, 8) };
    if header[..4] != [0xd0, 0x0d, 0xfe, 0xed] {
        return Err(BoardError::NoDeviceTree);
    }
    let total = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    // SAFETY: as above, `total` bytes from the header's own size field; the blob is RAM the boot loader handed over (the early map has its GiB read/write), used by nothing else while the boot CPU reads it.
    let bytes = unsafe { core::slice::from_raw_parts_mut(dtb as *mut u8, total) };
    // A boot loader that deleted nodes left NOPs (QEMU's raspi machines).
    chroma_devtree::strip_nops(bytes).map_err(BoardError::DeviceTree)?;
    let board = parse_board(bytes).map_err(BoardError::DeviceTree)?;
    match board.gic {
        // The Raspberry Pi 3's: driven on AArch64, with the guests' virtual
        // CPU interface in software (`chroma_core::soft_gicv`).
        #[cfg(target_arch = "aarch64")]
        Gic::NotGic {
            kind: chroma_devtree::OtherController::Bcm2836Local,
            ..
        } => {}
        Gic::NotGic { kind, registers } => {
            return Err(BoardError::InterruptController(kind, registers.base))
        }
        _ => {}
    }
    #[cfg(target_arch = "arm")]
    if let Gic::V3 { distributor, .. } = board.gic {
        return Err(BoardError::Gicv3OnArmv7(distributor.base));
    }
    let maintenance = match board.gic {
        Gic::V2 { maintenance, .. } | Gic::V3 { maintenance, .. } => {
            maintenance.and_then(|m| m.intid())
        }
        // The software virtual CPU interface needs no maintenance
        // interrupt (every completion traps); PPI 9's number stands in and
        // is never raised.
        Gic::NotGic { .. } => Some(NO_MAINTENANCE_INTID),
    };
    let mut info = BoardInfo {
        memory: [None; MAX_RANGES],
        devices: [None; MAX_DEVICES],
        uart: match board.console.kind {
            UartKind::Pl011 => Some((UartModel::Pl011, board.console.mmio.base)),
            UartKind::Bcm2835Aux => Some((UartModel::MiniUart, board.console.mmio.base)),
            UartKind::Other => None,
        },
        other_console: (board.console.kind == UartKind::Other).then_some(board.console.kind),
        gic: GicKind::V3 { gicd: 0, gicr: 0 },
        gicv: None,
        cpus: [None; crate::arch::MAX_CPUS],
        maintenance_intid: maintenance.ok_or(BoardError::NoVirtualGic(
            "the GIC node has no maintenance interrupt",
        ))?,
        hyp_timer_intid: board.timer.hyp.intid().ok_or(BoardError::NoVirtualGic(
            "the timer has no hypervisor timer PPI",
        ))?,
        virt_timer_intid: board.timer.virt.intid().ok_or(BoardError::NoVirtualGic(
            "the timer has no virtual timer PPI",
        ))?,
        ipa_bits: crate::arch::ipa_bits(),
        dtb_range: (dtb as u64, (dtb + total) as u64),
        virtio: [None; 32],
        reserved: [None; chroma_devtree::MAX_RESERVED],
    };
    for (slot, range) in info.reserved.iter_mut().zip(board.reserved.iter()) {
        *slot = Some((range.base, range.base.saturating_add(range.size)));
    }
    for (slot, range) in info.memory.iter_mut().zip(board.memory.iter()) {
        *slot = Some((range.base, range.base.saturating_add(range.size)));
    }
    for (slot, cpu) in info.cpus.iter_mut().zip(board.cpus.iter()) {
        let start = match (cpu.enable_method, board.psci.map(|p| p.conduit)) {
            (EnableMethod::Psci, Some(PsciConduit::Smc)) => SecondaryStart::Psci(Conduit::Smc),
            (EnableMethod::Psci, Some(PsciConduit::Hvc)) => {
                SecondaryStart::Unsupported("PSCI over HVC")
            }
            (EnableMethod::Psci, None) => SecondaryStart::Unsupported("PSCI without a /psci node"),
            (EnableMethod::SpinTable { release_address }, _) => {
                SecondaryStart::SpinTable(release_address)
            }
            (EnableMethod::Other, _) => SecondaryStart::Unsupported("unknown"),
        };
        *slot = Some((cpu.mpidr, start));
    }
    for (slot, v) in info.virtio.iter_mut().zip(board.virtio_mmio.iter()) {
        *slot = v
            .interrupt
            .intid()
            .map(|intid| (v.mmio.base, v.mmio.size, intid));
    }
    // No heap yet: a fixed list.
    let mut devices = [(0u64, 0u64); 7];
    // The virtio-mmio windows, as one range (the uplink is one of them).
    let windows = board
        .virtio_mmio
        .iter()
        .map(|v| (v.mmio.base, v.mmio.base + v.mmio.size));
    if let Some((low, high)) = windows.reduce(|a, b| (a.0.min(b.0), a.1.max(b.1))) {
        let low = low & !0xfff;
        devices[4] = (low, (high - low).next_multiple_of(0x1000));
    }
    if board.console.kind != UartKind::Other {
        // Whole pages (the mini UART's registers start 0x40 into one).
        let low = board.console.mmio.base & !0xfff;
        let high =
            (board.console.mmio.base + board.console.mmio.size.max(1)).next_multiple_of(0x1000);
        devices[0] = (low, high - low);
    } else {
        // The console stays on the board's early UART: keep it mapped.
        devices[5] = (chroma_platform::BOARD.early_uart as u64, 0x1000);
    }
    if let chroma_platform::PowerOff::Bcm2835Watchdog { base } = chroma_platform::BOARD.power_off {
        // The power-management block that ends the run.
        devices[6] = (base as u64, 0x1000);
    }
    match board.gic {
        Gic::V2 {
            distributor,
            cpu_interface,
            hyp_interface,
            virtual_cpu_interface,
            ..
        } => {
            let gich = hyp_interface.ok_or(BoardError::NoVirtualGic(
                "GICv2 without virtualization extensions (no GICH)",
            ))?;
            let gicv = virtual_cpu_interface.ok_or(BoardError::NoVirtualGic(
                "GICv2 without a virtual CPU interface (no GICV)",
            ))?;
            info.gic = GicKind::V2 {
                gicd: crate::mm::host_usize(distributor.base),
                gicc: crate::mm::host_usize(cpu_interface.base),
                gich: crate::mm::host_usize(gich.base),
            };
            info.gicv = Some(gicv.base);
            devices[1] = (distributor.base, distributor.size);
            devices[2] = (cpu_interface.base, cpu_interface.size);
            devices[3] = (gich.base, gich.size);
        }
        Gic::V3 {
            distributor,
            redistributors,
            ..
        } => {
            info.gic = GicKind::V3 {
                gicd: crate::mm::host_usize(distributor.base),
                gicr: crate::mm::host_usize(redistributors.base),
            };
            devices[1] = (distributor.base, distributor.size);
            devices[2] = (redistributors.base, redistributors.size);
        }
        Gic::NotGic { registers, .. } => {
            info.gic = GicKind::Bcm2836Local {
                base: crate::mm::host_usize(registers.base),
            };
            devices[1] = (registers.base, registers.size.max(0x1000));
        }
    }
    for (slot, device) in info
        .devices
        .iter_mut()
        .zip(devices.into_iter().filter(|d| d.1 != 0))
    {
        *slot = Some(device);
    }
    Ok(info)
}

/// Generates a VM's device tree.
pub fn guest_dtb(
    spec: &VmSpec,
    vcpu_count: usize,
    version: GicVersion,
    initrd: Option<(u64, u64)>,
    nics: usize,
) -> Result<Vec<u8>, chroma_devtree::DevtreeError> {
    build_guest_dtb(&GuestDtbSpec {
        memory_base: spec.memory_base,
        memory_size: spec.memory_bytes,
        vcpu_count: u32::try_from(vcpu_count).map_err(|_| {
            chroma_devtree::DevtreeError::TooMany {
                what: "vCPUs",
                max: chroma_core::vgic::MAX_VCPUS,
            }
        })?,
        cpu_compatible: "arm,cortex-a57",
        gic: match version {
            GicVersion::V2 => GuestGic::V2,
            GicVersion::V3 => GuestGic::V3,
        },
        bootargs: spec.cmdline,
        initrd,
        virtio_mmio_count: u32::try_from(nics).map_err(|_| {
            chroma_devtree::DevtreeError::TooMany {
                what: "virtio-mmio transports",
                max: 32,
            }
        })?,
    })
}
