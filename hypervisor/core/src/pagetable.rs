//! A translation-table builder for 4 KiB granules, used for stage-2 (guest
//! IPA -> PA) and for the hypervisor's own EL2 stage-1 tables.
//!
//! The walk (levels, index bits, concatenated roots, block sizes) is
//! architecture-neutral; what a descriptor looks like in memory is the
//! back-end's [`PageTableFormat`], and where tables live is its
//! [`TableMemory`]. The host fake uses a deliberately different encoding so
//! nothing here can depend on Arm's bit layout.

use crate::{GuestPhysAddr, HostPhysAddr};

/// Bytes in a page (the 4 KiB translation granule).
pub const PAGE_SIZE: u64 = 4096;
/// Descriptors in a table below the root (a 4 KiB page of 8-byte entries).
const PAGE_ENTRIES: usize = 512;
/// Descriptors per table.
pub const ENTRIES_PER_TABLE: usize = 512;
/// Deepest level (level 3 holds pages).
pub const LAST_LEVEL: u8 = 3;

/// Memory type of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryType {
    /// Normal, inner and outer write-back cacheable, inner shareable.
    Normal,
    /// Device-nGnRE.
    Device,
    /// Normal, inner and outer Non-cacheable: the hypervisor's alias of a
    /// ring both sides write within one cache line (a packed virtqueue
    /// under a maintaining cache policy, docs/caches.md).
    NormalNonCacheable,
}

/// Permissions and type of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attributes {
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable (at the translation regime's exception level).
    pub execute: bool,
    /// Memory type.
    pub memory: MemoryType,
}

impl Attributes {
    /// Guest RAM: read, write, execute, normal memory.
    pub const RAM: Self = Self {
        read: true,
        write: true,
        execute: true,
        memory: MemoryType::Normal,
    };
    /// A pass-through device: read, write, no execute, device memory.
    pub const DEVICE: Self = Self {
        read: true,
        write: true,
        execute: false,
        memory: MemoryType::Device,
    };
    /// Read-only data, never executable.
    pub const READ_ONLY: Self = Self {
        read: true,
        write: false,
        execute: false,
        memory: MemoryType::Normal,
    };
    /// Code: read and execute, not writable.
    pub const TEXT: Self = Self {
        read: true,
        write: false,
        execute: true,
        memory: MemoryType::Normal,
    };
    /// Data the hypervisor shares with a peer that does not go through its
    /// caches: read and write, never executable, Normal Non-cacheable.
    pub const DATA_NON_CACHEABLE: Self = Self {
        read: true,
        write: true,
        execute: false,
        memory: MemoryType::NormalNonCacheable,
    };
    /// Data: read and write, never executable.
    pub const DATA: Self = Self {
        read: true,
        write: true,
        execute: false,
        memory: MemoryType::Normal,
    };
}

/// One decoded descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Descriptor {
    /// Nothing mapped.
    Invalid,
    /// A pointer to the next-level table.
    Table(HostPhysAddr),
    /// A block (levels 1 and 2) or page (level 3) mapping.
    Leaf {
        /// Output address.
        output: HostPhysAddr,
        /// Permissions and type.
        attributes: Attributes,
    },
}

/// How a back-end encodes descriptors.
pub trait PageTableFormat {
    /// Encodes `descriptor` for a table at `level`.
    fn encode(descriptor: Descriptor, level: u8) -> u64;
    /// Decodes a raw descriptor found at `level`.
    fn decode(raw: u64, level: u8) -> Descriptor;
}

/// Where tables live: allocation and word access by physical address.
pub trait TableMemory {
    /// Allocates `pages` contiguous zeroed pages aligned to their total size.
    fn alloc_zeroed(&mut self, pages: usize) -> Option<HostPhysAddr>;
    /// Reads descriptor `index` of the table at `table`.
    fn read(&self, table: HostPhysAddr, index: usize) -> u64;
    /// Writes descriptor `index` of the table at `table`.
    fn write(&mut self, table: HostPhysAddr, index: usize, value: u64);
}

/// Why a mapping request was refused.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// An address or size is not page-aligned.
    Unaligned,
    /// The range reaches beyond the input address size.
    OutOfRange,
    /// Part of the range is already mapped.
    AlreadyMapped,
    /// No memory for a table.
    OutOfMemory,
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            MapError::Unaligned => "address or size not page-aligned",
            MapError::OutOfRange => "range beyond the input address size",
            MapError::AlreadyMapped => "range already mapped",
            MapError::OutOfMemory => "out of memory for translation tables",
        })
    }
}

/// The shape of a translation regime: input size and start level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Input address bits (IPA bits for stage 2, VA bits for stage 1).
    pub input_bits: u8,
    /// The level the walk starts at.
    pub start_level: u8,
    /// Descriptors in the root (several tables concatenated for stage 2).
    pub root_entries: usize,
}

impl Geometry {
    /// Shift of the address bits indexing a table at `level`.
    pub const fn level_shift(level: u8) -> u32 {
        12 + 9 * (LAST_LEVEL - level) as u32
    }

