//! `cargo xtask soak`: a long run with traffic that never stops and a VM
//! that resets every few minutes, judged by the hypervisor's own memory
//! high-water marks.
//!
//! One board (2 CPUs, GICv2, 1 GiB) runs three VMs on switch `lan0`, which
//! has the uplink (QEMU user networking, forwards on 127.0.0.1):
//!
//! - `linux` (10.0.2.20, CPU 0): the Debian guest with httpd, pinging `svc`
//!   twice a second for the whole run;
//! - `svc` (10.0.2.15, CPU 1): netsvc, TCP echo and checksum sink;
//! - `client` (10.0.2.16, CPU 0, or 1 with `--client-cpu 1`): netclient in
//!   its loop mode, sending `CLIENT_MIB` MiB to `svc`'s sink over and over
//!   (`client.loop`), and then resetting itself (`client.reset`, PSCI SYSTEM_RESET) every
//!   `--reset-every` seconds; the hypervisor restarts it from its images.
//!   It sends no pings (`client.ping=0`): netclient fails on a single
//!   unanswered echo request (1 s), and under the soak's load one was lost
//!   once in 31 minutes with no drop counted by the switch (a guest's stack
//!   or a late reply, not what the soak judges); the Linux guest pings.
//!
//! The host keeps the uplink busy from two threads: one fetches the Linux
//! guest's 1 MiB `blob.bin` over HTTP again and again (checked against the
//! first copy), the other echoes 16 KiB chunks through `svc`'s echo port on
//! one connection (checked byte for byte).
//!
//! Every `--period` seconds (a minute by default) the driver types Ctrl-A s
//! on the console, reads the hypervisor's `chroma: stats` lines (heap and
//! frame allocator in use and high-water marks, per-port switch counters,
//! resets; see `hypervisor/src/stats.rs`) and prints one row. The run
//! fails, with a message saying why, when:
//!
//! - the hypervisor reports a failure (`fatal`, `PANIC`, `EL2 EXCEPTION`,
//!   `error:`), a VM stops, a guest prints a FAIL or a checksum mismatch
//!   (or Linux a `BUG:` such as a soft lockup, or an RCU stall), or QEMU
//!   ends;
//! - in some period a switch port, the uplink, the host's fetches or the
//!   host's echo moved nothing (traffic stopped), or host data came back
//!   corrupted;
//! - after the warm-up periods (the first quarter of the run, one to three
//!   periods) a high-water mark rose in two or more periods: one step may be
//!   an allocator's fragmentation settling (or the first reset), a second
//!   one is a trend; for the heap, unless all of that growth stays within
//!   [`HEAP_SLACK_BYTES`] (coinciding short-lived allocations on both CPUs
//!   also raise it, a little);
//! - the run was long enough for resets but no VM was reset.
//!
//! Each row also gives the host CPU time QEMU's vCPU threads used in the
//! period, which tells a board CPU the host starved from one the hypervisor
//! kept busy. The full console goes to `build/soak/console.log`, each line
//! after the seconds since QEMU started.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;

use crate::qemu::{parse_forward, qemu_command};
use crate::{workspace_root, Board, Result};

/// MiB netclient sends to the sink per round.
const CLIENT_MIB: u64 = 4;
/// Size of the Linux guest's `blob.bin` (guest-images/linux/init).
const BLOB_BYTES: usize = 1 << 20;
/// Bytes per echo exchange.
const ECHO_CHUNK: usize = 16 * 1024;
/// Most warm-up periods; the trend of the high-water marks is judged after.
const MAX_WARMUP_PERIODS: usize = 3;
/// How long the stats lines may take to appear after Ctrl-A s.
const STATS_TIMEOUT: Duration = Duration::from_secs(30);
/// Ctrl-A s: the hypervisor's console command for the stats lines.
const STATS_KEYS: &[u8] = b"\x01s";

/// Options of `cargo xtask soak`.
#[derive(Args, Clone, Debug)]
pub struct SoakArgs {
    /// Length of the run in periods (minutes, unless --period says otherwise),
    /// counted from when the traffic is flowing.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub minutes: u64,
    /// Seconds per period (one row of counters); shorter for a quick smoke.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub period: u64,
    /// Seconds netclient loops its transfers before it resets itself.
    #[arg(long, value_name = "SECONDS", default_value_t = 150)]
    pub reset_every: u64,
    /// Board CPU of the resetting netclient: 0 shares it with the Linux
    /// guest (whose soft-lockup watchdog then sees how long a reset keeps the
    /// CPU), 1 with netsvc.
    #[arg(long, value_name = "0|1", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub client_cpu: u8,
    /// Seconds the VMs may take to boot and the host traffic to start.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub boot_timeout: u64,
    /// Board to run on.
    #[arg(long, value_enum, default_value_t = Board::QemuVirtAarch64)]
    pub board: Board,
    /// Use the images already in build/.
    #[arg(long, hide = true)]
    pub no_build: bool,
}

/// One port's line: `stats port=<id> owner=<who> rx=<f>/<b> tx=<f>/<b> drops=<n> errors=<n> spoofed=<n>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct PortStats {
    id: String,
    owner: String,
    rx_frames: u64,
    rx_bytes: u64,
    tx_frames: u64,
    tx_bytes: u64,
    drops: u64,
    errors: u64,
    spoofed: u64,
}

