//! The EL2 control values, each built in one function with one reason per bit.
//!
//! Trap controls for guests (HCR_EL2, CPTR_EL2, MDCR_EL2, CNTHCTL_EL2), stage-2
//! translation control (VTCR_EL2), the hypervisor's own stage 1 (TCR_EL2,
//! SCTLR_EL2, MAIR_EL2) and the EL1 reset state a vCPU starts with
//! (SCTLR_EL1). STYLE R2: a value is built in exactly one place, with a comment
//! per bit saying why. [Hafnium `src/arch/aarch64/sysregs.c`]
//!
//! Field names are `aarch64-cpu`'s. Its version 10 does not name every field
//! chroma sets; those few are declared below on its register types (so they
//! combine with its fields and not with another register's), and MDCR_EL2,
//! which it lacks entirely, is declared with `register_bitfields!`. Offsets
//! are from the Arm ARM (DDI 0487), chapter D23 (AArch64 system registers),
//! for HCR_EL2.E2H = 0: chroma is not a VHE host.
//!
//! The builders are pure and compile on every target, so the host tests pin
//! each value bit for bit. Only `init_el2_controls`, which writes them,
//! is AArch64-only, and it is `unsafe` (STYLE U4).

use aarch64_cpu::registers::{
    CNTHCTL_EL2, CNTHP_CTL_EL2, CPTR_EL2, HCR_EL2, ID_AA64MMFR0_EL1, MAIR_EL2, SCTLR_EL1,
    SCTLR_EL2, TCR_EL2, VTCR_EL2,
};
use tock_registers::fields::{Field, FieldValue};
use tock_registers::{register_bitfields, RegisterLongName};

/// HCR_EL2.TWI, bit 13: WFI at EL1/EL0 traps to EL2.
const HCR_EL2_TWI: Field<u64, HCR_EL2::Register> = Field::new(1, 13);

/// CPTR_EL2.TCPAC, bit 31: CPACR_EL1 accesses trap.
const CPTR_EL2_TCPAC: Field<u64, CPTR_EL2::Register> = Field::new(1, 31);
/// CPTR_EL2.TTA, bit 20: trace register accesses trap.
const CPTR_EL2_TTA: Field<u64, CPTR_EL2::Register> = Field::new(1, 20);
/// CPTR_EL2.TSM, bit 12: SME traps (RES1 without FEAT_SME).
const CPTR_EL2_TSM: Field<u64, CPTR_EL2::Register> = Field::new(1, 12);
/// CPTR_EL2.TFP, bit 10: FP/SIMD traps.
const CPTR_EL2_TFP: Field<u64, CPTR_EL2::Register> = Field::new(1, 10);
/// CPTR_EL2.TZ, bit 8: SVE traps (RES1 without FEAT_SVE).
const CPTR_EL2_TZ: Field<u64, CPTR_EL2::Register> = Field::new(1, 8);
/// CPTR_EL2 RES1 bits with E2H = 0: 13, 9 and 7:0.
const CPTR_EL2_RES1: u64 = 1 << 13 | 1 << 9 | 0xff;

/// TCR_EL2 RES1 bits with E2H = 0: 31 and 23.
const TCR_EL2_RES1: u64 = 1 << 31 | 1 << 23;

/// SCTLR_EL2 RES1 bits with E2H = 0 that aarch64-cpu does not name:
/// 29, 28, 23, 18, 16, 5 and 4.
const SCTLR_EL2_RES1: u64 = 1 << 29 | 1 << 28 | 1 << 23 | 1 << 18 | 1 << 16 | 1 << 5 | 1 << 4;

