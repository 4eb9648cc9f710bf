//! Memory of the ARMv7 slice: the early identity map (1 GiB blocks, MMU and
//! caches on before anything uses a lock), then the heap, the frame pool
//! and the final HYP map built with `chroma_core::pagetable` (W^X: text RX,
//! rodata R, data RW XN), checked with the MMU's own translation.
//!
//! The hypervisor identity-maps what it uses, as on AArch64; with a 32-bit
//! HYP VA only RAM below 4 GiB is used (the frame pool skips the rest).

use buddy_system_allocator::LockedHeap;
use chroma_arch::armv7::hyp::{self, HypStage1Format, HYP_VA_BITS};
use chroma_arch::armv7::{boot, sysreg};
use chroma_core::frames::Frames;
use chroma_core::pagetable::{
    Attributes, Descriptor, Geometry, MapError, MemoryType, PageTable, PageTableFormat,
    TableMemory, PAGE_SIZE,
};
use chroma_core::HostPhysAddr;
use spin::Mutex;

/// Bytes of hypervisor heap.
const HEAP_BYTES: u64 = 2 << 20;
/// A level-1 block.
const GIB: u64 = 1 << 30;
/// The end of the 32-bit HYP address space (and of the RAM used).
const SPACE_END: u64 = 1 << 32;

#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();

/// The frame pool (tables now; guest RAM once there are guests).
static FRAMES: Mutex<Option<Frames>> = Mutex::new(None);

/// The early map's root: four level-1 entries (HTCR.T0SZ = 0).
#[repr(C, align(4096))]
struct EarlyRoot([u64; 4]);
static mut EARLY_ROOT: EarlyRoot = EarlyRoot([0; 4]);

extern "C" {
    static __image_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __image_end: u8;
}

/// The image's sections (physical = virtual addresses).
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    /// First byte of the image (and of .text).
    pub start: u64,
    /// End of .text, start of .rodata.
    pub text_end: u64,
    /// End of .rodata, start of .data and .bss.
    pub rodata_end: u64,
    /// End of .bss: where the manifest starts.
    pub end: u64,
}

/// The address of a linker symbol.
fn symbol_address(symbol: &u8) -> u64 {
    symbol as *const u8 as usize as u64
}

/// The sections, from the linker's symbols.
pub fn image_layout() -> ImageLayout {
    // SAFETY: only the addresses of the linker symbols are taken, never
    // their (nonexistent) contents.
    unsafe {
        ImageLayout {
            start: symbol_address(&__image_start),
            text_end: symbol_address(&__text_end),
            rodata_end: symbol_address(&__rodata_end),
            end: symbol_address(&__image_end),
        }
    }
}

/// A physical address of the hypervisor's own memory as a pointer-sized
/// value (everything it maps lies below 4 GiB).
fn host_usize(value: u64) -> Option<usize> {
    usize::try_from(value).ok()
}

/// Turns the HYP MMU on with a coarse identity map: the early UART's GiB
/// as device memory, the image's and the device tree's GiB as normal
/// memory, read/write/execute (so WXN stays off until the final map).
///
/// # Safety
/// Called once, by the boot CPU in HYP mode, with the MMU off, first thing.
pub unsafe fn early_mmu_on(dtb: usize) {
    let root = core::ptr::addr_of_mut!(EARLY_ROOT).cast::<u64>();
    let set = |address: u64, attributes: Attributes| {
        // A 32-bit address: its GiB index is 0 to 3.
        let index = usize::try_from(address / GIB).unwrap_or(0) % 4;
        let leaf = Descriptor::Leaf {
            output: HostPhysAddr::new(address & !(GIB - 1)),
            attributes,
        };
        // SAFETY: `root` is the static early root, four entries long, used
        // by nothing else; the MMU is off, so no walker reads it yet.
        unsafe {
            root.add(index)
                .write_volatile(HypStage1Format::encode(leaf, 1))
        };
    };
    // The UART first: if it shares a GiB with RAM, the RAM mapping wins.
    set(chroma_platform::BOARD.early_uart as u64, Attributes::DEVICE);
    let rwx = Attributes {
        read: true,
        write: true,
        execute: true,
        memory: MemoryType::Normal,
    };
    set(dtb as u64, rwx);
    set(image_layout().start, rwx);
    // The walker reads the root with cacheable attributes: no stale line
    // from before may shadow what was written with the cache off.
    sysreg::clean_invalidate_dcache(root as usize, core::mem::size_of::<EarlyRoot>());
    // SAFETY:
    // 1. The early root maps the image (code, stack, .bss) and the DTB at
    //    their own addresses, and the UART as device memory.
    // 2. Only the boot CPU runs; the MMU is off until `write_hsctlr`.
    unsafe {
        sysreg::load_translation(
            (hyp::hmair0(), hyp::hmair1()),
            hyp::htcr(sysreg::htcr()),
            root as u64,
        );
        sysreg::write_hsctlr(hyp::hsctlr(sysreg::hsctlr(), false));
    }
}

