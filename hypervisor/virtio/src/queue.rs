//! Device side of a split virtqueue (virtio 1.2 §2.7).
//!
//! The queue is plain state; guest memory is passed in on every call
//! (STYLE G3). Every value read from the guest is read once, checked, and
//! only then used (§2.7.5, §2.7.13). Errors returned here are *fatal* for the
//! queue: the caller sets DEVICE_NEEDS_RESET (§2.1.2) and stops using it.
// Guest input is parsed here: an index or slice must not panic (issue 10).
#![deny(clippy::indexing_slicing)]

use core::num::Wrapping;
use core::sync::atomic::Ordering;

use chroma_mem::{DeviceArea, GuestMemory, GuestPhysAddr};

use crate::VirtioError;

/// Largest queue size a split virtqueue may have (§2.7: "Queue Size ... 32768").
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// Size of one descriptor in the descriptor table (§2.7.5).
pub const DESCRIPTOR_SIZE: u64 = 16;
/// Size of one used-ring element `{ id: le32, len: le32 }` (§2.7.8).
pub const USED_ELEMENT_SIZE: u64 = 8;

/// §2.7.5: the buffer continues via the `next` field.
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
/// §2.7.5: the buffer is device write-only (otherwise device read-only).
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
/// §2.7.5.3: the buffer contains a table of indirect descriptors.
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;
/// §2.7.6: the driver asks the device not to interrupt (no EVENT_IDX).
pub const VIRTQ_AVAIL_F_NO_INTERRUPT: u16 = 1;
/// §2.7.8: the device asks the driver not to notify (no EVENT_IDX).
pub const VIRTQ_USED_F_NO_NOTIFY: u16 = 1;

/// Alignment of the descriptor table (§2.7, table "Virtqueue Part Alignment").
pub const DESCRIPTOR_TABLE_ALIGN: u64 = 16;
/// Alignment of the driver area (avail ring).
pub const AVAIL_RING_ALIGN: u64 = 2;
/// Alignment of the device area (used ring).
pub const USED_RING_ALIGN: u64 = 4;

/// Byte size of the descriptor table for `size` entries (§2.7).
pub const fn descriptor_table_bytes(size: u16) -> u64 {
    DESCRIPTOR_SIZE * size as u64
}
/// Byte size of the avail ring including `used_event` (§2.7: 6 + 2 * size).
pub const fn avail_ring_bytes(size: u16) -> u64 {
    6 + 2 * size as u64
}
/// Byte size of the used ring including `avail_event` (§2.7: 6 + 8 * size).
pub const fn used_ring_bytes(size: u16) -> u64 {
    6 + USED_ELEMENT_SIZE * size as u64
}

/// `vring_need_event` (§2.7.10): whether moving an index from `old` to `new`
/// crosses `event`, so the other side asked to be told.
pub fn need_event(event: Wrapping<u16>, new: Wrapping<u16>, old: Wrapping<u16>) -> bool {
    (new - event - Wrapping(1)).0 < (new - old).0
}

/// Where a queue's three parts live, as the driver programmed them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueLayout {
    /// Number of entries (a power of two, at most the device's maximum).
    pub size: u16,
    /// Descriptor table (QueueDesc).
    pub desc: GuestPhysAddr,
    /// Driver area, the avail ring (QueueDriver).
    pub avail: GuestPhysAddr,
    /// Device area, the used ring (QueueDevice).
    pub used: GuestPhysAddr,
}

impl QueueLayout {
    /// Checks what §2.7 and §4.2.3.2 require before QueueReady is set:
    /// size a nonzero power of two at most `max_size`, each part aligned,
    /// each part inside one region of guest RAM.
    pub fn validate<M: GuestMemory>(&self, max_size: u16, mem: &M) -> Result<(), VirtioError> {
        if self.size == 0 || !self.size.is_power_of_two() || self.size > max_size {
            return Err(VirtioError::InvalidQueueSize);
        }
        if !self.desc.is_aligned(DESCRIPTOR_TABLE_ALIGN)
            || !self.avail.is_aligned(AVAIL_RING_ALIGN)
            || !self.used.is_aligned(USED_RING_ALIGN)
        {
            return Err(VirtioError::MisalignedRing);
        }
        mem.check_range(self.desc, descriptor_table_bytes(self.size))?;
        mem.check_range(self.avail, avail_ring_bytes(self.size))?;
        mem.check_range(self.used, used_ring_bytes(self.size))?;
        Ok(())
    }
}

