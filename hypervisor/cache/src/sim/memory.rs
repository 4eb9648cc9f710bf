//! [`GuestMemory`] over the simulator: the hypervisor's side of guest RAM.
//!
//! This is what the real virtio backend runs against in the oracle. It does
//! what the hypervisor's implementation does: range-check the guest-physical
//! range, translate it to the hypervisor's (coloured) alias, call the cache
//! policy's hooks over exactly the bytes touched, and access the bytes. It
//! also records which lines each access touched, so the oracle can compare
//! the lines maintained with the lines the ring protocol used.

use core::cell::{Cell, RefCell};
use core::sync::atomic::Ordering;
use std::collections::{HashMap, HashSet};
use std::vec::Vec;

use chroma_mem::{CacheHooks, DeviceArea, GuestMemory, GuestPhysAddr, HostVirtAddr, MemError};

use super::machine::{Machine, SimCacheOps, View};
use crate::ops::CacheOps;
use crate::policy::MaintainHooks;

/// The hypervisor's view of one VM's RAM in the simulator.
pub struct HypMemory<'m> {
    machine: &'m RefCell<Machine>,
    view: View,
    gpa_base: u64,
    hooks: MaintainHooks<SimCacheOps<'m>>,
    /// Whether to call `before_write` (the proposed hook) before writes
    /// (off only in the oracle's negative control).
    pub prepare_writes: bool,
    /// Whether the end of an operation reaches the hooks (off only in the
    /// oracle's negative control).
    pub pass_operation_end: bool,
    /// Guest-physical ranges the hypervisor reaches through a Non-cacheable
    /// alias (a packed ring under a maintaining policy): accesses go
    /// straight to memory, with no hooks and nothing to count.
    pub uncached: Vec<(u64, u64)>,
    /// Whether a Release store through the Non-cacheable alias still
    /// reaches the hooks' `before_release` (off only in the oracle's
    /// negative control).
    pub release_uncached: bool,
    /// Called after every access: the oracle's driver may take a step
    /// between two accesses of one backend operation.
    pub interleave: Option<std::boxed::Box<dyn Fn() + 'm>>,
    lines_read: RefCell<HashSet<u64>>,
    /// Per line written in this operation, the bytes written (bit per byte).
    lines_written: RefCell<HashMap<u64, u64>>,
    /// Lines of `lines_written` that were read earlier in the same stretch
    /// between full barriers: that read made them fresh, so they need no
    /// preparation of their own.
    fresh_when_written: RefCell<HashSet<u64>>,
    touched_read: Cell<u64>,
    touched_written: Cell<u64>,
    touched_prepared: Cell<u64>,
    /// VA ranges only the device writes (the used rings), as the oracle
    /// knows them from the driver's layout, independently of the hints
    /// the backend gives the hooks.
    device_only: Vec<(u64, u64)>,
}

impl<'m> HypMemory<'m> {
    /// Guest RAM at `gpa_base`, seen by the hypervisor through `view`, with `hooks`.
    pub fn new(
        machine: &'m RefCell<Machine>,
        view: View,
        gpa_base: u64,
        hooks: MaintainHooks<SimCacheOps<'m>>,
    ) -> Self {
        Self {
            machine,
            view,
            gpa_base,
            hooks,
            prepare_writes: true,
            pass_operation_end: true,
            uncached: Vec::new(),
            release_uncached: true,
            interleave: None,
            lines_read: RefCell::new(HashSet::new()),
            lines_written: RefCell::new(HashMap::new()),
            fresh_when_written: RefCell::new(HashSet::new()),
            touched_read: Cell::new(0),
            touched_written: Cell::new(0),
            touched_prepared: Cell::new(0),
            device_only: Vec::new(),
        }
    }

    /// Declares `gpa..gpa+len` written only by the device (a used ring),
    /// for the minimum's count of lines that need preparing.
    pub fn add_device_only(&mut self, gpa: u64, len: u64) {
        let va = self.view.va_base + (gpa - self.gpa_base);
        self.device_only.push((va, va + len));
    }

