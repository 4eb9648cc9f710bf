//! `cargo xtask bench`, section "VM-to-VM throughput": netclient sends
//! 16 MiB to netsvc's sink through chroma (two VMs on one switch, one vCPU
//! each, on different physical CPUs) and through QEMU's own virtio-net devices
//! (two plain QEMU processes joined by a socket netdev, as
//! `guest-images/net-test-qemu.sh` runs them), interleaved in one invocation.
//!
//! The figure is the guests' own measure (`netclient: info throughput <KiB/s>`,
//! virtual counter from the connection being established to the sink's
//! answer); the medians are compared as a ratio. From chroma's counter lines
//! (printed when a VM stops) come the traps and interrupts per packet of both
//! NICs; the 16 MiB transfer is nearly all of their traffic, so these are the
//! figures at saturation. A board whose QEMU machine emulates no NIC (the
//! Pi's) has no plain-QEMU peer: its chroma figures are printed alone.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::bench::{Peers, PLAIN_QEMU};
use crate::bench_results::{names, Better, Figure, Results};
use crate::images::Images;
use crate::qemu::qemu_command;
use crate::{workspace_root, Board, Result};

/// Rounds of each setup (interleaved).
const ROUNDS: usize = 3;
/// MiB the client sends.
const MIB: u64 = 16;
/// Give up on one transfer after this long.
const TIMEOUT: Duration = Duration::from_secs(240);
const SERVER_MAC: &str = "52:54:00:12:34:01";
const CLIENT_MAC: &str = "52:54:00:12:34:02";

/// The service guest's bootargs: powers off a second after the sink session.
fn server_args() -> String {
    "net.ip=10.0.2.15/24 net.gw=10.0.2.2 net.tx=queued svc.sinks=1".to_owned()
}

/// The client guest's bootargs.
fn client_args() -> String {
    format!(
        "net.ip=10.0.2.16/24 net.gw=10.0.2.2 net.tx=queued client.server=10.0.2.15 client.ping=1 client.mib={MIB} client.seed=1"
    )
}

/// One NIC's counters from chroma's `chroma: vm <vm> net0 ...` line.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct NicCounters {
    rx_packets: u64,
    tx_packets: u64,
    pub traps_per_packet: f64,
    pub irqs_per_packet: f64,
    kicks: u64,
    kicks_suppressed: u64,
    irqs_suppressed: u64,
}

/// What one chroma run measured.
#[derive(Clone, Copy, Debug)]
struct ChromaRun {
    kib_per_second: u64,
    client: NicCounters,
    server: NicCounters,
}

