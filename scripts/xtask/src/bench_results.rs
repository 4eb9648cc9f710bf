//! `cargo xtask bench`'s figures as data: `build/bench/<board>/results.json`,
//! and `--compare`, which sets two such files side by side.
//!
//! Every figure the bench prints is recorded as it is measured
//! ([`Results::push`]): its value (chroma's), its unit, which direction is
//! better, and the peers measured beside it in the same run (plain QEMU,
//! or rust-vmm's `virtio-queue` and a plain copy for the device model), each
//! with the ratio chroma / peer. The file also says what was measured:
//! the git commit, the board, the QEMU, the date and the host's CPUs.
//!
//! Times under an emulator on a shared machine drift from run to run; the
//! ratio to a peer measured interleaved in the same run drifts much less.
//! So a comparison judges a figure on its ratio to its first peer when both
//! runs have one, and on its value otherwise ([`compare`]).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{workspace_root, Board, Result};

/// The version of the file's layout; a file of another version is refused.
pub const FORMAT: u32 = 1;

/// Where the bench writes its results and plots for `board`.
pub fn results_dir(board: Board) -> PathBuf {
    workspace_root()
        .join("build")
        .join("bench")
        .join(board.name())
}

/// The stable names of the figures, shared by the bench that records them
/// and the plots that draw them.
pub mod names {
    /// Size of the hypervisor image, chroma.bin.
    pub const IMAGE_CHROMA_BIN: &str = "image.chroma_bin";
    /// Size of the bundle with one VM manifest.
    pub const IMAGE_BUNDLE: &str = "image.bundle";
    /// QEMU start to the probe guest's first line.
    pub const FIRST_LINE: &str = "first_line";
    /// The counter at the hypervisor's entry (QEMU starts it near 0 when the
    /// machine starts running, after its own start-up: [`BOOT_QEMU`]).
    pub const BOOT_ENTRY: &str = "first_line.boot.entry";
    /// chroma's own start: entry to the first VM's load.
    pub const BOOT_CHROMA_START: &str = "first_line.boot.chroma_start";
    /// Entry to the guests' start (VMs built, secondaries up).
    pub const BOOT_READY: &str = "first_line.boot.ready";
    /// Wall clock: QEMU's start to the hypervisor's entry (QEMU's own
    /// start-up and loader, which the counter does not see).
    pub const BOOT_QEMU: &str = "first_line.boot.qemu";
    /// Wall clock: the `boot-time ready` line to the probe's first line.
    pub const BOOT_GUEST: &str = "first_line.boot.guest";
    /// netclient -> netsvc throughput.
    pub const VM_TO_VM_THROUGHPUT: &str = "vm_to_vm.throughput";
    /// The prefix of the device model's ns/frame figures.
    pub const DEVICE_MODEL_PREFIX: &str = "device_model.ns_per_frame";
    /// Linux: QEMU start to `linux-guest: init`.
    pub const LINUX_BOOT_INIT: &str = "linux.boot.init";
    /// Linux: QEMU start to the kernel's first line.
    pub const LINUX_BOOT_FIRST_LINE: &str = "linux.boot.first_line";
    /// Linux: the kernel's own clock at init.
    pub const LINUX_BOOT_KERNEL_CLOCK: &str = "linux.boot.kernel_clock";
    /// Linux VM-to-VM TCP throughput, the NICs on packed rings.
    pub const LINUX_VM_TO_VM_THROUGHPUT: &str = "linux.vm_to_vm.throughput";
    /// The same, the NICs on split rings (`ring = "split"`).
    pub const LINUX_VM_TO_VM_THROUGHPUT_SPLIT: &str = "linux.vm_to_vm.throughput.split";
    /// The bare-metal pair, for [`traps_per_packet`] and [`irqs_per_packet`].
    pub const BARE_METAL_PAIR: &str = "vm_to_vm";
    /// The Linux pair, for [`traps_per_packet`] and [`irqs_per_packet`].
    pub const LINUX_PAIR: &str = "linux.vm_to_vm";
    /// netclient's ICMP echo round trip to netsvc (median), the network idle.
    pub const VM_TO_VM_PING_RTT: &str = "vm_to_vm.ping_rtt";
    /// Linux `ping` round trip between the two Linux VMs (median), after the transfer.
    pub const LINUX_PING_RTT: &str = "linux.vm_to_vm.ping_rtt";

