//! Why a manifest was refused.

use core::fmt;

/// Which part of the manifest an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// The header.
    Header,
    /// The VM record with this index.
    Vm(u32),
    /// The switch record with this index.
    Switch(u32),
    /// The NIC record with this index (in the NIC table of all VMs).
    Net(u32),
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Header => f.write_str("header"),
            At::Vm(index) => write!(f, "vm[{index}]"),
            At::Switch(index) => write!(f, "switch[{index}]"),
            At::Net(index) => write!(f, "net[{index}]"),
        }
    }
}

/// Why a manifest could not be parsed (or built).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestError {
    /// the manifest is {len} bytes, shorter than its 64-byte header
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// no manifest magic "CHROMAMF" (nothing appended to the image?)
    BadMagic,
    /// manifest format version {found} is not supported (this build reads version 1)
    UnsupportedVersion {
        /// The version found in the header.
        found: u16,
    },
    /// the header says the manifest is {total_len} bytes but only {available} are present
    Truncated {
        /// Length the header claims.
        total_len: u64,
        /// Bytes available.
        available: usize,
    },
    /// metadata checksum mismatch (stored {stored:#010x}, computed {computed:#010x})
    ChecksumMismatch {
        /// The checksum in the header.
        stored: u32,
        /// The checksum of the bytes present.
        computed: u32,
    },
    /// {at}: {what} lies outside its area
    OutOfBounds {
        /// The record.
        at: At,
        /// The field.
        what: &'static str,
    },
    /// {at}: {what} is not UTF-8 without NUL bytes
    BadString {
        /// The record.
        at: At,
        /// The field.
        what: &'static str,
    },
    /// {at}: {what} has an invalid value
    InvalidValue {
        /// The record.
        at: At,
        /// The field.
        what: &'static str,
    },
    /// {at}: {what} is too large for the manifest format
    TooLarge {
        /// The record.
        at: At,
        /// The field.
        what: &'static str,
    },
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooShort { len } => {
                write!(
                    f,
                    "the manifest is {len} bytes, shorter than its 64-byte header"
                )
            }
            Self::BadMagic => {
                f.write_str("no manifest magic \"CHROMAMF\" (nothing appended to the image?)")
            }
            Self::UnsupportedVersion { found } => write!(
                f,
                "manifest format version {found} is not supported (this build reads version {})",
                crate::FORMAT_VERSION
            ),
            Self::Truncated {
                total_len,
                available,
            } => write!(
                f,
                "the header says the manifest is {total_len} bytes but only {available} are present"
            ),
            Self::ChecksumMismatch { stored, computed } => write!(
                f,
                "metadata checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            Self::OutOfBounds { at, what } => write!(f, "{at}: {what} lies outside its area"),
            Self::BadString { at, what } => {
                write!(f, "{at}: {what} is not UTF-8 without NUL bytes")
            }
            Self::InvalidValue { at, what } => write!(f, "{at}: {what} has an invalid value"),
            Self::TooLarge { at, what } => {
                write!(f, "{at}: {what} is too large for the manifest format")
            }
        }
    }
}

/// Every error type's `Display` is a message, not `Debug` output (issue 10).
#[cfg(test)]
mod display_tests {
    use super::{At, ManifestError};
    use chroma_mem::display_check::check_all;

    #[test]
    fn every_manifest_error_displays_as_a_message() {
        check_all(&[
            ManifestError::TooShort { len: 3 },
            ManifestError::BadMagic,
            ManifestError::UnsupportedVersion { found: 2 },
            ManifestError::Truncated {
                total_len: 4096,
                available: 64,
            },
            ManifestError::ChecksumMismatch {
                stored: 1,
                computed: 2,
            },
            ManifestError::OutOfBounds {
                at: At::Vm(1),
                what: "kernel",
            },
            ManifestError::BadString {
                at: At::Header,
                what: "name",
            },
            ManifestError::InvalidValue {
                at: At::Switch(0),
                what: "port count",
            },
            ManifestError::TooLarge {
                at: At::Net(2),
                what: "initrd",
            },
        ]);
        check_all(&[At::Header, At::Vm(1), At::Switch(0), At::Net(2)]);
    }
}
