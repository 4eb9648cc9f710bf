//! The one cache operation the boot path needs before the MMU and the heap
//! are up (invalidating the early page table). Everything else, loaded guest
//! images included, goes through the cache crate's `CacheOps`.

use core::arch::asm;

/// Smallest D-cache line in the system, from CTR_EL0.DminLine.
fn dcache_line() -> usize {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effect.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
    4 << ((ctr >> 16) & 0xf)
}

/// Invalidates `start..start+len` in the D-cache, cleaning partial lines at
/// either end so neighbouring data survives (used before the MMU is on).
pub fn invalidate_dcache(start: usize, len: usize) {
    let line = dcache_line();
    let mut address = start & !(line - 1);
    let end = start.saturating_add(len);
    while address < end {
        let whole = address >= start && address + line <= end;
        if whole {
            // SAFETY: the caller owns the whole line: dropping it loses nothing.
            unsafe { asm!("dc ivac, {}", in(reg) address, options(nostack, preserves_flags)) };
        } else {
            // SAFETY: a partial line is cleaned first: no data is lost.
            unsafe { asm!("dc civac, {}", in(reg) address, options(nostack, preserves_flags)) };
        }
        address += line;
    }
    // SAFETY: a barrier has no memory-safety effect.
    unsafe { asm!("dsb ish", options(nostack, preserves_flags)) };
}