/// SCTLR_EL1.LSMAOE, bit 29: load/store multiple atomicity and ordering
/// (RES1 without FEAT_LSMAOC).
const SCTLR_EL1_LSMAOE: Field<u64, SCTLR_EL1::Register> = Field::new(1, 29);
/// SCTLR_EL1.nTLSMD, bit 28: no trap of load/store multiple to Device memory
/// (RES1 without FEAT_LSMAOC).
const SCTLR_EL1_NTLSMD: Field<u64, SCTLR_EL1::Register> = Field::new(1, 28);
/// SCTLR_EL1.SPAN, bit 23: PSTATE.PAN unchanged on exception entry (RES1 without FEAT_PAN).
const SCTLR_EL1_SPAN: Field<u64, SCTLR_EL1::Register> = Field::new(1, 23);
/// SCTLR_EL1.EIS, bit 22: exception entry is context synchronizing (RES1 without FEAT_ExS).
const SCTLR_EL1_EIS: Field<u64, SCTLR_EL1::Register> = Field::new(1, 22);
/// SCTLR_EL1.TSCXT, bit 20: EL0 access to SCXTNUM_EL0 traps (RES1 without FEAT_CSV2).
const SCTLR_EL1_TSCXT: Field<u64, SCTLR_EL1::Register> = Field::new(1, 20);
/// SCTLR_EL1.EOS, bit 11: exception return is context synchronizing (RES1 without FEAT_ExS).
const SCTLR_EL1_EOS: Field<u64, SCTLR_EL1::Register> = Field::new(1, 11);

register_bitfields! {u64,
    /// MDCR_EL2, Monitor Debug Configuration Register (EL2): the debug and
    /// performance-monitor traps (fields with E2H = 0 that chroma decides).
    MDCR_EL2 [
        /// Debug ROM address register accesses trap.
        TDRA OFFSET(11) NUMBITS(1) [],
        /// OS lock and OS-related debug register accesses trap.
        TDOSA OFFSET(10) NUMBITS(1) [],
        /// Debug register accesses trap.
        TDA OFFSET(9) NUMBITS(1) [],
        /// Debug exceptions from EL1/EL0 are routed to EL2.
        TDE OFFSET(8) NUMBITS(1) [],
        /// Event counters HPMN and up are enabled at EL2.
        HPME OFFSET(7) NUMBITS(1) [],
        /// Performance monitor register accesses trap.
        TPM OFFSET(6) NUMBITS(1) [],
        /// PMCR_EL0 accesses trap.
        TPMCR OFFSET(5) NUMBITS(1) [],
        /// Event counters reserved for EL1/EL0: [0, HPMN).
        HPMN OFFSET(0) NUMBITS(5) []
    ]
}

/// A value with the RES1 bits `bits` of register `R` set.
const fn res1<R: RegisterLongName>(bits: u64) -> FieldValue<u64, R> {
    FieldValue::<u64, R>::new(bits, 0, bits)
}

/// HCR_EL2 while guests run: what traps to EL2 and how EL1 runs.
pub fn hcr_el2_for_guests() -> u64 {
    // Stage-2 translation on: a guest only reaches the memory its VM owns.
    (HCR_EL2::VM::Enable
        // Set/way invalidation by a guest becomes clean and invalidate: it
        // cannot discard another VM's (or the hypervisor's) dirty lines.
        // TSW below traps those instructions first; SWIO stays as the
        // hardware's own guarantee (it is RES1 on many CPUs).
        + HCR_EL2::SWIO::SET
        // Data cache maintenance by set/way (DC ISW, CSW, CISW) traps: a
        // set and way may hold any VM's lines, so the hypervisor performs
        // each as a clean and invalidate of the guest's operand (esr.rs
        // recognises them, the core's exit dispatch does it).
        + HCR_EL2::TSW::SET
        // ACTLR_EL1 traps: its IMPLEMENTATION DEFINED controls may be
        // global to the CPU (or cluster) and are not switched per vCPU, so
        // a guest reads zero and its writes are ignored.
        + HCR_EL2::TACR::SET
        // The IMPLEMENTATION DEFINED register and instruction space (op0 1
        // or 3, CRn 11 or 15) traps: CPU, L2 and error-record controls live
        // there, one copy per CPU for every VM; the guest gets UNDEFINED.
        + HCR_EL2::TIDCP::SET
        // Physical FIQs go to EL2; the guest gets virtual FIQs.
        + HCR_EL2::FMO::EnableVirtualFIQ
        // Physical IRQs go to EL2; the guest gets virtual IRQs.
        + HCR_EL2::IMO::EnableVirtualIRQ
        // Physical SErrors go to EL2: the hypervisor decides whose they are.
        + HCR_EL2::AMO::SET
        // TLB and I-cache maintenance is broadcast in the inner shareable
        // domain, so it reaches the guest's other vCPUs on other CPUs.
        + HCR_EL2::FB::SET
        // Barriers are at least inner shareable, for the same reason.
        + HCR_EL2::BSU::InnerShareable
        // WFI traps: a waiting vCPU gives its CPU to the others.
        + HCR_EL2_TWI.val(1)
        // SMC traps: firmware (PSCI) belongs to the hypervisor.
        + HCR_EL2::TSC::EnableTrapEl1SmcToEl2
        // EL1 is AArch64 (`hcr_el2_for` clears RW for an AArch32 VM).
        + HCR_EL2::RW::EL1IsAarch64
        // Pointer-authentication keys are the guest's own: their registers
        // do not trap, and the vCPU switch saves and restores them
        // (`context.rs`), so a VM neither reads nor replaces another's keys.
        + HCR_EL2::APK::DisableTrapPointerAuthKeyRegsToEl2
        // Pointer-authentication instructions do not trap either.
        + HCR_EL2::API::DisableTrapPointerAuthInstToEl2
        // Not a VHE host: EL2 runs the hypervisor, never a host OS.
        + HCR_EL2::E2H::DisableOsAtEl2
        // EL0 exceptions go to the guest's EL1, not to EL2.
        + HCR_EL2::TGE::DisableTrapGeneralExceptionsToEl2)
        .value
}

