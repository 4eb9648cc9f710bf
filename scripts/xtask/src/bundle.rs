//! Appends a VM manifest to the hypervisor image (the bundle QEMU boots).
//!
//! The hypervisor finds its manifest right after its own image: at
//! `image_size` bytes from its load address, where `image_size` is the arm64
//! Image header field (u64 little-endian at byte 16) that the linker script
//! fills with text + data + bss rounded up to 4 KiB. The bundle is the image
//! zero-padded to `image_size`, then the manifest zero-padded to 4 KiB; the
//! header's `image_size` is then rewritten to the bundle's length, so a loader
//! keeps the DTB and initrd clear of the manifest.
//!
//! An ARMv7 image carries the zImage header instead (magic 0x016F2818 at
//! byte 0x24, then its start and end addresses): its size is end - start,
//! and end is rewritten to cover the bundle the same way.

use std::fmt;

/// Offset of `image_size` in the arm64 Image header.
const IMAGE_SIZE_OFFSET: usize = 16;
/// Offset of the magic number `ARM\x64` in the arm64 Image header.
const MAGIC_OFFSET: usize = 56;
/// The arm64 Image header magic.
const MAGIC: [u8; 4] = *b"ARM\x64";
/// Length of the arm64 Image header.
const HEADER_LENGTH: usize = 64;
/// Offset of the zImage magic (u32 little-endian).
const ZIMAGE_MAGIC_OFFSET: usize = 0x24;
/// The zImage magic number.
const ZIMAGE_MAGIC: u32 = 0x016F_2818;
/// Offset of the zImage start address (u32), followed by the end address.
const ZIMAGE_START_OFFSET: usize = 0x28;
/// Offset of the zImage end address (u32).
const ZIMAGE_END_OFFSET: usize = 0x2c;
/// Bundle parts are padded to this.
const PAGE_SIZE: usize = 4096;

/// Why an image cannot be bundled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleError {
    /// The image is shorter than an arm64 Image header.
    TooShort,
    /// The image does not carry the arm64 Image magic.
    NoImageHeader,
    /// `image_size` is zero, not 4 KiB-aligned, or smaller than the file.
    BadImageSize(u64),
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BundleError::TooShort => write!(f, "image is shorter than an arm64 Image header"),
            BundleError::NoImageHeader => write!(f, "image has no arm64 Image header (magic ARM\\x64)"),
            BundleError::BadImageSize(size) => write!(
                f,
                "image header's image_size {size:#x} is zero, not 4 KiB-aligned, or smaller than the file"
            ),
        }
    }
}

/// A little-endian u32 at `offset` of `image` (which is at least a header long).
fn u32_at(image: &[u8], offset: usize) -> u32 {
    let mut field = [0u8; 4];
    field.copy_from_slice(&image[offset..offset + 4]);
    u32::from_le_bytes(field)
}

/// Whether `image` carries the ARMv7 zImage header (and is at least a header long).
fn is_zimage(image: &[u8]) -> bool {
    image.len() >= HEADER_LENGTH && u32_at(image, ZIMAGE_MAGIC_OFFSET) == ZIMAGE_MAGIC
}

/// The image's size from its header: the arm64 Image's `image_size`, or a
/// zImage's end - start.
pub fn image_size(image: &[u8]) -> Result<u64, BundleError> {
    if image.len() < HEADER_LENGTH {
        return Err(BundleError::TooShort);
    }
    if is_zimage(image) {
        let start = u32_at(image, ZIMAGE_START_OFFSET);
        let end = u32_at(image, ZIMAGE_END_OFFSET);
        return Ok(u64::from(end.saturating_sub(start)));
    }
    if image[MAGIC_OFFSET..MAGIC_OFFSET + 4] != MAGIC {
        return Err(BundleError::NoImageHeader);
    }
    let mut field = [0u8; 8];
    field.copy_from_slice(&image[IMAGE_SIZE_OFFSET..IMAGE_SIZE_OFFSET + 8]);
    Ok(u64::from_le_bytes(field))
}

