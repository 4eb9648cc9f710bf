//! The probe test guest: console, PSCI, timer and SGI interrupts, a second vCPU, isolation.
//!
//! Every line starts with `probe: `. Lines starting with `probe: info ` vary
//! with the machine (GIC version, DTB address, bootargs); every other line is
//! stable and listed in `expected.txt` for the default bootargs. A line with
//! `FAIL` means a check failed; the probe carries on and still ends with
//! `probe: done`.
//!
//! Boot arguments (`/chosen/bootargs` words):
//! - `probe.ticks=N`: count N virtual timer ticks of 10 ms on vCPU 0 (default 5);
//! - `probe.nosmp`: skip the second vCPU (CPU_ON, SGI, its timer, CPU_OFF);
//! - `probe.noabort`: skip the isolation check;
//! - `probe.abort=ADDR`: the IPA the isolation check touches (default 0x0d00_0000);
//! - `probe.loop`: after `probe: done`, print `probe: heartbeat N` every 100 ms
//!   forever instead of powering off;
//! - `probe.vtimer=tval|cval|both`: after the ticks, arm the virtual timer once
//!   (CNTV_CTL_EL0 = ENABLE; on AArch32 the same registers without `_EL0`) and re-arm it from its interrupt handler only
//!   through CNTV_TVAL_EL0 (`tval`), only through CNTV_CVAL_EL0 (`cval`), or
//!   both in turn, never writing CNTV_CTL_EL0 again until the end; each
//!   interrupt checks that CNTV_CTL_EL0 reads ENABLE set and IMASK clear.
//!   Prints `probe: vtimer <how>: N interrupts, CNTV_CTL_EL0 as written` (a
//!   `FAIL` line if a read differed or the interrupts stopped);
//! - `probe.vtimer.count=N`: interrupts per variant (default 10, every 10 ms);
//! - `probe.vtimer.busy`: spin between interrupts instead of waiting in WFI,
//!   and spend 1 ms in each interrupt handler (the vCPU is preempted with its
//!   interrupt pending or active; with a deadline, as the vCPU never sleeps).
#![no_std]
#![no_main]

use chroma_guest_rt::args::BootArgs;
use chroma_guest_rt::exceptions::{self, Fault, Resolution, TrapFrame};
use chroma_guest_rt::gic::Gic;
use chroma_guest_rt::shared::{self, Shared};
use chroma_guest_rt::{entry, println, psci, smp, timer, Boot};

entry!(main);

/// Default IPA for the isolation check: inside QEMU virt's platform-bus
/// window (0x0c00_0000..0x0e00_0000, empty unless dynamic sysbus devices are
/// added) and outside chroma's guest map (RAM, PL011, GIC only).
const DEFAULT_ABORT_ADDRESS: u64 = 0x0d00_0000;
/// Timer period while counting ticks.
const TICK_PERIOD_MS: u64 = 10;
/// Heartbeat period with `probe.loop`.
const HEARTBEAT_PERIOD_MS: u64 = 100;
/// How long vCPU 0 waits for anything vCPU 1 does.
const SECONDARY_TIMEOUT_MS: u64 = 2000;
/// The SGI vCPU 0 sends to vCPU 1.
const TEST_SGI: u32 = 1;
/// The index (DTB order) of the second vCPU.
const SECOND_CPU: usize = 1;
/// Value the isolation load starts with, to tell "not loaded" from a read.
const NOT_LOADED: u64 = 0x5a5a_5a5a_5a5a_5a5a;
/// [`NOT_LOADED`] for a 32-bit load.
const NOT_LOADED_32: u32 = 0x5a5a_5a5a;
/// Interrupts per `probe.vtimer` variant by default.
const VTIMER_DEFAULT_COUNT: u64 = 10;
/// Time spent in each timer interrupt handler with `probe.vtimer.busy`.
const VTIMER_BUSY_HANDLER_MS: u64 = 1;
/// With `probe.vtimer.busy`, how long the count may take per interrupt
/// before the probe gives up (generous: the vCPU may share its CPU).
const VTIMER_BUSY_MS_PER_INTERRUPT: u64 = 200;