    /// The hooks (for their counters).
    pub fn hooks(&self) -> &MaintainHooks<SimCacheOps<'m>> {
        &self.hooks
    }

    /// A full barrier: lines read before it must be read afresh after it
    /// (that is what the barrier is for), so the distinct lines read so
    /// far go to the running minimum.
    fn end_read_epoch(&self) {
        let read = self.lines_read.borrow().len() as u64;
        self.touched_read.set(self.touched_read.get() + read);
        self.lines_read.borrow_mut().clear();
    }

    /// Ends one backend operation for the minimum: adds the distinct lines
    /// read since the last full barrier, the distinct lines written, and
    /// the lines written only in part whose other bytes are not all the
    /// device's own (they must be made fresh before the write), and clears
    /// the sets.
    fn end_minimum_operation(&self) {
        self.end_read_epoch();
        let line = self.machine.borrow().geometry().line as u64;
        let full = if line == 64 {
            u64::MAX
        } else {
            (1u64 << line) - 1
        };
        let mut written = self.lines_written.borrow_mut();
        let mut fresh = self.fresh_when_written.borrow_mut();
        let prepared = written
            .iter()
            .filter(|&(&at, &mask)| {
                mask != full
                    && !fresh.contains(&at)
                    && (0..line).any(|b| {
                        mask & (1 << b) == 0
                            && !self
                                .device_only
                                .iter()
                                .any(|&(s, e)| s <= at + b && at + b < e)
                    })
            })
            .count() as u64;
        self.touched_written
            .set(self.touched_written.get() + written.len() as u64);
        self.touched_prepared
            .set(self.touched_prepared.get() + prepared);
        written.clear();
        fresh.clear();
    }

    /// Sums over backend operations of `(distinct lines read, distinct
    /// lines written, lines that needed preparing)`: the protocol minimum.
    pub fn lines_touched(&self) -> (u64, u64, u64) {
        (
            self.touched_read.get(),
            self.touched_written.get(),
            self.touched_prepared.get(),
        )
    }

    fn translate(&self, gpa: GuestPhysAddr, len: usize) -> Result<u64, MemError> {
        let len64 = u64::try_from(len).map_err(|_| MemError::Overflow)?;
        let end = gpa.checked_add(len64).ok_or(MemError::Overflow)?;
        match (
            gpa.checked_offset_from(GuestPhysAddr::new(self.gpa_base)),
            end.checked_offset_from(GuestPhysAddr::new(self.gpa_base)),
        ) {
            (Some(off), Some(end_off)) if end_off <= self.view.size => Ok(self.view.va_base + off),
            _ => Err(MemError::OutOfRange {
                gpa: gpa.raw(),
                len: len64,
            }),
        }
    }

    /// The Non-cacheable view, if `gpa..gpa+len` lies in an uncached range.
    fn uncached_view(&self, gpa: GuestPhysAddr, len: usize) -> Option<View> {
        let (start, end) = (gpa.raw(), gpa.raw() + len as u64);
        self.uncached
            .iter()
            .any(|&(s, e)| s <= start && end <= e)
            .then_some(View {
                cached: false,
                ..self.view
            })
    }

    fn step(&self) {
        if let Some(f) = &self.interleave {
            f();
        }
    }

    fn note_read(&self, va: u64, len: usize) {
        let line = self.machine.borrow().geometry().line as u64;
        let mut set = self.lines_read.borrow_mut();
        let mut at = va & !(line - 1);
        while at < va + len as u64 {
            set.insert(at);
            at += line;
        }
    }

    fn note_write(&self, va: u64, len: usize) {
        let line = self.machine.borrow().geometry().line as u64;
        let mut map = self.lines_written.borrow_mut();
        let read = self.lines_read.borrow();
        for b in va..va + len as u64 {
            let at = b & !(line - 1);
            if !map.contains_key(&at) && read.contains(&at) {
                self.fresh_when_written.borrow_mut().insert(at);
            }
            *map.entry(at).or_insert(0) |= 1 << (b & (line - 1));
        }
    }

    fn write_with(
        &self,
        gpa: GuestPhysAddr,
        data: &[u8],
        area: Option<DeviceArea>,
    ) -> Result<(), MemError> {
        let va = self.translate(gpa, data.len())?;
        if let Some(view) = self.uncached_view(gpa, data.len()) {
            self.machine.borrow_mut().write(&view, va, data);
            self.step();
            return Ok(());
        }
        self.note_write(va, data.len());
        if self.prepare_writes {
            let area = match area {
                Some(a) => {
                    let len = usize::try_from(a.len).map_err(|_| MemError::Overflow)?;
                    Some((HostVirtAddr::new(self.translate(a.start, len)?), len))
                }
                None => None,
            };
            self.hooks
                .prepare_write(HostVirtAddr::new(va), data.len(), area);
        }
        self.machine.borrow_mut().write(&self.view, va, data);
        self.hooks.after_write(HostVirtAddr::new(va), data.len());
        self.step();
        Ok(())
    }

    fn store_with(
        &self,
        gpa: GuestPhysAddr,
        value: u16,
        order: Ordering,
        area: Option<DeviceArea>,
    ) -> Result<(), MemError> {
        if !gpa.is_aligned(2) {
            return Err(MemError::Unaligned);
        }
        let uncached = self.uncached_view(gpa, 2).is_some();
        if chroma_mem::releases(order) && (self.release_uncached || !uncached) {
            let va = self.translate(gpa, 2)?;
            self.hooks.before_release(HostVirtAddr::new(va), 2);
        }
        self.write_with(gpa, &value.to_le_bytes(), area)
    }
}

