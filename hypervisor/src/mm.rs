//! Memory: the EL2 / HYP stage-1 tables (early identity map, then the
//! final W^X map), the physical frame allocator, the heap, and access to the
//! VM manifest appended to the image.
//!
//! Both back-ends identity-map what the hypervisor uses with the same
//! descriptor format (an ARMv7 HYP long descriptor is an AArch64 EL2 one);
//! they differ in the size of the address space (39 bits on AArch64, the
//! whole 32-bit space on ARMv7, where only RAM below 4 GiB is used and the
//! guest-RAM alias window is what RAM leaves free) and in how the MMU is
//! turned on (`hyp_mmu` below).
//!
//! Both allocators keep a high-water mark (the most bytes ever in use at
//! once), which [`usage`] reports for the console's Ctrl-A s line and the
//! soak run (`cargo xtask soak`) watches for leaks.
//!
//! Lock order: `EL2_TABLES` (taken under a NIC's state lock when a packed
//! ring's Non-cacheable alias is mapped or unmapped), then `FRAMES`;
//! `FRAMES` and the heap's lock are leaf locks.

use crate::platform_info::BoardInfo;
#[cfg(target_arch = "aarch64")]
use chroma_arch::aarch64::boot;
use chroma_arch::aarch64::descriptors::El2Stage1Format;
#[cfg(target_arch = "arm")]
use chroma_arch::armv7::boot;
use chroma_core::frames::Frames;
use chroma_core::pagetable::{
    Attributes, Descriptor, Geometry, PageTable, PageTableFormat, TableMemory, PAGE_SIZE,
};
use chroma_core::HostPhysAddr;
use chroma_manifest::{Manifest, ManifestError};
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use spin::{Mutex, Once};

extern "C" {
    static __image_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __image_end: u8;
}

/// Bits of virtual address EL2 uses (a 512 GiB identity map; start level 1).
#[cfg(target_arch = "aarch64")]
const EL2_VA_BITS: u8 = 39;
/// Bits of virtual address HYP mode uses: all 4 GiB (HTCR.T0SZ = 0).
#[cfg(target_arch = "arm")]
const EL2_VA_BITS: u8 = chroma_arch::armv7::hyp::HYP_VA_BITS;
/// The end of the memory the hypervisor maps and uses (its VA space).
const SPACE_END: u64 = 1 << EL2_VA_BITS;
/// Bytes given to the heap.
const HEAP_BYTES: u64 = 16 << 20;

/// Free physical memory.
pub static FRAMES: spin::Lazy<Mutex<Frames>> = spin::Lazy::new(|| Mutex::new(Frames::new()));

#[global_allocator]
static HEAP: TrackedHeap = TrackedHeap {
    heap: buddy_system_allocator::LockedHeap::empty(),
    peak: AtomicUsize::new(0),
};

/// The heap: `buddy_system_allocator`'s, which counts the bytes in use
/// itself (`stats_alloc_actual`: with its rounding to powers of two), plus
/// the most that count ever reached.
struct TrackedHeap {
    heap: buddy_system_allocator::LockedHeap<32>,
    /// The highest `stats_alloc_actual` seen after an allocation.
    peak: AtomicUsize,
}

// SAFETY: allocation and deallocation are `buddy_system_allocator::Heap`'s
// own, under its lock, exactly as its `LockedHeap` implements `GlobalAlloc`:
// a block it hands out is free memory of the heap range, of at least the
// layout's size and alignment, until it is given back. The wrapper only
// reads the allocator's byte count while it holds the lock.
unsafe impl GlobalAlloc for TrackedHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut heap = self.heap.lock();
        let block = heap
            .alloc(layout)
            .map_or(core::ptr::null_mut(), NonNull::as_ptr);
        let in_use = heap.stats_alloc_actual();
        drop(heap);
        self.peak.fetch_max(in_use, Ordering::Relaxed);
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // The caller passes a block `alloc` returned (never null) with its layout.
        if let Some(block) = NonNull::new(block) {
            self.heap.lock().dealloc(block, layout);
        }
    }
}

