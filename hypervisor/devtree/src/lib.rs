//! Device trees: the board's (parsed at boot) and each guest's (generated).
//!
//! - [`parse_board`] reads what the hypervisor needs from the device tree the
//!   firmware or QEMU passes in x0: RAM, console UART, GIC, timer PPIs, CPUs,
//!   PSCI and `virtio,mmio` transports. It needs no heap (fixed-capacity
//!   [`List`]s), so it runs before the allocator exists. Any blob, however
//!   malformed, gives a [`DevtreeError`] rather than a panic: the structure
//!   is validated before the `fdt` crate reads it.
//! - [`build_guest_dtb`] writes the tree a VM boots with, modelled on QEMU
//!   `virt`'s own ([`layout`] holds the addresses), with a small writer of
//!   its own (`writer`: `vm-fdt`'s bytes, in fewer instructions).
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

extern crate alloc;

mod board;
mod guest;
mod list;
mod validate;
mod writer;
pub use validate::strip_nops;

use core::fmt;

pub use board::{
    parse_board, BoardInfo, Cpu, EnableMethod, Gic, Interrupt, InterruptKind, MmioRange,
    OtherController, Psci, PsciConduit, Timer, Uart, UartKind, VirtioMmio, MAX_CPUS,
    MAX_MEMORY_RANGES, MAX_RESERVED, MAX_VIRTIO_MMIO, PSCI_CPU_ON_64,
};
pub use guest::{build_guest_dtb, layout, GuestDtbSpec, GuestGic};
pub use list::List;

/// Why a device tree could not be read or written.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevtreeError {
    /// the device tree is truncated: it needs {needed} bytes but {available} are present
    Truncated {
        /// Bytes the header says the blob has (or the header size).
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// no device tree magic 0xd00dfeed
    BadMagic,
    /// device tree version {version} is not supported (17 is)
    UnsupportedVersion {
        /// The header's version.
        version: u32,
    },
    /// malformed device tree at byte {offset}: {what}
    Malformed {
        /// Byte offset in the blob.
        offset: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// the device tree has no {what}
    MissingNode {
        /// The node that is needed.
        what: &'static str,
    },
    /// device tree {node} node: property {property} is missing, malformed or unsupported
    BadProperty {
        /// The kind of node.
        node: &'static str,
        /// The property.
        property: &'static str,
    },
    /// the device tree has more {what} than the {max} supported
    TooMany {
        /// What there are too many of.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// the guest device tree spec is invalid: {what}
    InvalidSpec {
        /// What is wrong.
        what: &'static str,
    },
    /// the device tree writer failed
    Write,
}

impl fmt::Display for DevtreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated { needed, available } => write!(
                f,
                "the device tree is truncated: it needs {needed} bytes but {available} are present"
            ),
            Self::BadMagic => f.write_str("no device tree magic 0xd00dfeed"),
            Self::UnsupportedVersion { version } => {
                write!(f, "device tree version {version} is not supported (17 is)")
            }
            Self::Malformed { offset, what } => {
                write!(f, "malformed device tree at byte {offset}: {what}")
            }
            Self::MissingNode { what } => write!(f, "the device tree has no {what}"),
            Self::BadProperty { node, property } => write!(
                f,
                "device tree {node} node: property {property} is missing, malformed or unsupported"
            ),
            Self::TooMany { what, max } => {
                write!(
                    f,
                    "the device tree has more {what} than the {max} supported"
                )
            }
            Self::InvalidSpec { what } => {
                write!(f, "the guest device tree spec is invalid: {what}")
            }
            Self::Write => f.write_str("the device tree writer failed"),
        }
    }
}

/// Every error type's `Display` is a message, not `Debug` output (issue 10).
#[cfg(test)]
mod display_tests {
    use super::{DevtreeError, OtherController};
    use chroma_mem::display_check::check_all;

    #[test]
    fn every_devtree_error_displays_as_a_message() {
        check_all(&[
            DevtreeError::Truncated {
                needed: 64,
                available: 8,
            },
            DevtreeError::BadMagic,
            DevtreeError::UnsupportedVersion { version: 16 },
            DevtreeError::Malformed {
                offset: 40,
                what: "a property name outside the strings block",
            },
            DevtreeError::MissingNode {
                what: "memory node",
            },
            DevtreeError::BadProperty {
                node: "memory",
                property: "reg",
            },
            DevtreeError::TooMany {
                what: "memory regions",
                max: 8,
            },
            DevtreeError::InvalidSpec { what: "no vCPUs" },
            DevtreeError::Write,
        ]);
        // Reported inside the binary's board error.
        check_all(&[
            OtherController::Bcm2836Local,
            OtherController::Bcm2835Armctrl,
        ]);
    }
}
