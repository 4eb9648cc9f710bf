//! `cargo xtask bench`, the Linux part: Debian's kernel and the initramfs of
//! guest-images/linux under chroma against the same images on plain QEMU,
//! measured interleaved in one run (arm64 Linux on qemu-virt-aarch64, armhf
//! Linux in AArch32 VMs on qemu-virt-arm, [`crate::images::linux_images`]).
//!
//! - Boot: QEMU start to `linux-guest: init` (the initramfs's first line), one
//!   Linux VM with 2 vCPUs and 256 MiB; medians of [`BOOT_RUNS`] runs each.
//! - VM-to-VM TCP: [`TRANSFER_MIB`] MiB from busybox httpd in one Linux guest
//!   to wget in another (`chroma.serve` / `chroma.fetch`, sha256 checked by the
//!   guests: the client times wget into its tmpfs and hashes after the clock
//!   stops, so the figure is not the guest's sha256 speed), each guest 1
//!   vCPU; under chroma both VMs on one switch (the
//!   server on physical CPU 0, the client on CPU 1: `cpus`), on plain
//!   QEMU two QEMU processes joined by socket netdevs. Under chroma twice,
//!   interleaved with the plain run: both NICs with `ring = "packed"` (Linux
//!   takes VIRTIO_F_RING_PACKED; the figure `linux.vm_to_vm.throughput`),
//!   then with `ring = "split"` (`linux.vm_to_vm.throughput.split`, also
//!   the packed figure's second peer, so its ratio is packed / split), then
//!   split again with `tso = false` (the split figure's second peer: TCP
//!   segmentation offload on / off). Both NICs' counter
//!   lines under chroma: the client's is printed as it powers off, the
//!   server's when the bench types Ctrl-A c on chroma's console.
//! - Ping: after the transfer, on the idle network, the client pings the
//!   server [`PINGS`] times, [`PING_INTERVAL`] apart (`ping -c 20 -i 0.2`);
//!   the median round trip under chroma against plain QEMU's.
//!
//! On a Raspberry Pi board the boot's peer is the same kernel and initramfs
//! on the plain Pi machine with the same device tree, limited to the VM's
//! CPUs and RAM by `maxcpus=` and `mem=` ([`plain_command`]); the transfer
//! has no peer there (the Pi's machine emulates no NIC, [`Peers`]).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::bench::{BenchArgs, Peers, PLAIN_QEMU};

/// The packed-ring figure's second peer: the same pair on split rings.
const SPLIT_RING: &str = "chroma, split rings";
/// The split-ring figure's second peer: the same pair with `tso = false`.
const SPLIT_RING_WITHOUT_TSO: &str = "chroma, split rings, tso = false";
use crate::bench_results::{names, Better, Figure, Results};
use crate::images::Images;
use crate::qemu::qemu_command;
use crate::{workspace_root, Board, Result};

/// Boots of each setup (interleaved): 5, as one boot in three or four
/// lands 100-300 ms late on a busy 2-core host, either side.
const BOOT_RUNS: usize = 5;
/// Size of the VM-to-VM transfer.
const TRANSFER_MIB: u64 = 64;
/// Give up on a transfer run after this long.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(240);
/// Echo requests of the lone ping after the transfer.
const PINGS: u32 = 20;
/// Seconds between them (`ping -i`).
const PING_INTERVAL: &str = "0.2";
/// chroma's console: Ctrl-A c prints every VM's NIC counters.
const CTRL_A_C: &[u8] = b"\x01c";

/// The words every Linux guest gets before the test's own.
const BASE_CMDLINE: &str = "console=ttyAMA0 rdinit=/init";

