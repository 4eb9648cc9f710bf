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
    // SAFETY: MRS (banked register) only reads; it is defined in HYP mode for every mode's SPSR (DDI 0406C B9.3.9), and this code runs in HYP.
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
    // SAFETY: HMAIR0/1 only give meaning to AttrIndx values; the caller passes the pair the tables were built for, and the MMU uses them only after the TLB invalidation below.
    unsafe {
        Hmair0::write(Hmair0(hmair.0));
        Hmair1::write(Hmair1(hmair.1));
    }
    // SAFETY: 1. MCR HTCR (p15, 4, c2, c0, 2) and MCRR HTTBR (p15, 4, c2) are HYP registers; this code runs in HYP mode. 2. The caller guarantees the tables map what runs, so the next fetch and access translate (or the MMU is still off). 3. DSB orders the table writes before the walker may read them; ISB makes the new regime visible before TLBIALLH (p15, 4, c8, c7, 0) drops stale entries, and the last DSB+ISB completes that.
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
    // SAFETY: TLBIALLH (p15, 4, c8, c7, 0) only drops cached translations; the tables themselves stay; DSB/ISB complete it. HYP mode only.
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
        // SAFETY: DCCIMVAC (p15, 0, c7, c14, 1) writes back and drops one line; it changes no memory contents as seen by the program.
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
    // SAFETY: ATS1HR (p15, 4, c7, c8, 0) and ATS1HW (p15, 4, c7, c8, 1) only translate, writing the result to PAR; no memory is accessed. PAR is this CPU's and read right after (MRRC p15, 0, c7) with an ISB between, so no other translation can overwrite it in between (IRQs are masked in HYP mode here).
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

