//! Debian's arm64 kernel as a chroma guest (guest-images/linux): boot to the
//! busybox shell with 1 and 2 vCPUs on GICv2 and GICv3 with typed input,
//! ICMP to a bare-metal guest and to a second Linux guest, 64 MiB of TCP
//! between two Linux guests, the host reaching the guest through the uplink
//! and back, and a Linux guest that panics, reboots and powers off while the
//! other VMs go on.
//!
//! The runs go on while the test acts (`start_with`): it waits for console
//! lines, types into the first VM's shell (Ctrl-A n moves the console input
//! to the next VM) and connects from the host through the uplink's forwards.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use chroma_systest::{
    free_port, guest_image, start_with, with_ring, workspace_root, Board, Outcome, Running,
};

/// The shell's banner: the console shell is up and reads its input.
const SHELL_UP: &str = "built-in shell (ash)";
/// Typed input whose answer only a shell that ran it can print.
const TYPED: &str = "echo typed-$((6*7))\n";
const TYPED_ANSWER: &str = "typed-42";

fn linux_file(dir: &str, name: &str) -> String {
    workspace_root()
        .join("build")
        .join(dir)
        .join(name)
        .display()
        .to_string()
}

/// A Linux `[[vm]]` of Debian's arm64 kernel (on switch lan0 with `mac`
/// when given).
fn linux_vm(name: &str, vcpus: u32, memory: &str, words: &str, mac: Option<&str>) -> String {
    linux_vm_of(false, name, vcpus, memory, words, mac)
}

/// A Linux `[[vm]]`: Debian's armhf kernel as an AArch32 VM when
/// `aarch32`, else its arm64 one.
fn linux_vm_of(
    aarch32: bool,
    name: &str,
    vcpus: u32,
    memory: &str,
    words: &str,
    mac: Option<&str>,
) -> String {
    let cmdline = format!("console=ttyAMA0 rdinit=/init {words}");
    let (dir, kernel, arch) = if aarch32 {
        ("linux-armhf", "zImage", "arch = \"aarch32\"\n")
    } else {
        ("linux", "Image", "")
    };
    let mut text = format!(
        "[[vm]]\nname = {name:?}\n{arch}kernel = {:?}\ninitrd = {:?}\nmemory = {memory:?}\nvcpus = {vcpus}\ncmdline = {cmdline:?}\n",
        linux_file(dir, kernel),
        linux_file(dir, "initramfs.cpio.gz"),
    );
    if let Some(mac) = mac {
        text.push_str(&format!("[[vm.net]]\nswitch = \"lan0\"\nmac = {mac:?}\n"));
    }
    text.push('\n');
    text
}

/// A bare-metal guest on lan0 pinned to `cpu`.
fn metal_vm(name: &str, guest: &str, cmdline: &str, cpu: u32) -> String {
    format!(
        "[[vm]]\nname = {name:?}\nkernel = {:?}\nmemory = \"32M\"\ncmdline = {cmdline:?}\ncpus = [{cpu}]\n[[vm.net]]\nswitch = \"lan0\"\n\n",
        guest_image(guest).display().to_string()
    )
}

fn switch(uplink: bool) -> String {
    format!("[[switch]]\nname = \"lan0\"\nuplink = {uplink}\n\n")
}

/// Waits for VM `vm`'s `n`-th shell, then gives it a moment to print its prompt.
fn wait_shell(run: &Running, vm: &str, n: usize, seconds: u64) {
    run.wait_for_nth(vm, SHELL_UP, n, seconds);
    std::thread::sleep(Duration::from_millis(500));
}

/// The statistics line busybox ping printed for `ip` (the line after
/// `--- <ip> ping statistics ---`).
fn ping_summary<'a>(run: &'a Outcome, vm: &str, ip: &str) -> &'a str {
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
    lines.get(at + 1).copied().unwrap_or("")
}

fn assert_three_replies(run: &Outcome, vm: &str, ip: &str) {
    let summary = ping_summary(run, vm, ip);
    assert!(
        summary.starts_with("3 packets transmitted, 3 packets received, 0% packet loss"),
        "VM {vm} pinging {ip}: {summary:?}"
    );
    let replies = run
        .vm_lines(vm)
        .iter()
        // A reply can share its console line with the shell's prompt
        // (busybox's `ESC[6n` cursor query), so look for it anywhere.
        .filter(|line| line.contains(&format!("64 bytes from {ip}: seq=")))
        .count();
    assert!(replies >= 3, "VM {vm}: {replies} echo replies from {ip}");
}