/// One set of `chroma: stats` lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Snapshot {
    /// Heap bytes: used, peak, total.
    heap: [u64; 3],
    /// Frames: used, peak, total.
    frames: [u64; 3],
    resets: u64,
    vms_running: u64,
    vms_total: u64,
    ports: Vec<PortStats>,
}

/// The `key=value` words of a line.
fn words(line: &str) -> impl Iterator<Item = (&str, &str)> {
    line.split_whitespace()
        .filter_map(|word| word.split_once('='))
}

/// `a/b/...` as numbers.
fn numbers<const N: usize>(text: &str) -> Option<[u64; N]> {
    let parts: Vec<u64> = text
        .split('/')
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    parts.try_into().ok()
}

/// Parses the header line `chroma: stats heap=.. frames=.. resets=.. vms=..`.
fn parse_header(line: &str) -> Option<Snapshot> {
    let rest = line.strip_prefix("chroma: stats heap=")?;
    let mut snapshot = Snapshot::default();
    let mut seen = 0;
    for (key, value) in words(&format!("heap={rest}")) {
        match key {
            "heap" => snapshot.heap = numbers(value)?,
            "frames" => snapshot.frames = numbers(value)?,
            "resets" => snapshot.resets = value.parse().ok()?,
            "vms" => [snapshot.vms_running, snapshot.vms_total] = numbers(value)?,
            _ => continue,
        }
        seen += 1;
    }
    (seen == 4).then_some(snapshot)
}

/// Parses a port line `chroma: stats port=..`.
fn parse_port(line: &str) -> Option<PortStats> {
    let rest = line.strip_prefix("chroma: stats port=")?;
    let mut port = PortStats::default();
    for (key, value) in words(&format!("port={rest}")) {
        match key {
            "port" => port.id = value.to_owned(),
            "owner" => port.owner = value.to_owned(),
            "rx" => [port.rx_frames, port.rx_bytes] = numbers(value)?,
            "tx" => [port.tx_frames, port.tx_bytes] = numbers(value)?,
            "drops" => port.drops = value.parse().ok()?,
            "errors" => port.errors = value.parse().ok()?,
            "spoofed" => port.spoofed = value.parse().ok()?,
            _ => {}
        }
    }
    (!port.owner.is_empty()).then_some(port)
}

/// What the console said so far.
#[derive(Debug, Default)]
struct ConsoleState {
    /// Stats headers seen.
    headers: u64,
    /// The latest stats lines (complete a moment after their header).
    latest: Option<Snapshot>,
    /// netclient transfers that ended with matching checksums.
    client_rounds: u64,
    /// netclient boots (its `link up` line).
    client_boots: u64,
    /// Lines that fail the run.
    failures: Vec<String>,
    /// Hypervisor warnings.
    warnings: Vec<String>,
    linux_ready: bool,
    svc_ready: bool,
}

impl ConsoleState {
    /// Looks at one console line.
    fn observe(&mut self, line: &str) {
        if let Some(snapshot) = parse_header(line) {
            self.headers += 1;
            self.latest = Some(snapshot);
        } else if let Some(port) = parse_port(line) {
            if let Some(snapshot) = self.latest.as_mut() {
                snapshot.ports.retain(|p| p.id != port.id);
                snapshot.ports.push(port);
            }
        } else if crate::verdict::FAILURE_PREFIXES
            .iter()
            .chain(&["chroma: error: ", "chroma: all VMs stopped"])
            .any(|prefix| line.starts_with(prefix))
            || (line.starts_with("chroma: vm ") && line.contains(" stopped: "))
        {
            self.failures.push(line.to_owned());
        } else if line.starts_with("chroma: warn: ") {
            self.warnings.push(line.to_owned());
        } else if line.starts_with('[') {
            self.guest_line(line);
        }
    }

    /// A guest's line (`[<vm>] <text>`).
    fn guest_line(&mut self, line: &str) {
        if [
            "FAIL",
            "MISMATCH",
            "Kernel panic",
            "Oops",
            "BUG:",
            "rcu_sched detected stall",
        ]
        .iter()
        .any(|word| line.contains(word))
        {
            self.failures.push(line.to_owned());
        } else if line.starts_with("[client] netclient: transfer ") && line.ends_with(" match") {
            self.client_rounds += 1;
        } else if line.starts_with("[client] netclient: link up") {
            self.client_boots += 1;
        } else if line.starts_with("[linux] ") && line.contains("linux-guest: httpd on port 80") {
            self.linux_ready = true;
        } else if line.starts_with("[svc] netsvc: link up") {
            self.svc_ready = true;
        }
    }
}

/// What the host threads moved, shared with them.
#[derive(Debug, Default)]
struct HostTraffic {
    http_ok: AtomicU64,
    http_failed: AtomicU64,
    echo_bytes: AtomicU64,
    echo_failed: AtomicU64,
    /// Data that came back different from what it should be.
    corrupt: AtomicU64,
    stop: AtomicBool,
}

