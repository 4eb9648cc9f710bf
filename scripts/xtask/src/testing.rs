//! `cargo xtask test`: runs every test stage in order and prints `N passed, M failed`.
//!
//! Stages: `unit` (host `cargo test` on the default members), `fmt`,
//! `clippy` and `doc` (host crates), `clippy-bare-metal` and `doc-bare-metal`
//! (hypervisor and guests for the board's target; see `lints.rs`),
//! `clippy-guests-arm` (the guests for armv7a-none-eabi), `oracle` (the cache aliasing oracle,
//! quick mode), `fuzz-smoke` (every fuzz target), `build` (hypervisor and
//! guest images), `system` (QEMU system tests in `tests/`). FILTER goes to every cargo test run and selects the other
//! stages whose name contains it. Each cargo test counts its tests; every
//! other stage counts as one test.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};

use clap::Args;

use crate::images::build_all;
use crate::lints;
use crate::process::describe_status;
use crate::{workspace_root, Board, Result};

/// Options of `cargo xtask test` (and `scripts/test.sh`).
#[derive(Args, Clone, Debug)]
pub struct TestArgs {
    /// Only tests (and stages) whose names contain this.
    pub filter: Option<String>,
}

/// Passed and failed counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed (or stages that could not run).
    pub failed: u64,
}

/// A stage that is one test, passed.
pub const ONE_PASSED: Counts = Counts {
    passed: 1,
    failed: 0,
};
/// A stage that is one test, failed (or that could not run).
pub const ONE_FAILED: Counts = Counts {
    passed: 0,
    failed: 1,
};

impl Counts {
    fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

/// Sums every `test result: ... N passed; M failed; ...` line of cargo test output.
///
/// Returns `None` when there is no such line (the tests did not run at all).
pub fn parse_cargo_results(output: &str) -> Option<Counts> {
    let mut total: Option<Counts> = None;
    for line in output.lines() {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            continue;
        };
        let mut counts = Counts::default();
        for part in rest.split(';') {
            let words: Vec<&str> = part.split_whitespace().collect();
            // "ok. 3 passed" splits to ["ok.", "3", "passed"]; later parts are ["1", "failed"].
            if let [.., number, word] = words.as_slice() {
                let Ok(number) = number.parse::<u64>() else {
                    continue;
                };
                match *word {
                    "passed" => counts.passed = number,
                    "failed" => counts.failed = number,
                    _ => {}
                }
            }
        }
        total.get_or_insert_with(Counts::default).add(counts);
    }
    total
}

/// The counts a cargo test stage contributes, given its output and whether it exited 0.
///
/// A run that failed without a failing test (a compile error, a crashed test
/// binary) counts as one more failure, so it can never look green.
pub fn cargo_stage_counts(output: &str, succeeded: bool) -> Counts {
    let mut counts = parse_cargo_results(output).unwrap_or_default();
    if !succeeded && counts.failed == 0 {
        counts.failed += 1;
    }
    counts
}

/// The line that ends a test run.
pub fn summary_line(counts: Counts) -> String {
    format!("{} passed, {} failed", counts.passed, counts.failed)
}