/// VM `vm` powered off (its stop line comes before the run's summary: the
/// hypervisor ends the run only after every stop is fully reported).
fn assert_powered_off(run: &Outcome, vm: &str) {
    match run.stop_reason(vm) {
        Some(reason) => assert!(
            reason.starts_with("powered off"),
            "VM {vm} stopped with {reason:?}"
        ),
        None => panic!(
            "no stop line for VM {vm}:\n{}",
            run.hypervisor_lines().join("\n")
        ),
    }
}

/// The NIC counter lines chroma printed when the VMs stopped.
fn print_counters(run: &Outcome) {
    for line in run.hypervisor_lines() {
        if line.contains("traps/pkt") {
            eprintln!("counters: {line}");
        }
    }
}

/// Boots VM "one" (1 vCPU) and VM "two" (2 vCPUs) on GICv`gic`, types into
/// each shell (Ctrl-A n between them) and powers both off.
fn boot_one_and_two_vcpus(gic: u8) {
    let config = format!(
        "{}{}{}",
        switch(false),
        linux_vm(
            "one",
            1,
            "128M",
            "chroma.ip=10.0.2.31/24 chroma.gw=none",
            Some("52:54:00:12:34:31")
        ),
        linux_vm(
            "two",
            2,
            "128M",
            "chroma.ip=10.0.2.32/24 chroma.gw=none",
            Some("52:54:00:12:34:32")
        ),
    );
    let board = Board {
        timeout_seconds: 85,
        ..Board::new(gic, 2)
    };
    let mut run = start_with(&format!("linux_boot_gicv{gic}"), &config, board, &[]);
    wait_shell(&run, "one", 1, 70);
    run.type_text(TYPED);
    run.wait_for("one", TYPED_ANSWER, 20);
    run.type_text("poweroff -f\n");
    run.wait_for("chroma", "vm one stopped", 20);
    wait_shell(&run, "two", 1, 30);
    run.type_text("\x01n");
    run.type_text(TYPED);
    run.wait_for("two", TYPED_ANSWER, 20);
    run.type_text("poweroff -f\n");
    let outcome = run.finish(30);
    for vm in ["one", "two"] {
        outcome.assert_vm_printed_containing(vm, "linux-guest: init");
        outcome.assert_vm_printed_containing(vm, "linux-guest: network up");
        outcome.assert_vm_printed_containing(vm, TYPED_ANSWER);
        outcome.assert_vm_never_printed(vm, "Kernel panic");
        assert_powered_off(&outcome, vm);
    }
    outcome.assert_vm_printed_containing("one", "smp: Brought up 1 node, 1 CPU");
    outcome.assert_vm_printed_containing("two", "smp: Brought up 1 node, 2 CPUs");
    // Input reached only the VM it was meant for.
    assert_eq!(
        outcome
            .vm_lines("one")
            .iter()
            .filter(|l| l.contains(TYPED_ANSWER))
            .count(),
        1
    );
    assert_eq!(
        outcome
            .vm_lines("two")
            .iter()
            .filter(|l| l.contains(TYPED_ANSWER))
            .count(),
        1
    );
    // The guest drove the GIC the board has (its driver names GICv3).
    if gic == 3 {
        outcome.assert_vm_printed_containing("two", "GICv3: ");
    } else {
        outcome.assert_vm_never_printed("two", "GICv3");
    }
    outcome.assert_all_stopped(2, 0);
    outcome.assert_success();
}

#[test]
fn linux_boots_with_one_and_two_vcpus_on_gicv2_and_takes_typed_input() {
    boot_one_and_two_vcpus(2);
}

#[test]
fn linux_boots_with_one_and_two_vcpus_on_gicv3_and_takes_typed_input() {
    boot_one_and_two_vcpus(3);
}

