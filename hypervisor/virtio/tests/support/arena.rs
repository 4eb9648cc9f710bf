//! Simulated guest RAM for host tests: a raw host allocation that both a
//! driver (through raw pointers, as `virtio-drivers` wants) and the device
//! (through `GuestMemory`) reach, and a `virtio-drivers` `Hal` over it.
#![allow(dead_code, unsafe_code, clippy::cast_possible_truncation)]

use std::alloc::{alloc_zeroed, Layout};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU16, AtomicU8, Ordering};

use chroma_mem::{GuestMemory, GuestPhysAddr, HostSpan, MemError};

/// Guest-physical base of the arena.
pub const ARENA_BASE: u64 = 0x4000_0000;
/// Bytes of the arena (per test thread).
pub const ARENA_SIZE: usize = 16 << 20;
const PAGE: usize = 4096;

/// A guest RAM region: `len` bytes at host `ptr`, guest address `base`.
#[derive(Clone, Copy, Debug)]
pub struct RawMemory {
    ptr: *mut u8,
    len: usize,
    base: u64,
}

impl RawMemory {
    /// A fresh zeroed region of `len` bytes at guest address `base`; leaked.
    pub fn new(base: u64, len: usize) -> Self {
        // SAFETY: the layout has a nonzero size.
        let ptr = unsafe { alloc_zeroed(Layout::from_size_align(len, PAGE).unwrap()) };
        assert!(!ptr.is_null());
        Self { ptr, len, base }
    }

    /// Guest RAM at `base` over `len` bytes the caller already owns at `ptr`
    /// (for the benchmark, which shares vm-memory's mapping).
    ///
    /// # Safety
    ///
    /// `ptr..ptr+len` must stay valid for reads and writes while in use.
    pub unsafe fn from_raw(ptr: *mut u8, len: usize, base: u64) -> Self {
        Self { ptr, len, base }
    }

    /// Host pointer for `gpa`.
    pub fn host(&self, gpa: u64) -> *mut u8 {
        assert!(gpa >= self.base && gpa < self.base + self.len as u64);
        // SAFETY: in bounds, checked above.
        unsafe { self.ptr.add((gpa - self.base) as usize) }
    }

    /// Guest base address.
    pub fn base(&self) -> u64 {
        self.base
    }

    fn offset(&self, gpa: GuestPhysAddr, len: u64) -> Result<usize, MemError> {
        let end = gpa.raw().checked_add(len).ok_or(MemError::Overflow)?;
        if gpa.raw() < self.base || end > self.base + self.len as u64 {
            return Err(MemError::OutOfRange {
                gpa: gpa.raw(),
                len,
            });
        }
        Ok((gpa.raw() - self.base) as usize)
    }
}

