//! Guest memory interface shared by the device models and the cache layer.
//!
//! The backend never holds a Rust reference into guest memory (the guest may
//! change it at any time). Every access names a guest-physical range, is
//! checked against the VM's regions, and goes through [`GuestMemory`], whose
//! implementations call the cache policy's hooks on exactly the bytes touched.
#![cfg_attr(not(any(test, feature = "test-utils")), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// No panic on a path a guest can reach (issue 10); tests may unwrap (clippy.toml).
// Where `clippy::indexing_slicing` is denied, and why: "Panics" in chroma-core's docs.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

use core::fmt;
use core::sync::atomic::Ordering;

mod addr;
mod regions;
#[cfg(any(test, feature = "test-utils"))]
pub mod vecmem;

pub use addr::{GuestPhysAddr, HostPhysAddr, HostVirtAddr};
pub use regions::{Region, RegionTable, MAX_REGIONS};

/// Why a guest memory access was refused.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemError {
    /// The range is not inside one region of this VM's memory.
    OutOfRange {
        /// First guest-physical byte of the refused range.
        gpa: u64,
        /// Length of the refused range.
        len: u64,
    },
    /// The range wraps around the end of the address space.
    Overflow,
    /// The access is not aligned to its width.
    Unaligned,
    /// The region table is full.
    TooManyRegions,
    /// A region overlaps one already in the table.
    Overlap,
}

impl fmt::Display for MemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemError::OutOfRange { gpa, len } => {
                write!(f, "guest range {gpa:#x}+{len:#x} is outside guest RAM")
            }
            MemError::Overflow => f.write_str("guest range wraps the address space"),
            MemError::Unaligned => f.write_str("unaligned guest access"),
            MemError::TooManyRegions => f.write_str("too many guest memory regions"),
            MemError::Overlap => f.write_str("guest memory regions overlap"),
        }
    }
}

/// Bounds-checked access to one VM's memory.
///
/// Implementations check every `(gpa, len)` against the VM's regions with
/// overflow checks and call the cache policy's `before_read` / `after_write`
/// hooks over exactly the bytes touched.
pub trait GuestMemory {
    /// Checks that `gpa..gpa+len` lies inside one region of guest RAM.
    fn check_range(&self, gpa: GuestPhysAddr, len: u64) -> Result<(), MemError>;
    /// Copies guest bytes at `gpa` into `buf`.
    fn read(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), MemError>;
    /// Copies `data` into guest memory at `gpa`.
    fn write(&self, gpa: GuestPhysAddr, data: &[u8]) -> Result<(), MemError>;
    /// Atomically loads a little-endian `u16` (must be 2-aligned).
    fn load_u16(&self, gpa: GuestPhysAddr, order: Ordering) -> Result<u16, MemError>;
    /// Atomically stores a little-endian `u16` (must be 2-aligned).
    fn store_u16(&self, gpa: GuestPhysAddr, value: u16, order: Ordering) -> Result<(), MemError>;
    /// Issues a full memory barrier between the device and the driver.
    fn fence(&self, order: Ordering);

    /// Writes `data` at `gpa`, inside `area`, an area of guest memory that
    /// only the device writes (the split ring's used ring). The same as
    /// [`GuestMemory::write`], except that the cache hooks may skip preparing
    /// a partly written line whose other bytes also lie in `area`: no other
    /// agent wrote them, so the device's cached copy of them cannot be stale.
    /// Buffer data is never written this way (a buffer may share a line
    /// with bytes the driver writes).
    fn write_owned(
        &self,
        gpa: GuestPhysAddr,
        data: &[u8],
        area: DeviceArea,
    ) -> Result<(), MemError> {
        let _ = area;
        self.write(gpa, data)
    }

    /// [`GuestMemory::store_u16`] inside `area`, an area only the device
    /// writes (see [`GuestMemory::write_owned`]).
    fn store_u16_owned(
        &self,
        gpa: GuestPhysAddr,
        value: u16,
        order: Ordering,
        area: DeviceArea,
    ) -> Result<(), MemError> {
        let _ = area;
        self.store_u16(gpa, value, order)
    }

    /// Says that the device is about to write all of `gpa..gpa+len`
    /// within this operation, in one or more writes (a virtio-net header,
    /// then the Ethernet header, then the frame): the cache hooks may
    /// prepare the range's partial first and last lines once, instead of
    /// each piece's ([`CacheHooks::before_write_run`]). Nothing by default.
    fn will_write(&self, gpa: GuestPhysAddr, len: usize) {
        let _ = (gpa, len);
    }

