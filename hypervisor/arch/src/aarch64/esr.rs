//! ESR_EL2 decoding: the syndrome of a trap from EL1/EL0 into an
//! architecture-neutral [`Exit`] (Arm ARM D24.2.41, ESR_ELx).
// Guest input is parsed here: an index or slice must not panic (issue 10).
#![deny(clippy::indexing_slicing)]

use chroma_core::exit::{
    AccessWidth, Exit, MmioAccess, SetWayOperation, SysRegAccess, TrappedRegister,
};
use chroma_core::vcpu::Trap;
use chroma_core::GuestPhysAddr;

/// Exception classes used here (ESR_ELx.EC).
pub mod ec {
    /// Trapped WFI or WFE.
    pub const WFX: u64 = 0x01;
    /// Trapped AArch32 MCR or MRC to CP15.
    pub const CP15_32: u64 = 0x03;
    /// Trapped AArch32 MCRR or MRRC to CP15.
    pub const CP15_64: u64 = 0x04;
    /// Trapped AArch32 MCR or MRC to CP14 (debug, trace).
    pub const CP14_32: u64 = 0x05;
    /// Trapped AArch32 LDC or STC to CP14 (the debug DTR).
    pub const CP14_LS: u64 = 0x06;
    /// Trapped AArch32 MRRC to CP14.
    pub const CP14_64: u64 = 0x0c;
    /// HVC executed in AArch32 state.
    pub const HVC32: u64 = 0x12;
    /// SMC executed in AArch32 state (trapped by HCR_EL2.TSC).
    pub const SMC32: u64 = 0x13;
    /// HVC executed in AArch64 state.
    pub const HVC64: u64 = 0x16;
    /// SMC executed in AArch64 state (trapped by HCR_EL2.TSC).
    pub const SMC64: u64 = 0x17;
    /// Trapped MSR, MRS or system instruction.
    pub const SYS64: u64 = 0x18;
    /// Instruction abort from a lower exception level.
    pub const IABT_LOW: u64 = 0x20;
    /// Data abort from a lower exception level.
    pub const DABT_LOW: u64 = 0x24;
}

/// The instruction was 32 bits long (IL); AArch64 instructions always are.
pub const ESR_IL: u64 = 1 << 25;

/// Data-abort ISS fields.
mod iss {
    pub const ISV: u64 = 1 << 24;
    pub const SAS_SHIFT: u64 = 22;
    pub const SSE: u64 = 1 << 21;
    pub const SRT_SHIFT: u64 = 16;
    pub const SF: u64 = 1 << 15;
    pub const S1PTW: u64 = 1 << 7;
    pub const WNR: u64 = 1 << 6;
    pub const FSC_MASK: u64 = 0x3f;
}

/// Fault status codes (DFSC/IFSC) that mean "stage-2 did not translate".
/// Whether an abort's syndrome (ESR_EL2, or HSR with the long-descriptor
/// format stage 2 uses) reports a Permission fault (FSC 0b0011LL, level LL).
pub fn is_permission_fault(syndrome: u64) -> bool {
    (syndrome & iss::FSC_MASK) >> 2 == 0b0011
}

/// [`decode`]'s `hpfar` for a stage-2 Permission fault whose page could
/// not be found ([`fault_page_unreported`]): no IPA page is all ones.
pub const FAULT_PAGE_UNKNOWN: u64 = u64::MAX;

/// Whether `syndrome` is a stage-2 Permission fault of a data access (not
/// of a stage-1 walk): HPFAR (HPFAR_EL2) is UNKNOWN then (Arm ARM
/// D24.2.71), so the trap handler finds the page by translating FAR
/// through the guest's stage 1 and gives [`decode`] that page in HPFAR's
/// format ([`hpfar_of`]), or [`FAULT_PAGE_UNKNOWN`].
pub fn fault_page_unreported(syndrome: u64) -> bool {
    exception_class(syndrome) == ec::DABT_LOW
        && is_permission_fault(syndrome)
        && syndrome & iss::S1PTW == 0
}

/// HPFAR's encoding of the page of `ipa` (FIPA, IPA bits 51:12, in its bits 43:4).
pub fn hpfar_of(ipa: u64) -> u64 {
    (ipa >> 12) << 4
}

fn is_translation_or_access_fault(fsc: u64) -> bool {
    // 0b0001LL translation fault at level LL, 0b0010LL access flag fault.
    matches!(fsc >> 2, 0b0001 | 0b0010) || fsc == 0b10_1011
}

/// Exception class of a syndrome.
pub const fn exception_class(esr: u64) -> u64 {
    (esr >> 26) & 0x3f
}

