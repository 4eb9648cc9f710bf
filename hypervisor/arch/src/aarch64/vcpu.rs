//! A vCPU as the AArch64 back-end holds it: general-purpose registers, its
//! EL1 context and virtual GIC interface state, entering it, decoding its
//! traps, and answering them through the core's [`GuestCpu`] seam.

use super::context::El1Context;
use super::esr::{self, ESR_IL};
use super::gic::Gic;
use super::pstate::{self as ps, aarch32_register};
use super::sysreg;
use super::vectors::{enter_guest, ExceptionKind, GuestRegisters};
use chroma_core::vcpu::{ExternalAbort, GuestCpu, Trap};
use chroma_core::vm::BootRequest;
use chroma_core::vtimer::TimerRegisters;

/// PSTATE at a vCPU's start and at an exception taken to EL1: EL1h (SP_EL1)
/// with D, A, I and F masked, as the Linux boot protocol and the
/// architecture's exception entry require.
const PSTATE_EL1H_MASKED: u64 = 0x3c5;
/// CPSR of an AArch32 vCPU at its start: SVC mode with A, I and F masked,
/// ARM state (the Linux ARM boot protocol, and PSCI's CPU_ON).
const CPSR_SVC_MASKED: u64 = ps::MODE_SVC | ps::CPSR_A | ps::CPSR_I | ps::CPSR_F | 1 << 4;
/// The AArch32 exception vectors' offsets (Arm ARM G1.11.1).
const A32_VECTOR_UNDEFINED: u64 = 0x04;
const A32_VECTOR_PREFETCH_ABORT: u64 = 0x0c;
const A32_VECTOR_DATA_ABORT: u64 = 0x10;
/// SCTLR.V: the vectors are at 0xffff_0000 ("hivecs").
const SCTLR_V: u64 = 1 << 13;
const HIGH_VECTORS: u64 = 0xffff_0000;
/// TTBCR.EAE (TCR_EL1 bit 31): the long-descriptor (LPAE) format, which
/// also chooses the DFSR/IFSR format.
const TTBCR_EAE: u64 = 1 << 31;
/// DFSR/IFSR of a synchronous external abort: long-descriptor format
/// (LPAE bit 9, STATUS 0b010000) or short (FS 0b01000).
const FSR_LONG_EXTERNAL: u64 = 1 << 9 | 0x10;
const FSR_SHORT_EXTERNAL: u64 = 0x08;
/// DFSR.WnR.
const DFSR_WNR: u64 = 1 << 11;
/// ESR_ELx.EC of aborts taken to EL1: from a lower EL, or the same EL.
const EC_INSTRUCTION_ABORT_LOWER: u64 = 0x20;
const EC_INSTRUCTION_ABORT_SAME: u64 = 0x21;
const EC_DATA_ABORT_LOWER: u64 = 0x24;
const EC_DATA_ABORT_SAME: u64 = 0x25;
/// ESR_ELx.EC shift.
const EC_SHIFT: u64 = 26;
/// DFSC/IFSC 0b010000: synchronous external abort, not on a table walk.
const FSC_SYNC_EXTERNAL: u64 = 0x10;
/// ESR_ELx.ISS.WnR of a data abort.
const ISS_WNR: u64 = 1 << 6;
/// SCTLR_EL1.M (stage-1 MMU) and SCTLR_EL1.C (data cache).
const SCTLR_M: u64 = 1 << 0;
const SCTLR_C: u64 = 1 << 2;
/// The zero register's number in a load/store syndrome.
const XZR: u8 = 31;
/// VMPIDR_EL2 bit 31 is RES1.
const MPIDR_RES1: u64 = 1 << 31;
/// VTTBR_EL2.VMID shift.
const VTTBR_VMID_SHIFT: u64 = 48;

/// A vCPU's state while it is not in the guest.
#[derive(Clone, Copy, Debug, Default)]
pub struct Vcpu {
    registers: GuestRegisters,
    context: El1Context,
    /// The virtual CPU interface control (GICH_VMCR / ICH_VMCR_EL2).
    vmcr: u64,
    /// Its active priorities (GICH_APR / ICH_AP0R, ICH_AP1R).
    active_priorities: super::gic::ActivePriorities,
    /// Its EL1 runs in AArch32 state (HCR_EL2.RW = 0 while it runs).
    aarch32: bool,
}

