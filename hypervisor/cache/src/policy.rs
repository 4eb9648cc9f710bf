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

use core::cell::Cell;

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

/// Counts of the maintenance one [`MaintainHooks`] issued.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceStats {
    /// Lines invalidated (or cleaned+invalidated at a partial edge) before reads.
    pub lines_invalidated: u64,
    /// Lines cleaned after writes.
    pub lines_cleaned: u64,
    /// Partial lines cleaned+invalidated before writes.
    pub lines_prepared: u64,
}

impl MaintenanceStats {
    /// All lines maintained.
    pub const fn total(&self) -> u64 {
        self.lines_invalidated + self.lines_cleaned + self.lines_prepared
    }
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
    lines_invalidated: Cell<u64>,
    lines_cleaned: Cell<u64>,
    lines_prepared: Cell<u64>,
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
            lines_invalidated: Cell::new(0),
            lines_cleaned: Cell::new(0),
            lines_prepared: Cell::new(0),
        }
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
        }
    }

    /// Clears the counters.
    pub fn reset_stats(&self) {
        self.lines_invalidated.set(0);
        self.lines_cleaned.set(0);
        self.lines_prepared.set(0);
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

    fn before_read(&self, va: HostVirtAddr, len: usize) {
        if !self.policy.maintains() {
            return;
        }
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
        // SAFETY: cleaning never discards data; the range was just written through this alias, so it is mapped.
        let lines = unsafe { clean_range(&self.ops, va, len) };
        self.lines_cleaned
            .set(self.lines_cleaned.get() + lines as u64);
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
}
