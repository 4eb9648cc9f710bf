//! Services of the physical CPU the hypervisor runs on: the counter and
//! the EL2 timer, waiting, its identity, and the firmware calls that start
//! other CPUs and power the board off (PSCI, DEN 0022).

use super::sysreg;

/// CNTHP_CTL_EL2.ENABLE (IMASK clear): the EL2 timer fires at its compare value.
const CNTHP_CTL_ENABLE: u64 = 1;
/// MPIDR_EL1 affinity fields Aff3 [39:32] and Aff2..Aff0 [23:0].
const MPIDR_AFFINITY: u64 = 0xff_00ff_ffff;
/// PSCI CPU_ON (SMC64) and SYSTEM_OFF function identifiers.
const PSCI_CPU_ON_64: u32 = 0xc400_0003;
const PSCI_SYSTEM_OFF: u32 = 0x8400_0008;

/// The physical counter (CNTPCT_EL0).
pub fn now() -> u64 {
    sysreg::cntpct_el0()
}

/// The counter frequency in Hz (CNTFRQ_EL0, as firmware set it).
pub fn counter_frequency() -> u64 {
    sysreg::cntfrq_el0()
}

/// Arms the EL2 physical timer to fire at counter value `deadline`.
pub fn arm_timer(deadline: u64) {
    // SAFETY: the EL2 physical timer belongs to the hypervisor; arming it
    // only makes this CPU take an interrupt.
    unsafe {
        sysreg::write_cnthp_cval_el2(deadline);
        sysreg::write_cnthp_ctl_el2(CNTHP_CTL_ENABLE);
    }
}

/// Disarms the EL2 physical timer.
pub fn disarm_timer() {
    // SAFETY: as for `arm_timer`.
    unsafe { sysreg::write_cnthp_ctl_el2(0) };
}

/// Sleeps until an interrupt is pending (interrupts stay masked at EL2).
pub fn wait_for_interrupt() {
    sysreg::wfi();
}

/// This CPU's affinity (MPIDR_EL1 Aff3..Aff0).
pub fn affinity() -> u64 {
    sysreg::mpidr_el1() & MPIDR_AFFINITY
}

/// How firmware is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    /// SMC (firmware at EL3, or QEMU as firmware).
    Smc,
}

/// Starts the CPU with affinity `mpidr` at the hypervisor's secondary entry,
/// which receives `index` (its stack slot) in x0. Returns PSCI's error code
/// on failure.
pub fn start_secondary(conduit: Conduit, mpidr: u64, index: usize) -> Result<(), i64> {
    let Conduit::Smc = conduit;
    // SAFETY: the entry is chroma's secondary entry, which sets up its own
    // stack (by index) and MMU before it runs Rust code.
    let result = unsafe {
        sysreg::smc_call(
            PSCI_CPU_ON_64,
            mpidr,
            super::boot::secondary_entry_address(),
            index as u64,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(result as i64)
    }
}

/// Powers the board off (PSCI SYSTEM_OFF); waits forever if firmware returns.
pub fn power_off() -> ! {
    // SAFETY: SYSTEM_OFF hands no memory to anyone; nothing runs after it.
    unsafe { sysreg::smc_call(PSCI_SYSTEM_OFF, 0, 0, 0) };
    loop {
        sysreg::wfi();
    }
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
