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
//! figures at saturation. Before it, on an idle network, the client pings
//! the server [`PINGS`] times (`netclient: info ping <n> rtt <us> us`): the
//! median is the lone ping's round trip, beside the same on plain QEMU. A
//! board whose QEMU machine emulates no NIC (the Pi's) has no plain-QEMU
//! peer: its chroma figures are printed alone.

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
/// Echo requests the client sends (one at a time) before the transfer.
const PINGS: usize = 10;
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
        "net.ip=10.0.2.16/24 net.gw=10.0.2.2 net.tx=queued client.server=10.0.2.15 client.ping={PINGS} client.mib={MIB} client.seed=1"
    )
}

/// One NIC's counters from chroma's `chroma: vm <vm> net0 ...` line.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct NicCounters {
    rx_packets: u64,
    tx_packets: u64,
    pub traps_per_packet: f64,
    pub irqs_per_packet: f64,
    /// Frames the switch dropped for this port while its driver was up
    /// (egress queue full, stalled receiver): the line's `drops` less its
    /// `driver not up`.
    pub drops: u64,
    /// Frames for this port dropped before its driver was up (or while it
    /// was reset): the line's `driver not up`, 0 if it has none.
    pub drops_not_up: u64,
    kicks: u64,
    kicks_suppressed: u64,
    irqs_suppressed: u64,
    /// Packets as on a wire (a GSO frame counted as its TCP segments), if
    /// the line has its `gso: tx <n> (<s> segments), rx whole <n> (<s>
    /// segments)` counts.
    wire_packets: Option<u64>,
    /// The traps by register, if the line says (`traps: QueueNotify rx <n>
    /// tx <n>, InterruptStatus <n>, InterruptACK <n>, other <n>`).
    split: Option<TrapSplit>,
}

/// A NIC's traps by register.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct TrapSplit {
    rx_kicks: u64,
    tx_kicks: u64,
    status_reads: u64,
    acks: u64,
    other: u64,
}

/// What one chroma run measured.
#[derive(Clone, Copy, Debug)]
struct ChromaRun {
    kib_per_second: u64,
    /// Median ping round trip, µs.
    ping_us: f64,
    client: NicCounters,
    server: NicCounters,
}

/// What one plain-QEMU run measured.
#[derive(Clone, Copy, Debug)]
struct PlainRun {
    kib_per_second: u64,
    /// Median ping round trip, µs.
    ping_us: f64,
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
            "round {round}: chroma {} KiB/s, ping {:.0} us (client NIC traps/pkt {:.3}, irqs/pkt {:.3}; server NIC traps/pkt {:.3}, irqs/pkt {:.3}){}",
            chroma.kib_per_second,
            chroma.ping_us,
            chroma.client.traps_per_packet,
            chroma.client.irqs_per_packet,
            chroma.server.traps_per_packet,
            chroma.server.irqs_per_packet,
            plain.map_or_else(String::new, |plain| format!(
                ", plain QEMU {} KiB/s, ping {:.0} us",
                plain.kib_per_second, plain.ping_us
            )),
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
    let plain_median = median(
        plain_runs
            .iter()
            .map(|run: &PlainRun| run.kib_per_second as f64)
            .collect(),
    );
    let chroma_ping = median(chroma_runs.iter().map(|run| run.ping_us).collect());
    let plain_ping = median(plain_runs.iter().map(|run| run.ping_us).collect());
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
    println!(
        "VM-to-VM ping (netclient -> netsvc, idle network), median of {ROUNDS} rounds' medians of {PINGS}: \
         chroma {chroma_ping:.0} us{}",
        match &peers.nic {
            Ok(()) => format!(
                ", plain QEMU {plain_ping:.0} us, ratio {:.2} (chroma / plain QEMU)",
                chroma_ping / plain_ping
            ),
            Err(why) => format!(", plain QEMU: {why}"),
        }
    );
    let mut ping =
        Figure::new(names::VM_TO_VM_PING_RTT, chroma_ping, "us", Better::Lower).rounds(ROUNDS);
    if peers.nic.is_ok() {
        ping = ping.peer(PLAIN_QEMU, plain_ping);
    }
    results.push(ping);
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
        record_nic(results, names::BARE_METAL_PAIR, name, &nics, ROUNDS);
        println!(
            "VM-to-VM at saturation, {name} NIC under chroma, median of {ROUNDS}: traps/pkt {traps:.3}, irqs/pkt {irqs:.3} \
             (last round: rx {} pkts, tx {} pkts, drops {} and {} before the driver was up, kicks {} with {} suppressed, {} irqs suppressed)",
            last.rx_packets, last.tx_packets, last.drops, last.drops_not_up, last.kicks, last.kicks_suppressed, last.irqs_suppressed
        );
        println!("  {}", trap_breakdown(name, &last));
    }
    Ok(())
}

