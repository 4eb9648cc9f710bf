//! HYP-mode system registers. Reads are safe; writes that can break the
//! hypervisor's own isolation (its translation regime, its vectors) are
//! `unsafe fn` (STYLE.md U4).
//!
//! Through `aarch32-cpu` where it has the register; hand-written for HTTBR
//! (a 64-bit MCRR), HTCR, TLBIALLH and the banked SPSRs, which it lacks.

use aarch32_cpu::register::{Cpsr, Hdfar, Hifar, Hmair0, Hmair1, Hpfar, Hsctlr, Hsr, Hvbar, Mpidr};
use core::arch::asm;

/// CPSR.M of HYP mode.
pub const MODE_HYP: u32 = 0b1_1010;

/// The current processor mode (CPSR.M).
pub fn current_mode() -> u32 {
    Cpsr::read().raw_value() & 0x1f
}

/// MPIDR.
pub fn mpidr() -> u32 {
    Mpidr::read().0
}

/// HSR: the syndrome of the last exception taken to HYP mode.
pub fn hsr() -> u32 {
    Hsr::read().raw_value()
}

/// HDFAR: the VA of the last data abort taken to HYP mode.
pub fn hdfar() -> u32 {
    Hdfar::read().0
}

/// HIFAR: the VA of the last prefetch abort taken to HYP mode.
pub fn hifar() -> u32 {
    Hifar::read().0
}

/// HPFAR: `IPA[39:12]` of a stage-2 fault, in bits `[31:4]`.
pub fn hpfar() -> u32 {
    Hpfar::read().0
}

/// HSCTLR.
pub fn hsctlr() -> u32 {
    Hsctlr::read().raw_value()
}

/// The SPSRs of the modes HYP mode does not run in (SVC, ABT, UND, IRQ,
/// FIQ), for the exception report: a guest's state, once there are guests.
pub fn banked_spsrs() -> [u32; 5] {
    let (svc, abt, und, irq, fiq): (u32, u32, u32, u32, u32);
    // SAFETY: MRS (banked register) only reads; it is defined in HYP mode
    // for every mode's SPSR (DDI 0406C B9.3.9), and this code runs in HYP.
    unsafe {
        asm!(
            ".arch_extension virt",
            "mrs {svc}, SPSR_svc",
            "mrs {abt}, SPSR_abt",
            "mrs {und}, SPSR_und",
            "mrs {irq}, SPSR_irq",
            "mrs {fiq}, SPSR_fiq",
            svc = out(reg) svc,
            abt = out(reg) abt,
            und = out(reg) und,
            irq = out(reg) irq,
            fiq = out(reg) fiq,
            options(nomem, nostack, preserves_flags)
        );
    }
    [svc, abt, und, irq, fiq]
}

/// Sets HVBAR.
///
/// # Safety
/// `base` must be the 32-byte-aligned address of HYP vectors that stay
/// mapped and executable for as long as HVBAR holds it.
pub unsafe fn write_hvbar(base: u32) {
    // SAFETY: the caller's contract is aarch32-cpu's.
    unsafe { Hvbar::write(Hvbar(base)) };
}

/// Loads the HYP translation regime (HMAIR0/1, HTCR, HTTBR), then
/// invalidates every HYP TLB entry. The MMU's on/off state is not changed.
///
/// # Safety
/// `httbr` must be the root of HYP stage-1 tables (and `htcr`, `hmair`
/// their matching control values) that map the running code, its stack and
/// its data at their current addresses with the permissions they need.
pub unsafe fn load_translation(hmair: (u32, u32), htcr: u32, httbr: u64) {
    let [low0, low1, low2, low3, high0, high1, high2, high3] = httbr.to_le_bytes();
    let low = u32::from_le_bytes([low0, low1, low2, low3]);
    let high = u32::from_le_bytes([high0, high1, high2, high3]);
    // SAFETY: HMAIR0/1 only give meaning to AttrIndx values; the caller
    // passes the pair the tables were built for, and the MMU uses them only
    // after the TLB invalidation below.
    unsafe {
        Hmair0::write(Hmair0(hmair.0));
        Hmair1::write(Hmair1(hmair.1));
    }
    // SAFETY:
    // 1. MCR HTCR (p15, 4, c2, c0, 2) and MCRR HTTBR (p15, 4, c2) are HYP
    //    registers; this code runs in HYP mode.
    // 2. The caller guarantees the tables map what runs, so the next fetch
    //    and access translate (or the MMU is still off).
    // 3. DSB orders the table writes before the walker may read them; ISB
    //    makes the new regime visible before TLBIALLH (p15, 4, c8, c7, 0)
    //    drops stale entries, and the last DSB+ISB completes that.
    unsafe {
        asm!(
            "dsb",
            "mcr p15, 4, {htcr}, c2, c0, 2",
            "mcrr p15, 4, {low}, {high}, c2",
            "isb",
            "mcr p15, 4, {zero}, c8, c7, 0",
            "dsb",
            "isb",
            htcr = in(reg) htcr,
            low = in(reg) low,
            high = in(reg) high,
            zero = in(reg) 0u32,
            options(nostack, preserves_flags)
        );
    }
}

