//! The lint stages of `cargo xtask test`: `fmt`, `clippy` (host crates),
//! `clippy-bare-metal` (the hypervisor and the guests as built for the
//! board), `clippy-guests-arm` (the guests as built for 32-bit ARMv7-A), and
//! `doc` and `doc-bare-metal` (rustdoc's warnings, the same way).
//!
//! Each stage is one test. It passes when its command exits 0 and reports no
//! finding; otherwise it prints the first findings and fails.
//!
//! Clippy runs with every lint capped at `warn` (`--cap-lints warn`) and the
//! stage counts any warning as a failure, which is `-D warnings` except that
//! one run reports every crate: with `-D warnings` an error in one crate
//! stops the crates that depend on it from being checked at all, so a finding
//! in `chroma-core` would hide every finding in the hypervisor binary.
//! Rustdoc gets `--cap-lints warn` the same way, through `RUSTDOCFLAGS`.

use std::io::Read;
use std::process::{Command, Stdio};

use crate::process::{command_line, describe_status};
use crate::testing::{host_cargo, Counts, ONE_FAILED, ONE_PASSED};
use crate::toolchain::CrossToolchain;
use crate::{workspace_root, Board, Result};

/// Findings printed when a stage fails; the rest are only counted.
const FINDINGS_SHOWN: usize = 20;

/// Clippy's arguments after `--`: report every finding as a warning (see the module doc).
const CLIPPY_DRIVER_ARGS: [&str; 3] = ["--", "--cap-lints", "warn"];
/// `RUSTDOCFLAGS` of the doc stages: report every finding as a warning.
const RUSTDOC_FLAGS: &str = "--cap-lints warn";
/// cargo's output: JSON messages whose `rendered` text is one line.
const MESSAGE_FORMAT: &str = "--message-format=json-diagnostic-short";

/// One lint stage: its name (what FILTER matches) and how to run it.
pub struct LintStage {
    /// The stage's name.
    pub name: &'static str,
    /// Runs the stage.
    pub run: fn() -> Outcome,
}

/// The lint stages, in the order they run.
pub const STAGES: [LintStage; 10] = [
    LintStage {
        name: "fmt",
        run: fmt,
    },
    LintStage {
        name: "clippy",
        run: clippy_host,
    },
    LintStage {
        name: "clippy-bare-metal",
        // The board whose images `cargo xtask test` builds and boots.
        run: || clippy_bare_metal(Board::QemuVirtAarch64),
    },
    LintStage {
        name: "clippy-bare-metal-arm",
        // The ARMv7 slice and the portable crates as 32-bit code.
        run: || clippy_bare_metal(Board::QemuVirtArm),
    },
    LintStage {
        name: "clippy-bare-metal-rpi4",
        // The Raspberry Pi 4 board's own code (platform, spin table, PM).
        run: || clippy_bare_metal(Board::Rpi4),
    },
    LintStage {
        name: "clippy-bare-metal-rpi3",
        // The Raspberry Pi 3's (the local interrupt controller, the mini UART).
        run: || clippy_bare_metal(Board::Rpi3),
    },
    LintStage {
        name: "clippy-guests-arm",
        run: clippy_guests_arm,
    },
    LintStage {
        name: "doc",
        run: doc_host,
    },
    LintStage {
        name: "doc-bare-metal",
        run: || doc_bare_metal(Board::QemuVirtAarch64),
    },
    LintStage {
        name: "doc-bare-metal-arm",
        run: || doc_bare_metal(Board::QemuVirtArm),
    },
];

/// The portable crates, linted as compiled for a board's target: on the
/// 32-bit ARMv7 target (usize is 32 bits) they must stay free of
/// truncating casts and of panics as much as on the 64-bit one.
const PORTABLE_CRATES: [&str; 6] = [
    "chroma-core",
    "chroma-mem",
    "chroma-cache",
    "chroma-devtree",
    "chroma-manifest",
    "chroma-virtio",
];

/// How a lint stage ended: its counts and a note for the stage line.
pub struct Outcome {
    /// One passed or one failed.
    pub counts: Counts,
    /// Shown after the stage's counts, e.g. " (3 findings)".
    pub note: String,
}

