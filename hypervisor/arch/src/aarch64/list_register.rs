//! List register encodings: GICv2 `GICH_LR<n>` (IHI 0048B, 5.3.11) and GICv3
//! `ICH_LR<n>_EL2` (IHI 0069, 12.4.6), to and from the core's
//! architecture-neutral [`ListRegister`]. Pure, so the host tests cover it.

use chroma_core::vgic::{ListRegister, LrState};

/// `GICH_LR<n>` fields.
mod v2 {
    /// VirtualID, bits [9:0].
    pub const VIRTUAL_ID_MASK: u32 = 0x3ff;
    /// With HW = 0: CPUID, bits [12:10], the requesting CPU of an SGI.
    pub const CPUID_SHIFT: u32 = 10;
    pub const CPUID_MASK: u32 = 0x7;
    /// With HW = 1: PhysicalID, bits [19:10].
    pub const PHYSICAL_ID_SHIFT: u32 = 10;
    pub const PHYSICAL_ID_MASK: u32 = 0x3ff;
    /// Priority, bits [27:23]: the top five bits of the 8-bit priority.
    pub const PRIORITY_SHIFT: u32 = 23;
    pub const PRIORITY_MASK: u32 = 0x1f;
    /// How far the 8-bit priority is shifted down into the field.
    pub const PRIORITY_DROPPED_BITS: u32 = 3;
    /// State, bits [29:28].
    pub const STATE_SHIFT: u32 = 28;
    /// Grp1, bit 30.
    pub const GROUP1: u32 = 1 << 30;
    /// HW, bit 31: a hardware interrupt; deactivating the virtual one
    /// deactivates PhysicalID.
    pub const HW: u32 = 1 << 31;
}

/// `ICH_LR<n>_EL2` fields.
mod v3 {
    /// vINTID, bits [31:0].
    pub const VIRTUAL_INTID_MASK: u64 = 0xffff_ffff;
    /// With HW = 1: pINTID, bits [41:32] for the INTIDs a PPI or SPI can
    /// have (the field reaches bit 44; the bits above are RES0 here).
    pub const PHYSICAL_INTID_SHIFT: u32 = 32;
    pub const PHYSICAL_INTID_MASK: u64 = 0x3ff;
    /// Priority, bits [55:48].
    pub const PRIORITY_SHIFT: u32 = 48;
    pub const PRIORITY_MASK: u64 = 0xff;
    /// Group, bit 60.
    pub const GROUP1: u64 = 1 << 60;
    /// HW, bit 61.
    pub const HW: u64 = 1 << 61;
    /// State, bits [63:62].
    pub const STATE_SHIFT: u32 = 62;
}

/// The two-bit State field both encodings share.
const STATE_MASK: u64 = 0b11;

fn decode_state(bits: u64) -> LrState {
    match bits & STATE_MASK {
        0b00 => LrState::Invalid,
        0b01 => LrState::Pending,
        0b10 => LrState::Active,
        _ => LrState::PendingActive,
    }
}

fn encode_state(state: LrState) -> u8 {
    match state {
        LrState::Invalid => 0b00,
        LrState::Pending => 0b01,
        LrState::Active => 0b10,
        LrState::PendingActive => 0b11,
    }
}

/// The field of `value` at `shift` under `mask` (a mask of at most 32 bits).
fn field(value: u64, shift: u32, mask: u64) -> u32 {
    u32::try_from((value >> shift) & mask).unwrap_or(u32::MAX)
}

/// A field of at most 8 bits (see [`field`]).
fn byte_field(value: u64, shift: u32, mask: u64) -> u8 {
    u8::try_from(field(value, shift, mask)).unwrap_or(u8::MAX)
}

/// Interrupt IDs below this are SGIs (which carry a source CPU, never a HW link).
const SGI_COUNT: u32 = 16;

/// The GICH_LR value for `value` (0 for an invalid entry).
pub fn encode_v2(value: &ListRegister) -> u32 {
    if value.state == LrState::Invalid {
        return 0;
    }
    let link = match value.physical {
        Some(physical) if value.intid >= SGI_COUNT => {
            v2::HW | (physical & v2::PHYSICAL_ID_MASK) << v2::PHYSICAL_ID_SHIFT
        }
        _ if value.intid < SGI_COUNT => {
            (u32::from(value.source) & v2::CPUID_MASK) << v2::CPUID_SHIFT
        }
        _ => 0,
    };
    let priority = (u32::from(value.priority) >> v2::PRIORITY_DROPPED_BITS) & v2::PRIORITY_MASK;
    let state = u32::from(encode_state(value.state));
    (value.intid & v2::VIRTUAL_ID_MASK)
        | link
        | priority << v2::PRIORITY_SHIFT
        | state << v2::STATE_SHIFT
        | if value.group1 { v2::GROUP1 } else { 0 }
}

