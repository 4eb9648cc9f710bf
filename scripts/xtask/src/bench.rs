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
//! ([`plain_machine`]).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;

use crate::config::{manifest, parse_size, MachineFacts, ManifestOptions};
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
}

/// Builds, measures and prints.
pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    if !args.board.is_qemu_virt() {
        // Its figures compare chroma with plain QEMU `virt` peers of the
        // same CPUs and RAM, which a fixed raspi4b does not have yet.
        return Err(format!(
            "cargo xtask bench --board {}: not yet: the benchmarks compare \
             chroma with plain-QEMU peers on QEMU's virt machine",
            args.board.name()
        ));
    }
    let images = build_all(args.board)?;
    println!("{}", board_line(args.board));
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

    println!(
        "image size: chroma.bin {} bytes",
        file_size(&images.hypervisor_bin)?
    );
    println!(
        "image size: bundle with one VM manifest {} bytes",
        file_size(&bundle)?
    );

    let timeout = Duration::from_secs(args.timeout);
    let mut under_chroma = Vec::new();
    let mut plain = Vec::new();
    for round in 1..=args.runs {
        let chroma =
            time_to_first_line(qemu_command(&run_args, &bundle, None), "[probe] ", timeout)?;
        let bare = time_to_first_line(plain_qemu(args.board, &probe), "", timeout)?;
        println!(
            "round {round}: first guest line after {:.1} ms under chroma, {:.1} ms on plain QEMU",
            millis(chroma),
            millis(bare)
        );
        under_chroma.push(chroma);
        plain.push(bare);
    }
    let chroma_median = median(&mut under_chroma);
    let plain_median = median(&mut plain);
    println!(
        "first guest line, median of {}: {:.1} ms under chroma, {:.1} ms on plain QEMU, ratio {:.2}",
        args.runs,
        millis(chroma_median),
        millis(plain_median),
        chroma_median.as_secs_f64() / plain_median.as_secs_f64()
    );

    crate::bench_net::run(&images, args.board)?;

    if args.board != Board::QemuVirtAarch64 {
        println!("{}", DEVICE_MODEL_SKIPPED);
    } else if workspace_root()
        .join("hypervisor/virtio/benches/net.rs")
        .exists()
    {
        let mut bench = host_cargo();
        bench.args(["bench", "-p", "chroma-virtio", "--bench", "net"]);
        crate::process::run_checked(&mut bench, "cargo bench -p chroma-virtio --bench net")?;
    } else {
        println!("virtio net bench: not present yet (hypervisor/virtio/benches/net.rs)");
    }
    crate::bench_linux::run(args, &images)?;
    Ok(ExitCode::SUCCESS)
}

/// What the device model's figures (a host program, `cargo bench -p
/// chroma-virtio --bench net`) say on a board other than qemu-virt-aarch64.
const DEVICE_MODEL_SKIPPED: &str =
    "virtio net bench (device model ns/frame): not run for this board: it \
     measures chroma-virtio on the host, the same code and figures whatever the board \
     (`cargo xtask bench` on qemu-virt-aarch64 prints them)";

/// The first line of the bench's output: what runs chroma and what runs the peers.
fn board_line(board: Board) -> String {
    format!(
        "board {}: chroma on {} -M virt,virtualization=on -cpu {} ({} guests); \
         plain-QEMU peers on the same binary and CPU model, no hypervisor",
        board.name(),
        board.qemu_name(),
        board.default_cpu(),
        match board {
            Board::QemuVirtAarch64 | Board::Rpi3 | Board::Rpi4 => "AArch64",
            Board::QemuVirtArm => "AArch32",
        }
    )
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

/// Starts `command` and returns the time until a stdout line starting with
/// `prefix` (and not empty) appears; QEMU is killed afterwards.
fn time_to_first_line(mut command: Command, prefix: &str, timeout: Duration) -> Result<Duration> {
    command.stdout(Stdio::piped()).stderr(Stdio::null());
    let start = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|error| format!("cannot start QEMU: {error}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (sender, receiver) = mpsc::channel();
    let prefix = prefix.to_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let line = line.trim_end_matches('\r');
            if !line.trim().is_empty() && line.starts_with(&prefix) {
                let _ = sender.send(start.elapsed());
                break;
            }
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
    for board in [Board::QemuVirtAarch64, Board::QemuVirtArm] {
        let name = board.name();
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

/// Bundles `config` for a headless benchmark boot (2 CPUs, GICv2, 1 GiB,
/// the board's CPU model) and returns the run options and the bundle, so every
/// benchmark boots chroma the way `cargo xtask run --headless` does.
pub fn headless_bundle(
    config: &Path,
    board: Board,
    hypervisor_bin: &Path,
) -> Result<(RunArgs, PathBuf)> {
    let run_args = RunArgs {
        config: Some(config.to_path_buf()),
        board,
        smp: Some(2),
        cpu: Some(board.default_cpu().to_owned()),
        gic: Some(2),
        memory: Some("1G".to_owned()),
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
    };
    let machine = MachineFacts {
        physical_cpus: run_args.smp(),
        ram_bytes: parse_size(run_args.memory())?,
        board: run_args.board,
    };
    let manifest_bytes = manifest(config, &machine, &ManifestOptions::default())?;
    let bundle = write_bundle(hypervisor_bin, &manifest_bytes, board, config)?;
    Ok((run_args, bundle))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            if name.ends_with("qemu-virt-arm") {
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
    }

    #[test]
    fn first_line_timer_waits_for_the_prefix() {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "echo noise; sleep 0.2; echo '[probe] hello'; sleep 30",
        ]);
        let elapsed = time_to_first_line(command, "[probe] ", Duration::from_secs(10)).unwrap();
        assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
        let mut silent = Command::new("sh");
        silent.args(["-c", "echo noise; sleep 30"]);
        assert!(time_to_first_line(silent, "[probe] ", Duration::from_millis(300)).is_err());
    }
}
