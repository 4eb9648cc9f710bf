//! The AArch32 vector table (VBAR) and the trap frame.
//!
//! Every vector first switches to SVC mode, as Linux's vector stubs do: it
//! adjusts the mode's LR to the address of the instruction that took the
//! exception (or, for IRQ and FIQ, the one to resume), pushes that and the
//! SPSR onto the SVC stack (`srsdb`), changes to SVC mode (`cps`) and saves
//! r0..r12 and the SVC LR there. So handlers run on the interrupted SVC
//! stack (a guest's own main stack too), and the banked IRQ, abort and
//! undefined stack pointers are never used. `_rt_exception(frame, index)`
//! (exceptions.rs) gets the vector's offset / 4; `rfeia` returns.

use core::arch::global_asm;

use crate::exceptions::{exception_class, Fault, VectorKind, FSC_SYNCHRONOUS_EXTERNAL_ABORT};

/// Vector indices (offset / 4).
const UNDEFINED: usize = 1;
const SVC: usize = 2;
const PREFETCH_ABORT: usize = 3;
const DATA_ABORT: usize = 4;
const IRQ: usize = 6;
const FIQ: usize = 7;

// LR offsets (Arm ARM B1.8.3, A32 state): undefined and SVC LR = instruction
// + 4, prefetch abort + 4, data abort + 8, IRQ and FIQ = resume address + 4.
global_asm!(
    r#"
    .macro RT_VECTOR name, lr_offset, index
\name:
    sub     lr, lr, #\lr_offset
    srsdb   sp!, #0x13
    cps     #0x13
    push    {{r0-r12, lr}}
    mov     r1, #\index
    b       _rt_exception_common
    .endm

    .section .text.vectors, "ax"
    .arm
    .balign 32
    .global _rt_vectors
_rt_vectors:
    b       _rt_vector_reset
    b       _rt_vector_undefined
    b       _rt_vector_svc
    b       _rt_vector_prefetch_abort
    b       _rt_vector_data_abort
    b       _rt_vector_reserved
    b       _rt_vector_irq
    b       _rt_vector_fiq

    RT_VECTOR _rt_vector_reset, 0, 0
    RT_VECTOR _rt_vector_undefined, 4, 1
    RT_VECTOR _rt_vector_svc, 4, 2
    RT_VECTOR _rt_vector_prefetch_abort, 4, 3
    RT_VECTOR _rt_vector_data_abort, 8, 4
    RT_VECTOR _rt_vector_reserved, 0, 5
    RT_VECTOR _rt_vector_irq, 4, 6
    RT_VECTOR _rt_vector_fiq, 4, 7

    // r1 = index; the frame is at sp. The interrupted code's SP may be only
    // 4-byte aligned; AAPCS wants 8 at calls, so r4 (saved in the frame,
    // callee-saved across the call) remembers the adjustment.
_rt_exception_common:
    mov     r0, sp
    and     r4, sp, #4
    sub     sp, sp, r4
    bl      _rt_exception
    add     sp, sp, r4
    pop     {{r0-r12, lr}}
    rfeia   sp!
    "#
);

/// The registers saved on exception entry. Handlers may change them; they
/// are restored on return.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    /// r0 to r12.
    pub r: [u32; 13],
    /// The SVC-mode LR (for an SVC taken in SVC mode, its return address).
    pub lr: u32,
    /// Where execution resumes: the instruction that took a synchronous
    /// exception, or the one an interrupt came before (`elr` to match the
    /// AArch64 name).
    pub elr: u32,
    /// The SPSR: the interrupted CPSR.
    pub spsr: u32,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 16 * 4);

impl TrapFrame {
    /// Resumes after the instruction that took the exception (PC + 4: A32).
    pub fn skip_instruction(&mut self) {
        self.elr = self.elr.wrapping_add(4);
    }

    /// Resumes at `address` (an A32 address, below 4 GiB).
    pub fn resume_at(&mut self, address: u64) {
        self.elr = u32::try_from(address).unwrap_or(u32::MAX);
    }
}

/// The kind of exception vector `index` takes.
pub fn vector_kind(index: usize) -> VectorKind {
    match index {
        IRQ => VectorKind::Irq,
        FIQ => VectorKind::Fiq,
        _ => VectorKind::Synchronous,
    }
}