/// Measures and prints, recording the figures in `results`; errors end the bench.
pub fn run(args: &BenchArgs, images: &Images, peers: &Peers, results: &mut Results) -> Result<()> {
    let linux = crate::images::ensure_linux_images_for(args.board)?;
    let (kernel, initrd) = (linux.kernel.as_path(), linux.initrd.as_path());
    let dir = workspace_root().join("build").join("bench");
    std::fs::create_dir_all(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    boot(args, images, &dir, kernel, initrd, results)?;
    transfer(args, images, &dir, kernel, initrd, peers, results)?;
    Ok(())
}

/// A Linux `[[vm]]` for a bench configuration, with a NIC on lan0 when
/// `nic` gives its MAC and ring layout, its one vCPU on physical CPU `cpu`
/// if given.
#[allow(clippy::too_many_arguments)] // one VM's whole description
fn linux_vm(
    name: &str,
    kernel: &Path,
    initrd: &Path,
    memory: &str,
    vcpus: u32,
    words: &str,
    nic: Option<(&str, Ring)>,
    cpu: Option<u32>,
) -> String {
    let mut text = format!(
        "[[vm]]\nname = {name:?}\nkernel = {:?}\ninitrd = {:?}\nmemory = {memory:?}\nvcpus = {vcpus}\ncmdline = {:?}\n",
        kernel.display().to_string(),
        initrd.display().to_string(),
        format!("{BASE_CMDLINE} {words}").trim_end()
    );
    if let Some(cpu) = cpu {
        text.push_str(&format!("cpus = [{cpu}]\n"));
    }
    if let Some((mac, ring)) = nic {
        text.push_str(&format!(
            "[[vm.net]]\nswitch = \"lan0\"\nmac = {mac:?}\nring = {:?}\n",
            ring.key()
        ));
        if !ring.tso() {
            text.push_str("tso = false\n");
        }
    }
    text.push('\n');
    text
}

/// The virtqueue layout the Linux pair's NICs offer (`ring` of `[[vm.net]]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ring {
    Split,
    Packed,
    /// Split rings with `tso = false`: the pair without TCP segmentation
    /// offload, to compare.
    SplitWithoutTso,
}

impl Ring {
    /// The configuration's value.
    fn key(self) -> &'static str {
        match self {
            Ring::Split | Ring::SplitWithoutTso => "split",
            Ring::Packed => "packed",
        }
    }

    /// Whether the NICs offer TCP segmentation offload (`tso`).
    fn tso(self) -> bool {
        self != Ring::SplitWithoutTso
    }

    /// A name for the run's files.
    fn label(self) -> &'static str {
        match self {
            Ring::SplitWithoutTso => "split-no-tso",
            ring => ring.key(),
        }
    }
}

/// Writes `text` as `dir/name`, bundles it and returns chroma's QEMU command.
fn chroma_command(
    args: &BenchArgs,
    images: &Images,
    dir: &Path,
    name: &str,
    text: &str,
) -> Result<Command> {
    let (run_args, bundle) = chroma_bundle(args, images, dir, name, text)?;
    Ok(qemu_command(&run_args, &bundle, None))
}

/// Writes the configuration `text` as `name` in `dir` and the bundle made
/// from it, and waits until the bundle is on disk: QEMU started while the
/// kernel still writes back the 36 MB just written starts later than a
/// plain QEMU reading files at rest (the Linux boot's first line came
/// 300-400 ms later in the bench than by hand with the same bundle).
fn chroma_bundle(
    args: &BenchArgs,
    images: &Images,
    dir: &Path,
    name: &str,
    text: &str,
) -> Result<(crate::qemu::RunArgs, std::path::PathBuf)> {
    let config = dir.join(name);
    std::fs::write(&config, text).map_err(|error| format!("{}: {error}", config.display()))?;
    let (run_args, bundle) =
        crate::bench::headless_bundle(&config, args.board, &images.hypervisor_bin)?;
    std::fs::File::open(&bundle)
        .and_then(|file| file.sync_all())
        .map_err(|error| format!("{}: {error}", bundle.display()))?;
    Ok((run_args, bundle))
}

