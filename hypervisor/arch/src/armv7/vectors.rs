//! The HYP vector table (HVBAR), the guest entry/exit trampoline, and the
//! report of an exception the hypervisor did not expect.
//!
//! A vCPU runs by calling [`enter_guest`]: it pushes the hypervisor's
//! callee-saved registers and the [`GuestRegisters`] pointer on the HYP
//! stack, loads the guest's registers (its banked SP/LR of every mode in
//! the AArch64 mapping's slots, see `guest32`) and ERETs. An exception
//! from the guest comes through the Hyp Trap, IRQ or FIQ vector with
//! SP_hyp where `enter_guest` left it: the vector saves every guest
//! register into the same structure and returns from `enter_guest` with
//! the [`ExceptionKind`]. Exceptions taken in HYP mode itself (the other
//! vectors, or those three with SPSR_hyp.M = HYP) are hypervisor bugs:
//! saved into a [`HypFrame`] and reported.

use super::hsr::Hsr;
use super::sysreg;
pub use crate::guest32::{ExceptionKind, GuestRegisters};
use core::arch::global_asm;

/// The registers an exception entry saves, in the order it pushes them.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HypFrame {
    /// r0 to r12.
    pub r: [u32; 13],
    /// lr (HYP mode uses the User/System lr).
    pub lr: u32,
    /// ELR_hyp: where the exception was taken.
    pub elr_hyp: u32,
    /// SPSR_hyp: the CPSR when it was taken.
    pub spsr_hyp: u32,
}

/// The vector an exception came through (the `kind` the entry passes).
const KIND_NAMES: [&str; 8] = [
    "reset",
    "undefined instruction",
    "HVC/SVC in HYP mode",
    "prefetch abort",
    "data abort",
    "HYP trap",
    "IRQ",
    "FIQ",
];

