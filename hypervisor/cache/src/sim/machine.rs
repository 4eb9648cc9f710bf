//! A write-back data cache with real aliasing, a backing memory, and the truth.
//!
//! The model: one physically shared L1 data cache (the guest vCPU and the
//! hypervisor run on the same core), write-back and write-allocate, LRU
//! replacement; a backing memory; and `truth`, the last value *any* agent
//! wrote to each physical byte, in program order. Agents reach memory through
//! a [`View`]: a linear VA -> PA mapping that is either cacheable (through
//! this cache) or non-cacheable (straight to memory: a non-coherent DMA
//! master, or a guest whose mapping is Non-cacheable).
//!
//! Indexing: PIPT indexes and tags with the PA; VIPT indexes with the VA and
//! tags with the PA, so two aliases of one PA meet in a set only if their
//! index bits (the colour) agree; VIVT indexes and tags with the VA, so two
//! aliases are always two lines.
//!
//! Checks: every cached or uncached read is compared with `truth` (a
//! mismatch is a *stale read*); every write-back of a dirty line that would
//! replace a byte of memory holding the truth with a different value is a
//! *lost write*. A stale read is counted, then the reader is handed the true
//! value, so one stale byte does not derail the rest of the run.

use chroma_mem::HostVirtAddr;
use std::vec;
use std::vec::Vec;

use crate::ops::CacheOps;

/// How the simulated cache indexes and tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimIndexing {
    /// Physically indexed, physically tagged.
    Pipt,
    /// Virtually indexed, physically tagged.
    Vipt,
    /// Virtually indexed, virtually tagged.
    Vivt,
}

/// The simulated cache's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimGeometry {
    /// Indexing policy.
    pub indexing: SimIndexing,
    /// Line size in bytes (32 or 64).
    pub line: usize,
    /// Number of sets.
    pub sets: usize,
    /// Associativity.
    pub ways: usize,
}

impl SimGeometry {
    /// A cache whose way spans `colours` pages of 4 KiB.
    pub const fn with_colours(
        indexing: SimIndexing,
        line: usize,
        colours: usize,
        ways: usize,
    ) -> Self {
        Self {
            indexing,
            line,
            sets: colours * 4096 / line,
            ways,
        }
    }

    /// Number of colours (way size / 4 KiB page).
    pub const fn colours(&self) -> usize {
        let way = self.line * self.sets;
        if way > 4096 {
            way / 4096
        } else {
            1
        }
    }
}

/// What the checker counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Read accesses that returned at least one byte differing from the truth.
    pub stale_reads: u64,
    /// Write-backs that replaced the truth in memory with a stale value.
    pub lost_writes: u64,
    /// Read accesses.
    pub reads: u64,
    /// Write accesses.
    pub writes: u64,
    /// Dirty lines written back (evictions and cleans).
    pub write_backs: u64,
}

/// One agent's linear window onto physical memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    /// First virtual address.
    pub va_base: u64,
    /// Physical address `va_base` maps.
    pub pa_base: u64,
    /// Window size in bytes.
    pub size: u64,
    /// Whether accesses go through the cache.
    pub cached: bool,
}

impl View {
    /// The physical address of `va`, if it is inside the window.
    pub fn pa(&self, va: u64) -> Option<u64> {
        let off = va.checked_sub(self.va_base)?;
        (off < self.size).then(|| self.pa_base + off)
    }
}

/// The simulated machine: cache, memory, truth, counters.
pub struct Machine {
    geometry: SimGeometry,
    memory: Vec<u8>,
    truth: Vec<u8>,
    // Per line slot (set * ways + way):
    tag: Vec<u64>,
    pa_line: Vec<u64>,
    valid: Vec<bool>,
    dirty: Vec<bool>,
    age: Vec<u64>,
    data: Vec<u8>,
    clock: u64,
    /// What the checker counted.
    pub stats: SimStats,
}

