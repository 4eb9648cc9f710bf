//! Why a vCPU stopped running guest code, in architecture-neutral terms.
//!
//! The back-end decodes its syndrome register (ESR_EL2, HSR) into an
//! [`Exit`]; the core dispatches on it.
// Guest input is parsed here: an index or slice must not panic (issue 10).
#![deny(clippy::indexing_slicing)]

use crate::GuestPhysAddr;

/// Width of an emulated memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessWidth {
    /// 8 bits.
    Byte,
    /// 16 bits.
    Half,
    /// 32 bits.
    Word,
    /// 64 bits.
    Double,
}

impl AccessWidth {
    /// Size in bytes, as a byte count.
    pub const fn byte_count(self) -> u8 {
        match self {
            AccessWidth::Byte => 1,
            AccessWidth::Half => 2,
            AccessWidth::Word => 4,
            AccessWidth::Double => 8,
        }
    }

    /// Size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            AccessWidth::Byte => 1,
            AccessWidth::Half => 2,
            AccessWidth::Word => 4,
            AccessWidth::Double => 8,
        }
    }
}

/// A guest load or store that missed stage-2 and carries a valid syndrome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioAccess {
    /// The faulting guest-physical address.
    pub ipa: GuestPhysAddr,
    /// Access width.
    pub width: AccessWidth,
    /// True for a store.
    pub write: bool,
    /// The general-purpose register transferred (31 = zero register).
    pub register: u8,
    /// A load sign-extends into the register.
    pub sign_extend: bool,
    /// The register is 64-bit wide (else 32-bit: the upper half is cleared).
    pub register_64bit: bool,
    /// The base register update of an AArch32 load or store with writeback
    /// (the syndrome gives none: the back-end decoded the instruction).
    pub writeback: Option<Writeback>,
}

/// A base register update: `register` becomes `value` once the access is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Writeback {
    /// The base register (the architecture's number, as `MmioAccess::register`).
    pub register: u8,
    /// Its new value.
    pub value: u64,
}

/// A trapped system register (or system instruction, such as a cache
/// maintenance instruction), as the back-end recognised it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrappedRegister {
    /// The GICv3 SGI generation register (ICC_SGI1R_EL1; AArch32 ICC_SGI1R).
    GicSgi1r,
    /// A debug, OS-lock or debug-ROM register: per physical CPU, so it
    /// traps and reads as zero, ignoring writes.
    Debug,
    /// A performance-monitor register: likewise.
    PerformanceMonitor,
    /// The auxiliary control register (ACTLR_EL1): IMPLEMENTATION DEFINED
    /// controls that may be global to the physical CPU, so it traps and
    /// reads as zero, ignoring writes.
    AuxiliaryControl,
    /// A register or system instruction in the encoding space reserved for
    /// IMPLEMENTATION DEFINED functionality: it may reach state shared by
    /// every VM on the physical CPU (or the whole cluster), so the guest
    /// gets UNDEFINED, as on a CPU that does not implement it.
    ImplementationDefined,
    /// A data cache maintenance instruction by set/way (the operand, in the
    /// value register, names a cache level, set and way of the physical
    /// CPU's caches). The hypervisor performs it as a clean and invalidate.
    DataCacheSetWay(SetWayOperation),
    /// Any other register: its encoding, packed as the back-end chooses
    /// (kept for the report only).
    Other(u32),
}

/// What a trapped cache maintenance instruction by set/way asked for.
///
/// Whatever it asked, the hypervisor cleans and invalidates: cleaning first
/// means no dirty line is ever discarded, and the lines at a set and way
/// may hold another VM's (or the hypervisor's) data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetWayOperation {
    /// Invalidate only (AArch64 DC ISW): would discard dirty data.
    Invalidate,
    /// Clean only (DC CSW).
    Clean,
    /// Clean and invalidate (DC CISW).
    CleanInvalidate,
}

/// A trapped system-register access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRegAccess {
    /// Which register.
    pub register: TrappedRegister,
    /// True for a write (MSR, MCR) or a system instruction that takes an
    /// operand (SYS, such as DC).
    pub write: bool,
    /// The general-purpose register transferred (for a 64-bit AArch32
    /// MCRR/MRRC, the one with bits 31:0).
    pub value_register: u8,
    /// For an AArch32 MCRR/MRRC, the register with bits 63:32 (Rt2).
    pub high_register: Option<u8>,
}

/// Why the guest stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// A physical interrupt arrived for the hypervisor.
    Interrupt,
    /// A data abort with a usable syndrome: emulate the access.
    Mmio(MmioAccess),
    /// A store, with a usable syndrome, to a page stage 2 maps read-only:
    /// the virtio-mmio register image (see `chroma_core::guest_map`), whose
    /// reads the guest makes without a trap. `ipa` holds only the offset in
    /// the page: HPFAR_EL2 (HPFAR) is UNKNOWN for a stage-2 Permission
    /// fault (Arm ARM D24.2.71), so the handler supplies the page.
    ReadOnlyWrite(MmioAccess),
    /// A stage-2 abort without a valid instruction syndrome (a load/store pair,
    /// a cache maintenance op, an access with writeback): cannot be emulated.
    AbortNoSyndrome {
        /// The faulting guest-physical address, when known.
        ipa: GuestPhysAddr,
        /// True for an instruction fetch.
        fetch: bool,
    },
    /// HVC from the guest (SMCCC / PSCI calls); the PC is already past it.
    Hypercall {
        /// The immediate of the HVC instruction.
        immediate: u16,
    },
    /// SMC from the guest, trapped; the PC still points at it.
    SecureMonitorCall {
        /// The immediate of the SMC instruction.
        immediate: u16,
    },
    /// A conditional AArch32 instruction trapped although its condition
    /// failed (the architecture allows it to): it is skipped, as if it had
    /// executed as a NOP.
    ConditionFailed,
    /// WFI: the guest waits for an interrupt.
    WaitForInterrupt,
    /// WFE: the guest waits for an event.
    WaitForEvent,
    /// A trapped system-register access.
    SysReg(SysRegAccess),
    /// Anything else: the syndrome value is kept for the report.
    Unhandled {
        /// The raw syndrome.
        syndrome: u64,
        /// Faulting address register value, if any.
        fault_address: u64,
    },
}

/// The low 32 bits of a register value (what a 32-bit register store writes).
pub const fn low_word(value: u64) -> u32 {
    let [a, b, c, d, ..] = value.to_le_bytes();
    u32::from_le_bytes([a, b, c, d])
}
