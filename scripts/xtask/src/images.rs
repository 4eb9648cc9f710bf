//! Builds the hypervisor image and the test guests for a board.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::process::{describe_status, run_checked};
use crate::toolchain::{cross_target_dir, objcopy, CrossToolchain, ToolchainKind};
use crate::{workspace_root, Board, Result};

/// The images one build produced.
#[derive(Clone, Debug)]
pub struct Images {
    /// The hypervisor ELF (for gdb).
    pub hypervisor_elf: PathBuf,
    /// The flat hypervisor image with its arm64 Image header.
    pub hypervisor_bin: PathBuf,
    /// Directory holding `<guest>.bin` for the board's VMs ([`guests_dir_for`]).
    pub guests_dir: PathBuf,
}

/// `build/<board>/`: where a board's images and bundles go.
pub fn board_dir(board: Board) -> PathBuf {
    workspace_root().join("build").join(board.name())
}

/// `build/guests/`: where the test guests' images go.
pub fn guests_dir() -> PathBuf {
    workspace_root().join("build").join("guests")
}

/// `build/guests-arm/`: the same guests built for 32-bit ARMv7-A (AArch32).
pub fn guests_arm_dir() -> PathBuf {
    workspace_root().join("build").join("guests-arm")
}

/// Where the test guests for `board`'s VMs are: [`guests_dir`] on
/// qemu-virt-aarch64 and the Pis, [`guests_arm_dir`] (AArch32 VMs) on qemu-virt-arm.
pub fn guests_dir_for(board: Board) -> PathBuf {
    match board {
        Board::QemuVirtAarch64 | Board::Rpi3 | Board::Rpi4 => guests_dir(),
        Board::QemuVirtArm => guests_arm_dir(),
    }
}

/// Builds the hypervisor and the guests for `board`.
pub fn build_all(board: Board) -> Result<Images> {
    let toolchain = CrossToolchain::detect(board.target())?;
    eprintln!("xtask: building with {}", toolchain.describe());
    let (hypervisor_elf, hypervisor_bin) = build_hypervisor(&toolchain, board)?;
    build_guests(&toolchain)?;
    eprintln!("xtask: built {}", hypervisor_bin.display());
    Ok(Images {
        hypervisor_elf,
        hypervisor_bin,
        guests_dir: guests_dir_for(board),
    })
}

/// Builds `chroma` for `board` and writes `build/<board>/chroma.bin` and
/// `build/<board>/chroma.elf` (returned in that order: ELF, image).
fn build_hypervisor(toolchain: &CrossToolchain, board: Board) -> Result<(PathBuf, PathBuf)> {
    let mut command = toolchain.cargo("build");
    command.args(["--release", "-p", "chroma", "--features"]);
    command.arg(format!("board-{}", board.name()));
    let elf = single_executable(
        cargo_executables(&mut command, "building the hypervisor")?,
        "chroma",
    )?;
    let bin = board_dir(board).join("chroma.bin");
    flatten(&elf, &bin)?;
    // The boards of one target share cargo's output path: keep each
    // board's ELF beside its image, for gdb (`run --gdb` names it).
    let board_elf = board_dir(board).join("chroma.elf");
    std::fs::copy(&elf, &board_elf).map_err(|error| {
        format!(
            "cannot copy {} to {}: {error}",
            elf.display(),
            board_elf.display()
        )
    })?;
    Ok((board_elf, bin))
}

/// Builds the guests: `guest-images/build.sh` when it exists (the AArch64
/// guests, then the 32-bit ones for AArch32 VMs), else the probe guest.
fn build_guests(toolchain: &CrossToolchain) -> Result<()> {
    let root = workspace_root();
    if root.join("guest-images").join("build.sh").exists() {
        run_guest_build(toolchain, &[], &guests_dir())?;
        return run_guest_build(toolchain, &["--arch", "arm"], &guests_arm_dir());
    }
    let out_dir = guests_dir();
    std::fs::create_dir_all(&out_dir)
        .map_err(|error| format!("cannot create {}: {error}", out_dir.display()))?;
    eprintln!("xtask: no guest-images/build.sh yet; building the probe guest only");
    let mut command = toolchain.cargo("build");
    command.args(["--release", "-p", "chroma-guest-probe"]);
    let executables = cargo_executables(&mut command, "building the probe guest")?;
    let elf = single_executable(executables, "chroma-guest-probe")?;
    flatten(&elf, &out_dir.join("probe.bin"))
}

