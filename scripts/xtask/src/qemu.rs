//! `cargo xtask run`: bundle a configuration with the hypervisor and boot it under QEMU.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Args;

use crate::bundle::bundle;
use crate::config::{manifest_and_uplink, parse_size, MachineFacts, ManifestOptions};
use crate::images::{board_dir, build_all, Images};
use crate::process::{command_line, exit_code};
use crate::verdict::ConsoleWatch;
use crate::{workspace_root, Board, Result};

/// The exit status `--timeout` ends with (as timeout(1) does).
pub const TIMEOUT_EXIT: u8 = 124;

/// QEMU's console escape key in interactive runs: Ctrl-] (ASCII 29).
const QEMU_ESCAPE_KEY: &str = "29";

/// Options of `cargo xtask run` (and `scripts/run.sh`).
#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    /// VM configuration (TOML); guest paths in it are relative to the file
    /// [default: the board's, in the workspace: configs/default.toml on
    /// qemu-virt-aarch64, configs/default-arm.toml on qemu-virt-arm,
    /// configs/default-rpi.toml on rpi4: the same guests without the uplink,
    /// as the Pi has no NIC under QEMU].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Board to run on.
    #[arg(long, value_enum, default_value_t = Board::QemuVirtAarch64)]
    pub board: Board,
    /// Physical CPUs of the emulated board [default: 2; rpi4 is fixed at 4
    /// and takes only that value].
    #[arg(long, value_name = "N")]
    pub smp: Option<u32>,
    /// CPU model of the emulated board (QEMU's `-cpu`) [default: the
    /// board's: `cortex-a57` for qemu-virt-aarch64, which runs fastest under
    /// TCG (`max,pauth=on` has pointer authentication); `cortex-a15` for
    /// qemu-virt-arm (`cortex-a7` works too); rpi4's Cortex-A72 is fixed].
    #[arg(long, value_name = "MODEL")]
    pub cpu: Option<String>,
    /// GIC version of the emulated board [default: 2; rpi4's GIC-400 is
    /// version 2 and takes only that value].
    #[arg(long, value_name = "2|3", value_parser = clap::value_parser!(u8).range(2..=3))]
    pub gic: Option<u8>,
    /// Board RAM (K, M or G suffix) [default: 1G; rpi4 is fixed at the 960M
    /// its device tree gives and takes only that value].
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// No terminal: serial on stdout, stdin from /dev/null, QEMU exits when the
    /// hypervisor stops. The exit status comes from the hypervisor's summary
    /// line: 0 if every VM ended cleanly, 1 if some failed, 2 if the
    /// hypervisor failed, 3 if QEMU ended without a summary.
    #[arg(long)]
    pub headless: bool,
    /// Kill QEMU and exit with status 124 after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Run the cache colouring and maintenance paths even where the hardware
    /// (QEMU models no caches) would not need them.
    #[arg(long)]
    pub force_cache: bool,
    /// Start QEMU halted with a gdb server on :1234.
    #[arg(long)]
    pub gdb: bool,
    /// Hypervisor log level: error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL")]
    pub log: Option<String>,
    /// Use the images already in build/ (the system tests pass this after `xtask test` built them).
    #[arg(long, hide = true)]
    pub no_build: bool,
    /// With an uplink switch: forward host TCP port HOST on 127.0.0.1 to
    /// GUEST_IP:PORT behind the uplink (repeatable), e.g. 8080:10.0.2.20:80.
    #[arg(long, value_name = "HOST:GUEST_IP:PORT")]
    pub forward: Vec<String>,
    /// Headless runs: feed this file to the console as typed input.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Appends ARG to QEMU's command line. Only for the system tests'
    /// negative controls: the escape test's (tests/tests/escape.rs), which
    /// turns semihosting on to show that its checks would catch a guest
    /// reaching the host, and the ARMv7 test's (tests/tests/armv7.rs), which
    /// turns the virtualization extensions off to enter chroma in SVC mode.
    #[arg(long, hide = true, value_name = "ARG", allow_hyphen_values = true)]
    pub test_only_qemu_arg: Vec<String>,
    /// A real board instead of QEMU (`--serial`, `--baud`, `--power`).
    #[command(flatten)]
    pub board_link: crate::hil::BoardLink,
}

/// The host forwards of the default configuration: the Linux guest's web
/// server and the service guest's echo and sink ports.
pub const DEFAULT_FORWARDS: [&str; 3] =
    ["8080:10.0.2.20:80", "7007:10.0.2.15:7", "7009:10.0.2.15:9"];

/// A parsed `--forward`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// Port on 127.0.0.1.
    pub host_port: u16,
    /// Guest address behind the uplink.
    pub guest_ip: String,
    /// Guest port.
    pub guest_port: u16,
}

