//! Data cache maintenance by set/way on a guest's behalf: the operand the
//! hypervisor gives DC CISW for a trapped DC ISW, CSW or CISW.
//!
//! HCR_EL2.TSW traps the guest's set/way instructions, and the core's exit
//! dispatch answers each with a clean and invalidate of the same set and
//! way on the physical CPU (`cache::clean_invalidate_by_set_way`). The
//! operand is the guest's: DC CISW's layout (Arm ARM C5.3, DC CISW) is
//! SetWay in bits 31 to 4 (way in the top bits, set above the line-size
//! bits) and Level in bits 3 to 1 (the cache level minus one); bits 63 to
//! 32 and bit 0 are RES0.
//!
//! What is checked, and why that is enough:
//!
//! - the operand is masked to those architectural fields, so a guest's
//!   RES0 bits never reach the hardware;
//! - the level must name a data or unified cache that CLIDR_EL1 reports
//!   (every level from L1 up to it has a cache, and it is not the reserved
//!   Level value 7). An operand naming any other level is ignored (the
//!   instruction is skipped, as a no-op), so the hypervisor never executes
//!   a set/way instruction for a level the CPU lacks, whose outcome the
//!   architecture leaves CONSTRAINED UNPREDICTABLE;
//! - the set and way are not checked against CCSIDR_EL1 (reading it means
//!   writing CSSELR_EL1, the guest's register). Out of range for an
//!   existing cache, they are CONSTRAINED UNPREDICTABLE between maintaining
//!   no line and an arbitrary line of that cache: a clean and invalidate
//!   of an arbitrary line loses no data, so either outcome is harmless.

use aarch64_cpu::registers::CLIDR_EL1;
use tock_registers::fields::Field;
use tock_registers::register_bitfields;

register_bitfields! {u64,
    /// The operand of DC ISW, DC CSW and DC CISW (the rest is RES0).
    SET_WAY_OPERAND [
        /// The way (top bits) and set (above the line-size bits).
        SetWay OFFSET(4) NUMBITS(28) [],
        /// The cache level minus one.
        Level OFFSET(1) NUMBITS(3) []
    ]
}

/// CLIDR_EL1.Ctype<n>, for cache levels 1 to 7 (Level field values 0 to 6).
const CACHE_TYPES: [Field<u64, CLIDR_EL1::Register>; 7] = [
    CLIDR_EL1::Ctype1,
    CLIDR_EL1::Ctype2,
    CLIDR_EL1::Ctype3,
    CLIDR_EL1::Ctype4,
    CLIDR_EL1::Ctype5,
    CLIDR_EL1::Ctype6,
    CLIDR_EL1::Ctype7,
];

/// The DC CISW operand for a guest's set/way operand `guest_operand` on a
/// CPU whose CLIDR_EL1 is `clidr`, or `None` when the level it names has
/// no data or unified cache (the instruction is then skipped).
pub fn clean_invalidate_operand(guest_operand: u64, clidr: u64) -> Option<u64> {
    use CLIDR_EL1::Ctype1::Value as CacheType;
    let level = SET_WAY_OPERAND::Level.read(guest_operand);
    // Only the architectural fields reach the hardware.
    let operand = (SET_WAY_OPERAND::SetWay.val(SET_WAY_OPERAND::SetWay.read(guest_operand))
        + SET_WAY_OPERAND::Level.val(level))
    .value;
    let level = usize::try_from(level).ok()?;
    // Level 7 (cache level 8) does not exist: `get` refuses it.
    let requested = CACHE_TYPES.get(level)?;
    // A Ctype of "no cache" ends the hierarchy: the fields above it are to
    // be ignored (CLIDR_EL1, Ctype<n>).
    if CACHE_TYPES[..level]
        .iter()
        .any(|ctype| ctype.read(clidr) == CacheType::NoCache as u64)
    {
        return None;
    }
    match requested.read(clidr) {
        n if n == CacheType::DataCacheOnly as u64
            || n == CacheType::SeparateInstructionAndDataCaches as u64
            || n == CacheType::UnifiedCache as u64 =>
        {
            Some(operand)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU's Cortex-A57: separate L1 instruction and data caches, a unified
    /// L2, LoC 2, LoUIS 1 (CLIDR_EL1 = 0x0a200023).
    const CORTEX_A57: u64 = 0x0a20_0023;

    /// A set/way operand for `level` (1-based), `set` and `way` on a cache
    /// with 64-byte lines and `way_bits` bits of way number.
    fn operand(level: u64, set: u64, way: u64, way_bits: u32) -> u64 {
        way << (32 - way_bits) | set << 6 | (level - 1) << 1
    }

    #[test]
    fn an_operand_for_an_existing_data_cache_passes_unchanged() {
        // L1 data (2 way bits), L2 unified (4 way bits), any set and way.
        for (level, way_bits) in [(1, 2), (2, 4)] {
            for (set, way) in [(0, 0), (0x7f, 1), (0x3ff, (1 << way_bits) - 1)] {
                let op = operand(level, set, way, way_bits);
                assert_eq!(
                    clean_invalidate_operand(op, CORTEX_A57),
                    Some(op),
                    "{op:#x}"
                );
            }
        }
    }

    #[test]
    fn res0_bits_are_dropped() {
        let op = operand(2, 5, 3, 4);
        assert_eq!(
            clean_invalidate_operand(op | 0xdead_beef_0000_0000 | 1, CORTEX_A57),
            Some(op)
        );
        // Negative control: without the mask the value would differ.
        assert_ne!(op | 1, op);
    }

    #[test]
    fn levels_without_a_data_or_unified_cache_are_ignored() {
        // L3 to L7 do not exist on the A57 (Ctype3 = 0), nor does "L8".
        for level in 3..=8 {
            assert_eq!(
                clean_invalidate_operand(operand(level, 0, 0, 2), CORTEX_A57),
                None,
                "L{level}"
            );
        }
        // An instruction-cache-only level has nothing to clean.
        let instruction_only = 0b001;
        assert_eq!(
            clean_invalidate_operand(operand(1, 0, 0, 2), instruction_only),
            None
        );
        // A level above a "no cache" level is ignored even if its Ctype
        // field is not zero (the fields above the first zero are ignored).
        let gap = 0b100 << 6 | 0b011;
        assert_eq!(clean_invalidate_operand(operand(3, 0, 0, 2), gap), None);
        // Negative control: the same L3 with L2 present is maintained.
        let no_gap = 0b100 << 6 | 0b100 << 3 | 0b011;
        let op = operand(3, 0, 0, 2);
        assert_eq!(clean_invalidate_operand(op, no_gap), Some(op));
        // A data-only L1 and a unified L1 are maintained.
        for ctype in [0b010, 0b100] {
            let op = operand(1, 1, 1, 2);
            assert_eq!(clean_invalidate_operand(op, ctype), Some(op));
        }
    }
}
