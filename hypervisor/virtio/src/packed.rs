//! Device side of a packed virtqueue (virtio 1.2 §2.8, VIRTIO_F_RING_PACKED).
//!
//! One descriptor ring that both sides write: the driver makes a descriptor
//! available by flipping its AVAIL/USED flags to match its wrap counter, the
//! device uses a buffer by overwriting a descriptor it has read with
//! `{ id, len, flags }` whose AVAIL and USED bits both equal its own wrap
//! counter. Two 4-byte event suppression structures replace the split
//! ring's flags and event indices: the driver's (Driver Area, read here)
//! says when to interrupt, the device's (Device Area, written here) when to
//! notify.
//!
//! As in [`crate::queue`], the queue is plain state, guest memory is passed
//! in on every call, every value read from the guest is checked before use,
//! and every error returned is fatal for the queue (the caller sets
//! DEVICE_NEEDS_RESET). The bounds are the split queue's: a chain is at most
//! the queue size descriptors in the ring (§2.8.5: no longer than the Queue
//! Size), an indirect table a nonzero multiple of 16 bytes of at most the
//! queue size entries inside RAM, INDIRECT never in a NEXT list, the total
//! length below 2^32.
//!
//! Reading a chain. [`PackedQueue::pop`] reads the chain's ring descriptors
//! once to find its end, its slot count and its Buffer ID (in the last
//! descriptor, §2.8.6), and keeps the first descriptor; the walker
//! ([`PackedChain`]) re-reads the others. The driver may not change an
//! available descriptor (§2.8.8), so a re-read that disagrees about the
//! chain's shape is [`VirtioError::DescriptorChanged`]. A chain is walked to
//! its end before the next [`PackedQueue::add_used`]: a used descriptor may
//! overwrite a slot of a chain popped earlier (out-of-order use).
//!
//! Publishing. [`PackedQueue::add_used`] writes each used descriptor whole
//! except the first one's flags after the last publish; those are written by
//! [`PackedQueue::publish_used`] with Release, which exposes the batch at
//! once (the driver polls only the next slot it expects, §2.8.3) — the
//! packed ring's analogue of the split ring's `used.idx` store.
// Guest input is parsed here: an index or slice must not panic (issue 10).
#![deny(clippy::indexing_slicing)]

use core::sync::atomic::Ordering;

use chroma_mem::{GuestMemory, GuestPhysAddr};

use crate::queue::{
    Descriptor, QueueLayout, DESCRIPTOR_SIZE, DESCRIPTOR_TABLE_ALIGN, VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
};
use crate::VirtioError;

/// §2.8.1: a driver descriptor's AVAIL bit (equal to the driver's wrap counter).
pub const VIRTQ_DESC_F_AVAIL: u16 = 1 << 7;
/// §2.8.1: a descriptor's USED bit (the device's wrap counter once used).
pub const VIRTQ_DESC_F_USED: u16 = 1 << 15;
/// §2.8.10: events enabled.
pub const RING_EVENT_FLAGS_ENABLE: u16 = 0;
/// §2.8.10: events disabled.
pub const RING_EVENT_FLAGS_DISABLE: u16 = 1;
/// §2.8.10: an event only for the descriptor at `off_wrap` (EVENT_IDX).
pub const RING_EVENT_FLAGS_DESC: u16 = 2;
/// Largest packed queue (§2.8: "up to 2^15 entries").
pub const MAX_PACKED_QUEUE_SIZE: u16 = 1 << 15;
/// Alignment of each event suppression structure (§2.8.10.1).
pub const EVENT_SUPPRESSION_ALIGN: u64 = 4;
/// Size of each event suppression structure (§2.8.10.1).
pub const EVENT_SUPPRESSION_BYTES: u64 = 4;

/// Offset of `flags` in a descriptor (`addr: le64, len: le32, id: le16, flags: le16`).
const FLAGS_OFFSET: u64 = 14;
/// Offset of `len` in a descriptor.
const LEN_OFFSET: u64 = 8;