/// One descriptor as the device sees it, after its 16 bytes were read once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Guest-physical address of the buffer.
    pub addr: GuestPhysAddr,
    /// Length of the buffer in bytes.
    pub len: u32,
    /// Whether the buffer is device write-only.
    pub writable: bool,
}

/// `base + offset` for an address already range-checked at queue setup;
/// still checked, so a broken invariant becomes an error, not a wrap.
fn at(base: GuestPhysAddr, offset: u64) -> Result<GuestPhysAddr, VirtioError> {
    base.checked_add(offset)
        .ok_or(VirtioError::Memory(chroma_mem::MemError::Overflow))
}

/// Heads a split queue reads from the avail ring at once, and used
/// elements it writes at once ([`SplitQueue::pop`], [`SplitQueue::add_used`]).
const RING_BATCH: u16 = 32;

/// [`USED_ELEMENT_SIZE`] as a length in host memory.
#[allow(clippy::cast_possible_truncation)] // 8
const USED_ELEMENT_BYTES: usize = USED_ELEMENT_SIZE as usize;

/// The device side of one split virtqueue.
#[derive(Clone, Debug)]
pub struct SplitQueue {
    layout: QueueLayout,
    ready: bool,
    event_idx: bool,
    indirect: bool,
    /// Next avail-ring slot the device will consume (`last_avail_idx`).
    next_avail: Wrapping<u16>,
    /// The last value read from `avail.idx` (read only when needed).
    avail_shadow: Wrapping<u16>,
    /// Next used-ring slot the device will fill.
    next_used: Wrapping<u16>,
    /// The `used.idx` last published to the guest.
    published_used: Wrapping<u16>,
    /// The `used.idx` at the previous interrupt decision (vhost `signalled_used`).
    signalled_used: Wrapping<u16>,
    /// The value this queue last stored in `avail_event` (EVENT_IDX), if
    /// any since it was activated: the device alone writes it (§2.7.8).
    avail_event: Option<Wrapping<u16>>,
    /// Notifications are armed and `avail.idx` was read empty since: the
    /// driver notifies before its next chain ([`Self::quiet`]).
    quiet: bool,
    /// Avail-ring entries read ahead, as read (2 bytes each): those of
    /// avail indices `heads_start..heads_start + heads_len`, all below an
    /// `avail.idx` read before them ([`Self::pop`]).
    heads: [[u8; 2]; RING_BATCH as usize],
    heads_start: Wrapping<u16>,
    heads_len: u16,
    /// Used elements added and not yet written to the used ring, as they
    /// go there (8 bytes each): those of used indices
    /// `next_used - staged .. next_used` ([`Self::add_used`]).
    staged_used: [[u8; USED_ELEMENT_BYTES]; RING_BATCH as usize],
    staged: u16,
}

