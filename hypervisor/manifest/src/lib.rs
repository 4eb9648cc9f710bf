//! The binary VM manifest the hypervisor reads from its image.
//!
//! The host tool (`chroma-config` + xtask) validates the TOML configuration,
//! then packs it and the guest images into one blob that is appended to the
//! hypervisor image. At boot the hypervisor parses that blob in place with
//! [`Manifest::parse`]: no heap, no copies, no `unsafe`. Every offset and
//! length in the blob is bounds-checked once, in `parse`; a truncated or
//! corrupted manifest gives a [`ManifestError`], never a panic. After a
//! successful parse the accessors ([`Manifest::vms`], [`Manifest::switches`],
//! [`VmSpec::nets`]) cannot fail.
//!
//! # Format (version 2, all integers little-endian)
//!
//! ```text
//! offset  size  header (HEADER_SIZE = 64 bytes)
//!  0       8    magic b"CHROMAMF"
//!  8       2    format version (FORMAT_VERSION)
//! 10       2    header size (64)
//! 12       4    total length of the manifest, header included
//! 16       1    cache mode (0 = auto, 1 = force)
//! 17       1    log level (0 = error .. 4 = trace)
//! 18       1    reserved, zero (version 1: exit via semihosting, now gone)
//! 19       1    console switch key (e.g. 0x01 = Ctrl-A)
//! 20       2    VM count
//! 22       2    switch count
//! 24       4    NIC count (all VMs)
//! 28       4    offset of the VM table       (VM_RECORD_SIZE bytes per VM)
//! 32       4    offset of the switch table   (SWITCH_RECORD_SIZE bytes per switch)
//! 36       4    offset of the NIC table      (NET_RECORD_SIZE bytes per NIC)
//! 40       4    offset of the data area (strings and images)
//! 44       4    length of the data area; it must end at the total length
//! 48       4    FNV-1a-32 of bytes [0, data offset) with this field read as 0
//! 52      12    reserved, zero
//!
//! VM record (80 bytes)              switch record (16 bytes)   NIC record (16 bytes)
//!  0  8  name (blob ref)             0  8  name (blob ref)      0  4  switch index
//!  8  8  memory base (IPA)           8  4  flags: bit 0 uplink  4  6  MAC address
//! 16  8  memory bytes               12  4  reserved, zero      10  2  flags: bit 0 trusted,
//!                                                                      bit 1 packed ring
//! 24  4  vCPU count                                             12  4  reserved, zero
//! 28  4  flags: bit 0 has initrd, bit 1 AArch32 guest
//! 32  8  CPU affinity (vCPU i -> physical CPU), unused entries zero
//! 40  8  kernel (blob ref)
//! 48  8  initrd (blob ref; zero unless the flag is set)
//! 56  8  command line (blob ref)
//! 64  4  index of the VM's first NIC in the NIC table
//! 68  4  NIC count
//! 72  8  reserved, zero
//! ```
//!
//! A blob ref is an offset (from the start of the manifest) and a length,
//! both `u32`, and must lie inside the data area. Offsets are `u32` so that
//! they fit `usize` on the 32-bit (ARMv7) build too. Strings are UTF-8
//! without NUL bytes (they end up in device-tree strings). The checksum
//! covers the metadata only, not the images, so that boot does not hash tens
//! of MiB of kernel; it catches a damaged or stale header and tables.
//!
//! The NIC flags took two bytes that were reserved (zero) in the first
//! version-2 manifests, without a version bump: an older manifest reads as
//! "no flag set" (port security on), and an older parser refuses a manifest
//! that sets one, as it refuses any non-zero reserved byte. The packed-ring
//! flag came the same way: a manifest without it offers the split ring only.
#![cfg_attr(not(test), no_std)]
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

#[cfg(any(test, feature = "alloc"))]
extern crate alloc;

#[cfg(any(test, feature = "alloc"))]
mod builder;
mod error;
mod kernel;
mod layout;
mod parse;

#[cfg(any(test, feature = "alloc"))]
pub use builder::{ManifestBuilder, VmInput};
pub use error::{At, ManifestError};
pub use kernel::{KernelHeader, ZIMAGE_TEXT_OFFSET};
pub use layout::{
    BLOB_ALIGN, DEFAULT_MEMORY_BASE, FORMAT_VERSION, HEADER_SIZE, MAGIC, MAX_CMDLINE_LEN,
    MAX_LOG_LEVEL, MAX_NAME_LEN, MAX_SWITCH_PORTS, MAX_VCPUS, MEMORY_ALIGN, NET_RECORD_SIZE,
    SWITCH_RECORD_SIZE, VM_RECORD_SIZE,
};
pub use parse::{Manifest, NetIter, NetList, SwitchSpec, VmSpec};

/// Whether the hypervisor colours and maintains caches only where the
/// hardware needs it, or always.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// Pick the cheapest policy that is correct on the discovered hardware.
    #[default]
    Auto,
    /// Run colouring and cache maintenance even where the hardware does not
    /// need them (so those paths run under QEMU, which models no caches).
    Force,
}

/// Global options from the manifest header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Cache colouring and maintenance policy.
    pub cache_mode: CacheMode,
    /// Log level: 0 = error, 1 = warn, 2 = info, 3 = debug, 4 = trace.
    pub log_level: u8,
    /// The console key that starts a hypervisor command (e.g. 0x01 = Ctrl-A).
    pub console_switch_key: u8,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            cache_mode: CacheMode::Auto,
            log_level: 2,
            console_switch_key: 0x01,
        }
    }
}

/// The execution state a VM's kernel runs in at EL1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GuestArch {
    /// AArch64 (an arm64 `Image`, entered at EL1h with x0 = DTB).
    #[default]
    Aarch64,
    /// AArch32 (an ARM `zImage`, entered in SVC mode with r0 = 0,
    /// r1 = ~0, r2 = DTB): HCR_EL2.RW = 0 for the VM.
    Aarch32,
}

/// One virtio-net NIC of a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetSpec {
    /// Index of the switch this NIC is plugged into (see [`Manifest::switches`]).
    pub switch_index: u32,
    /// The NIC's MAC address.
    pub mac: [u8; 6],
    /// Whether port security is lifted (a router VM): the NIC may send from
    /// any source MAC and receives unicast for any.
    pub trusted: bool,
    /// The virtqueue layouts the device offers its driver.
    pub ring: RingLayout,
    /// Whether TCP segmentation offload is offered (`tso`).
    pub tso: bool,
}

/// The virtqueue layouts a NIC offers (`ring = "split" | "packed"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RingLayout {
    /// The split virtqueue only (virtio 1.2 §2.7): VIRTIO_F_RING_PACKED is
    /// not offered.
    #[default]
    Split,
    /// VIRTIO_F_RING_PACKED is offered as well (§2.8); a driver that does not
    /// accept it (virtio-drivers, say) keeps the split ring.
    Packed,
}

#[cfg(test)]
mod tests;
