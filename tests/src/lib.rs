//! Harness for the QEMU system tests: write a VM configuration, boot it
//! headless through `cargo xtask run` (the path a user takes), and assert on
//! the serial output.
//!
//! The hypervisor's output contract: each guest console line is printed as
//! `[<vm>] <text>`; hypervisor lines start with `chroma: `; a stopping VM
//! prints `chroma: vm <name> stopped: <reason>`; the run ends with
//! `chroma: all VMs stopped (<N> clean, <M> failed)` and PSCI SYSTEM_OFF.
//!
//! The exit status of `xtask run --headless` comes from those lines only
//! (never from QEMU or a guest): 0 when the summary says 0 failed, 1 when it
//! counts failures, 2 after a `chroma: fatal`, `chroma: PANIC` or `chroma:
//! EL2 EXCEPTION` line, 3 when QEMU ended without a summary, 124 on a
//! timeout. Every boot here checks that xtask's status agrees with what the
//! console says ([`Outcome::assert_status_agrees_with_console`]).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The exit status `xtask run --timeout` ends with when QEMU had to be killed.
pub const TIMEOUT_EXIT: i32 = 124;
/// The summary counted failed VMs.
pub const VMS_FAILED_EXIT: i32 = 1;
/// The hypervisor printed a fatal, PANIC or EL2 EXCEPTION line.
pub const HYPERVISOR_FAILED_EXIT: i32 = 2;
/// QEMU ended without the hypervisor's summary (or failed after it).
pub const NO_SUMMARY_EXIT: i32 = 3;

/// Prefixes of the lines that report a failure of the hypervisor itself.
const FAILURE_PREFIXES: [&str; 3] = ["chroma: fatal: ", "chroma: PANIC", "chroma: EL2 EXCEPTION"];

/// The counts of a summary line, `chroma: all VMs stopped (N clean, M failed)`,
/// which must be the whole line.
pub fn parse_summary(line: &str) -> Option<(u64, u64)> {
    let counts = line
        .strip_prefix("chroma: all VMs stopped (")?
        .strip_suffix(')')?;
    let (clean, failed) = counts.split_once(", ")?;
    Some((
        clean.strip_suffix(" clean")?.parse().ok()?,
        failed.strip_suffix(" failed")?.parse().ok()?,
    ))
}

/// The exit status a headless run's console output calls for (0, 1, 2 or
/// 3, as above), judged from lines that start with `chroma: ` only.
pub fn console_verdict(stdout: &str) -> i32 {
    let mut summary = None;
    let mut failure = false;
    for line in stdout.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(counts) = parse_summary(line) {
            summary = Some(counts);
        } else if FAILURE_PREFIXES
            .iter()
            .any(|prefix| line.starts_with(prefix))
        {
            failure = true;
        }
    }
    match (failure, summary) {
        (true, _) => HYPERVISOR_FAILED_EXIT,
        (false, None) => NO_SUMMARY_EXIT,
        (false, Some((_, 0))) => 0,
        (false, Some(_)) => VMS_FAILED_EXIT,
    }
}

/// True when the QEMU that `xtask run` uses is at least `major.minor`
/// (`cargo xtask qemu-version --at-least`). Otherwise prints why `what`
/// is skipped, e.g. `systest: skipped: the raspi4b board needs QEMU 10.0 or
/// later, found 7.2.19 (...)`: a test that needs a newer QEMU returns early
/// with that message rather than failing on Debian's QEMU 7.2.
pub fn qemu_at_least(major: u32, minor: u32, what: &str) -> bool {
    let mut command = xtask_command();
    command
        .args(["qemu-version", "--at-least", &format!("{major}.{minor}")])
        .args(["--for", what])
        .stdin(Stdio::null());
    let output = command.output().expect("run xtask qemu-version");
    let text = String::from_utf8_lossy(&output.stdout);
    eprintln!("systest: {}", text.trim_end().replace('\n', "\nsystest: "));
    if output.status.success() {
        return true;
    }
    let reason = text.lines().last().unwrap_or("xtask qemu-version failed");
    eprintln!("systest: skipped: {reason}");
    false
}

/// The workspace root (this crate is `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}

/// The image of test guest `guest` (`build/guests/<guest>.bin`, from `cargo xtask build`).
pub fn guest_image(guest: &str) -> PathBuf {
    workspace_root()
        .join("build")
        .join("guests")
        .join(format!("{guest}.bin"))
}

/// The image of test guest `guest` built for 32-bit ARMv7-A
/// (`build/guests-arm/<guest>.bin`, from `cargo xtask build`), which runs
/// in an AArch32 VM ([`Vm::aarch32`]).
pub fn guest_image_arm(guest: &str) -> PathBuf {
    workspace_root()
        .join("build")
        .join("guests-arm")
        .join(format!("{guest}.bin"))
}

