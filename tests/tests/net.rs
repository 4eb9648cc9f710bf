//! virtio-net inside EL2: VM-to-VM TCP and ICMP through chroma's switch,
//! with the cache policy's forced mode, and containment of a VM that faults
//! while traffic flows; the console's Ctrl-A s stats lines (memory
//! high-water marks, switch ports) that `cargo xtask soak` reads (also on
//! the ARMv7 board: `armv7_...`; its other network tests are in
//! armv7_vms.rs).

use chroma_systest::{boot_with, guest_image, guest_image_arm, start_with, Board, Outcome};

const SERVER: &str = "net.ip=10.0.2.15/24 svc.ping=10.0.2.16 svc.pings=3 svc.sinks=1";
const CLIENT: &str =
    "net.ip=10.0.2.16/24 net.tx=queued client.server=10.0.2.15 client.ping=3 client.mib=16";
/// 16 MiB of the client's xorshift stream (seed 1), as netsvc hashes it.
const SIXTEEN_MIB_FNV: &str = "f32a39a9ee3e40c1";

fn vm(name: &str, guest: &str, cmdline: &str, cpu: u32, nic: bool) -> String {
    vm_of(false, name, guest, cmdline, cpu, nic)
}

/// A `[[vm]]` of test guest `guest`: its 32-bit build in an AArch32 VM
/// when `aarch32`.
fn vm_of(aarch32: bool, name: &str, guest: &str, cmdline: &str, cpu: u32, nic: bool) -> String {
    let (image, arch) = if aarch32 {
        (guest_image_arm(guest), "arch = \"aarch32\"\n")
    } else {
        (guest_image(guest), "")
    };
    let mut text = format!(
        "[[vm]]\nname = \"{name}\"\n{arch}kernel = \"{}\"\nmemory = \"32M\"\ncmdline = \"{cmdline}\"\ncpus = [{cpu}]\n",
        image.display()
    );
    if nic {
        text.push_str("[[vm.net]]\nswitch = \"lan0\"\n");
    }
    text
}

fn pair(extra: &str) -> String {
    mixed_pair(false, false) + extra
}

/// netsvc and netclient on lan0, each in an AArch32 VM (its 32-bit build)
/// when asked.
fn mixed_pair(svc32: bool, client32: bool) -> String {
    format!(
        "[[switch]]\nname = \"lan0\"\n\n{}\n{}\n",
        vm_of(svc32, "svc", "netsvc", SERVER, 0, true),
        vm_of(client32, "client", "netclient", CLIENT, 1, true)
    )
}

/// The transfer completed with matching checksums and pings went both ways.
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
    // The counters are printed when a VM stops; the guests send from the
    // MACs their devices report, so port security dropped nothing.
    let lines = run.hypervisor_lines();
    let client = lines
        .iter()
        .find(|l| l.contains("vm client net0") && l.contains("traps/pkt"))
        .expect("no counter line for the client's NIC");
    assert!(client.contains(", spoofed 0;"), "{client}");
    // Issue 10: each lock hold of the switch (one run) stayed within the
    // bounds, whatever the guests queued.
    let switch = lines
        .iter()
        .find(|l| l.contains("switch lan0: ") && l.contains("worst run"))
        .expect("no run statistics for the switch");
    let number_after = |key: &str| -> usize {
        switch
            .split(key)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {key:?} in {switch}"))
    };
    assert!(number_after("worst run ") <= 256, "{switch}");
    assert!(number_after("frames, ") <= 64, "{switch}");
    eprintln!("net: {switch}");
}

fn board() -> Board {
    Board {
        timeout_seconds: 120,
        ..Board::new(2, 2)
    }
}

#[test]
fn vm_to_vm_tcp_16mib_and_icmp_both_ways() {
    let run = boot_with("net_pair", &pair(""), board(), &[]);
    assert_traffic(&run);
    run.assert_all_stopped(2, 0);
    run.assert_success();
}

