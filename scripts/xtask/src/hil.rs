//! Hardware in the loop: the system tests against a real board over its
//! serial console, powered off and on by the user's command.
//!
//! Two halves:
//!
//! - a transport inside `xtask run --headless`: with `--serial DEV --power
//!   COMMAND` it does not start QEMU but writes the bundle, powers the board
//!   off and on through COMMAND (which puts the bundle where the board boots
//!   from), reads DEV (raw, 8N1, `--baud`) with the same verdict as a QEMU
//!   run, stops at the hypervisor's summary line (a Pi ends a run with a
//!   watchdog reset, which would boot it again) or at `--timeout`, and
//!   powers the board off;
//! - `cargo xtask hil`: runs the board-capable system tests
//!   ([`BOARD_TESTS`]) with that transport, one at a time (one board),
//!   through the environment `tests/src/lib.rs` reads (`CHROMA_HIL_SERIAL`,
//!   `CHROMA_HIL_BAUD`, `CHROMA_HIL_POWER`), so the tests are the same code.
//!
//! The power command runs under `sh -c` with `CHROMA_HIL_ACTION` (`off` or
//! `on`), `CHROMA_HIL_BOARD`, `CHROMA_HIL_IMAGE` (the bundle, an absolute
//! path) and `CHROMA_HIL_SERIAL` in its environment. It must return once the
//! board is off or has been switched on, and must not leave a background
//! process holding its stdout or stderr. `scripts/hil/qemu-board.sh` is a
//! power command whose board is QEMU, on a pty pair that socat holds (the
//! cable); the CI runs the runner end to end with it (`tests/tests/hil.rs`).

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use rustix::termios::{self, ControlModes, InputModes, OptionalActions, QueueSelector};

use crate::process::describe_status;
use crate::qemu::{RunArgs, TIMEOUT_EXIT};
use crate::verdict::ConsoleWatch;
use crate::{workspace_root, Board, Result};

/// `--baud` when not given: the Raspberry Pi's console speed.
pub const DEFAULT_BAUD: u32 = 115_200;
/// How long a power command may take before it counts as failed.
const POWER_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the console may go on after a hypervisor failure line (the rest
/// of an EL2 exception report) before the run ends.
const FAILURE_GRACE: Duration = Duration::from_secs(3);
/// The console is quiet when nothing came for this long (stale bytes from
/// the previous boot are drained until then, at most [`DRAIN_LIMIT`]).
const QUIET: Duration = Duration::from_millis(200);
/// The longest the console is drained before a boot.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// The line xtask prints on stderr before it switches the board on (the
/// system tests' harness reads it as "the board was started").
pub const POWER_ON_NOTE: &str = "xtask: hil: powering on";

/// Options of `xtask run` (and `xtask hil`) that boot a real board over its
/// serial console instead of QEMU.
#[derive(Args, Clone, Debug, Default)]
pub struct BoardLink {
    /// Boot a real board instead of QEMU (with --headless): its serial
    /// console is this device (e.g. /dev/ttyUSB0), read raw 8N1; needs
    /// --power. See README, "Hardware in the loop".
    #[arg(long, value_name = "DEV", requires = "power")]
    pub serial: Option<PathBuf>,
    /// Baud rate of --serial [default: 115200].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub baud: Option<u32>,
    /// With --serial: the shell command that switches the board off and on
    /// (CHROMA_HIL_ACTION=off|on, CHROMA_HIL_IMAGE=the bundle to boot,
    /// CHROMA_HIL_BOARD, CHROMA_HIL_SERIAL in its environment).
    #[arg(long, value_name = "COMMAND", requires = "serial")]
    pub power: Option<String>,
}

impl BoardLink {
    /// The baud rate: `--baud` or 115200.
    pub fn baud(&self) -> u32 {
        self.baud.unwrap_or(DEFAULT_BAUD)
    }
}

/// Whether `board` is a physical board the runner can drive (QEMU's `virt`
/// machines exist only in QEMU). A new board is an arm here.
pub fn is_physical(board: Board) -> bool {
    board.pi().is_some()
}

/// One system test that makes sense on a real board: it boots through
/// `boot`/`boot_with` only (no QEMU-only option, no typed input, no uplink
/// or host network, no gdb, no plain-QEMU peer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoardTest {
    /// The board its `Board` value names.
    pub board: Board,
    /// Its file in `tests/tests/` (without `.rs`), the cargo test target.
    pub file: &'static str,
    /// The test function.
    pub name: &'static str,
}