    /// Ends one backend operation (the device model lets go of this
    /// memory until the next notification or poll): every write still
    /// waiting for its cache maintenance is made visible to the guest, and
    /// lines read before are read afresh next time
    /// ([`CacheHooks::end_operation`]). Nothing by default.
    fn end_operation(&self) {}

    /// Reads `N` bytes at `gpa` (a descriptor, a header): the same as
    /// [`GuestMemory::read`] into an array, which an implementation may do
    /// with a fixed-size load instead of a copy loop.
    fn read_array<const N: usize>(&self, gpa: GuestPhysAddr) -> Result<[u8; N], MemError>
    where
        Self: Sized,
    {
        let mut bytes = [0u8; N];
        self.read(gpa, &mut bytes)?;
        Ok(bytes)
    }

    /// Writes `N` bytes at `gpa` (a used element, a header): the same as
    /// [`GuestMemory::write`].
    fn write_array<const N: usize>(
        &self,
        gpa: GuestPhysAddr,
        data: &[u8; N],
    ) -> Result<(), MemError>
    where
        Self: Sized,
    {
        self.write(gpa, data)
    }

    /// Reads `buf.len()` bytes at `gpa`, the start of a buffer
    /// `gpa..gpa+len` that must lie in guest RAM as a whole (a descriptor's
    /// buffer, of which the device reads the first bytes now): the same as
    /// [`GuestMemory::check_range`] of the buffer, then
    /// [`GuestMemory::read`], with the same hooks, which an implementation
    /// may do with one range check.
    fn read_in_buffer(&self, gpa: GuestPhysAddr, len: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.check_range(gpa, len)?;
        self.read(gpa, buf)
    }

    /// Fills the start of a buffer `gpa..gpa+len` that must lie in guest
    /// RAM as a whole (a receive buffer): `first`, then `second`, then
    /// `copy_len` bytes copied from `src` at `src_gpa` (a virtio-net
    /// header, an Ethernet header, the rest of the frame). The same as
    /// [`write_in_buffer_by_parts`] (a range check of the buffer,
    /// [`GuestMemory::will_write`] of the bytes filled, a
    /// [`GuestMemory::write_array`] per part, a [`GuestMemory::copy_from`]),
    /// with the same hooks on the same bytes, which an implementation may
    /// do with one range check of this memory.
    #[allow(clippy::too_many_arguments)] // the buffer, two parts, the source
    fn write_in_buffer<const A: usize, const B: usize, S: GuestMemory + ?Sized>(
        &self,
        gpa: GuestPhysAddr,
        len: u64,
        first: &[u8; A],
        second: &[u8; B],
        src: &S,
        src_gpa: GuestPhysAddr,
        copy_len: usize,
    ) -> Result<(), MemError>
    where
        Self: Sized,
    {
        write_in_buffer_by_parts(self, gpa, len, first, second, src, src_gpa, copy_len)
    }

    /// Makes `gpa..gpa+len` ready to be read in place (runs the cache
    /// policy's `before_read` hook over exactly those bytes) and returns
    /// them, for a copy that reads them at once. `None` (the default) if
    /// this memory cannot be read in place: a copy then goes through
    /// [`GuestMemory::read`].
    fn read_span(&self, _gpa: GuestPhysAddr, _len: usize) -> Option<HostSpan<'_>> {
        None
    }

    /// Copies `len` bytes from `src` at `src_gpa` into this memory at `gpa`
    /// (another VM's memory, or this one). Both ranges are checked; the
    /// source's read hooks run on exactly the bytes read, this memory's
    /// write hooks on exactly the bytes written. The default goes through a
    /// small stack buffer ([`bounce_copy`]); a memory that can reach the
    /// source in place ([`GuestMemory::read_span`]) copies once.
    fn copy_from<S: GuestMemory + ?Sized>(
        &self,
        gpa: GuestPhysAddr,
        src: &S,
        src_gpa: GuestPhysAddr,
        len: usize,
    ) -> Result<(), MemError>
    where
        Self: Sized,
    {
        bounce_copy(self, gpa, src, src_gpa, len)
    }
}

/// Bytes of another memory that can be read in place, as
/// [`GuestMemory::read_span`] returns them. It can only be made from a
/// slice of atomic bytes that lives for `'a`, so safe code cannot forge one
/// that points anywhere else: a holder may copy `len()` bytes from
/// `as_ptr()` while the span lives. The bytes may change under the reader
/// (the guest owns them): read them as untrusted plain bytes, never keep a
/// reference to them.
#[derive(Clone, Copy, Debug)]
pub struct HostSpan<'a> {
    bytes: &'a [core::sync::atomic::AtomicU8],
}

