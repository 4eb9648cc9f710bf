//! A vCPU as the AArch64 back-end holds it: general-purpose registers, its
//! EL1 context and virtual GIC interface state, entering it, decoding its
//! traps, and answering them through the core's [`GuestCpu`] seam.

use super::context::El1Context;
use super::esr::{self, ESR_IL};
use super::gic::Gic;
use super::pstate::{self as ps, aarch32_register};
use super::sysreg;
use super::vectors::{enter_guest, ExceptionKind, GuestRegisters};
use crate::guest32::{Pl1Registers, Trapped32};
use chroma_core::exit::low_word;
use chroma_core::vcpu::{ExternalAbort, GuestCpu, Trap};
use chroma_core::vm::BootRequest;
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
        self.registers = crate::guest32::reset_registers(start);
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
        let (syndrome, far) = (sysreg::esr_el2(), sysreg::far_el2());
        // HPFAR_EL2 is UNKNOWN for a stage-2 Permission fault: its page is
        // found by translating FAR through the guest's stage 1.
        let hpfar = if esr::fault_page_unreported(syndrome) {
            sysreg::translate_el1_write(far).map_or(esr::FAULT_PAGE_UNKNOWN, esr::hpfar_of)
        } else {
            sysreg::hpfar_el2()
        };
        let trap = esr::decode_trap(syndrome, far, hpfar, self.registers.pstate);
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
    // SAFETY: no guest's timer state is on this CPU; a disabled timer only keeps its PPI quiet until a vCPU's registers are restored.
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
    // SAFETY: the caller's contract; VMPIDR and HCR_EL2.RW only change what the guest reads and the state it runs in, and the rest of HCR_EL2 is the value every guest runs with.
    unsafe {
        sysreg::write_vttbr_el2(u64::from(vmid) << VTTBR_VMID_SHIFT | stage2_root);
        sysreg::write_vmpidr_el2(MPIDR_RES1 | vcpu_id as u64);
        sysreg::write_hcr_el2(super::el2::hcr_el2_for(aarch32));
    }
    sysreg::isb();
}

/// Drops this CPU's TLB entries of the VM whose stage 2 [`switch_to`]
/// installed (its VMID): for a vCPU that starts afresh.
pub fn invalidate_vm_tlbs() {
    sysreg::tlbi_vmalls12e1();
}

/// Drops, on every CPU, what the TLBs hold of IPA page `ipa` of VM `vmid`
/// (stage-2 root `stage2_root`), after its stage-2 descriptor changed: the
/// VM's VTTBR_EL2 is installed for the invalidation (TLBI by IPA acts on
/// the current VMID) and the previous value put back.
pub fn invalidate_vm_page(vmid: u16, stage2_root: u64, ipa: u64) {
    let saved = sysreg::vttbr_el2();
    // SAFETY: no guest runs on this CPU until VTTBR_EL2 is restored below; meanwhile the value only selects the VMID the invalidation acts on.
    unsafe { sysreg::write_vttbr_el2(u64::from(vmid) << VTTBR_VMID_SHIFT | stage2_root) };
    sysreg::isb();
    sysreg::tlbi_ipa_is(ipa);
    // SAFETY: the value this CPU held before, which it runs its guest with.
    unsafe { sysreg::write_vttbr_el2(saved) };
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
    /// The trapped vCPU as an AArch32 PL1 (`guest32`), over the live
    /// AArch32 views of its EL1 registers.
    fn trapped32(&mut self) -> Trapped32<'_, LiveAarch32El1> {
        Trapped32 {
            registers: self.registers,
            pl1: LiveAarch32El1,
        }
    }

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

    /// Takes a synchronous exception to the guest's EL1 with `syndrome` and
    /// `fault_address` (Arm ARM D1.10.2).
    fn take_exception(&mut self, syndrome: u64, fault_address: u64) {
        let offset = super::pstate::synchronous_vector(self.registers.pstate);
        // SAFETY: these EL1 registers belong to the vCPU that just trapped on this CPU; writing them is what taking an exception to EL1 does.
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
            let address = low_word(sysreg::far_el2());
            self.trapped32().inject_external_abort(abort, address);
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
            self.trapped32().inject_undefined();
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

/// The AArch32 PL1 registers of the vCPU that trapped on this CPU, through
/// the AArch64 registers they map to (SCTLR = SCTLR_EL1[31:0], DFAR =
/// FAR_EL1[31:0], IFAR = FAR_EL1[63:32], DFSR = ESR_EL1, IFSR = IFSR32_EL2).
/// Only [`TrappedVcpu`] makes one, while that vCPU's state is live.
struct LiveAarch32El1;

impl Pl1Registers for LiveAarch32El1 {
    fn sctlr(&self) -> u32 {
        low_word(sysreg::sctlr_el1())
    }

    fn vbar(&self) -> u32 {
        low_word(sysreg::vbar_el1())
    }

    fn ttbcr(&self) -> u32 {
        low_word(sysreg::tcr_el1())
    }

    fn write_spsr(&mut self, mode: u64, value: u32) {
        // SAFETY: the banked SPSR belongs to the vCPU that just trapped on this CPU (the only holder of a `LiveAarch32El1`); writing it is what taking an exception to that mode does.
        unsafe {
            match mode {
                ps::MODE_UND => sysreg::write_spsr_und(u64::from(value)),
                _ => sysreg::write_spsr_abt(u64::from(value)),
            }
        }
    }

    fn write_data_fault(&mut self, status: u32, address: u32) {
        let far = sysreg::far_el1();
        // SAFETY: DFSR (ESR_EL1[31:0]) and DFAR (FAR_EL1[31:0]) are the trapped vCPU's, as above.
        unsafe {
            sysreg::write_esr_el1(u64::from(status));
            sysreg::write_far_el1(far & !0xffff_ffff | u64::from(address));
        }
    }

    fn write_prefetch_fault(&mut self, status: u32, address: u32) {
        let far = sysreg::far_el1();
        // SAFETY: IFSR (IFSR32_EL2) and IFAR (FAR_EL1[63:32]) are the trapped vCPU's, as above.
        unsafe {
            sysreg::write_ifsr32_el2(u64::from(status));
            sysreg::write_far_el1(far & 0xffff_ffff | u64::from(address) << 32);
        }
    }
}