/// Runs `guest-images/build.sh <arguments>` into `out_dir`.
fn run_guest_build(toolchain: &CrossToolchain, arguments: &[&str], out_dir: &Path) -> Result<()> {
    let root = workspace_root();
    let script = root.join("guest-images").join("build.sh");
    std::fs::create_dir_all(out_dir)
        .map_err(|error| format!("cannot create {}: {error}", out_dir.display()))?;
    {
        let objcopy = objcopy()?;
        let mut command = Command::new("bash");
        command.arg(&script).args(arguments).current_dir(&root);
        for variable in [
            "RUSTC",
            "RUSTDOC",
            "RUSTC_WRAPPER",
            "CARGO",
            "LD_LIBRARY_PATH",
        ] {
            command.env_remove(variable);
        }
        // build.sh's interface: CARGO_TARGET_DIR, OUT_DIR, RUSTC, CARGO, OBJCOPY.
        command
            .envs(toolchain.env())
            .env("CARGO", toolchain.cargo_path())
            .env("CARGO_TARGET_DIR", cross_target_dir())
            .env("OUT_DIR", out_dir)
            .env("OBJCOPY", &objcopy);
        if toolchain.kind == ToolchainKind::Rustup {
            command.env("RUSTC", "rustc");
        }
        run_checked(&mut command, "guest-images/build.sh")
    }
}

/// Runs a `cargo build` and returns the executables it reports, streaming its diagnostics.
fn cargo_executables(command: &mut Command, what: &str) -> Result<Vec<PathBuf>> {
    command
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|error| format!("{what}: cannot start cargo: {error}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut executables = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|error| format!("{what}: reading cargo output: {error}"))?;
        if let Some(path) = executable_of(&line) {
            executables.push(path);
        }
    }
    let status = child.wait().map_err(|error| format!("{what}: {error}"))?;
    if !status.success() {
        return Err(format!("{what} failed ({})", describe_status(status)));
    }
    Ok(executables)
}

/// The executable named in a cargo JSON `compiler-artifact` message, if any.
fn executable_of(line: &str) -> Option<PathBuf> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    message.get("executable")?.as_str().map(PathBuf::from)
}

/// The one executable a package build produced.
fn single_executable(mut executables: Vec<PathBuf>, package: &str) -> Result<PathBuf> {
    match executables.len() {
        1 => Ok(executables.remove(0)),
        0 => Err(format!("building {package} produced no executable")),
        _ => Err(format!(
            "building {package} produced several executables: {executables:?}"
        )),
    }
}

/// Writes the flat binary of `elf` to `bin` (what `objcopy -O binary` does).
pub fn flatten(elf: &Path, bin: &Path) -> Result<()> {
    if let Some(parent) = bin.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|error| format!("cannot create {}: {error}", parent.display()))?;
    }
    let objcopy = objcopy()?;
    let mut command = crate::host_tools::tool_command(objcopy);
    command.args(["-O", "binary"]).arg(elf).arg(bin);
    run_checked(&mut command, &format!("objcopy of {}", elf.display()))
}

/// Builds the arm64 Linux guest images from Debian's archive
/// (`guest-images/linux/build.sh`; quick when they are up to date).
pub fn ensure_linux_images() -> Result<()> {
    build_linux(&[])
}

/// Builds the armhf (32-bit) Linux guest images, `build/linux-armhf/`.
pub fn ensure_linux_armhf_images() -> Result<()> {
    build_linux(&["--arch", "armhf"])
}

fn build_linux(arguments: &[&str]) -> Result<()> {
    let root = workspace_root();
    let mut command = Command::new("bash");
    command
        .arg(root.join("guest-images").join("linux").join("build.sh"))
        .args(arguments)
        .current_dir(&root);
    run_checked(
        &mut command,
        "guest-images/linux/build.sh (the Linux guest from Debian's archive)",
    )
}

/// `build/linux/dtbs/`: the Raspberry Pi device trees that
/// `guest-images/linux/build.sh` takes from Debian's arm64 kernel package.
pub fn dtbs_dir() -> PathBuf {
    workspace_root().join("build").join("linux").join("dtbs")
}

