//! Choosing the cheapest correct cache policy, and the hooks that apply it.
//!
//! | situation                                         | policy              |
//! |---------------------------------------------------|---------------------|
//! | PIPT-behaving D-side, coherent peer, same memory type | `Nothing`       |
//! | aliasing VIPT D-side (way > page), coherent peer  | `ColourOnly`        |
//! | VIVT D-side, non-coherent peer, or the guest maps the rings with another memory type (no FEAT_S2FWB) | `Maintain` |
//! | both of the last two, or forced (QEMU tests)      | `ColourAndMaintain` |
//!
//! The *peer* is whoever else touches the shared bytes: the guest vCPU, or a
//! DMA master. A device is coherent if its device-tree node says
//! `dma-coherent`.

use core::cell::{Cell, RefCell};

use chroma_mem::{CacheHooks, HostVirtAddr};

use crate::ops::{clean_invalidate_range, clean_range, invalidate_range, line_span, CacheOps};
use crate::CacheGeometry;

/// How the guest maps the shared memory (rings and buffers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestMemoryType {
    /// Normal, inner and outer write-back cacheable: matches the hypervisor's alias.
    WriteBack,
    /// Non-cacheable, Device, or the guest's MMU is off: accesses bypass the cache.
    NonCacheable,
}

/// What the policy chooser looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyInputs {
    /// Whether the other agent on the shared memory snoops the caches
    /// (`dma-coherent` in the device tree; a cacheable guest vCPU is coherent).
    pub peer_coherent: bool,
    /// How the guest maps the rings.
    pub guest_memory: GuestMemoryType,
    /// FEAT_S2FWB with stage-2 forcing write-back: the guest's memory type
    /// then cannot differ from the hypervisor's.
    pub stage2_forces_write_back: bool,
    /// Run colouring and maintenance even where the hardware does not need
    /// them (config or command line; QEMU models no caches).
    pub forced: bool,
}

impl Default for PolicyInputs {
    fn default() -> Self {
        Self {
            peer_coherent: true,
            guest_memory: GuestMemoryType::WriteBack,
            stage2_forces_write_back: false,
            forced: false,
        }
    }
}

/// What the hypervisor does about aliases of guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// PIPT behaviour, coherent peer, matching memory types: nothing to do.
    Nothing,
    /// Aliasing VIPT: give every alias the guest's colour; no maintenance.
    ColourOnly,
    /// Clean after writing and invalidate before reading, by line.
    Maintain,
    /// Both (aliasing VIPT with a non-coherent peer, or the forced mode).
    ColourAndMaintain,
}

impl Policy {
    /// Picks the cheapest policy that is still correct.
    pub fn choose(geometry: &CacheGeometry, inputs: PolicyInputs) -> Self {
        if inputs.forced {
            return Policy::ColourAndMaintain;
        }
        let vivt = geometry.data_vivt();
        // A VIVT cache also has colours, but colouring cannot save it: the
        // tag is virtual, so two aliases are two lines whatever their colour.
        let colour = !vivt && geometry.data_colours() > 1;
        let mismatched = inputs.guest_memory == GuestMemoryType::NonCacheable
            && !inputs.stage2_forces_write_back;
        let maintain = vivt || !inputs.peer_coherent || mismatched;
        match (colour, maintain) {
            (false, false) => Policy::Nothing,
            (true, false) => Policy::ColourOnly,
            (false, true) => Policy::Maintain,
            (true, true) => Policy::ColourAndMaintain,
        }
    }

    /// Whether aliases must be coloured.
    pub const fn colours(self) -> bool {
        matches!(self, Policy::ColourOnly | Policy::ColourAndMaintain)
    }

    /// Whether accesses must be maintained.
    pub const fn maintains(self) -> bool {
        matches!(self, Policy::Maintain | Policy::ColourAndMaintain)
    }
}

/// Counts of the maintenance one [`MaintainHooks`] issued, and of the
/// protocol minimum it is measured against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceStats {
    /// Lines invalidated (or cleaned+invalidated at a partial edge) before reads.
    pub lines_invalidated: u64,
    /// Lines cleaned after writes.
    pub lines_cleaned: u64,
    /// Partial lines cleaned+invalidated before writes.
    pub lines_prepared: u64,
    /// The minimum, reads: distinct lines read between two full barriers
    /// ([`CacheHooks::barrier`], [`CacheHooks::end_operation`]), summed.
    pub min_read: u64,
    /// The minimum, writes: distinct lines written in one operation, summed.
    pub min_written: u64,
    /// The minimum, preparation: distinct lines per operation that a write
    /// covers only in part and whose other bytes another agent may write
    /// (not wholly inside a [`chroma_mem::DeviceArea`]), summed.
    pub min_prepared: u64,
}