/// Issue 11: the 32-bit netclient (an AArch32 VM) and the 64-bit netsvc,
/// then the other way round in the forced colour and maintain mode: the
/// same transfer, checksums and pings. Their `virtio-drivers` reads the
/// transport with post-indexed loads (no syndrome), which chroma decodes.
#[test]
fn vm_to_vm_tcp_16mib_between_32bit_and_64bit_guests() {
    let run = boot_with("net_pair_client32", &mixed_pair(false, true), board(), &[]);
    assert_traffic(&run);
    run.assert_all_stopped(2, 0);
    run.assert_success();
    let run = boot_with(
        "net_pair_svc32_forced",
        &mixed_pair(true, false),
        board(),
        &["--force-cache"],
    );
    assert_traffic(&run);
    run.assert_all_stopped(2, 0);
    run.assert_success();
}

#[test]
fn vm_to_vm_in_forced_colour_and_maintain_mode() {
    let run = boot_with("net_pair_forced", &pair(""), board(), &["--force-cache"]);
    assert_traffic(&run);
    assert!(
        run.hypervisor_lines()
            .iter()
            .any(|l| l.contains("ColourAndMaintain (forced)")),
        "the forced policy was not in force"
    );
    // Maintenance really ran: lines maintained per packet is not zero.
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
    // Merged maintenance (docs/caches.md, "The protocol minimum"): on both
    // NICs, lines maintained per packet within 1.05 of the minimum the
    // hooks count from the accesses. A hypervisor built with
    // CHROMA_UNMERGED_MAINTENANCE=1 (maintenance per access) fails here.
    let mut nics = 0;
    for line in run.hypervisor_lines() {
        if let Some((maintained, minimum)) = maintained_and_minimum(line) {
            nics += 1;
            assert!(minimum > 0.0, "no minimum counted: {line}");
            assert!(
                maintained <= 1.05 * minimum,
                "lines maintained per packet {maintained} above 1.05 x the minimum {minimum}: {line}"
            );
        }
    }
    assert!(nics >= 2, "expected both NICs' counter lines");
    run.assert_success();
}

/// `(lines maintained/pkt, minimum/pkt)` from a NIC counter line.
fn maintained_and_minimum(line: &str) -> Option<(f64, f64)> {
    let number = |key: &str| -> Option<f64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split([';', ' ', ',']).next()?.parse().ok()
    };
    Some((number("lines maintained/pkt ")?, number("minimum/pkt ")?))
}

#[test]
fn counter_lines_give_maintained_and_minimum() {
    let line = "vm client net0 ...: lines maintained/pkt 7.40 minimum/pkt 7.10; traps: ...";
    assert_eq!(maintained_and_minimum(line), Some((7.40, 7.10)));
    // As the NIC line prints it, with the Non-cacheable alias's count after.
    let line =
        "lines maintained/pkt 25.27 minimum/pkt 25.09, ring accesses via NC alias/pkt 0.00; traps";
    assert_eq!(maintained_and_minimum(line), Some((25.27, 25.09)));
    // A line without the minimum (an older hypervisor) gives nothing.
    assert_eq!(
        maintained_and_minimum("lines maintained/pkt 7.40; traps"),
        None
    );
}

#[test]
fn a_vm_faulting_on_the_switch_mid_transfer_does_not_stop_the_traffic() {
    // A third VM on the same switch (its NIC is flooded with the pair's
    // broadcasts) faults until it is stopped, while the transfer runs.
    let run = boot_with(
        "net_pair_faulter",
        &pair(&vm("faulter", "crasher", "crasher.mode=fault", 0, true)),
        board(),
        &[],
    );
    run.assert_stopped("faulter", "faulted");
    assert_traffic(&run);
    run.assert_all_stopped(2, 1);
    run.assert_failure_not_timeout();
}

#[test]
fn a_vm_that_fails_to_start_leaves_the_other_ports_correct() {
    failed_vm_leaves_the_ports_correct("net_pair_after_failed_vm", board(), false);
}

/// The same on the ARMv7 hypervisor with the 32-bit guests (issue 11).
#[test]
fn armv7_a_vm_that_fails_to_start_leaves_the_other_ports_correct() {
    let board = Board {
        timeout_seconds: 120,
        ..Board::arm(2)
    };
    failed_vm_leaves_the_ports_correct("armv7_net_pair_after_failed_vm", board, true);
}

