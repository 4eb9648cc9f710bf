//! Architecture back-ends: ID register readers and [`crate::CacheOps`] for
//! real hardware. Each exists only when compiling for its architecture; the
//! host uses the simulator's implementation instead.

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
#[cfg(target_arch = "arm")]
pub mod armv7;
