//! The device tree each VM boots with: QEMU `virt`'s machine, as QEMU
//! itself describes it (`-M virt` without `virtualization=on`, dumped with
//! `-machine dumpdtb` and compared with `dtc -I dtb -O dts`), so a kernel
//! built for QEMU virt boots unchanged.

use alloc::string::String;
use alloc::vec::Vec;

use vm_fdt::FdtWriter;

use crate::DevtreeError;

/// The guest's physical memory map, as the device tree describes it: the
/// one definition in `chroma_core::guest_map` (QEMU virt's `base_memmap`),
/// which trap routing uses too.
pub mod layout {
    use chroma_core::guest_map::{FIRST_SPI, QEMU_VIRT};

    /// GIC distributor (v2 and v3).
    pub const GICD_BASE: u64 = QEMU_VIRT.gic_distributor.base;
    /// GIC distributor size.
    pub const GICD_SIZE: u64 = QEMU_VIRT.gic_distributor.size;
    /// GICv2 CPU interface.
    pub const GICC_BASE: u64 = QEMU_VIRT.gic_cpu_interface.base;
    /// GICv2 CPU interface size as QEMU describes it.
    pub const GICC_SIZE: u64 = QEMU_VIRT.gic_cpu_interface.size;
    /// GICv3 redistributors, one `GICR_STRIDE` frame pair per vCPU.
    pub const GICR_BASE: u64 = QEMU_VIRT.gic_redistributors.base;
    /// Bytes of redistributor per vCPU (RD_base + SGI_base frames).
    pub const GICR_STRIDE: u64 = QEMU_VIRT.gic_redistributors.stride;
    /// PL011 UART.
    pub const UART_BASE: u64 = QEMU_VIRT.uart.base;
    /// PL011 register window.
    pub const UART_SIZE: u64 = QEMU_VIRT.uart.size;
    /// PL011 interrupt as an SPI number.
    pub const UART_SPI: u32 = QEMU_VIRT.uart_intid - FIRST_SPI;
    /// First virtio-mmio transport; transport n is at `+ n * VIRTIO_MMIO_STRIDE`.
    pub const VIRTIO_MMIO_BASE: u64 = QEMU_VIRT.virtio_mmio.base;
    /// Distance between virtio-mmio transports, and each one's size.
    pub const VIRTIO_MMIO_STRIDE: u64 = QEMU_VIRT.virtio_mmio.stride;
    /// Interrupt of transport n: SPI `VIRTIO_MMIO_SPI_BASE + n`.
    pub const VIRTIO_MMIO_SPI_BASE: u32 = QEMU_VIRT.virtio_first_intid - FIRST_SPI;
    /// Transports the layout has room for.
    pub const MAX_VIRTIO_MMIO: u32 = QEMU_VIRT.virtio_mmio.max_count;
    /// Most vCPUs a guest tree describes.
    pub const MAX_VCPUS: u32 = QEMU_VIRT.gic_redistributors.max_count;
    /// Timer PPIs (PPI numbers: INTID - 16): secure physical, non-secure
    /// physical, virtual, hypervisor.
    pub const TIMER_PPIS: [u32; 4] = [
        QEMU_VIRT.timer_intids.secure_physical - 16,
        QEMU_VIRT.timer_intids.physical - 16,
        QEMU_VIRT.timer_intids.virtual_timer - 16,
        QEMU_VIRT.timer_intids.hypervisor - 16,
    ];
    /// Frequency of the `apb-pclk` fixed clock (24 MHz).
    pub const APB_PCLK_HZ: u32 = 24_000_000;
}

/// Which GIC the guest sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestGic {
    /// GICv2 at `GICD_BASE` / `GICC_BASE`.
    V2,
    /// GICv3 at `GICD_BASE` / `GICR_BASE`.
    V3,
}