/// The first VM on the switch cannot start (896 MiB passes the config
/// check but finds no free block that large): it must take no switch port,
/// so the pair's ports, resets and counters stay their own. On `board`,
/// with the 32-bit guests in AArch32 VMs when `aarch32`.
fn failed_vm_leaves_the_ports_correct(test_name: &str, board: Board, aarch32: bool) {
    let broken = vm_of(aarch32, "broken", "netsvc", "", 0, true)
        .replace("memory = \"32M\"", "memory = \"896M\"");
    let config = format!(
        "[[switch]]\nname = \"lan0\"\n\n{broken}\n{}\n{}",
        vm_of(aarch32, "svc", "netsvc", SERVER, 0, true),
        vm_of(aarch32, "client", "netclient", CLIENT, 1, true)
    );
    let run = boot_with(test_name, &config, board, &[]);
    assert!(
        run.hypervisor_lines()
            .iter()
            .any(|l| l.contains("vm broken not started")),
        "the broken VM started after all"
    );
    assert_traffic(&run);
    let counters = |name: &str| {
        run.hypervisor_lines()
            .into_iter()
            .find(|l| l.contains(&format!("vm {name} net0")))
            .unwrap_or_else(|| panic!("no counter line for {name}"))
            .to_string()
    };
    let (svc, client) = (counters("svc"), counters("client"));
    // Port numbers are the VMs' places on the switch, and each VM's
    // counters are its own port's (what one sent, the other received).
    assert!(svc.contains("on lan0 port 0:"), "{svc}");
    assert!(client.contains("on lan0 port 1:"), "{client}");
    let field = |line: &str, key: &str| -> String {
        let at = line
            .find(key)
            .unwrap_or_else(|| panic!("no {key} in {line}"));
        line[at + key.len()..]
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    };
    assert_ne!(field(&client, "tx "), "0", "{client}");
    assert_ne!(field(&svc, "tx "), "0", "{svc}");
    // Both ways: what one sent the other received, byte for byte, so no
    // frame went to (or came from) a port the broken VM might have held.
    assert_eq!(field(&client, "tx "), field(&svc, "rx "), "{client}\n{svc}");
    assert_eq!(field(&svc, "tx "), field(&client, "rx "), "{client}\n{svc}");
    let bytes = |line: &str, key: &str| -> String {
        let at = line
            .find(key)
            .unwrap_or_else(|| panic!("no {key} in {line}"));
        line[at + key.len()..]
            .split_whitespace()
            .nth(2)
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(bytes(&client, "tx "), bytes(&svc, "rx "), "{client}\n{svc}");
    assert_eq!(bytes(&svc, "tx "), bytes(&client, "rx "), "{client}\n{svc}");
    // Queues intact: nothing dropped, malformed, refused or spoofed on
    // either port (a port shifted onto the wrong device would show here).
    for line in [&svc, &client] {
        assert!(
            line.contains("drops 0 (driver not up 0, receiver stalled 0), errors 0, spoofed 0;"),
            "{line}"
        );
    }
    // The switch has the two ports of the VMs that started, no third.
    assert!(
        run.hypervisor_lines()
            .iter()
            .any(|l| l.contains("switch lan0: 2 port(s)")),
        "the switch was built with a port for the broken VM"
    );
    run.assert_all_stopped(2, 1);
    run.assert_failure_not_timeout();
}

/// The number after `key=` in `line`, split at `/` (`rx=<frames>/<bytes>`).
fn stats_field(line: &str, key: &str) -> Vec<u64> {
    let value = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    value
        .split('/')
        .map(|n| {
            n.parse()
                .unwrap_or_else(|_| panic!("{key}{value} in {line}"))
        })
        .collect()
}

#[test]
fn ctrl_a_s_prints_memory_high_water_marks_and_port_counters() {
    ctrl_a_s("net_stats", board(), false);
}

/// The same on the ARMv7 hypervisor with the 32-bit guests (issue 11).
#[test]
fn armv7_ctrl_a_s_prints_memory_high_water_marks_and_port_counters() {
    let board = Board {
        timeout_seconds: 120,
        ..Board::arm(2)
    };
    ctrl_a_s("armv7_net_stats", board, true);
}

/// A pair moves 1 MiB on `board` (the 32-bit guests in AArch32 VMs when
/// `aarch32`); then Ctrl-A s asks for the stats lines, which are checked.
fn ctrl_a_s(test_name: &str, board: Board, aarch32: bool) {
    let config = format!(
        "[[switch]]\nname = \"lan0\"\n\n{}\n{}",
        vm_of(
            aarch32,
            "svc",
            "netsvc",
            "net.ip=10.0.2.15/24 svc.sinks=1",
            0,
            true
        ),
        vm_of(
            aarch32,
            "client",
            "netclient",
            "net.ip=10.0.2.16/24 client.server=10.0.2.15 client.ping=1 client.mib=1",
            1,
            true
        )
    );
    let mut run = start_with(test_name, &config, board, &[]);
    run.wait_for("client", "netclient: transfer 1048576 bytes", 90);
    run.type_text("\u{1}s");
    let header = run.wait_for("chroma", "stats heap=", 30);
    let ports = run.wait_for_nth("chroma", "stats port=lan0.", 2, 30);
    let outcome = run.finish(120);
    outcome.assert_success();
    // Used never exceeds the high-water mark, nor that the total; the
    // pair's RAM, tables and NIC buffers are frames in use.
    for key in ["heap=", "frames="] {
        let [used, peak, total] = stats_field(&header, key)[..] else {
            panic!("{key} is not used/peak/total in {header}");
        };
        assert!(0 < used && used <= peak && peak <= total, "{header}");
    }
    // Both VMs, whether or not they have powered off by now.
    assert_eq!(stats_field(&header, "resets="), [0], "{header}");
    assert_eq!(stats_field(&header, "vms=")[1], 2, "{header}");
    // The client's megabyte went into the switch at its port and out at svc's.
    let port = |owner: &str| {
        ports
            .iter()
            .find(|line| line.contains(&format!(" owner={owner} ")))
            .unwrap_or_else(|| panic!("no port line for {owner}: {ports:?}"))
    };
    let (svc, client) = (port("svc"), port("client"));
    assert!(svc.contains("port=lan0.0 "), "{svc}");
    assert!(stats_field(client, "tx=")[1] > 1 << 20, "{client}");
    assert!(stats_field(svc, "rx=")[1] > 1 << 20, "{svc}");
    assert_eq!(stats_field(client, "spoofed="), [0], "{client}");
}

/// Port security at the system level (issue 10): a third VM sends from the
/// server's MAC (netclient with `net.mac=` set to it). The switch drops every
/// one of those frames and counts them as spoofed, so the impersonator
/// reaches nobody, while the pair it impersonates moves its 16 MiB as usual.
/// Negative control: with `Switch::may_send` returning true, its frames go
/// out (`spoofed 0`, `tx` non-zero) and this test fails.
#[test]
fn a_vm_sending_from_another_vms_mac_gets_nothing_through() {
    const SERVER_MAC: &str = "52:54:00:00:00:15";
    let with_mac = |text: String, mac: &str| {
        text.replace(
            "switch = \"lan0\"\n",
            &format!("switch = \"lan0\"\nmac = \"{mac}\"\n"),
        )
    };
    let config = format!(
        "[[switch]]\nname = \"lan0\"\n\n{}\n{}\n{}",
        with_mac(vm("svc", "netsvc", SERVER, 0, true), SERVER_MAC),
        with_mac(vm("client", "netclient", CLIENT, 1, true), "52:54:00:00:00:16"),
        with_mac(
            vm(
                "spoofer",
                "netclient",
                &format!(
                    "net.ip=10.0.2.17/24 net.mac={SERVER_MAC} client.server=10.0.2.15 client.ping=3 client.mib=1"
                ),
                1,
                true
            ),
            "52:54:00:00:00:17"
        ),
    );
    let run = boot_with("net_spoofer", &config, board(), &[]);
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
    eprintln!("net: {spoofer}");
}
