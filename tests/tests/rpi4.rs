//! chroma on the Raspberry Pi 4 board (`--board rpi4`: QEMU 10's `raspi4b`
//! with Debian's `bcm2711-rpi-4-b.dtb` and the real board's 54 MHz timer):
//! the first slice of issue 12. chroma starts at 0x80000 in EL2, brings up
//! the other three cores through the spin table, drives the GIC-400 and its
//! virtual interface, keeps the firmware's `/memreserve/` page, and ends
//! the run with the BCM2711 watchdog (there is no PSCI). The guests see the
//! same QEMU `virt` machine as on the other boards, so the 64-bit test
//! guests run unchanged:
//!
//! - the probe pair (a probe with 2 vCPUs on two cores beside another);
//! - the crasher faulting beside a probe (stopped alone);
//! - netsvc and netclient moving 16 MiB over TCP and pinging both ways
//!   through the switch, normal and in the forced colour and maintain mode.
//!
//! Every test is named `rpi4_...` (`scripts/test.sh rpi4`).

use chroma_systest::{
    boot, boot_with, config_toml, expected_lines, guest_image, Board, Outcome, Vm,
};

/// The Pi 4 board with a timeout of `seconds`.
fn pi4(seconds: u64) -> Board {
    Board {
        timeout_seconds: seconds,
        ..Board::rpi4()
    }
}

/// Probe `vm` printed `expected` in order, no failed check, and powered off.
fn assert_probe_finished(run: &Outcome, vm: &str, expected: &[String]) {
    run.assert_vm_printed_in_order(vm, expected);
    run.assert_vm_never_printed(vm, "FAIL");
    run.assert_stopped(vm, "powered off");
}

#[test]
fn rpi4_probes_side_by_side_on_four_cores() {
    let config = config_toml(&[
        Vm::new("probe", "probe").vcpus(2).cpus(&[2, 3]),
        Vm::new("probe2", "probe"),
    ]);
    let run = boot("rpi4_probes", &config, pi4(60));
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
    // The guest reads the board's counter frequency (the real Pi 4's).
    run.assert_vm_printed_containing("probe", "timer 54000000 Hz");
    run.assert_all_stopped(2, 0);
    // The watchdog reset ended QEMU right after the summary.
    run.assert_success();
}

#[test]
fn rpi4_a_faulting_vm_stops_alone() {
    let config = config_toml(&[
        Vm::new("crasher", "crasher").cmdline("crasher.mode=fault"),
        Vm::new("probe", "probe").vcpus(2),
    ]);
    let run = boot("rpi4_crasher_fault", &config, pi4(90));
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

#[test]
fn rpi4_vm_to_vm_tcp_16mib_and_icmp_both_ways() {
    let run = boot("rpi4_net_pair", &net_pair(), pi4(150));
    assert_traffic(&run);
}

#[test]
fn rpi4_vm_to_vm_in_forced_colour_and_maintain_mode() {
    let run = boot_with(
        "rpi4_net_pair_forced",
        &net_pair(),
        pi4(150),
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
#[test]
fn rpi4_two_linux_guests_ping_and_move_64mib_with_sha256_at_both_ends() {
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
    let run = boot("rpi4_linux_pair", &config, pi4(240));
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
