//! System registers by their generic names (`S<op0>_<op1>_C<n>_C<m>_<op2>`),
//! read and written with a sentinel so an access that UNDEFs and is skipped
//! reads as [`NOT_READ`].

/// What a skipped `mrs` returns.
pub const NOT_READ: u64 = 0xdead_0000_dead_0000;

/// Reads a system register by name; [`NOT_READ`] if the read was skipped.
#[macro_export]
macro_rules! mrs {
    ($name:literal) => {{
        let mut value: u64 = $crate::sysreg::NOT_READ;
        // SAFETY: reading a system register has no memory effect; one that UNDEFs at EL1 is caught and skipped, leaving the sentinel.
        unsafe {
            core::arch::asm!(concat!("mrs {v}, ", $name), v = inout(reg) value, options(nostack))
        };
        value
    }};
}

/// Writes a system register by name.
#[macro_export]
macro_rules! msr {
    ($name:literal, $value:expr) => {{
        let value: u64 = $value;
        // SAFETY: the caller writes EL1 (or trapped) state that the case is about; one that UNDEFs is caught and skipped. The ISB makes the write take effect before the next instruction.
        unsafe {
            core::arch::asm!(concat!("msr ", $name, ", {v}"), "isb", v = in(reg) value, options(nostack))
        };
    }};
}

/// Whether the CPU implements pointer authentication (ID_AA64ISAR1_EL1 APA,
/// API, GPA, GPI, or ID_AA64ISAR2_EL1 APA3).
pub fn has_pointer_auth() -> bool {
    let isar1 = crate::mrs!("S3_0_C0_C6_1");
    let isar2 = crate::mrs!("S3_0_C0_C6_2");
    let isar2 = if isar2 == NOT_READ { 0 } else { isar2 };
    (isar1 & 0xff00_0ff0) != 0 || (isar2 & 0xf000) != 0
}

/// Whether EL0 can run AArch32 (ID_AA64PFR0_EL1.EL0 = 2).
pub fn has_aarch32_el0() -> bool {
    crate::mrs!("S3_0_C0_C4_0") & 0xf == 2
}
