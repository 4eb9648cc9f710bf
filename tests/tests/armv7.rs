//! The ARMv7-A back-end on `qemu-system-arm`: chroma boots in HYP mode on
//! a Cortex-A15 and a Cortex-A7, turns the HYP MMU on with W^X (checked by
//! the MMU's own address translation), starts the second CPU with PSCI
//! CPU_ON, and runs the 32-bit probe with two vCPUs (console, virtual
//! timer, PSCI, an SGI between its vCPUs, isolation) to a clean summary.
//!
//! The negative controls: chroma entered in SVC mode (QEMU without
//! `virtualization=on`) must refuse with a fixed line and never reach the
//! MMU; and chroma told to write to its own text (its test hook on the boot
//! command line) must take a HYP data abort, permission fault, and report it
//! decoded (HSR, HDFAR, registers, banked SPSRs) before powering off.

use chroma_systest::{
    boot_with, config_toml, expected_lines, guest_image_arm, Board, Outcome, Vm,
    HYPERVISOR_FAILED_EXIT, TIMEOUT_EXIT,
};

/// Boots a one-probe configuration on qemu-virt-arm with CPU model `cpu`.
fn boot_arm(test_name: &str, cpu: &str, extra: &[&str], timeout_seconds: u64) -> Outcome {
    let probe = Vm {
        kernel: guest_image_arm("probe"),
        ..Vm::new("probe", "probe")
    };
    let config = config_toml(&[probe.vcpus(2)]);
    let mut board = Board::arm(2);
    board.timeout_seconds = timeout_seconds;
    let mut options = vec!["--cpu", cpu];
    options.extend_from_slice(extra);
    boot_with(test_name, &config, board, &options)
}

/// Panics unless the console has a line starting with `prefix`.
fn assert_line_starting(run: &Outcome, prefix: &str) {
    assert!(
        run.stdout.lines().any(|line| line.starts_with(prefix)),
        "no line starting with {prefix:?}; output:\n{}",
        run.stdout
    );
}

/// The banner, the HYP MMU line, the board and manifest lines, a clean
/// summary and power-off, and no failure line.
fn boots_in_hyp_mode(cpu: &str) {
    let run = boot_arm(&format!("armv7_{}", cpu.replace('-', "_")), cpu, &[], 60);
    assert_line_starting(&run, "chroma: chroma 0.1.0 starting in HYP mode on ARMv7-A");
    assert_line_starting(&run, "chroma: HYP MMU on (W^X, checked with ATS1HR/ATS1HW)");
    assert_line_starting(&run, "chroma: vm probe: 64 MiB at IPA 0x40000000 (PA ");
    // The second CPU came up through PSCI CPU_ON (SMC32) with the boot
    // CPU's map and ran the probe's second vCPU.
    assert_line_starting(&run, "chroma: 2 physical CPU(s) up");
    for line in expected_lines("probe") {
        let line = format!("[probe] {line}");
        assert!(
            run.stdout.lines().any(|l| l == line),
            "missing {line:?}:\n{}",
            run.stdout
        );
    }
    assert!(
        run.stdout.contains("[probe] probe: info arch arm"),
        "the 32-bit probe ran: {}",
        run.stdout
    );
    assert!(!run.stdout.contains("EL2 EXCEPTION"), "{}", run.stdout);
    run.assert_all_stopped(1, 0);
    // Status 0: the summary, then QEMU ended by PSCI SYSTEM_OFF.
    run.assert_success();
}

#[test]
fn armv7_boots_in_hyp_mode_on_a_cortex_a15() {
    boots_in_hyp_mode("cortex-a15");
}

#[test]
fn armv7_boots_in_hyp_mode_on_a_cortex_a7() {
    boots_in_hyp_mode("cortex-a7");
}

/// Negative control: without the virtualization extensions QEMU enters the
/// image in SVC mode. chroma says so and parks (no PSCI conduit is safe to
/// use from there), so the run ends by xtask's timeout, never with a summary.
#[test]
fn armv7_negative_control_entering_in_svc_mode_is_refused() {
    let run = boot_arm(
        "armv7_svc_refused",
        "cortex-a15",
        &[
            "--test-only-qemu-arg",
            "-M",
            "--test-only-qemu-arg",
            "virtualization=off",
        ],
        15,
    );
    assert_line_starting(
        &run,
        "chroma: fatal: entered in SVC mode (CPSR.M 0b10011), not HYP mode",
    );
    assert!(!run.stdout.contains("HYP MMU on"), "{}", run.stdout);
    assert!(!run.stdout.contains("all VMs stopped"), "{}", run.stdout);
    assert_eq!(run.status, Some(TIMEOUT_EXIT), "stderr:\n{}", run.stderr);
}

/// Negative control for W^X and the exception path: a write to the text
/// page faults, and the report names the class, the fault, the address.
#[test]
fn armv7_negative_control_a_write_to_text_is_a_reported_hyp_data_abort() {
    let run = boot_arm(
        "armv7_write_text",
        "cortex-a15",
        &[
            "--test-only-qemu-arg",
            "-append",
            "--test-only-qemu-arg",
            "chroma.test=hyp-write-text",
        ],
        60,
    );
    assert_line_starting(&run, "chroma: HYP MMU on (W^X, checked with ATS1HR/ATS1HW)");
    assert_line_starting(&run, "chroma: test: writing to the text page at 0x40010000");
    assert_line_starting(
        &run,
        "chroma: EL2 EXCEPTION (HYP mode, data abort) on CPU 0x0: HSR ",
    );
    assert!(
        run.stdout
            .contains("EC 0x25 data abort taken in HYP mode, IL "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .lines()
            .any(|line| line.trim() == "permission fault, level 3; on a write"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("HDFAR 0x40010000"), "{}", run.stdout);
    assert!(run.stdout.contains("SPSR_svc "), "{}", run.stdout);
    assert!(!run.stdout.contains("did not fault"), "{}", run.stdout);
    assert!(!run.stdout.contains("all VMs stopped"), "{}", run.stdout);
    assert_eq!(
        run.status,
        Some(HYPERVISOR_FAILED_EXIT),
        "stderr:\n{}",
        run.stderr
    );
}
