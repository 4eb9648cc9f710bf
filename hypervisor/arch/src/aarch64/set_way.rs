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

/// The DC CISW operands that name every line of one data or unified cache
/// (Arm ARM C5.3, DC CISW; ARMv7's DCCISW has the same layout): cache
/// level `level` (1 for L1) of `sets` sets and `ways` ways of
/// `line_size`-byte lines, as CCSIDR reports them. The way sits in the top
/// `ceil(log2(ways))` bits of bits 31 to 0, the set just above the line's
/// offset bits, the level minus one in bits 3 to 1. For the hypervisor's
/// own clean of its caches at boot: a geometry that does not fit the
/// operand (a level above 7, a way or set count of 0, a line of less than
/// 16 bytes or not a power of two, sets that reach the way bits) gives no
/// operand at all.
pub fn whole_cache_operands(
    level: u8,
    line_size: u32,
    ways: u32,
    sets: u32,
) -> impl Iterator<Item = u64> {
    let fits = (1..=7).contains(&level)
        && ways > 0
        && sets > 0
        && line_size >= 16
        && line_size.is_power_of_two();
    let line_bits = line_size.trailing_zeros();
    // ceil(log2(ways)): 0 for a direct-mapped cache (no way bits).
    let way_bits = u32::BITS - (ways.max(1) - 1).leading_zeros();
    let set_bits = u32::BITS - (sets.max(1) - 1).leading_zeros();
    let fits = fits && line_bits + set_bits + way_bits <= 32;
    let (ways, sets) = if fits { (ways, sets) } else { (0, 0) };
    let level_field = SET_WAY_OPERAND::Level
        .val(u64::from(level.saturating_sub(1)))
        .value;
    (0..ways).flat_map(move |way| {
        // A way field of no bits: shift the (zero) way out entirely.
        let way_field = u64::from(way).checked_shl(32 - way_bits).unwrap_or(0) & 0xffff_ffff;
        (0..sets).map(move |set| way_field | (u64::from(set) << line_bits) | level_field)
    })
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

    /// Every (level, way, set) the operands of a cache name, in order.
    fn named(level: u8, line_size: u32, ways: u32, sets: u32) -> Vec<(u64, u64, u64)> {
        let line_bits = line_size.trailing_zeros();
        let way_bits = u32::BITS - (ways - 1).leading_zeros();
        whole_cache_operands(level, line_size, ways, sets)
            .map(|op| {
                assert_eq!(op >> 32, 0, "{op:#x}: RES0 bits");
                assert_eq!(op & 1, 0, "{op:#x}: RES0 bit 0");
                let way = if way_bits == 0 {
                    0
                } else {
                    op >> (32 - way_bits)
                };
                let set_mask = (1u64 << (32 - way_bits - line_bits)) - 1;
                let set = (op >> line_bits) & set_mask;
                // Nothing between the line offset and bit 4 but the level.
                assert_eq!(op & ((1 << line_bits) - 1) & !0xe, 0, "{op:#x}");
                ((op >> 1) & 7, way, set)
            })
            .collect()
    }

    #[test]
    fn whole_cache_operands_name_every_line_once() {
        // QEMU's Cortex-A57: L1 D 32 KiB 2-way, L2 2 MiB 16-way, 64-byte
        // lines; a direct-mapped cache and one of 3 ways (2 way bits).
        for (level, line, ways, sets) in [
            (1, 64, 2, 256),
            (2, 64, 16, 2048),
            (1, 32, 1, 128),
            (3, 64, 3, 64),
        ] {
            let lines = named(level, line, ways, sets);
            let expected: Vec<_> = (0..u64::from(ways))
                .flat_map(|way| {
                    (0..u64::from(sets)).map(move |set| (u64::from(level) - 1, way, set))
                })
                .collect();
            assert_eq!(lines, expected, "L{level} {ways}-way {sets} sets");
            // The clean by set/way that `whole_cache_operands` feeds passes
            // the guest-operand check unchanged (the same field layout).
            for op in whole_cache_operands(level, line, ways, sets).take(4) {
                if level <= 2 {
                    assert_eq!(clean_invalidate_operand(op, CORTEX_A57), Some(op));
                }
            }
        }
    }

    #[test]
    fn geometries_that_do_not_fit_the_operand_give_no_operand() {
        for (level, line, ways, sets) in [
            (0, 64, 2, 256),
            (8, 64, 2, 256),
            (1, 64, 0, 256),
            (1, 64, 2, 0),
            (1, 8, 2, 256),
            (1, 48, 2, 256),
            // 6 line bits + 26 set bits + 1 way bit > 32.
            (1, 64, 2, 1 << 26),
        ] {
            assert_eq!(
                whole_cache_operands(level, line, ways, sets).count(),
                0,
                "L{level} line {line} {ways}-way {sets} sets"
            );
        }
        // Negative control for the decoder above: a way field one bit too
        // low (as an off-by-one shift would put it) lands in the set bits,
        // and two operands then name the same line.
        let shifted: std::collections::HashSet<u64> = (0..2u64)
            .flat_map(|way| (0..256u64).map(move |set| way << 30 | set << 6))
            .collect();
        let right: std::collections::HashSet<u64> = whole_cache_operands(1, 64, 2, 256).collect();
        assert_eq!(right.len(), 512);
        assert_ne!(shifted, right);
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
