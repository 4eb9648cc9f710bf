//! The AArch64 EL2 back-end.
//!
//! `esr`, `descriptors`, `el2` and `list_register` are pure (syndrome
//! decoding, descriptor, EL2 control value and list register encoding) and
//! tested on the host; everything that executes Arm
//! instructions is compiled only for `target_arch = "aarch64"`.

pub mod descriptors;
pub mod el2;
pub mod esr;
pub mod list_register;
pub mod pstate;

#[cfg(target_arch = "aarch64")]
pub mod boot;
#[cfg(target_arch = "aarch64")]
pub mod cache;
#[cfg(target_arch = "aarch64")]
pub mod context;
#[cfg(target_arch = "aarch64")]
pub mod cpu;
#[cfg(target_arch = "aarch64")]
pub mod gic;
#[cfg(target_arch = "aarch64")]
pub mod irq;
#[cfg(target_arch = "aarch64")]
pub mod sysreg;
#[cfg(target_arch = "aarch64")]
pub mod vcpu;
#[cfg(target_arch = "aarch64")]
pub mod vectors;
