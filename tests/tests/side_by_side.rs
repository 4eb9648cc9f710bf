//! Two probe guests side by side, each with two vCPUs, on GICv2 and on GICv3.

use chroma_systest::{boot, config_toml, expected_lines, Board, Vm};

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