const MAX_CPUS: usize = chroma_guest_rt::boot::MAX_CPUS;

/// Timer interrupts taken, per CPU; each CPU writes only its own entry.
static TICKS: [Shared<u64>; MAX_CPUS] = [const { Shared::new(0) }; MAX_CPUS];
/// Whether each CPU's IRQ handler re-arms its timer; written by that CPU.
static TIMER_PERIOD_MS: [Shared<u64>; MAX_CPUS] = [const { Shared::new(0) }; MAX_CPUS];
/// SGIs taken, per CPU; each CPU writes only its own entry.
static SGIS: [Shared<u64>; MAX_CPUS] = [const { Shared::new(0) }; MAX_CPUS];

/// How vCPU 0's timer handler re-arms (a [`Rearm`]); written by vCPU 0.
static REARM: Shared<u64> = Shared::new(Rearm::WithControl as u64);
/// With `probe.vtimer`: the interrupt after which the handler stops
/// re-arming for the period (it re-arms far ahead instead).
static REARM_LAST: Shared<u64> = Shared::new(0);
/// With `probe.vtimer.busy`: the handler spends a while before returning.
static SLOW_HANDLER: Shared<bool> = Shared::new(false);
/// Interrupts whose CNTV_CTL_EL0 did not read ENABLE set and IMASK clear,
/// and the last such value; written by vCPU 0's handler.
static CONTROL_MISMATCHES: Shared<u64> = Shared::new(0);
static CONTROL_LAST_BAD: Shared<u64> = Shared::new(0);

/// How the timer handler re-arms the virtual timer.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
enum Rearm {
    /// CNTV_TVAL_EL0 then CNTV_CTL_EL0 (`timer::arm_ms`), as the ticks do.
    WithControl = 0,
    /// CNTV_TVAL_EL0 only.
    Tval = 1,
    /// CNTV_CVAL_EL0 only.
    Cval = 2,
}

impl Rearm {
    fn from_raw(raw: u64) -> Self {
        match raw {
            1 => Self::Tval,
            2 => Self::Cval,
            _ => Self::WithControl,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::WithControl => "ctl",
            Self::Tval => "tval",
            Self::Cval => "cval",
        }
    }
}

/// Progress of vCPU 1, written only by vCPU 1.
static SECONDARY_STAGE: Shared<u64> = Shared::new(Stage::NotStarted as u64);
/// vCPU 1's GICv2 CPU-interface mask, published before `Stage::Online`.
static SECONDARY_TARGET_MASK: Shared<u32> = Shared::new(0);

/// What vCPU 1 has done so far.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u64)]
enum Stage {
    NotStarted = 0,
    /// Running Rust, GIC interface up, SGI enabled, IRQs unmasked.
    Online = 1,
    /// Took the SGI from vCPU 0.
    SgiReceived = 2,
    /// Took one tick of its own virtual timer.
    TimerTick = 3,
}

/// True only around the one probing load or store: an abort taken then is
/// the probe's, whatever ESR and FAR say (a hypervisor bug in either shows
/// up as an `other fault` line, not as a hang).
static PROBING: Shared<bool> = Shared::new(false);
/// Aborts taken while probing, and the last one's syndrome and address.
static PROBE_FAULTS: Shared<u64> = Shared::new(0);
static PROBE_ESR: Shared<u64> = Shared::new(0);
static PROBE_FAR: Shared<u64> = Shared::new(0);

