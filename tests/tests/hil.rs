//! Hardware in the loop, end to end, with QEMU acting as the board
//! (issue 12 item 5): `cargo xtask hil` runs board-capable tests of
//! `tests/tests/rpi.rs` over a real serial path (a pty pair held by socat,
//! opened with termios at 115200 8N1) and powers the "board" off and on
//! through `scripts/hil/qemu-board.sh`, which starts QEMU's `raspi4b` with
//! its serial port on the pty (and `raspi3b` for the Pi 3 test). The runner
//! never starts QEMU itself.
//!
//! - two board-capable tests pass, each on a freshly powered board booting
//!   its own bundle, and the board is off at the end;
//! - negative controls: a board whose serial port is unconnected times out
//!   (and is switched off), a failing power command fails the run and the
//!   board test (so `xtask hil` exits 1), and bad
//!   input (a missing device, a QEMU-only board, a filter that selects
//!   nothing) is refused with a clear error.
//!
//! Every test is named `hil_...` (`scripts/test.sh hil`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use chroma_systest::{
    qemu_at_least, run_with_deadline, workspace_root, xtask_command, TIMEOUT_EXIT,
};

/// The stand-in board's power command and cable, in a state directory of
/// its own; unplugged (QEMU and socat ended) when dropped.
struct StandIn {
    state: PathBuf,
}

impl StandIn {
    /// Plugs the cable (the pty pair) in a fresh `target/systest/<name>`.
    fn plug(name: &str) -> StandIn {
        let state = workspace_root().join("target").join("systest").join(name);
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir_all(&state).expect("create the state directory");
        let stand_in = StandIn { state };
        let status = Command::new(stand_in.script())
            .arg(&stand_in.state)
            .arg("plug")
            .status()
            .expect("run qemu-board.sh plug");
        assert!(status.success(), "qemu-board.sh plug failed");
        stand_in
    }

    fn script(&self) -> PathBuf {
        workspace_root().join("scripts/hil/qemu-board.sh")
    }

    /// The host's end of the cable (what `--serial` names).
    fn serial(&self) -> PathBuf {
        self.state.join("serial")
    }

    /// The power command.
    fn power(&self) -> String {
        format!("{} {}", self.script().display(), self.state.display())
    }

