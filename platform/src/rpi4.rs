//! Raspberry Pi 4 (BCM2711, four Cortex-A72, GIC-400), as the firmware or
//! QEMU's `raspi4b` starts it: the image at 0x80000 in EL2, the other cores
//! on the spin table, no PSCI.

use crate::{Board, PowerOff};

/// The BCM2711's power-management block (its watchdog resets the SoC).
const PM_BASE: usize = 0xfe10_0000;

/// Raspberry Pi 4 Model B.
pub const BOARD: Board = Board {
    name: "rpi4",
    // The mini UART: GPIO 14/15 on the board with `enable_uart=1` (the
    // PL011 drives Bluetooth there), and its device tree's `stdout-path`
    // (serial1). Under QEMU it is the second serial port.
    early_uart: 0xfe21_5040,
    early_uart_model: crate::uart::UartModel::MiniUart,
    power_off: PowerOff::Bcm2835Watchdog { base: PM_BASE },
    stage2_largest_ram_leaf: crate::LARGEST_LEAF,
};
