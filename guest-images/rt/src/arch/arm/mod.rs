//! ARMv7-A / AArch32 back-end: PL1 in SVC mode, MMU off, entered as a
//! zImage-style image (the Linux ARM boot protocol).
//!
//! System registers come from the `aarch32-cpu` crate (the successor of
//! `cortex-a`), as `aarch64-cpu` serves the AArch64 side. Hand-written `asm!`
//! remains only for what that crate does not offer: HVC/SMC calls, the GICv3
//! ICC registers (`icc`), CPSR save/restore, LDRD/STRD, the stack switch,
//! single-instruction probing loads, and the entry and vector code.

mod boot;
pub mod icc;
pub mod timer;
pub mod vectors;

use core::arch::asm;

/// The architecture's name, for messages.
pub const NAME: &str = "arm";

/// The low and high 32-bit halves of `value`: for MCRR, STRD and SMC32
/// arguments, which take 32-bit registers.
#[allow(clippy::cast_possible_truncation)] // Keeping the low half is the point.
pub fn halves(value: u64) -> (u32, u32) {
    (value as u32, (value >> 32) as u32)
}

/// DSB SY.
pub fn dsb_sy() {
    aarch32_cpu::asm::dsb();
}

/// DMB SY.
pub fn dmb_sy() {
    aarch32_cpu::asm::dmb();
}

/// ISB SY.
pub fn isb_sy() {
    aarch32_cpu::asm::isb();
}

/// WFI.
pub fn wfi() {
    aarch32_cpu::asm::wfi();
}

/// Unmasks IRQs (CPSR.I = 0); FIQs and asynchronous aborts stay masked.
pub fn unmask_irqs() {
    // SAFETY: the runtime takes no interrupt-based critical sections (it has no locks: see `shared`), so unmasking breaks none; the crate's compiler fence keeps memory accesses before this point.
    unsafe { aarch32_cpu::interrupt::enable() };
}

/// Masks IRQs (CPSR.I = 1), with FIQs and asynchronous aborts.
pub fn mask_irqs() {
    // SAFETY: as for `unmask_irqs`.
    unsafe { asm!("cpsid aif", options(nostack, preserves_flags)) };
}

/// The interrupt masks as [`save_and_mask_irqs`] found them (the CPSR).
#[derive(Clone, Copy, Debug)]
pub struct IrqState(u32);

/// Saves the CPSR and masks IRQs, FIQs and asynchronous aborts.
pub fn save_and_mask_irqs() -> IrqState {
    let cpsr: u32;
    // SAFETY: reads the CPSR and sets its mask bits; no memory is involved but the asm is not `nomem`, to order accesses around the masking.
    unsafe { asm!("mrs {}, cpsr", "cpsid aif", out(reg) cpsr, options(nostack, preserves_flags)) };
    IrqState(cpsr)
}

/// Restores CPSR.I and CPSR.F as [`save_and_mask_irqs`] saved them (the
/// control field, which also holds the mode: the same one, since this runs
/// where it was saved). CPSR.A is never unmasked by this runtime.
pub fn restore_irqs(state: IrqState) {
    // SAFETY: writes the CPSR control field with the value read from it in the same mode, so only the I and F masks can change.
    unsafe { asm!("msr cpsr_c, {}", in(reg) state.0, options(nostack)) };
}

/// TPIDRPRW (cp15 c13, c0, 4): the CPU index the entry code wrote.
pub fn cpu_index() -> usize {
    let index: u32;
    // SAFETY: reading a software thread ID register has no side effects.
    unsafe {
        asm!("mrc p15, 0, {}, c13, c0, 4", out(reg) index, options(nomem, nostack, preserves_flags))
    };
    index as usize
}

/// MPIDR (cp15 c0, c0, 5).
pub fn mpidr() -> u64 {
    let value: u32;
    // SAFETY: reading MPIDR has no side effects.
    unsafe {
        asm!("mrc p15, 0, {}, c0, c0, 5", out(reg) value, options(nomem, nostack, preserves_flags))
    };
    u64::from(value)
}