impl Vcpu {
    /// Puts the vCPU in its reset state, started as `start` says: the
    /// kernel's boot protocol (AArch64: x0 = DTB at EL1h; AArch32: r0 = 0,
    /// r1 = ~0, r2 = DTB in SVC mode) or PSCI CPU_ON (x0 / r0 = context
    /// id; an AArch32 entry with bit 0 set starts in Thumb state), with
    /// every interrupt masked.
    pub fn reset(&mut self, start: &BootRequest, aarch32: bool) {
        *self = Self::default();
        self.aarch32 = aarch32;
        if !aarch32 {
            self.registers.pc = start.entry;
            self.registers.x[0] = start.argument;
            self.registers.pstate = PSTATE_EL1H_MASKED;
            return;
        }
        self.context = El1Context::aarch32_at_reset();
        self.registers.pc = start.entry & !1 & 0xffff_ffff;
        self.registers.pstate = CPSR_SVC_MASKED;
        if start.cpu_on {
            self.registers.x[0] = start.argument & 0xffff_ffff;
            if start.entry & 1 == 1 {
                self.registers.pstate |= ps::CPSR_T;
            }
        } else {
            // r1 = ~0: "no machine type", the DTB decides (Linux
            // Documentation/arch/arm/booting.rst).
            self.registers.x[1] = 0xffff_ffff;
            self.registers.x[2] = start.argument & 0xffff_ffff;
        }
    }

    /// Whether the vCPU's EL1 is AArch32.
    pub fn is_aarch32(&self) -> bool {
        self.aarch32
    }

    /// Saves this CPU's EL1 and virtual-interface state into the vCPU
    /// (it is being descheduled).
    pub fn save(&mut self, gic: &Gic) {
        self.context.save(self.aarch32);
        self.vmcr = gic.save_vmcr();
        self.active_priorities = gic.save_active_priorities();
    }

    /// Loads the vCPU's EL1 and virtual-interface state into this CPU.
    ///
    /// # Safety
    /// The vCPU runs next on this CPU, and [`switch_to`] installs its VM's
    /// stage-2 tables before it does.
    pub unsafe fn restore(&self, gic: &Gic) {
        // SAFETY: the caller's contract: this is the vCPU that runs next.
        unsafe { self.context.restore(self.aarch32) };
        gic.restore_vmcr(self.vmcr);
        gic.restore_active_priorities(&self.active_priorities);
    }

    /// The virtual timer registers as saved (the vCPU is not loaded).
    pub fn saved_timer(&self) -> TimerRegisters {
        self.context.virtual_timer()
    }

    /// Runs the vCPU until it traps.
    ///
    /// # Safety
    /// The vCPU's context is loaded ([`Vcpu::restore`]) and its VM's stage 2
    /// installed ([`switch_to`]); HCR_EL2 traps what the hypervisor must see.
    pub unsafe fn enter(&mut self) -> ExceptionKind {
        // SAFETY: the caller's contract.
        unsafe { enter_guest(&mut self.registers) }
    }

    /// The loaded vCPU after a synchronous exit, with its decoded trap.
    pub fn trapped(&mut self) -> (TrappedVcpu<'_>, Trap) {
        let trap = esr::decode_trap(
            sysreg::esr_el2(),
            sysreg::far_el2(),
            sysreg::hpfar_el2(),
            self.registers.pstate,
        );
        (
            TrappedVcpu {
                registers: &mut self.registers,
                aarch32_el1: self.aarch32,
            },
            trap,
        )
    }
}

/// The loaded vCPU's virtual timer registers, read live.
pub fn live_timer() -> TimerRegisters {
    TimerRegisters {
        control: sysreg::cntv_ctl_el0(),
        compare: sysreg::cntv_cval_el0(),
    }
}

/// Disables the virtual timer of this CPU while no vCPU's state is loaded
/// (its reset value is UNKNOWN: it must not raise the PPI for nobody).
pub fn disable_live_timer() {
    // SAFETY: no guest's timer state is on this CPU; a disabled timer only
    // keeps its PPI quiet until a vCPU's registers are restored.
    unsafe { sysreg::write_cntv_ctl_el0(0) };
    sysreg::isb();
}

/// Installs VM `vmid`'s stage-2 tables at `stage2_root`, gives the vCPU
/// about to run the MPIDR affinity Aff0 = `vcpu_id`, and sets the
/// execution state of its EL1 (HCR_EL2.RW: AArch32 when `aarch32`).
///
/// # Safety
/// `stage2_root` is the root of stage-2 tables that map only memory of
/// that VM, and `vmid` is the VM's own (TLB entries of another VM that
/// used it were invalidated).
pub unsafe fn switch_to(vmid: u16, stage2_root: u64, vcpu_id: usize, aarch32: bool) {
    // SAFETY: the caller's contract; VMPIDR and HCR_EL2.RW only change what
    // the guest reads and the state it runs in, and the rest of HCR_EL2 is
    // the value every guest runs with.
    unsafe {
        sysreg::write_vttbr_el2(u64::from(vmid) << VTTBR_VMID_SHIFT | stage2_root);
        sysreg::write_vmpidr_el2(MPIDR_RES1 | vcpu_id as u64);
        sysreg::write_hcr_el2(super::el2::hcr_el2_for(aarch32));
    }
    sysreg::isb();
}

