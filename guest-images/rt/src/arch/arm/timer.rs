//! The PL1 virtual timer's cp15 registers: CNTFRQ (c14, c0, 0), CNTVCT
//! (MRRC op1 1, c14), CNTV_TVAL (c14, c3, 0), CNTV_CTL (c14, c3, 1) and
//! CNTV_CVAL (MCRR op1 3, c14).

use core::arch::asm;

use tock_registers::register_bitfields;
use tock_registers::LocalRegisterCopy;

register_bitfields! {u32,
    /// CNTV_CTL.
    CNTV_CTL [
        /// The timer is enabled.
        ENABLE OFFSET(0) NUMBITS(1) [],
        /// The timer's interrupt is masked.
        IMASK OFFSET(1) NUMBITS(1) [],
        /// The timer condition is met.
        ISTATUS OFFSET(2) NUMBITS(1) []
    ]
}

/// CNTFRQ.
pub fn frequency() -> u64 {
    let value: u32;
    // SAFETY: reading CNTFRQ has no side effects.
    unsafe {
        asm!("mrc p15, 0, {}, c14, c0, 0", out(reg) value, options(nomem, nostack, preserves_flags))
    };
    u64::from(value)
}

/// CNTVCT, after an ISB so the read is not taken early.
pub fn counter() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: reading the virtual counter has no side effects.
    unsafe {
        asm!(
            "isb",
            "mrrc p15, 1, {low}, {high}, c14",
            low = out(reg) low,
            high = out(reg) high,
            options(nomem, nostack, preserves_flags),
        )
    };
    (u64::from(high) << 32) | u64::from(low)
}

/// Writes CNTV_TVAL (a 32-bit down-counter; the caller clamps `ticks`).
pub fn write_tval(ticks: u64) {
    let ticks = u32::try_from(ticks).unwrap_or(u32::MAX);
    // SAFETY: programs this CPU's virtual timer only.
    unsafe {
        asm!("mcr p15, 0, {}, c14, c3, 0", "isb", in(reg) ticks, options(nomem, nostack, preserves_flags))
    };
}

/// Writes CNTV_CVAL.
pub fn write_cval(compare: u64) {
    let (low, high) = super::halves(compare);
    // SAFETY: programs this CPU's virtual timer only.
    unsafe {
        asm!(
            "mcrr p15, 3, {low}, {high}, c14",
            "isb",
            low = in(reg) low,
            high = in(reg) high,
            options(nomem, nostack, preserves_flags),
        )
    };
}

fn write_control(value: LocalRegisterCopy<u32, CNTV_CTL::Register>) {
    // SAFETY: programs this CPU's virtual timer only.
    unsafe {
        asm!("mcr p15, 0, {}, c14, c3, 1", "isb", in(reg) value.get(), options(nomem, nostack, preserves_flags))
    };
}

fn read_control() -> LocalRegisterCopy<u32, CNTV_CTL::Register> {
    let value: u32;
    // SAFETY: reading CNTV_CTL has no side effects.
    unsafe {
        asm!("mrc p15, 0, {}, c14, c3, 1", out(reg) value, options(nomem, nostack, preserves_flags))
    };
    LocalRegisterCopy::new(value)
}

/// CNTV_CTL = ENABLE, IMASK clear.
pub fn enable_unmasked() {
    let mut value = LocalRegisterCopy::new(0);
    value.write(CNTV_CTL::ENABLE::SET + CNTV_CTL::IMASK::CLEAR);
    write_control(value);
}

/// CNTV_CTL = ENABLE clear, IMASK set.
pub fn disable_masked() {
    let mut value = LocalRegisterCopy::new(0);
    value.write(CNTV_CTL::ENABLE::CLEAR + CNTV_CTL::IMASK::SET);
    write_control(value);
}

/// Whether CNTV_CTL reads ENABLE set and IMASK clear.
pub fn is_enabled_unmasked() -> bool {
    let control = read_control();
    control.is_set(CNTV_CTL::ENABLE) && !control.is_set(CNTV_CTL::IMASK)
}

/// CNTV_CTL as it reads now.
pub fn control() -> u64 {
    u64::from(read_control().get())
}
