//! The ARMv7-A back-end: the hypervisor in HYP mode (PL2) with the
//! Virtualization Extensions and LPAE, as on a Cortex-A15 or Cortex-A7.
//!
//! Boot (zImage header, HYP-mode check, stack, .bss, HVBAR; the
//! secondaries' entry after PSCI CPU_ON), the HYP-mode exception report,
//! the HYP stage-1 MMU with long descriptors, PSCI over SMC, and guests:
//! the trampoline (`vectors`), the PL1 context (`context`), the vCPU
//! (`vcpu`, with the AArch64 back-end's interface, over `guest32`), the
//! GICv2 and its virtual interface (`gic`, the same driver as AArch64's),
//! and the HYP timer (`cpu`). Stage-2 tables are the AArch64 format
//! (`crate::aarch64::descriptors::Stage2Format`): LPAE's stage 2 is the
//! same descriptor layout.
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
//! because aarch32-cpu 0.4 has no wrapper for them. So are the guest-facing
//! registers in `sysreg` (HCR, VTCR, VTTBR, the timer's, a guest's PL1
//! CP15 state), through two small macros: aarch32-cpu has some of them, but
//! not the 64-bit LPAE forms (VTTBR, TTBR0/1, PAR, CNTVOFF, CNTHP_CVAL,
//! CNTV_CVAL) nor TTBCR or VTCR, and its writers are safe functions, where
//! a write that decides what a guest reaches must be `unsafe` here (U4);
//! one macro table keeps the context switch's registers in one form.

pub mod hsr;
pub mod hyp;

#[cfg(target_arch = "arm")]
pub mod boot;
#[cfg(target_arch = "arm")]
pub mod context;
#[cfg(target_arch = "arm")]
pub mod cpu;
#[cfg(target_arch = "arm")]
#[path = "../shared/gic.rs"]
pub mod gic;
#[cfg(target_arch = "arm")]
pub mod gic_sysreg;
#[cfg(target_arch = "arm")]
#[path = "../shared/irq.rs"]
pub mod irq;
/// GICH list-register encoding (pure, shared with AArch64).
pub use crate::aarch64::list_register;
#[cfg(target_arch = "arm")]
pub mod mmu;
#[cfg(target_arch = "arm")]
pub mod psci;
#[cfg(target_arch = "arm")]
pub mod sysreg;
#[cfg(target_arch = "arm")]
pub mod vcpu;
#[cfg(target_arch = "arm")]
pub mod vectors;
