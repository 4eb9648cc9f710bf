//! Attacks on scheduling: a vCPU that never gives its CPU back, and floods
//! of the cheapest traps. The bystander's timer interrupts, due every
//! period, are the check: it must get its CPU within a slice of each.

use chroma_guest_rt::psci;
use chroma_guest_rt::Boot;

use crate::{expect, ok_with, spin_counting, Case, Needs, Outcome};

/// The catalogue's scheduling cases.
pub static CASES: &[Case] = &[
    case("sched-spin-all-masked", Needs::Any, spin_all_masked),
    case("sched-wfe-flood", Needs::Any, wfe_flood),
    case("sched-hvc-flood", Needs::Any, hvc_flood),
    case("sched-wfi-sleeps", Needs::Any, wfi_sleeps),
];

const fn case(name: &'static str, needs: Needs, run: fn(&Boot) -> Outcome) -> Case {
    Case { name, needs, run }
}

/// 500 ms of spinning with D, A, I and F masked: only the hypervisor's own
/// timer takes the CPU back.
fn spin_all_masked(_: &Boot) -> Outcome {
    chroma_guest_rt::exceptions::mask_irqs();
    let iterations = spin_counting(500);
    ok_with("iterations", iterations)
}

/// 20 000 WFEs (each may trap to the hypervisor, which yields the CPU).
fn wfe_flood(_: &Boot) -> Outcome {
    for _ in 0..20_000 {
        // SAFETY: SEVL sets the event register, so WFE completes at once when not trapped; trapped, the hypervisor yields and returns.
        unsafe { core::arch::asm!("sevl", "wfe", options(nostack, nomem)) };
    }
    ok_with("wfes", 20_000)
}

/// 20 000 HVCs (PSCI_VERSION), the cheapest round trip to EL2.
fn hvc_flood(_: &Boot) -> Outcome {
    let first = psci::call(psci::PSCI_VERSION, 0, 0, 0);
    for _ in 0..20_000 {
        let version = psci::call(psci::PSCI_VERSION, 0, 0, 0);
        expect("PSCI_VERSION", version as u64, first as u64)?;
    }
    ok_with("calls", 20_000)
}

/// WFI with only the virtual timer due in 50 ms, IRQs masked: the vCPU
/// sleeps (the bystander runs) and wakes for the timer.
fn wfi_sleeps(_: &Boot) -> Outcome {
    chroma_guest_rt::exceptions::mask_irqs();
    let start = chroma_guest_rt::timer::now();
    chroma_guest_rt::timer::arm_ms(50);
    let mut wakes = 0u64;
    while chroma_guest_rt::timer::control() & 0b100 == 0 {
        // SAFETY: waits for the timer; no memory is involved.
        unsafe { core::arch::asm!("wfi", options(nostack, nomem)) };
        wakes += 1;
        if chroma_guest_rt::timer::now() - start > chroma_guest_rt::timer::ticks_in_ms(2000) {
            break;
        }
    }
    chroma_guest_rt::timer::disarm();
    let slept =
        (chroma_guest_rt::timer::now() - start) * 1000 / chroma_guest_rt::timer::frequency();
    if slept > 2000 {
        return crate::fail("ms asleep waiting for a timer due in 50 ms", slept, 50);
    }
    ok_with("wakes", wakes)
}
