//! VMs on the ARMv7-A hypervisor (`--board qemu-virt-arm`, a Cortex-A15 in
//! HYP mode with GICv2): the system tests of the 64-bit board that make
//! sense on both, with the 32-bit builds of the test guests and Debian's
//! armhf kernel (issue 11 items 3, 4 and 6).
//!
//! - 32-bit probes side by side, also in the forced cache mode
//!   (side_by_side.rs);
//! - the 32-bit crasher faulting, branching wild, making bad HVCs, powering
//!   off and resetting beside a probe (isolation.rs);
//! - the virtual timer re-armed through TVAL and CVAL, alone and by two VMs
//!   sharing a CPU (timer.rs);
//! - netsvc and netclient moving 16 MiB over TCP and pinging both ways
//!   through the switch, normal and in the forced colour and maintain mode,
//!   with a third VM faulting on the switch meanwhile, and with one sending
//!   from the server's MAC (net.rs); and a negative control: a client with
//!   no server on its switch gets no replies, and the traffic assertions
//!   catch it;
//! - Debian's armhf Linux with 1 and 2 vCPUs in one boot (linux.rs): typed
//!   console input, ICMP to the bare-metal guest and to the other Linux
//!   guest, 64 MiB over TCP between them with the sha256 at both ends, and
//!   the host reaching both through the uplink and back; 64 MiB between
//!   two armhf Linux guests in the forced colour and maintain mode; and a
//!   Linux guest that panics, reboots and powers off while 32-bit VMs go
//!   on.
//!
//! Every test is named `armv7_...`, so `scripts/test.sh armv7` runs them
//! (and the ARMv7 boot tests of armv7.rs).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use chroma_systest::{
    boot, boot_with, config_toml, expected_lines, free_port, guest_image_arm, start_with,
    workspace_root, Board, Outcome, Running, Vm, TIMEOUT_EXIT,
};

/// The ARMv7 board with two CPUs and a timeout of `seconds`.
fn arm_board(seconds: u64) -> Board {
    Board {
        timeout_seconds: seconds,
        ..Board::arm(2)
    }
}

/// Panics unless VM `vm` printed a line equal to `wanted`.
fn assert_vm_printed_line(run: &Outcome, vm: &str, wanted: &str) {
    assert!(
        run.vm_lines(vm)
            .iter()
            .any(|line| line.trim_end() == wanted),
        "VM {vm} did not print {wanted:?}; it printed:\n{}",
        run.vm_lines(vm).join("\n")
    );
}

// ---------------------------------------------------------------- probes

/// Probe `vm` printed `expected` in order, no failed check, and powered off.
fn assert_probe_finished(run: &Outcome, vm: &str, expected: &[String]) {
    run.assert_vm_printed_in_order(vm, expected);
    // A line containing FAIL is a failed check of the probe's.
    run.assert_vm_never_printed(vm, "FAIL");
    // The 32-bit build ran (the 64-bit one says `arch aarch64`).
    run.assert_vm_printed_containing(vm, "probe: info arch arm, ");
    run.assert_stopped(vm, "powered off");
}

/// Two 32-bit probes with two vCPUs each and a third with one, side by
/// side on two CPUs: the first two print every expected line (their second
/// vCPU, timers, SGI, isolation), the third the same without the SMP lines,
/// and all power off, with a clean summary.
#[test]
fn armv7_probes_side_by_side() {
    let config = config_toml(&[
        Vm::arm("left", "probe").vcpus(2),
        Vm::arm("right", "probe").vcpus(2),
        Vm::arm("single", "probe"),
    ]);
    let run = boot("armv7_probes", &config, arm_board(90));
    for vm in ["left", "right"] {
        assert_probe_finished(&run, vm, &expected_lines("probe"));
        run.assert_vm_printed_containing(vm, "probe: info dtb 0x43e00000, 2 vcpus, ");
    }
    let one_vcpu: Vec<String> = expected_lines("probe")
        .into_iter()
        .filter(|line| !line.contains("vcpu 1"))
        .collect();
    assert_probe_finished(&run, "single", &one_vcpu);
    run.assert_vm_printed_containing("single", "probe: smp skipped (1 vcpu)");
    run.assert_vm_never_printed("single", "vcpu 1 online");
    run.assert_all_stopped(3, 0);
    run.assert_success();
}

/// The same two-vCPU pair in the forced colour and maintain mode: the
/// guests' view is unchanged.
#[test]
fn armv7_probes_with_forced_cache_maintenance() {
    let config = config_toml(&[
        Vm::arm("left", "probe").vcpus(2),
        Vm::arm("right", "probe").vcpus(2),
    ]);
    let run = boot_with(
        "armv7_probes_forced",
        &config,
        arm_board(90),
        &["--force-cache"],
    );
    assert!(
        run.hypervisor_lines()
            .iter()
            .any(|l| l.contains("ColourAndMaintain (forced)")),
        "the forced policy was not in force:\n{}",
        run.hypervisor_lines().join("\n")
    );
    for vm in ["left", "right"] {
        assert_probe_finished(&run, vm, &expected_lines("probe"));
    }
    run.assert_all_stopped(2, 0);
    run.assert_success();
}

// ------------------------------------------------------------- isolation

