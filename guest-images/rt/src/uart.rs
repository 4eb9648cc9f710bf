//! A transmit-only PL011 driver, enough for a console.
//!
//! The guest does not program baud rate or line control: QEMU's PL011 and
//! chroma's emulated one both transmit as they come, and a guest that touches
//! fewer registers needs less from an emulator. Only DR and FR are used.

use core::fmt;
use core::ptr::NonNull;

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

use crate::shared::Shared;

/// Where the PL011 is on the QEMU `virt` machine (and in chroma's guest map).
pub const QEMU_VIRT_PL011: usize = 0x0900_0000;

register_bitfields! {u32,
    /// Flag register.
    FR [
        /// Transmit FIFO full.
        TXFF OFFSET(5) NUMBITS(1) [],
        /// UART busy transmitting.
        BUSY OFFSET(3) NUMBITS(1) []
    ]
}

register_structs! {
    /// The PL011 registers this driver uses (PrimeCell UART, TRM section 3.2).
    Pl011Registers {
        (0x00 => dr: ReadWrite<u32>),
        (0x04 => _reserved0),
        (0x18 => fr: ReadOnly<u32, FR::Register>),
        (0x1c => @END),
    }
}

/// The console's base address; set once from the DTB by the boot CPU before
/// any other CPU starts.
static BASE: Shared<usize> = Shared::new(QEMU_VIRT_PL011);

/// Points the console at the PL011 at `base`.
///
/// # Safety
///
/// `base` must be the physical address of a PL011's register frame, mapped
/// for the whole run (with the MMU off: the device exists at that address).
pub unsafe fn set_base(base: usize) {
    BASE.set(base);
}

/// A handle on the console PL011; it writes bytes as they come.
pub struct Uart {
    registers: NonNull<Pl011Registers>,
}

impl Uart {
    /// Returns a handle on the console PL011.
    pub fn console() -> Self {
        // The base is never 0: it starts as QEMU_VIRT_PL011 and `set_base`
        // callers pass a device address.
        let registers = NonNull::new(BASE.get() as *mut Pl011Registers)
            .unwrap_or(NonNull::from(Self::fallback()));
        Self { registers }
    }

    fn fallback() -> &'static Pl011Registers {
        // SAFETY: QEMU_VIRT_PL011 is the PL011 of the machine this crate targets; it is a device, never RAM, so no Rust object aliases it.
        unsafe { &*(QEMU_VIRT_PL011 as *const Pl011Registers) }
    }

    fn registers(&self) -> &Pl011Registers {
        // SAFETY: `registers` points at a PL011 register frame (the invariant of `set_base`); device registers are only accessed through tock-registers' volatile cells, so a shared reference is sound.
        unsafe { self.registers.as_ref() }
    }

    /// Writes one byte, waiting while the transmit FIFO is full.
    pub fn write_byte(&mut self, byte: u8) {
        let registers = self.registers();
        while registers.fr.is_set(FR::TXFF) {
            core::hint::spin_loop();
        }
        registers.dr.set(u32::from(byte));
    }
}

impl fmt::Write for Uart {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for byte in text.bytes() {
            self.write_byte(byte);
        }
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(arguments: fmt::Arguments<'_>) {
    use fmt::Write;
    // The console never fails; ignore the `fmt::Error` that only a failing
    // `Display` impl could produce.
    let _ = Uart::console().write_fmt(arguments);
}