impl<'a> HostSpan<'a> {
    /// The span over `bytes`.
    pub fn new(bytes: &'a [core::sync::atomic::AtomicU8]) -> Self {
        Self { bytes }
    }

    /// First byte of the span.
    pub fn as_ptr(&self) -> *const u8 {
        self.bytes.as_ptr().cast()
    }

    /// Length of the span in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the span is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Chunk of [`bounce_copy`]'s stack buffer.
const BOUNCE_CHUNK: usize = 256;

/// [`GuestMemory::copy_from`] through a small stack buffer: `src.read` then
/// `dst.write`, chunk by chunk, so each side's hooks see exactly the bytes
/// it reads or writes (the cache simulator relies on it). Both whole ranges
/// are checked before any byte moves.
pub fn bounce_copy<D: GuestMemory + ?Sized, S: GuestMemory + ?Sized>(
    dst: &D,
    gpa: GuestPhysAddr,
    src: &S,
    src_gpa: GuestPhysAddr,
    len: usize,
) -> Result<(), MemError> {
    dst.check_range(gpa, len as u64)?;
    src.check_range(src_gpa, len as u64)?;
    let mut buf = [0u8; BOUNCE_CHUNK];
    let mut done = 0usize;
    while done < len {
        let n = (len - done).min(BOUNCE_CHUNK);
        let chunk = buf.get_mut(..n).ok_or(MemError::Overflow)?;
        let offset = done as u64;
        src.read(
            src_gpa.checked_add(offset).ok_or(MemError::Overflow)?,
            chunk,
        )?;
        dst.write(gpa.checked_add(offset).ok_or(MemError::Overflow)?, chunk)?;
        done += n;
    }
    Ok(())
}

/// [`GuestMemory::write_in_buffer`] as separate accesses: what it does by
/// default, and what an implementation that cannot merge them falls back
/// to.
#[allow(clippy::too_many_arguments)] // as `write_in_buffer`
pub fn write_in_buffer_by_parts<
    const A: usize,
    const B: usize,
    D: GuestMemory,
    S: GuestMemory + ?Sized,
>(
    dst: &D,
    gpa: GuestPhysAddr,
    len: u64,
    first: &[u8; A],
    second: &[u8; B],
    src: &S,
    src_gpa: GuestPhysAddr,
    copy_len: usize,
) -> Result<(), MemError> {
    dst.check_range(gpa, len)?;
    let filled = (A + B).checked_add(copy_len).ok_or(MemError::Overflow)?;
    dst.will_write(gpa, filled);
    dst.write_array(gpa, first)?;
    let second_at = gpa.checked_add(A as u64).ok_or(MemError::Overflow)?;
    dst.write_array(second_at, second)?;
    let copy_at = gpa.checked_add((A + B) as u64).ok_or(MemError::Overflow)?;
    dst.copy_from(copy_at, src, src_gpa, copy_len)
}

/// Whether a store with `order` releases (orders the writes before it):
/// where a [`GuestMemory`] calls [`CacheHooks::before_release`].
pub fn releases(order: Ordering) -> bool {
    matches!(
        order,
        Ordering::Release | Ordering::AcqRel | Ordering::SeqCst
    )
}

/// Whether a load with `order` acquires (orders the reads after it):
/// where a [`GuestMemory`] calls [`CacheHooks::before_acquire`].
pub fn acquires(order: Ordering) -> bool {
    matches!(
        order,
        Ordering::Acquire | Ordering::AcqRel | Ordering::SeqCst
    )
}

/// A range of guest memory that only the device writes (the split ring's
/// used ring, `used_event` included), named with
/// [`GuestMemory::write_owned`] and [`GuestMemory::store_u16_owned`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceArea {
    /// First byte of the area.
    pub start: GuestPhysAddr,
    /// Length of the area in bytes.
    pub len: u64,
}