/// What the hypervisor's own allocators hold now and at most, in bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryUsage {
    /// Heap bytes in use (as the buddy allocator counts them, rounded up to
    /// its block sizes).
    pub heap_used: usize,
    /// The most heap bytes ever in use at once.
    pub heap_peak: usize,
    /// The heap's size.
    pub heap_total: usize,
    /// Frame-allocator bytes in use (guest RAM, tables, DMA buffers).
    pub frames_used: u64,
    /// The most frame-allocator bytes ever in use at once.
    pub frames_peak: u64,
    /// Bytes the frame allocator manages.
    pub frames_total: u64,
}

/// The allocators' figures now, with their high-water marks.
pub fn usage() -> MemoryUsage {
    let (heap_used, heap_total) = {
        let heap = HEAP.heap.lock();
        (heap.stats_alloc_actual(), heap.stats_total_bytes())
    };
    let frames = FRAMES.lock();
    MemoryUsage {
        heap_used,
        heap_peak: HEAP.peak.load(Ordering::Relaxed).max(heap_used),
        heap_total,
        frames_used: frames.used_bytes(),
        frames_peak: frames.peak_used_bytes(),
        frames_total: frames.used_bytes() + frames.free_bytes(),
    }
}

static MANIFEST_BYTES: Once<&'static [u8]> = Once::new();
/// The live EL2 tables, for the guest-RAM aliases mapped after boot.
static EL2_TABLES: Mutex<Option<PageTable>> = Mutex::new(None);

/// Where the colour-matched aliases of guest RAM live: 256 GiB up, 64 GiB
/// long, above any RAM the 39-bit identity map covers (AArch64); on ARMv7
/// what the 32-bit space leaves above RAM (set by [`init`]).
static ALIAS_WINDOW: Once<(u64, u64)> = Once::new();

/// The guest-RAM alias window: (base, size).
pub fn alias_window() -> (u64, u64) {
    ALIAS_WINDOW.get().copied().unwrap_or((0, 0))
}

/// Bytes at the top of the alias window kept for the Non-cacheable aliases
/// of packed rings ([`RING_ALIAS_SLOT`] per NIC, so 512 NICs), out of the
/// colour allocator's reach.
const RING_ALIAS_WINDOW: u64 = 16 << 20;
/// One NIC's part of the ring alias window: eight pages, the most its two
/// packed queues' parts can touch (a descriptor ring of up to 256 entries,
/// 4 KiB, across at most two pages, and one page for each 4-byte event
/// suppression structure).
pub const RING_ALIAS_SLOT: u64 = 8 * PAGE_SIZE;
/// The ring alias window's base (set by [`init`]).
static RING_ALIAS_BASE: Once<u64> = Once::new();
/// Slots of the ring alias window handed out so far.
static RING_ALIAS_SLOTS: AtomicUsize = AtomicUsize::new(0);

/// A NIC's slot of the ring alias window (its base VA), or `None` when all
/// are taken. Slots are handed out once, as NICs are created, and kept.
pub fn ring_alias_slot() -> Option<u64> {
    let base = *RING_ALIAS_BASE.get()?;
    let index = RING_ALIAS_SLOTS.fetch_add(1, Ordering::Relaxed) as u64;
    let offset = index.checked_mul(RING_ALIAS_SLOT)?;
    (offset < RING_ALIAS_WINDOW).then(|| base + offset)
}

/// Maps the guest page at physical `pa` at `va` in the ring alias window,
/// Normal Non-cacheable, read/write, never executable. `va` must be
/// unmapped ([`unmap_ring_alias_page`] first).
pub fn map_ring_alias_page(va: u64, pa: u64) -> Result<(), chroma_core::pagetable::MapError> {
    // The entry replaces an invalid one (break-before-make holds: the
    // unmap invalidated any old translation).
    map_after_boot(va, pa, PAGE_SIZE, Attributes::DATA_NON_CACHEABLE)
}

/// Removes the page at `va` from the ring alias window and the TLBs of
/// every CPU. Nothing may access it afterwards.
pub fn unmap_ring_alias_page(va: u64) {
    let mut tables = EL2_TABLES.lock();
    if let Some(map) = tables.as_mut() {
        if map.unmap_page::<El2Stage1Format, _>(&mut PhysTables, va) {
            crate::arch::cpu::forget_mapping(va);
        }
    }
}

