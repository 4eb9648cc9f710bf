//! The hypervisor's view of a VM's RAM for the device models: every access
//! is bounds-checked against the VM's RAM, goes through the VM's colour-
//! matched alias (never the identity map, never a Rust reference into guest
//! memory), and calls the cache policy's hooks over exactly the bytes used.
//!
//! The one exception is a packed ring under a maintaining policy: both
//! sides write its descriptor slots and event suppression structures, often
//! within one cache line, and cleaning the device's cached copy of such a
//! line can put back bytes the driver wrote meanwhile (docs/caches.md, "The
//! exhaustive check"). Those parts are reached through a Normal
//! Non-cacheable alias of their pages instead ([`VmMemory::uncache_rings`]),
//! with no maintenance; buffers keep the maintained cacheable alias.

use crate::arch::CacheOps;
use chroma_cache::policy::MaintenanceStats;
use chroma_cache::{MaintainHooks, Policy};
use chroma_mem::{
    CacheHooks, DeviceArea, GuestMemory, GuestPhysAddr, HostPhysAddr, HostSpan, HostVirtAddr,
    MemError, Region, RegionTable,
};
use core::sync::atomic::{AtomicU16, AtomicU8, Ordering};

/// The hooks of one device's view: none, or maintenance by line.
// The maintaining variant carries the merged maintenance's fixed line sets
// (about 2 KiB); there is one per NIC, in its static state, and no heap to
// box it on.
#[allow(clippy::large_enum_variant)]
pub enum Hooks {
    /// Coherent, matching attributes: nothing to do.
    Coherent,
    /// Clean/invalidate by line around each access.
    Maintain(MaintainHooks<CacheOps>),
}

impl CacheHooks for Hooks {
    fn before_read(&self, va: HostVirtAddr, len: usize) {
        if let Hooks::Maintain(h) = self {
            h.before_read(va, len);
        }
    }
    fn before_write(&self, va: HostVirtAddr, len: usize) {
        if let Hooks::Maintain(h) = self {
            CacheHooks::before_write(h, va, len);
        }
    }
    fn after_write(&self, va: HostVirtAddr, len: usize) {
        if let Hooks::Maintain(h) = self {
            h.after_write(va, len);
        }
    }
    fn before_write_owned(&self, va: HostVirtAddr, len: usize, area: HostVirtAddr, size: usize) {
        if let Hooks::Maintain(h) = self {
            CacheHooks::before_write_owned(h, va, len, area, size);
        }
    }
    fn before_write_run(&self, va: HostVirtAddr, len: usize) {
        if let Hooks::Maintain(h) = self {
            h.before_write_run(va, len);
        }
    }
    fn before_release(&self, va: HostVirtAddr, len: usize) {
        if let Hooks::Maintain(h) = self {
            h.before_release(va, len);
        }
    }
    fn before_acquire(&self, va: HostVirtAddr, len: usize) {
        if let Hooks::Maintain(h) = self {
            h.before_acquire(va, len);
        }
    }
    fn barrier(&self) {
        if let Hooks::Maintain(h) = self {
            h.barrier();
        }
    }
    fn end_operation(&self) {
        if let Hooks::Maintain(h) = self {
            h.end_operation();
        }
    }
}

/// Ring parts one NIC can have reached uncached: the descriptor ring and
/// the two event suppression structures of each of its two queues.
pub const RING_PARTS: usize = 6;

/// Why a ring's Non-cacheable alias was not made (nothing is reached
/// uncached then, and the caller fails the device rather than run a packed
/// ring through the maintained cacheable alias).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingAliasError {
    /// The NIC has no slot in the ring alias window.
    NoSlot,
    /// The parts need more pages than a slot holds.
    SlotFull,
    /// A ring part is not inside the VM's RAM.
    OutOfRange,
    /// Two ring parts overlap.
    Overlap,
    /// The EL2 tables refused the mapping.
    Map(chroma_core::pagetable::MapError),
}

