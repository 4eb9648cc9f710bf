//! chroma on the Raspberry Pi boards, under QEMU 10 with Debian's device
//! trees and the real boards' timer frequencies:
//!
//! - `--board rpi4` (`raspi4b`, `bcm2711-rpi-4-b.dtb`, 54 MHz): the
//!   GIC-400 and its virtual interface, the PL011 console;
//! - `--board rpi3` (`raspi3b`, `bcm2837-rpi-3-b.dtb`, 19.2 MHz): no GIC,
//!   the BCM2836 local controller for the hypervisor's timer and mailbox
//!   IPIs, the guests' whole GICv2 emulated in software and raised with
//!   HCR_EL2.VI, and the mini UART console its device tree names.
//!
//! On both, chroma starts at 0x80000 in EL2, brings up the other three
//! cores through the spin table, keeps the firmware's `/memreserve/` page,
//! and ends the run with the watchdog (there is no PSCI). The guests see
//! the same QEMU `virt` machine as on the other boards, so the 64-bit test
//! guests and Debian's arm64 Linux run unchanged. Each scenario runs on
//! both boards:
//!
//! - the probe pair (a probe with 2 vCPUs on two cores beside another);
//! - the crasher faulting beside a probe (stopped alone);
//! - netsvc and netclient moving 16 MiB over TCP and pinging both ways
//!   through the switch, normal and in the forced colour and maintain mode;
//! - two Linux guests with 2 vCPUs each pinging and moving 64 MiB with
//!   sha256 at both ends.
//!
//! Tests are named `rpi3_...` and `rpi4_...` (`scripts/test.sh rpi`).

use chroma_systest::{
    boot, boot_with, config_toml, expected_lines, guest_image, Board, Outcome, Vm,
};

/// `board` with a timeout of `seconds`.
fn with_timeout(board: Board, seconds: u64) -> Board {
    Board {
        timeout_seconds: seconds,
        ..board
    }
}

/// The board's generic timer frequency, as its guests read it.
fn timer_hz(board: &Board) -> u64 {
    match board.name {
        "rpi3" => 19_200_000,
        _ => 54_000_000,
    }
}

// Each scenario below, on each Pi (`cargo xtask hil` lists these names).

#[test]
fn rpi3_probes_side_by_side_on_four_cores() {
    probes_side_by_side_on_four_cores(Board::rpi3());
}

#[test]
fn rpi4_probes_side_by_side_on_four_cores() {
    probes_side_by_side_on_four_cores(Board::rpi4());
}

#[test]
fn rpi3_a_faulting_vm_stops_alone() {
    a_faulting_vm_stops_alone(Board::rpi3());
}

#[test]
fn rpi4_a_faulting_vm_stops_alone() {
    a_faulting_vm_stops_alone(Board::rpi4());
}

#[test]
fn rpi3_vm_to_vm_tcp_16mib_and_icmp_both_ways() {
    vm_to_vm_tcp_16mib_and_icmp_both_ways(Board::rpi3());
}

#[test]
fn rpi4_vm_to_vm_tcp_16mib_and_icmp_both_ways() {
    vm_to_vm_tcp_16mib_and_icmp_both_ways(Board::rpi4());
}

#[test]
fn rpi3_vm_to_vm_in_forced_colour_and_maintain_mode() {
    vm_to_vm_in_forced_colour_and_maintain_mode(Board::rpi3());
}

#[test]
fn rpi4_vm_to_vm_in_forced_colour_and_maintain_mode() {
    vm_to_vm_in_forced_colour_and_maintain_mode(Board::rpi4());
}

#[test]
fn rpi3_two_linux_guests_ping_and_move_64mib_with_sha256_at_both_ends() {
    two_linux_guests_ping_and_move_64mib_with_sha256_at_both_ends(Board::rpi3());
}

#[test]
fn rpi4_two_linux_guests_ping_and_move_64mib_with_sha256_at_both_ends() {
    two_linux_guests_ping_and_move_64mib_with_sha256_at_both_ends(Board::rpi4());
}

/// Probe `vm` printed `expected` in order, no failed check, and powered off.
fn assert_probe_finished(run: &Outcome, vm: &str, expected: &[String]) {
    run.assert_vm_printed_in_order(vm, expected);
    run.assert_vm_never_printed(vm, "FAIL");
    run.assert_stopped(vm, "powered off");
}

