//! Small value parsers: sizes, MAC addresses, names, kernel image headers.

use chroma_manifest::{GuestArch, KernelHeader};
use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Parses a size: a byte count (`"1048576"`, `"0x4000_0000"`-style hex
/// also works) or a number with a `K`, `M`, `G` or `T` suffix (binary
/// units; `KiB`/`MiB`/... are accepted too). `None` if it is not a size or
/// does not fit in 64 bits.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        let digits: String = hex.chars().filter(|&c| c != '_').collect();
        if digits.is_empty() {
            return None;
        }
        return u64::from_str_radix(&digits, 16).ok();
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(digits_end);
    if digits.is_empty() {
        return None;
    }
    let number: u64 = digits.parse().ok()?;
    let shift = match suffix.trim_start() {
        "" | "B" => 0,
        "K" | "k" | "KiB" | "KB" => 10,
        "M" | "m" | "MiB" | "MB" => 20,
        "G" | "g" | "GiB" | "GB" => 30,
        "T" | "t" | "TiB" | "TB" => 40,
        _ => return None,
    };
    number.checked_mul(1u64 << shift)
}

/// Parses `52:54:00:12:34:01` (six pairs of hex digits separated by `:`).
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Formats a MAC address as `52:54:00:12:34:01`.
pub fn format_mac(mac: [u8; 6]) -> String {
    let mut text = String::with_capacity(17);
    for (index, byte) in mac.iter().enumerate() {
        if index > 0 {
            text.push(':');
        }
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// The MAC address of NIC `nic_index` of the VM `vm_name` when the
/// configuration gives none: an FNV-1a hash of the name and index, made
/// locally administered (bit 1 of the first octet set) and unicast (bit 0
/// clear). Stable across runs and builds.
pub fn derive_mac(vm_name: &str, nic_index: usize) -> [u8; 6] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let index = u64::try_from(nic_index).unwrap_or(u64::MAX);
    for byte in vm_name.bytes().chain([0xff]).chain(index.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let bytes = hash.to_le_bytes();
    let mut mac = [0u8; 6];
    mac.copy_from_slice(bytes.get(..6).unwrap_or(&[0; 6]));
    mac[0] = (mac[0] & 0xfc) | 0x02;
    mac
}

/// Whether `name` is 1..=16 of `[A-Za-z0-9_-]`.
pub fn is_valid_name(name: &str) -> bool {
    (1..=chroma_manifest::MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What a kernel file's header says: an arm64 `Image`
/// (Documentation/arch/arm64/booting.rst) or an ARM `zImage`
/// (Documentation/arch/arm/booting.rst); see [`KernelHeader`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    /// The execution state the kernel runs in (from its format).
    pub arch: GuestArch,
    /// Offset of the image from a 2 MiB-aligned base (arm64 `text_offset`,
    /// 0x80000 when `image_size` is 0, as for kernels before 3.17; 0x8000
    /// for a zImage).
    pub text_offset: u64,
    /// Bytes the kernel occupies once loaded, BSS included (`image_size`;
    /// 0 in old arm64 kernels and zImages).
    pub image_size: u64,
    /// Size of the file.
    pub file_len: u64,
}

impl ImageHeader {
    /// Bytes from the 2 MiB-aligned load base to the end of the loaded
    /// kernel: `text_offset + max(image_size, file size)`.
    pub fn load_end(&self) -> Option<u64> {
        self.text_offset
            .checked_add(self.image_size.max(self.file_len))
    }

    /// Decodes the header (the first 64 bytes); `None` for neither format.
    pub fn parse(header: &[u8], file_len: u64) -> Option<Self> {
        let KernelHeader {
            arch,
            text_offset,
            image_size,
        } = KernelHeader::parse(header)?;
        Some(Self {
            arch,
            text_offset,
            image_size,
            file_len,
        })
    }

    /// Reads and decodes the header of the file at `path`. Errors are the
    /// I/O error's text, or `None` inside `Ok` for a file without the magic.
    pub fn read(path: &Path) -> Result<Option<Self>, std::io::Error> {
        let mut file = File::open(path)?;
        let file_len = file.metadata()?.len();
        if file.metadata()?.is_dir() {
            return Err(std::io::Error::other("is a directory"));
        }
        let mut header = Vec::with_capacity(64);
        file.by_ref().take(64).read_to_end(&mut header)?;
        Ok(Self::parse(&header, file_len))
    }
}