/// Parses `HOST:GUEST_IP:PORT`.
pub fn parse_forward(text: &str) -> Result<Forward> {
    let parts: Vec<&str> = text.split(':').collect();
    let bad = || {
        format!(
            "--forward {text:?}: expected HOST_PORT:GUEST_IP:GUEST_PORT, e.g. 8080:10.0.2.20:80"
        )
    };
    let [host, ip, port] = parts.as_slice() else {
        return Err(bad());
    };
    let ok_ip = ip.split('.').count() == 4 && ip.split('.').all(|o| o.parse::<u8>().is_ok());
    match (host.parse::<u16>(), ok_ip, port.parse::<u16>()) {
        (Ok(host_port), true, Ok(guest_port)) if host_port != 0 && guest_port != 0 => Ok(Forward {
            host_port,
            guest_ip: (*ip).to_owned(),
            guest_port,
        }),
        _ => Err(bad()),
    }
}

/// QEMU's user-mode network for the board NIC, with the forwards bound to
/// 127.0.0.1 only.
pub fn uplink_args(forwards: &[Forward]) -> Vec<String> {
    let mut netdev = String::from("user,id=uplink,net=10.0.2.0/24");
    for f in forwards {
        netdev.push_str(&format!(
            ",hostfwd=tcp:127.0.0.1:{}-{}:{}",
            f.host_port, f.guest_ip, f.guest_port
        ));
    }
    vec![
        "-netdev".to_owned(),
        netdev,
        "-device".to_owned(),
        "virtio-net-device,netdev=uplink".to_owned(),
    ]
}

/// `--smp` when not given on QEMU `virt`.
pub const DEFAULT_SMP: u32 = 2;
/// `--gic` when not given.
pub const DEFAULT_GIC: u8 = 2;
/// `--memory` when not given on QEMU `virt`.
pub const DEFAULT_MEMORY: &str = "1G";

impl RunArgs {
    /// Physical CPUs: `--smp`, or the board's (2 on QEMU `virt`, 4 on rpi4).
    pub fn smp(&self) -> u32 {
        match self.board.pi() {
            Some(_) => crate::PI_CPUS,
            None => self.smp.unwrap_or(DEFAULT_SMP),
        }
    }

    /// The GIC version: `--gic` or 2.
    pub fn gic(&self) -> u8 {
        self.gic.unwrap_or(DEFAULT_GIC)
    }

    /// Board RAM as QEMU's `-m` spells it (`--memory` or 1G; rpi4's is fixed).
    pub fn memory(&self) -> &str {
        match self.board.pi() {
            Some(_) => "960M",
            None => self.memory.as_deref().unwrap_or(DEFAULT_MEMORY),
        }
    }

    /// The machine the configuration must fit, after checking that the
    /// options fit the board: rpi4 is QEMU's fixed `raspi4b` (4 CPUs,
    /// 960 MiB, GICv2, Cortex-A72), so `--smp`, `--memory`, `--gic` and
    /// `--cpu` are refused there unless they say what it is.
    pub fn machine(&self) -> Result<MachineFacts> {
        if let Some(pi) = self.board.pi() {
            let fixed = format!(
                "{} is QEMU's fixed {} machine ({})",
                self.board.name(),
                pi.qemu_machine,
                pi.description
            );
            if self.smp.is_some_and(|smp| smp != crate::PI_CPUS) {
                return Err(format!("--smp: {fixed}; leave --smp out"));
            }
            if self.gic.is_some_and(|gic| gic != 2) {
                return Err(format!("--gic: {fixed}; leave --gic out"));
            }
            if let Some(memory) = &self.memory {
                if parse_size(memory)? != crate::PI_RAM_BYTES {
                    return Err(format!("--memory: {fixed}; leave --memory out"));
                }
            }
            if self.cpu.is_some() {
                return Err(format!("--cpu: {fixed}; leave --cpu out"));
            }
        }
        if let Some(fixed) = fixed_machine(self.board) {
            return Ok(fixed);
        }
        Ok(MachineFacts {
            physical_cpus: self.smp(),
            ram_bytes: parse_size(self.memory())?,
            board: self.board,
        })
    }
}

/// The fixed machine of a Raspberry Pi board as QEMU models it (what a
/// configuration for the board is checked against; the hypervisor reads the
/// real board's memory from the device tree at boot), or `None` for QEMU
/// `virt`, whose machine `run`'s options choose.
pub fn fixed_machine(board: Board) -> Option<MachineFacts> {
    board.pi().map(|_| MachineFacts {
        physical_cpus: crate::PI_CPUS,
        ram_bytes: crate::PI_RAM_BYTES,
        board,
    })
}

/// What QEMU needs to run a Raspberry Pi board: version 10's `raspi3b` /
/// `raspi4b` machine, and the board's device tree (nothing for `virt`).
pub fn require_pi_machine(board: Board) -> Result<()> {
    if let Some(pi) = board.pi() {
        crate::emulator::require(
            10,
            0,
            &format!("the {} machine (--board {})", pi.qemu_machine, board.name()),
        )?;
        crate::images::ensure_rpi_dtbs()?;
    }
    Ok(())
}