/// A slot of the ring and the wrap counter a descriptor there has in this lap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingPosition {
    /// Slot, below the queue size.
    pub index: u16,
    /// Wrap counter (both sides start at 1, §2.8.1).
    pub wrap: bool,
}

impl RingPosition {
    /// Where both sides start: slot 0, wrap counter 1.
    pub const START: Self = Self {
        index: 0,
        wrap: true,
    };

    /// `n` slots further on (`n <= size`), toggling the wrap counter when
    /// passing the end of the ring.
    pub fn advance(self, n: u16, size: u16) -> Self {
        let sum = u32::from(self.index) + u32::from(n);
        let size = u32::from(size);
        if sum >= size {
            // sum - size < size <= 2^15: fits.
            Self {
                index: u16::try_from(sum - size).unwrap_or(0),
                wrap: !self.wrap,
            }
        } else {
            Self {
                index: u16::try_from(sum).unwrap_or(0),
                wrap: self.wrap,
            }
        }
    }

    /// The position as a count modulo `2 * size`: the laps with wrap
    /// counter 1 first. Event suppression compares these.
    pub fn linear(self, size: u16) -> u32 {
        u32::from(self.index) + if self.wrap { 0 } else { u32::from(size) }
    }

    /// The `off_wrap` encoding of an event suppression structure (§2.8.10).
    pub fn off_wrap(self) -> u16 {
        (self.index & 0x7fff) | (u16::from(self.wrap) << 15)
    }

    /// Decodes `off_wrap` (the offset is not checked against the size).
    pub fn from_off_wrap(value: u16) -> Self {
        Self {
            index: value & 0x7fff,
            wrap: value & 0x8000 != 0,
        }
    }
}

/// `vring_need_event` for packed rings: whether moving the used position
/// from `old` to `new` (linear, see [`RingPosition::linear`]) passed the
/// slot `event` the driver asked to hear about, i.e. `event` lies in
/// `[old, new)` modulo `2 * size`. A hostile `event` beyond the ring gives
/// some answer, never a panic.
pub fn packed_need_event(event: u32, new: u32, old: u32, size: u16) -> bool {
    let m = 2 * u32::from(size).max(1);
    let (event, new, old) = (event % m, new % m, old % m);
    (new + m - event - 1) % m < (new + m - old) % m
}

/// Checks a packed queue's layout before QueueReady (§2.8.10.1, §4.2.3.2):
/// size 1 to `max_size` (not necessarily a power of two), the descriptor
/// ring 16-aligned, both event suppression structures 4-aligned, each part
/// inside RAM. `avail` is the Driver Area, `used` the Device Area.
pub fn validate_layout<M: GuestMemory>(
    layout: &QueueLayout,
    max_size: u16,
    mem: &M,
) -> Result<(), VirtioError> {
    if layout.size == 0 || layout.size > max_size.min(MAX_PACKED_QUEUE_SIZE) {
        return Err(VirtioError::InvalidQueueSize);
    }
    if !layout.desc.is_aligned(DESCRIPTOR_TABLE_ALIGN)
        || !layout.avail.is_aligned(EVENT_SUPPRESSION_ALIGN)
        || !layout.used.is_aligned(EVENT_SUPPRESSION_ALIGN)
    {
        return Err(VirtioError::MisalignedRing);
    }
    mem.check_range(layout.desc, DESCRIPTOR_SIZE * u64::from(layout.size))?;
    mem.check_range(layout.avail, EVENT_SUPPRESSION_BYTES)?;
    mem.check_range(layout.used, EVENT_SUPPRESSION_BYTES)?;
    Ok(())
}

/// `base + offset` for an address range-checked at activation; still
/// checked, so a broken invariant becomes an error, not a wrap.
fn at(base: GuestPhysAddr, offset: u64) -> Result<GuestPhysAddr, VirtioError> {
    base.checked_add(offset)
        .ok_or(VirtioError::Memory(chroma_mem::MemError::Overflow))
}

