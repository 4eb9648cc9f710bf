//! Guest memory interface shared by the device models and the cache layer.
//!
//! The backend never holds a Rust reference into guest memory (the guest may
//! change it at any time). Every access names a guest-physical range, is
//! checked against the VM's regions, and goes through [`GuestMemory`], whose
//! implementations call the cache policy's hooks on exactly the bytes touched.
#![cfg_attr(not(any(test, feature = "test-utils")), no_std)]
#![forbid(unsafe_code)]
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

use core::fmt;
use core::sync::atomic::Ordering;

mod addr;
mod regions;
#[cfg(any(test, feature = "test-utils"))]
pub mod vecmem;

pub use addr::{GuestPhysAddr, HostPhysAddr, HostVirtAddr};
pub use regions::{Region, RegionTable, MAX_REGIONS};

/// Why a guest memory access was refused.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemError {
    /// The range is not inside one region of this VM's memory.
    OutOfRange {
        /// First guest-physical byte of the refused range.
        gpa: u64,
        /// Length of the refused range.
        len: u64,
    },
    /// The range wraps around the end of the address space.
    Overflow,
    /// The access is not aligned to its width.
    Unaligned,
    /// The region table is full.
    TooManyRegions,
    /// A region overlaps one already in the table.
    Overlap,
}

impl fmt::Display for MemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemError::OutOfRange { gpa, len } => {
                write!(f, "guest range {gpa:#x}+{len:#x} is outside guest RAM")
            }
            MemError::Overflow => f.write_str("guest range wraps the address space"),
            MemError::Unaligned => f.write_str("unaligned guest access"),
            MemError::TooManyRegions => f.write_str("too many guest memory regions"),
            MemError::Overlap => f.write_str("guest memory regions overlap"),
        }
    }
}

/// Bounds-checked access to one VM's memory.
///
/// Implementations check every `(gpa, len)` against the VM's regions with
/// overflow checks and call the cache policy's `before_read` / `after_write`
/// hooks over exactly the bytes touched.
pub trait GuestMemory {
    /// Checks that `gpa..gpa+len` lies inside one region of guest RAM.
    fn check_range(&self, gpa: GuestPhysAddr, len: u64) -> Result<(), MemError>;
    /// Copies guest bytes at `gpa` into `buf`.
    fn read(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), MemError>;
    /// Copies `data` into guest memory at `gpa`.
    fn write(&self, gpa: GuestPhysAddr, data: &[u8]) -> Result<(), MemError>;
    /// Atomically loads a little-endian `u16` (must be 2-aligned).
    fn load_u16(&self, gpa: GuestPhysAddr, order: Ordering) -> Result<u16, MemError>;
    /// Atomically stores a little-endian `u16` (must be 2-aligned).
    fn store_u16(&self, gpa: GuestPhysAddr, value: u16, order: Ordering) -> Result<(), MemError>;
    /// Issues a full memory barrier between the device and the driver.
    fn fence(&self, order: Ordering);
}

/// The cache policy's view of a hypervisor access to guest memory.
///
/// `before_read` runs before the hypervisor reads `len` bytes at `va`,
/// `after_write` after it wrote them; both over exactly those bytes.
pub trait CacheHooks {
    /// Makes `va..va+len` safe to read (for example: invalidate by VA).
    fn before_read(&self, va: HostVirtAddr, len: usize);
    /// Prepares `va..va+len` for a write (for example: clean+invalidate the
    /// partial lines at either end, so a non-coherent peer's bytes sharing
    /// those lines are not lost). Nothing by default.
    fn before_write(&self, _va: HostVirtAddr, _len: usize) {}
    /// Makes the bytes just written at `va..va+len` visible to the guest
    /// (for example: clean by VA to the Point of Coherency).
    fn after_write(&self, va: HostVirtAddr, len: usize);
}

/// Hooks that do nothing: coherent, non-aliasing memory.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHooks;

impl CacheHooks for NoHooks {
    fn before_read(&self, _va: HostVirtAddr, _len: usize) {}
    fn after_write(&self, _va: HostVirtAddr, _len: usize) {}
}

#[cfg(any(test, feature = "test-utils"))]
pub mod display_check;

/// Every error type's `Display` is a message, not `Debug` output (issue 10).
#[cfg(test)]
mod display_tests {
    use super::MemError;
    use crate::display_check::check_all;

    #[test]
    fn every_mem_error_displays_as_a_message() {
        check_all(&[
            MemError::OutOfRange {
                gpa: 0x4000_0000,
                len: 8,
            },
            MemError::Overflow,
            MemError::Unaligned,
            MemError::TooManyRegions,
            MemError::Overlap,
        ]);
    }
}
