//! `cargo xtask bench`: image size and time to a guest's first line, chroma against plain QEMU.
//!
//! Times under an emulator on a shared machine are noisy, so the two setups
//! run interleaved in one invocation and the figure that matters is the ratio
//! of their medians.
//!
//! Every figure is made per board the same way: on qemu-virt-aarch64 with the
//! AArch64 guests and arm64 Linux on `qemu-system-aarch64 -cpu cortex-a57`,
//! on qemu-virt-arm with the 32-bit guests and armhf Linux on
//! `qemu-system-arm -cpu cortex-a15`; each plain-QEMU peer runs the same
//! guest on the same QEMU binary and CPU model without the hypervisor
//! ([`plain_machine`]). On a Raspberry Pi board (rpi4: QEMU 10's fixed
//! `raspi4b`) chroma's figures are the same; the only honest peer is the
//! same Linux kernel on the plain Pi machine with the same device tree
//! ([`crate::bench_linux::plain_command`]): the test guests drive QEMU
//! `virt`'s devices, which the Pi's machine lacks, and it emulates no NIC,
//! so those figures say that they have no peer ([`Peers`]).
//!
//! Every figure printed is also recorded ([`crate::bench_results`]) and
//! written to `build/bench/<board>/results.json` with SVG plots beside it
//! ([`crate::bench_plots`]); `--compare OLD.json [NEW.json]` sets two such
//! files side by side.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

use crate::bench_results::{names, Better, Figure, Meta, Results};
use crate::config::{manifest, ManifestOptions};
use crate::images::build_all;
use crate::qemu::{qemu_command, write_bundle, RunArgs};
use crate::testing::host_cargo;
use crate::{workspace_root, Board, Result};

/// Options of `cargo xtask bench`.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Board to measure.
    #[arg(long, value_enum, default_value_t = Board::QemuVirtAarch64)]
    pub board: Board,
    /// Boots of each setup (interleaved).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Give up on a boot after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Compare with an earlier run's results.json: `--compare OLD.json`
    /// runs the bench and compares its results with OLD's; `--compare
    /// OLD.json NEW.json` compares two files and runs nothing. Exits 1 when
    /// a figure got worse by more than --threshold.
    #[arg(long, num_args = 1..=2, value_names = ["OLD", "NEW"])]
    pub compare: Vec<PathBuf>,
    /// The change, in percent, in the worse direction beyond which
    /// `--compare` marks a figure a regression.
    #[arg(long, default_value_t = 10.0)]
    pub threshold: f64,
    /// Run only this part of the bench (every part when not given).
    #[arg(long, value_enum)]
    pub only: Option<Section>,
}

/// A part of the bench (`--only`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Section {
    /// Image sizes and the time to the probe guest's first line, with the
    /// hypervisor's own start and each VM's load.
    Boot,
    /// The bare-metal VM-to-VM transfers.
    Net,
    /// The device model's host benchmark (ns/frame).
    Model,
    /// Linux: boot to init and the VM-to-VM TCP transfer.
    Linux,
}

impl BenchArgs {
    /// Whether `section` runs.
    fn runs_section(&self, section: Section) -> bool {
        self.only.is_none_or(|only| only == section)
    }
}

/// Builds, measures and prints, writes the results and plots, and
/// compares with `--compare`'s files.
pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    if !(args.threshold.is_finite() && args.threshold >= 0.0) {
        return Err(format!(
            "--threshold {}: a percentage of 0 or more",
            args.threshold
        ));
    }
    // Read the old file first: a bad one fails before a long run.
    let old = match args.compare.as_slice() {
        [] => None,
        [old] => Some(Results::load(old)?),
        [old, new] => {
            let (old, new) = (Results::load(old)?, Results::load(new)?);
            return Ok(print_comparison(&old, &new, args.threshold));
        }
        more => return Err(format!("--compare takes 1 or 2 files, not {}", more.len())),
    };
    let mut results = Results::new(Meta::now(args.board, args.runs));
    let measured = measure(args, &mut results);
    if let Err(error) = &measured {
        results.error = Some(error.clone());
    }
    // Nothing measured (the build failed): keep the last run's files.
    let written = if results.figures.is_empty() {
        Ok(())
    } else {
        write_results(&results, args.board)
    };
    measured?;
    written?;
    Ok(match old {
        Some(old) => print_comparison(&old, &results, args.threshold),
        None => ExitCode::SUCCESS,
    })
}

/// Turns transparent huge pages off for every QEMU the bench starts, chroma's
/// and the peers' alike (the flag is inherited through fork and exec), and
/// says so. QEMU asks for huge pages for guest RAM and its code buffer, and
/// the first touch of a 2 MiB region then costs 0.2 ms or, while the host
/// compacts memory, about 5 ms: a first line under chroma touches 12 such
/// regions where plain QEMU touches 3, which made its rounds bimodal
/// (64–109 ms against 66–76 with huge pages off; plain QEMU 33–52 against
/// 35–38). Hardware has no such cost; a failure only leaves the noise.
fn without_huge_pages() -> String {
    match rustix::thread::disable_transparent_huge_pages(true) {
        Ok(()) => "host: transparent huge pages off for the bench's QEMUs (both sides)".to_owned(),
        Err(error) => format!(
            "host: cannot turn transparent huge pages off ({error}): first-touch stalls may add noise"
        ),
    }
}