/// `cargo fmt --all --check` over the whole workspace (formatting ignores `cfg`,
/// so the bare-metal crates are checked too).
pub fn fmt() -> Outcome {
    let mut command = host_cargo();
    command.args(["fmt", "--all", "--check"]);
    run_stage("fmt", &mut command, fmt_findings, "cargo fmt --all")
}

/// Clippy on the host crates (the default members), every target including
/// tests, with every feature (the system tests are behind `qemu`).
pub fn clippy_host() -> Outcome {
    let mut command = host_cargo();
    command.args(["clippy", "--all-targets", "--all-features", MESSAGE_FORMAT]);
    command.args(CLIPPY_DRIVER_ARGS);
    run_stage(
        "clippy",
        &mut command,
        clippy_findings,
        "cargo clippy --all-targets --all-features",
    )
}

/// Clippy on the bare-metal target: the hypervisor with `board`'s feature,
/// the portable crates, and (for the AArch64 board) every guest under
/// `guest-images/`. Their workspace dependencies (arch,
/// platform, cache, core, ...) are linted as compiled for the target, so
/// target-only modules are covered. It uses the cross build's toolchain,
/// target directory and build-std flags, and the build's `--release` profile.
pub fn clippy_bare_metal(board: Board) -> Outcome {
    let command = CrossToolchain::detect(board.target()).and_then(|toolchain| {
        let mut command = toolchain.clippy()?;
        command.args(["--release", "-p", "chroma", "--features"]);
        command.arg(format!("chroma/board-{}", board.name()));
        for package in PORTABLE_CRATES {
            command.args(["-p", package]);
        }
        // The guests build for their own targets, once (with the AArch64 board).
        if board == Board::QemuVirtAarch64 {
            for guest in guest_image_packages(true)? {
                command.arg("-p").arg(guest);
            }
        }
        command.arg(MESSAGE_FORMAT);
        command.args(CLIPPY_DRIVER_ARGS);
        Ok(command)
    });
    let stage = match board {
        Board::QemuVirtAarch64 => "clippy-bare-metal",
        Board::QemuVirtArm => "clippy-bare-metal-arm",
        Board::Rpi3 => "clippy-bare-metal-rpi3",
        Board::Rpi4 => "clippy-bare-metal-rpi4",
    };
    run_cross_stage(stage, command)
}

/// The target of the 32-bit guests (`guest-images/build.sh --arch arm`).
const ARM_GUEST_TARGET: &str = "armv7a-none-eabi";
/// Guests that exist only for AArch64 (`hostile` probes AArch64 system registers).
const AARCH64_ONLY_GUESTS: [&str; 1] = ["chroma-guest-hostile"];

/// Clippy on the guests as built for 32-bit ARMv7-A (every guest binary but
/// the AArch64-only ones), so the runtime's `arch::arm` back-end and the
/// guests' AArch32 paths are linted too.
pub fn clippy_guests_arm() -> Outcome {
    let command = CrossToolchain::detect(ARM_GUEST_TARGET).and_then(|toolchain| {
        let mut command = toolchain.clippy()?;
        command.arg("--release");
        for guest in guest_image_packages(true)? {
            if !AARCH64_ONLY_GUESTS.contains(&guest.as_str()) {
                command.arg("-p").arg(guest);
            }
        }
        command.arg(MESSAGE_FORMAT);
        command.args(CLIPPY_DRIVER_ARGS);
        Ok(command)
    });
    run_cross_stage("clippy-guests-arm", command)
}

/// Rustdoc on the host crates (the default members, every feature), without
/// dependencies.
pub fn doc_host() -> Outcome {
    let mut command = host_cargo();
    command.args(["doc", "--no-deps", "--all-features", MESSAGE_FORMAT]);
    command.env("RUSTDOCFLAGS", RUSTDOC_FLAGS);
    let rerun = with_environment(&command).replace(&format!(" {MESSAGE_FORMAT}"), "");
    run_stage("doc", &mut command, clippy_findings, &rerun)
}