    /// The device model's ns/frame at `frame_bytes` and `batch`.
    pub fn device_model(frame_bytes: u64, batch: u64) -> String {
        format!("{DEVICE_MODEL_PREFIX}.{frame_bytes}B.batch{batch}")
    }

    /// The creation of VM `vm` (RAM, stage 2, images, cleaning) at boot.
    pub fn boot_vm_load(vm: &str) -> String {
        format!("first_line.boot.load.{vm}")
    }

    /// Traps per packet of `vm`'s NIC in `pair` ([`BARE_METAL_PAIR`] or [`LINUX_PAIR`]).
    pub fn traps_per_packet(pair: &str, vm: &str) -> String {
        format!("{pair}.{vm}.traps_per_packet")
    }

    /// Interrupts per packet of `vm`'s NIC in `pair`.
    pub fn irqs_per_packet(pair: &str, vm: &str) -> String {
        format!("{pair}.{vm}.irqs_per_packet")
    }

    /// Frames the switch dropped for `vm`'s NIC in `pair` (no receive buffer).
    pub fn drops(pair: &str, vm: &str) -> String {
        format!("{pair}.{vm}.drops")
    }
}

/// Everything one `cargo xtask bench` measured on one board.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// [`FORMAT`].
    pub format: u32,
    /// What was measured, where and when.
    pub meta: Meta,
    /// The figures in the order they were measured; names are unique.
    pub figures: Vec<Figure>,
    /// What stopped the bench early, if anything (the figures before it are kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a run measured, where and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// `git rev-parse HEAD`, or "unknown".
    pub commit: String,
    /// Whether the work tree had changes against that commit.
    pub dirty: bool,
    /// The board's name (`--board`).
    pub board: String,
    /// The QEMU that ran it, as `cargo xtask qemu-version` describes it.
    pub qemu: String,
    /// Its version number, when it said one.
    pub qemu_version: Option<String>,
    /// When the run started (RFC 3339, UTC).
    pub date: String,
    /// The host's CPUs available to the bench.
    pub host_cpus: usize,
    /// `--runs` (the first-line boots; the other sections have fixed rounds).
    pub runs: usize,
}

/// Which direction of a figure is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Times, sizes, costs.
    Lower,
    /// Throughput.
    Higher,
}

/// One figure: chroma's value and the peers measured beside it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// A stable name ([`names`]), the key `--compare` matches on.
    pub name: String,
    /// chroma's value (a median where there were rounds).
    pub value: f64,
    /// Its unit: "ms", "s", "bytes", "KiB/s", "ns/frame", "per packet".
    pub unit: String,
    /// Which direction is better.
    pub better: Better,
    /// The same figure for the peers run in the same invocation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Peer>,
    /// How many rounds the median is of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounds: Option<usize>,
    /// What the figure was measured at, e.g. `frame_bytes` and `batch`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, u64>,
}

/// A peer's value of a figure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    /// "plain QEMU", "virtio-queue", "copy".
    pub name: String,
    /// The peer's value, in the figure's unit.
    pub value: f64,
    /// The figure's value / the peer's; absent when the peer's is zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
}

impl Figure {
    /// A figure without peers.
    pub fn new(name: impl Into<String>, value: f64, unit: &str, better: Better) -> Self {
        Figure {
            name: name.into(),
            value,
            unit: unit.to_owned(),
            better,
            peers: Vec::new(),
            rounds: None,
            params: BTreeMap::new(),
        }
    }

    /// Adds a peer's value, and the ratio of this figure's to it.
    pub fn peer(mut self, name: &str, value: f64) -> Self {
        let ratio = self.value / value;
        self.peers.push(Peer {
            name: name.to_owned(),
            value,
            ratio: ratio.is_finite().then_some(ratio),
        });
        self
    }

    /// Says how many rounds the medians are of.
    pub fn rounds(mut self, rounds: usize) -> Self {
        self.rounds = Some(rounds);
        self
    }

    /// Says what the figure was measured at.
    pub fn param(mut self, key: &str, value: u64) -> Self {
        self.params.insert(key.to_owned(), value);
        self
    }

    /// The ratio to the first peer, the one a comparison judges on.
    pub fn ratio(&self) -> Option<f64> {
        self.peers.first().and_then(|peer| peer.ratio)
    }