/// A copy of [`HostTraffic`]'s counters.
#[derive(Clone, Copy, Debug, Default)]
struct HostCounts {
    http_ok: u64,
    http_failed: u64,
    echo_bytes: u64,
    echo_failed: u64,
    corrupt: u64,
}

impl HostTraffic {
    fn counts(&self) -> HostCounts {
        HostCounts {
            http_ok: self.http_ok.load(Ordering::Relaxed),
            http_failed: self.http_failed.load(Ordering::Relaxed),
            echo_bytes: self.echo_bytes.load(Ordering::Relaxed),
            echo_failed: self.echo_failed.load(Ordering::Relaxed),
            corrupt: self.corrupt.load(Ordering::Relaxed),
        }
    }
}

/// GET `path` from 127.0.0.1:`port` (HTTP/1.0); the body of a 200 answer.
fn http_get(port: u16, path: &str) -> std::io::Result<Vec<u8>> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: soak\r\n\r\n").as_bytes())?;
    let mut answer = Vec::with_capacity(BLOB_BYTES + 512);
    stream.read_to_end(&mut answer)?;
    let split = answer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of the HTTP header"))?;
    let status = String::from_utf8_lossy(&answer[..split.min(64)]).into_owned();
    if !status.starts_with("HTTP/1.") || !status.contains(" 200") {
        return Err(std::io::Error::other(format!("answer {status:?}")));
    }
    Ok(answer.split_off(split + 4))
}

