//! The system-level hostile catalogue (issue 10): the hostile guest
//! (`guest-images/hostile`) attacks the vGIC, CPU state shared between VMs,
//! the memory map, PSCI, the scheduler, and traps from EL0 in AArch64,
//! AArch32 and Thumb, while a bystander VM pinned to the same physical CPU
//! takes a timer interrupt every 10 ms and checks its own CPU state.
//!
//! Each boot asserts, per case, what the attacker saw (its `ok` line: what
//! the architecture, the GIC or PSCI allow), and for the whole run that the
//! bystander got every tick within a bound, saw no interrupt or exception it
//! did not ask for, found its registers as it left them, and finished after
//! the attacker (so every attack ran while it was there). The attacker ends
//! with its last vCPU calling CPU_OFF, which must stop its VM.
//!
//! Negative controls (each fix reverted once; the closing note of issue 10
//! has the commands and the output): the underflow request kept on at sync
//! together with an unbounded `irq::drain` hangs the CPU in
//! vgic-sgi-flood-masked (the bystander never finishes; the bound alone
//! keeps the CPU going, and the unit test in `vgic.rs` catches the sync line
//! alone); without the active-priority switch the bystander's ticks stop for
//! the 3 s vgic-active-never-completed holds; without the debug or PMU traps
//! (MDCR_EL2) the bystander finds DBGBVR0_EL1 or PMCR_EL0 changed; SPIs
//! clamped to the last vCPU fail vgic-spi-routed-to-missing-cpu on GICv3;
//! HVC #1 taken as the call powers the attacker off.

use std::collections::BTreeSet;

use chroma_systest::{boot_with, config_toml, Board, Outcome, Vm};

/// Cases on every board and GIC.
const COMMON: &[&str] = &[
    "vgic-sgi-flood-masked",
    "vgic-sgi-and-timer-overflow",
    "vgic-priority-order",
    "vgic-nested-reverse-eoi",
    "vgic-split-eoi-any-order",
    "vgic-overflow-masked-no-storm",
    "vgic-active-never-completed",
    "vgic-pmr-zero-spin",
    "vgic-distributor-off-spin",
    "vgic-gicd-sweep-read",
    "vgic-gicd-sweep-write",
    "vgic-gicd-bad-widths",
    "vgic-sgi-missing-vcpu",
    "vgic-sgi-all-but-self",
    "vgic-intid-beyond-range",
    "vgic-spi-routed-to-missing-cpu",
    "vgic-eoi-junk",
    "vgic-dir-junk",
    "vgic-sgi-self-flood",
    "vgic-gicd-ctlr-poll",
    "cpu-debug-breakpoints",
    "cpu-debug-watchpoints",
    "cpu-debug-mdscr-and-os-lock",
    "cpu-pmu-cycle-counter",
    "cpu-pmu-event-counters",
    "cpu-pmu-overflow-interrupt",
    "cpu-actlr",
    "cpu-impdef-cpuectlr",
    "cpu-impdef-space",
    "cpu-set-way-invalidate",
    "cpu-set-way-clean",
    "cpu-thread-registers",
    "cpu-tlbi-flood",
    "cpu-icache-flood",
    "cpu-el2-registers-undefined",
    "cpu-physical-timer",
    "cpu-virtual-timer-storm",
    "cpu-identity",
    "el0-a32-wfi",
    "el0-t16-wfi",
    "el0-t32-wfi",
    "el0-a64-wfi",
    "el0-a32-mmio-load",
    "el0-t16-mmio-load",
    "el0-t32-mmio-load",
    "el0-t16-mmio-store-load",
    "el0-a32-data-abort-vector",
    "el0-t16-data-abort-vector",
    "el0-a32-prefetch-abort-vector",
    "el0-faults-do-not-stop-the-vm",
    "mem-loads-outside-the-map",
    "mem-execute-outside-the-map",
    "mem-execute-from-a-device",
    "mem-mmio-load-pair",
    "mem-mmio-writeback",
    "mem-pl011-sweep",
    "mem-pl011-image",
    "mem-pl011-flag-poll",
    "mem-virtio-window-without-nics",
    "psci-cpu-on-missing-cpu",
    "psci-cpu-on-self",
    "psci-affinity-info-junk",
    "psci-features-unknown",
    "psci-cpu-suspend-junk",
    "psci-migrate",
    "smccc-unknown-ids",
    "smccc-smc-conduit",
    "smccc-hvc-nonzero-immediate",
    "sched-spin-all-masked",
    "sched-wfe-flood",
    "sched-hvc-flood",
    "sched-wfi-sleeps",
];