/// VTCR_EL2 for stage-2 tables of `ipa_bits` that start at `start_level`
/// (4 KiB granule), on a CPU whose physical address range is `pa_range`
/// (a PS encoding, see [`pa_range`]).
pub fn vtcr_el2(ipa_bits: u8, start_level: u8, pa_range: u64) -> u64 {
    // The walk starts where the stage-2 geometry says (levels 0 to 2; a
    // 4 KiB stage 2 never starts at level 3).
    let start = match start_level {
        0 => VTCR_EL2::SL0::Granule4KBLevel0,
        1 => VTCR_EL2::SL0::Granule4KBLevel1,
        _ => VTCR_EL2::SL0::Granule4KBLevel2,
    };
    // The IPA space is 2^ipa_bits bytes.
    (VTCR_EL2::T0SZ.val(64 - u64::from(ipa_bits))
        + start
        // Table walks are inner and outer write-back cacheable, as the
        // tables are (normal memory in the EL2 map), and inner shareable,
        // so every CPU's walker sees one copy.
        + VTCR_EL2::IRGN0::NormalWBRAWA
        + VTCR_EL2::ORGN0::NormalWBRAWA
        + VTCR_EL2::SH0::Inner
        // 4 KiB pages, the only granule the stage-2 code builds.
        + VTCR_EL2::TG0::Granule4KB
        // Output addresses as wide as the CPU's.
        + VTCR_EL2::PS.val(pa_range)
        // 8-bit VMIDs: chroma runs far fewer than 256 VMs.
        + VTCR_EL2::VS::Bits8
        // No hardware access-flag or dirty-bit updates: stage-2 leaves are
        // created with AF set and never tracked.
        + VTCR_EL2::HA::Disabled
        + VTCR_EL2::HD::Disabled
        // Bit 31 is RES1.
        + VTCR_EL2::RES1::SET)
        .value
}

/// CPTR_EL2 while guests run: which FP, SIMD, SVE, SME and trace accesses trap.
pub fn cptr_el2() -> u64 {
    // FP/SIMD do not trap: the guest owns those registers and the context
    // switch saves them (EL2 code is soft-float and never touches them).
    (CPTR_EL2_TFP.val(0)
        // CPACR_EL1 does not trap: the guest enables FP/SIMD for itself.
        + CPTR_EL2_TCPAC.val(0)
        // SVE traps: the context switch saves no SVE state, so a guest
        // using it could read another guest's Z/P registers.
        + CPTR_EL2_TZ.val(1)
        // SME traps, for the same reason (RES1 without FEAT_SME).
        + CPTR_EL2_TSM.val(1)
        // Trace registers do not trap: chroma does not virtualise trace;
        // the boards it runs on (QEMU) have no trace unit.
        + CPTR_EL2_TTA.val(0)
        // Activity monitors do not trap (QEMU has none; on a CPU with
        // FEAT_AMUv1 their counts span VMs, and trapping them is the safer
        // choice).
        + CPTR_EL2::TAM::CLEAR
        // RES1.
        + res1(CPTR_EL2_RES1))
    .value
}

