//! Host stand-ins for the back-end, for tests of code above the core.
//!
//! [`FakeListRegisters`] is one physical CPU's virtual CPU interface and the
//! physical private interrupts behind it: list registers that the test plays
//! the guest's side of ([`FakeListRegisters::guest_acknowledge`],
//! [`FakeListRegisters::guest_end_of_interrupt`]), with the HW bit's effect
//! (the guest's deactivation deactivates the linked physical interrupt), and
//! level-sensitive physical lines with their active state.

use chroma_core::vgic::{ListRegister, ListRegisters, LrState, PhysicalInterrupts};

/// Private (SGI and PPI) interrupts per physical CPU.
pub const PRIVATE_COUNT: usize = 32;

/// List registers held in memory, and the private physical interrupts of
/// the CPU they belong to.
#[derive(Clone, Debug, Default)]
pub struct FakeListRegisters {
    /// The registers.
    pub registers: [ListRegister; 4],
    /// Whether the underflow maintenance interrupt is requested.
    pub underflow: bool,
    /// Level of each private physical interrupt's line.
    pub line: [bool; PRIVATE_COUNT],
    /// Active state of each private physical interrupt.
    pub active: [bool; PRIVATE_COUNT],
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

impl PhysicalInterrupts for FakeListRegisters {
    fn is_pending(&self, intid: u32) -> bool {
        self.line.get(intid as usize).copied().unwrap_or(false)
    }
    fn set_active(&mut self, intid: u32, active: bool) {
        if let Some(slot) = self.active.get_mut(intid as usize) {
            *slot = active;
        }
    }
}

impl FakeListRegisters {
    /// Whether physical `intid` is signalled to EL2: line high, not active.
    pub fn physical_signalled(&self, intid: u32) -> bool {
        let index = intid as usize;
        index < PRIVATE_COUNT && self.line[index] && !self.active[index]
    }

    /// The guest's CPU interface acknowledges the most urgent pending entry
    /// (lowest priority value): it becomes active. Returns its INTID.
    pub fn guest_acknowledge(&mut self) -> Option<u32> {
        let entry = self
            .registers
            .iter_mut()
            .filter(|lr| lr.state == LrState::Pending)
            .min_by_key(|lr| lr.priority)?;
        entry.state = LrState::Active;
        Some(entry.intid)
    }

    /// The guest ends `intid` (EOImode 0: priority drop and deactivation):
    /// its entry stops being active, and a HW entry deactivates the physical
    /// interrupt it is linked to, as the GIC does.
    pub fn guest_end_of_interrupt(&mut self, intid: u32) {
        let Some(entry) = self.registers.iter_mut().find(|lr| {
            lr.intid == intid && matches!(lr.state, LrState::Active | LrState::PendingActive)
        }) else {
            return;
        };
        entry.state = if entry.state == LrState::PendingActive {
            LrState::Pending
        } else {
            LrState::Invalid
        };
        if let Some(physical) = entry.physical {
            self.set_active(physical, false);
        }
    }
}

#[cfg(test)]
mod tests {
    //! One physical CPU, its virtual timer and the timer PPI, with one or two
    //! single-vCPU VMs on it: guests that enable their timer once and re-arm
    //! it only through TVAL or CVAL, run against the hypervisor's handling
    //! (chroma's, through `chroma_core::vtimer`, or the old one that set
    //! IMASK), one tick at a time.

    use super::*;
    use chroma_core::exit::AccessWidth;
    use chroma_core::vgic::{GicFrame, GicVersion, Vgic};
    use chroma_core::vtimer::{TimerRegisters, VirtualTimer, CNTV_CTL_ENABLE, CNTV_CTL_IMASK};