/// The 32-bit crasher loads from an IPA that is neither RAM nor a device,
/// forever, beside a two-vCPU probe: it is stopped alone for faulting and
/// says nothing more, the probe finishes, and the hypervisor ends the run
/// with its summary (1 clean, 1 failed), not by a timeout.
#[test]
fn armv7_a_faulting_vm_stops_alone() {
    let config = config_toml(&[
        Vm::arm("crasher", "crasher").cmdline("crasher.mode=fault"),
        Vm::arm("probe", "probe").vcpus(2),
    ]);
    let run = boot("armv7_crasher_fault", &config, arm_board(90));
    run.assert_vm_printed_containing("crasher", "crasher: start");
    run.assert_vm_printed_containing(
        "crasher",
        "crasher: fault at 0x0d000000: synchronous external abort",
    );
    run.assert_stopped("crasher", "faulted");
    // Stopped means stopped: not one more line from it.
    run.assert_silent_after_stop("crasher");
    assert_probe_finished(&run, "probe", &expected_lines("probe"));
    run.assert_all_stopped(1, 1);
    run.assert_failure_not_timeout();
}

/// The crasher branches to that IPA: the instruction abort chroma injects
/// reaches its own handler, which retries it forever, until chroma stops it
/// for faulting; the probe beside it finishes.
#[test]
fn armv7_a_wild_branch_is_answered_with_an_abort_and_stops_alone() {
    let config = config_toml(&[
        Vm::arm("crasher", "crasher").cmdline("crasher.mode=wild"),
        Vm::arm("probe", "probe").vcpus(2),
    ]);
    let run = boot("armv7_crasher_wild", &config, arm_board(90));
    run.assert_vm_printed_containing("crasher", "crasher: jumping to 0x0d000000");
    run.assert_vm_printed_containing("crasher", "synchronous external abort");
    assert!(
        run.hypervisor_lines()
            .iter()
            .any(|line| line.contains("abort") && line.contains("vm crasher")),
        "no `chroma: ... abort ...` line for the crasher's wild branch"
    );
    run.assert_stopped("crasher", "faulted");
    run.assert_silent_after_stop("crasher");
    assert_probe_finished(&run, "probe", &expected_lines("probe"));
    run.assert_all_stopped(1, 1);
    run.assert_failure_not_timeout();
}

/// The `hvc` mode lines whose answers the PSCI spec (DEN 0022) and SMCCC
/// fix, as isolation.rs takes them from the answers plain QEMU gives.
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

/// Unknown HVC/SMC function ids and invalid PSCI arguments from the 32-bit
/// crasher get the error codes the specs fix, and it powers off; the probe
/// beside it finishes.
#[test]
fn armv7_bad_hypervisor_calls_get_error_codes() {
    let config = config_toml(&[
        Vm::arm("crasher", "crasher").cmdline("crasher.mode=hvc"),
        Vm::arm("probe", "probe").vcpus(2),
    ]);
    let run = boot("armv7_crasher_hvc", &config, arm_board(90));
    let expected = spec_fixed_hvc_lines();
    assert!(
        expected.len() >= 8,
        "too few spec-fixed lines: {expected:?}"
    );
    run.assert_vm_printed_in_order("crasher", &expected);
    run.assert_stopped("crasher", "powered off");
    assert_probe_finished(&run, "probe", &expected_lines("probe"));
    run.assert_all_stopped(2, 0);
    run.assert_success();
}

/// A 32-bit VM that powers off at once (PSCI SYSTEM_OFF) stops alone; the
/// probe beside it finishes and the run is clean.
#[test]
fn armv7_a_vm_that_powers_off_at_once_leaves_the_other_running() {
    let config = config_toml(&[
        Vm::arm("crasher", "crasher").cmdline("crasher.mode=off"),
        Vm::arm("probe", "probe").vcpus(2),
    ]);
    let run = boot("armv7_crasher_off", &config, arm_board(90));
    run.assert_vm_printed_containing("crasher", "crasher: system off");
    run.assert_stopped("crasher", "powered off");
    assert_probe_finished(&run, "probe", &expected_lines("probe"));
    run.assert_all_stopped(2, 0);
    run.assert_success();
}

/// A 32-bit VM that resets at once, every time it boots, is restarted (never
/// stopped), while the probe beside it finishes; the run ends by the timeout.
#[test]
fn armv7_a_vm_that_resets_is_restarted_and_the_other_finishes() {
    let config = config_toml(&[
        Vm::arm("crasher", "crasher").cmdline("crasher.mode=reset"),
        Vm::arm("probe", "probe").vcpus(2),
    ]);
    let run = boot("armv7_crasher_reset", &config, arm_board(20));
    let boots = run
        .vm_lines("crasher")
        .iter()
        .filter(|line| **line == "crasher: start")
        .count();
    assert!(
        boots >= 2,
        "the crasher booted {boots} time(s): SYSTEM_RESET did not restart it"
    );
    assert_eq!(run.stop_reason("crasher"), None, "the crasher was stopped");
    assert_probe_finished(&run, "probe", &expected_lines("probe"));
    assert_eq!(
        run.status,
        Some(TIMEOUT_EXIT),
        "the run ended although the crasher keeps resetting"
    );
}

// ----------------------------------------------------------------- timer

/// The probe's words: both timer variants, nothing else but the ticks.
const VTIMER_ONLY: &str = "probe.vtimer=both probe.nosmp probe.noabort";

