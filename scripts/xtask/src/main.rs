//! `cargo xtask`: builds, bundles, runs, tests and benchmarks chroma.
#![forbid(unsafe_code)]

mod bench;
mod bench_linux;
mod bench_net;
mod bench_oracle;
mod bench_plots;
mod bench_results;
mod bundle;
mod config;
mod emulator;
mod hil;
mod host_tools;
mod images;
#[cfg(test)]
mod layering;
mod lints;
mod process;
mod qemu;
mod sdcard;
mod soak;
mod testing;
mod toolchain;
mod verdict;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Build, run, test and benchmark the chroma hypervisor.
#[derive(Parser)]
#[command(name = "xtask", bin_name = "cargo xtask", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the hypervisor image and the test guests.
    Build(BuildArgs),
    /// Build, bundle a VM configuration and boot it under QEMU.
    Run(qemu::RunArgs),
    /// Run every test stage (or those whose names contain FILTER).
    Test(testing::TestArgs),
    /// Print figures: image size, boot time under chroma against plain QEMU.
    Bench(bench::BenchArgs),
    /// Print the QEMU binary every run, test and benchmark uses, and its version.
    QemuVersion(emulator::QemuVersionArgs),
    /// Run VMs with traffic through the switch and the uplink for N minutes,
    /// resetting one every few minutes, and fail if the hypervisor's heap or
    /// frame high-water marks keep growing, traffic stops or anything fails.
    Soak(soak::SoakArgs),
    /// Write a bootable Raspberry Pi SD-card image: the pinned firmware, the
    /// board's device tree, config.txt and kernel8.img (the bundle `run`
    /// boots for the same configuration) on a FAT32 partition.
    Sdcard(sdcard::SdcardArgs),
    /// Run the board-capable system tests against a real board over its
    /// serial console, power-cycling it with a command of yours.
    Hil(hil::HilArgs),
    /// Print the QEMU command line that stands in for a real board, NUL-separated
    /// (for scripts/hil/qemu-board.sh).
    #[command(hide = true)]
    QemuStandIn(hil::StandInArgs),
    /// Run the cache aliasing oracle (arguments are passed through).
    Oracle {
        /// Arguments for the oracle, e.g. `--quick`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Options shared by the commands that build images.
#[derive(Args, Clone)]
pub struct BuildArgs {
    /// Board to build for.
    #[arg(long, value_enum, default_value_t = Board::QemuVirtAarch64)]
    pub board: Board,
}

/// A board chroma builds for (a Cargo feature of the hypervisor crate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Board {
    /// QEMU `virt` machine, AArch64, booted at EL2.
    QemuVirtAarch64,
    /// QEMU `virt` machine, ARMv7-A (`qemu-system-arm`), booted in HYP mode;
    /// its VMs are AArch32.
    QemuVirtArm,
    /// Raspberry Pi 3 Model B: QEMU's `raspi3b` machine (QEMU 10.0 or
    /// later), booted at EL2 with the board's device tree; fixed at 4
    /// Cortex-A53 CPUs, the RAM its device tree gives ([`PI_RAM_BYTES`]),
    /// no GIC (the guests' GIC is emulated in software) and no NIC; the
    /// console is the mini UART; its VMs are AArch64.
    Rpi3,
    /// Raspberry Pi 4 Model B: QEMU's `raspi4b` machine (QEMU 10.0 or
    /// later), booted at EL2 with the board's device tree; fixed at 4
    /// Cortex-A72 CPUs, the RAM its device tree gives ([`PI_RAM_BYTES`])
    /// and no NIC; its VMs are AArch64.
    Rpi4,
}

/// Physical CPUs of QEMU's `raspi3b` and `raspi4b` machines (fixed: they
/// take no `-smp`).
pub const PI_CPUS: u32 = 4;

/// RAM of QEMU's `raspi3b` and `raspi4b` as the hypervisor sees it: QEMU
/// reports 960 MiB in both (the rest of the first GiB is the VideoCore's).
pub const PI_RAM_BYTES: u64 = 960 << 20;

/// A Raspberry Pi's fixed QEMU machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PiMachine {
    /// QEMU's `-M`.
    pub qemu_machine: &'static str,
    /// The CPU model QEMU gives it (for `-global <cpu>-arm-cpu.cntfrq`).
    pub cpu: &'static str,
    /// Its device tree in `build/linux/dtbs/` (from Debian's arm64 kernel).
    pub dtb: &'static str,
    /// The real board's generic timer frequency (QEMU's default is 62.5 MHz).
    pub cntfrq_hz: u64,
    /// Which of QEMU's serial ports the board's device tree names as the
    /// console: 0 the PL011, 1 the mini UART.
    pub console_serial: usize,
    /// What it is, for messages.
    pub description: &'static str,
}

/// The Raspberry Pi 3 Model B.
pub const RPI3: PiMachine = PiMachine {
    qemu_machine: "raspi3b",
    cpu: "cortex-a53",
    dtb: "bcm2837-rpi-3-b.dtb",
    cntfrq_hz: 19_200_000,
    // Its device tree's stdout-path is the mini UART (serial1).
    console_serial: 1,
    description: "4 Cortex-A53 CPUs, 960 MiB of RAM, no GIC",
};

