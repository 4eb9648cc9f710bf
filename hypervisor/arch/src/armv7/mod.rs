//! The ARMv7-A back-end: the hypervisor in HYP mode (PL2) with the
//! Virtualization Extensions and LPAE, as on a Cortex-A15 or Cortex-A7.
//!
//! This is the first slice: boot (zImage header, HYP-mode check, stack,
//! .bss, HVBAR; the secondaries' entry after PSCI CPU_ON), the HYP-mode
//! exception report, the HYP stage-1 MMU with long descriptors, and PSCI
//! over SMC. Guests (stage-2, the HYP trap
//! path, the GIC virtual interface) come next.
//!
//! `hsr` (syndrome decoding) and `hyp` (HTCR, HSCTLR, HMAIR values and the
//! descriptor format) are pure and tested on the host; the modules that
//! execute Arm instructions build only for `target_arch = "arm"`.
//!
//! CP15 access goes through the `aarch32-cpu` crate where it has the
//! register (HSCTLR, HVBAR, HMAIR0/1, HSR, HDFAR, HIFAR, HPFAR, MPIDR,
//! CPSR), behind this crate's own `unsafe fn` wrappers for writes that can
//! break isolation (STYLE.md U4: the crate's `Hsctlr::write` is safe).
//! HTTBR, HTCR, TLBIALLH, the banked SPSRs and SMC are hand-written `asm!`,
//! because aarch32-cpu 0.4 has no wrapper for them.

pub mod hsr;
pub mod hyp;

#[cfg(target_arch = "arm")]
pub mod boot;
#[cfg(target_arch = "arm")]
pub mod psci;
#[cfg(target_arch = "arm")]
pub mod sysreg;
#[cfg(target_arch = "arm")]
pub mod vectors;
