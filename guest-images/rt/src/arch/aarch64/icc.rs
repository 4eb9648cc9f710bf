//! The GICv3 CPU interface system registers (ICC_*_EL1), which `aarch64-cpu`
//! does not define. Named by their generic encodings so any assembler accepts them.

use core::arch::asm;

/// ICC_SRE_EL1.SRE: use the system-register interface.
const SRE: u64 = 1 << 0;

/// Sets ICC_SRE_EL1.SRE (ICC_SRE_EL1 = S3_0_C12_C12_5).
pub fn enable_system_register_interface() {
    let mut value: u64;
    // SAFETY: reading and setting SRE at EL1 only changes how this CPU talks to its own GIC CPU interface; no memory is involved.
    unsafe {
        asm!("mrs {}, S3_0_C12_C12_5", out(reg) value, options(nomem, nostack));
        value |= SRE;
        asm!("msr S3_0_C12_C12_5, {}", "isb", in(reg) value, options(nomem, nostack));
    }
}

/// Writes ICC_PMR_EL1 (S3_0_C4_C6_0).
pub fn write_pmr(value: u64) {
    // SAFETY: the priority mask only filters this CPU's interrupts.
    unsafe { asm!("msr S3_0_C4_C6_0, {}", in(reg) value, options(nomem, nostack)) };
}

/// Writes ICC_BPR1_EL1 (S3_0_C12_C12_3).
pub fn write_bpr1(value: u64) {
    // SAFETY: the binary point only affects preemption on this CPU.
    unsafe { asm!("msr S3_0_C12_C12_3, {}", in(reg) value, options(nomem, nostack)) };
}

/// Writes ICC_IGRPEN1_EL1 (S3_0_C12_C12_7).
pub fn write_igrpen1(value: u64) {
    // SAFETY: enables Group 1 signalling to this CPU; the ISB makes it take effect before interrupts are unmasked.
    unsafe { asm!("msr S3_0_C12_C12_7, {}", "isb", in(reg) value, options(nomem, nostack)) };
}

/// Reads ICC_IAR1_EL1 (S3_0_C12_C12_0), acknowledging an interrupt.
pub fn read_iar1() -> u64 {
    let value: u64;
    // SAFETY: acknowledging changes GIC state only; the caller ends the interrupt. Not `nomem`: it must not move across the handler's accesses.
    unsafe { asm!("mrs {}, S3_0_C12_C12_0", out(reg) value, options(nostack)) };
    value
}

/// Writes ICC_EOIR1_EL1 (S3_0_C12_C12_1).
pub fn write_eoir1(intid: u64) {
    // SAFETY: ends an interrupt this CPU acknowledged; ordered after the handler's memory accesses (not `nomem`).
    unsafe { asm!("msr S3_0_C12_C12_1, {}", "isb", in(reg) intid, options(nostack)) };
}

/// Sends an SGI through ICC_SGI1R_EL1 (S3_0_C12_C11_5) to one PE.
pub fn send_sgi1(intid: u32, mpidr: u64) {
    let aff0 = mpidr & 0xff;
    let aff1 = (mpidr >> 8) & 0xff;
    let aff2 = (mpidr >> 16) & 0xff;
    let aff3 = (mpidr >> 32) & 0xff;
    // ICC_SGI1R_EL1: TargetList [15:0] (Aff0 values 0..=15 of the
    // cluster), Aff1 [23:16], INTID [27:24], Aff2 [39:32], Aff3 [55:48].
    // Assumes Aff0 < 16 (no range selector), true of QEMU virt and chroma.
    let value = (1u64 << (aff0 & 0xf))
        | (aff1 << 16)
        | ((u64::from(intid) & 0xf) << 24)
        | (aff2 << 32)
        | (aff3 << 48);
    // SAFETY: sending an SGI has no memory effect; the ISB makes sure it is issued before we go on (for example, to WFI).
    unsafe { asm!("msr S3_0_C12_C11_5, {}", "isb", in(reg) value, options(nostack)) };
}
