//! The EL1 virtual timer (CNTV_*), which raises PPI 27 on the QEMU virt machine.
//!
//! Register names are the AArch64 ones; on AArch32 the same registers are
//! cp15 CNTV_CTL, CNTV_TVAL, CNTV_CVAL (MCRR), CNTVCT (MRRC) and CNTFRQ.

use crate::arch::timer as registers;

/// INTID of the EL1 virtual timer on QEMU virt and under chroma (PPI 11).
pub const VIRTUAL_TIMER_INTID: u32 = 27;

/// The counter frequency in Hz (CNTFRQ_EL0); never 0.
pub fn frequency() -> u64 {
    registers::frequency().max(1)
}

/// The virtual counter (CNTVCT_EL0).
pub fn now() -> u64 {
    registers::counter()
}

/// Counter ticks in `milliseconds`.
pub fn ticks_in_ms(milliseconds: u64) -> u64 {
    frequency().saturating_mul(milliseconds) / 1000
}

/// Arms the virtual timer to fire `milliseconds` from now, unmasked.
pub fn arm_ms(milliseconds: u64) {
    // TVAL is a signed 32-bit down-counter; clamp long delays.
    let ticks = ticks_in_ms(milliseconds).min(u64::from(i32::MAX as u32));
    registers::write_tval(ticks);
    registers::enable_unmasked();
}

/// Arms the virtual timer to fire when the virtual count reaches `compare`
/// (CNTV_CVAL_EL0, then CNTV_CTL_EL0 = ENABLE, IMASK clear).
pub fn arm_at(compare: u64) {
    registers::write_cval(compare);
    registers::enable_unmasked();
}

/// Arms the virtual timer `ticks` from now through CNTV_TVAL_EL0 alone,
/// leaving CNTV_CTL_EL0 as it is (the timer must be enabled already).
pub fn rearm_tval(ticks: u64) {
    registers::write_tval(ticks.min(u64::from(i32::MAX as u32)));
}

/// Arms the virtual timer for virtual count `compare` through CNTV_CVAL_EL0
/// alone, leaving CNTV_CTL_EL0 as it is.
pub fn rearm_cval(compare: u64) {
    registers::write_cval(compare);
}

/// Whether CNTV_CTL_EL0 reads ENABLE set and IMASK clear: the timer enabled
/// and unmasked, as [`arm_ms`] writes it. ISTATUS (status) is not compared.
pub fn is_enabled_unmasked() -> bool {
    registers::is_enabled_unmasked()
}

/// CNTV_CTL_EL0 as it reads now.
pub fn control() -> u64 {
    registers::control()
}

/// Stops the virtual timer (its interrupt line drops).
pub fn disarm() {
    registers::disable_masked();
}

/// Busy-waits for `milliseconds` on the virtual counter.
pub fn delay_ms(milliseconds: u64) {
    let end = now().saturating_add(ticks_in_ms(milliseconds));
    while now() < end {
        core::hint::spin_loop();
    }
}
