//! An AArch32 guest kernel (PL1, AArch32 EL1) as both back-ends see it when
//! it traps: its registers by the number a trapped instruction names (the
//! banked ones of its mode), stepping an instruction (the IT state with
//! it), and taking an undefined instruction or an external abort to its own
//! vectors, as the architecture does (Arm ARM G1.13, ARMv7 ARM B1.9).
//!
//! The AArch64 hypervisor runs such a guest with HCR_EL2.RW = 0; the ARMv7
//! hypervisor runs only such guests. Both keep the trapped registers in a
//! [`GuestRegisters`] laid out as AArch64 maps AArch32's (Arm ARM D1.20.1:
//! r0-r12, SP and LR of each mode in x0-x30), so the mapping, the exception
//! entry and the IT-state rules are written once, here, over the
//! [`Pl1Registers`] each back-end reaches in its own way. Pure: tested on
//! the host.

use crate::aarch64::pstate::{self as ps, aarch32_register};
use chroma_core::exit::low_word;
use chroma_core::vcpu::ExternalAbort;
use chroma_core::vm::BootRequest;

/// CPSR of an AArch32 vCPU at its start: SVC mode with A, I and F masked,
/// ARM state (the Linux ARM boot protocol, and PSCI's CPU_ON).
const CPSR_SVC_MASKED: u64 = ps::MODE_SVC | ps::CPSR_A | ps::CPSR_I | ps::CPSR_F;

/// An AArch32 vCPU's registers at its start, as `start` says: the Linux
/// ARM boot protocol (r0 = 0, r1 = ~0, r2 = DTB, SVC mode, interrupts
/// masked) or PSCI CPU_ON (r0 = context id; an entry with bit 0 set starts
/// in Thumb state).
pub fn reset_registers(start: &BootRequest) -> GuestRegisters {
    let mut registers = GuestRegisters {
        pc: start.entry & !1 & 0xffff_ffff,
        pstate: CPSR_SVC_MASKED,
        ..GuestRegisters::default()
    };
    if start.cpu_on {
        registers.x[0] = start.argument & 0xffff_ffff;
        if start.entry & 1 == 1 {
            registers.pstate |= ps::CPSR_T;
        }
    } else {
        // r1 = ~0: "no machine type", the DTB decides (Linux
        // Documentation/arch/arm/booting.rst).
        registers.x[1] = 0xffff_ffff;
        registers.x[2] = start.argument & 0xffff_ffff;
    }
    registers
}

/// A guest's general-purpose registers and return state, as the guest entry
/// trampolines of both back-ends load and save them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestRegisters {
    /// x0..x30 (an AArch32 guest: its registers in the AArch64 mapping).
    pub x: [u64; 31],
    /// The guest PC (ELR_EL2 / ELR_hyp).
    pub pc: u64,
    /// The guest PSTATE / CPSR (SPSR_EL2 / SPSR_hyp).
    pub pstate: u64,
    /// The hypervisor stack pointer while the guest runs (private to the
    /// trampoline).
    pub host_sp: u64,
}

/// What kind of exception ended a guest run, as both trampolines return it
/// (0 synchronous, 1 IRQ, 2 FIQ, 3 SError).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionKind {
    /// Synchronous (a trap or abort): the syndrome (ESR_EL2 / HSR) says what.
    Synchronous,
    /// A physical IRQ.
    Irq,
    /// A physical FIQ.
    Fiq,
    /// An SError (AArch64; ARMv7 reports asynchronous aborts through the
    /// Hyp Trap vector, as synchronous exits with their syndrome).
    SError,
}

impl ExceptionKind {
    /// The kind for a trampoline's return code.
    pub fn from_code(code: u64) -> Self {
        match code {
            0 => ExceptionKind::Synchronous,
            1 => ExceptionKind::Irq,
            2 => ExceptionKind::Fiq,
            _ => ExceptionKind::SError,
        }
    }
}

/// The vectors' offsets (Arm ARM G1.11.1).
const VECTOR_UNDEFINED: u64 = 0x04;
const VECTOR_PREFETCH_ABORT: u64 = 0x0c;
const VECTOR_DATA_ABORT: u64 = 0x10;
/// SCTLR.V: the vectors are at 0xffff_0000 ("hivecs").
const SCTLR_V: u32 = 1 << 13;
const HIGH_VECTORS: u64 = 0xffff_0000;
/// SCTLR.M (stage-1 MMU) and SCTLR.C (data cache).
const SCTLR_M: u32 = 1 << 0;
const SCTLR_C: u32 = 1 << 2;
/// TTBCR.EAE: the long-descriptor (LPAE) format, which also chooses the
/// DFSR/IFSR format.
const TTBCR_EAE: u32 = 1 << 31;
/// DFSR/IFSR of a synchronous external abort: long-descriptor format
/// (LPAE bit 9, STATUS 0b010000) or short (FS 0b01000).
const FSR_LONG_EXTERNAL: u32 = 1 << 9 | 0x10;
const FSR_SHORT_EXTERNAL: u32 = 0x08;
/// DFSR.WnR.
const DFSR_WNR: u32 = 1 << 11;

