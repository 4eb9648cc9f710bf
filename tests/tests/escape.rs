//! No way out of the emulator: a guest that tries Arm semihosting (`hlt
//! #0xf000`: SYS_WRITE0, SYS_SYSTEM, SYS_EXIT) neither reaches the host nor
//! ends the run, and carries on to a clean power off.
//!
//! The negative control boots the same guest with semihosting turned on
//! through xtask's test-only hook, and the same checks must see each escape:
//! the file the host's shell created, the marker on QEMU's output, the run
//! ended before the guest's later lines and without the hypervisor's summary.

use std::path::{Path, PathBuf};

use chroma_systest::{boot_with, config_toml, Board, Outcome, Vm, NO_SUMMARY_EXIT};

/// What one attempt is checked with: a marker only SYS_WRITE0 can print and
/// a file only SYS_SYSTEM can create, unique to this run.
struct Probe {
    /// Passed to the guest, which writes `<marker>-WRITE0` through SYS_WRITE0.
    marker: String,
    /// Passed to the guest, which runs `touch <path>` through SYS_SYSTEM.
    path: PathBuf,
}

impl Probe {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let unique = format!("{name}-{}-{nanos}", std::process::id());
        let path = std::env::temp_dir().join(format!("chroma-escape-{unique}"));
        // The kernel command line splits on whitespace.
        assert!(
            !path.display().to_string().contains(char::is_whitespace),
            "temporary directory {} has whitespace",
            path.display()
        );
        let _ = std::fs::remove_file(&path);
        Probe {
            marker: format!("chroma-escape-{unique}"),
            path,
        }
    }

    /// What SYS_WRITE0 would print: the marker with a suffix that only the
    /// guest's memory holds (it appears nowhere else, not even in the
    /// configuration).
    fn written(&self) -> String {
        format!("{}-WRITE0", self.marker)
    }

    /// Boots the crasher in `escape` mode, with `options` for `xtask run`.
    fn boot(&self, test_name: &str, options: &[&str]) -> Outcome {
        let cmdline = format!(
            "crasher.mode=escape crasher.marker={} crasher.path={}",
            self.marker,
            self.path.display()
        );
        let config = config_toml(&[Vm::new("escape", "crasher").cmdline(&cmdline)]);
        let mut board = Board::new(2, 2);
        board.timeout_seconds = 60;
        boot_with(test_name, &config, board, options)
    }

    /// Every way the run shows that the guest reached the host or ended the
    /// run; empty when it did neither.
    fn escapes(&self, run: &Outcome) -> Vec<String> {
        let mut seen = Vec::new();
        if self.path.exists() {
            seen.push(format!(
                "SYS_SYSTEM ran on the host: {} exists",
                self.path.display()
            ));
        }
        let written = self.written();
        if run.stdout.contains(&written) || run.stderr.contains(&written) {
            seen.push(format!("SYS_WRITE0 reached QEMU's output: {written}"));
        }
        if !run
            .vm_lines("escape")
            .iter()
            .any(|line| line.starts_with("crasher: escape SYS_EXIT = "))
        {
            seen.push("the run ended at SYS_EXIT: the guest's line after it is missing".to_owned());
        }
        if !run
            .hypervisor_lines()
            .iter()
            .any(|line| line.starts_with("chroma: all VMs stopped ("))
        {
            seen.push("the run ended without the hypervisor's summary".to_owned());
        }
        seen
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn semihosting_from_a_guest_reaches_nothing_and_the_guest_carries_on() {
    let probe = Probe::new("closed");
    let run = probe.boot("escape_semihosting_closed", &[]);
    let escapes = probe.escapes(&run);
    assert!(escapes.is_empty(), "the guest escaped: {escapes:#?}");
    // Each attempt was an UNDEFINED instruction at the guest's own vector,
    // which stepped over it and said so, in order.
    let expected: Vec<String> = ["SYS_WRITE0", "SYS_SYSTEM", "SYS_EXIT"]
        .iter()
        .map(|call| format!("crasher: escape {call} = UNDEFINED"))
        .chain(["crasher: escape done".to_owned()])
        .collect();
    run.assert_vm_printed_in_order("escape", &expected);
    run.assert_stopped("escape", "powered off");
    run.assert_all_stopped(1, 0);
    run.assert_success();
}

/// The negative control: the same guest and checks on a QEMU with
/// semihosting on (the only run anywhere that turns it on).
#[test]
fn negative_control_with_semihosting_on_the_checks_see_each_escape() {
    let probe = Probe::new("open");
    let run = probe.boot(
        "escape_semihosting_open",
        &[
            "--test-only-qemu-arg",
            "-semihosting-config",
            "--test-only-qemu-arg",
            "enable=on,target=native",
        ],
    );
    let escapes = probe.escapes(&run);
    for kind in [
        "SYS_SYSTEM ran",
        "SYS_WRITE0 reached",
        "ended at SYS_EXIT",
        "without the hypervisor's summary",
    ] {
        assert!(
            escapes.iter().any(|escape| escape.contains(kind)),
            "the checks missed an escape ({kind}); they saw {escapes:#?}"
        );
    }
    // The calls before SYS_EXIT returned to the guest instead of faulting.
    run.assert_vm_printed_containing("escape", "crasher: escape SYS_SYSTEM = returned");
    run.assert_vm_never_printed("escape", "crasher: escape done");
    // A run a guest ended is a failure, whatever QEMU's status was.
    assert_eq!(run.status, Some(NO_SUMMARY_EXIT), "stderr:\n{}", run.stderr);
    assert!(Path::new(&probe.path).exists());
}
