//! Raspberry Pi 4 (BCM2711, four Cortex-A72, GIC-400), as the firmware or
//! QEMU's `raspi4b` starts it: the image at 0x80000 in EL2, the other cores
//! on the spin table, no PSCI.

use crate::{Board, PowerOff};

/// The BCM2711's power-management block (its watchdog resets the SoC).
const PM_BASE: usize = 0xfe10_0000;

/// Raspberry Pi 4 Model B.
pub const BOARD: Board = Board {
    name: "rpi4",
    // The PL011 (UART0): QEMU's first serial port, and GPIO 14/15 on the
    // board with `enable_uart=1` and the Bluetooth overlay off.
    early_uart: 0xfe20_1000,
    early_uart_model: crate::uart::UartModel::Pl011,
    power_off: PowerOff::Bcm2835Watchdog { base: PM_BASE },
};