impl GuestMemory for RawMemory {
    fn check_range(&self, gpa: GuestPhysAddr, len: u64) -> Result<(), MemError> {
        self.offset(gpa, len).map(|_| ())
    }
    fn read(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let off = self.offset(gpa, buf.len() as u64)?;
        // SAFETY: `off..off+len` is inside the allocation; `buf` is host memory that cannot overlap the arena.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(off), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
    fn write(&self, gpa: GuestPhysAddr, data: &[u8]) -> Result<(), MemError> {
        let off = self.offset(gpa, data.len() as u64)?;
        // SAFETY: as in `read`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(off), data.len()) };
        Ok(())
    }
    fn load_u16(&self, gpa: GuestPhysAddr, order: Ordering) -> Result<u16, MemError> {
        if !gpa.is_aligned(2) {
            return Err(MemError::Unaligned);
        }
        let off = self.offset(gpa, 2)?;
        // SAFETY: in bounds and 2-aligned (the allocation is page aligned).
        Ok(u16::from_le(
            unsafe { AtomicU16::from_ptr(self.ptr.add(off).cast()) }.load(order),
        ))
    }
    fn store_u16(&self, gpa: GuestPhysAddr, value: u16, order: Ordering) -> Result<(), MemError> {
        if !gpa.is_aligned(2) {
            return Err(MemError::Unaligned);
        }
        let off = self.offset(gpa, 2)?;
        // SAFETY: as in `load_u16`.
        unsafe { AtomicU16::from_ptr(self.ptr.add(off).cast()) }.store(value.to_le(), order);
        Ok(())
    }
    fn fence(&self, order: Ordering) {
        std::sync::atomic::fence(order);
    }
    fn read_array<const N: usize>(&self, gpa: GuestPhysAddr) -> Result<[u8; N], MemError> {
        let off = self.offset(gpa, N as u64)?;
        // SAFETY: `off..off+N` is inside the allocation.
        Ok(unsafe { std::ptr::read_unaligned(self.ptr.add(off).cast::<[u8; N]>()) })
    }
    fn write_array<const N: usize>(
        &self,
        gpa: GuestPhysAddr,
        data: &[u8; N],
    ) -> Result<(), MemError> {
        let off = self.offset(gpa, N as u64)?;
        // SAFETY: `off..off+N` is inside the allocation.
        unsafe { std::ptr::write_unaligned(self.ptr.add(off).cast::<[u8; N]>(), *data) };
        Ok(())
    }
    fn read_in_buffer(&self, gpa: GuestPhysAddr, len: u64, buf: &mut [u8]) -> Result<(), MemError> {
        // Both ranges start at `gpa`: the longer inside means both are.
        let off = self.offset(gpa, len.max(buf.len() as u64))?;
        // SAFETY: `off..off+buf.len()` is inside the allocation (checked above); `buf` is host memory that cannot overlap the arena.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(off), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
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
        let filled = (A + B).checked_add(copy_len).ok_or(MemError::Overflow)?;
        // Every piece starts at or after `gpa` and ends by `gpa + filled`.
        let off = self.offset(gpa, len.max(filled as u64))?;
        // SAFETY: `off..off+filled` is inside the allocation (checked above), and the parts are host memory.
        unsafe {
            std::ptr::write_unaligned(self.ptr.add(off).cast::<[u8; A]>(), *first);
            std::ptr::write_unaligned(self.ptr.add(off + A).cast::<[u8; B]>(), *second);
        }
        let copy_off = off + A + B;
        let Some(span) = src
            .read_span(src_gpa, copy_len)
            .filter(|s| s.len() == copy_len)
        else {
            let at = GuestPhysAddr::new(gpa.raw() + (A + B) as u64);
            return chroma_mem::bounce_copy(self, at, src, src_gpa, copy_len);
        };
        // SAFETY: `span` is `copy_len` readable bytes; `copy_off..copy_off+copy_len` is inside the allocation (checked above); `copy` allows overlap.
        unsafe { std::ptr::copy(span.as_ptr(), self.ptr.add(copy_off), copy_len) };
        Ok(())
    }
    fn read_span(&self, gpa: GuestPhysAddr, len: usize) -> Option<HostSpan<'_>> {
        let off = self.offset(gpa, len as u64).ok()?;
        let start = self.ptr.wrapping_add(off).cast::<AtomicU8>();
        // SAFETY: `off..off+len` is inside the allocation, which lives as long as the arena (leaked); `AtomicU8` has size and alignment 1 and tolerates others writing.
        let bytes = unsafe { std::slice::from_raw_parts(start, len) };
        Some(HostSpan::new(bytes))
    }
    fn copy_from<S: GuestMemory + ?Sized>(
        &self,
        gpa: GuestPhysAddr,
        src: &S,
        src_gpa: GuestPhysAddr,
        len: usize,
    ) -> Result<(), MemError> {
        let off = self.offset(gpa, len as u64)?;
        let Some(span) = src.read_span(src_gpa, len).filter(|s| s.len() == len) else {
            return chroma_mem::bounce_copy(self, gpa, src, src_gpa, len);
        };
        // SAFETY: `span` is `len` readable bytes; `off..off+len` is inside the allocation; `copy` allows overlap.
        unsafe { std::ptr::copy(span.as_ptr(), self.ptr.add(off), len) };
        Ok(())
    }
}

/// A first-fit page allocator over one thread's arena.
struct Arena {
    mem: RawMemory,
    free: Vec<(usize, usize)>,
}

thread_local! {
    static ARENA: RefCell<Option<Arena>> = const { RefCell::new(None) };
}

/// This thread's arena as guest memory (created on first use).
pub fn arena_memory() -> RawMemory {
    ARENA.with(|a| {
        a.borrow_mut()
            .get_or_insert_with(|| Arena {
                mem: RawMemory::new(ARENA_BASE, ARENA_SIZE),
                free: vec![(0, ARENA_SIZE / PAGE)],
            })
            .mem
    })
}

/// Allocates `pages` zeroed pages; returns (guest address, host pointer).
pub fn arena_alloc(pages: usize) -> (u64, *mut u8) {
    let mem = arena_memory();
    ARENA.with(|a| {
        let mut a = a.borrow_mut();
        let a = a.as_mut().unwrap();
        let i = a
            .free
            .iter()
            .position(|&(_, n)| n >= pages)
            .expect("arena exhausted");
        let (start, n) = a.free[i];
        if n == pages {
            a.free.remove(i);
        } else {
            a.free[i] = (start + pages, n - pages);
        }
        let gpa = mem.base() + (start * PAGE) as u64;
        let host = mem.host(gpa);
        // SAFETY: the pages are inside the arena and now owned by the caller.
        unsafe { std::ptr::write_bytes(host, 0, pages * PAGE) };
        (gpa, host)
    })
}

/// Frees pages from [`arena_alloc`].
pub fn arena_free(gpa: u64, pages: usize) {
    ARENA.with(|a| {
        let mut a = a.borrow_mut();
        let a = a.as_mut().unwrap();
        let start = ((gpa - a.mem.base()) as usize) / PAGE;
        a.free.push((start, pages));
        a.free.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(a.free.len());
        for &(s, n) in &a.free {
            match merged.last_mut() {
                Some((ms, mn)) if *ms + *mn == s => *mn += n,
                _ => merged.push((s, n)),
            }
        }
        a.free = merged;
    })
}