/// The same kernel and initramfs on QEMU's `virt` machine (no hypervisor),
/// on the QEMU binary and CPU model of chroma's runs on `board`; on a Pi
/// board, on its own machine as chroma's runs start it (the same device
/// tree and timer), the kernel limited to `smp` CPUs and `memory` of RAM
/// by its command line (the machine's CPUs and RAM are fixed).
pub(crate) fn plain_command(
    board: Board,
    kernel: &Path,
    initrd: &Path,
    smp: u32,
    memory: &str,
    words: &str,
) -> Command {
    if !board.is_qemu_virt() {
        let mut command = qemu_command(&crate::bench::headless_run_args(board), kernel, None);
        command.arg("-initrd").arg(initrd).arg("-append").arg(
            format!(
                "{} rdinit=/init maxcpus={smp} mem={memory} {words}",
                plain_pi_words(board)
            )
            .trim_end(),
        );
        return command;
    }
    let mut command = crate::bench::plain_machine(board, smp, memory);
    command
        .current_dir(workspace_root())
        // No default NIC (a PCI one that needs an option ROM); the transfer
        // peers add their own virtio-mmio NIC.
        .args(["-nic", "none"])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!("{BASE_CMDLINE} {words}").trim_end());
    command
}

/// The kernel words a plain Pi machine needs to boot Linux with the
/// board's device tree: its console, the serial port chroma's runs put on
/// stdout ([`crate::qemu::console_serial`]: QEMU's first is the PL011,
/// Linux's `ttyAMA0`, its second the mini UART, `ttyS1`); and on the Pi 4,
/// as QEMU's `raspi4b` leaves some of the tree's devices unemulated and
/// their registers answer with an external abort, which kills init, the
/// drivers that touch them at boot are skipped (the BCM2711's L2 interrupt
/// controller and I2C, and the disabling of unused clocks). The Linux VMs
/// under chroma see QEMU `virt`'s machine and need none of it
/// ([`BASE_CMDLINE`]).
fn plain_pi_words(board: Board) -> String {
    let console = match board.pi().map(|pi| pi.console_serial) {
        Some(1) => "console=ttyS1",
        _ => "console=ttyAMA0",
    };
    let unemulated = match board {
        Board::QemuVirtAarch64 | Board::QemuVirtArm | Board::Rpi3 => "",
        Board::Rpi4 => {
            " initcall_blacklist=brcmstb_l2_driver_init,brcmstb_i2c_driver_init clk_ignore_unused"
        }
    };
    format!("{console}{unemulated}")
}

/// A started QEMU whose stdout lines arrive, timed from its start, on `lines`.
struct Watched {
    child: Child,
    lines: mpsc::Receiver<(Duration, String)>,
    seen: Vec<(Duration, String)>,
}

impl Watched {
    fn start(command: Command) -> Result<Self> {
        Self::start_with(command, Stdio::null())
    }

