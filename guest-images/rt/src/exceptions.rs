//! Exception dispatch, the fault syndrome, and hooks for aborts and IRQs.
//!
//! Every vector (`arch::*::vectors`) saves the general-purpose registers and
//! the return state in a [`TrapFrame`] on the current stack and calls
//! `_rt_exception`. IRQs are
//! acknowledged at the GIC, passed to the registered [`IrqHandler`] and ended.
//! Synchronous exceptions go to the registered [`SyncHandler`] if there is
//! one; anything nobody handles is reported (ESR decoded, FAR, ELR,
//! registers) and the CPU parks.

use core::fmt;

use crate::arch::vectors;
pub use crate::arch::vectors::TrapFrame;
use crate::shared::Shared;

/// What kind of exception was taken.
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

/// A decoded synchronous exception: the syndrome and fault address.
///
/// On AArch64 `esr` is ESR_EL1 and `far` FAR_EL1. On AArch32, which has no
/// ESR, `esr` is the same syndrome in the ESR (and HSR) layout, built from
/// the vector taken and DFSR or IFSR: EC 0x00 for UNDEFINED, 0x11 for SVC,
/// 0x21 for a prefetch abort, 0x25 for a data abort, with the fault status
/// normalised to the long-descriptor (AArch64 FSC) codes and WnR from DFSR;
/// `far` is DFAR or IFAR. So guests test faults the same way on both.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    /// ESR_EL1, or on AArch32 the syndrome in ESR layout.
    pub esr: u64,
    /// FAR_EL1, or DFAR/IFAR on AArch32 (meaningful for aborts only).
    pub far: u64,
    /// ELR_EL1, or on AArch32 the address of the instruction that took the
    /// exception (the vectors take the mode's LR offset off).
    pub elr: u64,
}

/// Exception classes (ESR_ELx.EC, Arm ARM D23.2.41) this runtime names.
pub mod exception_class {
    /// Unknown reason (for example an UNDEFINED instruction).
    pub const UNKNOWN: u64 = 0x00;
    /// SVC in AArch32.
    pub const SVC32: u64 = 0x11;
    /// HVC in AArch32.
    pub const HVC32: u64 = 0x12;
    /// SMC in AArch32.
    pub const SMC32: u64 = 0x13;
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
        ec::SVC32 => "SVC (AArch32)",
        ec::HVC32 => "HVC (AArch32)",
        ec::SMC32 => "SMC (AArch32)",
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
        let (syndrome, far, elr) = vectors::register_names(self);
        write!(
            formatter,
            "{} {:#010x} (EC {:#04x}: {}, IL {}, ISS {:#x})",
            syndrome,
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
            ", {} {:#x}, {} {:#x}",
            far, self.far, elr, self.elr
        )
    }
}

/// What a [`SyncHandler`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Resume after the faulting instruction (ELR += 4; A32 instructions
    /// are 4 bytes too).
    Skip,
    /// Resume at the faulting instruction again (it will fault again unless
    /// the handler changed something).
    Retry,
    /// Resume at the given address (the handler also set any registers).
    ResumeAt(u64),
    /// Not handled: the runtime reports the exception and parks the CPU.
    Unhandled,
}

/// A handler for synchronous exceptions at EL1 (AArch32: in SVC mode or
/// from the abort and undefined modes' vectors), on any CPU.
pub type SyncHandler = fn(&mut TrapFrame, &Fault) -> Resolution;
/// A handler for an acknowledged interrupt: `(intid, cpu index)`. The runtime
/// signals end of interrupt after it returns.
pub type IrqHandler = fn(u32, usize);

static SYNC_HANDLER: Shared<Option<SyncHandler>> = Shared::new(None);
/// The vector the last exception on any CPU came through: on AArch64 its
/// index 0..=15 (8..=11 from a lower EL in AArch64, 12..=15 from AArch32);
/// on AArch32 its offset / 4 (1 undefined, 2 SVC, 3 prefetch abort, 4 data
/// abort, 6 IRQ, 7 FIQ).
static LAST_VECTOR: Shared<u64> = Shared::new(0);