/// Translation tables in identity-mapped frames.
struct PhysTables;

impl PhysTables {
    fn pointer(table: HostPhysAddr, index: usize) -> Option<*mut u64> {
        let base = host_usize(table.raw())?;
        let offset = index.checked_mul(core::mem::size_of::<u64>())?;
        Some(base.checked_add(offset)? as *mut u64)
    }
}

impl TableMemory for PhysTables {
    fn alloc_zeroed(&mut self, pages: usize) -> Option<HostPhysAddr> {
        let bytes = u64::try_from(pages).ok()?.checked_mul(PAGE_SIZE)?;
        let base = FRAMES.lock().as_mut()?.alloc(bytes)?;
        let start = host_usize(base.raw())?;
        // SAFETY: the frames were just allocated for this table, lie in RAM
        // the early map covers read/write, and nobody else holds them.
        unsafe { core::ptr::write_bytes(start as *mut u8, 0, host_usize(bytes)?) };
        Some(base)
    }

    fn read(&self, table: HostPhysAddr, index: usize) -> u64 {
        match Self::pointer(table, index) {
            // SAFETY: `table` is a table page this module allocated
            // (identity-mapped) and `index` < its entry count (the walker's
            // contract), so the pointer is in bounds and 8-byte aligned.
            Some(pointer) => unsafe { pointer.read_volatile() },
            None => 0,
        }
    }

    fn write(&mut self, table: HostPhysAddr, index: usize, value: u64) {
        if let Some(pointer) = Self::pointer(table, index) {
            // SAFETY: as for `read`. The tables are written before HTTBR
            // names them, so no walker can see half of a descriptor.
            unsafe { pointer.write_volatile(value) };
        }
    }
}

/// What `init` set up, for the boot summary.
#[derive(Clone, Copy, Debug)]
pub struct MemorySummary {
    /// The image's sections.
    pub image: ImageLayout,
    /// Heap base.
    pub heap_base: u64,
    /// Heap size.
    pub heap_bytes: u64,
    /// Bytes in the frame pool, before the tables.
    pub frame_bytes: u64,
    /// Bytes of HYP translation tables.
    pub table_bytes: u64,
    /// HTTBR of the final map.
    pub httbr: u64,
}

/// Why the final map could not be built.
#[derive(Clone, Copy, Debug)]
pub enum MemoryError {
    /// Mapping a range failed.
    Map(&'static str, MapError),
    /// The MMU's own translation disagrees with W^X for this section.
    WriteXorExecute(&'static str),
    /// An address beyond what this 32-bit hypervisor can use.
    Beyond4GiB,
}

impl core::fmt::Display for MemoryError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MemoryError::Map(what, error) => write!(f, "mapping {what}: {error}"),
            MemoryError::WriteXorExecute(what) => {
                write!(f, "the HYP MMU does not enforce W^X on {what}")
            }
            MemoryError::Beyond4GiB => f.write_str("an address beyond 4 GiB"),
        }
    }
}