/// Rustdoc on the crates whose code differs on the bare-metal target: the
/// hypervisor, the arch, platform and cache crates, and everything under
/// `guest-images/`, as compiled for `board`.
pub fn doc_bare_metal(board: Board) -> Outcome {
    let command = CrossToolchain::detect(board.target()).and_then(|toolchain| {
        let mut command = toolchain.cargo("doc");
        command.args(["--release", "--no-deps", "-p", "chroma", "--features"]);
        command.arg(format!("chroma/board-{}", board.name()));
        for package in ["chroma-arch", "chroma-platform", "chroma-cache"] {
            command.args(["-p", package]);
        }
        if board == Board::QemuVirtAarch64 {
            for package in guest_image_packages(false)? {
                command.arg("-p").arg(package);
            }
        }
        command.arg(MESSAGE_FORMAT);
        command.env("RUSTDOCFLAGS", RUSTDOC_FLAGS);
        Ok(command)
    });
    let stage = match board {
        Board::QemuVirtAarch64 => "doc-bare-metal",
        Board::QemuVirtArm => "doc-bare-metal-arm",
        Board::Rpi3 => "doc-bare-metal-rpi3",
        Board::Rpi4 => "doc-bare-metal-rpi4",
    };
    run_cross_stage(stage, command)
}

/// Runs a bare-metal stage's command, or fails the stage if there is none.
fn run_cross_stage(stage: &str, command: Result<Command>) -> Outcome {
    match command {
        Ok(mut command) => {
            let rerun = with_environment(&command).replace(&format!(" {MESSAGE_FORMAT}"), "");
            run_stage(stage, &mut command, clippy_findings, &rerun)
        }
        Err(message) => {
            println!("{stage}: FAILED ({message})");
            Outcome {
                counts: ONE_FAILED,
                note: " (did not start)".to_owned(),
            }
        }
    }
}

/// The command line prefixed with the variables it sets, for copy and paste.
fn with_environment(command: &Command) -> String {
    let mut words: Vec<String> = command
        .get_envs()
        .filter_map(|(name, value)| {
            let value = value?.to_string_lossy().into_owned();
            Some(format!("{}={value}", name.to_string_lossy()))
        })
        .collect();
    words.push(command_line(command));
    words.join(" ")
}

/// Runs one lint stage: captures stdout, finds the findings in it, prints the
/// first ones on failure with the command that shows them all.
fn run_stage(
    stage: &str,
    command: &mut Command,
    findings_in: fn(&str) -> Vec<String>,
    rerun: &str,
) -> Outcome {
    eprintln!("xtask: {}", command_line(command));
    let (stdout, succeeded, status) = match capture(command) {
        Ok(result) => result,
        Err(message) => {
            println!("{stage}: FAILED ({message})");
            return Outcome {
                counts: ONE_FAILED,
                note: " (did not start)".to_owned(),
            };
        }
    };
    let findings = findings_in(&stdout);
    let counts = lint_counts(&findings, succeeded);
    if counts.failed == 0 {
        return Outcome {
            counts,
            note: String::new(),
        };
    }
    println!(
        "{stage}: FAILED ({} finding(s), {status}); the first ones:",
        findings.len()
    );
    for finding in findings.iter().take(FINDINGS_SHOWN) {
        println!("  {finding}");
    }
    if findings.len() > FINDINGS_SHOWN {
        println!("  ... and {} more", findings.len() - FINDINGS_SHOWN);
    }
    let per_file: Vec<String> = findings_per_file(&findings)
        .into_iter()
        .map(|(file, count)| format!("{file} ({count})"))
        .collect();
    if !per_file.is_empty() {
        println!("{stage}: findings per file: {}", per_file.join(", "));
    }
    println!("{stage}: run `{rerun}` for the full report");
    Outcome {
        counts,
        note: format!(" ({} finding(s), {status})", findings.len()),
    }
}

/// Runs `command` with stdout captured (stderr goes to the terminal);
/// returns (stdout, success, status text).
fn capture(command: &mut Command) -> Result<(String, bool, String)> {
    command.stdout(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|error| format!("cannot start {:?}: {error}", command.get_program()))?;
    let mut stdout = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        pipe.read_to_string(&mut stdout)
            .map_err(|error| format!("reading {:?}: {error}", command.get_program()))?;
    }
    let status = child
        .wait()
        .map_err(|error| format!("waiting for {:?}: {error}", command.get_program()))?;
    Ok((stdout, status.success(), describe_status(status)))
}

