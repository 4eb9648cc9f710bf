//! The kernel image formats a VM boots, as the config tool checks them and
//! the hypervisor loads them: where the image goes in guest RAM and how
//! much room it needs.

use crate::GuestArch;

/// Offset of the `ARM\x64` magic in the arm64 Image header
/// (Documentation/arch/arm64/booting.rst).
const ARM64_MAGIC_OFFSET: usize = 0x38;
/// The arm64 Image magic.
const ARM64_MAGIC: [u8; 4] = *b"ARM\x64";
/// `text_offset` of arm64 kernels older than 3.17 (`image_size` 0).
const ARM64_OLD_TEXT_OFFSET: u64 = 0x8_0000;
/// Offset of the zImage magic (Documentation/arch/arm/booting.rst).
const ZIMAGE_MAGIC_OFFSET: usize = 0x24;
/// The zImage magic, little-endian.
const ZIMAGE_MAGIC: u32 = 0x016f_2818;
/// Where a zImage goes: RAM base + 32 KiB, as U-Boot and QEMU's Linux
/// loader for ARM put it (the decompressor relocates itself if it must).
pub const ZIMAGE_TEXT_OFFSET: u64 = 0x8000;

/// What a kernel image's header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelHeader {
    /// The execution state the image runs in: an arm64 `Image` is AArch64,
    /// an ARM `zImage` AArch32.
    pub arch: GuestArch,
    /// Offset of the image from the (2 MiB-aligned) RAM base.
    pub text_offset: u64,
    /// Bytes the kernel occupies once loaded, BSS included (arm64
    /// `image_size`); 0 when the header does not say (old arm64 kernels,
    /// every zImage: its decompressor finds room above itself).
    pub image_size: u64,
}

impl KernelHeader {
    /// Decodes the first bytes of a kernel image (64 are enough); `None`
    /// when it is neither an arm64 Image nor a zImage.
    pub fn parse(header: &[u8]) -> Option<Self> {
        if header.get(ARM64_MAGIC_OFFSET..ARM64_MAGIC_OFFSET + 4) == Some(&ARM64_MAGIC[..]) {
            let word = |offset: usize| -> Option<u64> {
                Some(u64::from_le_bytes(
                    header.get(offset..offset + 8)?.try_into().ok()?,
                ))
            };
            let image_size = word(16)?;
            // image_size 0 means a pre-3.17 kernel: text_offset is then 0x80000.
            let text_offset = if image_size == 0 {
                ARM64_OLD_TEXT_OFFSET
            } else {
                word(8)?
            };
            return Some(Self {
                arch: GuestArch::Aarch64,
                text_offset,
                image_size,
            });
        }
        let magic = header.get(ZIMAGE_MAGIC_OFFSET..ZIMAGE_MAGIC_OFFSET + 4)?;
        if u32::from_le_bytes(magic.try_into().ok()?) == ZIMAGE_MAGIC {
            return Some(Self {
                arch: GuestArch::Aarch32,
                text_offset: ZIMAGE_TEXT_OFFSET,
                image_size: 0,
            });
        }
        None
    }

    /// Bytes from the RAM base to the end of the loaded kernel, for a file
    /// of `file_len` bytes: `text_offset + max(image_size, file_len)`.
    pub fn load_end(&self, file_len: u64) -> Option<u64> {
        self.text_offset.checked_add(self.image_size.max(file_len))
    }
}

impl GuestArch {
    /// The kernel image format of this execution state, for messages.
    pub const fn image_format(self) -> &'static str {
        match self {
            GuestArch::Aarch64 => "an arm64 Image (\"ARM\\x64\" magic at offset 0x38)",
            GuestArch::Aarch32 => "an ARM zImage (magic 0x016F2818 at offset 0x24)",
        }
    }

    /// The name the configuration uses (`arch = "..."`).
    pub const fn name(self) -> &'static str {
        match self {
            GuestArch::Aarch64 => "aarch64",
            GuestArch::Aarch32 => "aarch32",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm64(text_offset: u64, image_size: u64) -> [u8; 64] {
        let mut header = [0u8; 64];
        header[8..16].copy_from_slice(&text_offset.to_le_bytes());
        header[16..24].copy_from_slice(&image_size.to_le_bytes());
        header[0x38..0x3c].copy_from_slice(b"ARM\x64");
        header
    }

    #[test]
    fn an_arm64_image_is_aarch64_at_its_text_offset() {
        let header = KernelHeader::parse(&arm64(0x8_0000, 0x1234_0000)).unwrap();
        assert_eq!(
            header,
            KernelHeader {
                arch: GuestArch::Aarch64,
                text_offset: 0x8_0000,
                image_size: 0x1234_0000
            }
        );
        assert_eq!(header.load_end(64), Some(0x8_0000 + 0x1234_0000));
        // image_size 0: a pre-3.17 kernel, at 0x80000 whatever the field says.
        let old = KernelHeader::parse(&arm64(0, 0)).unwrap();
        assert_eq!(old.text_offset, 0x8_0000);
        assert_eq!(old.load_end(5000), Some(0x8_0000 + 5000));
    }

    #[test]
    fn a_zimage_is_aarch32_at_32_kib() {
        let mut header = [0u8; 64];
        header[0x24..0x28].copy_from_slice(&0x016f_2818u32.to_le_bytes());
        let z = KernelHeader::parse(&header).unwrap();
        assert_eq!(z.arch, GuestArch::Aarch32);
        assert_eq!(z.text_offset, 0x8000);
        assert_eq!(z.load_end(1 << 20), Some(0x8000 + (1 << 20)));
        // The magic byte-swapped (a big-endian zImage) is not one.
        header[0x24..0x28].copy_from_slice(&0x016f_2818u32.to_be_bytes());
        assert_eq!(KernelHeader::parse(&header), None);
    }

    #[test]
    fn anything_else_is_refused_without_panicking() {
        assert_eq!(KernelHeader::parse(&[0u8; 64]), None);
        assert_eq!(KernelHeader::parse(&[0u8; 10]), None);
        assert_eq!(KernelHeader::parse(&[]), None);
        // The arm64 magic with the header cut short.
        let header = arm64(0x8_0000, 1);
        let mut short = [0u8; 0x3c];
        short.copy_from_slice(&header[..0x3c]);
        short[16..24].fill(0);
        assert!(KernelHeader::parse(&short[..0x3c]).is_some());
        assert_eq!(KernelHeader::parse(&header[..0x30]), None);
    }
}