/// The cache policy's view of a hypervisor access to guest memory.
///
/// `before_read` runs before the hypervisor reads `len` bytes at `va`,
/// `after_write` after it wrote them; both over exactly those bytes.
///
/// The ring code's ordering points are passed on as well, so that an
/// implementation may merge its maintenance per line and per batch: it may
/// defer the cleans of `after_write` as long as every written line is clean
/// before the next [`CacheHooks::before_release`], [`CacheHooks::barrier`]
/// or [`CacheHooks::end_operation`] returns, and may skip maintaining a
/// line again before a read until the next [`CacheHooks::before_acquire`]
/// that reads a line not already fresh, `barrier` or `end_operation`.
pub trait CacheHooks {
    /// Makes `va..va+len` safe to read (for example: invalidate by VA).
    fn before_read(&self, va: HostVirtAddr, len: usize);
    /// Prepares `va..va+len` for a write (for example: clean+invalidate the
    /// partial lines at either end, so a non-coherent peer's bytes sharing
    /// those lines are not lost). Nothing by default.
    fn before_write(&self, _va: HostVirtAddr, _len: usize) {}
    /// Makes the bytes just written at `va..va+len` visible to the guest
    /// (for example: clean by VA to the Point of Coherency).
    fn after_write(&self, va: HostVirtAddr, len: usize);
    /// [`CacheHooks::before_write`] for a write inside `area_va..+area_len`,
    /// an area only the device writes ([`GuestMemory::write_owned`]): a
    /// partly written line wholly inside it needs no preparation.
    fn before_write_owned(
        &self,
        va: HostVirtAddr,
        len: usize,
        _area_va: HostVirtAddr,
        _area_len: usize,
    ) {
        self.before_write(va, len)
    }
    /// The device will write all of `va..va+len` in this operation, in
    /// pieces ([`GuestMemory::will_write`]): lines inside it need no
    /// preparation for a piece that covers them only in part.
    fn before_write_run(&self, _va: HostVirtAddr, _len: usize) {}
    /// Prepares a write of `va..va+len`: [`CacheHooks::before_write_owned`]
    /// inside a device-only area (`area`: its address and length),
    /// [`CacheHooks::before_write`] otherwise.
    fn prepare_write(&self, va: HostVirtAddr, len: usize, area: Option<(HostVirtAddr, usize)>) {
        match area {
            Some((at, size)) => self.before_write_owned(va, len, at, size),
            None => self.before_write(va, len),
        }
    }
    /// A store with Release order of `len` bytes at `va` follows (the
    /// split ring's `used.idx`): everything written before must reach the
    /// guest first. Lines of `va..va+len` itself may stay pending: the
    /// store lands in the same line, which reaches memory as a whole.
    fn before_release(&self, _va: HostVirtAddr, _len: usize) {}
    /// A load with Acquire order of `len` bytes at `va` follows (the split
    /// ring's `avail.idx`): reads after it must not return bytes older than
    /// the value it returns.
    fn before_acquire(&self, _va: HostVirtAddr, _len: usize) {}
    /// A full barrier between device and driver: everything written is made
    /// visible, and everything read after it is read afresh (the re-read of
    /// `avail.idx` after `avail_event` exists to see a newer value).
    fn barrier(&self) {}
    /// The end of one backend operation: a [`CacheHooks::barrier`].
    fn end_operation(&self) {
        self.barrier()
    }
}

/// Hooks that do nothing: coherent, non-aliasing memory.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHooks;

impl CacheHooks for NoHooks {
    fn before_read(&self, _va: HostVirtAddr, _len: usize) {}
    fn after_write(&self, _va: HostVirtAddr, _len: usize) {}
}

#[cfg(any(test, feature = "test-utils"))]
pub mod display_check;

/// Every error type's `Display` is a message, not `Debug` output (issue 10).
#[cfg(test)]
mod display_tests {
    use super::MemError;
    use crate::display_check::check_all;

    #[test]
    fn every_mem_error_displays_as_a_message() {
        check_all(&[
            MemError::OutOfRange {
                gpa: 0x4000_0000,
                len: 8,
            },
            MemError::Overflow,
            MemError::Unaligned,
            MemError::TooManyRegions,
            MemError::Overlap,
        ]);
    }
}

/// [`bounce_copy`], the default `copy_from` (the cache simulator's): the
/// source's reads and the destination's writes cover exactly the copied
/// bytes, each once.
#[cfg(test)]
mod copy_tests {
    use super::{GuestMemory, GuestPhysAddr, MemError};
    use crate::vecmem::VecMemory;
    use core::cell::RefCell;
    use core::sync::atomic::Ordering;
    use std::vec::Vec;

    /// Records every `read` and `write` range (where hooks would run).
    struct Recording {
        inner: VecMemory,
        reads: RefCell<Vec<(u64, usize)>>,
        writes: RefCell<Vec<(u64, usize)>>,
    }

