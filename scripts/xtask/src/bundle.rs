//! Appends a VM manifest to the hypervisor image (the bundle QEMU boots).
//!
//! The hypervisor finds its manifest right after its own image: at
//! `image_size` bytes from its load address, where `image_size` is the arm64
//! Image header field (u64 little-endian at byte 16) that the linker script
//! fills with text + data + bss rounded up to 4 KiB. The bundle is the image
//! zero-padded to `image_size`, then the manifest zero-padded to 4 KiB; the
//! header's `image_size` is then rewritten to the bundle's length, so a loader
//! keeps the DTB and initrd clear of the manifest.

use std::fmt;

/// Offset of `image_size` in the arm64 Image header.
const IMAGE_SIZE_OFFSET: usize = 16;
/// Offset of the magic number `ARM\x64` in the arm64 Image header.
const MAGIC_OFFSET: usize = 56;
/// The arm64 Image header magic.
const MAGIC: [u8; 4] = *b"ARM\x64";
/// Length of the arm64 Image header.
const HEADER_LENGTH: usize = 64;
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

/// The `image_size` field of an arm64 Image.
pub fn image_size(image: &[u8]) -> Result<u64, BundleError> {
    if image.len() < HEADER_LENGTH {
        return Err(BundleError::TooShort);
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