/// A descriptor's 16 bytes, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RawDescriptor {
    addr: u64,
    len: u32,
    id: u16,
    flags: u16,
}

fn read_descriptor<M: GuestMemory>(
    mem: &M,
    addr: GuestPhysAddr,
) -> Result<RawDescriptor, VirtioError> {
    let mut raw = [0u8; 16];
    mem.read(addr, &mut raw)?;
    let [a0, a1, a2, a3, a4, a5, a6, a7, l0, l1, l2, l3, i0, i1, f0, f1] = raw;
    Ok(RawDescriptor {
        addr: u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
        len: u32::from_le_bytes([l0, l1, l2, l3]),
        id: u16::from_le_bytes([i0, i1]),
        flags: u16::from_le_bytes([f0, f1]),
    })
}

/// Whether `flags` mark a descriptor available in the lap whose wrap
/// counter is `wrap`: AVAIL equal to it, USED not (§2.8.1).
fn is_available(flags: u16, wrap: bool) -> bool {
    (flags & VIRTQ_DESC_F_AVAIL != 0) == wrap && (flags & VIRTQ_DESC_F_USED != 0) != wrap
}

/// A chain [`PackedQueue::pop`] took: where it starts, how many ring slots
/// it spans, its Buffer ID, and what was already read of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedHead {
    /// Its first slot.
    pub start: RingPosition,
    /// Ring slots it spans (1 for an indirect chain).
    pub slots: u16,
    /// The Buffer ID from its last ring descriptor (echoed when used).
    pub id: u16,
    first: RawDescriptor,
    /// An indirect chain's table (checked) and its entry count.
    table: Option<(GuestPhysAddr, u16)>,
}

/// The device side of one packed virtqueue.
#[derive(Clone, Debug)]
pub struct PackedQueue {
    layout: QueueLayout,
    ready: bool,
    event_idx: bool,
    indirect: bool,
    /// The next slot the device reads a driver descriptor from.
    next_avail: RingPosition,
    /// The next slot the device writes a used descriptor to.
    next_used: RingPosition,
    /// The first used descriptor since the last publish: its flags' address
    /// and value, written by [`Self::publish_used`].
    unpublished: Option<(GuestPhysAddr, u16)>,
    /// `next_used` at the previous interrupt decision.
    signalled_used: RingPosition,
    /// Buffers used so far, modulo 2^16 (the split ring's `used.idx`
    /// analogue, for counting: the ring itself has no such index).
    used_count: core::num::Wrapping<u16>,
    /// Notifications are on (from activation, where the driver's zeroed
    /// device area says RING_EVENT_FLAGS_ENABLE, or
    /// [`Self::enable_notification`]) and no chain was taken since: the
    /// next [`Self::pop`] that takes one turns the
    /// device's notifications off (RING_EVENT_FLAGS_DISABLE), as QEMU's
    /// device does once a queue has buffers. Left at DESC, the slot it
    /// names comes round again every second lap of the ring with the same
    /// wrap counter (§2.8.10), and the driver notifies each time there,
    /// though the device never ran dry (the split ring's 16-bit index only
    /// comes back to it after 65536 buffers).
    armed: bool,
}

impl Default for PackedQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl PackedQueue {
    /// A queue that is not ready.
    pub const fn new() -> Self {
        Self {
            layout: QueueLayout {
                size: 0,
                desc: GuestPhysAddr::new(0),
                avail: GuestPhysAddr::new(0),
                used: GuestPhysAddr::new(0),
            },
            ready: false,
            event_idx: false,
            indirect: false,
            next_avail: RingPosition::START,
            next_used: RingPosition::START,
            unpublished: None,
            signalled_used: RingPosition::START,
            used_count: core::num::Wrapping(0),
            armed: false,
        }
    }