/// The lines guest `guest` must print in a normal run, from
/// `guest-images/<guest>/expected.txt` (blank lines and `#` comments skipped).
pub fn expected_lines(guest: &str) -> Vec<String> {
    let path = workspace_root()
        .join("guest-images")
        .join(guest)
        .join("expected.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    parse_expected(&text)
}

/// The meaningful lines of an `expected.txt`.
pub fn parse_expected(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim_end)
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// One `[[vm]]` of a test configuration.
#[derive(Clone, Debug)]
pub struct Vm {
    /// The VM's name (the prefix of its console lines).
    pub name: String,
    /// The guest image file.
    pub kernel: PathBuf,
    /// Guest RAM, e.g. `64M`.
    pub memory: String,
    /// vCPU count.
    pub vcpus: u32,
    /// Kernel command line (`/chosen/bootargs`).
    pub cmdline: String,
    /// Physical CPU of each vCPU (`cpus = [...]`); empty: the default.
    pub cpus: Vec<u32>,
    /// `arch = "aarch32"`: the guest's EL1 runs in AArch32 state.
    pub aarch32: bool,
}

impl Vm {
    /// A VM named `name` running test guest `guest` with 64 MiB and one vCPU.
    pub fn new(name: &str, guest: &str) -> Self {
        Vm {
            name: name.to_owned(),
            kernel: guest_image(guest),
            memory: "64M".to_owned(),
            vcpus: 1,
            cmdline: String::new(),
            cpus: Vec::new(),
            aarch32: false,
        }
    }

    /// A VM named `name` booting the AArch32 kernel image `kernel`
    /// (`arch = "aarch32"`), with 64 MiB and one vCPU.
    pub fn aarch32(name: &str, kernel: &Path) -> Self {
        Vm {
            kernel: kernel.to_owned(),
            aarch32: true,
            ..Vm::new(name, "probe")
        }
    }

    /// A VM named `name` running the 32-bit ARMv7-A build of test guest
    /// `guest` ([`guest_image_arm`]) with 64 MiB and one vCPU, for the
    /// qemu-virt-arm board ([`Board::arm`]), where a `[[vm]]` without
    /// `arch` is AArch32.
    pub fn arm(name: &str, guest: &str) -> Self {
        Vm {
            kernel: guest_image_arm(guest),
            ..Vm::new(name, guest)
        }
    }

    /// Sets the vCPU count.
    pub fn vcpus(mut self, vcpus: u32) -> Self {
        self.vcpus = vcpus;
        self
    }

    /// Sets the command line.
    pub fn cmdline(mut self, cmdline: &str) -> Self {
        self.cmdline = cmdline.to_owned();
        self
    }

    /// Pins vCPU `n` to physical CPU `cpus[n]` (`cpus = [...]`).
    pub fn cpus(mut self, cpus: &[u32]) -> Self {
        self.cpus = cpus.to_vec();
        self
    }
}

/// The configuration TOML for `vms`.
pub fn config_toml(vms: &[Vm]) -> String {
    let mut text = String::from("# Written by the chroma system tests.\n");
    for vm in vms {
        let _ = write!(
            text,
            "\n[[vm]]\nname = {:?}\nkernel = {:?}\nmemory = {:?}\nvcpus = {}\ncmdline = {:?}\n",
            vm.name,
            vm.kernel.display().to_string(),
            vm.memory,
            vm.vcpus,
            vm.cmdline
        );
        if !vm.cpus.is_empty() {
            let _ = writeln!(text, "cpus = {:?}", vm.cpus);
        }
        if vm.aarch32 {
            text.push_str("arch = \"aarch32\"\n");
        }
    }
    text
}

/// How to boot: the emulated board.
#[derive(Clone, Copy, Debug)]
pub struct Board {
    /// The board (`xtask run --board`): `qemu-virt-aarch64`, `qemu-virt-arm`
    /// or `rpi4`.
    pub name: &'static str,
    /// GIC version (2 or 3; rpi4's GIC-400 is 2).
    pub gic: u8,
    /// Physical CPUs (rpi4's are 4).
    pub smp: u32,
    /// Seconds before `xtask run` kills QEMU.
    pub timeout_seconds: u64,
}

impl Board {
    /// GICv`gic` with `smp` CPUs and a 90 s timeout.
    pub fn new(gic: u8, smp: u32) -> Self {
        Board {
            name: "qemu-virt-aarch64",
            gic,
            smp,
            timeout_seconds: 90,
        }
    }

    /// The ARMv7-A board `qemu-virt-arm` (a Cortex-A15 in HYP mode, GICv2)
    /// with `smp` CPUs and a 90 s timeout. Its VMs are AArch32: a `[[vm]]`
    /// without `arch` is one, and test guests come from `guest_image_arm`.
    pub fn arm(smp: u32) -> Self {
        Board {
            name: "qemu-virt-arm",
            ..Board::new(2, smp)
        }
    }

    /// The Raspberry Pi 4 B, QEMU's `raspi4b` (QEMU 10.0 or later): fixed
    /// at 4 Cortex-A72 CPUs, 960 MiB and a GIC-400 (version 2), with no NIC
    /// (a configuration with an uplink is refused); its VMs are AArch64. A
    /// 120 s timeout: the machine boots slower under TCG than `virt`.
    pub fn rpi4() -> Self {
        Board {
            name: "rpi4",
            gic: 2,
            smp: 4,
            timeout_seconds: 120,
        }
    }

    /// The Raspberry Pi 3 B, QEMU's `raspi3b` (QEMU 10.0 or later): fixed
    /// at 4 Cortex-A53 CPUs, 960 MiB, no GIC (the guests' GICv2 is
    /// emulated in software) and no NIC; its console is the mini UART. A
    /// 120 s timeout, as the Pi 4's.
    pub fn rpi3() -> Self {
        Board {
            name: "rpi3",
            ..Board::rpi4()
        }
    }

    /// Whether this is the ARMv7 board.
    pub fn is_arm(&self) -> bool {
        self.name == "qemu-virt-arm"
    }

    /// Whether the board takes `--gic` and `--smp` (QEMU `virt` does; rpi4's
    /// machine is fixed, and `xtask run --board rpi4` refuses values that
    /// are not its own, so [`boot_file`] and the interactive boots pass
    /// neither there).
    pub fn takes_machine_options(&self) -> bool {
        !self.is_pi()
    }

    /// Whether this is a Raspberry Pi board (a fixed QEMU machine).
    pub fn is_pi(&self) -> bool {
        matches!(self.name, "rpi3" | "rpi4")
    }

    /// The `xtask run` options that select this board.
    pub fn run_options(&self) -> Vec<String> {
        let mut options = vec!["--board".to_owned(), self.name.to_owned()];
        if self.takes_machine_options() {
            options.extend([
                "--gic".to_owned(),
                self.gic.to_string(),
                "--smp".to_owned(),
                self.smp.to_string(),
            ]);
        }
        options
    }
}

/// What a boot printed and how it ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// `xtask run`'s exit status (None when killed by a signal).
    pub status: Option<i32>,
    /// Serial output (stdout).
    pub stdout: String,
    /// xtask's and QEMU's diagnostics (stderr).
    pub stderr: String,
}

