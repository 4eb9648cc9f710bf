//! Boards chroma runs on: each is mostly constant data (what the device tree
//! does not say, or what is needed before it is parsed) plus the small
//! drivers for its console. Board facts otherwise come from the device tree.
#![no_std]
#![deny(missing_docs)]

pub mod pl011;
pub mod qemu_virt_aarch64;

/// What chroma needs to know about a board before and beyond its device tree.
#[derive(Clone, Copy, Debug)]
pub struct Board {
    /// The name the build and `--board` use.
    pub name: &'static str,
    /// The console UART, used until the device tree is parsed.
    pub early_uart: usize,
    /// The guest-physical layout every VM sees.
    pub guest_layout: GuestLayout,
}

/// Where a VM's emulated devices sit (the QEMU `virt` layout on every board,
/// so a guest built for QEMU virt runs unchanged).
#[derive(Clone, Copy, Debug)]
pub struct GuestLayout {
    /// GIC distributor.
    pub gicd: u64,
    /// GICv2 CPU interface.
    pub gicc: u64,
    /// GICv3 redistributors (0x20000 each).
    pub gicr: u64,
    /// PL011 UART.
    pub uart: u64,
    /// The UART's SPI number (INTID - 32).
    pub uart_spi: u32,
    /// First virtio-mmio transport (then every 0x200).
    pub virtio_mmio: u64,
    /// The first virtio-mmio transport's SPI number.
    pub virtio_spi: u32,
}

/// The board this image was built for.
#[cfg(feature = "board-qemu-virt-aarch64")]
pub const BOARD: Board = qemu_virt_aarch64::BOARD;