fn probes_side_by_side_on_four_cores(board: Board) {
    let config = config_toml(&[
        Vm::new("probe", "probe").vcpus(2).cpus(&[2, 3]),
        Vm::new("probe2", "probe"),
    ]);
    let run = boot(
        &format!("{}_probes", board.name),
        &config,
        with_timeout(board, 60),
    );
    // The spin table released the other three cores.
    assert!(
        run.hypervisor_lines()
            .iter()
            .any(|l| l.trim_end() == "chroma: 4 physical CPU(s) up"),
        "{}",
        run.stdout
    );
    assert_probe_finished(&run, "probe", &expected_lines("probe"));
    let single: Vec<String> = expected_lines("probe")
        .into_iter()
        .filter(|line| !line.contains("vcpu 1"))
        .collect();
    assert_probe_finished(&run, "probe2", &single);
    // The policy docs/caches.md gives the board, from the geometry chroma
    // read at boot (QEMU's Cortex-A53 and A72 models: a PIPT-behaving L1 D).
    assert!(
        run.hypervisor_lines()
            .iter()
            .any(|l| l.contains("caches: L1 D 32 KiB")
                && l.contains("Pipt, 1 data colour(s); policy Nothing,")),
        "{}",
        run.hypervisor_lines().join("\n")
    );
    // The guest reads the board's counter frequency (the real board's).
    run.assert_vm_printed_containing("probe", &format!("timer {} Hz", timer_hz(&board)));
    run.assert_all_stopped(2, 0);
    // The watchdog reset ended QEMU right after the summary.
    run.assert_success();
}

fn a_faulting_vm_stops_alone(board: Board) {
    let config = config_toml(&[
        Vm::new("crasher", "crasher").cmdline("crasher.mode=fault"),
        Vm::new("probe", "probe").vcpus(2),
    ]);
    let run = boot(
        &format!("{}_crasher_fault", board.name),
        &config,
        with_timeout(board, 90),
    );
    run.assert_vm_printed_containing(
        "crasher",
        "crasher: fault at 0x0d000000: synchronous external abort",
    );
    run.assert_stopped("crasher", "faulted");
    run.assert_silent_after_stop("crasher");
    assert_probe_finished(&run, "probe", &expected_lines("probe"));
    run.assert_all_stopped(1, 1);
    run.assert_failure_not_timeout();
}

const SERVER: &str = "net.ip=10.0.2.15/24 svc.ping=10.0.2.16 svc.pings=3 svc.sinks=1";
const CLIENT: &str =
    "net.ip=10.0.2.16/24 net.tx=queued client.server=10.0.2.15 client.ping=3 client.mib=16";
/// 16 MiB of the client's xorshift stream (seed 1), as netsvc hashes it.
const SIXTEEN_MIB_FNV: &str = "f32a39a9ee3e40c1";

/// netsvc on core 0 and netclient on core 1, on switch lan0.
fn net_pair() -> String {
    let vm = |name: &str, guest: &str, cmdline: &str, cpu: u32| {
        format!(
            "[[vm]]\nname = {name:?}\nkernel = {:?}\nmemory = \"32M\"\ncmdline = {cmdline:?}\ncpus = [{cpu}]\n[[vm.net]]\nswitch = \"lan0\"\n\n",
            guest_image(guest).display().to_string()
        )
    };
    format!(
        "[[switch]]\nname = \"lan0\"\n\n{}{}",
        vm("svc", "netsvc", SERVER, 0),
        vm("client", "netclient", CLIENT, 1)
    )
}

/// The transfer and the pings completed, both VMs powered off.
fn assert_traffic(run: &Outcome) {
    run.assert_vm_printed_containing("client", "netclient: ping 3/3 replies");
    run.assert_vm_printed_containing("svc", "netsvc: ping 3/3 replies");
    run.assert_vm_printed_containing(
        "svc",
        &format!("netsvc: sink received 16777216 bytes fnv64={SIXTEEN_MIB_FNV}"),
    );
    run.assert_vm_printed_containing(
        "client",
        &format!("netclient: transfer 16777216 bytes fnv64={SIXTEEN_MIB_FNV} server fnv64={SIXTEEN_MIB_FNV} match"),
    );
    for vm in ["svc", "client"] {
        run.assert_vm_never_printed(vm, "FAIL");
        run.assert_stopped(vm, "powered off");
    }
    run.assert_all_stopped(2, 0);
    run.assert_success();
}