impl core::fmt::Display for RingAliasError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RingAliasError::NoSlot => f.write_str("no slot left in the ring alias window"),
            RingAliasError::SlotFull => f.write_str("the ring parts span more pages than a slot"),
            RingAliasError::OutOfRange => f.write_str("a ring part lies outside guest RAM"),
            RingAliasError::Overlap => f.write_str("two ring parts overlap"),
            RingAliasError::Map(e) => write!(f, "EL2 mapping refused: {e}"),
        }
    }
}

/// One VM's RAM as a device model sees it.
pub struct VmMemory {
    ipa: u64,
    size: u64,
    alias: u64,
    /// Physical base of the RAM (for the Non-cacheable ring alias).
    ram_pa: u64,
    hooks: Hooks,
    /// This NIC's slot of the ring alias window (`mm::ring_alias_slot`).
    ring_slot: Option<u64>,
    /// Pages mapped at the start of the slot now.
    ring_pages: u64,
    /// The ring parts reached through the slot (`host_virt` in the
    /// Non-cacheable alias); an access wholly inside one goes there.
    uncached: RegionTable,
    /// Accesses that went through the Non-cacheable alias (the NIC line's
    /// evidence that the rings, and only they, are reached there).
    uncached_accesses: core::cell::Cell<u64>,
    /// The driver reaches memory uncached ([`Self::guest_uncached`]).
    guest_uncached: bool,
}

impl VmMemory {
    /// The RAM at `ipa..ipa+size` (physical `ram_pa`), reached through the
    /// alias at `alias`, with the maintenance `policy` asks for; packed
    /// rings can be reached uncached through `ring_slot`.
    pub fn new(
        ipa: u64,
        size: u64,
        alias: u64,
        ram_pa: u64,
        ring_slot: Option<u64>,
        policy: Policy,
        window: (u64, u64),
    ) -> Self {
        Self {
            ipa,
            size,
            alias,
            ram_pa,
            hooks: Self::hooks(policy, window),
            ring_slot,
            ring_pages: 0,
            uncached: RegionTable::new(),
            uncached_accesses: core::cell::Cell::new(0),
            guest_uncached: false,
        }
    }

    fn hooks(policy: Policy, window: (u64, u64)) -> Hooks {
        if policy.maintains() {
            let hooks = MaintainHooks::new(
                CacheOps::new(),
                policy,
                HostVirtAddr::new(window.0),
                window.1,
            );
            // Merged per line and per batch (docs/caches.md, "The protocol
            // minimum"): this memory passes the ring's ordering points and
            // the end of each operation on. A build with
            // CHROMA_UNMERGED_MAINTENANCE set maintains per access instead,
            // the negative control of the system test that checks the
            // lines maintained per packet against the minimum.
            Hooks::Maintain(if option_env!("CHROMA_UNMERGED_MAINTENANCE").is_some() {
                hooks
            } else {
                hooks.merged()
            })
        } else {
            Hooks::Coherent
        }
    }

    /// Starts over with the maintenance `policy` asks for (its line count
    /// from zero); what is reached uncached stays.
    pub fn set_policy(&mut self, policy: Policy, window: (u64, u64), guest_uncached: bool) {
        self.hooks = Self::hooks(policy, window);
        self.guest_uncached = guest_uncached;
    }

    /// Whether the driver reaches its memory uncached (caches off when it
    /// set DRIVER_OK), as [`Self::set_policy`] was told: only then may the
    /// device reach a packed ring through the Non-cacheable alias. A driver
    /// with its caches on (coherent, as chroma's `dma-coherent` virtio
    /// nodes tell Linux) holds its descriptors dirty in the cache, which a
    /// Non-cacheable read would miss (the oracle's "NC alias, coherent
    /// guest" control): with it a maintaining policy (forced) keeps the
    /// cacheable alias, where the hooks keep one coherent copy.
    pub fn guest_uncached(&self) -> bool {
        self.guest_uncached
    }

