//! The Raspberry Pi's default interactive setup (issue 12 item 6):
//! `configs/default-rpi.toml`, which `scripts/run.sh --board rpi4` (and
//! `--board rpi3`) boots when no `--config` is given: the Debian arm64
//! Linux guest with its shell and httpd (2 vCPUs on cores 0-1) and the
//! service guest netsvc (core 2) on a switch without an uplink (QEMU's
//! raspi4b and raspi3b have no NIC).
//!
//! The test boots that file as it is, types into the Linux shell, which has
//! the console input first, as a user would (`ping -c 3 10.0.2.15`, a line
//! through netsvc's TCP echo, 1 MB to its sink, a page from the guest's own
//! httpd, Ctrl-A c for the counters), sees the answers,
//! and powers Linux off. netsvc serves on until the run is stopped, as in
//! the interactive setup. The tests are named `rpi3_default_...` and
//! `rpi4_default_...`.

use std::time::Duration;

use chroma_systest::{start_file, workspace_root, Board};

/// The shell's banner: the console shell is up and reads its input.
const SHELL_UP: &str = "built-in shell (ash)";
/// The service guest's address in the default setup.
const SVC: &str = "10.0.2.15";
/// What the test sends through netsvc's echo: the shell computes the
/// number, so only the echoed line, not the typed command, contains it.
const ECHO_TYPED: &str = "echo echo-$((6*7)) | nc 10.0.2.15 7\n";
const ECHO_ANSWER: &str = "echo-42";

/// The lines VM `vm` printed in `console` (without the `[vm] ` prefix).
fn vm_lines<'a>(console: &'a str, vm: &str) -> Vec<&'a str> {
    let prefix = format!("[{vm}] ");
    console
        .lines()
        .filter_map(|line| line.strip_prefix(prefix.as_str()))
        .collect()
}

/// Checks that VM `vm`'s busybox `ping -c 3 <ip>` got every reply: its
/// statistics line says 3 received and it printed 3 replies from `ip`.
fn three_replies(console: &str, vm: &str, ip: &str) -> Result<(), String> {
    let lines = vm_lines(console, vm);
    let header = format!("--- {ip} ping statistics ---");
    let summary = lines
        .iter()
        .position(|line| line.trim_end() == header)
        .and_then(|at| lines.get(at + 1))
        .ok_or_else(|| format!("{vm} printed no ping statistics for {ip}"))?;
    if !summary.starts_with("3 packets transmitted, 3 packets received, 0% packet loss") {
        return Err(format!("{vm} pinging {ip}: {summary:?}"));
    }
    let reply = format!("64 bytes from {ip}: seq=");
    let replies = lines.iter().filter(|line| line.starts_with(&reply)).count();
    if replies < 3 {
        return Err(format!("{vm}: {replies} echo replies from {ip}"));
    }
    Ok(())
}

/// A line of the hypervisor saying that it failed.
fn hypervisor_failure(console: &str) -> Option<&str> {
    console.lines().find(|line| {
        ["chroma: fatal", "chroma: PANIC", "chroma: EL2 EXCEPTION"]
            .iter()
            .any(|bad| line.starts_with(bad))
    })
}

#[test]
fn rpi4_default_setup_boots_interactively_and_linux_pings_the_service_guest() {
    default_setup_boots_interactively(Board::rpi4());
}

#[test]
fn rpi3_default_setup_boots_interactively_and_linux_pings_the_service_guest() {
    default_setup_boots_interactively(Board::rpi3());
}