/// MDCR_EL2 while guests run: the debug and performance-monitor traps.
///
/// The breakpoint, watchpoint, OS-lock, debug-ROM and PMU registers are
/// one set per physical CPU: a VM that wrote them would arm breakpoints or
/// count events in the next VM on that CPU (and read what it left). They
/// all trap, and the core emulates them as RAZ/WI (no debug, no PMU in the
/// VM). `event_counters` is the CPU's PMCR_EL0.N: HPMN keeps them all in
/// EL1's range (HPMN = 0 is reserved without FEAT_HPMN0).
pub fn mdcr_el2(event_counters: u64) -> u64 {
    // Debug exceptions stay with the guest.
    (MDCR_EL2::TDE::CLEAR
        // Debug registers (DBGB*, DBGW*, MDSCR_EL1, ...), the OS lock
        // registers and the debug ROM address trap.
        + MDCR_EL2::TDA::SET
        + MDCR_EL2::TDOSA::SET
        + MDCR_EL2::TDRA::SET
        // Every PMU register, PMCR_EL0 included, traps.
        + MDCR_EL2::TPM::SET
        + MDCR_EL2::TPMCR::SET
        // No event counter is kept for EL2 (it counts nothing itself).
        + MDCR_EL2::HPME::CLEAR
        + MDCR_EL2::HPMN.val(event_counters & 0x1f))
    .value
}

/// CNTHCTL_EL2 while guests run: EL1's access to the physical counter and timer.
pub fn cnthctl_el2() -> u64 {
    // Guests may read the physical counter (CNTPCT_EL0): with CNTVOFF_EL2
    // = 0 it equals the virtual count they see anyway.
    (CNTHCTL_EL2::EL1PCTEN::SET
        // The physical timer traps: it is the hypervisor's; guests get the
        // virtual timer.
        + CNTHCTL_EL2::EL1PCEN::CLEAR)
        .value
}

/// CNTHP_CTL_EL2 at CPU start: the EL2 physical timer off until the
/// scheduler arms it.
pub fn cnthp_ctl_el2_off() -> u64 {
    (CNTHP_CTL_EL2::ENABLE::CLEAR + CNTHP_CTL_EL2::IMASK::CLEAR).value
}

/// MAIR_EL2 attribute index of normal write-back memory (AttrIndx of the
/// EL2 stage-1 descriptors, `descriptors.rs`).
pub const MAIR_INDEX_NORMAL: u64 = 0;
/// MAIR_EL2 attribute index of device memory.
pub const MAIR_INDEX_DEVICE: u64 = 1;
/// MAIR_EL2 attribute index of Normal Non-cacheable memory.
pub const MAIR_INDEX_NON_CACHEABLE: u64 = 2;

/// MAIR_EL2: the memory types the EL2 stage-1 descriptors index.
///
/// `const` (combined with `|`, as `+` is not `const`) so that
/// `descriptors::MAIR_EL2_VALUE` is this value.
pub const fn mair_el2() -> u64 {
    // Attr0 (MAIR_INDEX_NORMAL): RAM, inner and outer write-back
    // non-transient with read and write allocation, the fastest type and the
    // one guests use, so the hypervisor's aliases agree with the guests'.
    MAIR_EL2::Attr0_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc.value
        | MAIR_EL2::Attr0_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc.value
        // Attr1 (MAIR_INDEX_DEVICE): MMIO, Device-nGnRE: no gathering or
        // reordering (register writes happen once and in order), early
        // write acknowledgement allowed (as Linux maps devices).
        | MAIR_EL2::Attr1_Device::nonGathering_nonReordering_EarlyWriteAck.value
        // Attr2 (MAIR_INDEX_NON_CACHEABLE): Normal, inner and outer
        // Non-cacheable: the alias through which the device model reaches a
        // packed virtqueue when the cache policy maintains (both sides write
        // its descriptor slots, often in one line, so no per-line cleaning
        // of a cached copy can be right; docs/caches.md).
        | MAIR_EL2::Attr2_Normal_Outer::NonCacheable.value
        | MAIR_EL2::Attr2_Normal_Inner::NonCacheable.value
}

