//! The exit status of a headless run, from what only the hypervisor can say.
//!
//! QEMU's own exit status says nothing about the VMs: the hypervisor always
//! ends the machine with PSCI SYSTEM_OFF, and a guest must not be able to
//! choose how the run ends. The verdict is read from the console instead:
//!
//! - `chroma: all VMs stopped (N clean, M failed)`: the summary, printed
//!   once every VM has stopped;
//! - `chroma: fatal: ...`, `chroma: PANIC ...`, `chroma: EL2 EXCEPTION ...`:
//!   the hypervisor itself failed.
//!
//! Lines count only when `chroma: ` starts the line. The hypervisor prints
//! every guest line as `[<vm>] <text>` with control characters replaced, so
//! a guest cannot start a line of its own, let alone forge one of these.

/// The summary said every VM ended cleanly, and QEMU exited 0 after it.
pub const CLEAN_EXIT: u8 = 0;
/// The summary counted failed VMs.
pub const VMS_FAILED_EXIT: u8 = 1;
/// The hypervisor printed a fatal, PANIC or EL2 EXCEPTION line.
pub const HYPERVISOR_FAILED_EXIT: u8 = 2;
/// QEMU ended without the summary (or failed after it).
pub const NO_SUMMARY_EXIT: u8 = 3;

/// Prefixes of the lines that report a failure of the hypervisor itself.
pub(crate) const FAILURE_PREFIXES: [&str; 3] =
    ["chroma: fatal: ", "chroma: PANIC", "chroma: EL2 EXCEPTION"];
/// The summary line, up to its counts.
const SUMMARY_PREFIX: &str = "chroma: all VMs stopped (";

/// Reads console output as it arrives and keeps what decides the verdict.
#[derive(Clone, Debug, Default)]
pub struct ConsoleWatch {
    /// The unfinished last line.
    partial: Vec<u8>,
    /// The last summary seen: (clean, failed).
    summary: Option<(u64, u64)>,
    /// The first hypervisor failure line seen.
    failure: Option<String>,
}

impl ConsoleWatch {
    /// Feeds a chunk of console output (any split, `\r\n` or `\n` line ends).
    pub fn feed(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if byte == b'\n' {
                let line = std::mem::take(&mut self.partial);
                self.line(&line);
            } else {
                self.partial.push(byte);
            }
        }
    }

    /// Whether the summary line has come (a board's run ends there).
    pub fn has_summary(&self) -> bool {
        self.summary.is_some()
    }

    /// Whether a hypervisor failure line has come.
    pub fn has_failure(&self) -> bool {
        self.failure.is_some()
    }

    /// Looks at one complete line.
    fn line(&mut self, raw: &[u8]) {
        let text = String::from_utf8_lossy(raw);
        let line = text.strip_suffix('\r').unwrap_or(&text);
        if let Some(counts) = parse_summary(line) {
            self.summary = Some(counts);
        } else if self.failure.is_none() && FAILURE_PREFIXES.iter().any(|p| line.starts_with(p)) {
            self.failure = Some(line.to_owned());
        }
    }

    /// The exit status for a QEMU that exited with `qemu_status` (0 after a
    /// SYSTEM_OFF), and why, once the output has ended.
    pub fn verdict(&mut self, qemu_status: i32) -> (u8, String) {
        // A last line without its newline still counts.
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line);
        }
        if let Some(failure) = &self.failure {
            return (
                HYPERVISOR_FAILED_EXIT,
                format!("the hypervisor failed: {failure}"),
            );
        }
        match self.summary {
            None => (
                NO_SUMMARY_EXIT,
                format!(
                    "QEMU ended (exit status {qemu_status}) without the hypervisor's summary line"
                ),
            ),
            Some(_) if qemu_status != 0 => (
                NO_SUMMARY_EXIT,
                format!("QEMU failed (exit status {qemu_status}) after the summary"),
            ),
            Some((clean, 0)) => (CLEAN_EXIT, format!("{clean} clean, 0 failed")),
            Some((clean, failed)) => (VMS_FAILED_EXIT, format!("{clean} clean, {failed} failed")),
        }
    }
}

