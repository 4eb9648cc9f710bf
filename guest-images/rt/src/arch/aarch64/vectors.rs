//! The EL1 vector table and the trap frame.
//!
//! Every vector saves the general-purpose registers, ELR_EL1 and SPSR_EL1 in
//! a [`TrapFrame`] on the current stack and calls `_rt_exception(frame,
//! index)` (exceptions.rs) with the vector's index, 0..=15.

use core::arch::global_asm;

use aarch64_cpu::registers::{Readable, ESR_EL1, FAR_EL1};

use crate::exceptions::{Fault, VectorKind};

// Vector table: 16 entries of 0x80 bytes, 2 KiB aligned. Each entry makes
// room for the frame, saves x0/x1, puts its kind in x0 and branches to the
// common code, which saves the rest and calls `_rt_exception(frame, kind)`.
global_asm!(
    r#"
    .macro RT_VECTOR kind
    .balign 0x80
    sub     sp, sp, #{frame_size}
    stp     x0, x1, [sp, #0]
    mov     x0, #\kind
    b       _rt_exception_common
    .endm

    .section .text.vectors, "ax"
    .balign 0x800
    .global _rt_vectors
_rt_vectors:
    RT_VECTOR 0     // current EL, SP_EL0: synchronous
    RT_VECTOR 1     //                     IRQ
    RT_VECTOR 2     //                     FIQ
    RT_VECTOR 3     //                     SError
    RT_VECTOR 4     // current EL, SP_ELx: synchronous
    RT_VECTOR 5     //                     IRQ
    RT_VECTOR 6     //                     FIQ
    RT_VECTOR 7     //                     SError
    RT_VECTOR 8     // lower EL, AArch64
    RT_VECTOR 9
    RT_VECTOR 10
    RT_VECTOR 11
    RT_VECTOR 12    // lower EL, AArch32
    RT_VECTOR 13
    RT_VECTOR 14
    RT_VECTOR 15

_rt_exception_common:
    stp     x2, x3, [sp, #16 * 1]
    stp     x4, x5, [sp, #16 * 2]
    stp     x6, x7, [sp, #16 * 3]
    stp     x8, x9, [sp, #16 * 4]
    stp     x10, x11, [sp, #16 * 5]
    stp     x12, x13, [sp, #16 * 6]
    stp     x14, x15, [sp, #16 * 7]
    stp     x16, x17, [sp, #16 * 8]
    stp     x18, x19, [sp, #16 * 9]
    stp     x20, x21, [sp, #16 * 10]
    stp     x22, x23, [sp, #16 * 11]
    stp     x24, x25, [sp, #16 * 12]
    stp     x26, x27, [sp, #16 * 13]
    stp     x28, x29, [sp, #16 * 14]
    mrs     x2, elr_el1
    mrs     x3, spsr_el1
    stp     x30, x2, [sp, #16 * 15]
    str     x3, [sp, #16 * 16]
    mov     x1, x0
    mov     x0, sp
    bl      _rt_exception
    ldp     x30, x2, [sp, #16 * 15]
    ldr     x3, [sp, #16 * 16]
    msr     elr_el1, x2
    msr     spsr_el1, x3
    ldp     x0, x1, [sp, #16 * 0]
    ldp     x2, x3, [sp, #16 * 1]
    ldp     x4, x5, [sp, #16 * 2]
    ldp     x6, x7, [sp, #16 * 3]
    ldp     x8, x9, [sp, #16 * 4]
    ldp     x10, x11, [sp, #16 * 5]
    ldp     x12, x13, [sp, #16 * 6]
    ldp     x14, x15, [sp, #16 * 7]
    ldp     x16, x17, [sp, #16 * 8]
    ldp     x18, x19, [sp, #16 * 9]
    ldp     x20, x21, [sp, #16 * 10]
    ldp     x22, x23, [sp, #16 * 11]
    ldp     x24, x25, [sp, #16 * 12]
    ldp     x26, x27, [sp, #16 * 13]
    ldp     x28, x29, [sp, #16 * 14]
    add     sp, sp, #{frame_size}
    eret
    "#,
    frame_size = const core::mem::size_of::<TrapFrame>(),
);

/// The registers saved on exception entry. Handlers may change them; they
/// are restored on return.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    /// x0 to x30.
    pub x: [u64; 31],
    /// ELR_EL1: where execution resumes.
    pub elr: u64,
    /// SPSR_EL1: the interrupted PSTATE.
    pub spsr: u64,
    /// Padding that keeps the frame a multiple of 16 bytes (SP alignment).
    _padding: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 34 * 8);

impl TrapFrame {
    /// Resumes after the instruction that took the exception (ELR + 4).
    pub fn skip_instruction(&mut self) {
        self.elr = self.elr.wrapping_add(4);
    }

    /// Resumes at `address`.
    pub fn resume_at(&mut self, address: u64) {
        self.elr = address;
    }
}

/// The kind of exception vector `index` (0..=15) takes.
pub fn vector_kind(index: usize) -> VectorKind {
    match index % 4 {
        0 => VectorKind::Synchronous,
        1 => VectorKind::Irq,
        2 => VectorKind::Fiq,
        _ => VectorKind::SError,
    }
}

/// The syndrome of the exception being handled: ESR_EL1 and FAR_EL1.
pub fn read_fault(_index: usize, frame: &TrapFrame) -> Fault {
    Fault {
        esr: ESR_EL1.get(),
        far: FAR_EL1.get(),
        elr: frame.elr,
    }
}

/// Register names for [`Fault`]'s `Display`: syndrome, fault address, return address.
pub fn register_names(_fault: &Fault) -> (&'static str, &'static str, &'static str) {
    ("ESR_EL1", "FAR_EL1", "ELR_EL1")
}

/// Prints the saved registers, as lines starting with `rt:`.
pub fn dump(frame: &TrapFrame) {
    crate::println!("rt:   SPSR_EL1 {:#x}", frame.spsr);
    for row in 0..8 {
        let first = row * 4;
        crate::print!("rt:  ");
        for register in first..(first + 4).min(31) {
            crate::print!(" x{:<2} {:#018x}", register, frame.x[register]);
        }
        crate::println!();
    }
}