/// The Raspberry Pi 4 Model B.
pub const RPI4: PiMachine = PiMachine {
    qemu_machine: "raspi4b",
    cpu: "cortex-a72",
    dtb: "bcm2711-rpi-4-b.dtb",
    cntfrq_hz: 54_000_000,
    // Its device tree's stdout-path is the mini UART (serial1), too.
    console_serial: 1,
    description: "4 Cortex-A72 CPUs, 960 MiB of RAM, a GICv2",
};

impl Board {
    /// The board's name as the CLI, the build directory and the Cargo feature spell it.
    pub fn name(self) -> &'static str {
        match self {
            Board::QemuVirtAarch64 => "qemu-virt-aarch64",
            Board::QemuVirtArm => "qemu-virt-arm",
            Board::Rpi3 => "rpi3",
            Board::Rpi4 => "rpi4",
        }
    }

    /// The Raspberry Pi's machine, for the Pi boards.
    pub fn pi(self) -> Option<PiMachine> {
        match self {
            Board::Rpi3 => Some(RPI3),
            Board::Rpi4 => Some(RPI4),
            Board::QemuVirtAarch64 | Board::QemuVirtArm => None,
        }
    }

    /// The Rust target the board's images build for.
    pub fn target(self) -> &'static str {
        match self {
            Board::QemuVirtAarch64 | Board::Rpi3 | Board::Rpi4 => "aarch64-unknown-none-softfloat",
            Board::QemuVirtArm => "armv7a-none-eabi",
        }
    }

    /// The QEMU system emulator that runs the board.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Board::QemuVirtAarch64 | Board::Rpi3 | Board::Rpi4 => "qemu-system-aarch64",
            Board::QemuVirtArm => "qemu-system-arm",
        }
    }

    /// The CPU model (QEMU's `-cpu`) when `--cpu` is not given: `cortex-a57`
    /// runs fastest under TCG; `cortex-a15` has the ARMv7 virtualization
    /// extensions and LPAE (so has `cortex-a7`). The Raspberry Pi 4's is
    /// fixed (`cortex-a72`; its command line has no `-cpu`).
    pub fn default_cpu(self) -> &'static str {
        match self {
            Board::QemuVirtAarch64 => "cortex-a57",
            Board::QemuVirtArm => "cortex-a15",
            Board::Rpi3 | Board::Rpi4 => self.pi().map_or("", |pi| pi.cpu),
        }
    }

    /// Whether the board is QEMU's `virt` machine, which takes `-smp`,
    /// `-m`, `-cpu`, a GIC version and a virtio-mmio NIC; the Raspberry Pi
    /// 4 takes none of them.
    pub fn is_qemu_virt(self) -> bool {
        matches!(self, Board::QemuVirtAarch64 | Board::QemuVirtArm)
    }

    /// Whether the board has a NIC for a switch's uplink (QEMU `virt`'s
    /// virtio-mmio one; QEMU's `raspi4b` models no Ethernet).
    pub fn has_uplink_nic(self) -> bool {
        self.is_qemu_virt()
    }

    /// The file of `configs/` that `cargo xtask run` (and `scripts/run.sh`)
    /// boots when `--config` is not given: a Debian Linux guest with a shell
    /// and httpd and the service guest on a switch with the uplink, arm64
    /// Linux and AArch64 guests on qemu-virt-aarch64, armhf Linux and the
    /// 32-bit guests on qemu-virt-arm. A Raspberry Pi (whose QEMU machine
    /// has no NIC for an uplink) boots the same Linux and service guests on
    /// a switch without the uplink (`default-rpi.toml`).
    pub fn default_config_name(self) -> &'static str {
        match self {
            Board::QemuVirtAarch64 => "default.toml",
            Board::QemuVirtArm => "default-arm.toml",
            Board::Rpi3 | Board::Rpi4 => "default-rpi.toml",
        }
    }
}

/// The workspace root (this crate lives in `scripts/xtask`).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .nth(2)
        .expect("scripts/xtask sits two levels below the workspace root")
        .to_path_buf()
}

/// Errors are reported as text: xtask prints them and exits non-zero.
pub type Result<T, E = String> = std::result::Result<T, E>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Build(args) => images::build_all(args.board).map(|_| ExitCode::SUCCESS),
        Command::Run(args) => qemu::run(&args),
        Command::Test(args) => testing::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::QemuVersion(args) => emulator::print_version(&args),
        Command::Soak(args) => soak::run(&args),
        Command::Sdcard(args) => sdcard::run(&args),
        Command::Oracle { args } => testing::oracle(&args),
        Command::Hil(args) => hil::run_hil(&args),
        Command::QemuStandIn(args) => hil::print_stand_in(&args),
    };
    match outcome {
        Ok(code) => code,
        Err(message) => {
            eprintln!("xtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}
