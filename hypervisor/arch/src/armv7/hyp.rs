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

/// HTCR.T0SZ, bits `[2:0]`.
const HTCR_T0SZ_MASK: u32 = 0b111;
/// HTCR.SH0 = 0b11: table walks are inner shareable.
const HTCR_SH0_INNER: u32 = 0b11 << 12;
/// HTCR.ORGN0 = 0b01: walks are outer write-back write-allocate cacheable.
const HTCR_ORGN0_WBWA: u32 = 0b01 << 10;
/// HTCR.IRGN0 = 0b01: walks are inner write-back write-allocate cacheable.
const HTCR_IRGN0_WBWA: u32 = 0b01 << 8;
/// The HTCR fields chroma sets; the others (UNK/SBOP, UNK/SBZP in ARMv7,
/// RES1/RES0 in ARMv8's AArch32) keep the value the hardware holds.
const HTCR_OWNED: u32 = HTCR_T0SZ_MASK | 0b11 << 12 | 0b11 << 10 | 0b11 << 8;

/// HTCR from its `current` value: a 32-bit input space (T0SZ = 0), walks
/// cacheable and inner shareable like the tables' own mapping; the bits
/// chroma does not own are preserved, as "should be one/zero or preserved"
/// allows on every ARMv7 and ARMv8 core.
pub const fn htcr(current: u32) -> u32 {
    current & !HTCR_OWNED | HTCR_SH0_INNER | HTCR_ORGN0_WBWA | HTCR_IRGN0_WBWA
}

/// HSCTLR.M: the HYP stage-1 MMU is on.
const HSCTLR_M: u32 = 1 << 0;
/// HSCTLR.A: alignment checking (off: the compiler may emit unaligned accesses).
const HSCTLR_A: u32 = 1 << 1;
/// HSCTLR.C: data accesses are cacheable as mapped.
const HSCTLR_C: u32 = 1 << 2;
/// HSCTLR.I: instruction fetches are cacheable.
const HSCTLR_I: u32 = 1 << 12;
/// HSCTLR.WXN: writable memory is never executable.
const HSCTLR_WXN: u32 = 1 << 19;
/// HSCTLR.EE: exception endianness (off: little-endian).
const HSCTLR_EE: u32 = 1 << 25;
/// HSCTLR.TE: exceptions taken in Thumb state (off: the vectors are A32).
const HSCTLR_TE: u32 = 1 << 30;
/// The HSCTLR bits chroma sets; the rest keep the hardware's value.
const HSCTLR_OWNED: u32 =
    HSCTLR_M | HSCTLR_A | HSCTLR_C | HSCTLR_I | HSCTLR_WXN | HSCTLR_EE | HSCTLR_TE;

/// HSCTLR from its `current` value with the MMU and both caches on;
/// `write_implies_never_execute` sets WXN (off only while the early map's
/// RWX blocks are live). A, EE and TE are cleared: unaligned accesses
/// allowed, little-endian, exceptions taken in ARM state. The bits chroma
/// does not own are preserved.
pub const fn hsctlr(current: u32, write_implies_never_execute: bool) -> u32 {
    let wxn = if write_implies_never_execute {
        HSCTLR_WXN
    } else {
        0
    };
    current & !HSCTLR_OWNED | HSCTLR_M | HSCTLR_C | HSCTLR_I | wxn
}

/// HCR while guests run. HCR's bits `[31:0]` are HCR_EL2's `[31:0]` field
/// for field (VM, SWIO, FMO, IMO, AMO, FB, BSU, TWI, TSC, TIDCP, TAC =
/// TACR, TSW, TGE; ARMv7 has no RW bit: bit 31 is reserved), so the
/// decisions and their reasons are the AArch64 back-end's for an AArch32
/// EL1 ([`crate::aarch64::el2::hcr_el2_for`]), taken once.
pub fn hcr_for_guests() -> u32 {
    chroma_core::exit::low_word(crate::aarch64::el2::hcr_el2_for(true))
}

/// VTCR.T0SZ (a signed 4-bit field, bits `[3:0]`) and VTCR.S (bit 4, its
/// sign repeated).
const VTCR_T0SZ_MASK: u32 = 0xf;
const VTCR_S: u32 = 1 << 4;
/// VTCR.SL0, bits `[7:6]`: 0 starts the walk at level 2, 1 at level 1.
const VTCR_SL0_SHIFT: u32 = 6;
/// VTCR walk attributes: inner and outer write-back write-allocate, inner
/// shareable (as the stage-2 tables are mapped at HYP).
const VTCR_WALK: u32 = 0b11 << 12 | 0b01 << 10 | 0b01 << 8;
/// VTCR bit 31 is RES1 (UNK/SBOP in ARMv7).
const VTCR_RES1: u32 = 1 << 31;