#[test]
fn linux_pings_the_bare_metal_guest_and_a_second_linux_guest() {
    let config = format!(
        "{}{}{}{}",
        switch(false),
        linux_vm(
            "a",
            2,
            "128M",
            "chroma.ip=10.0.2.21/24 chroma.gw=none chroma.ping=10.0.2.22 chroma.wait=60 chroma.run=\"ping -c 3 10.0.2.15; ping -c 3 10.0.2.22\"",
            Some("52:54:00:12:34:21"),
        ),
        linux_vm(
            "b",
            1,
            "128M",
            "chroma.ip=10.0.2.22/24 chroma.gw=none chroma.ping=10.0.2.21 chroma.wait=60 chroma.run=\"ping -c 3 10.0.2.15; ping -c 3 10.0.2.21\"",
            Some("52:54:00:12:34:22"),
        ),
        metal_vm("svc", "netsvc", "net.ip=10.0.2.15/24 svc.sinks=1", 1),
    );
    let mut run = start_with(
        "linux_ping",
        &config,
        Board {
            name: "qemu-virt-aarch64",
            gic: 2,
            smp: 2,
            timeout_seconds: 85,
        },
        &[],
    );
    run.wait_for("a", "linux-guest: run exit", 75);
    run.wait_for("b", "linux-guest: run exit", 30);
    // Linux TCP to the bare-metal sink ends the service guest (svc.sinks=1).
    wait_shell(&run, "a", 1, 10);
    run.type_text("printf hello-sink | nc 10.0.2.15 9\n");
    run.wait_for("chroma", "vm svc stopped", 20);
    run.type_text("poweroff -f\n");
    run.wait_for("chroma", "vm a stopped", 20);
    run.type_text("\x01n");
    std::thread::sleep(Duration::from_millis(300));
    run.type_text("poweroff -f\n");
    let outcome = run.finish(30);
    for vm in ["a", "b"] {
        outcome.assert_vm_printed_containing(vm, "linux-guest: network up");
        outcome.assert_vm_printed_containing(vm, "linux-guest: run exit 0");
        assert_three_replies(&outcome, vm, "10.0.2.15");
    }
    outcome.assert_vm_printed_containing("a", "linux-guest: ping 10.0.2.22 ok");
    outcome.assert_vm_printed_containing("b", "linux-guest: ping 10.0.2.21 ok");
    assert_three_replies(&outcome, "a", "10.0.2.22");
    assert_three_replies(&outcome, "b", "10.0.2.21");
    // Linux's TCP reached the bare-metal sink, which answered.
    outcome.assert_vm_printed_containing("svc", "netsvc: sink received 10 bytes");
    outcome.assert_vm_printed_containing("a", "len=10 fnv64=");
    for vm in ["a", "b", "svc"] {
        assert_powered_off(&outcome, vm);
    }
    print_counters(&outcome);
    outcome.assert_all_stopped(3, 0);
    outcome.assert_success();
}

/// `linux-guest: <word> <sha256> <bytes> ...` → (sha256, bytes).
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

/// VIRTIO_F_RING_PACKED (virtio 1.2 §6): the bit the ring checks look at.
const RING_PACKED_BIT: usize = 34;
/// VIRTIO_F_VERSION_1: set in every features string chroma's devices give
/// Linux (a string without it is not one).
const VERSION_1_BIT: usize = 32;
/// Prints the negotiated features of every virtio device, as
/// `/sys/bus/virtio/devices/<dev>/features:<'0'/'1' per bit, bit 0 first>`.
const FEATURES_COMMAND: &str = "grep -H . /sys/bus/virtio/devices/*/features";

/// The features strings VM `vm` printed with [`FEATURES_COMMAND`], one per
/// virtio device.
fn virtio_features(run: &Outcome, vm: &str) -> Vec<String> {
    let prefix = "/sys/bus/virtio/devices/";
    run.vm_lines(vm)
        .into_iter()
        // Typed commands echo: only the answer has ":<digits>" after the path.
        .filter_map(|line| line.find(prefix).map(|at| &line[at..]))
        .filter_map(|line| line.split_once("/features:"))
        .map(|(_, bits)| bits.trim().to_owned())
        .filter(|bits| !bits.is_empty() && bits.bytes().all(|b| b == b'0' || b == b'1'))
        .collect()
}

/// For each features string VM `vm` printed (its one virtio device, its
/// NIC, once per boot), whether the packed ring was negotiated; each
/// checked to be a virtio 1 features string first.
fn negotiated_packed(run: &Outcome, vm: &str, boots: usize) -> Vec<bool> {
    let features = virtio_features(run, vm);
    assert_eq!(
        features.len(),
        boots,
        "VM {vm}: one virtio device's features per boot expected, got {features:?}; it printed:\n{}",
        run.vm_lines(vm).join("\n")
    );
    features
        .iter()
        .map(|bits| {
            let bytes = bits.as_bytes();
            assert!(
                bytes.len() > RING_PACKED_BIT && bytes[VERSION_1_BIT] == b'1',
                "VM {vm}: not a virtio 1 features string: {bits}"
            );
            bytes[RING_PACKED_BIT] == b'1'
        })
        .collect()
}

