//! The HYP-mode stage-1 translation regime with LPAE long descriptors:
//! the values of HTCR, HMAIR0/1 and HSCTLR, and the descriptor format.
//! Arm ARM (DDI 0406C) B3.6 (long-descriptor translation tables), B4.1.62
//! (HSCTLR), B4.1.76 (HTCR).
//!
//! A long descriptor in the HYP regime has the layout of a VMSAv8-64 EL2
//! stage-1 descriptor with a 4 KiB granule at levels 1 to 3: `AttrIndx[4:2]`,
//! `AP[7:6]` (`AP[1]` should be one), `SH[9:8]`, `AF[10]`, output address `[39:12]`,
//! `XN[54]`. So the AArch64 back-end's format and MAIR value serve both, and
//! `chroma_core::pagetable` walks both: with HTCR.T0SZ = 0 the walk starts
//! at level 1 with a four-entry root ([`Geometry::stage1`] of 32 bits).
//!
//! [`Geometry::stage1`]: chroma_core::pagetable::Geometry::stage1

pub use crate::aarch64::descriptors::El2Stage1Format as HypStage1Format;

/// Bits of HYP virtual address: the whole 32-bit space (HTCR.T0SZ = 0).
pub const HYP_VA_BITS: u8 = 32;

/// The memory types the descriptors' AttrIndx selects (MAIR_EL2's value,
/// whose encodings ARMv7 reads the same: 0xff normal write-back, 0x04 device).
const MAIR_VALUE: u64 = crate::aarch64::descriptors::MAIR_EL2_VALUE;

/// HMAIR0: attributes 0 to 3.
pub const fn hmair0() -> u32 {
    MAIR_VALUE.to_le_bytes()[0] as u32
        | (MAIR_VALUE.to_le_bytes()[1] as u32) << 8
        | (MAIR_VALUE.to_le_bytes()[2] as u32) << 16
        | (MAIR_VALUE.to_le_bytes()[3] as u32) << 24
}

/// HMAIR1: attributes 4 to 7.
pub const fn hmair1() -> u32 {
    MAIR_VALUE.to_le_bytes()[4] as u32
        | (MAIR_VALUE.to_le_bytes()[5] as u32) << 8
        | (MAIR_VALUE.to_le_bytes()[6] as u32) << 16
        | (MAIR_VALUE.to_le_bytes()[7] as u32) << 24
}

/// HTCR bit 31: RES1 (UNK/SBOP in ARMv7).
const HTCR_RES1: u32 = 1 << 31 | 1 << 23;
/// HTCR.SH0 = 0b11: table walks are inner shareable.
const HTCR_SH0_INNER: u32 = 0b11 << 12;
/// HTCR.ORGN0 = 0b01: walks are outer write-back write-allocate cacheable.
const HTCR_ORGN0_WBWA: u32 = 0b01 << 10;
/// HTCR.IRGN0 = 0b01: walks are inner write-back write-allocate cacheable.
const HTCR_IRGN0_WBWA: u32 = 0b01 << 8;

/// HTCR: a 32-bit input space (T0SZ = 0), walks cacheable and inner
/// shareable like the tables' own mapping.
pub const fn htcr() -> u32 {
    HTCR_RES1 | HTCR_SH0_INNER | HTCR_ORGN0_WBWA | HTCR_IRGN0_WBWA
}

/// HSCTLR bits that read as one (SBOP in ARMv7, RES1 in ARMv8's AArch32).
const HSCTLR_RES1: u32 =
    1 << 29 | 1 << 28 | 1 << 23 | 1 << 22 | 1 << 18 | 1 << 16 | 1 << 11 | 1 << 4 | 1 << 3;
/// HSCTLR.M: the HYP stage-1 MMU is on.
const HSCTLR_M: u32 = 1 << 0;
/// HSCTLR.C: data accesses are cacheable as mapped.
const HSCTLR_C: u32 = 1 << 2;
/// HSCTLR.I: instruction fetches are cacheable.
const HSCTLR_I: u32 = 1 << 12;
/// HSCTLR.WXN: writable memory is never executable.
const HSCTLR_WXN: u32 = 1 << 19;

/// HSCTLR with the MMU and both caches on; `write_implies_never_execute`
/// sets WXN (off only while the early map's RWX blocks are live). A, EE
/// and TE stay zero: unaligned accesses allowed, little-endian, exceptions
/// taken in ARM state (the vectors are A32 code).
pub const fn hsctlr(write_implies_never_execute: bool) -> u32 {
    let wxn = if write_implies_never_execute {
        HSCTLR_WXN
    } else {
        0
    };
    HSCTLR_RES1 | HSCTLR_M | HSCTLR_C | HSCTLR_I | wxn
}

#[cfg(test)]
mod tests {
    use super::*;
    use chroma_core::pagetable::{Attributes, Descriptor, Geometry, PageTableFormat};
    use chroma_core::HostPhysAddr;

    #[test]
    fn the_32_bit_hyp_space_starts_at_level_1_with_four_entries() {
        let geometry = Geometry::stage1(HYP_VA_BITS).unwrap();
        assert_eq!(geometry.start_level, 1);
        assert_eq!(geometry.root_entries, 4);
        assert_eq!(geometry.root_pages(), 1);
    }

    #[test]
    fn long_descriptors_have_the_hyp_bits_where_ddi0406c_puts_them() {
        let leaf = |attributes| {
            HypStage1Format::encode(
                Descriptor::Leaf {
                    output: HostPhysAddr::new(0x4001_0000),
                    attributes,
                },
                3,
            )
        };
        let text = leaf(Attributes::TEXT);
        assert_eq!(text & 0b11, 0b11, "a level-3 page");
        assert_eq!(text & 0xffff_f000, 0x4001_0000);
        assert_eq!(text >> 6 & 0b11, 0b11, "AP[2:1] = read-only, AP[1] one");
        assert_ne!(text & 1 << 10, 0, "AF");
        assert_eq!(text & 1 << 54, 0, "executable");
        assert_eq!(text >> 2 & 0b111, 0, "AttrIndx 0: normal memory");
        let data = leaf(Attributes::DATA);
        assert_eq!(data >> 6 & 0b11, 0b01, "AP[2:1] = read/write");
        assert_ne!(data & 1 << 54, 0, "XN");
        let device = leaf(Attributes::DEVICE);
        assert_eq!(device >> 2 & 0b111, 1, "AttrIndx 1: device");
        assert_eq!(hmair0() >> 8 & 0xff, 0x04, "attribute 1 is Device");
        assert_eq!(hmair0() & 0xff, 0xff, "attribute 0 is write-back");
        assert_eq!(hmair1(), 0);
    }

    #[test]
    fn control_values() {
        assert_eq!(htcr() & 0b111, 0, "T0SZ = 0: 32-bit input");
        assert_eq!(htcr() >> 12 & 0b11, 0b11);
        let on = hsctlr(true);
        assert_eq!(
            on & (1 | 1 << 2 | 1 << 12 | 1 << 19),
            1 | 1 << 2 | 1 << 12 | 1 << 19
        );
        assert_eq!(on & (1 << 1 | 1 << 25 | 1 << 30), 0, "A, EE, TE clear");
        assert_eq!(hsctlr(false) & 1 << 19, 0);
    }
}
