//! The two interrupt seams.
//!
//! * [`InterruptController`]: the board's physical interrupt controller as
//!   the hypervisor uses it from one CPU (acknowledge, end, send an IPI to
//!   another CPU, enable a source). GICv2 and GICv3 implement it in the
//!   arch crate; a board without a GIC (the Raspberry Pi 3's local
//!   controller) implements it too.
//! * The virtual delivery path is [`ListRegisters`](crate::vgic::ListRegisters):
//!   the vGIC model decides what each vCPU sees and writes it there. The
//!   GIC's hardware list registers implement it; a software virtual CPU
//!   interface that raises HCR_EL2.VI/VF (a board without a GIC
//!   virtualization extension) implements the same trait.
//!
//! [`IrqRoles`] says which physical interrupt means what (the board's timer
//! interrupts come from its device tree), so the loop that drains them is
//! portable.

/// The physical interrupt controller, from the calling CPU's point of view.
pub trait InterruptController {
    /// How the controller addresses another CPU for an IPI (affinity, or a
    /// CPU interface mask), learnt from that CPU itself.
    type CpuTarget: Copy + Default;

    /// Acknowledges the highest-priority pending interrupt, if any.
    fn acknowledge(&self) -> Option<u32>;
    /// Ends an interrupt this CPU acknowledged (priority drop and deactivation).
    fn end_of_interrupt(&self, intid: u32);
    /// This CPU's target, to publish for the other CPUs.
    fn this_cpu(&self) -> Self::CpuTarget;
    /// Sends IPI `intid` (an SGI on a GIC) to `target`.
    fn send_ipi(&self, target: Self::CpuTarget, intid: u32);
    /// Enables a shared interrupt for the hypervisor, routed to this CPU.
    fn enable_shared(&self, intid: u32);
}

/// What a physical interrupt means to the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqRole {
    /// Another CPU asks this one to look at its vCPUs again.
    Kick,
    /// The virtual interface's maintenance interrupt (list registers ran low).
    Maintenance,
    /// The hypervisor's own timer: a slice ended or a deadline passed.
    HypervisorTimer,
    /// The loaded vCPU's virtual timer fired.
    VirtualTimer,
    /// The board NIC behind the uplink.
    Uplink,
    /// Nothing the hypervisor enabled (spurious or stale): just end it.
    Unexpected,
}

/// The physical interrupt numbers the hypervisor uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqRoles {
    /// The IPI one CPU sends another.
    pub kick: u32,
    /// The virtual interface's maintenance interrupt.
    pub maintenance: u32,
    /// The hypervisor (EL2 / PL2) physical timer.
    pub hypervisor_timer: u32,
    /// The virtual timer.
    pub virtual_timer: u32,
    /// The uplink NIC's interrupt, when there is one.
    pub uplink: Option<u32>,
}

impl IrqRoles {
    /// What `intid` means.
    pub fn classify(&self, intid: u32) -> IrqRole {
        if intid == self.virtual_timer {
            IrqRole::VirtualTimer
        } else if intid == self.hypervisor_timer {
            IrqRole::HypervisorTimer
        } else if intid == self.kick {
            IrqRole::Kick
        } else if intid == self.maintenance {
            IrqRole::Maintenance
        } else if Some(intid) == self.uplink {
            IrqRole::Uplink
        } else {
            IrqRole::Unexpected
        }
    }

    /// The private interrupts every CPU enables for the hypervisor.
    pub fn private_interrupts(&self) -> [u32; 4] {
        [
            self.kick,
            self.maintenance,
            self.hypervisor_timer,
            self.virtual_timer,
        ]
    }
}

/// How an acknowledged interrupt is completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// End it now (priority drop and deactivation).
    End,
    /// The handler completed it itself: an interrupt linked to a virtual
    /// one (the virtual timer) had its priority dropped and stays active
    /// until the guest deactivates the virtual interrupt.
    HandledByHandler,
}

/// The most interrupts one [`drain`] acknowledges. A level-sensitive line
/// that its handler cannot lower (a device stuck asserting, a maintenance
/// condition only the next entry clears) would otherwise keep the CPU in
/// the loop for ever; past the bound, the rest waits for the next exit and
/// the scheduler, the hypervisor timer and the other vCPUs still run.
pub const DRAIN_MAX: usize = 64;

