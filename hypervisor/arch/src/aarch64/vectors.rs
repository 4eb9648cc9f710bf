//! The EL2 exception vector table and the guest entry/exit trampoline.
//!
//! A vCPU runs by calling [`enter_guest`]: it saves the hypervisor's
//! callee-saved registers on the EL2 stack, loads the guest's registers and
//! ERETs. A trap from the guest lands in a lower-EL vector, which saves the
//! guest registers into the same [`GuestRegisters`] (found via TPIDR_EL2),
//! restores the hypervisor's registers and returns from `enter_guest` with
//! the kind of exception. Exceptions taken at EL2 itself are bugs: they are
//! saved into an [`El2Frame`] and reported by the binary's handler.

use core::arch::global_asm;

pub use crate::guest32::{ExceptionKind, GuestRegisters};

/// Registers saved when EL2 itself takes an exception.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct El2Frame {
    /// x0..x30.
    pub x: [u64; 31],
    /// ELR_EL2 at the exception.
    pub elr: u64,
    /// SPSR_EL2 at the exception.
    pub spsr: u64,
}

global_asm!(
    r#"
.macro SAVE_EL2 kind
    sub     sp, sp, #(34 * 8)
    stp     x0, x1, [sp, #(0 * 8)]
    stp     x2, x3, [sp, #(2 * 8)]
    stp     x4, x5, [sp, #(4 * 8)]
    stp     x6, x7, [sp, #(6 * 8)]
    stp     x8, x9, [sp, #(8 * 8)]
    stp     x10, x11, [sp, #(10 * 8)]
    stp     x12, x13, [sp, #(12 * 8)]
    stp     x14, x15, [sp, #(14 * 8)]
    stp     x16, x17, [sp, #(16 * 8)]
    stp     x18, x19, [sp, #(18 * 8)]
    stp     x20, x21, [sp, #(20 * 8)]
    stp     x22, x23, [sp, #(22 * 8)]
    stp     x24, x25, [sp, #(24 * 8)]
    stp     x26, x27, [sp, #(26 * 8)]
    stp     x28, x29, [sp, #(28 * 8)]
    mrs     x0, elr_el2
    stp     x30, x0, [sp, #(30 * 8)]
    mrs     x0, spsr_el2
    str     x0, [sp, #(32 * 8)]
    mov     x0, sp
    mov     x1, #\kind
    bl      chroma_el2_exception
    b       chroma_park
.endm

.macro FROM_GUEST kind
    stp     x0, x1, [sp, #-16]!
    mov     x0, #\kind
    b       chroma_guest_exit
.endm

    .section .text.vectors, "ax"
    .balign 2048
    .global chroma_el2_vectors
chroma_el2_vectors:
    // Current EL with SP_EL0 (never used by chroma).
    .balign 0x80
    SAVE_EL2 0
    .balign 0x80
    SAVE_EL2 1
    .balign 0x80
    SAVE_EL2 2
    .balign 0x80
    SAVE_EL2 3
    // Current EL with SP_ELx: a fault in the hypervisor.
    .balign 0x80
    SAVE_EL2 0
    .balign 0x80
    SAVE_EL2 1
    .balign 0x80
    SAVE_EL2 2
    .balign 0x80
    SAVE_EL2 3
    // Lower EL, AArch64: the guest.
    .balign 0x80
    FROM_GUEST 0
    .balign 0x80
    FROM_GUEST 1
    .balign 0x80
    FROM_GUEST 2
    .balign 0x80
    FROM_GUEST 3
    // Lower EL, AArch32: an AArch32 VM (HCR_EL2.RW = 0), or AArch32 EL0.
    .balign 0x80
    FROM_GUEST 0
    .balign 0x80
    FROM_GUEST 1
    .balign 0x80
    FROM_GUEST 2
    .balign 0x80
    FROM_GUEST 3

    .text
    // x0 = kind; the guest's x0, x1 are on the stack.
chroma_guest_exit:
    mrs     x1, tpidr_el2
    stp     x2, x3, [x1, #(2 * 8)]
    stp     x4, x5, [x1, #(4 * 8)]
    stp     x6, x7, [x1, #(6 * 8)]
    stp     x8, x9, [x1, #(8 * 8)]
    stp     x10, x11, [x1, #(10 * 8)]
    stp     x12, x13, [x1, #(12 * 8)]
    stp     x14, x15, [x1, #(14 * 8)]
    stp     x16, x17, [x1, #(16 * 8)]
    stp     x18, x19, [x1, #(18 * 8)]
    stp     x20, x21, [x1, #(20 * 8)]
    stp     x22, x23, [x1, #(22 * 8)]
    stp     x24, x25, [x1, #(24 * 8)]
    stp     x26, x27, [x1, #(26 * 8)]
    stp     x28, x29, [x1, #(28 * 8)]
    str     x30, [x1, #(30 * 8)]
    ldp     x2, x3, [sp], #16
    stp     x2, x3, [x1, #(0 * 8)]
    mrs     x2, elr_el2
    mrs     x3, spsr_el2
    stp     x2, x3, [x1, #(31 * 8)]
    ldr     x2, [x1, #(33 * 8)]
    mov     sp, x2
    ldp     x19, x20, [sp, #16]
    ldp     x21, x22, [sp, #32]
    ldp     x23, x24, [sp, #48]
    ldp     x25, x26, [sp, #64]
    ldp     x27, x28, [sp, #80]
    ldp     x29, x30, [sp], #96
    ret

    // x0 = &mut GuestRegisters. Returns the exception kind.
    .global chroma_enter_guest
chroma_enter_guest:
    stp     x29, x30, [sp, #-96]!
    stp     x19, x20, [sp, #16]
    stp     x21, x22, [sp, #32]
    stp     x23, x24, [sp, #48]
    stp     x25, x26, [sp, #64]
    stp     x27, x28, [sp, #80]
    mov     x1, sp
    str     x1, [x0, #(33 * 8)]
    msr     tpidr_el2, x0
    ldp     x1, x2, [x0, #(31 * 8)]
    msr     elr_el2, x1
    msr     spsr_el2, x2
    ldp     x2, x3, [x0, #(2 * 8)]
    ldp     x4, x5, [x0, #(4 * 8)]
    ldp     x6, x7, [x0, #(6 * 8)]
    ldp     x8, x9, [x0, #(8 * 8)]
    ldp     x10, x11, [x0, #(10 * 8)]
    ldp     x12, x13, [x0, #(12 * 8)]
    ldp     x14, x15, [x0, #(14 * 8)]
    ldp     x16, x17, [x0, #(16 * 8)]
    ldp     x18, x19, [x0, #(18 * 8)]
    ldp     x20, x21, [x0, #(20 * 8)]
    ldp     x22, x23, [x0, #(22 * 8)]
    ldp     x24, x25, [x0, #(24 * 8)]
    ldp     x26, x27, [x0, #(26 * 8)]
    ldp     x28, x29, [x0, #(28 * 8)]
    ldr     x30, [x0, #(30 * 8)]
    ldp     x0, x1, [x0, #(0 * 8)]
    eret
    dsb     nsh
    isb
"#
);

extern "C" {
    fn chroma_enter_guest(registers: *mut GuestRegisters) -> u64;
}

/// Runs the guest until it traps.
///
/// # Safety
/// The current CPU's stage-2 (VTTBR_EL2), HCR_EL2 and EL1 context must be
/// those of the vCPU that owns `registers`, so the guest can reach nothing
/// but its own memory and devices.
pub unsafe fn enter_guest(registers: &mut GuestRegisters) -> ExceptionKind {
    // SAFETY: `registers` is a valid, exclusive GuestRegisters for the whole run (the trampoline stores through TPIDR_EL2 only until it returns); isolation is the caller's contract above.
    let code = unsafe { chroma_enter_guest(registers) };
    ExceptionKind::from_code(code)
}

/// Describes an exception EL2 took itself (a hypervisor bug) as text lines
/// for `emit`: the kind, the decoded syndrome, FAR, ELR, SPSR and x0-x30.
pub fn report_el2_exception(
    frame: &El2Frame,
    kind: u64,
    mut emit: impl FnMut(core::fmt::Arguments),
) {
    let esr = super::sysreg::esr_el2();
    let class = super::esr::exception_class(esr);
    let kind_name = ["synchronous", "IRQ", "FIQ", "SError"][(kind & 3) as usize];
    emit(format_args!(
        "chroma: EL2 EXCEPTION ({}) on CPU {:#x}: {} (EC {:#x}, ESR {:#x})\n  FAR {:#018x}  ELR {:#018x}  SPSR {:#x}",
        kind_name,
        super::cpu::affinity(),
        super::esr::class_name(class),
        class,
        esr,
        super::sysreg::far_el2(),
        frame.elr,
        frame.spsr
    ));
    for row in frame.x.chunks(4).enumerate() {
        let (index, values) = row;
        let value = |i: usize| values.get(i).copied().unwrap_or(0);
        let first = index * 4;
        emit(format_args!(
            "  x{:<2} {:#018x}  x{:<2} {:#018x}  x{:<2} {:#018x}  x{:<2} {:#018x}",
            first,
            value(0),
            first + 1,
            value(1),
            first + 2,
            value(2),
            first + 3,
            value(3)
        ));
    }
}
