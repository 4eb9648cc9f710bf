//! QEMU `virt` (AArch64, `virtualization=on`): the reference board.

use crate::Board;

/// QEMU virt.
pub const BOARD: Board = Board {
    name: "qemu-virt-aarch64",
    early_uart: 0x0900_0000,
    early_uart_model: crate::uart::UartModel::Pl011,
    power_off: crate::PowerOff::Psci,
    stage2_largest_ram_leaf: crate::PAGES_ONLY,
};
