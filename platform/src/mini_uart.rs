//! A polled driver for the Raspberry Pi's mini UART (the BCM2835 auxiliary
//! UART, `brcm,bcm2835-aux-uart`): the Pi 3's console on GPIO 14/15, where
//! its device tree's `stdout-path` points, once the firmware set it up
//! (`enable_uart=1` in `config.txt` fixes the core clock its baud rate
//! derives from; chroma leaves the baud rate as the firmware set it).

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite};
use tock_registers::{register_bitfields, register_structs};

register_bitfields![u32,
    /// AUX_MU_IO_REG: the data register (with DLAB clear).
    IO [
        /// The character received or to transmit.
        DATA OFFSET(0) NUMBITS(8) []
    ],
    /// AUX_MU_LSR_REG: line status.
    LSR [
        /// The receive FIFO holds at least one character.
        DATA_READY OFFSET(0) NUMBITS(1) [],
        /// The transmit FIFO can take at least one character.
        TX_EMPTY OFFSET(5) NUMBITS(1) []
    ]
];

register_structs! {
    /// The mini UART's registers, from AUX_MU_IO_REG (the device tree's
    /// `reg`, 0x40 into the auxiliary block).
    Registers {
        (0x00 => io: ReadWrite<u32, IO::Register>),
        (0x04 => _reserved0),
        (0x14 => lsr: ReadOnly<u32, LSR::Register>),
        (0x18 => @END),
    }
}

/// The mini UART at a fixed address.
#[derive(Debug)]
pub struct MiniUart {
    base: usize,
}

impl MiniUart {
    /// A driver for the mini UART whose AUX_MU_IO_REG is at `base`.
    ///
    /// # Safety
    /// `base` must be the mini UART's registers, mapped as device memory
    /// (or reached with the MMU off) for as long as the driver is used, and
    /// used by nothing else.
    pub const unsafe fn new(base: usize) -> Self {
        Self { base }
    }

    fn registers(&self) -> &Registers {
        // SAFETY: `new`'s contract: `base` is the mapped mini UART, used only here.
        unsafe { &*(self.base as *const Registers) }
    }

    /// Writes one byte, waiting while the transmit FIFO is full.
    pub fn write_byte(&self, byte: u8) {
        while !self.registers().lsr.is_set(LSR::TX_EMPTY) {
            core::hint::spin_loop();
        }
        self.registers().io.write(IO::DATA.val(u32::from(byte)));
    }

    /// Reads a received byte, if any.
    pub fn read_byte(&self) -> Option<u8> {
        if self.registers().lsr.is_set(LSR::DATA_READY) {
            // DATA is 8 bits wide: its low byte is all of it.
            Some(self.registers().io.read(IO::DATA).to_le_bytes()[0])
        } else {
            None
        }
    }
}
