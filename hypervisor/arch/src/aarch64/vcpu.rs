//! A vCPU as the AArch64 back-end holds it: general-purpose registers, its
//! EL1 context and virtual GIC interface state, entering it, decoding its
//! traps, and answering them through the core's [`GuestCpu`] seam.

use super::context::El1Context;
use super::esr::{self, ESR_IL};
use super::gic::Gic;
use super::sysreg;
use super::vectors::{enter_guest, ExceptionKind, GuestRegisters};
use chroma_core::vcpu::{ExternalAbort, GuestCpu, Trap};
use chroma_core::vtimer::TimerRegisters;

/// PSTATE at a vCPU's start and at an exception taken to EL1: EL1h (SP_EL1)
/// with D, A, I and F masked, as the Linux boot protocol and the
/// architecture's exception entry require.
const PSTATE_EL1H_MASKED: u64 = 0x3c5;
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
}

impl Vcpu {
    /// Puts the vCPU in its reset state, starting at `entry` with
    /// `argument` in x0 (the boot protocol's DTB, or PSCI's context id).
    pub fn reset(&mut self, entry: u64, argument: u64) {
        *self = Self::default();
        self.registers.pc = entry;
        self.registers.x[0] = argument;
        self.registers.pstate = PSTATE_EL1H_MASKED;
    }

    /// Saves this CPU's EL1 and virtual-interface state into the vCPU
    /// (it is being descheduled).
    pub fn save(&mut self, gic: &Gic) {
        self.context.save();
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
        unsafe { self.context.restore() };
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
        let trap = esr::decode_trap(sysreg::esr_el2(), sysreg::far_el2(), sysreg::hpfar_el2());
        (
            TrappedVcpu {
                registers: &mut self.registers,
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

/// Installs VM `vmid`'s stage-2 tables at `stage2_root` and gives the vCPU
/// about to run the MPIDR affinity Aff0 = `vcpu_id`.
///
/// # Safety
/// `stage2_root` is the root of stage-2 tables that map only memory of
/// that VM, and `vmid` is the VM's own (TLB entries of another VM that
/// used it were invalidated).
pub unsafe fn switch_to(vmid: u16, stage2_root: u64, vcpu_id: usize) {
    // SAFETY: the caller's contract; VMPIDR only changes what the guest reads.
    unsafe {
        sysreg::write_vttbr_el2(u64::from(vmid) << VTTBR_VMID_SHIFT | stage2_root);
        sysreg::write_vmpidr_el2(MPIDR_RES1 | vcpu_id as u64);
    }
    sysreg::isb();
}

/// A trapped vCPU whose EL1 state is live in this CPU's registers.
pub struct TrappedVcpu<'a> {
    registers: &'a mut GuestRegisters,
}

impl TrappedVcpu<'_> {
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

impl GuestCpu for TrappedVcpu<'_> {
    fn register(&self, index: u8) -> u64 {
        // Register 31 is the zero register in a load/store.
        self.registers
            .x
            .get(usize::from(index))
            .copied()
            .unwrap_or(0)
    }

    fn set_register(&mut self, index: u8, value: u64) {
        if index != XZR {
            if let Some(slot) = self.registers.x.get_mut(usize::from(index)) {
                *slot = value;
            }
        }
    }

    fn pc(&self) -> u64 {
        self.registers.pc
    }

    fn skip_instruction(&mut self, length: u8) {
        self.registers.pc = self.registers.pc.wrapping_add(u64::from(length));
    }

    fn inject_external_abort(&mut self, abort: ExternalAbort) {
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
