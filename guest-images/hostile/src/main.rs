//! The hostile test guest: the system-level attack catalogue, and the
//! bystander that checks it was not affected.
//!
//! Boot arguments (`/chosen/bootargs` words):
//! - `hostile.role=attacker` (default): runs the cases named by
//!   `hostile.cases=a,b,c` in that order (`all` runs every case this machine
//!   can run), printing for each `hostile: case <name> ok[: <detail>]`,
//!   `hostile: case <name> FAIL: <why>` or `hostile: case <name> skipped:
//!   <why>`, then `hostile: attacker done <ok> ok <failed> failed <skipped>
//!   skipped` and ends as `hostile.end` says: `cpu_off` (default: its last
//!   vCPU calls PSCI CPU_OFF, so the hypervisor must stop the VM) or `off`
//!   (PSCI SYSTEM_OFF).
//! - `hostile.role=bystander`: shares a physical CPU with the attacker. It
//!   sets CPU state of its own (thread IDs, timer control, the GIC priority
//!   mask, PAuth keys where they exist), then takes a virtual timer interrupt
//!   every `hostile.period_ms` (default 10) for `hostile.duration_ms`
//!   (default 5000), checking at each one that its state still reads as it
//!   left it and measuring how late the interrupt came. It ends with
//!   `hostile: bystander done ticks=<n> expected=<n> max_late_ms=<n>
//!   unexpected_irqs=<n> unexpected_exceptions=<n> state=<ok|changed <reg>>`
//!   and powers off.
//!
//! Every case checks what the attacker itself sees against what the Arm
//! architecture, the GIC and PSCI specifications allow; the bystander line
//! is the containment check, asserted by `tests/tests/hostile.rs`.
#![no_std]
#![no_main]

mod bystander;
mod catch;
mod cpu_state;
mod el0;
mod gic;
mod memory;
mod mmio;
mod psci_cases;
mod sched;
mod sysreg;
mod vgic;

use chroma_guest_rt::args::BootArgs;
use chroma_guest_rt::{entry, println, psci, Boot};

entry!(main);

/// What a case needs from the machine.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Runs everywhere.
    Any,
    /// A GICv2 (memory-mapped CPU interface).
    GicV2,
    /// A GICv3 (redistributors, ICC system registers).
    GicV3,
    /// Pointer authentication (ID_AA64ISAR1_EL1.APA/API).
    PointerAuth,
    /// AArch32 at EL0 (ID_AA64PFR0_EL1.EL0 = 2).
    Aarch32El0,
}

/// Why a case failed: what, with the value seen and the value wanted.
pub struct Failure {
    /// What went wrong.
    pub what: &'static str,
    /// The value seen.
    pub got: u64,
    /// The value the architecture or the spec allows.
    pub want: u64,
}

/// A case's result: `Ok` carries a detail (a count, or 0 for none).
pub type Outcome = Result<Detail, Failure>;

/// A figure a passing case prints, e.g. how many accesses it made.
pub struct Detail {
    /// What the figure counts ("" for none).
    pub label: &'static str,
    /// The figure.
    pub value: u64,
}

/// A passing case with nothing to report.
pub const fn ok() -> Outcome {
    Ok(Detail {
        label: "",
        value: 0,
    })
}

/// A passing case with a figure.
pub const fn ok_with(label: &'static str, value: u64) -> Outcome {
    Ok(Detail { label, value })
}

/// A failing case.
pub const fn fail(what: &'static str, got: u64, want: u64) -> Outcome {
    Err(Failure { what, got, want })
}

/// Fails with `what` unless `got == want`.
pub fn expect(what: &'static str, got: u64, want: u64) -> Result<(), Failure> {
    if got == want {
        Ok(())
    } else {
        Err(Failure { what, got, want })
    }
}

/// One named attack.
pub struct Case {
    /// Its name on the command line and in the output.
    pub name: &'static str,
    /// What it needs.
    pub needs: Needs,
    /// Runs it.
    pub run: fn(&Boot) -> Outcome,
}

/// Every case, by class.
fn catalogue() -> impl Iterator<Item = &'static Case> {
    vgic::CASES
        .iter()
        .chain(cpu_state::CASES)
        .chain(el0::CASES)
        .chain(memory::CASES)
        .chain(psci_cases::CASES)
        .chain(sched::CASES)
}

fn main(boot: &'static Boot) -> ! {
    let args = BootArgs::new(boot.platform.bootargs);
    catch::install();
    match args.value("hostile.role").unwrap_or("attacker") {
        "bystander" => bystander::run(boot, &args),
        _ => attacker(boot, &args),
    }
}