impl Default for SplitQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl SplitQueue {
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
            next_avail: Wrapping(0),
            avail_shadow: Wrapping(0),
            next_used: Wrapping(0),
            published_used: Wrapping(0),
            signalled_used: Wrapping(0),
            avail_event: None,
            quiet: false,
            heads: [[0; 2]; RING_BATCH as usize],
            heads_start: Wrapping(0),
            heads_len: 0,
            staged_used: [[0; USED_ELEMENT_BYTES]; RING_BATCH as usize],
            staged: 0,
        }
    }

    /// Whether the driver will notify before it makes another chain
    /// available: [`Self::enable_notification`] armed notifications and
    /// found the ring empty after that, and nothing since (a notification,
    /// [`Self::notified`]; [`Self::suppress_notification`]; a rewind; an
    /// `avail.idx` that moved) said otherwise. A device polled for other
    /// reasons (a switch run for another port) need not read an idle
    /// ring then: under a maintaining policy each read is a maintained
    /// line.
    pub fn quiet(&self) -> bool {
        self.quiet
    }

    /// The driver notified this queue (QueueNotify): it may have chains.
    pub fn notified(&mut self) {
        self.quiet = false;
    }

    /// Validates `layout` and makes the queue live with fresh indices.
    ///
    /// `event_idx` and `indirect` are the negotiated VIRTIO_F_EVENT_IDX and
    /// VIRTIO_F_INDIRECT_DESC. On error the queue stays not ready.
    pub fn activate<M: GuestMemory>(
        &mut self,
        layout: QueueLayout,
        max_size: u16,
        event_idx: bool,
        indirect: bool,
        mem: &M,
    ) -> Result<(), VirtioError> {
        *self = Self::new();
        layout.validate(max_size, mem)?;
        self.layout = layout;
        self.event_idx = event_idx;
        self.indirect = indirect;
        self.ready = true;
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

    /// The layout the queue was activated with.
    pub fn layout(&self) -> QueueLayout {
        self.layout
    }

    /// Index of the next avail-ring entry the device will consume.
    pub fn next_avail(&self) -> Wrapping<u16> {
        self.next_avail
    }

    /// Index of the next used-ring entry the device will fill.
    pub fn next_used(&self) -> Wrapping<u16> {
        self.next_used
    }

    /// Whether used elements were added since the last [`Self::publish_used`].
    pub fn has_unpublished_used(&self) -> bool {
        self.next_used != self.published_used
    }

    fn mask(&self) -> u16 {
        self.layout.size.wrapping_sub(1)
    }

    /// The used ring, `avail_event` included: only the device writes it
    /// (§2.7.8), so the cache hooks need not prepare lines wholly inside it
    /// before a partial write ([`GuestMemory::write_owned`]).
    fn used_area(&self) -> DeviceArea {
        DeviceArea {
            start: self.layout.used,
            len: used_ring_bytes(self.layout.size),
        }
    }

    /// Reads `avail.idx` (Acquire, §2.7.13.3) and checks it moved at most
    /// `size` entries past what the device consumed.
    fn read_avail_idx<M: GuestMemory>(&mut self, mem: &M) -> Result<Wrapping<u16>, VirtioError> {
        let idx = Wrapping(mem.load_u16(at(self.layout.avail, 2)?, Ordering::Acquire)?);
        // §2.7.13 and REFERENCE: (u16)(avail_idx - last_avail) > N is a driver error.
        if (idx - self.next_avail).0 > self.layout.size {
            return Err(VirtioError::AvailIndexJump);
        }
        if idx != self.next_avail {
            self.quiet = false;
        }
        self.avail_shadow = idx;
        Ok(idx)
    }

    /// Takes the next available chain's head index, or `None` if the ring is
    /// empty. The head is checked to be below the queue size (§2.7.6).
    ///
    /// The heads are read from the avail ring up to `RING_BATCH` (32) at a
    /// time (as many as `avail.idx` says are there, up to the ring's end),
    /// each once, in one access: a batch of chains costs one range check,
    /// not one per chain. A head read ahead stays the driver's value for
    /// its avail index (the driver may not change an entry it made
    /// available); a rewind past the heads read reads them again.
    #[inline]
    pub fn pop<M: GuestMemory>(&mut self, mem: &M) -> Result<Option<u16>, VirtioError> {
        if !self.ready {
            return Err(VirtioError::QueueNotReady);
        }
        let ahead = (self.next_avail - self.heads_start).0;
        // An entry as a pair of bytes: read as one 2-byte load (out of a
        // flat byte array LLVM loaded each byte and put them together).
        let head = match self.heads.get(usize::from(ahead)) {
            Some(&raw) if ahead < self.heads_len => u16::from_le_bytes(raw),
            _ => match self.read_heads(mem)? {
                Some(head) => head,
                None => return Ok(None),
            },
        };
        if head >= self.layout.size {
            return Err(VirtioError::DescriptorIndexOutOfRange);
        }
        self.next_avail += 1;
        Ok(Some(head))
    }

    /// Reads the avail-ring entries from `next_avail` on into `heads`
    /// (reading `avail.idx` if all before it were taken): the first, or
    /// `None` if the ring is empty. Out of line: once per batch.
    #[inline(never)]
    fn read_heads<M: GuestMemory>(&mut self, mem: &M) -> Result<Option<u16>, VirtioError> {
        if self.next_avail == self.avail_shadow && self.read_avail_idx(mem)? == self.next_avail {
            return Ok(None);
        }
        let slot = self.next_avail.0 & self.mask();
        let entry = at(self.layout.avail, 4 + 2 * u64::from(slot))?;
        // At least one (avail_shadow != next_avail), at most the batch and
        // the entries before the ring's end.
        let count = (self.avail_shadow - self.next_avail)
            .0
            .min(RING_BATCH)
            .min(self.layout.size - slot);
        // The Acquire load of avail.idx that showed these entries orders
        // these reads after it.
        if count == 1 {
            // One (a batch of one frame): one 2-byte load, not a copy; the
            // heads read before are forgotten, so that none can be taken
            // for a later index.
            self.heads_len = 0;
            return Ok(Some(mem.load_u16(entry, Ordering::Relaxed)?));
        }
        let Some(buf) = self.heads.get_mut(..usize::from(count)) else {
            return Err(VirtioError::DescriptorIndexOutOfRange);
        };
        mem.read(entry, buf.as_flattened_mut())?;
        self.heads_start = self.next_avail;
        self.heads_len = count;
        let [first, ..] = self.heads;
        Ok(Some(u16::from_le_bytes(first)))
    }

    /// Gives back the last `count` popped chains (none of them was used), so
    /// that a later [`Self::pop`] returns them again.
    pub fn rewind(&mut self, count: u16) {
        self.next_avail -= count;
        self.quiet = false;
    }

    /// Starts walking the chain whose head [`Self::pop`] returned.
    pub fn chain(&self, head: u16) -> DescriptorChain {
        DescriptorChain {
            table: self.layout.desc,
            table_count: self.layout.size,
            next: Some(head),
            ttl: self.layout.size,
            in_indirect: false,
            indirect_allowed: self.indirect,
            total_len: 0,
        }
    }

    /// Adds one used element `{ head, len }` (§2.7.8); it reaches the used
    /// ring by the next [`Self::publish_used`], which makes it visible to
    /// the driver.
    ///
    /// Staged and written with the others of its batch, up to
    /// `RING_BATCH` (32) elements in one access (`write_staged`):
    /// the driver reads no element past `used.idx`, which is published
    /// after them. Inline: twice per switched frame, a few instructions.
    #[inline(always)]
    pub fn add_used<M: GuestMemory>(
        &mut self,
        mem: &M,
        head: u16,
        len: u32,
    ) -> Result<(), VirtioError> {
        let element = u64::from(head) | u64::from(len) << 32;
        match self.staged_used.get_mut(usize::from(self.staged)) {
            Some(slot) => *slot = element.to_le_bytes(),
            // Never: a full batch is written out below.
            None => return Err(VirtioError::Memory(chroma_mem::MemError::Overflow)),
        }
        self.staged += 1;
        self.next_used += 1;
        if self.staged == RING_BATCH {
            self.write_staged_run(mem)?;
        }
        Ok(())
    }

    /// Writes the staged used elements into the used ring. One (a batch
    /// of one frame) in a fixed-size write, inline: a store, not a call
    /// and a copy of a slice's length.
    #[inline(always)]
    fn write_staged<M: GuestMemory>(&mut self, mem: &M) -> Result<(), VirtioError> {
        if let (1, Some(element)) = (self.staged, self.staged_used.first()) {
            let slot = (self.next_used.0 - 1) & self.mask();
            let at = at(self.layout.used, 4 + USED_ELEMENT_SIZE * u64::from(slot))?;
            mem.write_owned(at, element, self.used_area())?;
            self.staged = 0;
            return Ok(());
        }
        self.write_staged_run(mem)
    }

    /// [`Self::write_staged`] for any number: one access, or two where
    /// they wrap around the ring's end.
    #[inline(never)]
    fn write_staged_run<M: GuestMemory>(&mut self, mem: &M) -> Result<(), VirtioError> {
        let mut first = (self.next_used - Wrapping(self.staged)).0 & self.mask();
        let mut done = 0u16;
        while done < self.staged {
            let count = (self.staged - done).min(self.layout.size - first);
            let part = self
                .staged_used
                .get(usize::from(done)..usize::from(done + count))
                .ok_or(VirtioError::Memory(chroma_mem::MemError::Overflow))?
                .as_flattened();
            mem.write_owned(
                at(self.layout.used, 4 + USED_ELEMENT_SIZE * u64::from(first))?,
                part,
                self.used_area(),
            )?;
            done += count;
            first = 0;
        }
        self.staged = 0;
        Ok(())
    }

    /// Publishes the used elements added so far by writing `used.idx`
    /// (Release, §2.7.8.2) and says whether the driver must be interrupted
    /// (§2.7.7.2 without EVENT_IDX, §2.7.10 with it).
    pub fn publish_used<M: GuestMemory>(&mut self, mem: &M) -> Result<bool, VirtioError> {
        if !self.ready || !self.has_unpublished_used() {
            return Ok(false);
        }
        if self.staged > 0 {
            self.write_staged(mem)?;
        }
        // Release: the used elements and the buffer data written before are
        // visible before the new index (§2.7.13.4 "write barrier").
        mem.store_u16_owned(
            at(self.layout.used, 2)?,
            self.next_used.0,
            Ordering::Release,
            self.used_area(),
        )?;
        self.published_used = self.next_used;
        // Full barrier between publishing used.idx and reading the driver's
        // suppression fields, or a notification can be lost (§2.7.7.2).
        mem.fence(Ordering::SeqCst);
        if self.event_idx {
            let offset = 4 + 2 * u64::from(self.layout.size);
            let used_event =
                Wrapping(mem.load_u16(at(self.layout.avail, offset)?, Ordering::Relaxed)?);
            let old = self.signalled_used;
            self.signalled_used = self.next_used;
            Ok(need_event(used_event, self.next_used, old))
        } else {
            let flags = mem.load_u16(self.layout.avail, Ordering::Relaxed)?;
            Ok(flags & VIRTQ_AVAIL_F_NO_INTERRUPT == 0)
        }
    }

    /// Asks the driver to notify once more chains are available (with
    /// EVENT_IDX: `avail_event = next_avail`, §2.7.10), then re-reads
    /// `avail.idx` after a full barrier so a chain added meanwhile is not
    /// missed. Returns whether chains are available now.
    ///
    /// If `avail_event` already holds `next_avail` (an earlier call armed
    /// it, made it visible with its barrier, and nothing was consumed
    /// since) the store and the barrier are skipped: only `avail.idx` is
    /// read. An idle device polled again and again then writes no ring line
    /// (each store costs a clean and a preparation per poll under a
    /// maintaining policy). The read itself stays: a caller that did not
    /// just read `avail.idx` must see chains added since (the exhaustive
    /// check's split model finds the missed notification without it).
    pub fn enable_notification<M: GuestMemory>(&mut self, mem: &M) -> Result<bool, VirtioError> {
        if !self.ready {
            return Err(VirtioError::QueueNotReady);
        }
        if self.event_idx && self.avail_event != Some(self.next_avail) {
            self.avail_event = Some(self.next_avail);
            let offset = 4 + USED_ELEMENT_SIZE * u64::from(self.layout.size);
            mem.store_u16_owned(
                at(self.layout.used, offset)?,
                self.next_avail.0,
                Ordering::Relaxed,
                self.used_area(),
            )?;
            // Full barrier: the avail_event store before the avail.idx re-read.
            mem.fence(Ordering::SeqCst);
        }
        // Without EVENT_IDX the driver always notifies: this device never
        // sets VIRTQ_USED_F_NO_NOTIFY.
        let more = self.read_avail_idx(mem)? != self.next_avail;
        self.quiet = !more;
        Ok(more)
    }

    /// Asks the driver not to notify until `ahead` more chains are available
    /// (with EVENT_IDX: `avail_event = next_avail + ahead`, §2.7.10): the
    /// device polls the queue meanwhile and must call
    /// [`Self::enable_notification`] when it stops polling. Without EVENT_IDX
    /// this does nothing (the driver keeps notifying). Returns whether chains
    /// are available now.
    pub fn suppress_notification<M: GuestMemory>(
        &mut self,
        mem: &M,
        ahead: u16,
    ) -> Result<bool, VirtioError> {
        if !self.ready {
            return Err(VirtioError::QueueNotReady);
        }
        self.quiet = false;
        let event = self.next_avail + Wrapping(ahead);
        // As in `enable_notification`: a value already there is not stored again.
        if self.event_idx && self.avail_event != Some(event) {
            let offset = 4 + USED_ELEMENT_SIZE * u64::from(self.layout.size);
            self.avail_event = Some(event);
            let area = self.used_area();
            mem.store_u16_owned(
                at(self.layout.used, offset)?,
                event.0,
                Ordering::Relaxed,
                area,
            )?;
            mem.fence(Ordering::SeqCst);
        }
        Ok(self.read_avail_idx(mem)? != self.next_avail)
    }

    /// Whether the queue negotiated VIRTIO_F_EVENT_IDX.
    pub fn event_idx(&self) -> bool {
        self.event_idx
    }

    /// Whether the driver has made chains available that the device has not
    /// taken (reads `avail.idx`).
    pub fn has_available<M: GuestMemory>(&mut self, mem: &M) -> Result<bool, VirtioError> {
        if !self.ready {
            return Ok(false);
        }
        if self.next_avail != self.avail_shadow {
            return Ok(true);
        }
        Ok(self.read_avail_idx(mem)? != self.next_avail)
    }
}

