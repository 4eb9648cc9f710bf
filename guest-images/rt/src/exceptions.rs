//! The EL1 vector table, the trap frame, and hooks for aborts and IRQs.
//!
//! Every vector saves the general-purpose registers, ELR_EL1 and SPSR_EL1 in
//! a [`TrapFrame`] on the current stack and calls `_rt_exception`. IRQs are
//! acknowledged at the GIC, passed to the registered [`IrqHandler`] and ended.
//! Synchronous exceptions go to the registered [`SyncHandler`] if there is
//! one; anything nobody handles is reported (ESR decoded, FAR, ELR,
//! registers) and the CPU parks.

use core::arch::global_asm;
use core::fmt;

use aarch64_cpu::registers::{Readable, ESR_EL1, FAR_EL1};

use crate::shared::Shared;

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

/// Which of the 16 vectors was taken (index into the vector table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VectorKind {
    /// Synchronous exception.
    Synchronous,
    /// IRQ.
    Irq,
    /// FIQ.
    Fiq,
    /// SError (asynchronous abort).
    SError,
}

impl VectorKind {
    fn from_index(index: u64) -> Self {
        match index % 4 {
            0 => Self::Synchronous,
            1 => Self::Irq,
            2 => Self::Fiq,
            _ => Self::SError,
        }
    }
}

/// A decoded synchronous exception: the syndrome and fault address.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    /// ESR_EL1.
    pub esr: u64,
    /// FAR_EL1 (meaningful for aborts only).
    pub far: u64,
    /// ELR_EL1: the faulting instruction.
    pub elr: u64,
}

/// Exception classes (ESR_ELx.EC, Arm ARM D23.2.41) this runtime names.
pub mod exception_class {
    /// Unknown reason (for example an UNDEFINED instruction).
    pub const UNKNOWN: u64 = 0x00;
    /// SVC in AArch64.
    pub const SVC64: u64 = 0x15;
    /// HVC in AArch64 (only taken at EL2; seen here if HVC is UNDEFINED it is EC 0).
    pub const HVC64: u64 = 0x16;
    /// SMC in AArch64.
    pub const SMC64: u64 = 0x17;
    /// Instruction abort from a lower exception level.
    pub const INSTRUCTION_ABORT_LOWER: u64 = 0x20;
    /// Instruction abort without a change in exception level.
    pub const INSTRUCTION_ABORT_SAME: u64 = 0x21;
    /// PC alignment fault.
    pub const PC_ALIGNMENT: u64 = 0x22;
    /// Data abort from a lower exception level.
    pub const DATA_ABORT_LOWER: u64 = 0x24;
    /// Data abort without a change in exception level.
    pub const DATA_ABORT_SAME: u64 = 0x25;
    /// SP alignment fault.
    pub const SP_ALIGNMENT: u64 = 0x26;
    /// SError interrupt.
    pub const SERROR: u64 = 0x2f;
    /// BRK in AArch64.
    pub const BRK64: u64 = 0x3c;
}

/// Fault status code (ISS.DFSC / IFSC) of a synchronous external abort that
/// is not on a translation table walk.
pub const FSC_SYNCHRONOUS_EXTERNAL_ABORT: u64 = 0x10;

impl Fault {
    /// ESR.EC, the exception class.
    pub fn exception_class(&self) -> u64 {
        (self.esr >> 26) & 0x3f
    }

    /// ESR.ISS, the instruction-specific syndrome.
    pub fn iss(&self) -> u64 {
        self.esr & 0x01ff_ffff
    }

    /// ESR.IL: 1 if the trapped instruction was 32 bits wide.
    pub fn instruction_length_is_32(&self) -> bool {
        (self.esr >> 25) & 1 == 1
    }

    /// True for an instruction or data abort taken from EL1 itself.
    pub fn is_abort(&self) -> bool {
        matches!(
            self.exception_class(),
            exception_class::DATA_ABORT_SAME | exception_class::INSTRUCTION_ABORT_SAME
        )
    }

    /// The abort's fault status code (DFSC or IFSC), for aborts.
    pub fn fault_status(&self) -> Option<u64> {
        self.is_abort().then_some(self.iss() & 0x3f)
    }