/// The board-capable system tests (`cargo xtask hil --list`). `--force-cache`
/// travels in the bundle (it is the manifest's cache mode), so the forced
/// test is one of them.
pub const BOARD_TESTS: &[BoardTest] = &[
    BoardTest {
        board: Board::Rpi3,
        file: "rpi",
        name: "rpi3_probes_side_by_side_on_four_cores",
    },
    BoardTest {
        board: Board::Rpi3,
        file: "rpi",
        name: "rpi3_a_faulting_vm_stops_alone",
    },
    BoardTest {
        board: Board::Rpi3,
        file: "rpi",
        name: "rpi3_vm_to_vm_tcp_16mib_and_icmp_both_ways",
    },
    BoardTest {
        board: Board::Rpi3,
        file: "rpi",
        name: "rpi3_vm_to_vm_in_forced_colour_and_maintain_mode",
    },
    BoardTest {
        board: Board::Rpi3,
        file: "rpi",
        name: "rpi3_two_linux_guests_ping_and_move_64mib_with_sha256_at_both_ends",
    },
    BoardTest {
        board: Board::Rpi4,
        file: "rpi",
        name: "rpi4_probes_side_by_side_on_four_cores",
    },
    BoardTest {
        board: Board::Rpi4,
        file: "rpi",
        name: "rpi4_a_faulting_vm_stops_alone",
    },
    BoardTest {
        board: Board::Rpi4,
        file: "rpi",
        name: "rpi4_vm_to_vm_tcp_16mib_and_icmp_both_ways",
    },
    BoardTest {
        board: Board::Rpi4,
        file: "rpi",
        name: "rpi4_vm_to_vm_in_forced_colour_and_maintain_mode",
    },
    BoardTest {
        board: Board::Rpi4,
        file: "rpi",
        name: "rpi4_two_linux_guests_ping_and_move_64mib_with_sha256_at_both_ends",
    },
];

/// Options of `cargo xtask hil`.
#[derive(Args, Clone, Debug)]
pub struct HilArgs {
    /// The board on the other end of --serial.
    #[arg(long, value_enum)]
    pub board: Option<Board>,
    #[command(flatten)]
    pub link: BoardLink,
    /// Print the board-capable tests (of --board, or of every board) and exit.
    #[arg(long)]
    pub list: bool,
    /// Run only the board-capable tests whose names contain one of these.
    #[arg(value_name = "FILTER")]
    pub filters: Vec<String>,
}

/// The board-capable tests of `board` whose names contain one of `filters`
/// (every one without filters).
pub fn select(board: Board, filters: &[String]) -> Vec<BoardTest> {
    BOARD_TESTS
        .iter()
        .filter(|test| test.board == board)
        .filter(|test| filters.is_empty() || filters.iter().any(|f| test.name.contains(f.as_str())))
        .copied()
        .collect()
}

