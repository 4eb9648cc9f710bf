//! The AArch64 EL2 back-end.
//!
//! `a32`, `esr`, `descriptors`, `el2`, `features`, `list_register` and `set_way`
//! are pure (syndrome decoding, descriptor, EL2 control value and list
//! register encoding, CPU features from ID registers, set/way operands) and
//! tested on the host; everything that executes Arm
//! instructions is compiled only for `target_arch = "aarch64"`.

pub mod a32;
pub mod descriptors;
pub mod el2;
pub mod esr;
pub mod features;
pub mod list_register;
pub mod pstate;
pub mod set_way;

#[cfg(target_arch = "aarch64")]
pub mod boot;
#[cfg(target_arch = "aarch64")]
pub mod cache;
#[cfg(target_arch = "aarch64")]
pub mod context;
#[cfg(target_arch = "aarch64")]
pub mod cpu;
#[cfg(target_arch = "aarch64")]
#[path = "../shared/gic.rs"]
pub mod gic;
/// The system registers `gic` uses: the GICv3 CPU interface's own.
#[cfg(target_arch = "aarch64")]
use sysreg as gic_sysreg;
#[cfg(target_arch = "aarch64")]
#[path = "../shared/irq.rs"]
pub mod irq;
#[cfg(target_arch = "aarch64")]
pub mod sysreg;
#[cfg(target_arch = "aarch64")]
pub mod vcpu;
#[cfg(target_arch = "aarch64")]
pub mod vectors;
