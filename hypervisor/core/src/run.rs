//! The per-CPU run loop's decisions, apart from the registers they act on.
//!
//! Every vCPU is pinned to one physical CPU. Each CPU runs its vCPUs
//! round-robin ([`RoundRobin`]): a vCPU runs until it traps; WFI with
//! nothing pending parks it ([`after_exit`]) until an interrupt for it
//! arrives (its virtual timer, an SGI, a device); when several are runnable
//! a slice on the hypervisor timer rotates them ([`entry_deadline`]). A CPU
//! with nothing to run sleeps until the earliest virtual-timer deadline of
//! its parked vCPUs ([`next_deadline`]). The binary does the register work
//! (through the arch crate) and follows these answers.

use crate::vcpu::Action;
use crate::vm::{Power, VmCore};

/// Time slice when several vCPUs share a CPU.
pub const SLICE_MS: u64 = 10;
/// A VM whose NIC defers TX kicks exits at least this often (so it is polled).
pub const POLL_MS: u64 = 1;
/// The console CPU looks at typed input at least this often.
pub const CONSOLE_POLL_MS: u64 = 20;
/// Any other CPU wakes at least this often with nothing to do.
pub const IDLE_WAKE_MS: u64 = 1000;

/// Whether vCPU `id` of `vm` can run: its VM runs, it is on (or starting),
/// and it is not parked in WFI with nothing pending. While a SYSTEM_RESET
/// clears RAM only vCPU 0 is: its turns clear a chunk each (the CPU takes
/// turns with its other vCPUs in between), the others stay off.
pub fn runnable(vm: &VmCore, id: usize, waiting: bool) -> bool {
    if vm.is_stopped() {
        return false;
    }
    if vm.reset_in_progress() {
        return id == 0;
    }
    match vm.power(id) {
        Power::OnPending => true,
        Power::On => !waiting || vm.vgic.lock().has_pending(id),
        Power::Off => false,
    }
}

/// Round-robin choice among a CPU's vCPUs.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoundRobin {
    next: usize,
}

impl RoundRobin {
    /// The first runnable vCPU of `count`, starting after the last pick.
    pub fn pick(&mut self, count: usize, runnable: impl Fn(usize) -> bool) -> Option<usize> {
        let chosen = (0..count)
            .map(|i| (self.next + i) % count)
            .find(|&k| runnable(k))?;
        self.next = (chosen + 1) % count;
        Some(chosen)
    }
}

/// Counter ticks per millisecond, never 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    ticks_per_ms: u64,
}

impl Clock {
    /// A clock from the counter frequency in Hz.
    pub fn from_frequency(hz: u64) -> Self {
        Self {
            ticks_per_ms: (hz / 1000).max(1),
        }
    }

    /// Ticks in `ms` milliseconds.
    pub fn ticks(&self, ms: u64) -> u64 {
        ms.saturating_mul(self.ticks_per_ms)
    }

    /// Milliseconds in `ticks`.
    pub fn ms(&self, ticks: u64) -> u64 {
        ticks / self.ticks_per_ms
    }
}

/// When the hypervisor must take the CPU back from the vCPU it enters at
/// `now`: the end of a slice when others are runnable here, and the next
/// NIC poll when its VM defers kicks. `None`: only its own exits.
pub fn entry_deadline(clock: Clock, now: u64, runnable_count: usize, polling: bool) -> Option<u64> {
    let slice = (runnable_count > 1).then(|| now.saturating_add(clock.ticks(SLICE_MS)));
    let poll = polling.then(|| now.saturating_add(clock.ticks(POLL_MS)));
    match (slice, poll) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The end of the running vCPU's slice after an interrupt exit: unchanged
/// when a slice already bounds it; from `now` when another vCPU of this CPU
/// became runnable meanwhile (a woken vCPU waits at most one slice, however
/// busy the running one is); `None` while it is alone.
pub fn slice_after_wake(
    clock: Clock,
    now: u64,
    slice_end: Option<u64>,
    runnable_count: usize,
) -> Option<u64> {
    slice_end.or_else(|| (runnable_count > 1).then(|| now.saturating_add(clock.ticks(SLICE_MS))))
}

/// The earliest moment a CPU must look at its vCPUs again: the periodic
/// wake (the console poll on the console CPU), `extra`, and the virtual
/// timer deadlines in `timers` (`None`: that vCPU's timer will not fire;
/// see [`crate::vtimer::VirtualTimer::deadline`]).
pub fn next_deadline(
    clock: Clock,
    now: u64,
    console_cpu: bool,
    extra: Option<u64>,
    timers: impl IntoIterator<Item = Option<u64>>,
) -> u64 {
    let wake = if console_cpu {
        CONSOLE_POLL_MS
    } else {
        IDLE_WAKE_MS
    };
    let mut deadline = now.saturating_add(clock.ticks(wake));
    if let Some(extra) = extra {
        deadline = deadline.min(extra);
    }
    timers.into_iter().flatten().fold(deadline, u64::min)
}

/// What the loop does with a vCPU after an exit was handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Enter it again.
    Reenter,
    /// Park it until an interrupt is pending for it.
    Park,
    /// Leave it (its slice ended, it is off, or its VM stopped).
    Leave,
}

