//! A vCPU as the ARMv7 back-end holds it, with the same interface as
//! `aarch64::vcpu` so that one scheduler drives both: registers,
//! PL1 context and virtual GIC interface state, entering it, decoding its
//! traps (HSR has ESR_EL2's layout for exceptions from AArch32, so the
//! AArch64 decoder reads it), and answering them through the core's
//! [`GuestCpu`] seam via `guest32`. Every guest is AArch32.

use super::context::Pl1Context;
use super::gic::{ActivePriorities, Gic};
use super::sysreg;
use super::vectors::{enter_guest, ExceptionKind, GuestRegisters};
use crate::aarch64::esr;
use crate::guest32::{Pl1Registers, Trapped32};
use chroma_core::vcpu::{ExternalAbort, GuestCpu, Trap};
use chroma_core::vm::BootRequest;
use chroma_core::vtimer::TimerRegisters;

/// VMPIDR bit 31 is RES1; bit 30 (U) clear: part of a multiprocessor.
const MPIDR_RES1: u32 = 1 << 31;
/// VTTBR.VMID shift.
const VTTBR_VMID_SHIFT: u64 = 48;
/// HSR.EC of a prefetch abort from a lower mode (HIFAR holds its address).
const EC_PREFETCH_ABORT_LOWER: u32 = 0x20;

/// A vCPU's state while it is not in the guest.
#[derive(Clone, Copy, Debug, Default)]
pub struct Vcpu {
    registers: GuestRegisters,
    context: Pl1Context,
    /// GICH_VMCR.
    vmcr: u64,
    /// GICH_APR.
    active_priorities: ActivePriorities,
}

impl Vcpu {
    /// Puts the vCPU in its reset state, started as `start` says (the Linux
    /// ARM boot protocol or PSCI CPU_ON, see `guest32::reset_registers`).
    /// `aarch32` is always true here: VM creation refuses a 64-bit VM on
    /// this back-end.
    pub fn reset(&mut self, start: &BootRequest, aarch32: bool) {
        let _ = aarch32;
        *self = Self::default();
        self.registers = crate::guest32::reset_registers(start);
    }

    /// Whether the vCPU's PL1 is AArch32: always.
    pub fn is_aarch32(&self) -> bool {
        true
    }

    /// Saves this CPU's PL1 and virtual-interface state into the vCPU (it
    /// is being descheduled).
    pub fn save(&mut self, gic: &Gic) {
        self.context.save();
        self.vmcr = gic.save_vmcr();
        self.active_priorities = gic.save_active_priorities();
    }

    /// Loads the vCPU's PL1 and virtual-interface state into this CPU.
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
    /// installed ([`switch_to`]); HCR traps what the hypervisor must see.
    pub unsafe fn enter(&mut self) -> ExceptionKind {
        // SAFETY: the caller's contract.
        unsafe { enter_guest(&mut self.registers) }
    }

    /// The loaded vCPU after a Hyp Trap, with its decoded trap.
    pub fn trapped(&mut self) -> (TrappedVcpu<'_>, Trap) {
        let hsr = sysreg::hsr();
        // A prefetch abort's address is in HIFAR, every other's in HDFAR.
        let far = if hsr >> 26 == EC_PREFETCH_ABORT_LOWER {
            sysreg::hifar()
        } else {
            sysreg::hdfar()
        };
        // HPFAR is UNKNOWN for a stage-2 Permission fault: its page is
        // found by translating the fault address through the guest's stage 1.
        let hpfar = if esr::fault_page_unreported(u64::from(hsr)) {
            sysreg::translate_pl1_write(far).map_or(esr::FAULT_PAGE_UNKNOWN, esr::hpfar_of)
        } else {
            u64::from(sysreg::hpfar())
        };
        let trap = esr::decode_trap(u64::from(hsr), u64::from(far), hpfar, self.registers.pstate);
        (
            TrappedVcpu {
                inner: Trapped32 {
                    registers: &mut self.registers,
                    pl1: LivePl1,
                },
                fault_address: far,
            },
            trap,
        )
    }
}