/// A human-readable name of an exception class, for reports.
pub fn class_name(ec_value: u64) -> &'static str {
    match ec_value {
        0x00 => "unknown reason",
        ec::WFX => "WFI/WFE",
        ec::CP15_32 => "MCR/MRC to CP15 (AArch32)",
        ec::CP15_64 => "MCRR/MRRC to CP15 (AArch32)",
        ec::CP14_32 => "MCR/MRC to CP14 (AArch32)",
        ec::CP14_LS => "LDC/STC to CP14 (AArch32)",
        ec::CP14_64 => "MRRC to CP14 (AArch32)",
        ec::HVC32 => "HVC (AArch32)",
        ec::SMC32 => "SMC (AArch32)",
        0x07 => "FP/SIMD access",
        0x0e => "illegal execution state",
        0x15 => "SVC (AArch64)",
        ec::HVC64 => "HVC (AArch64)",
        ec::SMC64 => "SMC (AArch64)",
        ec::SYS64 => "MSR/MRS/system instruction",
        ec::IABT_LOW => "instruction abort from a lower EL",
        0x21 => "instruction abort at EL2",
        0x22 => "PC alignment fault",
        ec::DABT_LOW => "data abort from a lower EL",
        0x25 => "data abort at EL2",
        0x26 => "SP alignment fault",
        0x2f => "SError",
        0x3c => "BRK",
        _ => "other",
    }
}

/// Packs a trapped system-register access as `op0:op1:CRn:CRm:op2`,
/// the layout [`sysreg_encoding`] produces for constants.
fn iss_sysreg(iss: u64) -> u32 {
    let op0 = (iss >> 20) & 3;
    let op2 = (iss >> 17) & 7;
    let op1 = (iss >> 14) & 7;
    let crn = (iss >> 10) & 0xf;
    let crm = (iss >> 1) & 0xf;
    sysreg_encoding(op0 as u32, op1 as u32, crn as u32, crm as u32, op2 as u32)
}

/// The packed encoding of system register `S<op0>_<op1>_C<n>_C<m>_<op2>`.
pub const fn sysreg_encoding(op0: u32, op1: u32, crn: u32, crm: u32, op2: u32) -> u32 {
    op0 << 14 | op1 << 11 | crn << 7 | crm << 3 | op2
}

/// ICC_SGI1R_EL1 (S3_0_C12_C11_5): a GICv3 guest sending an SGI.
pub const ICC_SGI1R_EL1: u32 = sysreg_encoding(3, 0, 12, 11, 5);

/// ACTLR_EL1 (S3_0_C1_C0_1): the auxiliary control register, trapped by
/// HCR_EL2.TACR. (ACTLR2 exists in AArch32 only; TACR traps it there, and
/// chroma's EL1 is AArch64.)
pub const ACTLR_EL1: u32 = sysreg_encoding(3, 0, 1, 0, 1);

/// DC ISW (SYS #0, C7, C6, #2): invalidate by set/way, trapped by HCR_EL2.TSW.
pub const DC_ISW: u32 = sysreg_encoding(1, 0, 7, 6, 2);
/// DC CSW (SYS #0, C7, C10, #2): clean by set/way.
pub const DC_CSW: u32 = sysreg_encoding(1, 0, 7, 10, 2);
/// DC CISW (SYS #0, C7, C14, #2): clean and invalidate by set/way.
pub const DC_CISW: u32 = sysreg_encoding(1, 0, 7, 14, 2);

/// What a trapped MSR/MRS, SYS or SYSL (ISS of EC 0x18) names, by its
/// encoding fields.
fn classify_sysreg(iss: u64) -> TrappedRegister {
    let op0 = (iss >> 20) & 3;
    let op1 = (iss >> 14) & 7;
    let crn = (iss >> 10) & 0xf;
    let crm = (iss >> 1) & 0xf;
    // Direction 0: MSR or SYS (the instruction takes its operand from Rt).
    let write = iss & 1 == 0;
    match iss_sysreg(iss) {
        ICC_SGI1R_EL1 => TrappedRegister::GicSgi1r,
        ACTLR_EL1 => TrappedRegister::AuxiliaryControl,
        // The set/way instructions are SYS (a write); the SYSL forms of
        // their encodings are not instructions and stay Other (UNDEFINED).
        // The FEAT_MTE2 tag variants HCR_EL2.TSW also traps (DC IGSW, DC
        // CGSW, ... with op2 4 and 6) are not recognised either: chroma
        // gives guests no allocation tags, and they get UNDEFINED.
        DC_ISW if write => TrappedRegister::DataCacheSetWay(SetWayOperation::Invalidate),
        DC_CSW if write => TrappedRegister::DataCacheSetWay(SetWayOperation::Clean),
        DC_CISW if write => TrappedRegister::DataCacheSetWay(SetWayOperation::CleanInvalidate),
        // The encodings reserved for IMPLEMENTATION DEFINED functionality
        // (Arm ARM D23.2, D23.3; HCR_EL2.TIDCP): system instructions (op0
        // 1) and registers (op0 3) with CRn 11 or 15, any op1, CRm, op2.
        _ if (op0 == 1 || op0 == 3) && (crn == 11 || crn == 15) => {
            TrappedRegister::ImplementationDefined
        }
        // op0 = 2: the debug registers (DBGB*, DBGW*, MDSCR_EL1, the OS
        // lock, MDCCSR, MDRAR, ...).
        _ if op0 == 2 => TrappedRegister::Debug,
        // PMU: PMCR_EL0 .. PMOVSSET_EL0 (op1 3, CRn 9), PMEVCNTR<n>,
        // PMEVTYPER<n>, PMCCFILTR (op1 3, CRn 14, CRm 8-15), and
        // PMINTENSET/CLR_EL1, PMMIR_EL1 (op1 0, CRn 9, CRm 14).
        _ if op0 == 3 && op1 == 3 && (crn == 9 || crn == 14 && crm >= 8) => {
            TrappedRegister::PerformanceMonitor
        }
        _ if op0 == 3 && op1 == 0 && crn == 9 && crm == 14 => TrappedRegister::PerformanceMonitor,
        other => TrappedRegister::Other(other),
    }
}