/// Writes results.json and the plots into the board's directory and says where.
fn write_results(results: &Results, board: Board) -> Result<()> {
    let dir = crate::bench_results::results_dir(board);
    let path = dir.join("results.json");
    results.save(&path)?;
    let plots = crate::bench_plots::draw_all(results, &dir)?;
    println!(
        "results: {} ({} figures); plots: {}",
        path.display(),
        results.figures.len(),
        plots
            .iter()
            .map(|plot| plot.file_name().unwrap_or_default().to_string_lossy())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Prints `old` and `new` side by side; fails when a figure got worse
/// beyond `threshold` %.
fn print_comparison(old: &Results, new: &Results, threshold: f64) -> ExitCode {
    let comparison = crate::bench_results::compare(old, new, threshold);
    println!("{comparison}");
    if comparison.regression_count() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Builds, measures and prints, recording every figure in `results`.
fn measure(args: &BenchArgs, results: &mut Results) -> Result<()> {
    let peers = Peers::of(args.board);
    if !args.board.is_qemu_virt() {
        // The Pi's machine and its device tree, as `cargo xtask run` checks them.
        crate::emulator::require(
            10,
            0,
            &format!(
                "the {} machine (--board {})",
                machine_name(args.board),
                args.board.name()
            ),
        )?;
        crate::images::ensure_rpi_dtbs()?;
    }
    let images = build_all(args.board)?;
    println!("{}", board_line(args.board));
    println!("{}", without_huge_pages());
    if args.runs_section(Section::Boot) {
        first_line(args, &images, &peers, results)?;
    }
    if args.runs_section(Section::Net) {
        crate::bench_net::run(&images, args.board, &peers, results)?;
    }
    if !args.runs_section(Section::Model) {
    } else if args.board != Board::QemuVirtAarch64 {
        println!("{}", DEVICE_MODEL_SKIPPED);
    } else if workspace_root()
        .join("hypervisor/virtio/benches/net.rs")
        .exists()
    {
        let mut bench = host_cargo();
        bench.args(["bench", "-p", "chroma-virtio", "--bench", "net"]);
        // Every function of both sides on a 64-byte boundary, in a target
        // directory of its own: otherwise an unrelated change to chroma's
        // code moves the peer's hot loop (vm-memory's region lookup) across
        // a fetch boundary, and the peer ran 118 or 131 ns/frame at 64 B
        // for the same instructions depending on where it landed.
        bench.env("RUSTFLAGS", DEVICE_MODEL_RUSTFLAGS).env(
            "CARGO_TARGET_DIR",
            workspace_root().join("target").join("bench-aligned"),
        );
        for row in run_device_model(bench)? {
            results.push(row.figure());
        }
        crate::bench_oracle::run(results)?;
    } else {
        println!("virtio net bench: not present yet (hypervisor/virtio/benches/net.rs)");
    }
    if args.runs_section(Section::Linux) {
        crate::bench_linux::run(args, &images, &peers, results)?;
    }
    Ok(())
}

/// Image sizes and the time to the probe guest's first line, under chroma
/// (with the hypervisor's `boot-time` lines: its own start and the probe's
/// load) and on plain QEMU.
fn first_line(
    args: &BenchArgs,
    images: &crate::images::Images,
    peers: &Peers,
    results: &mut Results,
) -> Result<()> {
    let probe = images.guests_dir.join("probe.bin");
    let bench_dir = workspace_root().join("build").join("bench");
    std::fs::create_dir_all(&bench_dir)
        .map_err(|error| format!("{}: {error}", bench_dir.display()))?;
    let config = bench_dir.join("bench-probe.toml");
    let text = format!(
        "# One probe VM, written by `cargo xtask bench`.\n[[vm]]\nname = \"probe\"\nkernel = {:?}\nmemory = \"64M\"\nvcpus = 1\n",
        probe.display().to_string()
    );
    std::fs::write(&config, text).map_err(|error| format!("{}: {error}", config.display()))?;

    let (run_args, bundle) = headless_bundle(&config, args.board, &images.hypervisor_bin)?;

    let (hypervisor_size, bundle_size) = (file_size(&images.hypervisor_bin)?, file_size(&bundle)?);
    println!("image size: chroma.bin {hypervisor_size} bytes");
    println!("image size: bundle with one VM manifest {bundle_size} bytes");
    for (name, size) in [
        (names::IMAGE_CHROMA_BIN, hypervisor_size),
        (names::IMAGE_BUNDLE, bundle_size),
    ] {
        results.push(Figure::new(name, size as f64, "bytes", Better::Lower));
    }

    let timeout = Duration::from_secs(args.timeout);
    let mut under_chroma = Vec::new();
    let mut plain = Vec::new();
    let mut boots = Vec::new();
    for round in 1..=args.runs {
        let chroma =
            time_to_first_line(qemu_command(&run_args, &bundle, None), "[probe] ", timeout)?;
        let boot = BootTimes::from_lines(&chroma.before)?.on_the_wall_clock(&chroma);
        let bare = match peers.test_guests {
            Ok(()) => {
                Some(time_to_first_line(plain_qemu(args.board, &probe), "", timeout)?.elapsed)
            }
            Err(_) => None,
        };
        println!(
            "round {round}: first guest line after {:.1} ms under chroma{} ({})",
            millis(chroma.elapsed),
            bare.map_or_else(String::new, |bare| format!(
                ", {:.1} ms on plain QEMU",
                millis(bare)
            )),
            boot.describe()
        );
        under_chroma.push(chroma.elapsed);
        plain.extend(bare);
        boots.push(boot);
    }
    let chroma_median = median(&mut under_chroma);
    let plain_median = median(&mut plain);
    println!(
        "first guest line, median of {}: {:.1} ms under chroma, {}",
        args.runs,
        millis(chroma_median),
        match &peers.test_guests {
            Ok(()) => format!(
                "{:.1} ms on plain QEMU, ratio {:.2}",
                millis(plain_median),
                chroma_median.as_secs_f64() / plain_median.as_secs_f64()
            ),
            Err(why) => format!("{why}; the Linux boot below has a peer for the first line"),
        }
    );
    let mut first_line = Figure::new(
        names::FIRST_LINE,
        millis(chroma_median),
        "ms",
        Better::Lower,
    )
    .rounds(args.runs);
    if peers.test_guests.is_ok() {
        first_line = first_line.peer(PLAIN_QEMU, millis(plain_median));
    }
    results.push(first_line);
    let phases = BootTimes::median_figures(&boots);
    println!(
        "chroma's own start, median of {}: {}",
        args.runs,
        phases
            .iter()
            .map(|(name, ms)| format!("{name} {ms:.1} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (name, ms) in phases {
        results.push(Figure::new(name, ms, "ms", Better::Lower).rounds(args.runs));
    }
    Ok(())
}

/// How the device model's benchmark is compiled (see [`run`]): functions
/// aligned to 64 bytes (`2^6`), so that neither side's speed depends on
/// where the linker happened to place its hot code.
const DEVICE_MODEL_RUSTFLAGS: &str = "-C llvm-args=-align-all-functions=6";

/// The peer of every QEMU figure, in results.json and the plots.
pub(crate) const PLAIN_QEMU: &str = "plain QEMU";

/// Runs the device model's host benchmark (`command`), printing its lines
/// as they come, and returns the rows of its table.
fn run_device_model(mut command: Command) -> Result<Vec<DeviceModelRow>> {
    const WHAT: &str = "cargo bench -p chroma-virtio --bench net";
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|error| format!("{WHAT}: cannot start {:?}: {error}", command.get_program()))?;
    let mut rows = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in console_lines(stdout) {
            println!("{line}");
            rows.extend(DeviceModelRow::parse(&line));
        }
    }
    let status = child.wait().map_err(|error| format!("{WHAT}: {error}"))?;
    if !status.success() {
        return Err(format!(
            "{WHAT} failed ({})",
            crate::process::describe_status(status)
        ));
    }
    Ok(rows)
}

/// One row of the device model's table: `bytes batch chroma virtio-queue
/// copy vq/chroma chroma/copy (driver side alone: ...; chroma on packed
/// rings: ...)`, in ns/frame.
#[derive(Clone, Copy, Debug, PartialEq)]
struct DeviceModelRow {
    frame_bytes: u64,
    batch: u64,
    chroma: f64,
    virtio_queue: f64,
    copy: f64,
    /// chroma's path on packed rings, if the row has it.
    packed: Option<f64>,
}

/// What precedes the packed-ring figure in a device model row.
const PACKED_WORDS: &str = "chroma on packed rings:";

impl DeviceModelRow {
    /// The row on `line`, none when it is not one (the title, the header).
    fn parse(line: &str) -> Option<Self> {
        let mut words = line.split_whitespace();
        let frame_bytes = words.next()?.parse().ok()?;
        let batch = words.next()?.parse().ok()?;
        let mut next_float = || words.next()?.parse::<f64>().ok();
        let (chroma, virtio_queue, copy) = (next_float()?, next_float()?, next_float()?);
        let packed = line.split_once(PACKED_WORDS).and_then(|(_, rest)| {
            rest.trim_start()
                .split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .next()?
                .parse()
                .ok()
        });
        Some(DeviceModelRow {
            frame_bytes,
            batch,
            chroma,
            virtio_queue,
            copy,
            packed,
        })
    }

    /// The row as a figure: chroma's ns/frame beside virtio-queue's and the copy's.
    fn figure(&self) -> Figure {
        let figure = Figure::new(
            names::device_model(self.frame_bytes, self.batch),
            self.chroma,
            "ns/frame",
            Better::Lower,
        )
        .peer("virtio-queue", self.virtio_queue)
        .peer("copy", self.copy);
        let figure = match self.packed {
            Some(packed) => figure.peer("chroma-packed", packed),
            None => figure,
        };
        figure
            .param("frame_bytes", self.frame_bytes)
            .param("batch", self.batch)
    }
}

/// Which plain-QEMU peers a board's figures have; each `Err` says why not,
/// as the bench prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Peers {
    /// A peer for the test guests (probe, netsvc, netclient): QEMU `virt`
    /// without the hypervisor.
    pub test_guests: Result<(), String>,
    /// A peer with a NIC for the VM-to-VM transfers: two plain QEMUs joined
    /// by a socket netdev.
    pub nic: Result<(), String>,
}

impl Peers {
    /// The peers of `board`: all of them on QEMU `virt`; on a Pi board only
    /// the Linux boot's (the same kernel on the plain Pi machine).
    pub fn of(board: Board) -> Self {
        let machine = machine_name(board);
        Peers {
            test_guests: if board.is_qemu_virt() {
                Ok(())
            } else {
                Err(format!(
                    "no plain-QEMU peer: the test guest drives QEMU virt's PL011, which {machine} lacks"
                ))
            },
            nic: if board.has_uplink_nic() {
                Ok(())
            } else {
                Err(format!("no peer: {machine} emulates no NIC"))
            },
        }
    }
}

/// The QEMU machine (`-M`) chroma boots on `board`.
pub(crate) fn machine_name(board: Board) -> &'static str {
    board.pi().map_or("virt", |pi| pi.qemu_machine)
}

/// The machine of chroma's benchmark boots on `board`, for the figures' labels.
pub(crate) fn machine_words(board: Board) -> String {
    board.pi().map_or_else(
        || "-smp 2, GICv2".to_owned(),
        |pi| format!("{}: {}", pi.qemu_machine, pi.description),
    )
}

/// What the device model's figures (a host program, `cargo bench -p
/// chroma-virtio --bench net`) say on a board other than qemu-virt-aarch64.
const DEVICE_MODEL_SKIPPED: &str =
    "virtio net bench (device model ns/frame): not run for this board: it \
     measures chroma-virtio on the host, the same code and figures whatever the board \
     (`cargo xtask bench` on qemu-virt-aarch64 prints them)";

/// The first line of the bench's output: what runs chroma and what runs the peers.
fn board_line(board: Board) -> String {
    let guests = match board {
        Board::QemuVirtAarch64 | Board::Rpi3 | Board::Rpi4 => "AArch64",
        Board::QemuVirtArm => "AArch32",
    };
    if board.is_qemu_virt() {
        format!(
            "board {}: chroma on {} -M virt,virtualization=on -cpu {} ({guests} guests); \
             plain-QEMU peers on the same binary and CPU model, no hypervisor",
            board.name(),
            board.qemu_name(),
            board.default_cpu(),
        )
    } else {
        let machine = machine_name(board);
        format!(
            "board {}: chroma on {} -M {machine} with the board's device tree ({}, {guests} guests); \
             plain-QEMU peer only for the Linux boot: the same kernel on plain {machine} with the \
             same device tree; the test guests and the VM-to-VM transfers have none ({machine} \
             has no QEMU virt PL011 and emulates no NIC)",
            board.name(),
            board.qemu_name(),
            machine_words(board),
        )
    }
}

/// QEMU's `virt` machine for a plain-QEMU peer on `board` (no hypervisor):
/// the QEMU binary, CPU model and GIC of chroma's runs on that board
/// ([`crate::emulator::command_for`], [`Board::default_cpu`]), `smp` CPUs
/// and `memory` of RAM; the caller adds the NIC, console and image.
pub(crate) fn plain_machine(board: Board, smp: u32, memory: &str) -> Command {
    let mut command = crate::emulator::command_for(board);
    command.args([
        "-M",
        "virt,gic-version=2",
        "-cpu",
        board.default_cpu(),
        "-smp",
        &smp.to_string(),
        "-m",
        memory,
    ]);
    command
}

/// The probe guest alone on QEMU's `virt` machine (no hypervisor), on the
/// same QEMU binary as chroma's runs, with no NIC as chroma's runs.
fn plain_qemu(board: Board, probe: &Path) -> Command {
    let mut command = plain_machine(board, 2, "128M");
    command
        .args(["-nic", "none"])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .arg("-kernel")
        .arg(probe)
        .stdin(Stdio::null());
    command
}

/// What [`time_to_first_line`] saw: when the line came and the lines before it.
#[derive(Clone, Debug)]
struct FirstLine {
    /// From starting the command to the line.
    elapsed: Duration,
    /// The output's lines before it (the hypervisor's, under chroma).
    before: Vec<String>,
    /// When each line of `before` came, from starting the command.
    before_at: Vec<Duration>,
}

/// Starts `command` and returns the time until a stdout line starting with
/// `prefix` (and not empty) appears, with the lines before it; QEMU is
/// killed afterwards.
fn time_to_first_line(mut command: Command, prefix: &str, timeout: Duration) -> Result<FirstLine> {
    command.stdout(Stdio::piped()).stderr(Stdio::null());
    let start = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|error| format!("cannot start QEMU: {error}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (sender, receiver) = mpsc::channel();
    let prefix = prefix.to_owned();
    std::thread::spawn(move || {
        let (mut before, mut before_at) = (Vec::new(), Vec::new());
        for line in console_lines(stdout) {
            let at = start.elapsed();
            let line = line.trim_end_matches('\r');
            if !line.trim().is_empty() && line.starts_with(&prefix) {
                let _ = sender.send(FirstLine {
                    elapsed: at,
                    before,
                    before_at,
                });
                break;
            }
            before.push(line.to_owned());
            before_at.push(at);
        }
    });
    let result = receiver.recv_timeout(timeout);
    let _ = child.kill();
    let _ = child.wait();
    result.map_err(|_| {
        format!(
            "no guest line within {} s from {:?}",
            timeout.as_secs(),
            command.get_program()
        )
    })
}

/// The hypervisor's `boot-time` lines of one boot (hypervisor/src/boot_time.rs):
/// the counter at entry, its own start, each VM's load and the end of
/// start-up, in microseconds since entry; and, from when the lines came
/// ([`BootTimes::on_the_wall_clock`]), what lies outside them: QEMU's own
/// start before the entry and the guest's way to its first line after
/// the ready line.
#[derive(Clone, Debug, Default, PartialEq)]
struct BootTimes {
    /// The counter at entry, ticks.
    entry_ticks: u64,
    /// The counter's frequency, Hz.
    hz: u64,
    /// Entry to the first VM's load.
    start_us: u64,
    /// Each VM's creation, in the order they were built.
    loads_us: Vec<(String, u64)>,
    /// Entry to the guests' start (secondaries up).
    ready_us: u64,
    /// Which of the lines given to [`BootTimes::from_lines`] was the ready line.
    ready_line: usize,
    /// Wall clock: the command's start to the hypervisor's entry (QEMU's
    /// own start-up and its loader), when known.
    qemu_us: Option<u64>,
    /// Wall clock: the ready line to the first guest line, when known.
    guest_us: Option<u64>,
}

/// What the hypervisor's log lines start with.
const LOG_PREFIX: &str = "chroma: ";
/// The first word of a `boot-time` line.
const BOOT_TIME_WORD: &str = "boot-time";

impl BootTimes {
    /// The boot-time lines among `lines` (other lines are skipped). A
    /// `boot-time` line that does not parse, a missing entry, start or
    /// ready line, or a repeated one is an error: the figures would be wrong.
    fn from_lines(lines: &[String]) -> Result<Self> {
        let (mut entry, mut start, mut ready) = (None, None, None);
        let mut loads_us = Vec::new();
        for (index, line) in lines.iter().enumerate() {
            let Some(words) = line
                .trim_end()
                .strip_prefix(LOG_PREFIX)
                .and_then(|rest| rest.strip_prefix(BOOT_TIME_WORD))
                .and_then(|rest| rest.strip_prefix(' '))
            else {
                continue;
            };
            let bad = || format!("a boot-time line that does not parse: {line:?}");
            let pairs = words
                .split(' ')
                .map(|word| {
                    word.split_once('=')
                        .filter(|(key, value)| !key.is_empty() && !value.is_empty())
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(bad)?;
            let number = |value: &str| value.parse::<u64>().map_err(|_| bad());
            let slot = match pairs.as_slice() {
                [("entry", ticks), ("hz", hz)] => {
                    let hz = number(hz)?;
                    if hz == 0 {
                        return Err(bad());
                    }
                    entry.replace((number(ticks)?, hz)).map(|_| "entry")
                }
                [("start_us", us)] => start.replace(number(us)?).map(|_| "start_us"),
                [("vm", name), ("load_us", us)] => {
                    loads_us.push(((*name).to_owned(), number(us)?));
                    None
                }
                [("ready_us", us)] => ready.replace((number(us)?, index)).map(|_| "ready_us"),
                _ => return Err(bad()),
            };
            if let Some(key) = slot {
                return Err(format!("boot-time {key} printed twice: {line:?}"));
            }
        }
        let missing = |what: &str| format!("no boot-time {what} line from the hypervisor");
        let (entry_ticks, hz) = entry.ok_or_else(|| missing("entry"))?;
        let (ready_us, ready_line) = ready.ok_or_else(|| missing("ready_us"))?;
        Ok(BootTimes {
            entry_ticks,
            hz,
            start_us: start.ok_or_else(|| missing("start_us"))?,
            loads_us,
            ready_us,
            ready_line,
            qemu_us: None,
            guest_us: None,
        })
    }

    /// Adds what the counter does not see, from when `seen`'s lines came:
    /// the counter starts when QEMU starts the machine, after QEMU's own
    /// start-up (tens of ms: its libraries, the machine, the loader), so
    /// the entry on the wall clock is the ready line's arrival less
    /// `ready_us` (the counter keeps wall-clock time without `-icount`);
    /// and the ready line to the guest's first line. `self` must come from
    /// `seen.before`.
    fn on_the_wall_clock(mut self, seen: &FirstLine) -> Self {
        if let Some(&ready_at) = seen.before_at.get(self.ready_line) {
            let ready_at_us = u64::try_from(ready_at.as_micros()).unwrap_or(u64::MAX);
            self.qemu_us = ready_at_us.checked_sub(self.ready_us);
            self.guest_us = seen
                .elapsed
                .checked_sub(ready_at)
                .map(|after| u64::try_from(after.as_micros()).unwrap_or(u64::MAX));
        }
        self
    }

    /// The counter at entry in ms (QEMU starts it near 0 when the machine
    /// starts running, after QEMU's own start-up: see [`Self::qemu_us`]).
    fn entry_ms(&self) -> f64 {
        self.entry_ticks as f64 * 1000.0 / self.hz as f64
    }

    /// The phases as (figure name, ms): entry, start, each load, ready.
    fn figures(&self) -> Vec<(String, f64)> {
        let ms = |us: u64| us as f64 / 1000.0;
        let mut figures = vec![
            (names::BOOT_ENTRY.to_owned(), self.entry_ms()),
            (names::BOOT_CHROMA_START.to_owned(), ms(self.start_us)),
        ];
        figures.extend(
            self.loads_us
                .iter()
                .map(|(vm, us)| (names::boot_vm_load(vm), ms(*us))),
        );
        figures.push((names::BOOT_READY.to_owned(), ms(self.ready_us)));
        figures.extend(self.qemu_us.map(|us| (names::BOOT_QEMU.to_owned(), ms(us))));
        figures.extend(
            self.guest_us
                .map(|us| (names::BOOT_GUEST.to_owned(), ms(us))),
        );
        figures
    }

    /// One round's phases for its line.
    fn describe(&self) -> String {
        self.figures()
            .iter()
            .map(|(name, ms)| format!("{name} {ms:.1} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The median of each phase over `boots` (the phases of the first boot;
    /// a VM missing from a later one is left out of its median).
    fn median_figures(boots: &[BootTimes]) -> Vec<(String, f64)> {
        let Some(first) = boots.first() else {
            return Vec::new();
        };
        first
            .figures()
            .into_iter()
            .map(|(name, _)| {
                let mut values: Vec<f64> = boots
                    .iter()
                    .flat_map(|boot| boot.figures())
                    .filter(|(other, _)| *other == name)
                    .map(|(_, ms)| ms)
                    .collect();
                values.sort_by(f64::total_cmp);
                let n = values.len();
                let median = match n {
                    0 => 0.0,
                    n if n % 2 == 1 => values[n / 2],
                    n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
                };
                (name, median)
            })
            .collect()
    }
}

/// The lines of a QEMU's console output as they come, until it ends;
/// bytes that are not UTF-8 (a UART's first byte may be noise) become
/// U+FFFD rather than ending the stream.
pub(crate) fn console_lines(output: impl Read) -> impl Iterator<Item = String> {
    BufReader::new(output)
        .split(b'\n')
        .map_while(std::result::Result::ok)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// The median of `samples` (sorted in place); zero when empty.
fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    match samples.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => samples[n / 2],
        n => (samples[n / 2 - 1] + samples[n / 2]) / 2,
    }
}

/// A duration in milliseconds.
fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A file's size in bytes.
fn file_size(path: &Path) -> Result<u64> {
    std::fs::metadata(path)
        .map(|meta| meta.len())
        .map_err(|error| format!("{}: {error}", path.display()))
}

/// The plain-QEMU peers of every benchmark, for the command-line checks in
/// `qemu.rs`'s tests.
#[cfg(test)]
pub(crate) fn peer_commands_for_tests() -> Vec<(String, Command)> {
    let image = Path::new("/g.bin");
    let mut commands = Vec::new();
    for board in [
        Board::QemuVirtAarch64,
        Board::QemuVirtArm,
        Board::Rpi3,
        Board::Rpi4,
    ] {
        let name = board.name();
        if !board.is_qemu_virt() {
            // The Pi has a peer only for the Linux boot ([`Peers::of`]).
            commands.push((
                format!("bench linux peer on {name}"),
                crate::bench_linux::plain_command(
                    board,
                    image,
                    Path::new("/i.cpio.gz"),
                    2,
                    "256M",
                    "",
                ),
            ));
            continue;
        }
        commands.push((
            format!("bench probe peer on {name}"),
            plain_qemu(board, image),
        ));
        commands.push((
            format!("bench net peer on {name}"),
            crate::bench_net::plain_qemu(
                board,
                image,
                "52:54:00:12:34:01",
                "",
                "socket,id=n0,listen=127.0.0.1:1",
            ),
        ));
        commands.push((
            format!("bench linux peer on {name}"),
            crate::bench_linux::plain_command(board, image, Path::new("/i.cpio.gz"), 1, "256M", ""),
        ));
    }
    commands
}

/// Bundles `config` for a headless benchmark boot ([`headless_run_args`])
/// and returns the run options and the bundle, so every benchmark boots
/// chroma the way `cargo xtask run --headless` does.
pub fn headless_bundle(
    config: &Path,
    board: Board,
    hypervisor_bin: &Path,
) -> Result<(RunArgs, PathBuf)> {
    let run_args = RunArgs {
        config: Some(config.to_path_buf()),
        ..headless_run_args(board)
    };
    let manifest_bytes = manifest(config, &run_args.machine()?, &ManifestOptions::default())?;
    let bundle = write_bundle(hypervisor_bin, &manifest_bytes, board, config)?;
    Ok((run_args, bundle))
}

/// The options of a headless benchmark boot on `board`: on QEMU `virt` 2
/// CPUs, GICv2, 1 GiB and the board's CPU model; a Pi's machine is fixed
/// (`--board` alone says it all).
pub(crate) fn headless_run_args(board: Board) -> RunArgs {
    let virt = board.is_qemu_virt();
    RunArgs {
        config: None,
        board,
        smp: virt.then_some(2),
        cpu: virt.then(|| board.default_cpu().to_owned()),
        gic: virt.then_some(2),
        memory: virt.then(|| "1G".to_owned()),
        headless: true,
        timeout: None,
        force_cache: false,
        gdb: false,
        log: None,
        no_build: true,
        forward: Vec::new(),
        input: None,
        test_only_qemu_arg: Vec::new(),
        board_link: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_model_rows_become_figures() {
        let line = "    64     1       91.5         150.2       20.1           1.64x           4.55x  (driver side alone: 30.2)";
        let row = DeviceModelRow::parse(line).unwrap();
        assert_eq!(
            row,
            DeviceModelRow {
                frame_bytes: 64,
                batch: 1,
                chroma: 91.5,
                virtio_queue: 150.2,
                copy: 20.1,
                packed: None,
            }
        );
        let with_packed = "  1500    32      114.6         174.5       28.1          1.52x          4.07x  (driver side alone: 8.8; chroma on packed rings: 172.5)";
        let packed_row = DeviceModelRow::parse(with_packed).unwrap();
        assert_eq!(packed_row.packed, Some(172.5));
        assert_eq!(packed_row.figure().peer_value("chroma-packed"), Some(172.5));
        let figure = row.figure();
        assert_eq!(figure.name, "device_model.ns_per_frame.64B.batch1");
        assert_eq!(figure.peer_value("virtio-queue"), Some(150.2));
        assert_eq!(figure.peer_value("copy"), Some(20.1));
        assert_eq!(figure.params.get("frame_bytes"), Some(&64));
        // The title and the header are not rows.
        assert_eq!(
            DeviceModelRow::parse(
                "chroma-virtio net benchmark: ns/frame, device(TX, VM0) -> switch -> device(RX, VM1)"
            ),
            None
        );
        assert_eq!(
            DeviceModelRow::parse(" bytes batch     chroma  virtio-queue       copy"),
            None
        );
        assert_eq!(DeviceModelRow::parse("64.5 1 1 2 3"), None);
        assert_eq!(DeviceModelRow::parse(""), None);
    }

    /// `cargo xtask bench`'s options from `args`.
    fn parse_bench_args(args: &[&str]) -> std::result::Result<BenchArgs, clap::Error> {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .map(|cli| cli.bench)
    }

    #[test]
    fn compare_takes_one_or_two_files() {
        let parse = parse_bench_args;
        let one = parse(&["--compare", "old.json"]).unwrap();
        assert_eq!(one.compare, [PathBuf::from("old.json")]);
        assert_eq!(one.threshold, 10.0);
        let two = parse(&["--compare", "old.json", "new.json", "--threshold", "5"]).unwrap();
        assert_eq!(two.compare.len(), 2);
        assert_eq!(two.threshold, 5.0);
        assert!(parse(&["--compare", "a", "b", "c"]).is_err());
        assert!(parse(&[]).unwrap().compare.is_empty());
        // A negative threshold is refused before anything runs.
        let negative = BenchArgs {
            threshold: -1.0,
            ..parse(&[]).unwrap()
        };
        assert!(run(&negative).unwrap_err().contains("--threshold"));
        // So is a missing old file.
        let missing = parse(&["--compare", "/nonexistent/old.json"]).unwrap();
        assert!(run(&missing)
            .unwrap_err()
            .contains("/nonexistent/old.json: cannot read"));
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        let ms = Duration::from_millis;
        assert_eq!(median(&mut [ms(5), ms(1), ms(3)]), ms(3));
        assert_eq!(
            median(&mut [ms(4), ms(1), ms(3), ms(2)]),
            Duration::from_micros(2500)
        );
        assert_eq!(median(&mut []), Duration::ZERO);
    }

    #[test]
    fn peers_run_the_boards_qemu_and_cpu_without_virtualization() {
        let line = |command: &Command| crate::process::command_line(command);
        let arm64 = line(&plain_qemu(Board::QemuVirtAarch64, Path::new("/p.bin")));
        assert!(
            arm64.contains("qemu-system-aarch64 -M virt,gic-version=2 -cpu cortex-a57 -smp 2 -m 128M -nic none"),
            "{arm64}"
        );
        let arm = line(&plain_qemu(Board::QemuVirtArm, Path::new("/p.bin")));
        assert!(
            arm.contains(
                "qemu-system-arm -M virt,gic-version=2 -cpu cortex-a15 -smp 2 -m 128M -nic none"
            ),
            "{arm}"
        );
        for (name, command) in peer_commands_for_tests() {
            let text = line(&command);
            assert!(!text.contains("virtualization=on"), "{name}: {text}");
            // Each Pi's own machine, device tree, timer and console (the mini
            // UART, QEMU's second serial port), as chroma's runs; the kernel's
            // CPUs and RAM limited on its command line.
            let pi_peer = [
                (
                    "rpi3",
                    crate::RPI3,
                    "raspi3b -dtb {dtb} -global cortex-a53-arm-cpu.cntfrq=19200000",
                    "console=ttyS1 rdinit=/init maxcpus=2 mem=256M",
                ),
                (
                    "rpi4",
                    crate::RPI4,
                    "raspi4b -dtb {dtb} -global cortex-a72-arm-cpu.cntfrq=54000000",
                    "console=ttyS1 initcall_blacklist=brcmstb_l2_driver_init,\
                     brcmstb_i2c_driver_init clk_ignore_unused rdinit=/init maxcpus=2 mem=256M",
                ),
            ]
            .into_iter()
            .find(|(board, _, _, _)| name.ends_with(board));
            if let Some((_, pi, machine, append)) = pi_peer {
                let dtb = crate::images::pi_dtb(pi).display().to_string();
                let machine = machine.replace("{dtb}", &dtb);
                assert!(
                    text.contains(&format!(
                        "qemu-system-aarch64 -M {machine} -display none -monitor none -serial null -serial stdio "
                    )),
                    "{name}: {text}"
                );
                assert!(
                    text.ends_with(&format!("-append '{append}'")),
                    "{name}: {text}"
                );
                assert!(
                    !text.contains(" -cpu ") && !text.contains(" -smp "),
                    "{name}: {text}"
                );
            } else if name.ends_with("qemu-virt-arm") {
                assert!(
                    text.contains("qemu-system-arm -M virt,gic-version=2 -cpu cortex-a15 "),
                    "{name}: {text}"
                );
            } else {
                assert!(text.contains(" -cpu cortex-a57 "), "{name}: {text}");
            }
        }
    }

    #[test]
    fn the_bench_says_what_runs_and_what_it_skips() {
        let arm = board_line(Board::QemuVirtArm);
        assert!(
            arm.starts_with("board qemu-virt-arm: chroma on qemu-system-arm -M virt,virtualization=on -cpu cortex-a15 (AArch32 guests)"),
            "{arm}"
        );
        assert!(board_line(Board::QemuVirtAarch64).contains("qemu-system-aarch64"));
        assert!(DEVICE_MODEL_SKIPPED.contains("whatever the board"));
        let pi = board_line(Board::Rpi4);
        assert!(
            pi.starts_with("board rpi4: chroma on qemu-system-aarch64 -M raspi4b with the board's device tree (raspi4b: 4 Cortex-A72 CPUs, 960 MiB of RAM, a GICv2, AArch64 guests)"),
            "{pi}"
        );
        assert!(pi.contains("the same kernel on plain raspi4b"), "{pi}");
        assert!(pi.contains("emulates no NIC"), "{pi}");
        assert!(!pi.contains("virtualization=on"), "{pi}");
    }

    #[test]
    fn the_pi_has_a_peer_only_for_the_linux_boot_and_says_why() {
        for board in [Board::QemuVirtAarch64, Board::QemuVirtArm] {
            let peers = Peers::of(board);
            assert_eq!(
                (peers.test_guests, peers.nic),
                (Ok(()), Ok(())),
                "{board:?}"
            );
        }
        let pi = Peers::of(Board::Rpi4);
        assert_eq!(pi.nic, Err("no peer: raspi4b emulates no NIC".to_owned()));
        let why = pi.test_guests.unwrap_err();
        assert!(
            why.contains("no plain-QEMU peer") && why.contains("raspi4b"),
            "{why}"
        );
    }

    #[test]
    fn benchmark_boots_fit_their_board() {
        let pi = headless_run_args(Board::Rpi4).machine().unwrap();
        assert_eq!((pi.physical_cpus, pi.ram_bytes), (4, crate::PI_RAM_BYTES));
        let virt = headless_run_args(Board::QemuVirtAarch64);
        assert_eq!((virt.smp, virt.gic), (Some(2), Some(2)));
        assert_eq!(virt.machine().unwrap().ram_bytes, 1 << 30);
        assert_eq!(virt.cpu.as_deref(), Some("cortex-a57"));
        assert!(headless_run_args(Board::QemuVirtArm).headless);
        // Negative control: the virt options are refused on the fixed Pi.
        let forced = RunArgs {
            board: Board::Rpi4,
            ..headless_run_args(Board::QemuVirtAarch64)
        };
        assert!(forced.machine().is_err());
    }

    #[test]
    fn console_lines_survive_bytes_that_are_not_utf8() {
        let output: &[u8] = b"\xff[    0.000000] Booting Linux\r\nlinux-guest: init\n";
        let lines: Vec<String> = console_lines(output).collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].ends_with("Booting Linux\r"), "{lines:?}");
        assert_eq!(lines[1], "linux-guest: init");
        // Negative control: the standard line reader stops at the first such byte.
        let output: &[u8] = b"\xff[    0.000000] Booting Linux\r\nlinux-guest: init\n";
        assert!(BufReader::new(output).lines().next().unwrap().is_err());
    }

    /// The lines of a boot as the hypervisor prints them, with others between.
    fn boot_lines() -> Vec<String> {
        [
            "chroma: chroma 0.1.0 starting at EL2 (MPIDR 0x80000000, dtb at 0x48000000)",
            "chroma: boot-time entry=625000 hz=62500000",
            "chroma: EL2 MMU on (W^X), 950 MiB free for VMs, 40 PA bits",
            "chroma: boot-time start_us=12500",
            "chroma: boot-time vm=probe load_us=2250",
            "chroma: vm probe: 64 MiB at IPA 0x40000000 (PA 0x44000000), 1 vCPU(s) on CPU(s) [0]",
            "chroma: boot-time vm=linux load_us=40000\r",
            "chroma: 2 physical CPU(s) up",
            "chroma: boot-time ready_us=56000",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    #[test]
    fn boot_time_lines_become_phases() {
        let boot = BootTimes::from_lines(&boot_lines()).unwrap();
        assert_eq!(
            boot,
            BootTimes {
                entry_ticks: 625_000,
                hz: 62_500_000,
                start_us: 12_500,
                loads_us: vec![("probe".to_owned(), 2250), ("linux".to_owned(), 40_000)],
                ready_us: 56_000,
                ready_line: 8,
                qemu_us: None,
                guest_us: None,
            }
        );
        assert_eq!(
            boot.figures(),
            [
                ("first_line.boot.entry".to_owned(), 10.0),
                ("first_line.boot.chroma_start".to_owned(), 12.5),
                ("first_line.boot.load.probe".to_owned(), 2.25),
                ("first_line.boot.load.linux".to_owned(), 40.0),
                ("first_line.boot.ready".to_owned(), 56.0),
            ]
        );
        // The median of each phase over the rounds.
        let later = BootTimes {
            start_us: 10_500,
            ready_us: 50_000,
            ..boot.clone()
        };
        let slower = BootTimes {
            start_us: 20_500,
            ..boot.clone()
        };
        let medians = BootTimes::median_figures(&[boot, later, slower]);
        assert_eq!(
            medians[1],
            ("first_line.boot.chroma_start".to_owned(), 12.5)
        );
        assert_eq!(medians[4], ("first_line.boot.ready".to_owned(), 56.0));
        assert!(BootTimes::median_figures(&[]).is_empty());
    }

    #[test]
    fn the_wall_clock_adds_qemus_start_and_the_guests_way_to_its_line() {
        let lines = boot_lines();
        // Line i came at 40 + i ms, so the ready line (the last, index 8)
        // at 48 ms, but it says 56 ms since the entry: an entry before the
        // command started is no figure.
        let at = |ms: u64| Duration::from_millis(ms);
        let seen = |before_at: Vec<Duration>, elapsed: Duration| FirstLine {
            elapsed,
            before: lines.clone(),
            before_at,
        };
        let early = seen((0..9).map(|i| at(40 + i)).collect(), at(60));
        let boot = BootTimes::from_lines(&early.before)
            .unwrap()
            .on_the_wall_clock(&early);
        assert_eq!((boot.qemu_us, boot.guest_us), (None, Some(12_000)));
        // The ready line at 100 ms: the entry was at 44 ms, the first guest
        // line 10 ms after the ready line.
        let mut before_at: Vec<Duration> = (0..9).map(|i| at(40 + i)).collect();
        before_at[8] = at(100);
        let late = seen(before_at, at(110));
        let boot = BootTimes::from_lines(&late.before)
            .unwrap()
            .on_the_wall_clock(&late);
        assert_eq!((boot.qemu_us, boot.guest_us), (Some(44_000), Some(10_000)));
        let figures = boot.figures();
        assert_eq!(
            figures[figures.len() - 2..],
            [
                ("first_line.boot.qemu".to_owned(), 44.0),
                ("first_line.boot.guest".to_owned(), 10.0),
            ]
        );
        // Negative control: without arrival times there are no such figures.
        let unknown = seen(Vec::new(), at(110));
        let boot = BootTimes::from_lines(&unknown.before)
            .unwrap()
            .on_the_wall_clock(&unknown);
        assert_eq!((boot.qemu_us, boot.guest_us), (None, None));
        assert_eq!(boot.figures().len(), 5);
    }

    #[test]
    fn malformed_boot_time_lines_are_refused() {
        // Negative controls: each broken line makes the whole boot an error,
        // not a figure of 0 or a skipped phase.
        for (broken, why) in [
            ("chroma: boot-time start_us=12.5", "not parse"),
            ("chroma: boot-time start_us=", "not parse"),
            ("chroma: boot-time start_us 12500", "not parse"),
            ("chroma: boot-time entry=625000", "not parse"),
            ("chroma: boot-time entry=1 hz=0", "not parse"),
            ("chroma: boot-time vm=probe load_us=-3", "not parse"),
            ("chroma: boot-time  start_us=1", "not parse"),
            ("chroma: boot-time phase=start us=1", "not parse"),
            ("chroma: boot-time ready_us=1", "printed twice"),
        ] {
            let mut lines = boot_lines();
            lines.insert(4, broken.to_owned());
            let error = BootTimes::from_lines(&lines).unwrap_err();
            assert!(error.contains(why), "{broken}: {error}");
        }
        // A missing line is an error too.
        let mut lines = boot_lines();
        lines.retain(|line| !line.contains("ready_us"));
        assert!(BootTimes::from_lines(&lines)
            .unwrap_err()
            .contains("no boot-time ready_us"));
        // Lines that only look alike are not boot-time lines at all.
        let mut lines = boot_lines();
        lines.push("[probe] chroma: boot-time start_us=1".to_owned());
        lines.push("chroma: boot-timeX start_us=1".to_owned());
        assert_eq!(
            BootTimes::from_lines(&lines),
            BootTimes::from_lines(&boot_lines())
        );
    }

    #[test]
    fn only_runs_one_section() {
        let parse = parse_bench_args;
        let every = parse(&[]).unwrap();
        let boot = parse(&["--only", "boot"]).unwrap();
        for section in [Section::Boot, Section::Net, Section::Model, Section::Linux] {
            assert!(every.runs_section(section));
            assert_eq!(boot.runs_section(section), section == Section::Boot);
        }
        assert!(parse(&["--only", "everything"]).is_err());
    }

    #[test]
    fn first_line_timer_waits_for_the_prefix() {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "echo noise; sleep 0.2; echo '[probe] hello'; sleep 30",
        ]);
        let seen = time_to_first_line(command, "[probe] ", Duration::from_secs(10)).unwrap();
        assert!(seen.elapsed >= Duration::from_millis(150), "{seen:?}");
        assert_eq!(seen.before, ["noise"]);
        assert_eq!(seen.before_at.len(), 1, "{seen:?}");
        assert!(seen.before_at[0] < seen.elapsed, "{seen:?}");
        assert!(
            seen.elapsed - seen.before_at[0] >= Duration::from_millis(150),
            "{seen:?}"
        );
        let mut silent = Command::new("sh");
        silent.args(["-c", "echo noise; sleep 30"]);
        assert!(time_to_first_line(silent, "[probe] ", Duration::from_millis(300)).is_err());
    }
}