/// A trapped vCPU whose EL1 state is live in this CPU's registers.
pub struct TrappedVcpu<'a> {
    registers: &'a mut GuestRegisters,
    /// The VM's EL1 is AArch32: exceptions are taken to an AArch32 mode
    /// (else to AArch64 EL1, from AArch32 EL0 through its 0x600 vectors).
    aarch32_el1: bool,
}

impl TrappedVcpu<'_> {
    /// The trapped code ran in AArch32 state (an AArch32 VM, or AArch32 EL0).
    fn aarch32(&self) -> bool {
        ps::aarch32(self.registers.pstate)
    }

    /// The AArch64 register that holds general-purpose register `index` as
    /// the trapped instruction named it: x0..x30, or for AArch32 r0..r14 of
    /// the mode it ran in. `None` for the zero register (or r15).
    fn slot(&self, index: u8) -> Option<usize> {
        if self.aarch32() {
            aarch32_register(self.registers.pstate, index)
        } else {
            (index != XZR).then_some(usize::from(index))
        }
    }

    /// Takes a synchronous exception to the guest's AArch32 EL1 (Arm ARM
    /// G1.13, AArch32.TakeUndefInstrException / TakeDataAbortException /
    /// TakePrefetchAbortException): to `mode` at vector `offset`, with the
    /// return address `return_address` in the mode's LR and the CPSR in its
    /// SPSR.
    fn take_aarch32_exception(&mut self, mode: u64, offset: u64, return_address: u64) {
        let sctlr = sysreg::sctlr_el1();
        let base = if sctlr & SCTLR_V != 0 {
            HIGH_VECTORS
        } else {
            sysreg::vbar_el1() & 0xffff_ffe0
        };
        let cpsr = self.registers.pstate;
        // SAFETY: the banked SPSR belongs to the vCPU that just trapped on
        // this CPU; writing it is what taking an exception to that mode does.
        unsafe {
            match mode {
                ps::MODE_UND => sysreg::write_spsr_und(cpsr),
                _ => sysreg::write_spsr_abt(cpsr),
            }
        }
        let new = ps::aarch32_exception_cpsr(cpsr, mode, sctlr);
        if let Some(lr) = aarch32_register(new, 14) {
            self.registers.x[lr] = return_address & 0xffff_ffff;
        }
        self.registers.pstate = new;
        self.registers.pc = (base + offset) & 0xffff_ffff;
    }

    /// A synchronous external abort for an AArch32 guest: a data abort
    /// (DFSR, DFAR) or a prefetch abort (IFSR, IFAR), in the format its
    /// TTBCR.EAE selects.
    fn inject_aarch32_abort(&mut self, abort: ExternalAbort) {
        let long = sysreg::tcr_el1() & TTBCR_EAE != 0;
        let status = if long {
            FSR_LONG_EXTERNAL
        } else {
            FSR_SHORT_EXTERNAL
        };
        let address = sysreg::far_el2() & 0xffff_ffff;
        let far = sysreg::far_el1();
        let pc = self.registers.pc;
        if abort.instruction_fetch {
            // SAFETY: IFSR and IFAR (FAR_EL1[63:32]) are the trapped
            // vCPU's; writing them is part of taking the abort.
            unsafe {
                sysreg::write_ifsr32_el2(status);
                sysreg::write_far_el1(far & 0xffff_ffff | address << 32);
            }
            self.take_aarch32_exception(ps::MODE_ABT, A32_VECTOR_PREFETCH_ABORT, pc + 4);
        } else {
            let wnr = if abort.write { DFSR_WNR } else { 0 };
            // SAFETY: DFSR (ESR_EL1[31:0]) and DFAR (FAR_EL1[31:0]) are
            // the trapped vCPU's.
            unsafe {
                sysreg::write_esr_el1(status | wnr);
                sysreg::write_far_el1(far & !0xffff_ffff | address);
            }
            self.take_aarch32_exception(ps::MODE_ABT, A32_VECTOR_DATA_ABORT, pc + 8);
        }
    }

    /// Takes a synchronous exception to the guest's EL1 with `syndrome` and
    /// `fault_address` (Arm ARM D1.10.2).
    fn take_exception(&mut self, syndrome: u64, fault_address: u64) {
        let offset = super::pstate::synchronous_vector(self.registers.pstate);
        // SAFETY: these EL1 registers belong to the vCPU that just trapped on
        // this CPU; writing them is what taking an exception to EL1 does.
        unsafe {
            sysreg::write_elr_el1(self.registers.pc);
            sysreg::write_spsr_el1(self.registers.pstate);
            sysreg::write_esr_el1(syndrome);
            sysreg::write_far_el1(fault_address);
        }
        self.registers.pc = sysreg::vbar_el1() + offset;
        self.registers.pstate = PSTATE_EL1H_MASKED;
    }
}