/// A 32-bit CP15 register read: `mrc p15, opc1, rt, crn, crm, opc2`.
macro_rules! cp15_read32 {
    ($(#[$doc:meta])* $name:ident, $opc1:literal, $crn:literal, $crm:literal, $opc2:literal) => {
        $(#[$doc])*
        pub fn $name() -> u32 {
            let value: u32;
            // SAFETY: MRC only reads a CP15 register that HYP mode may read (a HYP register, or a PL1 register of the guest whose state is on this CPU); no memory is accessed.
            unsafe {
                core::arch::asm!(
                    concat!("mrc p15, ", $opc1, ", {}, ", $crn, ", ", $crm, ", ", $opc2),
                    out(reg) value,
                    options(nomem, nostack, preserves_flags)
                )
            };
            value
        }
    };
}

/// A 32-bit CP15 register write, as an `unsafe fn` (STYLE.md U4).
macro_rules! cp15_write32 {
    ($(#[$doc:meta])* $name:ident, $opc1:literal, $crn:literal, $crm:literal, $opc2:literal) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// A HYP register decides what guests reach and what traps: the value
        /// must be the one the hypervisor built for it; a guest PL1 register
        /// may only be written with that guest's own state, while it is the
        /// vCPU on this CPU.
        pub unsafe fn $name(value: u32) {
            // SAFETY: the caller's contract; MCR writes one CP15 register.
            unsafe {
                core::arch::asm!(
                    concat!("mcr p15, ", $opc1, ", {}, ", $crn, ", ", $crm, ", ", $opc2),
                    in(reg) value,
                    options(nostack, preserves_flags)
                )
            };
        }
    };
}

/// A 64-bit CP15 register read: `mrrc p15, opc1, rt, rt2, crm`.
macro_rules! cp15_read64 {
    ($(#[$doc:meta])* $name:ident, $opc1:literal, $crm:literal) => {
        $(#[$doc])*
        pub fn $name() -> u64 {
            let (low, high): (u32, u32);
            // SAFETY: MRRC only reads a 64-bit CP15 register HYP mode may read; no memory is accessed.
            unsafe {
                core::arch::asm!(
                    concat!("mrrc p15, ", $opc1, ", {}, {}, ", $crm),
                    out(reg) low,
                    out(reg) high,
                    options(nomem, nostack, preserves_flags)
                )
            };
            u64::from(high) << 32 | u64::from(low)
        }
    };
}

/// A 64-bit CP15 register write, as an `unsafe fn`.
macro_rules! cp15_write64 {
    ($(#[$doc:meta])* $name:ident, $opc1:literal, $crm:literal) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// As for the 32-bit writes: the hypervisor's own value, or the
        /// loaded guest's own state.
        pub unsafe fn $name(value: u64) {
            let low = (value & 0xffff_ffff) as u32;
            let high = (value >> 32) as u32;
            // SAFETY: the caller's contract; MCRR writes one CP15 register.
            unsafe {
                core::arch::asm!(
                    concat!("mcrr p15, ", $opc1, ", {}, {}, ", $crm),
                    in(reg) low,
                    in(reg) high,
                    options(nostack, preserves_flags)
                )
            };
        }
    };
}

/// A PL1 (guest) register: read and write.
macro_rules! cp15_rw32 {
    ($read:ident, $write:ident, $opc1:literal, $crn:literal, $crm:literal, $opc2:literal, $what:literal) => {
        cp15_read32!(
            #[doc = concat!("Reads ", $what, ".")]
            $read,
            $opc1,
            $crn,
            $crm,
            $opc2
        );
        cp15_write32!(
            #[doc = concat!("Writes ", $what, ".")]
            $write,
            $opc1,
            $crn,
            $crm,
            $opc2
        );
    };
}

/// A 64-bit register: read and write.
macro_rules! cp15_rw64 {
    ($read:ident, $write:ident, $opc1:literal, $crm:literal, $what:literal) => {
        cp15_read64!(
            #[doc = concat!("Reads ", $what, ".")]
            $read,
            $opc1,
            $crm
        );
        cp15_write64!(
            #[doc = concat!("Writes ", $what, ".")]
            $write,
            $opc1,
            $crm
        );
    };
}

// HYP controls (DDI 0406C B4.1: HCR, HCPTR, HSTR, HDCR, VTCR, VTTBR, VMPIDR,
// VPIDR) and the generic timer's HYP view (B8: CNTHCTL, CNTVOFF, CNTHP_*).
cp15_rw32!(
    hcr,
    write_hcr,
    "4",
    "c1",
    "c1",
    "0",
    "HCR, the Hyp Configuration Register"
);
cp15_rw32!(
    hcptr,
    write_hcptr,
    "4",
    "c1",
    "c1",
    "2",
    "HCPTR, the Hyp Coprocessor Trap Register"
);
cp15_rw32!(
    hstr,
    write_hstr,
    "4",
    "c1",
    "c1",
    "3",
    "HSTR, the Hyp System Trap Register"
);
cp15_rw32!(
    hdcr,
    write_hdcr,
    "4",
    "c1",
    "c1",
    "1",
    "HDCR, the Hyp Debug Configuration Register"
);
cp15_rw32!(
    vtcr,
    write_vtcr,
    "4",
    "c2",
    "c1",
    "2",
    "VTCR, the stage-2 translation control"
);
cp15_rw64!(
    vttbr,
    write_vttbr,
    "6",
    "c2",
    "VTTBR, the stage-2 root and VMID"
);
cp15_rw32!(
    vmpidr,
    write_vmpidr,
    "4",
    "c0",
    "c0",
    "5",
    "VMPIDR, the MPIDR a guest reads"
);
cp15_rw32!(
    vpidr,
    write_vpidr,
    "4",
    "c0",
    "c0",
    "0",
    "VPIDR, the MIDR a guest reads"
);
cp15_read32!(
    /// MIDR.
    midr, "0", "c0", "c0", "0"
);
cp15_read32!(
    /// PMCR (for PMCR.N, the number of event counters).
    pmcr, "0", "c9", "c12", "0"
);
cp15_rw32!(
    cnthctl,
    write_cnthctl,
    "4",
    "c14",
    "c1",
    "0",
    "CNTHCTL, PL1's access to the physical counter and timer"
);
cp15_rw64!(
    cntvoff,
    write_cntvoff,
    "4",
    "c14",
    "CNTVOFF, the virtual counter's offset"
);
cp15_rw32!(
    cnthp_ctl,
    write_cnthp_ctl,
    "4",
    "c14",
    "c2",
    "1",
    "CNTHP_CTL, the HYP timer's control"
);
cp15_rw64!(
    cnthp_cval,
    write_cnthp_cval,
    "6",
    "c14",
    "CNTHP_CVAL, the HYP timer's compare value"
);
cp15_read64!(
    /// CNTPCT, the physical count.
    cntpct, "0", "c14"
);
cp15_read32!(
    /// CNTFRQ, the counter frequency firmware set.
    cntfrq, "0", "c14", "c0", "0"
);

// A guest's PL1 state (B4.1), saved and restored by `context`.
cp15_rw32!(sctlr, write_sctlr, "0", "c1", "c0", "0", "SCTLR");
cp15_rw32!(actlr, write_actlr, "0", "c1", "c0", "1", "ACTLR");
cp15_rw32!(cpacr, write_cpacr, "0", "c1", "c0", "2", "CPACR");
cp15_rw64!(ttbr0, write_ttbr0, "0", "c2", "TTBR0 (64-bit form)");
cp15_rw64!(ttbr1, write_ttbr1, "1", "c2", "TTBR1 (64-bit form)");
cp15_rw32!(ttbcr, write_ttbcr, "0", "c2", "c0", "2", "TTBCR");
cp15_rw32!(dacr, write_dacr, "0", "c3", "c0", "0", "DACR");
cp15_rw32!(dfsr, write_dfsr, "0", "c5", "c0", "0", "DFSR");
cp15_rw32!(ifsr, write_ifsr, "0", "c5", "c0", "1", "IFSR");
cp15_rw32!(adfsr, write_adfsr, "0", "c5", "c1", "0", "ADFSR");
cp15_rw32!(aifsr, write_aifsr, "0", "c5", "c1", "1", "AIFSR");
cp15_rw32!(dfar, write_dfar, "0", "c6", "c0", "0", "DFAR");
cp15_rw32!(ifar, write_ifar, "0", "c6", "c0", "2", "IFAR");
cp15_rw64!(par, write_par, "0", "c7", "PAR (64-bit form)");
cp15_rw32!(mair0, write_mair0, "0", "c10", "c2", "0", "PRRR / MAIR0");
cp15_rw32!(mair1, write_mair1, "0", "c10", "c2", "1", "NMRR / MAIR1");
cp15_rw32!(amair0, write_amair0, "0", "c10", "c3", "0", "AMAIR0");
cp15_rw32!(amair1, write_amair1, "0", "c10", "c3", "1", "AMAIR1");
cp15_rw32!(vbar, write_vbar, "0", "c12", "c0", "0", "VBAR");
cp15_rw32!(
    contextidr,
    write_contextidr,
    "0",
    "c13",
    "c0",
    "1",
    "CONTEXTIDR"
);
cp15_rw32!(tpidrurw, write_tpidrurw, "0", "c13", "c0", "2", "TPIDRURW");
cp15_rw32!(tpidruro, write_tpidruro, "0", "c13", "c0", "3", "TPIDRURO");
cp15_rw32!(tpidrprw, write_tpidrprw, "0", "c13", "c0", "4", "TPIDRPRW");
cp15_rw32!(csselr, write_csselr, "2", "c0", "c0", "0", "CSSELR");
cp15_rw32!(cntkctl, write_cntkctl, "0", "c14", "c1", "0", "CNTKCTL");
cp15_rw32!(
    cntv_ctl,
    write_cntv_ctl,
    "0",
    "c14",
    "c3",
    "1",
    "CNTV_CTL, the virtual timer's control"
);
cp15_rw64!(
    cntv_cval,
    write_cntv_cval,
    "3",
    "c14",
    "CNTV_CVAL, the virtual timer's compare value"
);

/// A banked SPSR of a guest mode: read with MRS (banked register), which
/// HYP mode may use for every PL1 mode's SPSR (DDI 0406C B9.3.9).
macro_rules! banked_spsr {
    ($read:ident, $write:ident, $name:literal) => {
        #[doc = concat!("Reads ", $name, ".")]
        pub fn $read() -> u32 {
            let value: u32;
            // SAFETY: MRS (banked) only reads; defined in HYP mode.
            unsafe {
                core::arch::asm!(
                    ".arch_extension virt",
                    concat!("mrs {}, ", $name),
                    out(reg) value,
                    options(nomem, nostack, preserves_flags)
                )
            };
            value
        }

        #[doc = concat!("Writes ", $name, ".")]
        ///
        /// # Safety
        /// Only with the loaded guest's own state (or what taking an
        /// exception to that mode writes).
        pub unsafe fn $write(value: u32) {
            // SAFETY: the caller's contract; MSR (banked) writes one register of a mode HYP mode is not in.
            unsafe {
                core::arch::asm!(
                    ".arch_extension virt",
                    concat!("msr ", $name, ", {}"),
                    in(reg) value,
                    options(nomem, nostack, preserves_flags)
                )
            };
        }
    };
}

banked_spsr!(spsr_svc, write_spsr_svc, "SPSR_svc");
banked_spsr!(spsr_abt, write_spsr_abt, "SPSR_abt");
banked_spsr!(spsr_und, write_spsr_und, "SPSR_und");
banked_spsr!(spsr_irq, write_spsr_irq, "SPSR_irq");
banked_spsr!(spsr_fiq, write_spsr_fiq, "SPSR_fiq");

/// ISB.
pub fn isb() {
    aarch32_cpu::asm::isb();
}

/// DSB (full system).
pub fn dsb() {
    aarch32_cpu::asm::dsb();
}

/// DSB ISH: orders memory accesses in the inner shareable domain.
pub fn dsb_ish() {
    // SAFETY: a barrier; no register or memory changes.
    unsafe { asm!("dsb ish", options(nostack, preserves_flags)) };
}

/// Invalidates the HYP translation of the page at `va` on every CPU of the
/// inner shareable domain (TLBIMVAHIS, p15, 4, c8, c3, 1), after its
/// descriptor was changed or removed: DSB first so the walkers see the
/// table write, DSB to wait for the invalidation, ISB for the next access.
pub fn invalidate_hyp_tlb_page(va: u32) {
    // SAFETY: TLB invalidation only drops cached translations; the tables themselves stay; any MVA is a valid operand. HYP mode only.
    unsafe {
        asm!(
            "dsb ish",
            "mcr p15, 4, {va}, c8, c3, 1",
            "dsb ish",
            "isb",
            va = in(reg) va & !0xfff,
            options(nostack, preserves_flags)
        )
    };
}

/// WFI.
pub fn wfi() {
    aarch32_cpu::asm::wfi();
}

/// Translates a guest stage-1 VA for a PL1 read (ATS1CPR from HYP mode:
/// the guest's regime, stage 1 only): `Some(IPA)`, or `None` if it faults.
/// The PAR is the loaded guest's: it is saved first and restored after.
pub fn translate_pl1_read(va: u32) -> Option<u64> {
    translate_pl1::<0>(va)
}

/// As [`translate_pl1_read`], for a PL1 write (ATS1CPW): the page of a
/// stage-2 Permission fault, for which HPFAR is UNKNOWN.
pub fn translate_pl1_write(va: u32) -> Option<u64> {
    translate_pl1::<1>(va)
}

/// ATS1CPR (`OP2` 0) or ATS1CPW (`OP2` 1) of `va`, the guest's PAR kept.
fn translate_pl1<const OP2: u32>(va: u32) -> Option<u64> {
    let saved = par();
    let (low, high): (u32, u32);
    // SAFETY: ATS1CPR/ATS1CPW (p15, 0, c7, c8, 0/1) translate without accessing memory and write PAR, read right after (ISB between); the guest's PAR is put back below, so it sees no change.
    unsafe {
        asm!(
            "mcr p15, 0, {va}, c7, c8, {op2}",
            "isb",
            "mrrc p15, 0, {low}, {high}, c7",
            va = in(reg) va,
            op2 = const OP2,
            low = out(reg) low,
            high = out(reg) high,
            options(nostack, preserves_flags)
        );
        write_par(saved);
    }
    ipa_of_par(u64::from(high) << 32 | u64::from(low), va)
}

/// Invalidates, on every CPU of the inner shareable domain, every TLB
/// entry of the VMID in VTTBR (TLBIALLIS from HYP mode: the non-secure
/// PL1&0 regime of the current VMID, stage 2 included): the way to drop a
/// stage-2 page's entries on ARMv7, which has no invalidation by IPA
/// (TLBIIPAS2IS is ARMv8's; Linux's 32-bit KVM did the same).
pub fn tlbi_current_vm_is() {
    // SAFETY: TLB invalidation only drops cached translations; DSB/ISB complete it. HYP mode only.
    unsafe {
        asm!(
            "dsb ishst",
            "mcr p15, 0, {zero}, c8, c3, 0",
            "dsb ish",
            "isb",
            zero = in(reg) 0u32,
            options(nostack, preserves_flags)
        )
    };
}

/// The IPA of `va` from a PAR value, `None` if the translation faulted.
fn ipa_of_par(par: u64, va: u32) -> Option<u64> {
    if par & 1 != 0 {
        return None;
    }
    // The long format (PAR.LPAE, bit 11) has PA[39:12]; the short one PA[31:12].
    let page = if par & 1 << 11 != 0 {
        par & 0xff_ffff_f000
    } else {
        par & 0xffff_f000
    };
    Some(page | u64::from(va & 0xfff))
}

/// DCCISW: clean and invalidate one data cache line by set/way.
pub fn clean_invalidate_by_set_way(operand: u32) {
    // SAFETY: a clean and invalidate writes dirty data back before it drops the line: no data is lost, whoever's line it is.
    unsafe {
        asm!("mcr p15, 0, {}, c7, c14, 2", in(reg) operand, options(nostack, preserves_flags))
    };
}

/// Invalidates every non-secure, non-HYP TLB entry of this CPU, of every
/// VMID (TLBIALLNSNH): what a cold reset or firmware left there is not the
/// guests'.
pub fn invalidate_guest_tlbs() {
    // SAFETY: TLB invalidation only drops cached translations; DSB/ISB complete it. HYP mode only.
    unsafe {
        asm!(
            "dsb",
            "mcr p15, 4, {zero}, c8, c7, 4",
            "dsb",
            "isb",
            zero = in(reg) 0u32,
            options(nostack, preserves_flags)
        )
    };
}

/// Invalidates this CPU's TLB entries of the VMID in VTTBR (TLBIALL from
/// HYP mode: the non-secure PL1&0 regime of the current VMID).
pub fn invalidate_current_vm_tlbs() {
    // SAFETY: TLB invalidation only drops cached translations.
    unsafe {
        asm!(
            "dsb",
            "mcr p15, 0, {zero}, c8, c7, 0",
            "dsb",
            "isb",
            zero = in(reg) 0u32,
            options(nostack, preserves_flags)
        )
    };
}