/// `cargo xtask hil`.
pub fn run_hil(args: &HilArgs) -> Result<ExitCode> {
    if args.list {
        for test in BOARD_TESTS {
            if args.board.is_none_or(|board| board == test.board) {
                println!(
                    "{}\ttests/tests/{}.rs\t{}",
                    test.board.name(),
                    test.file,
                    test.name
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let boards: Vec<&str> = BOARD_TESTS.iter().map(|t| t.board.name()).collect();
    let Some(board) = args.board else {
        return Err(format!(
            "--board is required (a real board: {})",
            boards.join(", ")
        ));
    };
    check_physical(board)?;
    let (Some(serial), Some(power)) = (&args.link.serial, &args.link.power) else {
        return Err("--serial DEV and --power COMMAND are required (or --list)".to_owned());
    };
    if power.trim().is_empty() {
        return Err("--power: the command is empty".to_owned());
    }
    // Refuse a missing device or a bad baud rate before any build.
    drop(SerialPort::open(serial, args.link.baud())?);
    let serial = std::path::absolute(serial)
        .map_err(|error| format!("--serial {}: {error}", serial.display()))?;
    let tests = select(board, &args.filters);
    if tests.is_empty() {
        return Err(format!(
            "no board-capable test of {} matches {:?} (cargo xtask hil --list)",
            board.name(),
            args.filters
        ));
    }
    crate::images::build_all(board)?;
    let xtask = std::env::current_exe().map_err(|error| format!("this xtask's path: {error}"))?;
    let mut files: Vec<&str> = Vec::new();
    for test in &tests {
        if !files.contains(&test.file) {
            files.push(test.file);
        }
    }
    let mut failed = Vec::new();
    for file in files {
        let names: Vec<&str> = tests
            .iter()
            .filter(|t| t.file == file)
            .map(|t| t.name)
            .collect();
        let mut command = test_command(file, &names);
        command
            .env("CHROMA_XTASK", &xtask)
            .env("CHROMA_HIL_SERIAL", &serial)
            .env("CHROMA_HIL_BAUD", args.link.baud().to_string())
            .env("CHROMA_HIL_POWER", power);
        eprintln!(
            "xtask: hil: {} test(s) of tests/tests/{file}.rs on {} over {} at {} baud",
            names.len(),
            board.name(),
            serial.display(),
            args.link.baud()
        );
        eprintln!("xtask: {}", crate::process::command_line(&command));
        let status = command
            .status()
            .map_err(|error| format!("cannot start cargo test: {error}"))?;
        if !status.success() {
            failed.push(format!("{file} ({})", describe_status(status)));
        }
    }
    if failed.is_empty() {
        eprintln!("xtask: hil: every selected test passed on {}", board.name());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "xtask: hil: failed on {}: {}",
            board.name(),
            failed.join(", ")
        );
        Ok(ExitCode::FAILURE)
    }
}

/// `cargo test` of the named tests of `tests/tests/<file>.rs`, one at a time,
/// in a target directory of its own (the runner may itself run inside a
/// `cargo test`, which holds the default one).
fn test_command(file: &str, names: &[&str]) -> Command {
    let mut command = crate::testing::host_cargo();
    command
        .env(
            "CARGO_TARGET_DIR",
            workspace_root().join("target").join("hil"),
        )
        .args([
            "test",
            "-p",
            "chroma-systest",
            "--features",
            "qemu",
            "--test",
            file,
        ])
        .args(["--", "--exact", "--test-threads=1"])
        .args(names);
    command
}

/// Refuses a board that exists only in QEMU.
fn check_physical(board: Board) -> Result<()> {
    if is_physical(board) {
        return Ok(());
    }
    let real: Vec<&str> = BOARD_TESTS.iter().map(|t| t.board.name()).collect();
    Err(format!(
        "{} is a QEMU machine, not a board on a serial line (real boards: {})",
        board.name(),
        real.join(", ")
    ))
}

/// Refuses `xtask run` options that need QEMU when `--serial` is given.
pub fn check_run_args(args: &RunArgs) -> Result<()> {
    check_physical(args.board)?;
    let refused = [
        (!args.headless, "--serial needs --headless"),
        (args.gdb, "--gdb needs QEMU (a board has no gdb stub here)"),
        (
            args.input.is_some(),
            "--input: the board's console is read only",
        ),
        (
            !args.forward.is_empty(),
            "--forward needs QEMU's user networking",
        ),
        (
            !args.test_only_qemu_arg.is_empty(),
            "--test-only-qemu-arg needs QEMU",
        ),
    ];
    match refused.iter().find(|(bad, _)| *bad) {
        Some((_, why)) => Err(format!("{why} (with --serial, the board is real)")),
        None => Ok(()),
    }
}

/// A serial port in raw mode, 8N1, no flow control, non-blocking.
pub struct SerialPort {
    file: File,
    path: PathBuf,
}

impl SerialPort {
    /// Opens `path` and sets it raw, 8N1, `baud`, no flow control.
    pub fn open(path: &Path, baud: u32) -> Result<SerialPort> {
        use rustix::fs::{Mode, OFlags};
        let fd = rustix::fs::open(
            path,
            OFlags::RDWR | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|error| format!("--serial {}: cannot open: {error}", path.display()))?;
        let mut settings = termios::tcgetattr(&fd)
            .map_err(|error| format!("--serial {}: not a terminal: {error}", path.display()))?;
        settings.make_raw();
        // 8 data bits, no parity, 1 stop bit; the receiver on; no modem
        // control lines (a USB-serial cable to GPIO 14/15 has none) and no
        // flow control of either kind.
        settings.control_modes -= ControlModes::CSIZE
            | ControlModes::PARENB
            | ControlModes::CSTOPB
            | ControlModes::CRTSCTS;
        settings.control_modes |= ControlModes::CS8 | ControlModes::CREAD | ControlModes::CLOCAL;
        settings.input_modes -= InputModes::IXON | InputModes::IXOFF | InputModes::IXANY;
        settings
            .set_speed(baud)
            .map_err(|error| format!("--baud {baud}: {error}"))?;
        termios::tcsetattr(&fd, OptionalActions::Now, &settings).map_err(|error| {
            format!(
                "--serial {}: cannot set {baud} 8N1: {error}",
                path.display()
            )
        })?;
        Ok(SerialPort {
            file: File::from(fd),
            path: path.to_owned(),
        })
    }

    /// Waits up to `wait` for bytes and reads them into `buffer`; `Ok(0)`
    /// when none came (including a pty whose other end is closed for now).
    pub fn read_some(&mut self, buffer: &mut [u8], wait: Duration) -> Result<usize> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let timeout = Timespec::try_from(wait).unwrap_or(Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::new(&self.file, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => return Ok(0),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(0),
            Err(error) => return Err(format!("{}: poll: {error}", self.path.display())),
        }
        let hangup = fds[0].revents().intersects(PollFlags::HUP | PollFlags::ERR);
        match self.file.read(buffer) {
            Ok(0) => {}
            Ok(count) => return Ok(count),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            // EIO: a pty with nothing on its other end (a stand-in board
            // between power cycles); wait for it to come back.
            Err(error) if error.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => {}
            Err(error) => return Err(format!("{}: read: {error}", self.path.display())),
        }
        if hangup {
            // poll returns at once on a hung-up line: do not spin.
            std::thread::sleep(wait.min(Duration::from_millis(50)));
        }
        Ok(0)
    }

    /// Reads and drops what is waiting (the end of the previous boot) until
    /// the line is quiet, then discards the driver's input queue.
    pub fn discard_input(&mut self) -> Result<()> {
        let start = Instant::now();
        let mut buffer = [0u8; 4096];
        while start.elapsed() < DRAIN_LIMIT && self.read_some(&mut buffer, QUIET)? > 0 {}
        termios::tcflush(self.file.as_fd(), QueueSelector::IFlush)
            .map_err(|error| format!("{}: tcflush: {error}", self.path.display()))
    }
}

/// How reading a console ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleEnd {
    /// The summary line came.
    Summary,
    /// A hypervisor failure line came, and then the console went on at most
    /// [`FAILURE_GRACE`].
    Failure,
    /// The deadline passed first.
    Timeout,
}

/// Copies the console to `sink` and into `watch` until the summary line, a
/// failure (plus its grace period) or `deadline`.
pub fn read_console(
    port: &mut SerialPort,
    deadline: Option<Instant>,
    sink: &mut dyn std::io::Write,
    watch: &mut ConsoleWatch,
) -> Result<ConsoleEnd> {
    let mut buffer = [0u8; 4096];
    let mut failure_end: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if deadline.is_some_and(|deadline| now >= deadline) {
            return Ok(ConsoleEnd::Timeout);
        }
        if failure_end.is_some_and(|end| now >= end) {
            return Ok(ConsoleEnd::Failure);
        }
        let count = port.read_some(&mut buffer, Duration::from_millis(100))?;
        if count == 0 {
            continue;
        }
        let _ = sink.write_all(&buffer[..count]);
        let _ = sink.flush();
        watch.feed(&buffer[..count]);
        if watch.has_summary() {
            return Ok(ConsoleEnd::Summary);
        }
        if watch.has_failure() && failure_end.is_none() {
            failure_end = Some(Instant::now() + FAILURE_GRACE);
        }
    }
}

/// A board's power switch: the user's command.
pub struct Power {
    /// The shell command.
    pub command: String,
    /// `CHROMA_HIL_BOARD`.
    pub board: Board,
    /// `CHROMA_HIL_IMAGE`: the bundle to boot, absolute.
    pub image: PathBuf,
    /// `CHROMA_HIL_SERIAL`.
    pub serial: PathBuf,
}

impl Power {
    /// Runs the command with `CHROMA_HIL_ACTION=action`; its output goes to
    /// stderr (stdout is the board's console).
    pub fn switch(&self, action: &str) -> Result<()> {
        let stderr = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|error| format!("stderr: {error}"))?;
        let mut command = Command::new("sh");
        command
            .args(["-c", &self.command])
            .env("CHROMA_HIL_ACTION", action)
            .env("CHROMA_HIL_BOARD", self.board.name())
            .env("CHROMA_HIL_IMAGE", &self.image)
            .env("CHROMA_HIL_SERIAL", &self.serial)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stderr));
        let what = format!(
            "power command {:?} (CHROMA_HIL_ACTION={action})",
            self.command
        );
        let mut child = command
            .spawn()
            .map_err(|error| format!("{what}: cannot start sh: {error}"))?;
        let deadline = Instant::now() + POWER_TIMEOUT;
        loop {
            if let Some(status) = child
                .try_wait()
                .map_err(|error| format!("{what}: {error}"))?
            {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("{what} failed ({})", describe_status(status)))
                };
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{what} did not finish within {} s",
                    POWER_TIMEOUT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `xtask run --headless --serial DEV --power COMMAND`: boots `bundle` on
