//! The architecture-specific half of the runtime: entry code, vectors,
//! system registers and the few instructions Rust cannot name.
//!
//! Each back-end (`aarch64` for AArch64 at EL1, `arm` for ARMv7-A /
//! AArch32 in SVC mode) offers the same items, which the portable modules
//! (`boot`, `exceptions`, `timer`, `psci`, `gic`, `shared`) call:
//!
//! - barriers and sleep: `dsb_sy`, `dmb_sy`, `isb_sy`, `wfi`;
//! - interrupt masking: `mask_irqs`, `unmask_irqs`, `IrqState`, `save_and_mask_irqs`,
//!   `restore_irqs`;
//! - `cpu_index` (the per-CPU software thread register), `mpidr`;
//! - `timer`: the EL1 virtual timer's registers;
//! - `smccc_call`: an SMCCC call over HVC or SMC;
//! - `icc`: the GICv3 CPU interface system registers;
//! - `vectors`: the trap frame, the fault syndrome and the register dump;
//! - `run_on_stack`, `load_u32_skippable`, `store_u32_skippable`.
//!
//! Only these modules use `asm!`; each `unsafe` block says why it holds.

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use aarch64::*;

#[cfg(target_arch = "arm")]
pub mod arm;
#[cfg(target_arch = "arm")]
pub use arm::*;

#[cfg(not(any(target_arch = "aarch64", target_arch = "arm")))]
compile_error!("chroma-guest-rt builds for aarch64-unknown-none-softfloat or armv7a-none-eabi");