    /// The value of the peer named `name`.
    pub fn peer_value(&self, name: &str) -> Option<f64> {
        self.peers
            .iter()
            .find(|peer| peer.name == name)
            .map(|peer| peer.value)
    }

    /// Why the figure cannot be written to JSON (a value that is not a finite number).
    fn invalid(&self) -> Option<String> {
        if !self.value.is_finite() {
            return Some(format!("{}: value {} is not finite", self.name, self.value));
        }
        self.peers
            .iter()
            .find(|peer| !peer.value.is_finite())
            .map(|peer| {
                format!(
                    "{}: {}'s value {} is not finite",
                    self.name, peer.name, peer.value
                )
            })
    }
}

impl Meta {
    /// The metadata of a run on `board` starting now.
    pub fn now(board: Board, runs: usize) -> Self {
        let qemu_version = crate::emulator::version_for(board).map(|v| v.to_string());
        Meta {
            commit: git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_owned()),
            dirty: git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|status| !status.is_empty()),
            board: board.name().to_owned(),
            qemu: crate::emulator::describe_for(board),
            qemu_version,
            date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            host_cpus: std::thread::available_parallelism().map_or(1, usize::from),
            runs,
        }
    }

    /// "abc1234 (dirty), qemu-virt-aarch64, QEMU 10.0.2, 2026-12-02T04:40:00Z".
    fn summary(&self) -> String {
        let commit: String = self.commit.chars().take(12).collect();
        format!(
            "{commit}{}, {}, QEMU {}, {}",
            if self.dirty { " (dirty)" } else { "" },
            self.board,
            self.qemu_version.as_deref().unwrap_or("unknown"),
            self.date
        )
    }
}

/// `git ARGS` in the workspace, its trimmed stdout when it succeeds.
fn git(args: &[&str]) -> Option<String> {
    let output = crate::host_tools::tool_command("git")
        .args(args)
        .current_dir(workspace_root())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

impl Results {
    /// No figures yet.
    pub fn new(meta: Meta) -> Self {
        Results {
            format: FORMAT,
            meta,
            figures: Vec::new(),
            error: None,
        }
    }

    /// Records `figure`; one with a value that is not a finite number (JSON
    /// has none) is left out with a warning, and a second figure of the same
    /// name replaces the first.
    pub fn push(&mut self, figure: Figure) {
        if let Some(why) = figure.invalid() {
            eprintln!("bench results: left out {why}");
            return;
        }
        match self.figures.iter_mut().find(|old| old.name == figure.name) {
            Some(old) => *old = figure,
            None => self.figures.push(figure),
        }
    }

    /// The figure named `name`.
    pub fn get(&self, name: &str) -> Option<&Figure> {
        self.figures.iter().find(|figure| figure.name == name)
    }

    /// The file as JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map(|text| text + "\n")
            .map_err(|error| format!("bench results: {error}"))
    }

    /// Reads results from JSON text; `what` names it in errors.
    pub fn from_json(text: &str, what: &str) -> Result<Self> {
        let results: Results = serde_json::from_str(text)
            .map_err(|error| format!("{what}: not a bench results file: {error}"))?;
        if results.format != FORMAT {
            return Err(format!(
                "{what}: results format {}, this xtask reads format {FORMAT}",
                results.format
            ));
        }
        let mut seen = HashSet::new();
        if let Some(twice) = results
            .figures
            .iter()
            .find(|figure| !seen.insert(figure.name.as_str()))
        {
            return Err(format!("{what}: figure {} appears twice", twice.name));
        }
        Ok(results)
    }

    /// Writes `path` (and its directory).
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
        }
        std::fs::write(path, self.to_json()?)
            .map_err(|error| format!("{}: {error}", path.display()))
    }

    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("{}: cannot read: {error}", path.display()))?;
        Self::from_json(&text, &path.display().to_string())
    }
}

/// What a comparison judged a figure on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judged {
    /// The ratio to the first peer (both runs had one).
    Ratio,
    /// The value.
    Value,
}

/// One figure in both runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// The figure's name.
    pub name: String,
    /// Its unit (the new run's).
    pub unit: String,
    /// The old and the new value.
    pub values: (f64, f64),
    /// (new - old) / old in %, when old is not zero.
    pub value_change: Option<f64>,
    /// The old and the new ratio to the first peer, when both have one.
    pub ratios: Option<(f64, f64)>,
    /// The change of the ratio in %.
    pub ratio_change: Option<f64>,
    /// What the verdict is on.
    pub judged: Judged,
    /// Worse by more than the threshold.
    pub regression: bool,
}