/// The early identity map: one level-1 table of 1 GiB blocks, and a
/// level-2 table of 2 MiB blocks for the GiB the early UART shares with the
/// image or the device tree (the Raspberry Pi 3's peripherals sit at the
/// top of its first GiB of RAM).
#[repr(C, align(4096))]
struct EarlyTable([u64; 512]);
static mut EARLY_L1: EarlyTable = EarlyTable([0; 512]);
static mut EARLY_L2: EarlyTable = EarlyTable([0; 512]);
/// Entries of the early table the walk uses (its root's size).
const EARLY_ENTRIES: u64 = if EL2_VA_BITS > 32 { 512 } else { 4 };

fn symbol_address(symbol: &u8) -> u64 {
    symbol as *const u8 as u64
}

fn image_start() -> u64 {
    // SAFETY: only the address of the linker symbol is taken.
    symbol_address(unsafe { &__image_start })
}
fn text_end() -> u64 {
    // SAFETY: only the address of the linker symbol is taken.
    symbol_address(unsafe { &__text_end })
}
fn rodata_end() -> u64 {
    // SAFETY: only the address of the linker symbol is taken.
    symbol_address(unsafe { &__rodata_end })
}
fn image_end() -> u64 {
    // SAFETY: only the address of the linker symbol is taken.
    symbol_address(unsafe { &__image_end })
}

fn pa_bits() -> u8 {
    crate::arch::ipa_bits()
}

/// PARange field value for the TCR/VTCR PS fields.
#[cfg(target_arch = "aarch64")]
pub fn pa_range_field() -> u64 {
    chroma_arch::aarch64::el2::this_cpu_pa_range()
}

/// One of the hypervisor's own addresses or sizes (its image, heap, tables,
/// frames, device windows) as a pointer-sized value. They fit on every
/// target chroma builds for; one that does not is a broken board
/// description, and the hypervisor stops.
pub fn host_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or_else(|_| crate::fatal("an address beyond the pointer width"))
}

/// Turns the MMU on with a coarse identity map (the image's GiB and the
/// DTB's as normal memory, the early UART's as device; 2 MiB blocks where
/// the UART shares a GiB with them), so that everything
/// after runs with caches on and atomics on normal memory.
///
/// # Safety
/// Called once, by the boot CPU, with the MMU off, before any other code.
pub unsafe fn early_mmu_on(dtb: usize) {
    const GIB: u64 = 1 << 30;
    let table = core::ptr::addr_of_mut!(EARLY_L1) as *mut u64;
    let set = |address: u64, attributes: Attributes| {
        let index = ((address / GIB) % EARLY_ENTRIES) as usize;
        let leaf = Descriptor::Leaf {
            output: HostPhysAddr::new(address & !(GIB - 1)),
            attributes,
        };
        // SAFETY: `table` is the static early table; no one else uses it and the MMU is off, so the walker does not read it yet.
        unsafe {
            table
                .add(index)
                .write_volatile(El2Stage1Format::encode(leaf, 1))
        };
    };
    let rwx = Attributes {
        read: true,
        write: true,
        execute: true,
        memory: chroma_core::pagetable::MemoryType::Normal,
    };
    let uart = chroma_platform::BOARD.early_uart as u64;
    set(dtb as u64, rwx);
    set(image_start(), rwx);
    let same_gib = |a: u64| a / GIB == uart / GIB;
    if same_gib(dtb as u64) || same_gib(image_start()) {
        // The UART's GiB holds RAM too: 2 MiB blocks there, normal memory
        // but for the UART's block, which is device memory (a device
        // reached through a cacheable mapping may never see a write).
        const BLOCK: u64 = 2 << 20;
        let l2 = core::ptr::addr_of_mut!(EARLY_L2) as *mut u64;
        let gib = uart & !(GIB - 1);
        for index in 0..512usize {
            let address = gib + index as u64 * BLOCK;
            let attributes = if address == uart & !(BLOCK - 1) {
                Attributes::DEVICE
            } else {
                rwx
            };
            let leaf = Descriptor::Leaf {
                output: HostPhysAddr::new(address),
                attributes,
            };
            // SAFETY: `l2` is the static early level-2 table, used by nothing else, and the MMU is off: the walker does not read it yet; `index` < 512.
            unsafe {
                l2.add(index)
                    .write_volatile(El2Stage1Format::encode(leaf, 2))
            };
        }
        let entry = Descriptor::Table(HostPhysAddr::new(l2 as u64));
        let index = ((uart / GIB) % EARLY_ENTRIES) as usize;
        // SAFETY: as in `set`: the static early table, MMU off.
        unsafe {
            table
                .add(index)
                .write_volatile(El2Stage1Format::encode(entry, 1))
        };
    } else {
        set(uart, Attributes::DEVICE);
    }
    // SAFETY: the early table maps the image (code, stack, data) at its own address; the boot CPU is the only one running, with its MMU off.
    unsafe { hyp_mmu::enable_early(table as u64) };
}

