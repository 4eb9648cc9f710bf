//! virtio-mmio transport, split and packed virtqueues, virtio-net device and L2 switch.
//!
//! Everything here is portable: it never names an architecture or a board and
//! never holds a Rust reference into guest memory. Every guest access goes
//! through [`chroma_mem::GuestMemory`], passed in on each call (STYLE G3), so
//! the cache simulator can run the exact code the hypervisor runs.
//!
//! The pieces, from the guest boundary inwards:
//!
//! - [`mmio`]: the virtio-mmio version 2 register file (virtio 1.2 §4.2.2),
//!   the device status state machine and feature negotiation. The
//!   hypervisor's data-abort handler calls [`mmio::MmioTransport::mmio_read`]
//!   and [`mmio::MmioTransport::mmio_write`].
//! - [`queue`]: the device side of a split virtqueue (§2.7).
//! - [`packed`]: the device side of a packed virtqueue (§2.8).
//! - [`virtqueue`]: either of the two, as the transport holds it (the
//!   driver chooses with VIRTIO_F_RING_PACKED).
//! - [`net`]: the virtio-net device (§5.1) and [`net::NetPort`], which binds
//!   one device to its VM's memory as a switch [`port::Port`].
//! - [`switch`]: the L2 learning switch with bounded per-port egress queues.
//! - [`gso`]: TCP segmentation offload: checking GSO frames and cutting
//!   them into segments for ports that cannot take them whole.
//! - `mock` (feature `test-utils`): a driver-side queue for tests.
//!
//! # Panics
//!
//! No path a guest reaches may panic: the crate denies `unwrap`, `expect`,
//! `panic!` and their kin outside tests; a guest's mistake sets
//! `DEVICE_NEEDS_RESET` or drops the frame. `clippy::indexing_slicing` is
//! denied in [`queue`], [`packed`], [`virtqueue`], [`mmio`], [`net`], [`gso`] and
//! [`checksum`], which parse guest
//! values first; in [`switch`], whose indices are its own ports, it is not, for the
//! reason "Panics" in `chroma-core`'s docs gives: a guest's offsets and
//! lengths are checked next to each use, or read through `get()`.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// No panic on a path a guest can reach (issue 10); see "Panics" in the crate docs.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

extern crate alloc;

pub mod checksum;
pub mod gso;
pub mod mmio;
pub mod net;
pub mod packed;
pub mod port;
pub mod queue;
pub mod switch;
pub mod virtqueue;

#[cfg(any(test, feature = "test-utils"))]
pub mod fuzzing;
#[cfg(any(test, feature = "test-utils"))]
pub mod mock;

use core::fmt;

pub use chroma_mem::MemError;

/// Why the device model refused something a guest (or the caller) asked for.
///
/// Every variant is a guest-caused or caller-caused condition, never a broken
/// hypervisor invariant, so none of them panics (STYLE E2).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtioError {
    /// guest memory access refused: {0}
    Memory(MemError),
    /// avail.idx moved further than the queue size past the device's index
    AvailIndexJump,
    /// a descriptor index (head or next) is at or past the queue size
    DescriptorIndexOutOfRange,
    /// a descriptor chain is longer than the queue size (a loop, or too long)
    ChainTooLong,
    /// an indirect table's length is zero, not a multiple of 16, or too large
    IndirectTableLength,
    /// an indirect table contains another indirect descriptor
    NestedIndirect,
    /// a descriptor sets both INDIRECT and NEXT
    IndirectWithNext,
    /// INDIRECT_DESC was not negotiated but a descriptor uses it
    IndirectNotNegotiated,
    /// a chain's total length does not fit in 32 bits
    ChainLengthOverflow,
    /// the queue is not ready (QueueReady is 0) or the device is not live
    QueueNotReady,
    /// the queue size is zero, not a power of two, or above QueueNumMax
    InvalidQueueSize,
    /// a ring address is not aligned as §2.7 requires
    MisalignedRing,
    /// an MMIO access with a width or alignment the register does not allow
    InvalidAccess,
    /// a write to a read-only register
    ReadOnlyRegister,
    /// an MMIO offset with no register behind it
    UnknownRegister,
    /// a register write not allowed in the current device status
    InvalidState,
    /// the driver's features are not a subset of the device's
    FeatureNotOffered,
    /// a packed-ring descriptor changed after it was made available
    DescriptorChanged,
}

