//! The global allocator: a buddy allocator over a static arena in `.bss`.
//!
//! No lock (the MMU is off, so exclusives are not guaranteed): only the boot
//! CPU allocates, and IRQs are masked for the length of each call so a
//! handler that ever allocated could not see the heap half-updated.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};

use buddy_system_allocator::Heap;
use chroma_guest_rt::exceptions;

/// Bytes in the arena: RX buffers (64 x 2 KiB), the virtqueues and the
/// smoltcp socket buffers fit with room to spare.
pub const HEAP_SIZE: usize = 1 << 20;

/// The arena, page-aligned; a static of its own so that it stays in `.bss`
/// (all zero) whatever the allocator's own initial state is.
#[repr(C, align(4096))]
struct Arena(UnsafeCell<[u8; HEAP_SIZE]>);

// SAFETY: only the allocator touches the arena, through `GuestHeap::with_heap`
// (see the `Sync` impl of `GuestHeap`).
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([0; HEAP_SIZE]));

struct GuestHeap {
    heap: UnsafeCell<Heap<32>>,
    ready: UnsafeCell<bool>,
}

// SAFETY: every access to the cells happens in `with_heap`, with IRQs masked,
// on the boot CPU only (the crate's rule: other CPUs never run guest code that
// allocates), so accesses never overlap.
unsafe impl Sync for GuestHeap {}

#[global_allocator]
static HEAP: GuestHeap = GuestHeap {
    heap: UnsafeCell::new(Heap::new()),
    ready: UnsafeCell::new(false),
};

impl GuestHeap {
    /// Runs `action` on the heap with IRQs masked, adding the arena first.
    fn with_heap<R>(&self, action: impl FnOnce(&mut Heap<32>) -> R) -> R {
        exceptions::with_irqs_masked(|| {
            // SAFETY: IRQs are masked and only this CPU allocates (see the `Sync` impl), so nothing else holds a reference into these cells now.
            let heap = unsafe { &mut *self.heap.get() };
            // SAFETY: as above.
            let ready = unsafe { &mut *self.ready.get() };
            if !*ready {
                let start = ARENA.0.get() as usize;
                // SAFETY: the arena is a static owned by the allocator alone and handed over exactly once (guarded by `ready`).
                unsafe { heap.init(start, HEAP_SIZE) };
                *ready = true;
            }
            action(heap)
        })
    }
}

// SAFETY: `alloc` returns blocks of the arena that the buddy allocator hands
// out at most once until they are freed, sized and aligned as `layout` asks;
// `dealloc` returns them with the same layout.
unsafe impl GlobalAlloc for GuestHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.with_heap(|heap| heap.alloc(layout).map_or(ptr::null_mut(), NonNull::as_ptr))
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        if let Some(pointer) = NonNull::new(pointer) {
            self.with_heap(|heap| heap.dealloc(pointer, layout));
        }
    }
}

/// Bytes currently allocated (as the buddy allocator rounds them).
pub fn allocated_bytes() -> usize {
    HEAP.with_heap(|heap| heap.stats_alloc_actual())
}
