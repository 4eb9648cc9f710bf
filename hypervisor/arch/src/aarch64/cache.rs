//! The cache operations the hypervisor executes itself: invalidating the
//! early page table (before the MMU and the heap are up), and a guest's
//! trapped set/way maintenance, performed as a clean and invalidate.
//! Everything else, loaded guest images included, goes through the cache
//! crate's `CacheOps`.

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

/// Cleans `start..start+len` to the point of coherency (DC CVAC), for data
/// another CPU reads with its caches off.
pub fn clean_to_poc(start: usize, len: usize) {
    let line = dcache_line();
    let mut address = start & !(line - 1);
    let end = start.saturating_add(len);
    while address < end {
        // SAFETY: a clean writes dirty data back; no data changes.
        unsafe { asm!("dc cvac, {}", in(reg) address, options(nostack, preserves_flags)) };
        address += line;
    }
    // SAFETY: a barrier has no memory-safety effect.
    unsafe { asm!("dsb ish", options(nostack, preserves_flags)) };
}

/// Cleans and invalidates, in this CPU's caches, the data or unified cache
/// line at the level, set and way a guest's set/way operand names (DC
/// CISW), for a trapped DC ISW, CSW or CISW. An operand naming a level
/// without a data or unified cache is ignored (`set_way`).
///
/// No barrier follows: the guest's own DSB after its set/way loop (which
/// does not trap) waits for this maintenance too, as it was issued by the
/// same CPU before it.
pub fn clean_invalidate_by_set_way(guest_operand: u64) {
    let clidr = super::sysreg::clidr_el1();
    let Some(operand) = super::set_way::clean_invalidate_operand(guest_operand, clidr) else {
        return;
    };
    // SAFETY: a clean and invalidate writes a dirty line back before it drops it, so whichever line of this CPU's caches the operand names (the guest's, another VM's or the hypervisor's), no data is lost; the operand's level names a data or unified cache CLIDR_EL1 reports.
    unsafe { asm!("dc cisw, {}", in(reg) operand, options(nostack, preserves_flags)) };
}

/// Cleans and invalidates every line of one data or unified cache of this
/// CPU by set/way (DC CISW over
/// [`super::set_way::whole_cache_operands`]): `level` (1 for L1) with
/// `sets` sets and `ways` ways of `line_size`-byte lines, as CCSIDR_EL1
/// reports them. Returns the number of lines; a level CLIDR_EL1 does not
/// report as a data or unified cache gets none. No barrier follows: the
/// caller issues a DSB once its caches are done.
pub fn clean_invalidate_whole_cache(level: u8, line_size: u32, ways: u32, sets: u32) -> u64 {
    // The level is checked once, with the guest operands' check (set 0,
    // way 0 of the level), not at every line.
    let level_operand = u64::from(level.saturating_sub(1)) << 1;
    if super::set_way::clean_invalidate_operand(level_operand, super::sysreg::clidr_el1()).is_none()
    {
        return 0;
    }
    let mut lines = 0;
    for operand in super::set_way::whole_cache_operands(level, line_size, ways, sets) {
        // SAFETY: a clean and invalidate writes a dirty line back before it drops it, so no data is lost whoever's line it is; the operand names a set and way of a data or unified cache CLIDR_EL1 reports (checked above), within the geometry CCSIDR_EL1 gave.
        unsafe { asm!("dc cisw, {}", in(reg) operand, options(nostack, preserves_flags)) };
        lines += 1;
    }
    lines
}
