//! Architecture back-ends behind the core's traits.
//!
//! `aarch64` holds the EL2 back-end (boot, vectors, stage-1 and stage-2
//! tables, GICv2/v3 virtual interfaces, generic timer, PSCI conduit). Its
//! pure parts (syndrome decoding, descriptor encoding) compile everywhere so
//! the host tests cover them; the parts that execute Arm instructions are
//! built only for `target_arch = "aarch64"`. `fake` is the host stand-in used
//! by the core's unit tests. `armv7` is the ARMv7-A HYP-mode back-end
//! (first slice: entry, HVBAR vectors, LPAE HYP stage-1, PSCI over SMC),
//! split the same way: `armv7::hsr` and `armv7::hyp` are pure and tested on
//! the host, the rest builds only for `target_arch = "arm"`.
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
