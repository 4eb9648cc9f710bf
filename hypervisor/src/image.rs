//! Read-only register images: a hypervisor page that stage 2 maps
//! read-only at a device's register window, holding what reads of the
//! window return, so the guest's loads are served by memory without a trap
//! while every store still traps (a stage-2 Permission fault,
//! `Exit::ReadOnlyWrite`). Two devices use one: the virtio-mmio transports
//! (`nic::RegisterImage`, always mapped: their reads have no effect) and
//! the PL011 console ([`UartImage`], mapped only while no read has an
//! effect: while its receive FIFO is empty).
//!
//! The guest maps a register window as Device memory, so its loads go to
//! the Point of Coherency and never see the hypervisor's cached copy:
//! every rewrite is cleaned to PoC (then `DSB`), a single writer's
//! cacheable alias cleaned after writing, the pattern REFERENCE.md allows
//! for mismatched attributes.

use crate::mm::PhysTables;
use chroma_arch::aarch64::descriptors::Stage2Format;
use chroma_core::pagetable::{Attributes, PageTable, PAGE_SIZE};
use chroma_core::pl011::Pl011;
use chroma_core::HostPhysAddr;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Words of a register image, in a hypervisor frame.
pub struct ImageWords {
    words: &'static [AtomicU32],
}

impl ImageWords {
    /// `count` words at `at`.
    ///
    /// # Safety
    /// `at..at + 4 * count` lies in 4-byte-aligned frames identity-mapped
    /// read/write for the hypervisor, owned by this image for the
    /// hypervisor's lifetime, which nothing else writes.
    pub unsafe fn new(at: u64, count: usize) -> Self {
        // SAFETY: the caller's contract: the range is mapped, owned, aligned and never freed; AtomicU32 has u32's layout.
        let words = unsafe { core::slice::from_raw_parts(at as *const AtomicU32, count) };
        Self { words }
    }

    /// Writes each `(byte offset, value)` that differs from the image, then
    /// cleans the span of the words written to PoC. Offsets past the image
    /// are ignored.
    pub fn store(&self, values: impl IntoIterator<Item = (u64, u32)>) {
        let (mut first, mut last) = (usize::MAX, 0);
        for (offset, value) in values {
            let Some((index, word)) = usize::try_from(offset / 4)
                .ok()
                .and_then(|index| Some((index, self.words.get(index)?)))
            else {
                continue;
            };
            if word.load(Ordering::Relaxed) != value {
                word.store(value, Ordering::Relaxed);
                first = first.min(index);
                last = last.max(index);
            }
        }
        if first <= last {
            let at = self.words.as_ptr() as u64 + (first * 4) as u64;
            // SAFETY: the span lies inside the image, mapped for the hypervisor's lifetime (`new`'s contract); a clean changes no data.
            unsafe {
                chroma_cache::ops::clean_range(
                    &crate::arch::CacheOps::new(),
                    chroma_mem::HostVirtAddr::new(at),
                    (last + 1 - first) * 4,
                )
            };
        }
    }

    /// Writes the whole image from `values` (word by word), as [`store`](Self::store).
    pub fn store_all(&self, values: &[u32]) {
        self.store(
            values
                .iter()
                .enumerate()
                .map(|(index, &value)| ((index * 4) as u64, value)),
        );
    }

    /// The word at byte `offset` (0 past the image).
    pub fn word(&self, offset: u64) -> u32 {
        usize::try_from(offset / 4)
            .ok()
            .and_then(|index| self.words.get(index))
            .map_or(0, |word| word.load(Ordering::Relaxed))
    }
}

/// Words in a 4 KiB image page.
const PAGE_WORDS: usize = (PAGE_SIZE / 4) as usize;

/// The PL011's register image: every read of its window while the receive
/// FIFO is empty, when no read has an effect (`Pl011::input_pending`), so
/// the guest's polls of UARTFR (two of every three accesses of a console
/// write without it: FR, DR, FR...) cost no exit.
///
/// A UARTDR read pops the FIFO, so the page is unmapped (accesses fault
/// and are emulated, reads included) from the moment input arrives until
/// the guest has read it all; it is remapped, with the model's registers,
/// after the trapped read that empties the FIFO. Unmapping invalidates the
/// page's TLB entries on every CPU before the input's interrupt is raised,
/// so a guest that sees the interrupt reads UARTDR through a trap. Every
/// change runs with the VM's UART lock held (the model's own), which
/// serialises them.
pub struct UartImage {
    words: ImageWords,
    /// The image frame.
    page: HostPhysAddr,
    /// The window's IPA.
    ipa: u64,
    /// Stage 2 maps the page (changed under the UART lock only).
    mapped: AtomicBool,
}

impl UartImage {
    /// Allocates the image page, fills it from `uart` and maps it
    /// read-only at `ipa` in `stage2` (as a page, so it can come and go).
    /// `None` when out of memory or the mapping fails.
    pub fn new(stage2: &mut PageTable, ipa: u64, uart: &Pl011) -> Option<Self> {
        let page = crate::mm::FRAMES.lock().alloc(PAGE_SIZE)?;
        // SAFETY: the frame was just allocated for this image and is identity-mapped read/write; it is never freed, and only this image writes it.
        let words = unsafe { ImageWords::new(page.raw(), PAGE_WORDS) };
        let image = Self {
            words,
            page,
            ipa,
            mapped: AtomicBool::new(false),
        };
        image.write_all(uart);
        stage2
            .map::<Stage2Format, _>(&mut PhysTables, ipa, page, PAGE_SIZE, Attributes::READ_ONLY)
            .ok()?;
        image.mapped.store(true, Ordering::Relaxed);
        Some(image)
    }

    /// Every word of the window from `uart` (whose FIFO is empty).
    fn write_all(&self, uart: &Pl011) {
        let mut values = [0u32; PAGE_WORDS];
        for (index, value) in values.iter_mut().enumerate() {
            *value = uart.peek((index * 4) as u64).unwrap_or(0);
        }
        self.words.store_all(&values);
    }

    /// Brings the image and its mapping in line with `uart` after a
    /// change (the caller holds the VM's UART lock; `stage2`, `vmid` are
    /// the VM's): unmapped while input is pending, else current and mapped.
    pub fn sync(&self, uart: &Pl011, stage2: &PageTable, vmid: u16) {
        let mapped = self.mapped.load(Ordering::Relaxed);
        if uart.input_pending() {
            if mapped {
                self.set_mapped(stage2, false);
                crate::arch::vcpu::invalidate_vm_page(vmid, stage2.root().raw(), self.ipa);
            }
        } else {
            // The registers first, then the mapping: a guest that reads the
            // page sees the current state.
            self.words.store(uart.changing_registers());
            if !mapped {
                self.set_mapped(stage2, true);
            }
        }
    }

    /// After a device reset: the whole window again from `uart`, mapped.
    pub fn reset(&self, uart: &Pl011, stage2: &PageTable, vmid: u16) {
        self.write_all(uart);
        self.sync(uart, stage2, vmid);
    }

    fn set_mapped(&self, stage2: &PageTable, present: bool) {
        // The page was mapped as a page by `new`: its level-3 table exists.
        let done = stage2.set_page_present::<Stage2Format, _>(
            &mut PhysTables,
            self.ipa,
            self.page,
            Attributes::READ_ONLY,
            present,
        );
        if done {
            self.mapped.store(present, Ordering::Relaxed);
        }
    }
}
