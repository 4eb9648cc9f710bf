//! Cells shared between CPUs and exception handlers, without atomics.
//!
//! With the MMU off every data access is Device-nGnRnE: uncached, and
//! exclusives are not guaranteed to work, so there are no atomics here. A
//! [`Shared`] is a plain value read and written with volatile accesses of at
//! most 64 bits, which are single-copy atomic on AArch64 when aligned. On
//! AArch32 a 64-bit value goes through one LDRD or STRD, single-copy atomic
//! at an 8-byte-aligned address on cores with LPAE (Cortex-A15, and every
//! ARMv8 core in AArch32); the compiler might split a plain volatile access. Callers
//! keep to one writer per cell (one CPU, or one CPU and its own IRQ handler)
//! and order publication with [`publish`] / [`observe`].

use core::cell::UnsafeCell;

/// A `Copy` value of at most 8 bytes shared between CPUs, one writer at a time.
#[repr(transparent)]
pub struct Shared<T: Copy>(UnsafeCell<T>);

// SAFETY: every access is a volatile load or store of the whole value, and
// `new` only accepts types of at most 8 bytes with their natural alignment, so
// each access is single-copy atomic: no reader sees a torn value. The
// single-writer rule (module docs) only decides *which* value a reader sees.
unsafe impl<T: Copy + Send> Sync for Shared<T> {}

impl<T: Copy> Shared<T> {
    /// Creates a cell holding `value`.
    ///
    /// Panics (at compile time, for the `static`s this is meant for) for types
    /// larger than 8 bytes or not aligned to their size.
    pub const fn new(value: T) -> Self {
        assert!(
            core::mem::size_of::<T>() <= 8
                && core::mem::align_of::<T>() == core::mem::size_of::<T>(),
            "Shared holds naturally aligned values of at most 8 bytes"
        );
        Self(UnsafeCell::new(value))
    }

    /// Reads the value.
    pub fn get(&self) -> T {
        #[cfg(target_arch = "arm")]
        if core::mem::size_of::<T>() == 8 {
            // SAFETY: the pointer comes from a live `UnsafeCell` of an 8-byte, 8-byte-aligned `T` (checked in `new`); the value was written as a whole `T`, so its bytes are a valid `T`.
            return unsafe {
                let bits = crate::arch::load_u64_single_copy(self.0.get().cast::<u64>());
                core::mem::transmute_copy::<u64, T>(&bits)
            };
        }
        // SAFETY: the pointer comes from a live `UnsafeCell`, so it is valid and aligned; the read is single-copy atomic (see the `Sync` impl).
        unsafe { core::ptr::read_volatile(self.0.get()) }
    }

    /// Writes the value.
    pub fn set(&self, value: T) {
        #[cfg(target_arch = "arm")]
        if core::mem::size_of::<T>() == 8 {
            // SAFETY: as in `get`; `T` is 8 bytes (checked above), so reading it as a `u64` reads exactly its bytes.
            unsafe {
                let bits = core::mem::transmute_copy::<T, u64>(&value);
                crate::arch::store_u64_single_copy(self.0.get().cast::<u64>(), bits);
            }
            return;
        }
        // SAFETY: as in `get`; concurrent writers are excluded by the single-writer rule, and even if broken, each store is whole.
        unsafe { core::ptr::write_volatile(self.0.get(), value) }
    }
}

/// Orders earlier stores before later ones, as seen by other CPUs: call it
/// after writing data and before setting the flag that announces it.
pub fn publish() {
    crate::arch::dmb_sy();
}

/// Orders the load of a flag before later loads of the data it announces.
pub fn observe() {
    crate::arch::dmb_sy();
}