/// Builds, bundles and boots.
pub fn run(args: &RunArgs) -> Result<ExitCode> {
    let machine = args.machine()?;
    let on_board = args.board_link.serial.is_some();
    if on_board {
        crate::hil::check_run_args(args)?;
    }
    let options = ManifestOptions {
        force_cache: args.force_cache,
        log_level: args.log.clone(),
    };
    let config = args
        .config
        .clone()
        .unwrap_or_else(|| default_config(args.board));
    // Refuse a broken configuration before spending time on a build.
    let (manifest_bytes, uplink) = checked_manifest(&config, &machine, &options)?;
    // The Raspberry Pi 4 needs QEMU 10's raspi4b and boots with its device
    // tree, from the arm64 Linux guest's Debian package (checked after the
    // configuration, so that a refusal needs neither).
    // A real board needs neither (its firmware passes its own device tree).
    if !on_board {
        require_pi_machine(args.board)?;
    }
    let forwards: Vec<Forward> = if args.forward.is_empty() && args.config.is_none() {
        DEFAULT_FORWARDS
            .iter()
            .map(|f| parse_forward(f))
            .collect::<Result<_>>()?
    } else {
        args.forward
            .iter()
            .map(|f| parse_forward(f))
            .collect::<Result<_>>()?
    };
    let (images, bundle_path) = build_bundle(args.board, &config, &manifest_bytes, args.no_build)?;
    if on_board {
        return crate::hil::run_on_board(args, &bundle_path);
    }
    let mut qemu = qemu_command(args, &bundle_path, uplink.then_some(forwards.as_slice()));
    if uplink {
        for f in &forwards {
            eprintln!(
                "xtask: uplink: 127.0.0.1:{} -> {}:{}",
                f.host_port, f.guest_ip, f.guest_port
            );
        }
    }
    if !args.test_only_qemu_arg.is_empty() {
        eprintln!(
            "xtask: test-only QEMU arguments: {:?}",
            args.test_only_qemu_arg
        );
        qemu.args(&args.test_only_qemu_arg);
    }
    if let (true, Some(input)) = (args.headless, &args.input) {
        let file =
            std::fs::File::open(input).map_err(|error| format!("{}: {error}", input.display()))?;
        qemu.stdin(file);
    }
    eprintln!("xtask: {}", crate::emulator::describe_for(args.board));
    eprintln!("xtask: {}", command_line(&qemu));
    if args.gdb {
        eprintln!(
            "xtask: QEMU waits for gdb; attach with:\n  gdb-multiarch {} -ex 'target remote :1234'",
            images.hypervisor_elf.display()
        );
    }
    if !args.headless && !args.gdb {
        eprintln!(
            "xtask: interactive console: Ctrl-A n sends input to the next VM, \
             Ctrl-] x quits QEMU, Ctrl-] h lists QEMU's keys"
        );
    }
    let timeout = args.timeout.map(Duration::from_secs);
    let code = if args.headless {
        run_headless(&mut qemu, timeout)?
    } else {
        run_qemu(&mut qemu, timeout)?
    };
    Ok(ExitCode::from(code))
}

/// Checks the configuration at `config` for `machine` and returns its
/// manifest bytes and whether a switch has the uplink, fetching the Debian
/// Linux guest first when the configuration boots it. With [`build_bundle`],
/// the one way to a bundle: `run` boots it and `sdcard` writes it to the card
/// as `kernel8.img`, so both are byte-identical for the same configuration,
/// board and options.
pub fn checked_manifest(
    config: &Path,
    machine: &MachineFacts,
    options: &ManifestOptions,
) -> Result<(Vec<u8>, bool)> {
    // The Linux guest comes from Debian's archive: fetch it when needed.
    if crate::images::config_uses_linux(config) {
        crate::images::ensure_linux_images()?;
    }
    if crate::images::config_uses_linux_armhf(config) {
        crate::images::ensure_linux_armhf_images()?;
    }
    manifest_and_uplink(config, machine, options)
}

/// Builds `board`'s images (unless `no_build`: those already in `build/`)
/// and writes the bundle of `manifest` ([`write_bundle`]); returns the
/// images and the bundle's path.
pub fn build_bundle(
    board: Board,
    config: &Path,
    manifest: &[u8],
    no_build: bool,
) -> Result<(Images, PathBuf)> {
    let images = if no_build {
        Images {
            hypervisor_elf: elf_path(board),
            hypervisor_bin: board_dir(board).join("chroma.bin"),
            guests_dir: crate::images::guests_dir_for(board),
        }
    } else {
        build_all(board)?
    };
    let bundle_path = write_bundle(&images.hypervisor_bin, manifest, board, config)?;
    Ok((images, bundle_path))
}

/// The board's default configuration in the workspace's `configs/`
/// ([`Board::default_config_name`]), wherever xtask runs from.
pub fn default_config(board: Board) -> PathBuf {
    workspace_root()
        .join("configs")
        .join(board.default_config_name())
}

/// Where the build keeps `board`'s hypervisor ELF (`build/<board>/chroma.elf`:
/// boards of one target share cargo's output path).
fn elf_path(board: Board) -> PathBuf {
    crate::images::board_dir(board).join("chroma.elf")
}