impl MaintenanceStats {
    /// All lines maintained.
    pub const fn total(&self) -> u64 {
        self.lines_invalidated + self.lines_cleaned + self.lines_prepared
    }

    /// The protocol minimum of lines to maintain (see `docs/caches.md`,
    /// "The protocol minimum").
    pub const fn minimum(&self) -> u64 {
        self.min_read + self.min_written + self.min_prepared
    }
}

/// Ranges of line addresses `[start, end)`, disjoint and not adjacent, at
/// most `N` of them: what the hooks remember within an operation. A set
/// that is full refuses an insert; its owner then forgets (a fresh line)
/// or cleans (a pending line) everything, which costs lines, never
/// correctness.
#[derive(Clone, Copy, Debug)]
struct LineSet<const N: usize> {
    ranges: [(u64, u64); N],
    len: usize,
}

impl<const N: usize> LineSet<N> {
    const fn new() -> Self {
        Self {
            ranges: [(0, 0); N],
            len: 0,
        }
    }

    fn live(&self) -> &[(u64, u64)] {
        self.ranges.get(..self.len).unwrap_or(&[])
    }

    fn contains(&self, line: u64) -> bool {
        self.live().iter().any(|&(s, e)| s <= line && line < e)
    }

    /// The end of the range holding `line`, if one does: the first line
    /// past a run of lines in the set.
    fn end_of_run(&self, line: u64) -> Option<u64> {
        self.live()
            .iter()
            .find(|&&(s, e)| s <= line && line < e)
            .map(|&(_, e)| e)
    }

    /// Bytes of `start..end` the set holds: the ranges are disjoint, so
    /// their overlaps with it add up (one pass, not a search per line).
    fn overlap(&self, start: u64, end: u64) -> u64 {
        self.live()
            .iter()
            .map(|&(s, e)| e.min(end).saturating_sub(s.max(start)))
            .sum()
    }

    /// Adds `start..end`, merging with overlapping or adjacent ranges.
    /// `false` (nothing added) if the set is full.
    fn insert(&mut self, mut start: u64, mut end: u64) -> bool {
        let mut i = 0;
        while i < self.len {
            let Some(&(s, e)) = self.ranges.get(i) else {
                break;
            };
            if s <= end && start <= e {
                start = start.min(s);
                end = end.max(e);
                self.len -= 1;
                let last = self.ranges.get(self.len).copied().unwrap_or((0, 0));
                if let Some(slot) = self.ranges.get_mut(i) {
                    *slot = last;
                }
                // The grown range may now touch one checked before.
                i = 0;
            } else {
                i += 1;
            }
        }
        match self.ranges.get_mut(self.len) {
            Some(slot) => {
                *slot = (start, end);
                self.len += 1;
                true
            }
            None => false,
        }
    }

    fn clear(&mut self) {
        self.len = 0;
    }
}

/// What merged maintenance remembers between two ordering points.
#[derive(Clone, Copy, Debug)]
struct Track {
    /// Lines maintained before a read (or prepared before a write) since the
    /// last Acquire that read a line not in here, barrier or operation end.
    fresh: LineSet<16>,
    /// Lines written and not yet cleaned.
    dirty: LineSet<16>,
    /// Lines of announced write runs ([`CacheHooks::before_write_run`]),
    /// whose edges were prepared with the run.
    covered: LineSet<8>,
    /// The minimum's tallies: lines read since the last barrier, lines
    /// written and lines needing preparation in this operation.
    seen_read: LineSet<32>,
    seen_written: LineSet<32>,
    seen_prepared: LineSet<32>,
}

impl Track {
    const fn new() -> Self {
        Self {
            fresh: LineSet::new(),
            dirty: LineSet::new(),
            covered: LineSet::new(),
            seen_read: LineSet::new(),
            seen_written: LineSet::new(),
            seen_prepared: LineSet::new(),
        }
    }
}

/// Counts the lines of `first..first + count * line` not yet in `set`
/// and adds them (a full set is emptied first: the tally then counts a
/// line again, erring on the generous side of the minimum).
///
/// The count is the range's lines less the set's overlap with it, in
/// lines: every range the hooks insert starts and ends on a line boundary,
/// so the overlap is whole lines. (A search of the set per line made this
/// count, which only feeds the statistics, the costliest step of a
/// maintained frame on AArch32: ~9% of QEMU's time in a bare-metal
/// transfer.)
fn tally<const N: usize>(set: &mut LineSet<N>, first: u64, count: usize, line: u64) -> u64 {
    let end = first + count as u64 * line;
    // `line` is a power of two (see `line_span`): a shift, not a division.
    let new = (count as u64).saturating_sub(set.overlap(first, end) >> line.trailing_zeros());
    if !set.insert(first, end) {
        set.clear();
        set.insert(first, end);
    }
    new
}

