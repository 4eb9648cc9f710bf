//! Raspberry Pi 3 Model B (BCM2837, four Cortex-A53, no GIC: the BCM2836
//! per-core local interrupt controller), as the firmware or QEMU's
//! `raspi3b` starts it: the image at 0x80000 in EL2, the other cores on
//! the spin table, no PSCI.

use crate::uart::UartModel;
use crate::{Board, PowerOff};

/// The BCM2837's power-management block (its watchdog resets the SoC).
const PM_BASE: usize = 0x3f10_0000;

/// Raspberry Pi 3 Model B.
pub const BOARD: Board = Board {
    name: "rpi3",
    // The mini UART: GPIO 14/15 on the board with `enable_uart=1` (the
    // PL011 drives Bluetooth there), and its device tree's `stdout-path`.
    // Under QEMU it is the second serial port.
    early_uart: 0x3f21_5040,
    early_uart_model: UartModel::MiniUart,
    power_off: PowerOff::Bcm2835Watchdog { base: PM_BASE },
    stage2_largest_ram_leaf: crate::LARGEST_LEAF,
};