/// Cases only a GICv2 has (the memory-mapped CPU interface).
const GICV2_ONLY: &[&str] = &["vgic-gicc-sweep-read"];

/// Cases only a GICv3 has (redistributors, ICC_SGI1R_EL1).
const GICV3_ONLY: &[&str] = &[
    "vgic-gicr-sweep-read",
    "vgic-gicr-sweep-write",
    "vgic-gicr-past-the-region",
    "vgic-sgi1r-wild-affinity",
];

/// Cases that need pointer authentication (`-cpu max`).
const POINTER_AUTH: &[&str] = &["cpu-pointer-auth-keys", "cpu-thread-registers", "cpu-actlr"];

/// The case the host checks itself: the attacker's last vCPU calls CPU_OFF
/// and the hypervisor must stop the VM (else the run would never end).
const LAST_CPU_OFF: &str = "sched-last-vcpu-cpu-off";

/// How long the bystander ticks (guest time) while the whole catalogue
/// runs: longer than the attacker takes on a loaded machine (about 5 s
/// idle), which the test checks.
const BYSTANDER_MS: u64 = 20_000;
/// Latest a bystander tick may come, in microseconds. The hypervisor's
/// part is a slice (10 ms): measured 15 to 54 ms over whole runs on an idle
/// machine. But the virtual counter is the host's clock, so a host that
/// deschedules QEMU (the full suite runs two boots at once on 2 cores, next
/// to builds) makes ticks late too: up to 0.8 s was seen that way, with
/// `-cpu max`. The attacks this bound exists for stall the bystander far
/// longer: an active priority leaked through the GIC's APRs holds its
/// interrupts for the 3 s vgic-active-never-completed holds one; a
/// maintenance-interrupt storm for ever (the bystander never finishes).
const MAX_LATE_US: u64 = 1_500_000;

/// One attacker run: `cases` on `board`, with `options` for `xtask run`.
fn attack(
    test_name: &str,
    board: Board,
    cases: &[&str],
    bystander_ms: u64,
    options: &[&str],
) -> Outcome {
    let attacker = Vm::new("attacker", "hostile")
        .cmdline(&format!(
            "hostile.role=attacker hostile.cases={}",
            cases.join(",")
        ))
        .cpus(&[0]);
    let bystander = Vm::new("bystander", "hostile")
        .cmdline(&format!(
            "hostile.role=bystander hostile.duration_ms={bystander_ms}"
        ))
        .cpus(&[0]);
    let board = Board {
        timeout_seconds: 180,
        ..board
    };
    boot_with(
        test_name,
        &config_toml(&[attacker, bystander]),
        board,
        options,
    )
}

/// The value of `key=<number>` in `line`.
fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        .and_then(|value| value.parse().ok())
}

/// Every check on one run; returns the cases that passed.
fn check(run: &Outcome, cases: &[&str]) -> BTreeSet<String> {
    let attacker = run.vm_lines("attacker");
    let failures: Vec<&&str> = attacker
        .iter()
        .filter(|line| line.contains("FAIL") || line.contains("skipped:"))
        .collect();
    assert!(
        failures.is_empty(),
        "the attacker reported failures:\n{failures:#?}\nwhole output:\n{}",
        run.stdout
    );
    let mut passed = BTreeSet::new();
    for case in cases {
        let ok = format!("hostile: case {case} ok");
        assert!(
            attacker
                .iter()
                .any(|line| *line == ok || line.starts_with(&format!("{ok}:"))),
            "case {case} did not pass; the attacker printed:\n{}",
            attacker.join("\n")
        );
        passed.insert((*case).to_owned());
    }
    // Its last vCPU called CPU_OFF: the hypervisor stopped the VM.
    run.assert_stopped("attacker", "powered off (its last vCPU called CPU_OFF)");
    passed.insert(LAST_CPU_OFF.to_owned());

    let bystander = run.vm_lines("bystander");
    let done = bystander
        .iter()
        .find(|line| line.starts_with("hostile: bystander done"))
        .unwrap_or_else(|| panic!("the bystander did not finish:\n{}", run.stdout));
    eprintln!("{done}");
    assert!(
        done.ends_with("state=ok"),
        "the bystander's state changed: {done}"
    );
    assert_eq!(field(done, "unexpected_irqs"), Some(0), "{done}");
    assert_eq!(field(done, "unexpected_exceptions"), Some(0), "{done}");
    let late = field(done, "max_late_us").unwrap_or(u64::MAX);
    assert!(
        late <= MAX_LATE_US,
        "a bystander tick came {late} us late: {done}"
    );
    let ticks = field(done, "ticks").unwrap_or(0);
    let expected = field(done, "expected").unwrap_or(u64::MAX);
    // Ticks missed while the host did not run QEMU are skipped, not
    // queued: half of them must still come.
    assert!(ticks * 2 >= expected, "the bystander missed ticks: {done}");
    // The attack was over before the bystander stopped watching.
    let order: Vec<&str> = run
        .stdout
        .lines()
        .filter(|line| {
            line.contains("hostile: attacker done") || line.contains("hostile: bystander done")
        })
        .collect();
    assert!(
        order.len() == 2 && order[0].contains("attacker done"),
        "the attacker must finish while the bystander still watches: {order:?}"
    );
    run.assert_all_stopped(2, 0);
    passed
}

