//! Interrupts: the network device's SPI and the virtual timer, and a sleep
//! (WFI) that ends on either.
//!
//! The handler runs on the boot CPU (the SPI is routed there) and only
//! writes the `Shared` cells below; the main loop clears `WOKEN` before it
//! polls the stack and sleeps only if nothing set it since. Both lines are
//! level-triggered, so the handler silences the source before the runtime
//! ends the interrupt: it acknowledges the device's InterruptStatus, or
//! disarms the timer.

use chroma_guest_rt::exceptions;
use chroma_guest_rt::shared::Shared;
use chroma_guest_rt::timer;

use crate::device::MmioSlot;

/// Set by the handler on any interrupt; cleared by the main loop.
static WOKEN: Shared<bool> = Shared::new(false);
/// The device's register base, for the acknowledgement in the handler (0: none).
static DEVICE_BASE: Shared<usize> = Shared::new(0);
/// The device's INTID (0: none).
static DEVICE_INTID: Shared<u32> = Shared::new(0);
/// Device interrupts taken.
static DEVICE_INTERRUPTS: Shared<u64> = Shared::new(0);
/// Timer interrupts taken.
static TIMER_INTERRUPTS: Shared<u64> = Shared::new(0);
/// Interrupts are wired (a GIC exists and [`init`] ran); otherwise sleeping
/// is a busy wait, since nothing could end a WFI.
static INTERRUPTS_WIRED: Shared<bool> = Shared::new(false);

/// How the main loop learns about received frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wakeup {
    /// The device's SPI, routed to this CPU.
    Interrupt(u32),
    /// No usable interrupt (no GIC or none in the DTB): the timer wakes the
    /// loop every [`POLL_INTERVAL_MS`] to look.
    Polling,
}

/// Polling period when the device has no usable interrupt.
pub const POLL_INTERVAL_MS: u64 = 1;

fn handle(intid: u32, _cpu: usize) {
    if intid == timer::VIRTUAL_TIMER_INTID {
        timer::disarm();
        TIMER_INTERRUPTS.set(TIMER_INTERRUPTS.get().wrapping_add(1));
    } else if intid == DEVICE_INTID.get() && DEVICE_BASE.get() != 0 {
        let slot = MmioSlot {
            base: DEVICE_BASE.get(),
            size: 0,
            intid: Some(intid),
        };
        slot.acknowledge_interrupt();
        DEVICE_INTERRUPTS.set(DEVICE_INTERRUPTS.get().wrapping_add(1));
    }
    WOKEN.set(true);
}

/// Installs the handler, enables the timer's PPI and, if the GIC and the DTB
/// allow, the device's SPI routed to this CPU; unmasks IRQs.
pub fn init(slot: &MmioSlot) -> Wakeup {
    let Some(gic) = chroma_guest_rt::boot::boot().and_then(|boot| boot.platform.gic) else {
        return Wakeup::Polling;
    };
    exceptions::set_irq_handler(Some(handle));
    INTERRUPTS_WIRED.set(true);
    gic.enable_private(timer::VIRTUAL_TIMER_INTID);
    let wakeup = match slot.intid {
        Some(intid) if intid >= 32 => {
            DEVICE_BASE.set(slot.base);
            DEVICE_INTID.set(intid);
            chroma_guest_rt::shared::publish();
            gic.enable_shared(intid);
            Wakeup::Interrupt(intid)
        }
        _ => Wakeup::Polling,
    };
    exceptions::unmask_irqs();
    wakeup
}

/// Forgets earlier wake-ups: call before looking for work.
pub fn clear_woken() {
    WOKEN.set(false);
}

/// Sleeps until an interrupt, or until the virtual counter reaches
/// `deadline`, unless `work_pending` (asked with IRQs masked) says there is
/// something to do already. Returns at once if an interrupt came since
/// [`clear_woken`].
pub fn sleep_until(deadline: u64, mut work_pending: impl FnMut() -> bool) {
    if timer::now() >= deadline {
        return;
    }
    if !INTERRUPTS_WIRED.get() {
        while timer::now() < deadline && !work_pending() {
            core::hint::spin_loop();
        }
        return;
    }
    timer::arm_at(deadline);
    exceptions::wait_for_interrupt_if(|| !WOKEN.get() && !work_pending());
    timer::disarm();
}

/// Device and timer interrupts taken so far.
pub fn interrupt_counts() -> (u64, u64) {
    (DEVICE_INTERRUPTS.get(), TIMER_INTERRUPTS.get())
}