/// The loaded vCPU's virtual timer registers, read live.
pub fn live_timer() -> TimerRegisters {
    TimerRegisters {
        control: u64::from(sysreg::cntv_ctl()),
        compare: sysreg::cntv_cval(),
    }
}

/// Disables the virtual timer of this CPU while no vCPU's state is loaded
/// (its reset value is UNKNOWN: it must not raise the PPI for nobody).
pub fn disable_live_timer() {
    // SAFETY: no guest's timer state is on this CPU; a disabled timer only keeps its PPI quiet until a vCPU's registers are restored.
    unsafe { sysreg::write_cntv_ctl(0) };
    sysreg::isb();
}

/// Installs VM `vmid`'s stage-2 tables at `stage2_root` and gives the vCPU
/// about to run the MPIDR affinity Aff0 = `vcpu_id`. (`aarch32` is always
/// true on ARMv7; HCR is the same for every guest and set once per CPU.)
///
/// # Safety
/// `stage2_root` is the root of stage-2 tables that map only memory of
/// that VM, and `vmid` is the VM's own (TLB entries of another VM that
/// used it were invalidated).
pub unsafe fn switch_to(vmid: u16, stage2_root: u64, vcpu_id: usize, aarch32: bool) {
    let _ = aarch32;
    let affinity = u32::try_from(vcpu_id).unwrap_or(0) & 0xff;
    // SAFETY: the caller's contract; VMPIDR only changes what the guest reads.
    unsafe {
        sysreg::write_vttbr(u64::from(vmid & 0xff) << VTTBR_VMID_SHIFT | stage2_root);
        sysreg::write_vmpidr(MPIDR_RES1 | affinity);
    }
    sysreg::isb();
}

/// Drops this CPU's TLB entries of the VM whose stage 2 [`switch_to`]
/// installed (its VMID): for a vCPU that starts afresh.
pub fn invalidate_vm_tlbs() {
    sysreg::invalidate_current_vm_tlbs();
}

/// Drops, on every CPU, what the TLBs hold of IPA page `ipa` of VM `vmid`
/// (stage-2 root `stage2_root`), after its stage-2 descriptor changed: the
/// VM's VTTBR is installed for the invalidation (which acts on the current
/// VMID) and the previous value put back. ARMv7 cannot invalidate by IPA:
/// all of the VM's entries go.
pub fn invalidate_vm_page(vmid: u16, stage2_root: u64, ipa: u64) {
    let _ = ipa;
    let saved = sysreg::vttbr();
    // SAFETY: no guest runs on this CPU until VTTBR is restored below; meanwhile the value only selects the VMID the invalidation acts on.
    unsafe { sysreg::write_vttbr(u64::from(vmid & 0xff) << VTTBR_VMID_SHIFT | stage2_root) };
    sysreg::isb();
    sysreg::tlbi_current_vm_is();
    // SAFETY: the value this CPU held before, which it runs its guest with.
    unsafe { sysreg::write_vttbr(saved) };
    sysreg::isb();
}

/// A trapped vCPU whose PL1 state is live in this CPU's registers.
pub struct TrappedVcpu<'a> {
    inner: Trapped32<'a, LivePl1>,
    /// HDFAR or HIFAR of the trap.
    fault_address: u32,
}

impl TrappedVcpu<'_> {
    /// For a vCPU trapped in ARM state (not Thumb): the IPA of the trapped
    /// instruction, for the back-end to fetch it (stage 1 off: the PC is
    /// the IPA; on: translated with ATS1CPR). `None` otherwise.
    pub fn a32_instruction_ipa(&self) -> Option<u64> {
        let registers = &self.inner.registers;
        if registers.pstate & crate::aarch64::pstate::CPSR_T != 0 {
            return None;
        }
        let pc = (registers.pc & 0xffff_ffff) as u32;
        if self.inner.mmu_on() {
            sysreg::translate_pl1_read(pc)
        } else {
            Some(u64::from(pc))
        }
    }
}

