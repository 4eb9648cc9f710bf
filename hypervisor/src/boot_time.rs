//! Where the hypervisor's own start goes, from the generic counter: the
//! counter at entry, then each phase and each VM's load in microseconds
//! since entry, printed as `boot-time` lines that `cargo xtask bench`
//! reads (`scripts/xtask/src/bench.rs`, `BootTimes`):
//!
//! ```text
//! chroma: boot-time entry=<counter ticks at entry> hz=<counter frequency>
//! chroma: boot-time start_us=<entry to the first VM's load>
//! chroma: boot-time vm=<name> load_us=<that VM's creation: RAM, stage 2, images, cleaning>
//! chroma: boot-time ready_us=<entry to the secondaries started, just before the guests run>
//! ```
//!
//! QEMU starts the counter near 0 when the machine starts running, so
//! `entry` says how long the machine ran before the hypervisor's first
//! instruction (firmware, the boot stub); on hardware it also counts the
//! firmware's time. QEMU's own start-up before that (tens of ms: its
//! libraries, the machine, loading the bundle) is not on the counter: the
//! bench times it from when these lines arrive (`first_line.boot.qemu`).

use crate::arch::cpu;
use core::sync::atomic::{AtomicU64, Ordering};

/// The counter when the boot CPU entered `chroma_primary_main`.
static ENTRY: AtomicU64 = AtomicU64::new(0);

/// Records the entry (the first thing the boot CPU does).
pub fn entered(ticks: u64) {
    ENTRY.store(ticks, Ordering::Relaxed);
}

/// Microseconds of counter time between `from` and `to` (0 if the counter
/// is unknown or went backwards).
fn micros(from: u64, to: u64) -> u64 {
    let hz = cpu::counter_frequency();
    if hz == 0 {
        return 0;
    }
    let ticks = u128::from(to.saturating_sub(from));
    u64::try_from(ticks * 1_000_000 / u128::from(hz)).unwrap_or(u64::MAX)
}

/// Microseconds since entry.
pub fn since_entry_us() -> u64 {
    micros(ENTRY.load(Ordering::Relaxed), cpu::now())
}

/// Prints the entry line (once the console is up).
pub fn report_entry() {
    log::info!(
        "boot-time entry={} hz={}",
        ENTRY.load(Ordering::Relaxed),
        cpu::counter_frequency()
    );
}

/// Prints the end of the hypervisor's own start (before any VM is built).
pub fn report_start() {
    log::info!("boot-time start_us={}", since_entry_us());
}

/// Prints how long VM `name` took to build, from `started` (a counter value).
pub fn report_vm_load(name: &str, started: u64) {
    log::info!(
        "boot-time vm={name} load_us={}",
        micros(started, cpu::now())
    );
}

/// Prints the end of start-up: the guests run next.
pub fn report_ready() {
    log::info!("boot-time ready_us={}", since_entry_us());
}
