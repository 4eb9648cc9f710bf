//! What the hypervisor takes from the board's device tree, and the guest
//! device tree it generates for each VM (both through `chroma-devtree`).

use alloc::vec::Vec;
use chroma_arch::aarch64::gic::GicKind;
use chroma_core::vgic::GicVersion;
use chroma_devtree::{build_guest_dtb, parse_board, Gic, GuestDtbSpec, GuestGic};
use chroma_manifest::VmSpec;

/// Most RAM ranges and device windows kept.
const MAX_RANGES: usize = 8;
/// Most device windows the EL2 map holds.
const MAX_DEVICES: usize = 16;

/// The board, as the hypervisor needs it.
pub struct BoardInfo {
    /// RAM ranges (start, end).
    pub memory: [Option<(u64, u64)>; MAX_RANGES],
    /// Device windows to map at EL2 (base, size).
    pub devices: [Option<(u64, u64)>; MAX_DEVICES],
    /// The console PL011.
    pub uart: u64,
    /// The physical GIC.
    pub gic: GicKind,
    /// GICv2 virtual CPU interface (mapped into guests as their GICC).
    pub gicv: Option<u64>,
    /// MPIDR of each CPU, in device-tree order.
    pub cpus: [Option<u64>; chroma_arch::aarch64::boot::MAX_CPUS],
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
}

/// Reads the device tree at `dtb`.
pub fn discover(dtb: usize) -> Result<BoardInfo, &'static str> {
    // SAFETY: the boot loader passed a device tree at `dtb` (boot protocol);
    // its header's totalsize bounds it, and the early map covers its GiB.
    let header = unsafe { core::slice::from_raw_parts(dtb as *const u8, 8) };
    if header[..4] != [0xd0, 0x0d, 0xfe, 0xed] {
        return Err("no flattened device tree at x0 (bad magic)");
    }
    let total = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    // SAFETY: as above, `total` bytes from the header's own size field.
    let bytes = unsafe { core::slice::from_raw_parts(dtb as *const u8, total) };
    let board = parse_board(bytes).map_err(|_| "the device tree lacks memory, console, GIC, timer or CPUs")?;
    let mut info = BoardInfo {
        memory: [None; MAX_RANGES],
        devices: [None; MAX_DEVICES],
        uart: board.console.mmio.base,
        gic: GicKind::V3 { gicd: 0, gicr: 0 },
        gicv: None,
        cpus: [None; chroma_arch::aarch64::boot::MAX_CPUS],
        hyp_timer_intid: board.timer.hyp.intid().unwrap_or(26),
        virt_timer_intid: board.timer.virt.intid().unwrap_or(27),
        ipa_bits: ipa_bits(),
        dtb_range: (dtb as u64, (dtb + total) as u64),
        virtio: [None; 32],
    };
    for (slot, range) in info.memory.iter_mut().zip(board.memory.iter()) {
        *slot = Some((range.base, range.base.saturating_add(range.size)));
    }
    for (slot, cpu) in info.cpus.iter_mut().zip(board.cpus.iter()) {
        *slot = Some(cpu.mpidr);
    }
    for (slot, v) in info.virtio.iter_mut().zip(board.virtio_mmio.iter()) {
        *slot = v.interrupt.intid().map(|intid| (v.mmio.base, v.mmio.size, intid));
    }
    // No heap yet: a fixed list.
    let mut devices = [(0u64, 0u64); 5];
    // The virtio-mmio windows, as one range (the uplink is one of them).
    let windows = board.virtio_mmio.iter().map(|v| (v.mmio.base, v.mmio.base + v.mmio.size));
    if let Some((low, high)) = windows.reduce(|a, b| (a.0.min(b.0), a.1.max(b.1))) {
        let low = low & !0xfff;
        devices[4] = (low, (high - low).next_multiple_of(0x1000));
    }
    devices[0] = (board.console.mmio.base, board.console.mmio.size.max(0x1000));
    match board.gic {
        Gic::V2 { distributor, cpu_interface, hyp_interface, virtual_cpu_interface, .. } => {
            let gich = hyp_interface.ok_or("GICv2 without virtualization extensions (no GICH)")?;
            let gicv = virtual_cpu_interface.ok_or("GICv2 without a virtual CPU interface (no GICV)")?;
            info.gic = GicKind::V2 {
                gicd: distributor.base as usize,
                gicc: cpu_interface.base as usize,
                gich: gich.base as usize,
            };
            info.gicv = Some(gicv.base);
            devices[1] = (distributor.base, distributor.size);
            devices[2] = (cpu_interface.base, cpu_interface.size);
            devices[3] = (gich.base, gich.size);
        }
        Gic::V3 { distributor, redistributors, .. } => {
            info.gic = GicKind::V3 { gicd: distributor.base as usize, gicr: redistributors.base as usize };
            devices[1] = (distributor.base, distributor.size);
            devices[2] = (redistributors.base, redistributors.size);
        }
    }
    for (slot, device) in info.devices.iter_mut().zip(devices.into_iter().filter(|d| d.1 != 0)) {
        *slot = Some(device);
    }
    Ok(info)
}

/// The guest IPA size: the CPU's physical address size, at most 48 bits.
fn ipa_bits() -> u8 {
    match chroma_arch::aarch64::sysreg::id_aa64mmfr0_el1() & 0xf {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        _ => 48,
    }
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
        vcpu_count: vcpu_count as u32,
        cpu_compatible: "arm,cortex-a57",
        gic: match version {
            GicVersion::V2 => GuestGic::V2,
            GicVersion::V3 => GuestGic::V3,
        },
        bootargs: spec.cmdline,
        initrd,
        virtio_mmio_count: nics as u32,
    })
}