/// Walks one descriptor chain, reading each descriptor exactly once.
///
/// Bounds (§2.7.5.3.1, §2.7.13, REFERENCE "Consume"): every index below the
/// table size; at most `size` links in the direct chain and at most the table
/// length in an indirect one (so loops end); an indirect table's length a
/// nonzero multiple of 16 inside guest RAM; no nested indirect; no
/// INDIRECT together with NEXT; the total length below 2^32.
#[derive(Clone, Debug)]
pub struct DescriptorChain {
    table: GuestPhysAddr,
    table_count: u16,
    next: Option<u16>,
    ttl: u16,
    in_indirect: bool,
    indirect_allowed: bool,
    total_len: u64,
}

impl DescriptorChain {
    /// The next buffer of the chain, `None` at its end.
    ///
    /// The end is seen here, inline: most chains hold one buffer, so the
    /// call that finds the end is as frequent as the one that reads it.
    #[inline(always)]
    pub fn next_descriptor<M: GuestMemory>(
        &mut self,
        mem: &M,
    ) -> Result<Option<Descriptor>, VirtioError> {
        match self.next {
            None => Ok(None),
            Some(_) => self.read_next(mem),
        }
    }

    /// Whether the chain has no buffer left: [`Self::next_descriptor`]
    /// returns `None`.
    #[inline(always)]
    pub fn ended(&self) -> bool {
        self.next.is_none()
    }