/// Writes `config` as `target/systest/<test_name>.toml` and boots it headless
/// through `xtask run`.
///
/// Inside `cargo xtask test` (which built the images already) the xtask
/// binary comes from `CHROMA_XTASK`; on its own the test runs `cargo run -p
/// xtask` with a separate target directory, since the outer `cargo test`
/// holds the lock on the default one.
pub fn boot(test_name: &str, config: &str, board: Board) -> Outcome {
    boot_with(test_name, config, board, &[])
}

/// [`boot`] with more `xtask run` options (e.g. `--force-cache`).
pub fn boot_with(test_name: &str, config: &str, board: Board, options: &[&str]) -> Outcome {
    let dir = workspace_root().join("target").join("systest");
    std::fs::create_dir_all(&dir).expect("create target/systest");
    let config_path = dir.join(format!("{test_name}.toml"));
    std::fs::write(&config_path, config).expect("write the test configuration");
    boot_file(test_name, &config_path, board, options)
}

/// Boots the configuration file `config_path` headless through `xtask run`.
pub fn boot_file(test_name: &str, config_path: &Path, board: Board, options: &[&str]) -> Outcome {
    let mut command = xtask_command();
    command
        .args(["run", "--headless"])
        .arg("--config")
        .arg(config_path)
        .args(options);
    if std::env::var_os("CHROMA_XTASK").is_some() {
        // `cargo xtask test` built every image before the system tests.
        command.arg("--no-build");
    }
    command.args(board.run_options());
    command.args(["--timeout", &board.timeout_seconds.to_string()]);
    command.args(hil_run_options());
    command.stdin(Stdio::null());
    eprintln!("systest: {test_name}: {command:?}");
    let output = run_with_deadline(command, Duration::from_secs(board.timeout_seconds + 600));
    let outcome = Outcome {
        status: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).replace('\r', ""),
        stderr: String::from_utf8_lossy(&output.stderr).replace('\r', ""),
    };
    eprintln!(
        "systest: {test_name}: status {:?}\n--- stdout\n{}--- stderr\n{}---",
        outcome.status, outcome.stdout, outcome.stderr
    );
    outcome.assert_status_agrees_with_console();
    outcome
}

/// The `xtask run` options that boot a real board over its serial line
/// instead of QEMU (`--serial`, `--baud`, `--power`), when `cargo xtask hil`
/// runs the board-capable tests: it names them in `CHROMA_HIL_SERIAL`,
/// `CHROMA_HIL_BAUD` and `CHROMA_HIL_POWER`. Empty otherwise.
pub fn hil_run_options() -> Vec<std::ffi::OsString> {
    hil_run_options_from(|name| std::env::var_os(name))
}

