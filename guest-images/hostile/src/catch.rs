//! Catching the synchronous exceptions a case provokes at EL1.
//!
//! The handler records the syndrome, the fault address, the return address
//! and the vector, counts the exception and resumes after the instruction
//! (or where [`resume_at`] said). Exceptions from EL0 go to [`crate::el0`].

use chroma_guest_rt::exceptions::{self, Fault, Resolution, TrapFrame};
use chroma_guest_rt::shared::Shared;

/// Exceptions caught since the last [`reset`].
static COUNT: Shared<u64> = Shared::new(0);
/// The last one's ESR_EL1, FAR_EL1, ELR_EL1 and vector index.
static ESR: Shared<u64> = Shared::new(0);
static FAR: Shared<u64> = Shared::new(0);
static ELR: Shared<u64> = Shared::new(0);
static VECTOR: Shared<u64> = Shared::new(0);
/// Where the next caught exception resumes (0: after the instruction).
static RESUME: Shared<u64> = Shared::new(0);
/// Set in the bystander: every exception is unexpected, and one from a
/// debug event must not fire again.
static BYSTANDER: Shared<bool> = Shared::new(false);

/// Exception classes (ESR_ELx.EC) the cases look for.
pub mod class {
    /// Unknown reason: an UNDEFINED instruction.
    pub const UNDEFINED: u64 = 0x00;
    /// SVC from AArch32.
    pub const SVC32: u64 = 0x11;
    /// SVC from AArch64.
    pub const SVC64: u64 = 0x15;
    /// Instruction abort from a lower EL.
    pub const INSTRUCTION_ABORT_LOWER: u64 = 0x20;
    /// Instruction abort at EL1.
    pub const INSTRUCTION_ABORT_SAME: u64 = 0x21;
    /// Data abort from a lower EL.
    pub const DATA_ABORT_LOWER: u64 = 0x24;
    /// Data abort at EL1.
    pub const DATA_ABORT_SAME: u64 = 0x25;
    /// Breakpoint at EL1.
    pub const BREAKPOINT_SAME: u64 = 0x31;
    /// Watchpoint at EL1.
    pub const WATCHPOINT_SAME: u64 = 0x35;
}

/// The fault status code of a synchronous external abort.
pub const FSC_EXTERNAL_ABORT: u64 = 0x10;

/// One caught exception.
#[derive(Clone, Copy)]
pub struct Caught {
    /// ESR_EL1.
    pub esr: u64,
    /// FAR_EL1.
    pub far: u64,
    /// ELR_EL1 when it was taken.
    pub elr: u64,
    /// The vector index (0..=15).
    #[allow(dead_code)] // Printed when debugging a case.
    pub vector: u64,
}

impl Caught {
    /// ESR.EC.
    pub fn class(&self) -> u64 {
        (self.esr >> 26) & 0x3f
    }

    /// ESR.ISS's fault status code (aborts).
    pub fn status(&self) -> u64 {
        self.esr & 0x3f
    }

    /// Whether this is a synchronous external abort of class `class`.
    pub fn is_external_abort(&self, class: u64) -> bool {
        self.class() == class && self.status() == FSC_EXTERNAL_ABORT
    }
}

/// Installs the handler (once, at boot).
pub fn install() {
    exceptions::set_sync_handler(Some(handle));
}

/// Forgets what was caught.
pub fn reset() {
    COUNT.set(0);
    RESUME.set(0);
}

/// Exceptions caught since [`reset`].
pub fn count() -> u64 {
    COUNT.get()
}

/// The last exception caught, if any since [`reset`].
pub fn last() -> Option<Caught> {
    (COUNT.get() > 0).then(|| Caught {
        esr: ESR.get(),
        far: FAR.get(),
        elr: ELR.get(),
        vector: VECTOR.get(),
    })
}

/// Makes the next caught exception resume at `address` (for a branch into
/// nowhere, where "after the instruction" means nothing).
pub fn resume_at(address: u64) {
    RESUME.set(address);
}

/// Marks this guest as the bystander (see [`BYSTANDER`]).
pub fn be_bystander() {
    BYSTANDER.set(true);
}

/// Runs `f` and returns what it returned with the exceptions it caused.
pub fn catching<R>(f: impl FnOnce() -> R) -> (R, u64, Option<Caught>) {
    reset();
    let result = f();
    let caught = count();
    let last = last();
    reset();
    (result, caught, last)
}

/// Runs `f`, which must raise exactly one UNDEFINED exception per
/// `expected`; `Err` names what happened instead.
pub fn expect_undefined(what: &'static str, expected: u64, f: impl FnOnce()) -> crate::Outcome {
    let ((), caught, last) = catching(f);
    let class = last.map_or(u64::MAX, |last| last.class());
    if caught != expected {
        return crate::fail(what, caught, expected);
    }
    if expected > 0 && class != class::UNDEFINED {
        return crate::fail(what, class, class::UNDEFINED);
    }
    crate::ok_with("undefined", caught)
}

fn handle(frame: &mut TrapFrame, fault: &Fault) -> Resolution {
    let vector = exceptions::last_vector();
    if vector >= 8 {
        return crate::el0::exception(frame, fault, vector);
    }
    ESR.set(fault.esr);
    FAR.set(fault.far);
    ELR.set(fault.elr);
    VECTOR.set(vector);
    COUNT.set(COUNT.get().wrapping_add(1));
    let class = fault.exception_class();
    if BYSTANDER.get() {
        crate::bystander::unexpected_exception();
        if (0x30..=0x35).contains(&class) {
            // A debug event someone else armed: mask debug exceptions
            // (SPSR.D) and run the instruction again, untouched.
            frame.spsr |= 1 << 9;
            return Resolution::Retry;
        }
    }
    // A breakpoint or watchpoint of the attacker's own: disarm by masking
    // debug exceptions where it returns, and run the instruction.
    if (0x30..=0x35).contains(&class) {
        frame.spsr |= 1 << 9;
        return Resolution::Retry;
    }
    let resume = RESUME.get();
    if resume != 0 {
        RESUME.set(0);
        return Resolution::ResumeAt(resume);
    }
    Resolution::Skip
}
