//! The physical frame allocator: a buddy allocator over the RAM the
//! hypervisor does not occupy, handing out naturally aligned runs of 4 KiB
//! frames for guest RAM, translation tables and device buffers.

use crate::pagetable::PAGE_SIZE;
use crate::HostPhysAddr;
use buddy_system_allocator::FrameAllocator;

/// Physical frames, in buddy orders up to 2^31 frames.
///
/// It also keeps its high-water mark: the most bytes ever handed out at
/// once, which a soak run (`cargo xtask soak`) watches for leaks.
pub struct Frames {
    buddy: FrameAllocator<32>,
    free_bytes: u64,
    /// Bytes given to the pool by [`Frames::add_range`].
    total_bytes: u64,
    /// The most bytes ever allocated at once.
    peak_used_bytes: u64,
}

impl Default for Frames {
    fn default() -> Self {
        Self::new()
    }
}

impl Frames {
    /// An allocator with no memory.
    pub fn new() -> Self {
        Self {
            buddy: FrameAllocator::new(),
            free_bytes: 0,
            total_bytes: 0,
            peak_used_bytes: 0,
        }
    }

    /// Adds the page-aligned part of `start..end` to the pool.
    pub fn add_range(&mut self, start: HostPhysAddr, end: HostPhysAddr) {
        let first = start.raw().div_ceil(PAGE_SIZE);
        let last = end.raw() / PAGE_SIZE;
        // Frame numbers fit a usize on every target (a 32-bit CPU with LPAE
        // addresses 2^40 bytes: 2^28 frames); a range beyond that is left out
        // rather than truncated into someone else's frames.
        let (Ok(first_frame), Ok(last_frame)) = (usize::try_from(first), usize::try_from(last))
        else {
            return;
        };
        if last > first {
            self.buddy.add_frame(first_frame, last_frame);
            self.free_bytes += (last - first) * PAGE_SIZE;
            self.total_bytes += (last - first) * PAGE_SIZE;
        }
    }

    /// Allocates `bytes` (rounded up to a power-of-two number of frames),
    /// aligned to that rounded size. The memory is not zeroed.
    pub fn alloc(&mut self, bytes: u64) -> Option<HostPhysAddr> {
        let frames = usize::try_from(bytes.div_ceil(PAGE_SIZE).max(1))
            .ok()?
            .next_power_of_two();
        let frame = self.buddy.alloc(frames)?;
        self.free_bytes -= frames as u64 * PAGE_SIZE;
        self.peak_used_bytes = self.peak_used_bytes.max(self.used_bytes());
        Some(HostPhysAddr::new(frame as u64 * PAGE_SIZE))
    }

    /// Returns memory from [`Frames::alloc`] with the same `bytes`.
    pub fn free(&mut self, base: HostPhysAddr, bytes: u64) {
        // `alloc` handed out this range, so its frame number and count fit
        // a usize; anything else was never allocated and is not taken back.
        let (Ok(frame), Ok(frames)) = (
            usize::try_from(base.raw() / PAGE_SIZE),
            usize::try_from(bytes.div_ceil(PAGE_SIZE).max(1)),
        ) else {
            return;
        };
        let frames = frames.next_power_of_two();
        self.buddy.dealloc(frame, frames);
        self.free_bytes += frames as u64 * PAGE_SIZE;
    }

    /// Bytes still free.
    pub fn free_bytes(&self) -> u64 {
        self.free_bytes
    }

    /// Bytes allocated now (rounded as [`Frames::alloc`] rounds them).
    pub fn used_bytes(&self) -> u64 {
        self.total_bytes.saturating_sub(self.free_bytes)
    }

    /// The most bytes that were ever allocated at once: the high-water mark.
    pub fn peak_used_bytes(&self) -> u64 {
        self.peak_used_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_aligned_disjoint_and_reusable() {
        let mut f = Frames::new();
        f.add_range(
            HostPhysAddr::new(0x4010_0800),
            HostPhysAddr::new(0x4800_0000),
        );
        // The unaligned start is trimmed to the next frame.
        assert_eq!(f.free_bytes(), 0x4800_0000 - 0x4010_1000);
        let a = f.alloc(64 << 20).unwrap();
        assert_eq!(a.raw() % (64 << 20), 0);
        let b = f.alloc(3 * PAGE_SIZE).unwrap();
        assert_eq!(
            b.raw() % (4 * PAGE_SIZE),
            0,
            "rounded to 4 frames and aligned"
        );
        assert!(b.raw() + 4 * PAGE_SIZE <= a.raw() || b.raw() >= a.raw() + (64 << 20));
        f.free(a, 64 << 20);
        assert_eq!(f.alloc(64 << 20), Some(a));
    }

    #[test]
    fn the_high_water_mark_stays_after_a_free() {
        let mut f = Frames::new();
        f.add_range(
            HostPhysAddr::new(0x4000_0000),
            HostPhysAddr::new(0x4100_0000),
        );
        assert_eq!((f.used_bytes(), f.peak_used_bytes()), (0, 0));
        let a = f.alloc(3 * PAGE_SIZE).unwrap();
        assert_eq!(f.used_bytes(), 4 * PAGE_SIZE, "rounded as alloc rounds");
        let b = f.alloc(PAGE_SIZE).unwrap();
        f.free(a, 3 * PAGE_SIZE);
        assert_eq!(f.used_bytes(), PAGE_SIZE);
        assert_eq!(f.peak_used_bytes(), 5 * PAGE_SIZE);
        // Reusing freed memory does not raise the mark.
        let c = f.alloc(4 * PAGE_SIZE).unwrap();
        assert_eq!(f.peak_used_bytes(), 5 * PAGE_SIZE);
        f.free(b, PAGE_SIZE);
        f.free(c, 4 * PAGE_SIZE);
        assert_eq!(f.used_bytes(), 0);
        assert_eq!(f.peak_used_bytes(), 5 * PAGE_SIZE);
    }

    #[test]
    fn exhaustion_is_none_not_a_panic() {
        let mut f = Frames::new();
        f.add_range(HostPhysAddr::new(0x1000), HostPhysAddr::new(0x9000));
        assert!(f.alloc(1 << 20).is_none());
        assert!(f.alloc(PAGE_SIZE).is_some());
    }
}
