//! VMSAv8-64 descriptor encodings (4 KiB granule) for the two regimes chroma
//! builds: stage-2 (guest IPA -> PA) and the EL2 stage-1 (hypervisor VA ->
//! PA). Arm ARM D8.3 (translation table descriptor formats).

use chroma_core::pagetable::{Attributes, Descriptor, MemoryType, PageTableFormat, LAST_LEVEL};
use chroma_core::HostPhysAddr;

const VALID: u64 = 1 << 0;
/// Bit 1: table (levels 0-2) or page (level 3); clear for a block.
const TABLE_OR_PAGE: u64 = 1 << 1;
const ADDRESS_MASK: u64 = 0x0000_ffff_ffff_f000;
/// Access flag: set, so no access-flag faults.
const AF: u64 = 1 << 10;
/// Inner Shareable.
const SH_INNER: u64 = 0b11 << 8;

/// Stage-2 MemAttr[5:2]: Normal, outer and inner write-back cacheable.
const S2_MEMATTR_NORMAL_WB: u64 = 0b1111 << 2;
/// Stage-2 MemAttr[5:2]: Device-nGnRE.
const S2_MEMATTR_DEVICE_NGNRE: u64 = 0b0001 << 2;
/// Stage-2 MemAttr[5:2]: Normal, outer and inner Non-cacheable.
const S2_MEMATTR_NORMAL_NC: u64 = 0b0101 << 2;
const S2_MEMATTR_MASK: u64 = 0b1111 << 2;
/// S2AP[0]: readable; S2AP[1]: writable.
const S2AP_READ: u64 = 1 << 6;
const S2AP_WRITE: u64 = 1 << 7;
/// XN[1:0] = 0b10: not executable at EL1 or EL0.
const S2_XN: u64 = 0b10 << 53;

/// The MAIR_EL2 that the stage-1 `AttrIndx[2:0]` values below index (built
/// in [`el2::mair_el2`](super::el2::mair_el2)).
pub const MAIR_EL2_VALUE: u64 = super::el2::mair_el2();
/// AttrIndx of normal write-back memory.
const S1_ATTR_NORMAL: u64 = super::el2::MAIR_INDEX_NORMAL << 2;
/// AttrIndx of device memory.
const S1_ATTR_DEVICE: u64 = super::el2::MAIR_INDEX_DEVICE << 2;
/// AttrIndx of Normal Non-cacheable memory.
const S1_ATTR_NON_CACHEABLE: u64 = super::el2::MAIR_INDEX_NON_CACHEABLE << 2;
const S1_ATTR_MASK: u64 = 0b111 << 2;
/// AP[2:1]: 0b01 read/write, 0b11 read-only (AP[1] is RES1 at EL2).
const S1_AP_RW: u64 = 0b01 << 6;
const S1_AP_RO: u64 = 0b11 << 6;
/// XN for the EL2 regime (bit 54).
const S1_XN: u64 = 1 << 54;

fn kind_bits(descriptor_is_table: bool, level: u8) -> u64 {
    if descriptor_is_table || level == LAST_LEVEL {
        VALID | TABLE_OR_PAGE
    } else {
        VALID
    }
}

fn decode_common(raw: u64, level: u8, leaf_attributes: impl Fn(u64) -> Attributes) -> Descriptor {
    let address = HostPhysAddr::new(raw & ADDRESS_MASK);
    match (
        raw & VALID != 0,
        raw & TABLE_OR_PAGE != 0,
        level == LAST_LEVEL,
    ) {
        (false, _, _) => Descriptor::Invalid,
        (true, true, false) => Descriptor::Table(address),
        // A level-3 entry with bit 1 clear is reserved: treat as invalid.
        (true, false, true) => Descriptor::Invalid,
        (true, _, _) => Descriptor::Leaf {
            output: address,
            attributes: leaf_attributes(raw),
        },
    }
}

/// The stage-2 format (VTTBR_EL2 regime).
pub struct Stage2Format;

impl PageTableFormat for Stage2Format {
    fn encode(descriptor: Descriptor, level: u8) -> u64 {
        match descriptor {
            Descriptor::Invalid => 0,
            Descriptor::Table(next) => next.raw() & ADDRESS_MASK | kind_bits(true, level),
            Descriptor::Leaf {
                output,
                attributes: a,
            } => {
                let memattr = match a.memory {
                    MemoryType::Normal => S2_MEMATTR_NORMAL_WB | SH_INNER,
                    MemoryType::Device => S2_MEMATTR_DEVICE_NGNRE,
                    MemoryType::NormalNonCacheable => S2_MEMATTR_NORMAL_NC | SH_INNER,
                };
                let ap = if a.read { S2AP_READ } else { 0 } | if a.write { S2AP_WRITE } else { 0 };
                let xn = if a.execute { 0 } else { S2_XN };
                output.raw() & ADDRESS_MASK | memattr | ap | xn | AF | kind_bits(false, level)
            }
        }
    }