/// Writes `build/<board>/bundle-<config stem>.bin` and returns its path.
pub fn write_bundle(
    hypervisor_bin: &Path,
    manifest: &[u8],
    board: Board,
    config: &Path,
) -> Result<PathBuf> {
    let image = std::fs::read(hypervisor_bin)
        .map_err(|error| format!("cannot read {}: {error}", hypervisor_bin.display()))?;
    let bundled = bundle(&image, manifest)
        .map_err(|error| format!("{}: {error}", hypervisor_bin.display()))?;
    let stem = config
        .file_stem()
        .map_or_else(|| "config".into(), |stem| stem.to_string_lossy());
    let path = board_dir(board).join(format!("bundle-{stem}.bin"));
    std::fs::create_dir_all(board_dir(board))
        .map_err(|error| format!("cannot create {}: {error}", board_dir(board).display()))?;
    std::fs::write(&path, bundled)
        .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    Ok(path)
}

/// The QEMU command line that boots `bundle` on the board `args` describe,
/// with the board NIC (QEMU user networking, these forwards) when `uplink`
/// is given and no NIC at all otherwise (rpi4 has none: its manifest
/// refuses an uplink, see [`crate::config::manifest_and_uplink`], and
/// `uplink` is ignored there).
///
/// It opens no channel from the guest to the host beyond the console (and
/// the uplink's user networking when asked for): no semihosting, no
/// monitor, chardev, virtfs or option ROM in headless runs.
pub fn qemu_command(args: &RunArgs, bundle: &Path, uplink: Option<&[Forward]>) -> Command {
    let mut command = crate::emulator::command_for(args.board);
    command.current_dir(workspace_root());
    if let Some(pi) = args.board.pi() {
        // The machine is fixed (4 CPUs, its RAM, no NIC): no -smp, -m, -cpu
        // or -nic. QEMU loads the bundle at EL2 with the board's device
        // tree; the timer runs at the real board's frequency (QEMU's
        // default is 62.5 MHz).
        command
            .args(["-M", pi.qemu_machine, "-dtb"])
            .arg(crate::images::pi_dtb(pi))
            .arg("-global")
            .arg(format!("{}-arm-cpu.cntfrq={}", pi.cpu, pi.cntfrq_hz));
    } else {
        command
            .arg("-M")
            .arg(format!("virt,virtualization=on,gic-version={}", args.gic()))
            .args([
                "-cpu",
                args.cpu.as_deref().unwrap_or(args.board.default_cpu()),
                "-smp",
                &args.smp().to_string(),
                "-m",
                args.memory(),
            ]);
        match uplink {
            // The board NIC is virtio-mmio: no PCI device, so no option ROM.
            Some(forwards) => command.args(uplink_args(forwards)),
            // Else none: QEMU virt's default NIC is a PCI virtio-net that needs
            // an option ROM (efi-virtio.rom, package ipxe-qemu) and nothing uses.
            None => command.args(["-nic", "none"]),
        };
    }
    if args.headless {
        // No terminal: the serial port is stdout, nothing else is opened.
        // The hypervisor ends QEMU with PSCI SYSTEM_OFF after its summary
        // line, which is what the exit status is read from.
        command.args(["-display", "none", "-monitor", "none"]);
        command.args(console_serial(args.board, "stdio"));
        // A guest-requested board reset ends the run rather than looping.
        command.arg("-no-reboot");
        command.stdin(Stdio::null());
    } else {
        // The console is this terminal. QEMU's escape key moves from Ctrl-A to
        // Ctrl-] so that Ctrl-A reaches the hypervisor's console switch
        // (Ctrl-A n: input to the next VM).
        command.args(["-nographic", "-echr", QEMU_ESCAPE_KEY]);
        if args.board.pi().is_some_and(|pi| pi.console_serial != 0) {
            command.args(console_serial(args.board, "mon:stdio"));
        }
    }
    if args.gdb {
        // QEMU's `-s` listens on every interface; the gdb server is for this
        // machine only. `-S`: halted until gdb continues.
        command.args(["-gdb", "tcp:127.0.0.1:1234", "-S"]);
    }
    command.arg("-kernel").arg(bundle);
    command
}

/// The `-serial` options that put the board's console on `backend`: the
/// first serial port, or (the Raspberry Pi 3, whose device tree's console
/// is the mini UART) the second with nothing on the first.
pub fn console_serial(board: Board, backend: &str) -> Vec<String> {
    let index = board.pi().map_or(0, |pi| pi.console_serial);
    let mut args = Vec::new();
    for _ in 0..index {
        args.extend(["-serial".to_owned(), "null".to_owned()]);
    }
    args.extend(["-serial".to_owned(), backend.to_owned()]);
    args
}