/// Translation tables in identity-mapped physical memory.
pub struct PhysTables;

impl TableMemory for PhysTables {
    fn alloc_zeroed(&mut self, pages: usize) -> Option<HostPhysAddr> {
        let bytes = pages as u64 * PAGE_SIZE;
        let base = FRAMES.lock().alloc(bytes)?;
        // SAFETY: the frames were just allocated for this table and are identity-mapped read/write; nobody else holds them.
        unsafe { core::ptr::write_bytes(base.raw() as *mut u8, 0, host_usize(bytes)) };
        Some(base)
    }

    fn read(&self, table: HostPhysAddr, index: usize) -> u64 {
        // SAFETY: `table` is a table page this module allocated (identity mapped) and `index` < its entry count (the walker's contract).
        unsafe { ((table.raw() as *const u64).add(index)).read_volatile() }
    }

    fn write(&mut self, table: HostPhysAddr, index: usize, value: u64) {
        // SAFETY: as for `read`; the store is a single aligned 64-bit write, which the table walker observes atomically.
        unsafe { ((table.raw() as *mut u64).add(index)).write_volatile(value) };
        // Make the descriptor visible to the walkers of all CPUs.
        crate::arch::cpu::publish_table_write();
    }
}

/// Sets up frames, heap and the final EL2 map from the board description.
pub fn init(board: &BoardInfo) {
    let manifest_len = manifest_len_at(image_end()).unwrap_or(0);
    let used_end = (image_end() + manifest_len as u64).next_multiple_of(PAGE_SIZE);
    // The heap comes first (the frame allocator itself needs it): the first
    // 2 MiB-aligned range after the image and manifest clear of the DTB.
    let mut heap = used_end.next_multiple_of(2 << 20);
    if heap < board.dtb_range.1 && board.dtb_range.0 < heap + HEAP_BYTES {
        heap = board.dtb_range.1.next_multiple_of(2 << 20);
    }
    // SAFETY: the heap range is RAM right after the image (same GiB, mapped by the early map), owned by nobody else: it is excluded from the frames.
    unsafe {
        HEAP.heap
            .lock()
            .init(host_usize(heap), host_usize(HEAP_BYTES))
    };
    {
        let mut frames = FRAMES.lock();
        // A fixed list, unused entries empty (an empty hole takes nothing).
        let mut holes = [(0, 0); 3 + chroma_devtree::MAX_RESERVED];
        holes[0] = (image_start(), used_end);
        holes[1] = board.dtb_range;
        holes[2] = (heap, heap + HEAP_BYTES);
        // What the firmware keeps (a spin table's page, say).
        for (slot, reserved) in holes[3..].iter_mut().zip(board.reserved.iter().flatten()) {
            *slot = *reserved;
        }
        for range in board.memory.iter().flatten() {
            add_minus(&mut frames, range.0, range.1.min(SPACE_END), &holes);
        }
    }
    let mut tables = PhysTables;
    let mut map = PageTable::new(
        &mut tables,
        Geometry::stage1(EL2_VA_BITS).unwrap_or_else(|| crate::fatal("bad VA size")),
    )
    .unwrap_or_else(|_| crate::fatal("no memory for EL2 tables"));
    let mut map_range = |start: u64, end: u64, attributes: Attributes| {
        if end > start {
            let start = start & !(PAGE_SIZE - 1);
            let end = end.next_multiple_of(PAGE_SIZE);
            if let Err(e) = map.map::<El2Stage1Format, _>(
                &mut tables,
                start,
                HostPhysAddr::new(start),
                end - start,
                attributes,
            ) {
                log::warn!("EL2 map {start:#x}..{end:#x}: {e}");
            }
        }
    };
    // The image W^X: text read+execute, rodata read-only, the rest data.
    map_range(image_start(), text_end(), Attributes::TEXT);
    map_range(text_end(), rodata_end(), Attributes::READ_ONLY);
    // Data and .bss, with an unmapped guard page at the bottom of each CPU's
    // stack: an overflow faults (and is reported) instead of corrupting .bss.
    let stacks = core::ptr::addr_of!(boot::CHROMA_STACKS) as u64;
    let stack_size = boot::STACK_SIZE as u64;
    let mut from = rodata_end();
    for cpu in 0..boot::MAX_CPUS as u64 {
        let guard = stacks + cpu * stack_size;
        map_range(from, guard, Attributes::DATA);
        from = guard + PAGE_SIZE;
    }
    map_range(from, image_end(), Attributes::DATA);
    for &(start, end) in board.memory.iter().flatten() {
        let end = end.min(SPACE_END);
        if start < image_start() {
            map_range(start, image_start().min(end), Attributes::DATA);
        }
        if end > image_end() {
            map_range(image_end().max(start), end, Attributes::DATA);
        }
    }
    for &(start, size) in board.devices.iter().flatten() {
        map_range(start, start + size, Attributes::DEVICE);
    }
    let root = map.root().raw();
    *EL2_TABLES.lock() = Some(map);
    // SAFETY: the new tables map the image, stacks, heap, frames and the console identically (VA = PA) with W^X; no secondary runs yet.
    unsafe { hyp_mmu::enable_final(root) };
    let ram_end = board
        .memory
        .iter()
        .flatten()
        .map(|&(_, end)| end.min(SPACE_END))
        .max()
        .unwrap_or(0);
    let (alias_base, alias_size) = hyp_mmu::alias_window(ram_end);
    // The top of the window holds the packed rings' Non-cacheable aliases
    // (none if the window is that small: the NICs then offer split rings).
    match alias_size.checked_sub(RING_ALIAS_WINDOW) {
        Some(colour_size) => {
            ALIAS_WINDOW.call_once(|| (alias_base, colour_size));
            RING_ALIAS_BASE.call_once(|| alias_base + colour_size);
        }
        None => {
            ALIAS_WINDOW.call_once(|| (alias_base, alias_size));
        }
    }
    let bytes = manifest_len;
    // SAFETY: the manifest was appended by the build tool right after the image; it is mapped read/write above and never written.
    let slice = unsafe { core::slice::from_raw_parts(image_end() as *const u8, bytes) };
    MANIFEST_BYTES.call_once(|| slice);
    log::info!(
        "{} MMU on (W^X{}), {} MiB free for VMs, {} PA bits",
        hyp_mmu::NAME,
        hyp_mmu::check_write_xor_execute(),
        FRAMES.lock().free_bytes() >> 20,
        pa_bits()
    );
}