    impl GuestMemory for Recording {
        fn check_range(&self, gpa: GuestPhysAddr, len: u64) -> Result<(), MemError> {
            self.inner.check_range(gpa, len)
        }
        fn read(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
            self.reads.borrow_mut().push((gpa.raw(), buf.len()));
            self.inner.read(gpa, buf)
        }
        fn write(&self, gpa: GuestPhysAddr, data: &[u8]) -> Result<(), MemError> {
            self.writes.borrow_mut().push((gpa.raw(), data.len()));
            self.inner.write(gpa, data)
        }
        fn load_u16(&self, gpa: GuestPhysAddr, order: Ordering) -> Result<u16, MemError> {
            self.inner.load_u16(gpa, order)
        }
        fn store_u16(&self, gpa: GuestPhysAddr, v: u16, order: Ordering) -> Result<(), MemError> {
            self.inner.store_u16(gpa, v, order)
        }
        fn fence(&self, order: Ordering) {
            self.inner.fence(order)
        }
    }

    fn recording(base: u64) -> Recording {
        Recording {
            inner: VecMemory::new(base, 1 << 16),
            reads: RefCell::new(Vec::new()),
            writes: RefCell::new(Vec::new()),
        }
    }

    /// Whether `ranges`, in order, tile `start..start+len` exactly.
    fn tiles(ranges: &[(u64, usize)], start: u64, len: usize) -> bool {
        let mut at = start;
        for &(gpa, n) in ranges {
            if gpa != at {
                return false;
            }
            at += n as u64;
        }
        at == start + len as u64
    }

    #[test]
    fn bounce_copy_reads_and_writes_exactly_the_copied_bytes() {
        let src = recording(0x1000_0000);
        let dst = recording(0x2000_0000);
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        src.inner
            .write(GuestPhysAddr::new(0x1000_0100), &data)
            .unwrap();
        dst.copy_from(
            GuestPhysAddr::new(0x2000_0200),
            &src,
            GuestPhysAddr::new(0x1000_0100),
            1000,
        )
        .unwrap();
        let mut out = vec![0u8; 1000];
        dst.inner
            .read(GuestPhysAddr::new(0x2000_0200), &mut out)
            .unwrap();
        assert_eq!(out, data);
        assert!(tiles(&src.reads.borrow(), 0x1000_0100, 1000));
        assert!(tiles(&dst.writes.borrow(), 0x2000_0200, 1000));
        assert!(src.writes.borrow().is_empty() && dst.reads.borrow().is_empty());
        // Negative control: the check sees a range that is one byte short.
        assert!(!tiles(&src.reads.borrow(), 0x1000_0100, 999));
        // A range outside either memory moves nothing.
        let before = dst.writes.borrow().len();
        assert!(dst
            .copy_from(
                GuestPhysAddr::new(0x2000_0000),
                &src,
                GuestPhysAddr::new(0x1000_ff00),
                512
            )
            .is_err());
        assert_eq!(dst.writes.borrow().len(), before);
    }

    #[test]
    fn write_in_buffer_writes_its_parts_then_the_copy_and_checks_the_whole_buffer() {
        let src = recording(0x1000_0000);
        let dst = recording(0x2000_0000);
        let data: Vec<u8> = (0..100u8).collect();
        src.inner
            .write(GuestPhysAddr::new(0x1000_0100), &data)
            .unwrap();
        let at = GuestPhysAddr::new(0x2000_0200);
        let from = GuestPhysAddr::new(0x1000_0100);
        dst.write_in_buffer(at, 2048, &[1u8; 3], &[2u8; 5], &src, from, 100)
            .unwrap();
        let mut out = vec![0u8; 108];
        dst.inner.read(at, &mut out).unwrap();
        assert_eq!(out[..3], [1; 3]);
        assert_eq!(out[3..8], [2; 5]);
        assert_eq!(out[8..], data[..]);
        assert!(tiles(&dst.writes.borrow(), 0x2000_0200, 108));
        // A buffer that runs past RAM is refused before any byte moves,
        // even if the bytes filled would fit.
        let before = dst.writes.borrow().len();
        let near_end = GuestPhysAddr::new(0x2000_ff00);
        assert!(dst
            .write_in_buffer(near_end, 512, &[1u8; 3], &[2u8; 5], &src, from, 100)
            .is_err());
        assert_eq!(dst.writes.borrow().len(), before);
    }

    #[test]
    fn read_in_buffer_checks_the_whole_buffer() {
        let mem = recording(0x1000_0000);
        let mut buf = [0u8; 26];
        assert!(mem
            .read_in_buffer(GuestPhysAddr::new(0x1000_0000), 1526, &mut buf)
            .is_ok());
        // Negative control: the 26 bytes read fit, the buffer does not.
        assert!(mem
            .read_in_buffer(GuestPhysAddr::new(0x1000_ff00), 1526, &mut buf)
            .is_err());
        assert!(mem.reads.borrow().len() == 1);
    }
}