/// VM `vm` re-armed its virtual timer through TVAL and through CVAL only
/// (CNTV_CTL written once and read back unchanged), at least 5 interrupts
/// each, and powered off (timer.rs; its negative control applies here).
fn assert_rearmed(run: &Outcome, vm: &str) {
    for how in ["tval", "cval"] {
        let prefix = format!("probe: vtimer {how}: ");
        let count = run.vm_lines(vm).iter().find_map(|line| {
            line.strip_prefix(prefix.as_str())?
                .strip_suffix(" interrupts, CNTV_CTL_EL0 as written")?
                .parse::<u64>()
                .ok()
        });
        let count = count.unwrap_or_else(|| {
            panic!(
                "VM {vm} reported no clean `{prefix}N interrupts` line; it printed:\n{}",
                run.vm_lines(vm).join("\n")
            )
        });
        eprintln!("armv7 timer: VM {vm} {how}: {count} interrupts");
        assert!(count >= 5, "VM {vm} {how}: {count} interrupts");
    }
    run.assert_vm_never_printed(vm, "FAIL");
    run.assert_stopped(vm, "powered off");
}

/// One 32-bit VM re-arms its virtual timer through TVAL, then CVAL.
#[test]
fn armv7_vtimer_rearmed_without_ctl_writes() {
    let config = config_toml(&[Vm::arm("timer", "probe").cmdline(VTIMER_ONLY)]);
    let run = boot("armv7_vtimer_alone", &config, Board::arm(1));
    assert_rearmed(&run, "timer");
    run.assert_all_stopped(1, 0);
    run.assert_success();
}

/// Two 32-bit VMs on one physical CPU, one waiting for its timer in WFI,
/// the other spinning (preempted with its interrupt pending or active).
#[test]
fn armv7_vtimer_two_vms_sharing_a_cpu() {
    let config = config_toml(&[
        Vm::arm("parked", "probe").cmdline(VTIMER_ONLY),
        Vm::arm("spinning", "probe").cmdline(&format!("{VTIMER_ONLY} probe.vtimer.busy")),
    ]);
    let run = boot("armv7_vtimer_shared", &config, Board::arm(1));
    for vm in ["parked", "spinning"] {
        assert_rearmed(&run, vm);
    }
    run.assert_all_stopped(2, 0);
    run.assert_success();
}

// ----------------------------------------------------------- bare-metal net

const SERVER: &str = "net.ip=10.0.2.15/24 svc.ping=10.0.2.16 svc.pings=3 svc.sinks=1";
const CLIENT: &str =
    "net.ip=10.0.2.16/24 net.tx=queued client.server=10.0.2.15 client.ping=3 client.mib=16";
/// 16 MiB of the client's xorshift stream (seed 1), as netsvc hashes it.
const SIXTEEN_MIB_FNV: &str = "f32a39a9ee3e40c1";

/// A `[[vm]]` of the 32-bit build of test guest `guest` with 32 MiB, pinned
/// to `cpu`, with a NIC on switch `switch`. No `arch`: on qemu-virt-arm
/// that is an AArch32 VM.
fn net_vm(name: &str, guest: &str, cmdline: &str, cpu: u32, switch: &str) -> String {
    format!(
        "[[vm]]\nname = {name:?}\nkernel = {:?}\nmemory = \"32M\"\ncmdline = {cmdline:?}\ncpus = [{cpu}]\n[[vm.net]]\nswitch = {switch:?}\n\n",
        guest_image_arm(guest).display().to_string()
    )
}

/// netsvc and netclient on lan0.
fn net_pair() -> String {
    format!(
        "[[switch]]\nname = \"lan0\"\n\n{}{}",
        net_vm("svc", "netsvc", SERVER, 0, "lan0"),
        net_vm("client", "netclient", CLIENT, 1, "lan0")
    )
}

/// The transfer completed with matching checksums, pings went both ways,
/// both VMs powered off, and port security dropped nothing.
fn assert_traffic(run: &Outcome) {
    assert_vm_printed_line(run, "client", "netclient: ping 3/3 replies");
    assert_vm_printed_line(run, "svc", "netsvc: ping 3/3 replies");
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
    let lines = run.hypervisor_lines();
    let client = lines
        .iter()
        .find(|l| l.contains("vm client net0") && l.contains("traps/pkt"))
        .expect("no counter line for the client's NIC");
    assert!(client.contains(", spoofed 0;"), "{client}");
    eprintln!("armv7 net: {client}");
}

/// VM-to-VM TCP (16 MiB, FNV-1a at both ends) and ICMP both ways between
/// the 32-bit netsvc and netclient through chroma's switch on ARMv7.
#[test]
fn armv7_vm_to_vm_tcp_16mib_and_icmp_both_ways() {
    let run = boot("armv7_net_pair", &net_pair(), arm_board(150));
    assert_traffic(&run);
    run.assert_all_stopped(2, 0);
    run.assert_success();
}

