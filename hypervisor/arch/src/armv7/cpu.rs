//! Services of the physical CPU the hypervisor runs on, as
//! `aarch64::cpu` offers them (the scheduler uses either): the
//! counter and the HYP timer, waiting, its identity, and the PSCI calls
//! that start other CPUs and power the board off (SMC32: ARMv7 has no SMC64).

use super::{psci, sysreg};

/// CNTHP_CTL.ENABLE (IMASK clear): the HYP timer fires at its compare value.
const CNTHP_CTL_ENABLE: u32 = 1;
/// MPIDR affinity fields Aff2..Aff0 (there is no Aff3 on ARMv7).
const MPIDR_AFFINITY: u32 = 0x00ff_ffff;

/// The physical counter (CNTPCT).
pub fn now() -> u64 {
    sysreg::cntpct()
}

/// The counter frequency in Hz (CNTFRQ, as firmware set it).
pub fn counter_frequency() -> u64 {
    u64::from(sysreg::cntfrq())
}

/// Arms the HYP timer to fire at counter value `deadline`.
pub fn arm_timer(deadline: u64) {
    // SAFETY: the HYP timer belongs to the hypervisor; arming it only makes this CPU take an interrupt.
    unsafe {
        sysreg::write_cnthp_cval(deadline);
        sysreg::write_cnthp_ctl(CNTHP_CTL_ENABLE);
    }
}

/// Disarms the HYP timer.
pub fn disarm_timer() {
    // SAFETY: as for `arm_timer`.
    unsafe { sysreg::write_cnthp_ctl(0) };
}

/// Sleeps until an interrupt is pending (interrupts stay masked in HYP mode).
pub fn wait_for_interrupt() {
    sysreg::wfi();
}

/// This CPU's affinity (MPIDR Aff2..Aff0).
pub fn affinity() -> u64 {
    u64::from(sysreg::mpidr() & MPIDR_AFFINITY)
}

/// How firmware is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    /// SMC (secure firmware, or QEMU as firmware).
    Smc,
}

/// Starts the CPU with affinity `mpidr` at the hypervisor's secondary
/// entry, which receives `index` (its stack slot) in r0. Returns PSCI's
/// error code on failure.
pub fn start_secondary(conduit: Conduit, mpidr: u64, index: usize) -> Result<(), i64> {
    let Conduit::Smc = conduit;
    let (Ok(target), Ok(entry), Ok(context)) = (
        u32::try_from(mpidr),
        u32::try_from(super::boot::secondary_entry_address()),
        u32::try_from(index),
    ) else {
        // PSCI's INVALID_PARAMETERS.
        return Err(-2);
    };
    match psci::cpu_on(target, entry, context) {
        0 => Ok(()),
        status => Err(i64::from(status)),
    }
}

/// The spin table is an AArch64 boot protocol: an ARMv7 board starts its
/// CPUs with PSCI.
///
/// # Safety
/// None needed here (nothing is written); `unsafe` as the AArch64 twin.
pub unsafe fn release_from_spin_table(_release_address: u64) -> Result<(), &'static str> {
    Err("the spin table is not an ARMv7 boot protocol")
}

/// Powers the board off (PSCI SYSTEM_OFF); waits forever if firmware returns.
pub fn power_off() -> ! {
    psci::system_off()
}

/// Makes a translation-table descriptor just stored visible to the table
/// walkers of every CPU in the inner shareable domain (DSB ISH).
pub fn publish_table_write() {
    sysreg::dsb_ish();
}

/// Makes new translations (replacing invalid entries) usable by the next
/// instruction on this CPU: DSB ISH, then ISB.
pub fn publish_new_mappings() {
    sysreg::dsb_ish();
    sysreg::isb();
}

/// Makes the removal or change of the HYP mapping of the page at `va`
/// (its descriptor already written) take effect on every CPU: TLBIMVAHIS.
/// HYP addresses are 32-bit: a wider `va` is no HYP page (nothing to do).
pub fn forget_mapping(va: u64) {
    if let Ok(va) = u32::try_from(va) {
        sysreg::invalidate_hyp_tlb_page(va);
    }
}

/// Cleans and invalidates every line of one data or unified cache of this
/// CPU by set/way (DCCISW over
/// `crate::aarch64::set_way::whole_cache_operands`, whose layout DCCISW
/// shares): `level` (1 for L1) with `sets` sets and `ways` ways of
/// `line_size`-byte lines, as CCSIDR reports them. Returns the number of
/// lines. No barrier follows: the caller issues a DSB once its caches are
/// done.
pub fn clean_invalidate_whole_cache(level: u8, line_size: u32, ways: u32, sets: u32) -> u64 {
    let mut lines = 0;
    for operand in crate::aarch64::set_way::whole_cache_operands(level, line_size, ways, sets) {
        // The operands fit bits 31 to 0 (`whole_cache_operands` refuses a
        // geometry that does not).
        sysreg::clean_invalidate_by_set_way((operand & 0xffff_ffff) as u32);
        lines += 1;
    }
    lines
}
