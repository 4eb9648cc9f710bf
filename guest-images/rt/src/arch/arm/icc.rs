//! The GICv3 CPU interface registers in their AArch32 cp15 encodings (GICv3
//! architecture, 12.7): ICC_SRE (c12, c12, 5), ICC_PMR (c4, c6, 0), ICC_BPR1
//! (c12, c12, 3), ICC_IGRPEN1 (c12, c12, 7), ICC_IAR1 (c12, c12, 0),
//! ICC_EOIR1 (c12, c12, 1) and ICC_SGI1R (MCRR op1 0, c12).

use core::arch::asm;

use super::halves;

/// ICC_SRE.SRE: use the system-register interface.
const SRE: u32 = 1 << 0;

/// Sets ICC_SRE.SRE.
pub fn enable_system_register_interface() {
    let mut value: u32;
    // SAFETY: reading and setting SRE at PL1 only changes how this CPU talks to its own GIC CPU interface; no memory is involved.
    unsafe {
        asm!("mrc p15, 0, {}, c12, c12, 5", out(reg) value, options(nomem, nostack));
        value |= SRE;
        asm!("mcr p15, 0, {}, c12, c12, 5", "isb", in(reg) value, options(nomem, nostack));
    }
}

/// Writes ICC_PMR (8 bits).
pub fn write_pmr(value: u64) {
    // SAFETY: the priority mask only filters this CPU's interrupts.
    unsafe { asm!("mcr p15, 0, {}, c4, c6, 0", in(reg) halves(value).0, options(nomem, nostack)) };
}

/// Writes ICC_BPR1.
pub fn write_bpr1(value: u64) {
    // SAFETY: the binary point only affects preemption on this CPU.
    unsafe {
        asm!("mcr p15, 0, {}, c12, c12, 3", in(reg) halves(value).0, options(nomem, nostack))
    };
}

/// Writes ICC_IGRPEN1.
pub fn write_igrpen1(value: u64) {
    // SAFETY: enables Group 1 signalling to this CPU; the ISB makes it take effect before interrupts are unmasked.
    unsafe {
        asm!("mcr p15, 0, {}, c12, c12, 7", "isb", in(reg) halves(value).0, options(nomem, nostack))
    };
}

/// Reads ICC_IAR1, acknowledging an interrupt.
pub fn read_iar1() -> u64 {
    let value: u32;
    // SAFETY: acknowledging changes GIC state only; the caller ends the interrupt. Not `nomem`: it must not move across the handler's accesses.
    unsafe { asm!("mrc p15, 0, {}, c12, c12, 0", out(reg) value, options(nostack)) };
    u64::from(value)
}

/// Writes ICC_EOIR1.
pub fn write_eoir1(intid: u64) {
    // SAFETY: ends an interrupt this CPU acknowledged; ordered after the handler's memory accesses (not `nomem`).
    unsafe {
        asm!("mcr p15, 0, {}, c12, c12, 1", "isb", in(reg) halves(intid).0, options(nostack))
    };
}

/// Sends an SGI through ICC_SGI1R to one PE (same layout as ICC_SGI1R_EL1;
/// an AArch32 MPIDR has no Aff3). Assumes Aff0 < 16, as on QEMU virt and chroma.
pub fn send_sgi1(intid: u32, mpidr: u64) {
    let aff0 = mpidr & 0xff;
    let aff1 = (mpidr >> 8) & 0xff;
    let aff2 = (mpidr >> 16) & 0xff;
    let value =
        (1u64 << (aff0 & 0xf)) | (aff1 << 16) | ((u64::from(intid) & 0xf) << 24) | (aff2 << 32);
    let (low, high) = halves(value);
    // SAFETY: sending an SGI has no memory effect; the ISB makes sure it is issued before we go on (for example, to WFI).
    unsafe {
        asm!(
            "mcrr p15, 0, {low}, {high}, c12",
            "isb",
            low = in(reg) low,
            high = in(reg) high,
            options(nostack),
        )
    };
}