/// The length of the manifest after the image (its header's total length).
fn manifest_len_at(address: u64) -> Option<u64> {
    let start = host_usize(address)?;
    // SAFETY: the 64-byte header lies just past the image, in RAM the early
    // map covers (the image's GiB); reading it has no side effect.
    let header = unsafe { core::slice::from_raw_parts(start as *const u8, 64) };
    if header.get(..8)? != chroma_manifest::MAGIC {
        return None;
    }
    let length = header.get(12..16)?;
    Some(u64::from(u32::from_le_bytes([
        *length.first()?,
        *length.get(1)?,
        *length.get(2)?,
        *length.get(3)?,
    ])))
}

/// The manifest bytes after the image (empty without one).
pub fn manifest_bytes() -> &'static [u8] {
    let end = image_layout().end;
    match (manifest_len_at(end), host_usize(end)) {
        (Some(length), Some(start)) => match host_usize(length) {
            // SAFETY: the header's own length bounds the manifest, which the
            // final map keeps read-only and nothing writes.
            Some(length) => unsafe { core::slice::from_raw_parts(start as *const u8, length) },
            None => &[],
        },
        _ => &[],
    }
}

/// Gives `[start, end)` minus `holes` to the frame pool.
fn add_minus(frames: &mut Frames, start: u64, end: u64, holes: &[(u64, u64)]) {
    let mut cursor = start;
    while cursor < end {
        // The first hole that covers the cursor moves it past the hole.
        if let Some(hole) = holes
            .iter()
            .find(|hole| hole.0 <= cursor && cursor < hole.1)
        {
            cursor = hole.1;
            continue;
        }
        // Else free up to the next hole that starts after the cursor.
        let next = holes
            .iter()
            .filter(|hole| hole.0 > cursor)
            .map(|hole| hole.0)
            .min()
            .unwrap_or(end)
            .min(end);
        let from = cursor.next_multiple_of(PAGE_SIZE);
        let to = next & !(PAGE_SIZE - 1);
        if from < to {
            frames.add_range(HostPhysAddr::new(from), HostPhysAddr::new(to));
        }
        cursor = next;
    }
}