/// Measures and prints the section, recording its figures in `results`.
pub fn run(images: &Images, board: Board, peers: &Peers, results: &mut Results) -> Result<()> {
    let netsvc = images.guests_dir.join("netsvc.bin");
    let netclient = images.guests_dir.join("netclient.bin");
    let bench_dir = workspace_root().join("build").join("bench");
    std::fs::create_dir_all(&bench_dir)
        .map_err(|error| format!("{}: {error}", bench_dir.display()))?;
    let config = bench_dir.join("bench-net.toml");
    std::fs::write(&config, chroma_config(&netsvc, &netclient))
        .map_err(|error| format!("{}: {error}", config.display()))?;
    let (run_args, bundle) = crate::bench::headless_bundle(&config, board, &images.hypervisor_bin)?;

    println!(
        "VM-to-VM throughput: netclient -> netsvc {MIB} MiB over TCP (net.tx=queued), \
         chroma (2 VMs on one switch, 1 vCPU each on CPUs 0 and 1, {}) {}; {ROUNDS} rounds{}",
        crate::bench::machine_words(board),
        match &peers.nic {
            Ok(()) => "vs the same guests on two plain QEMUs joined by a socket netdev",
            Err(_) => "alone",
        },
        if peers.nic.is_ok() {
            " each, interleaved"
        } else {
            ""
        }
    );
    let mut chroma_runs = Vec::new();
    let mut plain_runs = Vec::new();
    for round in 1..=ROUNDS {
        let chroma = chroma_transfer(qemu_command(&run_args, &bundle, None))?;
        let plain = match peers.nic {
            Ok(()) => Some(plain_transfer(board, &netsvc, &netclient)?),
            Err(_) => None,
        };
        println!(
            "round {round}: chroma {} KiB/s (client NIC traps/pkt {:.3}, irqs/pkt {:.3}; server NIC traps/pkt {:.3}, irqs/pkt {:.3}){}",
            chroma.kib_per_second,
            chroma.client.traps_per_packet,
            chroma.client.irqs_per_packet,
            chroma.server.traps_per_packet,
            chroma.server.irqs_per_packet,
            plain.map_or_else(String::new, |plain| format!(", plain QEMU {plain} KiB/s")),
        );
        chroma_runs.push(chroma);
        plain_runs.extend(plain);
    }
    let chroma_median = median(
        chroma_runs
            .iter()
            .map(|run| run.kib_per_second as f64)
            .collect(),
    );
    let plain_median = median(plain_runs.iter().map(|&kib| kib as f64).collect());
    println!(
        "VM-to-VM throughput, median of {ROUNDS}: chroma {chroma_median:.0} KiB/s, {}",
        match &peers.nic {
            Ok(()) => format!(
                "plain QEMU {plain_median:.0} KiB/s, ratio {:.2} (chroma / plain QEMU)",
                chroma_median / plain_median
            ),
            Err(why) => format!("plain QEMU: {why}"),
        }
    );
    let mut throughput = Figure::new(
        names::VM_TO_VM_THROUGHPUT,
        chroma_median,
        "KiB/s",
        Better::Higher,
    )
    .rounds(ROUNDS);
    if peers.nic.is_ok() {
        throughput = throughput.peer(PLAIN_QEMU, plain_median);
    }
    results.push(throughput);
    for (name, pick) in [
        (
            "client",
            (|run: &ChromaRun| run.client) as fn(&ChromaRun) -> NicCounters,
        ),
        ("server", |run: &ChromaRun| run.server),
    ] {
        let nics: Vec<NicCounters> = chroma_runs.iter().map(pick).collect();
        let traps = median(nics.iter().map(|nic| nic.traps_per_packet).collect());
        let irqs = median(nics.iter().map(|nic| nic.irqs_per_packet).collect());
        let last = nics.last().copied().unwrap_or_default();
        record_nic(results, names::BARE_METAL_PAIR, name, traps, irqs, ROUNDS);
        println!(
            "VM-to-VM at saturation, {name} NIC under chroma, median of {ROUNDS}: traps/pkt {traps:.3}, irqs/pkt {irqs:.3} \
             (last round: rx {} pkts, tx {} pkts, kicks {} with {} suppressed, {} irqs suppressed)",
            last.rx_packets, last.tx_packets, last.kicks, last.kicks_suppressed, last.irqs_suppressed
        );
        let (kicks, interrupts, other) = trap_breakdown(&last);
        println!(
            "  where the {name} NIC's traps go (last round, per packet): QueueNotify {kicks:.3} + \
             2 x {interrupts:.3} for InterruptStatus and InterruptACK per interrupt + other {other:.3}"
        );
    }
    Ok(())
}

/// Records the traps and interrupts per packet of `vm`'s NIC in `pair`.
pub(crate) fn record_nic(
    results: &mut Results,
    pair: &str,
    vm: &str,
    traps: f64,
    irqs: f64,
    rounds: usize,
) {
    results.push(
        Figure::new(
            names::traps_per_packet(pair, vm),
            traps,
            "per packet",
            Better::Lower,
        )
        .rounds(rounds),
    );
    results.push(
        Figure::new(
            names::irqs_per_packet(pair, vm),
            irqs,
            "per packet",
            Better::Lower,
        )
        .rounds(rounds),
    );
}

/// The VM's name and its NIC's counters from a `chroma: vm <vm> net0 ...` line.
pub(crate) fn vm_counters(line: &str) -> Option<(String, NicCounters)> {
    let at = line.find("chroma: vm ")? + "chroma: vm ".len();
    let vm = line[at..].split_whitespace().next()?;
    Some((vm.to_owned(), parse_counters(line)?))
}

/// The configuration of the chroma side.
fn chroma_config(netsvc: &Path, netclient: &Path) -> String {
    format!(
        "# netsvc and netclient on one switch, written by `cargo xtask bench`.\n\
         [[switch]]\nname = \"lan0\"\n\n\
         [[vm]]\nname = \"svc\"\nkernel = {:?}\nmemory = \"32M\"\nvcpus = 1\ncpus = [0]\ncmdline = {:?}\n\
         [[vm.net]]\nswitch = \"lan0\"\nmac = \"{SERVER_MAC}\"\n\n\
         [[vm]]\nname = \"client\"\nkernel = {:?}\nmemory = \"32M\"\nvcpus = 1\ncpus = [1]\ncmdline = {:?}\n\
         [[vm.net]]\nswitch = \"lan0\"\nmac = \"{CLIENT_MAC}\"\n",
        netsvc.display().to_string(),
        server_args(),
        netclient.display().to_string(),
        client_args()
    )
}

