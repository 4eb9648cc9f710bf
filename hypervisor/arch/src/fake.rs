//! Host stand-ins for the back-end, for tests of code above the core.

use chroma_core::vgic::{ListRegister, ListRegisters};

/// List registers held in memory.
#[derive(Clone, Debug, Default)]
pub struct FakeListRegisters {
    /// The registers.
    pub registers: [ListRegister; 4],
    /// Whether the underflow maintenance interrupt is requested.
    pub underflow: bool,
}

impl ListRegisters for FakeListRegisters {
    fn count(&self) -> usize {
        self.registers.len()
    }
    fn read(&self, index: usize) -> ListRegister {
        self.registers[index]
    }
    fn write(&mut self, index: usize, value: ListRegister) {
        self.registers[index] = value;
    }
    fn set_underflow_interrupt(&mut self, enable: bool) {
        self.underflow = enable;
    }
}
