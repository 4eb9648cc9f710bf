//! QEMU `virt` (AArch64, `virtualization=on`): the reference board.

use crate::{Board, GuestLayout};

/// The QEMU virt guest layout (hw/arm/virt.c `base_memmap`).
pub const QEMU_VIRT_LAYOUT: GuestLayout = GuestLayout {
    gicd: 0x0800_0000,
    gicc: 0x0801_0000,
    gicr: 0x080a_0000,
    uart: 0x0900_0000,
    uart_spi: 1,
    virtio_mmio: 0x0a00_0000,
    virtio_spi: 16,
};

/// QEMU virt.
pub const BOARD: Board = Board {
    name: "qemu-virt-aarch64",
    early_uart: 0x0900_0000,
    guest_layout: QEMU_VIRT_LAYOUT,
};