/// Sets up the heap, the frame pool and the final W^X HYP map from the
/// board's RAM, the DTB's range and the device windows to keep mapped.
pub fn init(
    ram: &[(u64, u64)],
    dtb: (u64, u64),
    devices: &[(u64, u64)],
) -> Result<MemorySummary, MemoryError> {
    let image = image_layout();
    let manifest_bytes = manifest_len_at(image.end).unwrap_or(0);
    let used_end = image
        .end
        .checked_add(manifest_bytes)
        .ok_or(MemoryError::Beyond4GiB)?
        .next_multiple_of(PAGE_SIZE);
    // The heap: the first 2 MiB-aligned range after the image and manifest
    // clear of the DTB (the image's GiB: the early map covers it).
    let mut heap = used_end.next_multiple_of(2 << 20);
    if heap < dtb.1 && dtb.0 < heap + HEAP_BYTES {
        heap = dtb.1.next_multiple_of(2 << 20);
    }
    let heap_start = host_usize(heap).ok_or(MemoryError::Beyond4GiB)?;
    let heap_size = host_usize(HEAP_BYTES).ok_or(MemoryError::Beyond4GiB)?;
    // SAFETY: the heap range is RAM after the image, mapped by the early map,
    // owned by nobody else: it is kept out of the frame pool below.
    unsafe { HEAP.lock().init(heap_start, heap_size) };
    let mut frames = Frames::new();
    let holes = [(image.start, used_end), dtb, (heap, heap + HEAP_BYTES)];
    for &(start, end) in ram {
        add_minus(&mut frames, start, end.min(SPACE_END), &holes);
    }
    let frame_bytes = frames.free_bytes();
    *FRAMES.lock() = Some(frames);

    let mut tables = PhysTables;
    let geometry = Geometry::stage1(HYP_VA_BITS).ok_or(MemoryError::Beyond4GiB)?;
    let mut map =
        PageTable::new(&mut tables, geometry).map_err(|e| MemoryError::Map("the root", e))?;
    let mut map_range = |what: &'static str, start: u64, end: u64, attributes: Attributes| {
        let start = start & !(PAGE_SIZE - 1);
        let end = end.min(SPACE_END).next_multiple_of(PAGE_SIZE);
        if end <= start {
            return Ok(());
        }
        map.map::<HypStage1Format, _>(
            &mut tables,
            start,
            HostPhysAddr::new(start),
            end - start,
            attributes,
        )
        .map_err(|e| MemoryError::Map(what, e))
    };
    // W^X over the image; the manifest read-only; the rest of RAM data.
    map_range("text", image.start, image.text_end, Attributes::TEXT)?;
    map_range(
        "rodata",
        image.text_end,
        image.rodata_end,
        Attributes::READ_ONLY,
    )?;
    map_range("data", image.rodata_end, image.end, Attributes::DATA)?;
    map_range("manifest", image.end, used_end, Attributes::READ_ONLY)?;
    for &(start, end) in ram {
        if start < image.start && image.start < end {
            map_range("RAM below the image", start, image.start, Attributes::DATA)?;
            map_range("RAM after the image", used_end, end, Attributes::DATA)?;
        } else {
            map_range("RAM", start, end, Attributes::DATA)?;
        }
    }
    for &(base, size) in devices {
        map_range(
            "a device",
            base,
            base.saturating_add(size),
            Attributes::DEVICE,
        )?;
    }
    let table_bytes = FRAMES.lock().as_ref().map_or(0, Frames::used_bytes);
    let httbr = map.root().raw();
    // SAFETY:
    // 1. The new tables map the image, stack, heap, DTB and the UART at the
    //    same addresses as the early map, so the switch is seamless; the
    //    TLBs are invalidated by `load_translation` and again below.
    // 2. WXN goes on with it: the new tables have no writable text.
    unsafe {
        sysreg::load_translation(
            (hyp::hmair0(), hyp::hmair1()),
            hyp::htcr(sysreg::htcr()),
            httbr,
        );
        sysreg::write_hsctlr(hyp::hsctlr(sysreg::hsctlr(), true));
    }
    // HSCTLR.WXN may be cached in TLB entries.
    sysreg::invalidate_hyp_tlb();
    let [l0, l1, l2, l3, h0, h1, h2, h3] = httbr.to_le_bytes();
    // SAFETY: only the boot CPU runs (no secondary is started before `init`
    // returns), and the regime is the one just loaded, which maps the image,
    // the stacks and data at their own addresses.
    unsafe {
        boot::publish_mmu_config(boot::HypMmuConfig {
            hmair0: hyp::hmair0(),
            hmair1: hyp::hmair1(),
            htcr: sysreg::htcr(),
            httbr_low: u32::from_le_bytes([l0, l1, l2, l3]),
            httbr_high: u32::from_le_bytes([h0, h1, h2, h3]),
            // The boot CPU's values: the secondaries are the same cores.
            hsctlr: sysreg::hsctlr(),
        })
    };
    check_write_xor_execute(&image)?;
    Ok(MemorySummary {
        image,
        heap_base: heap,
        heap_bytes: HEAP_BYTES,
        frame_bytes,
        table_bytes,
        httbr,
    })
}

/// Asks the MMU (ATS1HR/ATS1HW) that text and rodata are readable but not
/// writable, and data is both, so the summary reports what the hardware
/// enforces rather than what the tables were meant to say.
fn check_write_xor_execute(image: &ImageLayout) -> Result<(), MemoryError> {
    let va = |address: u64| u32::try_from(address).map_err(|_| MemoryError::Beyond4GiB);
    let text = va(image.start)?;
    let rodata = va(image.text_end)?;
    let data = va(image.rodata_end)?;
    let expectations = [
        ("text", text, true, false),
        ("rodata", rodata, true, false),
        ("data", data, true, true),
    ];
    for (what, address, readable, writable) in expectations {
        if sysreg::hyp_translate(address, false).is_some() != readable
            || sysreg::hyp_translate(address, true).is_some() != writable
        {
            return Err(MemoryError::WriteXorExecute(what));
        }
    }
    Ok(())
}
