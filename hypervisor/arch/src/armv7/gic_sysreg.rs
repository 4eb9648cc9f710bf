//! The registers the shared GIC driver (`shared/gic.rs`) reads through
//! `gic_sysreg`, as the ARMv7 back-end has them: MPIDR and the barriers.
//!
//! The GICv3 CPU interface (ICC_*, ICH_*) is not here: no ARMv7-A core has
//! it, and `platform_info` refuses a board whose device tree names a GICv3
//! before any `Gic` is made, so the driver's GICv3 paths never run on this
//! back-end. Their accessors exist only so that the one driver compiles for
//! both; each reads 0 and ignores writes, and none is reachable.

pub use super::sysreg::{dsb_ish, isb};

/// MPIDR, widened as the driver reads MPIDR_EL1.
pub fn mpidr_el1() -> u64 {
    u64::from(super::sysreg::mpidr())
}

/// Defines unreachable GICv3 register reads (0) and writes (ignored).
macro_rules! absent {
    (read: $($read:ident),*; write: $($write:ident),*) => {
        $(
            /// Absent on ARMv7 (see the module): reads 0.
            pub fn $read() -> u64 {
                0
            }
        )*
        $(
            /// Absent on ARMv7 (see the module): ignored.
            ///
            /// # Safety
            /// None needed: it does nothing; `unsafe` only to match the
            /// AArch64 accessor the driver calls.
            pub unsafe fn $write(_value: u64) {}
        )*
    };
}

absent!(
    read: icc_iar1_el1, ich_ap0r0_el2, ich_ap0r1_el2, ich_ap0r2_el2, ich_ap0r3_el2, ich_ap1r0_el2, ich_ap1r1_el2, ich_ap1r2_el2, ich_ap1r3_el2,
        ich_vmcr_el2, ich_vtr_el2;
    write: write_icc_ctlr_el1, write_icc_dir_el1, write_icc_eoir1_el1, write_icc_igrpen1_el1,
        write_icc_pmr_el1, write_icc_sgi1r_el1, write_icc_sre_el2, write_ich_ap0r0_el2,
        write_ich_ap0r1_el2, write_ich_ap0r2_el2, write_ich_ap0r3_el2, write_ich_ap1r0_el2,
        write_ich_ap1r1_el2, write_ich_ap1r2_el2, write_ich_ap1r3_el2, write_ich_hcr_el2,
        write_ich_vmcr_el2
);

/// Absent on ARMv7 (see the module): reads 0.
pub fn ich_lr_el2(_index: usize) -> u64 {
    0
}

/// Absent on ARMv7 (see the module): ignored.
///
/// # Safety
/// None needed: it does nothing.
pub unsafe fn write_ich_lr_el2(_index: usize, _value: u64) {}

/// Absent on ARMv7 (a board without a GIC is refused there, see the
/// module): no virtual lines are raised.
pub fn set_virtual_lines(_irq: bool, _fiq: bool) {}

/// Absent on ARMv7 (see [`set_virtual_lines`]): reads as not asserted.
pub fn virtual_timer_asserted() -> bool {
    false
}