impl Machine {
    /// An empty cache over `memory_size` bytes of zeroed memory.
    pub fn new(geometry: SimGeometry, memory_size: usize) -> Self {
        let slots = geometry.sets * geometry.ways;
        Self {
            geometry,
            memory: vec![0; memory_size],
            truth: vec![0; memory_size],
            tag: vec![0; slots],
            pa_line: vec![0; slots],
            valid: vec![false; slots],
            dirty: vec![false; slots],
            age: vec![0; slots],
            data: vec![0; slots * geometry.line],
            clock: 0,
            stats: SimStats::default(),
        }
    }

    /// The cache's shape.
    pub fn geometry(&self) -> SimGeometry {
        self.geometry
    }

    fn line_mask(&self) -> u64 {
        !(self.geometry.line as u64 - 1)
    }

    /// `(set, tag)` of the line holding `(va, pa)`.
    fn locate(&self, va: u64, pa: u64) -> (usize, u64) {
        let g = self.geometry;
        let index_addr = match g.indexing {
            SimIndexing::Pipt => pa,
            SimIndexing::Vipt | SimIndexing::Vivt => va,
        };
        let set = (index_addr / g.line as u64) as usize % g.sets;
        let tag = match g.indexing {
            SimIndexing::Vivt => va & self.line_mask(),
            SimIndexing::Pipt | SimIndexing::Vipt => pa & self.line_mask(),
        };
        (set, tag)
    }

    fn lookup(&self, set: usize, tag: u64) -> Option<usize> {
        let ways = self.geometry.ways;
        (set * ways..(set + 1) * ways).find(|&s| self.valid[s] && self.tag[s] == tag)
    }

    /// Writes a dirty slot back, counting a lost write if it replaces the truth.
    fn write_back(&mut self, slot: usize) {
        let line = self.geometry.line;
        let pa = self.pa_line[slot] as usize;
        let data = &self.data[slot * line..(slot + 1) * line];
        let memory = &self.memory[pa..pa + line];
        let truth = &self.truth[pa..pa + line];
        let lost = data
            .iter()
            .zip(memory)
            .zip(truth)
            .any(|((&new, &mem), &truth)| mem == truth && new != truth);
        self.memory[pa..pa + line].copy_from_slice(data);
        self.dirty[slot] = false;
        self.stats.write_backs += 1;
        if lost {
            self.stats.lost_writes += 1;
        }
    }

    /// The slot holding `(va, pa)`, filling it from memory on a miss.
    fn fill(&mut self, va: u64, pa: u64) -> usize {
        let (set, tag) = self.locate(va, pa);
        self.clock += 1;
        if let Some(slot) = self.lookup(set, tag) {
            self.age[slot] = self.clock;
            return slot;
        }
        let ways = self.geometry.ways;
        let victim = (set * ways..(set + 1) * ways)
            .min_by_key(|&s| if self.valid[s] { self.age[s] } else { 0 })
            .unwrap_or(set * ways);
        if self.valid[victim] && self.dirty[victim] {
            self.write_back(victim);
        }
        let line = self.geometry.line;
        let pa_line = pa & self.line_mask();
        self.tag[victim] = tag;
        self.pa_line[victim] = pa_line;
        self.valid[victim] = true;
        self.dirty[victim] = false;
        self.age[victim] = self.clock;
        let src = pa_line as usize;
        self.data[victim * line..(victim + 1) * line]
            .copy_from_slice(&self.memory[src..src + line]);
        victim
    }

    /// Reads `buf.len()` bytes at `va` through `view`; returns the true
    /// bytes in `buf` and counts a stale read if the hardware would have
    /// returned anything else.
    pub fn read(&mut self, view: &View, va: u64, buf: &mut [u8]) {
        let pa = view.pa(va).expect("simulated access outside its view");
        let len = buf.len();
        self.stats.reads += 1;
        let mut stale = false;
        if view.cached {
            let line = self.geometry.line as u64;
            let mut done = 0usize;
            while done < len {
                let (v, p) = (va + done as u64, pa + done as u64);
                let slot = self.fill(v, p);
                let off = (p % line) as usize;
                let n = (line as usize - off).min(len - done);
                let base = slot * line as usize + off;
                for i in 0..n {
                    stale |= self.data[base + i] != self.truth[p as usize + i];
                }
                done += n;
            }
        } else {
            let p = pa as usize;
            stale = self.memory[p..p + len] != self.truth[p..p + len];
        }
        let p = pa as usize;
        buf.copy_from_slice(&self.truth[p..p + len]);
        if stale {
            self.stats.stale_reads += 1;
        }
    }

