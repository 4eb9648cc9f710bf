//! Why a configuration was refused: the file, the key and the reason.

use chroma_manifest::GuestArch;
use std::fmt;
use std::path::PathBuf;

/// A refused configuration. Displays as `FILE: KEY: REASON`, for example
/// `configs/default.toml: vm[1] ("probe").memory: "64Q" is not a size (use 64M, 1G, ...)`.
///
/// Unlike the `no_std` crates' `Copy` errors (STYLE E1), this host-side
/// error carries the file name, the key path and the offending text, since
/// the message is for a person editing the file. Tests match on
/// [`ConfigError::kind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// The key, as a path: `vm[1] ("probe").memory`, `switch[0] ("lan0").uplink`,
    /// `hypervisor.log_level`; empty when the error is about the whole file.
    pub key: String,
    /// The reason.
    pub kind: ErrorKind,
}

impl std::error::Error for ConfigError {}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        write!(f, "{}", self.kind)
    }
}

/// The reason part of a [`ConfigError`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// cannot read the configuration file: {reason}
    ReadConfig {
        /// The I/O error.
        reason: String,
    },
    /// {message} (line {line}, column {column})
    Syntax {
        /// The TOML parser's message (unknown key, wrong type, bad syntax...).
        message: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },
    /// no `[[vm]]` is defined (at least one is needed)
    NoVms,
    /// {name:?} is not a valid name (1 to 16 of A-Z a-z 0-9 _ -)
    BadName {
        /// The refused name.
        name: String,
    },
    /// {name:?} is already the name of {first}
    DuplicateName {
        /// The repeated name.
        name: String,
        /// The key of the first use.
        first: String,
    },
    /// {text:?} is not a size (use 64M, 1G, ...)
    BadSize {
        /// The refused text.
        text: String,
    },
    /// {bytes} bytes is not a multiple of 2 MiB
    NotAligned {
        /// The refused value.
        bytes: u64,
    },
    /// guest RAM must be at least 2 MiB
    MemoryTooSmall,
    /// guest RAM at {base:#x}..{end:#x} overlaps the device window below 0x4000_0000
    OverlapsDeviceWindow {
        /// First byte of guest RAM.
        base: u64,
        /// End (exclusive) of guest RAM.
        end: u64,
    },
    /// guest RAM at {base:#x}.. ends past the 40-bit IPA limit (1 TiB)
    BeyondIpaLimit {
        /// First byte of guest RAM.
        base: u64,
    },
    /// {bytes} is more than the {available} the board leaves for guests
    MemoryExceedsBoard {
        /// The VM's memory.
        bytes: u64,
        /// Guest RAM on the board.
        available: u64,
    },
    /// the VMs' memory adds up to {total}, more than the {available} the board leaves for guests
    TotalMemoryExceedsBoard {
        /// Sum of the VMs' memory up to and including this VM.
        total: u64,
        /// Guest RAM on the board.
        available: u64,
    },
    /// kernel, initrd and the 2 MiB device tree need {need} but the VM has {have}
    ImagesDoNotFit {
        /// Bytes the images need.
        need: u64,
        /// The VM's memory.
        have: u64,
    },
    /// {count} vCPUs is outside 1..=8
    VcpuCount {
        /// The refused count.
        count: u32,
    },
    /// {vcpus} vCPUs but the board has {cpus} physical CPUs
    MoreVcpusThanCpus {
        /// The VM's vCPUs.
        vcpus: u32,
        /// Physical CPUs on the board.
        cpus: u32,
    },
    /// {pins} entries but the VM has {vcpus} vCPUs (one physical CPU per vCPU)
    PinCount {
        /// Entries in `cpus`.
        pins: usize,
        /// The VM's vCPUs.
        vcpus: u32,
    },
    /// physical CPU {cpu} does not exist (the board has {cpus}: 0..{cpus})
    PinOutOfRange {
        /// The refused CPU index.
        cpu: u32,
        /// Physical CPUs on the board.
        cpus: u32,
    },
    /// cannot read {path:?}: {reason}
    ReadImage {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// an AArch64 VM on an ARMv7 board
    Aarch64OnArmv7,
    /// {path:?} is not {arch.image_format()} (the kernel of an `arch` VM)
    NotAnImage {
        /// The file.
        path: PathBuf,
        /// The VM's execution state, which names the format it needs.
        arch: GuestArch,
    },
    /// {path:?} is {bytes} bytes, too large for the manifest (4 GiB in all)
    ImageTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// {reason}
    BadCmdline {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// no `[[switch]]` is named {name:?}
    UnknownSwitch {
        /// The name the NIC refers to.
        name: String,
    },
    /// {text:?} is not a MAC address (use six hex pairs: 52:54:00:12:34:01)
    BadMac {
        /// The refused text.
        text: String,
    },
    /// {text:?} is not a ring layout (use "packed" or "split")
    BadRing {
        /// The refused text.
        text: String,
    },
    /// {mac} is a multicast address (the first octet's low bit is set)
    MulticastMac {
        /// The refused address.
        mac: String,
    },
    /// {mac} is already used by {first}
    DuplicateMac {
        /// The repeated address.
        mac: String,
        /// The key of the first NIC with it.
        first: String,
    },
    /// {first} already has the uplink (at most one switch may)
    TwoUplinks {
        /// The key of the first switch with an uplink.
        first: String,
    },
    /// {ports} ports on one switch, at most {max} (the uplink counts as one)
    TooManyPorts {
        /// The switch's NICs, plus one for the uplink.
        ports: usize,
        /// [`chroma_manifest::MAX_SWITCH_PORTS`].
        max: usize,
    },
    /// the manifest could not be built: {reason}
    Manifest {
        /// The manifest builder's error.
        reason: chroma_manifest::ManifestError,
    },
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ErrorKind::*;
        match self {
            ReadConfig { reason } => write!(f, "cannot read the configuration file: {reason}"),
            Syntax {
                message,
                line,
                column,
            } => {
                write!(f, "{message} (line {line}, column {column})")
            }
            NoVms => f.write_str("no [[vm]] is defined (at least one is needed)"),
            BadName { name } => {
                write!(
                    f,
                    "{name:?} is not a valid name (1 to 16 of A-Z a-z 0-9 _ -)"
                )
            }
            DuplicateName { name, first } => write!(f, "{name:?} is already the name of {first}"),
            BadSize { text } => write!(f, "{text:?} is not a size (use 64M, 1G, ...)"),
            NotAligned { bytes } => write!(f, "{} is not a multiple of 2 MiB", Size(*bytes)),
            MemoryTooSmall => f.write_str("guest RAM must be at least 2 MiB"),
            OverlapsDeviceWindow { base, end } => write!(
                f,
                "guest RAM at {base:#x}..{end:#x} overlaps the device window below 0x4000_0000"
            ),
            BeyondIpaLimit { base } => write!(
                f,
                "guest RAM at {base:#x}.. ends past the 40-bit IPA limit (1 TiB)"
            ),
            MemoryExceedsBoard { bytes, available } => write!(
                f,
                "{} is more than the {} the board leaves for guests",
                Size(*bytes),
                Size(*available)
            ),
            TotalMemoryExceedsBoard { total, available } => write!(
                f,
                "the VMs' memory adds up to {}, more than the {} the board leaves for guests",
                Size(*total),
                Size(*available)
            ),
            ImagesDoNotFit { need, have } => write!(
                f,
                "kernel, initrd and the 2 MiB device tree need {} but the VM has {}",
                Size(*need),
                Size(*have)
            ),
            VcpuCount { count } => write!(f, "{count} vCPUs is outside 1..=8"),
            MoreVcpusThanCpus { vcpus, cpus } => {
                write!(f, "{vcpus} vCPUs but the board has {cpus} physical CPUs")
            }
            PinCount { pins, vcpus } => write!(
                f,
                "{pins} entries but the VM has {vcpus} vCPUs (one physical CPU per vCPU)"
            ),
            PinOutOfRange { cpu, cpus } => write!(
                f,
                "physical CPU {cpu} does not exist (the board has {cpus}: 0..{cpus})"
            ),
            ReadImage { path, reason } => write!(f, "cannot read {}: {reason}", path.display()),
            Aarch64OnArmv7 => f.write_str(
                "an AArch64 VM on an ARMv7 board: its hypervisor runs AArch32 guests only (arch = \"aarch32\", a zImage)",
            ),
            NotAnImage { path, arch } => {
                write!(f, "{} is not {}", path.display(), arch.image_format())?;
                if *arch == GuestArch::Aarch64 {
                    // The commonest slip: a 32-bit kernel without `arch`.
                    if let Ok(Some(header)) = crate::ImageHeader::read(path) {
                        if header.arch == GuestArch::Aarch32 {
                            return f.write_str(
                                "; it is an ARM zImage: set arch = \"aarch32\" for this VM",
                            );
                        }
                    }
                }
                Ok(())
            }
            ImageTooLarge { path, bytes } => write!(
                f,
                "{} is {}, too large for the manifest (4 GiB in all)",
                path.display(),
                Size(*bytes)
            ),
            BadCmdline { reason } => f.write_str(reason),
            UnknownSwitch { name } => write!(f, "no [[switch]] is named {name:?}"),
            BadMac { text } => write!(
                f,
                "{text:?} is not a MAC address (use six hex pairs: 52:54:00:12:34:01)"
            ),
            BadRing { text } => write!(
                f,
                "{text:?} is not a ring layout (use \"packed\" or \"split\")"
            ),
            MulticastMac { mac } => {
                write!(
                    f,
                    "{mac} is a multicast address (the first octet's low bit is set)"
                )
            }
            DuplicateMac { mac, first } => write!(f, "{mac} is already used by {first}"),
            TwoUplinks { first } => {
                write!(f, "{first} already has the uplink (at most one switch may)")
            }
            TooManyPorts { ports, max } => write!(
                f,
                "{ports} ports on one switch, at most {max} (the uplink counts as one)"
            ),
            Manifest { reason } => write!(f, "the manifest could not be built: {reason}"),
        }
    }
}

