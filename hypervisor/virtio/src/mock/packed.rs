//! The driver side of a packed virtqueue (§2.8), from the spec's driver
//! example (§2.8.21) and its used-buffer loop (§2.8.22), for tests.

use core::sync::atomic::Ordering;

use alloc::vec;
use alloc::vec::Vec;
use chroma_mem::{GuestMemory, GuestPhysAddr};

use crate::packed::{
    packed_need_event, RingPosition, EVENT_SUPPRESSION_BYTES, RING_EVENT_FLAGS_DESC,
    RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED,
};
use crate::queue::{
    QueueLayout, DESCRIPTOR_SIZE, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
};

fn gpa(raw: u64) -> GuestPhysAddr {
    GuestPhysAddr::new(raw)
}

/// A packed descriptor as a driver writes it (§2.8.13).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PackedDescriptor {
    /// Buffer address.
    pub addr: u64,
    /// Buffer length.
    pub len: u32,
    /// Buffer ID.
    pub id: u16,
    /// Flags: NEXT, WRITE, INDIRECT, AVAIL, USED.
    pub flags: u16,
}

impl PackedDescriptor {
    /// The 16 little-endian bytes of the descriptor.
    #[inline]
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.id.to_le_bytes());
        b[14..].copy_from_slice(&self.flags.to_le_bytes());
        b
    }
}

/// AVAIL/USED bits that make a descriptor available in the lap whose
/// driver wrap counter is `wrap` (§2.8.1: AVAIL = wrap, USED = !wrap).
pub fn avail_bits(wrap: bool) -> u16 {
    if wrap {
        VIRTQ_DESC_F_AVAIL
    } else {
        VIRTQ_DESC_F_USED
    }
}

/// The driver side of one packed virtqueue in guest memory.
pub struct PackedDriver<'m, M: GuestMemory> {
    mem: &'m M,
    /// Descriptor ring (`desc`), driver event suppression (`avail`), device
    /// event suppression (`used`).
    pub layout: QueueLayout,
    /// Next slot to write and the driver's wrap counter (§2.8.21).
    next_avail: RingPosition,
    /// Next slot to look for a used buffer and its wrap counter.
    next_used: RingPosition,
    /// `next_avail` at the last notification decision.
    kicked_at: RingPosition,
    /// Free ring slots.
    free_slots: u16,
    /// Free Buffer IDs (0..size).
    free_ids: Vec<u16>,
    /// Ring slots of each Buffer ID in flight (0: not in flight).
    id_slots: Vec<u16>,
    /// Whether VIRTIO_F_EVENT_IDX was negotiated (the driver then asks for
    /// interrupts with RING_EVENT_FLAGS_DESC).
    event_idx: bool,
    /// Used descriptors whose Buffer ID was not in flight.
    pub bad_returns: u32,
}

impl<'m, M: GuestMemory> PackedDriver<'m, M> {
    /// A ring of `size` entries at `base` (16-aligned), the driver event
    /// suppression structure after it and the device's after that, all
    /// zeroed (every descriptor unavailable in the first lap).
    pub fn new(mem: &'m M, base: u64, size: u16) -> Self {
        let driver = base + DESCRIPTOR_SIZE * u64::from(size);
        let device = driver + EVENT_SUPPRESSION_BYTES;
        let q = Self {
            mem,
            layout: QueueLayout {
                size,
                desc: gpa(base),
                avail: gpa(driver),
                used: gpa(device),
            },
            next_avail: RingPosition::START,
            next_used: RingPosition::START,
            kicked_at: RingPosition::START,
            free_slots: size,
            free_ids: (0..size).rev().collect(),
            id_slots: vec![0; usize::from(size)],
            event_idx: false,
            bad_returns: 0,
        };
        let zero = vec![0u8; (device + EVENT_SUPPRESSION_BYTES - base) as usize];
        let _ = mem.write(gpa(base), &zero);
        q
    }

    /// First byte after the device event suppression structure.
    pub fn end(&self) -> u64 {
        self.layout.used.raw() + EVENT_SUPPRESSION_BYTES
    }