/// The [`CacheHooks`] the guest memory layer calls: under a maintaining
/// policy, invalidate exactly the lines before a read and clean exactly the
/// lines after a write; otherwise nothing.
///
/// Before a read the lines are cleaned and invalidated (`DC CIVAC`), not
/// simply invalidated: on a PIPT cache, or a VIPT cache with coloured
/// aliases, the guest's cacheable writes land in the *same* line as the
/// hypervisor's alias, and a plain invalidate would throw the guest's dirty
/// data away (the oracle's forced-mode and NC-ring rows caught exactly this).
/// [`MaintainHooks::with_plain_invalidate`] opts into `DC IVAC` for lines
/// wholly inside the range, valid only when no other agent can have dirtied
/// them in a cache these operations reach (a non-coherent DMA master).
///
/// Plain invalidation is then still only used inside `window`, the VA range
/// reserved for aliases of guest memory, where the hypervisor keeps no data
/// of its own (every write there is followed by `after_write`); outside it
/// the hooks fall back to clean+invalidate, which never loses data, so a
/// wrong caller cannot corrupt hypervisor memory.
#[derive(Debug)]
pub struct MaintainHooks<O> {
    ops: O,
    policy: Policy,
    window_start: u64,
    window_end: u64,
    plain_invalidate: bool,
    merge: bool,
    track: RefCell<Track>,
    lines_invalidated: Cell<u64>,
    lines_cleaned: Cell<u64>,
    lines_prepared: Cell<u64>,
    min_read: Cell<u64>,
    min_written: Cell<u64>,
    min_prepared: Cell<u64>,
}

impl<O: CacheOps> MaintainHooks<O> {
    /// Hooks applying `policy` through `ops` to aliases inside
    /// `window_base..window_base + window_size` (see the type's docs).
    pub fn new(ops: O, policy: Policy, window_base: HostVirtAddr, window_size: u64) -> Self {
        Self {
            ops,
            policy,
            window_start: window_base.raw(),
            window_end: window_base.raw().saturating_add(window_size),
            plain_invalidate: false,
            merge: false,
            track: RefCell::new(Track::new()),
            lines_invalidated: Cell::new(0),
            lines_cleaned: Cell::new(0),
            lines_prepared: Cell::new(0),
            min_read: Cell::new(0),
            min_written: Cell::new(0),
            min_prepared: Cell::new(0),
        }
    }

    /// Merges maintenance per line and per batch (see `docs/caches.md`,
    /// "The protocol minimum"): a line is maintained before a read once
    /// between two ordering points, cleans after writes are deferred to the
    /// next Release store, full barrier or operation end and issued once per
    /// line, and a partly written line is prepared only if another agent
    /// may have written its other bytes. Only for a [`chroma_mem::GuestMemory`]
    /// that passes those points on ([`CacheHooks::before_release`],
    /// [`CacheHooks::before_acquire`], [`CacheHooks::barrier`],
    /// [`CacheHooks::end_operation`]); without them a deferred clean would
    /// wait for ever.
    pub fn merged(mut self) -> Self {
        self.merge = true;
        self
    }

    /// Whether maintenance is merged ([`Self::merged`]).
    pub const fn merges(&self) -> bool {
        self.merge
    }

    /// Uses `DC IVAC` (not `DC CIVAC`) for lines wholly inside a range
    /// before reads. Only for a peer that never writes through a cache these
    /// operations reach: a non-coherent DMA master, or a guest mapping the
    /// memory Non-cacheable. See the type's documentation.
    pub fn with_plain_invalidate(mut self) -> Self {
        self.plain_invalidate = true;
        self
    }

    /// The policy applied.
    pub const fn policy(&self) -> Policy {
        self.policy
    }

    /// The maintenance operations.
    pub const fn ops(&self) -> &O {
        &self.ops
    }

    /// The lines maintained so far.
    pub fn stats(&self) -> MaintenanceStats {
        MaintenanceStats {
            lines_invalidated: self.lines_invalidated.get(),
            lines_cleaned: self.lines_cleaned.get(),
            lines_prepared: self.lines_prepared.get(),
            min_read: self.min_read.get(),
            min_written: self.min_written.get(),
            min_prepared: self.min_prepared.get(),
        }
    }

    /// Clears the counters.
    pub fn reset_stats(&self) {
        for c in [
            &self.lines_invalidated,
            &self.lines_cleaned,
            &self.lines_prepared,
            &self.min_read,
            &self.min_written,
            &self.min_prepared,
        ] {
            c.set(0);
        }
    }

