//! The scheduler's side of the virtual timer: reads the timer registers
//! (live, or from a vCPU's saved context) and the counter, and hands them to
//! the portable model ([`chroma_core::vtimer`]), which keeps the guest's
//! view as on hardware. The hypervisor never writes a guest's CNTV_CTL_EL0.
//!
//! Called from `sched`: [`init_cpu`] once per CPU, [`load`] when a vCPU's
//! EL1 state comes onto the CPU, [`fired`] when the timer PPI is
//! acknowledged, [`wake_if_expired`] and [`deadline`] for vCPUs off the CPU.
//!
//! Lock order: takes `Vm::vgic` only, with nothing held.

use crate::arch::gic::Gic;
use crate::arch::{cpu, vcpu};
use crate::sched::system;
use crate::vm::Vm;
use chroma_core::vtimer::{TimerRegisters, VirtualTimer};

/// The virtual timer PPI, linked to the same physical PPI (QEMU virt: 27).
fn timer() -> VirtualTimer {
    let intid = system().roles.virtual_timer;
    VirtualTimer {
        virtual_intid: intid,
        physical_intid: intid,
    }
}

/// The virtual count (CNTVOFF_EL2 is 0: the physical count).
fn now() -> u64 {
    cpu::now()
}

/// Before any vCPU runs on this CPU: the virtual timer belongs to nobody,
/// so it must not fire (its reset value is UNKNOWN).
pub fn init_cpu() {
    vcpu::disable_live_timer();
}

/// vCPU `id` of `vm` was just loaded on this CPU (its timer registers are
/// the CPU's): sets the physical timer PPI's active state to the vCPU's.
pub fn load(gic: &mut Gic, vm: &Vm, id: usize) {
    timer().load(&mut vm.vgic.lock(), id, vcpu::live_timer(), now(), gic);
}

/// The timer PPI was acknowledged while vCPU `loaded` (vm, id) was on this
/// CPU. Drops its priority and leaves it active: the guest's deactivation of
/// the HW-linked virtual interrupt deactivates it. With no vCPU loaded the
/// timer is nobody's: it is disabled and the PPI deactivated.
pub fn fired(gic: &Gic, loaded: Option<(&Vm, usize)>) {
    let intid = system().roles.virtual_timer;
    gic.priority_drop(intid);
    match loaded {
        Some((vm, id)) => {
            // The vCPU is on this CPU: it sees the pending state at entry.
            let _ = timer().fired(&mut vm.vgic.lock(), id);
        }
        None => {
            init_cpu();
            gic.deactivate(intid);
        }
    }
}

/// For vCPU `id` of `vm`, not loaded, with saved timer `registers`: makes
/// its timer interrupt pending if its deadline passed and none is in
/// flight. Returns whether it did (the vCPU should wake up).
pub fn wake_if_expired(vm: &Vm, id: usize, registers: TimerRegisters, now: u64) -> bool {
    timer().wake_if_expired(&mut vm.vgic.lock(), id, registers, now)
}

/// When the scheduler must look at vCPU `id` of `vm` for its timer, given its
/// timer registers (live or saved).
pub fn deadline(vm: &Vm, id: usize, registers: TimerRegisters) -> Option<u64> {
    timer().deadline(&vm.vgic.lock(), id, registers)
}