/// the real board and returns the verdict's exit status, as a QEMU run does.
pub fn run_on_board(args: &RunArgs, bundle: &Path) -> Result<ExitCode> {
    let (Some(serial), Some(command)) = (&args.board_link.serial, &args.board_link.power) else {
        return Err("--serial and --power go together".to_owned());
    };
    let baud = args.board_link.baud();
    let mut port = SerialPort::open(serial, baud)?;
    let image =
        std::path::absolute(bundle).map_err(|error| format!("{}: {error}", bundle.display()))?;
    let power = Power {
        command: command.clone(),
        board: args.board,
        image,
        serial: serial.clone(),
    };
    // From off, whatever state the last run (or the user) left the board in.
    power.switch("off")?;
    port.discard_input()?;
    eprintln!(
        "{POWER_ON_NOTE} {} with {} (console {} at {baud} baud)",
        args.board.name(),
        power.image.display(),
        serial.display()
    );
    if let Err(error) = power.switch("on") {
        let _ = power.switch("off");
        return Err(error);
    }
    // From the moment the command says the board is on (copying the image
    // may take a while; what the board prints meanwhile waits in the line's
    // buffer).
    let timeout = args.timeout.map(Duration::from_secs);
    let deadline = timeout.map(|timeout| Instant::now() + timeout);
    let mut watch = ConsoleWatch::default();
    let end = read_console(&mut port, deadline, &mut std::io::stdout(), &mut watch);
    // Off before judging, whatever happened: a Pi would boot again.
    let off = power.switch("off");
    let end = end?;
    off?;
    if end == ConsoleEnd::Timeout {
        eprintln!(
            "xtask: timeout: no summary line from the board after {} s",
            timeout.map_or(0, |timeout| timeout.as_secs())
        );
        return Ok(ExitCode::from(TIMEOUT_EXIT));
    }
    // The board "exited" cleanly: the run ended on the console, not on a status.
    let (code, reason) = watch.verdict(0);
    eprintln!("xtask: exit status {code}: {reason}");
    Ok(ExitCode::from(code))
}

