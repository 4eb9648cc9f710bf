//! The one QEMU binary every run, system test and benchmark uses, and its version.
//!
//! `qemu-system-aarch64` from PATH (or the binary `CHROMA_QEMU` names), picked
//! once per xtask process after `--version` ran. chroma's own runs and the
//! plain-QEMU peers of `cargo xtask bench` both start [`command`], so a
//! ratio never compares two different emulators. Debian 12 ships QEMU 7.2;
//! `scripts/setup.sh` installs 10.0 from bookworm-backports. What needs 10
//! (the `raspi4b` machine of `--board rpi4`) checks [`require`] and says
//! what it needs.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::OnceLock;

use clap::Args;

use crate::host_tools::{find_in_path, tool_command, version_output};
use crate::{Board, Result};

/// The QEMU binary's name.
pub const QEMU_NAME: &str = "qemu-system-aarch64";
/// An environment variable that names another QEMU binary to use.
pub const QEMU_VARIABLE: &str = "CHROMA_QEMU";

/// A QEMU release number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct QemuVersion {
    /// Major version (7 on Debian 12, 10 from bookworm-backports).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Micro (patch) version.
    pub micro: u32,
}

impl std::fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// The picked QEMU.
#[derive(Clone, Debug)]
pub struct Qemu {
    /// What to start: an absolute path when found, else the bare name (so
    /// that starting it fails with a message that says to run setup).
    pub path: PathBuf,
    /// Its version, when `--version` ran and said one.
    pub version: Option<QemuVersion>,
}

