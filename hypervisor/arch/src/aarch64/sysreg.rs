//! System-register access for the EL2 back-end.
//!
//! Reads are safe. Writes are `unsafe fn`: each of these registers controls
//! translation, trapping or interrupt delivery, so a wrong value can break
//! isolation (STYLE U4). Register names are Arm's, in the assembler too.
//!
//! The values written to the EL2 controls are built from `aarch64-cpu`'s
//! field definitions in `el2`. The accessors here are not `aarch64-cpu`'s
//! `set()`: that is a safe call, and its `asm!` is `nomem`, which lets the
//! compiler move memory accesses across a write to, say, VTTBR_EL2; these
//! writes are ordered with memory.

use core::arch::asm;

macro_rules! sysreg_read {
    ($(#[$doc:meta])* $fn_name:ident, $reg:literal) => {
        $(#[$doc])*
        #[inline(always)]
        pub fn $fn_name() -> u64 {
            let value: u64;
            // SAFETY: reading this system register at EL2 has no side effect and touches no memory.
            unsafe { asm!(concat!("mrs {}, ", $reg), out(reg) value, options(nomem, nostack, preserves_flags)) };
            value
        }
    };
}

macro_rules! sysreg_write {
    ($(#[$doc:meta])* $fn_name:ident, $reg:literal) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// The value must keep the hypervisor's isolation and translation
        /// invariants; see the caller's `SAFETY` comment.
        #[inline(always)]
        pub unsafe fn $fn_name(value: u64) {
            // SAFETY: the caller vouches for the value (this fn's contract).
            unsafe { asm!(concat!("msr ", $reg, ", {}"), in(reg) value, options(nostack, preserves_flags)) };
        }
    };
}

sysreg_read!(/// ESR_EL2: syndrome of the last exception.
    esr_el2, "esr_el2");
sysreg_read!(/// FAR_EL2: faulting virtual address.
    far_el2, "far_el2");
sysreg_read!(/// HPFAR_EL2: faulting IPA, page part.
    hpfar_el2, "hpfar_el2");
sysreg_read!(/// MPIDR_EL1: this CPU's affinity.
    mpidr_el1, "mpidr_el1");
sysreg_read!(/// MIDR_EL1: this CPU's identity.
    midr_el1, "midr_el1");
sysreg_read!(/// PMCR_EL0: the PMU's control, with its event counter count (N).
    pmcr_el0, "pmcr_el0");
sysreg_read!(/// ID_AA64MMFR0_EL1: physical address range and granules.
    id_aa64mmfr0_el1, "id_aa64mmfr0_el1");
sysreg_read!(/// ID_AA64ISAR1_EL1: instruction set attributes (pointer authentication).
    id_aa64isar1_el1, "id_aa64isar1_el1");
sysreg_read!(/// ID_AA64ISAR2_EL1 (S3_0_C0_C6_2): more instruction set attributes
    /// (QARMA3 pointer authentication); reads as zero before Armv8.7.
    id_aa64isar2_el1, "S3_0_C0_C6_2");
sysreg_read!(/// CLIDR_EL1: the cache levels and their types.
    clidr_el1, "clidr_el1");
sysreg_read!(/// CNTFRQ_EL0: counter frequency.
    cntfrq_el0, "cntfrq_el0");
sysreg_read!(/// CNTPCT_EL0: physical count.
    cntpct_el0, "cntpct_el0");
sysreg_read!(/// CNTV_CTL_EL0: the current guest's virtual timer control.
    cntv_ctl_el0, "cntv_ctl_el0");
sysreg_read!(/// CNTV_CVAL_EL0: the current guest's virtual timer compare value.
    cntv_cval_el0, "cntv_cval_el0");
sysreg_read!(/// ICH_VTR_EL2: GICv3 virtual interface type.
    ich_vtr_el2, "ich_vtr_el2");
sysreg_read!(/// ICH_MISR_EL2: maintenance interrupt status.
    ich_misr_el2, "ich_misr_el2");
sysreg_read!(/// ICH_VMCR_EL2: the guest's virtual CPU interface control.
    ich_vmcr_el2, "ich_vmcr_el2");
sysreg_read!(/// ICC_IAR1_EL1: acknowledge a group-1 interrupt (EL2's own).
    icc_iar1_el1, "icc_iar1_el1");
sysreg_read!(/// VBAR_EL1: the guest's vector base.
    vbar_el1, "vbar_el1");
sysreg_read!(/// SCTLR_EL2.
    sctlr_el2, "sctlr_el2");
sysreg_read!(/// SCTLR_EL1: the current guest's system control (MMU and cache enables).
    sctlr_el1, "sctlr_el1");
sysreg_read!(/// TCR_EL1: the current guest's translation control (AArch32: TTBCR).
    tcr_el1, "tcr_el1");
sysreg_read!(/// FAR_EL1: the current guest's fault address (AArch32: DFAR, IFAR).
    far_el1, "far_el1");
sysreg_read!(/// PAR_EL1: the result of the last address translation instruction.
    par_el1, "par_el1");

/// The IPA the current guest's stage 1 maps virtual address `va` to, for a
/// read at EL1 (AT S1E1R; PAR_EL1.F = 0), or `None` when it faults.
pub fn translate_el1_read(va: u64) -> Option<u64> {
    // SAFETY: AT S1E1R only walks the guest's stage-1 tables (with the current VMID's stage 2 for the walk) and writes PAR_EL1, which the guest cannot see before this function reads it back; it changes no memory and no translation.
    unsafe { asm!("at s1e1r, {}", "isb", in(reg) va, options(nostack, preserves_flags)) };
    let par = par_el1();
    // PAR_EL1.F (bit 0): the walk faulted. PA bits 47:12 on success.
    (par & 1 == 0).then_some(par & 0x0000_ffff_ffff_f000 | va & 0xfff)
}

/// The IPA the current guest's stage 1 maps virtual address `va` to, for
/// a write at EL1 (AT S1E1W), or `None` when the walk faults: the page of
/// a stage-2 Permission fault, for which HPFAR_EL2 is UNKNOWN (Arm ARM
/// D24.2.71; Linux's `__translate_far_to_hpfar` does the same). The
/// guest's PAR_EL1 is saved first and put back after.
pub fn translate_el1_write(va: u64) -> Option<u64> {
    let saved = par_el1();
    // SAFETY: AT S1E1W only walks the guest's stage-1 tables (with the current VMID's stage 2 for the walk) and writes PAR_EL1, read back after the ISB and then restored, so the guest sees no change; it changes no memory and no translation.
    unsafe {
        asm!("at s1e1w, {}", "isb", in(reg) va, options(nostack, preserves_flags));
    }
    let par = par_el1();
    // SAFETY: PAR_EL1 is the guest's own register, given back the value it held.
    unsafe { asm!("msr par_el1, {}", in(reg) saved, options(nostack, preserves_flags)) };
    // PAR_EL1.F (bit 0): the walk faulted. The 64-bit format (bit 11 RES1,
    // an AArch64 or LPAE stage 1) holds PA[47:12]; the 32-bit one (a
    // short-descriptor AArch32 stage 1) PA[31:12].
    if par & 1 != 0 {
        return None;
    }
    let page = if par & 1 << 11 != 0 {
        par & 0x0000_ffff_ffff_f000
    } else {
        par & 0xffff_f000
    };
    Some(page | va & 0xfff)
}

/// Invalidates, on every CPU of the inner shareable domain, what the TLBs
/// hold of IPA page `ipa` for the VMID in VTTBR_EL2: its stage-2 entries
/// (TLBI IPAS2E1IS) and the VMID's stage-1 entries (TLBI VMALLE1IS), which
/// may hold the combined translation (Arm ARM D8.16, the sequence after a
/// stage-2 change).
pub fn tlbi_ipa_is(ipa: u64) {
    // SAFETY: TLB invalidation only drops cached translations; the operand is IPA[51:12], any value of which is valid.
    unsafe {
        asm!(
            "dsb ishst",
            "tlbi ipas2e1is, {page}",
            "dsb ish",
            "tlbi vmalle1is",
            "dsb ish",
            "isb",
            page = in(reg) (ipa >> 12) & ((1 << 40) - 1),
            options(nostack, preserves_flags)
        )
    };
}

sysreg_write!(/// HCR_EL2: what traps to EL2.
    write_hcr_el2, "hcr_el2");
sysreg_read!(/// HCR_EL2: what traps to EL2, and the virtual interrupt lines.
    hcr_el2, "hcr_el2");

/// HCR_EL2.VF: a virtual FIQ is pending for EL1.
const HCR_VF: u64 = 1 << 6;
/// HCR_EL2.VI: a virtual IRQ is pending for EL1.
const HCR_VI: u64 = 1 << 7;

/// Asserts (or lowers) the virtual IRQ and FIQ lines of the vCPU about to
/// run (HCR_EL2.VI / VF, with IMO / FMO set): how a software virtual CPU
/// interface signals its interrupts where there is no GIC.
pub fn set_virtual_lines(irq: bool, fiq: bool) {
    let lines = if irq { HCR_VI } else { 0 } | if fiq { HCR_VF } else { 0 };
    let hcr = hcr_el2() & !(HCR_VI | HCR_VF) | lines;
    // SAFETY: only the two virtual-interrupt bits change; they make EL1 take an IRQ or FIQ exception, which the guest handles, and touch no memory or translation.
    unsafe { write_hcr_el2(hcr) };
}

/// Whether the virtual timer's output is asserted: enabled, condition met,
/// not masked (CNTV_CTL_EL0 ENABLE, ISTATUS, IMASK) — the level of its
/// interrupt line, as a controller without pending state (the BCM2836
/// local one) cannot report it once masked.
pub fn virtual_timer_asserted() -> bool {
    cntv_ctl_el0() & 0b111 == 0b101
}
sysreg_write!(/// VTTBR_EL2: stage-2 root and VMID.
    write_vttbr_el2, "vttbr_el2");
sysreg_read!(/// VTTBR_EL2: stage-2 root and VMID.
    vttbr_el2, "vttbr_el2");
sysreg_write!(/// VTCR_EL2: stage-2 translation control.
    write_vtcr_el2, "vtcr_el2");
sysreg_write!(/// VMPIDR_EL2: the MPIDR the guest reads.
    write_vmpidr_el2, "vmpidr_el2");
sysreg_write!(/// VPIDR_EL2: the MIDR the guest reads.
    write_vpidr_el2, "vpidr_el2");
sysreg_write!(/// CPTR_EL2: FP/SIMD and other traps.
    write_cptr_el2, "cptr_el2");
sysreg_write!(/// CNTHCTL_EL2: EL1 access to the physical counter and timer.
    write_cnthctl_el2, "cnthctl_el2");
sysreg_write!(/// CNTVOFF_EL2: virtual counter offset.
    write_cntvoff_el2, "cntvoff_el2");
sysreg_write!(/// MDCR_EL2: debug traps.
    write_mdcr_el2, "mdcr_el2");
sysreg_write!(/// CNTHP_CTL_EL2: the EL2 physical timer control.
    write_cnthp_ctl_el2, "cnthp_ctl_el2");
sysreg_write!(/// CNTHP_CVAL_EL2: the EL2 physical timer compare value.
    write_cnthp_cval_el2, "cnthp_cval_el2");
sysreg_write!(/// CNTV_CTL_EL0: the current guest's virtual timer control.
    write_cntv_ctl_el0, "cntv_ctl_el0");
sysreg_write!(/// CNTV_CVAL_EL0: the current guest's virtual timer compare value.
    write_cntv_cval_el0, "cntv_cval_el0");
sysreg_write!(/// ICH_HCR_EL2: GICv3 virtual interface control.
    write_ich_hcr_el2, "ich_hcr_el2");
sysreg_write!(/// ICH_VMCR_EL2: the guest's virtual CPU interface control.
    write_ich_vmcr_el2, "ich_vmcr_el2");
sysreg_read!(/// ICH_AP0R0_EL2: active priorities of the virtual group 0 interrupts.
    ich_ap0r0_el2, "S3_4_C12_C8_0");
sysreg_read!(/// ICH_AP0R1_EL2: active priorities of the virtual group 0 interrupts.
    ich_ap0r1_el2, "S3_4_C12_C8_1");
sysreg_read!(/// ICH_AP0R2_EL2: active priorities of the virtual group 0 interrupts.
    ich_ap0r2_el2, "S3_4_C12_C8_2");
sysreg_read!(/// ICH_AP0R3_EL2: active priorities of the virtual group 0 interrupts.
    ich_ap0r3_el2, "S3_4_C12_C8_3");
sysreg_read!(/// ICH_AP1R0_EL2: active priorities of the virtual group 1 interrupts.
    ich_ap1r0_el2, "S3_4_C12_C9_0");
sysreg_read!(/// ICH_AP1R1_EL2: active priorities of the virtual group 1 interrupts.
    ich_ap1r1_el2, "S3_4_C12_C9_1");
sysreg_read!(/// ICH_AP1R2_EL2: active priorities of the virtual group 1 interrupts.
    ich_ap1r2_el2, "S3_4_C12_C9_2");
sysreg_read!(/// ICH_AP1R3_EL2: active priorities of the virtual group 1 interrupts.
    ich_ap1r3_el2, "S3_4_C12_C9_3");
sysreg_write!(/// ICH_AP0R0_EL2: active priorities of the virtual group 0 interrupts.
    write_ich_ap0r0_el2, "S3_4_C12_C8_0");
sysreg_write!(/// ICH_AP0R1_EL2: active priorities of the virtual group 0 interrupts.
    write_ich_ap0r1_el2, "S3_4_C12_C8_1");
sysreg_write!(/// ICH_AP0R2_EL2: active priorities of the virtual group 0 interrupts.
    write_ich_ap0r2_el2, "S3_4_C12_C8_2");
sysreg_write!(/// ICH_AP0R3_EL2: active priorities of the virtual group 0 interrupts.
    write_ich_ap0r3_el2, "S3_4_C12_C8_3");
sysreg_write!(/// ICH_AP1R0_EL2: active priorities of the virtual group 1 interrupts.
    write_ich_ap1r0_el2, "S3_4_C12_C9_0");
sysreg_write!(/// ICH_AP1R1_EL2: active priorities of the virtual group 1 interrupts.
    write_ich_ap1r1_el2, "S3_4_C12_C9_1");
sysreg_write!(/// ICH_AP1R2_EL2: active priorities of the virtual group 1 interrupts.
    write_ich_ap1r2_el2, "S3_4_C12_C9_2");
sysreg_write!(/// ICH_AP1R3_EL2: active priorities of the virtual group 1 interrupts.
    write_ich_ap1r3_el2, "S3_4_C12_C9_3");
sysreg_write!(/// ICC_SRE_EL2: system-register interface enable for EL2 and EL1.
    write_icc_sre_el2, "icc_sre_el2");
sysreg_write!(/// ICC_PMR_EL1: EL2's priority mask (EL1 name, EL2 access).
    write_icc_pmr_el1, "icc_pmr_el1");
sysreg_write!(/// ICC_IGRPEN1_EL1: group-1 enable for EL2.
    write_icc_igrpen1_el1, "S3_0_C12_C12_7");
sysreg_write!(/// ICC_EOIR1_EL1: end of interrupt (with ICC_CTLR_EL1.EOImode set: priority drop only).
    write_icc_eoir1_el1, "S3_0_C12_C12_1");
sysreg_write!(/// ICC_DIR_EL1: deactivate an interrupt (with ICC_CTLR_EL1.EOImode set).
    write_icc_dir_el1, "S3_0_C12_C11_1");
sysreg_write!(/// ICC_SGI1R_EL1: send a physical SGI.
    write_icc_sgi1r_el1, "icc_sgi1r_el1");
sysreg_write!(/// ICC_CTLR_EL1: EL2's CPU interface control.
    write_icc_ctlr_el1, "icc_ctlr_el1");
sysreg_write!(/// ELR_EL1: the guest's exception return address.
    write_elr_el1, "elr_el1");
sysreg_write!(/// SPSR_EL1: the guest's saved PSTATE.
    write_spsr_el1, "spsr_el1");
sysreg_write!(/// ESR_EL1: the guest's exception syndrome.
    write_esr_el1, "esr_el1");
sysreg_write!(/// FAR_EL1: the guest's fault address.
    write_far_el1, "far_el1");
sysreg_write!(/// SCTLR_EL1: the guest's system control (reset value on vCPU start).
    write_sctlr_el1, "sctlr_el1");
sysreg_write!(/// SPSR_abt: an AArch32 guest's saved CPSR in Abort mode.
    write_spsr_abt, "spsr_abt");
sysreg_write!(/// SPSR_und: an AArch32 guest's saved CPSR in Undefined mode.
    write_spsr_und, "spsr_und");
sysreg_write!(/// IFSR32_EL2: an AArch32 guest's instruction fault status (IFSR).
    write_ifsr32_el2, "ifsr32_el2");

/// Reads `ICH_LR<index>_EL2` (index < 16).
pub fn ich_lr_el2(index: usize) -> u64 {
    let value: u64;
    macro_rules! read_lr {
        ($($i:literal => $reg:literal),*) => {
            match index {
                // SAFETY: reading a list register has no side effect.
                $($i => unsafe { asm!(concat!("mrs {}, ", $reg), out(reg) value, options(nomem, nostack)) },)*
                _ => value = 0,
            }
        };
    }
    read_lr!(0 => "ich_lr0_el2", 1 => "ich_lr1_el2", 2 => "ich_lr2_el2", 3 => "ich_lr3_el2",
             4 => "ich_lr4_el2", 5 => "ich_lr5_el2", 6 => "ich_lr6_el2", 7 => "ich_lr7_el2",
             8 => "ich_lr8_el2", 9 => "ich_lr9_el2", 10 => "ich_lr10_el2", 11 => "ich_lr11_el2",
             12 => "ich_lr12_el2", 13 => "ich_lr13_el2", 14 => "ich_lr14_el2", 15 => "ich_lr15_el2");
    value
}

/// Writes `ICH_LR<index>_EL2` (index < 16; others are ignored).
///
/// # Safety
/// The list register must belong to the vCPU about to run on this CPU.
pub unsafe fn write_ich_lr_el2(index: usize, value: u64) {
    macro_rules! write_lr {
        ($($i:literal => $reg:literal),*) => {
            match index {
                // SAFETY: the caller's contract; list registers only affect the virtual interrupts of the vCPU on this CPU.
                $($i => unsafe { asm!(concat!("msr ", $reg, ", {}"), in(reg) value, options(nomem, nostack)) },)*
                _ => {}
            }
        };
    }
    write_lr!(0 => "ich_lr0_el2", 1 => "ich_lr1_el2", 2 => "ich_lr2_el2", 3 => "ich_lr3_el2",
              4 => "ich_lr4_el2", 5 => "ich_lr5_el2", 6 => "ich_lr6_el2", 7 => "ich_lr7_el2",
              8 => "ich_lr8_el2", 9 => "ich_lr9_el2", 10 => "ich_lr10_el2", 11 => "ich_lr11_el2",
              12 => "ich_lr12_el2", 13 => "ich_lr13_el2", 14 => "ich_lr14_el2", 15 => "ich_lr15_el2");
}

/// Instruction synchronization barrier.
#[inline(always)]
pub fn isb() {
    // SAFETY: a barrier has no memory-safety effect.
    unsafe { asm!("isb", options(nostack, preserves_flags)) };
}

/// Data synchronization barrier, inner shareable.
#[inline(always)]
pub fn dsb_ish() {
    // SAFETY: a barrier has no memory-safety effect.
    unsafe { asm!("dsb ish", options(nostack, preserves_flags)) };
}

/// Waits for an interrupt (with interrupts masked at EL2 it just wakes up).
#[inline(always)]
pub fn wfi() {
    // SAFETY: waiting has no memory-safety effect.
    unsafe { asm!("wfi", options(nomem, nostack, preserves_flags)) };
}

/// SEV: wakes CPUs waiting in WFE (a spin table's).
pub fn sev() {
    // SAFETY: an event has no memory effect.
    unsafe { asm!("sev", options(nomem, nostack, preserves_flags)) };
}

/// Invalidates this CPU's stage-1 and stage-2 TLB entries of the VMID in
/// VTTBR_EL2 (TLBI VMALLS12E1).
pub fn tlbi_vmalls12e1() {
    // SAFETY: TLB invalidation only drops cached translations.
    unsafe {
        asm!(
            "dsb nshst",
            "tlbi vmalls12e1",
            "dsb nsh",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}

/// Invalidates the EL2 translation of the page at `va` on every CPU of the
/// inner shareable domain (TLBI VAE2IS), after its descriptor was changed
/// or removed: DSB ISHST first so the walkers see the table write, DSB ISH
/// to wait for the invalidation everywhere, ISB for this CPU's next access.
pub fn tlbi_vae2is(va: u64) {
    // SAFETY: TLB invalidation only drops cached translations; the operand is VA[55:12], any value of which is a valid operand.
    unsafe {
        asm!(
            "dsb ishst",
            "tlbi vae2is, {page}",
            "dsb ish",
            "isb",
            page = in(reg) (va >> 12) & ((1 << 44) - 1),
            options(nostack, preserves_flags)
        )
    };
}

/// Invalidates every EL1&0 TLB entry of this CPU, of every VMID (TLBI
/// ALLE1): what a cold reset left in the TLBs is UNKNOWN, and no guest's
/// translations may come from there.
pub fn tlbi_alle1() {
    // SAFETY: TLB invalidation only drops cached translations.
    unsafe {
        asm!(
            "dsb ishst",
            "tlbi alle1",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}

/// A PSCI/SMCCC call to firmware through SMC (QEMU with
/// `virtualization=on` answers these itself).
///
/// # Safety
/// The firmware call must not hand memory the hypervisor uses to anyone,
/// and an entry point passed to CPU_ON must be a valid EL2 entry.
pub unsafe fn smc_call(function: u32, a1: u64, a2: u64, a3: u64) -> u64 {
    let result: u64;
    // SAFETY: the SMC conduit follows SMCCC: x0-x3 in, x0-x3 out, other registers preserved; the caller vouches for the arguments.
    unsafe {
        asm!("smc #0",
            inout("x0") u64::from(function) => result,
            inout("x1") a1 => _, inout("x2") a2 => _, inout("x3") a3 => _,
            options(nostack))
    };
    result
}