    fn add(counter: &Cell<u64>, n: u64) {
        counter.set(counter.get() + n);
    }

    /// The partial first and last lines of `va..va+len` whose other bytes
    /// are not all inside `area` (a device-only area, or none): the lines a
    /// write must find fresh. At most two, `None` where not needed.
    fn edges_to_prepare(
        &self,
        va: HostVirtAddr,
        len: usize,
        area: Option<(u64, u64)>,
    ) -> [Option<u64>; 2] {
        let line = self.ops.line_size() as u64;
        let Some((first, count)) = line_span(va, len, self.ops.line_size()) else {
            return [None, None];
        };
        if count == 0 {
            return [None, None];
        }
        let start = va.raw();
        let end = start.saturating_add(len as u64);
        let last = first + (count as u64 - 1) * line;
        let owned = |l: u64| matches!(area, Some((a, b)) if a <= l && l + line <= b);
        let head = (start != first || (count == 1 && end != first + line)) && !owned(first);
        let tail = count > 1 && end != last + line && !owned(last);
        [head.then_some(first), tail.then_some(last)]
    }

    /// Tallies the minimum for a write of `va..va+len` (`area`: see
    /// [`Self::edges_to_prepare`]).
    fn tally_write(&self, va: HostVirtAddr, len: usize, area: Option<(u64, u64)>) {
        let line = self.ops.line_size() as u64;
        let Some((first, count)) = line_span(va, len, self.ops.line_size()) else {
            return;
        };
        let mut track = self.track.borrow_mut();
        for edge in self.edges_to_prepare(va, len, area).into_iter().flatten() {
            // A line this operation already wrote was prepared (or wholly
            // written) then; a line of an announced run, with the run; a
            // line read since the last barrier is fresh already.
            if !track.seen_written.contains(edge)
                && !track.covered.contains(edge)
                && !track.seen_read.contains(edge)
            {
                Self::add(
                    &self.min_prepared,
                    tally(&mut track.seen_prepared, edge, 1, line),
                );
            }
        }
        Self::add(
            &self.min_written,
            tally(&mut track.seen_written, first, count, line),
        );
    }

    /// Prepares a write when merging: the edges that need it and are not
    /// fresh or pending already.
    fn prepare_merged(&self, va: HostVirtAddr, len: usize, area: Option<(u64, u64)>) {
        let line = self.ops.line_size() as u64;
        let mut track = self.track.borrow_mut();
        let mut n = 0;
        for edge in self.edges_to_prepare(va, len, area).into_iter().flatten() {
            if track.fresh.contains(edge)
                || track.dirty.contains(edge)
                || track.covered.contains(edge)
            {
                continue;
            }
            // SAFETY: the line holds bytes of the caller's range, which the guest memory layer translated to a mapped alias; clean+invalidate preserves data.
            unsafe { self.ops.clean_invalidate_line(HostVirtAddr::new(edge)) };
            n += 1;
            if !track.fresh.insert(edge, edge + line) {
                track.fresh.clear();
                track.fresh.insert(edge, edge + line);
            }
        }
        if n > 0 {
            self.ops.dsb();
            Self::add(&self.lines_prepared, n);
        }
    }

    /// Cleans every pending line except `keep` (a line a Release store is
    /// about to write, which stays pending), then `DSB`.
    fn clean_pending(&self, track: &mut Track, keep: Option<u64>) {
        let line = self.ops.line_size() as u64;
        let mut n = 0u64;
        let mut kept = false;
        for &(start, end) in track.dirty.live() {
            let mut at = start;
            while at < end {
                if Some(at) == keep {
                    kept = true;
                } else {
                    // SAFETY: the line was written through the mapped alias by this operation; cleaning never discards data.
                    unsafe { self.ops.clean_line(HostVirtAddr::new(at)) };
                    n += 1;
                }
                at += line;
            }
        }
        track.dirty.clear();
        if let (true, Some(k)) = (kept, keep) {
            track.dirty.insert(k, k + line);
        }
        if n > 0 {
            self.ops.dsb();
            Self::add(&self.lines_cleaned, n);
        }
    }

    /// [`CacheHooks::before_write_owned`]: as [`Self::before_write`], but a
    /// partial line wholly inside `area_va..area_va+area_len` (bytes only
    /// the device writes) needs no preparation when merging.
    pub fn before_write_owned(
        &self,
        va: HostVirtAddr,
        len: usize,
        area_va: HostVirtAddr,
        area_len: usize,
    ) {
        if !self.policy.maintains() || len == 0 {
            return;
        }
        let area = Some((area_va.raw(), area_va.raw().saturating_add(area_len as u64)));
        self.tally_write(va, len, area);
        if self.merge {
            self.prepare_merged(va, len, area);
        } else {
            self.prepare_edges(va, len);
        }
    }