// Each entry saves r0-r12, lr, ELR_hyp and SPSR_hyp on the HYP stack as a
// `HypFrame` and calls `chroma_hyp_exception(frame, kind)`, which does not
// return (the binary crate defines it).
global_asm!(
    r#"
    .arch_extension virt
    .macro HYP_ENTRY name, kind
    .arm
\name:
    sub     sp, sp, #8
    push    {{r0-r12, lr}}
    mrs     r0, ELR_hyp
    mrs     r1, SPSR
    add     r2, sp, #56
    stm     r2, {{r0, r1}}
    mov     r0, sp
    mov     r1, #\kind
    bl      chroma_hyp_exception
1:  wfi
    b       1b
    .endm

    .text
    .arm
    .balign 32
    .global chroma_hyp_vectors
chroma_hyp_vectors:
    b       chroma_hyp_reset
    b       chroma_hyp_undefined
    b       chroma_hyp_call
    b       chroma_hyp_prefetch_abort
    b       chroma_hyp_data_abort
    b       chroma_guest_trap
    b       chroma_guest_irq
    b       chroma_guest_fiq

    HYP_ENTRY chroma_hyp_reset, 0
    HYP_ENTRY chroma_hyp_undefined, 1
    HYP_ENTRY chroma_hyp_call, 2
    HYP_ENTRY chroma_hyp_prefetch_abort, 3
    HYP_ENTRY chroma_hyp_data_abort, 4
    HYP_ENTRY chroma_hyp_trap, 5
    HYP_ENTRY chroma_hyp_irq, 6
    HYP_ENTRY chroma_hyp_fiq, 7

    // An exit from the guest with `kind` in r0 (after the check that the
    // exception came from a guest mode, not HYP). [sp] is the
    // GuestRegisters pointer `chroma_enter_guest` pushed. Every x slot is 8
    // bytes; the low word is the AArch32 register.
    .macro GUEST_EXIT name, kind, bug
\name:
    push    {{r0}}
    mrs     r0, SPSR
    and     r0, r0, #0x1f
    cmp     r0, #0x1a
    pop     {{r0}}
    beq     \bug
    push    {{r0}}
    ldr     r0, [sp, #4]
    str     r1, [r0, #8]
    str     r2, [r0, #16]
    str     r3, [r0, #24]
    str     r4, [r0, #32]
    str     r5, [r0, #40]
    str     r6, [r0, #48]
    str     r7, [r0, #56]
    str     r8, [r0, #64]
    str     r9, [r0, #72]
    str     r10, [r0, #80]
    str     r11, [r0, #88]
    str     r12, [r0, #96]
    pop     {{r1}}
    str     r1, [r0]
    str     lr, [r0, #112]
    mov     r1, #\kind
    b       chroma_guest_exit
    .endm

    GUEST_EXIT chroma_guest_trap, 0, chroma_hyp_trap
    GUEST_EXIT chroma_guest_irq, 1, chroma_hyp_irq
    GUEST_EXIT chroma_guest_fiq, 2, chroma_hyp_fiq

    // r0 = the GuestRegisters, r1 = the kind; r2-r12 and lr are free.
chroma_guest_exit:
    mrs     r2, SP_usr
    str     r2, [r0, #104]
    mrs     r2, LR_irq
    str     r2, [r0, #128]
    mrs     r2, SP_irq
    str     r2, [r0, #136]
    mrs     r2, LR_svc
    str     r2, [r0, #144]
    mrs     r2, SP_svc
    str     r2, [r0, #152]
    mrs     r2, LR_abt
    str     r2, [r0, #160]
    mrs     r2, SP_abt
    str     r2, [r0, #168]
    mrs     r2, LR_und
    str     r2, [r0, #176]
    mrs     r2, SP_und
    str     r2, [r0, #184]
    mrs     r2, r8_fiq
    str     r2, [r0, #192]
    mrs     r2, r9_fiq
    str     r2, [r0, #200]
    mrs     r2, r10_fiq
    str     r2, [r0, #208]
    mrs     r2, r11_fiq
    str     r2, [r0, #216]
    mrs     r2, r12_fiq
    str     r2, [r0, #224]
    mrs     r2, SP_fiq
    str     r2, [r0, #232]
    mrs     r2, LR_fiq
    str     r2, [r0, #240]
    mrs     r2, ELR_hyp
    str     r2, [r0, #248]
    mrs     r2, SPSR
    str     r2, [r0, #256]
    mov     r0, r1
    add     sp, sp, #8
    pop     {{r4-r12, pc}}

    // chroma_enter_guest(registers: *mut GuestRegisters) -> kind
    .global chroma_enter_guest
chroma_enter_guest:
    push    {{r4-r12, lr}}
    push    {{r0, r1}}
    ldr     r1, [r0, #104]
    msr     SP_usr, r1
    ldr     r1, [r0, #128]
    msr     LR_irq, r1
    ldr     r1, [r0, #136]
    msr     SP_irq, r1
    ldr     r1, [r0, #144]
    msr     LR_svc, r1
    ldr     r1, [r0, #152]
    msr     SP_svc, r1
    ldr     r1, [r0, #160]
    msr     LR_abt, r1
    ldr     r1, [r0, #168]
    msr     SP_abt, r1
    ldr     r1, [r0, #176]
    msr     LR_und, r1
    ldr     r1, [r0, #184]
    msr     SP_und, r1
    ldr     r1, [r0, #192]
    msr     r8_fiq, r1
    ldr     r1, [r0, #200]
    msr     r9_fiq, r1
    ldr     r1, [r0, #208]
    msr     r10_fiq, r1
    ldr     r1, [r0, #216]
    msr     r11_fiq, r1
    ldr     r1, [r0, #224]
    msr     r12_fiq, r1
    ldr     r1, [r0, #232]
    msr     SP_fiq, r1
    ldr     r1, [r0, #240]
    msr     LR_fiq, r1
    ldr     r1, [r0, #248]
    msr     ELR_hyp, r1
    ldr     r1, [r0, #256]
    msr     SPSR_fsxc, r1
    ldr     lr, [r0, #112]
    ldr     r12, [r0, #96]
    ldr     r11, [r0, #88]
    ldr     r10, [r0, #80]
    ldr     r9, [r0, #72]
    ldr     r8, [r0, #64]
    ldr     r7, [r0, #56]
    ldr     r6, [r0, #48]
    ldr     r5, [r0, #40]
    ldr     r4, [r0, #32]
    ldr     r3, [r0, #24]
    ldr     r2, [r0, #16]
    ldr     r1, [r0, #8]
    ldr     r0, [r0]
    eret
"#
);

extern "C" {
    fn chroma_enter_guest(registers: *mut GuestRegisters) -> u32;
}

/// Runs the guest whose registers are `registers` until it takes an
/// exception to HYP mode; saves them back and says which.
///
/// # Safety
/// The guest's PL1 state and its VM's stage 2 (VTTBR) are on this CPU, and
/// HCR traps what the hypervisor must see: the guest can then reach only
/// its own memory, and every exception brings control back here.
pub unsafe fn enter_guest(registers: &mut GuestRegisters) -> ExceptionKind {
    // SAFETY: the caller's contract; the trampoline saves and restores the AAPCS callee-saved registers and the HYP stack around the guest's run.
    let code = unsafe { chroma_enter_guest(registers) };
    ExceptionKind::from_code(u64::from(code))
}

/// Reports an exception taken in HYP mode: the vector, HSR decoded (class,
/// instruction length, ISS, fault status), HDFAR/HIFAR/HPFAR, the saved
/// registers and the banked SPSRs. The first line starts with
/// `chroma: EL2 EXCEPTION` (HYP mode is EL2), which the test harness and
/// `xtask run` read as the hypervisor failing.
pub fn report_hyp_exception(
    frame: &HypFrame,
    kind: u32,
    mut emit: impl FnMut(core::fmt::Arguments),
) {
    let hsr = Hsr(sysreg::hsr());
    let class = hsr.class();
    let kind_name = usize::try_from(kind)
        .ok()
        .and_then(|index| KIND_NAMES.get(index))
        .copied()
        .unwrap_or("unknown vector");
    // IRQ and FIQ do not write HSR: what it holds is stale.
    let hsr_note = if kind >= 6 {
        " (stale: IRQ/FIQ do not set HSR)"
    } else {
        ""
    };
    emit(format_args!(
        "chroma: EL2 EXCEPTION (HYP mode, {kind_name}) on CPU {:#x}: HSR {:#010x}{hsr_note}: EC {:#04x} {}, IL {}, ISS {:#x}",
        sysreg::mpidr() & 0x00ff_ffff,
        hsr.0,
        hsr.ec(),
        class.name(),
        // IL names the trapped instruction's length (1: 32-bit) only for
        // traps and aborts with a valid syndrome; printed as the hardware set it.
        u8::from(hsr.is_32bit_instruction()),
        hsr.iss(),
    ));
    if let Some(fault) = hsr.fault() {
        let access = match hsr.is_write() {
            Some(true) => "; on a write",
            Some(false) => "; on a read",
            None => "",
        };
        emit(format_args!("  {fault}{access}"));
    }
    let hpfar = sysreg::hpfar();
    emit(format_args!(
        "  HDFAR {:#010x}  HIFAR {:#010x}  HPFAR {:#010x} (IPA page {:#x})",
        sysreg::hdfar(),
        sysreg::hifar(),
        hpfar,
        u64::from(hpfar >> 4) << 12
    ));
    emit(format_args!(
        "  ELR_hyp {:#010x}  SPSR_hyp {:#010x}  lr {:#010x}  sp {:#010x}",
        frame.elr_hyp,
        frame.spsr_hyp,
        frame.lr,
        // The entry pushed 64 bytes below the interrupted stack pointer.
        (frame as *const HypFrame as usize).wrapping_add(core::mem::size_of::<HypFrame>()),
    ));
    for (row, values) in frame.r.chunks(4).enumerate() {
        let value = |i: usize| values.get(i).copied().unwrap_or(0);
        let first = row * 4;
        match values.len() {
            4 => emit(format_args!(
                "  r{:<2} {:#010x}  r{:<2} {:#010x}  r{:<2} {:#010x}  r{:<2} {:#010x}",
                first,
                value(0),
                first + 1,
                value(1),
                first + 2,
                value(2),
                first + 3,
                value(3)
            )),
            _ => emit(format_args!("  r{:<2} {:#010x}", first, value(0))),
        }
    }
    let [svc, abt, und, irq, fiq] = sysreg::banked_spsrs();
    emit(format_args!(
        "  SPSR_svc {svc:#010x}  SPSR_abt {abt:#010x}  SPSR_und {und:#010x}  SPSR_irq {irq:#010x}  SPSR_fiq {fiq:#010x}"
    ));
}
