//! `run.sh --gdb` on both boards: QEMU starts halted with its gdb server on
//! 127.0.0.1:1234, and `gdb-multiarch` with the hypervisor's ELF (whose
//! path xtask prints) attaches, stops at `chroma_primary_main` (the boot
//! CPU's first Rust function, reached on AArch64 at EL2 and on ARMv7 in HYP
//! mode) with symbols and a backtrace, and reads the vCPU-visible registers.
//!
//! The negative control: a breakpoint on a symbol that does not exist is
//! refused by gdb, so the check on the breakpoint's hit is not vacuous.

use chroma_systest::{workspace_root, xtask_command};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The hypervisor ELF of `board` (what `xtask run --gdb` prints): kept
/// per board, since two boards of one target share cargo's output path.
fn elf(board: &str) -> String {
    workspace_root()
        .join("build")
        .join(board)
        .join("chroma.elf")
        .display()
        .to_string()
}

/// Starts `xtask run --gdb` for `board` in the background; QEMU waits.
fn start_halted(board: &str) -> std::process::Child {
    let config = workspace_root().join(match board {
        "qemu-virt-arm" => "configs/probes-arm.toml",
        _ => "configs/probes.toml",
    });
    let mut command = xtask_command();
    command
        .args([
            "run",
            "--headless",
            "--gdb",
            "--board",
            board,
            "--timeout",
            "60",
        ])
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if std::env::var_os("CHROMA_XTASK").is_some() {
        command.arg("--no-build");
    }
    command.spawn().expect("start xtask run --gdb")
}

/// Runs gdb-multiarch in batch mode against :1234 with `commands`, once
/// QEMU listens (`child` is the run; its early end is reported).
fn gdb(board: &str, child: &mut std::process::Child, commands: &[&str]) -> String {
    let mut command = Command::new("gdb-multiarch");
    command.args(["-q", "-batch", "-nx"]).arg(elf(board));
    // The server may not listen yet: gdb retries the connection itself
    // only within one command, so wait until a connect succeeds.
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect("127.0.0.1:1234").is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut text = String::new();
            if let Some(mut out) = child.stderr.take() {
                let _ = out.read_to_string(&mut text);
            }
            panic!("xtask run --gdb ended ({status}) before QEMU listened:\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "QEMU's gdb server never listened"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    command.args(["-ex", "target remote 127.0.0.1:1234"]);
    for line in commands {
        command.args(["-ex", line]);
    }
    let output = command
        .output()
        .expect("gdb-multiarch runs (scripts/setup.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("gdb ({board}):\n{text}");
    text
}

/// Stops a background run and returns what it printed.
fn stop(mut child: std::process::Child) -> String {
    let _ = Command::new("pkill")
        .args(["-f", "gdb tcp:127.0.0.1:1234"])
        .status();
    let _ = child.wait();
    let mut text = String::new();
    if let Some(mut out) = child.stderr.take() {
        let _ = out.read_to_string(&mut text);
    }
    text
}

/// One board: the breakpoint hits with symbols, then the negative control.
fn attaches_and_stops_at_the_first_rust_function(board: &str) {
    let mut child = start_halted(board);
    let text = gdb(
        board,
        &mut child,
        &[
            "break chroma_primary_main",
            "continue",
            "bt 1",
            "info registers pc",
            "break chroma_no_such_function",
            "kill",
        ],
    );
    let xtask = stop(child);
    assert!(
        xtask.contains("attach with:") && xtask.contains(&elf(board)),
        "xtask names the ELF to attach with:\n{xtask}"
    );
    assert!(
        text.contains("Breakpoint 1, ") && text.contains("chroma_primary_main"),
        "the breakpoint hit, with the symbol:\n{text}"
    );
    assert!(
        text.lines()
            .any(|line| line.starts_with("pc ") && line.contains("chroma_primary_main")),
        "pc is in chroma_primary_main:\n{text}"
    );
    // Negative control: gdb does know when a symbol is missing.
    assert!(
        text.contains("Function \"chroma_no_such_function\" not defined"),
        "{text}"
    );
}

#[test]
fn gdb_attaches_to_every_board() {
    // One test, boards in turn: all use port 1234.
    attaches_and_stops_at_the_first_rust_function("qemu-virt-aarch64");
    attaches_and_stops_at_the_first_rust_function("qemu-virt-arm");
    attaches_and_stops_at_the_first_rust_function("rpi4");
}
