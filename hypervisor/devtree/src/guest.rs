//! The device tree each VM boots with: QEMU `virt`'s machine, as QEMU
//! itself describes it (`-M virt` without `virtualization=on`, dumped with
//! `-machine dumpdtb` and compared with `dtc -I dtb -O dts`), so a kernel
//! built for QEMU virt boots unchanged.

use alloc::vec::Vec;

use crate::writer::FdtWriter;

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

    let mut fdt = FdtWriter::new();
    let root = fdt.begin_node("");
    fdt.property_u32("interrupt-parent", GIC_PHANDLE);
    fdt.property_string("model", "chroma");
    fdt.property_u32("#size-cells", 2);
    fdt.property_u32("#address-cells", 2);
    fdt.property_string("compatible", "linux,dummy-virt");

    // PSCI over HVC, with the function IDs QEMU lists (Linux ignores them
    // for 0.2+ but older kernels read them).
    let psci = fdt.begin_node("psci");
    fdt.property_u32("migrate", 0xC400_0005);
    fdt.property_u32("cpu_on", 0xC400_0003);
    fdt.property_u32("cpu_off", 0x8400_0002);
    fdt.property_u32("cpu_suspend", 0xC400_0001);
    fdt.property_string("method", "hvc");
    fdt.property_string_list("compatible", &["arm,psci-1.0", "arm,psci-0.2", "arm,psci"]);
    fdt.end_node(psci);

    let memory_name = alloc::format!("memory@{:x}", spec.memory_base);
    let memory = fdt.begin_node(&memory_name);
    fdt.property_ranges("reg", &[(spec.memory_base, spec.memory_size)]);
    fdt.property_string("device_type", "memory");
    fdt.end_node(memory);

    // virtio-mmio transports, lowest address first as in QEMU's tree, so
    // Linux probes (and names) them in address order.
    for index in 0..spec.virtio_mmio_count {
        let base = VIRTIO_MMIO_BASE + u64::from(index) * VIRTIO_MMIO_STRIDE;
        let node = fdt.begin_node(&alloc::format!("virtio_mmio@{base:x}"));
        fdt.property_null("dma-coherent");
        fdt.property_array_u32(
            "interrupts",
            &[GIC_SPI, VIRTIO_MMIO_SPI_BASE + index, IRQ_EDGE_RISING],
        );
        fdt.property_ranges("reg", &[(base, VIRTIO_MMIO_STRIDE)]);
        fdt.property_string("compatible", "virtio,mmio");
        fdt.end_node(node);
    }

    let uart_name = alloc::format!("pl011@{UART_BASE:x}");
    let uart = fdt.begin_node(&uart_name);
    fdt.property_string_list("clock-names", &["uartclk", "apb_pclk"]);
    fdt.property_array_u32("clocks", &[CLOCK_PHANDLE, CLOCK_PHANDLE]);
    fdt.property_array_u32("interrupts", &[GIC_SPI, UART_SPI, IRQ_LEVEL_HIGH]);
    fdt.property_ranges("reg", &[(UART_BASE, UART_SIZE)]);
    fdt.property_string_list("compatible", &["arm,pl011", "arm,primecell"]);
    fdt.end_node(uart);

    let gic = fdt.begin_node(&alloc::format!("intc@{GICD_BASE:x}"));
    fdt.property_u32("phandle", GIC_PHANDLE);
    match spec.gic {
        GuestGic::V2 => {
            fdt.property_ranges("reg", &[(GICD_BASE, GICD_SIZE), (GICC_BASE, GICC_SIZE)]);
            fdt.property_string("compatible", "arm,cortex-a15-gic");
        }
        GuestGic::V3 => {
            let redistributors = GICR_STRIDE * u64::from(spec.vcpu_count);
            fdt.property_ranges(
                "reg",
                &[(GICD_BASE, GICD_SIZE), (GICR_BASE, redistributors)],
            );
            fdt.property_u32("#redistributor-regions", 1);
            fdt.property_string("compatible", "arm,gic-v3");
        }
    }
    fdt.property_null("interrupt-controller");
    fdt.property_u32("#interrupt-cells", 3);
    fdt.end_node(gic);

    let cpus = fdt.begin_node("cpus");
    fdt.property_u32("#size-cells", 0);
    fdt.property_u32("#address-cells", 1);
    for index in 0..spec.vcpu_count {
        let cpu = fdt.begin_node(&alloc::format!("cpu@{index:x}"));
        fdt.property_u32("reg", index);
        fdt.property_string("enable-method", "psci");
        fdt.property_string("compatible", spec.cpu_compatible);
        fdt.property_string("device_type", "cpu");
        fdt.end_node(cpu);
    }
    fdt.end_node(cpus);

    // Timer PPIs, level high; on GICv2 the flags also carry the mask of
    // CPUs the PPI is wired to (bits 15:8), as QEMU writes them.
    let timer = fdt.begin_node("timer");
    let flags = match spec.gic {
        GuestGic::V2 => IRQ_LEVEL_HIGH | (((1u32 << spec.vcpu_count) - 1) << 8),
        GuestGic::V3 => IRQ_LEVEL_HIGH,
    };
    let [a, b, c, d] = TIMER_PPIS;
    let timer_interrupts = [
        GIC_PPI, a, flags, GIC_PPI, b, flags, GIC_PPI, c, flags, GIC_PPI, d, flags,
    ];
    fdt.property_array_u32("interrupts", &timer_interrupts);
    fdt.property_null("always-on");
    fdt.property_string_list("compatible", &["arm,armv8-timer", "arm,armv7-timer"]);
    fdt.end_node(timer);

    let clock = fdt.begin_node("apb-pclk");
    fdt.property_u32("phandle", CLOCK_PHANDLE);
    fdt.property_string("clock-output-names", "clk24mhz");
    fdt.property_u32("clock-frequency", APB_PCLK_HZ);
    fdt.property_u32("#clock-cells", 0);
    fdt.property_string("compatible", "fixed-clock");
    fdt.end_node(clock);

    let uart_path = alloc::format!("/{uart_name}");
    let aliases = fdt.begin_node("aliases");
    fdt.property_string("serial0", &uart_path);
    fdt.end_node(aliases);

    let chosen = fdt.begin_node("chosen");
    fdt.property_string("stdout-path", &uart_path);
    if !spec.bootargs.is_empty() {
        fdt.property_string("bootargs", spec.bootargs);
    }
    if let Some((start, end)) = spec.initrd {
        fdt.property_u64("linux,initrd-start", start);
        fdt.property_u64("linux,initrd-end", end);
    }
    fdt.end_node(chosen);

    fdt.end_node(root);
    fdt.finish().ok_or(DevtreeError::Write)
}