/// Cleans and invalidates every data and unified cache of this CPU up to
/// the Level of Coherency, by set/way, then waits for it (DSB): after it no
/// line of the boot CPU's caches is dirty, whatever the firmware or the
/// hypervisor's start wrote. Returns the bytes of data cache it went
/// through (the sum of their sizes), none when the cache geometry could
/// not be read (nothing was cleaned).
///
/// This is what lets VM creation at boot clean only what it writes, not
/// all of a VM's RAM ([`crate::vm::Vm::create`]): the frames a VM gets at
/// boot were never written through a cacheable mapping since (the
/// hypervisor writes only its image's data, heap, stacks and tables, never
/// free frames, and nothing frees frames before the VMs are built), so no
/// dirty line can later be evicted over what the guest wrote with its
/// caches off. The other CPUs have not run with their caches on: they are
/// started after the VMs are built.
pub fn clean_data_caches_at_boot() -> Option<u64> {
    use chroma_cache::ops::CacheOps as _;
    let Ok(geometry) = crate::arch::cache_geometry() else {
        return None;
    };
    let (mut lines, mut bytes) = (0u64, 0u64);
    for cache in geometry
        .caches()
        .filter(|cache| cache.kind.holds_data() && cache.level <= geometry.loc)
    {
        let cleaned = crate::arch::clean_invalidate_whole_cache(
            cache.level,
            cache.line_size,
            cache.ways,
            cache.sets,
        );
        lines += cleaned;
        bytes += cleaned * u64::from(cache.line_size);
    }
    crate::arch::CacheOps::new().dsb();
    log::debug!("caches cleaned by set/way at boot: {lines} lines");
    Some(bytes)
}

