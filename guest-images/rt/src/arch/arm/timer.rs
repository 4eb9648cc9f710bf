//! The PL1 virtual timer's registers (`aarch32-cpu`): CNTFRQ, CNTVCT
//! (MRRC), CNTV_TVAL, CNTV_CTL and CNTV_CVAL (MCRR).

use aarch32_cpu::register::{CntVct, Cntfrq, CntvCtl, CntvCval, CntvTval};

/// CNTFRQ.
pub fn frequency() -> u64 {
    u64::from(Cntfrq::read().0)
}

/// CNTVCT, after an ISB so the read is not taken early.
pub fn counter() -> u64 {
    aarch32_cpu::asm::isb();
    CntVct::read().0
}

/// Writes CNTV_TVAL (a 32-bit down-counter; the caller clamps `ticks`).
pub fn write_tval(ticks: u64) {
    CntvTval::write(CntvTval(u32::try_from(ticks).unwrap_or(u32::MAX)));
    aarch32_cpu::asm::isb();
}

/// Writes CNTV_CVAL.
pub fn write_cval(compare: u64) {
    CntvCval::write(CntvCval(compare));
    aarch32_cpu::asm::isb();
}

/// CNTV_CTL = ENABLE, IMASK clear.
pub fn enable_unmasked() {
    CntvCtl::write(
        CntvCtl::new_with_raw_value(0)
            .with_enable(true)
            .with_imask(false),
    );
    aarch32_cpu::asm::isb();
}

/// CNTV_CTL = ENABLE clear, IMASK set.
pub fn disable_masked() {
    CntvCtl::write(
        CntvCtl::new_with_raw_value(0)
            .with_enable(false)
            .with_imask(true),
    );
    aarch32_cpu::asm::isb();
}

/// Whether CNTV_CTL reads ENABLE set and IMASK clear.
pub fn is_enabled_unmasked() -> bool {
    let control = CntvCtl::read();
    control.enable() && !control.imask()
}

/// CNTV_CTL as it reads now.
pub fn control() -> u64 {
    u64::from(CntvCtl::read().raw_value())
}