/// Builds the bundle: `image` padded to its `image_size`, then `manifest` padded to 4 KiB.
pub fn bundle(image: &[u8], manifest: &[u8]) -> Result<Vec<u8>, BundleError> {
    let size = image_size(image)?;
    let manifest_offset = usize::try_from(size).map_err(|_| BundleError::BadImageSize(size))?;
    if manifest_offset == 0 || manifest_offset % PAGE_SIZE != 0 || manifest_offset < image.len() {
        return Err(BundleError::BadImageSize(size));
    }
    let manifest_length = manifest.len().div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let mut out = Vec::with_capacity(manifest_offset + manifest_length);
    out.extend_from_slice(image);
    out.resize(manifest_offset, 0);
    out.extend_from_slice(manifest);
    out.resize(manifest_offset + manifest_length, 0);
    if is_zimage(&out) {
        let start = u32_at(&out, ZIMAGE_START_OFFSET);
        let end = u32::try_from(out.len())
            .ok()
            .and_then(|length| start.checked_add(length))
            .ok_or(BundleError::BadImageSize(size))?;
        out[ZIMAGE_END_OFFSET..ZIMAGE_END_OFFSET + 4].copy_from_slice(&end.to_le_bytes());
        return Ok(out);
    }
    let total = u64::try_from(out.len()).expect("a bundle fits in u64");
    out[IMAGE_SIZE_OFFSET..IMAGE_SIZE_OFFSET + 8].copy_from_slice(&total.to_le_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake image: header with magic and `image_size`, then `length` bytes of 0xAA.
    fn image(length: usize, size: u64) -> Vec<u8> {
        let mut image = vec![0xAA; length];
        image[MAGIC_OFFSET..MAGIC_OFFSET + 4].copy_from_slice(&MAGIC);
        image[IMAGE_SIZE_OFFSET..IMAGE_SIZE_OFFSET + 8].copy_from_slice(&size.to_le_bytes());
        image
    }

    #[test]
    fn manifest_sits_at_image_size_and_header_covers_the_bundle() {
        let image = image(5000, 0x3000);
        let manifest = [1u8, 2, 3, 4, 5];
        let out = bundle(&image, &manifest).unwrap();
        assert_eq!(out.len(), 0x4000);
        assert_eq!(&out[..IMAGE_SIZE_OFFSET], &image[..IMAGE_SIZE_OFFSET]);
        assert_eq!(&out[24..5000], &image[24..5000]);
        assert!(
            out[5000..0x3000].iter().all(|byte| *byte == 0),
            "bss padding is zero"
        );
        assert_eq!(&out[0x3000..0x3005], &manifest);
        assert!(
            out[0x3005..].iter().all(|byte| *byte == 0),
            "manifest padding is zero"
        );
        assert_eq!(image_size(&out), Ok(0x4000));
    }

    #[test]
    fn a_zimage_bundle_keeps_the_manifest_at_end_minus_start() {
        let mut image = vec![0xAA; 5000];
        image[ZIMAGE_MAGIC_OFFSET..ZIMAGE_MAGIC_OFFSET + 4]
            .copy_from_slice(&ZIMAGE_MAGIC.to_le_bytes());
        image[ZIMAGE_START_OFFSET..ZIMAGE_START_OFFSET + 4]
            .copy_from_slice(&0x4001_0000u32.to_le_bytes());
        image[ZIMAGE_END_OFFSET..ZIMAGE_END_OFFSET + 4]
            .copy_from_slice(&0x4001_3000u32.to_le_bytes());
        assert_eq!(image_size(&image), Ok(0x3000));
        let out = bundle(&image, &[9u8; 10]).unwrap();
        assert_eq!(out.len(), 0x4000);
        assert_eq!(&out[0x3000..0x300a], &[9u8; 10]);
        assert_eq!(u32_at(&out, ZIMAGE_END_OFFSET), 0x4001_4000);
        assert_eq!(image_size(&out), Ok(0x4000));
        // The arm64 field at byte 16 is code in a zImage: left alone.
        assert_eq!(&out[..ZIMAGE_END_OFFSET], &image[..ZIMAGE_END_OFFSET]);
    }

    #[test]
    fn page_sized_manifest_gets_no_extra_page() {
        let out = bundle(&image(4096, 4096), &[7u8; 4096]).unwrap();
        assert_eq!(out.len(), 8192);
    }

    #[test]
    fn refuses_images_without_a_usable_header() {
        assert_eq!(bundle(&[0u8; 10], &[]), Err(BundleError::TooShort));
        assert_eq!(bundle(&[0u8; 4096], &[]), Err(BundleError::NoImageHeader));
        assert_eq!(
            bundle(&image(4096, 0), &[]),
            Err(BundleError::BadImageSize(0))
        );
        assert_eq!(
            bundle(&image(4096, 4097), &[]),
            Err(BundleError::BadImageSize(4097))
        );
        // image_size smaller than the file would put the manifest over the image.
        assert_eq!(
            bundle(&image(8192, 4096), &[]),
            Err(BundleError::BadImageSize(4096))
        );
    }
}