/// Two runs side by side.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// The threshold in %.
    pub threshold: f64,
    /// The old run's summary line and the new one's.
    pub runs: (String, String),
    /// Warnings about what differs between the runs (board, unit, direction).
    pub warnings: Vec<String>,
    /// The figures in both, in the new run's order.
    pub changes: Vec<Change>,
    /// Figures only the old run has.
    pub only_old: Vec<String>,
    /// Figures only the new run has.
    pub only_new: Vec<String>,
}

impl Comparison {
    /// How many figures got worse beyond the threshold.
    pub fn regression_count(&self) -> usize {
        self.changes
            .iter()
            .filter(|change| change.regression)
            .count()
    }
}

/// `(new - old) / old` in %, none when `old` is zero (and both are not).
fn percent(old: f64, new: f64) -> Option<f64> {
    if old == 0.0 {
        (new == 0.0).then_some(0.0)
    } else {
        Some((new - old) / old.abs() * 100.0)
    }
}

/// Sets `old` and `new` side by side; a figure is a regression when it got
/// worse (by its [`Better`]) by more than `threshold` % in its ratio to its
/// first peer when both runs have one, in its value otherwise.
pub fn compare(old: &Results, new: &Results, threshold: f64) -> Comparison {
    let mut warnings = Vec::new();
    if old.meta.board != new.meta.board {
        warnings.push(format!(
            "the runs are of different boards ({} and {})",
            old.meta.board, new.meta.board
        ));
    }
    for (what, results) in [("old", old), ("new", new)] {
        if let Some(error) = &results.error {
            warnings.push(format!("the {what} run stopped early: {error}"));
        }
    }
    let mut changes = Vec::new();
    let mut only_new = Vec::new();
    for figure in &new.figures {
        let Some(before) = old.get(&figure.name) else {
            only_new.push(figure.name.clone());
            continue;
        };
        if before.unit != figure.unit || before.better != figure.better {
            warnings.push(format!(
                "{}: measured in {} ({:?} is better) before, in {} ({:?} is better) now",
                figure.name, before.unit, before.better, figure.unit, figure.better
            ));
        }
        let ratios = before.ratio().zip(figure.ratio());
        let ratio_change = ratios.and_then(|(old, new)| percent(old, new));
        let value_change = percent(before.value, figure.value);
        let (judged, change) = match ratios {
            Some(_) => (Judged::Ratio, ratio_change),
            None => (Judged::Value, value_change),
        };
        let regression = match (change, figure.better) {
            (Some(change), Better::Lower) => change > threshold,
            (Some(change), Better::Higher) => change < -threshold,
            // From zero to something: worse when lower is better.
            (None, Better::Lower) => true,
            (None, Better::Higher) => false,
        };
        changes.push(Change {
            name: figure.name.clone(),
            unit: figure.unit.clone(),
            values: (before.value, figure.value),
            value_change,
            ratios,
            ratio_change,
            judged,
            regression,
        });
    }
    let only_old = old
        .figures
        .iter()
        .filter(|figure| new.get(&figure.name).is_none())
        .map(|figure| figure.name.clone())
        .collect();
    Comparison {
        threshold,
        runs: (old.meta.summary(), new.meta.summary()),
        warnings,
        changes,
        only_old,
        only_new,
    }
}