/// A trapped AArch32 coprocessor access, packed for reports: bit 20 set
/// (no AArch64 encoding has it), the coprocessor, opc1, CRn, CRm, opc2.
fn cp_encoding(coproc: u64, opc1: u64, crn: u64, crm: u64, opc2: u64) -> u32 {
    // Each field is at most 4 bits (the callers mask them): the value fits.
    let packed = 1 << 20
        | coproc << 16
        | (opc1 & 0xf) << 12
        | (crn & 0xf) << 8
        | (crm & 0xf) << 4
        | (opc2 & 0xf);
    u32::try_from(packed).unwrap_or(u32::MAX)
}

/// What a trapped AArch32 MCR/MRC to CP15 (ISS of EC 0x03) names: the
/// AArch32 names of the registers [`classify_sysreg`] recognises (Arm ARM
/// G8), so an AArch32 VM is contained exactly as an AArch64 one.
fn classify_cp15_32(iss: u64) -> TrappedRegister {
    let opc2 = (iss >> 17) & 7;
    let opc1 = (iss >> 14) & 7;
    let crn = (iss >> 10) & 0xf;
    let crm = (iss >> 1) & 0xf;
    let write = iss & 1 == 0;
    match (opc1, crn, crm, opc2) {
        // ACTLR (opc2 1) and ACTLR2 (opc2 3): HCR_EL2.TACR.
        (0, 1, 0, 1 | 3) => TrappedRegister::AuxiliaryControl,
        // DCISW, DCCSW, DCCISW: HCR_EL2.TSW.
        (0, 7, 6, 2) if write => TrappedRegister::DataCacheSetWay(SetWayOperation::Invalidate),
        (0, 7, 10, 2) if write => TrappedRegister::DataCacheSetWay(SetWayOperation::Clean),
        (0, 7, 14, 2) if write => {
            TrappedRegister::DataCacheSetWay(SetWayOperation::CleanInvalidate)
        }
        // PMU: PMCR .. PMOVSSET (c9, c12-c14), PMEVCNTR<n>, PMEVTYPER<n>,
        // PMCCFILTR (c14, c8-c15).
        (0, 9, 12..=14, _) | (0, 14, 8..=15, _) => TrappedRegister::PerformanceMonitor,
        // IMPLEMENTATION DEFINED (HCR_EL2.TIDCP, Arm ARM G1.19.x): CRn 9
        // with CRm 0-2 or 5-8, CRn 10 with CRm 0, 1, 4 or 8, CRn 11 with
        // CRm 0-8 or 15, all of CRn 15.
        (_, 9, 0..=2 | 5..=8, _)
        | (_, 10, 0 | 1 | 4 | 8, _)
        | (_, 11, 0..=8 | 15, _)
        | (_, 15, _, _) => TrappedRegister::ImplementationDefined,
        _ => TrappedRegister::Other(cp_encoding(15, opc1, crn, crm, opc2)),
    }
}

/// What a trapped AArch32 MCRR/MRRC to CP15 (ISS of EC 0x04) names.
fn classify_cp15_64(iss: u64) -> TrappedRegister {
    let opc1 = (iss >> 16) & 0xf;
    let crm = (iss >> 1) & 0xf;
    match (opc1, crm) {
        // ICC_SGI1R (MCRR p15, 0, <Rt>, <Rt2>, c12): HCR_EL2.IMO.
        (0, 12) => TrappedRegister::GicSgi1r,
        // PMCCNTR (MRRC p15, 0, <Rt>, <Rt2>, c9).
        (0, 9) => TrappedRegister::PerformanceMonitor,
        // CRm 15 is reserved for IMPLEMENTATION DEFINED 64-bit registers.
        (_, 15) => TrappedRegister::ImplementationDefined,
        _ => TrappedRegister::Other(cp_encoding(15, opc1, 0, crm, 0)),
    }
}

