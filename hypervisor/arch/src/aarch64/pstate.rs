//! What a trapped guest's saved PSTATE (SPSR_EL2) says about where it was:
//! its exception level and execution state, and so which EL1 vector an
//! exception injected into it takes (Arm ARM D1.10.2); and, for a guest
//! in AArch32 state, which AArch64 register holds each banked AArch32
//! register, whether a conditional instruction passed its condition, and
//! how the IT state advances past a skipped Thumb instruction. Pure,
//! host-tested.

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

/// Whether the guest was at EL1 (its kernel): AArch64 EL1t/EL1h, or an
/// AArch32 mode other than User (an AArch32 VM's EL1 is every PL1 mode).
pub fn at_el1(pstate: u64) -> bool {
    if pstate & NRW != 0 {
        pstate & 0x1f != MODE_USR
    } else {
        pstate & MODE_EL_MASK != 0
    }
}

/// Whether the guest was in AArch32 state.
pub fn aarch32(pstate: u64) -> bool {
    pstate & NRW != 0
}

/// AArch32 CPSR.M[4:0] values.
pub const MODE_USR: u64 = 0x10;
/// FIQ mode.
pub const MODE_FIQ: u64 = 0x11;
/// IRQ mode.
pub const MODE_IRQ: u64 = 0x12;
/// Supervisor mode: where an AArch32 kernel starts.
pub const MODE_SVC: u64 = 0x13;
/// Abort mode: data and prefetch aborts.
pub const MODE_ABT: u64 = 0x17;
/// Undefined mode.
pub const MODE_UND: u64 = 0x1b;
/// System mode.
pub const MODE_SYS: u64 = 0x1f;
/// CPSR.T: Thumb state.
pub const CPSR_T: u64 = 1 << 5;
/// CPSR.F, I, A: FIQ, IRQ and SError (asynchronous abort) masks.
pub const CPSR_F: u64 = 1 << 6;
/// IRQ mask.
pub const CPSR_I: u64 = 1 << 7;
/// Asynchronous abort mask.
pub const CPSR_A: u64 = 1 << 8;
/// CPSR.E: big-endian data.
pub const CPSR_E: u64 = 1 << 9;
/// CPSR.IT[7:2] (bits 15:10) and IT[1:0] (bits 26:25).
const CPSR_IT_HIGH: u64 = 0x3f << 10;
const CPSR_IT_LOW: u64 = 0x3 << 25;
/// CPSR.J (bit 24): RES0 in ARMv8, cleared on exception entry.
const CPSR_J: u64 = 1 << 24;

/// The index (0..=30) of the AArch64 register that holds AArch32 register
/// `r` (0..=14) in `mode` (Arm ARM D1.20.1, "Mapping of the AArch32
/// registers to AArch64"). `None` for r15 (the PC) and beyond.
pub fn aarch32_register(mode: u64, r: u8) -> Option<usize> {
    let r = usize::from(r);
    let mode = mode & 0x1f;
    match r {
        0..=7 => Some(r),
        8..=12 if mode == MODE_FIQ => Some(r + 16),
        8..=12 => Some(r),
        13 | 14 => Some(match (mode, r) {
            (MODE_FIQ, 13) => 29,
            (MODE_FIQ, _) => 30,
            (MODE_IRQ, 13) => 17,
            (MODE_IRQ, _) => 16,
            (MODE_SVC, 13) => 19,
            (MODE_SVC, _) => 18,
            (MODE_ABT, 13) => 21,
            (MODE_ABT, _) => 20,
            (MODE_UND, 13) => 23,
            (MODE_UND, _) => 22,
            // User and System share r13/r14; HYP is never a guest mode.
            _ => r,
        }),
        _ => None,
    }
}

/// Whether condition `cond` (an A32/T32 condition field) holds for the
/// flags in `pstate` (N, Z, C, V in bits 31..28). 0b1110 and 0b1111 always
/// pass.
pub fn condition_passes(cond: u64, pstate: u64) -> bool {
    let n = pstate >> 31 & 1 == 1;
    let z = pstate >> 30 & 1 == 1;
    let c = pstate >> 29 & 1 == 1;
    let v = pstate >> 28 & 1 == 1;
    let result = match (cond >> 1) & 7 {
        0 => z,
        1 => c,
        2 => n,
        3 => v,
        4 => c && !z,
        5 => n == v,
        6 => n == v && !z,
        _ => return true,
    };
    // Odd conditions are the even ones negated (but 0b1111 is "always").
    if cond & 1 == 1 {
        !result
    } else {
        result
    }
}