    /// Whether the policy maintains (the view has maintenance hooks).
    pub fn maintains(&self) -> bool {
        matches!(self.hooks, Hooks::Maintain(_))
    }

    /// Accesses made through the Non-cacheable ring alias since the VM was
    /// created.
    pub fn uncached_accesses(&self) -> u64 {
        self.uncached_accesses.get()
    }

    /// Reaches the ring `parts` (guest-physical start and length each: a
    /// packed ring's descriptor ring and event suppression structures)
    /// through Normal Non-cacheable mappings of their pages, without
    /// maintenance, from now on; everything else keeps the cacheable alias
    /// and the policy's hooks. Whatever was reached uncached before is
    /// forgotten first. On error nothing is reached uncached.
    pub fn uncache_rings(&mut self, parts: &[(GuestPhysAddr, u64)]) -> Result<(), RingAliasError> {
        self.forget_rings();
        let slot = self.ring_slot.ok_or(RingAliasError::NoSlot)?;
        let page = chroma_core::pagetable::PAGE_SIZE;
        let slot_pages = crate::mm::RING_ALIAS_SLOT / page;
        if parts.len() > RING_PARTS {
            return Err(RingAliasError::SlotFull);
        }
        for &(gpa, len) in parts {
            let result = self
                .translate(gpa, len)
                .map_err(|_| RingAliasError::OutOfRange);
            let first_page = gpa.raw() & !(page - 1);
            // `translate` bounded gpa + len by the end of RAM.
            let end = gpa.raw() + len;
            let pages = end.saturating_sub(first_page).div_ceil(page);
            let result = result.and_then(|cacheable_va| {
                if self.ring_pages + pages > slot_pages {
                    return Err(RingAliasError::SlotFull);
                }
                let part_va = slot + self.ring_pages * page;
                for i in 0..pages {
                    let pa = self.ram_pa + (first_page - self.ipa) + i * page;
                    crate::mm::map_ring_alias_page(part_va + i * page, pa)
                        .map_err(RingAliasError::Map)?;
                    self.ring_pages += 1;
                }
                // A line of the part the cacheable alias still holds (from
                // before the ring was there, or a speculative fill) must not
                // be written back over what goes through the uncached alias
                // from now on, nor be read in its place.
                if let Hooks::Maintain(_) = self.hooks {
                    let ops = CacheOps::new();
                    // SAFETY: `cacheable_va..+len` lies in this VM's RAM alias (checked by `translate` above), mapped for the hypervisor's lifetime; the hypervisor cleans every line it writes there at once (the Maintain hooks), so no line holds a dirty byte of its own to lose, and cleaning the guest's data to memory changes no value.
                    unsafe {
                        chroma_cache::ops::CacheOps::clean_invalidate_range(
                            &ops,
                            HostVirtAddr::new(cacheable_va),
                            crate::mm::host_usize(len),
                        )
                    };
                }
                let part = Region {
                    guest: gpa,
                    host_phys: HostPhysAddr::new(self.ram_pa + (gpa.raw() - self.ipa)),
                    host_virt: HostVirtAddr::new(part_va + (gpa.raw() - first_page)),
                    size: len,
                };
                self.uncached.add(part).map_err(|e| match e {
                    MemError::Overlap => RingAliasError::Overlap,
                    _ => RingAliasError::SlotFull,
                })
            });
            if let Err(e) = result {
                self.forget_rings();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Forgets the uncached ring parts (a device reset): they are reached
    /// through the cacheable alias again, and the slot's pages are
    /// unmapped, from the tables and every CPU's TLB.
    pub fn forget_rings(&mut self) {
        self.uncached = RegionTable::new();
        if let Some(slot) = self.ring_slot {
            let page = chroma_core::pagetable::PAGE_SIZE;
            for i in 0..self.ring_pages {
                crate::mm::unmap_ring_alias_page(slot + i * page);
            }
        }
        self.ring_pages = 0;
    }

    /// Cache lines maintained so far.
    pub fn stats(&self) -> MaintenanceStats {
        match &self.hooks {
            Hooks::Maintain(h) => h.stats(),
            Hooks::Coherent => MaintenanceStats::default(),
        }
    }

    /// `store_u16`, inside a device-only `area` if one is named.
    fn store_u16_in(
        &self,
        gpa: GuestPhysAddr,
        value: u16,
        order: Ordering,
        area: Option<DeviceArea>,
    ) -> Result<(), MemError> {
        if !gpa.is_aligned(2) {
            return Err(MemError::Unaligned);
        }
        let access = self.locate(gpa, 2)?;
        if chroma_mem::releases(order) {
            access.before_release(2);
        }
        let area = area.map(|a| self.area(a)).transpose()?;
        access.prepare_write(2, area);
        // SAFETY: as for `load_u16`.
        unsafe { AtomicU16::from_ptr(access.raw() as *mut u16) }.store(value.to_le(), order);
        access.after_write(2);
        Ok(())
    }

    /// Whether no ring part is reached through the Non-cacheable alias:
    /// then `locate` finds every access in the cacheable alias.
    fn all_cached(&self) -> bool {
        self.uncached.iter().next().is_none()
    }

    /// A device-only area's alias address and length.
    fn area(&self, a: DeviceArea) -> Result<(HostVirtAddr, usize), MemError> {
        let va = self.translate(a.start, a.len)?;
        let len = usize::try_from(a.len).map_err(|_| MemError::Overflow)?;
        Ok((HostVirtAddr::new(va), len))
    }

    /// The alias address of `gpa..gpa+len`, if it lies inside RAM.
    fn translate(&self, gpa: GuestPhysAddr, len: u64) -> Result<u64, MemError> {
        let end = gpa.raw().checked_add(len).ok_or(MemError::Overflow)?;
        if gpa.raw() < self.ipa || end > self.ipa + self.size {
            return Err(MemError::OutOfRange {
                gpa: gpa.raw(),
                len,
            });
        }
        Ok(self.alias + (gpa.raw() - self.ipa))
    }

    /// Where to reach `gpa..gpa+len`, if it lies inside RAM: in the
    /// Non-cacheable alias when an uncached ring part holds all of it (no
    /// maintenance of the access itself then, but its ordering still counts:
    /// a Release store there publishes what the cacheable alias wrote
    /// before it, so the deferred cleans must come first), else in the
    /// cacheable alias with the hooks.
    fn locate(&self, gpa: GuestPhysAddr, len: u64) -> Result<Access<'_>, MemError> {
        let va = self.translate(gpa, len)?;
        Ok(match self.uncached.translate(gpa, len) {
            Ok((part, offset)) => {
                self.uncached_accesses
                    .set(self.uncached_accesses.get().wrapping_add(1));
                Access {
                    va: HostVirtAddr::new(part.host_virt.raw() + offset),
                    hooks: &self.hooks,
                    cached: false,
                }
            }
            // Not (wholly) inside one uncached part: the cacheable alias.
            Err(_) => Access {
                va: HostVirtAddr::new(va),
                hooks: &self.hooks,
                cached: true,
            },
        })
    }
}

/// One access's address and the hooks it takes: all of them through the
/// cacheable alias; through the Non-cacheable one only the ordering points
/// (a Release store, an Acquire load), which the merged maintenance of the
/// buffers needs (docs/caches.md, "The protocol minimum").
struct Access<'a> {
    va: HostVirtAddr,
    hooks: &'a Hooks,
    cached: bool,
}

impl Access<'_> {
    fn raw(&self) -> u64 {
        self.va.raw()
    }
    fn before_read(&self, len: usize) {
        if self.cached {
            self.hooks.before_read(self.va, len);
        }
    }
    fn before_write(&self, len: usize) {
        if self.cached {
            self.hooks.before_write(self.va, len);
        }
    }
    fn prepare_write(&self, len: usize, area: Option<(HostVirtAddr, usize)>) {
        if self.cached {
            self.hooks.prepare_write(self.va, len, area);
        }
    }
    fn after_write(&self, len: usize) {
        if self.cached {
            self.hooks.after_write(self.va, len);
        }
    }
    fn before_acquire(&self, len: usize) {
        self.hooks.before_acquire(self.va, len);
    }
    fn before_release(&self, len: usize) {
        self.hooks.before_release(self.va, len);
    }
}