fn main(boot: &'static Boot) -> ! {
    let args = BootArgs::new(boot.platform.bootargs);
    println!("probe: hello from vcpu {}", chroma_guest_rt::cpu_index());
    println!("probe: info bootargs \"{}\"", boot.platform.bootargs);
    println!(
        "probe: info dtb {:#x}, {} vcpus, timer {} Hz",
        boot.dtb_address,
        boot.platform.cpu_count,
        timer::frequency()
    );
    println!(
        "probe: info arch {}, loaded at {:#x}",
        chroma_guest_rt::arch::NAME,
        boot.load_address
    );
    check_psci();
    exceptions::set_irq_handler(Some(on_irq));
    let Some(gic) = boot.platform.gic else {
        println!("probe: FAIL no GIC in the DTB");
        finish(&args, None)
    };
    println!("probe: info gic v{}", gic.version());

    let tick_count = args.number("probe.ticks").unwrap_or(5);
    count_ticks(&gic, tick_count);

    if let Some(how) = args.value("probe.vtimer") {
        let count = args
            .number("probe.vtimer.count")
            .unwrap_or(VTIMER_DEFAULT_COUNT);
        let busy = args.flag("probe.vtimer.busy");
        let variants: &[Rearm] = match how {
            "tval" => &[Rearm::Tval],
            "cval" => &[Rearm::Cval],
            "both" => &[Rearm::Tval, Rearm::Cval],
            other => {
                println!(
                    "probe: FAIL probe.vtimer={} (want tval, cval or both)",
                    other
                );
                &[]
            }
        };
        for &rearm in variants {
            check_vtimer_rearm(&gic, rearm, count, busy);
        }
    }

    if args.flag("probe.nosmp") {
        println!("probe: smp skipped");
    } else {
        check_second_cpu(boot, &gic);
    }

    if args.flag("probe.noabort") {
        println!("probe: isolation skipped");
    } else {
        let address = args.number("probe.abort").unwrap_or(DEFAULT_ABORT_ADDRESS);
        check_isolation(address);
    }
    finish(&args, Some(&gic))
}

/// PSCI_VERSION and PSCI_FEATURES for the calls the probe uses.
fn check_psci() {
    let (major, minor) = psci::version();
    println!("probe: info psci version {}.{}", major, minor);
    if major == 1 {
        // Stable across PSCI 1.0 (the minimum chroma offers) and 1.1 (QEMU 7.2+).
        println!("probe: psci version 1.x");
    } else {
        println!("probe: FAIL psci version {}.{}, want 1.x", major, minor);
    }
    if major < 1 {
        println!("probe: psci features skipped (PSCI < 1.0)");
        return;
    }
    let calls = [
        ("CPU_ON", psci::CPU_ON),
        ("CPU_OFF", psci::CPU_OFF),
        ("AFFINITY_INFO", psci::AFFINITY_INFO),
        ("SYSTEM_OFF", psci::SYSTEM_OFF),
        ("SYSTEM_RESET", psci::SYSTEM_RESET),
    ];
    let mut all_present = true;
    for (name, function) in calls {
        let result = psci::features(function);
        if result < 0 {
            println!(
                "probe: FAIL psci features {} = {}",
                name,
                psci::status_name(result)
            );
            all_present = false;
        }
    }
    if all_present {
        println!("probe: psci features ok");
    }
}

/// Counts `tick_count` virtual timer interrupts on this CPU, printing each.
fn count_ticks(gic: &Gic, tick_count: u64) {
    let cpu = chroma_guest_rt::cpu_index();
    gic.enable_private(timer::VIRTUAL_TIMER_INTID);
    start_timer(cpu, TICK_PERIOD_MS);
    let mut printed = 0;
    while printed < tick_count {
        exceptions::wait_for_interrupt_if(|| TICKS[cpu].get() <= printed);
        let ticks = TICKS[cpu].get();
        while printed < ticks.min(tick_count) {
            printed += 1;
            println!("probe: timer tick {}", printed);
        }
    }
    stop_timer(cpu);
}

fn start_timer(cpu: usize, period_ms: u64) {
    TICKS[cpu].set(0);
    TIMER_PERIOD_MS[cpu].set(period_ms);
    timer::arm_ms(period_ms);
    exceptions::unmask_irqs();
}

fn stop_timer(cpu: usize) {
    TIMER_PERIOD_MS[cpu].set(0);
    timer::disarm();
}