    /// Records whether EVENT_IDX was negotiated and asks for an interrupt
    /// after every used buffer (RING_EVENT_FLAGS_DESC at the next used slot
    /// with it, RING_EVENT_FLAGS_ENABLE without).
    pub fn set_event_idx(&mut self, event_idx: bool) {
        self.event_idx = event_idx;
        self.request_interrupt();
    }

    /// The next slot the driver writes, and its wrap counter.
    pub fn next_avail(&self) -> RingPosition {
        self.next_avail
    }

    /// The next slot the driver expects a used buffer in.
    pub fn next_used(&self) -> RingPosition {
        self.next_used
    }

    /// Free ring slots.
    pub fn free_count(&self) -> usize {
        usize::from(self.free_slots).min(self.free_ids.len())
    }

    /// The Buffer ID the next [`Self::add_chain`] uses.
    pub fn next_free_id(&self) -> Option<u16> {
        self.free_ids.last().copied()
    }

    /// Buffer IDs in flight.
    pub fn outstanding_count(&self) -> usize {
        self.id_slots.iter().filter(|&&s| s > 0).count()
    }

    fn slot_addr(&self, index: u16) -> u64 {
        self.layout.desc.raw() + DESCRIPTOR_SIZE * u64::from(index)
    }

    /// Writes descriptor slot `index` verbatim, flags included (a hostile
    /// driver may write anything).
    pub fn write_descriptor(&self, index: u16, d: PackedDescriptor) {
        let _ = self
            .mem
            .write_array(gpa(self.slot_addr(index)), &d.to_bytes());
    }

    /// Writes slot `index`'s flags alone (Release).
    pub fn write_flags(&self, index: u16, flags: u16) {
        let _ = self
            .mem
            .store_u16(gpa(self.slot_addr(index) + 14), flags, Ordering::Release);
    }

    /// Reads slot `index`'s flags (Acquire).
    pub fn flags(&self, index: u16) -> u16 {
        self.mem
            .load_u16(gpa(self.slot_addr(index) + 14), Ordering::Acquire)
            .unwrap_or(0)
    }

    /// Makes `buffers` (`(addr, len, device_writable)`) available as one
    /// chain in consecutive slots, `extra` or-ed into each descriptor's
    /// flags; the first descriptor's flags are written last, with Release,
    /// so the device sees the chain whole (§2.8.21). Returns its Buffer ID,
    /// `None` if there are not enough free slots or IDs.
    pub fn add_chain_with(&mut self, buffers: &[(u64, u32, bool)], extra: u16) -> Option<u16> {
        let n = u16::try_from(buffers.len()).ok()?;
        if n == 0 || n > self.free_slots {
            return None;
        }
        let id = self.free_ids.pop()?;
        let size = self.layout.size;
        let first = self.next_avail;
        let mut first_flags = 0;
        for (k, &(addr, len, writable)) in buffers.iter().enumerate() {
            let mut flags = avail_bits(self.next_avail.wrap) | extra;
            if writable {
                flags |= VIRTQ_DESC_F_WRITE;
            }
            if k + 1 < buffers.len() {
                flags |= VIRTQ_DESC_F_NEXT;
            }
            let d = PackedDescriptor {
                addr,
                len,
                id,
                flags,
            };
            if k == 0 {
                // Everything but the flags now; the flags after the rest.
                first_flags = flags;
                let bytes = d.to_bytes();
                if let Some(head) = bytes.first_chunk::<14>() {
                    let _ = self.mem.write_array(gpa(self.slot_addr(first.index)), head);
                }
            } else {
                self.write_descriptor(self.next_avail.index, d);
            }
            self.next_avail = self.next_avail.advance(1, size);
        }
        self.write_flags(first.index, first_flags);
        self.free_slots -= n;
        if let Some(s) = self.id_slots.get_mut(usize::from(id)) {
            *s = n;
        }
        Some(id)
    }

    /// [`Self::add_chain_with`] without extra flags.
    pub fn add_chain(&mut self, buffers: &[(u64, u32, bool)]) -> Option<u16> {
        self.add_chain_with(buffers, 0)
    }

