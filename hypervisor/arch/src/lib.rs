//! Architecture back-ends behind the core's traits.
//!
//! `aarch64` holds the EL2 back-end (boot, vectors, stage-1 and stage-2
//! tables, GICv2/v3 virtual interfaces, generic timer, PSCI conduit); `armv7`
//! the ARMv7-A HYP-mode back-end (boot, HVBAR vectors and the guest
//! trampoline, LPAE HYP stage-1, the PL1 context, GICv2 virtual interface,
//! HYP timer, PSCI over SMC). Both offer the hypervisor the same modules
//! (`cpu`, `gic`, `irq`, `vcpu`) with the same functions; what they share is
//! written once: `shared/` (the GIC driver, built by both), `guest32` (an
//! AArch32 guest kernel's registers and exception entry) and the pure
//! AArch64 decoders (`aarch64::esr` reads ARMv7's HSR too: its layout is
//! ESR_EL2's for exceptions from AArch32). Pure parts (syndrome decoding,
//! descriptor and control-value encoding) compile everywhere so the host
//! tests cover them; the parts that execute Arm instructions are built only
//! for their `target_arch`. `fake` is the host stand-in used by the core's
//! unit tests.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]
// No panic on a path a guest can reach (issue 10); tests may unwrap (clippy.toml).
// Where `clippy::indexing_slicing` is denied, and why: "Panics" in chroma-core's docs.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

pub mod aarch64;
pub mod armv7;
pub mod fake;
pub mod guest32;