/// Boots the board's default configuration, as `run.sh --board <pi>` does,
/// and uses the Linux guest's shell.
fn default_setup_boots_interactively(board: Board) {
    let config = workspace_root().join("configs").join("default-rpi.toml");
    let board = Board {
        timeout_seconds: 400,
        ..board
    };
    let name = format!("{}_default", board.name);
    let mut run = start_file(&name, &config, board, &[]);
    run.wait_for("linux", "linux-guest: httpd on port 80", 300);
    run.wait_for("linux", SHELL_UP, 30);
    // Let the shell print its prompt before typing.
    std::thread::sleep(Duration::from_millis(500));
    run.type_text(&format!("ping -c 3 {SVC}\n"));
    run.wait_for("linux", &format!("--- {SVC} ping statistics ---"), 60);
    run.wait_for("linux", "packets transmitted", 10);
    run.type_text(ECHO_TYPED);
    run.wait_for("linux", ECHO_ANSWER, 60);
    // The sink and the guest's own httpd, as the file's header says.
    run.type_text("head -c 1000000 /dev/zero | nc 10.0.2.15 9\n");
    let sunk = run.wait_for("linux", "len=1000000 fnv64=", 60);
    run.type_text("wget -q -O - http://10.0.2.20/\n");
    run.wait_for("linux", "hello from busybox httpd", 30);
    // Ctrl-A c: the per-NIC counters, the service guest's included.
    run.type_text("\x01c");
    let counters = run.wait_for("chroma", "vm svc net0", 20);
    run.type_text("poweroff -f\n");
    run.wait_for("chroma", "vm linux stopped", 60);
    let console = run.stdout();
    // The service guest serves on (it has no end): stop the run here.
    drop(run);
    if let Err(error) = three_replies(&console, "linux", SVC) {
        panic!("{error}; console:\n{console}");
    }
    assert!(
        vm_lines(&console, "linux")
            .iter()
            .any(|line| line.trim_end() == ECHO_ANSWER),
        "no echo through netsvc; console:\n{console}"
    );
    assert!(counters.contains("rx "), "{counters}");
    assert!(sunk.starts_with("[linux] len=1000000 fnv64="), "{sunk}");
    assert!(
        console.contains("chroma: vm linux stopped: powered off"),
        "{console}"
    );
    assert_eq!(hypervisor_failure(&console), None, "{console}");
}

/// Negative control of the matchers above: console output without the
/// replies, with lost ones, or of another VM fails them.
#[test]
fn rpi4_default_matchers_refuse_output_without_the_replies() {
    let good = "[linux] PING 10.0.2.15 (10.0.2.15): 56 data bytes\n\
                [linux] 64 bytes from 10.0.2.15: seq=0 ttl=64 time=3.1 ms\n\
                [linux] 64 bytes from 10.0.2.15: seq=1 ttl=64 time=2.0 ms\n\
                [linux] 64 bytes from 10.0.2.15: seq=2 ttl=64 time=2.2 ms\n\
                [linux] \n\
                [linux] --- 10.0.2.15 ping statistics ---\n\
                [linux] 3 packets transmitted, 3 packets received, 0% packet loss\n";
    assert_eq!(three_replies(good, "linux", SVC), Ok(()));
    let typed_only = "[linux] ~ # ping -c 3 10.0.2.15\n";
    assert!(three_replies(typed_only, "linux", SVC).is_err());
    let lost = good
        .replace("3 packets received, 0%", "1 packets received, 66%")
        .replace(
            "[linux] 64 bytes from 10.0.2.15: seq=1 ttl=64 time=2.0 ms\n",
            "",
        );
    assert!(three_replies(&lost, "linux", SVC).is_err());
    let no_replies = good.replace("64 bytes from", "From");
    assert!(three_replies(&no_replies, "linux", SVC).is_err());
    assert!(three_replies(good, "svc", SVC).is_err());
    assert!(three_replies(good, "linux", "10.0.2.16").is_err());
    assert_eq!(hypervisor_failure(good), None);
    let failed = format!("{good}chroma: PANIC at core/src/vm.rs\n");
    assert!(hypervisor_failure(&failed).is_some());
    // A guest cannot fake the hypervisor's line: it comes prefixed.
    assert_eq!(
        hypervisor_failure("[linux] chroma: PANIC at nothing\n"),
        None
    );
}