fn cases_for(gic: u8) -> Vec<&'static str> {
    let only = if gic == 2 { GICV2_ONLY } else { GICV3_ONLY };
    COMMON.iter().chain(only).copied().collect()
}

#[test]
fn hostile_catalogue_gicv2() {
    let cases = cases_for(2);
    let run = attack("hostile_gicv2", Board::new(2, 2), &cases, BYSTANDER_MS, &[]);
    check(&run, &cases);
}

#[test]
fn hostile_catalogue_gicv3() {
    let cases = cases_for(3);
    let run = attack("hostile_gicv3", Board::new(3, 2), &cases, BYSTANDER_MS, &[]);
    check(&run, &cases);
}

/// The GICv2 catalogue on the Raspberry Pi 3, whose guests' CPU interface
/// is the software one (`chroma_core::soft_gicv`): sweeping its registers,
/// acknowledging and never completing, flooding SGIs and the rest leave
/// the bystander's interrupts on time and the hypervisor running.
#[test]
fn hostile_catalogue_rpi3_software_gic() {
    if !chroma_systest::qemu_at_least(10, 0, "the raspi3b machine (--board rpi3)") {
        return;
    }
    let cases = cases_for(2);
    let run = attack("hostile_rpi3", Board::rpi3(), &cases, BYSTANDER_MS, &[]);
    check(&run, &cases);
}

/// Pointer-authentication keys are switched per vCPU: on a CPU that has
/// them (`-cpu max`, with QEMU's faster IMPLEMENTATION DEFINED algorithm), the attacker's keys read back as its own and the
/// bystander's stay as it set them.
#[test]
fn hostile_catalogue_pointer_auth_keys() {
    let run = attack(
        "hostile_pauth",
        Board::new(3, 2),
        POINTER_AUTH,
        BYSTANDER_MS / 2,
        &["--cpu", "max,sve=off,sme=off,pauth=on,pauth-impdef=on"],
    );
    check(&run, POINTER_AUTH);
}

/// The catalogue is at least the 60 named cases issue 10 asks for, and the
/// hostile guest has no case this list does not know (it would run
/// unchecked).
#[test]
fn hostile_catalogue_names_at_least_60_cases_and_all_of_the_guests() {
    let mut all: BTreeSet<&str> = COMMON
        .iter()
        .chain(GICV2_ONLY)
        .chain(GICV3_ONLY)
        .copied()
        .collect();
    all.extend(POINTER_AUTH);
    all.insert(LAST_CPU_OFF);
    assert!(all.len() >= 60, "only {} cases", all.len());
    let sources = chroma_systest::workspace_root().join("guest-images/hostile/src");
    let mut in_guest = BTreeSet::new();
    for entry in std::fs::read_dir(&sources).expect("read the hostile guest's sources") {
        let text = std::fs::read_to_string(entry.expect("a directory entry").path())
            .expect("read a source file");
        for piece in text.split("case(\"").skip(1) {
            if let Some(name) = piece.split('"').next() {
                in_guest.insert(name.to_owned());
            }
        }
    }
    let unknown: Vec<&String> = in_guest
        .iter()
        .filter(|name| !all.contains(name.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "cases the test does not run: {unknown:?}"
    );
    eprintln!("hostile catalogue: {} cases", all.len());
}