/// Maps `len` bytes of guest RAM at physical `pa` at the alias `va`
/// (normal memory, read/write, never executable).
pub fn map_alias(va: u64, pa: u64, len: u64) -> Result<(), chroma_core::pagetable::MapError> {
    map_after_boot(va, pa, len, Attributes::DATA)
}

/// Maps `len` bytes at physical `pa` at `va` in the live EL2 tables, where
/// nothing is mapped yet (the tables refuse an overlap).
fn map_after_boot(
    va: u64,
    pa: u64,
    len: u64,
    attributes: Attributes,
) -> Result<(), chroma_core::pagetable::MapError> {
    let mut tables = EL2_TABLES.lock();
    let map = tables
        .as_mut()
        .ok_or(chroma_core::pagetable::MapError::OutOfMemory)?;
    map.map::<El2Stage1Format, _>(&mut PhysTables, va, HostPhysAddr::new(pa), len, attributes)?;
    // New entries replace invalid ones: no break-before-make needed, but the
    // walker must see them before the first access.
    crate::arch::cpu::publish_new_mappings();
    Ok(())
}

/// Adds `start..end` minus the `holes` to the allocator, lowest piece
/// first: the part below the first hole and the part above it, each minus
/// the other holes. Recursive rather than through a `Vec` of pieces: it
/// runs once, before the first guest, where every distinct instruction
/// costs its translation under QEMU's TCG (the depth is the holes' count).
fn add_minus(frames: &mut Frames, start: u64, end: u64, holes: &[(u64, u64)]) {
    if start >= end {
        return;
    }
    match holes.split_first() {
        None => frames.add_range(HostPhysAddr::new(start), HostPhysAddr::new(end)),
        Some((&(hole_start, hole_end), rest)) => {
            add_minus(frames, start, end.min(hole_start), rest);
            add_minus(frames, start.max(hole_end), end, rest);
        }
    }
}

/// Length of the manifest at `address`, from its header.
fn manifest_len_at(address: u64) -> Option<usize> {
    // SAFETY: the 64-byte header lies just past the image in RAM mapped by the early map (the image's GiB); reading it has no side effect.
    let header = unsafe { core::slice::from_raw_parts(address as *const u8, 64) };
    if header[..8] != chroma_manifest::MAGIC {
        return None;
    }
    Some(u32::from_le_bytes([header[12], header[13], header[14], header[15]]) as usize)
}

/// The VM manifest appended to the image.
pub fn manifest() -> Result<Manifest<'static>, ManifestError> {
    Manifest::parse(MANIFEST_BYTES.get().copied().unwrap_or(&[]))
}

/// Turns a physical range into a mutable byte slice.
///
/// # Safety
/// The range must be memory this hypervisor allocated from `FRAMES` for one
/// owner (guest RAM while its VM is being loaded), identity-mapped, with no
/// other live reference to it.
pub unsafe fn phys_slice_mut(base: u64, len: usize) -> &'static mut [u8] {
    // SAFETY: the caller's contract.
    unsafe { core::slice::from_raw_parts_mut(host_usize(base) as *mut u8, len) }
}

/// Copies `image` into `target` (guest RAM being loaded; the two have the
/// same length): by blocks of LDP/STP pairs on AArch64
/// (`chroma_arch::aarch64::cpu::copy_blocks`), the tail and ARMv7 by
/// `copy_from_slice`.
pub fn copy_image(target: &mut [u8], image: &[u8]) {
    let length = target.len().min(image.len());
    #[cfg(target_arch = "aarch64")]
    let done = {
        use chroma_arch::aarch64::cpu::{copy_blocks, COPY_BLOCK};
        let blocks = length / COPY_BLOCK;
        // SAFETY: both slices hold at least `blocks * COPY_BLOCK` bytes (`length` is the shorter one's), in normal memory (guest RAM through its alias, the manifest in the image's RAM); `target` is a `&mut` borrow, so it does not overlap `image`.
        unsafe { copy_blocks(target.as_mut_ptr(), image.as_ptr(), blocks) };
        blocks * COPY_BLOCK
    };
    #[cfg(target_arch = "arm")]
    let done = 0;
    if let (Some(target), Some(image)) = (target.get_mut(done..length), image.get(done..length)) {
        target.copy_from_slice(image);
    }
}