/// Decides what follows `action` for vCPU `id` of `vm`.
pub fn after_exit(vm: &VmCore, id: usize, action: Action) -> Next {
    if vm.is_stopped() {
        return Next::Leave;
    }
    match action {
        Action::Continue => Next::Reenter,
        // WFI with an interrupt already pending returns at once.
        Action::Wait if vm.vgic.lock().has_pending(id) => Next::Reenter,
        Action::Wait => Next::Park,
        Action::Yield | Action::Off => Next::Leave,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_map::{VmShape, QEMU_VIRT};
    use crate::vgic::GicVersion;
    use crate::vm::{BootRequest, RamRegion, StopReason};

    fn vm(vcpus: usize) -> VmCore {
        VmCore::new(
            0,
            "t".into(),
            QEMU_VIRT,
            VmShape {
                gic: GicVersion::V2,
                vcpu_count: vcpus,
                nic_count: 0,
                arch: chroma_manifest::GuestArch::Aarch64,
            },
            RamRegion {
                ipa: 0x4000_0000,
                size: 1 << 24,
            },
            [0; crate::vgic::MAX_VCPUS],
            BootRequest {
                entry: 0x4008_0000,
                argument: 0x40f0_0000,
                cpu_on: false,
            },
        )
    }

    #[test]
    fn a_resetting_vm_has_turns_for_vcpu_0_only_until_ram_is_cleared() {
        let vm = vm(2);
        vm.power_off_all();
        assert!(!runnable(&vm, 0, false));
        vm.begin_reset();
        assert!(runnable(&vm, 0, true) && !runnable(&vm, 1, false));
        while vm.next_reset_chunk().is_some() {}
        assert!(!runnable(&vm, 0, false), "off until restarted");
    }

    #[test]
    fn round_robin_rotates_among_the_runnable() {
        let mut rr = RoundRobin::default();
        let runnable = [true, false, true];
        let picks: alloc::vec::Vec<_> = (0..4).map(|_| rr.pick(3, |k| runnable[k])).collect();
        assert_eq!(picks, [Some(0), Some(2), Some(0), Some(2)]);
        assert_eq!(rr.pick(3, |_| false), None);
        assert_eq!(rr.pick(0, |_| true), None);
    }

    #[test]
    fn a_starting_vcpu_runs_a_parked_one_waits_for_an_interrupt() {
        let vm = vm(2);
        assert!(runnable(&vm, 0, false), "vCPU 0 starts at boot");
        assert!(!runnable(&vm, 1, false), "secondaries are off");
        assert_eq!(
            vm.take_start(0),
            Some(BootRequest {
                entry: 0x4008_0000,
                argument: 0x40f0_0000,
                cpu_on: false,
            })
        );
        assert_eq!(vm.take_start(0), None, "a start is taken once");
        assert!(runnable(&vm, 0, false));
        assert!(!runnable(&vm, 0, true), "parked, nothing pending");
        assert_eq!(after_exit(&vm, 0, Action::Wait), Next::Park);
        // SGIs are enabled on GICv2: one pending wakes the parked vCPU
        // (once the guest turned the distributor on).
        vm.vgic
            .lock()
            .mmio_write(
                0,
                crate::vgic::GicFrame::Distributor(0),
                crate::exit::AccessWidth::Word,
                1,
            )
            .unwrap();
        vm.vgic.lock().inject(0, 3);
        assert!(runnable(&vm, 0, true));
        assert_eq!(after_exit(&vm, 0, Action::Wait), Next::Reenter);
        vm.set_stopped(StopReason::PoweredOff);
        assert!(!runnable(&vm, 0, false));
        assert_eq!(after_exit(&vm, 0, Action::Continue), Next::Leave);
    }

    #[test]
    fn slices_only_when_shared_and_polls_bound_the_slice() {
        let clock = Clock::from_frequency(62_500_000);
        assert_eq!(clock.ticks(1), 62_500);
        assert_eq!(entry_deadline(clock, 100, 1, false), None);
        assert_eq!(entry_deadline(clock, 100, 2, false), Some(100 + 625_000));
        assert_eq!(entry_deadline(clock, 100, 2, true), Some(100 + 62_500));
        assert_eq!(entry_deadline(clock, 100, 1, true), Some(100 + 62_500));
        assert_eq!(
            Clock::from_frequency(10).ticks(5),
            5,
            "never zero ticks per ms"
        );
    }

    #[test]
    fn the_earliest_timer_wins_and_timers_that_will_not_fire_do_not_count() {
        let clock = Clock::from_frequency(1_000_000);
        assert_eq!(next_deadline(clock, 0, true, None, [None, None]), 20_000);
        assert_eq!(
            next_deadline(clock, 0, false, None, [Some(5_000), None, Some(9_000)]),
            5_000
        );
        assert_eq!(next_deadline(clock, 0, false, None, []), 1_000_000);
        assert_eq!(next_deadline(clock, 0, true, Some(700), [Some(5_000)]), 700);
    }

    #[test]
    fn a_vcpu_woken_behind_a_spinning_one_waits_at_most_one_slice() {
        let clock = Clock::from_frequency(1_000_000);
        // Alone: no slice. Woken neighbour: a slice from now. Already
        // sliced: the slice is not extended by later interrupts.
        assert_eq!(slice_after_wake(clock, 500, None, 1), None);
        assert_eq!(slice_after_wake(clock, 500, None, 2), Some(500 + 10_000));
        assert_eq!(
            slice_after_wake(clock, 9_000, Some(10_500), 2),
            Some(10_500)
        );
    }
}