/// A figure's value with as many decimals as its size deserves.
pub fn format_value(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude == 0.0 {
        "0".to_owned()
    } else if magnitude >= 1000.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

/// "+4.2%", or "n/a".
fn format_percent(change: Option<f64>) -> String {
    change.map_or_else(|| "n/a".to_owned(), |change| format!("{change:+.1}%"))
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "compare: old {}", self.runs.0)?;
        writeln!(f, "compare: new {}", self.runs.1)?;
        for warning in &self.warnings {
            writeln!(f, "compare: warning: {warning}")?;
        }
        let width = self
            .changes
            .iter()
            .map(|change| change.name.len())
            .max()
            .unwrap_or(0)
            .max("figure".len());
        writeln!(
            f,
            "{:<width$} {:>10} {:>12} {:>12} {:>8}  ratio to the first peer, old -> new",
            "figure", "unit", "old", "new", "change"
        )?;
        for change in &self.changes {
            let mut ratio = String::new();
            if let Some((old, new)) = change.ratios {
                let _ = write!(
                    ratio,
                    "{old:.3} -> {new:.3} ({})",
                    format_percent(change.ratio_change)
                );
            }
            let verdict = match (change.regression, change.judged) {
                (true, Judged::Ratio) => "  REGRESSION (ratio)",
                (true, Judged::Value) => "  REGRESSION",
                (false, _) => "",
            };
            let row = format!(
                "{:<width$} {:>10} {:>12} {:>12} {:>8}  {ratio:<30}{verdict}",
                change.name,
                change.unit,
                format_value(change.values.0),
                format_value(change.values.1),
                format_percent(change.value_change),
            );
            writeln!(f, "{}", row.trim_end())?;
        }
        for (which, names) in [("old", &self.only_old), ("new", &self.only_new)] {
            if !names.is_empty() {
                writeln!(
                    f,
                    "compare: only in the {which} run ({}): {}",
                    names.len(),
                    names.join(", ")
                )?;
            }
        }
        write!(
            f,
            "compare: {} figures in both, {} worse by more than {}% (judged on the ratio to the \
             first peer where both runs have one, else on the value)",
            self.changes.len(),
            self.regression_count(),
            self.threshold
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fixed run with every kind of figure.
    pub(crate) fn sample() -> Results {
        let mut results = Results::new(Meta {
            commit: "0123456789abcdef0123456789abcdef01234567".to_owned(),
            dirty: true,
            board: "qemu-virt-aarch64".to_owned(),
            qemu: "QEMU 10.0.2 (/usr/bin/qemu-system-aarch64)".to_owned(),
            qemu_version: Some("10.0.2".to_owned()),
            date: "2026-12-02T04:40:00Z".to_owned(),
            host_cpus: 2,
            runs: 5,
        });
        results.push(Figure::new(
            names::IMAGE_CHROMA_BIN,
            812_345.0,
            "bytes",
            Better::Lower,
        ));
        results.push(
            Figure::new(names::FIRST_LINE, 120.0, "ms", Better::Lower)
                .peer("plain QEMU", 100.0)
                .rounds(5),
        );
        results.push(
            Figure::new(
                names::VM_TO_VM_THROUGHPUT,
                40_000.0,
                "KiB/s",
                Better::Higher,
            )
            .peer("plain QEMU", 20_000.0)
            .rounds(3),
        );
        results.push(
            Figure::new(
                names::LINUX_VM_TO_VM_THROUGHPUT,
                30_000.0,
                "KiB/s",
                Better::Higher,
            )
            .peer("plain QEMU", 25_000.0),
        );
        for (name, value, peer) in [
            (names::LINUX_BOOT_INIT, 5200.0, 4000.0),
            (names::LINUX_BOOT_FIRST_LINE, 300.0, 150.0),
        ] {
            results.push(Figure::new(name, value, "ms", Better::Lower).peer("plain QEMU", peer));
        }
        results.push(
            Figure::new(names::LINUX_BOOT_KERNEL_CLOCK, 4.1, "s", Better::Lower)
                .peer("plain QEMU", 3.5),
        );
        for (pair, vm, traps, irqs) in [
            (names::BARE_METAL_PAIR, "client", 0.087, 0.179),
            (names::BARE_METAL_PAIR, "server", 0.25, 0.5),
            (names::LINUX_PAIR, "client", 0.4, 0.3),
        ] {
            results.push(Figure::new(
                names::traps_per_packet(pair, vm),
                traps,
                "per packet",
                Better::Lower,
            ));
            results.push(Figure::new(
                names::irqs_per_packet(pair, vm),
                irqs,
                "per packet",
                Better::Lower,
            ));
        }
        for (bytes, batch, chroma, queue, copy) in [
            (64, 1, 90.0, 150.0, 20.0),
            (1500, 1, 180.0, 260.0, 80.0),
            (64, 32, 40.0, 70.0, 10.0),
            (1500, 32, 120.0, 190.0, 60.0),
        ] {
            results.push(
                Figure::new(
                    names::device_model(bytes, batch),
                    chroma,
                    "ns/frame",
                    Better::Lower,
                )
                .peer("virtio-queue", queue)
                .peer("copy", copy)
                .param("frame_bytes", bytes)
                .param("batch", batch),
            );
        }
        results
    }

    #[test]
    fn results_survive_a_round_trip_through_json() {
        let results = sample();
        let text = results.to_json().unwrap();
        assert_eq!(Results::from_json(&text, "t").unwrap(), results);
        assert!(text.contains("\"commit\": \"0123456789abcdef"), "{text}");
        assert!(text.contains("\"better\": \"higher\""), "{text}");
        // Through a file, too.
        let dir = std::env::temp_dir().join(format!("xtask-results-{}", std::process::id()));
        let path = dir.join("sub").join("results.json");
        results.save(&path).unwrap();
        assert_eq!(Results::load(&path).unwrap(), results);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn peers_carry_ratios_and_bad_values_are_left_out() {
        let figure = Figure::new("f", 120.0, "ms", Better::Lower)
            .peer("plain QEMU", 100.0)
            .peer("zero", 0.0);
        assert_eq!(figure.ratio(), Some(1.2));
        assert_eq!(figure.peers[1].ratio, None);
        assert_eq!(figure.peer_value("zero"), Some(0.0));
        let mut results = sample();
        let count = results.figures.len();
        results.push(Figure::new("nan", f64::NAN, "ms", Better::Lower));
        results.push(Figure::new("inf", 1.0, "ms", Better::Lower).peer("p", f64::INFINITY));
        assert_eq!(results.figures.len(), count);
        // A figure measured again replaces the first.
        results.push(Figure::new(names::FIRST_LINE, 1.0, "ms", Better::Lower));
        assert_eq!(results.figures.len(), count);
        assert_eq!(results.get(names::FIRST_LINE).unwrap().value, 1.0);
        // What it writes it reads back.
        assert!(Results::from_json(&results.to_json().unwrap(), "t").is_ok());
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let missing = Results::load(Path::new("/nonexistent/old.json")).unwrap_err();
        assert!(
            missing.starts_with("/nonexistent/old.json: cannot read"),
            "{missing}"
        );
        let malformed = Results::from_json("{\"format\": 1,", "old.json").unwrap_err();
        assert!(
            malformed.starts_with("old.json: not a bench results file"),
            "{malformed}"
        );
        let other = Results::from_json("[1, 2]", "old.json").unwrap_err();
        assert!(other.contains("not a bench results file"), "{other}");
        let mut future = sample();
        future.format = FORMAT + 1;
        let error = Results::from_json(&future.to_json().unwrap(), "new.json").unwrap_err();
        assert!(error.contains("results format 2"), "{error}");
        let mut twice = sample();
        twice.figures.push(twice.figures[0].clone());
        let error = Results::from_json(&twice.to_json().unwrap(), "t").unwrap_err();
        assert!(error.contains("appears twice"), "{error}");
    }

    /// `sample()` with `name`'s value (and, when given, its first peer's) changed.
    fn changed(name: &str, value: f64, peer: Option<f64>) -> Results {
        let mut results = sample();
        let figure = results
            .figures
            .iter_mut()
            .find(|figure| figure.name == name)
            .unwrap();
        let mut new = Figure {
            peers: Vec::new(),
            value,
            ..figure.clone()
        };
        for (index, old) in figure.peers.iter().enumerate() {
            let peer_value = match (index, peer) {
                (0, Some(peer)) => peer,
                _ => old.value,
            };
            new = new.peer(&old.name, peer_value);
        }
        *figure = new;
        results
    }

    #[test]
    fn a_comparison_flags_regressions_only() {
        let old = sample();
        // Negative control: the same run twice is no regression.
        let same = compare(&old, &old, 10.0);
        assert_eq!(same.regression_count(), 0, "{same}");
        assert_eq!(same.changes.len(), old.figures.len());
        assert!(same.only_old.is_empty() && same.only_new.is_empty());

        // Without a peer the value decides: 20% bigger is a regression...
        let bigger = changed(names::IMAGE_CHROMA_BIN, 812_345.0 * 1.2, None);
        let comparison = compare(&old, &bigger, 10.0);
        let change = &comparison.changes[0];
        assert_eq!(change.judged, Judged::Value);
        assert!(change.regression, "{comparison}");
        assert!((change.value_change.unwrap() - 20.0).abs() < 1e-9);
        assert_eq!(comparison.regression_count(), 1);
        assert!(
            comparison.to_string().contains("REGRESSION"),
            "{comparison}"
        );
        // ...20% smaller an improvement, 5% bigger within the threshold.
        let smaller = changed(names::IMAGE_CHROMA_BIN, 812_345.0 * 0.8, None);
        assert_eq!(compare(&old, &smaller, 10.0).regression_count(), 0);
        let slightly = changed(names::IMAGE_CHROMA_BIN, 812_345.0 * 1.05, None);
        assert_eq!(compare(&old, &slightly, 10.0).regression_count(), 0);
        assert_eq!(compare(&old, &slightly, 1.0).regression_count(), 1);

        // Higher is better for throughput: a drop is the regression.
        let slower = changed(names::VM_TO_VM_THROUGHPUT, 30_000.0, None);
        let comparison = compare(&old, &slower, 10.0);
        assert_eq!(comparison.regression_count(), 1, "{comparison}");
        let faster = changed(names::VM_TO_VM_THROUGHPUT, 50_000.0, None);
        assert_eq!(compare(&old, &faster, 10.0).regression_count(), 0);

        // With a peer in both runs the ratio decides: a slower machine
        // (chroma and its peer 50% slower alike) is no regression...
        let slow_machine = changed(names::FIRST_LINE, 180.0, Some(150.0));
        let comparison = compare(&old, &slow_machine, 10.0);
        let change = comparison
            .changes
            .iter()
            .find(|change| change.name == names::FIRST_LINE)
            .unwrap();
        assert_eq!(change.judged, Judged::Ratio);
        assert!(!change.regression, "{comparison}");
        assert!((change.value_change.unwrap() - 50.0).abs() < 1e-9);
        // ...chroma alone 50% slower is.
        let slow_chroma = changed(names::FIRST_LINE, 180.0, Some(100.0));
        let comparison = compare(&old, &slow_chroma, 10.0);
        assert_eq!(comparison.regression_count(), 1, "{comparison}");
        assert!(
            comparison.to_string().contains("REGRESSION (ratio)"),
            "{comparison}"
        );
    }

    #[test]
    fn a_comparison_reports_figures_in_one_run_only() {
        let old = sample();
        let mut new = sample();
        new.figures
            .retain(|figure| figure.name != names::FIRST_LINE);
        new.push(Figure::new("new.figure", 1.0, "ms", Better::Lower));
        new.meta.board = "qemu-virt-arm".to_owned();
        new.error = Some("Linux on plain QEMU: no init".to_owned());
        let comparison = compare(&old, &new, 10.0);
        assert_eq!(comparison.only_old, vec![names::FIRST_LINE.to_owned()]);
        assert_eq!(comparison.only_new, vec!["new.figure".to_owned()]);
        assert_eq!(comparison.regression_count(), 0);
        let text = comparison.to_string();
        assert!(
            text.contains("only in the old run (1): first_line"),
            "{text}"
        );
        assert!(
            text.contains("only in the new run (1): new.figure"),
            "{text}"
        );
        assert!(text.contains("different boards"), "{text}");
        assert!(text.lines().all(|line| line == line.trim_end()), "{text}");
        assert!(text.contains("the new run stopped early"), "{text}");
        assert!(
            text.starts_with("compare: old 0123456789ab (dirty), qemu-virt-aarch64, QEMU 10.0.2"),
            "{text}"
        );
    }

    #[test]
    fn percentages_and_numbers_print_readably() {
        assert!((percent(100.0, 110.0).unwrap() - 10.0).abs() < 1e-9);
        assert!((percent(200.0, 150.0).unwrap() + 25.0).abs() < 1e-9);
        assert_eq!(percent(0.0, 0.0), Some(0.0));
        assert_eq!(percent(0.0, 1.0), None);
        assert_eq!(format_percent(Some(4.24)), "+4.2%");
        assert_eq!(format_percent(Some(-12.0)), "-12.0%");
        assert_eq!(format_percent(None), "n/a");
        assert_eq!(format_value(812_345.4), "812345");
        assert_eq!(format_value(120.04), "120.0");
        assert_eq!(format_value(0.0874), "0.087");
        assert_eq!(format_value(0.0), "0");
    }
}