    /// The lines of `power.log`.
    fn power_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.state.join("power.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Panics if the stand-in's QEMU is still running.
    fn assert_off(&self) {
        assert!(
            !self.state.join("qemu.pid").exists(),
            "the board was left on"
        );
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = Command::new(self.script())
            .arg(&self.state)
            .arg("unplug")
            .status();
    }
}

/// Runs xtask with `args` (and `env`), capturing its output, and prints it.
fn xtask(what: &str, args: &[&str], env: &[(&str, &str)], deadline: Duration) -> Output {
    let mut command = xtask_command();
    command.args(args).stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    eprintln!("systest: {what}: {command:?}");
    let output = run_with_deadline(command, deadline);
    eprintln!(
        "systest: {what}: {:?}\n--- stdout\n{}--- stderr\n{}---",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `xtask run --headless --board rpi4` of `configs/probes.toml` over the
/// stand-in's serial line, with `extra` options.
fn run_on_board(stand_in: &StandIn, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "--headless",
        "--board",
        "rpi4",
        "--config",
        "configs/probes.toml",
        "--serial",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.push(stand_in.serial().display().to_string());
    args.extend(["--power".to_owned(), stand_in.power()]);
    if std::env::var_os("CHROMA_XTASK").is_some() {
        args.push("--no-build".to_owned());
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace('\r', "")
}

fn file_name(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("")
}

#[test]
fn hil_runs_two_board_tests_over_a_pty_power_cycling_the_board_for_each() {
    if !qemu_at_least(10, 0, "the raspi4b stand-in board") {
        return;
    }
    let stand_in = StandIn::plug("hil-e2e");
    let serial = stand_in.serial().display().to_string();
    let power = stand_in.power();
    let output = xtask(
        "hil",
        &[
            "hil",
            "--board",
            "rpi4",
            "--serial",
            &serial,
            "--baud",
            "115200",
            "--power",
            &power,
            "probes_side_by_side",
            "faulting_vm",
        ],
        &[],
        Duration::from_secs(900),
    );
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert!(
        output.status.success(),
        "xtask hil failed:\n{stdout}\n{stderr}"
    );
    for test in [
        "rpi4_probes_side_by_side_on_four_cores",
        "rpi4_a_faulting_vm_stops_alone",
    ] {
        assert!(
            stdout.contains(&format!("test {test} ... ok")),
            "{test} did not pass:\n{stdout}"
        );
    }
    assert!(stdout.contains("2 passed"), "{stdout}");
    // Off, on with the test's own bundle, off: once per test, in turn.
    let log = stand_in.power_log();
    assert_eq!(log.len(), 6, "{log:?}");
    let mut images = Vec::new();
    for cycle in log.chunks(3) {
        assert_eq!(cycle[0], "off", "{log:?}");
        let image = cycle[1].strip_prefix("on ").expect("on IMAGE");
        images.push(file_name(image).to_owned());
        assert_eq!(cycle[2], "off", "{log:?}");
    }
    images.sort();
    assert_eq!(
        images,
        ["bundle-rpi4_crasher_fault.bin", "bundle-rpi4_probes.bin"]
    );
    // The board was QEMU on the pty, twice; never on stdio.
    let qemu_log = std::fs::read_to_string(stand_in.state.join("qemu.log")).unwrap();
    assert_eq!(
        qemu_log.matches("-serial /dev/pts/").count(),
        2,
        "{qemu_log}"
    );
    assert!(!qemu_log.contains("-serial stdio"), "{qemu_log}");
    stand_in.assert_off();
}

/// The same runner drives the Pi 3 stand-in (`raspi3b`, the console on its
/// second serial port, the mini UART): one board test, one power cycle.
#[test]
fn hil_runs_a_pi3_board_test_over_a_pty() {
    if !qemu_at_least(10, 0, "the raspi3b stand-in board") {
        return;
    }
    let stand_in = StandIn::plug("hil-e2e-rpi3");
    let serial = stand_in.serial().display().to_string();
    let power = stand_in.power();
    let output = xtask(
        "hil rpi3",
        &[
            "hil",
            "--board",
            "rpi3",
            "--serial",
            &serial,
            "--power",
            &power,
            "probes_side_by_side",
        ],
        &[],
        Duration::from_secs(900),
    );
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert!(
        output.status.success(),
        "xtask hil failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("test rpi3_probes_side_by_side_on_four_cores ... ok"),
        "{stdout}"
    );
    let log = stand_in.power_log();
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(
        file_name(log[1].strip_prefix("on ").expect("on IMAGE")),
        "bundle-rpi3_probes.bin"
    );
    // The Pi 3's console is QEMU's second serial port: the first goes nowhere.
    let qemu_log = std::fs::read_to_string(stand_in.state.join("qemu.log")).unwrap();
    assert!(
        qemu_log.contains("-M raspi3b") && qemu_log.contains("-serial null -serial /dev/pts/"),
        "{qemu_log}"
    );
    stand_in.assert_off();
}

#[test]
fn hil_a_board_whose_serial_port_is_unconnected_times_out_and_is_switched_off() {
    if !qemu_at_least(10, 0, "the raspi4b stand-in board") {
        return;
    }
    let stand_in = StandIn::plug("hil-mute");
    let args = run_on_board(&stand_in, &["--timeout", "15"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = xtask(
        "mute board",
        &args,
        &[("QEMU_BOARD_UART", "null")],
        Duration::from_secs(600),
    );
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(TIMEOUT_EXIT), "{stderr}");
    assert!(!stdout.contains("chroma: "), "{stdout}");
    assert!(
        stderr.contains("no summary line from the board"),
        "{stderr}"
    );
    let log = stand_in.power_log();
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!((log[0].as_str(), log[2].as_str()), ("off", "off"));
    assert!(log[1].starts_with("on "), "{log:?}");
    // The board did run: QEMU was started with its serial port on nothing.
    let qemu_log = std::fs::read_to_string(stand_in.state.join("qemu.log")).unwrap();
    assert!(qemu_log.contains("-serial null"), "{qemu_log}");
    stand_in.assert_off();
}

#[test]
fn hil_a_failing_power_command_fails_the_run() {
    let stand_in = StandIn::plug("hil-power-fails");
    let mut args = run_on_board(&stand_in, &["--timeout", "60"]);
    let power = args.iter().position(|a| a == "--power").unwrap() + 1;
    args[power] = "test \"$CHROMA_HIL_ACTION\" = off || exit 7".to_owned();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = xtask("power fails", &args, &[], Duration::from_secs(600));
    let stderr = text(&output.stderr);
    let code = output.status.code();
    assert!(
        code.is_some_and(|code| code != 0 && code != TIMEOUT_EXIT),
        "{code:?}"
    );
    assert!(
        stderr.contains("CHROMA_HIL_ACTION=on) failed (exit status 7)"),
        "{stderr}"
    );
    // The board was never read: no console line.
    assert!(!text(&output.stdout).contains("chroma: "));

    // Through the runner: the board test fails, and so does `xtask hil`.
    let serial = stand_in.serial().display().to_string();
    let output = xtask(
        "hil, power fails",
        &[
            "hil",
            "--board",
            "rpi4",
            "--serial",
            &serial,
            "--power",
            args[power],
            "probes_side_by_side",
        ],
        &[],
        Duration::from_secs(900),
    );
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stdout.contains("test rpi4_probes_side_by_side_on_four_cores ... FAILED"),
        "{stdout}"
    );
    assert!(
        stderr.contains("xtask: hil: failed on rpi4: rpi ("),
        "{stderr}"
    );
}

#[test]
fn hil_refuses_bad_input_and_lists_the_board_tests() {
    let stand_in = StandIn::plug("hil-bad-input");
    let serial = stand_in.serial().display().to_string();
    let refused = |args: &[&str], why: &str| {
        let output = xtask("refused", args, &[], Duration::from_secs(600));
        assert!(!output.status.success(), "{args:?} was accepted");
        let stderr = text(&output.stderr);
        assert!(stderr.contains(why), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    };
    let hil = ["hil", "--board", "rpi4", "--power", "true", "--serial"];
    refused(
        &[&hil[..], &["/nonexistent/ttyUSB9"]].concat(),
        "/nonexistent/ttyUSB9: cannot open",
    );
    refused(
        &[&hil[..], &["/dev/null"]].concat(),
        "/dev/null: not a terminal",
    );
    refused(
        &[&hil[..], &[serial.as_str(), "no_such_test"]].concat(),
        "no board-capable test of rpi4 matches",
    );
    refused(
        &[
            "hil",
            "--board",
            "qemu-virt-aarch64",
            "--serial",
            &serial,
            "--power",
            "true",
        ],
        "is a QEMU machine",
    );
    refused(
        &["hil", "--board", "rpi4"],
        "--serial DEV and --power COMMAND",
    );
    refused(
        &[
            "run", "--board", "rpi4", "--serial", &serial, "--power", "true",
        ],
        "--serial needs --headless",
    );
    let listed = xtask(
        "list",
        &["hil", "--list", "--board", "rpi4"],
        &[],
        Duration::from_secs(600),
    );
    assert!(listed.status.success());
    let list = text(&listed.stdout);
    assert_eq!(list.lines().count(), 5, "{list}");
    assert!(
        list.lines()
            .all(|line| line.starts_with("rpi4\ttests/tests/rpi.rs\trpi4_")),
        "{list}"
    );
    // Nothing was ever switched on.
    assert!(stand_in.power_log().is_empty());
}