/// Options of the hidden `xtask qemu-stand-in`.
#[derive(Args, Clone, Debug)]
pub struct StandInArgs {
    /// The board QEMU stands in for.
    #[arg(long, value_enum)]
    pub board: Board,
    /// The bundle to boot (CHROMA_HIL_IMAGE).
    #[arg(long, value_name = "FILE")]
    pub image: PathBuf,
    /// The host device QEMU's serial port opens (a pty), or `null`.
    #[arg(long, value_name = "DEV")]
    pub uart: String,
}

/// `xtask qemu-stand-in`: prints, NUL-separated, the QEMU command line that
/// `xtask run --headless` uses for the board, with its serial port on
/// `--uart` instead of stdio (for `scripts/hil/qemu-board.sh`).
pub fn print_stand_in(args: &StandInArgs) -> Result<ExitCode> {
    check_physical(args.board)?;
    // What QEMU needs to stand in for the board (as `xtask run` checks).
    crate::qemu::require_pi_machine(args.board)?;
    let words = stand_in_words(args.board, &args.image, &args.uart)?;
    let mut out = std::io::stdout().lock();
    for word in words {
        out.write_all(word.as_encoded_bytes())
            .and_then(|()| out.write_all(b"\0"))
            .map_err(|error| format!("stdout: {error}"))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The stand-in's command line: the headless one with `-serial stdio`
/// replaced by `-serial UART`.
fn stand_in_words(board: Board, image: &Path, uart: &str) -> Result<Vec<OsString>> {
    use clap::Parser as _;
    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        run: RunArgs,
    }
    let run = Wrapper::try_parse_from(["run", "--headless", "--board", board.name()])
        .map_err(|error| error.to_string())?
        .run;
    let image =
        std::path::absolute(image).map_err(|error| format!("{}: {error}", image.display()))?;
    let command = crate::qemu::qemu_command(&run, &image, None);
    let mut words = vec![command.get_program().to_owned()];
    let mut replaced = 0;
    let mut after_serial = false;
    for arg in command.get_args() {
        if after_serial && arg == "stdio" {
            words.push(uart.into());
            replaced += 1;
        } else {
            words.push(arg.to_owned());
        }
        after_serial = arg == "-serial";
    }
    if replaced != 1 {
        return Err(format!(
            "the headless QEMU command line has {replaced} `-serial stdio`, expected 1"
        ));
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pty pair: the master (the "board" end) and the slave's path.
    fn pty() -> (File, PathBuf) {
        use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        (File::from(master), PathBuf::from(name.to_str().unwrap()))
    }

    #[test]
    fn reading_stops_at_the_summary_although_the_line_stays_open() {
        let (mut board, path) = pty();
        let mut port = SerialPort::open(&path, 115_200).unwrap();
        board
            .write_all(b"chroma: booting\r\n[probe] probe: done\r\nchroma: all VMs stopped (1 clean, 0 failed)\r\nchroma: booting\r\n")
            .unwrap();
        let mut sink = Vec::new();
        let mut watch = ConsoleWatch::default();
        let start = Instant::now();
        let deadline = Some(start + Duration::from_secs(20));
        let end = read_console(&mut port, deadline, &mut sink, &mut watch).unwrap();
        assert_eq!(end, ConsoleEnd::Summary);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(watch.verdict(0).0, crate::verdict::CLEAN_EXIT);
        let text = String::from_utf8_lossy(&sink);
        assert!(text.contains("[probe] probe: done"), "{text}");
        // Raw mode: no newline translation on the way in.
        assert!(text.contains("done\r\n"), "{text:?}");
    }

    #[test]
    fn a_silent_line_times_out() {
        let (_board, path) = pty();
        let mut port = SerialPort::open(&path, 9600).unwrap();
        let mut watch = ConsoleWatch::default();
        let start = Instant::now();
        let end = read_console(
            &mut port,
            Some(start + Duration::from_millis(300)),
            &mut Vec::new(),
            &mut watch,
        )
        .unwrap();
        assert_eq!(end, ConsoleEnd::Timeout);
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_guest_line_cannot_end_the_reading() {
        let (mut board, path) = pty();
        let mut port = SerialPort::open(&path, 115_200).unwrap();
        board
            .write_all(b"[evil] chroma: all VMs stopped (1 clean, 0 failed)\r\n")
            .unwrap();
        let mut watch = ConsoleWatch::default();
        let start = Instant::now();
        let end = read_console(
            &mut port,
            Some(start + Duration::from_millis(500)),
            &mut Vec::new(),
            &mut watch,
        )
        .unwrap();
        assert_eq!(end, ConsoleEnd::Timeout);
    }

    #[test]
    fn a_failure_line_ends_the_reading_after_its_report() {
        let (mut board, path) = pty();
        let mut port = SerialPort::open(&path, 115_200).unwrap();
        board
            .write_all(b"chroma: PANIC on CPU 0x0: broken\r\nchroma:   x0 = 0\r\n")
            .unwrap();
        let mut sink = Vec::new();
        let mut watch = ConsoleWatch::default();
        let start = Instant::now();
        let end = read_console(
            &mut port,
            Some(start + Duration::from_secs(30)),
            &mut sink,
            &mut watch,
        )
        .unwrap();
        assert_eq!(end, ConsoleEnd::Failure);
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(String::from_utf8_lossy(&sink).contains("x0 = 0"));
        assert_eq!(watch.verdict(0).0, crate::verdict::HYPERVISOR_FAILED_EXIT);
    }

    #[test]
    fn the_port_is_raw_8n1_at_the_baud_rate() {
        let (_board, path) = pty();
        let port = SerialPort::open(&path, 57_600).unwrap();
        let settings = termios::tcgetattr(&port.file).unwrap();
        assert_eq!(settings.output_speed(), 57_600);
        assert!(settings
            .control_modes
            .contains(ControlModes::CS8 | ControlModes::CLOCAL));
        assert!(!settings
            .control_modes
            .intersects(ControlModes::PARENB | ControlModes::CSTOPB));
        assert!(!settings.local_modes.contains(termios::LocalModes::ECHO));
        assert!(!settings.local_modes.contains(termios::LocalModes::ICANON));
    }

    #[test]
    fn stale_input_is_discarded_before_a_boot() {
        let (mut board, path) = pty();
        let mut port = SerialPort::open(&path, 115_200).unwrap();
        board
            .write_all(b"chroma: all VMs stopped (1 clean, 0 failed)\r\n")
            .unwrap();
        port.discard_input().unwrap();
        let mut watch = ConsoleWatch::default();
        let start = Instant::now();
        let end = read_console(
            &mut port,
            Some(start + Duration::from_millis(300)),
            &mut Vec::new(),
            &mut watch,
        )
        .unwrap();
        assert_eq!(end, ConsoleEnd::Timeout, "the old summary was read again");
    }

    #[test]
    fn missing_devices_and_non_terminals_are_refused() {
        let error = SerialPort::open(Path::new("/nonexistent/ttyUSB9"), 115_200)
            .err()
            .unwrap();
        assert!(
            error.contains("/nonexistent/ttyUSB9") && error.contains("cannot open"),
            "{error}"
        );
        let error = SerialPort::open(Path::new("/dev/null"), 115_200)
            .err()
            .unwrap();
        assert!(error.contains("not a terminal"), "{error}");
    }

    fn power(command: &str) -> Power {
        Power {
            command: command.to_owned(),
            board: Board::Rpi4,
            image: PathBuf::from("/abs/bundle.bin"),
            serial: PathBuf::from("/dev/ttyUSB0"),
        }
    }

    #[test]
    fn the_power_command_gets_the_contract_in_its_environment() {
        let dir = std::env::temp_dir().join(format!("chroma-hil-power-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log");
        let command = format!(
            "echo \"$CHROMA_HIL_ACTION $CHROMA_HIL_BOARD $CHROMA_HIL_IMAGE $CHROMA_HIL_SERIAL\" >> {}",
            log.display()
        );
        power(&command).switch("off").unwrap();
        power(&command).switch("on").unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            text,
            "off rpi4 /abs/bundle.bin /dev/ttyUSB0\non rpi4 /abs/bundle.bin /dev/ttyUSB0\n"
        );
    }

    #[test]
    fn a_failing_power_command_is_an_error_that_names_it() {
        let error = power("exit 7").switch("on").unwrap_err();
        assert!(
            error.contains("exit 7") && error.contains("exit status 7"),
            "{error}"
        );
        assert!(error.contains("CHROMA_HIL_ACTION=on"), "{error}");
    }

    #[test]
    fn only_real_boards_take_a_serial_line() {
        assert!(is_physical(Board::Rpi4));
        assert!(!is_physical(Board::QemuVirtAarch64));
        assert!(check_physical(Board::QemuVirtArm)
            .unwrap_err()
            .contains("QEMU machine"));
    }

    #[test]
    fn the_stand_in_is_the_headless_command_with_the_uart_on_a_device() {
        let words = stand_in_words(Board::Rpi4, Path::new("/b.bin"), "/dev/pts/7").unwrap();
        let text = words
            .iter()
            .map(|w| w.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(text.contains("-M raspi4b"), "{text}");
        assert!(
            // The Pis' console is their second serial port (the mini UART).
            text.contains("-monitor none -serial null -serial /dev/pts/7 -no-reboot"),
            "{text}"
        );
        assert!(text.ends_with("-kernel /b.bin"), "{text}");
        assert!(
            !text.contains("stdio") && !text.contains("semihosting"),
            "{text}"
        );
        // Everything else is the headless command line, word for word.
        let run = crate::qemu::qemu_command(
            &RunArgsForTests::headless(Board::Rpi4),
            Path::new("/b.bin"),
            None,
        );
        let headless = crate::process::command_line(&run);
        assert_eq!(text.replace("/dev/pts/7", "stdio"), headless);
    }

    /// `RunArgs` as `xtask run --headless --board B` parses them.
    struct RunArgsForTests;
    impl RunArgsForTests {
        fn headless(board: Board) -> RunArgs {
            use clap::Parser as _;
            #[derive(clap::Parser)]
            struct Wrapper {
                #[command(flatten)]
                run: RunArgs,
            }
            Wrapper::try_parse_from(["run", "--headless", "--board", board.name()])
                .unwrap()
                .run
        }
    }

    #[test]
    fn run_options_that_need_qemu_are_refused_with_a_serial_line() {
        let base = [
            "--headless",
            "--board",
            "rpi4",
            "--serial",
            "/dev/x",
            "--power",
            "true",
        ];
        let parse = |more: &[&str]| {
            use clap::Parser as _;
            #[derive(clap::Parser)]
            struct Wrapper {
                #[command(flatten)]
                run: RunArgs,
            }
            let mut words = vec!["run"];
            words.extend_from_slice(&base);
            words.extend_from_slice(more);
            Wrapper::try_parse_from(words).unwrap().run
        };
        assert!(check_run_args(&parse(&[])).is_ok());
        for more in [
            &["--gdb"][..],
            &["--forward", "8080:10.0.2.20:80"][..],
            &["--input", "/x"][..],
        ] {
            assert!(check_run_args(&parse(more)).is_err(), "{more:?}");
        }
        let mut interactive = parse(&[]);
        interactive.headless = false;
        assert!(check_run_args(&interactive)
            .unwrap_err()
            .contains("--headless"));
        let mut virt = parse(&[]);
        virt.board = Board::QemuVirtAarch64;
        assert!(check_run_args(&virt).unwrap_err().contains("QEMU machine"));
    }

    #[test]
    fn every_board_test_names_a_test_in_its_file() {
        let dir = workspace_root().join("tests").join("tests");
        let defined = |test: &BoardTest| {
            let source = std::fs::read_to_string(dir.join(format!("{}.rs", test.file))).unwrap();
            source.contains(&format!("#[test]\nfn {}()", test.name))
        };
        for test in BOARD_TESTS {
            assert!(
                defined(test),
                "{test:?} is not a #[test] of tests/tests/{}.rs",
                test.file
            );
        }
        // Negative control: a renamed test is noticed.
        let stale = BoardTest {
            name: "rpi4_no_such_test",
            ..BOARD_TESTS[0]
        };
        assert!(!defined(&stale));
        // No duplicates; every entry's board is a real one.
        for (i, test) in BOARD_TESTS.iter().enumerate() {
            assert!(is_physical(test.board), "{test:?}");
            assert!(!BOARD_TESTS[..i].contains(test), "{test:?} twice");
        }
    }

    #[test]
    fn filters_select_by_substring() {
        let rpi4 = BOARD_TESTS
            .iter()
            .filter(|t| t.board == Board::Rpi4)
            .count();
        assert_eq!(select(Board::Rpi4, &[]).len(), rpi4);
        assert_eq!(rpi4, 5);
        assert_eq!(select(Board::Rpi3, &[]).len(), BOARD_TESTS.len() - rpi4);
        let picked = select(Board::Rpi4, &["probes".to_owned(), "faulting".to_owned()]);
        assert_eq!(
            picked.iter().map(|t| t.name).collect::<Vec<_>>(),
            [
                "rpi4_probes_side_by_side_on_four_cores",
                "rpi4_a_faulting_vm_stops_alone"
            ]
        );
        assert!(select(Board::Rpi4, &["nothing".to_owned()]).is_empty());
        assert!(select(Board::QemuVirtAarch64, &[]).is_empty());
    }
}