/// A lint stage's result: one passed only if the command succeeded and found nothing.
pub fn lint_counts(findings: &[String], succeeded: bool) -> Counts {
    if succeeded && findings.is_empty() {
        ONE_PASSED
    } else {
        ONE_FAILED
    }
}

/// The files `cargo fmt --check` would change: its `Diff in FILE:LINE:` lines.
pub fn fmt_findings(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|line| line.starts_with("Diff in "))
        .map(|line| line.trim_end_matches(':').to_owned())
        .collect()
}

/// The warnings and errors in cargo's JSON messages from clippy or rustdoc (one short line each,
/// duplicates removed), without rustc's closing summaries
/// ("2 warnings emitted", "aborting due to ...").
pub fn clippy_findings(json_lines: &str) -> Vec<String> {
    let mut findings: Vec<String> = Vec::new();
    for line in json_lines.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-message" {
            continue;
        }
        let diagnostic = &message["message"];
        let level = diagnostic["level"].as_str().unwrap_or_default();
        if !level.starts_with("error") && level != "warning" {
            continue;
        }
        let text = diagnostic["message"].as_str().unwrap_or_default();
        let spanless = diagnostic["spans"]
            .as_array()
            .is_none_or(|spans| spans.is_empty());
        if spanless && (text.ends_with("emitted") || text.starts_with("aborting due to")) {
            continue;
        }
        let rendered = diagnostic["rendered"]
            .as_str()
            .map(|rendered| rendered.lines().next().unwrap_or_default().to_owned())
            .unwrap_or_else(|| format!("{level}: {text}"));
        if !findings.contains(&rendered) {
            findings.push(rendered);
        }
    }
    findings
}

/// How many findings each file has, in the order the files first appear
/// (a finding names its file before the first `:`; `Diff in FILE:LINE` too).
pub fn findings_per_file(findings: &[String]) -> Vec<(String, usize)> {
    let mut files: Vec<(String, usize)> = Vec::new();
    for finding in findings {
        let location = finding.strip_prefix("Diff in ").unwrap_or(finding);
        let Some((file, _)) = location.split_once(':') else {
            continue;
        };
        if !file.ends_with(".rs") {
            continue;
        }
        match files.iter_mut().find(|(known, _)| known == file) {
            Some((_, count)) => *count += 1,
            None => files.push((file.to_owned(), 1)),
        }
    }
    files
}