    /// [`Self::next_descriptor`] when there is a next index to read. Inline
    /// (one call per buffer, most chains one buffer): the walker's state
    /// stays in registers instead of being stored for a call and reloaded.
    /// An indirect descriptor, rare, is handled out of line
    /// ([`indirect_table`]).
    #[inline(always)]
    fn read_next<M: GuestMemory>(&mut self, mem: &M) -> Result<Option<Descriptor>, VirtioError> {
        loop {
            let Some(index) = self.next else {
                return Ok(None);
            };
            if index >= self.table_count {
                return Err(VirtioError::DescriptorIndexOutOfRange);
            }
            if self.ttl == 0 {
                return Err(VirtioError::ChainTooLong);
            }
            self.ttl -= 1;
            let raw: [u8; 16] =
                mem.read_array(at(self.table, DESCRIPTOR_SIZE * u64::from(index))?)?;
            // The fields as words of the 16-byte read (§2.7.5: addr, len,
            // flags, next), the upper two split out of the last 8 bytes,
            // not put back together from single bytes: LLVM rebuilt `addr`
            // from them with shifts and ORs (about 12 instructions per
            // descriptor).
            let (Some(addr), Some(tail)) = (raw.first_chunk::<8>(), raw.last_chunk::<8>()) else {
                // Never (16 bytes hold both chunks).
                return Err(VirtioError::DescriptorIndexOutOfRange);
            };
            let addr = u64::from_le_bytes(*addr);
            let tail = u64::from_le_bytes(*tail);
            // Truncations pick each field out of its word.
            #[allow(clippy::cast_possible_truncation)]
            let (len, flags, next) = (tail as u32, (tail >> 32) as u16, (tail >> 48) as u16);
            if flags & VIRTQ_DESC_F_INDIRECT != 0 {
                let table = indirect_table(
                    mem,
                    self.in_indirect,
                    self.indirect_allowed,
                    self.table_count,
                    addr,
                    len,
                    flags,
                )?;
                (self.table, self.table_count) = table;
                self.ttl = table.1;
                self.next = Some(0);
                self.in_indirect = true;
                continue;
            }
            self.next = (flags & VIRTQ_DESC_F_NEXT != 0).then_some(next);
            self.total_len += u64::from(len);
            // G4: a chain's total length stays below 2^32.
            if self.total_len > u64::from(u32::MAX) {
                return Err(VirtioError::ChainLengthOverflow);
            }
            return Ok(Some(Descriptor {
                addr: GuestPhysAddr::new(addr),
                len,
                writable: flags & VIRTQ_DESC_F_WRITE != 0,
            }));
        }
    }
}