impl GuestMemory for HypMemory<'_> {
    fn check_range(&self, gpa: GuestPhysAddr, len: u64) -> Result<(), MemError> {
        self.translate(gpa, usize::try_from(len).map_err(|_| MemError::Overflow)?)
            .map(|_| ())
    }

    fn read(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let va = self.translate(gpa, buf.len())?;
        if let Some(view) = self.uncached_view(gpa, buf.len()) {
            self.machine.borrow_mut().read(&view, va, buf);
        } else {
            self.note_read(va, buf.len());
            self.hooks.before_read(HostVirtAddr::new(va), buf.len());
            self.machine.borrow_mut().read(&self.view, va, buf);
        }
        self.step();
        Ok(())
    }

    fn write(&self, gpa: GuestPhysAddr, data: &[u8]) -> Result<(), MemError> {
        self.write_with(gpa, data, None)
    }

    fn write_owned(
        &self,
        gpa: GuestPhysAddr,
        data: &[u8],
        area: DeviceArea,
    ) -> Result<(), MemError> {
        self.write_with(gpa, data, Some(area))
    }

    fn load_u16(&self, gpa: GuestPhysAddr, order: Ordering) -> Result<u16, MemError> {
        if !gpa.is_aligned(2) {
            return Err(MemError::Unaligned);
        }
        if chroma_mem::acquires(order) {
            let va = self.translate(gpa, 2)?;
            self.hooks.before_acquire(HostVirtAddr::new(va), 2);
        }
        let mut b = [0; 2];
        self.read(gpa, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    fn store_u16(&self, gpa: GuestPhysAddr, value: u16, order: Ordering) -> Result<(), MemError> {
        self.store_with(gpa, value, order, None)
    }

    fn store_u16_owned(
        &self,
        gpa: GuestPhysAddr,
        value: u16,
        order: Ordering,
        area: DeviceArea,
    ) -> Result<(), MemError> {
        self.store_with(gpa, value, order, Some(area))
    }

    fn fence(&self, order: Ordering) {
        // Sequential simulation: program order is the only order.
        self.hooks.ops().dmb();
        if order == Ordering::SeqCst {
            self.end_read_epoch();
            self.hooks.barrier();
        }
    }

    fn will_write(&self, gpa: GuestPhysAddr, len: usize) {
        if !self.prepare_writes || self.uncached_view(gpa, len).is_some() {
            return;
        }
        if let Ok(va) = self.translate(gpa, len) {
            self.hooks.before_write_run(HostVirtAddr::new(va), len);
        }
    }

    fn end_operation(&self) {
        self.end_minimum_operation();
        if self.pass_operation_end {
            self.hooks.end_operation();
        }
    }
}

/// The guest driver's side: the same RAM through the guest's view, with
/// the guest's own maintenance when its device is declared non-coherent
/// (Linux's DMA API: clean before the device reads, invalidate before the
/// CPU reads what the device wrote).
pub struct GuestAccess<'m> {
    machine: &'m RefCell<Machine>,
    /// The guest's view of its RAM.
    pub view: View,
    gpa_base: u64,
    hooks: MaintainHooks<SimCacheOps<'m>>,
    /// RAM offsets below this are mapped Non-cacheable (the rings of a
    /// guest with mismatched attributes); 0 for none.
    uncached_below: u64,
}

impl<'m> GuestAccess<'m> {
    /// Guest RAM at `gpa_base` through `view`; `hooks` is the guest's
    /// maintenance; offsets below `uncached_below` bypass the cache.
    pub fn new(
        machine: &'m RefCell<Machine>,
        view: View,
        gpa_base: u64,
        hooks: MaintainHooks<SimCacheOps<'m>>,
        uncached_below: u64,
    ) -> Self {
        Self {
            machine,
            view,
            gpa_base,
            hooks,
            uncached_below,
        }
    }