impl TrappedVcpu<'_> {
    /// For a vCPU trapped in AArch32 ARM state (not Thumb): the IPA of the
    /// trapped instruction, for the back-end to fetch it (stage 1 off: the
    /// PC is the IPA; on: translated with AT S1E1R). `None` otherwise.
    pub fn a32_instruction_ipa(&self) -> Option<u64> {
        if !self.aarch32() || self.registers.pstate & ps::CPSR_T != 0 {
            return None;
        }
        let pc = self.registers.pc & 0xffff_ffff;
        if sysreg::sctlr_el1() & SCTLR_M == 0 {
            Some(pc)
        } else {
            sysreg::translate_el1_read(pc)
        }
    }
}

impl GuestCpu for TrappedVcpu<'_> {
    fn register(&self, index: u8) -> u64 {
        // Register 31 is the zero register in a load/store.
        let value = self
            .slot(index)
            .and_then(|slot| self.registers.x.get(slot))
            .copied()
            .unwrap_or(0);
        if self.aarch32() {
            value & 0xffff_ffff
        } else {
            value
        }
    }

    fn set_register(&mut self, index: u8, value: u64) {
        // An AArch32 register is 32 bits wide.
        let value = if self.aarch32() {
            value & 0xffff_ffff
        } else {
            value
        };
        if let Some(slot) = self
            .slot(index)
            .and_then(|slot| self.registers.x.get_mut(slot))
        {
            *slot = value;
        }
    }

    fn pc(&self) -> u64 {
        self.registers.pc
    }

    fn skip_instruction(&mut self, length: u8) {
        self.registers.pc = self.registers.pc.wrapping_add(u64::from(length));
        if self.aarch32() {
            // A skipped Thumb instruction inside an IT block moves it on.
            if self.registers.pstate & ps::CPSR_T != 0 {
                self.registers.pstate = ps::advance_it(self.registers.pstate);
            }
            self.registers.pc &= 0xffff_ffff;
        }
    }

    fn inject_external_abort(&mut self, abort: ExternalAbort) {
        if self.aarch32_el1 {
            self.inject_aarch32_abort(abort);
            return;
        }
        // "From the same EL" when the guest was at EL1.
        let from_el1 = super::pstate::at_el1(self.registers.pstate);
        let class = match (abort.instruction_fetch, from_el1) {
            (false, true) => EC_DATA_ABORT_SAME,
            (false, false) => EC_DATA_ABORT_LOWER,
            (true, true) => EC_INSTRUCTION_ABORT_SAME,
            (true, false) => EC_INSTRUCTION_ABORT_LOWER,
        };
        let wnr = if abort.write { ISS_WNR } else { 0 };
        self.take_exception(
            class << EC_SHIFT | ESR_IL | FSC_SYNC_EXTERNAL | wnr,
            sysreg::far_el2(),
        );
    }

    fn inject_undefined(&mut self, _trap: &Trap) {
        if self.aarch32_el1 {
            // LR_und: the instruction + 4 (ARM) or + 2 (Thumb).
            let step = if self.registers.pstate & ps::CPSR_T != 0 {
                2
            } else {
                4
            };
            let pc = self.registers.pc;
            self.take_aarch32_exception(ps::MODE_UND, A32_VECTOR_UNDEFINED, pc + step);
            return;
        }
        // EC 0 (unknown reason), IL set: what an UNDEFINED instruction reports.
        self.take_exception(ESR_IL, 0);
    }

    fn trapped_in_kernel(&self) -> bool {
        super::pstate::at_el1(self.registers.pstate)
    }

    fn memory_cacheable(&self) -> bool {
        sysreg::sctlr_el1() & (SCTLR_M | SCTLR_C) == SCTLR_M | SCTLR_C
    }

    fn clean_invalidate_data_cache_by_set_way(&mut self, operand: u64) {
        super::cache::clean_invalidate_by_set_way(operand);
    }
}