    /// A stage-2 geometry for `input_bits` (25..=48), starting as deep as
    /// concatenation of up to 16 root tables allows (Arm ARM D8.2.8; the
    /// same bounds hold for ARMv7's VTCR.SL0).
    ///
    /// Each level the walk starts below the top is a descriptor read saved
    /// on every stage-2 walk, and a guest's stage-1 walk makes one stage-2
    /// walk per level of its own: with 4 KiB pages at both stages a TLB
    /// miss of a 4-level guest costs 4 + 5 x (stage-2 levels) reads, 24
    /// when stage 2 starts at level 0, 14 when it starts at level 2.
    pub fn stage2(input_bits: u8) -> Option<Self> {
        if !(25..=48).contains(&input_bits) {
            return None;
        }
        // Level 2 resolves bits 21..29; with up to 16 concatenated tables it
        // covers 34 bits. Level 1 resolves bits 30..38 and covers 43 bits
        // so. Beyond that start at level 0.
        let start_level = match input_bits {
            ..=34 => 2,
            35..=43 => 1,
            _ => 0,
        };
        let bits_at_root = u32::from(input_bits) - Self::level_shift(start_level);
        Some(Self {
            input_bits,
            start_level,
            root_entries: 1usize << bits_at_root,
        })
    }

    /// The stage-2 geometry for guests whose addresses all lie below
    /// `ipa_end`, on a CPU whose IPA size is at most `limit_bits`: the input
    /// size covers `ipa_end` (at least 32 bits) and is no larger, so that
    /// the walk starts as deep as it can. A guest address at or past
    /// 2^input_bits faults at stage 2 as an unmapped one does. None when
    /// the size this picks is outside [`Geometry::stage2`]'s range (a
    /// limit under 25 bits, or past 48 bits with a layout that needs it).
    pub fn stage2_covering(ipa_end: u64, limit_bits: u8) -> Option<Self> {
        let needed = 64 - ipa_end.saturating_sub(1).leading_zeros();
        let bits = u8::try_from(needed.max(32)).unwrap_or(u8::MAX);
        Self::stage2(bits.min(limit_bits))
    }

    /// A stage-1 geometry for `input_bits` (a single root table).
    pub fn stage1(input_bits: u8) -> Option<Self> {
        if !(25..=48).contains(&input_bits) {
            return None;
        }
        let start_level = if input_bits > 39 { 0 } else { 1 };
        let bits_at_root = u32::from(input_bits) - Self::level_shift(start_level);
        Some(Self {
            input_bits,
            start_level,
            root_entries: 1usize << bits_at_root,
        })
    }

    /// Pages the root occupies.
    pub fn root_pages(&self) -> usize {
        self.root_entries.div_ceil(ENTRIES_PER_TABLE)
    }
}

/// A translation table tree rooted at one (possibly concatenated) root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageTable {
    root: HostPhysAddr,
    geometry: Geometry,
}

impl PageTable {
    /// Allocates an empty tree.
    pub fn new<M: TableMemory>(memory: &mut M, geometry: Geometry) -> Result<Self, MapError> {
        let root = memory
            .alloc_zeroed(geometry.root_pages())
            .ok_or(MapError::OutOfMemory)?;
        Ok(Self { root, geometry })
    }

    /// Physical address of the root (for VTTBR_EL2 / TTBR0_EL2).
    pub fn root(&self) -> HostPhysAddr {
        self.root
    }