    /// Validates `layout` ([`validate_layout`]) and makes the queue live at
    /// the start of the ring. `event_idx` and `indirect` are the negotiated
    /// VIRTIO_F_EVENT_IDX and VIRTIO_F_INDIRECT_DESC. On error the queue
    /// stays not ready.
    pub fn activate<M: GuestMemory>(
        &mut self,
        layout: QueueLayout,
        max_size: u16,
        event_idx: bool,
        indirect: bool,
        mem: &M,
    ) -> Result<(), VirtioError> {
        *self = Self::new();
        validate_layout(&layout, max_size, mem)?;
        self.layout = layout;
        self.event_idx = event_idx;
        self.indirect = indirect;
        self.ready = true;
        // The driver starts the device area zeroed (RING_EVENT_FLAGS_ENABLE,
        // §2.8.10): notifications are on until the device turns them off.
        self.armed = true;
        Ok(())
    }

    /// Stops the queue (QueueReady = 0 or device reset).
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Whether the queue is live.
    pub fn ready(&self) -> bool {
        self.ready
    }

    /// The layout it was activated with.
    pub fn layout(&self) -> QueueLayout {
        self.layout
    }

    /// The next slot the device will read a driver descriptor from.
    pub fn next_avail(&self) -> RingPosition {
        self.next_avail
    }

    /// The next slot the device will write a used descriptor to.
    pub fn next_used(&self) -> RingPosition {
        self.next_used
    }

    /// Buffers used since activation, modulo 2^16 (a running count: the
    /// packed ring has no used index).
    pub fn used_count(&self) -> core::num::Wrapping<u16> {
        self.used_count
    }

    /// Whether used descriptors were added since the last publish.
    pub fn has_unpublished_used(&self) -> bool {
        self.unpublished.is_some()
    }

    fn slot(&self, index: u16) -> Result<GuestPhysAddr, VirtioError> {
        at(self.layout.desc, DESCRIPTOR_SIZE * u64::from(index))
    }

    /// Whether the descriptor at the device's next slot is available
    /// (its flags read with Acquire, so what the driver wrote before them
    /// is visible).
    pub fn has_available<M: GuestMemory>(&mut self, mem: &M) -> Result<bool, VirtioError> {
        if !self.ready {
            return Ok(false);
        }
        let flags = mem.load_u16(
            at(self.slot(self.next_avail.index)?, FLAGS_OFFSET)?,
            Ordering::Acquire,
        )?;
        Ok(is_available(flags, self.next_avail.wrap))
    }

    /// Takes the next available chain, or `None` if the next slot is not
    /// available. Reads the chain's ring descriptors to its end: at most
    /// the queue size of them, INDIRECT only alone and only if negotiated,
    /// an indirect table checked as in the split queue.
    #[inline(always)]
    pub fn pop<M: GuestMemory>(&mut self, mem: &M) -> Result<Option<PackedHead>, VirtioError> {
        if !self.ready {
            return Err(VirtioError::QueueNotReady);
        }
        if !self.has_available(mem)? {
            return Ok(None);
        }
        let size = self.layout.size;
        let start = self.next_avail;
        let mut pos = start;
        let mut slots = 0u16;
        let mut first = None;
        let mut table = None;
        let id = loop {
            if slots == size {
                return Err(VirtioError::ChainTooLong);
            }
            // The Acquire load of the first flags above orders these reads.
            let d = read_descriptor(mem, self.slot(pos.index)?)?;
            slots += 1;
            pos = pos.advance(1, size);
            if first.is_none() {
                first = Some(d);
            }
            if d.flags & VIRTQ_DESC_F_INDIRECT != 0 {
                // §2.8.7: never with NEXT, never inside a NEXT list, and
                // only when VIRTIO_F_INDIRECT_DESC was negotiated.
                if d.flags & VIRTQ_DESC_F_NEXT != 0 || slots > 1 {
                    return Err(VirtioError::IndirectWithNext);
                }
                if !self.indirect {
                    return Err(VirtioError::IndirectNotNegotiated);
                }
                let len = u64::from(d.len);
                if len == 0 || len % DESCRIPTOR_SIZE != 0 || len / DESCRIPTOR_SIZE > u64::from(size)
                {
                    return Err(VirtioError::IndirectTableLength);
                }
                let base = GuestPhysAddr::new(d.addr);
                mem.check_range(base, len)?;
                let count = u16::try_from(len / DESCRIPTOR_SIZE)
                    .map_err(|_| VirtioError::IndirectTableLength)?;
                table = Some((base, count));
                break d.id;
            }
            if d.flags & VIRTQ_DESC_F_NEXT == 0 {
                break d.id;
            }
        };
        let Some(first) = first else {
            return Err(VirtioError::ChainTooLong);
        };
        self.next_avail = pos;
        if self.armed {
            // The queue has buffers again: no notification until it runs
            // out and asks for one (a spurious one costs the driver an exit).
            self.armed = false;
            self.write_device_event(mem, RING_EVENT_FLAGS_DISABLE, None)?;
        }
        Ok(Some(PackedHead {
            start,
            slots,
            id,
            first,
            table,
        }))
    }