/// VTCR for stage-2 tables of `ipa_bits` (at most 40) that start at
/// `start_level` (1 or 2), as `chroma_core::pagetable::Geometry::stage2`
/// builds them: the input size is 2^(32 - T0SZ) bytes.
pub fn vtcr(ipa_bits: u8, start_level: u8) -> u32 {
    let t0sz = 32i32 - i32::from(ipa_bits.min(40));
    let field = (t0sz as u32) & VTCR_T0SZ_MASK;
    let sign = if t0sz < 0 { VTCR_S } else { 0 };
    let sl0 = if start_level <= 1 { 1 } else { 0 };
    VTCR_RES1 | VTCR_WALK | sl0 << VTCR_SL0_SHIFT | sign | field
}

/// HCPTR while guests run: CP10 and CP11 (VFP and Advanced SIMD) do not
/// trap, as on AArch64 (the guest owns those registers; the context switch
/// saves them), nor does CPACR; trace (TTA, bit 20) traps: no trace unit is
/// virtualised. Bits 13:12 and 9:0 are RES1.
pub const fn hcptr() -> u32 {
    1 << 20 | 0b11 << 12 | 0x3ff & !(0b11 << 10)
}

/// HDCR while guests run: the debug and performance-monitor traps, the
/// AArch64 back-end's [`crate::aarch64::el2::mdcr_el2`] (the fields are at
/// the same bits), for `event_counters` = PMCR.N.
pub fn hdcr(event_counters: u32) -> u32 {
    chroma_core::exit::low_word(crate::aarch64::el2::mdcr_el2(u64::from(event_counters)))
}

/// CNTHCTL while guests run: PL1 may read the physical counter (PL1PCTEN),
/// the physical timer traps (PL1PCEN clear): [`crate::aarch64::el2::cnthctl_el2`].
pub fn cnthctl() -> u32 {
    chroma_core::exit::low_word(crate::aarch64::el2::cnthctl_el2())
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
        let uncached = leaf(Attributes::DATA_NON_CACHEABLE);
        assert_eq!(uncached >> 2 & 0b111, 2, "AttrIndx 2: Normal Non-cacheable");
        assert_eq!(uncached >> 6 & 0b11, 0b01, "AP[2:1] = read/write");
        assert_ne!(uncached & 1 << 54, 0, "XN");
        assert_eq!(
            hmair0() >> 16 & 0xff,
            0x44,
            "attribute 2 is Normal Non-cacheable"
        );
        assert_eq!(hmair1(), 0);
    }

    #[test]
    fn control_values_set_their_fields_and_preserve_the_rest() {
        assert_eq!(htcr(0), 0b11 << 12 | 0b01 << 10 | 0b01 << 8);
        // Bits 31 and 23 (RES1 in ARMv8) survive; T0SZ is cleared.
        assert_eq!(
            htcr(1 << 31 | 1 << 23 | 0b111) & (1 << 31 | 1 << 23 | 0b111),
            1 << 31 | 1 << 23
        );
        let on = hsctlr(0, true);
        assert_eq!(on, 1 | 1 << 2 | 1 << 12 | 1 << 19);
        let from_ones = hsctlr(u32::MAX, false);
        assert_eq!(
            from_ones & (1 << 1 | 1 << 19 | 1 << 25 | 1 << 30),
            0,
            "A, WXN, EE, TE clear"
        );
        assert_eq!(
            from_ones & (1 << 29 | 1 << 28 | 1 << 4 | 1 << 3),
            1 << 29 | 1 << 28 | 1 << 4 | 1 << 3,
            "SBOP bits kept"
        );
    }

    #[test]
    fn guest_controls_match_ddi0406c() {
        // 40-bit IPA from level 1: T0SZ = -8 (0b1000) with S set, SL0 = 1.
        let value = vtcr(40, 1);
        assert_eq!(value & 0x1f, 0b1_1000);
        assert_eq!(value >> 6 & 0b11, 1);
        assert_ne!(value & 1 << 31, 0);
        // 32-bit IPA from level 1: T0SZ = 0.
        assert_eq!(vtcr(32, 1) & 0x1f, 0);
        assert_eq!(vtcr(30, 2) >> 6 & 0b11, 0, "level 2");
        let hcr = hcr_for_guests();
        for (bit, name) in [
            (0, "VM"),
            (3, "FMO"),
            (4, "IMO"),
            (5, "AMO"),
            (13, "TWI"),
            (19, "TSC"),
            (20, "TIDCP"),
            (21, "TAC"),
            (22, "TSW"),
        ] {
            assert_ne!(hcr & 1 << bit, 0, "{name}");
        }
        assert_eq!(hcr & (1 << 27 | 1 << 31), 0, "TGE clear, bit 31 reserved");
        assert_eq!(hcptr() & (1 << 10 | 1 << 11), 0, "CP10/CP11 do not trap");
        assert_ne!(hcptr() & 1 << 20, 0, "trace traps");
        assert_eq!(
            cnthctl() & 0b11,
            0b01,
            "counter readable, physical timer trapped"
        );
        assert_ne!(
            hdcr(4) & (1 << 9 | 1 << 6 | 1 << 5),
            0,
            "debug and PMU traps"
        );
    }
}
