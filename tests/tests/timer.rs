//! The virtual timer behaves as on hardware: a guest that enables its timer
//! once and then re-arms it only through CNTV_TVAL_EL0, or only through
//! CNTV_CVAL_EL0, keeps getting interrupts, and CNTV_CTL_EL0 reads back what
//! it wrote (IMASK clear) in every handler. On GICv2 and GICv3, alone and
//! with two such VMs sharing one physical CPU (vCPU switching, with the
//! timer interrupt in flight when a vCPU is switched out).
//!
//! Negative control: with the hypervisor's old handling (set
//! CNTV_CTL_EL0.IMASK when the timer fires, inject, EOI), the probe's first
//! handler reads IMASK set and prints `probe: FAIL vtimer tval: CNTV_CTL_EL0
//! read 0x7 ...`, and no second interrupt ever comes (the probe waits in WFI
//! for it until `--timeout`): every test here fails. The host test
//! `chroma_arch::fake::tests::the_old_imask_approach_stops_a_guest_that_rearms_through_tval`
//! shows the same on the model.

use chroma_systest::{boot, config_toml, Board, Outcome, Vm};

/// Interrupts each variant must see (the probe counts 10 by default).
const MIN_INTERRUPTS: u64 = 5;
/// The probe's words: both variants, nothing else but the timer ticks.
const VTIMER_ONLY: &str = "probe.vtimer=both probe.nosmp probe.noabort";

/// The count in `probe: vtimer <how>: N interrupts, CNTV_CTL_EL0 as written`.
fn interrupts(run: &Outcome, vm: &str, how: &str) -> u64 {
    let prefix = format!("probe: vtimer {how}: ");
    let lines = run.vm_lines(vm);
    let count = lines.iter().find_map(|line| {
        let rest = line.strip_prefix(prefix.as_str())?;
        let rest = rest.strip_suffix(" interrupts, CNTV_CTL_EL0 as written")?;
        rest.parse::<u64>().ok()
    });
    match count {
        Some(count) => count,
        None => panic!(
            "VM {vm} reported no clean `{prefix}N interrupts` line; it printed:\n{}",
            lines.join("\n")
        ),
    }
}

/// Checks both variants of VM `vm` and that it ended cleanly.
fn assert_rearmed(run: &Outcome, vm: &str, gic: u8) {
    for how in ["tval", "cval"] {
        let count = interrupts(run, vm, how);
        eprintln!("timer: GICv{gic} VM {vm} {how}: {count} interrupts");
        assert!(
            count >= MIN_INTERRUPTS,
            "VM {vm} {how}: {count} interrupts, want at least {MIN_INTERRUPTS}"
        );
    }
    run.assert_vm_never_printed(vm, "FAIL");
    run.assert_stopped(vm, "powered off");
}

/// One VM re-arms through TVAL, then through CVAL.
fn alone(gic: u8) {
    let config = config_toml(&[Vm::new("timer", "probe").cmdline(VTIMER_ONLY)]);
    let run = boot(
        &format!("vtimer_alone_gicv{gic}"),
        &config,
        Board::new(gic, 1),
    );
    assert_rearmed(&run, "timer", gic);
    run.assert_all_stopped(1, 0);
    run.assert_success();
}

/// Two VMs on physical CPU 0 (each has one vCPU, pinned to CPU 0): one waits
/// for its interrupts in WFI (parked, woken at its deadline), the other
/// spins and is preempted, often with its interrupt pending or active.
fn sharing_a_cpu(gic: u8) {
    let config = config_toml(&[
        Vm::new("parked", "probe").cmdline(VTIMER_ONLY),
        Vm::new("spinning", "probe").cmdline(&format!("{VTIMER_ONLY} probe.vtimer.busy")),
    ]);
    let run = boot(
        &format!("vtimer_shared_gicv{gic}"),
        &config,
        Board::new(gic, 1),
    );
    for vm in ["parked", "spinning"] {
        assert_rearmed(&run, vm, gic);
    }
    run.assert_all_stopped(2, 0);
    run.assert_success();
}

#[test]
fn vtimer_rearmed_without_ctl_writes_gicv2() {
    alone(2);
}

#[test]
fn vtimer_rearmed_without_ctl_writes_gicv3() {
    alone(3);
}

#[test]
fn vtimer_two_vms_sharing_a_cpu_gicv2() {
    sharing_a_cpu(2);
}

#[test]
fn vtimer_two_vms_sharing_a_cpu_gicv3() {
    sharing_a_cpu(3);
}