/// The AArch64 EL2 MMU: MAIR/TCR/SCTLR_EL2 through `boot::enable_mmu`.
#[cfg(target_arch = "aarch64")]
mod hyp_mmu {
    use super::{host_usize, EL2_VA_BITS};
    use chroma_arch::aarch64::boot::{self, MmuConfig};
    use chroma_arch::aarch64::descriptors::MAIR_EL2_VALUE;
    use chroma_arch::aarch64::el2;

    /// How the log calls this translation regime.
    pub const NAME: &str = "EL2";

    fn mmu_config(root: u64) -> MmuConfig {
        MmuConfig {
            mair: MAIR_EL2_VALUE,
            tcr: el2::tcr_el2(EL2_VA_BITS, super::pa_range_field()),
            ttbr0: root,
            sctlr: el2::sctlr_el2(),
        }
    }

    /// Turns the MMU on with the early table at `root` (WXN off: it has
    /// writable and executable blocks).
    ///
    /// # Safety
    /// As `early_mmu_on`'s.
    pub unsafe fn enable_early(root: u64) {
        // The walker will read the table with cacheable attributes: make
        // sure no stale line from before the MMU was on shadows it.
        chroma_arch::aarch64::cache::invalidate_dcache(host_usize(root), 4096);
        let mut config = mmu_config(root);
        config.sctlr &= !(1 << 19);
        // SAFETY: the caller's contract.
        unsafe { boot::enable_mmu(&config) };
    }

    /// Switches to the final tables at `root` and publishes them for the
    /// secondaries.
    ///
    /// # Safety
    /// The tables map the image, stacks, heap, frames and the console at
    /// their own addresses with W^X; no secondary runs yet.
    pub unsafe fn enable_final(root: u64) {
        let config = mmu_config(root);
        // SAFETY: the caller's contract.
        unsafe {
            boot::enable_mmu(&config);
            boot::set_secondary_mmu_config(config);
        }
    }

    /// The alias window: fixed, above the 39-bit identity map's RAM.
    pub fn alias_window(_ram_end: u64) -> (u64, u64) {
        (0x40_0000_0000, 0x10_0000_0000)
    }

    /// What the log adds about W^X (nothing checked beyond the tables).
    pub fn check_write_xor_execute() -> &'static str {
        ""
    }
}

/// The ARMv7 HYP MMU (`chroma_arch::armv7::mmu`).
#[cfg(target_arch = "arm")]
mod hyp_mmu {
    pub use chroma_arch::armv7::mmu::{enable_early, enable_final};

    /// How the log calls this translation regime.
    pub const NAME: &str = "HYP";

    /// The alias window: from the first GiB boundary above RAM (2 GiB at
    /// least) up to 3.75 GiB (the top 256 MiB stay unmapped). Guest RAM
    /// must fit in it: VM creation says so when it does not.
    pub fn alias_window(ram_end: u64) -> (u64, u64) {
        const GIB: u64 = 1 << 30;
        const TOP: u64 = 0xf000_0000;
        let base = ram_end.next_multiple_of(GIB).max(2 * GIB);
        (base, TOP.saturating_sub(base))
    }

    /// Asks the MMU that the image's text and rodata are read-only and its
    /// data writable: the log then reports what the hardware enforces.
    pub fn check_write_xor_execute() -> &'static str {
        let va = |address: u64| u32::try_from(address).unwrap_or(0);
        match chroma_arch::armv7::mmu::check_write_xor_execute(
            va(super::image_start()),
            va(super::text_end()),
            va(super::rodata_end()),
        ) {
            Ok(()) => ", checked with ATS1HR/ATS1HW",
            Err(section) => crate::fatal_fmt(format_args!(
                "the HYP MMU does not enforce W^X on the image's {section}"
            )),
        }
    }
}