/// Runs the stages.
pub fn run(args: &TestArgs) -> Result<ExitCode> {
    let filter = args.filter.clone().unwrap_or_default();
    let selected = |stage: &str| stage.contains(filter.as_str());
    let root = workspace_root();
    let mut total = Counts::default();
    let mut report = |stage: &str, counts: Counts, note: &str| {
        eprintln!(
            "xtask: stage {stage}: {} passed, {} failed{note}",
            counts.passed, counts.failed
        );
        total.add(counts);
    };

    // 1. Host unit tests: plain `cargo test` runs the default members (the
    //    bare-metal crates are members but not default members).
    let mut unit = host_cargo();
    unit.args(["test", "--no-fail-fast"]);
    append_filter(&mut unit, &filter);
    let (counts, note) = run_cargo_stage(&mut unit);
    report("unit", counts, &note);

    // 2. Lints: formatting, then clippy and rustdoc on the host crates and
    //    on the bare-metal target (each stage is one test).
    for stage in &lints::STAGES {
        if selected(stage.name) {
            let started = std::time::Instant::now();
            let outcome = (stage.run)();
            let note = format!(
                "{} in {:.1} s",
                outcome.note,
                started.elapsed().as_secs_f64()
            );
            report(stage.name, outcome.counts, &note);
        }
    }

    // 3. The cache aliasing oracle, quick mode.
    if selected("oracle") {
        let (counts, note) = if has_bin("chroma-cache", "oracle") {
            let mut oracle = oracle_command(&["--quick".to_owned()]);
            single_stage(&mut oracle)
        } else {
            println!("oracle: FAILED (missing: crate chroma-cache has no `oracle` binary yet)");
            (ONE_FAILED, " (oracle missing)".to_owned())
        };
        report("oracle", counts, &note);
    }

    // 4. The fuzz smoke run (every cargo-fuzz target, a few seconds each).
    let smoke = root.join("hypervisor/fuzz/smoke.sh");
    if selected("fuzz-smoke") {
        if smoke.exists() {
            let mut command = Command::new("bash");
            command.arg(&smoke).current_dir(&root);
            let (counts, note) = single_stage(&mut command);
            report("fuzz-smoke", counts, &note);
        } else {
            eprintln!("xtask: stage fuzz-smoke: skipped (no hypervisor/fuzz/smoke.sh)");
        }
    }

    // 5. Images, which the system tests boot. A filter that leaves this
    //    stage out still builds them but counts the build only if it fails.
    let built = match build_all(Board::QemuVirtAarch64)
        .and_then(|_| build_all(Board::QemuVirtArm))
        .and_then(|_| build_all(Board::Rpi4))
        .and_then(|_| build_all(Board::Rpi3))
    {
        Ok(_) => {
            if selected("build") {
                report("build", ONE_PASSED, "");
            }
            true
        }
        Err(message) => {
            println!("build: FAILED ({message})");
            report("build", ONE_FAILED, "");
            false
        }
    };

    // 6. QEMU system tests (they call this xtask's `run --headless`).
    if built {
        let mut system = host_cargo();
        system.args([
            "test",
            "--no-fail-fast",
            "-p",
            "chroma-systest",
            "--features",
            "qemu",
        ]);
        if let Ok(xtask) = std::env::current_exe() {
            system.env("CHROMA_XTASK", xtask);
        }
        append_filter(&mut system, &filter);
        let (counts, note) = run_cargo_stage(&mut system);
        report("system", counts, &note);
    } else {
        println!("system: FAILED (not run: the images did not build)");
        report("system", ONE_FAILED, " (not run)");
    }

    println!("{}", summary_line(total));
    Ok(if total.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `cargo xtask oracle ARGS`.
pub fn oracle(args: &[String]) -> Result<ExitCode> {
    let status = oracle_command(args)
        .status()
        .map_err(|error| format!("cannot start cargo: {error}"))?;
    Ok(ExitCode::from(
        u8::try_from(crate::process::exit_code(status)).unwrap_or(1),
    ))
}

/// `cargo run --release -p chroma-cache --bin oracle -- ARGS`.
pub(crate) fn oracle_command(args: &[String]) -> Command {
    let mut command = host_cargo();
    command
        .args([
            "run",
            "--release",
            "-p",
            "chroma-cache",
            "--bin",
            "oracle",
            "--",
        ])
        .args(args);
    command
}

/// The host cargo (the one running xtask), from the workspace root.
pub fn host_cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(workspace_root());
    command
}

/// Adds `-- FILTER` to a cargo test command when there is a filter.
fn append_filter(command: &mut Command, filter: &str) {
    if !filter.is_empty() {
        command.arg("--").arg(filter);
    }
}

/// True when workspace package `package` has a binary target `bin`.
fn has_bin(package: &str, bin: &str) -> bool {
    let Ok(output) = host_cargo()
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .stderr(Stdio::inherit())
        .output()
    else {
        return false;
    };
    let Ok(metadata) = serde_json::from_slice::<serde_json::Value>(&output.stdout) else {
        return false;
    };
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    packages.iter().filter(|p| p["name"] == package).any(|p| {
        p["targets"].as_array().is_some_and(|targets| {
            targets.iter().any(|target| {
                target["name"] == bin
                    && target["kind"]
                        .as_array()
                        .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"))
            })
        })
    })
}

/// Runs a cargo test command, echoing its stdout, and counts its results.
fn run_cargo_stage(command: &mut Command) -> (Counts, String) {
    match run_echoing(command) {
        Ok((output, succeeded, status)) => {
            let counts = cargo_stage_counts(&output, succeeded);
            let note = if succeeded {
                String::new()
            } else {
                format!(" ({status})")
            };
            (counts, note)
        }
        Err(message) => {
            println!("{message}");
            (ONE_FAILED, " (did not start)".to_owned())
        }
    }
}

/// Runs a non-cargo stage: one test, passed when it exits 0.
fn single_stage(command: &mut Command) -> (Counts, String) {
    match run_echoing(command) {
        Ok((_, true, _)) => (ONE_PASSED, String::new()),
        Ok((_, false, status)) => (ONE_FAILED, format!(" ({status})")),
        Err(message) => {
            println!("{message}");
            (ONE_FAILED, " (did not start)".to_owned())
        }
    }
}

/// Runs `command`, echoing and capturing its stdout; returns (stdout, success, status text).
fn run_echoing(command: &mut Command) -> Result<(String, bool, String)> {
    eprintln!("xtask: {}", crate::process::command_line(command));
    command.stdout(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|error| format!("cannot start {:?}: {error}", command.get_program()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut captured = String::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        println!("{line}");
        captured.push_str(&line);
        captured.push('\n');
    }
    let status = child
        .wait()
        .map_err(|error| format!("waiting for {:?}: {error}", command.get_program()))?;
    Ok((captured, status.success(), describe_status(status)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSING: &str = "\
running 3 tests
test a ... ok
test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

running 0 tests
test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 2 filtered out; finished in 0.00s
";

    const FAILING: &str = "\
running 4 tests
test a ... ok
test b ... FAILED
failures:
    b
test result: FAILED. 2 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s

running 1 test
test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
";

    #[test]
    fn sums_passing_results() {
        assert_eq!(
            parse_cargo_results(PASSING),
            Some(Counts {
                passed: 3,
                failed: 0
            })
        );
        assert_eq!(
            cargo_stage_counts(PASSING, true),
            Counts {
                passed: 3,
                failed: 0
            }
        );
    }

    #[test]
    fn counts_failures_in_failing_output() {
        assert_eq!(
            parse_cargo_results(FAILING),
            Some(Counts {
                passed: 3,
                failed: 2
            })
        );
        assert_eq!(
            cargo_stage_counts(FAILING, false),
            Counts {
                passed: 3,
                failed: 2
            }
        );
    }

    #[test]
    fn a_run_that_failed_without_results_counts_as_a_failure() {
        let compile_error = "error[E0425]: cannot find value `x` in this scope\n";
        assert_eq!(parse_cargo_results(compile_error), None);
        assert_eq!(cargo_stage_counts(compile_error, false), ONE_FAILED);
        // A non-zero exit with only passing results (a test binary that crashed) fails too.
        assert_eq!(
            cargo_stage_counts(PASSING, false),
            Counts {
                passed: 3,
                failed: 1
            }
        );
    }

    #[test]
    fn summary_line_is_the_plain_closing_line() {
        assert_eq!(
            summary_line(Counts {
                passed: 7,
                failed: 1
            }),
            "7 passed, 1 failed"
        );
    }
}
