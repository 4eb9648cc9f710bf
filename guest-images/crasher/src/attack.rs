//! The few hostile instructions the crasher runs, per architecture.
//!
//! Each is deliberately unsound in the usual sense (control does not come
//! back, or vectors point nowhere); the callers say why that is fine.

use core::arch::asm;

/// Branches to `address`.
///
/// # Safety
///
/// Never returns normally: every instruction fetch at `address` must abort
/// and be retried by the registered handler, forever.
pub unsafe fn jump_to(address: usize) -> ! {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: the caller accepts that control never comes back.
    unsafe {
        asm!("br {}", in(reg) address, options(noreturn))
    }
    #[cfg(target_arch = "arm")]
    // SAFETY: as above (`bx` to an even address stays in A32 state).
    unsafe {
        asm!("bx {}", in(reg) address, options(noreturn))
    }
}

/// Points the vector base at `address`, then loads from it.
///
/// # Safety
///
/// Never returns: every exception afterwards fetches its vector from
/// `address`, which must abort, forever.
pub unsafe fn set_vectors_and_fault(address: usize) -> ! {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: the caller accepts that no Rust code runs afterwards.
    unsafe {
        asm!(
            "msr vbar_el1, {vectors}",
            "isb",
            // Clobbering an input is fine: this never returns.
            "ldr {vectors:w}, [{vectors}]",
            "1: b 1b",
            vectors = in(reg) address,
            options(noreturn, nostack),
        )
    }
    #[cfg(target_arch = "arm")]
    // SAFETY: as above; VBAR is cp15 c12, c0, 0.
    unsafe {
        asm!(
            "mcr p15, 0, {vectors}, c12, c0, 0",
            "isb",
            "ldr {vectors}, [{vectors}]",
            "1: b 1b",
            vectors = in(reg) address,
            options(noreturn, nostack),
        )
    }
}

/// Makes semihosting call `operation` with parameter `parameter` through
/// `hlt #0xf000` and returns x0 (r0); if HLT is UNDEFINED and the handler
/// skips it, returns `operation`.
///
/// On AArch32 this is the A32 HLT encoding (0xe10f0070), which QEMU treats
/// as the semihosting trap on every architecture version; ARMv7 assemblers
/// do not know HLT, hence `.inst`. (The other A32 trap, `svc #0x123456`, is
/// taken by the guest's own SVC vector, never by a hypervisor.)
///
/// # Safety
///
/// With semihosting on, the host reads the block `parameter` points at, so
/// it must be valid; these calls write no guest memory.
pub unsafe fn semihosting(operation: usize, parameter: usize) -> usize {
    let mut result = operation;
    #[cfg(target_arch = "aarch64")]
    // SAFETY: the caller guarantees the parameter block; not `nomem`, so the block is written before the call.
    unsafe {
        asm!("hlt #0xf000", inout("x0") result, in("x1") parameter, options(nostack));
    }
    #[cfg(target_arch = "arm")]
    // SAFETY: as above.
    unsafe {
        asm!(".inst 0xe10f0070", inout("r0") result, in("r1") parameter, options(nostack));
    }
    result
}