    /// Gives back every chain popped from `position` on (the `start` of
    /// the first one given back), none of them used: a later
    /// [`Self::pop`] returns them again.
    pub fn rewind_to(&mut self, position: RingPosition) {
        self.next_avail = position;
    }

    /// Starts walking the chain [`Self::pop`] returned.
    pub fn chain(&self, head: &PackedHead) -> PackedChain {
        PackedChain {
            ring: self.layout.desc,
            size: self.layout.size,
            head: *head,
            next: 0,
            total_len: 0,
        }
    }

    /// Writes the used descriptor for `head` with `len` bytes written
    /// (§2.8.9) at the device's next used slot, and skips the chain's slots.
    /// It becomes visible at the next [`Self::publish_used`].
    pub fn add_used<M: GuestMemory>(
        &mut self,
        mem: &M,
        head: &PackedHead,
        len: u32,
    ) -> Result<(), VirtioError> {
        self.add_used_slots(mem, head.id, head.slots, len)
    }

    /// [`Self::add_used`] for a chain known by its Buffer ID `id` and the
    /// ring slots `slots` it spans (what [`PackedHead`] says of it).
    pub fn add_used_slots<M: GuestMemory>(
        &mut self,
        mem: &M,
        id: u16,
        slots: u16,
        len: u32,
    ) -> Result<(), VirtioError> {
        if !self.ready {
            return Err(VirtioError::QueueNotReady);
        }
        let pos = self.next_used;
        let slot = self.slot(pos.index)?;
        let mut body = [0u8; 6];
        body[..4].copy_from_slice(&len.to_le_bytes());
        body[4..].copy_from_slice(&id.to_le_bytes());
        mem.write(at(slot, LEN_OFFSET)?, &body)?;
        let mut flags = if pos.wrap {
            VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED
        } else {
            0
        };
        if len > 0 {
            // §2.8.4: in a used descriptor, WRITE says data was written.
            flags |= VIRTQ_DESC_F_WRITE;
        }
        let flags_at = at(slot, FLAGS_OFFSET)?;
        if self.unpublished.is_none() {
            self.unpublished = Some((flags_at, flags));
        } else {
            // The driver polls only the first unpublished slot: these
            // become visible with it.
            mem.store_u16(flags_at, flags, Ordering::Relaxed)?;
        }
        self.next_used = pos.advance(slots.clamp(1, self.layout.size), self.layout.size);
        self.used_count += 1;
        Ok(())
    }