    fn in_window(&self, va: HostVirtAddr, len: usize) -> bool {
        let end = u64::try_from(len)
            .ok()
            .and_then(|l| va.raw().checked_add(l));
        matches!(end, Some(end) if va.raw() >= self.window_start && end <= self.window_end)
    }

    /// Call before writing `len` bytes at `va` (also
    /// [`CacheHooks::before_write`]): cleans and invalidates the
    /// first and last line if the write covers them only partly. Our copy of
    /// such a line may predate the peer's writes to its other bytes; writing
    /// into it and cleaning it would put those stale bytes back in memory.
    /// Lines the write covers wholly need nothing: every byte is replaced.
    pub fn before_write(&self, va: HostVirtAddr, len: usize) {
        if !self.policy.maintains() || len == 0 {
            return;
        }
        self.tally_write(va, len, None);
        if self.merge {
            self.prepare_merged(va, len, None);
        } else {
            self.prepare_edges(va, len);
        }
    }

    /// Unmerged preparation: both partial edge lines, always.
    fn prepare_edges(&self, va: HostVirtAddr, len: usize) {
        let line = self.ops.line_size();
        let Some((first, count)) = line_span(va, len, line) else {
            return;
        };
        let start = va.raw();
        let end = start.saturating_add(len as u64);
        let line64 = line as u64;
        let last = first + (count as u64 - 1) * line64;
        let mut n = 0;
        if start != first || (count == 1 && end != first + line64) {
            // SAFETY: the line holds bytes of the caller's range, which the guest memory layer translated to a mapped alias; clean+invalidate preserves data.
            unsafe { self.ops.clean_invalidate_line(HostVirtAddr::new(first)) };
            n += 1;
        }
        if count > 1 && end != last + line64 {
            // SAFETY: as above, for the last line of the range.
            unsafe { self.ops.clean_invalidate_line(HostVirtAddr::new(last)) };
            n += 1;
        }
        if n > 0 {
            self.ops.dsb();
            self.lines_prepared.set(self.lines_prepared.get() + n);
        }
    }
}

impl<O: CacheOps> CacheHooks for MaintainHooks<O> {
    fn before_write(&self, va: HostVirtAddr, len: usize) {
        MaintainHooks::before_write(self, va, len);
    }

    fn before_write_owned(
        &self,
        va: HostVirtAddr,
        len: usize,
        area_va: HostVirtAddr,
        area_len: usize,
    ) {
        MaintainHooks::before_write_owned(self, va, len, area_va, area_len);
    }

    fn before_read(&self, va: HostVirtAddr, len: usize) {
        if !self.policy.maintains() {
            return;
        }
        let line = self.ops.line_size() as u64;
        let Some((first, count)) = line_span(va, len, self.ops.line_size()) else {
            return;
        };
        let mut track = self.track.borrow_mut();
        Self::add(
            &self.min_read,
            tally(&mut track.seen_read, first, count, line),
        );
        if self.merge {
            let start = va.raw();
            let end = start.saturating_add(len as u64);
            let plain = self.plain_invalidate && self.in_window(va, len);
            let mut n = 0;
            let end_line = first + count as u64 * line;
            let mut at = first;
            while at < end_line {
                // A line fresh or pending needs nothing, nor do the rest of
                // its run: skipped at once, not looked up line by line.
                if let Some(run_end) = track
                    .fresh
                    .end_of_run(at)
                    .or_else(|| track.dirty.end_of_run(at))
                {
                    at = run_end.max(at + line);
                    continue;
                }
                let whole = at >= start && at + line <= end;
                if plain && whole {
                    // SAFETY: as in the unmerged path below: inside the alias window, wholly inside the range, not pending (no write of ours in it), and the owner opted in.
                    unsafe { self.ops.invalidate_line(HostVirtAddr::new(at)) };
                } else {
                    // SAFETY: clean+invalidate never discards data; the line holds bytes of the caller's mapped range.
                    unsafe { self.ops.clean_invalidate_line(HostVirtAddr::new(at)) };
                }
                n += 1;
                at += line;
            }
            if n > 0 {
                self.ops.dsb();
                Self::add(&self.lines_invalidated, n);
            }
            if !track.fresh.insert(first, end_line) {
                track.fresh.clear();
                track.fresh.insert(first, end_line);
            }
            return;
        }
        drop(track);
        let lines = if self.plain_invalidate && self.in_window(va, len) {
            // SAFETY: 1. The range lies in the guest-alias window, which is mapped for every alias the guest memory layer hands out. 2. The hypervisor holds no dirty data of its own there: all its writes are followed by `after_write`, and partial edge lines are cleaned+invalidated by `invalidate_range`. 3. The owner opted in (`with_plain_invalidate`): no other agent dirties these lines in a cache this invalidate reaches.
            unsafe { invalidate_range(&self.ops, va, len) }
        } else {
            // SAFETY: clean+invalidate never discards data; the guest memory layer only passes mapped aliases.
            unsafe { clean_invalidate_range(&self.ops, va, len) }
        };
        self.lines_invalidated
            .set(self.lines_invalidated.get() + lines as u64);
    }