/// The workspace packages under `guest-images/`: only those that build a
/// binary (the guests) when `binaries_only`, else the libraries too.
fn guest_image_packages(binaries_only: bool) -> Result<Vec<String>> {
    let output = host_cargo()
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|error| format!("cannot run cargo metadata: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed ({})",
            describe_status(output.status)
        ));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|error| format!("cargo metadata: {error}"))?;
    let guests_dir = workspace_root().join("guest-images");
    let guests: Vec<String> = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|package| {
            package["manifest_path"]
                .as_str()
                .is_some_and(|path| std::path::Path::new(path).starts_with(&guests_dir))
        })
        .filter(|package| {
            !binaries_only
                || package["targets"].as_array().is_some_and(|targets| {
                    targets.iter().any(|target| {
                        target["kind"]
                            .as_array()
                            .is_some_and(|kinds| kinds.iter().any(|kind| kind == "bin"))
                    })
                })
        })
        .filter_map(|package| package["name"].as_str().map(str::to_owned))
        .collect();
    if guests.is_empty() {
        return Err("cargo metadata lists no guest under guest-images/".to_owned());
    }
    Ok(guests)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `cargo clippy --message-format=json-diagnostic-short` prints for a
    /// crate with one undocumented unsafe block (trimmed to the fields read).
    const CLIPPY_FINDING: &str = r#"{"reason":"compiler-artifact","package_id":"chroma-core","executable":null,"fresh":true}
{"reason":"compiler-message","package_id":"chroma-arch","message":{"rendered":"hypervisor/arch/src/aarch64/sysreg.rs:12:5: warning: unsafe block missing a safety comment\n","level":"warning","message":"unsafe block missing a safety comment","spans":[{"file_name":"hypervisor/arch/src/aarch64/sysreg.rs"}]}}
{"reason":"compiler-message","package_id":"chroma-arch","message":{"rendered":"warning: 1 warning emitted\n","level":"warning","message":"1 warning emitted","spans":[]}}
{"reason":"build-finished","success":true}
"#;

    const CLIPPY_CLEAN: &str = r#"{"reason":"compiler-artifact","package_id":"chroma-arch","executable":null,"fresh":true}
{"reason":"build-finished","success":true}
"#;

    const CLIPPY_COMPILE_ERROR: &str = r#"{"reason":"compiler-message","package_id":"chroma","message":{"rendered":"hypervisor/src/main.rs:3:1: error[E0425]: cannot find value `x` in this scope\n","level":"error","message":"cannot find value `x` in this scope","spans":[{"file_name":"hypervisor/src/main.rs"}]}}
{"reason":"compiler-message","package_id":"chroma","message":{"rendered":"error: aborting due to 1 previous error\n","level":"error","message":"aborting due to 1 previous error","spans":[]}}
{"reason":"build-finished","success":false}
"#;

    #[test]
    fn a_clippy_warning_fails_the_stage_even_when_clippy_exits_0() {
        // With `--cap-lints warn` clippy exits 0 on warnings: the parsing must fail the stage.
        let findings = clippy_findings(CLIPPY_FINDING);
        assert_eq!(
            findings,
            ["hypervisor/arch/src/aarch64/sysreg.rs:12:5: warning: unsafe block missing a safety comment"]
        );
        assert_eq!(lint_counts(&findings, true), ONE_FAILED);
        assert_eq!(lint_counts(&findings, false), ONE_FAILED);
    }

    #[test]
    fn a_clean_clippy_run_passes_and_a_failed_one_does_not() {
        let findings = clippy_findings(CLIPPY_CLEAN);
        assert!(findings.is_empty());
        assert_eq!(lint_counts(&findings, true), ONE_PASSED);
        // Exit status non-zero without a parsed finding (cargo could not start rustc).
        assert_eq!(lint_counts(&findings, false), ONE_FAILED);
    }

    #[test]
    fn clippy_compile_errors_are_findings_but_summaries_are_not() {
        let findings = clippy_findings(CLIPPY_COMPILE_ERROR);
        assert_eq!(
            findings,
            ["hypervisor/src/main.rs:3:1: error[E0425]: cannot find value `x` in this scope"]
        );
        assert_eq!(lint_counts(&findings, false), ONE_FAILED);
    }

    #[test]
    fn clippy_findings_are_reported_once() {
        let twice = format!("{CLIPPY_FINDING}{CLIPPY_FINDING}");
        assert_eq!(clippy_findings(&twice).len(), 1);
    }

    #[test]
    fn findings_are_counted_per_file() {
        let findings = [
            "a/vgic.rs:1:2: warning: x".to_owned(),
            "b/cache.rs:3:4: warning: unsafe block missing a safety comment".to_owned(),
            "a/vgic.rs:5:6: warning: y".to_owned(),
            "warning: no file".to_owned(),
            "Diff in /w/c.rs:7".to_owned(),
        ];
        assert_eq!(
            findings_per_file(&findings),
            [
                ("a/vgic.rs".to_owned(), 2),
                ("b/cache.rs".to_owned(), 1),
                ("/w/c.rs".to_owned(), 1)
            ]
        );
    }

    #[test]
    fn a_fmt_diff_fails_the_stage() {
        let diff = "\
Diff in /w/hypervisor/core/src/frames.rs:32:
-    let x=1;
+    let x = 1;
Diff in /w/scripts/xtask/src/qemu.rs:7:
 fn f() {}
";
        let findings = fmt_findings(diff);
        assert_eq!(
            findings,
            [
                "Diff in /w/hypervisor/core/src/frames.rs:32",
                "Diff in /w/scripts/xtask/src/qemu.rs:7"
            ]
        );
        assert_eq!(lint_counts(&findings, false), ONE_FAILED);
        assert_eq!(lint_counts(&fmt_findings(""), true), ONE_PASSED);
    }
}