    /// Starts `command` with `stdin` as its standard input.
    fn start_with(mut command: Command, stdin: Stdio) -> Result<Self> {
        command
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let start = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|error| format!("cannot start {:?}: {error}", command.get_program()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in crate::bench::console_lines(stdout) {
                if sender
                    .send((start.elapsed(), line.trim_end_matches('\r').to_owned()))
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(Watched {
            child,
            lines,
            seen: Vec::new(),
        })
    }

    /// Waits (until `deadline`) for a line containing `needle`; its time.
    fn wait_for(&mut self, needle: &str, deadline: Instant) -> Result<Duration> {
        if let Some((at, _)) = self.seen.iter().find(|(_, line)| line.contains(needle)) {
            return Ok(*at);
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => {
                    let found = line.contains(needle);
                    self.seen.push((at, line));
                    if found {
                        return Ok(at);
                    }
                }
                Err(_) => {
                    let tail: Vec<&str> = self
                        .seen
                        .iter()
                        .rev()
                        .take(15)
                        .map(|(_, l)| l.as_str())
                        .collect();
                    return Err(format!(
                        "no line containing {needle:?} in time; last lines:\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    ));
                }
            }
        }
    }

    /// The first line seen so far containing `needle`.
    fn line(&self, needle: &str) -> Option<&str> {
        self.seen
            .iter()
            .find(|(_, line)| line.contains(needle))
            .map(|(_, line)| line.as_str())
    }

    /// Every line seen so far containing `needle`.
    fn lines_with(&self, needle: &str) -> Vec<String> {
        self.seen
            .iter()
            .filter(|(_, line)| line.contains(needle))
            .map(|(_, line)| line.clone())
            .collect()
    }

    /// Writes `keys` to its standard input (started with `Stdio::piped()`).
    fn type_keys(&mut self, keys: &[u8]) -> Result<()> {
        use std::io::Write as _;
        let stdin = self
            .child
            .stdin
            .as_mut()
            .ok_or("QEMU's standard input is not a pipe")?;
        stdin
            .write_all(keys)
            .and_then(|()| stdin.flush())
            .map_err(|error| format!("cannot type on QEMU's console: {error}"))
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One boot: (QEMU start to the kernel's first line, to `linux-guest: init`,
/// the kernel's uptime at init in s).
struct BootTimes {
    first_line: Duration,
    init: Duration,
    uptime: f64,
}

fn time_boot(command: Command, timeout: Duration) -> Result<BootTimes> {
    let mut qemu = Watched::start(command)?;
    let deadline = Instant::now() + timeout;
    let measured = (|| {
        let first_line = qemu.wait_for("Booting Linux", deadline)?;
        let init = qemu.wait_for("linux-guest: init", deadline)?;
        qemu.wait_for("linux-guest: uptime", deadline)?;
        let uptime = qemu
            .line("linux-guest: uptime")
            .and_then(|line| line.split("uptime ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|text| text.parse().ok())
            .unwrap_or(0.0);
        Ok(BootTimes {
            first_line,
            init,
            uptime,
        })
    })();
    qemu.stop();
    measured
}

fn boot(
    args: &BenchArgs,
    images: &Images,
    dir: &Path,
    kernel: &Path,
    initrd: &Path,
    results: &mut Results,
) -> Result<()> {
    let text = format!(
        "# One Linux VM, written by `cargo xtask bench`.\n{}",
        linux_vm("linux", kernel, initrd, "256M", 2, "", None, None)
    );
    let timeout = Duration::from_secs(args.timeout.max(60));
    let mut chroma = Vec::new();
    let mut plain = Vec::new();
    // One bundle for every round, written before the first.
    let (run_args, bundle) = chroma_bundle(args, images, dir, "bench-linux-boot.toml", &text)?;
    for round in 1..=BOOT_RUNS {
        let chroma_boot = || {
            time_boot(qemu_command(&run_args, &bundle, None), timeout)
                .map_err(|error| format!("Linux under chroma: {error}"))
        };
        let plain_boot = || {
            time_boot(
                plain_command(args.board, kernel, initrd, 2, "256M", ""),
                timeout,
            )
            .map_err(|error| format!("Linux on plain QEMU: {error}"))
        };
        // Each goes first in every other round: neither always boots right
        // after the other (with its files warm, or its exit still settling).
        let (under, bare) = if round % 2 == 1 {
            let under = chroma_boot()?;
            (under, plain_boot()?)
        } else {
            let bare = plain_boot()?;
            (chroma_boot()?, bare)
        };
        println!(
            "linux boot round {round}: init after {:.0} ms under chroma (kernel's first line {:.0} ms, uptime {:.2} s), \
             {:.0} ms on plain QEMU (first line {:.0} ms, uptime {:.2} s)",
            millis(under.init),
            millis(under.first_line),
            under.uptime,
            millis(bare.init),
            millis(bare.first_line),
            bare.uptime
        );
        chroma.push(under);
        plain.push(bare);
    }
    let med = |samples: &[BootTimes], pick: fn(&BootTimes) -> f64| {
        median(samples.iter().map(pick).collect())
    };
    let (c_init, p_init) = (
        med(&chroma, |b| millis(b.init)),
        med(&plain, |b| millis(b.init)),
    );
    let (c_first, p_first) = (
        med(&chroma, |b| millis(b.first_line)),
        med(&plain, |b| millis(b.first_line)),
    );
    let (c_up, p_up) = (med(&chroma, |b| b.uptime), med(&plain, |b| b.uptime));
    println!(
        "linux boot to init (2 vCPUs, 256 MiB, {}), median of {BOOT_RUNS}: {c_init:.0} ms under chroma, \
         {p_init:.0} ms on plain QEMU{}, ratio {:.2}",
        crate::bench::machine_words(args.board),
        if args.board.is_qemu_virt() {
            ""
        } else {
            " (the same kernel on the Pi's machine and device tree, maxcpus=2 mem=256M, \
             probing the Pi's devices where under chroma it finds QEMU virt's few; most of \
             its wall time passes before the kernel's clock starts, in the boot-time patching \
             of ftrace's call sites, which is QEMU's cost: compare the kernel's own clock below)"
        },
        c_init / p_init
    );
    println!(
        "linux boot, where the time goes (medians): QEMU start to the kernel's first line {c_first:.0} ms under chroma \
         vs {p_first:.0} ms plain (the hypervisor's own start and the guest's load); kernel start to init \
         {:.0} ms vs {:.0} ms; the kernel's own clock at init {c_up:.2} s vs {p_up:.2} s",
        c_init - c_first,
        p_init - p_first
    );
    for (name, chroma, plain, unit) in [
        (names::LINUX_BOOT_INIT, c_init, p_init, "ms"),
        (names::LINUX_BOOT_FIRST_LINE, c_first, p_first, "ms"),
        (names::LINUX_BOOT_KERNEL_CLOCK, c_up, p_up, "s"),
    ] {
        results.push(
            Figure::new(name, chroma, unit, Better::Lower)
                .peer(PLAIN_QEMU, plain)
                .rounds(BOOT_RUNS),
        );
    }
    Ok(())
}

/// One transfer: milliseconds and KiB/s the client reported, the median
/// ping round trip after it (µs), the lines to show.
struct Transfer {
    ms: f64,
    kib_per_s: f64,
    ping_us: f64,
    notes: Vec<String>,
}

/// The median round trip, in µs, of the `... bytes from ...: seq=<n>
/// ttl=<n> time=<ms> ms` lines of busybox `ping` in `lines`; `None` if none.
fn ping_median(lines: &[String]) -> Option<f64> {
    let samples: Vec<f64> = lines
        .iter()
        .filter(|line| line.contains(" bytes from "))
        .filter_map(|line| {
            let ms: f64 = line
                .split(" time=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(ms * 1000.0)
        })
        .collect();
    (!samples.is_empty()).then(|| median(samples))
}

/// The first `chroma: vm <vm> net0` counter line of each VM in `lines`.
fn first_counter_lines(lines: &[String]) -> Vec<String> {
    let mut seen = Vec::new();
    let mut first = Vec::new();
    for line in lines {
        if let Some((vm, _)) = crate::bench_net::vm_counters(line) {
            if !seen.contains(&vm) {
                seen.push(vm);
                first.push(line.clone());
            }
        }
    }
    first
}

/// Parses `linux-guest: fetch <sha> <bytes> <ms> ms <KiB/s> KiB/s match`.
fn parse_fetch(line: &str) -> Result<(f64, f64)> {
    let at = line
        .find("linux-guest: fetch ")
        .ok_or_else(|| format!("not a fetch line: {line}"))?;
    let words: Vec<&str> = line[at..].split_whitespace().collect();
    // linux-guest: fetch SHA BYTES MS ms KIBS KiB/s match
    if words.len() < 9 || words[8] != "match" {
        return Err(format!("the transfer failed: {line}"));
    }
    // Streamed through sha256sum (the client's tmpfs could not hold the
    // file), the time would be the guest's hashing as much as the network.
    if words.get(9) == Some(&"(streamed)") {
        return Err(format!(
            "the client streamed the transfer through sha256sum (too little RAM for its tmpfs): {line}"
        ));
    }
    let bytes: u64 = words[3]
        .parse()
        .map_err(|_| format!("bad byte count: {line}"))?;
    if bytes != TRANSFER_MIB << 20 {
        return Err(format!("expected {} bytes: {line}", TRANSFER_MIB << 20));
    }
    let ms: f64 = words[4].parse().map_err(|_| format!("bad time: {line}"))?;
    let rate: f64 = words[6].parse().map_err(|_| format!("bad rate: {line}"))?;
    Ok((ms, rate))
}

const SERVER_WORDS: &str = "chroma.ip=10.0.2.21/24 chroma.gw=none chroma.serve=";
/// The client's words: the fetch, then the lone ping, then power off.
fn client_words() -> String {
    format!(
        "chroma.ip=10.0.2.22/24 chroma.gw=none chroma.fetch=10.0.2.21 chroma.wait=200 \
         chroma.run=\"ping -c {PINGS} -i {PING_INTERVAL} 10.0.2.21\" chroma.poweroff"
    )
}

fn transfer_under_chroma(
    args: &BenchArgs,
    images: &Images,
    dir: &Path,
    kernel: &Path,
    initrd: &Path,
    ring: Ring,
) -> Result<Transfer> {
    let text = format!(
        "# Two Linux VMs on one switch, written by `cargo xtask bench`.\n[[switch]]\nname = \"lan0\"\n\n{}{}",
        linux_vm("server", kernel, initrd, "256M", 1, &format!("{SERVER_WORDS}{TRANSFER_MIB}"), Some(("52:54:00:12:34:21", ring)), Some(0)),
        // Each VM on a physical CPU of its own, as each plain QEMU has a
        // host thread of its own (without `cpus` both would run on CPU 0
        // and take turns, the other CPU idle).
        linux_vm("client", kernel, initrd, "256M", 1, &client_words(), Some(("52:54:00:12:34:22", ring)), Some(1)),
    );
    let mut qemu = Watched::start_with(
        chroma_command(
            args,
            images,
            dir,
            &format!("bench-linux-tcp-{}.toml", ring.label()),
            &text,
        )?,
        Stdio::piped(),
    )?;
    let deadline = Instant::now() + TRANSFER_TIMEOUT;
    let result = (|| {
        qemu.wait_for("[client] ", deadline)?;
        qemu.wait_for("linux-guest: fetch ", deadline)?;
        let line = qemu
            .line("linux-guest: fetch ")
            .unwrap_or_default()
            .to_owned();
        let (ms, kib_per_s) = parse_fetch(&line)?;
        qemu.wait_for("linux-guest: run exit", deadline)?;
        let ping_us = ping_median(&qemu.lines_with("[client] "))
            .ok_or("no ping round trips from the client")?;
        // The client powers off: chroma prints its NIC's counters. The
        // server's come with Ctrl-A c (every VM's, the client's again).
        let soon = || Instant::now() + Duration::from_secs(20);
        qemu.wait_for("chroma: vm client net0", soon())?;
        qemu.type_keys(CTRL_A_C)?;
        qemu.wait_for("chroma: vm server net0", soon())?;
        Ok(Transfer {
            ms,
            kib_per_s,
            ping_us,
            notes: first_counter_lines(&qemu.lines_with("traps/pkt")),
        })
    })();
    qemu.stop();
    result
}

fn transfer_on_plain_qemu(board: Board, kernel: &Path, initrd: &Path) -> Result<Transfer> {
    let port = free_port()?;
    let mut server = plain_command(
        board,
        kernel,
        initrd,
        1,
        "256M",
        &format!("{SERVER_WORDS}{TRANSFER_MIB}"),
    );
    server.args([
        "-netdev",
        &format!("socket,id=n0,listen=127.0.0.1:{port}"),
        "-device",
        "virtio-net-device,netdev=n0,mac=52:54:00:12:34:21",
    ]);
    let server = Watched::start(server)?;
    std::thread::sleep(Duration::from_millis(500));
    let mut client = plain_command(board, kernel, initrd, 1, "256M", &client_words());
    client.args([
        "-netdev",
        &format!("socket,id=n0,connect=127.0.0.1:{port}"),
        "-device",
        "virtio-net-device,netdev=n0,mac=52:54:00:12:34:22",
    ]);
    let result = Watched::start(client).and_then(|mut client| {
        let deadline = Instant::now() + TRANSFER_TIMEOUT;
        let result = client
            .wait_for("linux-guest: fetch ", deadline)
            .and_then(|_| {
                let line = client
                    .line("linux-guest: fetch ")
                    .unwrap_or_default()
                    .to_owned();
                parse_fetch(&line)
            })
            .and_then(|fetched| {
                client.wait_for("linux-guest: run exit", deadline)?;
                let ping_us = ping_median(&client.lines_with(" bytes from "))
                    .ok_or("no ping round trips from the client")?;
                Ok((fetched, ping_us))
            });
        client.stop();
        let ((ms, kib_per_s), ping_us) = result?;
        Ok(Transfer {
            ms,
            kib_per_s,
            ping_us,
            notes: Vec::new(),
        })
    });
    server.stop();
    result
}

fn transfer(
    args: &BenchArgs,
    images: &Images,
    dir: &Path,
    kernel: &Path,
    initrd: &Path,
    peers: &Peers,
    results: &mut Results,
) -> Result<()> {
    // Interleaved: packed, split, then the plain QEMUs.
    let under = transfer_under_chroma(args, images, dir, kernel, initrd, Ring::Packed)
        .map_err(|error| format!("Linux VM-to-VM TCP under chroma, packed rings: {error}"))?;
    let split = transfer_under_chroma(args, images, dir, kernel, initrd, Ring::Split)
        .map_err(|error| format!("Linux VM-to-VM TCP under chroma, split rings: {error}"))?;
    let no_tso = transfer_under_chroma(args, images, dir, kernel, initrd, Ring::SplitWithoutTso)
        .map_err(|error| {
            format!("Linux VM-to-VM TCP under chroma, split rings without TSO: {error}")
        })?;
    let mut figure = Figure::new(
        names::LINUX_VM_TO_VM_THROUGHPUT,
        under.kib_per_s,
        "KiB/s",
        Better::Higher,
    )
    .rounds(1);
    let mut split_figure = Figure::new(
        names::LINUX_VM_TO_VM_THROUGHPUT_SPLIT,
        split.kib_per_s,
        "KiB/s",
        Better::Higher,
    )
    .rounds(1);
    let mut ping = Figure::new(names::LINUX_PING_RTT, under.ping_us, "us", Better::Lower).rounds(1);
    let (peer, ping_peer) = match &peers.nic {
        Ok(()) => {
            let bare = transfer_on_plain_qemu(args.board, kernel, initrd)
                .map_err(|error| format!("Linux VM-to-VM TCP on plain QEMU: {error}"))?;
            figure = figure.peer(PLAIN_QEMU, bare.kib_per_s);
            split_figure = split_figure.peer(PLAIN_QEMU, bare.kib_per_s);
            ping = ping.peer(PLAIN_QEMU, bare.ping_us);
            (
                format!(
                    "{:.0} ms ({:.1} MiB/s) between two plain QEMUs (socket netdev), throughput ratio {:.2} packed, {:.2} split",
                    bare.ms,
                    bare.kib_per_s / 1024.0,
                    under.kib_per_s / bare.kib_per_s,
                    split.kib_per_s / bare.kib_per_s
                ),
                format!(
                    ", {:.0} us between two plain QEMUs, ratio {:.2}",
                    bare.ping_us,
                    under.ping_us / bare.ping_us
                ),
            )
        }
        Err(why) => (format!("plain QEMU: {why}"), String::new()),
    };
    figure = figure.peer(SPLIT_RING, split.kib_per_s);
    split_figure = split_figure.peer(SPLIT_RING_WITHOUT_TSO, no_tso.kib_per_s);
    println!(
        "linux vm-to-vm tcp without TCP segmentation offload (tso = false), split rings: {:.0} ms ({:.1} MiB/s); with it / without {:.2}",
        no_tso.ms,
        no_tso.kib_per_s / 1024.0,
        split.kib_per_s / no_tso.kib_per_s,
    );
    println!(
        "linux vm-to-vm tcp, {TRANSFER_MIB} MiB httpd -> wget (1 vCPU each, MTU 1500): {:.0} ms ({:.1} MiB/s) on packed rings \
         and {:.0} ms ({:.1} MiB/s) on split rings through chroma's switch (packed / split {:.2}), {peer}",
        under.ms,
        under.kib_per_s / 1024.0,
        split.ms,
        split.kib_per_s / 1024.0,
        under.kib_per_s / split.kib_per_s,
    );
    results.push(figure);
    results.push(split_figure);
    println!(
        "linux vm-to-vm ping after the transfer (ping -c {PINGS} -i {PING_INTERVAL}), median: \
         {:.0} us through chroma's switch on packed rings ({:.0} us on split rings){ping_peer}",
        under.ping_us, split.ping_us
    );
    results.push(ping);
    for note in &split.notes {
        println!("linux vm-to-vm tcp on split rings, where the time goes: {note}");
    }
    for note in &under.notes {
        println!("linux vm-to-vm tcp, where the time goes: {note}");
        if let Some((vm, nic)) = crate::bench_net::vm_counters(note) {
            println!("  {}", crate::bench_net::trap_breakdown(&vm, &nic));
            crate::bench_net::record_nic(results, names::LINUX_PAIR, &vm, &[nic], 1);
        }
    }
    Ok(())
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|error| format!("no free port on 127.0.0.1: {error}"))
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

/// A duration in milliseconds.
fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_lines_parse_and_failures_are_refused() {
        let ok = "[client] linux-guest:/# linux-guest: fetch 6f30fd9a80b025c02e3f00c4b9d6b300125f231d490108195100314b043e3936 67108864 20330 ms 3223 KiB/s match";
        assert_eq!(parse_fetch(ok), Ok((20330.0, 3223.0)));
        let bad = "linux-guest: fetch 00 0 20330 ms 0 KiB/s MISMATCH (server says 11)";
        assert!(parse_fetch(bad).is_err());
        assert!(
            parse_fetch("linux-guest: fetch failed (nothing at http://10.0.2.21/data.sha256)")
                .is_err()
        );
        assert!(parse_fetch(&format!("{ok} (streamed)")).is_err());
    }

    #[test]
    fn ping_round_trips_and_counter_lines() {
        let lines: Vec<String> = [
            "[client] PING 10.0.2.21 (10.0.2.21): 56 data bytes",
            "[client] 64 bytes from 10.0.2.21: seq=0 ttl=64 time=1.500 ms",
            "[client] linux-guest:/# 64 bytes from 10.0.2.21: seq=1 ttl=64 time=0.500 ms",
            "[client] 64 bytes from 10.0.2.21: seq=2 ttl=64 time=0.900 ms",
            "[client] round-trip min/avg/max = 0.500/0.966/1.500 ms",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(ping_median(&lines), Some(900.0));
        assert_eq!(ping_median(&lines[..1]), None);
        let line = |vm: &str, rx: u64| {
            format!("chroma: vm {vm} net0 52:54:00:12:34:22 on lan0 port 1: rx {rx} pkts 1 B, tx 2 pkts 3 B, drops 0, errors 0, spoofed 0; traps/pkt 0.080, irqs/pkt 0.030, kicks 906 (suppressed 0), polls 0, irqs suppressed 4, lines maintained/pkt 0.00")
        };
        let lines = [line("client", 1), line("server", 2), line("client", 3)].to_vec();
        assert_eq!(first_counter_lines(&lines), lines[..2].to_vec());
    }

    #[test]
    fn median_of_floats() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }
}