impl GuestMemory for VmMemory {
    fn check_range(&self, gpa: GuestPhysAddr, len: u64) -> Result<(), MemError> {
        self.translate(gpa, len).map(|_| ())
    }

    fn read(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let access = self.locate(gpa, buf.len() as u64)?;
        access.before_read(buf.len());
        // SAFETY: 1. `va..va+len` lies in this VM's RAM alias, or in the Non-cacheable alias of an uncached ring part that holds all of it (both checked by `locate`), mapped read/write at EL2 while this `VmMemory` is borrowed (the ring alias is unmapped only through `&mut self`). 2. The guest may write these bytes concurrently: they are copied out as plain bytes and treated as untrusted, never referenced.
        unsafe {
            core::ptr::copy_nonoverlapping(access.raw() as *const u8, buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }

    fn write(&self, gpa: GuestPhysAddr, data: &[u8]) -> Result<(), MemError> {
        let access = self.locate(gpa, data.len() as u64)?;
        access.before_write(data.len());
        // SAFETY: as for `read`; the destination is guest RAM, which the hypervisor never uses for its own data.
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), access.raw() as *mut u8, data.len())
        };
        access.after_write(data.len());
        Ok(())
    }

    fn write_owned(
        &self,
        gpa: GuestPhysAddr,
        data: &[u8],
        area: DeviceArea,
    ) -> Result<(), MemError> {
        let access = self.locate(gpa, data.len() as u64)?;
        let area = self.area(area)?;
        access.prepare_write(data.len(), Some(area));
        // SAFETY: as for `write`.
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), access.raw() as *mut u8, data.len())
        };
        access.after_write(data.len());
        Ok(())
    }

    fn store_u16_owned(
        &self,
        gpa: GuestPhysAddr,
        value: u16,
        order: Ordering,
        area: DeviceArea,
    ) -> Result<(), MemError> {
        self.store_u16_in(gpa, value, order, Some(area))
    }

    fn will_write(&self, gpa: GuestPhysAddr, len: usize) {
        if let Ok(access) = self.locate(gpa, len as u64) {
            if access.cached {
                self.hooks.before_write_run(access.va, len);
            }
        }
    }

    fn end_operation(&self) {
        self.hooks.end_operation();
    }

    fn load_u16(&self, gpa: GuestPhysAddr, order: Ordering) -> Result<u16, MemError> {
        if !gpa.is_aligned(2) {
            return Err(MemError::Unaligned);
        }
        let access = self.locate(gpa, 2)?;
        if chroma_mem::acquires(order) {
            access.before_acquire(2);
        }
        access.before_read(2);
        // SAFETY: `va` is 2-aligned (gpa and either alias are page-aligned apart, `locate`), inside a mapped alias (as for `read`), and accessed only atomically here.
        let value = unsafe { AtomicU16::from_ptr(access.raw() as *mut u16) }.load(order);
        Ok(u16::from_le(value))
    }

    fn store_u16(&self, gpa: GuestPhysAddr, value: u16, order: Ordering) -> Result<(), MemError> {
        self.store_u16_in(gpa, value, order, None)
    }

    fn fence(&self, order: Ordering) {
        core::sync::atomic::fence(order);
        if order == Ordering::SeqCst {
            self.hooks.barrier();
        }
    }

    fn read_array<const N: usize>(&self, gpa: GuestPhysAddr) -> Result<[u8; N], MemError> {
        let access = self.locate(gpa, N as u64)?;
        access.before_read(N);
        // SAFETY: as for `read`: `va..va+N` is inside a mapped alias (checked by `locate`); an unaligned load of plain bytes the guest may be changing, used as untrusted data.
        Ok(unsafe { core::ptr::read_unaligned(access.raw() as *const [u8; N]) })
    }

    fn write_array<const N: usize>(
        &self,
        gpa: GuestPhysAddr,
        data: &[u8; N],
    ) -> Result<(), MemError> {
        let access = self.locate(gpa, N as u64)?;
        access.before_write(N);
        // SAFETY: as for `write`: `va..va+N` is guest RAM inside a mapped alias (checked by `locate`).
        unsafe { core::ptr::write_unaligned(access.raw() as *mut [u8; N], *data) };
        access.after_write(N);
        Ok(())
    }

    /// One range check for the buffer and the bytes read, when no ring part
    /// is reached uncached (then every access is through the cacheable
    /// alias, as `locate` would find); otherwise as separate accesses.
    fn read_in_buffer(&self, gpa: GuestPhysAddr, len: u64, buf: &mut [u8]) -> Result<(), MemError> {
        if !self.all_cached() {
            self.check_range(gpa, len)?;
            return self.read(gpa, buf);
        }
        // Both ranges start at `gpa`: the longer inside RAM means both are.
        let va = self.translate(gpa, len.max(buf.len() as u64))?;
        let access = Access {
            va: HostVirtAddr::new(va),
            hooks: &self.hooks,
            cached: true,
        };
        access.before_read(buf.len());
        // SAFETY: as for `read`: `va..va+buf.len()` lies in this VM's RAM alias (checked by `translate` above), mapped read/write at EL2 while this `VmMemory` is borrowed; the bytes are copied out as untrusted plain bytes.
        unsafe {
            core::ptr::copy_nonoverlapping(access.raw() as *const u8, buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }

    /// One range check of this memory for the buffer and the three pieces,
    /// when no ring part is reached uncached; the hooks run as the separate
    /// accesses' would (`write_in_buffer_by_parts`, the fallback).
    fn write_in_buffer<const A: usize, const B: usize, S: GuestMemory + ?Sized>(
        &self,
        gpa: GuestPhysAddr,
        len: u64,
        first: &[u8; A],
        second: &[u8; B],
        src: &S,
        src_gpa: GuestPhysAddr,
        copy_len: usize,
    ) -> Result<(), MemError> {
        if !self.all_cached() {
            return chroma_mem::write_in_buffer_by_parts(
                self, gpa, len, first, second, src, src_gpa, copy_len,
            );
        }
        let filled = (A + B).checked_add(copy_len).ok_or(MemError::Overflow)?;
        // Every piece lies in `gpa..gpa+filled`: inside RAM if the longer
        // of it and the buffer is.
        let va = self.translate(gpa, len.max(filled as u64))?;
        // `will_write` of the bytes filled, then each piece's own hooks.
        self.hooks.before_write_run(HostVirtAddr::new(va), filled);
        let piece = |offset: usize| Access {
            va: HostVirtAddr::new(va + offset as u64),
            hooks: &self.hooks,
            cached: true,
        };
        let access = piece(0);
        access.before_write(A);
        // SAFETY: as for `write`: `va..va+filled`, which holds this piece, is guest RAM inside the mapped alias (checked by `translate` above).
        unsafe { core::ptr::write_unaligned(access.raw() as *mut [u8; A], *first) };
        access.after_write(A);
        let access = piece(A);
        access.before_write(B);
        // SAFETY: as for the first piece: `va+A..va+A+B` lies in `va..va+filled`.
        unsafe { core::ptr::write_unaligned(access.raw() as *mut [u8; B], *second) };
        access.after_write(B);
        let Some(span) = src
            .read_span(src_gpa, copy_len)
            .filter(|s| s.len() == copy_len)
        else {
            let at = gpa.checked_add((A + B) as u64).ok_or(MemError::Overflow)?;
            return chroma_mem::bounce_copy(self, at, src, src_gpa, copy_len);
        };
        let access = piece(A + B);
        access.before_write(copy_len);
        // SAFETY: 1. `span` is `copy_len` readable bytes for its lifetime. 2. `va+A+B..va+filled` is this VM's RAM alias (checked by `translate` above), normal memory.
        unsafe { copy_guest_bytes(span.as_ptr(), access.raw() as *mut u8, copy_len) };
        access.after_write(copy_len);
        Ok(())
    }

    fn read_span(&self, gpa: GuestPhysAddr, len: usize) -> Option<HostSpan<'_>> {
        let access = self.locate(gpa, len as u64).ok()?;
        access.before_read(len);
        // SAFETY: 1. `va..va+len` lies in this VM's RAM alias (checked by `locate`), or the Non-cacheable alias of an uncached ring part, mapped read/write at EL2 while this `VmMemory` is borrowed (the ring alias is unmapped only through `&mut self`), which bounds the span's lifetime. 2. `AtomicU8` has size and alignment 1 and may be changed by others (the guest) at any time, so a shared slice of them over guest bytes claims nothing the guest can break.
        let bytes = unsafe { core::slice::from_raw_parts(access.raw() as *const AtomicU8, len) };
        Some(HostSpan::new(bytes))
    }

    /// One copy from the source's RAM straight into this VM's, when the
    /// source can be read in place; otherwise through a bounce buffer.
    fn copy_from<S: GuestMemory + ?Sized>(
        &self,
        gpa: GuestPhysAddr,
        src: &S,
        src_gpa: GuestPhysAddr,
        len: usize,
    ) -> Result<(), MemError> {
        let access = self.locate(gpa, len as u64)?;
        let Some(span) = src.read_span(src_gpa, len).filter(|s| s.len() == len) else {
            return chroma_mem::bounce_copy(self, gpa, src, src_gpa, len);
        };
        access.before_write(len);
        // SAFETY: 1. `span` is `len` readable bytes for its lifetime (a `HostSpan` is only made from a live slice). 2. `va..va+len` is this VM's RAM alias or an uncached ring part's alias (checked by `locate`), normal memory.
        unsafe { copy_guest_bytes(span.as_ptr(), access.raw() as *mut u8, len) };
        access.after_write(len);
        Ok(())
    }
}