    /// Writes `data` at `va` through `view` (and records it as the truth).
    pub fn write(&mut self, view: &View, va: u64, data: &[u8]) {
        let pa = view.pa(va).expect("simulated access outside its view");
        let len = data.len();
        self.stats.writes += 1;
        let p = pa as usize;
        self.truth[p..p + len].copy_from_slice(data);
        if !view.cached {
            self.memory[p..p + len].copy_from_slice(data);
            return;
        }
        let line = self.geometry.line as u64;
        let mut done = 0usize;
        while done < len {
            let (v, p) = (va + done as u64, pa + done as u64);
            let slot = self.fill(v, p);
            let off = (p % line) as usize;
            let n = (line as usize - off).min(len - done);
            let base = slot * line as usize + off;
            self.data[base..base + n].copy_from_slice(&data[done..done + n]);
            self.dirty[slot] = true;
            done += n;
        }
    }

    /// Maintenance on the line holding `va` in `view`: clean and/or invalidate.
    pub fn maintain(&mut self, view: &View, va: u64, clean: bool, invalidate: bool) {
        if !view.cached {
            return;
        }
        let pa = view.pa(va).expect("simulated maintenance outside its view");
        let (set, tag) = self.locate(va, pa);
        if let Some(slot) = self.lookup(set, tag) {
            if clean && self.dirty[slot] {
                self.write_back(slot);
            }
            if invalidate {
                self.valid[slot] = false;
                self.dirty[slot] = false;
            }
        }
    }

    /// Writes back every dirty line and empties the cache (end of a run, so
    /// lost writes still pending in the cache are counted too).
    pub fn flush_all(&mut self) {
        for slot in 0..self.valid.len() {
            if self.valid[slot] && self.dirty[slot] {
                self.write_back(slot);
            }
            self.valid[slot] = false;
        }
    }
}

/// [`CacheOps`] on the simulator, for one agent's view.
pub struct SimCacheOps<'m> {
    machine: &'m core::cell::RefCell<Machine>,
    view: View,
    line: usize,
    barriers: core::cell::Cell<u64>,
}

impl<'m> SimCacheOps<'m> {
    /// Maintenance through `view` of `machine`.
    pub fn new(machine: &'m core::cell::RefCell<Machine>, view: View) -> Self {
        let line = machine.borrow().geometry().line;
        Self {
            machine,
            view,
            line,
            barriers: core::cell::Cell::new(0),
        }
    }

    /// Barriers issued.
    pub fn barriers(&self) -> u64 {
        self.barriers.get()
    }
}

