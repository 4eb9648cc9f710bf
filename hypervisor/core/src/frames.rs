//! The physical frame allocator: a buddy allocator over the RAM the
//! hypervisor does not occupy, handing out naturally aligned runs of 4 KiB
//! frames for guest RAM, translation tables and device buffers.

use crate::pagetable::PAGE_SIZE;
use crate::HostPhysAddr;
use buddy_system_allocator::FrameAllocator;

/// Physical frames, in buddy orders up to 2^31 frames.
pub struct Frames {
    buddy: FrameAllocator<32>,
    free_bytes: u64,
}

impl Default for Frames {
    fn default() -> Self {
        Self::new()
    }
}

impl Frames {
    /// An allocator with no memory.
    pub fn new() -> Self {
        Self { buddy: FrameAllocator::new(), free_bytes: 0 }
    }

    /// Adds the page-aligned part of `start..end` to the pool.
    pub fn add_range(&mut self, start: HostPhysAddr, end: HostPhysAddr) {
        let first = start.raw().div_ceil(PAGE_SIZE);
        let last = end.raw() / PAGE_SIZE;
        if last > first {
            self.buddy.add_frame(first as usize, last as usize);
            self.free_bytes += (last - first) * PAGE_SIZE;
        }
    }

    /// Allocates `bytes` (rounded up to a power-of-two number of frames),
    /// aligned to that rounded size. The memory is not zeroed.
    pub fn alloc(&mut self, bytes: u64) -> Option<HostPhysAddr> {
        let frames = usize::try_from(bytes.div_ceil(PAGE_SIZE).max(1)).ok()?.next_power_of_two();
        let frame = self.buddy.alloc(frames)?;
        self.free_bytes -= frames as u64 * PAGE_SIZE;
        Some(HostPhysAddr::new(frame as u64 * PAGE_SIZE))
    }

    /// Returns memory from [`Frames::alloc`] with the same `bytes`.
    pub fn free(&mut self, base: HostPhysAddr, bytes: u64) {
        let frames = (bytes.div_ceil(PAGE_SIZE).max(1) as usize).next_power_of_two();
        self.buddy.dealloc((base.raw() / PAGE_SIZE) as usize, frames);
        self.free_bytes += frames as u64 * PAGE_SIZE;
    }

    /// Bytes still free.
    pub fn free_bytes(&self) -> u64 {
        self.free_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_aligned_disjoint_and_reusable() {
        let mut f = Frames::new();
        f.add_range(HostPhysAddr::new(0x4010_0800), HostPhysAddr::new(0x4800_0000));
        // The unaligned start is trimmed to the next frame.
        assert_eq!(f.free_bytes(), 0x4800_0000 - 0x4010_1000);
        let a = f.alloc(64 << 20).unwrap();
        assert_eq!(a.raw() % (64 << 20), 0);
        let b = f.alloc(3 * PAGE_SIZE).unwrap();
        assert_eq!(b.raw() % (4 * PAGE_SIZE), 0, "rounded to 4 frames and aligned");
        assert!(b.raw() + 4 * PAGE_SIZE <= a.raw() || b.raw() >= a.raw() + (64 << 20));
        f.free(a, 64 << 20);
        assert_eq!(f.alloc(64 << 20), Some(a));
    }

    #[test]
    fn exhaustion_is_none_not_a_panic() {
        let mut f = Frames::new();
        f.add_range(HostPhysAddr::new(0x1000), HostPhysAddr::new(0x9000));
        assert!(f.alloc(1 << 20).is_none());
        assert!(f.alloc(PAGE_SIZE).is_some());
    }
}