    fn after_write(&self, va: HostVirtAddr, len: usize) {
        if !self.policy.maintains() {
            return;
        }
        if self.merge {
            let line = self.ops.line_size() as u64;
            let Some((first, count)) = line_span(va, len, self.ops.line_size()) else {
                return;
            };
            let end = first + count as u64 * line;
            let mut track = self.track.borrow_mut();
            if !track.dirty.insert(first, end) {
                self.clean_pending(&mut track, None);
                track.dirty.insert(first, end);
            }
            return;
        }
        // SAFETY: cleaning never discards data; the range was just written through this alias, so it is mapped.
        let lines = unsafe { clean_range(&self.ops, va, len) };
        self.lines_cleaned
            .set(self.lines_cleaned.get() + lines as u64);
    }

    fn before_write_run(&self, va: HostVirtAddr, len: usize) {
        if !self.policy.maintains() || len == 0 {
            return;
        }
        // The run's own partial edges, as for one write of it all.
        let line = self.ops.line_size() as u64;
        {
            let mut track = self.track.borrow_mut();
            for edge in self.edges_to_prepare(va, len, None).into_iter().flatten() {
                if !track.seen_written.contains(edge) && !track.seen_read.contains(edge) {
                    Self::add(
                        &self.min_prepared,
                        tally(&mut track.seen_prepared, edge, 1, line),
                    );
                }
            }
        }
        if self.merge {
            self.prepare_merged(va, len, None);
        }
        let Some((first, count)) = line_span(va, len, self.ops.line_size()) else {
            return;
        };
        let mut track = self.track.borrow_mut();
        let end = first + count as u64 * line;
        if !track.covered.insert(first, end) {
            // Forgetting a run only costs its pieces' preparations.
            track.covered.clear();
            track.covered.insert(first, end);
        }
    }

    fn before_release(&self, va: HostVirtAddr, _len: usize) {
        if !self.policy.maintains() || !self.merge {
            return;
        }
        let line = self.ops.line_size() as u64;
        let keep = va.raw() & !(line - 1);
        self.clean_pending(&mut self.track.borrow_mut(), Some(keep));
    }

    fn before_acquire(&self, va: HostVirtAddr, len: usize) {
        if !self.policy.maintains() || !self.merge {
            return;
        }
        let line = self.ops.line_size() as u64;
        let Some((first, count)) = line_span(va, len, self.ops.line_size()) else {
            return;
        };
        let mut track = self.track.borrow_mut();
        let fresh = (0..count as u64).all(|i| {
            let at = first + i * line;
            track.fresh.contains(at) || track.dirty.contains(at)
        });
        // A fresh line gives the value already seen: nothing newer is
        // acquired, so what was read since stays good. Otherwise reads
        // after it must be at least as new as what it returns.
        if !fresh {
            track.fresh.clear();
        }
    }

    fn barrier(&self) {
        if !self.policy.maintains() {
            return;
        }
        let mut track = self.track.borrow_mut();
        track.seen_read.clear();
        track.covered.clear();
        if self.merge {
            self.clean_pending(&mut track, None);
            track.fresh.clear();
        }
    }