impl From<MemError> for VirtioError {
    fn from(e: MemError) -> Self {
        VirtioError::Memory(e)
    }
}

impl fmt::Display for VirtioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VirtioError::Memory(e) => write!(f, "guest memory access refused: {e}"),
            VirtioError::AvailIndexJump => {
                f.write_str("avail.idx moved further than the queue size")
            }
            VirtioError::DescriptorIndexOutOfRange => {
                f.write_str("descriptor index at or past the queue size")
            }
            VirtioError::ChainTooLong => f.write_str("descriptor chain longer than the queue size"),
            VirtioError::IndirectTableLength => f.write_str("bad indirect table length"),
            VirtioError::NestedIndirect => f.write_str("nested indirect descriptor"),
            VirtioError::IndirectWithNext => f.write_str("descriptor sets both INDIRECT and NEXT"),
            VirtioError::IndirectNotNegotiated => f.write_str("INDIRECT_DESC not negotiated"),
            VirtioError::ChainLengthOverflow => f.write_str("chain length overflows 32 bits"),
            VirtioError::QueueNotReady => f.write_str("queue not ready"),
            VirtioError::InvalidQueueSize => f.write_str("invalid queue size"),
            VirtioError::MisalignedRing => f.write_str("misaligned ring address"),
            VirtioError::InvalidAccess => f.write_str("invalid MMIO access width or alignment"),
            VirtioError::ReadOnlyRegister => f.write_str("write to a read-only register"),
            VirtioError::UnknownRegister => f.write_str("no register at this offset"),
            VirtioError::InvalidState => f.write_str("write not allowed in this device status"),
            VirtioError::FeatureNotOffered => f.write_str("driver accepted a feature not offered"),
            VirtioError::DescriptorChanged => {
                f.write_str("descriptor changed after it was made available")
            }
        }
    }
}

/// Every error type's `Display` is a message, not `Debug` output (issue 10).
#[cfg(test)]
mod display_tests {
    use super::VirtioError;
    use crate::port::DropReason;
    use chroma_mem::display_check::check_all;
    use chroma_mem::MemError;

    #[test]
    fn every_virtio_error_displays_as_a_message() {
        check_all(&[
            VirtioError::Memory(MemError::Overflow),
            VirtioError::AvailIndexJump,
            VirtioError::DescriptorIndexOutOfRange,
            VirtioError::ChainTooLong,
            VirtioError::IndirectTableLength,
            VirtioError::NestedIndirect,
            VirtioError::IndirectWithNext,
            VirtioError::IndirectNotNegotiated,
            VirtioError::ChainLengthOverflow,
            VirtioError::QueueNotReady,
            VirtioError::InvalidQueueSize,
            VirtioError::MisalignedRing,
            VirtioError::InvalidAccess,
            VirtioError::ReadOnlyRegister,
            VirtioError::UnknownRegister,
            VirtioError::InvalidState,
            VirtioError::FeatureNotOffered,
            VirtioError::DescriptorChanged,
        ]);
        check_all(&[
            DropReason::ShortHeader,
            DropReason::Runt,
            DropReason::TooLong,
            DropReason::WrongDirection,
            DropReason::ZeroLength,
            DropReason::BadAddress,
            DropReason::BadHeader,
            DropReason::BufferTooSmall,
            DropReason::TooManyDescriptors,
            DropReason::PortDown,
            DropReason::QueueFailed,
        ]);
    }
}
