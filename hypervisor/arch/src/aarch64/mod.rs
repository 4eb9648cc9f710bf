//! The AArch64 EL2 back-end.
//!
//! `esr`, `descriptors` and `el2` are pure (syndrome decoding, descriptor
//! encoding, EL2 control values) and tested on the host; everything that executes Arm
//! instructions is compiled only for `target_arch = "aarch64"`.

pub mod descriptors;
pub mod el2;
pub mod esr;

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
