//! The bystander: a VM on the attacker's physical CPU that sets CPU state of
//! its own, takes a virtual timer interrupt every period, and checks at
//! each that its state is untouched and how late the interrupt came.

use chroma_guest_rt::args::BootArgs;
use chroma_guest_rt::shared::Shared;
use chroma_guest_rt::{exceptions, println, timer, Boot};

use crate::gic::Attack;

/// Ticks taken, the deadline of the next, the worst lateness (counter
/// ticks), missed deadlines, interrupts and exceptions nobody asked for,
/// the first register found changed (index + 1), the end.
static TICKS: Shared<u64> = Shared::new(0);
static DEADLINE: Shared<u64> = Shared::new(0);
static PERIOD: Shared<u64> = Shared::new(0);
static END: Shared<u64> = Shared::new(0);
static WORST: Shared<u64> = Shared::new(0);
static MISSED: Shared<u64> = Shared::new(0);
static UNEXPECTED_IRQS: Shared<u64> = Shared::new(0);
static UNEXPECTED_EXCEPTIONS: Shared<u64> = Shared::new(0);
static CHANGED: Shared<u64> = Shared::new(0);
static DONE: Shared<bool> = Shared::new(false);
static REPORTED: Shared<u64> = Shared::new(0);
/// A tick this late (or later) is reported, at most `LATE_REPORTS` times.
const LATE_REPORTED_MS: u64 = 40;
const LATE_REPORTS: u64 = 20;

/// What the bystander writes to the registers it owns.
const MINE: u64 = 0xb157_a4de_0000_0001;

type Read = fn() -> u64;

/// The registers watched: each read at the start and at every tick.
static WATCHED: [(&str, Read); 25] = [
    ("TPIDR_EL1", || crate::mrs!("S3_0_C13_C0_4")),
    ("TPIDR_EL0", || crate::mrs!("S3_3_C13_C0_2")),
    ("TPIDRRO_EL0", || crate::mrs!("S3_3_C13_C0_3")),
    ("CONTEXTIDR_EL1", || crate::mrs!("S3_0_C13_C0_1")),
    ("CNTKCTL_EL1", || crate::mrs!("S3_0_C14_C1_0")),
    ("MDSCR_EL1", || crate::mrs!("S2_0_C0_C2_2")),
    ("DBGBVR0_EL1", || crate::mrs!("S2_0_C0_C0_4")),
    ("DBGBCR0_EL1", || crate::mrs!("S2_0_C0_C0_5")),
    ("DBGBVR1_EL1", || crate::mrs!("S2_0_C0_C1_4")),
    ("DBGBCR1_EL1", || crate::mrs!("S2_0_C0_C1_5")),
    ("DBGWVR0_EL1", || crate::mrs!("S2_0_C0_C0_6")),
    ("DBGWCR0_EL1", || crate::mrs!("S2_0_C0_C0_7")),
    ("OSLSR_EL1", || crate::mrs!("S2_0_C1_C1_4")),
    ("PMCR_EL0", || {
        crate::mrs!("S3_3_C9_C12_0") & !0x3f_0000_0000_u64 & 0x7ff
    }),
    ("PMCCNTR_EL0", || crate::mrs!("S3_3_C9_C13_0")),
    ("PMEVCNTR0_EL0", || crate::mrs!("S3_3_C14_C8_0")),
    ("PMEVTYPER0_EL0", || crate::mrs!("S3_3_C14_C12_0")),
    ("PMCCFILTR_EL0", || crate::mrs!("S3_3_C14_C15_7")),
    ("PMCNTENSET_EL0", || crate::mrs!("S3_3_C9_C12_1")),
    ("PMINTENSET_EL1", || crate::mrs!("S3_0_C9_C14_1")),
    ("PMOVSSET_EL0", || crate::mrs!("S3_3_C9_C14_3")),
    ("PMSELR_EL0", || crate::mrs!("S3_3_C9_C12_5")),
    ("ACTLR_EL1", || crate::mrs!("S3_0_C1_C0_1")),
    ("APIAKeyLo_EL1", || {
        if crate::sysreg::has_pointer_auth() {
            crate::mrs!("S3_0_C2_C1_0")
        } else {
            0
        }
    }),
    ("APGAKeyLo_EL1", || {
        if crate::sysreg::has_pointer_auth() {
            crate::mrs!("S3_0_C2_C3_0")
        } else {
            0
        }
    }),
];

/// The values read at the start; the GIC priority mask is the last slot.
static mut SNAPSHOT: [u64; 26] = [0; 26];
/// The GIC, for the priority mask.
static mut GIC: Option<Attack> = None;

/// Called by `catch` for any synchronous exception in the bystander.
pub fn unexpected_exception() {
    UNEXPECTED_EXCEPTIONS.set(UNEXPECTED_EXCEPTIONS.get() + 1);
}

