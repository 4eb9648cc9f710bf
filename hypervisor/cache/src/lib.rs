//! Cache geometry, maintenance, colouring and the aliasing simulator.
//!
//! The hypervisor maps guest virtqueues through its own virtual aliases. On a
//! cache that aliases (VIVT, or VIPT whose way is larger than a page), two
//! aliases of one physical line can disagree. This crate holds everything the
//! hypervisor needs to stay correct anyway:
//!
//! - [`geometry`]: decode CTR / CLIDR / CCSIDR (AArch64, Armv7, Armv6) into a
//!   [`CacheGeometry`], including the number of alias colours;
//! - [`ops`]: the [`CacheOps`] maintenance trait and the range helpers that
//!   never plainly invalidate a partial line;
//! - [`arch`]: the AArch64 and Armv7 register readers and `CacheOps`
//!   implementations (compiled only for those targets);
//! - [`colour`]: a VA allocator that can only hand out a same-colour alias;
//! - [`policy`]: the policy chooser and the [`chroma_mem::CacheHooks`]
//!   implementation the guest memory layer calls;
//! - `sim` (host only): a write-back cache simulator that really aliases, and
//!   the oracle that runs the virtio ring code over it.
#![no_std]
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

#[cfg(not(target_os = "none"))]
extern crate std;

pub mod arch;
pub mod colour;
pub mod geometry;
pub mod ops;
pub mod policy;
// The simulator is a host tool whose indices are bounded by its own small
// simulated RAM (< 1 MiB), never by guest input: truncating casts are fine there.
// It is never built for the EL2 binary, and a broken simulation should stop
// loudly, so it may expect and panic like test code.
#[cfg(not(target_os = "none"))]
#[allow(clippy::cast_possible_truncation, clippy::expect_used, clippy::panic)]
pub mod sim;

pub use colour::{Colour, ColourAllocator};
pub use geometry::{CacheGeometry, CacheInfo, CacheKind, Indexing};
pub use ops::CacheOps;
pub use policy::{GuestMemoryType, MaintainHooks, Policy, PolicyInputs};

use core::fmt;

/// Why a cache-layer operation was refused.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheError {
    /// The cache type register is in a format this crate does not decode.
    UnknownCtrFormat {
        /// The raw register value.
        ctr: u64,
    },
    /// A cache size register describes an impossible cache (zero lines, overflow).
    InvalidCacheSize {
        /// The raw register value.
        ccsidr: u64,
    },
    /// The page size is not a power of two of at least 4 KiB.
    InvalidPageSize,
    /// A colour index is not smaller than the number of colours.
    InvalidColour,
    /// An address is not aligned to a page.
    Unaligned,
    /// Arithmetic on an address overflowed.
    Overflow,
    /// No free virtual range of the requested colour and length is left.
    OutOfVirtualSpace,
    /// The address was not handed out by this allocator.
    NotAllocated,
    /// The alias table is full.
    TableFull,
    /// Two aliases of one physical page have different colours.
    ColourConflict {
        /// The physical page with conflicting aliases.
        phys: u64,
    },
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheError::UnknownCtrFormat { ctr } => {
                write!(f, "unknown cache type register format {ctr:#x}")
            }
            CacheError::InvalidCacheSize { ccsidr } => {
                write!(f, "impossible cache size register {ccsidr:#x}")
            }
            CacheError::InvalidPageSize => f.write_str("page size is not a power of two >= 4 KiB"),
            CacheError::InvalidColour => f.write_str("colour out of range"),
            CacheError::Unaligned => f.write_str("address is not page aligned"),
            CacheError::Overflow => f.write_str("address arithmetic overflowed"),
            CacheError::OutOfVirtualSpace => f.write_str("no free alias of that colour and length"),
            CacheError::NotAllocated => f.write_str("address was not allocated here"),
            CacheError::TableFull => f.write_str("alias table is full"),
            CacheError::ColourConflict { phys } => {
                write!(
                    f,
                    "physical page {phys:#x} has aliases of different colours"
                )
            }
        }
    }
}

/// Every error type's `Display` is a message, not `Debug` output (issue 10).
#[cfg(test)]
mod display_tests {
    use super::CacheError;
    use chroma_mem::display_check::check_all;

    #[test]
    fn every_cache_error_displays_as_a_message() {
        check_all(&[
            CacheError::UnknownCtrFormat { ctr: 0x8444_c004 },
            CacheError::InvalidCacheSize { ccsidr: 0 },
            CacheError::InvalidPageSize,
            CacheError::InvalidColour,
            CacheError::Unaligned,
            CacheError::Overflow,
            CacheError::OutOfVirtualSpace,
            CacheError::NotAllocated,
            CacheError::TableFull,
            CacheError::ColourConflict { phys: 0x4000_0000 },
        ]);
    }
}