/// The entry a GICH_LR value holds.
pub fn decode_v2(lr: u32) -> ListRegister {
    let hardware = lr & v2::HW != 0;
    let lr = u64::from(lr);
    let priority = byte_field(lr, v2::PRIORITY_SHIFT, v2::PRIORITY_MASK.into());
    ListRegister {
        intid: field(lr, 0, v2::VIRTUAL_ID_MASK.into()),
        state: decode_state(lr >> v2::STATE_SHIFT),
        priority: priority << v2::PRIORITY_DROPPED_BITS,
        group1: lr & u64::from(v2::GROUP1) != 0,
        source: if hardware {
            0
        } else {
            byte_field(lr, v2::CPUID_SHIFT, v2::CPUID_MASK.into())
        },
        physical: hardware.then_some(field(
            lr,
            v2::PHYSICAL_ID_SHIFT,
            v2::PHYSICAL_ID_MASK.into(),
        )),
    }
}

/// The `ICH_LR<n>_EL2` value for `value` (0 for an invalid entry). GICv3 SGIs
/// carry no source.
pub fn encode_v3(value: &ListRegister) -> u64 {
    if value.state == LrState::Invalid {
        return 0;
    }
    let link = match value.physical {
        Some(physical) if value.intid >= SGI_COUNT => {
            v3::HW | (u64::from(physical) & v3::PHYSICAL_INTID_MASK) << v3::PHYSICAL_INTID_SHIFT
        }
        _ => 0,
    };
    u64::from(value.intid)
        | link
        | u64::from(value.priority) << v3::PRIORITY_SHIFT
        | if value.group1 { v3::GROUP1 } else { 0 }
        | u64::from(encode_state(value.state)) << v3::STATE_SHIFT
}

/// The entry an `ICH_LR<n>_EL2` value holds.
pub fn decode_v3(lr: u64) -> ListRegister {
    let hardware = lr & v3::HW != 0;
    ListRegister {
        intid: field(lr, 0, v3::VIRTUAL_INTID_MASK),
        state: decode_state(lr >> v3::STATE_SHIFT),
        priority: byte_field(lr, v3::PRIORITY_SHIFT, v3::PRIORITY_MASK),
        group1: lr & v3::GROUP1 != 0,
        source: 0,
        physical: hardware.then_some(field(lr, v3::PHYSICAL_INTID_SHIFT, v3::PHYSICAL_INTID_MASK)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer(state: LrState) -> ListRegister {
        ListRegister {
            intid: 27,
            state,
            priority: 0xa0,
            group1: true,
            source: 0,
            physical: Some(27),
        }
    }

    #[test]
    fn v2_hw_entry_has_bit_31_and_the_physical_id_in_bits_19_to_10() {
        let lr = encode_v2(&timer(LrState::Pending));
        assert_eq!(
            lr,
            1 << 31 | 1 << 30 | 0b01 << 28 | (0xa0 >> 3) << 23 | 27 << 10 | 27
        );
        assert_eq!(decode_v2(lr), timer(LrState::Pending));
    }

    #[test]
    fn v3_hw_entry_has_bit_61_and_the_physical_intid_in_bits_41_to_32() {
        let lr = encode_v3(&timer(LrState::Active));
        assert_eq!(
            lr,
            0b10 << 62 | 1 << 61 | 1 << 60 | 0xa0 << 48 | 27 << 32 | 27
        );
        assert_eq!(decode_v3(lr), timer(LrState::Active));
    }

    #[test]
    fn software_entries_have_no_hw_bit() {
        let sgi = ListRegister {
            intid: 3,
            state: LrState::Pending,
            priority: 0x80,
            group1: false,
            source: 5,
            physical: None,
        };
        let v2 = encode_v2(&sgi);
        assert_eq!(v2 & 1 << 31, 0);
        assert_eq!((v2 >> 10) & 7, 5, "GICv2 SGI source CPU");
        assert_eq!(decode_v2(v2), sgi);
        let v3 = encode_v3(&sgi);
        assert_eq!(v3 & 1 << 61, 0);
        assert_eq!(decode_v3(v3), ListRegister { source: 0, ..sgi });
        // An SGI never gets a HW link, even if asked.
        assert_eq!(
            encode_v2(&ListRegister {
                physical: Some(27),
                ..sgi
            }) & 1 << 31,
            0
        );
        assert_eq!(
            encode_v3(&ListRegister {
                physical: Some(27),
                ..sgi
            }) & 1 << 61,
            0
        );
    }

    #[test]
    fn invalid_entries_encode_as_zero() {
        assert_eq!(encode_v2(&timer(LrState::Invalid)), 0);
        assert_eq!(encode_v3(&timer(LrState::Invalid)), 0);
        assert_eq!(decode_v3(0).state, LrState::Invalid);
    }
}
