//! A host stand-in for the architecture back-end's trapped vCPU, for the
//! core's unit tests.
//!
//! It deliberately keeps its registers in a different encoding from any
//! hardware (stored complemented and in reverse order, the PC as an offset
//! from a bias), so core code that reached past [`GuestCpu`] into a raw
//! register layout would read garbage and fail its tests.

use crate::vcpu::{ExternalAbort, GuestCpu, Trap};

/// Register 31 reads as zero and ignores writes, as the zero register does.
const ZERO_REGISTER: u8 = 31;
/// The fake's PC is stored as `pc - PC_BIAS`.
const PC_BIAS: u64 = 0x1000;

/// An exception the fake was asked to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injected {
    /// A synchronous external abort.
    Abort(ExternalAbort),
    /// An undefined-instruction exception for this syndrome.
    Undefined(u64),
}

/// A trapped vCPU on the host.
#[derive(Clone, Debug)]
pub struct FakeCpu {
    /// Registers, complemented, x30 first.
    reversed: [u64; 31],
    pc_offset: u64,
    /// Exceptions taken, in order.
    pub injected: alloc::vec::Vec<Injected>,
    /// What `memory_cacheable` answers.
    pub cacheable: bool,
    /// The trap came from the guest's userspace (`trapped_in_kernel` is false).
    pub user: bool,
    /// Operands of the clean-and-invalidate by set/way operations asked
    /// for, in order.
    pub set_way_cleaned: alloc::vec::Vec<u64>,
}

impl FakeCpu {
    /// A vCPU at `pc` with every register zero.
    pub fn at(pc: u64) -> Self {
        Self {
            reversed: [!0; 31],
            pc_offset: pc.wrapping_sub(PC_BIAS),
            injected: alloc::vec::Vec::new(),
            cacheable: true,
            user: false,
            set_way_cleaned: alloc::vec::Vec::new(),
        }
    }

    /// Sets registers 0.. from `values`.
    pub fn with_registers(mut self, values: &[u64]) -> Self {
        for (index, &value) in values.iter().enumerate() {
            let index = u8::try_from(index).expect("a register number fits a u8");
            self.set_register(index, value);
        }
        self
    }
}

impl GuestCpu for FakeCpu {
    fn register(&self, index: u8) -> u64 {
        match index {
            ZERO_REGISTER.. => 0,
            n => !self.reversed[30 - usize::from(n)],
        }
    }

    fn set_register(&mut self, index: u8, value: u64) {
        if index < ZERO_REGISTER {
            self.reversed[30 - usize::from(index)] = !value;
        }
    }

    fn pc(&self) -> u64 {
        self.pc_offset.wrapping_add(PC_BIAS)
    }

    fn skip_instruction(&mut self, length: u8) {
        self.pc_offset = self.pc_offset.wrapping_add(u64::from(length));
    }

    fn inject_external_abort(&mut self, abort: ExternalAbort) {
        self.injected.push(Injected::Abort(abort));
    }

    fn inject_undefined(&mut self, trap: &Trap) {
        self.injected.push(Injected::Undefined(trap.syndrome));
    }

    fn trapped_in_kernel(&self) -> bool {
        !self.user
    }

    fn memory_cacheable(&self) -> bool {
        self.cacheable
    }

    fn clean_invalidate_data_cache_by_set_way(&mut self, operand: u64) {
        self.set_way_cleaned.push(operand);
    }
}
