//! The hypervisor's view of a VM's RAM for the device models: every access
//! is bounds-checked against the VM's RAM, goes through the VM's colour-
//! matched alias (never the identity map, never a Rust reference into guest
//! memory), and calls the cache policy's hooks over exactly the bytes used.

use crate::arch::CacheOps;
use chroma_cache::policy::MaintenanceStats;
use chroma_cache::{MaintainHooks, Policy};
use chroma_mem::{
    CacheHooks, DeviceArea, GuestMemory, GuestPhysAddr, HostSpan, HostVirtAddr, MemError,
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

/// One VM's RAM as a device model sees it.
pub struct VmMemory {
    ipa: u64,
    size: u64,
    alias: u64,
    hooks: Hooks,
}

impl VmMemory {
    /// The RAM at `ipa..ipa+size`, reached through the alias at `alias`,
    /// with the maintenance `policy` asks for.
    pub fn new(ipa: u64, size: u64, alias: u64, policy: Policy, window: (u64, u64)) -> Self {
        let hooks = if policy.maintains() {
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
        };
        Self {
            ipa,
            size,
            alias,
            hooks,
        }
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
        let va = HostVirtAddr::new(self.translate(gpa, 2)?);
        if chroma_mem::releases(order) {
            self.hooks.before_release(va, 2);
        }
        let area = area.map(|a| self.area(a)).transpose()?;
        self.hooks.prepare_write(va, 2, area);
        // SAFETY: as for `load_u16`.
        unsafe { AtomicU16::from_ptr(va.raw() as *mut u16) }.store(value.to_le(), order);
        self.hooks.after_write(va, 2);
        Ok(())
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
}

impl GuestMemory for VmMemory {
    fn check_range(&self, gpa: GuestPhysAddr, len: u64) -> Result<(), MemError> {
        self.translate(gpa, len).map(|_| ())
    }

    fn read(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let va = self.translate(gpa, buf.len() as u64)?;
        self.hooks.before_read(HostVirtAddr::new(va), buf.len());
        // SAFETY: 1. `va..va+len` lies in this VM's RAM alias (checked by `translate`), mapped read/write at EL2 for the VM's lifetime. 2. The guest may write these bytes concurrently: they are copied out as plain bytes and treated as untrusted, never referenced.
        unsafe { core::ptr::copy_nonoverlapping(va as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    fn write(&self, gpa: GuestPhysAddr, data: &[u8]) -> Result<(), MemError> {
        let va = self.translate(gpa, data.len() as u64)?;
        self.hooks.before_write(HostVirtAddr::new(va), data.len());
        // SAFETY: as for `read`; the destination is guest RAM, which the hypervisor never uses for its own data.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), va as *mut u8, data.len()) };
        self.hooks.after_write(HostVirtAddr::new(va), data.len());
        Ok(())
    }

    fn write_owned(
        &self,
        gpa: GuestPhysAddr,
        data: &[u8],
        area: DeviceArea,
    ) -> Result<(), MemError> {
        let va = self.translate(gpa, data.len() as u64)?;
        let area = self.area(area)?;
        self.hooks
            .prepare_write(HostVirtAddr::new(va), data.len(), Some(area));
        // SAFETY: as for `write`.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), va as *mut u8, data.len()) };
        self.hooks.after_write(HostVirtAddr::new(va), data.len());
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
        if let Ok(va) = self.translate(gpa, len as u64) {
            self.hooks.before_write_run(HostVirtAddr::new(va), len);
        }
    }

    fn end_operation(&self) {
        self.hooks.end_operation();
    }

    fn load_u16(&self, gpa: GuestPhysAddr, order: Ordering) -> Result<u16, MemError> {
        if !gpa.is_aligned(2) {
            return Err(MemError::Unaligned);
        }
        let va = self.translate(gpa, 2)?;
        if chroma_mem::acquires(order) {
            self.hooks.before_acquire(HostVirtAddr::new(va), 2);
        }
        self.hooks.before_read(HostVirtAddr::new(va), 2);
        // SAFETY: `va` is 2-aligned (gpa and alias are page-aligned apart), inside the mapped alias, and accessed only atomically here.
        let value = unsafe { AtomicU16::from_ptr(va as *mut u16) }.load(order);
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
        let va = self.translate(gpa, N as u64)?;
        self.hooks.before_read(HostVirtAddr::new(va), N);
        // SAFETY: as for `read`: `va..va+N` is inside the mapped alias (checked by `translate`); an unaligned load of plain bytes the guest may be changing, used as untrusted data.
        Ok(unsafe { core::ptr::read_unaligned(va as *const [u8; N]) })
    }

    fn write_array<const N: usize>(
        &self,
        gpa: GuestPhysAddr,
        data: &[u8; N],
    ) -> Result<(), MemError> {
        let va = self.translate(gpa, N as u64)?;
        self.hooks.before_write(HostVirtAddr::new(va), N);
        // SAFETY: as for `write`: `va..va+N` is guest RAM inside the mapped alias (checked by `translate`).
        unsafe { core::ptr::write_unaligned(va as *mut [u8; N], *data) };
        self.hooks.after_write(HostVirtAddr::new(va), N);
        Ok(())
    }

    fn read_span(&self, gpa: GuestPhysAddr, len: usize) -> Option<HostSpan<'_>> {
        let va = self.translate(gpa, len as u64).ok()?;
        self.hooks.before_read(HostVirtAddr::new(va), len);
        // SAFETY: 1. `va..va+len` lies in this VM's RAM alias (checked by `translate`), mapped read/write at EL2 for as long as this `VmMemory` lives, which bounds the span's lifetime. 2. `AtomicU8` has size and alignment 1 and may be changed by others (the guest) at any time, so a shared slice of them over guest bytes claims nothing the guest can break.
        let bytes = unsafe { core::slice::from_raw_parts(va as *const AtomicU8, len) };
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
        let va = self.translate(gpa, len as u64)?;
        let Some(span) = src.read_span(src_gpa, len).filter(|s| s.len() == len) else {
            return chroma_mem::bounce_copy(self, gpa, src, src_gpa, len);
        };
        self.hooks.before_write(HostVirtAddr::new(va), len);
        // SAFETY: 1. `span` is `len` readable bytes for its lifetime (a `HostSpan` is only made from a live slice). 2. `va..va+len` is this VM's RAM alias (checked by `translate`). 3. The two may overlap (two NICs of one VM): `copy` allows it. The bytes are guest data, copied as plain bytes and never referenced.
        unsafe { core::ptr::copy(span.as_ptr(), va as *mut u8, len) };
        self.hooks.after_write(HostVirtAddr::new(va), len);
        Ok(())
    }
}