/// Acknowledges pending interrupts (at most [`DRAIN_MAX`]), hands each to
/// `handle` with its role, and ends those the handler leaves to it.
/// Returns how many were handled.
pub fn drain<I: InterruptController>(
    controller: &I,
    roles: &IrqRoles,
    mut handle: impl FnMut(IrqRole, u32) -> Completion,
) -> usize {
    let mut count = 0;
    while count < DRAIN_MAX {
        let Some(intid) = controller.acknowledge() else {
            break;
        };
        if handle(roles.classify(intid), intid) == Completion::End {
            controller.end_of_interrupt(intid);
        }
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::RefCell;

    const ROLES: IrqRoles = IrqRoles {
        kick: 0,
        maintenance: 25,
        hypervisor_timer: 26,
        virtual_timer: 27,
        uplink: Some(79),
    };

    /// A controller with a queue of pending interrupts that records ends.
    #[derive(Default)]
    struct Queue {
        pending: RefCell<alloc::vec::Vec<u32>>,
        ended: RefCell<alloc::vec::Vec<u32>>,
    }

    impl InterruptController for Queue {
        type CpuTarget = u8;
        fn acknowledge(&self) -> Option<u32> {
            self.pending.borrow_mut().pop()
        }
        fn end_of_interrupt(&self, intid: u32) {
            self.ended.borrow_mut().push(intid);
        }
        fn this_cpu(&self) -> u8 {
            0
        }
        fn send_ipi(&self, _target: u8, _intid: u32) {}
        fn enable_shared(&self, _intid: u32) {}
    }

    #[test]
    fn each_interrupt_gets_its_role_and_is_ended_once() {
        let queue = Queue::default();
        queue.pending.borrow_mut().extend([1000, 79, 25, 0, 26, 27]);
        let mut seen = alloc::vec::Vec::new();
        let count = drain(&queue, &ROLES, |role, intid| {
            seen.push((role, intid));
            Completion::End
        });
        assert_eq!(count, 6);
        assert_eq!(
            seen,
            [
                (IrqRole::VirtualTimer, 27),
                (IrqRole::HypervisorTimer, 26),
                (IrqRole::Kick, 0),
                (IrqRole::Maintenance, 25),
                (IrqRole::Uplink, 79),
                (IrqRole::Unexpected, 1000)
            ]
        );
        assert_eq!(*queue.ended.borrow(), [27, 26, 0, 25, 79, 1000]);
    }

    /// A controller whose one interrupt is always pending again (a level
    /// that nothing lowers).
    struct Stuck {
        acknowledged: core::cell::Cell<usize>,
    }

    impl InterruptController for Stuck {
        type CpuTarget = u8;
        fn acknowledge(&self) -> Option<u32> {
            self.acknowledged.set(self.acknowledged.get() + 1);
            Some(25)
        }
        fn end_of_interrupt(&self, _intid: u32) {}
        fn this_cpu(&self) -> u8 {
            0
        }
        fn send_ipi(&self, _target: u8, _intid: u32) {}
        fn enable_shared(&self, _intid: u32) {}
    }

    #[test]
    fn a_line_that_stays_asserted_does_not_hold_the_cpu() {
        let stuck = Stuck {
            acknowledged: core::cell::Cell::new(0),
        };
        let count = drain(&stuck, &ROLES, |_, _| Completion::End);
        assert_eq!(count, DRAIN_MAX);
        assert_eq!(stuck.acknowledged.get(), DRAIN_MAX);
    }

    #[test]
    fn an_interrupt_its_handler_completed_is_not_ended_again() {
        // The virtual timer's PPI stays active for the guest to deactivate:
        // ending it here would deactivate it under the guest's feet.
        let queue = Queue::default();
        queue.pending.borrow_mut().extend([26, 27]);
        drain(&queue, &ROLES, |role, _| match role {
            IrqRole::VirtualTimer => Completion::HandledByHandler,
            _ => Completion::End,
        });
        assert_eq!(*queue.ended.borrow(), [26]);
    }

    #[test]
    fn without_an_uplink_its_old_number_is_unexpected() {
        let roles = IrqRoles {
            uplink: None,
            ..ROLES
        };
        assert_eq!(roles.classify(79), IrqRole::Unexpected);
        assert_eq!(roles.private_interrupts(), [0, 25, 26, 27]);
    }
}