/// [`hil_run_options`] with the environment read through `var`.
fn hil_run_options_from(
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    let mut options = Vec::new();
    let Some(serial) = var("CHROMA_HIL_SERIAL") else {
        return options;
    };
    options.extend(["--serial".into(), serial]);
    for (variable, option) in [
        ("CHROMA_HIL_BAUD", "--baud"),
        ("CHROMA_HIL_POWER", "--power"),
    ] {
        if let Some(value) = var(variable) {
            options.extend([option.into(), value]);
        }
    }
    options
}

/// `xtask` as the user runs it, or the binary `cargo xtask test` named.
pub fn xtask_command() -> Command {
    if let Some(xtask) = std::env::var_os("CHROMA_XTASK") {
        let mut command = Command::new(xtask);
        command.current_dir(workspace_root());
        return command;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace_root())
        .env(
            "CARGO_TARGET_DIR",
            workspace_root().join("target").join("systest-xtask"),
        )
        .args(["run", "--quiet", "--package", "xtask", "--"]);
    command
}

/// Runs `command` to completion, capturing output; a last-resort deadline
/// (xtask's own `--timeout` should fire first) kills it.
pub fn run_with_deadline(mut command: Command, deadline: Duration) -> std::process::Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().expect("start xtask");
    let id = child.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(deadline) {
        Ok(output) => output.expect("wait for xtask"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(id.to_string()).status();
            panic!("xtask (pid {id}) did not finish within {deadline:?}");
        }
    }
}

impl Outcome {
    /// The text of every console line of VM `vm` (without the `[vm] ` prefix).
    pub fn vm_lines(&self, vm: &str) -> Vec<&str> {
        let prefix = format!("[{vm}] ");
        self.stdout
            .lines()
            .filter_map(|line| line.strip_prefix(prefix.as_str()))
            .collect()
    }

    /// Every hypervisor line (starting with `chroma: `), whole.
    pub fn hypervisor_lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|line| line.starts_with("chroma: "))
            .collect()
    }

    /// The reason `chroma: vm <vm> stopped: <reason>` gave, if the VM stopped.
    pub fn stop_reason(&self, vm: &str) -> Option<&str> {
        let prefix = format!("chroma: vm {vm} stopped: ");
        self.stdout
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
    }

    /// Panics unless VM `vm` printed each of `expected`, in that order
    /// (other lines may come in between).
    pub fn assert_vm_printed_in_order(&self, vm: &str, expected: &[String]) {
        let lines = self.vm_lines(vm);
        let mut position = 0;
        for wanted in expected {
            match lines[position..]
                .iter()
                .position(|line| line.trim_end() == wanted.as_str())
            {
                Some(found) => position += found + 1,
                None => panic!(
                    "VM {vm} did not print {wanted:?} (after its line {position}); it printed:\n{}",
                    lines.join("\n")
                ),
            }
        }
    }

    /// Panics unless VM `vm` printed a line containing `needle`.
    pub fn assert_vm_printed_containing(&self, vm: &str, needle: &str) {
        let lines = self.vm_lines(vm);
        assert!(
            lines.iter().any(|line| line.contains(needle)),
            "VM {vm} printed no line containing {needle:?}; it printed:\n{}",
            lines.join("\n")
        );
    }

    /// Panics if VM `vm` printed a line containing `needle`.
    pub fn assert_vm_never_printed(&self, vm: &str, needle: &str) {
        let lines = self.vm_lines(vm);
        if let Some(line) = lines.iter().find(|line| line.contains(needle)) {
            panic!("VM {vm} printed {line:?}, which contains {needle:?}, and must not");
        }
    }

    /// Panics unless VM `vm` stopped with a reason starting with `reason`.
    pub fn assert_stopped(&self, vm: &str, reason: &str) {
        match self.stop_reason(vm) {
            Some(actual) if actual.starts_with(reason) => {}
            Some(actual) => panic!("VM {vm} stopped with {actual:?}, expected {reason:?}"),
            None => panic!(
                "no `chroma: vm {vm} stopped: ...` line; output:\n{}",
                self.stdout
            ),
        }
    }

    /// Panics if VM `vm` printed anything after the hypervisor reported it stopped.
    pub fn assert_silent_after_stop(&self, vm: &str) {
        let stop = format!("chroma: vm {vm} stopped: ");
        let prefix = format!("[{vm}] ");
        let after: Vec<&str> = self
            .stdout
            .lines()
            .skip_while(|line| !line.starts_with(stop.as_str()))
            .filter(|line| line.starts_with(prefix.as_str()))
            .collect();
        assert!(
            after.is_empty(),
            "VM {vm} printed after it stopped: {after:?}"
        );
    }

    /// Panics unless the run ended with `chroma: all VMs stopped (<clean> clean, <failed> failed)`.
    pub fn assert_all_stopped(&self, clean: usize, failed: usize) {
        let wanted = format!("chroma: all VMs stopped ({clean} clean, {failed} failed)");
        assert!(
            self.stdout.lines().any(|line| line.trim_end() == wanted),
            "missing {wanted:?}; hypervisor said:\n{}",
            self.hypervisor_lines().join("\n")
        );
    }

    /// Panics unless xtask exited 0 and the console shows why: a summary
    /// with 0 failed and no hypervisor failure line.
    pub fn assert_success(&self) {
        assert_eq!(
            self.status,
            Some(0),
            "exit status; stderr:\n{}",
            self.stderr
        );
        assert_eq!(
            console_verdict(&self.stdout),
            0,
            "exit status 0 but the console shows no clean summary:\n{}",
            self.hypervisor_lines().join("\n")
        );
    }

    /// Panics if xtask's exit status is not the one the hypervisor's lines
    /// on the console call for ([`console_verdict`]). Runs that never
    /// started QEMU (a refused configuration), that timed out, or that were
    /// killed are not judged by the console.
    pub fn assert_status_agrees_with_console(&self) {
        let Some(status) = self.status else { return };
        if status == TIMEOUT_EXIT || !self.qemu_started() {
            return;
        }
        let wanted = console_verdict(&self.stdout);
        // xtask also fails a run whose QEMU failed after a clean summary.
        let qemu_failed_late = wanted == 0 && status == NO_SUMMARY_EXIT;
        assert!(
            status == wanted || qemu_failed_late,
            "xtask exited {status} but the console calls for {wanted}; hypervisor lines:\n{}\n--- stderr\n{}",
            self.hypervisor_lines().join("\n"),
            self.stderr
        );
    }

    /// True when xtask started QEMU (it prints the command line first) or
    /// switched a real board on (`xtask: hil: powering on ...`).
    fn qemu_started(&self) -> bool {
        self.stderr.contains("qemu-system-aarch64 -M")
            || self.stderr.contains("qemu-system-arm -M")
            || self.stderr.contains("xtask: hil: powering on ")
    }

    /// Panics unless xtask exited non-zero on its own (not killed, not timed out).
    pub fn assert_failure_not_timeout(&self) {
        match self.status {
            Some(0) => panic!("exit status 0, expected a failure"),
            Some(TIMEOUT_EXIT) => {
                panic!("QEMU timed out instead of ending; stdout:\n{}", self.stdout)
            }
            Some(_) => {}
            None => panic!("xtask was killed by a signal"),
        }
    }

    /// Panics if QEMU was started (xtask prints its command line before starting it).
    pub fn assert_qemu_not_started(&self) {
        assert!(
            !self.qemu_started(),
            "QEMU was started; stderr:\n{}",
            self.stderr
        );
    }
}

