//! QEMU `virt` (ARMv7-A, `qemu-system-arm -M virt,virtualization=on`):
//! the same memory map as the AArch64 machine below 4 GiB, booted in HYP mode.

use crate::Board;

/// QEMU virt, 32-bit.
pub const BOARD: Board = Board {
    name: "qemu-virt-arm",
    early_uart: 0x0900_0000,
    early_uart_model: crate::uart::UartModel::Pl011,
    power_off: crate::PowerOff::Psci,
    stage2_largest_ram_leaf: crate::PAGES_ONLY,
};
