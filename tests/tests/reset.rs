//! SYSTEM_RESET of a VM with large RAM is preemptible (issue 10): clearing
//! 1 GiB of guest RAM, a chunk per turn of the physical CPU, does not stall
//! a bystander VM pinned to the same CPU.
//!
//! Negative control (by hand, it needs a rebuild): set
//! `chroma_core::vm::RESET_CHUNK` to `u64::MAX`, so a reset clears all of RAM
//! in one turn, and run `cargo xtask test resetting_a_1g`; then the
//! bystander's heartbeats stop for as long as a reset takes and both bounds
//! below fail (measured: worst gap 1290 ms, 17 heartbeats in 20 s).

use std::time::{Duration, Instant};

use chroma_systest::{config_toml, start_with, Board, Vm};

/// Guest RAM of the resetting VM.
const CRASHER_MEMORY: &str = "1G";
/// Board RAM: the 1 GiB VM, the bystander and the hypervisor.
const BOARD_MEMORY: &str = "2G";
/// How long the heartbeats are watched.
const WATCH: Duration = Duration::from_secs(20);
/// Resets the crasher must go through meanwhile.
const MIN_RESETS: usize = 3;
/// Heartbeats the bystander must print while watched: half of what it
/// prints alone (10 per second).
const MIN_HEARTBEATS: usize = 100;
/// Longest silence allowed between two heartbeats (sent every 100 ms),
/// measured on the host, generous for TCG on a shared machine. Measured
/// here: with 2 MiB chunks the worst gap was 373 ms and 713 ms in two runs
/// (184 and 176 heartbeats in 20 s; a 64 MiB crasher gives 261 ms),
/// unchunked 1290 ms (17 heartbeats: one per reset, which takes ~1.2 s
/// under TCG). The heartbeat count below is the sturdier of the two bounds.
const MAX_GAP: Duration = Duration::from_millis(1000);

#[test]
fn resetting_a_1g_vm_does_not_stall_a_bystander_on_its_cpu() {
    let mut crasher = Vm::new("crasher", "crasher")
        .cmdline("crasher.mode=reset")
        .cpus(&[0]);
    crasher.memory = CRASHER_MEMORY.to_owned();
    let bystander = Vm::new("probe", "probe").cmdline("probe.loop").cpus(&[0]);
    let config = config_toml(&[crasher, bystander]);
    let board = Board {
        timeout_seconds: 150,
        ..Board::new(2, 2)
    };
    let run = start_with(
        "reset_bystander",
        &config,
        board,
        &["--memory", BOARD_MEMORY],
    );
    run.wait_for("probe", "probe: heartbeat 1", 90);
    run.wait_for_nth("crasher", "crasher: start", 2, 90);
    let boots_before = run.count("crasher", "crasher: start");
    let mut beats = run.count("probe", "probe: heartbeat");
    let beats_before = beats;
    let start = Instant::now();
    let mut last = start;
    let mut gaps = Vec::new();
    while start.elapsed() < WATCH {
        std::thread::sleep(Duration::from_millis(10));
        let now_beats = run.count("probe", "probe: heartbeat");
        if now_beats > beats {
            let now = Instant::now();
            gaps.push(now - last);
            last = now;
            beats = now_beats;
        }
    }
    gaps.push(last.elapsed());
    let resets = run.count("crasher", "crasher: start") - boots_before;
    let worst = gaps.iter().max().copied().unwrap_or_default();
    let mut sorted = gaps.clone();
    sorted.sort();
    eprintln!(
        "reset: {resets} resets of a {CRASHER_MEMORY} VM in {:.1} s; bystander: {} heartbeats, worst gap {:.0} ms, median {:.0} ms",
        WATCH.as_secs_f64(),
        beats - beats_before,
        worst.as_secs_f64() * 1000.0,
        sorted[sorted.len() / 2].as_secs_f64() * 1000.0
    );
    assert!(
        resets >= MIN_RESETS,
        "only {resets} resets in {WATCH:?}: the crasher did not keep resetting"
    );
    assert!(
        worst <= MAX_GAP,
        "the bystander went {worst:?} without a heartbeat (bound {MAX_GAP:?}) while the crasher reset {resets} times"
    );
    // The reset notice is a line the guest causes at will: rate-limited
    // (the first 5, then the 8th, 16th, ...), never one per reset.
    let boots = run.count("crasher", "crasher: start");
    let notices = run
        .stdout()
        .lines()
        .filter(|line| line.starts_with("chroma: ") && line.contains("SYSTEM_RESET"))
        .count();
    let allowed = 5 + (usize::BITS - boots.leading_zeros()) as usize;
    assert!(
        notices <= allowed,
        "{notices} reset notices for {boots} boots (at most {allowed})"
    );
    // At least half the heartbeats it would send alone (10 per second).
    let heartbeats = beats - beats_before;
    assert!(
        heartbeats >= MIN_HEARTBEATS,
        "only {heartbeats} heartbeats in {WATCH:?}"
    );
}