fn pmr() -> u64 {
    // SAFETY: written once in `run` before interrupts are enabled.
    match unsafe { GIC } {
        Some(gic) => u64::from(gic.pmr()),
        None => 0,
    }
}

/// Compares every watched register with the snapshot; records the first
/// that differs.
fn check_state() {
    if CHANGED.get() != 0 {
        return;
    }
    for (index, (_, read)) in WATCHED.iter().enumerate() {
        // SAFETY: the snapshot is written in `run` before the first tick and only read afterwards, on this CPU.
        if read() != unsafe { SNAPSHOT[index] } {
            CHANGED.set(index as u64 + 1);
            return;
        }
    }
    // SAFETY: as above.
    if pmr() != unsafe { SNAPSHOT[WATCHED.len()] } {
        CHANGED.set(WATCHED.len() as u64 + 1);
    }
}

fn tick(intid: u32, _cpu: usize) {
    if intid != timer::VIRTUAL_TIMER_INTID {
        UNEXPECTED_IRQS.set(UNEXPECTED_IRQS.get() + 1);
        return;
    }
    let now = timer::now();
    let deadline = DEADLINE.get();
    let late = now.saturating_sub(deadline);
    if late > WORST.get() {
        WORST.set(late);
    }
    TICKS.set(TICKS.get() + 1);
    let late_ms = late * 1000 / timer::frequency();
    if late_ms >= LATE_REPORTED_MS && REPORTED.get() < LATE_REPORTS {
        REPORTED.set(REPORTED.get() + 1);
        chroma_guest_rt::println!(
            "hostile: bystander late {} ms at {} ms",
            late_ms,
            crate::now_ms()
        );
    }
    check_state();
    let period = PERIOD.get();
    let mut next = deadline + period;
    while next <= now {
        next += period;
        MISSED.set(MISSED.get() + 1);
    }
    if now >= END.get() {
        timer::disarm();
        DONE.set(true);
        return;
    }
    DEADLINE.set(next);
    timer::rearm_cval(next);
}

/// Runs the bystander to its end and powers off.
pub fn run(boot: &'static Boot, args: &BootArgs<'_>) -> ! {
    crate::catch::be_bystander();
    let period_ms = args.number("hostile.period_ms").unwrap_or(10).max(1);
    let duration_ms = args.number("hostile.duration_ms").unwrap_or(5000);
    println!(
        "hostile: bystander start, period {} ms, duration {} ms",
        period_ms, duration_ms
    );
    // State of its own.
    crate::msr!("S3_0_C13_C0_4", MINE);
    crate::msr!("S3_3_C13_C0_2", MINE ^ 2);
    crate::msr!("S3_3_C13_C0_3", MINE ^ 3);
    crate::msr!("S3_0_C13_C0_1", 0x5);
    crate::msr!("S3_0_C14_C1_0", 0x3);
    if crate::sysreg::has_pointer_auth() {
        crate::msr!("S3_0_C2_C1_0", MINE ^ 4);
        crate::msr!("S3_0_C2_C3_0", MINE ^ 5);
    }
    let gic = Attack::new(boot).ok();
    // SAFETY: single CPU, no interrupts enabled yet: nothing else accesses these statics now; afterwards they are only read.
    unsafe {
        GIC = gic;
        for (index, (_, read)) in WATCHED.iter().enumerate() {
            SNAPSHOT[index] = read();
        }
        SNAPSHOT[WATCHED.len()] = pmr();
    }
    if let Some(rt_gic) = boot.platform.gic {
        rt_gic.enable_private(timer::VIRTUAL_TIMER_INTID);
    }
    let period = timer::ticks_in_ms(period_ms);
    let start = timer::now();
    PERIOD.set(period);
    END.set(start + timer::ticks_in_ms(duration_ms));
    DEADLINE.set(start + period);
    exceptions::set_irq_handler(Some(tick));
    timer::rearm_cval(start + period);
    crate::msr!("S3_3_C14_C3_1", 1); // CNTV_CTL_EL0: enabled, unmasked.
    exceptions::unmask_irqs();
    while !DONE.get() {
        exceptions::wait_for_interrupt_if(|| !DONE.get());
    }
    exceptions::mask_irqs();
    let frequency = timer::frequency();
    let state = match usize::try_from(CHANGED.get()) {
        Ok(0) => "ok",
        Ok(index) if index <= WATCHED.len() => WATCHED[index - 1].0,
        _ => "GIC priority mask",
    };
    println!(
        "hostile: bystander done ticks={} expected={} max_late_us={} missed={} unexpected_irqs={} unexpected_exceptions={} state={}",
        TICKS.get(),
        duration_ms / period_ms,
        WORST.get() * 1_000_000 / frequency,
        MISSED.get(),
        UNEXPECTED_IRQS.get(),
        UNEXPECTED_EXCEPTIONS.get(),
        state
    );
    chroma_guest_rt::power_off()
}