/// The same in the forced colour and maintain mode (issue 11 item 6):
/// the log names the forced policy, and the NIC did cache maintenance.
#[test]
fn armv7_vm_to_vm_in_forced_colour_and_maintain_mode() {
    let run = boot_with(
        "armv7_net_pair_forced",
        &net_pair(),
        arm_board(150),
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
    let counters = run
        .hypervisor_lines()
        .into_iter()
        .find(|l| l.contains("vm client net0"))
        .expect("client counters")
        .to_string();
    assert!(
        !counters.contains("lines maintained/pkt 0.00"),
        "no cache maintenance in forced mode: {counters}"
    );
    run.assert_all_stopped(2, 0);
    run.assert_success();
}

/// A third 32-bit VM on the same switch (flooded with the pair's
/// broadcasts) faults until it is stopped, while the transfer runs.
#[test]
fn armv7_a_vm_faulting_on_the_switch_mid_transfer_does_not_stop_the_traffic() {
    let config = net_pair() + &net_vm("faulter", "crasher", "crasher.mode=fault", 0, "lan0");
    let run = boot("armv7_net_pair_faulter", &config, arm_board(150));
    run.assert_stopped("faulter", "faulted");
    assert_traffic(&run);
    run.assert_all_stopped(2, 1);
    run.assert_failure_not_timeout();
}

/// Port security (issue 10): a third VM sends from the server's MAC; the
/// switch drops every such frame and counts it as spoofed, while the pair
/// moves its 16 MiB (net.rs has the negative control).
#[test]
fn armv7_a_vm_sending_from_another_vms_mac_gets_nothing_through() {
    const SERVER_MAC: &str = "52:54:00:00:00:15";
    let with_mac = |text: String, mac: &str| {
        text.replace(
            "switch = \"lan0\"\n",
            &format!("switch = \"lan0\"\nmac = \"{mac}\"\n"),
        )
    };
    let config = format!(
        "[[switch]]\nname = \"lan0\"\n\n{}{}{}",
        with_mac(net_vm("svc", "netsvc", SERVER, 0, "lan0"), SERVER_MAC),
        with_mac(
            net_vm("client", "netclient", CLIENT, 1, "lan0"),
            "52:54:00:00:00:16"
        ),
        with_mac(
            net_vm(
                "spoofer",
                "netclient",
                &format!(
                    "net.ip=10.0.2.17/24 net.mac={SERVER_MAC} client.server=10.0.2.15 client.ping=3 client.mib=1"
                ),
                1,
                "lan0"
            ),
            "52:54:00:00:00:17"
        ),
    );
    let run = boot("armv7_net_spoofer", &config, arm_board(150));
    assert_traffic(&run);
    run.assert_vm_printed_containing("spoofer", &format!("mac {SERVER_MAC}"));
    run.assert_vm_never_printed("spoofer", "replies");
    let lines = run.hypervisor_lines();
    let spoofer = lines
        .iter()
        .find(|l| l.contains("vm spoofer net0") && l.contains("spoofed"))
        .expect("no counter line for the spoofer's NIC");
    assert!(
        spoofer.contains(", tx 0 pkts 0 B,"),
        "its frames got through: {spoofer}"
    );
    let spoofed: u64 = spoofer
        .split("spoofed ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(spoofed > 0, "nothing counted as spoofed: {spoofer}");
}

/// Negative control for the network tests above: netclient alone on its
/// switch gets no echo reply (its neighbour never answers ARP, so its echo
/// request cannot even be queued), prints a FAIL line and powers off;
/// [`assert_traffic`] must refuse that run.
#[test]
fn armv7_negative_control_a_client_without_a_server_gets_no_replies() {
    let config = format!(
        "[[switch]]\nname = \"lan0\"\n\n{}",
        net_vm(
            "client",
            "netclient",
            "net.ip=10.0.2.16/24 client.server=10.0.2.15 client.ping=3 client.mib=1",
            1,
            "lan0"
        )
    );
    let run = boot("armv7_net_alone", &config, arm_board(90));
    run.assert_vm_printed_containing("client", "netclient: info server 10.0.2.15 silent");
    run.assert_vm_printed_containing("client", "netclient: FAIL ping 1: ");
    run.assert_vm_never_printed("client", "reply from");
    run.assert_vm_never_printed("client", "netclient: transfer");
    run.assert_stopped("client", "powered off");
    let caught = std::panic::catch_unwind(|| assert_traffic(&run));
    assert!(
        caught.is_err(),
        "assert_traffic accepted a run without a server"
    );
}

// ------------------------------------------------------------------ Linux

/// The shell's banner: the console shell is up and reads its input.
const SHELL_UP: &str = "built-in shell (ash)";
/// Typed input whose answer only a shell that ran it can print.
const TYPED: &str = "echo typed-$((6*7))\n";
const TYPED_ANSWER: &str = "typed-42";

fn armhf_file(name: &str) -> String {
    workspace_root()
        .join("build")
        .join("linux-armhf")
        .join(name)
        .display()
        .to_string()
}

/// A `[[vm]]` of Debian's armhf kernel (an AArch32 VM: no `arch` on this
/// board) on switch lan0 with MAC `mac`.
fn armhf_vm(name: &str, vcpus: u32, memory: &str, words: &str, mac: &str) -> String {
    let cmdline = format!("console=ttyAMA0 rdinit=/init {words}");
    format!(
        "[[vm]]\nname = {name:?}\nkernel = {:?}\ninitrd = {:?}\nmemory = {memory:?}\nvcpus = {vcpus}\ncmdline = {cmdline:?}\n[[vm.net]]\nswitch = \"lan0\"\nmac = {mac:?}\n\n",
        armhf_file("zImage"),
        armhf_file("initramfs.cpio.gz"),
    )
}

/// Waits for VM `vm`'s shell, then gives it a moment to print its prompt.
fn wait_shell(run: &Running, vm: &str, seconds: u64) {
    run.wait_for(vm, SHELL_UP, seconds);
    std::thread::sleep(Duration::from_millis(500));
}

/// Panics unless VM `vm`'s busybox ping of `ip` got its 3 replies.
fn assert_three_replies(run: &Outcome, vm: &str, ip: &str) {
    let header = format!("--- {ip} ping statistics ---");
    let lines = run.vm_lines(vm);
    let at = lines
        .iter()
        .position(|line| line.trim_end() == header)
        .unwrap_or_else(|| {
            panic!(
                "VM {vm} never pinged {ip}; it printed:\n{}",
                lines.join("\n")
            )
        });
    let summary = lines.get(at + 1).copied().unwrap_or("");
    assert!(
        summary.starts_with("3 packets transmitted, 3 packets received, 0% packet loss"),
        "VM {vm} pinging {ip}: {summary:?}"
    );
    let replies = lines
        .iter()
        // The shell's prompt may come first on the line.
        .filter(|line| line.contains(&format!("64 bytes from {ip}: seq=")))
        .count();
    assert!(replies >= 3, "VM {vm}: {replies} echo replies from {ip}");
}

/// `linux-guest: <word> <sha256> <bytes> ...` → (sha256, bytes, the line).
fn digest_line(run: &Outcome, vm: &str, word: &str) -> (String, u64, String) {
    // Background lines may follow the shell's prompt on the same line.
    let prefix = format!("linux-guest: {word} ");
    let line = run
        .vm_lines(vm)
        .into_iter()
        .find_map(|line| line.find(&prefix).map(|at| &line[at..]))
        .unwrap_or_else(|| {
            panic!(
                "VM {vm} printed no {prefix:?} line; it printed:\n{}",
                run.vm_lines(vm).join("\n")
            )
        });
    let words: Vec<&str> = line[prefix.len()..].split_whitespace().collect();
    assert!(words.len() >= 2, "{line}");
    assert_eq!(words[0].len(), 64, "not a sha256: {line}");
    (
        words[0].to_owned(),
        words[1].parse().unwrap_or(0),
        line.to_owned(),
    )
}

/// `sha256sum` of what the shell command `shell` writes (empty if it failed).
fn sha256_of_output(shell: &str) -> String {
    let output = Command::new("bash")
        .args(["-c", &format!("set -o pipefail; {shell} | sha256sum")])
        .output()
        .expect("run bash");
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace().next().unwrap_or("").to_owned()
}

/// Kills the host HTTP server when dropped.
struct HostServer(std::process::Child);

impl Drop for HostServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `python3 -m http.server` on 127.0.0.1 (10.0.2.2 from behind the
/// uplink) serving a fresh 1 MiB random file `host.bin`; returns the
/// server, its port and the file's sha256.
fn host_web_server(test_name: &str) -> (HostServer, u16, String) {
    let dir: PathBuf = workspace_root()
        .join("target")
        .join("systest")
        .join(format!("{test_name}_www"));
    std::fs::create_dir_all(&dir).expect("create the host web root");
    let blob = dir.join("host.bin");
    let made = Command::new("dd")
        .args([
            "if=/dev/urandom",
            &format!("of={}", blob.display()),
            "bs=64k",
            "count=16",
            "status=none",
        ])
        .status()
        .expect("dd");
    assert!(made.success());
    let sha = sha256_of_output(&format!("cat {}", blob.display()));
    let port = free_port();
    let server = HostServer(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start python3 -m http.server"),
    );
    (server, port, sha)
}

/// The host fetches `/blob.bin` from a guest's httpd through the forward on
/// `port` and compares its sha256 with the one the guest printed in its
/// `linux-guest: httpd on port 80 (blob.sha256 ...)` line.
fn host_fetches_blob(port: u16, httpd_line: &str) {
    let guest_sha = httpd_line
        .rsplit("blob.sha256 ")
        .next()
        .unwrap_or("")
        .trim_end_matches(')')
        .to_owned();
    assert_eq!(guest_sha.len(), 64, "{httpd_line}");
    let url = format!("http://127.0.0.1:{port}");
    let page = Command::new("curl")
        .args(["-sS", "--max-time", "30", &format!("{url}/")])
        .output()
        .expect("curl");
    let page = String::from_utf8_lossy(&page.stdout).into_owned();
    assert!(
        page.contains("hello from busybox httpd"),
        "the page at {url}: {page:?}"
    );
    let started = std::time::Instant::now();
    let fetched = sha256_of_output(&format!("curl -sS --fail --max-time 60 {url}/blob.bin"));
    eprintln!(
        "armv7 linux: host fetched 1 MiB from {url} in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        fetched, guest_sha,
        "sha256 of blob.bin on the host and in the guest"
    );
}

/// Debian's armhf Linux on the ARMv7 hypervisor, with 1 vCPU (VM "one")
/// and 2 vCPUs (VM "two"), beside the 32-bit netsvc, in one boot:
/// - each boots to its shell and runs what is typed on the console (Ctrl-A
///   n moves the input from one to two), and nothing typed for one reaches
///   two;
/// - each pings the bare-metal guest and the other Linux guest (3 of 3
///   replies), and one's TCP reaches netsvc's sink;
/// - two fetches 64 MiB over TCP from one's httpd, sha256 equal at both
///   ends;
/// - the host fetches a 1 MiB file from each guest's httpd through an
///   uplink forward, and each guest fetches a host file through the uplink,
///   sha256 equal on both sides.
#[test]
fn armv7_linux_with_one_and_two_vcpus_input_ping_tcp_64mib_and_uplink() {
    let test_name = "armv7_linux";
    let (_host_server, host_port, host_sha) = host_web_server(test_name);
    let forward_one = free_port();
    let forward_two = free_port();
    let pings = "chroma.run=\"ping -c 3 10.0.2.15; ping -c 3 {peer}\"";
    let config = format!(
        "[[switch]]\nname = \"lan0\"\nuplink = true\n\n{}{}{}",
        armhf_vm(
            "one",
            1,
            "256M",
            &format!(
                "chroma.ip=10.0.2.31/24 chroma.gw=10.0.2.2 chroma.serve=64 chroma.ping=10.0.2.32 chroma.wait=150 {}",
                pings.replace("{peer}", "10.0.2.32")
            ),
            "52:54:00:12:34:31",
        ),
        armhf_vm(
            "two",
            2,
            "128M",
            &format!(
                "chroma.ip=10.0.2.32/24 chroma.gw=10.0.2.2 chroma.httpd chroma.ping=10.0.2.31 chroma.fetch=10.0.2.31 chroma.wait=150 {}",
                pings.replace("{peer}", "10.0.2.31")
            ),
            "52:54:00:12:34:32",
        ),
        net_vm("svc", "netsvc", "net.ip=10.0.2.15/24 svc.sinks=1", 1, "lan0"),
    );
    let forwards = [
        format!("{forward_one}:10.0.2.31:80"),
        format!("{forward_two}:10.0.2.32:80"),
    ];
    let mut run = start_with(
        test_name,
        &config,
        arm_board(420),
        &["--forward", &forwards[0], "--forward", &forwards[1]],
    );
    // The console input goes to one first.
    wait_shell(&run, "one", 180);
    run.type_text(TYPED);
    run.wait_for("one", TYPED_ANSWER, 30);
    // The host through the uplink to each guest's httpd.
    let httpd_one = run.wait_for("one", "linux-guest: httpd on port 80 (blob.sha256 ", 10);
    host_fetches_blob(forward_one, &httpd_one);
    let httpd_two = run.wait_for("two", "linux-guest: httpd on port 80 (blob.sha256 ", 120);
    host_fetches_blob(forward_two, &httpd_two);
    // The 64 MiB transfer and the pings (two fetches, then pings).
    run.wait_for("two", "linux-guest: fetch ", 240);
    run.wait_for("two", "linux-guest: run exit", 60);
    run.wait_for("one", "linux-guest: run exit", 60);
    // one: the host's file through the uplink, then TCP to the bare-metal
    // sink, which ends the service guest (svc.sinks=1); then power off.
    let wget = format!(
        "wget -q -O - http://10.0.2.2:{host_port}/host.bin | sha256sum | sed 's/^/host-file /'\n"
    );
    run.type_text(&wget);
    run.wait_for("one", &format!("host-file {host_sha}"), 60);
    run.type_text("printf hello-sink | nc 10.0.2.15 9\n");
    run.wait_for("chroma", "vm svc stopped", 30);
    run.type_text("poweroff -f\n");
    run.wait_for("chroma", "vm one stopped", 30);
    // two: typed input, the host's file, power off.
    run.type_text("\x01n");
    std::thread::sleep(Duration::from_millis(300));
    run.type_text(TYPED);
    run.wait_for("two", TYPED_ANSWER, 30);
    run.type_text(&wget);
    run.wait_for("two", &format!("host-file {host_sha}"), 60);
    run.type_text("poweroff -f\n");
    let outcome = run.finish(60);

    for vm in ["one", "two"] {
        outcome.assert_vm_printed_containing(vm, "linux-guest: init");
        outcome.assert_vm_printed_containing(vm, "linux-guest: network up");
        outcome.assert_vm_printed_containing(vm, "linux-guest: run exit 0");
        outcome.assert_vm_never_printed(vm, "Kernel panic");
        // Typed input reached the VM it was meant for, once.
        assert_eq!(
            outcome
                .vm_lines(vm)
                .iter()
                .filter(|l| l.contains(TYPED_ANSWER))
                .count(),
            1,
            "{vm}: lines with {TYPED_ANSWER}"
        );
        assert_three_replies(&outcome, vm, "10.0.2.15");
        outcome.assert_vm_printed_containing(vm, &format!("host-file {host_sha}"));
        outcome.assert_stopped(vm, "powered off");
    }
    // The 32-bit kernel, on one and two CPUs.
    outcome.assert_vm_printed_containing("one", "CPU: ARMv7 Processor");
    outcome.assert_vm_printed_containing("one", "smp: Brought up 1 node, 1 CPU");
    outcome.assert_vm_printed_containing("two", "smp: Brought up 1 node, 2 CPUs");
    outcome.assert_vm_printed_containing("one", "linux-guest: ping 10.0.2.32 ok");
    outcome.assert_vm_printed_containing("two", "linux-guest: ping 10.0.2.31 ok");
    assert_three_replies(&outcome, "one", "10.0.2.32");
    assert_three_replies(&outcome, "two", "10.0.2.31");
    // Linux's TCP reached the bare-metal sink, which answered.
    outcome.assert_vm_printed_containing("svc", "netsvc: sink received 10 bytes");
    outcome.assert_vm_printed_containing("one", "len=10 fnv64=");
    outcome.assert_stopped("svc", "powered off");
    // 64 MiB from one to two, the same sha256 at both ends.
    let (served, bytes, _) = digest_line(&outcome, "one", "serve");
    assert_eq!(bytes, 64 << 20, "served size");
    let (fetched, fetched_bytes, line) = digest_line(&outcome, "two", "fetch");
    // The 128 MiB client's tmpfs cannot hold 64 MiB: it streams through
    // sha256sum instead (the fallback of `chroma.fetch`), and says so.
    assert!(line.ends_with(" match (streamed)"), "{line}");
    assert_eq!(fetched, served, "sha256 at the client and at the server");
    assert_eq!(fetched_bytes, 64 << 20, "{line}");
    eprintln!("armv7 linux throughput: {line}");
    for line in outcome.hypervisor_lines() {
        if line.contains("traps/pkt") {
            eprintln!("armv7 linux counters: {line}");
        }
    }
    outcome.assert_all_stopped(3, 0);
    outcome.assert_success();
}

/// 64 MiB over TCP from an armhf Linux server (1 vCPU) to an armhf Linux
/// client (2 vCPUs) in the forced colour and maintain mode (issue 11 item
/// 6 with Linux's caches on): the sha256 at both ends, the forced policy in
/// the log, cache maintenance counted on the NICs. Both NICs offer the
/// packed ring (issue 14), which Linux takes; with Linux's caches on the
/// HYP-mode hypervisor keeps the ring on its maintained cacheable alias
/// (a Non-cacheable one would miss the driver's dirty descriptors).
#[test]
fn armv7_linux_to_linux_64mib_tcp_in_forced_colour_and_maintain_mode() {
    let config = format!(
        "[[switch]]\nname = \"lan0\"\n\n{}{}",
        chroma_systest::with_ring(&armhf_vm(
            "server",
            1,
            "256M",
            "chroma.ip=10.0.2.21/24 chroma.gw=none chroma.serve=64",
            "52:54:00:12:34:21"
        ), "packed"),
        chroma_systest::with_ring(&armhf_vm(
            "client",
            2,
            "128M",
            "chroma.ip=10.0.2.22/24 chroma.gw=none chroma.fetch=10.0.2.21 chroma.wait=150 chroma.poweroff",
            "52:54:00:12:34:22"
        ), "packed"),
    );
    assert_eq!(config.matches("ring = \"packed\"").count(), 2, "{config}");
    let mut run = start_with(
        "armv7_linux_tcp_forced",
        &config,
        arm_board(300),
        &["--force-cache"],
    );
    run.wait_for("client", "linux-guest: fetch ", 280);
    run.wait_for("chroma", "vm client stopped", 30);
    wait_shell(&run, "server", 10);
    run.type_text("poweroff -f\n");
    let outcome = run.finish(60);
    assert!(
        outcome
            .hypervisor_lines()
            .iter()
            .any(|l| l.contains("ColourAndMaintain (forced)")),
        "the forced policy was not in force"
    );
    let (served, bytes, _) = digest_line(&outcome, "server", "serve");
    assert_eq!(bytes, 64 << 20, "served size");
    let (fetched, fetched_bytes, line) = digest_line(&outcome, "client", "fetch");
    // The 128 MiB client's tmpfs cannot hold 64 MiB: it streams through
    // sha256sum instead (the fallback of `chroma.fetch`), and says so.
    assert!(line.ends_with(" match (streamed)"), "{line}");
    assert_eq!(fetched, served, "sha256 at the client and at the server");
    assert_eq!(fetched_bytes, 64 << 20, "{line}");
    eprintln!("armv7 linux forced throughput: {line}");
    for vm in ["server", "client"] {
        outcome.assert_vm_never_printed(vm, "Kernel panic");
        outcome.assert_stopped(vm, "powered off");
        let counters = outcome
            .hypervisor_lines()
            .into_iter()
            .find(|l| l.contains(&format!("vm {vm} net0")))
            .unwrap_or_else(|| panic!("no counters for {vm}"))
            .to_string();
        assert!(
            !counters.contains("lines maintained/pkt 0.00"),
            "no cache maintenance in forced mode: {counters}"
        );
        // Linux's caches are on (coherent): the forced policy maintains
        // the packed ring through the cacheable alias, never the
        // Non-cacheable one (which would miss its dirty descriptors).
        assert!(
            counters.contains("ring accesses via NC alias/pkt 0.00"),
            "the packed ring of a cached driver reached through the NC alias: {counters}"
        );
        assert!(
            outcome
                .hypervisor_lines()
                .iter()
                .any(|l| l.contains(&format!("vm {vm}: NIC driver up"))
                    && l.trim_end()
                        .ends_with("packed ring via the cacheable alias")),
            "{vm}: no policy line for a packed ring via the cacheable alias"
        );
    }
    outcome.assert_all_stopped(2, 0);
    outcome.assert_success();
}

/// Sends `payload` to the service guest's echo port through the forward on
/// `port` and checks it comes back.
fn echo_through(port: u16, payload: &str) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the echo forward");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    stream.write_all(payload.as_bytes()).expect("send to echo");
    let mut back = vec![0u8; payload.len()];
    stream
        .read_exact(&mut back)
        .unwrap_or_else(|error| panic!("echo of {payload:?} through 127.0.0.1:{port}: {error}"));
    assert_eq!(String::from_utf8_lossy(&back), payload);
}

/// One session with the service guest's checksum sink through the forward
/// on `port`: `bytes` bytes; returns its `len=... fnv64=...` answer.
fn sink_through(port: u16, bytes: usize) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the sink forward");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let data: Vec<u8> = (0..bytes).map(|i| (i * 7 + 3).to_le_bytes()[0]).collect();
    stream.write_all(&data).expect("send to the sink");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// Debian's armhf Linux (2 vCPUs) panics, is reset by its kernel (PSCI
/// SYSTEM_RESET restarts the VM from its images), reboots, and powers off,
/// while a 32-bit service guest keeps answering the host through the uplink
/// (its timer running throughout) and a 32-bit pair moves 16 MiB (linux.rs).
#[test]
fn armv7_linux_panics_reboots_and_powers_off_while_the_other_vms_go_on() {
    let echo_port = free_port();
    let sink_port = free_port();
    let config = format!(
        "[[switch]]\nname = \"lan0\"\nuplink = true\n\n{}{}{}{}",
        // panic=5: the panicked kernel sits 5 s, then resets.
        armhf_vm(
            "linux",
            2,
            "128M",
            "chroma.ip=10.0.2.20/24 panic=5",
            "52:54:00:12:34:20"
        ),
        net_vm(
            "svc",
            "netsvc",
            "net.ip=10.0.2.15/24 net.tx=queued svc.sinks=1 svc.heartbeat",
            1,
            "lan0"
        ),
        net_vm(
            "server",
            "netsvc",
            "net.ip=10.0.2.17/24 net.tx=queued svc.sinks=1",
            1,
            "lan0"
        ),
        net_vm(
            "client",
            "netclient",
            "net.ip=10.0.2.16/24 net.tx=queued client.server=10.0.2.17 client.ping=3 client.mib=16",
            0,
            "lan0"
        ),
    );
    let forwards = [
        format!("{echo_port}:10.0.2.15:7"),
        format!("{sink_port}:10.0.2.15:9"),
    ];
    let mut run = start_with(
        "armv7_linux_robust",
        &config,
        arm_board(240),
        &["--forward", &forwards[0], "--forward", &forwards[1]],
    );
    run.wait_for_nth("linux", SHELL_UP, 1, 120);
    std::thread::sleep(Duration::from_millis(500));
    echo_through(echo_port, "before the panic\n");
    // 1. Panic.
    run.type_text("echo c > /proc/sysrq-trigger\n");
    run.wait_for("linux", "Kernel panic - not syncing", 30);
    let heartbeats = run.count("svc", "netsvc: heartbeat");
    echo_through(echo_port, "while linux is panicked\n");
    // 2. ... reset by the kernel after panic=5 (of the guest's clock).
    run.wait_for("chroma", "vm linux: SYSTEM_RESET", 60);
    run.wait_for_nth("linux", SHELL_UP, 2, 120);
    std::thread::sleep(Duration::from_millis(500));
    echo_through(echo_port, "after the panic reset\n");
    // 3. Reboot.
    run.type_text("reboot -f\n");
    run.wait_for_nth("chroma", "vm linux: SYSTEM_RESET", 2, 60);
    run.wait_for_nth("linux", SHELL_UP, 3, 120);
    std::thread::sleep(Duration::from_millis(500));
    run.type_text(TYPED);
    run.wait_for("linux", TYPED_ANSWER, 30);
    // 4. Power off.
    run.type_text("poweroff -f\n");
    run.wait_for("chroma", "vm linux stopped", 30);
    echo_through(echo_port, "after linux powered off\n");
    run.wait_for_nth("svc", "netsvc: heartbeat", heartbeats + 2, 30);
    run.wait_for("client", "netclient: transfer 16777216 bytes", 60);
    let answer = sink_through(sink_port, 65536);
    assert!(
        answer.starts_with("len=65536 fnv64="),
        "sink answer {answer:?}"
    );
    let outcome = run.finish(60);

    assert_eq!(
        outcome
            .vm_lines("linux")
            .iter()
            .filter(|l| **l == "linux-guest: init")
            .count(),
        3
    );
    outcome.assert_vm_printed_containing("linux", "sysrq: Trigger a crash");
    outcome.assert_vm_printed_containing("linux", "smp: Brought up 1 node, 2 CPUs");
    outcome.assert_stopped("linux", "powered off");
    outcome.assert_vm_printed_containing("client", "netclient: ping 3/3 replies");
    outcome
        .assert_vm_printed_containing("client", &format!("server fnv64={SIXTEEN_MIB_FNV} match"));
    outcome.assert_vm_printed_containing("svc", "netsvc: sink received 65536 bytes");
    outcome.assert_vm_printed_containing(
        "server",
        &format!("netsvc: sink received 16777216 bytes fnv64={SIXTEEN_MIB_FNV}"),
    );
    for vm in ["svc", "server", "client"] {
        outcome.assert_vm_never_printed(vm, "FAIL");
        outcome.assert_stopped(vm, "powered off");
    }
    let resets = outcome
        .hypervisor_lines()
        .iter()
        .filter(|l| l.contains("vm linux: SYSTEM_RESET"))
        .count();
    assert_eq!(resets, 2, "SYSTEM_RESET lines");
    outcome.assert_all_stopped(4, 0);
    outcome.assert_success();
}
