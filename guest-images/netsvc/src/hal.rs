//! The virtio-drivers `Hal`: identity-mapped DMA memory from the guest heap.
//!
//! The MMU is off, so a guest-physical address is the address the code uses,
//! and all memory is uncached: sharing a buffer with the device needs neither
//! a bounce copy nor cache maintenance.

use core::alloc::Layout;
use core::ptr::NonNull;

use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

/// DMA for virtio-drivers on a guest with the MMU off.
pub struct GuestHal;

fn dma_layout(pages: usize) -> Option<Layout> {
    Layout::from_size_align(pages.checked_mul(PAGE_SIZE)?, PAGE_SIZE).ok()
}

// SAFETY: `dma_alloc` returns zeroed, page-aligned, exclusively owned heap
// blocks whose physical address equals their address (MMU off); the other
// functions are identity conversions on addresses the caller owns.
unsafe impl Hal for GuestHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let Some(layout) = dma_layout(pages).filter(|layout| layout.size() > 0) else {
            return (0, NonNull::dangling());
        };
        // SAFETY: the layout has a non-zero size (checked above).
        let pointer = unsafe { alloc::alloc::alloc_zeroed(layout) };
        match NonNull::new(pointer) {
            Some(pointer) => (pointer.as_ptr() as usize as PhysAddr, pointer),
            None => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        let Some(layout) = dma_layout(pages) else {
            return -1;
        };
        // SAFETY: the caller passes back a block from `dma_alloc` with the same page count, hence the same layout.
        unsafe { alloc::alloc::dealloc(vaddr.as_ptr(), layout) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        // Identity: MMU off. Only the PCI transport calls this.
        let address = usize::try_from(paddr).unwrap_or(0);
        NonNull::new(address as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        // Uncached memory at its own address: nothing to copy or clean.
        buffer.cast::<u8>().as_ptr() as usize as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {
        // Uncached memory: nothing to invalidate or copy back.
    }
}