/// Runs chroma with both VMs to the end and reads the client's throughput
/// and both NICs' counters.
fn chroma_transfer(command: Command) -> Result<ChromaRun> {
    let output = run_to_end(command, TIMEOUT, "chroma")?;
    check_transfer(&output, "[client] ", "chroma")?;
    let counters = |vm: &str| {
        let prefix = format!("chroma: vm {vm} net0 ");
        output
            .lines()
            .find(|line| line.starts_with(&prefix))
            .and_then(parse_counters)
            .ok_or_else(|| format!("chroma: no counter line for {vm}'s NIC; output:\n{output}"))
    };
    Ok(ChromaRun {
        kib_per_second: throughput(&output, "[client] ")
            .ok_or_else(|| format!("chroma: no throughput line; output:\n{output}"))?,
        client: counters("client")?,
        server: counters("svc")?,
    })
}

/// The two guests on plain QEMU: netsvc listens on a socket netdev, netclient
/// connects to it. Returns the client's throughput.
fn plain_transfer(board: Board, netsvc: &Path, netclient: &Path) -> Result<u64> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|error| format!("no free port on 127.0.0.1: {error}"))?
        .port();
    let mut server = plain_qemu(
        board,
        netsvc,
        SERVER_MAC,
        &server_args(),
        &format!("socket,id=n0,listen=127.0.0.1:{port}"),
    );
    server.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut server = Guard(
        server
            .spawn()
            .map_err(|error| format!("cannot start QEMU: {error}"))?,
    );
    let (lines, receiver) = line_reader(&mut server.0);
    // QEMU listens before the guest runs: the first guest line means the
    // netdev is ready for the client.
    receiver
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| "plain QEMU: netsvc printed nothing in 60 s".to_owned())?;
    let client = plain_qemu(
        board,
        netclient,
        CLIENT_MAC,
        &client_args(),
        &format!("socket,id=n0,connect=127.0.0.1:{port}"),
    );
    let output = run_to_end(client, TIMEOUT, "plain QEMU netclient");
    // netsvc powers off a second after the session; do not wait long for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && matches!(server.0.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(server);
    let output = output?;
    check_transfer(&output, "", "plain QEMU").map_err(|error| {
        format!(
            "{error}\nnetsvc printed:\n{}",
            lines.lock().map(|text| text.clone()).unwrap_or_default()
        )
    })?;
    throughput(&output, "")
        .ok_or_else(|| format!("plain QEMU: no throughput line; output:\n{output}"))
}

/// One test guest alone on QEMU's `virt` machine with a virtio-net device
/// (one CPU), on the QEMU binary and CPU model of chroma's runs on `board`.
pub(crate) fn plain_qemu(
    board: Board,
    image: &Path,
    mac: &str,
    bootargs: &str,
    netdev: &str,
) -> Command {
    let mut command = crate::bench::plain_machine(board, 1, "128M");
    command
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(image)
        .args(["-append", bootargs])
        .args(["-global", "virtio-mmio.force-legacy=false"])
        .args(["-netdev", netdev])
        .args(["-device", &format!("virtio-net-device,netdev=n0,mac={mac}")])
        .stdin(Stdio::null());
    command
}

/// Kills the QEMU it holds when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Collects `child`'s stdout on a thread; the receiver gets a message per line.
fn line_reader(
    child: &mut Child,
) -> (std::sync::Arc<std::sync::Mutex<String>>, mpsc::Receiver<()>) {
    let stdout = child.stdout.take().expect("stdout is piped");
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (sender, receiver) = mpsc::channel();
    let sink = text.clone();
    std::thread::spawn(move || {
        for line in crate::bench::console_lines(stdout) {
            if let Ok(mut text) = sink.lock() {
                text.push_str(line.trim_end_matches('\r'));
                text.push('\n');
            }
            let _ = sender.send(());
        }
    });
    (text, receiver)
}

/// Runs `command` until it exits (killed after `timeout`) and returns its stdout.
fn run_to_end(mut command: Command, timeout: Duration, what: &str) -> Result<String> {
    command.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = Guard(
        command
            .spawn()
            .map_err(|error| format!("cannot start QEMU: {error}"))?,
    );
    let (text, _lines) = line_reader(&mut child.0);
    let deadline = Instant::now() + timeout;
    loop {
        match child.0.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                drop(child);
                let output = text.lock().map(|text| text.clone()).unwrap_or_default();
                return Err(format!(
                    "{what}: no end within {} s; output:\n{output}",
                    timeout.as_secs()
                ));
            }
        }
    }
    // Let the reader take the last lines.
    std::thread::sleep(Duration::from_millis(200));
    let output = text.lock().map(|text| text.clone()).unwrap_or_default();
    Ok(output)
}