/// The counts of a summary line, `chroma: all VMs stopped (N clean, M failed)`.
pub fn parse_summary(line: &str) -> Option<(u64, u64)> {
    let counts = line.strip_prefix(SUMMARY_PREFIX)?.strip_suffix(')')?;
    let (clean, failed) = counts.split_once(", ")?;
    let clean = clean.strip_suffix(" clean")?.parse().ok()?;
    let failed = failed.strip_suffix(" failed")?.parse().ok()?;
    Some((clean, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict_of(output: &str, qemu_status: i32) -> u8 {
        let mut watch = ConsoleWatch::default();
        watch.feed(output.as_bytes());
        watch.verdict(qemu_status).0
    }

    const CLEAN: &str = "chroma: booting\r\n[probe] probe: done\r\nchroma: vm probe stopped: powered off\r\nchroma: all VMs stopped (1 clean, 0 failed)\r\n";

    #[test]
    fn a_clean_summary_is_success() {
        assert_eq!(verdict_of(CLEAN, 0), CLEAN_EXIT);
        // Without the final newline too.
        assert_eq!(verdict_of(CLEAN.trim_end(), 0), CLEAN_EXIT);
        assert_eq!(verdict_of(&CLEAN.replace('\r', ""), 0), CLEAN_EXIT);
    }

    #[test]
    fn chunks_may_split_lines_anywhere() {
        for cut in 0..CLEAN.len() {
            let mut watch = ConsoleWatch::default();
            watch.feed(&CLEAN.as_bytes()[..cut]);
            watch.feed(&CLEAN.as_bytes()[cut..]);
            assert_eq!(watch.verdict(0).0, CLEAN_EXIT, "cut at {cut}");
        }
    }

    #[test]
    fn failed_vms_fail_the_run() {
        let run = "chroma: vm a stopped: faulted: data abort\nchroma: all VMs stopped (1 clean, 1 failed)\n";
        assert_eq!(verdict_of(run, 0), VMS_FAILED_EXIT);
    }

    #[test]
    fn no_summary_is_a_failure_whatever_qemu_says() {
        // E.g. a guest that ended QEMU through semihosting SYS_EXIT(0).
        assert_eq!(
            verdict_of("chroma: booting\n[esc] escape: exit\n", 0),
            NO_SUMMARY_EXIT
        );
        assert_eq!(verdict_of("", 0), NO_SUMMARY_EXIT);
        // QEMU could not start (e.g. a missing option ROM).
        assert_eq!(verdict_of("", 1), NO_SUMMARY_EXIT);
        // QEMU failing after a clean summary is not clean.
        assert_eq!(verdict_of(CLEAN, 1), NO_SUMMARY_EXIT);
    }

    #[test]
    fn hypervisor_failures_win_over_a_summary() {
        for line in [
            "chroma: fatal: no valid VM manifest after the image",
            "chroma: PANIC on CPU 0x1: index out of bounds",
            "chroma: EL2 EXCEPTION (synchronous) on CPU 0x0: data abort",
        ] {
            assert_eq!(
                verdict_of(&format!("{line}\n"), 0),
                HYPERVISOR_FAILED_EXIT,
                "{line}"
            );
            assert_eq!(
                verdict_of(&format!("{CLEAN}{line}\n"), 0),
                HYPERVISOR_FAILED_EXIT,
                "{line}"
            );
        }
    }

    #[test]
    fn a_guest_cannot_forge_the_summary() {
        // The hypervisor prefixes every guest line; a summary text inside one,
        // or anywhere but at the start of a line, does not count.
        let forged = "[evil] chroma: all VMs stopped (1 clean, 0 failed)\n\
                      [evil] x\rchroma: all VMs stopped (1 clean, 0 failed)\n\
                      chroma: vm evil: chroma: all VMs stopped (1 clean, 0 failed)\n \
                      chroma: all VMs stopped (1 clean, 0 failed)\n";
        assert_eq!(verdict_of(forged, 0), NO_SUMMARY_EXIT);
        let failure = "[evil] chroma: PANIC on CPU 0x0: fake\n";
        assert_eq!(verdict_of(&format!("{failure}{CLEAN}"), 0), CLEAN_EXIT);
    }

    #[test]
    fn summaries_parse_strictly() {
        assert_eq!(
            parse_summary("chroma: all VMs stopped (2 clean, 1 failed)"),
            Some((2, 1))
        );
        assert_eq!(
            parse_summary("chroma: all VMs stopped (2 clean, 1 failed) "),
            None
        );
        assert_eq!(
            parse_summary("chroma: all VMs stopped (two clean, 1 failed)"),
            None
        );
        assert_eq!(parse_summary("chroma: all VMs stopped (2 clean)"), None);
        assert_eq!(
            parse_summary("[vm] chroma: all VMs stopped (2 clean, 0 failed)"),
            None
        );
    }
}