/// The IT state ITSTATE[7:0] of an AArch32 `pstate`.
pub fn it_state(pstate: u64) -> u64 {
    (pstate >> 8 & 0xfc) | (pstate >> 25 & 0x3)
}

/// Whether a trapped AArch32 instruction passed its condition, from the
/// syndrome's CV and COND fields (ISS bits 24 and 23:20) or, when the
/// syndrome gives none (CV = 0, a Thumb instruction), from the IT state.
pub fn trapped_condition_passes(iss: u64, pstate: u64) -> bool {
    let cond = if iss >> 24 & 1 == 1 {
        iss >> 20 & 0xf
    } else {
        let it = it_state(pstate);
        if it == 0 {
            return true;
        }
        it >> 4
    };
    condition_passes(cond, pstate)
}

/// `pstate` after one Thumb instruction of an IT block was skipped: the IT
/// state advances (ITAdvance(), Arm ARM F1.x) and clears at the block's end.
pub fn advance_it(pstate: u64) -> u64 {
    let it = it_state(pstate);
    if it == 0 {
        return pstate;
    }
    let next = if it & 0x7 == 0 {
        0
    } else {
        (it & 0xe0) | ((it << 1) & 0x1f)
    };
    (pstate & !(CPSR_IT_HIGH | CPSR_IT_LOW)) | (next & 0xfc) << 8 | (next & 0x3) << 25
}