/// Fetches the Linux guest's blob until told to stop; each copy must equal
/// the first.
fn fetch_loop(port: u16, traffic: &HostTraffic) {
    let mut first: Option<Vec<u8>> = None;
    while !traffic.stop.load(Ordering::Relaxed) {
        match http_get(port, "/blob.bin") {
            Ok(body) if body.len() == BLOB_BYTES => {
                let reference = first.get_or_insert_with(|| body.clone());
                if *reference == body {
                    traffic.http_ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    traffic.corrupt.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(_) | Err(_) => {
                traffic.http_failed.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

/// The `round`-th echo chunk: a pattern that differs from round to round.
fn echo_pattern(round: u64) -> Vec<u8> {
    (0..ECHO_CHUNK as u64)
        .map(|i| (i.wrapping_mul(31) ^ round.wrapping_mul(0x9e37_79b9)).to_le_bytes()[0])
        .collect()
}

/// Echoes chunks through netsvc until told to stop, on one connection
/// (a new one after any error).
fn echo_loop(port: u16, traffic: &HostTraffic) {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream: Option<TcpStream> = None;
    let mut round = 0u64;
    let mut received = vec![0u8; ECHO_CHUNK];
    while !traffic.stop.load(Ordering::Relaxed) {
        let Some(connection) = stream.as_mut() else {
            match TcpStream::connect_timeout(&address, Duration::from_secs(5)).and_then(|s| {
                s.set_read_timeout(Some(Duration::from_secs(20)))?;
                s.set_write_timeout(Some(Duration::from_secs(20)))?;
                Ok(s)
            }) {
                Ok(connection) => stream = Some(connection),
                Err(_) => {
                    traffic.echo_failed.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            continue;
        };
        round += 1;
        let sent = echo_pattern(round);
        let exchanged = connection
            .write_all(&sent)
            .and_then(|()| connection.read_exact(&mut received));
        match exchanged {
            Ok(()) if received == sent => {
                traffic
                    .echo_bytes
                    .fetch_add(ECHO_CHUNK as u64, Ordering::Relaxed);
            }
            Ok(()) => {
                traffic.corrupt.fetch_add(1, Ordering::Relaxed);
                stream = None;
            }
            Err(_) => {
                // QEMU's forward accepts before the guest listens; a broken
                // connection is retried (and counted).
                traffic.echo_failed.fetch_add(1, Ordering::Relaxed);
                stream = None;
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

/// The soak's VM configuration.
fn config_text(linux: &Path, guests: &Path, reset_every: u64, client_cpu: u8) -> String {
    let kernel = linux.join("Image").display().to_string();
    let initrd = linux.join("initramfs.cpio.gz").display().to_string();
    let netsvc = guests.join("netsvc.bin").display().to_string();
    let netclient = guests.join("netclient.bin").display().to_string();
    let linux_cmdline = "console=ttyAMA0 rdinit=/init chroma.ip=10.0.2.20/24 chroma.gw=10.0.2.2 \
         chroma.httpd chroma.run=\"ping -q -i 0.5 10.0.2.15\"";
    let svc_cmdline = "net.ip=10.0.2.15/24 net.gw=10.0.2.2 net.tx=queued";
    let client_cmdline = format!(
        "net.ip=10.0.2.16/24 net.gw=10.0.2.2 net.tx=queued client.server=10.0.2.15 \
         client.ping=0 client.mib={CLIENT_MIB} client.loop={reset_every} client.reset"
    );
    format!(
        "# The soak's VMs, written by `cargo xtask soak`.\n\
         [[switch]]\nname = \"lan0\"\nuplink = true\n\n\
         [[vm]]\nname = \"linux\"\nkernel = {kernel:?}\ninitrd = {initrd:?}\nmemory = \"256M\"\nvcpus = 1\ncpus = [0]\ncmdline = {linux_cmdline:?}\n\
         [[vm.net]]\nswitch = \"lan0\"\nmac = \"52:54:00:12:34:20\"\n\n\
         [[vm]]\nname = \"svc\"\nkernel = {netsvc:?}\nmemory = \"32M\"\ncpus = [1]\ncmdline = {svc_cmdline:?}\n\
         [[vm.net]]\nswitch = \"lan0\"\nmac = \"52:54:00:12:34:15\"\n\n\
         [[vm]]\nname = \"client\"\nkernel = {netclient:?}\nmemory = \"32M\"\ncpus = [{client_cpu}]\ncmdline = {client_cmdline:?}\n\
         [[vm.net]]\nswitch = \"lan0\"\nmac = \"52:54:00:12:34:16\"\n"
    )
}

/// The running board: QEMU, its console state and the host traffic.
struct Soak {
    qemu: Child,
    console: Arc<Mutex<ConsoleState>>,
    traffic: Arc<HostTraffic>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Soak {
    fn console(&self) -> std::sync::MutexGuard<'_, ConsoleState> {
        self.console
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Fails if the run is already lost: a failure line, or QEMU gone.
    fn check_alive(&mut self) -> Result<()> {
        if let Some(line) = self.console().failures.first() {
            return Err(format!("the run failed: {line}"));
        }
        match self.qemu.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("QEMU ended ({status})")),
            Err(error) => Err(format!("waiting for QEMU: {error}")),
        }
    }

    /// Waits until `done` holds, checking the run meanwhile.
    fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Soak) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            if done(self) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("{what}: not within {} s", timeout.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Types Ctrl-A s and returns the stats lines it brings.
    fn stats(&mut self) -> Result<Snapshot> {
        let before = self.console().headers;
        let stdin = self.qemu.stdin.as_mut().ok_or("QEMU's stdin is closed")?;
        stdin
            .write_all(STATS_KEYS)
            .and_then(|()| stdin.flush())
            .map_err(|error| format!("typing Ctrl-A s: {error}"))?;
        self.wait_until("the stats lines after Ctrl-A s", STATS_TIMEOUT, |soak| {
            soak.console().headers > before
        })?;
        // The port lines follow the header at once; give them a moment.
        std::thread::sleep(Duration::from_millis(1000));
        let snapshot = self.console().latest.clone().ok_or("no stats lines")?;
        if snapshot.ports.is_empty() {
            return Err("the stats lines list no switch port".to_owned());
        }
        Ok(snapshot)
    }

    /// Stops the host threads and QEMU.
    fn stop(mut self) {
        self.traffic.stop.store(true, Ordering::Relaxed);
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Copies the console to `log` line by line, each line after the seconds
/// since `start` (to line a guest's complaint up with a reset), feeding
/// `state`.
fn read_console(
    mut console: impl std::io::Read,
    mut log: std::fs::File,
    state: Arc<Mutex<ConsoleState>>,
    start: Instant,
) {
    let mut buffer = [0u8; 8192];
    let mut partial = Vec::new();
    loop {
        let count = match console.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(count) => count,
        };
        partial.extend_from_slice(&buffer[..count]);
        while let Some(end) = partial.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\r', '\n']);
            let _ = writeln!(log, "{:9.3} {text}", start.elapsed().as_secs_f64());
            let mut state = state.lock().unwrap_or_else(|poison| poison.into_inner());
            let warnings = state.warnings.len();
            state.observe(text);
            // Show the first warnings as they come; the rest are counted.
            if state.warnings.len() > warnings && warnings < 10 {
                println!("soak: {text}");
            }
        }
    }
    if !partial.is_empty() {
        let _ = writeln!(
            log,
            "{:9.3} {}",
            start.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&partial)
        );
    }
    let _ = log.flush();
}

/// One period's row, from the stats at its start and end.
struct Row {
    period: u64,
    stats: Snapshot,
    client_rounds: u64,
    client_boots: u64,
    host: HostCounts,
    /// CPU seconds of QEMU's vCPU threads so far.
    threads: Vec<(String, f64)>,
    /// Seconds since the first row.
    elapsed: f64,
}

/// CPU seconds each of QEMU's vCPU threads (`CPU <n>/TCG`) has used, from
/// `/proc/<pid>/task/*/stat` (utime + stime, at 100 ticks a second): which
/// tells a board CPU starved by the host from one the hypervisor keeps busy.
fn vcpu_thread_seconds(pid: u32) -> Vec<(String, f64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut threads: Vec<(String, f64)> = tasks
        .flatten()
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // After the name: state is field 3, utime 14 and stime 15.
            let ticks: u64 =
                fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
            name.starts_with("CPU ")
                .then(|| (name.to_owned(), ticks as f64 / 100.0))
        })
        .collect();
    threads.sort_by(|a, b| a.0.cmp(&b.0));
    threads
}

/// `after - before` of a counter (a counter never goes down).
fn delta(after: u64, before: u64) -> u64 {
    after.saturating_sub(before)
}

/// Prints `row` against `previous`; the traffic that did not move, if any.
fn print_row(row: &Row, previous: &Row) -> Vec<String> {
    let (now, before) = (&row.stats, &previous.stats);
    let port_before = |id: &str| before.ports.iter().find(|p| p.id == id).cloned();
    let mut switch_frames = 0;
    let mut uplink = (0, 0);
    let mut drops = 0;
    let mut errors = 0;
    let mut idle = Vec::new();
    let mut ports = Vec::new();
    for port in &now.ports {
        let old = port_before(&port.id).unwrap_or_default();
        let (rx, tx) = (
            delta(port.rx_frames, old.rx_frames),
            delta(port.tx_frames, old.tx_frames),
        );
        switch_frames += tx;
        drops += delta(port.drops, old.drops);
        errors += delta(port.errors, old.errors);
        if port.owner == "uplink" {
            uplink = (rx, tx);
        }
        if rx == 0 || tx == 0 {
            idle.push(format!(
                "switch port {} ({}) rx +{rx} tx +{tx}",
                port.id, port.owner
            ));
        }
        ports.push(format!(
            "{} {} rx +{}/+{} B tx +{}/+{} B",
            port.id,
            port.owner,
            rx,
            delta(port.rx_bytes, old.rx_bytes),
            tx,
            delta(port.tx_bytes, old.tx_bytes)
        ));
    }
    let host = (
        delta(row.host.http_ok, previous.host.http_ok),
        delta(row.host.http_failed, previous.host.http_failed),
        delta(row.host.echo_bytes, previous.host.echo_bytes),
        delta(row.host.echo_failed, previous.host.echo_failed),
    );
    if host.0 == 0 {
        idle.push("host HTTP fetches from linux through the uplink".to_owned());
    }
    if host.2 == 0 {
        idle.push("host echo through svc through the uplink".to_owned());
    }
    println!(
        "soak: {:>4} {:>9}/{:<9} {:>6}/{:<6} {:>6} {:>10} {:>8}/{:<8} {:>5}/{:<5} {:>6} {:>7} {:>6}/{:<4} {:>8}/{:<4}",
        row.period,
        now.heap[0],
        now.heap[1],
        now.frames[0],
        now.frames[1],
        now.resets,
        switch_frames,
        uplink.0,
        uplink.1,
        drops,
        errors,
        delta(row.client_rounds, previous.client_rounds),
        delta(row.client_boots, previous.client_boots),
        host.0,
        host.1,
        host.2 / 1024,
        host.3
    );
    println!("soak:      ports: {}", ports.join("; "));
    let threads: Vec<String> = row
        .threads
        .iter()
        .map(|(name, seconds)| {
            let before = previous
                .threads
                .iter()
                .find(|(old, _)| old == name)
                .map_or(0.0, |(_, s)| *s);
            format!("{name} {:.1} s", seconds - before)
        })
        .collect();
    println!(
        "soak:      at {:.0} s; host CPU time of QEMU's vCPU threads this period: {}",
        row.elapsed,
        threads.join(", ")
    );
    idle
}

/// The table's heading.
fn print_heading(period: u64) {
    println!(
        "soak: each row covers {period} s; heap in bytes and frames in 4 KiB frames (used/high-water mark); \
         resets: the total; the other counters: this period's"
    );
    println!(
        "soak: {:>4} {:>19} {:>13} {:>6} {:>10} {:>17} {:>11} {:>6} {:>7} {:>11} {:>13}",
        "row",
        "heap used/peak",
        "frames u/peak",
        "resets",
        "sw frames",
        "uplink rx/tx",
        "drops/errs",
        "rounds",
        "boots",
        "http ok/err",
        "echo KiB/err"
    );
}

/// How many periods count as warm-up for a run of `periods`.
fn warmup_periods(periods: usize) -> usize {
    (periods / 4).clamp(1, MAX_WARMUP_PERIODS)
}

/// Heap growth after the warm-up that is never a trend: a high-water mark
/// also rises when allocations on both CPUs happen to coincide (the switch's
/// and the console's short-lived buffers), a few hundred bytes at a time.
const HEAP_SLACK_BYTES: u64 = 16 * 1024;

/// Judges a high-water mark sampled once per period (`marks[0]` at the
/// start of the run): after the warm-up it may rise in one period at most,
/// or by at most `slack` in all.
fn judge_high_water(what: &str, marks: &[u64], slack: u64) -> Result<String> {
    let periods = marks.len().saturating_sub(1);
    let warmup = warmup_periods(periods);
    if periods < warmup + 2 {
        return Ok(format!(
            "{what}: {} -> {} (too short a run to judge the trend)",
            marks.first().copied().unwrap_or(0),
            marks.last().copied().unwrap_or(0)
        ));
    }
    let after = &marks[warmup..];
    let rises: Vec<usize> = after
        .windows(2)
        .enumerate()
        .filter(|(_, pair)| pair[1] > pair[0])
        .map(|(index, _)| warmup + index + 1)
        .collect();
    let (settled, end) = (after[0], after[after.len() - 1]);
    let summary = format!("{what}: {settled} after warm-up (period {warmup}), {end} at the end");
    if rises.len() >= 2 && end - settled > slack {
        Err(format!(
            "{summary}: the high-water mark keeps growing (it rose in periods {rises:?}, by {} in all)",
            end - settled
        ))
    } else if rises.is_empty() {
        Ok(format!("{summary}: flat"))
    } else {
        Ok(format!(
            "{summary}: settled (rose in period(s) {rises:?}, by {} in all)",
            end - settled
        ))
    }
}

/// Runs the soak.
pub fn run(args: &SoakArgs) -> Result<ExitCode> {
    if args.minutes == 0 || args.period == 0 {
        return Err("--minutes and --period must be at least 1".to_owned());
    }
    if args.board != crate::Board::QemuVirtAarch64 {
        return Err(format!(
            "cargo xtask soak runs its arm64 Linux setup on qemu-virt-aarch64 only, not {}",
            args.board.name()
        ));
    }
    crate::images::ensure_linux_images()?;
    let images = if args.no_build {
        crate::images::Images {
            hypervisor_elf: Default::default(),
            hypervisor_bin: crate::images::board_dir(args.board).join("chroma.bin"),
            guests_dir: crate::images::guests_dir(),
        }
    } else {
        crate::images::build_all(args.board)?
    };
    let dir = workspace_root().join("build").join("soak");
    std::fs::create_dir_all(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    let config = dir.join("soak.toml");
    let linux = workspace_root().join("build").join("linux");
    std::fs::write(
        &config,
        config_text(
            &linux,
            &images.guests_dir,
            args.reset_every,
            args.client_cpu,
        ),
    )
    .map_err(|error| format!("{}: {error}", config.display()))?;
    let (run_args, bundle) =
        crate::bench::headless_bundle(&config, args.board, &images.hypervisor_bin)?;
    let http_port = crate::bench_linux::free_port()?;
    let echo_port = crate::bench_linux::free_port()?;
    let forwards = [
        parse_forward(&format!("{http_port}:10.0.2.20:80"))?,
        parse_forward(&format!("{echo_port}:10.0.2.15:7"))?,
    ];
    let mut command = qemu_command(&run_args, &bundle, Some(&forwards));
    // Named threads ("CPU 0/TCG", ...), for the per-thread CPU times.
    command.args(["-name", "chroma-soak,debug-threads=on"]);
    // The console input carries Ctrl-A s; nothing else is typed.
    command.stdin(Stdio::piped()).stdout(Stdio::piped());
    eprintln!("xtask: {}", crate::process::command_line(&command));
    let log_path = dir.join("console.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|error| format!("{}: {error}", log_path.display()))?;
    let mut qemu = command
        .spawn()
        .map_err(|error| format!("cannot start QEMU: {error}"))?;
    let stdout = qemu.stdout.take().ok_or("QEMU's stdout is not piped")?;
    let console = Arc::new(Mutex::new(ConsoleState::default()));
    let traffic = Arc::new(HostTraffic::default());
    let reader = {
        let console = console.clone();
        let start = Instant::now();
        std::thread::spawn(move || read_console(stdout, log, console, start))
    };
    println!(
        "soak: {} periods of {} s; linux (httpd, pings svc), svc (netsvc), client (netclient, \
         {CLIENT_MIB} MiB rounds, resets every {} s) on lan0 with the uplink; host: HTTP from linux \
         (127.0.0.1:{http_port}), echo through svc (127.0.0.1:{echo_port}); console: {}",
        args.minutes,
        args.period,
        args.reset_every,
        log_path.display()
    );
    let mut soak = Soak {
        qemu,
        console,
        traffic,
        threads: vec![reader],
    };
    let outcome = drive(&mut soak, args, http_port, echo_port);
    let (warnings, failures) = {
        let console = soak.console();
        (console.warnings.len(), console.failures.clone())
    };
    soak.stop();
    println!("soak: hypervisor warnings: {warnings}");
    for line in failures.iter().take(10) {
        println!("soak: failure line: {line}");
    }
    let summary = outcome?;
    println!("soak: passed: {summary}");
    Ok(ExitCode::SUCCESS)
}

/// Boots, starts the host traffic and takes a row per period; the summary,
/// or why the run failed.
fn drive(soak: &mut Soak, args: &SoakArgs, http_port: u16, echo_port: u16) -> Result<String> {
    let boot_timeout = Duration::from_secs(args.boot_timeout);
    let booted = Instant::now();
    soak.wait_until("the VMs' networks up", boot_timeout, |soak| {
        let console = soak.console();
        console.linux_ready && console.svc_ready && console.client_boots > 0
    })?;
    println!(
        "soak: VMs up after {:.0} s; starting the host traffic",
        booted.elapsed().as_secs_f64()
    );
    for (port, body) in [
        (http_port, fetch_loop as fn(u16, &HostTraffic)),
        (echo_port, echo_loop),
    ] {
        let traffic = soak.traffic.clone();
        soak.threads
            .push(std::thread::spawn(move || body(port, &traffic)));
    }
    soak.wait_until("the host traffic flowing", boot_timeout, |soak| {
        let counts = soak.traffic.counts();
        counts.http_ok > 0 && counts.echo_bytes > 0
    })?;
    let clock = Instant::now();
    let row = |soak: &mut Soak, period: u64| -> Result<Row> {
        let stats = soak.stats()?;
        let threads = vcpu_thread_seconds(soak.qemu.id());
        let console = soak.console();
        Ok(Row {
            period,
            stats,
            client_rounds: console.client_rounds,
            client_boots: console.client_boots,
            host: soak.traffic.counts(),
            threads,
            elapsed: clock.elapsed().as_secs_f64(),
        })
    };
    let first = row(soak, 0)?;
    print_heading(args.period);
    println!(
        "soak: start: heap {}/{} of {} bytes, frames {}/{} of {}",
        first.stats.heap[0],
        first.stats.heap[1],
        first.stats.heap[2],
        first.stats.frames[0],
        first.stats.frames[1],
        first.stats.frames[2]
    );
    let start = Instant::now();
    let mut rows = vec![first];
    for period in 1..=args.minutes {
        let end = start + Duration::from_secs(period * args.period);
        while Instant::now() < end {
            soak.check_alive()?;
            std::thread::sleep(Duration::from_millis(250));
        }
        let next = row(soak, period)?;
        let idle = print_row(&next, rows.last().expect("the first row"));
        let corrupt = next.host.corrupt;
        if next.stats.vms_running != next.stats.vms_total {
            return Err(format!(
                "period {period}: only {} of {} VMs are running",
                next.stats.vms_running, next.stats.vms_total
            ));
        }
        rows.push(next);
        if corrupt > 0 {
            return Err(format!(
                "period {period}: {corrupt} host transfer(s) came back corrupted"
            ));
        }
        if !idle.is_empty() {
            return Err(format!(
                "period {period}: traffic stopped: {}",
                idle.join(", ")
            ));
        }
    }
    summarize(&rows, args)
}

/// The end-of-run verdict and figures.
fn summarize(rows: &[Row], args: &SoakArgs) -> Result<String> {
    let first = &rows[0];
    let last = &rows[rows.len() - 1];
    let at = |period: usize| rows.get(period).unwrap_or(last);
    let mut shown = vec![1, 10, rows.len() - 1];
    shown.retain(|&period| period < rows.len());
    shown.dedup();
    for period in shown {
        let row = at(period);
        println!(
            "soak: at period {}: heap {}/{} bytes, frames {}/{} (used/high-water mark)",
            row.period,
            row.stats.heap[0],
            row.stats.heap[1],
            row.stats.frames[0],
            row.stats.frames[1]
        );
    }
    let heap = judge_high_water(
        "heap high-water mark",
        &rows.iter().map(|row| row.stats.heap[1]).collect::<Vec<_>>(),
        HEAP_SLACK_BYTES,
    );
    let frames = judge_high_water(
        "frame high-water mark",
        &rows
            .iter()
            .map(|row| row.stats.frames[1])
            .collect::<Vec<_>>(),
        0,
    );
    let frames_total: u64 = last
        .stats
        .ports
        .iter()
        .map(|port| {
            let before = first
                .stats
                .ports
                .iter()
                .find(|p| p.id == port.id)
                .cloned()
                .unwrap_or_default();
            delta(port.tx_frames, before.tx_frames)
        })
        .sum();
    let resets = delta(last.stats.resets, first.stats.resets);
    let restarts = delta(last.client_boots, first.client_boots);
    let drops: u64 = last.stats.ports.iter().map(|port| port.drops).sum();
    let errors: u64 = last.stats.ports.iter().map(|port| port.errors).sum();
    let totals = format!(
        "{} periods: {frames_total} frames through the switch, {drops} dropped and {errors} errors \
         (since boot), {resets} VM reset(s) and {restarts} netclient restart(s), {} netclient rounds, \
         {} host fetches ({} failed), {} KiB echoed ({} echo errors)",
        rows.len() - 1,
        delta(last.client_rounds, first.client_rounds),
        delta(last.host.http_ok, first.host.http_ok),
        delta(last.host.http_failed, first.host.http_failed),
        delta(last.host.echo_bytes, first.host.echo_bytes) / 1024,
        delta(last.host.echo_failed, first.host.echo_failed),
    );
    println!("soak: totals: {totals}");
    let heap = heap?;
    let frames = frames?;
    println!("soak: {heap}");
    println!("soak: {frames}");
    // netclient resets every reset_every seconds plus its boot: a run much
    // longer than that must have seen one.
    let span = (rows.len() as u64 - 1) * args.period;
    if span >= args.reset_every + 120 && resets == 0 {
        return Err(format!(
            "no VM was reset in {span} s (netclient resets every {} s)",
            args.reset_every
        ));
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "chroma: stats heap=123904/204800/16777216 frames=86272/86300/261000 resets=2 vms=3/3";
    const PORT: &str =
        "chroma: stats port=lan0.3 owner=uplink rx=10/1500 tx=20/3000 drops=1 errors=0 spoofed=0";

    #[test]
    fn reads_the_stats_lines() {
        let snapshot = parse_header(HEADER).unwrap();
        assert_eq!(snapshot.heap, [123904, 204800, 16777216]);
        assert_eq!(snapshot.frames, [86272, 86300, 261000]);
        assert_eq!(
            (snapshot.resets, snapshot.vms_running, snapshot.vms_total),
            (2, 3, 3)
        );
        let port = parse_port(PORT).unwrap();
        assert_eq!(port.id, "lan0.3");
        assert_eq!(port.owner, "uplink");
        assert_eq!(
            (port.rx_frames, port.rx_bytes, port.tx_frames, port.tx_bytes),
            (10, 1500, 20, 3000)
        );
        assert_eq!(port.drops, 1);
        assert!(parse_header("chroma: stats heap=1/2 frames=1/2/3 resets=0 vms=1/1").is_none());
        assert!(
            parse_header("[vm] chroma: stats heap=1/2/3 frames=1/2/3 resets=0 vms=1/1").is_none()
        );
        assert!(parse_port("chroma: stats port=lan0.0 rx=1/2 tx=x/2").is_none());
    }

    #[test]
    fn the_console_state_collects_stats_and_failures() {
        let mut state = ConsoleState::default();
        state.observe(HEADER);
        state.observe("[client] netclient: transfer 4194304 bytes fnv64=1 server fnv64=1 match");
        state.observe(PORT);
        state.observe(&PORT.replace("rx=10/", "rx=11/"));
        assert_eq!(state.headers, 1);
        let latest = state.latest.clone().unwrap();
        assert_eq!(
            latest.ports.len(),
            1,
            "a port's later line replaces its earlier one"
        );
        assert_eq!(latest.ports[0].rx_frames, 11);
        assert_eq!(state.client_rounds, 1);
        assert!(state.failures.is_empty());
        state.observe("chroma: warn: vm x: something");
        assert_eq!(state.warnings.len(), 1);
        for line in [
            "chroma: vm client stopped: powered off",
            "chroma: PANIC at somewhere",
            "chroma: error: broken",
            "[client] netclient: FAIL transfer stalled",
            "chroma: all VMs stopped (2 clean, 1 failed)",
        ] {
            let before = state.failures.len();
            state.observe(line);
            assert_eq!(state.failures.len(), before + 1, "{line}");
        }
        // A guest cannot fake a hypervisor line: its lines start with "[vm] ".
        let before = state.failures.len();
        state.observe("[linux] chroma: stats heap=1/2/3 frames=1/2/3 resets=0 vms=1/1");
        assert_eq!((state.failures.len(), state.headers), (before, 1));
    }

    #[test]
    fn a_high_water_mark_may_settle_but_not_keep_growing() {
        // Growth during the warm-up does not count; one later step may.
        let flat = judge_high_water("h", &[1, 5, 9, 9, 9, 9, 9, 9, 9, 9], 0).unwrap();
        assert!(flat.ends_with("flat"), "{flat}");
        assert!(judge_high_water("h", &[1, 5, 9, 9, 9, 12, 12, 12, 12, 12], 0).is_ok());
        // Two later steps are a trend.
        let error = judge_high_water("h", &[1, 5, 9, 9, 10, 10, 11, 11, 11, 11], 0).unwrap_err();
        assert!(error.contains("keeps growing"), "{error}");
        assert!(error.contains("[4, 6]"), "{error}");
        assert!(judge_high_water("h", &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0).is_err());
        // ... unless all of them stay within the slack.
        assert!(judge_high_water("h", &[1, 5, 9, 9, 10, 10, 11, 11, 11, 11], 2).is_ok());
        assert!(judge_high_water("h", &[1, 5, 9, 9, 10, 10, 11, 11, 12, 12], 2).is_err());
        // Too short to judge: never a failure.
        assert!(judge_high_water("h", &[1, 2], 0)
            .unwrap()
            .contains("too short"));
        assert_eq!(warmup_periods(60), 3);
        assert_eq!(warmup_periods(2), 1);
    }

    #[test]
    fn reads_thread_times_from_proc() {
        // This test process has no QEMU vCPU threads; a missing process has none either.
        assert!(vcpu_thread_seconds(std::process::id()).is_empty());
        assert!(vcpu_thread_seconds(u32::MAX).is_empty());
    }

    #[test]
    fn echo_rounds_differ() {
        assert_eq!(echo_pattern(1).len(), ECHO_CHUNK);
        assert_ne!(echo_pattern(1), echo_pattern(2));
    }

    #[test]
    fn the_configuration_is_valid() {
        let dir = std::env::temp_dir().join(format!("chroma-soak-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["Image", "initramfs.cpio.gz", "netsvc.bin", "netclient.bin"] {
            // Minimal arm64 Image headers: the parser checks the magic.
            let mut image = vec![0u8; 4096];
            image[56..60].copy_from_slice(b"ARMd");
            std::fs::write(dir.join(name), image).unwrap();
        }
        let text = config_text(&dir, &dir, 150, 1);
        assert!(
            text.contains("cpus = [1]\ncmdline = \"net.ip=10.0.2.16"),
            "{text}"
        );
        assert!(text.contains("client.loop=150 client.reset"), "{text}");
        assert!(
            text.contains(r#"chroma.run=\"ping -q -i 0.5 10.0.2.15\""#),
            "{text}"
        );
        let path = dir.join("soak.toml");
        std::fs::write(&path, &text).unwrap();
        let machine = crate::config::MachineFacts {
            physical_cpus: 2,
            ram_bytes: 1 << 30,
            board: crate::Board::QemuVirtAarch64,
        };
        let checked = crate::config::manifest_and_uplink(&path, &machine, &Default::default());
        let _ = std::fs::remove_dir_all(&dir);
        let (_, uplink) = checked.unwrap();
        assert!(uplink);
    }
}