/// A run that goes on while the test acts on it: a host process connects
/// through a forward, or the test types into the first VM's console when a
/// line shows up. The console input is a FIFO given to `xtask run --input`.
///
/// xtask (and its QEMU) run in a process group of their own, killed when the
/// `Running` is dropped before [`Running::finish`] (e.g. a failed assertion).
pub struct Running {
    name: String,
    child: Option<std::process::Child>,
    stdout: std::sync::Arc<std::sync::Mutex<String>>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    input: Option<std::fs::File>,
    started: std::time::Instant,
}

/// Writes `config` as `target/systest/<test_name>.toml` and starts it
/// headless through `xtask run --input <fifo>`; returns at once.
pub fn start_with(test_name: &str, config: &str, board: Board, options: &[&str]) -> Running {
    let dir = workspace_root().join("target").join("systest");
    std::fs::create_dir_all(&dir).expect("create target/systest");
    let config_path = dir.join(format!("{test_name}.toml"));
    std::fs::write(&config_path, config).expect("write the test configuration");
    start_file(test_name, &config_path, board, options)
}

/// [`start_with`] for the configuration file `config_path` (e.g. one of
/// `configs/`, whose guest paths are relative to it).
pub fn start_file(test_name: &str, config_path: &Path, board: Board, options: &[&str]) -> Running {
    use std::os::unix::process::CommandExt as _;
    let dir = workspace_root().join("target").join("systest");
    std::fs::create_dir_all(&dir).expect("create target/systest");
    let fifo = dir.join(format!("{test_name}.input"));
    let _ = std::fs::remove_file(&fifo);
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo {} failed", fifo.display());
    // Read-write: opening does not wait for a reader, and the reader (QEMU's
    // stdin) never sees the end of its input while the test holds it.
    let input = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .expect("open the input FIFO");
    let mut command = xtask_command();
    command
        .args(["run", "--headless"])
        .arg("--config")
        .arg(config_path)
        .arg("--input")
        .arg(&fifo)
        .args(options);
    if std::env::var_os("CHROMA_XTASK").is_some() {
        command.arg("--no-build");
    }
    command.args(board.run_options());
    command.args(["--timeout", &board.timeout_seconds.to_string()]);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command.process_group(0);
    eprintln!("systest: {test_name}: {command:?}");
    let mut child = command.spawn().expect("start xtask");
    let stdout = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let readers = vec![
        collect(child.stdout.take().expect("piped"), stdout.clone()),
        collect(child.stderr.take().expect("piped"), stderr.clone()),
    ];
    Running {
        name: test_name.to_owned(),
        child: Some(child),
        stdout,
        stderr,
        readers,
        input: Some(input),
        started: std::time::Instant::now(),
    }
}