/// Runs a headless QEMU, its console copied to stdout as it comes, killing
/// it after `timeout`. The exit status is the hypervisor's verdict read from
/// the console (see [`crate::verdict`]), or 124 on a timeout.
pub fn run_headless(command: &mut Command, timeout: Option<Duration>) -> Result<u8> {
    command.stdout(Stdio::piped());
    let mut child = command.spawn().map_err(|error| {
        format!(
            "cannot start {} (run scripts/setup.sh): {error}",
            command.get_program().to_string_lossy()
        )
    })?;
    let mut console = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut watch = ConsoleWatch::default();
        let mut stdout = std::io::stdout();
        let mut buffer = [0u8; 4096];
        loop {
            match console.read(&mut buffer) {
                Ok(0) => break,
                Ok(count) => {
                    let _ = stdout.write_all(&buffer[..count]);
                    let _ = stdout.flush();
                    watch.feed(&buffer[..count]);
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        watch
    });
    let deadline = timeout.map(|timeout| Instant::now() + timeout);
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|error| format!("waiting for QEMU: {error}"))?
        {
            break status;
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            let _ = child.kill();
            let _ = child.wait();
            let _ = reader.join();
            eprintln!(
                "xtask: timeout: QEMU killed after {} s",
                timeout.map_or(0, |timeout| timeout.as_secs())
            );
            return Ok(TIMEOUT_EXIT);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut watch = reader
        .join()
        .map_err(|_| "the console reader thread panicked".to_owned())?;
    let (code, reason) = watch.verdict(exit_code(status));
    eprintln!("xtask: exit status {code}: {reason}");
    Ok(code)
}

/// Runs QEMU, killing it after `timeout`; returns the exit status to end with.
pub fn run_qemu(command: &mut Command, timeout: Option<Duration>) -> Result<u8> {
    let mut child = command.spawn().map_err(|error| {
        format!("cannot start qemu-system-aarch64 (run scripts/setup.sh): {error}")
    })?;
    let deadline = timeout.map(|timeout| Instant::now() + timeout);
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|error| format!("waiting for QEMU: {error}"))?
        {
            let code = exit_code(status);
            return Ok(u8::try_from(code).unwrap_or(1));
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "xtask: timeout: QEMU killed after {} s",
                timeout.map_or(0, |timeout| timeout.as_secs())
            );
            return Ok(TIMEOUT_EXIT);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        run: RunArgs,
    }

    fn args(words: &[&str]) -> RunArgs {
        let mut all = vec!["run"];
        all.extend_from_slice(words);
        Wrapper::try_parse_from(all).unwrap().run
    }

    fn line(command: &Command) -> String {
        command_line(command)
    }

    #[test]
    fn headless_qemu_has_no_terminal_and_no_nic() {
        let command = qemu_command(
            &args(&["--headless", "--gic", "3", "--smp", "4"]),
            Path::new("/b.bin"),
            None,
        );
        let text = line(&command);
        assert!(text.contains("qemu-system-aarch64 -M virt,virtualization=on,gic-version=3 -cpu cortex-a57 -smp 4 -m 1G"), "{text}");
        assert_eq!(
            command.get_program(),
            crate::emulator::qemu().path.as_os_str()
        );
        assert!(text.contains("-nic none"), "{text}");
        assert!(
            text.contains("-display none -monitor none -serial stdio"),
            "{text}"
        );
        assert!(!text.contains("-nographic"), "{text}");
        assert!(text.ends_with("-kernel /b.bin"), "{text}");
    }

    #[test]
    fn the_arm_board_runs_qemu_system_arm_with_a_cortex_a15() {
        let text = line(&qemu_command(
            &args(&["--headless", "--board", "qemu-virt-arm"]),
            Path::new("/b.bin"),
            None,
        ));
        assert!(
            text.contains(
                "qemu-system-arm -M virt,virtualization=on,gic-version=2 -cpu cortex-a15"
            ),
            "{text}"
        );
        let a7 = line(&qemu_command(
            &args(&["--board", "qemu-virt-arm", "--cpu", "cortex-a7"]),
            Path::new("/b.bin"),
            None,
        ));
        assert!(a7.contains("-cpu cortex-a7 "), "{a7}");
        assert!(!a7.contains("semihosting"), "{a7}");
    }

    #[test]
    fn the_uplink_is_a_virtio_mmio_nic_without_an_option_rom() {
        let forwards = [parse_forward("8080:10.0.2.20:80").unwrap()];
        let text = line(&qemu_command(
            &args(&["--headless"]),
            Path::new("/b.bin"),
            Some(&forwards),
        ));
        assert!(
            text.contains("-device virtio-net-device,netdev=uplink"),
            "{text}"
        );
        assert!(!text.contains("-nic none"), "{text}");
        assert!(!text.contains("pci"), "{text}");
    }

    #[test]
    fn interactive_qemu_has_a_console_and_a_local_gdb_server() {
        let text = line(&qemu_command(&args(&["--gdb"]), Path::new("/b.bin"), None));
        assert!(text.contains("-nographic -echr 29"), "{text}");
        assert!(text.contains("gic-version=2"), "{text}");
        assert!(text.contains("-gdb tcp:127.0.0.1:1234 -S"), "{text}");
        assert!(!text.contains(" -s "), "{text}");
    }

    /// Every QEMU command line xtask builds: chroma's runs in each mode and
    /// the plain-QEMU peers of `cargo xtask bench`.
    fn every_command_line() -> Vec<(String, String)> {
        let bundle = Path::new("/b.bin");
        let forwards = [parse_forward("8080:10.0.2.20:80").unwrap()];
        let mut lines = Vec::new();
        for (name, words) in [
            ("interactive", &[][..]),
            ("headless", &["--headless"][..]),
            ("gdb", &["--gdb"][..]),
            ("headless gdb", &["--headless", "--gdb", "--gic", "3"][..]),
            ("forced cache", &["--headless", "--force-cache"][..]),
        ] {
            lines.push((
                name.to_owned(),
                line(&qemu_command(&args(words), bundle, None)),
            ));
            lines.push((
                format!("{name} with uplink"),
                line(&qemu_command(&args(words), bundle, Some(&forwards))),
            ));
        }
        for (name, words) in [
            ("rpi4 interactive", &["--board", "rpi4"][..]),
            ("rpi4 headless", &["--board", "rpi4", "--headless"][..]),
            ("rpi4 gdb", &["--board", "rpi4", "--gdb"][..]),
            ("rpi3 interactive", &["--board", "rpi3"][..]),
            ("rpi3 headless", &["--board", "rpi3", "--headless"][..]),
        ] {
            lines.push((
                name.to_owned(),
                line(&qemu_command(&args(words), bundle, None)),
            ));
        }
        for (name, command) in crate::bench::peer_commands_for_tests() {
            lines.push((name, line(&command)));
        }
        lines
    }

    #[test]
    fn no_command_line_enables_semihosting_or_another_way_out() {
        let lines = every_command_line();
        assert_eq!(lines.len(), 23, "{lines:?}");
        for (name, text) in &lines {
            // Semihosting would let a guest at EL1 end the run or reach host files.
            assert!(!text.contains("semihosting"), "{name}: {text}");
            // No other host channel: no chardev/monitor socket, no shared
            // directory, no host file as a disk, no QMP.
            for banned in [
                "-chardev",
                "-qmp",
                "virtfs",
                "-fsdev",
                "9p",
                "-drive",
                "-monitor stdio",
                "-serial file",
                "-serial pipe",
                "-serial unix",
                "-serial tcp",
            ] {
                assert!(!text.contains(banned), "{name}: {banned} in {text}");
            }
            // QEMU's monitor only where -nographic puts it anyway: on the
            // terminal's multiplexer (Ctrl-] c), which an interactive Pi run
            // names itself for its console's serial port.
            if text.contains("mon:") {
                assert!(
                    text.contains("-nographic") && text.contains("-serial mon:stdio"),
                    "{name}: {text}"
                );
            }
            // No NIC that needs an option ROM: either none, or a virtio-mmio one
            // on a user or socket netdev; the Pis' raspi3b and raspi4b model none.
            if text.contains("-M raspi") {
                assert!(
                    !text.contains("-nic") && !text.contains("-netdev"),
                    "{name}: {text}"
                );
            } else {
                assert!(
                    text.contains("-nic none") || text.contains("virtio-net-device,netdev="),
                    "{name}: default NIC in {text}"
                );
            }
            assert!(
                !text.contains("-pci") && !text.contains("virtio-net-pci"),
                "{name}: {text}"
            );
            // Headless runs keep their console on stdout and no monitor.
            if text.contains("-serial stdio") {
                assert!(text.contains("-monitor none"), "{name}: {text}");
            }
        }
        // Negative control: the checks see semihosting when it is there.
        let mut hooked = qemu_command(&args(&["--headless"]), Path::new("/b.bin"), None);
        hooked.args(
            &args(&["--headless", "--test-only-qemu-arg", "-semihosting"]).test_only_qemu_arg,
        );
        assert!(line(&hooked).contains("-semihosting"));
    }

    #[test]
    fn forwards_parse_and_bind_to_loopback_only() {
        let f = parse_forward("8080:10.0.2.20:80").unwrap();
        assert_eq!(
            f,
            Forward {
                host_port: 8080,
                guest_ip: "10.0.2.20".into(),
                guest_port: 80
            }
        );
        let netdev = &uplink_args(&[f])[1];
        assert!(
            netdev.contains("hostfwd=tcp:127.0.0.1:8080-10.0.2.20:80"),
            "{netdev}"
        );
        for bad in [
            "8080",
            "0:10.0.2.20:80",
            "8080:10.0.2:80",
            "8080:10.0.2.20:x",
            "8080:300.0.2.20:80",
        ] {
            assert!(parse_forward(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn each_board_boots_its_own_default_configuration() {
        let arm64 = default_config(Board::QemuVirtAarch64);
        let arm = default_config(Board::QemuVirtArm);
        assert!(arm64.ends_with("configs/default.toml"), "{arm64:?}");
        assert!(arm.ends_with("configs/default-arm.toml"), "{arm:?}");
        let arm64 = std::fs::read_to_string(arm64).unwrap();
        let arm = std::fs::read_to_string(arm).unwrap();
        // The armhf Linux and the 32-bit service guest, never the AArch64 ones.
        assert!(arm.contains("\"../build/linux-armhf/zImage\""), "{arm}");
        assert!(arm.contains("\"../build/guests-arm/netsvc.bin\""), "{arm}");
        assert!(!arm.contains("build/linux/") && !arm.contains("build/guests/"));
        assert!(!arm.contains("aarch64"), "{arm}");
        assert!(arm64.contains("\"../build/linux/Image\""), "{arm64}");
        // Both have the uplink and the guests the default forwards reach.
        for text in [&arm64, &arm] {
            assert!(text.contains("uplink = true"), "{text}");
            assert!(text.contains("chroma.httpd"), "{text}");
            for forward in DEFAULT_FORWARDS {
                let ip = parse_forward(forward).unwrap().guest_ip;
                assert!(text.contains(&format!("={ip}/24")), "{ip} in {text}");
            }
        }
    }

    /// The ARMv7 default configuration is valid on the board `run.sh
    /// --board qemu-virt-arm` emulates (2 CPUs, 1 GiB), with its uplink,
    /// over stand-in images (zImage headers) where its paths point.
    #[test]
    fn the_arm_default_configuration_is_valid_on_its_board() {
        let root = std::env::temp_dir().join(format!("chroma-default-arm-{}", std::process::id()));
        let mut zimage = vec![0u8; 4096];
        zimage[0x24..0x28].copy_from_slice(&0x016F_2818u32.to_le_bytes());
        zimage[0x2c..0x30].copy_from_slice(&4096u32.to_le_bytes());
        for (dir, name) in [
            ("build/linux-armhf", "zImage"),
            ("build/linux-armhf", "initramfs.cpio.gz"),
            ("build/guests-arm", "netsvc.bin"),
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
            std::fs::write(root.join(dir).join(name), &zimage).unwrap();
        }
        std::fs::create_dir_all(root.join("configs")).unwrap();
        let path = root.join("configs").join("default-arm.toml");
        std::fs::copy(default_config(Board::QemuVirtArm), &path).unwrap();
        let machine = MachineFacts {
            physical_cpus: 2,
            ram_bytes: 1 << 30,
            board: Board::QemuVirtArm,
        };
        let checked = manifest_and_uplink(&path, &machine, &ManifestOptions::default());
        let _ = std::fs::remove_dir_all(&root);
        let (_, uplink) = checked.unwrap();
        assert!(uplink);
    }

    #[test]
    fn rpi3_runs_raspi3b_with_its_device_tree_19_2_mhz_and_the_mini_uart() {
        let command = qemu_command(
            &args(&["--board", "rpi3", "--headless"]),
            Path::new("/b.bin"),
            None,
        );
        let text = line(&command);
        let dtb = crate::images::pi_dtb(crate::RPI3);
        assert!(dtb.ends_with("build/linux/dtbs/bcm2837-rpi-3-b.dtb"));
        assert!(
            text.contains(&format!(
                "-M raspi3b -dtb {} -global cortex-a53-arm-cpu.cntfrq=19200000",
                dtb.display()
            )),
            "{text}"
        );
        // The PL011 (serial port 1) goes nowhere; the mini UART is the console.
        assert!(text.contains("-serial null -serial stdio"), "{text}");
        let interactive = line(&qemu_command(
            &args(&["--board", "rpi3"]),
            Path::new("/b.bin"),
            None,
        ));
        assert!(
            interactive.contains("-nographic -echr 29 -serial null -serial mon:stdio"),
            "{interactive}"
        );
        // Its machine is fixed as the Pi 4's is.
        let refused = args(&["--board", "rpi3", "--smp", "2"])
            .machine()
            .unwrap_err();
        assert!(
            refused.contains("raspi3b") && refused.contains("--smp"),
            "{refused}"
        );
    }

    #[test]
    fn rpi4_runs_the_fixed_raspi4b_with_its_device_tree_and_timer() {
        let command = qemu_command(
            &args(&["--board", "rpi4", "--headless"]),
            Path::new("/b.bin"),
            None,
        );
        let text = line(&command);
        let dtb = crate::images::pi_dtb(crate::RPI4);
        assert!(dtb.ends_with("build/linux/dtbs/bcm2711-rpi-4-b.dtb"));
        assert!(
            text.contains(&format!(
                "qemu-system-aarch64 -M raspi4b -dtb {} -global cortex-a72-arm-cpu.cntfrq=54000000",
                dtb.display()
            )),
            "{text}"
        );
        assert_eq!(
            command.get_program(),
            crate::emulator::qemu().path.as_os_str()
        );
        // The console is the mini UART its device tree names: serial port 2.
        assert!(
            text.contains("-display none -monitor none -serial null -serial stdio"),
            "{text}"
        );
        assert!(text.contains("-no-reboot"), "{text}");
        assert!(text.ends_with("-kernel /b.bin"), "{text}");
        for absent in [
            " -smp ",
            " -m ",
            " -cpu ",
            "-nic",
            "-netdev",
            "virt",
            "gic",
            "semihosting",
        ] {
            assert!(!text.contains(absent), "{absent} in {text}");
        }
        // The uplink is refused by the manifest; the command line never has a NIC.
        let forwards = [parse_forward("8080:10.0.2.20:80").unwrap()];
        let with = line(&qemu_command(
            &args(&["--board", "rpi4", "--headless"]),
            Path::new("/b.bin"),
            Some(&forwards),
        ));
        assert!(
            !with.contains("-netdev") && !with.contains("hostfwd"),
            "{with}"
        );
        let gdb = line(&qemu_command(
            &args(&["--board", "rpi4", "--gdb"]),
            Path::new("/b.bin"),
            None,
        ));
        assert!(gdb.contains("-gdb tcp:127.0.0.1:1234 -S"), "{gdb}");
        assert!(gdb.contains("-nographic -echr 29"), "{gdb}");
    }

    #[test]
    fn rpi4_has_four_cpus_and_the_ram_of_its_device_tree() {
        let machine = args(&["--board", "rpi4"]).machine().unwrap();
        assert_eq!(machine.physical_cpus, 4);
        assert_eq!(machine.ram_bytes, 960 << 20);
        assert_eq!(machine.board, Board::Rpi4);
        // Options that say what the machine is are accepted, others refused.
        let same = args(&[
            "--board", "rpi4", "--smp", "4", "--gic", "2", "--memory", "960M",
        ]);
        assert_eq!(same.machine().unwrap().physical_cpus, 4);
        for words in [
            &["--smp", "2"][..],
            &["--gic", "3"][..],
            &["--memory", "1G"][..],
            &["--cpu", "cortex-a57"][..],
        ] {
            let mut all = vec!["--board", "rpi4"];
            all.extend_from_slice(words);
            let error = args(&all).machine().unwrap_err();
            assert!(error.contains("raspi4b"), "{words:?}: {error}");
        }
        // The virt boards keep their defaults: 2 CPUs, 1 GiB.
        let virt = args(&[]).machine().unwrap();
        assert_eq!((virt.physical_cpus, virt.ram_bytes), (2, 1 << 30));
        let four = args(&["--smp", "4", "--memory", "2G"]).machine().unwrap();
        assert_eq!((four.physical_cpus, four.ram_bytes), (4, 2 << 30));
    }

    #[test]
    fn rpi4_refuses_an_uplink_and_boots_the_default_setup_without_one() {
        let root = std::env::temp_dir().join(format!("chroma-rpi4-uplink-{}", std::process::id()));
        let mut image = vec![0u8; 4096];
        image[0x38..0x3c].copy_from_slice(b"ARM\x64");
        // The Pi's default setup, over stand-in images where its paths point:
        // the Linux and service guests of default.toml, on a switch without
        // the uplink, valid on the board `run.sh --board rpi4` emulates.
        for (dir, name) in [
            ("build/linux", "Image"),
            ("build/linux", "initramfs.cpio.gz"),
            ("build/guests", "netsvc.bin"),
            ("configs", "probe.bin"),
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
            std::fs::write(root.join(dir).join(name), &image).unwrap();
        }
        let default = default_config(Board::Rpi4);
        assert!(default.ends_with("configs/default-rpi.toml"), "{default:?}");
        let text = std::fs::read_to_string(&default).unwrap();
        assert!(!text.contains("uplink = true"), "{text}");
        assert!(text.contains("\"../build/linux/Image\""), "{text}");
        assert!(text.contains("chroma.httpd") && text.contains("ping -c 3 10.0.2.15"));
        let pi_default = root.join("configs").join("default-rpi.toml");
        std::fs::write(&pi_default, &text).unwrap();
        let pi_checked = manifest_and_uplink(
            &pi_default,
            &args(&["--board", "rpi4"]).machine().unwrap(),
            &ManifestOptions::default(),
        );
        let root = root.join("configs");
        let config = root.join("uplink.toml");
        std::fs::write(
            &config,
            "[[switch]]\nname = \"lan0\"\nuplink = true\n\n[[vm]]\nname = \"a\"\n\
             kernel = \"probe.bin\"\nmemory = \"64M\"\nvcpus = 1\n[[vm.net]]\n\
             switch = \"lan0\"\nmac = \"52:54:00:12:34:15\"\n",
        )
        .unwrap();
        let rpi4 = args(&["--board", "rpi4"]).machine().unwrap();
        let virt = args(&[]).machine().unwrap();
        let refused = manifest_and_uplink(&config, &rpi4, &ManifestOptions::default());
        let accepted = manifest_and_uplink(&config, &virt, &ManifestOptions::default());
        let _ = std::fs::remove_dir_all(root.parent().unwrap());
        assert!(!pi_checked.unwrap().1, "no uplink on the Pi");
        let error = refused.unwrap_err();
        assert!(
            error.contains("uplink = true") && error.contains("rpi4") && error.contains("no NIC"),
            "{error}"
        );
        assert!(
            accepted.unwrap().1,
            "the same file has an uplink on qemu-virt-aarch64"
        );
    }

    #[test]
    fn gic_version_is_two_or_three() {
        assert!(Wrapper::try_parse_from(["run", "--gic", "4"]).is_err());
        assert!(Wrapper::try_parse_from(["run", "--gic", "1"]).is_err());
    }

    #[test]
    fn timeout_kills_and_reports_124() {
        let mut sleeper = Command::new("sleep");
        sleeper.arg("30");
        let start = Instant::now();
        assert_eq!(
            run_qemu(&mut sleeper, Some(Duration::from_millis(200))),
            Ok(TIMEOUT_EXIT)
        );
        assert!(start.elapsed() < Duration::from_secs(10));
        let mut quick = Command::new("sh");
        quick.args(["-c", "exit 3"]);
        assert_eq!(run_qemu(&mut quick, Some(Duration::from_secs(10))), Ok(3));
    }
}