/// TCR_EL2 for the hypervisor's own stage 1: `va_bits` of identity-mapped
/// address space (4 KiB granule) on a CPU whose physical address range is
/// `pa_range` (a PS encoding, see [`pa_range`]).
pub fn tcr_el2(va_bits: u8, pa_range: u64) -> u64 {
    // The EL2 address space is 2^va_bits bytes.
    (TCR_EL2::T0SZ.val(64 - u64::from(va_bits))
        // Table walks are inner and outer write-back cacheable and inner
        // shareable, as the tables are mapped and shared by every CPU.
        + TCR_EL2::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
        + TCR_EL2::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
        + TCR_EL2::SH0::Inner
        // 4 KiB pages, the only granule the EL2 tables are built with.
        + TCR_EL2::TG0::KiB_4
        // Output addresses as wide as the CPU's.
        + TCR_EL2::PS.val(pa_range)
        // The top byte is part of the address: EL2 uses no tagged pointers.
        + TCR_EL2::TBI::Used
        // No hardware access-flag or dirty-bit updates: leaves have AF set.
        + TCR_EL2::HA::Disable
        + TCR_EL2::HD::Disable
        // Bits 31 and 23 are RES1.
        + res1(TCR_EL2_RES1))
    .value
}

/// SCTLR_EL2 for the hypervisor with its final W^X map: MMU, caches, and
/// writable memory never executable.
pub fn sctlr_el2() -> u64 {
    // WXN: writable implies never-execute, so no data page ever runs as code.
    (sctlr_el2_fields() + SCTLR_EL2::WXN::Enable).value
}

/// SCTLR_EL2 for the early identity map, whose blocks are writable and
/// executable at once: [`sctlr_el2`] without WXN.
pub fn sctlr_el2_without_wxn() -> u64 {
    (sctlr_el2_fields() + SCTLR_EL2::WXN::Disable).value
}

/// Every SCTLR_EL2 field but WXN.
fn sctlr_el2_fields() -> FieldValue<u64, SCTLR_EL2::Register> {
    // Stage-1 translation on: the W^X map and memory types apply.
    SCTLR_EL2::M::Enable
        // Data and instruction caches on.
        + SCTLR_EL2::C::Cacheable
        + SCTLR_EL2::I::Cacheable
        // Stack alignment checked: a misaligned SP is a hypervisor bug.
        + SCTLR_EL2::SA::Enable
        // Other data accesses are not alignment checked: normal memory
        // allows unaligned accesses and `read_unaligned` relies on it.
        + SCTLR_EL2::A::Disable
        // Little-endian, as the code is compiled.
        + SCTLR_EL2::EE::Little
        // No implicit error synchronization barrier on exceptions.
        + SCTLR_EL2::IESB::Disable
        // Exception entry and return are context synchronizing (the Armv8.0
        // behaviour; RES1 without FEAT_ExS).
        + SCTLR_EL2::EIS::IsSynch
        + SCTLR_EL2::EOS::IsSynch
        // RES1.
        + res1(SCTLR_EL2_RES1)
}

/// HCR_EL2 while a vCPU of a VM runs: [`hcr_el2_for_guests`], with EL1 in
/// AArch32 state (RW = 0) when `aarch32`. Everything else is the same: an
/// AArch32 EL1 is trapped and contained as an AArch64 one (TSW, TACR,
/// TIDCP and the MDCR_EL2 traps cover the AArch32 views of the registers).
pub fn hcr_el2_for(aarch32: bool) -> u64 {
    let hcr = hcr_el2_for_guests();
    if aarch32 {
        hcr & !HCR_EL2::RW::SET.value
    } else {
        hcr
    }
}

/// SCTLR_EL1 at vCPU reset: MMU and caches off, the rest at the values an
/// Armv8.0 CPU has (what an operating system expects to find at entry).
pub fn sctlr_el1_at_reset() -> u64 {
    // MMU, data and instruction caches off: the guest turns them on.
    (SCTLR_EL1::M::Disable
        + SCTLR_EL1::C::NonCacheable
        + SCTLR_EL1::I::NonCacheable
        // No alignment or stack-alignment checks until the guest asks.
        + SCTLR_EL1::A::Disable
        + SCTLR_EL1::SA::Disable
        + SCTLR_EL1::SA0::Disable
        // Little-endian at EL1 and EL0.
        + SCTLR_EL1::EE::LittleEndian
        + SCTLR_EL1::E0E::LittleEndian
        // The fields below are RES1 on Armv8.0; 1 keeps the Armv8.0
        // behaviour on later CPUs: exception entry and return synchronize,
        + SCTLR_EL1_EIS.val(1)
        + SCTLR_EL1_EOS.val(1)
        // PSTATE.PAN is left alone on exception entry,
        + SCTLR_EL1_SPAN.val(1)
        // EL0 access to SCXTNUM_EL0 traps to EL1,
        + SCTLR_EL1_TSCXT.val(1)
        // and load/store multiple are neither trapped on Device memory nor
        // reordered.
        + SCTLR_EL1_NTLSMD.val(1)
        + SCTLR_EL1_LSMAOE.val(1))
    .value
}