/// HTCR (for the report).
pub fn htcr() -> u32 {
    let value: u32;
    // SAFETY: MRC only reads HTCR, a HYP register; this code runs in HYP mode.
    unsafe {
        asm!("mrc p15, 4, {}, c2, c0, 2", out(reg) value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// HTTBR (for the report).
pub fn httbr() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: MRRC only reads HTTBR, a HYP register; this code runs in HYP mode.
    unsafe {
        asm!("mrrc p15, 4, {}, {}, c2", out(reg) low, out(reg) high, options(nomem, nostack, preserves_flags))
    };
    u64::from(high) << 32 | u64::from(low)
}

/// Writes HSCTLR (turning the MMU and caches on or off, WXN).
///
/// # Safety
/// With M set, HTTBR/HTCR/HMAIR must already hold tables that map the
/// running code, stack and data at their current (identity) addresses.
pub unsafe fn write_hsctlr(value: u32) {
    // Complete every table write and earlier access before the switch.
    aarch32_cpu::asm::dsb();
    Hsctlr::write(Hsctlr::new_with_raw_value(value));
    // The next instruction is fetched under the new regime.
    aarch32_cpu::asm::isb();
}

/// Invalidates every HYP TLB entry after a change to live HYP tables.
pub fn invalidate_hyp_tlb() {
    // SAFETY: TLBIALLH (p15, 4, c8, c7, 0) only drops cached translations;
    // the tables themselves stay; DSB/ISB complete it. HYP mode only.
    unsafe {
        asm!(
            "dsb",
            "mcr p15, 4, {zero}, c8, c7, 0",
            "dsb",
            "isb",
            zero = in(reg) 0u32,
            options(nostack, preserves_flags)
        )
    };
}

/// Cleans and invalidates the data cache lines of `[start, start + length)`
/// to the point of coherency (DCCIMVAC), so a table written with the MMU
/// (and so the cache) off is not shadowed by a stale line once it is on.
pub fn clean_invalidate_dcache(start: usize, length: usize) {
    /// The smallest data cache line of the supported cores (Cortex-A7/A15: 64 bytes).
    const LINE: usize = 64;
    let end = start.saturating_add(length);
    let mut address = start & !(LINE - 1);
    while address < end {
        // SAFETY: DCCIMVAC (p15, 0, c7, c14, 1) writes back and drops one
        // line; it changes no memory contents as seen by the program.
        unsafe {
            asm!("mcr p15, 0, {}, c7, c14, 1", in(reg) address, options(nostack, preserves_flags))
        };
        address = address.saturating_add(LINE);
    }
    aarch32_cpu::asm::dsb();
}

/// Asks the MMU whether the HYP regime lets this CPU read (or, with
/// `write`, write) the byte at `va`, with ATS1HR/ATS1HW and the 64-bit
/// (long-descriptor) PAR: `Some(physical address)` if it does.
pub fn hyp_translate(va: u32, write: bool) -> Option<u64> {
    let (low, high): (u32, u32);
    // SAFETY: ATS1HR (p15, 4, c7, c8, 0) and ATS1HW (p15, 4, c7, c8, 1)
    // only translate, writing the result to PAR; no memory is accessed.
    // PAR is this CPU's and read right after (MRRC p15, 0, c7) with an ISB
    // between, so no other translation can overwrite it in between (IRQs
    // are masked in HYP mode here).
    unsafe {
        if write {
            asm!("mcr p15, 4, {}, c7, c8, 1", in(reg) va, options(nostack, preserves_flags));
        } else {
            asm!("mcr p15, 4, {}, c7, c8, 0", in(reg) va, options(nostack, preserves_flags));
        }
        asm!(
            "isb",
            "mrrc p15, 0, {low}, {high}, c7",
            low = out(reg) low,
            high = out(reg) high,
            options(nostack, preserves_flags)
        );
    }
    let par = u64::from(high) << 32 | u64::from(low);
    // PAR.F (bit 0) set: the translation faulted.
    (par & 1 == 0).then_some(par & 0x00ff_ffff_f000 | u64::from(va & 0xfff))
}