    /// Publishes the used descriptors added so far by writing the first
    /// one's flags (Release: buffers and the other used descriptors are
    /// visible first), and says whether the driver must be interrupted
    /// (§2.8.10: its event suppression structure, read after a full
    /// barrier so a notification is not lost).
    pub fn publish_used<M: GuestMemory>(&mut self, mem: &M) -> Result<bool, VirtioError> {
        if !self.ready {
            return Ok(false);
        }
        let Some((flags_at, flags)) = self.unpublished.take() else {
            return Ok(false);
        };
        mem.store_u16(flags_at, flags, Ordering::Release)?;
        mem.fence(Ordering::SeqCst);
        let old = self.signalled_used;
        let new = self.next_used;
        self.signalled_used = new;
        let event_flags = mem.load_u16(at(self.layout.avail, 2)?, Ordering::Relaxed)? & 3;
        Ok(match event_flags {
            RING_EVENT_FLAGS_DISABLE => false,
            RING_EVENT_FLAGS_DESC if self.event_idx => {
                let event = RingPosition::from_off_wrap(
                    mem.load_u16(self.layout.avail, Ordering::Relaxed)?,
                );
                let size = self.layout.size;
                packed_need_event(event.linear(size), new.linear(size), old.linear(size), size)
            }
            // ENABLE, DESC without EVENT_IDX, and the reserved value:
            // interrupt (a spurious interrupt is harmless, a lost one is not).
            _ => true,
        })
    }

    /// Writes the device event suppression structure: `flags`, and with
    /// RING_EVENT_FLAGS_DESC the slot `off_wrap` first.
    fn write_device_event<M: GuestMemory>(
        &self,
        mem: &M,
        flags: u16,
        event: Option<RingPosition>,
    ) -> Result<(), VirtioError> {
        if let Some(event) = event {
            mem.store_u16(self.layout.used, event.off_wrap(), Ordering::Relaxed)?;
        }
        mem.store_u16(at(self.layout.used, 2)?, flags, Ordering::Relaxed)?;
        Ok(())
    }

    /// Asks the driver to notify when it makes the next descriptor
    /// available (EVENT_IDX: RING_EVENT_FLAGS_DESC at the device's next
    /// slot; otherwise RING_EVENT_FLAGS_ENABLE), then looks again after a
    /// full barrier so a descriptor made available meanwhile is not missed.
    /// Returns whether one is available now.
    pub fn enable_notification<M: GuestMemory>(&mut self, mem: &M) -> Result<bool, VirtioError> {
        if !self.ready {
            return Err(VirtioError::QueueNotReady);
        }
        if self.event_idx {
            self.write_device_event(mem, RING_EVENT_FLAGS_DESC, Some(self.next_avail))?;
        } else {
            self.write_device_event(mem, RING_EVENT_FLAGS_ENABLE, None)?;
        }
        self.armed = true;
        mem.fence(Ordering::SeqCst);
        self.has_available(mem)
    }

    /// Asks the driver not to notify until `ahead` more slots are made
    /// available (EVENT_IDX), or not at all (RING_EVENT_FLAGS_DISABLE):
    /// the device polls meanwhile and calls [`Self::enable_notification`]
    /// when it stops. Returns whether a descriptor is available now.
    pub fn suppress_notification<M: GuestMemory>(
        &mut self,
        mem: &M,
        ahead: u16,
    ) -> Result<bool, VirtioError> {
        if !self.ready {
            return Err(VirtioError::QueueNotReady);
        }
        let size = self.layout.size;
        // The event written here is the owner's, who re-arms when it stops
        // polling: the next pop leaves it alone.
        self.armed = false;
        if self.event_idx {
            let event = self.next_avail.advance(ahead % size.max(1), size);
            self.write_device_event(mem, RING_EVENT_FLAGS_DESC, Some(event))?;
        } else {
            self.write_device_event(mem, RING_EVENT_FLAGS_DISABLE, None)?;
        }
        mem.fence(Ordering::SeqCst);
        self.has_available(mem)
    }