/// SCTLR_EL1 at reset of a vCPU whose EL1 is AArch32 (the AArch32 SCTLR,
/// Arm ARM G8.2): MMU, caches and alignment checks off, little-endian, ARM
/// (not Thumb) exception handlers at VBAR, and set: CP15BEN (bit 5, the
/// CP15 barrier instructions an ARMv7 kernel still uses), nTWI and nTWE
/// (bits 16, 18: WFI/WFE not trapped to EL1), and the bits that are RES1 on
/// Armv8.0 (3, 4, 11, 22, 23). The value a Cortex-A57 resets it to.
pub const fn sctlr_aarch32_at_reset() -> u64 {
    1 << 23 | 1 << 22 | 1 << 18 | 1 << 16 | 1 << 11 | 1 << 5 | 1 << 4 | 1 << 3
}

/// The PS encoding (TCR_EL2.PS, VTCR_EL2.PS) for a CPU whose
/// ID_AA64MMFR0_EL1 is `id_aa64mmfr0`: its PARange, at most 48 bits (52-bit
/// output addresses need FEAT_LPA2 or 64 KiB pages; chroma uses 4 KiB).
pub fn pa_range(id_aa64mmfr0: u64) -> u64 {
    let widest = ID_AA64MMFR0_EL1::PARange::Value::Bits_48 as u64;
    ID_AA64MMFR0_EL1::PARange.read(id_aa64mmfr0).min(widest)
}

/// Physical address bits of a CPU whose ID_AA64MMFR0_EL1 is `id_aa64mmfr0`
/// (an unknown, future PARange counts as 52).
pub fn pa_bits(id_aa64mmfr0: u64) -> u8 {
    use ID_AA64MMFR0_EL1::PARange::Value as PaRange;
    match ID_AA64MMFR0_EL1::PARange.read_as_enum(id_aa64mmfr0) {
        Some(PaRange::Bits_32) => 32,
        Some(PaRange::Bits_36) => 36,
        Some(PaRange::Bits_40) => 40,
        Some(PaRange::Bits_42) => 42,
        Some(PaRange::Bits_44) => 44,
        Some(PaRange::Bits_48) => 48,
        Some(PaRange::Bits_52) | None => 52,
    }
}

/// [`pa_range`] of the CPU this runs on.
#[cfg(target_arch = "aarch64")]
pub fn this_cpu_pa_range() -> u64 {
    pa_range(super::sysreg::id_aa64mmfr0_el1())
}

/// [`pa_bits`] of the CPU this runs on.
#[cfg(target_arch = "aarch64")]
pub fn this_cpu_pa_bits() -> u8 {
    pa_bits(super::sysreg::id_aa64mmfr0_el1())
}

/// EL2 stage-1 settings, in the layout `boot.rs`'s `chroma_enable_mmu`
/// loads (`ldp` pairs at offsets 0 and 16): written by the primary CPU before
/// it starts the secondaries, read by each before its first Rust code.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmuConfig {
    /// MAIR_EL2 ([`mair_el2`]).
    pub mair: u64,
    /// TCR_EL2 ([`tcr_el2`]).
    pub tcr: u64,
    /// TTBR0_EL2: the root table.
    pub ttbr0: u64,
    /// SCTLR_EL2 ([`sctlr_el2`], with M, C, I set).
    pub sctlr: u64,
}

