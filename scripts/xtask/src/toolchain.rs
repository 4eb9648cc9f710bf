//! Picks the cross toolchain: rustup's targets when installed, else Debian's with build-std.
//!
//! Every tool is chosen only after it ran (`--version`, see
//! [`crate::host_tools`]): a rustup toolchain whose `rust-objcopy` cannot
//! load its LLVM library, or a half-removed Debian toolchain, is passed over
//! or named in the error, not discovered halfway through a build.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::host_tools::{first_that_runs, runs};
use crate::{workspace_root, Result};

/// Debian's `rustc-web` compiler, used with `-Zbuild-std` (it ships no bare-metal std).
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
/// Debian's `rustdoc` (in `rustc-web`), which reads what Debian's rustc wrote.
const DEBIAN_RUSTDOC: &str = "/usr/bin/rustdoc";
/// Debian's `cargo-web`.
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
/// Debian's `rust-web-clippy`: `cargo clippy` built for Debian's rustc. It runs
/// `$CARGO check` with its sibling `/usr/bin/clippy-driver` as the workspace
/// wrapper; it is called by path because `/usr/bin/cargo clippy` would find
/// rustup's `cargo-clippy` proxy in `~/.cargo/bin` first.
const DEBIAN_CARGO_CLIPPY: &str = "/usr/bin/cargo-clippy";
/// Debian's `rust-web-src`: the library source build-std compiles.
const DEBIAN_RUST_SRC: &str = "/usr/lib/rustlib/src/rust/library";
/// The linker `.cargo/config.toml` names for the bare-metal targets (lld-19).
const LINKER: &str = "/usr/lib/llvm-19/bin/ld.lld";
/// The crates build-std compiles for the bare-metal targets.
const BUILD_STD_ARGS: [&str; 2] = [
    "-Zbuild-std=core,alloc,compiler_builtins",
    "-Zbuild-std-features=compiler-builtins-mem",
];

/// Where a cross toolchain comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolchainKind {
    /// rustup's toolchain, which has the target's prebuilt `core`/`alloc`.
    Rustup,
    /// Debian's `rustc-web`/`cargo-web`, building `core`/`alloc` from source.
    Debian,
}

/// A toolchain that builds one bare-metal target.
#[derive(Clone, Debug)]
pub struct CrossToolchain {
    /// Where it comes from.
    pub kind: ToolchainKind,
    /// The Rust target triple.
    pub target: String,
}

impl CrossToolchain {
    /// Picks the toolchain for `target`: rustup's when `rustup target list --installed`
    /// has it, else Debian's (which `scripts/setup.sh` installs).
    pub fn detect(target: &str) -> Result<Self> {
        let kind = if rustup_has_target(target) && runs("cargo") && runs("rustc") {
            ToolchainKind::Rustup
        } else if runs(DEBIAN_CARGO)
            && runs(DEBIAN_RUSTC)
            && Path::new(DEBIAN_RUST_SRC).join("core").is_dir()
        {
            ToolchainKind::Debian
        } else {
            return Err(format!(
                "no toolchain for {target}: neither has `rustup target list --installed` it (with \
                 a cargo and rustc that run) nor do Debian's rustc-web, cargo-web and rust-web-src \
                 run (run scripts/setup.sh)"
            ));
        };
        if !runs(LINKER) {
            return Err(format!(
                "the bare-metal linker {LINKER} does not run (package lld-19; run scripts/setup.sh)"
            ));
        }
        Ok(CrossToolchain {
            kind,
            target: target.to_owned(),
        })
    }

