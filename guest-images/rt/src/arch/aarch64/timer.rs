//! The EL1 virtual timer's registers (CNTV_*_EL0, CNTFRQ_EL0, CNTVCT_EL0).

use aarch64_cpu::registers::{
    Readable, Writeable, CNTFRQ_EL0, CNTVCT_EL0, CNTV_CTL_EL0, CNTV_CVAL_EL0, CNTV_TVAL_EL0,
};

/// CNTFRQ_EL0.
pub fn frequency() -> u64 {
    CNTFRQ_EL0.get()
}

/// CNTVCT_EL0.
pub fn counter() -> u64 {
    CNTVCT_EL0.get()
}

/// Writes CNTV_TVAL_EL0.
pub fn write_tval(ticks: u64) {
    CNTV_TVAL_EL0.set(ticks);
}

/// Writes CNTV_CVAL_EL0.
pub fn write_cval(compare: u64) {
    CNTV_CVAL_EL0.set(compare);
}

/// CNTV_CTL_EL0 = ENABLE, IMASK clear.
pub fn enable_unmasked() {
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::SET + CNTV_CTL_EL0::IMASK::CLEAR);
}

/// CNTV_CTL_EL0 = ENABLE clear, IMASK set.
pub fn disable_masked() {
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::CLEAR + CNTV_CTL_EL0::IMASK::SET);
}

/// Whether CNTV_CTL_EL0 reads ENABLE set and IMASK clear.
pub fn is_enabled_unmasked() -> bool {
    let control = CNTV_CTL_EL0.extract();
    control.is_set(CNTV_CTL_EL0::ENABLE) && !control.is_set(CNTV_CTL_EL0::IMASK)
}

/// CNTV_CTL_EL0 as it reads now.
pub fn control() -> u64 {
    CNTV_CTL_EL0.get()
}