/// Follows an INDIRECT descriptor (`addr`, `len`, `flags` as read) met by
/// a walker in the state given (whether it is in a table already, whether
/// INDIRECT_DESC was negotiated, its table's length): the table at which
/// the walk goes on, at its first entry, and its length.
///
/// A function of values, not a method of the walker: a call that took the
/// walker's address kept the whole walker in memory, loaded and stored
/// around every descriptor read, for the rare indirect chain.
#[inline(never)]
fn indirect_table<M: GuestMemory>(
    mem: &M,
    in_indirect: bool,
    indirect_allowed: bool,
    table_count: u16,
    addr: u64,
    len: u32,
    flags: u16,
) -> Result<(GuestPhysAddr, u16), VirtioError> {
    // §2.7.5.3.1: no nested tables, no INDIRECT with NEXT, and
    // only when VIRTIO_F_INDIRECT_DESC was negotiated.
    if in_indirect {
        return Err(VirtioError::NestedIndirect);
    }
    if !indirect_allowed {
        return Err(VirtioError::IndirectNotNegotiated);
    }
    if flags & VIRTQ_DESC_F_NEXT != 0 {
        return Err(VirtioError::IndirectWithNext);
    }
    let len = u64::from(len);
    // The table holds at most 2^16 descriptors; a chain may not
    // be longer than the queue (§2.7.5.3.1), so cap it there too.
    if len == 0 || len % DESCRIPTOR_SIZE != 0 || len / DESCRIPTOR_SIZE > u64::from(table_count) {
        return Err(VirtioError::IndirectTableLength);
    }
    let table = GuestPhysAddr::new(addr);
    mem.check_range(table, len)?;
    let count =
        u16::try_from(len / DESCRIPTOR_SIZE).map_err(|_| VirtioError::IndirectTableLength)?;
    Ok((table, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_2_7_10_need_event_matches_vring_need_event() {
        // Driver asked for an interrupt after entry 5 (used_event = 5).
        assert!(need_event(Wrapping(5), Wrapping(6), Wrapping(5)));
        assert!(need_event(Wrapping(5), Wrapping(10), Wrapping(0)));
        assert!(!need_event(Wrapping(5), Wrapping(5), Wrapping(0)));
        assert!(!need_event(Wrapping(5), Wrapping(12), Wrapping(7)));
        // Across the 16-bit wrap.
        assert!(need_event(Wrapping(65535), Wrapping(1), Wrapping(65530)));
    }

    /// Counts the stores a queue makes (on top of plain memory).
    struct Stores {
        inner: chroma_mem::vecmem::VecMemory,
        stores: core::cell::Cell<u32>,
    }

    impl GuestMemory for Stores {
        fn check_range(&self, gpa: GuestPhysAddr, len: u64) -> Result<(), chroma_mem::MemError> {
            self.inner.check_range(gpa, len)
        }
        fn read(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), chroma_mem::MemError> {
            self.inner.read(gpa, buf)
        }
        fn write(&self, gpa: GuestPhysAddr, data: &[u8]) -> Result<(), chroma_mem::MemError> {
            self.stores.set(self.stores.get() + 1);
            self.inner.write(gpa, data)
        }
        fn load_u16(&self, gpa: GuestPhysAddr, o: Ordering) -> Result<u16, chroma_mem::MemError> {
            self.inner.load_u16(gpa, o)
        }
        fn store_u16(
            &self,
            gpa: GuestPhysAddr,
            v: u16,
            o: Ordering,
        ) -> Result<(), chroma_mem::MemError> {
            self.stores.set(self.stores.get() + 1);
            self.inner.store_u16(gpa, v, o)
        }
        fn fence(&self, o: Ordering) {
            self.inner.fence(o)
        }
    }

    // An idle device polled again and again writes avail_event once; after
    // it consumed a chain it writes it again, and every call still reads
    // avail.idx (a chain added meanwhile is seen).
    #[test]
    fn enable_notification_stores_avail_event_only_when_it_changes() {
        let base = 0x4000_0000u64;
        let mem = Stores {
            inner: chroma_mem::vecmem::VecMemory::new(base, 0x4000),
            stores: core::cell::Cell::new(0),
        };
        let layout = QueueLayout {
            size: 4,
            desc: GuestPhysAddr::new(base),
            avail: GuestPhysAddr::new(base + 0x1000),
            used: GuestPhysAddr::new(base + 0x2000),
        };
        let mut q = SplitQueue::new();
        q.activate(layout, 4, true, false, &mem).unwrap();
        let avail_event = GuestPhysAddr::new(base + 0x2000 + 4 + 8 * 4);
        assert!(!q.enable_notification(&mem).unwrap());
        assert!(!q.enable_notification(&mem).unwrap());
        assert_eq!(mem.stores.get(), 1);
        // The driver adds a chain (head 2): the next call sees it.
        mem.inner
            .store_u16(GuestPhysAddr::new(base + 0x1004), 2, Ordering::Relaxed)
            .unwrap();
        mem.inner
            .store_u16(GuestPhysAddr::new(base + 0x1002), 1, Ordering::Release)
            .unwrap();
        let before = mem.stores.get();
        assert!(q.enable_notification(&mem).unwrap());
        assert_eq!(q.pop(&mem).unwrap(), Some(2));
        assert!(!q.enable_notification(&mem).unwrap());
        assert_eq!(mem.stores.get(), before + 1);
        assert_eq!(mem.inner.load_u16(avail_event, Ordering::Relaxed), Ok(1));
    }

    proptest::proptest! {
        #[test]
        fn spec_2_7_10_need_event_is_crossing(event: u16, old: u16, step in 0u16..1024) {
            let new = old.wrapping_add(step);
            // Reference: event is in the half-open window (old, new] walked forwards... shifted by one:
            // signal iff event lies in [old, new).
            let crossed = (0..step).any(|k| old.wrapping_add(k) == event);
            proptest::prop_assert_eq!(need_event(Wrapping(event), Wrapping(new), Wrapping(old)), crossed);
        }
    }
}
