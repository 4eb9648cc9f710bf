//! The test guests on plain QEMU, without chroma (guest-images/test-qemu.sh):
//! the AArch64 ones on `qemu-system-aarch64` and the same sources built for
//! ARMv7-A on `qemu-system-arm`, against the same expected output. What a
//! guest prints under chroma is only meaningful if it prints the same on
//! the machine chroma imitates.

use std::process::Command;

use chroma_systest::workspace_root;

/// Runs `guest-images/test-qemu.sh <arguments> --no-build` (the images come
/// from `cargo xtask build`) and checks its "N passed, M failed" line.
fn test_qemu(arguments: &[&str]) {
    let script = workspace_root().join("guest-images/test-qemu.sh");
    let output = Command::new("timeout")
        .arg("600")
        .arg("bash")
        .arg(&script)
        .args(arguments)
        .arg("--no-build")
        .current_dir(workspace_root())
        .output()
        .expect("run guest-images/test-qemu.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout.lines().last().unwrap_or("");
    let counts = summary.split_once(" passed, ").and_then(|(passed, rest)| {
        let failed = rest.strip_suffix(" failed")?;
        Some((passed.parse::<u32>().ok()?, failed.parse::<u32>().ok()?))
    });
    let (passed, failed) =
        counts.unwrap_or_else(|| panic!("no summary line; it printed:\n{stdout}"));
    assert!(
        output.status.success() && failed == 0 && passed >= 10,
        "{arguments:?}: {summary}\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_aarch64_guests_pass_on_plain_qemu() {
    test_qemu(&[]);
}

#[test]
fn the_armv7_guests_pass_on_plain_qemu_arm() {
    test_qemu(&["--arch", "arm"]);
}