/// The index of the vector the most recent exception was taken through (see
/// `LAST_VECTOR`), for handlers that care where it came from (on AArch64 a
/// lower EL using AArch32 enters at offset 0x600, index 12).
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

/// Unmasks IRQs on this CPU (PSTATE.I = 0, or CPSR.I on AArch32).
pub fn unmask_irqs() {
    crate::arch::unmask_irqs();
}

/// Masks IRQs on this CPU (PSTATE.I = 1, or CPSR.I on AArch32).
pub fn mask_irqs() {
    crate::arch::mask_irqs();
}

/// Runs `action` with every interrupt masked (AArch64: DAIF all set;
/// AArch32: CPSR.I, F and A), then restores the masks as they were.
pub fn with_irqs_masked<R>(action: impl FnOnce() -> R) -> R {
    let saved = crate::arch::save_and_mask_irqs();
    let result = action();
    crate::arch::restore_irqs(saved);
    result
}

/// Waits for an interrupt without losing one that arrives just before: masks
/// IRQs, lets `keep_waiting` decide with IRQs masked, and only then sleeps
/// (WFI wakes on a pending interrupt even while masked). Returns with IRQs
/// unmasked, after any pending IRQ has been taken.
pub fn wait_for_interrupt_if(keep_waiting: impl FnOnce() -> bool) {
    mask_irqs();
    if keep_waiting() {
        crate::arch::wfi();
    }
    unmask_irqs();
    crate::arch::isb_sy();
}

/// Prints the standard report for an exception nobody handled.
pub fn report(frame: &TrapFrame, kind: VectorKind, fault: &Fault) {
    let cpu = crate::cpu_index();
    crate::println!("rt: unhandled {:?} exception on cpu {}", kind, cpu);
    crate::println!("rt:   {}", fault);
    vectors::dump(frame);
}

/// Rust side of every vector: `frame` is the saved context on this stack.
#[no_mangle]
extern "C" fn _rt_exception(frame: &mut TrapFrame, index: usize) {
    LAST_VECTOR.set(index as u64);
    let kind = vectors::vector_kind(index);
    match kind {
        VectorKind::Irq => handle_irq(),
        VectorKind::Synchronous => {
            let fault = vectors::read_fault(index, frame);
            let resolution = match SYNC_HANDLER.get() {
                Some(handler) => handler(frame, &fault),
                None => Resolution::Unhandled,
            };
            match resolution {
                Resolution::Skip => frame.skip_instruction(),
                Resolution::Retry => {}
                Resolution::ResumeAt(address) => frame.resume_at(address),
                Resolution::Unhandled => {
                    report(frame, kind, &fault);
                    crate::halt()
                }
            }
        }
        VectorKind::Fiq | VectorKind::SError => {
            let fault = vectors::read_fault(index, frame);
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

/// One 32-bit load from `address` as a single 4-byte instruction, for
/// probing addresses that may abort; returns `if_skipped` if the registered
/// [`SyncHandler`] answered [`Resolution::Skip`].
///
/// # Safety
///
/// No Rust object that is being written may live at `address`, and if the
/// load can abort, a handler that skips it must be registered.
pub unsafe fn load_u32_skippable(address: usize, if_skipped: u32) -> u32 {
    // SAFETY: the caller's guarantees are the callee's.
    unsafe { crate::arch::load_u32_skippable(address, if_skipped) }
}

/// One 32-bit store of zero to `address` as a single 4-byte instruction.
///
/// # Safety
///
/// No Rust object may live at `address`, and if the store can abort, a
/// handler that skips it must be registered.
pub unsafe fn store_zero_u32_skippable(address: usize) {
    // SAFETY: the caller's guarantees are the callee's.
    unsafe { crate::arch::store_zero_u32_skippable(address) }
}
