//! AArch64: CTR_EL0 / CLIDR_EL1 / CCSIDR_EL1 readers and `DC`/`IC` maintenance.

use core::arch::asm;

use chroma_mem::HostVirtAddr;

use crate::{CacheError, CacheGeometry, CacheOps};

/// Reads CTR_EL0.
pub fn read_ctr_el0() -> u64 {
    let value: u64;
    // SAFETY: reading an ID register has no side effect; it is readable at EL1 and EL2.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads CLIDR_EL1.
pub fn read_clidr_el1() -> u64 {
    let value: u64;
    // SAFETY: reading an ID register has no side effect; it is readable at EL1 and EL2.
    unsafe { asm!("mrs {}, clidr_el1", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Whether FEAT_CCIDX (the 64-bit CCSIDR_EL1 layout) is implemented.
pub fn has_ccidx() -> bool {
    let value: u64;
    // SAFETY: reading an ID register has no side effect. ID_AA64MMFR2_EL1 is spelled by its encoding (S3_0_C0_C7_2) so old assemblers accept it.
    unsafe {
        asm!("mrs {}, s3_0_c0_c7_2", out(reg) value, options(nomem, nostack, preserves_flags))
    };
    (value >> 20) & 0xf != 0
}

/// Selects the cache `(level, instruction)` in CSSELR_EL1 and reads its CCSIDR_EL1.
///
/// Call with interrupts masked (as at boot): an interrupt handler that also
/// wrote CSSELR_EL1 between the two instructions would change what is read.
pub fn read_ccsidr_el1(level: u8, instruction: bool) -> u64 {
    // CSSELR_EL1: Level [3:1] (0-based), InD [0].
    let csselr = (u64::from(level.saturating_sub(1)) << 1) | u64::from(instruction);
    let value: u64;
    // SAFETY: 1. Writing CSSELR_EL1 only changes which CCSIDR_EL1 is visible; no memory or translation state depends on it. 2. The ISB makes the new selection visible to the following read, as the Arm ARM requires after writing CSSELR_EL1.
    unsafe {
        asm!(
            "msr csselr_el1, {sel}",
            "isb",
            "mrs {val}, ccsidr_el1",
            sel = in(reg) csselr,
            val = out(reg) value,
            options(nomem, nostack, preserves_flags),
        )
    };
    value
}

/// Reads this CPU's cache geometry.
pub fn read_geometry(page_size: u64) -> Result<CacheGeometry, CacheError> {
    CacheGeometry::from_aarch64(
        read_ctr_el0(),
        read_clidr_el1(),
        read_ccsidr_el1,
        has_ccidx(),
        page_size,
    )
}

/// AArch64 maintenance by VA to the Point of Coherency.
#[derive(Clone, Copy, Debug)]
pub struct Aarch64CacheOps {
    line: usize,
}

impl Aarch64CacheOps {
    /// Maintenance with the stride of CTR_EL0.DminLine (the smallest D line).
    pub fn new() -> Self {
        let dminline = (read_ctr_el0() >> 16) & 0xf;
        Self {
            line: 4usize << dminline,
        }
    }
}

impl Default for Aarch64CacheOps {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: each primitive issues exactly the instruction the trait names.
unsafe impl CacheOps for Aarch64CacheOps {
    fn line_size(&self) -> usize {
        self.line
    }

    unsafe fn clean_line(&self, va: HostVirtAddr) {
        // SAFETY: the caller guarantees `va` is mapped; DC CVAC writes back and changes no architectural data value.
        unsafe { asm!("dc cvac, {}", in(reg) va.raw(), options(nostack, preserves_flags)) };
    }

    unsafe fn invalidate_line(&self, va: HostVirtAddr) {
        // SAFETY: the caller guarantees `va` is mapped and that the line's dirty data is not needed. At EL2 DC IVAC is a true invalidate.
        unsafe { asm!("dc ivac, {}", in(reg) va.raw(), options(nostack, preserves_flags)) };
    }

    unsafe fn clean_invalidate_line(&self, va: HostVirtAddr) {
        // SAFETY: the caller guarantees `va` is mapped; DC CIVAC preserves data.
        unsafe { asm!("dc civac, {}", in(reg) va.raw(), options(nostack, preserves_flags)) };
    }

    fn invalidate_icache_all(&self) {
        // SAFETY: invalidating instruction caches never changes data; the caller's DSB/ISB make the effect visible.
        unsafe { asm!("ic iallu", options(nostack, preserves_flags)) };
    }

    fn dsb(&self) {
        // SAFETY: a barrier only waits; full system so it covers non-coherent devices.
        unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
    }

    fn dmb(&self) {
        // SAFETY: a barrier only orders accesses.
        unsafe { asm!("dmb sy", options(nostack, preserves_flags)) };
    }

    fn isb(&self) {
        // SAFETY: a context synchronisation event has no memory effect.
        unsafe { asm!("isb", options(nostack, preserves_flags)) };
    }
}