/// A Raspberry Pi's device tree, which QEMU boots it with (`-dtb`):
/// `build/linux/dtbs/bcm2711-rpi-4-b.dtb`, `bcm2837-rpi-3-b.dtb`.
pub fn pi_dtb(pi: crate::PiMachine) -> PathBuf {
    dtbs_dir().join(pi.dtb)
}

/// Makes sure both Pis' device trees exist: runs
/// `guest-images/linux/build.sh` (arm64, which extracts them beside the
/// kernel) when one does not.
pub fn ensure_rpi_dtbs() -> Result<()> {
    let dtbs = [pi_dtb(crate::RPI3), pi_dtb(crate::RPI4)];
    if !dtbs.iter().all(|dtb| dtb.is_file()) {
        ensure_linux_images()?;
    }
    match dtbs.iter().find(|dtb| !dtb.is_file()) {
        None => Ok(()),
        Some(dtb) => Err(format!(
            "{}: missing after guest-images/linux/build.sh ran",
            dtb.display()
        )),
    }
}

/// The Debian Linux guest images a board's VMs boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxImages {
    /// The kernel: `build/linux/Image` (arm64) or `build/linux-armhf/zImage` (armhf).
    pub kernel: PathBuf,
    /// The initramfs of guest-images/linux beside it.
    pub initrd: PathBuf,
}

/// Where the Linux guest images for `board`'s VMs are (arm64 on
/// qemu-virt-aarch64 and the Pis, armhf on qemu-virt-arm).
pub fn linux_images(board: Board) -> LinuxImages {
    let (dir, kernel) = match board {
        Board::QemuVirtAarch64 | Board::Rpi3 | Board::Rpi4 => ("linux", "Image"),
        Board::QemuVirtArm => ("linux-armhf", "zImage"),
    };
    let dir = workspace_root().join("build").join(dir);
    LinuxImages {
        kernel: dir.join(kernel),
        initrd: dir.join("initramfs.cpio.gz"),
    }
}

/// Builds (when needed) and returns the Linux guest images for `board`.
pub fn ensure_linux_images_for(board: Board) -> Result<LinuxImages> {
    match board {
        Board::QemuVirtAarch64 | Board::Rpi3 | Board::Rpi4 => ensure_linux_images()?,
        Board::QemuVirtArm => ensure_linux_armhf_images()?,
    }
    Ok(linux_images(board))
}

/// Whether the configuration at `path` boots the arm64 Linux guest images.
pub fn config_uses_linux(path: &std::path::Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| text.contains("build/linux/"))
}

/// Whether the configuration at `path` boots the armhf Linux guest images.
pub fn config_uses_linux_armhf(path: &std::path::Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| text.contains("build/linux-armhf/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_executable_in_cargo_messages() {
        let artifact =
            r#"{"reason":"compiler-artifact","executable":"/t/release/chroma","fresh":true}"#;
        assert_eq!(
            executable_of(artifact),
            Some(PathBuf::from("/t/release/chroma"))
        );
        let library = r#"{"reason":"compiler-artifact","executable":null}"#;
        assert_eq!(executable_of(library), None);
        let other = r#"{"reason":"build-finished","success":true}"#;
        assert_eq!(executable_of(other), None);
        assert_eq!(executable_of("not json"), None);
    }

    #[test]
    fn each_board_has_its_guests_and_linux_images() {
        assert!(guests_dir_for(Board::QemuVirtAarch64).ends_with("build/guests"));
        assert!(guests_dir_for(Board::QemuVirtArm).ends_with("build/guests-arm"));
        let arm64 = linux_images(Board::QemuVirtAarch64);
        assert!(arm64.kernel.ends_with("build/linux/Image"));
        assert!(arm64.initrd.ends_with("build/linux/initramfs.cpio.gz"));
        let armhf = linux_images(Board::QemuVirtArm);
        assert!(armhf.kernel.ends_with("build/linux-armhf/zImage"));
        assert!(armhf
            .initrd
            .ends_with("build/linux-armhf/initramfs.cpio.gz"));
    }

    #[test]
    fn insists_on_one_executable() {
        assert!(single_executable(vec![], "p").is_err());
        assert!(single_executable(vec!["a".into(), "b".into()], "p").is_err());
        assert_eq!(
            single_executable(vec!["a".into()], "p"),
            Ok(PathBuf::from("a"))
        );
    }
}
