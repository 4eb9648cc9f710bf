//! Armv7-A: CTR / CLIDR / CCSIDR readers and CP15 c7 maintenance by MVA.

use core::arch::asm;

use chroma_mem::HostVirtAddr;

use crate::{CacheError, CacheGeometry, CacheOps};

/// Reads CTR (CP15 c0, opc1 0, c0, opc2 1).
pub fn read_ctr() -> u32 {
    let value: u32;
    // SAFETY: reading an ID register has no side effect; readable at PL1 and PL2.
    unsafe {
        asm!("mrc p15, 0, {}, c0, c0, 1", out(reg) value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Reads CLIDR (CP15 c0, opc1 1, c0, opc2 1).
pub fn read_clidr() -> u32 {
    let value: u32;
    // SAFETY: reading an ID register has no side effect; readable at PL1 and PL2.
    unsafe {
        asm!("mrc p15, 1, {}, c0, c0, 1", out(reg) value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Selects `(level, instruction)` in CSSELR and reads its CCSIDR.
///
/// Call with interrupts masked, as at boot (see the AArch64 twin).
pub fn read_ccsidr(level: u8, instruction: bool) -> u64 {
    let csselr = (u32::from(level.saturating_sub(1)) << 1) | u32::from(instruction);
    let value: u32;
    // SAFETY: 1. Writing CSSELR (p15, 2, c0, c0, 0) only selects which CCSIDR is visible. 2. The ISB makes the selection visible to the CCSIDR read (Armv7 ARM B4.1.41).
    unsafe {
        asm!(
            "mcr p15, 2, {sel}, c0, c0, 0",
            "isb",
            "mrc p15, 1, {val}, c0, c0, 0",
            sel = in(reg) csselr,
            val = out(reg) value,
            options(nomem, nostack, preserves_flags),
        )
    };
    value.into()
}

/// Reads this CPU's cache geometry.
pub fn read_geometry(page_size: u64) -> Result<CacheGeometry, CacheError> {
    CacheGeometry::from_armv7(read_ctr(), read_clidr(), read_ccsidr, page_size)
}

/// Armv7 maintenance by MVA to the Point of Coherency.
#[derive(Clone, Copy, Debug)]
pub struct Armv7CacheOps {
    line: usize,
}

impl Armv7CacheOps {
    /// Maintenance with the stride of CTR.DminLine.
    pub fn new() -> Self {
        let dminline = (read_ctr() >> 16) & 0xf;
        Self {
            line: 4usize << dminline,
        }
    }
}

impl Default for Armv7CacheOps {
    fn default() -> Self {
        Self::new()
    }
}

/// A hypervisor VA as the 32-bit MVA operand. A VA above 4 GiB on a 32-bit
/// core means the hypervisor's own bookkeeping is broken.
// The VA is the hypervisor's own mapping of a page it chose; no guest value
// reaches it, and a 64-bit VA on a 32-bit core is broken state (STYLE E2).
#[allow(clippy::expect_used)]
fn mva(va: HostVirtAddr) -> u32 {
    u32::try_from(va.raw()).expect("Armv7 virtual addresses are 32-bit")
}

// SAFETY: each primitive issues exactly the CP15 operation the trait names.
unsafe impl CacheOps for Armv7CacheOps {
    fn line_size(&self) -> usize {
        self.line
    }

    unsafe fn clean_line(&self, va: HostVirtAddr) {
        // SAFETY: the caller guarantees `va` is mapped; DCCMVAC preserves data.
        unsafe {
            asm!("mcr p15, 0, {}, c7, c10, 1", in(reg) mva(va), options(nostack, preserves_flags))
        };
    }

    unsafe fn invalidate_line(&self, va: HostVirtAddr) {
        // SAFETY: the caller guarantees `va` is mapped and that the line's dirty data is not needed (DCIMVAC discards it).
        unsafe {
            asm!("mcr p15, 0, {}, c7, c6, 1", in(reg) mva(va), options(nostack, preserves_flags))
        };
    }

    unsafe fn clean_invalidate_line(&self, va: HostVirtAddr) {
        // SAFETY: the caller guarantees `va` is mapped; DCCIMVAC preserves data.
        unsafe {
            asm!("mcr p15, 0, {}, c7, c14, 1", in(reg) mva(va), options(nostack, preserves_flags))
        };
    }

    fn invalidate_icache_all(&self) {
        // SAFETY: ICIALLU (the operand is ignored) never changes data.
        unsafe {
            asm!("mcr p15, 0, {}, c7, c5, 0", in(reg) 0u32, options(nostack, preserves_flags))
        };
    }

    fn dsb(&self) {
        // SAFETY: a barrier only waits.
        unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
    }

    fn dmb(&self) {
        // SAFETY: a barrier only orders accesses.
        unsafe { asm!("dmb sy", options(nostack, preserves_flags)) };
    }

    fn isb(&self) {
        // SAFETY: a context synchronisation event has no memory effect.
        unsafe { asm!("isb sy", options(nostack, preserves_flags)) };
    }
}
