//! Single loads and stores of a chosen width, for device registers.
//!
//! A load that faults and is skipped leaves [`NOT_LOADED`] in its result.

use core::arch::asm;

/// What a skipped load returns.
pub const NOT_LOADED: u64 = 0x5a5a_5a5a_5a5a_5a5a;

/// An access width.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// 8 bits.
    Byte,
    /// 16 bits.
    Half,
    /// 32 bits.
    Word,
    /// 64 bits.
    Double,
}

/// Loads `width` bits from `address` (zero-extended).
pub fn read(width: Width, address: u64) -> u64 {
    let mut value = NOT_LOADED;
    // SAFETY: deliberately hostile accesses to device or unmapped IPAs; a fault is caught and skipped by `catch`, which leaves `value` as is. No Rust-visible memory is touched.
    unsafe {
        match width {
            Width::Byte => {
                asm!("ldrb {v:w}, [{a}]", v = inout(reg) value, a = in(reg) address, options(nostack))
            }
            Width::Half => {
                asm!("ldrh {v:w}, [{a}]", v = inout(reg) value, a = in(reg) address, options(nostack))
            }
            Width::Word => {
                asm!("ldr {v:w}, [{a}]", v = inout(reg) value, a = in(reg) address, options(nostack))
            }
            Width::Double => {
                asm!("ldr {v}, [{a}]", v = inout(reg) value, a = in(reg) address, options(nostack))
            }
        }
    }
    value
}

/// Stores the low `width` bits of `value` at `address`.
pub fn write(width: Width, address: u64, value: u64) {
    // SAFETY: as in `read`: device or unmapped IPAs chosen by the case, never memory the guest's Rust code owns.
    unsafe {
        match width {
            Width::Byte => {
                asm!("strb {v:w}, [{a}]", v = in(reg) value, a = in(reg) address, options(nostack))
            }
            Width::Half => {
                asm!("strh {v:w}, [{a}]", v = in(reg) value, a = in(reg) address, options(nostack))
            }
            Width::Word => {
                asm!("str {v:w}, [{a}]", v = in(reg) value, a = in(reg) address, options(nostack))
            }
            Width::Double => {
                asm!("str {v}, [{a}]", v = in(reg) value, a = in(reg) address, options(nostack))
            }
        }
    }
}

/// A 32-bit load.
pub fn read32(address: u64) -> u32 {
    (read(Width::Word, address) & 0xffff_ffff) as u32
}

/// A 32-bit store.
pub fn write32(address: u64, value: u32) {
    write(Width::Word, address, u64::from(value));
}