/// What goes into a guest's device tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestDtbSpec<'a> {
    /// Guest-physical base of RAM.
    pub memory_base: u64,
    /// RAM size.
    pub memory_size: u64,
    /// vCPUs (1..=[`layout::MAX_VCPUS`]); `/cpus/cpu@i` has `reg = i` (MPIDR Aff0).
    pub vcpu_count: u32,
    /// `compatible` of each CPU node (QEMU writes the `-cpu` model, e.g. "arm,cortex-a57").
    pub cpu_compatible: &'a str,
    /// The interrupt controller.
    pub gic: GuestGic,
    /// `/chosen/bootargs` (omitted when empty).
    pub bootargs: &'a str,
    /// Guest-physical `[start, end)` of the initrd, for `linux,initrd-start/end`.
    pub initrd: Option<(u64, u64)>,
    /// Number of virtio-mmio transports (0..=[`layout::MAX_VIRTIO_MMIO`]).
    pub virtio_mmio_count: u32,
}

/// Phandle of the interrupt controller.
const GIC_PHANDLE: u32 = 1;
/// Phandle of the `apb-pclk` fixed clock.
const CLOCK_PHANDLE: u32 = 2;
/// `interrupts` flags: edge rising (virtio-mmio, as QEMU).
const IRQ_EDGE_RISING: u32 = 1;
/// `interrupts` flags: level high (PL011, timer, as QEMU).
const IRQ_LEVEL_HIGH: u32 = 4;
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;

fn write_error(_: vm_fdt::Error) -> DevtreeError {
    DevtreeError::Write
}

/// Splits a 64-bit value into two cells (`#address-cells = 2`).
fn cells(value: u64) -> [u32; 2] {
    let high = u32::try_from(value >> 32).unwrap_or(u32::MAX);
    let low = u32::try_from(value & 0xFFFF_FFFF).unwrap_or(u32::MAX);
    [high, low]
}

/// A `reg` with two-cell addresses and sizes.
fn reg(ranges: &[(u64, u64)]) -> Vec<u32> {
    ranges
        .iter()
        .flat_map(|&(base, size)| cells(base).into_iter().chain(cells(size)))
        .collect()
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|value| String::from(*value)).collect()
}