/// Reads the version from `qemu-system-aarch64 --version` output, e.g.
/// `QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)`.
pub fn parse_version(text: &str) -> Option<QemuVersion> {
    let rest = text.lines().next()?.split("version ").nth(1)?;
    let number = rest.split_whitespace().next()?;
    let mut parts = number.split('.').map(|part| {
        // "7.2.0-rc1" or "10.0.2+ds": keep the leading digits.
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    let major = parts.next()??;
    let minor = parts.next()??;
    let micro = parts.next().flatten().unwrap_or(0);
    Some(QemuVersion {
        major,
        minor,
        micro,
    })
}

/// The QEMU this process uses (picked on first use).
pub fn qemu() -> &'static Qemu {
    static QEMU: OnceLock<Qemu> = OnceLock::new();
    QEMU.get_or_init(|| {
        let candidate = match std::env::var_os(QEMU_VARIABLE) {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            _ => find_in_path(QEMU_NAME).unwrap_or_else(|| PathBuf::from(QEMU_NAME)),
        };
        let version = version_output(&candidate)
            .as_deref()
            .and_then(parse_version);
        Qemu {
            path: candidate,
            version,
        }
    })
}

/// A command that starts the picked QEMU (add the arguments).
pub fn command() -> Command {
    tool_command(&qemu().path)
}

/// A command that starts the QEMU that emulates `board`: [`command`] for the
/// AArch64 board, `qemu-system-arm` from PATH (the same QEMU package) for
/// the ARMv7 one. `CHROMA_QEMU` names the AArch64 binary only (which also
/// runs the Raspberry Pi 4).
pub fn command_for(board: Board) -> Command {
    match board {
        Board::QemuVirtAarch64 | Board::Rpi3 | Board::Rpi4 => command(),
        Board::QemuVirtArm => {
            let name = board.qemu_name();
            tool_command(find_in_path(name).unwrap_or_else(|| PathBuf::from(name)))
        }
    }
}

/// [`describe`] for the QEMU that emulates `board` (the ARMv7 board's
/// binary is named by path; its version is that of the same QEMU package).
pub fn describe_for(board: Board) -> String {
    match board {
        Board::QemuVirtAarch64 | Board::Rpi3 | Board::Rpi4 => describe(),
        Board::QemuVirtArm => {
            let name = board.qemu_name();
            match find_in_path(name) {
                Some(path) => match version_output(&path).as_deref().and_then(parse_version) {
                    Some(version) => format!("QEMU {version} ({})", path.display()),
                    None => format!("{} (its --version did not run)", path.display()),
                },
                None => format!("{name} (not found in PATH: install qemu-system-arm)"),
            }
        }
    }
}

/// The version of the QEMU that emulates `board` ([`command_for`]), when
/// its `--version` ran and said one.
pub fn version_for(board: Board) -> Option<QemuVersion> {
    match board {
        Board::QemuVirtAarch64 | Board::Rpi3 | Board::Rpi4 => qemu().version,
        Board::QemuVirtArm => find_in_path(board.qemu_name())
            .and_then(version_output)
            .as_deref()
            .and_then(parse_version),
    }
}

/// "QEMU 10.0.2 (/usr/bin/qemu-system-aarch64)", for logs.
pub fn describe() -> String {
    let qemu = qemu();
    match qemu.version {
        Some(version) => format!("QEMU {version} ({})", qemu.path.display()),
        None => format!(
            "{} (did not run: install it with scripts/setup.sh)",
            qemu.path.display()
        ),
    }
}

/// Options of `cargo xtask qemu-version`.
#[derive(Args, Clone, Debug)]
pub struct QemuVersionArgs {
    /// Exit 1, saying why, unless QEMU is at least this version (MAJOR.MINOR).
    #[arg(long, value_name = "MAJOR.MINOR", value_parser = parse_major_minor)]
    pub at_least: Option<(u32, u32)>,
    /// What needs `--at-least` (named in the message), e.g. "the raspi4b board".
    #[arg(long = "for", value_name = "WHAT", default_value = "this test")]
    pub what: String,
}

/// Parses `MAJOR.MINOR`.
fn parse_major_minor(text: &str) -> Result<(u32, u32)> {
    let (major, minor) = text.split_once('.').unwrap_or((text, "0"));
    match (major.parse(), minor.parse()) {
        (Ok(major), Ok(minor)) => Ok((major, minor)),
        _ => Err(format!("{text:?}: expected MAJOR.MINOR, e.g. 10.0")),
    }
}

/// `cargo xtask qemu-version`: prints [`describe`]; with `--at-least`, fails
/// with [`require`]'s message when QEMU is older (the system tests use this
/// to skip, saying why, what a QEMU 7.2 cannot run).
pub fn print_version(args: &QemuVersionArgs) -> Result<ExitCode> {
    println!("{}", describe());
    if let Some((major, minor)) = args.at_least {
        if let Err(message) = require(major, minor, &args.what) {
            println!("{message}");
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Fails with a message naming `what` unless the QEMU is at least `major.minor`.
pub fn require(major: u32, minor: u32, what: &str) -> Result<()> {
    check_version(qemu().version, major, minor, what)
}

/// [`require`] for a given version (`None`: QEMU did not run).
fn check_version(found: Option<QemuVersion>, major: u32, minor: u32, what: &str) -> Result<()> {
    let wanted = QemuVersion {
        major,
        minor,
        micro: 0,
    };
    match found {
        Some(version) if version >= wanted => Ok(()),
        Some(version) => Err(format!(
            "{what} needs QEMU {major}.{minor} or later, found {version} ({}){}",
            qemu().path.display(),
            if major <= 10 {
                "; scripts/setup.sh installs QEMU 10 from bookworm-backports"
            } else {
                ""
            }
        )),
        None => Err(format!(
            "{what} needs QEMU {major}.{minor} or later, and {} did not run (scripts/setup.sh)",
            qemu().path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_debian_and_upstream_version_lines() {
        let v = |major, minor, micro| QemuVersion {
            major,
            minor,
            micro,
        };
        assert_eq!(
            parse_version(
                "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright"
            ),
            Some(v(10, 0, 2))
        );
        assert_eq!(
            parse_version("QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)"),
            Some(v(7, 2, 19))
        );
        assert_eq!(
            parse_version("QEMU emulator version 9.1.50"),
            Some(v(9, 1, 50))
        );
        assert_eq!(parse_version("QEMU emulator version 8.0"), Some(v(8, 0, 0)));
        assert_eq!(
            parse_version("qemu-system-aarch64: command not found"),
            None
        );
        assert_eq!(parse_version(""), None);
        assert!(v(10, 0, 0) > v(7, 2, 19));
        assert!(v(10, 0, 0) > v(9, 99, 99));
    }

    #[test]
    fn a_version_check_says_what_needs_what() {
        let seven = parse_version("QEMU emulator version 7.2.19");
        let ten = parse_version("QEMU emulator version 10.0.2");
        assert_eq!(check_version(ten, 10, 0, "the raspi4b board"), Ok(()));
        let refused = check_version(seven, 10, 0, "the raspi4b board").unwrap_err();
        assert!(
            refused.contains("the raspi4b board needs QEMU 10.0 or later, found 7.2.19"),
            "{refused}"
        );
        assert!(check_version(None, 10, 0, "x")
            .unwrap_err()
            .contains("did not run"));
    }

    #[test]
    fn versions_on_the_command_line_are_major_dot_minor() {
        assert_eq!(parse_major_minor("10.0"), Ok((10, 0)));
        assert_eq!(parse_major_minor("7"), Ok((7, 0)));
        assert!(parse_major_minor("ten").is_err());
        assert!(parse_major_minor("10.x").is_err());
    }

    #[test]
    fn every_qemu_command_starts_the_one_picked_binary() {
        assert_eq!(command().get_program(), qemu().path.as_os_str());
        assert!(qemu().path.ends_with(QEMU_NAME) || std::env::var_os(QEMU_VARIABLE).is_some());
    }
}