/// Makes an SMC32 call over `hvc #0` (or `smc #0` if `smc`) with up to three
/// arguments (truncated to 32 bits) and returns r0 sign-extended.
pub fn smccc_call(smc: bool, function: u32, arg1: u64, arg2: u64, arg3: u64) -> i64 {
    let mut r0 = function;
    // SMC32 calls see only the low 32 bits of each argument.
    let (arg1, arg2, arg3) = (halves(arg1).0, halves(arg2).0, halves(arg3).0);
    if smc {
        // SAFETY: an SMC32 call returns results in r0..r3 and preserves r4..r14 (SMCCC 1.x), so r0..r3 and r12 are declared clobbered; it does not touch this guest's memory other than as PSCI defines (CPU_ON starts another CPU at an entry point of our choosing).
        unsafe {
            asm!(
                ".arch_extension sec",
                "smc #0",
                inout("r0") r0,
                inout("r1") arg1 => _, inout("r2") arg2 => _, inout("r3") arg3 => _,
                out("r12") _,
                options(nostack),
            )
        }
    } else {
        // SAFETY: as for SMC.
        unsafe {
            asm!(
                ".arch_extension virt",
                "hvc #0",
                inout("r0") r0,
                inout("r1") arg1 => _, inout("r2") arg2 => _, inout("r3") arg3 => _,
                out("r12") _,
                options(nostack),
            )
        }
    }
    i64::from(r0 as i32)
}

/// Switches to the stack ending at `top` and calls `entry(argument)` there.
///
/// # Safety
///
/// `top` must be the 8-byte-aligned end of memory that nothing else uses
/// for as long as the CPU runs on it; the current stack is abandoned.
pub unsafe fn run_on_stack(top: usize, argument: usize, entry: extern "C" fn(usize) -> !) -> ! {
    // SAFETY: the caller guarantees the new stack; r11 (the A32 frame pointer) and lr are cleared so frame walks end at `entry`, which never returns.
    unsafe {
        asm!(
            "mov sp, {top}",
            "mov r11, #0",
            "mov lr, #0",
            "bx {entry}",
            top = in(reg) top,
            entry = in(reg) entry as *const () as usize,
            in("r0") argument,
            options(noreturn),
        )
    }
}

/// One 32-bit load from `address` in a single 4-byte A32 instruction;
/// returns `if_skipped` if a synchronous exception handler skipped it.
///
/// # Safety
///
/// `address` must not hold a Rust object that is being mutated; a load that
/// aborts must be skipped (`Resolution::Skip`) by the registered handler.
pub unsafe fn load_u32_skippable(address: usize, if_skipped: u32) -> u32 {
    let mut value = if_skipped;
    // SAFETY: the caller guarantees the address and the handler; the `ldr` is one 4-byte A32 instruction, so PC + 4 resumes after it and `value` keeps `if_skipped`.
    unsafe {
        asm!("ldr {value}, [{address}]", address = in(reg) address, value = inout(reg) value, options(nostack));
    }
    value
}

/// One 32-bit store of zero to `address` in a single 4-byte A32 instruction.
///
/// # Safety
///
/// As for [`load_u32_skippable`], and no Rust object may live at `address`.
pub unsafe fn store_zero_u32_skippable(address: usize) {
    // SAFETY: as for `load_u32_skippable`.
    unsafe {
        asm!("str {zero}, [{address}]", address = in(reg) address, zero = in(reg) 0u32, options(nostack));
    }
}

/// Loads 64 bits with one LDRD: single-copy atomic at an 8-byte-aligned
/// address on cores with LPAE (every core this runtime targets).
///
/// # Safety
///
/// `pointer` must be valid for an 8-byte read and 8-byte aligned.
pub unsafe fn load_u64_single_copy(pointer: *const u64) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: the caller guarantees a valid, aligned pointer; LDRD needs an even/odd register pair in A32, hence r2/r3.
    unsafe {
        asm!("ldrd r2, r3, [{}]", in(reg) pointer, out("r2") low, out("r3") high, options(nostack, readonly, preserves_flags));
    }
    (u64::from(high) << 32) | u64::from(low)
}

/// Stores 64 bits with one STRD (see [`load_u64_single_copy`]).
///
/// # Safety
///
/// `pointer` must be valid for an 8-byte write and 8-byte aligned.
pub unsafe fn store_u64_single_copy(pointer: *mut u64, value: u64) {
    let (low, high) = halves(value);
    // SAFETY: as for `load_u64_single_copy`.
    unsafe {
        asm!(
            "strd r2, r3, [{}]",
            in(reg) pointer,
            in("r2") low,
            in("r3") high,
            options(nostack, preserves_flags),
        );
    }
}