/// Decodes an AArch32 coprocessor trap (EC 0x03, 0x04, 0x05, 0x06, 0x0c).
/// CP14 is the debug and trace interface: per physical CPU, so it reads as
/// zero and ignores writes, as the AArch64 debug registers do.
fn decode_coprocessor(class: u64, iss: u64) -> Exit {
    let write = iss & 1 == 0;
    let rt = ((iss >> 5) & 0x1f) as u8;
    let rt2 = ((iss >> 10) & 0x1f) as u8;
    let (register, high_register) = match class {
        ec::CP15_32 => (classify_cp15_32(iss), None),
        ec::CP15_64 => (classify_cp15_64(iss), Some(rt2)),
        ec::CP14_64 => (TrappedRegister::Debug, Some(rt2)),
        // LDC/STC move memory, not a register: ignored (ISS[9:5] is the
        // base register, which a write never touches).
        ec::CP14_LS => {
            return Exit::SysReg(SysRegAccess {
                register: TrappedRegister::Debug,
                write: true,
                value_register: rt,
                high_register: None,
            })
        }
        _ => (TrappedRegister::Debug, None),
    };
    Exit::SysReg(SysRegAccess {
        register,
        write,
        value_register: rt,
        high_register,
    })
}

/// The exception classes of AArch32 instructions that may trap although
/// their condition failed (the syndrome then says CV, COND).
fn conditional_class(class: u64) -> bool {
    matches!(
        class,
        ec::WFX | ec::CP15_32 | ec::CP15_64 | ec::CP14_32 | ec::CP14_LS | ec::CP14_64 | ec::SMC32
    )
}

/// A readable name for the exception class of syndrome `esr`.
pub fn syndrome_name(esr: u64) -> &'static str {
    class_name(exception_class(esr))
}

/// Decodes a trap into the core's [`Trap`]: the exit, the trapped
/// instruction's length (ESR_EL2.IL: 4 bytes, or 2 for a 16-bit AArch32
/// instruction; always 4 in A32 state, where every instruction is 32 bits:
/// IL of a data abort without a valid syndrome is not defined to say so on
/// ARMv7's HSR, and QEMU leaves it clear there) and the raw syndrome.
/// `pstate` is SPSR_EL2: for a trap from AArch32 state, a conditional
/// instruction whose condition failed is [`Exit::ConditionFailed`]
/// (Arm ARM D1.x: it may trap all the same).
pub fn decode_trap(esr: u64, far: u64, hpfar: u64, pstate: u64) -> Trap {
    let class = exception_class(esr);
    let failed = super::pstate::aarch32(pstate)
        && conditional_class(class)
        && !super::pstate::trapped_condition_passes(esr & 0x1ff_ffff, pstate);
    let mut trap = Trap {
        exit: Exit::ConditionFailed,
        instruction_length: if esr & ESR_IL != 0 || a32_state(pstate) {
            4
        } else {
            2
        },
        syndrome: esr,
    };
    // Decoded straight into the trap: built aside and moved in, the exit
    // was a `memcpy` on every trap.
    if !failed {
        trap.exit = decode(esr, far, hpfar);
    }
    trap
}

/// Whether `pstate` is AArch32 in A32 (ARM, not Thumb) state.
fn a32_state(pstate: u64) -> bool {
    super::pstate::aarch32(pstate) && pstate & super::pstate::CPSR_T == 0
}

/// The access a data abort's instruction syndrome describes, if it has one (ISV).
fn decode_access(iss: u64, ipa: GuestPhysAddr) -> Option<MmioAccess> {
    if iss & iss::ISV == 0 {
        return None;
    }
    let width = match (iss >> iss::SAS_SHIFT) & 3 {
        0 => AccessWidth::Byte,
        1 => AccessWidth::Half,
        2 => AccessWidth::Word,
        _ => AccessWidth::Double,
    };
    Some(MmioAccess {
        ipa,
        width,
        write: iss & iss::WNR != 0,
        register: ((iss >> iss::SRT_SHIFT) & 0x1f) as u8,
        sign_extend: iss & iss::SSE != 0,
        register_64bit: iss & iss::SF != 0,
        writeback: None,
    })
}