// SAFETY: each primitive performs the named operation on the simulated line.
unsafe impl CacheOps for SimCacheOps<'_> {
    fn line_size(&self) -> usize {
        self.line
    }
    unsafe fn clean_line(&self, va: HostVirtAddr) {
        self.machine
            .borrow_mut()
            .maintain(&self.view, va.raw(), true, false);
    }
    unsafe fn invalidate_line(&self, va: HostVirtAddr) {
        self.machine
            .borrow_mut()
            .maintain(&self.view, va.raw(), false, true);
    }
    unsafe fn clean_invalidate_line(&self, va: HostVirtAddr) {
        self.machine
            .borrow_mut()
            .maintain(&self.view, va.raw(), true, true);
    }
    fn invalidate_icache_all(&self) {}
    fn dsb(&self) {
        // The simulator is sequential: maintenance completes immediately.
        self.barriers.set(self.barriers.get() + 1);
    }
    fn dmb(&self) {
        self.barriers.set(self.barriers.get() + 1);
    }
    fn isb(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST: View = View {
        va_base: 0x10_0000,
        pa_base: 0,
        size: 0x4000,
        cached: true,
    };

    fn hyp(va_base: u64) -> View {
        View {
            va_base,
            pa_base: 0,
            size: 0x4000,
            cached: true,
        }
    }

    #[test]
    fn pipt_aliases_are_coherent() {
        let mut m = Machine::new(
            SimGeometry::with_colours(SimIndexing::Pipt, 64, 4, 2),
            0x4000,
        );
        let h = hyp(0x20_1000); // a different colour: irrelevant for PIPT
        m.write(&GUEST, 0x10_0100, &[1, 2, 3]);
        let mut b = [0; 3];
        m.read(&h, 0x20_1100, &mut b);
        assert_eq!(m.stats.stale_reads, 0);
        m.flush_all();
        assert_eq!(m.stats.lost_writes, 0);
    }

    // Negative control of the checker itself: two VIPT aliases of different
    // colour see different data, and the dirty stale line is a lost write.
    #[test]
    fn vipt_wrong_colour_is_stale_and_loses_writes() {
        let mut m = Machine::new(
            SimGeometry::with_colours(SimIndexing::Vipt, 64, 4, 2),
            0x4000,
        );
        let wrong = hyp(0x20_1000);
        let mut b = [0; 1];
        m.read(&wrong, 0x20_1100, &mut b); // hypervisor caches the line (colour 1)
        m.write(&GUEST, 0x10_0100, &[7]); // guest writes through colour 0
        m.read(&wrong, 0x20_1100, &mut b);
        assert_eq!((b[0], m.stats.stale_reads), (7, 1));
        // The hypervisor dirties a neighbour byte in its stale copy...
        m.write(&wrong, 0x20_1101, &[9]);
        m.maintain(&GUEST, 0x10_0100, true, true); // guest's line reaches memory
        m.maintain(&wrong, 0x20_1100, true, true); // stale byte 0x100 overwrites it
        assert_eq!(m.stats.lost_writes, 1);
    }

    #[test]
    fn vipt_same_colour_is_one_line() {
        let mut m = Machine::new(
            SimGeometry::with_colours(SimIndexing::Vipt, 32, 8, 2),
            0x8000,
        );
        // 0x40_0000 and GUEST.va_base 0x10_0000 are both colour 0 of 8.
        let right = hyp(0x40_0000);
        let mut b = [0; 1];
        m.read(&right, right.va_base + 0x100, &mut b);
        m.write(&GUEST, 0x10_0100, &[7]);
        m.read(&right, right.va_base + 0x100, &mut b);
        assert_eq!(m.stats.stale_reads, 0);
    }

    #[test]
    fn vivt_always_aliases_and_maintenance_fixes_it() {
        let mut m = Machine::new(
            SimGeometry::with_colours(SimIndexing::Vivt, 64, 1, 4),
            0x4000,
        );
        let h = hyp(0x20_0000); // same colour: still two lines
        let mut b = [0; 1];
        m.read(&h, 0x20_0100, &mut b);
        m.write(&GUEST, 0x10_0100, &[7]);
        m.read(&h, 0x20_0100, &mut b);
        assert_eq!(m.stats.stale_reads, 1);
        m.maintain(&GUEST, 0x10_0100, true, false);
        m.maintain(&h, 0x20_0100, false, true);
        m.read(&h, 0x20_0100, &mut b);
        assert_eq!(m.stats.stale_reads, 1);
    }

    #[test]
    fn uncached_peer_sees_memory() {
        let mut m = Machine::new(
            SimGeometry::with_colours(SimIndexing::Pipt, 64, 1, 4),
            0x4000,
        );
        let dma = View {
            cached: false,
            ..GUEST
        };
        let h = hyp(0x20_0000);
        m.write(&h, 0x20_0000, &[5]);
        let mut b = [0; 1];
        m.read(&dma, 0x10_0000, &mut b);
        assert_eq!(m.stats.stale_reads, 1);
        m.maintain(&h, 0x20_0000, true, false);
        m.read(&dma, 0x10_0000, &mut b);
        assert_eq!(m.stats.stale_reads, 1);
    }
}