    /// True for a synchronous external abort (data or instruction side): what
    /// a hypervisor injects for an IPA that is neither RAM nor a device.
    pub fn is_synchronous_external_abort(&self) -> bool {
        self.fault_status() == Some(FSC_SYNCHRONOUS_EXTERNAL_ABORT)
    }

    /// For a data abort: whether it was a write (ISS.WnR).
    pub fn is_write(&self) -> bool {
        self.exception_class() == exception_class::DATA_ABORT_SAME && (self.iss() >> 6) & 1 == 1
    }
}

/// A readable name for an exception class.
pub fn exception_class_name(class: u64) -> &'static str {
    use exception_class as ec;
    match class {
        ec::UNKNOWN => "unknown reason / UNDEFINED instruction",
        ec::SVC64 => "SVC (AArch64)",
        ec::HVC64 => "HVC (AArch64)",
        ec::SMC64 => "SMC (AArch64)",
        ec::INSTRUCTION_ABORT_LOWER => "instruction abort, lower EL",
        ec::INSTRUCTION_ABORT_SAME => "instruction abort, same EL",
        ec::PC_ALIGNMENT => "PC alignment fault",
        ec::DATA_ABORT_LOWER => "data abort, lower EL",
        ec::DATA_ABORT_SAME => "data abort, same EL",
        ec::SP_ALIGNMENT => "SP alignment fault",
        ec::SERROR => "SError",
        ec::BRK64 => "BRK (AArch64)",
        0x01 => "WFI/WFE",
        0x07 => "FP/SIMD access trapped",
        0x0e => "illegal execution state",
        0x18 => "MSR/MRS/system instruction trapped",
        _ => "other",
    }
}

/// A readable name for an abort's fault status code.
pub fn fault_status_name(status: u64) -> &'static str {
    match status {
        0x00..=0x03 => "address size fault",
        0x04..=0x07 => "translation fault",
        0x09..=0x0b => "access flag fault",
        0x0d..=0x0f => "permission fault",
        FSC_SYNCHRONOUS_EXTERNAL_ABORT => "synchronous external abort",
        0x11 => "synchronous tag check fault",
        0x14..=0x17 => "synchronous external abort on table walk",
        0x21 => "alignment fault",
        0x30 => "TLB conflict abort",
        _ => "other fault",
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let class = self.exception_class();
        write!(
            formatter,
            "ESR_EL1 {:#010x} (EC {:#04x}: {}, IL {}, ISS {:#x})",
            self.esr,
            class,
            exception_class_name(class),
            u8::from(self.instruction_length_is_32()),
            self.iss()
        )?;
        if let Some(status) = self.fault_status() {
            write!(
                formatter,
                ", FSC {:#04x}: {}{}",
                status,
                fault_status_name(status),
                if self.is_write() { ", write" } else { "" }
            )?;
        }
        write!(
            formatter,
            ", FAR_EL1 {:#x}, ELR_EL1 {:#x}",
            self.far, self.elr
        )
    }
}

/// What a [`SyncHandler`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Resume after the faulting instruction (ELR += 4).
    Skip,
    /// Resume at the faulting instruction again (it will fault again unless
    /// the handler changed something).
    Retry,
    /// Resume at the given address (the handler also set any registers).
    ResumeAt(u64),
    /// Not handled: the runtime reports the exception and parks the CPU.
    Unhandled,
}

/// A handler for synchronous exceptions at EL1, on any CPU.
pub type SyncHandler = fn(&mut TrapFrame, &Fault) -> Resolution;
/// A handler for an acknowledged interrupt: `(intid, cpu index)`. The runtime
/// signals end of interrupt after it returns.
pub type IrqHandler = fn(u32, usize);

static SYNC_HANDLER: Shared<Option<SyncHandler>> = Shared::new(None);
/// The vector (0..=15, see the table) the last exception on any CPU came
/// through: 8..=11 from a lower EL in AArch64, 12..=15 from AArch32.
static LAST_VECTOR: Shared<u64> = Shared::new(0);