/// Arms the virtual timer once (CNTV_CTL_EL0 = ENABLE) and lets the IRQ
/// handler re-arm it `count` times through TVAL or CVAL alone; reports how
/// many interrupts came and whether CNTV_CTL_EL0 always read as written.
fn check_vtimer_rearm(gic: &Gic, rearm: Rearm, count: u64, busy: bool) {
    let cpu = chroma_guest_rt::cpu_index();
    gic.enable_private(timer::VIRTUAL_TIMER_INTID);
    exceptions::mask_irqs();
    TICKS[cpu].set(0);
    CONTROL_MISMATCHES.set(0);
    REARM.set(rearm as u64);
    REARM_LAST.set(count);
    SLOW_HANDLER.set(busy);
    // The one CNTV_CTL_EL0 write until the end: enabled, unmasked.
    start_timer(cpu, TICK_PERIOD_MS);
    let deadline = timer::now().saturating_add(timer::ticks_in_ms(
        count.saturating_mul(VTIMER_BUSY_MS_PER_INTERRUPT),
    ));
    let mut reported_mismatches = 0;
    loop {
        if busy {
            // Never sleeps: preempted, not parked, between interrupts.
            core::hint::spin_loop();
        } else {
            exceptions::wait_for_interrupt_if(|| {
                TICKS[cpu].get() < count && CONTROL_MISMATCHES.get() == reported_mismatches
            });
        }
        let mismatches = CONTROL_MISMATCHES.get();
        if mismatches != reported_mismatches && reported_mismatches == 0 {
            // Reported at once: a hypervisor that masks the timer stops it too.
            println!(
                "probe: FAIL vtimer {}: CNTV_CTL_EL0 read {:#x} in the handler, wrote ENABLE (IMASK clear)",
                rearm.name(),
                CONTROL_LAST_BAD.get()
            );
        }
        reported_mismatches = mismatches;
        if TICKS[cpu].get() >= count || (busy && timer::now() > deadline) {
            break;
        }
    }
    stop_timer(cpu);
    REARM.set(Rearm::WithControl as u64);
    SLOW_HANDLER.set(false);
    let taken = TICKS[cpu].get();
    if taken < count {
        println!(
            "probe: FAIL vtimer {}: {} of {} interrupts",
            rearm.name(),
            taken,
            count
        );
    } else if reported_mismatches == 0 {
        println!(
            "probe: vtimer {}: {} interrupts, CNTV_CTL_EL0 as written",
            rearm.name(),
            taken
        );
    }
}

/// The timer interrupt with `probe.vtimer`: check CNTV_CTL_EL0 and re-arm
/// through TVAL or CVAL only (far ahead after the last one, so the line
/// drops without a CNTV_CTL_EL0 write).
fn on_vtimer_interrupt(index: usize, rearm: Rearm) {
    if !timer::is_enabled_unmasked() {
        CONTROL_LAST_BAD.set(timer::control());
        CONTROL_MISMATCHES.set(CONTROL_MISMATCHES.get() + 1);
    }
    let taken = TICKS[index].get() + 1;
    TICKS[index].set(taken);
    if SLOW_HANDLER.get() {
        timer::delay_ms(VTIMER_BUSY_HANDLER_MS);
    }
    let period = if taken >= REARM_LAST.get() {
        timer::ticks_in_ms(SECONDARY_TIMEOUT_MS)
    } else {
        timer::ticks_in_ms(TIMER_PERIOD_MS[index].get())
    };
    match rearm {
        Rearm::Tval => timer::rearm_tval(period),
        _ => timer::rearm_cval(timer::now().saturating_add(period)),
    }
}

/// The IRQ handler on every CPU: count, and re-arm the timer if running.
fn on_irq(intid: u32, cpu: usize) {
    let Some(index) = (cpu < MAX_CPUS).then_some(cpu) else {
        return;
    };
    match intid {
        timer::VIRTUAL_TIMER_INTID => match Rearm::from_raw(REARM.get()) {
            rearm @ (Rearm::Tval | Rearm::Cval) if TIMER_PERIOD_MS[index].get() != 0 => {
                on_vtimer_interrupt(index, rearm)
            }
            _ => {
                TICKS[index].set(TICKS[index].get() + 1);
                match TIMER_PERIOD_MS[index].get() {
                    0 => timer::disarm(),
                    period => timer::arm_ms(period),
                }
            }
        },
        TEST_SGI => SGIS[index].set(SGIS[index].get() + 1),
        other => println!("probe: FAIL unexpected interrupt {} on vcpu {}", other, cpu),
    }
}