/// Writes the guest's device tree.
pub fn build_guest_dtb(spec: &GuestDtbSpec<'_>) -> Result<Vec<u8>, DevtreeError> {
    use layout::*;
    if spec.vcpu_count == 0 || spec.vcpu_count > MAX_VCPUS {
        return Err(DevtreeError::InvalidSpec {
            what: "vCPU count outside 1..=8",
        });
    }
    if spec.virtio_mmio_count > MAX_VIRTIO_MMIO {
        return Err(DevtreeError::InvalidSpec {
            what: "more than 32 virtio-mmio transports",
        });
    }
    if spec.memory_size == 0 || spec.memory_base.checked_add(spec.memory_size).is_none() {
        return Err(DevtreeError::InvalidSpec {
            what: "empty or wrapping guest memory",
        });
    }
    if let Some((start, end)) = spec.initrd {
        if start > end {
            return Err(DevtreeError::InvalidSpec {
                what: "initrd ends before it starts",
            });
        }
    }
    if spec.bootargs.contains('\0') || spec.cpu_compatible.contains('\0') {
        return Err(DevtreeError::InvalidSpec {
            what: "NUL in a string",
        });
    }

    let mut fdt = FdtWriter::new().map_err(write_error)?;
    let root = fdt.begin_node("").map_err(write_error)?;
    fdt.property_u32("interrupt-parent", GIC_PHANDLE)
        .map_err(write_error)?;
    fdt.property_string("model", "chroma")
        .map_err(write_error)?;
    fdt.property_u32("#size-cells", 2).map_err(write_error)?;
    fdt.property_u32("#address-cells", 2).map_err(write_error)?;
    fdt.property_string("compatible", "linux,dummy-virt")
        .map_err(write_error)?;

    // PSCI over HVC, with the function IDs QEMU lists (Linux ignores them
    // for 0.2+ but older kernels read them).
    let psci = fdt.begin_node("psci").map_err(write_error)?;
    fdt.property_u32("migrate", 0xC400_0005)
        .map_err(write_error)?;
    fdt.property_u32("cpu_on", 0xC400_0003)
        .map_err(write_error)?;
    fdt.property_u32("cpu_off", 0x8400_0002)
        .map_err(write_error)?;
    fdt.property_u32("cpu_suspend", 0xC400_0001)
        .map_err(write_error)?;
    fdt.property_string("method", "hvc").map_err(write_error)?;
    fdt.property_string_list(
        "compatible",
        strings(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"]),
    )
    .map_err(write_error)?;
    fdt.end_node(psci).map_err(write_error)?;

    let memory_name = alloc::format!("memory@{:x}", spec.memory_base);
    let memory = fdt.begin_node(&memory_name).map_err(write_error)?;
    fdt.property_array_u32("reg", &reg(&[(spec.memory_base, spec.memory_size)]))
        .map_err(write_error)?;
    fdt.property_string("device_type", "memory")
        .map_err(write_error)?;
    fdt.end_node(memory).map_err(write_error)?;

    // virtio-mmio transports, lowest address first as in QEMU's tree, so
    // Linux probes (and names) them in address order.
    for index in 0..spec.virtio_mmio_count {
        let base = VIRTIO_MMIO_BASE + u64::from(index) * VIRTIO_MMIO_STRIDE;
        let node = fdt
            .begin_node(&alloc::format!("virtio_mmio@{base:x}"))
            .map_err(write_error)?;
        fdt.property_null("dma-coherent").map_err(write_error)?;
        fdt.property_array_u32(
            "interrupts",
            &[GIC_SPI, VIRTIO_MMIO_SPI_BASE + index, IRQ_EDGE_RISING],
        )
        .map_err(write_error)?;
        fdt.property_array_u32("reg", &reg(&[(base, VIRTIO_MMIO_STRIDE)]))
            .map_err(write_error)?;
        fdt.property_string("compatible", "virtio,mmio")
            .map_err(write_error)?;
        fdt.end_node(node).map_err(write_error)?;
    }

    let uart_name = alloc::format!("pl011@{UART_BASE:x}");
    let uart = fdt.begin_node(&uart_name).map_err(write_error)?;
    fdt.property_string_list("clock-names", strings(&["uartclk", "apb_pclk"]))
        .map_err(write_error)?;
    fdt.property_array_u32("clocks", &[CLOCK_PHANDLE, CLOCK_PHANDLE])
        .map_err(write_error)?;
    fdt.property_array_u32("interrupts", &[GIC_SPI, UART_SPI, IRQ_LEVEL_HIGH])
        .map_err(write_error)?;
    fdt.property_array_u32("reg", &reg(&[(UART_BASE, UART_SIZE)]))
        .map_err(write_error)?;
    fdt.property_string_list("compatible", strings(&["arm,pl011", "arm,primecell"]))
        .map_err(write_error)?;
    fdt.end_node(uart).map_err(write_error)?;

    let gic = fdt
        .begin_node(&alloc::format!("intc@{GICD_BASE:x}"))
        .map_err(write_error)?;
    fdt.property_u32("phandle", GIC_PHANDLE)
        .map_err(write_error)?;
    match spec.gic {
        GuestGic::V2 => {
            fdt.property_array_u32(
                "reg",
                &reg(&[(GICD_BASE, GICD_SIZE), (GICC_BASE, GICC_SIZE)]),
            )
            .map_err(write_error)?;
            fdt.property_string("compatible", "arm,cortex-a15-gic")
                .map_err(write_error)?;
        }
        GuestGic::V3 => {
            let redistributors = GICR_STRIDE * u64::from(spec.vcpu_count);
            fdt.property_array_u32(
                "reg",
                &reg(&[(GICD_BASE, GICD_SIZE), (GICR_BASE, redistributors)]),
            )
            .map_err(write_error)?;
            fdt.property_u32("#redistributor-regions", 1)
                .map_err(write_error)?;
            fdt.property_string("compatible", "arm,gic-v3")
                .map_err(write_error)?;
        }
    }
    fdt.property_null("interrupt-controller")
        .map_err(write_error)?;
    fdt.property_u32("#interrupt-cells", 3)
        .map_err(write_error)?;
    fdt.end_node(gic).map_err(write_error)?;

    let cpus = fdt.begin_node("cpus").map_err(write_error)?;
    fdt.property_u32("#size-cells", 0).map_err(write_error)?;
    fdt.property_u32("#address-cells", 1).map_err(write_error)?;
    for index in 0..spec.vcpu_count {
        let cpu = fdt
            .begin_node(&alloc::format!("cpu@{index:x}"))
            .map_err(write_error)?;
        fdt.property_u32("reg", index).map_err(write_error)?;
        fdt.property_string("enable-method", "psci")
            .map_err(write_error)?;
        fdt.property_string("compatible", spec.cpu_compatible)
            .map_err(write_error)?;
        fdt.property_string("device_type", "cpu")
            .map_err(write_error)?;
        fdt.end_node(cpu).map_err(write_error)?;
    }
    fdt.end_node(cpus).map_err(write_error)?;

    // Timer PPIs, level high; on GICv2 the flags also carry the mask of
    // CPUs the PPI is wired to (bits 15:8), as QEMU writes them.
    let timer = fdt.begin_node("timer").map_err(write_error)?;
    let flags = match spec.gic {
        GuestGic::V2 => IRQ_LEVEL_HIGH | (((1u32 << spec.vcpu_count) - 1) << 8),
        GuestGic::V3 => IRQ_LEVEL_HIGH,
    };
    let timer_interrupts: Vec<u32> = TIMER_PPIS
        .iter()
        .flat_map(|&ppi| [GIC_PPI, ppi, flags])
        .collect();
    fdt.property_array_u32("interrupts", &timer_interrupts)
        .map_err(write_error)?;
    fdt.property_null("always-on").map_err(write_error)?;
    fdt.property_string_list(
        "compatible",
        strings(&["arm,armv8-timer", "arm,armv7-timer"]),
    )
    .map_err(write_error)?;
    fdt.end_node(timer).map_err(write_error)?;

    let clock = fdt.begin_node("apb-pclk").map_err(write_error)?;
    fdt.property_u32("phandle", CLOCK_PHANDLE)
        .map_err(write_error)?;
    fdt.property_string("clock-output-names", "clk24mhz")
        .map_err(write_error)?;
    fdt.property_u32("clock-frequency", APB_PCLK_HZ)
        .map_err(write_error)?;
    fdt.property_u32("#clock-cells", 0).map_err(write_error)?;
    fdt.property_string("compatible", "fixed-clock")
        .map_err(write_error)?;
    fdt.end_node(clock).map_err(write_error)?;

    let uart_path = alloc::format!("/{uart_name}");
    let aliases = fdt.begin_node("aliases").map_err(write_error)?;
    fdt.property_string("serial0", &uart_path)
        .map_err(write_error)?;
    fdt.end_node(aliases).map_err(write_error)?;

    let chosen = fdt.begin_node("chosen").map_err(write_error)?;
    fdt.property_string("stdout-path", &uart_path)
        .map_err(write_error)?;
    if !spec.bootargs.is_empty() {
        fdt.property_string("bootargs", spec.bootargs)
            .map_err(write_error)?;
    }
    if let Some((start, end)) = spec.initrd {
        fdt.property_u64("linux,initrd-start", start)
            .map_err(write_error)?;
        fdt.property_u64("linux,initrd-end", end)
            .map_err(write_error)?;
    }
    fdt.end_node(chosen).map_err(write_error)?;

    fdt.end_node(root).map_err(write_error)?;
    fdt.finish().map_err(write_error)
}