    fn decode(raw: u64, level: u8) -> Descriptor {
        decode_common(raw, level, |raw| Attributes {
            read: raw & S2AP_READ != 0,
            write: raw & S2AP_WRITE != 0,
            execute: raw & S2_XN == 0,
            memory: match raw & S2_MEMATTR_MASK {
                S2_MEMATTR_DEVICE_NGNRE => MemoryType::Device,
                S2_MEMATTR_NORMAL_NC => MemoryType::NormalNonCacheable,
                _ => MemoryType::Normal,
            },
        })
    }
}

/// The EL2 stage-1 format (TTBR0_EL2 regime, no VHE).
pub struct El2Stage1Format;

impl PageTableFormat for El2Stage1Format {
    fn encode(descriptor: Descriptor, level: u8) -> u64 {
        match descriptor {
            Descriptor::Invalid => 0,
            Descriptor::Table(next) => next.raw() & ADDRESS_MASK | kind_bits(true, level),
            Descriptor::Leaf {
                output,
                attributes: a,
            } => {
                let attr = match a.memory {
                    MemoryType::Normal => S1_ATTR_NORMAL | SH_INNER,
                    MemoryType::Device => S1_ATTR_DEVICE,
                    MemoryType::NormalNonCacheable => S1_ATTR_NON_CACHEABLE | SH_INNER,
                };
                let ap = if a.write { S1_AP_RW } else { S1_AP_RO };
                let xn = if a.execute { 0 } else { S1_XN };
                output.raw() & ADDRESS_MASK | attr | ap | xn | AF | kind_bits(false, level)
            }
        }
    }

    fn decode(raw: u64, level: u8) -> Descriptor {
        decode_common(raw, level, |raw| Attributes {
            read: true,
            write: raw & (0b11 << 6) == S1_AP_RW,
            execute: raw & S1_XN == 0,
            memory: match raw & S1_ATTR_MASK {
                S1_ATTR_DEVICE => MemoryType::Device,
                S1_ATTR_NON_CACHEABLE => MemoryType::NormalNonCacheable,
                _ => MemoryType::Normal,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage2_ram_block_has_the_architected_bits() {
        let d = Stage2Format::encode(
            Descriptor::Leaf {
                output: HostPhysAddr::new(0x8020_0000),
                attributes: Attributes::RAM,
            },
            2,
        );
        // Block, MemAttr 0b1111, S2AP RW, SH inner, AF, executable.
        assert_eq!(
            d,
            0x8020_0000 | 0b01 | 0b1111 << 2 | 0b11 << 6 | 0b11 << 8 | 1 << 10
        );
        let page = Stage2Format::encode(
            Descriptor::Leaf {
                output: HostPhysAddr::new(0x1000),
                attributes: Attributes::DEVICE,
            },
            3,
        );
        assert_eq!(page & 0b11, 0b11);
        assert_eq!(page & S2_XN, S2_XN);
        assert_eq!(
            Stage2Format::decode(page, 3),
            Descriptor::Leaf {
                output: HostPhysAddr::new(0x1000),
                attributes: Attributes::DEVICE
            }
        );
        assert_eq!(
            Stage2Format::decode(page, 2),
            Descriptor::Table(HostPhysAddr::new(0x1000))
        );
        assert_eq!(Stage2Format::decode(page & !0b10, 3), Descriptor::Invalid);
    }

    #[test]
    fn el2_stage1_round_trips_w_xor_x_attributes() {
        for a in [
            Attributes::TEXT,
            Attributes::READ_ONLY,
            Attributes::DATA,
            Attributes::DEVICE,
            Attributes::DATA_NON_CACHEABLE,
        ] {
            for level in [1, 2, 3] {
                let raw = El2Stage1Format::encode(
                    Descriptor::Leaf {
                        output: HostPhysAddr::new(0x4000_0000),
                        attributes: a,
                    },
                    level,
                );
                assert_eq!(
                    El2Stage1Format::decode(raw, level),
                    Descriptor::Leaf {
                        output: HostPhysAddr::new(0x4000_0000),
                        attributes: a
                    }
                );
                assert!(!(a.write && raw & S1_XN == 0), "writable and executable");
            }
        }
    }
}