    /// The regime's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    #[allow(
        clippy::cast_possible_truncation,
        reason = "the value is masked to `entries - 1` before the cast, and `entries` is a usize"
    )]
    fn index(&self, input: u64, level: u8) -> usize {
        let entries = if level == self.geometry.start_level {
            self.geometry.root_entries
        } else {
            ENTRIES_PER_TABLE
        };
        ((input >> Geometry::level_shift(level)) & (entries as u64 - 1)) as usize
    }

    /// Maps `size` bytes at `input` to `output` with `attributes`, using the
    /// largest blocks that alignment allows (1 GiB, 2 MiB, 4 KiB). Refuses
    /// ranges that overlap an existing mapping.
    pub fn map<F: PageTableFormat, M: TableMemory>(
        &mut self,
        memory: &mut M,
        input: u64,
        output: HostPhysAddr,
        size: u64,
        attributes: Attributes,
    ) -> Result<(), MapError> {
        self.map_with_largest_leaf::<F, M>(memory, input, output, size, attributes, u64::MAX)
    }

    /// As [`PageTable::map`], with no leaf larger than `largest_leaf` bytes
    /// (4 KiB: pages only). A leaf's size is what the walk reports to
    /// whoever caches it, which matters where a large one is expensive (see
    /// `chroma_platform::Board::stage2_largest_ram_leaf`).
    pub fn map_with_largest_leaf<F: PageTableFormat, M: TableMemory>(
        &mut self,
        memory: &mut M,
        input: u64,
        output: HostPhysAddr,
        size: u64,
        attributes: Attributes,
        largest_leaf: u64,
    ) -> Result<(), MapError> {
        if !input.is_multiple_of(PAGE_SIZE)
            || !output.raw().is_multiple_of(PAGE_SIZE)
            || !size.is_multiple_of(PAGE_SIZE)
        {
            return Err(MapError::Unaligned);
        }
        let end = input.checked_add(size).ok_or(MapError::OutOfRange)?;
        if end > 1u64 << self.geometry.input_bits {
            return Err(MapError::OutOfRange);
        }
        // Check first, so a refused request leaves the tables unchanged.
        if self.any_mapped::<F, M>(memory, input, end) {
            return Err(MapError::AlreadyMapped);
        }
        // The largest block size allowed at this alignment and by
        // `largest_leaf`: levels 1..=3 (a page is always allowed).
        let start_level = self.geometry.start_level;
        let leaf_level = |offset: u64| {
            let (in_addr, out_addr) = (input + offset, output.raw() + offset);
            (1..=LAST_LEVEL)
                .find(|&l| {
                    let block = 1u64 << Geometry::level_shift(l);
                    l >= start_level
                        && (block <= largest_leaf || l == LAST_LEVEL)
                        && in_addr % block == 0
                        && out_addr % block == 0
                        && size - offset >= block
                })
                .unwrap_or(LAST_LEVEL)
        };
        let mut offset = 0;
        while offset < size {
            let level = leaf_level(offset);
            let (table, mut index) = self.set_leaf::<F, M>(
                memory,
                input + offset,
                HostPhysAddr::new(output.raw() + offset),
                level,
                attributes,
            )?;
            offset += 1u64 << Geometry::level_shift(level);
            if level < LAST_LEVEL {
                continue;
            }
            // A run of pages: the rest of this level-3 table without a
            // walk each (a VM's RAM in pages is 65 536 of them per 256 MiB).
            // No block fits before its end: a level-3 table spans one
            // level-2 block of input addresses, and none of the addresses
            // inside it is aligned to one. The overlap check above found
            // these entries invalid.
            index += 1;
            while offset < size && index < PAGE_ENTRIES {
                let leaf = Descriptor::Leaf {
                    output: HostPhysAddr::new(output.raw() + offset),
                    attributes,
                };
                memory.write(table, index, F::encode(leaf, LAST_LEVEL));
                offset += PAGE_SIZE;
                index += 1;
            }
        }
        Ok(())
    }

    /// Whether any address of `start..end` is mapped. Walks the tables
    /// once per entry it meets rather than once per page: an invalid entry
    /// at any level clears its whole span (up to 1 GiB, or the root's).
    fn any_mapped<F: PageTableFormat, M: TableMemory>(
        &self,
        memory: &M,
        start: u64,
        end: u64,
    ) -> bool {
        let mut address = start;
        'spans: while address < end {
            let mut table = self.root;
            let mut level = self.geometry.start_level;
            loop {
                match F::decode(memory.read(table, self.index(address, level)), level) {
                    Descriptor::Leaf { .. } => return true,
                    Descriptor::Table(next) if level < LAST_LEVEL => {
                        table = next;
                        level += 1;
                    }
                    // Invalid (or a table descriptor where none may be, which
                    // the walker treats as invalid): nothing in this entry's
                    // span; go on at the next one.
                    _ => {
                        let span = 1u64 << Geometry::level_shift(level);
                        match (address | (span - 1)).checked_add(1) {
                            Some(next) => address = next,
                            None => return false,
                        }
                        continue 'spans;
                    }
                }
            }
        }
        false
    }

    /// Writes one leaf at `leaf_level`, allocating the tables on its way;
    /// returns the table and index it wrote.
    fn set_leaf<F: PageTableFormat, M: TableMemory>(
        &mut self,
        memory: &mut M,
        input: u64,
        output: HostPhysAddr,
        leaf_level: u8,
        attributes: Attributes,
    ) -> Result<(HostPhysAddr, usize), MapError> {
        let mut table = self.root;
        let mut level = self.geometry.start_level;
        while level < leaf_level {
            let index = self.index(input, level);
            table = match F::decode(memory.read(table, index), level) {
                Descriptor::Table(next) => next,
                Descriptor::Invalid => {
                    let next = memory.alloc_zeroed(1).ok_or(MapError::OutOfMemory)?;
                    memory.write(table, index, F::encode(Descriptor::Table(next), level));
                    next
                }
                Descriptor::Leaf { .. } => return Err(MapError::AlreadyMapped),
            };
            level += 1;
        }
        let index = self.index(input, level);
        let leaf = Descriptor::Leaf { output, attributes };
        memory.write(table, index, F::encode(leaf, level));
        Ok((table, index))
    }

    /// Removes the page mapping at `input` (level-3 pages only: blocks are
    /// split by mapping at page granularity in the first place).
    pub fn unmap_page<F: PageTableFormat, M: TableMemory>(
        &mut self,
        memory: &mut M,
        input: u64,
    ) -> bool {
        let mut table = self.root;
        let mut level = self.geometry.start_level;
        loop {
            let index = self.index(input, level);
            match F::decode(memory.read(table, index), level) {
                Descriptor::Table(next) if level < LAST_LEVEL => table = next,
                Descriptor::Leaf { .. } if level == LAST_LEVEL => {
                    memory.write(table, index, F::encode(Descriptor::Invalid, level));
                    return true;
                }
                _ => return false,
            }
            level += 1;
        }
    }

    /// Maps the page at `input` to `output` with `attributes`, or removes
    /// it (`present` false), where a level-3 table already holds its
    /// descriptor (the page was mapped by [`PageTable::map`] as a page):
    /// one descriptor store, so a page can come and go while the tables
    /// are live. The caller invalidates TLB entries of a removed page.
    /// False, and nothing written, when there is no such table.
    pub fn set_page_present<F: PageTableFormat, M: TableMemory>(
        &self,
        memory: &mut M,
        input: u64,
        output: HostPhysAddr,
        attributes: Attributes,
        present: bool,
    ) -> bool {
        if input >> self.geometry.input_bits != 0 {
            return false;
        }
        let mut table = self.root;
        for level in self.geometry.start_level..LAST_LEVEL {
            match F::decode(memory.read(table, self.index(input, level)), level) {
                Descriptor::Table(next) => table = next,
                _ => return false,
            }
        }
        let descriptor = if present {
            Descriptor::Leaf { output, attributes }
        } else {
            Descriptor::Invalid
        };
        memory.write(
            table,
            self.index(input, LAST_LEVEL),
            F::encode(descriptor, LAST_LEVEL),
        );
        true
    }

    /// Translates `input`: the output address and attributes, if mapped.
    pub fn lookup<F: PageTableFormat, M: TableMemory>(
        &self,
        memory: &M,
        input: u64,
    ) -> Option<(HostPhysAddr, Attributes)> {
        if input >> self.geometry.input_bits != 0 {
            return None;
        }
        let mut table = self.root;
        let mut level = self.geometry.start_level;
        loop {
            match F::decode(memory.read(table, self.index(input, level)), level) {
                Descriptor::Invalid => return None,
                Descriptor::Table(next) => {
                    if level == LAST_LEVEL {
                        return None;
                    }
                    table = next;
                    level += 1;
                }
                Descriptor::Leaf { output, attributes } => {
                    let mask = (1u64 << Geometry::level_shift(level)) - 1;
                    return Some((HostPhysAddr::new(output.raw() + (input & mask)), attributes));
                }
            }
        }
    }

    /// Translates a guest-physical address (stage-2 convenience).
    pub fn translate<F: PageTableFormat, M: TableMemory>(
        &self,
        memory: &M,
        ipa: GuestPhysAddr,
    ) -> Option<HostPhysAddr> {
        self.lookup::<F, M>(memory, ipa.raw()).map(|(pa, _)| pa)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A fake encoding unlike Arm's: the kind in the top byte, attributes in
    /// bits 48..52, the address shifted left by 4. Core code passing with this
    /// format cannot depend on Arm's layout.
    struct FakeFormat;
    impl PageTableFormat for FakeFormat {
        fn encode(d: Descriptor, level: u8) -> u64 {
            let lvl = u64::from(level) << 52;
            match d {
                Descriptor::Invalid => 0,
                Descriptor::Table(pa) => (0xA1 << 56) | lvl | (pa.raw() >> 4),
                Descriptor::Leaf { output, attributes } => {
                    let a = u64::from(attributes.read)
                        | u64::from(attributes.write) << 1
                        | u64::from(attributes.execute) << 2
                        | u64::from(attributes.memory == MemoryType::Device) << 3;
                    (0xB2 << 56) | lvl | a << 48 | (output.raw() >> 4)
                }
            }
        }
        fn decode(raw: u64, level: u8) -> Descriptor {
            assert!(
                raw == 0 || (raw >> 52) & 0xf == u64::from(level),
                "descriptor read at wrong level"
            );
            let pa = HostPhysAddr::new((raw & 0xffff_ffff_ffff) << 4);
            match raw >> 56 {
                0xA1 => Descriptor::Table(pa),
                0xB2 => {
                    let a = raw >> 48;
                    Descriptor::Leaf {
                        output: pa,
                        attributes: Attributes {
                            read: a & 1 != 0,
                            write: a & 2 != 0,
                            execute: a & 4 != 0,
                            memory: if a & 8 != 0 {
                                MemoryType::Device
                            } else {
                                MemoryType::Normal
                            },
                        },
                    }
                }
                _ => Descriptor::Invalid,
            }
        }
    }

    #[derive(Default)]
    struct FakeMemory {
        next: u64,
        words: HashMap<(u64, usize), u64>,
        pages: usize,
        limit: usize,
        /// Descriptors read so far (the walks' cost).
        reads: std::cell::Cell<usize>,
    }
    impl TableMemory for FakeMemory {
        fn alloc_zeroed(&mut self, pages: usize) -> Option<HostPhysAddr> {
            if self.pages + pages > self.limit {
                return None;
            }
            let size = pages as u64 * PAGE_SIZE;
            let base = (self.next + 0x1000_0000).next_multiple_of(size);
            self.next = base + size - 0x1000_0000;
            self.pages += pages;
            Some(HostPhysAddr::new(base))
        }
        fn read(&self, t: HostPhysAddr, i: usize) -> u64 {
            self.reads.set(self.reads.get() + 1);
            *self.words.get(&(t.raw(), i)).unwrap_or(&0)
        }
        fn write(&mut self, t: HostPhysAddr, i: usize, v: u64) {
            self.words.insert((t.raw(), i), v);
        }
    }

    fn memory() -> FakeMemory {
        FakeMemory {
            limit: 64,
            ..Default::default()
        }
    }

    #[test]
    fn stage2_geometry_concatenates_roots() {
        let g = Geometry::stage2(40).unwrap();
        assert_eq!(
            (g.start_level, g.root_entries, g.root_pages()),
            (1, 1024, 2)
        );
        let g = Geometry::stage2(32).unwrap();
        assert_eq!(
            (g.start_level, g.root_entries, g.root_pages()),
            (2, 2048, 4)
        );
        let g = Geometry::stage2(34).unwrap();
        assert_eq!(
            (g.start_level, g.root_entries, g.root_pages()),
            (2, 8192, 16)
        );
        let g = Geometry::stage2(35).unwrap();
        assert_eq!((g.start_level, g.root_entries, g.root_pages()), (1, 32, 1));
        let g = Geometry::stage2(25).unwrap();
        assert_eq!((g.start_level, g.root_entries, g.root_pages()), (2, 16, 1));
        let g = Geometry::stage2(44).unwrap();
        assert_eq!((g.start_level, g.root_entries), (0, 32));
        assert!(Geometry::stage2(52).is_none());
    }

    /// The start level the Arm ARM allows for a stage-2 input size (its
    /// check on the start level: the bits the initial lookup resolves, 1 to
    /// 13 with 4 KiB tables, concatenation included).
    fn start_level_is_consistent(input_bits: u8, level: u8) -> bool {
        let resolved_below = 9 * u32::from(LAST_LEVEL - level) + 12;
        (1..=13).contains(&(u32::from(input_bits) - resolved_below))
    }

    #[test]
    fn every_stage2_geometry_starts_where_the_architecture_allows() {
        for bits in 25..=48 {
            let g = Geometry::stage2(bits).unwrap();
            assert!(
                start_level_is_consistent(bits, g.start_level),
                "{bits} bits"
            );
            // And no deeper level would do.
            assert!(
                g.start_level == LAST_LEVEL - 1
                    || !start_level_is_consistent(bits, g.start_level + 1),
                "{bits} bits could start at level {}",
                g.start_level + 1
            );
            assert_eq!(
                g.root_entries << Geometry::level_shift(g.start_level),
                1usize << bits
            );
        }
    }

    #[test]
    fn negative_control_the_start_level_check_refuses_a_start_too_deep_or_too_high() {
        // Too deep: level 2 cannot reach 35 bits, nor level 1 44 bits
        // (more than 16 concatenated tables).
        assert!(!start_level_is_consistent(35, 2));
        assert!(!start_level_is_consistent(44, 1));
        // Too high: a level-1 walk for 30 bits resolves nothing at level 1.
        assert!(!start_level_is_consistent(30, 1));
    }

    #[test]
    fn the_stage2_covering_a_layout_is_the_smallest_from_32_bits() {
        let bits = |end, limit| Geometry::stage2_covering(end, limit).map(|g| g.input_bits);
        // QEMU virt's devices and 1 GiB of RAM from 1 GiB.
        assert_eq!(bits(0x8000_0000, 44), Some(32));
        assert_eq!(bits(0x1_0000_0000, 44), Some(32));
        assert_eq!(bits(0x1_0000_1000, 44), Some(33));
        assert_eq!(bits(0x4_0000_0000, 40), Some(34));
        assert_eq!(bits(0x4_0000_1000, 40), Some(35));
        // Past what the CPU translates: its limit (the VM that needs more
        // fails to map its RAM, the others run).
        assert_eq!(bits(0x400_0000_0000, 40), Some(40));
        assert_eq!(bits(0, 40), Some(32));
        assert_eq!(bits(1 << 50, 52), None);
    }

    /// Descriptor reads of one translation of `input` in `t`.
    fn reads_of_a_walk(t: &PageTable, m: &FakeMemory, input: u64) -> usize {
        let before = m.reads.get();
        assert!(t.lookup::<FakeFormat, _>(m, input).is_some());
        m.reads.get() - before
    }

    /// Maps one page at 0x4000_0000 in a tree of `geometry`.
    fn one_page(geometry: Geometry) -> (PageTable, FakeMemory) {
        let mut m = memory();
        let mut t = PageTable::new(&mut m, geometry).unwrap();
        t.map::<FakeFormat, _>(
            &mut m,
            0x4000_0000,
            HostPhysAddr::new(0x8000_0000),
            PAGE_SIZE,
            Attributes::RAM,
        )
        .unwrap();
        (t, m)
    }

    #[test]
    fn a_32_bit_stage2_walk_reads_two_descriptors() {
        let (t, m) = one_page(Geometry::stage2(32).unwrap());
        assert_eq!(reads_of_a_walk(&t, &m, 0x4000_0008), 2);
        let (t, m) = one_page(Geometry::stage2(44).unwrap());
        assert_eq!(reads_of_a_walk(&t, &m, 0x4000_0008), 4);
    }

    #[test]
    fn negative_control_a_root_one_level_up_costs_a_read_more() {
        // The geometry before: 32 bits from level 1, four root entries.
        let shallow = Geometry {
            input_bits: 32,
            start_level: 1,
            root_entries: 4,
        };
        assert!(start_level_is_consistent(32, 1));
        let (t, m) = one_page(shallow);
        assert_ne!(reads_of_a_walk(&t, &m, 0x4000_0008), 2);
        assert_eq!(reads_of_a_walk(&t, &m, 0x4000_0008), 3);
    }

    #[test]
    fn maps_with_largest_blocks_and_translates() {
        let mut m = memory();
        let mut t = PageTable::new(&mut m, Geometry::stage2(40).unwrap()).unwrap();
        // 2 MiB + 8 KiB: one 2 MiB block and two pages.
        t.map::<FakeFormat, _>(
            &mut m,
            0x4000_0000,
            HostPhysAddr::new(0x8020_0000),
            0x20_2000,
            Attributes::RAM,
        )
        .unwrap();
        let pages_after = m.pages;
        // root (2) + level 2 + level 3 for the two trailing pages.
        assert_eq!(pages_after, 4);
        let check = |ipa: u64| {
            t.translate::<FakeFormat, _>(&m, GuestPhysAddr::new(ipa))
                .map(|p| p.raw())
        };
        assert_eq!(check(0x4000_0000), Some(0x8020_0000));
        assert_eq!(check(0x401f_fff8), Some(0x803f_fff8));
        assert_eq!(check(0x4020_1abc), Some(0x8040_1abc));
        assert_eq!(check(0x4020_2000), None);
        assert_eq!(check(0x3fff_f000), None);
        assert_eq!(check(1 << 40), None);
    }

    #[test]
    fn a_run_of_pages_stops_where_a_block_fits() {
        // Two pages before a 2 MiB boundary (both sides), then 2 MiB: the
        // pages' level-3 table ends at the boundary and a block follows
        // (a run that went on in pages would need a second level-3 table).
        let mut m = memory();
        let mut t = PageTable::new(&mut m, Geometry::stage2(40).unwrap()).unwrap();
        t.map::<FakeFormat, _>(
            &mut m,
            0x401f_e000,
            HostPhysAddr::new(0x803f_e000),
            0x20_2000,
            Attributes::RAM,
        )
        .unwrap();
        // Root (2), level 2, one level 3.
        assert_eq!(m.pages, 4);
        assert!(
            !t.unmap_page::<FakeFormat, _>(&mut m, 0x4020_0000),
            "a block"
        );
        let check = |ipa: u64| {
            t.translate::<FakeFormat, _>(&m, GuestPhysAddr::new(ipa))
                .map(|p| p.raw())
        };
        assert_eq!(check(0x401f_e010), Some(0x803f_e010));
        assert_eq!(check(0x401f_f010), Some(0x803f_f010));
        assert_eq!(check(0x403f_fff8), Some(0x805f_fff8));
        assert_eq!(check(0x4040_0000), None);
    }

    #[test]
    fn a_leaf_limit_maps_pages_where_blocks_would_fit() {
        // 4 MiB, 2 MiB-aligned both sides: two blocks unlimited (the
        // control), 1024 pages in two level-3 tables with a 4 KiB limit.
        let (ipa, pa, size) = (0x4000_0000u64, 0x8020_0000u64, 0x40_0000u64);
        for (limit, tables, pages) in [(u64::MAX, 3, false), (PAGE_SIZE, 5, true)] {
            let mut m = memory();
            let mut t = PageTable::new(&mut m, Geometry::stage2(40).unwrap()).unwrap();
            t.map_with_largest_leaf::<FakeFormat, _>(
                &mut m,
                ipa,
                HostPhysAddr::new(pa),
                size,
                Attributes::RAM,
                limit,
            )
            .unwrap();
            // Root (2 pages) and level 2, plus the level-3 tables.
            assert_eq!(m.pages, tables, "limit {limit:#x}");
            // Only a page (a level-3 leaf) can be unmapped alone.
            assert_eq!(t.unmap_page::<FakeFormat, _>(&mut m, ipa), pages);
            let mapped = |at: u64| {
                t.translate::<FakeFormat, _>(&m, GuestPhysAddr::new(at))
                    .map(|p| p.raw())
            };
            assert_eq!(mapped(ipa).is_none(), pages);
            assert_eq!(mapped(ipa + PAGE_SIZE), Some(pa + PAGE_SIZE));
            assert_eq!(mapped(ipa + size - 8), Some(pa + size - 8));
        }
    }

    #[test]
    fn a_run_of_pages_walks_once_per_table_and_every_page_translates() {
        let mut m = memory();
        let mut t = PageTable::new(&mut m, Geometry::stage2(40).unwrap()).unwrap();
        // 4 MiB + 12 KiB from 12 KiB past a 2 MiB boundary, pages only:
        // the first table from its fourth entry, one whole, one partial.
        let (ipa, pa, size) = (0x4000_3000u64, 0x8000_3000u64, 0x40_3000u64);
        m.reads.set(0);
        t.map_with_largest_leaf::<FakeFormat, _>(
            &mut m,
            ipa,
            HostPhysAddr::new(pa),
            size,
            Attributes::RAM,
            PAGE_SIZE,
        )
        .unwrap();
        // One walk per level-3 table, not one per page (1 027 pages).
        assert!(m.reads.get() < 50, "{} descriptor reads", m.reads.get());
        for page in 0..size / PAGE_SIZE {
            let offset = page * PAGE_SIZE;
            assert_eq!(
                t.translate::<FakeFormat, _>(&m, GuestPhysAddr::new(ipa + offset + 8))
                    .map(|p| p.raw()),
                Some(pa + offset + 8),
                "{offset:#x}"
            );
        }
        for outside in [ipa - 8, ipa + size] {
            assert_eq!(
                t.translate::<FakeFormat, _>(&m, GuestPhysAddr::new(outside)),
                None
            );
        }
        // With blocks allowed, the whole 2 MiB in the middle is one block:
        // its page can not be unmapped alone (the control).
        let mut blocks = memory();
        let mut b = PageTable::new(&mut blocks, Geometry::stage2(40).unwrap()).unwrap();
        b.map::<FakeFormat, _>(
            &mut blocks,
            ipa,
            HostPhysAddr::new(pa),
            size,
            Attributes::RAM,
        )
        .unwrap();
        assert!(!b.unmap_page::<FakeFormat, _>(&mut blocks, 0x4020_0000));
        assert!(t.unmap_page::<FakeFormat, _>(&mut m, 0x4020_0000));
    }

    #[test]
    fn a_page_comes_and_goes_in_place_but_not_inside_a_block() {
        let mut m = memory();
        let mut t = PageTable::new(&mut m, Geometry::stage2(40).unwrap()).unwrap();
        let (page, pa) = (0x0900_0000u64, HostPhysAddr::new(0x8000_0000));
        t.map::<FakeFormat, _>(&mut m, page, pa, PAGE_SIZE, Attributes::READ_ONLY)
            .unwrap();
        let tables = m.pages;
        for present in [false, true, false, true] {
            assert!(t.set_page_present::<FakeFormat, _>(
                &mut m,
                page,
                pa,
                Attributes::READ_ONLY,
                present
            ));
            assert_eq!(
                t.lookup::<FakeFormat, _>(&m, page + 0x18),
                present.then(|| (HostPhysAddr::new(0x8000_0018), Attributes::READ_ONLY))
            );
        }
        assert_eq!(m.pages, tables, "no table allocated");
        // Control: no level-3 table under a 2 MiB block, nor where nothing
        // is mapped: refused, the block intact.
        t.map::<FakeFormat, _>(
            &mut m,
            0x4000_0000,
            HostPhysAddr::new(0x8020_0000),
            0x20_0000,
            Attributes::RAM,
        )
        .unwrap();
        for input in [0x4000_0000, 0x7000_0000, 1 << 40] {
            assert!(!t.set_page_present::<FakeFormat, _>(
                &mut m,
                input,
                pa,
                Attributes::READ_ONLY,
                false
            ));
        }
        assert!(t
            .translate::<FakeFormat, _>(&m, GuestPhysAddr::new(0x4000_0000))
            .is_some());
    }

    #[test]
    fn a_large_map_walks_per_entry_and_every_page_translates() {
        let mut m = memory();
        let mut t = PageTable::new(&mut m, Geometry::stage2(40).unwrap()).unwrap();
        // 1 GiB less 4 KiB from a 4 KiB-aligned start: pages up to the
        // first 2 MiB boundary, 2 MiB blocks, pages at the end.
        let (ipa, pa, size) = (0x4000_1000, 0x1_0000_1000u64, (1u64 << 30) - 0x2000);
        m.reads.set(0);
        t.map::<FakeFormat, _>(&mut m, ipa, HostPhysAddr::new(pa), size, Attributes::RAM)
            .unwrap();
        // The overlap check and the leaves' walks read a few descriptors
        // per entry written (~1 000 entries), not one walk per 4 KiB page
        // (262 143 walks of 3 reads).
        let reads = m.reads.get();
        assert!(reads < 10_000, "{reads} descriptor reads");
        // Every page translates to its place, and nothing outside does.
        for page in 0..size / PAGE_SIZE {
            let at = ipa + page * PAGE_SIZE + 0x18;
            assert_eq!(
                t.translate::<FakeFormat, _>(&m, GuestPhysAddr::new(at))
                    .map(|p| p.raw()),
                Some(pa + page * PAGE_SIZE + 0x18),
                "page {page}"
            );
        }
        for outside in [ipa - 8, ipa + size, ipa + size + 0x20_0000] {
            assert_eq!(
                t.translate::<FakeFormat, _>(&m, GuestPhysAddr::new(outside)),
                None
            );
        }
    }

    #[test]
    fn a_single_mapped_page_deep_in_a_range_is_found() {
        let mut m = memory();
        let mut t = PageTable::new(&mut m, Geometry::stage2(40).unwrap()).unwrap();
        // One page and one 2 MiB block, far inside a 4 GiB range.
        for (ipa, size) in [(0x1_2345_6000u64, PAGE_SIZE), (0x1_8000_0000, 0x20_0000)] {
            t.map::<FakeFormat, _>(&mut m, ipa, HostPhysAddr::new(ipa), size, Attributes::RAM)
                .unwrap();
        }
        let snapshot = m.words.clone();
        for (start, size) in [
            (0x1_0000_0000u64, 1u64 << 32),
            (0x1_2345_5000, 0x2000),
            (0x1_2345_6000, PAGE_SIZE),
            (0x1_8010_0000, PAGE_SIZE),
            (0x1_7fff_f000, 0x2000),
        ] {
            assert_eq!(
                t.map::<FakeFormat, _>(&mut m, start, HostPhysAddr::new(0), size, Attributes::RAM),
                Err(MapError::AlreadyMapped),
                "{start:#x}+{size:#x}"
            );
        }
        assert_eq!(m.words, snapshot);
        // Negative control: the neighbours of both are free.
        for (start, size) in [
            (0x1_2345_5000u64, PAGE_SIZE),
            (0x1_2345_7000, PAGE_SIZE),
            (0x1_8020_0000, 0x20_0000),
        ] {
            t.map::<FakeFormat, _>(
                &mut m,
                start,
                HostPhysAddr::new(start),
                size,
                Attributes::RAM,
            )
            .unwrap();
        }
    }

    #[test]
    fn refuses_overlap_unaligned_and_out_of_range_without_change() {
        let mut m = memory();
        let mut t = PageTable::new(&mut m, Geometry::stage2(32).unwrap()).unwrap();
        t.map::<FakeFormat, _>(
            &mut m,
            0x1000,
            HostPhysAddr::new(0x2000),
            0x1000,
            Attributes::DEVICE,
        )
        .unwrap();
        let snapshot = m.words.clone();
        assert_eq!(
            t.map::<FakeFormat, _>(
                &mut m,
                0,
                HostPhysAddr::new(0x9000),
                0x3000,
                Attributes::RAM
            ),
            Err(MapError::AlreadyMapped)
        );
        assert_eq!(m.words, snapshot);
        assert_eq!(
            t.map::<FakeFormat, _>(&mut m, 0x800, HostPhysAddr::new(0), 0x1000, Attributes::RAM),
            Err(MapError::Unaligned)
        );
        assert_eq!(
            t.map::<FakeFormat, _>(
                &mut m,
                0xffff_f000,
                HostPhysAddr::new(0),
                0x2000,
                Attributes::RAM
            ),
            Err(MapError::OutOfRange)
        );
        let (_, attrs) = t.lookup::<FakeFormat, _>(&m, 0x1008).unwrap();
        assert_eq!(attrs, Attributes::DEVICE);
    }

    #[test]
    fn unmap_page_removes_only_that_page() {
        let mut m = memory();
        let mut t = PageTable::new(&mut m, Geometry::stage1(39).unwrap()).unwrap();
        t.map::<FakeFormat, _>(
            &mut m,
            0x10_0000,
            HostPhysAddr::new(0x10_0000),
            0x3000,
            Attributes::DATA,
        )
        .unwrap();
        assert!(t.unmap_page::<FakeFormat, _>(&mut m, 0x10_1000));
        assert!(!t.unmap_page::<FakeFormat, _>(&mut m, 0x10_1000));
        assert!(t.lookup::<FakeFormat, _>(&m, 0x10_0000).is_some());
        assert!(t.lookup::<FakeFormat, _>(&m, 0x10_1000).is_none());
        assert!(t.lookup::<FakeFormat, _>(&m, 0x10_2000).is_some());
    }

    #[test]
    fn out_of_table_memory_is_an_error() {
        let mut m = FakeMemory {
            limit: 2,
            ..Default::default()
        };
        let mut t = PageTable::new(&mut m, Geometry::stage2(40).unwrap()).unwrap();
        assert_eq!(
            t.map::<FakeFormat, _>(
                &mut m,
                0x4000_0000,
                HostPhysAddr::new(0),
                0x1000,
                Attributes::RAM
            ),
            Err(MapError::OutOfMemory)
        );
    }
}