    fn end_operation(&self) {
        self.barrier();
        let mut track = self.track.borrow_mut();
        track.seen_written.clear();
        track.seen_prepared.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::LegacyArch;
    use crate::{CacheInfo, CacheKind, Indexing};

    const PAGE: u64 = 4096;

    fn geometry(indexing: Indexing, sets: u32) -> CacheGeometry {
        CacheGeometry::from_caches(
            &[CacheInfo {
                level: 1,
                kind: CacheKind::Data,
                line_size: 64,
                ways: 4,
                sets,
                indexing,
            }],
            PAGE,
        )
        .unwrap()
    }

    #[test]
    fn chooses_per_situation() {
        let coherent = PolicyInputs::default();
        let pipt = geometry(Indexing::Pipt, 256);
        let vipt_alias = geometry(Indexing::Vipt, 256);
        let vipt_small = geometry(Indexing::Vipt, 64);
        let vivt = geometry(Indexing::Vivt, 64);
        assert_eq!(Policy::choose(&pipt, coherent), Policy::Nothing);
        assert_eq!(Policy::choose(&vipt_small, coherent), Policy::Nothing);
        assert_eq!(Policy::choose(&vipt_alias, coherent), Policy::ColourOnly);
        assert_eq!(Policy::choose(&vivt, coherent), Policy::Maintain);
        let noncoherent = PolicyInputs {
            peer_coherent: false,
            ..coherent
        };
        assert_eq!(Policy::choose(&pipt, noncoherent), Policy::Maintain);
        assert_eq!(
            Policy::choose(&vipt_alias, noncoherent),
            Policy::ColourAndMaintain
        );
        let nc_guest = PolicyInputs {
            guest_memory: GuestMemoryType::NonCacheable,
            ..coherent
        };
        assert_eq!(Policy::choose(&pipt, nc_guest), Policy::Maintain);
        let fwb = PolicyInputs {
            stage2_forces_write_back: true,
            ..nc_guest
        };
        assert_eq!(Policy::choose(&pipt, fwb), Policy::Nothing);
        let forced = PolicyInputs {
            forced: true,
            ..coherent
        };
        assert_eq!(Policy::choose(&pipt, forced), Policy::ColourAndMaintain);
    }

    #[test]
    fn boards() {
        // Raspberry Pi 1 (ARM1176, 16KB 4-way): VIPT but a 4KB way.
        let pi1 = CacheGeometry::from_legacy_ctr(0x1D15_2152, LegacyArch::Armv6, PAGE).unwrap();
        assert_eq!(
            Policy::choose(&pi1, PolicyInputs::default()),
            Policy::Nothing
        );
        // The same core with 32KB caches aliases.
        let big = CacheGeometry::from_legacy_ctr(0x1D99_2992, LegacyArch::Armv6, PAGE).unwrap();
        assert_eq!(
            Policy::choose(&big, PolicyInputs::default()),
            Policy::ColourOnly
        );
        // Cortex-A72 (Raspberry Pi 4): PIPT-behaving D-side.
        let a72 = CacheGeometry::from_aarch64(
            0x8444_C004,
            0x23,
            |_, i| if i { 0x201F_E012 } else { 0x701F_E00A },
            false,
            PAGE,
        )
        .unwrap();
        assert_eq!(
            Policy::choose(&a72, PolicyInputs::default()),
            Policy::Nothing
        );
    }

    /// Records every maintenance operation (line address, kind).
    struct Log {
        ops: RefCell<std::vec::Vec<(char, u64)>>,
    }

    // SAFETY: a test double that records the operations instead of doing them.
    unsafe impl CacheOps for Log {
        fn line_size(&self) -> usize {
            64
        }
        unsafe fn clean_line(&self, va: HostVirtAddr) {
            self.ops.borrow_mut().push(('c', va.raw()));
        }
        unsafe fn invalidate_line(&self, va: HostVirtAddr) {
            self.ops.borrow_mut().push(('i', va.raw()));
        }
        unsafe fn clean_invalidate_line(&self, va: HostVirtAddr) {
            self.ops.borrow_mut().push(('x', va.raw()));
        }
        fn invalidate_icache_all(&self) {}
        fn dsb(&self) {}
        fn dmb(&self) {}
        fn isb(&self) {}
    }

    fn hooks(merged: bool) -> MaintainHooks<Log> {
        let h = MaintainHooks::new(
            Log {
                ops: RefCell::new(std::vec::Vec::new()),
            },
            Policy::Maintain,
            HostVirtAddr::new(0x10_0000),
            0x10_0000,
        );
        if merged {
            h.merged()
        } else {
            h
        }
    }

    fn taken(h: &MaintainHooks<Log>) -> std::vec::Vec<(char, u64)> {
        core::mem::take(&mut *h.ops().ops.borrow_mut())
    }

    const A: u64 = 0x10_0000;

    #[test]
    fn line_sets_merge_adjacent_ranges_and_refuse_when_full() {
        let mut set: LineSet<2> = LineSet::new();
        assert!(set.insert(0, 64) && set.insert(128, 192));
        // Bridges the two: one range.
        assert!(set.insert(64, 128));
        assert_eq!(set.live(), &[(0, 192)]);
        assert!(set.insert(512, 576) && !set.insert(1024, 1088));
        assert!(set.contains(128) && !set.contains(192) && !set.contains(1024));
    }

    /// `tally` as it was, a search of the set per line: the reference.
    fn tally_by_search<const N: usize>(
        set: &mut LineSet<N>,
        first: u64,
        count: usize,
        line: u64,
    ) -> u64 {
        let new = (0..count as u64)
            .filter(|i| !set.contains(first + i * line))
            .count() as u64;
        let end = first + count as u64 * line;
        if !set.insert(first, end) {
            set.clear();
            set.insert(first, end);
        }
        new
    }

    #[test]
    fn a_tally_counts_what_a_search_per_line_counts() {
        // xorshift: the same sequence every run.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = |bound: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % bound
        };
        let line = 64;
        for _ in 0..200 {
            let (mut by_overlap, mut by_search) = (LineSet::<8>::new(), LineSet::<8>::new());
            for _ in 0..40 {
                let first = next(64) * line;
                let count = usize::try_from(next(12)).unwrap_or(0) + 1;
                assert_eq!(
                    tally(&mut by_overlap, first, count, line),
                    tally_by_search(&mut by_search, first, count, line),
                    "lines {first:#x} + {count}"
                );
                assert_eq!(by_overlap.live(), by_search.live());
            }
        }
    }