    /// Writes an indirect table at `table` holding `buffers` (WRITE the only
    /// flag, §2.8.7) and makes one descriptor pointing at it available.
    pub fn add_indirect(&mut self, table: u64, buffers: &[(u64, u32, bool)]) -> Option<u16> {
        for (k, &(addr, len, writable)) in buffers.iter().enumerate() {
            let d = PackedDescriptor {
                addr,
                len,
                id: 0,
                flags: if writable { VIRTQ_DESC_F_WRITE } else { 0 },
            };
            let _ = self.mem.write(gpa(table + 16 * k as u64), &d.to_bytes());
        }
        let len = (16 * buffers.len()) as u32;
        self.add_chain_with(&[(table, len, false)], VIRTQ_DESC_F_INDIRECT)
    }

    /// Takes the next used buffer `(id, len)` (§2.8.22: its flags' AVAIL and
    /// USED both equal the driver's used wrap counter), frees its slots and
    /// ID, and asks for an interrupt after the next one.
    pub fn pop_used(&mut self) -> Option<(u32, u32)> {
        let pos = self.next_used;
        let flags = self.flags(pos.index);
        let avail = flags & VIRTQ_DESC_F_AVAIL != 0;
        let used = flags & VIRTQ_DESC_F_USED != 0;
        if avail != pos.wrap || used != pos.wrap {
            return None;
        }
        let b: [u8; 6] = self
            .mem
            .read_array(gpa(self.slot_addr(pos.index) + 8))
            .unwrap_or([0; 6]);
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let id = u16::from_le_bytes([b[4], b[5]]);
        let slots = match self.id_slots.get_mut(usize::from(id)) {
            Some(s) if *s > 0 => {
                self.free_ids.push(id);
                core::mem::take(s)
            }
            _ => {
                // Not in flight: returned twice or never posted.
                self.bad_returns += 1;
                1
            }
        };
        self.free_slots = (self.free_slots + slots).min(self.layout.size);
        self.next_used = pos.advance(slots, self.layout.size);
        self.request_interrupt();
        Some((u32::from(id), len))
    }

    /// Writes the driver event suppression structure verbatim.
    pub fn set_driver_event(&self, flags: u16, off_wrap: u16) {
        let at = self.layout.avail;
        let _ = self.mem.store_u16(at, off_wrap, Ordering::Relaxed);
        let _ = self
            .mem
            .store_u16(at.wrapping_add(2), flags, Ordering::Relaxed);
    }

    /// Asks for an interrupt when the device uses the buffer at the next
    /// used slot (EVENT_IDX), or at every used buffer.
    fn request_interrupt(&self) {
        if self.event_idx {
            self.set_driver_event(RING_EVENT_FLAGS_DESC, self.next_used.off_wrap());
        } else {
            self.set_driver_event(RING_EVENT_FLAGS_ENABLE, 0);
        }
    }

    /// Asks the device for no interrupts at all.
    pub fn disable_interrupts(&self) {
        self.set_driver_event(RING_EVENT_FLAGS_DISABLE, 0);
    }

    /// The device event suppression structure: `(flags, off_wrap)`.
    pub fn device_event(&self) -> (u16, u16) {
        let at = self.layout.used;
        let off_wrap = self.mem.load_u16(at, Ordering::Acquire).unwrap_or(0);
        let flags = self
            .mem
            .load_u16(at.wrapping_add(2), Ordering::Acquire)
            .unwrap_or(0);
        (flags & 3, off_wrap)
    }

    /// Whether the driver must notify now (§2.8.10: the device's event
    /// suppression structure; with RING_EVENT_FLAGS_DESC, whether the
    /// descriptor it names was made available since the last decision),
    /// and records the decision point.
    pub fn take_kick(&mut self, event_idx: bool) -> bool {
        let old = self.kicked_at;
        let new = self.next_avail;
        if old == new {
            return false;
        }
        self.kicked_at = new;
        // §2.8.21: a full barrier between making buffers available and
        // reading the device's structure, or a notification can be lost.
        self.mem.fence(Ordering::SeqCst);
        let (flags, off_wrap) = self.device_event();
        match flags {
            RING_EVENT_FLAGS_DISABLE => false,
            RING_EVENT_FLAGS_DESC if event_idx => {
                let size = self.layout.size;
                let event = RingPosition::from_off_wrap(off_wrap);
                packed_need_event(event.linear(size), new.linear(size), old.linear(size), size)
            }
            _ => true,
        }
    }
}
