//! `cargo xtask`: builds, bundles, runs, tests and benchmarks chroma.
#![forbid(unsafe_code)]

mod bench;
mod bench_linux;
mod bench_net;
mod bundle;
mod config;
mod emulator;
mod host_tools;
mod images;
#[cfg(test)]
mod layering;
mod lints;
mod process;
mod qemu;
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
}

impl Board {
    /// The board's name as the CLI, the build directory and the Cargo feature spell it.
    pub fn name(self) -> &'static str {
        match self {
            Board::QemuVirtAarch64 => "qemu-virt-aarch64",
            Board::QemuVirtArm => "qemu-virt-arm",
        }
    }

    /// The Rust target the board's images build for.
    pub fn target(self) -> &'static str {
        match self {
            Board::QemuVirtAarch64 => "aarch64-unknown-none-softfloat",
            Board::QemuVirtArm => "armv7a-none-eabi",
        }
    }

    /// The QEMU system emulator that runs the board.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Board::QemuVirtAarch64 => "qemu-system-aarch64",
            Board::QemuVirtArm => "qemu-system-arm",
        }
    }

    /// The CPU model (QEMU's `-cpu`) when `--cpu` is not given: `cortex-a57`
    /// runs fastest under TCG; `cortex-a15` has the ARMv7 virtualization
    /// extensions and LPAE (so has `cortex-a7`).
    pub fn default_cpu(self) -> &'static str {
        match self {
            Board::QemuVirtAarch64 => "cortex-a57",
            Board::QemuVirtArm => "cortex-a15",
        }
    }

    /// The file of `configs/` that `cargo xtask run` (and `scripts/run.sh`)
    /// boots when `--config` is not given: a Debian Linux guest with a shell
    /// and httpd and the service guest on a switch with the uplink, arm64
    /// Linux and AArch64 guests on qemu-virt-aarch64, armhf Linux and the
    /// 32-bit guests on qemu-virt-arm.
    pub fn default_config_name(self) -> &'static str {
        match self {
            Board::QemuVirtAarch64 => "default.toml",
            Board::QemuVirtArm => "default-arm.toml",
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
        Command::Oracle { args } => testing::oracle(&args),
    };
    match outcome {
        Ok(code) => code,
        Err(message) => {
            eprintln!("xtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}