    /// The cargo executable.
    pub fn cargo_path(&self) -> &'static str {
        match self.kind {
            ToolchainKind::Rustup => "cargo",
            ToolchainKind::Debian => DEBIAN_CARGO,
        }
    }

    /// Environment variables the toolchain needs, besides the shared target directory.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match self.kind {
            ToolchainKind::Rustup => Vec::new(),
            ToolchainKind::Debian => vec![
                ("RUSTC", DEBIAN_RUSTC.to_owned()),
                // Else `cargo doc` finds rustup's rustdoc in PATH, which cannot
                // read the `core` Debian's rustc built.
                ("RUSTDOC", DEBIAN_RUSTDOC.to_owned()),
                // build-std is a nightly feature; Debian's stable compiler allows it this way.
                ("RUSTC_BOOTSTRAP", "1".to_owned()),
            ],
        }
    }

    /// Arguments that go after `cargo build`: the target and, for Debian's, build-std.
    pub fn build_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.kind == ToolchainKind::Debian {
            args.extend(BUILD_STD_ARGS.iter().map(|arg| (*arg).to_owned()));
        }
        args.push("--target".to_owned());
        args.push(self.target.clone());
        args
    }

    /// `cargo <subcommand> <toolchain args>` run from the workspace root, ready for `-p ...`.
    pub fn cargo(&self, subcommand: &str) -> Command {
        let mut command = self.command(self.cargo_path());
        command.arg(subcommand).args(self.build_args());
        command
    }

    /// `cargo clippy <toolchain args>`, like [`Self::cargo`]: rustup's clippy, or
    /// Debian's `rust-web-clippy` (the same version as Debian's rustc and the
    /// library source build-std compiles).
    pub fn clippy(&self) -> Result<Command> {
        if self.kind == ToolchainKind::Rustup {
            return Ok(self.cargo("clippy"));
        }
        if !Path::new(DEBIAN_CARGO_CLIPPY).exists() {
            return Err(format!(
                "no {DEBIAN_CARGO_CLIPPY}: install Debian's rust-web-clippy (scripts/setup.sh)"
            ));
        }
        let mut command = self.command(DEBIAN_CARGO_CLIPPY);
        // cargo-clippy runs `$CARGO check`.
        command.env("CARGO", DEBIAN_CARGO);
        command.arg("clippy").args(self.build_args());
        Ok(command)
    }

    /// `program` from the workspace root with this toolchain's environment.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.current_dir(workspace_root());
        // `cargo xtask` runs under rustup's cargo, which points these at its own toolchain.
        for variable in [
            "RUSTC",
            "RUSTDOC",
            "RUSTC_WRAPPER",
            "CARGO",
            "LD_LIBRARY_PATH",
        ] {
            command.env_remove(variable);
        }
        if self.kind == ToolchainKind::Debian {
            // Keep rustup's proxies from overriding Debian's tools.
            command.env_remove("RUSTUP_TOOLCHAIN");
        }
        command.envs(self.env());
        command.env("CARGO_TARGET_DIR", cross_target_dir());
        command
    }

    /// A one-line description for logs.
    pub fn describe(&self) -> String {
        match self.kind {
            ToolchainKind::Rustup => format!("rustup's toolchain for {}", self.target),
            ToolchainKind::Debian => {
                format!("Debian's rustc-web with build-std for {}", self.target)
            }
        }
    }
}

/// True when rustup's active toolchain has `target` installed.
fn rustup_has_target(target: &str) -> bool {
    let Ok(output) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        return false;
    };
    output.status.success()
        && String::from_utf8_lossy(&output.stdout)
            .lines()
            .any(|line| line.trim() == target)
}

/// The target directory shared by every cross build (hypervisor and guests).
pub fn cross_target_dir() -> PathBuf {
    workspace_root().join("target").join("cross")
}

/// Finds an objcopy that writes flat binaries and runs: rust-objcopy
/// (Debian's or rustup's llvm-tools) or LLVM's (Debian's llvm-19, which
/// setup installs). Picked once per process.
pub fn objcopy() -> Result<PathBuf> {
    static OBJCOPY: OnceLock<Option<PathBuf>> = OnceLock::new();
    OBJCOPY
        .get_or_init(|| first_that_runs(objcopy_candidates()))
        .clone()
        .ok_or_else(|| {
            "no objcopy that runs (rust-objcopy or llvm-objcopy-19, package llvm-19); \
             run scripts/setup.sh"
                .to_owned()
        })
}

/// Where an objcopy may be, best first.
fn objcopy_candidates() -> Vec<PathBuf> {
    let mut candidates = vec![PathBuf::from(
        "/usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-objcopy",
    )];
    if let Ok(output) = Command::new("rustc").args(["--print", "sysroot"]).output() {
        let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if let Ok(entries) = std::fs::read_dir(sysroot.join("lib/rustlib")) {
            for entry in entries.flatten() {
                candidates.push(entry.path().join("bin/rust-objcopy"));
            }
        }
    }
    candidates.extend(
        [
            "/usr/lib/llvm-19/bin/llvm-objcopy",
            "llvm-objcopy-19",
            "llvm-objcopy",
        ]
        .map(PathBuf::from),
    );
    candidates
}