    #[test]
    fn a_run_ends_where_its_range_does() {
        let mut set: LineSet<4> = LineSet::new();
        assert!(set.insert(64, 256) && set.insert(512, 576));
        assert_eq!(set.end_of_run(64), Some(256));
        assert_eq!(set.end_of_run(192), Some(256));
        assert_eq!(set.end_of_run(256), None);
        assert_eq!(set.end_of_run(512), Some(576));
        assert_eq!(set.overlap(0, 1024), 256);
        assert_eq!(set.overlap(128, 544), 128 + 32);
    }

    #[test]
    fn merged_reads_maintain_a_line_once_between_ordering_points() {
        let h = hooks(true);
        let v = |a: u64| HostVirtAddr::new(a);
        h.before_read(v(A + 2), 2);
        h.before_read(v(A + 4), 16);
        h.before_read(v(A + 60), 8);
        // Lines A and A+64, once each.
        assert_eq!(taken(&h), [('x', A), ('x', A + 64)]);
        // An Acquire of a fresh line changes nothing; of another line, the
        // lines read before are read afresh after it.
        h.before_acquire(v(A + 2), 2);
        h.before_read(v(A + 8), 4);
        assert!(taken(&h).is_empty());
        h.before_acquire(v(A + 0x1000), 2);
        h.before_read(v(A + 0x1000), 2);
        h.before_read(v(A + 8), 4);
        assert_eq!(taken(&h), [('x', A + 0x1000), ('x', A)]);
        // A full barrier: everything again.
        h.barrier();
        h.before_read(v(A + 8), 4);
        assert_eq!(taken(&h), [('x', A)]);
        let s = h.stats();
        assert_eq!(s.lines_invalidated, 5);
        // The minimum: lines A, A+64, A+0x1000 before the barrier, A after.
        assert_eq!(s.min_read, 4);
        // Unmerged: every access maintains its lines.
        let u = hooks(false);
        u.before_read(v(A + 2), 2);
        u.before_read(v(A + 4), 16);
        assert_eq!(taken(&u), [('x', A), ('x', A)]);
    }

    #[test]
    fn merged_writes_clean_once_at_the_publication_point() {
        let h = hooks(true);
        let v = |a: u64| HostVirtAddr::new(a);
        let area = (v(A), 0x100);
        // Two used elements in one line of the device's own area: no
        // preparation, no clean yet.
        for at in [A + 4, A + 12] {
            h.before_write_owned(v(at), 8, area.0, area.1);
            h.after_write(v(at), 8);
        }
        assert!(taken(&h).is_empty());
        // Buffer data sharing its first line with other bytes: prepared once.
        for (at, len) in [(A + 0x210, 12), (A + 0x21c, 101)] {
            h.before_write(v(at), len);
            h.after_write(v(at), len);
        }
        assert_eq!(taken(&h), [('x', A + 0x200), ('x', A + 0x280)]);
        // The Release store of the index (line A): the other lines first,
        // the index's own line stays pending and goes with the barrier.
        h.before_release(v(A + 2), 2);
        h.before_write_owned(v(A + 2), 2, area.0, area.1);
        h.after_write(v(A + 2), 2);
        assert_eq!(
            taken(&h),
            [('c', A + 0x200), ('c', A + 0x240), ('c', A + 0x280)]
        );
        h.end_operation();
        assert_eq!(taken(&h), [('c', A)]);
        let s = h.stats();
        assert_eq!((s.lines_cleaned, s.lines_prepared), (4, 2));
        assert_eq!((s.min_written, s.min_prepared), (4, 2));
        // A partial line reaching past the device's area is prepared.
        h.before_write_owned(v(A + 0xe0), 2, area.0, area.1);
        assert!(taken(&h).is_empty());
        h.before_write_owned(v(A + 0xe0), 2, area.0, 0xf0);
        assert_eq!(taken(&h), [('x', A + 0xc0)]);
    }
}