/// The index (0..=15) of the vector the most recent exception was taken
/// through, for handlers that care where it came from (a lower EL using
/// AArch32 enters at offset 0x600, index 12).
pub fn last_vector() -> u64 {
    LAST_VECTOR.get()
}
static IRQ_HANDLER: Shared<Option<IrqHandler>> = Shared::new(None);

/// Registers (or with `None` removes) the handler for synchronous exceptions.
pub fn set_sync_handler(handler: Option<SyncHandler>) {
    SYNC_HANDLER.set(handler);
    crate::shared::publish();
}

/// Registers (or with `None` removes) the handler for IRQs.
pub fn set_irq_handler(handler: Option<IrqHandler>) {
    IRQ_HANDLER.set(handler);
    crate::shared::publish();
}

/// Unmasks IRQs on this CPU (PSTATE.I = 0).
pub fn unmask_irqs() {
    use aarch64_cpu::registers::{Writeable, DAIF};
    DAIF.write(DAIF::I::Unmasked + DAIF::F::Masked + DAIF::A::Masked + DAIF::D::Masked);
}

/// Masks IRQs on this CPU (PSTATE.I = 1).
pub fn mask_irqs() {
    use aarch64_cpu::registers::{Writeable, DAIF};
    DAIF.write(DAIF::I::Masked + DAIF::F::Masked + DAIF::A::Masked + DAIF::D::Masked);
}

/// Waits for an interrupt without losing one that arrives just before: masks
/// IRQs, lets `keep_waiting` decide with IRQs masked, and only then sleeps
/// (WFI wakes on a pending interrupt even while masked). Returns with IRQs
/// unmasked, after any pending IRQ has been taken.
pub fn wait_for_interrupt_if(keep_waiting: impl FnOnce() -> bool) {
    mask_irqs();
    if keep_waiting() {
        aarch64_cpu::asm::wfi();
    }
    unmask_irqs();
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Prints the standard report for an exception nobody handled.
pub fn report(frame: &TrapFrame, kind: VectorKind, fault: &Fault) {
    let cpu = crate::cpu_index();
    crate::println!("rt: unhandled {:?} exception on cpu {}", kind, cpu);
    crate::println!("rt:   {}", fault);
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

/// Rust side of every vector: `frame` is the saved context on this stack.
#[no_mangle]
extern "C" fn _rt_exception(frame: &mut TrapFrame, index: u64) {
    LAST_VECTOR.set(index);
    let kind = VectorKind::from_index(index);
    match kind {
        VectorKind::Irq => handle_irq(),
        VectorKind::Synchronous => {
            let fault = Fault {
                esr: ESR_EL1.get(),
                far: FAR_EL1.get(),
                elr: frame.elr,
            };
            let resolution = match SYNC_HANDLER.get() {
                Some(handler) => handler(frame, &fault),
                None => Resolution::Unhandled,
            };
            match resolution {
                Resolution::Skip => frame.elr = frame.elr.wrapping_add(4),
                Resolution::Retry => {}
                Resolution::ResumeAt(address) => frame.elr = address,
                Resolution::Unhandled => {
                    report(frame, kind, &fault);
                    crate::halt()
                }
            }
        }
        VectorKind::Fiq | VectorKind::SError => {
            let fault = Fault {
                esr: ESR_EL1.get(),
                far: FAR_EL1.get(),
                elr: frame.elr,
            };
            report(frame, kind, &fault);
            crate::halt()
        }
    }
}

fn handle_irq() {
    let Some(gic) = crate::boot::boot().and_then(|boot| boot.platform.gic) else {
        crate::println!("rt: IRQ without a GIC on cpu {}", crate::cpu_index());
        crate::halt()
    };
    let Some(intid) = gic.acknowledge() else {
        return; // Spurious: nothing to end.
    };
    match IRQ_HANDLER.get() {
        Some(handler) => handler(intid, crate::cpu_index()),
        None => crate::println!("rt: unexpected IRQ {} on cpu {}", intid, crate::cpu_index()),
    }
    gic.end_of_interrupt(intid);
}