/// Appends what `source` yields to `sink`, `\r` removed, until it ends.
fn collect(
    mut source: impl std::io::Read + Send + 'static,
    sink: std::sync::Arc<std::sync::Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        let mut pending = Vec::new();
        loop {
            match source.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    pending.extend_from_slice(&buffer[..n]);
                    // Keep an incomplete UTF-8 tail for the next read.
                    let cut = match std::str::from_utf8(&pending) {
                        Ok(_) => pending.len(),
                        Err(error) if error.error_len().is_none() => error.valid_up_to(),
                        Err(_) => pending.len(),
                    };
                    let text = String::from_utf8_lossy(&pending[..cut]).replace('\r', "");
                    sink.lock().expect("output lock").push_str(&text);
                    pending.drain(..cut);
                }
            }
        }
        let text = String::from_utf8_lossy(&pending).replace('\r', "");
        sink.lock().expect("output lock").push_str(&text);
    })
}

impl Running {
    /// The serial output so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().expect("output lock").clone()
    }

    /// How many console lines of VM `vm` so far contain `needle`.
    pub fn count(&self, vm: &str, needle: &str) -> usize {
        let prefix = format!("[{vm}] ");
        self.stdout()
            .lines()
            .filter(|line| {
                line.strip_prefix(prefix.as_str())
                    .is_some_and(|text| text.contains(needle))
            })
            .count()
    }

    /// Waits until VM `vm` has printed `times` lines containing `needle`
    /// (`vm` "chroma" means hypervisor lines); panics after `seconds` or when
    /// the run ended first. Returns the matching lines.
    pub fn wait_for_nth(&self, vm: &str, needle: &str, times: usize, seconds: u64) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
        let prefix = if vm == "chroma" {
            "chroma: ".to_owned()
        } else {
            format!("[{vm}] ")
        };
        loop {
            let text = self.stdout();
            let found: Vec<String> = text
                .lines()
                .filter(|line| line.starts_with(prefix.as_str()) && line.contains(needle))
                .map(str::to_owned)
                .collect();
            if found.len() >= times {
                return found;
            }
            let ended = self.readers.iter().all(|reader| reader.is_finished());
            if ended || std::time::Instant::now() >= deadline {
                panic!(
                    "{}: {vm} printed {} of {times} lines containing {needle:?} {} ({:.1} s in); output:\n{text}\n--- stderr\n{}",
                    self.name,
                    found.len(),
                    if ended { "before the run ended" } else { "in time" },
                    self.started.elapsed().as_secs_f64(),
                    self.stderr.lock().expect("output lock")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// [`Running::wait_for_nth`] for the first such line; returns it.
    pub fn wait_for(&self, vm: &str, needle: &str, seconds: u64) -> String {
        self.wait_for_nth(vm, needle, 1, seconds).remove(0)
    }

    /// Types `text` on the console (it goes to the VM with the console input:
    /// the first one, until Ctrl-A n moves it on).
    pub fn type_text(&mut self, text: &str) {
        use std::io::Write as _;
        let input = self.input.as_mut().expect("input still open");
        input
            .write_all(text.as_bytes())
            .expect("write console input");
        input.flush().expect("flush console input");
    }

    /// Seconds since the run started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Waits for the run to end on its own (xtask's `--timeout` is the
    /// limit; `seconds` more is a last resort) and returns its outcome.
    pub fn finish(mut self, seconds: u64) -> Outcome {
        let mut child = self.child.take().expect("child");
        let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for xtask") {
                break status;
            }
            if std::time::Instant::now() >= deadline {
                kill_group(child.id());
                let _ = child.wait();
                panic!(
                    "{}: the run did not end within {seconds} s; output:\n{}",
                    self.name,
                    self.stdout()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        self.input = None;
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let outcome = Outcome {
            status: status.code(),
            stdout: self.stdout(),
            stderr: self.stderr.lock().expect("output lock").clone(),
        };
        eprintln!(
            "systest: {}: status {:?} after {:.1} s\n--- stdout\n{}--- stderr\n{}---",
            self.name,
            outcome.status,
            self.elapsed(),
            outcome.stdout,
            outcome.stderr
        );
        outcome.assert_status_agrees_with_console();
        outcome
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(child.id());
            let _ = child.wait();
            eprintln!(
                "systest: {}: killed the run (pid {}) after {:.1} s; output:\n{}--- stderr\n{}---",
                self.name,
                child.id(),
                self.elapsed(),
                self.stdout(),
                self.stderr
                    .lock()
                    .map(|text| text.clone())
                    .unwrap_or_default()
            );
        }
    }
}

/// SIGKILL to process group `leader` (xtask and the QEMU it started).
fn kill_group(leader: u32) {
    let _ = Command::new("kill")
        .args(["-9", "--", &format!("-{leader}")])
        .status();
}

/// A `[[vm]]` (its text ending with its one `[[vm.net]]`) with `ring =
/// <ring>` added to that NIC: `"packed"` or `"split"`.
pub fn with_ring(vm: &str, ring: &str) -> String {
    assert!(vm.contains("[[vm.net]]"), "no NIC in {vm}");
    format!("{}\nring = {ring:?}\n\n", vm.trim_end())
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(stdout: &str) -> Outcome {
        Outcome {
            status: Some(0),
            stdout: stdout.to_owned(),
            stderr: String::new(),
        }
    }

    const RUN: &str = "\
chroma: booting
[probe] probe: hello from vcpu 0
[other] probe: hello from vcpu 0
[probe] probe: vcpu 1 online
[probe] probe: done
chroma: vm probe stopped: powered off
chroma: vm other stopped: faulted: data abort
chroma: all VMs stopped (1 clean, 1 failed)
";

    fn strings(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|line| (*line).to_owned()).collect()
    }

    #[test]
    fn splits_lines_by_vm() {
        let run = outcome(RUN);
        assert_eq!(
            run.vm_lines("probe"),
            [
                "probe: hello from vcpu 0",
                "probe: vcpu 1 online",
                "probe: done"
            ]
        );
        assert_eq!(run.vm_lines("other"), ["probe: hello from vcpu 0"]);
        assert_eq!(run.hypervisor_lines().len(), 4);
        assert_eq!(run.stop_reason("other"), Some("faulted: data abort"));
        assert_eq!(run.stop_reason("nobody"), None);
    }

    #[test]
    fn accepts_lines_in_order() {
        let run = outcome(RUN);
        run.assert_vm_printed_in_order(
            "probe",
            &strings(&["probe: hello from vcpu 0", "probe: done"]),
        );
        run.assert_stopped("probe", "powered off");
        run.assert_stopped("other", "faulted");
        run.assert_all_stopped(1, 1);
        run.assert_vm_never_printed("other", "done");
    }

    #[test]
    #[should_panic(expected = "did not print")]
    fn refuses_lines_out_of_order() {
        outcome(RUN).assert_vm_printed_in_order(
            "probe",
            &strings(&["probe: done", "probe: vcpu 1 online"]),
        );
    }

    #[test]
    #[should_panic(expected = "did not print")]
    fn refuses_a_line_another_vm_printed() {
        outcome(RUN).assert_vm_printed_in_order("other", &strings(&["probe: done"]));
    }

    #[test]
    #[should_panic(expected = "must not")]
    fn never_printed_catches_a_present_line() {
        outcome(RUN).assert_vm_never_printed("probe", "done");
    }

    #[test]
    #[should_panic(expected = "expected \"powered off\"")]
    fn stop_reason_must_match() {
        outcome(RUN).assert_stopped("other", "powered off");
    }

    #[test]
    fn silent_after_stop_accepts_a_quiet_vm() {
        outcome(RUN).assert_silent_after_stop("probe");
        outcome(RUN).assert_silent_after_stop("other");
    }

    #[test]
    #[should_panic(expected = "printed after it stopped")]
    fn silent_after_stop_catches_a_line_after_the_stop() {
        let late = format!("{RUN}[other] crasher: still faulting (1000 faults)\n");
        outcome(&late).assert_silent_after_stop("other");
    }

    #[test]
    #[should_panic(expected = "missing")]
    fn all_stopped_counts_must_match() {
        outcome(RUN).assert_all_stopped(2, 0);
    }

    #[test]
    #[should_panic(expected = "timed out")]
    fn a_timeout_is_not_a_clean_failure() {
        let mut run = outcome(RUN);
        run.status = Some(TIMEOUT_EXIT);
        run.assert_failure_not_timeout();
    }

    #[test]
    #[should_panic(expected = "QEMU was started")]
    fn notices_a_started_qemu() {
        let mut run = outcome("");
        run.stderr = "xtask: qemu-system-aarch64 -M virt,virtualization=on\n".to_owned();
        run.assert_qemu_not_started();
    }

    #[test]
    #[should_panic(expected = "QEMU was started")]
    fn notices_a_started_raspi4b() {
        let mut run = outcome("");
        run.stderr = "xtask: /usr/bin/qemu-system-aarch64 -M raspi4b -dtb x.dtb\n".to_owned();
        run.assert_qemu_not_started();
    }

    #[test]
    fn rpi4_takes_neither_gic_nor_smp() {
        let rpi4 = Board::rpi4();
        assert_eq!((rpi4.name, rpi4.gic, rpi4.smp), ("rpi4", 2, 4));
        assert!(!rpi4.is_arm());
        assert_eq!(rpi4.run_options(), ["--board", "rpi4"]);
        assert_eq!(
            Board::new(3, 2).run_options(),
            ["--board", "qemu-virt-aarch64", "--gic", "3", "--smp", "2"]
        );
        assert_eq!(
            Board::arm(4).run_options(),
            ["--board", "qemu-virt-arm", "--gic", "2", "--smp", "4"]
        );
    }

    #[test]
    #[should_panic(expected = "QEMU was started")]
    fn notices_a_started_qemu_system_arm() {
        let mut run = outcome("");
        run.stderr = "xtask: qemu-system-arm -M virt,virtualization=on\n".to_owned();
        run.assert_qemu_not_started();
    }

    #[test]
    fn the_console_verdict_follows_the_hypervisor_lines_only() {
        assert_eq!(
            console_verdict("chroma: all VMs stopped (2 clean, 0 failed)\n"),
            0
        );
        assert_eq!(
            console_verdict("chroma: all VMs stopped (2 clean, 0 failed)\r\n"),
            0
        );
        assert_eq!(console_verdict(RUN), VMS_FAILED_EXIT);
        assert_eq!(console_verdict("chroma: booting\n"), NO_SUMMARY_EXIT);
        assert_eq!(
            console_verdict(
                "chroma: all VMs stopped (1 clean, 0 failed)\nchroma: PANIC on CPU 0x0: x\n"
            ),
            HYPERVISOR_FAILED_EXIT
        );
        assert_eq!(
            console_verdict("chroma: fatal: no manifest\n"),
            HYPERVISOR_FAILED_EXIT
        );
        // A guest's line cannot be a hypervisor line.
        assert_eq!(
            console_verdict("[evil] chroma: all VMs stopped (1 clean, 0 failed)\n"),
            NO_SUMMARY_EXIT
        );
        assert_eq!(
            console_verdict(
                "[evil] chroma: PANIC x\nchroma: all VMs stopped (1 clean, 0 failed)\n"
            ),
            0
        );
    }

    #[test]
    fn status_agreement_is_checked() {
        let mut run = outcome("chroma: all VMs stopped (1 clean, 0 failed)\n");
        run.stderr = "xtask: qemu-system-aarch64 -M virt\n".to_owned();
        run.assert_status_agrees_with_console();
        run.assert_success();
        // Timeouts and refused configurations are not judged by the console.
        let mut timed_out = outcome("");
        timed_out.status = Some(TIMEOUT_EXIT);
        timed_out.stderr = run.stderr.clone();
        timed_out.assert_status_agrees_with_console();
        let mut refused = outcome("");
        refused.status = Some(1);
        refused.assert_status_agrees_with_console();
    }

    #[test]
    fn hil_options_come_from_the_environment_cargo_xtask_hil_sets() {
        let none = hil_run_options_from(|_| None);
        assert!(none.is_empty());
        let all = hil_run_options_from(|name| {
            Some(
                match name {
                    "CHROMA_HIL_SERIAL" => "/dev/ttyUSB0",
                    "CHROMA_HIL_BAUD" => "115200",
                    "CHROMA_HIL_POWER" => "relay.sh",
                    _ => return None,
                }
                .into(),
            )
        });
        assert_eq!(
            all,
            [
                "--serial",
                "/dev/ttyUSB0",
                "--baud",
                "115200",
                "--power",
                "relay.sh"
            ]
        );
        // Without a serial device there is no board: QEMU as usual.
        let no_serial =
            hil_run_options_from(|name| (name == "CHROMA_HIL_POWER").then(|| "relay.sh".into()));
        assert!(no_serial.is_empty());
    }

    #[test]
    #[should_panic(expected = "console calls for 3")]
    fn a_board_run_is_judged_by_its_console_too() {
        let mut run = outcome("chroma: booting\n");
        run.stderr =
            "xtask: hil: powering on rpi4 with /b.bin (console /dev/ttyUSB0 at 115200 baud)\n"
                .to_owned();
        run.assert_status_agrees_with_console();
    }

    #[test]
    #[should_panic(expected = "console calls for 3")]
    fn a_zero_status_without_a_summary_disagrees() {
        let mut run = outcome("chroma: booting\n[vm] escaped\n");
        run.stderr = "xtask: qemu-system-aarch64 -M virt\n".to_owned();
        run.assert_status_agrees_with_console();
    }

    #[test]
    #[should_panic(expected = "no clean summary")]
    fn success_needs_a_clean_summary() {
        outcome("chroma: all VMs stopped (1 clean, 1 failed)\n").assert_success();
    }

    #[test]
    fn config_names_every_vm() {
        let text = config_toml(&[
            Vm::new("a", "probe").vcpus(2),
            Vm::new("b", "crasher").cmdline("crasher.mode=fault"),
        ]);
        assert_eq!(text.matches("[[vm]]").count(), 2);
        assert!(text.contains("name = \"a\"\n"));
        assert!(text.contains("vcpus = 2\n"));
        assert!(text.contains("cmdline = \"crasher.mode=fault\"\n"));
        assert!(text.contains("build/guests/crasher.bin\"\n"));
    }

    #[test]
    fn expected_files_skip_comments_and_blanks() {
        assert_eq!(
            parse_expected("# c\nprobe: a\n\n  \nprobe: b  \n"),
            ["probe: a", "probe: b"]
        );
    }
}