    /// The timer PPI, virtual and physical (QEMU virt).
    const TIMER_INTID: u32 = 27;
    const TIMER: VirtualTimer = VirtualTimer {
        virtual_intid: TIMER_INTID,
        physical_intid: TIMER_INTID,
    };
    /// Distributor registers the guest writes to enable its timer PPI.
    const GICD_CTLR: u64 = 0x000;
    const GICD_ISENABLER: u64 = 0x100;
    /// Every VM here has one vCPU.
    const VCPU: usize = 0;
    /// Ticks between a timer interrupt and its next deadline.
    const PERIOD: u64 = 10;
    /// Ticks a guest spends in its timer interrupt handler.
    const HANDLER_TICKS: u64 = 3;
    /// Ticks a vCPU runs before the other one gets the CPU.
    const SLICE: u64 = 7;
    /// Ticks each simulation runs.
    const DURATION: u64 = 1000;

    /// How the hypervisor handles the virtual timer.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Hypervisor {
        /// chroma's: HW-linked list registers, the PPI left active.
        Linked,
        /// The old one: set CNTV_CTL_EL0.IMASK when the timer fires, inject a
        /// software interrupt, end the physical interrupt.
        MaskAtTimer,
    }

    /// How a guest re-arms its timer in the interrupt handler.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Rearm {
        Tval,
        Cval,
    }

    struct Guest {
        rearm: Rearm,
        /// Saved timer registers while off the CPU.
        timer: TimerRegisters,
        /// In the timer handler until this tick.
        handler_until: Option<u64>,
        /// Interrupts taken.
        taken: u64,
        /// Interrupts taken whose CNTV_CTL_EL0 did not read ENABLE, not IMASK.
        control_changed: u64,
        /// Interrupts taken while the timer condition did not hold (a
        /// duplicate or a stale interrupt).
        spurious: u64,
    }

    struct Vm {
        vgic: Vgic,
        guest: Guest,
    }

    /// One physical CPU.
    struct Machine {
        hypervisor: Hypervisor,
        now: u64,
        /// The CPU's timer registers: the loaded vCPU's.
        live: TimerRegisters,
        cpu: FakeListRegisters,
        vms: Vec<Vm>,
        loaded: usize,
    }

    impl Machine {
        fn new(hypervisor: Hypervisor, rearms: &[Rearm]) -> Self {
            let vms = rearms
                .iter()
                .map(|&rearm| {
                    let mut vgic = Vgic::new(GicVersion::V2, 1);
                    for (offset, value) in [(GICD_CTLR, 1), (GICD_ISENABLER, 1 << TIMER_INTID)] {
                        vgic.mmio_write(
                            VCPU,
                            GicFrame::Distributor(offset),
                            AccessWidth::Word,
                            value,
                        )
                        .unwrap();
                    }
                    // The guest enables its timer once: CNTV_CTL_EL0 = ENABLE.
                    let timer = TimerRegisters {
                        control: CNTV_CTL_ENABLE,
                        compare: PERIOD,
                    };
                    let guest = Guest {
                        rearm,
                        timer,
                        handler_until: None,
                        taken: 0,
                        control_changed: 0,
                        spurious: 0,
                    };
                    Vm { vgic, guest }
                })
                .collect();
            let mut machine = Machine {
                hypervisor,
                now: 0,
                live: TimerRegisters::default(),
                cpu: FakeListRegisters::default(),
                vms,
                loaded: 0,
            };
            machine.load(0);
            machine
        }

        /// The loaded timer drives the physical PPI's line.
        fn update_line(&mut self) {
            self.cpu.line[TIMER_INTID as usize] = self.live.asserted(self.now);
        }

        fn load(&mut self, k: usize) {
            self.loaded = k;
            self.live = self.vms[k].guest.timer;
            self.update_line();
            if self.hypervisor == Hypervisor::Linked {
                TIMER.load(
                    &mut self.vms[k].vgic,
                    VCPU,
                    self.live,
                    self.now,
                    &mut self.cpu,
                );
            }
        }

        fn switch(&mut self) {
            let next = (self.loaded + 1) % self.vms.len();
            if next != self.loaded {
                self.vms[self.loaded].guest.timer = self.live;
                self.load(next);
            }
        }

        /// EL2 takes the timer PPI if it is signalled.
        fn el2_interrupt(&mut self) {
            if !self.cpu.physical_signalled(TIMER_INTID) {
                return;
            }
            // Acknowledge: the physical PPI becomes active.
            self.cpu.active[TIMER_INTID as usize] = true;
            let vgic = &mut self.vms[self.loaded].vgic;
            match self.hypervisor {
                // Priority drop only.
                Hypervisor::Linked => {
                    TIMER.fired(vgic, VCPU);
                }
                Hypervisor::MaskAtTimer => {
                    self.live.control |= CNTV_CTL_IMASK;
                    vgic.inject(VCPU, TIMER_INTID);
                    // End of interrupt: priority drop and deactivation.
                    self.cpu.active[TIMER_INTID as usize] = false;
                    self.update_line();
                }
            }
        }

        /// The scheduler looks at the vCPUs off the CPU.
        fn wake_parked(&mut self) {
            for k in (0..self.vms.len()).filter(|&k| k != self.loaded) {
                let vm = &mut self.vms[k];
                match self.hypervisor {
                    Hypervisor::Linked => {
                        TIMER.wake_if_expired(&mut vm.vgic, VCPU, vm.guest.timer, self.now);
                    }
                    Hypervisor::MaskAtTimer => {
                        if vm.guest.timer.asserted(self.now) {
                            vm.guest.timer.control |= CNTV_CTL_IMASK;
                            vm.vgic.inject(VCPU, TIMER_INTID);
                        }
                    }
                }
            }
        }

        /// The loaded guest runs for one tick between an entry and an exit.
        fn run_guest(&mut self) {
            let now = self.now;
            let vm = &mut self.vms[self.loaded];
            vm.vgic.flush(VCPU, &mut self.cpu);
            let guest = &mut vm.guest;
            if guest.handler_until.is_none() {
                if let Some(intid) = self.cpu.guest_acknowledge() {
                    assert_eq!(intid, TIMER_INTID);
                    guest.taken += 1;
                    // The handler reads CNTV_CTL_EL0: what it wrote, ENABLE.
                    if self.live.control & (CNTV_CTL_ENABLE | CNTV_CTL_IMASK) != CNTV_CTL_ENABLE {
                        guest.control_changed += 1;
                    }
                    if !self.live.asserted(now) {
                        guest.spurious += 1;
                    }
                    guest.handler_until = Some(now + HANDLER_TICKS);
                }
            }
            if guest.handler_until.is_some_and(|until| now >= until) {
                // Re-arm through TVAL (a view of CVAL) or CVAL: never CTL.
                self.live.compare = match guest.rearm {
                    Rearm::Tval => now + PERIOD,
                    Rearm::Cval => self.live.compare.max(now) + PERIOD,
                };
                self.cpu.line[TIMER_INTID as usize] = self.live.asserted(now);
                self.cpu.guest_end_of_interrupt(TIMER_INTID);
                guest.handler_until = None;
            }
            vm.vgic.sync(VCPU, &mut self.cpu);
        }

        fn run(mut self) -> Vec<Guest> {
            while self.now < DURATION {
                self.now += 1;
                self.update_line();
                self.el2_interrupt();
                self.wake_parked();
                self.run_guest();
                if self.now.is_multiple_of(SLICE) {
                    self.switch();
                }
            }
            self.vms.into_iter().map(|vm| vm.guest).collect()
        }
    }

    /// Fewest interrupts a guest must see: one per period, plus the handler,
    /// plus a slice off the CPU when two VMs share it.
    const MIN_TAKEN_SHARED: u64 = DURATION / (PERIOD + HANDLER_TICKS + 2 * SLICE);

    fn assert_as_on_hardware(guests: &[Guest], min_taken: u64) {
        for (k, guest) in guests.iter().enumerate() {
            assert!(
                guest.taken >= min_taken,
                "guest {k} ({:?}): {} interrupts",
                guest.rearm,
                guest.taken
            );
            assert_eq!(
                guest.control_changed, 0,
                "guest {k}: CNTV_CTL_EL0 changed behind its back"
            );
            assert_eq!(
                guest.spurious, 0,
                "guest {k}: an interrupt with the timer condition false"
            );
        }
    }

    #[test]
    fn a_guest_that_rearms_through_tval_or_cval_alone_keeps_its_interrupts() {
        for rearm in [Rearm::Tval, Rearm::Cval] {
            let guests = Machine::new(Hypervisor::Linked, &[rearm]).run();
            assert_as_on_hardware(&guests, DURATION / (PERIOD + HANDLER_TICKS + 1));
        }
    }

    #[test]
    fn two_vms_sharing_a_cpu_each_keep_their_interrupts() {
        let guests = Machine::new(Hypervisor::Linked, &[Rearm::Tval, Rearm::Cval]).run();
        assert_as_on_hardware(&guests, MIN_TAKEN_SHARED);
    }

    /// Negative control: the model catches the old handling.
    #[test]
    fn the_old_imask_approach_stops_a_guest_that_rearms_through_tval() {
        for rearms in [
            &[Rearm::Tval][..],
            &[Rearm::Cval],
            &[Rearm::Tval, Rearm::Cval],
        ] {
            let guests = Machine::new(Hypervisor::MaskAtTimer, rearms).run();
            for guest in &guests {
                assert_eq!(
                    guest.taken, 1,
                    "one interrupt, then IMASK silences the timer"
                );
                assert_eq!(
                    guest.control_changed, 1,
                    "and the guest read IMASK it never wrote"
                );
            }
        }
    }

    /// The CPU's physical interrupts, with writes of the active state lost.
    struct NoActiveWrites<'a>(&'a mut FakeListRegisters);

    impl PhysicalInterrupts for NoActiveWrites<'_> {
        fn is_pending(&self, intid: u32) -> bool {
            self.0.is_pending(intid)
        }
        fn set_active(&mut self, _: u32, _: bool) {}
    }

    /// Switches from the first guest, in its timer handler (its interrupt
    /// active, the physical PPI with it), to the second, whose deadline is 5
    /// ticks ahead; returns whether the second one's timer can fire then.
    fn second_timer_fires_after_a_switch_mid_handler(write_active_state: bool) -> bool {
        let mut machine = Machine::new(Hypervisor::Linked, &[Rearm::Tval, Rearm::Tval]);
        while machine.vms[0].guest.handler_until.is_none() {
            machine.now += 1;
            machine.update_line();
            machine.el2_interrupt();
            machine.run_guest();
        }
        assert!(machine.cpu.active[TIMER_INTID as usize]);
        machine.vms[0].guest.timer = machine.live;
        machine.vms[1].guest.timer.compare = machine.now + 5;
        machine.loaded = 1;
        machine.live = machine.vms[1].guest.timer;
        machine.update_line();
        let vgic = &mut machine.vms[1].vgic;
        if write_active_state {
            TIMER.load(vgic, VCPU, machine.live, machine.now, &mut machine.cpu);
        } else {
            TIMER.load(
                vgic,
                VCPU,
                machine.live,
                machine.now,
                &mut NoActiveWrites(&mut machine.cpu),
            );
        }
        machine.now += 5;
        machine.update_line();
        machine.cpu.physical_signalled(TIMER_INTID)
    }

    #[test]
    fn a_switched_out_interrupt_in_flight_does_not_block_the_next_vcpu() {
        assert!(second_timer_fires_after_a_switch_mid_handler(true));
        // Negative control: without the active state set on the switch, the
        // first vCPU's interrupt in flight blocks the second one's timer.
        assert!(!second_timer_fires_after_a_switch_mid_handler(false));
    }

    #[test]
    fn guest_deactivation_of_a_hw_entry_deactivates_the_physical_interrupt() {
        let mut cpu = FakeListRegisters::default();
        cpu.active[TIMER_INTID as usize] = true;
        cpu.registers[0] = ListRegister {
            intid: TIMER_INTID,
            state: LrState::Pending,
            priority: 0xa0,
            group1: true,
            source: 0,
            physical: Some(TIMER_INTID),
        };
        assert_eq!(cpu.guest_acknowledge(), Some(TIMER_INTID));
        assert!(
            cpu.active[TIMER_INTID as usize],
            "still active while the guest handles it"
        );
        cpu.guest_end_of_interrupt(TIMER_INTID);
        assert_eq!(cpu.registers[0].state, LrState::Invalid);
        assert!(!cpu.active[TIMER_INTID as usize]);
    }
}