    /// Whether the queue negotiated VIRTIO_F_EVENT_IDX.
    pub fn event_idx(&self) -> bool {
        self.event_idx
    }
}

/// Walks one chain [`PackedQueue::pop`] took: its ring descriptors in ring
/// order (the first as already read, the others re-read and checked to
/// still have the shape `pop` saw), or its indirect table's entries in
/// order (§2.8.7: NEXT and the Buffer ID are ignored there, WRITE is the
/// only flag that counts).
#[derive(Clone, Debug)]
pub struct PackedChain {
    ring: GuestPhysAddr,
    size: u16,
    head: PackedHead,
    next: u16,
    total_len: u64,
}

impl PackedChain {
    /// Whether the chain has no buffer left: [`Self::next_descriptor`]
    /// returns `None`.
    #[inline(always)]
    pub fn ended(&self) -> bool {
        let end = match self.head.table {
            Some((_, count)) => count,
            None => self.head.slots,
        };
        self.next >= end
    }

    /// The next buffer of the chain, `None` at its end.
    ///
    /// The end is seen here, inline (as for a split chain): most chains
    /// hold one buffer.
    #[inline(always)]
    pub fn next_descriptor<M: GuestMemory>(
        &mut self,
        mem: &M,
    ) -> Result<Option<Descriptor>, VirtioError> {
        let end = match self.head.table {
            Some((_, count)) => count,
            None => self.head.slots,
        };
        if self.next >= end {
            return Ok(None);
        }
        if self.next == 0 && self.head.table.is_none() {
            // The first ring descriptor, which `pop` read: no guest access.
            // Taken here, inline, so that a chain walked right after its
            // pop passes it on in registers rather than through memory.
            let d = self.head.first;
            self.next = 1;
            // One buffer's length: below 2^32 (G4).
            self.total_len = u64::from(d.len);
            return Ok(Some(Descriptor {
                addr: GuestPhysAddr::new(d.addr),
                len: d.len,
                writable: d.flags & VIRTQ_DESC_F_WRITE != 0,
            }));
        }
        self.read_next(mem)
    }

    /// [`Self::next_descriptor`] when the chain has not ended.
    fn read_next<M: GuestMemory>(&mut self, mem: &M) -> Result<Option<Descriptor>, VirtioError> {
        let (addr, len, flags) = match self.head.table {
            Some((table, count)) => {
                if self.next >= count {
                    return Ok(None);
                }
                let d = read_descriptor(mem, at(table, DESCRIPTOR_SIZE * u64::from(self.next))?)?;
                (d.addr, d.len, d.flags)
            }
            None => {
                if self.next >= self.head.slots {
                    return Ok(None);
                }
                let d = if self.next == 0 {
                    self.head.first
                } else {
                    let pos = self.head.start.advance(self.next, self.size);
                    let d = read_descriptor(
                        mem,
                        at(self.ring, DESCRIPTOR_SIZE * u64::from(pos.index))?,
                    )?;
                    let last = self.next + 1 == self.head.slots;
                    if (d.flags & VIRTQ_DESC_F_NEXT == 0) != last
                        || d.flags & VIRTQ_DESC_F_INDIRECT != 0
                    {
                        return Err(VirtioError::DescriptorChanged);
                    }
                    d
                };
                (d.addr, d.len, d.flags)
            }
        };
        self.next += 1;
        self.total_len += u64::from(len);
        // G4: a chain's total length stays below 2^32.
        if self.total_len > u64::from(u32::MAX) {
            return Err(VirtioError::ChainLengthOverflow);
        }
        Ok(Some(Descriptor {
            addr: GuestPhysAddr::new(addr),
            len,
            writable: flags & VIRTQ_DESC_F_WRITE != 0,
        }))
    }
}

#[cfg(any(test, feature = "test-utils"))]
pub mod fuzzing;
#[cfg(test)]
mod tests;