/// Writes the trap and timer controls that are the same for every vCPU on
/// this CPU: HCR_EL2, VTCR_EL2 (`vtcr`), CNTHCTL_EL2, CNTVOFF_EL2,
/// CPTR_EL2, MDCR_EL2 and CNTHP_CTL_EL2.
///
/// # Safety
/// No guest may be running on this CPU, and `vtcr` must be the
/// [`vtcr_el2`] of the stage-2 geometry every VM's tables were built for:
/// these registers decide what guests can reach and what traps.
#[cfg(target_arch = "aarch64")]
pub unsafe fn init_el2_controls(vtcr: u64) {
    use super::sysreg;
    /// PMCR_EL0.N: the number of event counters.
    const PMCR_N_SHIFT: u64 = 11;
    const PMCR_N_MASK: u64 = 0x1f;
    // Whether the vCPU switch saves pointer-authentication keys is decided
    // before any vCPU is loaded, and this CPU must agree with the others.
    super::features::record_this_cpu();
    // SAFETY: each value comes from its builder above, which traps what the hypervisor must see (HCR_EL2, CPTR_EL2, CNTHCTL_EL2) and gives the guest the virtual counter and timer; the caller guarantees that no guest runs on this CPU yet and that `vtcr` matches the stage-2 tables.
    unsafe {
        sysreg::write_hcr_el2(hcr_el2_for_guests());
        sysreg::write_vtcr_el2(vtcr);
        sysreg::write_cnthctl_el2(cnthctl_el2());
        // The guest's virtual counter reads the physical count.
        sysreg::write_cntvoff_el2(0);
        sysreg::write_cptr_el2(cptr_el2());
        sysreg::write_mdcr_el2(mdcr_el2((sysreg::pmcr_el0() >> PMCR_N_SHIFT) & PMCR_N_MASK));
        // The guest reads this CPU's MIDR_EL1 (VPIDR_EL2 resets UNKNOWN).
        sysreg::write_vpidr_el2(sysreg::midr_el1());
        sysreg::write_cnthp_ctl_el2(cnthp_ctl_el2_off());
    }
    // No guest translation may come from before the hypervisor owned the
    // CPU (firmware's, or the UNKNOWN contents of a cold reset).
    sysreg::tlbi_alle1();
    sysreg::isb();
}

#[cfg(test)]
mod tests {
    //! Each value against the raw number chroma wrote before these builders
    //! existed (the expressions are copied from that code), bit for bit.
    use super::*;

    #[test]
    fn only_rw_differs_for_an_aarch32_vm() {
        const RW: u64 = 1 << 31;
        assert_eq!(hcr_el2_for(false), hcr_el2_for_guests());
        assert_eq!(hcr_el2_for(true), hcr_el2_for_guests() & !RW);
        assert_ne!(hcr_el2_for_guests() & RW, 0);
    }

    #[test]
    fn an_aarch32_vcpu_resets_like_a_cortex_a57() {
        assert_eq!(sctlr_aarch32_at_reset(), 0x00c5_0838);
    }

    #[test]
    fn hcr_el2_is_the_value_chroma_always_wrote() {
        const VM: u64 = 1 << 0;
        const SWIO: u64 = 1 << 1;
        const FMO: u64 = 1 << 3;
        const IMO: u64 = 1 << 4;
        const AMO: u64 = 1 << 5;
        const FB: u64 = 1 << 9;
        const BSU_INNER: u64 = 1 << 10;
        const TWI: u64 = 1 << 13;
        const TSC: u64 = 1 << 19;
        const RW: u64 = 1 << 31;
        const APK: u64 = 1 << 40;
        const API: u64 = 1 << 41;
        let before = VM | SWIO | FMO | IMO | AMO | FB | BSU_INNER | TWI | TSC | RW | APK | API;
        // Issue 10: set/way maintenance, ACTLR_EL1 and the IMPLEMENTATION
        // DEFINED space trap too.
        const TIDCP: u64 = 1 << 20;
        const TACR: u64 = 1 << 21;
        const TSW: u64 = 1 << 22;
        assert_eq!(hcr_el2_for_guests(), before | TIDCP | TACR | TSW);
        assert_eq!(hcr_el2_for_guests(), 0x0000_0300_8078_263b);
        // Negative control: without the three traps it is the old value
        // exactly (nothing else changed).
        assert_eq!(
            hcr_el2_for_guests() & !(TIDCP | TACR | TSW),
            0x0000_0300_8008_263b
        );
        // Pointer authentication stays untrapped (keys are switched per
        // vCPU instead), and nothing traps to EL2 from EL0 wholesale.
        assert_eq!(hcr_el2_for_guests() & (APK | API), APK | API);
    }

    /// `vtcr_value` as `hypervisor/src/sched.rs` computed it.
    fn vtcr_before(ipa_bits: u8, start_level: u8, pa_range: u64) -> u64 {
        let sl0 = match start_level {
            0 => 2,
            1 => 1,
            _ => 0,
        };
        (64 - u64::from(ipa_bits))
            | sl0 << 6
            | 0b01 << 8
            | 0b01 << 10
            | 0b11 << 12
            | pa_range << 16
            | 1 << 31
    }