impl GuestCpu for TrappedVcpu<'_> {
    fn register(&self, index: u8) -> u64 {
        self.inner.register(index)
    }

    fn set_register(&mut self, index: u8, value: u64) {
        self.inner.set_register(index, value);
    }

    fn pc(&self) -> u64 {
        self.inner.registers.pc
    }

    fn skip_instruction(&mut self, length: u8) {
        self.inner.skip_instruction(length);
    }

    fn inject_external_abort(&mut self, abort: ExternalAbort) {
        let address = self.fault_address;
        self.inner.inject_external_abort(abort, address);
    }

    fn inject_undefined(&mut self, _trap: &Trap) {
        self.inner.inject_undefined();
    }

    fn trapped_in_kernel(&self) -> bool {
        self.inner.in_kernel()
    }

    fn memory_cacheable(&self) -> bool {
        self.inner.memory_cacheable()
    }

    fn clean_invalidate_data_cache_by_set_way(&mut self, operand: u64) {
        sysreg::clean_invalidate_by_set_way((operand & 0xffff_ffff) as u32);
    }
}

/// The PL1 registers of the vCPU that trapped on this CPU. Only
/// [`Vcpu::trapped`] makes one, while that vCPU's state is live.
struct LivePl1;

impl Pl1Registers for LivePl1 {
    fn sctlr(&self) -> u32 {
        sysreg::sctlr()
    }

    fn vbar(&self) -> u32 {
        sysreg::vbar()
    }

    fn ttbcr(&self) -> u32 {
        sysreg::ttbcr()
    }

    fn write_spsr(&mut self, mode: u64, value: u32) {
        // SAFETY: the banked SPSR belongs to the vCPU that trapped on this CPU (the only holder of a `LivePl1`); writing it is what taking an exception to that mode does.
        unsafe {
            match mode {
                crate::aarch64::pstate::MODE_UND => sysreg::write_spsr_und(value),
                _ => sysreg::write_spsr_abt(value),
            }
        }
    }

    fn write_data_fault(&mut self, status: u32, address: u32) {
        // SAFETY: DFSR and DFAR are the trapped vCPU's, as above.
        unsafe {
            sysreg::write_dfsr(status);
            sysreg::write_dfar(address);
        }
    }

    fn write_prefetch_fault(&mut self, status: u32, address: u32) {
        // SAFETY: IFSR and IFAR are the trapped vCPU's, as above.
        unsafe {
            sysreg::write_ifsr(status);
            sysreg::write_ifar(address);
        }
    }
}

/// Writes the trap and timer controls that are the same for every vCPU on
/// this CPU: HCR, VTCR (`vtcr`), HCPTR, HSTR, HDCR, CNTHCTL, CNTVOFF, VPIDR
/// and the HYP timer (off).
///
/// # Safety
/// No guest may be running on this CPU, and `vtcr` must be the
/// [`super::hyp::vtcr`] of the stage-2 geometry every VM's tables were
/// built for: these registers decide what guests can reach and what traps.
pub unsafe fn init_controls(vtcr: u32) {
    /// PMCR.N: the number of event counters.
    const PMCR_N_SHIFT: u32 = 11;
    const PMCR_N_MASK: u32 = 0x1f;
    use super::hyp;
    // SAFETY: each value comes from its builder in `hyp`, which traps what the hypervisor must see and gives the guest the virtual counter and timer; the caller guarantees no guest runs here yet and that `vtcr` matches the stage-2 tables.
    unsafe {
        sysreg::write_hcr(hyp::hcr_for_guests());
        sysreg::write_vtcr(vtcr);
        sysreg::write_hcptr(hyp::hcptr());
        // No CP15 primary register (c0-c15) traps as a whole: HCR's TSW,
        // TAC, TIDCP and HDCR select the ones that must.
        sysreg::write_hstr(0);
        sysreg::write_hdcr(hyp::hdcr((sysreg::pmcr() >> PMCR_N_SHIFT) & PMCR_N_MASK));
        sysreg::write_cnthctl(hyp::cnthctl());
        // The guest's virtual counter reads the physical count.
        sysreg::write_cntvoff(0);
        // The guest reads this CPU's MIDR (VPIDR resets UNKNOWN).
        sysreg::write_vpidr(sysreg::midr());
        sysreg::write_cnthp_ctl(0);
    }
    // No guest translation may come from before the hypervisor owned the
    // CPU (firmware's, or the UNKNOWN contents of a cold reset).
    sysreg::invalidate_guest_tlbs();
}
