//! Byte offsets and limits of the manifest format (see the crate docs).

/// The first eight bytes of every manifest.
pub const MAGIC: [u8; 8] = *b"CHROMAMF";
/// The only format version this build reads and writes. Version 2 dropped
/// version 1's "exit via semihosting" header byte (now reserved): the
/// hypervisor always powers off through PSCI, and a manifest that asked for
/// semihosting is refused rather than misread.
pub const FORMAT_VERSION: u16 = 2;
/// Size of the header in bytes.
pub const HEADER_SIZE: usize = 64;
/// [`HEADER_SIZE`] as the header stores it.
pub(crate) const HEADER_SIZE_FIELD: u16 = 64;
const _: () = assert!(HEADER_SIZE_FIELD as usize == HEADER_SIZE);
/// Size of one VM record in bytes.
pub const VM_RECORD_SIZE: usize = 80;
/// Size of one switch record in bytes.
pub const SWITCH_RECORD_SIZE: usize = 16;
/// Size of one NIC record in bytes.
pub const NET_RECORD_SIZE: usize = 16;
/// The builder starts every blob on this alignment (relative to the
/// manifest's start); the parser does not require it.
pub const BLOB_ALIGN: usize = 8;
/// Most vCPUs one VM may have.
pub const MAX_VCPUS: usize = 8;
/// Longest VM or switch name, in bytes.
pub const MAX_NAME_LEN: usize = 16;
/// Longest kernel command line, in bytes (arm64 Linux `COMMAND_LINE_SIZE`
/// is 2048 including the NUL).
pub const MAX_CMDLINE_LEN: usize = 2047;

/// Most ports one switch has, the uplink included: the hypervisor keeps a
/// switch's per-run port tables on the stack, sized so.
pub const MAX_SWITCH_PORTS: usize = 16;
/// Highest log level (trace).
pub const MAX_LOG_LEVEL: u8 = 4;
/// Guest RAM base and size must be multiples of this (2 MiB: one stage-2
/// level-2 block).
pub const MEMORY_ALIGN: u64 = 2 << 20;
/// Where guest RAM starts when the configuration does not say (QEMU virt).
pub const DEFAULT_MEMORY_BASE: u64 = 0x4000_0000;

// Header fields.
pub(crate) const H_MAGIC: usize = 0;
pub(crate) const H_VERSION: usize = 8;
pub(crate) const H_HEADER_SIZE: usize = 10;
pub(crate) const H_TOTAL_LEN: usize = 12;
pub(crate) const H_CACHE_MODE: usize = 16;
pub(crate) const H_LOG_LEVEL: usize = 17;
/// Reserved since version 2 (was "exit via semihosting"); must be zero.
pub(crate) const H_RESERVED_18: usize = 18;
pub(crate) const H_SWITCH_KEY: usize = 19;
pub(crate) const H_VM_COUNT: usize = 20;
pub(crate) const H_SWITCH_COUNT: usize = 22;
pub(crate) const H_NET_COUNT: usize = 24;
pub(crate) const H_VM_TABLE: usize = 28;
pub(crate) const H_SWITCH_TABLE: usize = 32;
pub(crate) const H_NET_TABLE: usize = 36;
pub(crate) const H_DATA_OFFSET: usize = 40;
pub(crate) const H_DATA_LEN: usize = 44;
pub(crate) const H_CHECKSUM: usize = 48;
pub(crate) const H_RESERVED: usize = 52;

// VM record fields.
pub(crate) const V_NAME: usize = 0;
pub(crate) const V_MEMORY_BASE: usize = 8;
pub(crate) const V_MEMORY_BYTES: usize = 16;
pub(crate) const V_VCPUS: usize = 24;
pub(crate) const V_FLAGS: usize = 28;
pub(crate) const V_AFFINITY: usize = 32;
pub(crate) const V_KERNEL: usize = 40;
pub(crate) const V_INITRD: usize = 48;
pub(crate) const V_CMDLINE: usize = 56;
pub(crate) const V_NET_FIRST: usize = 64;
pub(crate) const V_NET_COUNT: usize = 68;
pub(crate) const V_RESERVED: usize = 72;
/// VM flag: the initrd blob ref is meaningful.
pub(crate) const VM_FLAG_INITRD: u32 = 1;
/// VM flag: the kernel runs in AArch32 state ([`crate::GuestArch::Aarch32`]).
pub(crate) const VM_FLAG_AARCH32: u32 = 2;

// Switch record fields.
pub(crate) const S_NAME: usize = 0;
pub(crate) const S_FLAGS: usize = 8;
pub(crate) const S_RESERVED: usize = 12;
/// Switch flag: the board's NIC is bridged into this switch.
pub(crate) const SWITCH_FLAG_UPLINK: u32 = 1;

// NIC record fields.
pub(crate) const N_SWITCH: usize = 0;
pub(crate) const N_MAC: usize = 4;
/// Reserved (zero) in the first version-2 manifests, so an older parser
/// refuses a manifest that sets a flag instead of ignoring it.
pub(crate) const N_FLAGS: usize = 10;
pub(crate) const N_RESERVED: usize = 12;
/// NIC flag: port security is lifted for this NIC (`trusted = true`).
pub(crate) const NET_FLAG_TRUSTED: u16 = 1;
/// NIC flag: the device offers the packed ring (`ring = "packed"`).
pub(crate) const NET_FLAG_PACKED_RING: u16 = 2;
/// NIC flag: no TCP segmentation offload offered (`tso = false`); a
/// manifest without it offers TSO.
pub(crate) const NET_FLAG_NO_TSO: u16 = 4;

/// FNV-1a (32-bit) of `bytes`, with the four bytes at `skip` read as zero.
pub(crate) fn checksum(bytes: &[u8], skip: usize) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for (index, &byte) in bytes.iter().enumerate() {
        let byte = if (skip..skip.saturating_add(4)).contains(&index) {
            0
        } else {
            byte
        };
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}