/// The CPSR of an AArch32 exception taken to `mode` from `pstate`, with
/// `sctlr` the guest's SCTLR (Arm ARM G1.13.1, AArch32.EnterMode): IRQs
/// masked, asynchronous aborts masked for aborts, Thumb and endianness from
/// SCTLR.TE and SCTLR.EE, IT and J cleared.
pub fn aarch32_exception_cpsr(pstate: u64, mode: u64, sctlr: u64) -> u64 {
    const SCTLR_TE: u64 = 1 << 30;
    const SCTLR_EE: u64 = 1 << 25;
    let mut cpsr = pstate & !(0x1f | CPSR_T | CPSR_E | CPSR_IT_HIGH | CPSR_IT_LOW | CPSR_J);
    cpsr |= mode | NRW | CPSR_I;
    if mode == MODE_ABT {
        cpsr |= CPSR_A;
    }
    if sctlr & SCTLR_TE != 0 {
        cpsr |= CPSR_T;
    }
    if sctlr & SCTLR_EE != 0 {
        cpsr |= CPSR_E;
    }
    cpsr
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
    fn el1_is_the_kernel_in_either_state() {
        assert!(at_el1(0x3c5) && at_el1(0x3c4));
        assert!(!at_el1(0x000), "EL0t");
        assert!(!at_el1(0x10), "AArch32 User");
        // Every other AArch32 mode is PL1 (an AArch32 VM's EL1).
        for mode in [MODE_FIQ, MODE_IRQ, MODE_SVC, MODE_ABT, MODE_UND, MODE_SYS] {
            assert!(at_el1(0x1c0 | mode), "mode {mode:#x}");
        }
        assert!(aarch32(0x1d3) && !aarch32(0x3c5));
    }

    #[test]
    fn banked_registers_map_as_the_arm_arm_says() {
        // r0-r7 are never banked; r8-r12 only in FIQ mode.
        for mode in [
            MODE_USR, MODE_FIQ, MODE_IRQ, MODE_SVC, MODE_ABT, MODE_UND, MODE_SYS,
        ] {
            for r in 0..8 {
                assert_eq!(aarch32_register(mode, r), Some(usize::from(r)));
            }
        }
        assert_eq!(aarch32_register(MODE_SVC, 8), Some(8));
        assert_eq!(aarch32_register(MODE_FIQ, 8), Some(24));
        assert_eq!(aarch32_register(MODE_FIQ, 12), Some(28));
        let sp_lr = |mode| (aarch32_register(mode, 13), aarch32_register(mode, 14));
        assert_eq!(sp_lr(MODE_USR), (Some(13), Some(14)));
        assert_eq!(sp_lr(MODE_SYS), (Some(13), Some(14)));
        assert_eq!(sp_lr(MODE_IRQ), (Some(17), Some(16)));
        assert_eq!(sp_lr(MODE_SVC), (Some(19), Some(18)));
        assert_eq!(sp_lr(MODE_ABT), (Some(21), Some(20)));
        assert_eq!(sp_lr(MODE_UND), (Some(23), Some(22)));
        assert_eq!(sp_lr(MODE_FIQ), (Some(29), Some(30)));
        assert_eq!(aarch32_register(MODE_SVC, 15), None, "the PC");
        assert_eq!(aarch32_register(MODE_SVC, 31), None);
    }

    #[test]
    fn conditions_follow_the_flags() {
        const N: u64 = 1 << 31;
        const Z: u64 = 1 << 30;
        const C: u64 = 1 << 29;
        const V: u64 = 1 << 28;
        let passes = |cond, flags| condition_passes(cond, flags);
        assert!(passes(0x0, Z) && !passes(0x0, 0), "EQ");
        assert!(passes(0x1, 0) && !passes(0x1, Z), "NE");
        assert!(passes(0x2, C) && !passes(0x3, C), "CS/CC");
        assert!(passes(0x4, N) && passes(0x5, 0), "MI/PL");
        assert!(passes(0x6, V) && passes(0x7, 0), "VS/VC");
        assert!(
            passes(0x8, C) && !passes(0x8, C | Z) && passes(0x9, C | Z),
            "HI/LS"
        );
        assert!(
            passes(0xa, N | V) && !passes(0xa, N) && passes(0xb, N),
            "GE/LT"
        );
        assert!(passes(0xc, 0) && !passes(0xc, Z) && passes(0xd, Z), "GT/LE");
        assert!(passes(0xe, 0) && passes(0xf, N | Z | C | V), "AL");
        // From a syndrome: CV = 1, COND = EQ, with Z clear: failed.
        assert!(!trapped_condition_passes(1 << 24, 0x1d3));
        assert!(trapped_condition_passes(1 << 24, 0x1d3 | Z));
        // CV = 0 outside an IT block: unconditional.
        assert!(trapped_condition_passes(0, 0x1d3));
    }

    #[test]
    fn the_it_state_advances_and_ends() {
        // ITSTATE 0b0000_1_100 ("IT EQ" with one more): cond EQ, then done.
        let cpsr = |it: u64| 0x1f3 | (it & 0xfc) << 8 | (it & 3) << 25;
        let inside = cpsr(0b0000_0100 | 0x08);
        assert_eq!(it_state(inside), 0x0c);
        // The condition comes from IT[7:4] = EQ when CV = 0.
        assert!(!trapped_condition_passes(0, inside));
        assert!(trapped_condition_passes(0, inside | 1 << 30));
        // 0x0c: IT[2:0] = 0b100, not zero: shift IT[4:0] left.
        assert_eq!(it_state(advance_it(inside)), 0x18);
        // IT[2:0] = 0: the block ends.
        assert_eq!(it_state(advance_it(cpsr(0x18))), 0);
        assert_eq!(advance_it(cpsr(0x18)) & !(0x3f << 10 | 3 << 25), cpsr(0));
        assert_eq!(advance_it(0x1d3), 0x1d3, "no IT block");
    }

    #[test]
    fn aarch32_exception_entry_sets_mode_and_masks() {
        // From SVC with IRQs on, Thumb, in an IT block: to Abort, ARM state.
        let from = 0x6000_0000 | MODE_SVC | NRW | CPSR_T | 0x3 << 25 | 0x3f << 10;
        let cpsr = aarch32_exception_cpsr(from, MODE_ABT, 0);
        assert_eq!(cpsr & 0x1f, MODE_ABT);
        assert_eq!(cpsr & 0xf000_0000, 0x6000_0000, "flags kept");
        assert_eq!(cpsr & (CPSR_I | CPSR_A), CPSR_I | CPSR_A);
        assert_eq!(cpsr & CPSR_F, 0, "FIQs stay as they were");
        assert_eq!(cpsr & (CPSR_T | 0x3f << 10 | 0x3 << 25), 0);
        // Undefined: A unchanged; SCTLR.TE: Thumb handlers.
        let cpsr = aarch32_exception_cpsr(MODE_SVC | NRW, MODE_UND, 1 << 30);
        assert_eq!(cpsr & (CPSR_A | CPSR_T | CPSR_I), CPSR_T | CPSR_I);
    }
}