fn vm_to_vm_tcp_16mib_and_icmp_both_ways(board: Board) {
    let name = format!("{}_net_pair", board.name);
    let run = boot(&name, &net_pair(), with_timeout(board, 150));
    assert_traffic(&run);
}

fn vm_to_vm_in_forced_colour_and_maintain_mode(board: Board) {
    let run = boot_with(
        &format!("{}_net_pair_forced", board.name),
        &net_pair(),
        with_timeout(board, 150),
        &["--force-cache"],
    );
    assert_traffic(&run);
    assert!(
        run.hypervisor_lines()
            .iter()
            .any(|l| l.contains("ColourAndMaintain (forced)")),
        "the forced policy was not in force:\n{}",
        run.hypervisor_lines().join("\n")
    );
}

/// Debian's arm64 kernel and initramfs (`build/linux/`).
fn linux_file(name: &str) -> String {
    chroma_systest::workspace_root()
        .join("build/linux")
        .join(name)
        .display()
        .to_string()
}

/// A Linux `[[vm]]` with 2 vCPUs on `cpus`, 256 MiB, on lan0 with `mac`.
fn linux_vm(name: &str, cpus: [u32; 2], mac: &str, words: &str) -> String {
    let cmdline = format!("console=ttyAMA0 rdinit=/init {words}");
    format!(
        "[[vm]]\nname = {name:?}\nkernel = {:?}\ninitrd = {:?}\nmemory = \"256M\"\nvcpus = 2\ncpus = {cpus:?}\ncmdline = {cmdline:?}\n[[vm.net]]\nswitch = \"lan0\"\nmac = {mac:?}\n\n",
        linux_file("Image"),
        linux_file("initramfs.cpio.gz"),
    )
}

/// Two Debian arm64 Linux guests with 2 vCPUs each (cores 0-1 and 2-3):
/// "two" pings "one" and fetches 64 MiB from its httpd over TCP through
/// chroma's switch, with the sha256 equal at both ends (issue 12 item 3);
/// both power off and the watchdog ends the run.
fn two_linux_guests_ping_and_move_64mib_with_sha256_at_both_ends(board: Board) {
    let config = format!(
        "[[switch]]\nname = \"lan0\"\n\n{}{}",
        linux_vm(
            "one",
            [0, 1],
            "52:54:00:12:34:31",
            "chroma.ip=10.0.2.31/24 chroma.serve=64 chroma.run=\"sleep 60\" chroma.poweroff"
        ),
        linux_vm(
            "two",
            [2, 3],
            "52:54:00:12:34:32",
            "chroma.ip=10.0.2.32/24 chroma.ping=10.0.2.31 chroma.fetch=10.0.2.31 chroma.poweroff"
        ),
    );
    let run = boot(
        &format!("{}_linux_pair", board.name),
        &config,
        with_timeout(board, 240),
    );
    for vm in ["one", "two"] {
        run.assert_vm_printed_containing(vm, "linux-guest: network up");
        run.assert_vm_never_printed(vm, "Kernel panic");
    }
    run.assert_vm_printed_containing("two", "linux-guest: ping 10.0.2.31 ok");
    let served = run
        .vm_lines("one")
        .iter()
        .find_map(|l| l.trim().strip_prefix("linux-guest: serve "))
        .map(str::to_owned)
        .expect("one served a blob");
    let mut words = served.split_whitespace();
    let (sha, bytes) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    assert_eq!(bytes, "67108864", "{served}");
    run.assert_vm_printed_containing("two", &format!("linux-guest: fetch {sha} {bytes} "));
    assert!(
        run.vm_lines("two")
            .iter()
            .any(|l| l.contains(&format!("linux-guest: fetch {sha}"))
                && l.trim_end().ends_with(" match")),
        "the sha256 differs at the two ends:\n{}",
        run.vm_lines("two").join("\n")
    );
    run.assert_all_stopped(2, 0);
    run.assert_success();
}