/// DFSR, DFAR, IFSR, IFAR, raw.
fn fault_registers() -> [u32; 4] {
    use aarch32_cpu::register::{Dfar, Dfsr, Ifar, Ifsr};
    [
        Dfsr::read().raw_value(),
        Dfar::read().0,
        Ifsr::read().raw_value(),
        Ifar::read().0,
    ]
}

/// A DFSR or IFSR fault status as the long-descriptor (and AArch64 FSC) code.
///
/// FSR bit 9 says which format the register uses (TTBCR.EAE, or a
/// hypervisor's choice when it injects an abort). Short-descriptor codes
/// without a long-descriptor equivalent (domain faults, asynchronous
/// aborts, cache maintenance faults) become 0x3f, "other fault".
fn fault_status_code(fsr: u32) -> u64 {
    const LPAE: u32 = 1 << 9;
    if fsr & LPAE != 0 {
        return u64::from(fsr & 0x3f);
    }
    let status = ((fsr >> 6) & 0x10) | (fsr & 0xf);
    match status {
        0b00001 => 0x21,                           // alignment fault
        0b00010 => 0x22,                           // debug event
        0b00011 => 0x09,                           // access flag, section
        0b00110 => 0x0a,                           // access flag, page
        0b00101 => 0x05,                           // translation, section
        0b00111 => 0x06,                           // translation, page
        0b01101 => 0x0d,                           // permission, section
        0b01111 => 0x0e,                           // permission, page
        0b01000 => FSC_SYNCHRONOUS_EXTERNAL_ABORT, // synchronous external abort
        0b01100 => 0x15,                           // external abort on walk, level 1
        0b01110 => 0x16,                           // external abort on walk, level 2
        0b11001 => 0x18,                           // synchronous parity error
        _ => 0x3f,
    }
}

/// The syndrome of the exception being handled, in ESR layout (see [`Fault`]).
pub fn read_fault(index: usize, frame: &TrapFrame) -> Fault {
    const IL: u64 = 1 << 25;
    const WNR: u32 = 1 << 11;
    let [dfsr, dfar, ifsr, ifar] = fault_registers();
    let (class, iss, far) = match index {
        UNDEFINED => (exception_class::UNKNOWN, 0, 0),
        SVC => (exception_class::SVC32, 0, 0),
        PREFETCH_ABORT => (
            exception_class::INSTRUCTION_ABORT_SAME,
            fault_status_code(ifsr),
            ifar,
        ),
        DATA_ABORT => {
            let write = if dfsr & WNR != 0 { 1 << 6 } else { 0 };
            (
                exception_class::DATA_ABORT_SAME,
                fault_status_code(dfsr) | write,
                dfar,
            )
        }
        _ => (exception_class::UNKNOWN, 0, 0),
    };
    Fault {
        esr: (class << 26) | IL | iss,
        far: u64::from(far),
        elr: u64::from(frame.elr),
    }
}

/// Register names for [`Fault`]'s `Display`: syndrome, fault address, return address.
pub fn register_names(fault: &Fault) -> (&'static str, &'static str, &'static str) {
    let far = if fault.exception_class() == exception_class::INSTRUCTION_ABORT_SAME {
        "IFAR"
    } else {
        "DFAR"
    };
    ("syndrome", far, "PC")
}

/// The name of a CPSR mode field.
fn mode_name(cpsr: u32) -> &'static str {
    match cpsr & 0x1f {
        0x10 => "usr",
        0x11 => "fiq",
        0x12 => "irq",
        0x13 => "svc",
        0x16 => "mon",
        0x17 => "abt",
        0x1a => "hyp",
        0x1b => "und",
        0x1f => "sys",
        _ => "?",
    }
}

/// Prints the saved registers and the raw fault registers, as lines
/// starting with `rt:`.
pub fn dump(frame: &TrapFrame) {
    let [dfsr, dfar, ifsr, ifar] = fault_registers();
    crate::println!(
        "rt:   DFSR {:#010x} DFAR {:#010x} IFSR {:#010x} IFAR {:#010x}",
        dfsr,
        dfar,
        ifsr,
        ifar
    );
    crate::println!(
        "rt:   SPSR {:#010x} (mode {}), LR {:#010x}, PC {:#010x}",
        frame.spsr,
        mode_name(frame.spsr),
        frame.lr,
        frame.elr
    );
    for row in 0..4 {
        let first = row * 4;
        crate::print!("rt:  ");
        for register in first..(first + 4).min(13) {
            crate::print!(" r{:<2} {:#010x}", register, frame.r[register]);
        }
        crate::println!();
    }
}
