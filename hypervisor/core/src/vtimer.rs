//! The virtual generic timer as its guest sees it, as on hardware.
//!
//! The guest owns CNTV_CTL_EL0 and CNTV_CVAL_EL0 (TVAL is a view of CVAL):
//! the hypervisor never writes them, so they read back what the guest wrote
//! and a guest may re-arm through TVAL or CVAL alone. Its interrupt reaches
//! the guest the way KVM delivers it:
//!
//! - while the vCPU is on its CPU, the timer drives the physical timer PPI;
//!   EL2 acknowledges it, drops the priority and leaves it active
//!   ([`VirtualTimer::fired`]), and the virtual PPI goes out in a HW list
//!   register linked to it, so the guest's deactivation deactivates the
//!   physical PPI, which fires again at once if the line is still high;
//! - when a vCPU comes onto a CPU ([`VirtualTimer::load`]) the physical PPI
//!   is made active exactly when the vCPU's own timer interrupt is in flight,
//!   so the previous vCPU's state never blocks or doubles this one's;
//! - a vCPU off its CPU has no physical line: the scheduler asks
//!   [`VirtualTimer::wake_if_expired`] at its deadline, which makes the
//!   interrupt pending once per assertion (never while one is in flight).
//!
//! The timer condition, Arm ARM D11.2.4: the interrupt is asserted while
//! CNTV_CTL_EL0.ENABLE is 1, IMASK is 0 and ISTATUS is 1 (CVAL <= count).

use crate::vgic::{PhysicalInterrupts, VcpuMask, Vgic};

/// CNTV_CTL_EL0.ENABLE: the timer is enabled.
pub const CNTV_CTL_ENABLE: u64 = 1 << 0;
/// CNTV_CTL_EL0.IMASK: the timer's interrupt is masked.
pub const CNTV_CTL_IMASK: u64 = 1 << 1;
/// CNTV_CTL_EL0.ISTATUS (read-only): the timer condition is met.
pub const CNTV_CTL_ISTATUS: u64 = 1 << 2;

/// A vCPU's virtual timer registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimerRegisters {
    /// CNTV_CTL_EL0.
    pub control: u64,
    /// CNTV_CVAL_EL0.
    pub compare: u64,
}

impl TimerRegisters {
    /// When the interrupt output rises (the compare value), if the timer is
    /// enabled and unmasked.
    pub fn deadline(&self) -> Option<u64> {
        let armed = self.control & (CNTV_CTL_ENABLE | CNTV_CTL_IMASK) == CNTV_CTL_ENABLE;
        armed.then_some(self.compare)
    }

    /// Whether the interrupt output is asserted at virtual count `now`.
    pub fn asserted(&self, now: u64) -> bool {
        self.deadline().is_some_and(|compare| compare <= now)
    }
}

/// How the virtual timer's interrupt reaches a vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtualTimer {
    /// The PPI the guest sees (QEMU virt: 27).
    pub virtual_intid: u32,
    /// The physical timer PPI it is linked to (the same on QEMU virt).
    pub physical_intid: u32,
}

impl VirtualTimer {
    /// `vcpu` comes onto this CPU with its timer registers (already restored
    /// to the CPU) `registers`, at virtual count `now`: links its virtual
    /// PPI to the physical one, samples its line and sets the physical PPI's
    /// active state to the vCPU's (whatever the previous vCPU left).
    pub fn load(
        &self,
        vgic: &mut Vgic,
        vcpu: usize,
        registers: TimerRegisters,
        now: u64,
        physical: &mut impl PhysicalInterrupts,
    ) {
        vgic.link_physical(vcpu, self.virtual_intid, self.physical_intid);
        vgic.load_physical(vcpu, self.virtual_intid, registers.asserted(now), physical);
    }

    /// The physical timer PPI was acknowledged on the CPU `vcpu` is loaded
    /// on, and its priority dropped; it stays active until the guest
    /// deactivates the virtual interrupt. Returns the vCPUs to kick.
    pub fn fired(&self, vgic: &mut Vgic, vcpu: usize) -> VcpuMask {
        vgic.link_physical(vcpu, self.virtual_intid, self.physical_intid);
        vgic.physical_fired(vcpu, self.virtual_intid)
    }

    /// For a vCPU off its CPU (its timer does not drive the physical PPI):
    /// makes the interrupt pending if the timer condition holds at `now` and
    /// the interrupt is not in flight already. Returns whether it did (the
    /// vCPU should wake up).
    pub fn wake_if_expired(
        &self,
        vgic: &mut Vgic,
        vcpu: usize,
        registers: TimerRegisters,
        now: u64,
    ) -> bool {
        registers.asserted(now) && vgic.assert_line(vcpu, self.virtual_intid)
    }

    /// When the scheduler must look at `vcpu` for its timer: the deadline,
    /// unless the timer is disabled or masked or its interrupt is in flight
    /// (then the guest has to act first).
    pub fn deadline(&self, vgic: &Vgic, vcpu: usize, registers: TimerRegisters) -> Option<u64> {
        registers
            .deadline()
            .filter(|_| !vgic.is_in_flight(vcpu, self.virtual_intid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_condition_needs_enable_no_mask_and_an_expired_compare() {
        let armed = TimerRegisters {
            control: CNTV_CTL_ENABLE,
            compare: 100,
        };
        assert_eq!(armed.deadline(), Some(100));
        assert!(!armed.asserted(99));
        assert!(armed.asserted(100));
        // ISTATUS is read-only status; it does not change the condition.
        let reading = TimerRegisters {
            control: CNTV_CTL_ENABLE | CNTV_CTL_ISTATUS,
            ..armed
        };
        assert!(reading.asserted(100));
        let masked = TimerRegisters {
            control: CNTV_CTL_ENABLE | CNTV_CTL_IMASK,
            ..armed
        };
        assert_eq!(masked.deadline(), None);
        assert!(!masked.asserted(u64::MAX));
        let disabled = TimerRegisters {
            control: 0,
            ..armed
        };
        assert!(!disabled.asserted(u64::MAX));
    }
}