    #[test]
    fn vtcr_el2_is_the_value_chroma_always_wrote() {
        for ipa_bits in [32, 36, 39, 40, 42, 44, 48] {
            for start_level in 0..=3 {
                for pa_range in 0..=5 {
                    assert_eq!(
                        vtcr_el2(ipa_bits, start_level, pa_range),
                        vtcr_before(ipa_bits, start_level, pa_range),
                        "ipa_bits {ipa_bits}, start level {start_level}, PS {pa_range}"
                    );
                }
            }
        }
        // QEMU virt with a 40-bit IPA (start level 1) on a 48-bit CPU.
        assert_eq!(vtcr_el2(40, 1, 5), 0x8005_3558);
    }

    #[test]
    fn cptr_mdcr_cnthctl_and_cnthp_ctl_are_the_values_chroma_always_wrote() {
        assert_eq!(cptr_el2(), 0x33ff);
        // Debug and PMU registers trap (TPMCR 5, TPM 6, TDA 9, TDOSA 10,
        // TDRA 11); HPMN is the CPU's counter count.
        assert_eq!(
            mdcr_el2(6),
            1 << 5 | 1 << 6 | 1 << 9 | 1 << 10 | 1 << 11 | 6
        );
        assert_eq!(cnthctl_el2(), 1);
        assert_eq!(cnthp_ctl_el2_off(), 0);
    }

    #[test]
    fn stage1_values_are_the_ones_chroma_always_wrote() {
        const EL2_VA_BITS: u8 = 39;
        for pa_range in 0..=5u64 {
            let before = (64 - u64::from(EL2_VA_BITS))
                | 0b01 << 8
                | 0b01 << 10
                | 0b11 << 12
                | pa_range << 16
                | 1 << 23
                | 1 << 31;
            assert_eq!(tcr_el2(EL2_VA_BITS, pa_range), before, "PS {pa_range}");
        }
        let sctlr_before = 0x30c5_0830 | 1 << 0 | 1 << 2 | 1 << 3 | 1 << 12 | 1 << 19;
        assert_eq!(sctlr_el2(), sctlr_before);
        assert_eq!(sctlr_el2_without_wxn(), sctlr_before & !(1 << 19));
        // EnIA (31), EnIB (30), EnDA (27) and EnDB (13) are clear: EL2 never
        // signs or authenticates pointers, so the guest's pointer
        // authentication keys, restored at EL2 (`context.rs`), act for the
        // guest only.
        const EN_KEYS: u64 = 1 << 31 | 1 << 30 | 1 << 27 | 1 << 13;
        assert_eq!(sctlr_el2() & EN_KEYS, 0);
        assert_eq!(sctlr_el2_without_wxn() & EN_KEYS, 0);
        // Attr0 write-back, Attr1 Device-nGnRE, Attr2 Normal Non-cacheable.
        assert_eq!(mair_el2(), 0xff | 0x04 << 8 | 0x44 << 16);
    }

    #[test]
    fn sctlr_el1_reset_is_the_value_chroma_always_wrote() {
        assert_eq!(sctlr_el1_at_reset(), 0x30d0_0800);
    }

    #[test]
    fn pa_fields_are_what_chroma_always_derived() {
        for parange in 0..16u64 {
            // Other ID_AA64MMFR0_EL1 fields must not leak in.
            let id = 0x0000_1100_0f10_2120 & !0xf | parange;
            let bits_before = match parange {
                0 => 32,
                1 => 36,
                2 => 40,
                3 => 42,
                4 => 44,
                5 => 48,
                _ => 52,
            };
            assert_eq!(pa_bits(id), bits_before, "PARange {parange}");
            assert_eq!(pa_range(id), parange.min(5), "PARange {parange}");
        }
    }

    #[test]
    fn mmu_config_has_the_layout_the_entry_code_loads() {
        assert_eq!(core::mem::offset_of!(MmuConfig, mair), 0);
        assert_eq!(core::mem::offset_of!(MmuConfig, tcr), 8);
        assert_eq!(core::mem::offset_of!(MmuConfig, ttbr0), 16);
        assert_eq!(core::mem::offset_of!(MmuConfig, sctlr), 24);
        assert_eq!(core::mem::size_of::<MmuConfig>(), 32);
    }
}