/// Records the traps and interrupts per packet of `vm`'s NIC in `pair`,
/// and the frames dropped for it: the medians over `nics`, one per round.
pub(crate) fn record_nic(
    results: &mut Results,
    pair: &str,
    vm: &str,
    nics: &[NicCounters],
    rounds: usize,
) {
    let of = |pick: fn(&NicCounters) -> f64| median(nics.iter().map(pick).collect());
    for (name, value, unit) in [
        (
            names::traps_per_packet(pair, vm),
            of(|nic| nic.traps_per_packet),
            "per packet",
        ),
        (
            names::irqs_per_packet(pair, vm),
            of(|nic| nic.irqs_per_packet),
            "per packet",
        ),
        (names::drops(pair, vm), of(|nic| nic.drops as f64), "frames"),
    ] {
        results.push(Figure::new(name, value, unit, Better::Lower).rounds(rounds));
    }
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
/// and pings and both NICs' counters.
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
        ping_us: ping_median(&output, "[client] ")
            .ok_or_else(|| format!("chroma: no ping round trips; output:\n{output}"))?,
        client: counters("client")?,
        server: counters("svc")?,
    })
}

/// The two guests on plain QEMU: netsvc listens on a socket netdev, netclient
/// connects to it. Returns the client's throughput and median ping.
fn plain_transfer(board: Board, netsvc: &Path, netclient: &Path) -> Result<PlainRun> {
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
    Ok(PlainRun {
        kib_per_second: throughput(&output, "")
            .ok_or_else(|| format!("plain QEMU: no throughput line; output:\n{output}"))?,
        ping_us: ping_median(&output, "")
            .ok_or_else(|| format!("plain QEMU: no ping round trips; output:\n{output}"))?,
    })
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

/// The median of the round trips (µs) in `<prefix>netclient: info ping <n>
/// rtt <us> us` lines; `None` if there are none.
fn ping_median(output: &str, prefix: &str) -> Option<f64> {
    let start = format!("{prefix}netclient: info ping ");
    let samples: Vec<f64> = output
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(start.as_str())?;
            rest.split(" rtt ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    (!samples.is_empty()).then(|| median(samples))
}

/// Parses `... rx <n> pkts <n> B, tx <n> pkts <n> B, drops <n>, ...; traps/pkt <x>,
/// irqs/pkt <y>, kicks <k> (suppressed <s>), irqs suppressed <i>, ...`.
fn parse_counters(line: &str) -> Option<NicCounters> {
    let after = |key: &str| -> Option<&str> {
        let at = line.find(key)? + key.len();
        line[at..]
            .split([' ', ',', ')', ';'])
            .find(|word| !word.is_empty())
    };
    let not_up = after("(driver not up ").map_or(Some(0), |n| n.parse().ok())?;
    Some(NicCounters {
        rx_packets: after(": rx ")?.parse().ok()?,
        tx_packets: after(", tx ")?.parse().ok()?,
        traps_per_packet: after("traps/pkt ")?.parse().ok()?,
        irqs_per_packet: after("irqs/pkt ")?.parse().ok()?,
        drops: after(", drops ")?
            .parse::<u64>()
            .ok()?
            .saturating_sub(not_up),
        drops_not_up: not_up,
        kicks: after("kicks ")?.parse().ok()?,
        kicks_suppressed: after("(suppressed ")?.parse().ok()?,
        irqs_suppressed: after("irqs suppressed ")?.parse().ok()?,
        wire_packets: line.find("; gso: tx ").and_then(|at| {
            let numbers: Vec<u64> = line[at..]
                .split(|c: char| !c.is_ascii_digit())
                .filter(|word| !word.is_empty())
                .take(4)
                .map(|word| word.parse().ok())
                .collect::<Option<_>>()?;
            let [tx_gso, tx_segments, rx_gso, rx_segments] = numbers[..] else {
                return None;
            };
            let rx = after(": rx ")?.parse::<u64>().ok()?;
            let tx = after(", tx ")?.parse::<u64>().ok()?;
            Some(rx.checked_sub(rx_gso)? + rx_segments + tx.checked_sub(tx_gso)? + tx_segments)
        }),
        split: line.find("; traps: ").and_then(|at| {
            let tail = &line[at..];
            let count = |key: &str| -> Option<u64> {
                let at = tail.find(key)? + key.len();
                tail[at..]
                    .split([' ', ',', ';'])
                    .find(|word| !word.is_empty())?
                    .parse()
                    .ok()
            };
            Some(TrapSplit {
                rx_kicks: count("QueueNotify rx ")?,
                tx_kicks: count(" tx ")?,
                status_reads: count("InterruptStatus ")?,
                acks: count("InterruptACK ")?,
                other: count(", other ")?,
            })
        }),
    })
}

/// Where `name`'s NIC's traps go, per packet: by register when the counter
/// line says, otherwise estimated as QueueNotify writes, the two accesses
/// the guests' interrupt handler makes per interrupt (InterruptStatus read,
/// InterruptACK write) and the rest.
pub(crate) fn trap_breakdown(name: &str, nic: &NicCounters) -> String {
    // Per packet as the line counts them: on a wire, a GSO frame as the
    // segments it carries (lines from before TSO: per frame).
    let packets = nic
        .wire_packets
        .unwrap_or(nic.rx_packets + nic.tx_packets)
        .max(1) as f64;
    let per = |count: u64| count as f64 / packets;
    match nic.split {
        Some(split) => format!(
            "where the {name} NIC's traps go (per packet): QueueNotify rx {:.4} + tx {:.4}, \
             InterruptStatus {:.4}, InterruptACK {:.4}, other {:.4}",
            per(split.rx_kicks),
            per(split.tx_kicks),
            per(split.status_reads),
            per(split.acks),
            per(split.other)
        ),
        None => format!(
            "where the {name} NIC's traps go (per packet): QueueNotify {:.3} + 2 x {:.3} for \
             InterruptStatus and InterruptACK per interrupt + other {:.3}",
            per(nic.kicks),
            nic.irqs_per_packet,
            nic.traps_per_packet - per(nic.kicks) - 2.0 * nic.irqs_per_packet
        ),
    }
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

    const LINE: &str = "chroma: vm client net0 52:54:00:12:34:02 on lan0 port 1: rx 3454 pkts 228164 B, tx 11528 pkts 17101834 B, drops 7, errors 0; traps/pkt 0.087, irqs/pkt 0.179, kicks 5209 (suppressed 12), polls 0, irqs suppressed 3304, lines maintained/pkt 36.14; traps: QueueNotify rx 1 tx 396, InterruptStatus 278, InterruptACK 278, other 48; irqs held 5";

    #[test]
    fn reads_a_counter_line() {
        let nic = parse_counters(LINE).unwrap();
        assert_eq!(nic.rx_packets, 3454);
        assert_eq!(nic.tx_packets, 11528);
        assert_eq!(nic.traps_per_packet, 0.087);
        assert_eq!(nic.irqs_per_packet, 0.179);
        assert_eq!((nic.drops, nic.drops_not_up), (7, 0));
        assert_eq!(nic.kicks, 5209);
        assert_eq!(nic.kicks_suppressed, 12);
        assert_eq!(nic.irqs_suppressed, 3304);
        assert_eq!(parse_counters("chroma: vm client net0 nothing"), None);
        // Drops before the receiver's driver was up are not counted as
        // losses at saturation; the rest are.
        let split = LINE.replace("drops 7,", "drops 7 (driver not up 5, receiver stalled 1),");
        let counted = parse_counters(&split).unwrap();
        assert_eq!((counted.drops, counted.drops_not_up), (2, 5));
        let broken = LINE.replace("drops 7,", "drops 7 (driver not up x, receiver stalled 1),");
        assert_eq!(parse_counters(&broken), None);
        let (vm, counters) = vm_counters(&format!("[server] noise {LINE}")).unwrap();
        assert_eq!((vm.as_str(), counters), ("client", nic));
        assert_eq!(vm_counters("chroma: vm client net0 nothing"), None);
        assert_eq!(
            nic.split,
            Some(TrapSplit {
                rx_kicks: 1,
                tx_kicks: 396,
                status_reads: 278,
                acks: 278,
                other: 48
            })
        );
        let split = trap_breakdown("client", &nic);
        assert!(
            split.contains("QueueNotify rx 0.0001 + tx 0.0264"),
            "{split}"
        );
        assert!(
            split.contains("InterruptACK 0.0186, other 0.0032"),
            "{split}"
        );
        // With TSO, per packet on a wire: 2 GSO frames of 40 segments each
        // sent, so 11 526 + 80 packets sent.
        let tso = format!("{LINE}; gso: tx 2 (80 segments), rx whole 0 (0 segments), rx cut 0");
        let nic = parse_counters(&tso).unwrap();
        assert_eq!(nic.wire_packets, Some(3454 + 11526 + 80));
        let wire = trap_breakdown("client", &nic);
        assert!(wire.contains("QueueNotify rx 0.0001 + tx 0.0263"), "{wire}");
        // A line from before the split: estimated from kicks and interrupts.
        let old = LINE.split("; traps:").next().unwrap();
        let nic = parse_counters(old).unwrap();
        assert_eq!(nic.split, None);
        let estimate = trap_breakdown("client", &nic);
        assert!(
            estimate.contains("QueueNotify 0.348 + 2 x 0.179"),
            "{estimate}"
        );
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
    fn reads_the_ping_round_trips() {
        let output = "[client] netclient: ping 1 reply from 10.0.2.15\n\
                      [client] netclient: info ping 1 rtt 700 us\n\
                      [client] netclient: info ping 2 rtt 300 us\n\
                      [svc] netsvc: info ping 1 rtt 9999 us\n\
                      [client] netclient: info ping 3 rtt 500 us\n";
        assert_eq!(ping_median(output, "[client] "), Some(500.0));
        assert_eq!(ping_median(output, ""), None);
        assert_eq!(
            ping_median("netclient: info ping 1 rtt 42 us\n", ""),
            Some(42.0)
        );
        assert_eq!(ping_median("netclient: info ping 1 rtt x us\n", ""), None);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }
}
