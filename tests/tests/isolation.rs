//! A misbehaving VM stops alone (or is answered with an abort) while a probe
//! beside it runs to the end.

use chroma_systest::{
    boot, config_toml, expected_lines, workspace_root, Board, Outcome, Vm, TIMEOUT_EXIT,
};

/// Boots a crasher in `mode` beside a two-vCPU probe, on GICv2.
fn crasher_beside_probe(test_name: &str, mode: &str) -> Outcome {
    crasher_beside_probe_on(test_name, mode, 2)
}

/// Boots a crasher in `mode` beside a two-vCPU probe, on GICv`gic`.
fn crasher_beside_probe_on(test_name: &str, mode: &str, gic: u8) -> Outcome {
    let config = config_toml(&[
        Vm::new("crasher", "crasher").cmdline(&format!("crasher.mode={mode}")),
        Vm::new("probe", "probe").vcpus(2),
    ]);
    boot(test_name, &config, Board::new(gic, 2))
}

/// The probe printed everything and powered off, whatever the crasher did.
fn assert_probe_finished(run: &Outcome) {
    run.assert_vm_printed_in_order("probe", &expected_lines("probe"));
    // A line containing FAIL is a failed check of the probe's.
    run.assert_vm_never_printed("probe", "FAIL");
    run.assert_stopped("probe", "powered off");
}

/// Checks a faulting crasher is stopped alone, on GICv`gic`.
fn faulting_vm_stops_alone(gic: u8) {
    let run = crasher_beside_probe_on(&format!("crasher_fault_gicv{gic}"), "fault", gic);
    run.assert_vm_printed_containing("crasher", "crasher: start");
    run.assert_vm_printed_containing(
        "crasher",
        "crasher: fault at 0x0d000000: synchronous external abort",
    );
    run.assert_stopped("crasher", "faulted");
    // Stopped means stopped: not one more line from it.
    run.assert_silent_after_stop("crasher");
    assert_probe_finished(&run);
    run.assert_all_stopped(1, 1);
    // One VM failed, so the run fails, by the hypervisor's exit, not a timeout.
    run.assert_failure_not_timeout();
}

#[test]
fn a_faulting_vm_stops_alone_gicv2() {
    faulting_vm_stops_alone(2);
}

#[test]
fn a_faulting_vm_stops_alone_gicv3() {
    faulting_vm_stops_alone(3);
}

#[test]
fn a_wild_branch_is_answered_with_an_abort_and_stops_alone() {
    let run = crasher_beside_probe("crasher_wild", "wild");
    run.assert_vm_printed_containing("crasher", "crasher: jumping to 0x0d000000");
    // The injected abort reaches the guest's own handler.
    run.assert_vm_printed_containing("crasher", "synchronous external abort");
    // The hypervisor logs the abort it injected, naming the crasher.
    let aborts: Vec<&str> = run
        .hypervisor_lines()
        .into_iter()
        .filter(|line| line.contains("abort") && line.contains("vm crasher"))
        .collect();
    assert!(
        !aborts.is_empty(),
        "no `chroma: ... abort ...` line for the crasher's wild branch"
    );
    // It retries forever, so the hypervisor stops it for faulting.
    run.assert_stopped("crasher", "faulted");
    run.assert_silent_after_stop("crasher");
    assert_probe_finished(&run);
    run.assert_all_stopped(1, 1);
    run.assert_failure_not_timeout();
}

/// The `hvc` mode lines whose answers the PSCI spec (DEN 0022) and SMCCC fix,
/// from the answers plain QEMU gives (guest-images/crasher/expected-hvc-qemu.txt).
fn spec_fixed_hvc_lines() -> Vec<String> {
    let path = workspace_root().join("guest-images/crasher/expected-hvc-qemu.txt");
    let text = std::fs::read_to_string(&path).expect("read expected-hvc-qemu.txt");
    // Implementations may differ on these (see guest-images/README.md).
    let free = [
        "affinity_info level 3",
        "smc psci version",
        "entry outside ram",
    ];
    chroma_systest::parse_expected(&text)
        .into_iter()
        .filter(|line| !free.iter().any(|words| line.contains(words)))
        .collect()
}

#[test]
fn bad_hypervisor_calls_get_error_codes() {
    let run = crasher_beside_probe("crasher_hvc", "hvc");
    let expected = spec_fixed_hvc_lines();
    assert!(
        expected.len() >= 8,
        "too few spec-fixed lines: {expected:?}"
    );
    run.assert_vm_printed_in_order("crasher", &expected);
    // Answered with error codes, the crasher ends with SYSTEM_OFF: no fault.
    run.assert_stopped("crasher", "powered off");
    assert_probe_finished(&run);
    run.assert_all_stopped(2, 0);
    run.assert_success();
}

#[test]
fn a_vm_that_powers_off_at_once_leaves_the_other_running() {
    let run = crasher_beside_probe("crasher_off", "off");
    run.assert_vm_printed_containing("crasher", "crasher: system off");
    run.assert_stopped("crasher", "powered off");
    assert_probe_finished(&run);
    run.assert_all_stopped(2, 0);
    run.assert_success();
}

#[test]
fn a_vm_that_resets_is_restarted_and_the_other_finishes() {
    let config = config_toml(&[
        Vm::new("crasher", "crasher").cmdline("crasher.mode=reset"),
        Vm::new("probe", "probe").vcpus(2),
    ]);
    // The crasher resets at once, every time it boots, so it never stops and
    // the run ends by the timeout; the probe must finish within it.
    let board = Board {
        timeout_seconds: 30,
        ..Board::new(2, 2)
    };
    let run = boot("crasher_reset", &config, board);
    let boots = run
        .vm_lines("crasher")
        .iter()
        .filter(|line| **line == "crasher: start")
        .count();
    assert!(
        boots >= 2,
        "the crasher booted {boots} time(s): SYSTEM_RESET did not restart it"
    );
    // A reset VM is restarted, not stopped.
    assert_eq!(run.stop_reason("crasher"), None, "the crasher was stopped");
    assert_probe_finished(&run);
    assert_eq!(
        run.status,
        Some(TIMEOUT_EXIT),
        "the run ended although the crasher keeps resetting"
    );
}