/// CPU_ON for vCPU 1, an SGI to it, its own timer tick, CPU_OFF.
fn check_second_cpu(boot: &Boot, gic: &Gic) {
    let Some(mpidr) = boot.platform.mpidr(SECOND_CPU) else {
        println!("probe: smp skipped (1 vcpu)");
        return;
    };
    if let Err(error) = smp::start_cpu(SECOND_CPU, secondary_main) {
        println!("probe: FAIL cpu_on vcpu 1: {:?}", error);
        return;
    }
    if !wait_for_stage(Stage::Online) {
        println!("probe: FAIL vcpu 1 did not come online");
        return;
    }
    println!("probe: vcpu 1 online");
    gic.send_sgi(TEST_SGI, mpidr, SECONDARY_TARGET_MASK.get());
    if !wait_for_stage(Stage::SgiReceived) {
        println!("probe: FAIL no sgi received on vcpu 1");
        return;
    }
    println!("probe: sgi received on vcpu 1");
    if !wait_for_stage(Stage::TimerTick) {
        println!("probe: FAIL no timer tick on vcpu 1");
        return;
    }
    println!("probe: timer tick on vcpu 1");
    // CPU_OFF is asynchronous to us: poll AFFINITY_INFO until it reads OFF.
    let deadline = timer::now().saturating_add(timer::ticks_in_ms(SECONDARY_TIMEOUT_MS));
    loop {
        match psci::affinity_info(mpidr) {
            1 => break,
            state if timer::now() > deadline => {
                println!("probe: FAIL vcpu 1 still not off (affinity info {})", state);
                return;
            }
            _ => timer::delay_ms(1),
        }
    }
    println!("probe: vcpu 1 off");
}