/// Fails unless the client reported a matching transfer of the whole stream.
fn check_transfer(output: &str, prefix: &str, what: &str) -> Result<()> {
    let wanted = format!("{prefix}netclient: transfer {} bytes ", MIB << 20);
    let ok = output
        .lines()
        .any(|line| line.starts_with(&wanted) && line.trim_end().ends_with(" match"));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what}: the transfer did not complete with matching checksums; output:\n{output}"
        ))
    }
}

/// The KiB/s of `<prefix>netclient: info throughput <KiB/s> KiB/s ...`.
fn throughput(output: &str, prefix: &str) -> Option<u64> {
    let start = format!("{prefix}netclient: info throughput ");
    output.lines().find_map(|line| {
        line.strip_prefix(start.as_str())?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Parses `... rx <n> pkts <n> B, tx <n> pkts <n> B, ...; traps/pkt <x>,
/// irqs/pkt <y>, kicks <k> (suppressed <s>), irqs suppressed <i>, ...`.
fn parse_counters(line: &str) -> Option<NicCounters> {
    let after = |key: &str| -> Option<&str> {
        let at = line.find(key)? + key.len();
        line[at..]
            .split([' ', ',', ')', ';'])
            .find(|word| !word.is_empty())
    };
    Some(NicCounters {
        rx_packets: after(": rx ")?.parse().ok()?,
        tx_packets: after(", tx ")?.parse().ok()?,
        traps_per_packet: after("traps/pkt ")?.parse().ok()?,
        irqs_per_packet: after("irqs/pkt ")?.parse().ok()?,
        kicks: after("kicks ")?.parse().ok()?,
        kicks_suppressed: after("(suppressed ")?.parse().ok()?,
        irqs_suppressed: after("irqs suppressed ")?.parse().ok()?,
    })
}

/// A NIC's traps per packet split into QueueNotify writes, the two register
/// accesses the guests' interrupt handler makes per interrupt (InterruptStatus
/// read, InterruptACK write) and the rest: (kicks, interrupts, other) per packet.
fn trap_breakdown(nic: &NicCounters) -> (f64, f64, f64) {
    let packets = (nic.rx_packets + nic.tx_packets).max(1) as f64;
    let kicks = nic.kicks as f64 / packets;
    let other = nic.traps_per_packet - kicks - 2.0 * nic.irqs_per_packet;
    (kicks, nic.irqs_per_packet, other)
}

/// The median of `samples`; zero when empty.
fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    match samples.len() {
        0 => 0.0,
        n if n % 2 == 1 => samples[n / 2],
        n => (samples[n / 2 - 1] + samples[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "chroma: vm client net0 52:54:00:12:34:02 on lan0 port 1: rx 3454 pkts 228164 B, tx 11528 pkts 17101834 B, drops 0, errors 0; traps/pkt 0.087, irqs/pkt 0.179, kicks 5209 (suppressed 12), polls 0, irqs suppressed 3304, lines maintained/pkt 36.14";

    #[test]
    fn reads_a_counter_line() {
        let nic = parse_counters(LINE).unwrap();
        assert_eq!(nic.rx_packets, 3454);
        assert_eq!(nic.tx_packets, 11528);
        assert_eq!(nic.traps_per_packet, 0.087);
        assert_eq!(nic.irqs_per_packet, 0.179);
        assert_eq!(nic.kicks, 5209);
        assert_eq!(nic.kicks_suppressed, 12);
        assert_eq!(nic.irqs_suppressed, 3304);
        assert_eq!(parse_counters("chroma: vm client net0 nothing"), None);
        let (vm, counters) = vm_counters(&format!("[server] noise {LINE}")).unwrap();
        assert_eq!((vm.as_str(), counters), ("client", nic));
        assert_eq!(vm_counters("chroma: vm client net0 nothing"), None);
        let (kicks, interrupts, other) = trap_breakdown(&nic);
        assert!((kicks - 5209.0 / 14982.0).abs() < 1e-9);
        assert_eq!(interrupts, 0.179);
        assert!((other - (0.087 - kicks - 0.358)).abs() < 1e-9);
    }

    #[test]
    fn reads_throughput_and_checks_the_transfer() {
        let output = "[client] netclient: transfer 16777216 bytes fnv64=f32a39a9ee3e40c1 server fnv64=f32a39a9ee3e40c1 match\n\
                      [client] netclient: info throughput 4242 KiB/s (16777216 bytes in 3862 ms)\n";
        assert_eq!(throughput(output, "[client] "), Some(4242));
        assert_eq!(throughput(output, ""), None);
        assert!(check_transfer(output, "[client] ", "t").is_ok());
        assert!(check_transfer(&output.replace(" match", " MISMATCH"), "[client] ", "t").is_err());
        assert!(check_transfer(output, "", "t").is_err());
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }
}
