//! Bad calls through HVC and SMC: unknown function IDs, PSCI calls with
//! invalid arguments, calls the hypervisor does not offer. Each must get
//! the status PSCI 1.1 (DEN0022) and the SMC Calling Convention (DEN0028)
//! give for it, and nothing else may happen.

use chroma_guest_rt::psci::{self, status};
use chroma_guest_rt::Boot;

use crate::catch::{self, class};
use crate::{expect, fail, ok, Case, Needs, Outcome};

/// The catalogue's PSCI and SMCCC cases.
pub static CASES: &[Case] = &[
    case("psci-cpu-on-missing-cpu", Needs::Any, cpu_on_missing_cpu),
    case("psci-cpu-on-self", Needs::Any, cpu_on_self),
    case("psci-affinity-info-junk", Needs::Any, affinity_info_junk),
    case("psci-features-unknown", Needs::Any, features_unknown),
    case("psci-cpu-suspend-junk", Needs::Any, cpu_suspend_junk),
    case("psci-migrate", Needs::Any, migrate),
    case("smccc-unknown-ids", Needs::Any, unknown_ids),
    case("smccc-smc-conduit", Needs::Any, smc_conduit),
    case(
        "smccc-hvc-nonzero-immediate",
        Needs::Any,
        hvc_nonzero_immediate,
    ),
];

const fn case(name: &'static str, needs: Needs, run: fn(&Boot) -> Outcome) -> Case {
    Case { name, needs, run }
}

/// PSCI function IDs the runtime does not name.
const CPU_SUSPEND_64: u32 = 0xc400_0001;
const MIGRATE_64: u32 = 0xc400_0005;
const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;

fn code(name: &'static str, got: i64, want: i64) -> Result<(), crate::Failure> {
    expect(name, got as u64, want as u64)
}

fn cpu_on_missing_cpu(_: &Boot) -> Outcome {
    for mpidr in [0xff, 0x100, 0xff_0000, 0xff_0000_0000, u64::MAX] {
        code(
            "CPU_ON of a missing CPU",
            psci::cpu_on(mpidr, 0x4008_0000, 0),
            status::INVALID_PARAMETERS,
        )?;
    }
    ok()
}

fn cpu_on_self(boot: &Boot) -> Outcome {
    let me = boot.platform.mpidr(0).unwrap_or(0);
    code(
        "CPU_ON of a CPU that is on",
        psci::cpu_on(me, 0x4008_0000, 0),
        status::ALREADY_ON,
    )?;
    ok()
}

fn affinity_info_junk(_: &Boot) -> Outcome {
    code(
        "AFFINITY_INFO of a missing CPU",
        psci::affinity_info(0xff),
        status::INVALID_PARAMETERS,
    )?;
    let level_3 = psci::call(psci::AFFINITY_INFO, 0, 3, 0);
    if level_3 != status::INVALID_PARAMETERS && !(0..=2).contains(&level_3) {
        return fail(
            "AFFINITY_INFO level 3",
            level_3 as u64,
            status::INVALID_PARAMETERS as u64,
        );
    }
    ok()
}

fn features_unknown(_: &Boot) -> Outcome {
    for function in [0x8400_001fu32, 0xc400_00ff, 0x0400_0000, u32::MAX] {
        code(
            "PSCI_FEATURES of an unknown function",
            psci::features(function),
            status::NOT_SUPPORTED,
        )?;
    }
    ok()
}

/// CPU_SUSPEND with a power state no platform defines: INVALID_PARAMETERS,
/// or (as a standby the hypervisor may treat as WFI) SUCCESS; the vCPU
/// carries on either way.
fn cpu_suspend_junk(boot: &Boot) -> Outcome {
    // A standby is a WFI: give it an interrupt that wakes it (the virtual
    // timer, enabled at the GIC, IRQs masked), then take that interrupt.
    let gic = crate::gic::Attack::new(boot)?;
    gic.quiesce();
    gic.enable(chroma_guest_rt::timer::VIRTUAL_TIMER_INTID, 0xa0);
    chroma_guest_rt::timer::arm_ms(20);
    let result = psci::call(CPU_SUSPEND_64, 0xffff_ffff, 0x4008_0000, 0);
    let mut seen = [0u32; 33];
    gic.drain(&mut seen, 1, 500);
    gic.quiesce();
    if result != status::INVALID_PARAMETERS
        && result != status::SUCCESS
        && result != status::NOT_SUPPORTED
    {
        return fail(
            "CPU_SUSPEND with a junk power state",
            result as u64,
            status::INVALID_PARAMETERS as u64,
        );
    }
    ok()
}

fn migrate(_: &Boot) -> Outcome {
    let info = psci::call(MIGRATE_INFO_TYPE, 0, 0, 0);
    // 2: no Trusted OS needing migration; NOT_SUPPORTED is allowed too.
    if info != 2 && info != status::NOT_SUPPORTED {
        return fail("MIGRATE_INFO_TYPE", info as u64, 2);
    }
    let result = psci::call(MIGRATE_64, 0, 0, 0);
    if result != status::NOT_SUPPORTED && result != -3 {
        return fail("MIGRATE", result as u64, status::NOT_SUPPORTED as u64);
    }
    ok()
}

fn unknown_ids(_: &Boot) -> Outcome {
    for function in [
        0x8400_001fu32,
        0xc400_00ff,
        0x8600_0000,
        0x8200_0000,
        0xbf00_ff00,
        0x0400_0000,
        0xffff_ffff,
    ] {
        code(
            "unknown SMCCC function",
            psci::call(function, 1, 2, 3),
            status::NOT_SUPPORTED,
        )?;
    }
    ok()
}

/// SMC from EL1: the hypervisor traps it (HCR_EL2.TSC) and answers
/// NOT_SUPPORTED, or the guest gets UNDEFINED; it never reaches firmware.
fn smc_conduit(_: &Boot) -> Outcome {
    let mut result: u64 = psci::PSCI_VERSION.into();
    let ((), caught, last) = catch::catching(|| {
        // SAFETY: an SMC with a PSCI function ID; the hypervisor answers in x0 or the guest takes UNDEFINED (caught, skipped).
        unsafe {
            core::arch::asm!("smc #0", inout("x0") result, out("x1") _, out("x2") _, out("x3") _, options(nostack))
        };
    });
    if caught > 0 {
        expect(
            "SMC exception class",
            last.map_or(u64::MAX, |l| l.class()),
            class::UNDEFINED,
        )?;
        return ok();
    }
    expect("SMC result", result, status::NOT_SUPPORTED as u64)?;
    ok()
}

/// HVC #1 (the SMC Calling Convention only defines #0): NOT_SUPPORTED or
/// UNDEFINED, never the call.
fn hvc_nonzero_immediate(_: &Boot) -> Outcome {
    let mut result: u64 = psci::SYSTEM_OFF.into();
    let ((), caught, last) = catch::catching(|| {
        // SAFETY: HVC #1 with SYSTEM_OFF's ID: it must not power the VM off.
        unsafe {
            core::arch::asm!("hvc #1", inout("x0") result, out("x1") _, out("x2") _, out("x3") _, options(nostack))
        };
    });
    if caught > 0 {
        expect(
            "HVC #1 exception class",
            last.map_or(u64::MAX, |l| l.class()),
            class::UNDEFINED,
        )?;
        return ok();
    }
    expect("HVC #1 result", result, status::NOT_SUPPORTED as u64)?;
    ok()
}
