//! A misbehaving VM stops alone (or is answered with an abort) while a probe
//! beside it runs to the end.

use chroma_systest::{boot, config_toml, expected_lines, Board, Outcome, Vm};

/// Boots a crasher in `mode` beside a two-vCPU probe.
fn crasher_beside_probe(test_name: &str, mode: &str) -> Outcome {
    let config = config_toml(&[
        Vm::new("crasher", "crasher").cmdline(&format!("crasher.mode={mode}")),
        Vm::new("probe", "probe").vcpus(2),
    ]);
    boot(test_name, &config, Board::new(2, 4))
}

/// The probe printed everything and powered off, whatever the crasher did.
fn assert_probe_finished(run: &Outcome) {
    run.assert_vm_printed_in_order("probe", &expected_lines("probe"));
    run.assert_stopped("probe", "powered off");
}

#[test]
fn a_faulting_vm_stops_alone() {
    let run = crasher_beside_probe("crasher_fault", "fault");
    run.assert_vm_printed_containing("crasher", "crasher: start");
    run.assert_stopped("crasher", "faulted");
    assert_probe_finished(&run);
    run.assert_all_stopped(1, 1);
    // One VM failed, so the run fails, by the hypervisor's exit, not a timeout.
    run.assert_failure_not_timeout();
}

#[test]
fn a_wild_access_is_answered_with_an_abort() {
    let run = crasher_beside_probe("crasher_wild", "wild");
    run.assert_vm_printed_containing("crasher", "crasher: start");
    let aborts: Vec<&str> = run
        .hypervisor_lines()
        .into_iter()
        .filter(|line| line.contains("abort"))
        .collect();
    assert!(
        !aborts.is_empty(),
        "no `chroma: ... abort ...` line for the wild access"
    );
    // The abort is logged for the crasher, never blamed on the probe.
    assert!(
        aborts.iter().all(|line| !line.contains("vm probe ")),
        "an abort was logged for the probe: {aborts:?}"
    );
    assert_probe_finished(&run);
    assert_ne!(run.status, Some(chroma_systest::TIMEOUT_EXIT), "timed out");
}

#[test]
fn bad_hypervisor_calls_get_error_codes() {
    let run = crasher_beside_probe("crasher_hvc", "hvc");
    run.assert_vm_printed_containing("crasher", "crasher: start");
    run.assert_vm_printed_containing("crasher", "hvc");
    // The hypervisor answered with an error code and did not stop the VM for it.
    if let Some(reason) = run.stop_reason("crasher") {
        assert!(
            !reason.starts_with("faulted"),
            "crasher faulted on a bad HVC: {reason}"
        );
    }
    assert_probe_finished(&run);
    assert_ne!(run.status, Some(chroma_systest::TIMEOUT_EXIT), "timed out");
}