/// Polls for vCPU 1 to reach `stage`, for at most `SECONDARY_TIMEOUT_MS`.
fn wait_for_stage(stage: Stage) -> bool {
    let deadline = timer::now().saturating_add(timer::ticks_in_ms(SECONDARY_TIMEOUT_MS));
    while timer::now() <= deadline {
        if SECONDARY_STAGE.get() >= stage as u64 {
            shared::observe();
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

/// Publishes vCPU 1's progress (only vCPU 1 calls this).
fn reach_stage(stage: Stage) {
    shared::publish();
    SECONDARY_STAGE.set(stage as u64);
}

/// vCPU 1: take an SGI, then one tick of its own timer, then CPU_OFF. It
/// prints nothing (vCPU 0 reports), so output lines never interleave.
fn secondary_main(cpu: usize) -> ! {
    let Some(gic) = chroma_guest_rt::boot::boot().and_then(|boot| boot.platform.gic) else {
        chroma_guest_rt::halt()
    };
    gic.enable_private(TEST_SGI);
    SECONDARY_TARGET_MASK.set(gic.cpu_target_mask());
    exceptions::unmask_irqs();
    reach_stage(Stage::Online);
    while SGIS[cpu].get() == 0 {
        exceptions::wait_for_interrupt_if(|| SGIS[cpu].get() == 0);
    }
    reach_stage(Stage::SgiReceived);

    gic.enable_private(timer::VIRTUAL_TIMER_INTID);
    start_timer(cpu, TICK_PERIOD_MS);
    while TICKS[cpu].get() == 0 {
        exceptions::wait_for_interrupt_if(|| TICKS[cpu].get() == 0);
    }
    stop_timer(cpu);
    exceptions::mask_irqs();
    reach_stage(Stage::TimerTick);

    let result = psci::cpu_off();
    println!("probe: FAIL cpu_off returned {}", psci::status_name(result));
    chroma_guest_rt::halt()
}

/// Reads and writes `address`, which must be neither RAM nor a device, and
/// reports whether each access took a synchronous external abort.
fn check_isolation(address: u64) {
    exceptions::set_sync_handler(Some(on_probe_fault));
    for write in [false, true] {
        PROBE_FAULTS.set(0);
        let value = if write {
            probe_write(address);
            NOT_LOADED
        } else {
            probe_read(address)
        };
        let access = if write { "write" } else { "read" };
        let fault = Fault {
            esr: PROBE_ESR.get(),
            far: PROBE_FAR.get(),
            elr: 0,
        };
        match PROBE_FAULTS.get() {
            0 if write => println!("probe: isolation: no abort (write {:#010x})", address),
            0 => println!(
                "probe: isolation: no abort (read {:#010x} = {:#x})",
                address, value
            ),
            _ if fault.is_synchronous_external_abort() && fault.far == address => {
                println!(
                    "probe: isolation ok: external abort at {:#010x} ({})",
                    address, access
                )
            }
            _ => println!(
                "probe: isolation: other fault at {:#010x} ({}): {}",
                address, access, fault
            ),
        }
    }
    exceptions::set_sync_handler(None);
}

/// Skips the probing instruction if it took an abort (any EC that names one).
fn on_probe_fault(_frame: &mut TrapFrame, fault: &Fault) -> Resolution {
    use chroma_guest_rt::exceptions::exception_class as ec;
    let is_any_abort = matches!(
        fault.exception_class(),
        ec::DATA_ABORT_SAME
            | ec::DATA_ABORT_LOWER
            | ec::INSTRUCTION_ABORT_SAME
            | ec::INSTRUCTION_ABORT_LOWER
    );
    if PROBING.get() && is_any_abort {
        PROBE_ESR.set(fault.esr);
        PROBE_FAR.set(fault.far);
        PROBE_FAULTS.set(PROBE_FAULTS.get() + 1);
        Resolution::Skip
    } else {
        Resolution::Unhandled
    }
}

/// One 32-bit load from `address`; returns `NOT_LOADED` (or its low half)
/// if it was skipped.
fn probe_read(address: u64) -> u64 {
    let Ok(address) = usize::try_from(address) else {
        return NOT_LOADED;
    };
    PROBING.set(true);
    // SAFETY: `address` is outside every Rust object (not RAM); the only effect is the load or an abort, which `on_probe_fault` skips.
    let value = unsafe { exceptions::load_u32_skippable(address, NOT_LOADED_32) };
    PROBING.set(false);
    u64::from(value)
}

/// One 32-bit store of zero to `address`.
fn probe_write(address: u64) {
    let Ok(address) = usize::try_from(address) else {
        return;
    };
    PROBING.set(true);
    // SAFETY: as for `probe_read`: no Rust object lives at `address`.
    unsafe { exceptions::store_zero_u32_skippable(address) };
    PROBING.set(false);
}

/// `probe: done`, then power off, or with `probe.loop` a heartbeat forever.
fn finish(args: &BootArgs<'_>, gic: Option<&Gic>) -> ! {
    println!("probe: done");
    if !args.flag("probe.loop") {
        chroma_guest_rt::power_off()
    }
    let cpu = chroma_guest_rt::cpu_index();
    let Some(gic) = gic else {
        // No interrupts: busy-wait instead.
        for beat in 1.. {
            timer::delay_ms(HEARTBEAT_PERIOD_MS);
            println!("probe: heartbeat {}", beat);
        }
        chroma_guest_rt::halt()
    };
    gic.enable_private(timer::VIRTUAL_TIMER_INTID);
    start_timer(cpu, HEARTBEAT_PERIOD_MS);
    let mut beat = 0;
    loop {
        exceptions::wait_for_interrupt_if(|| TICKS[cpu].get() <= beat);
        let ticks = TICKS[cpu].get();
        while beat < ticks {
            beat += 1;
            println!("probe: heartbeat {}", beat);
        }
    }
}
