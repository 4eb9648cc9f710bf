//! AArch64 back-end: EL1, MMU off, entered as an arm64 Image.

mod boot;
pub mod icc;
pub mod timer;
pub mod vectors;

use core::arch::asm;

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{Readable, Writeable, DAIF, MPIDR_EL1, TPIDR_EL1};

/// The architecture's name, for messages.
pub const NAME: &str = "aarch64";

/// DSB SY.
pub fn dsb_sy() {
    barrier::dsb(barrier::SY);
}

/// DMB SY.
pub fn dmb_sy() {
    barrier::dmb(barrier::SY);
}

/// ISB SY.
pub fn isb_sy() {
    barrier::isb(barrier::SY);
}

/// WFI.
pub fn wfi() {
    aarch64_cpu::asm::wfi();
}

/// Unmasks IRQs (PSTATE.I = 0), leaving FIQ, SError and debug masked.
pub fn unmask_irqs() {
    DAIF.write(DAIF::I::Unmasked + DAIF::F::Masked + DAIF::A::Masked + DAIF::D::Masked);
}

/// Masks IRQs (PSTATE.I = 1) with FIQ, SError and debug.
pub fn mask_irqs() {
    DAIF.write(DAIF::I::Masked + DAIF::F::Masked + DAIF::A::Masked + DAIF::D::Masked);
}

/// The interrupt masks as [`save_and_mask_irqs`] found them (DAIF).
#[derive(Clone, Copy, Debug)]
pub struct IrqState(u64);

/// Saves DAIF and masks everything.
pub fn save_and_mask_irqs() -> IrqState {
    let saved = IrqState(DAIF.get());
    mask_irqs();
    saved
}

/// Restores DAIF as [`save_and_mask_irqs`] saved it.
pub fn restore_irqs(state: IrqState) {
    DAIF.set(state.0);
}

/// TPIDR_EL1: the CPU index the entry code wrote.
pub fn cpu_index() -> usize {
    usize::try_from(TPIDR_EL1.get()).unwrap_or(0)
}

/// MPIDR_EL1.
pub fn mpidr() -> u64 {
    MPIDR_EL1.get()
}

/// Makes an SMCCC call with up to three arguments and returns x0; `smc`
/// selects `smc #0` rather than `hvc #0`.
pub fn smccc_call(smc: bool, function: u32, arg1: u64, arg2: u64, arg3: u64) -> i64 {
    let mut x0 = u64::from(function);
    if smc {
        // SAFETY: an SMCCC call clobbers at most x0..x17 (SMCCC 1.x, caller-saved registers), all declared; it does not touch this guest's memory other than as PSCI defines (CPU_ON starts another CPU at an entry point of our choosing, which Rust memory safety does not see).
        unsafe {
            asm!(
                "smc #0",
                inout("x0") x0,
                inout("x1") arg1 => _, inout("x2") arg2 => _, inout("x3") arg3 => _,
                out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _,
                out("x12") _, out("x13") _, out("x14") _, out("x15") _,
                out("x16") _, out("x17") _,
                options(nostack),
            )
        }
    } else {
        // SAFETY: as for SMC.
        unsafe {
            asm!(
                "hvc #0",
                inout("x0") x0,
                inout("x1") arg1 => _, inout("x2") arg2 => _, inout("x3") arg3 => _,
                out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _,
                out("x12") _, out("x13") _, out("x14") _, out("x15") _,
                out("x16") _, out("x17") _,
                options(nostack),
            )
        }
    }
    x0 as i64
}

/// Switches to the stack ending at `top` and calls `entry(argument)` there.
///
/// # Safety
///
/// `top` must be the 16-byte-aligned end of memory that nothing else uses
/// for as long as the CPU runs on it; the current stack is abandoned.
pub unsafe fn run_on_stack(top: usize, argument: usize, entry: extern "C" fn(usize) -> !) -> ! {
    // SAFETY: the caller guarantees the new stack; x29/x30 are cleared so frame-pointer walks end at `entry`, which never returns.
    unsafe {
        asm!(
            "mov sp, {top}",
            "mov x29, xzr",
            "mov x30, xzr",
            "br {entry}",
            top = in(reg) top,
            entry = in(reg) entry as *const () as usize,
            in("x0") argument,
            options(noreturn),
        )
    }
}

/// One 32-bit load from `address` in a single 4-byte instruction; returns
/// `if_skipped` if a synchronous exception handler skipped it.
///
/// # Safety
///
/// `address` must not hold a Rust object that is being mutated; a load that
/// aborts must be skipped (`Resolution::Skip`) by the registered handler.
pub unsafe fn load_u32_skippable(address: usize, if_skipped: u32) -> u32 {
    let mut value = if_skipped;
    // SAFETY: the caller guarantees the address and the handler; the `ldr` is exactly one 4-byte instruction, so ELR + 4 resumes after it and `value` keeps `if_skipped`.
    unsafe {
        asm!("ldr {value:w}, [{address}]", address = in(reg) address, value = inout(reg) value, options(nostack));
    }
    value
}

/// One 32-bit store of zero to `address` in a single 4-byte instruction.
///
/// # Safety
///
/// As for [`load_u32_skippable`], and no Rust object may live at `address`.
pub unsafe fn store_zero_u32_skippable(address: usize) {
    // SAFETY: as for `load_u32_skippable`.
    unsafe {
        asm!("str wzr, [{address}]", address = in(reg) address, options(nostack));
    }
}
