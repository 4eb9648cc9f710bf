//! Two probe guests side by side, each with two vCPUs, on GICv2 and on GICv3.

use chroma_systest::{
    boot, boot_file, boot_with, config_toml, expected_lines, workspace_root, Board, Vm,
    TIMEOUT_EXIT,
};

/// Boots two probes and checks each printed every expected line and ended cleanly.
fn two_probes(gic: u8) {
    let config = config_toml(&[
        Vm::new("left", "probe").vcpus(2),
        Vm::new("right", "probe").vcpus(2),
    ]);
    let run = boot(
        &format!("two_probes_gicv{gic}"),
        &config,
        Board::new(gic, 2),
    );
    let expected = expected_lines("probe");
    for vm in ["left", "right"] {
        run.assert_vm_printed_in_order(vm, &expected);
        // Both vCPUs ran: the second one came up through PSCI CPU_ON.
        run.assert_vm_printed_containing(vm, "vcpu 1 online");
        run.assert_stopped(vm, "powered off");
        // A line containing FAIL is a failed check; PANIC a guest panic.
        run.assert_vm_never_printed(vm, "FAIL");
        run.assert_vm_never_printed(vm, "PANIC");
    }
    run.assert_all_stopped(2, 0);
    run.assert_success();
}

#[test]
fn two_probes_side_by_side_gicv2() {
    two_probes(2);
}

#[test]
fn two_probes_side_by_side_gicv3() {
    two_probes(3);
}

/// The probe configuration `scripts/run.sh --config configs/probes.toml` boots, headless.
#[test]
fn the_probes_config_runs_to_the_end() {
    let config = workspace_root().join("configs").join("probes.toml");
    let run = boot_file("default", &config, Board::new(2, 2), &[]);
    let expected = expected_lines("probe");
    run.assert_vm_printed_in_order("probe", &expected);
    // probe2 has one vCPU: the same lines, with the SMP ones replaced.
    let one_vcpu: Vec<String> = expected
        .iter()
        .filter(|line| !line.contains("vcpu 1"))
        .cloned()
        .collect();
    run.assert_vm_printed_in_order("probe2", &one_vcpu);
    run.assert_vm_printed_containing("probe2", "probe: smp skipped (1 vcpu)");
    run.assert_vm_never_printed("probe2", "vcpu 1 online");
    run.assert_all_stopped(2, 0);
    run.assert_success();
}

/// The cache colouring and maintenance paths, forced on, leave the guests' view unchanged.
#[test]
fn two_probes_with_forced_cache_maintenance() {
    let config = config_toml(&[
        Vm::new("left", "probe").vcpus(2),
        Vm::new("right", "probe").vcpus(2),
    ]);
    let run = boot_with("force_cache", &config, Board::new(3, 2), &["--force-cache"]);
    let expected = expected_lines("probe");
    for vm in ["left", "right"] {
        run.assert_vm_printed_in_order(vm, &expected);
        run.assert_vm_never_printed(vm, "FAIL");
    }
    run.assert_all_stopped(2, 0);
    run.assert_success();
}

/// A guest that never stops (`probe.loop`) is ended by `--timeout` with status 124.
#[test]
fn a_run_that_never_ends_is_killed_by_the_timeout() {
    let config = config_toml(&[Vm::new("looper", "probe").cmdline("probe.loop")]);
    let board = Board {
        timeout_seconds: 15,
        ..Board::new(2, 2)
    };
    let run = boot("looper", &config, board);
    run.assert_vm_printed_containing("looper", "probe: done");
    run.assert_vm_printed_containing("looper", "probe: heartbeat");
    // It never powered off, so nothing stopped and the timeout ended the run.
    assert_eq!(run.stop_reason("looper"), None);
    assert_eq!(run.status, Some(TIMEOUT_EXIT));
}