/// How a 64 MiB TCP run is set up.
#[derive(Clone, Copy)]
struct TcpRun {
    /// The server is Debian's armhf kernel in an AArch32 VM.
    aarch32: bool,
    /// `--force-cache`: the colour + maintain policy.
    forced: bool,
    /// `ring` of the server's and the client's NIC.
    rings: [&'static str; 2],
}

#[test]
fn linux_to_linux_64mib_tcp_with_sha256_at_both_ends() {
    // The server's NIC offers the packed ring and Linux takes it; the
    // client's offers the split ring only: the counter-check that the
    // features bit follows the key.
    tcp_64mib(TcpRun {
        aarch32: false,
        forced: false,
        rings: ["packed", "split"],
    });
}

/// The same with the server an AArch32 VM running Debian's armhf kernel
/// (issue 11: 32-bit guests on the 64-bit hypervisor, same network tests).
#[test]
fn armhf_linux_to_arm64_linux_64mib_tcp_with_sha256_at_both_ends() {
    tcp_64mib(TcpRun {
        aarch32: true,
        forced: false,
        rings: ["packed", "packed"],
    });
}

/// Issue 14: both Linux guests on packed rings in the forced colour +
/// maintain mode. Linux runs with its caches on (coherent), so the device
/// keeps reaching the rings, like the buffers, through the maintained
/// cacheable alias: the Non-cacheable one is for a driver that reaches
/// memory uncached, and would miss a cached driver's dirty descriptors.
#[test]
fn linux_to_linux_64mib_tcp_on_packed_rings_in_forced_colour_and_maintain_mode() {
    tcp_64mib(TcpRun {
        aarch32: false,
        forced: true,
        rings: ["packed", "packed"],
    });
}

/// 64 MiB over TCP from a Linux server (armhf as an AArch32 VM when
/// `aarch32`) to an arm64 Linux client, with the sha256 at both ends; then
/// each guest's negotiated features (the client's through `chroma.run`
/// before it powers off, the server's typed into its shell) show the ring
/// layout its NIC's `ring` key chose, and the hypervisor's policy line says
/// how it reaches each ring.
fn tcp_64mib(setup: TcpRun) {
    let TcpRun {
        aarch32,
        forced,
        rings,
    } = setup;
    let config = format!(
        "{}{}{}",
        switch(false),
        with_ring(
            &linux_vm_of(
                aarch32,
                "server",
                1,
                "256M",
                "chroma.ip=10.0.2.21/24 chroma.gw=none chroma.serve=64",
                Some("52:54:00:12:34:21")
            ),
            rings[0]
        ),
        with_ring(
            &linux_vm(
                "client",
                1,
                "256M",
                &format!(
                    "chroma.ip=10.0.2.22/24 chroma.gw=none chroma.fetch=10.0.2.21 chroma.run=\"{FEATURES_COMMAND}\" chroma.poweroff"
                ),
                Some("52:54:00:12:34:22")
            ),
            rings[1]
        ),
    );
    let name = match (aarch32, forced) {
        (false, false) => "linux_tcp_64mib",
        (true, false) => "linux_tcp_64mib_armhf",
        (false, true) => "linux_tcp_64mib_forced",
        (true, true) => "linux_tcp_64mib_armhf_forced",
    };
    let mut run = start_with(
        name,
        &config,
        Board {
            name: "qemu-virt-aarch64",
            gic: 2,
            smp: 2,
            timeout_seconds: if forced { 230 } else { 170 },
        },
        if forced { &["--force-cache"] } else { &[] },
    );
    run.wait_for(
        "client",
        "linux-guest: fetch ",
        if forced { 220 } else { 160 },
    );
    run.wait_for("chroma", "vm client stopped", 20);
    wait_shell(&run, "server", 1, 5);
    run.type_text(&format!("{FEATURES_COMMAND}\n"));
    run.wait_for("server", "/features:", 10);
    // In the forced mode the server reboots once: its reset unmaps the NC
    // alias (and drops it from every TLB), the new driver's DRIVER_OK maps
    // its new rings.
    let server_boots = if forced { 2 } else { 1 };
    if forced {
        run.type_text("reboot -f\n");
        run.wait_for("chroma", "vm server: SYSTEM_RESET", 60);
        run.wait_for_nth("server", SHELL_UP, 2, 120);
        std::thread::sleep(Duration::from_millis(500));
        run.type_text(&format!("{FEATURES_COMMAND}\n"));
        run.wait_for_nth("server", "/features:", 2, 10);
    }
    run.type_text("poweroff -f\n");
    let outcome = run.finish(30);
    let (served, bytes, _) = digest_line(&outcome, "server", "serve");
    assert_eq!(bytes, 64 << 20, "served size");
    let (fetched, fetched_bytes, line) = digest_line(&outcome, "client", "fetch");
    assert!(line.ends_with(" match"), "{line}");
    assert_eq!(fetched, served, "sha256 at the client and at the server");
    assert_eq!(fetched_bytes, 64 << 20, "{line}");
    outcome.assert_vm_printed_containing("client", "linux-guest: run exit 0");
    eprintln!("throughput: {line}");
    for ((vm, ring), boots) in ["server", "client"]
        .into_iter()
        .zip(rings)
        .zip([server_boots, 1])
    {
        assert_eq!(
            negotiated_packed(&outcome, vm, boots),
            vec![ring == "packed"; boots],
            "VM {vm} with ring = {ring:?}: VIRTIO_F_RING_PACKED negotiated or not"
        );
        // How the device reaches that ring (`nic::choose_policy`'s line):
        // Linux runs with its caches on (coherent), so even the forced
        // policy keeps the cacheable alias; the Non-cacheable one is for a
        // driver that reaches memory uncached (a cached driver's dirty
        // descriptors would be missed through it).
        let access = match ring {
            "packed" => "packed ring via the cacheable alias",
            _ => "split ring",
        };
        let policy_line = format!("vm {vm}: NIC driver up");
        assert_eq!(
            outcome
                .hypervisor_lines()
                .iter()
                .filter(|l| l.contains(&policy_line) && l.trim_end().ends_with(access))
                .count(),
            boots,
            "{policy_line:?} lines ending {access:?}:\n{}",
            outcome.hypervisor_lines().join("\n")
        );
    }
    // TCP segmentation offload both ways on both NICs (virtio 1.2
    // §5.1.3: GUEST_TSO4/6 bits 7/8, HOST_TSO4/6 bits 11/12), and the
    // sender's TCP used it: it sent GSO frames, which the receiver took
    // whole (it negotiated GUEST_TSO4), none cut.
    for vm in ["server", "client"] {
        for bits in virtio_features(&outcome, vm) {
            for (bit, name) in [
                (7, "GUEST_TSO4"),
                (8, "GUEST_TSO6"),
                (11, "HOST_TSO4"),
                (12, "HOST_TSO6"),
            ] {
                assert_eq!(
                    bits.as_bytes().get(bit),
                    Some(&b'1'),
                    "VM {vm}: {name} not negotiated: {bits}"
                );
            }
        }
    }
    let server_gso = gso_counters(&outcome, "server");
    let client_gso = gso_counters(&outcome, "client");
    assert!(
        server_gso[0] > 0,
        "the server sent no GSO frame: {server_gso:?}"
    );
    assert!(
        client_gso[1] > 0,
        "the client took no GSO frame whole: {client_gso:?}"
    );
    assert_eq!(client_gso[2], 0, "GSO frames cut for a GUEST_TSO4 receiver");
    // The TSO sender hands over one multi-segment frame per kick: counted
    // as packets on a wire that is a batch, so its NIC switched to polled
    // TX (issue 13) and kicked for far fewer frames than it sent. (Counted
    // in frames, it never switched: "polls 0" and a kick per GSO frame.)
    let (server_polls, server_tx_kicks) = tx_polling_counters(&outcome, "server");
    assert!(
        server_polls > 0 && server_tx_kicks * 2 < server_gso[0],
        "the TSO sender's NIC kicked per frame: {server_polls} polls, {server_tx_kicks} TX kicks for {} GSO frames",
        server_gso[0]
    );
    // Where the ring accesses went (each NIC's counter line): never
    // through the Non-cacheable alias for a driver with its caches on.
    for (vm, ring) in ["server", "client"].into_iter().zip(rings) {
        let uncached = nc_accesses_per_packet(&outcome, vm);
        assert_eq!(
            uncached, 0.0,
            "VM {vm}: NC alias used with {ring:?} rings and the guest's caches on"
        );
    }
    // The boot's cache line says whether the forced policy was in force.
    let caches = outcome
        .hypervisor_lines()
        .into_iter()
        .find(|l| l.contains("chroma: caches: "))
        .unwrap_or_default();
    assert_eq!(
        caches.contains("ColourAndMaintain (forced)"),
        forced,
        "{caches}"
    );
    print_counters(&outcome);
    outcome.assert_all_stopped(2, 0);
    outcome.assert_success();
}

/// `gso: tx T (S segments), rx whole W (S segments), rx cut C` of VM
/// `vm`'s NIC counter line: [T, W, C].
fn gso_counters(run: &Outcome, vm: &str) -> [u64; 3] {
    let prefix = format!("chroma: vm {vm} net0 ");
    let line = run
        .hypervisor_lines()
        .into_iter()
        .find(|l| l.contains(&prefix) && l.contains("traps/pkt"))
        .unwrap_or_else(|| panic!("no counter line for VM {vm}"));
    let gso = line
        .split_once("gso: tx ")
        .unwrap_or_else(|| panic!("no gso counters: {line}"))
        .1;
    let numbers: Vec<u64> = gso
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    [numbers[0], numbers[2], numbers[4]]
}

/// `polls P` and `QueueNotify rx R tx T` of VM `vm`'s NIC counter line: (P, T).
fn tx_polling_counters(run: &Outcome, vm: &str) -> (u64, u64) {
    let prefix = format!("chroma: vm {vm} net0 ");
    let line = run
        .hypervisor_lines()
        .into_iter()
        .find(|l| l.contains(&prefix) && l.contains("traps/pkt"))
        .unwrap_or_else(|| panic!("no counter line for VM {vm}"));
    let number_after = |key: &str| -> u64 {
        line.split_once(key)
            .and_then(|(_, rest)| rest.split([',', ';', ' ']).next())
            .and_then(|word| word.parse().ok())
            .unwrap_or_else(|| panic!("no {key:?} in {line}"))
    };
    let tx = line
        .split_once("QueueNotify rx ")
        .and_then(|(_, rest)| rest.split_once(" tx "))
        .and_then(|(_, rest)| rest.split([',', ';', ' ']).next())
        .and_then(|word| word.parse().ok())
        .unwrap_or_else(|| panic!("no QueueNotify counts in {line}"));
    (number_after(", polls "), tx)
}

/// `ring accesses via NC alias/pkt` of VM `vm`'s NIC counter line.
fn nc_accesses_per_packet(run: &Outcome, vm: &str) -> f64 {
    const KEY: &str = "ring accesses via NC alias/pkt ";
    let prefix = format!("chroma: vm {vm} net0 ");
    let line = run
        .hypervisor_lines()
        .into_iter()
        .find(|line| line.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no counter line for VM {vm}'s NIC"));
    let at = line
        .find(KEY)
        .unwrap_or_else(|| panic!("no {KEY:?} in {line}"));
    line[at + KEY.len()..]
        .split([';', ',', ' '])
        .next()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("unreadable {KEY:?} in {line}"))
}

/// `sha256sum` of what the shell command `shell` writes to stdout (empty if it failed).
fn sha256_of_output(shell: &str) -> String {
    let output = Command::new("bash")
        .args(["-c", &format!("set -o pipefail; {shell} | sha256sum")])
        .output()
        .expect("run sh");
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

#[test]
fn host_reaches_linux_httpd_through_the_uplink_and_linux_reaches_the_host() {
    host_and_linux_through_the_uplink(false);
}

/// The same with Debian's armhf kernel in an AArch32 VM (issue 11).
#[test]
fn host_reaches_armhf_linux_through_the_uplink_and_back() {
    host_and_linux_through_the_uplink(true);
}

/// The host fetches from the guest's httpd through a forward, and the guest
/// fetches from a host service through the uplink (Debian's armhf kernel
/// in an AArch32 VM when `aarch32`, else its arm64 one).
fn host_and_linux_through_the_uplink(aarch32: bool) {
    // A host service on 127.0.0.1 (10.0.2.2 from behind QEMU's user network).
    let dir: PathBuf = workspace_root()
        .join("target")
        .join("systest")
        .join(if aarch32 {
            "linux_host_www_armhf"
        } else {
            "linux_host_www"
        });
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
    let host_sha = sha256_of_output(&format!("cat {}", blob.display()));
    let host_port = free_port();
    let _server = HostServer(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                &host_port.to_string(),
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

    let forward_port = free_port();
    let forward = format!("{forward_port}:10.0.2.20:80");
    let config = format!(
        "{}{}",
        switch(true),
        linux_vm_of(
            aarch32,
            "linux",
            2,
            if aarch32 { "256M" } else { "128M" },
            "chroma.ip=10.0.2.20/24 chroma.gw=10.0.2.2 chroma.httpd",
            Some("52:54:00:12:34:20")
        ),
    );
    let mut run = start_with(
        if aarch32 {
            "linux_host_armhf"
        } else {
            "linux_host"
        },
        &config,
        Board {
            name: "qemu-virt-aarch64",
            gic: 2,
            smp: 2,
            timeout_seconds: if aarch32 { 130 } else { 85 },
        },
        &["--forward", &forward],
    );
    let boot = if aarch32 { 115 } else { 70 };
    let httpd = run.wait_for("linux", "linux-guest: httpd on port 80 (blob.sha256 ", boot);
    let guest_sha = httpd
        .rsplit("blob.sha256 ")
        .next()
        .unwrap_or("")
        .trim_end_matches(')')
        .to_owned();
    assert_eq!(guest_sha.len(), 64, "{httpd}");

    // Host -> guest: the page and the 1 MiB blob through the forward.
    let url = format!("http://127.0.0.1:{forward_port}");
    let page = Command::new("curl")
        .args(["-sS", "--max-time", "20", &format!("{url}/")])
        .output()
        .expect("curl");
    let page = String::from_utf8_lossy(&page.stdout).into_owned();
    assert!(
        page.contains("hello from busybox httpd"),
        "the page: {page:?}"
    );
    let started = std::time::Instant::now();
    let fetched = sha256_of_output(&format!("curl -sS --fail --max-time 40 {url}/blob.bin"));
    eprintln!(
        "host fetched 1 MiB from the guest in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        fetched, guest_sha,
        "sha256 of blob.bin on the host and in the guest"
    );

    // Guest -> host: the guest fetches the host's file and prints its sha256.
    wait_shell(&run, "linux", 1, 10);
    run.type_text(&format!(
        "wget -q -O - http://10.0.2.2:{host_port}/host.bin | sha256sum | sed 's/^/host-file /'\n"
    ));
    let line = run.wait_for("linux", &format!("host-file {host_sha}"), 40);
    assert!(line.starts_with("[linux] host-file "), "{line}");
    run.type_text("poweroff -f\n");
    let outcome = run.finish(30);
    assert_powered_off(&outcome, "linux");
    print_counters(&outcome);
    outcome.assert_all_stopped(1, 0);
    outcome.assert_success();
}

/// Sends `payload` to the service guest's echo port through the forward and
/// checks it comes back.
fn echo_through(port: u16, payload: &str) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the echo forward");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(payload.as_bytes()).expect("send to echo");
    let mut back = vec![0u8; payload.len()];
    stream
        .read_exact(&mut back)
        .unwrap_or_else(|error| panic!("echo of {payload:?} through 127.0.0.1:{port}: {error}"));
    assert_eq!(String::from_utf8_lossy(&back), payload);
}

/// One session with the service guest's checksum sink: `bytes` bytes, its
/// `len=... fnv64=...` answer.
fn sink_through(port: u16, bytes: usize) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the sink forward");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    // A byte pattern: the low byte of i * 7 + 3.
    let data: Vec<u8> = (0..bytes).map(|i| (i * 7 + 3).to_le_bytes()[0]).collect();
    stream.write_all(&data).expect("send to the sink");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn linux_panics_reboots_and_powers_off_while_the_other_vms_go_on() {
    let echo_port = free_port();
    let sink_port = free_port();
    let config =
        format!(
        "{}{}{}{}{}",
        switch(true),
        // panic=5: the panicked kernel sits 5 s, then resets (PSCI SYSTEM_RESET).
        linux_vm("linux", 2, "128M", "chroma.ip=10.0.2.20/24 panic=5", Some("52:54:00:12:34:20")),
        // The host's service guest: echo, and a sink session from the host ends it.
        // svc.heartbeat: the test counts its heartbeats (the timer kept running).
        metal_vm("svc", "netsvc", "net.ip=10.0.2.15/24 net.tx=queued svc.sinks=1 svc.heartbeat", 1),
        // A bare-metal pair moving 16 MiB meanwhile. (Its own server: after a
        // session with netclient, which powers off at once, netsvc's sink
        // does not listen again, so the host's session needs another one.)
        metal_vm("server", "netsvc", "net.ip=10.0.2.17/24 net.tx=queued svc.sinks=1", 1),
        metal_vm(
            "client",
            "netclient",
            "net.ip=10.0.2.16/24 net.tx=queued client.server=10.0.2.17 client.ping=3 client.mib=16",
            0,
        ),
    );
    let forwards = [
        format!("{echo_port}:10.0.2.15:7"),
        format!("{sink_port}:10.0.2.15:9"),
    ];
    let mut run = start_with(
        "linux_robust",
        &config,
        Board {
            name: "qemu-virt-aarch64",
            gic: 2,
            smp: 2,
            timeout_seconds: 150,
        },
        &["--forward", &forwards[0], "--forward", &forwards[1]],
    );
    wait_shell(&run, "linux", 1, 60);
    echo_through(echo_port, "before the panic\n");

    // 1. Panic.
    run.type_text("echo c > /proc/sysrq-trigger\n");
    run.wait_for("linux", "Kernel panic - not syncing", 20);
    let heartbeats = run.count("svc", "netsvc: heartbeat");
    echo_through(echo_port, "while linux is panicked\n");
    // 2. ... reset by the kernel: SYSTEM_RESET restarts the VM from its images.
    // panic=5 is 5 s of the guest's clock, which is the host's: on a loaded
    // host Linux's panic path (stopping the other vCPU, the delay) can take
    // several times that, so the waits are generous.
    run.wait_for("chroma", "vm linux: SYSTEM_RESET", 45);
    wait_shell(&run, "linux", 2, 60);
    echo_through(echo_port, "after the panic reset\n");
    // 3. Reboot.
    run.type_text("reboot -f\n");
    run.wait_for_nth("chroma", "vm linux: SYSTEM_RESET", 2, 45);
    wait_shell(&run, "linux", 3, 60);
    run.type_text(TYPED);
    run.wait_for("linux", TYPED_ANSWER, 20);
    // 4. Power off.
    run.type_text("poweroff -f\n");
    run.wait_for("chroma", "vm linux stopped", 20);
    echo_through(echo_port, "after linux powered off\n");
    // The service guest's timer kept running throughout.
    run.wait_for_nth("svc", "netsvc: heartbeat", heartbeats + 2, 20);
    // The bare-metal pair's transfer completed meanwhile.
    run.wait_for("client", "netclient: transfer 16777216 bytes", 30);
    // A host session with the sink ends the service guest (svc.sinks=1).
    let answer = sink_through(sink_port, 65536);
    assert!(
        answer.starts_with("len=65536 fnv64="),
        "sink answer {answer:?}"
    );
    let outcome = run.finish(30);

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
    assert_powered_off(&outcome, "linux");
    outcome.assert_vm_printed_containing("client", "netclient: ping 3/3 replies");
    outcome.assert_vm_printed_containing("client", "server fnv64=f32a39a9ee3e40c1 match");
    outcome.assert_vm_printed_containing("svc", "netsvc: sink received 65536 bytes");
    outcome.assert_vm_printed_containing(
        "server",
        "netsvc: sink received 16777216 bytes fnv64=f32a39a9ee3e40c1",
    );
    for vm in ["svc", "server", "client"] {
        outcome.assert_vm_never_printed(vm, "FAIL");
        assert_powered_off(&outcome, vm);
    }
    // The hypervisor restarted the VM twice and stopped it once.
    let resets = outcome
        .hypervisor_lines()
        .iter()
        .filter(|l| l.contains("vm linux: SYSTEM_RESET"))
        .count();
    assert_eq!(resets, 2, "SYSTEM_RESET lines");
    print_counters(&outcome);
    outcome.assert_all_stopped(4, 0);
    outcome.assert_success();
}