    fn view_for(&self, gpa: u64) -> View {
        if gpa - self.gpa_base < self.uncached_below {
            View {
                cached: false,
                ..self.view
            }
        } else {
            self.view
        }
    }

    fn va(&self, gpa: u64) -> u64 {
        self.view.va_base + (gpa - self.gpa_base)
    }

    /// Reads guest RAM at `gpa`.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) {
        let va = self.va(gpa);
        self.hooks.before_read(HostVirtAddr::new(va), buf.len());
        self.machine.borrow_mut().read(&self.view_for(gpa), va, buf);
    }

    /// Writes guest RAM at `gpa`.
    pub fn write(&self, gpa: u64, data: &[u8]) {
        let va = self.va(gpa);
        self.hooks.before_write(HostVirtAddr::new(va), data.len());
        self.machine
            .borrow_mut()
            .write(&self.view_for(gpa), va, data);
        self.hooks.after_write(HostVirtAddr::new(va), data.len());
    }

    /// Reads a little-endian u16.
    pub fn read_u16(&self, gpa: u64) -> u16 {
        let mut b = [0; 2];
        self.read(gpa, &mut b);
        u16::from_le_bytes(b)
    }

    /// Writes a little-endian u16.
    pub fn write_u16(&self, gpa: u64, value: u16) {
        self.write(gpa, &value.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use crate::sim::machine::{SimGeometry, SimIndexing};

    const VIEW: View = View {
        va_base: 0x8000_0000,
        pa_base: 0,
        size: 0x4000,
        cached: true,
    };

    fn memory(machine: &RefCell<Machine>, policy: Policy) -> HypMemory<'_> {
        let hooks = MaintainHooks::new(
            SimCacheOps::new(machine, VIEW),
            policy,
            HostVirtAddr::new(VIEW.va_base),
            VIEW.size,
        );
        HypMemory::new(machine, VIEW, 0x4000_0000, hooks)
    }

    // The hooks maintain exactly the lines an access covers: 100 bytes at
    // offset 60 with 64-byte lines cover lines 0, 64 and 128.
    #[test]
    fn maintains_exactly_the_lines_touched() {
        let machine = RefCell::new(Machine::new(
            SimGeometry::with_colours(SimIndexing::Pipt, 64, 1, 4),
            0x4000,
        ));
        let m = memory(&machine, Policy::Maintain);
        let mut buf = [0u8; 100];
        m.read(GuestPhysAddr::new(0x4000_0000 + 60), &mut buf)
            .unwrap();
        assert_eq!(m.hooks().stats().lines_invalidated, 3);
        m.write(GuestPhysAddr::new(0x4000_0000 + 60), &buf).unwrap();
        let stats = m.hooks().stats();
        // Cleaned: all three; prepared: the partial first and last lines only.
        assert_eq!((stats.lines_cleaned, stats.lines_prepared), (3, 2));
        // A whole-line write needs no preparation.
        m.write(GuestPhysAddr::new(0x4000_0000 + 256), &[1u8; 128])
            .unwrap();
        assert_eq!(m.hooks().stats().lines_prepared, 2);
        m.end_operation();
        // Read 3; wrote 5; lines 0 and 128 are written only in part, but
        // the read made them fresh just before: nothing else to prepare.
        assert_eq!(m.lines_touched(), (3, 5, 0));
        // Without the read, they need preparing.
        m.write(GuestPhysAddr::new(0x4000_0000 + 60), &buf).unwrap();
        m.end_operation();
        assert_eq!(m.lines_touched(), (3, 8, 2));
    }

    #[test]
    fn nothing_policy_maintains_nothing_and_ranges_are_checked() {
        let machine = RefCell::new(Machine::new(
            SimGeometry::with_colours(SimIndexing::Pipt, 64, 1, 4),
            0x4000,
        ));
        let m = memory(&machine, Policy::Nothing);
        m.write(GuestPhysAddr::new(0x4000_0010), &[1, 2]).unwrap();
        assert_eq!(m.hooks().stats().total(), 0);
        assert!(m
            .read(GuestPhysAddr::new(0x4000_3fff), &mut [0u8; 2])
            .is_err());
        assert!(m
            .read(GuestPhysAddr::new(0x3fff_ffff), &mut [0u8; 1])
            .is_err());
        assert_eq!(
            m.load_u16(GuestPhysAddr::new(0x4000_0011), Ordering::Relaxed),
            Err(MemError::Unaligned)
        );
        assert_eq!(
            m.load_u16(GuestPhysAddr::new(0x4000_0010), Ordering::Relaxed),
            Ok(0x0201)
        );
    }
}
