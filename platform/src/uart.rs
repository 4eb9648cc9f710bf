//! The console UART, whichever model the board's device tree names: the
//! Arm PL011, or the Raspberry Pi's mini UART.

use crate::mini_uart::MiniUart;
use crate::pl011::Pl011;

/// A UART model this build drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartModel {
    /// The Arm PL011 (`arm,pl011`).
    Pl011,
    /// The BCM2835 auxiliary mini UART (`brcm,bcm2835-aux-uart`).
    MiniUart,
}

/// A console UART.
#[derive(Debug)]
pub enum Uart {
    /// A PL011.
    Pl011(Pl011),
    /// A mini UART.
    MiniUart(MiniUart),
}

impl Uart {
    /// A driver for the `model` UART at `base`.
    ///
    /// # Safety
    /// `base` must be that UART's registers, mapped as device memory (or
    /// reached with the MMU off) for as long as the driver is used, and
    /// used by nothing else.
    pub const unsafe fn new(model: UartModel, base: usize) -> Self {
        match model {
            // SAFETY: the caller's contract is the driver's.
            UartModel::Pl011 => Uart::Pl011(unsafe { Pl011::new(base) }),
            // SAFETY: as above.
            UartModel::MiniUart => Uart::MiniUart(unsafe { MiniUart::new(base) }),
        }
    }

    /// Writes one byte, waiting while the transmit FIFO is full.
    pub fn write_byte(&self, byte: u8) {
        match self {
            Uart::Pl011(uart) => uart.write_byte(byte),
            Uart::MiniUart(uart) => uart.write_byte(byte),
        }
    }

    /// Reads a received byte, if any.
    pub fn read_byte(&self) -> Option<u8> {
        match self {
            Uart::Pl011(uart) => uart.read_byte(),
            Uart::MiniUart(uart) => uart.read_byte(),
        }
    }
}

impl core::fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
        Ok(())
    }
}