/// Whether this machine has what `needs` asks for; `Err` says why not.
fn available(boot: &Boot, needs: Needs) -> Result<(), &'static str> {
    let version = boot.platform.gic.map_or(0, |gic| gic.version());
    match needs {
        Needs::Any => Ok(()),
        Needs::GicV2 if version == 2 => Ok(()),
        Needs::GicV2 => Err("needs a GICv2"),
        Needs::GicV3 if version == 3 => Ok(()),
        Needs::GicV3 => Err("needs a GICv3"),
        Needs::PointerAuth if sysreg::has_pointer_auth() => Ok(()),
        Needs::PointerAuth => Err("the CPU has no pointer authentication"),
        Needs::Aarch32El0 if sysreg::has_aarch32_el0() => Ok(()),
        Needs::Aarch32El0 => Err("the CPU has no AArch32 at EL0"),
    }
}

/// How one case went.
enum Verdict {
    Passed,
    Failed,
    Skipped,
}

/// Runs one case and prints its line.
fn run_one(boot: &'static Boot, case: &Case) -> Verdict {
    if let Err(why) = available(boot, case.needs) {
        println!("hostile: case {} skipped: {}", case.name, why);
        return Verdict::Skipped;
    }
    println!("hostile: case {} starts at {} ms", case.name, now_ms());
    catch::reset();
    let outcome = (case.run)(boot);
    catch::reset();
    match outcome {
        Ok(detail) if detail.label.is_empty() => {
            println!("hostile: case {} ok", case.name);
            Verdict::Passed
        }
        Ok(detail) => {
            println!(
                "hostile: case {} ok: {} {}",
                case.name, detail.label, detail.value
            );
            Verdict::Passed
        }
        Err(failure) => {
            println!(
                "hostile: case {} FAIL: {} (got {:#x}, want {:#x})",
                case.name, failure.what, failure.got, failure.want
            );
            Verdict::Failed
        }
    }
}

fn attacker(boot: &'static Boot, args: &BootArgs<'_>) -> ! {
    println!("hostile: attacker start");
    let list = args.value("hostile.cases").unwrap_or("");
    let (mut passed, mut failed, mut skipped) = (0u32, 0u32, 0u32);
    let mut tally = |verdict: Verdict| match verdict {
        Verdict::Passed => passed += 1,
        Verdict::Failed => failed += 1,
        Verdict::Skipped => skipped += 1,
    };
    if list == "all" {
        for case in catalogue().filter(|case| available(boot, case.needs).is_ok()) {
            tally(run_one(boot, case));
        }
    } else {
        for name in list.split(',').filter(|name| !name.is_empty()) {
            match catalogue().find(|case| case.name == name) {
                Some(case) => tally(run_one(boot, case)),
                None => {
                    println!("hostile: case {} FAIL: no such case", name);
                    tally(Verdict::Failed);
                }
            }
        }
    }
    println!(
        "hostile: attacker done {} ok {} failed {} skipped",
        passed, failed, skipped
    );
    match args.value("hostile.end").unwrap_or("cpu_off") {
        "off" => chroma_guest_rt::power_off(),
        _ => {
            // The last vCPU turning itself off: the hypervisor stops the VM.
            let status = psci::cpu_off();
            println!("hostile: CPU_OFF returned {}", psci::status_name(status));
            chroma_guest_rt::halt()
        }
    }
}

/// The virtual counter in milliseconds (the bystander's lateness reports
/// use the same clock).
pub fn now_ms() -> u64 {
    chroma_guest_rt::timer::now() * 1000 / chroma_guest_rt::timer::frequency()
}

/// The best of three [`spin_counting`] runs of `milliseconds`: a host that
/// did not run this vCPU for a moment (QEMU's clock is the host's) lowers
/// one sample, not the best of three.
pub fn best_speed(milliseconds: u64) -> u64 {
    (0..3)
        .map(|_| spin_counting(milliseconds))
        .max()
        .unwrap_or(0)
}

/// The lowest speed, in percent of the speed alone, a guest keeps while an
/// interrupt storm is pending or firing. A storm the hypervisor does not
/// contain leaves it near 0 (or hangs the CPU); host noise costs far less.
pub const MIN_SPEED_PERCENT: u64 = 10;

/// Spins for `milliseconds` of virtual time and returns how many loop
/// iterations it managed: a guest held in EL2 (by an interrupt storm, say)
/// manages far fewer than one left alone.
pub fn spin_counting(milliseconds: u64) -> u64 {
    let end = chroma_guest_rt::timer::now()
        .saturating_add(chroma_guest_rt::timer::ticks_in_ms(milliseconds));
    let mut iterations = 0u64;
    while chroma_guest_rt::timer::now() < end {
        iterations += 1;
        core::hint::spin_loop();
    }
    iterations
}