/// Copies `len` guest bytes from `source` to `destination`, which may
/// overlap (two NICs of one VM). Two VMs' frames, the bulk of a switch's
/// copying, go by blocks of LDP/STP pairs where the ranges are apart: a
/// third of the instructions of the build's `memmove`, which is what a
/// frame's copy costs under an emulator. The rest, and overlapping ranges,
/// go by `copy`.
///
/// # Safety
///
/// `source..source+len` must be readable and `destination..destination+len`
/// writable normal memory for the call. The bytes are guest data, copied
/// as plain bytes and never referenced.
#[inline(always)]
unsafe fn copy_guest_bytes(source: *const u8, destination: *mut u8, len: usize) {
    #[cfg(target_arch = "aarch64")]
    let done = {
        use chroma_arch::aarch64::cpu::{copy_blocks, COPY_BLOCK};
        let (from, to) = (source as usize, destination as usize);
        let apart = from.checked_add(len).is_some_and(|end| end <= to)
            || to.checked_add(len).is_some_and(|end| end <= from);
        let blocks = if apart { len / COPY_BLOCK } else { 0 };
        // SAFETY: both ranges are valid for `len` bytes (this function's contract), `blocks * COPY_BLOCK <= len`, and they do not overlap (`apart`).
        unsafe { copy_blocks(destination, source, blocks) };
        blocks * COPY_BLOCK
    };
    #[cfg(not(target_arch = "aarch64"))]
    let done = 0;
    // SAFETY: both ranges are valid for `len` bytes (this function's contract) and `done <= len`; `copy` allows them to overlap.
    unsafe { core::ptr::copy(source.add(done), destination.add(done), len - done) };
}