/// Decodes a trap. `far` is FAR_EL2 and `hpfar` HPFAR_EL2, as read at the
/// exit; they are only meaningful for aborts.
pub fn decode(esr: u64, far: u64, hpfar: u64) -> Exit {
    let iss = esr & 0x1ff_ffff;
    // HPFAR_EL2.FIPA holds IPA[51:12] in bits [43:4]; the page offset is FAR's.
    let ipa = GuestPhysAddr::new(((hpfar >> 4) << 12) & 0x000f_ffff_ffff_f000 | (far & 0xfff));
    match exception_class(esr) {
        ec::WFX if iss & 1 == 0 => Exit::WaitForInterrupt,
        ec::WFX => Exit::WaitForEvent,
        // The instruction's imm16 is ISS[15:0] (AArch32 HVC too; an
        // AArch32 SMC has no immediate to report: ISS[15:0] is zero).
        ec::HVC64 | ec::HVC32 => Exit::Hypercall {
            immediate: (iss & 0xffff) as u16,
        },
        ec::SMC64 => Exit::SecureMonitorCall {
            immediate: (iss & 0xffff) as u16,
        },
        ec::SMC32 => Exit::SecureMonitorCall { immediate: 0 },
        ec::CP15_32 | ec::CP15_64 | ec::CP14_32 | ec::CP14_LS | ec::CP14_64 => {
            decode_coprocessor(exception_class(esr), iss)
        }
        ec::SYS64 => Exit::SysReg(SysRegAccess {
            register: classify_sysreg(iss),
            write: iss & 1 == 0,
            value_register: ((iss >> 5) & 0x1f) as u8,
            high_register: None,
        }),
        ec::DABT_LOW if is_translation_or_access_fault(iss & iss::FSC_MASK) => {
            match decode_access(iss, ipa) {
                Some(access) if iss & iss::S1PTW == 0 => Exit::Mmio(access),
                _ => Exit::AbortNoSyndrome { ipa, fetch: false },
            }
        }
        // A stage-2 Permission fault: only the read-only register images
        // raise one (a store to them, or a fetch from them). HPFAR is
        // UNKNOWN for it: `hpfar` is the page the trap handler found by
        // translating FAR ([`fault_page_unreported`]), or
        // [`FAULT_PAGE_UNKNOWN`], reported as IPA page 0 (no image's page:
        // the core lets the guest retry).
        ec::DABT_LOW if is_permission_fault(iss) => {
            let ipa = if hpfar == FAULT_PAGE_UNKNOWN {
                GuestPhysAddr::new(far & 0xfff)
            } else {
                ipa
            };
            match decode_access(iss, ipa) {
                Some(access) if access.write && iss & iss::S1PTW == 0 => {
                    Exit::ReadOnlyWrite(access)
                }
                _ => Exit::AbortNoSyndrome { ipa, fetch: false },
            }
        }
        ec::IABT_LOW if is_translation_or_access_fault(iss & iss::FSC_MASK) => {
            Exit::AbortNoSyndrome { ipa, fetch: true }
        }
        ec::IABT_LOW if is_permission_fault(iss) => Exit::AbortNoSyndrome {
            ipa: GuestPhysAddr::new(far & 0xfff),
            fetch: true,
        },
        _ => Exit::Unhandled {
            syndrome: esr,
            fault_address: far,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esr(ec_value: u64, iss: u64) -> u64 {
        ec_value << 26 | ESR_IL | iss
    }

    #[test]
    fn decodes_a_32bit_store_to_the_uart() {
        // ISV, SAS=2 (word), SRT=3, WnR, DFSC=0b000111 (translation fault, level 3).
        let iss = iss::ISV | 2 << 22 | 3 << 16 | iss::WNR | 0b000111;
        let exit = decode(esr(ec::DABT_LOW, iss), 0x0900_0018, 0x0090_0000 >> 8 << 4);
        assert_eq!(
            exit,
            Exit::Mmio(MmioAccess {
                ipa: GuestPhysAddr::new(0x0900_0018),
                width: AccessWidth::Word,
                write: true,
                register: 3,
                sign_extend: false,
                register_64bit: false,
                writeback: None,
            })
        );
    }

    #[test]
    fn decodes_a_sign_extending_64bit_byte_load() {
        let iss = iss::ISV | iss::SSE | 30 << 16 | iss::SF | 0b000101;
        match decode(esr(ec::DABT_LOW, iss), 0x123, 0x80_0000 << 4 >> 12 << 4) {
            Exit::Mmio(a) => {
                assert_eq!(
                    (
                        a.width,
                        a.write,
                        a.register,
                        a.sign_extend,
                        a.register_64bit
                    ),
                    (AccessWidth::Byte, false, 30, true, true)
                );
                assert_eq!(a.ipa.raw() & 0xfff, 0x123);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn abort_without_syndrome_or_on_a_walk_is_not_emulated() {
        let no_isv = esr(ec::DABT_LOW, 0b000111);
        assert!(matches!(
            decode(no_isv, 0, 0x0040_0000),
            Exit::AbortNoSyndrome { fetch: false, .. }
        ));
        let walk = esr(ec::DABT_LOW, iss::ISV | iss::S1PTW | 0b000111);
        assert!(matches!(decode(walk, 0, 0), Exit::AbortNoSyndrome { .. }));
        let fetch = esr(ec::IABT_LOW, 0b000110);
        assert!(matches!(
            decode(fetch, 0, 0),
            Exit::AbortNoSyndrome { fetch: true, .. }
        ));
        // A load that takes a Permission fault is not emulated (the only
        // read-only page is readable: it cannot be one of chroma's).
        let perm = esr(ec::DABT_LOW, iss::ISV | 0b001111);
        assert!(matches!(
            decode(perm, 0, 0),
            Exit::AbortNoSyndrome { fetch: false, .. }
        ));
    }

    #[test]
    fn a_store_to_a_read_only_image_takes_the_translated_page() {
        // STR w3, [x] at VA 0xffff_0000_1234_5064 (InterruptACK's offset):
        // ISV, SAS=2, SRT=3, WnR, DFSC=0b001111 (permission fault, level 3).
        let iss = iss::ISV | 2 << 22 | 3 << 16 | iss::WNR | 0b001111;
        let syndrome = esr(ec::DABT_LOW, iss);
        assert!(fault_page_unreported(syndrome));
        // The page the handler found by translating FAR, in HPFAR's format.
        match decode(syndrome, 0xffff_0000_1234_5064, hpfar_of(0x0a00_0000)) {
            Exit::ReadOnlyWrite(a) => {
                assert_eq!(a.ipa.raw(), 0x0a00_0064);
                assert_eq!((a.width, a.write, a.register), (AccessWidth::Word, true, 3));
            }
            other => panic!("{other:?}"),
        }
        // No page found: only the offset, in IPA page 0 (no image's).
        match decode(syndrome, 0xffff_0000_1234_5064, FAULT_PAGE_UNKNOWN) {
            Exit::ReadOnlyWrite(a) => assert_eq!(a.ipa.raw(), 0x064),
            other => panic!("{other:?}"),
        }
        // A translation fault reports its page: nothing to translate.
        assert!(!fault_page_unreported(esr(
            ec::DABT_LOW,
            iss::ISV | 0b000111
        )));
        // On a stage-1 walk it is no store of the guest's: not emulated.
        let walk = esr(ec::DABT_LOW, iss | iss::S1PTW);
        assert!(!fault_page_unreported(walk));
        assert!(matches!(
            decode(walk, 0x64, 0),
            Exit::AbortNoSyndrome { .. }
        ));
        // A fetch from it.
        let fetch = esr(ec::IABT_LOW, 0b001111);
        assert!(matches!(
            decode(fetch, 0x0a00_0010, 0),
            Exit::AbortNoSyndrome { fetch: true, .. }
        ));
    }

    #[test]
    fn decodes_hvc_smc_wfx_and_sysregs() {
        assert_eq!(
            decode(esr(ec::HVC64, 0x1234), 0, 0),
            Exit::Hypercall { immediate: 0x1234 }
        );
        assert_eq!(
            decode(esr(ec::SMC64, 0), 0, 0),
            Exit::SecureMonitorCall { immediate: 0 }
        );
        assert_eq!(decode(esr(ec::WFX, 0), 0, 0), Exit::WaitForInterrupt);
        assert_eq!(decode(esr(ec::WFX, 1), 0, 0), Exit::WaitForEvent);
        // MSR ICC_SGI1R_EL1, x2: op0=3 op2=5 op1=0 CRn=12 Rt=2 CRm=11 dir=0.
        let iss = 3 << 20 | 5 << 17 | 12 << 10 | 2 << 5 | 11 << 1;
        assert_eq!(
            decode(esr(ec::SYS64, iss), 0, 0),
            Exit::SysReg(SysRegAccess {
                register: TrappedRegister::GicSgi1r,
                write: true,
                value_register: 2,
                high_register: None,
            })
        );
        assert!(matches!(decode(esr(0x07, 0), 0, 0), Exit::Unhandled { .. }));
        assert_eq!(class_name(ec::DABT_LOW), "data abort from a lower EL");
        assert_eq!(
            decode_trap(esr(ec::WFX, 0), 0, 0, 0x3c5).instruction_length,
            4
        );
        assert_eq!(
            decode_trap(ec::WFX << 26, 0, 0, 0x3c5).instruction_length,
            2
        );
        // A32 state (SVC mode, T clear): 4 even with IL clear, as ARMv7's
        // HSR gives a data abort without a syndrome; Thumb keeps IL's 2.
        let dabt_no_iss = ec::DABT_LOW << 26;
        assert_eq!(decode_trap(dabt_no_iss, 0, 0, 0x1d3).instruction_length, 4);
        assert_eq!(decode_trap(dabt_no_iss, 0, 0, 0x1f3).instruction_length, 2);
    }

    /// ISS of an MSR (`read` false) or MRS of S<op0>_<op1>_C<crn>_C<crm>_<op2>, x<rt>.
    fn sysreg_iss(op0: u64, op1: u64, crn: u64, crm: u64, op2: u64, rt: u64, read: bool) -> u64 {
        op0 << 20 | op2 << 17 | op1 << 14 | crn << 10 | rt << 5 | crm << 1 | u64::from(read)
    }

    #[test]
    fn debug_and_pmu_registers_are_told_apart_from_the_rest() {
        // MSR OSLAR_EL1, x1 (S2_0_C1_C0_4) and MRS MDSCR_EL1 (S2_0_C0_C2_2).
        assert_eq!(
            class(sysreg_iss(2, 0, 1, 0, 4, 1, false)),
            TrappedRegister::Debug
        );
        assert_eq!(
            class(sysreg_iss(2, 0, 0, 2, 2, 0, true)),
            TrappedRegister::Debug
        );
        // PMCR_EL0 (S3_3_C9_C12_0), PMEVCNTR5_EL0 (S3_3_C14_C8_5),
        // PMCCFILTR_EL0 (S3_3_C14_C15_7), PMINTENSET_EL1 (S3_0_C9_C14_1).
        for iss in [
            sysreg_iss(3, 3, 9, 12, 0, 0, true),
            sysreg_iss(3, 3, 14, 8, 5, 0, false),
            sysreg_iss(3, 3, 14, 15, 7, 0, true),
            sysreg_iss(3, 0, 9, 14, 1, 0, false),
        ] {
            assert_eq!(class(iss), TrappedRegister::PerformanceMonitor);
        }
        // Negative controls: the virtual timer's CNTV_CTL_EL0 (S3_3_C14_C3_1)
        // and an IMPLEMENTATION DEFINED register are neither.
        assert!(matches!(
            class(sysreg_iss(3, 3, 14, 3, 1, 0, true)),
            TrappedRegister::Other(_)
        ));
        assert_eq!(
            class(sysreg_iss(3, 1, 15, 2, 0, 0, true)),
            TrappedRegister::ImplementationDefined
        );
    }

    /// The register an EC 0x18 syndrome with `iss` names.
    fn class(iss: u64) -> TrappedRegister {
        match decode(esr(ec::SYS64, iss), 0, 0) {
            Exit::SysReg(access) => access.register,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn actlr_el1_is_the_auxiliary_control_register_either_way() {
        // MRS x3, ACTLR_EL1 and MSR ACTLR_EL1, x3.
        for read in [true, false] {
            let iss = sysreg_iss(3, 0, 1, 0, 1, 3, read);
            assert_eq!(class(iss), TrappedRegister::AuxiliaryControl);
            assert_eq!(
                decode(esr(ec::SYS64, iss), 0, 0),
                Exit::SysReg(SysRegAccess {
                    register: TrappedRegister::AuxiliaryControl,
                    write: !read,
                    value_register: 3,
                    high_register: None,
                })
            );
        }
        // Negative controls: its neighbours SCTLR_EL1 (S3_0_C1_C0_0) and
        // CPACR_EL1 (S3_0_C1_C0_2), and ACTLR_EL2 (S3_4_C1_C0_1), are not it.
        for iss in [
            sysreg_iss(3, 0, 1, 0, 0, 0, true),
            sysreg_iss(3, 0, 1, 0, 2, 0, true),
            sysreg_iss(3, 4, 1, 0, 1, 0, true),
        ] {
            assert!(matches!(class(iss), TrappedRegister::Other(_)), "{iss:#x}");
        }
    }

    #[test]
    fn the_implementation_defined_space_is_op0_1_or_3_with_crn_11_or_15() {
        for op0 in [1, 3] {
            for crn in [11, 15] {
                for op1 in 0..8 {
                    for crm in 0..16 {
                        for op2 in 0..8 {
                            for read in [true, false] {
                                let iss = sysreg_iss(op0, op1, crn, crm, op2, 7, read);
                                assert_eq!(
                                    class(iss),
                                    TrappedRegister::ImplementationDefined,
                                    "S{op0}_{op1}_C{crn}_C{crm}_{op2}"
                                );
                            }
                        }
                    }
                }
            }
        }
        // Cortex-A57's CPUECTLR_EL1 (S3_1_C15_C2_1) and L2CTLR_EL1
        // (S3_1_C11_C0_2) are in it.
        assert_eq!(
            class(sysreg_iss(3, 1, 15, 2, 1, 0, false)),
            TrappedRegister::ImplementationDefined
        );
        assert_eq!(
            class(sysreg_iss(3, 1, 11, 0, 2, 0, true)),
            TrappedRegister::ImplementationDefined
        );
        // Negative controls: the architectural neighbours. ICC_SGI1R_EL1
        // (CRn 12), CNTV_CTL_EL0 (CRn 14), the debug space (op0 2, where
        // CRn 15 is not IMPLEMENTATION DEFINED), and DC CISW (op0 1, CRn 7).
        assert_eq!(
            class(sysreg_iss(3, 0, 12, 11, 5, 0, false)),
            TrappedRegister::GicSgi1r
        );
        assert!(matches!(
            class(sysreg_iss(3, 3, 14, 3, 1, 0, true)),
            TrappedRegister::Other(_)
        ));
        assert_eq!(
            class(sysreg_iss(2, 0, 15, 0, 0, 0, true)),
            TrappedRegister::Debug
        );
        assert!(!matches!(
            class(sysreg_iss(1, 0, 7, 14, 2, 0, false)),
            TrappedRegister::ImplementationDefined
        ));
    }

    #[test]
    fn set_way_maintenance_is_recognised_with_its_operand_register() {
        use SetWayOperation::{Clean, CleanInvalidate, Invalidate};
        // DC ISW, DC CSW, DC CISW with Xt = x9: SYS #0, C7, C<m>, #2.
        for (crm, operation) in [(6, Invalidate), (10, Clean), (14, CleanInvalidate)] {
            let iss = sysreg_iss(1, 0, 7, crm, 2, 9, false);
            assert_eq!(
                decode(esr(ec::SYS64, iss), 0, 0),
                Exit::SysReg(SysRegAccess {
                    register: TrappedRegister::DataCacheSetWay(operation),
                    write: true,
                    value_register: 9,
                    high_register: None,
                })
            );
            // Negative control: the SYSL (read) shape is not the instruction.
            assert!(matches!(
                class(sysreg_iss(1, 0, 7, crm, 2, 9, true)),
                TrappedRegister::Other(_)
            ));
        }
        // Negative controls: by-address maintenance (DC CIVAC, C7 C14 #1;
        // DC IVAC, C7 C6 #1) and the FEAT_MTE2 tag variant DC CIGSW
        // (C7 C14 #4) are not set/way operations chroma performs.
        for iss in [
            sysreg_iss(1, 3, 7, 14, 1, 0, false),
            sysreg_iss(1, 0, 7, 6, 1, 0, false),
            sysreg_iss(1, 0, 7, 14, 4, 0, false),
        ] {
            assert!(matches!(class(iss), TrappedRegister::Other(_)), "{iss:#x}");
        }
    }

    #[test]
    fn decodes_aarch32_traps() {
        const SVC: u64 = 0x1d3;
        // HVC #0 from AArch32: the same exit as from AArch64.
        assert_eq!(
            decode_trap(esr(ec::HVC32, 0), 0, 0, SVC).exit,
            Exit::Hypercall { immediate: 0 }
        );
        // MRC p15, 0, r3, c9, c12, 0 (PMCR), read, CV = 1, COND = AL.
        let always = 1 << 24 | 0xe << 20;
        let pmcr = always | 3 << 5 | 9 << 10 | 12 << 1 | 1;
        assert_eq!(
            decode_trap(esr(ec::CP15_32, pmcr), 0, 0, SVC).exit,
            Exit::SysReg(SysRegAccess {
                register: TrappedRegister::PerformanceMonitor,
                write: false,
                value_register: 3,
                high_register: None,
            })
        );
        // MCR p15, 0, r1, c7, c14, 2 (DCCISW) and ACTLR2, CRn 15 (IMPDEF).
        let dccisw = always | 2 << 17 | 1 << 5 | 7 << 10 | 14 << 1;
        assert!(matches!(
            decode_trap(esr(ec::CP15_32, dccisw), 0, 0, SVC).exit,
            Exit::SysReg(SysRegAccess {
                register: TrappedRegister::DataCacheSetWay(SetWayOperation::CleanInvalidate),
                value_register: 1,
                ..
            })
        ));
        let actlr2 = always | 3 << 17 | 1 << 10 | 1;
        let impdef = always | 15 << 10 | 1;
        let register = |iss| match decode_trap(esr(ec::CP15_32, iss), 0, 0, SVC).exit {
            Exit::SysReg(access) => access.register,
            other => panic!("{other:?}"),
        };
        assert_eq!(register(actlr2), TrappedRegister::AuxiliaryControl);
        assert_eq!(register(impdef), TrappedRegister::ImplementationDefined);
        // MCRR p15, 0, r2, r3, c12 (ICC_SGI1R): Rt and Rt2.
        let sgi1r = always | 2 << 5 | 3 << 10 | 12 << 1;
        assert_eq!(
            decode_trap(esr(ec::CP15_64, sgi1r), 0, 0, SVC).exit,
            Exit::SysReg(SysRegAccess {
                register: TrappedRegister::GicSgi1r,
                write: true,
                value_register: 2,
                high_register: Some(3),
            })
        );
        // CP14 (debug): reads as zero, like the AArch64 debug registers.
        assert!(matches!(
            decode_trap(esr(ec::CP14_32, always | 1), 0, 0, SVC).exit,
            Exit::SysReg(SysRegAccess {
                register: TrappedRegister::Debug,
                write: false,
                ..
            })
        ));
        // WFI with COND = EQ while Z is clear: skipped, not a wait; with
        // Z set, a wait. From AArch64 the condition fields mean nothing.
        let wfi_eq = 1 << 24;
        assert_eq!(
            decode_trap(esr(ec::WFX, wfi_eq), 0, 0, SVC).exit,
            Exit::ConditionFailed
        );
        assert_eq!(
            decode_trap(esr(ec::WFX, wfi_eq), 0, 0, SVC | 1 << 30).exit,
            Exit::WaitForInterrupt
        );
        assert_eq!(
            decode_trap(esr(ec::WFX, wfi_eq), 0, 0, 0x3c5).exit,
            Exit::WaitForInterrupt
        );
        // A data abort has no condition: decoded whatever the flags.
        let iss = iss::ISV | 2 << 22 | 3 << 16 | 0b000111;
        assert!(matches!(
            decode_trap(esr(ec::DABT_LOW, iss), 0, 0, SVC).exit,
            Exit::Mmio(_)
        ));
    }
}
