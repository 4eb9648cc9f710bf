//! A polled driver for the physical Arm PL011 console UART.

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
use tock_registers::{register_bitfields, register_structs};

register_bitfields![u32,
    /// Data register.
    DR [
        /// The character received or to transmit (bits 11:8 are receive errors).
        DATA OFFSET(0) NUMBITS(8) []
    ],
    /// Flag register.
    FR [
        /// Receive FIFO empty.
        RXFE OFFSET(4) NUMBITS(1) [],
        /// Transmit FIFO full.
        TXFF OFFSET(5) NUMBITS(1) []
    ]
];

register_structs! {
    /// PL011 registers used by the driver (DDI 0183).
    Registers {
        (0x000 => dr: ReadWrite<u32, DR::Register>),
        (0x004 => _reserved0),
        (0x018 => fr: ReadOnly<u32, FR::Register>),
        (0x01c => _reserved1),
        (0x044 => icr: WriteOnly<u32>),
        (0x048 => @END),
    }
}

/// The physical console.
#[derive(Debug)]
pub struct Pl011 {
    base: usize,
}

impl Pl011 {
    /// A driver for the UART at `base`.
    ///
    /// # Safety
    /// `base` must be a PL011 mapped as device memory (or reached with the
    /// MMU off) for as long as the driver is used, and used by nothing else.
    pub const unsafe fn new(base: usize) -> Self {
        Self { base }
    }

    fn registers(&self) -> &Registers {
        // SAFETY: `new`'s contract: `base` is a mapped PL011 used only here.
        unsafe { &*(self.base as *const Registers) }
    }

    /// Writes one byte, waiting while the transmit FIFO is full.
    pub fn write_byte(&self, byte: u8) {
        while self.registers().fr.is_set(FR::TXFF) {
            core::hint::spin_loop();
        }
        self.registers().dr.write(DR::DATA.val(u32::from(byte)));
    }

    /// Reads a received byte, if any.
    pub fn read_byte(&self) -> Option<u8> {
        if self.registers().fr.is_set(FR::RXFE) {
            None
        } else {
            // DATA is 8 bits wide: its low byte is all of it.
            Some(self.registers().dr.read(DR::DATA).to_le_bytes()[0])
        }
    }

    /// Clears any pending interrupt (the driver polls).
    pub fn clear_interrupts(&self) {
        self.registers().icr.set(0x7ff);
    }
}