/// The PL1 registers taking an exception reads and writes, as one back-end
/// reaches them for the trapped (loaded) vCPU.
pub trait Pl1Registers {
    /// SCTLR.
    fn sctlr(&self) -> u32;
    /// VBAR.
    fn vbar(&self) -> u32;
    /// TTBCR.
    fn ttbcr(&self) -> u32;
    /// Writes the SPSR of `mode` (`ps::MODE_UND` or `ps::MODE_ABT`).
    fn write_spsr(&mut self, mode: u64, value: u32);
    /// Writes DFSR and DFAR (a data abort).
    fn write_data_fault(&mut self, status: u32, address: u32);
    /// Writes IFSR and IFAR (a prefetch abort).
    fn write_prefetch_fault(&mut self, status: u32, address: u32);
}

/// A trapped AArch32 vCPU: its registers and its PL1 registers.
pub struct Trapped32<'a, P: Pl1Registers> {
    /// The registers the trampoline saved.
    pub registers: &'a mut GuestRegisters,
    /// Its PL1 system registers.
    pub pl1: P,
}

impl<P: Pl1Registers> Trapped32<'_, P> {
    /// The slot of `registers.x` that holds register `index` (r0..r14) of
    /// the mode the vCPU trapped in; `None` for r15 and beyond.
    fn slot(&self, index: u8) -> Option<usize> {
        aarch32_register(self.registers.pstate, index)
    }

    /// Register `index` of the trapped mode, 32 bits wide.
    pub fn register(&self, index: u8) -> u64 {
        self.slot(index)
            .and_then(|slot| self.registers.x.get(slot))
            .map_or(0, |value| value & 0xffff_ffff)
    }

    /// Writes register `index` of the trapped mode (32 bits kept).
    pub fn set_register(&mut self, index: u8, value: u64) {
        if let Some(slot) = self
            .slot(index)
            .and_then(|slot| self.registers.x.get_mut(slot))
        {
            *slot = value & 0xffff_ffff;
        }
    }

    /// Steps over the trapped instruction, `length` bytes long; a Thumb
    /// instruction inside an IT block moves the block on.
    pub fn skip_instruction(&mut self, length: u8) {
        let registers = &mut *self.registers;
        registers.pc = registers.pc.wrapping_add(u64::from(length)) & 0xffff_ffff;
        if registers.pstate & ps::CPSR_T != 0 {
            registers.pstate = ps::advance_it(registers.pstate);
        }
    }

    /// Whether it trapped in a privileged mode (not User).
    pub fn in_kernel(&self) -> bool {
        self.registers.pstate & 0x1f != ps::MODE_USR
    }

    /// Whether its stage 1 and data cache are on (memory is cacheable).
    pub fn memory_cacheable(&self) -> bool {
        self.pl1.sctlr() & (SCTLR_M | SCTLR_C) == SCTLR_M | SCTLR_C
    }

    /// Whether its stage-1 MMU is on.
    pub fn mmu_on(&self) -> bool {
        self.pl1.sctlr() & SCTLR_M != 0
    }

    /// Takes a synchronous exception to `mode` at vector `offset`, with
    /// `return_address` in the mode's LR and the CPSR in its SPSR
    /// (AArch32.TakeUndefInstrException / TakeDataAbortException /
    /// TakePrefetchAbortException).
    fn take_exception(&mut self, mode: u64, offset: u64, return_address: u64) {
        let sctlr = self.pl1.sctlr();
        let base = if sctlr & SCTLR_V != 0 {
            HIGH_VECTORS
        } else {
            u64::from(self.pl1.vbar() & 0xffff_ffe0)
        };
        let cpsr = self.registers.pstate;
        self.pl1.write_spsr(mode, low_word(cpsr));
        let new = ps::aarch32_exception_cpsr(cpsr, mode, u64::from(sctlr));
        if let Some(lr) = aarch32_register(new, 14) {
            if let Some(slot) = self.registers.x.get_mut(lr) {
                *slot = return_address & 0xffff_ffff;
            }
        }
        self.registers.pstate = new;
        self.registers.pc = (base + offset) & 0xffff_ffff;
    }

    /// A synchronous external abort at `address`: a data abort (DFSR, DFAR)
    /// or a prefetch abort (IFSR, IFAR), in the format its TTBCR.EAE selects.
    pub fn inject_external_abort(&mut self, abort: ExternalAbort, address: u32) {
        let status = if self.pl1.ttbcr() & TTBCR_EAE != 0 {
            FSR_LONG_EXTERNAL
        } else {
            FSR_SHORT_EXTERNAL
        };
        let pc = self.registers.pc;
        if abort.instruction_fetch {
            self.pl1.write_prefetch_fault(status, address);
            self.take_exception(ps::MODE_ABT, VECTOR_PREFETCH_ABORT, pc + 4);
        } else {
            let wnr = if abort.write { DFSR_WNR } else { 0 };
            self.pl1.write_data_fault(status | wnr, address);
            self.take_exception(ps::MODE_ABT, VECTOR_DATA_ABORT, pc + 8);
        }
    }

    /// The undefined instruction exception; LR_und is the instruction + 4
    /// (ARM) or + 2 (Thumb).
    pub fn inject_undefined(&mut self) {
        let step = if self.registers.pstate & ps::CPSR_T != 0 {
            2
        } else {
            4
        };
        let pc = self.registers.pc;
        self.take_exception(ps::MODE_UND, VECTOR_UNDEFINED, pc + step);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Fake {
        sctlr: u32,
        vbar: u32,
        ttbcr: u32,
        spsr: Option<(u64, u32)>,
        data: Option<(u32, u32)>,
        prefetch: Option<(u32, u32)>,
    }

    impl Pl1Registers for &mut Fake {
        fn sctlr(&self) -> u32 {
            self.sctlr
        }
        fn vbar(&self) -> u32 {
            self.vbar
        }
        fn ttbcr(&self) -> u32 {
            self.ttbcr
        }
        fn write_spsr(&mut self, mode: u64, value: u32) {
            self.spsr = Some((mode, value));
        }
        fn write_data_fault(&mut self, status: u32, address: u32) {
            self.data = Some((status, address));
        }
        fn write_prefetch_fault(&mut self, status: u32, address: u32) {
            self.prefetch = Some((status, address));
        }
    }

    fn svc_registers() -> GuestRegisters {
        let mut registers = GuestRegisters {
            pc: 0x4000_8000,
            pstate: ps::MODE_SVC | ps::CPSR_A | ps::CPSR_F,
            ..GuestRegisters::default()
        };
        for (index, slot) in registers.x.iter_mut().enumerate() {
            *slot = 0x100 + index as u64;
        }
        registers
    }

    #[test]
    fn banked_registers_follow_the_mode() {
        let mut registers = svc_registers();
        let mut fake = Fake::default();
        let mut cpu = Trapped32 {
            registers: &mut registers,
            pl1: &mut fake,
        };
        // SVC's SP and LR are x19 and x18; r0 is x0.
        assert_eq!(cpu.register(13), 0x100 + 19);
        assert_eq!(cpu.register(14), 0x100 + 18);
        assert_eq!(cpu.register(0), 0x100);
        assert_eq!(cpu.register(15), 0, "r15 is not a register slot");
        cpu.set_register(13, 0x1_2345_6789);
        assert_eq!(registers.x[19], 0x2345_6789, "32 bits kept");
    }

    #[test]
    fn a_data_abort_goes_to_abort_mode_with_the_long_format() {
        let mut registers = svc_registers();
        let mut fake = Fake {
            vbar: 0xc000_8000,
            ttbcr: TTBCR_EAE,
            ..Fake::default()
        };
        let mut cpu = Trapped32 {
            registers: &mut registers,
            pl1: &mut fake,
        };
        cpu.inject_external_abort(
            ExternalAbort {
                instruction_fetch: false,
                write: true,
            },
            0x0a00_1000,
        );
        assert_eq!(registers.pc, 0xc000_8010);
        assert_eq!(registers.pstate & 0x1f, ps::MODE_ABT);
        assert_eq!(registers.x[20], 0x4000_8008, "LR_abt = the instruction + 8");
        assert_eq!(fake.data, Some((FSR_LONG_EXTERNAL | DFSR_WNR, 0x0a00_1000)));
        assert_eq!(
            fake.spsr,
            Some((
                ps::MODE_ABT,
                low_word(ps::MODE_SVC | ps::CPSR_A | ps::CPSR_F)
            ))
        );
    }

    #[test]
    fn an_undefined_thumb_instruction_returns_two_bytes_on_to_high_vectors() {
        let mut registers = svc_registers();
        registers.pstate |= ps::CPSR_T;
        let mut fake = Fake {
            sctlr: SCTLR_V,
            ..Fake::default()
        };
        let mut cpu = Trapped32 {
            registers: &mut registers,
            pl1: &mut fake,
        };
        cpu.inject_undefined();
        assert_eq!(registers.pc, 0xffff_0004);
        assert_eq!(registers.x[22], 0x4000_8002, "LR_und");
        assert_eq!(
            registers.pstate & ps::CPSR_T,
            0,
            "SCTLR.TE clear: ARM state"
        );
        assert_eq!(fake.prefetch, None);
    }

    #[test]
    fn a_prefetch_abort_uses_the_short_format_without_eae() {
        let mut registers = svc_registers();
        let mut fake = Fake::default();
        let mut cpu = Trapped32 {
            registers: &mut registers,
            pl1: &mut fake,
        };
        cpu.inject_external_abort(
            ExternalAbort {
                instruction_fetch: true,
                write: false,
            },
            0x4000_8000,
        );
        assert_eq!(registers.pc, VECTOR_PREFETCH_ABORT);
        assert_eq!(fake.prefetch, Some((FSR_SHORT_EXTERNAL, 0x4000_8000)));
        assert_eq!(registers.x[20], 0x4000_8004, "LR_abt = the instruction + 4");
    }
}
