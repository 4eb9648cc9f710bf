//! What a trapped guest's saved PSTATE (SPSR_EL2) says about where it was:
//! its exception level and execution state, and so which EL1 vector an
//! exception injected into it takes (Arm ARM D1.10.2). Pure, host-tested.

/// PSTATE.M[3:0] of EL1t and EL1h (AArch64).
const MODE_EL1T: u64 = 0b0100;
const MODE_EL1H: u64 = 0b0101;
/// PSTATE.M[3:2]: the exception level (AArch64 state).
const MODE_EL_MASK: u64 = 0b1100;
/// PSTATE.nRW (SPSR bit 4): the code ran in AArch32 state.
const NRW: u64 = 1 << 4;
/// Vector offsets from VBAR_EL1.
const VECTOR_CURRENT_SP0: u64 = 0x000;
const VECTOR_CURRENT_SPX: u64 = 0x200;
const VECTOR_LOWER_A64: u64 = 0x400;
const VECTOR_LOWER_A32: u64 = 0x600;

/// Whether the guest was at EL1 (its kernel). EL1 is AArch64 under chroma
/// (HCR_EL2.RW), so AArch32 state is always EL0.
pub fn at_el1(pstate: u64) -> bool {
    pstate & NRW == 0 && pstate & MODE_EL_MASK != 0
}

/// The offset from VBAR_EL1 of the synchronous vector an exception taken
/// from `pstate` to EL1 uses.
pub fn synchronous_vector(pstate: u64) -> u64 {
    if pstate & NRW != 0 {
        return VECTOR_LOWER_A32;
    }
    match pstate & 0xf {
        MODE_EL1T => VECTOR_CURRENT_SP0,
        MODE_EL1H => VECTOR_CURRENT_SPX,
        _ => VECTOR_LOWER_A64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_origin_takes_its_own_vector() {
        assert_eq!(synchronous_vector(0x3c4), 0x000, "EL1t");
        assert_eq!(synchronous_vector(0x3c5), 0x200, "EL1h");
        assert_eq!(synchronous_vector(0x000), 0x400, "EL0 AArch64");
        // AArch32 User mode (M = 0b10000) and any other AArch32 mode.
        assert_eq!(synchronous_vector(0x10), 0x600, "EL0 AArch32");
        assert_eq!(
            synchronous_vector(0x1f),
            0x600,
            "AArch32 is never taken as current EL"
        );
    }

    #[test]
    fn only_aarch64_el1_is_the_kernel() {
        assert!(at_el1(0x3c5) && at_el1(0x3c4));
        assert!(!at_el1(0x000), "EL0t");
        assert!(!at_el1(0x10), "AArch32 User");
        // AArch32 System mode's M[3:0] = 0b1111 would look like EL3h to a
        // decoder that ignored nRW.
        assert!(!at_el1(0x1f));
    }
}