/// A byte count shown the way a person writes it: `64 MiB`, `1 GiB`, or
/// `12345 bytes` when it is not a whole number of KiB.
#[derive(Clone, Copy)]
pub(crate) struct Size(pub(crate) u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [
            (1 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ];
        for (unit, name) in UNITS {
            if self.0 >= unit && self.0.is_multiple_of(unit) {
                return write!(f, "{} {name}", self.0 / unit);
            }
        }
        write!(f, "{} bytes", self.0)
    }
}

/// Every error's `Display` is a message, not `Debug` output (issue 10).
#[cfg(test)]
mod display_tests {
    use super::{ConfigError, ErrorKind};
    use chroma_mem::display_check::reads_as_message;
    use std::path::PathBuf;

    #[test]
    fn every_config_error_displays_as_a_message() {
        let path = || PathBuf::from("guests/linux.img");
        let name = || String::from("probe");
        let kinds = [
            ErrorKind::ReadConfig {
                reason: "permission denied".into(),
            },
            ErrorKind::Syntax {
                message: "unknown field `memroy`".into(),
                line: 3,
                column: 1,
            },
            ErrorKind::NoVms,
            ErrorKind::BadName { name: name() },
            ErrorKind::DuplicateName {
                name: name(),
                first: "vm[0]".into(),
            },
            ErrorKind::BadSize { text: "64Q".into() },
            ErrorKind::NotAligned { bytes: 4096 },
            ErrorKind::MemoryTooSmall,
            ErrorKind::OverlapsDeviceWindow {
                base: 0x1000_0000,
                end: 0x5000_0000,
            },
            ErrorKind::BeyondIpaLimit { base: 1 << 40 },
            ErrorKind::MemoryExceedsBoard {
                bytes: 1 << 33,
                available: 1 << 30,
            },
            ErrorKind::TotalMemoryExceedsBoard {
                total: 1 << 33,
                available: 1 << 30,
            },
            ErrorKind::ImagesDoNotFit {
                need: 1 << 26,
                have: 1 << 25,
            },
            ErrorKind::VcpuCount { count: 9 },
            ErrorKind::MoreVcpusThanCpus { vcpus: 4, cpus: 2 },
            ErrorKind::PinCount { pins: 1, vcpus: 2 },
            ErrorKind::PinOutOfRange { cpu: 7, cpus: 4 },
            ErrorKind::ReadImage {
                path: path(),
                reason: "no such file".into(),
            },
            ErrorKind::NotAnImage {
                path: path(),
                arch: chroma_manifest::GuestArch::Aarch64,
            },
            ErrorKind::NotAnImage {
                path: path(),
                arch: chroma_manifest::GuestArch::Aarch32,
            },
            ErrorKind::ImageTooLarge {
                path: path(),
                bytes: 1 << 33,
            },
            ErrorKind::BadCmdline {
                reason: "the command line contains a NUL byte",
            },
            ErrorKind::UnknownSwitch {
                name: "lan9".into(),
            },
            ErrorKind::BadMac {
                text: "52:54".into(),
            },
            ErrorKind::BadRing {
                text: "event-idx".into(),
            },
            ErrorKind::MulticastMac {
                mac: "01:00:5e:00:00:01".into(),
            },
            ErrorKind::DuplicateMac {
                mac: "52:54:00:12:34:01".into(),
                first: "vm[0].net[0]".into(),
            },
            ErrorKind::TwoUplinks {
                first: "switch[0]".into(),
            },
            ErrorKind::TooManyPorts { ports: 17, max: 16 },
            ErrorKind::Manifest {
                reason: chroma_manifest::ManifestError::BadMagic,
            },
        ];
        for kind in kinds {
            let debug = format!("{kind:?}");
            assert!(reads_as_message(&format!("{kind}"), &debug), "{debug}");
            // The negative control: Debug output fails the check.
            assert!(!reads_as_message(&debug, &debug), "{debug}");
            let error = ConfigError {
                file: "configs/default.toml".into(),
                key: "vm[1] (\"probe\").memory".into(),
                kind,
            };
            assert!(reads_as_message(&format!("{error}"), &debug), "{error:?}");
        }
    }
}
