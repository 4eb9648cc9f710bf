//! A simulated guest virtio-net driver that reaches its rings and buffers
//! through the guest's own alias (split or packed rings,
//! VIRTIO_F_EVENT_IDX, no MRG_RXBUF), with a shared buffer pool whose slots
//! do not align with cache lines, so buffers of both directions share lines.

use std::collections::VecDeque;
use std::vec;
use std::vec::Vec;

use chroma_virtio::packed::{RingPosition, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED};

use super::memory::GuestAccess;
use super::Rng;

/// Entries per queue.
pub const QUEUE_SIZE: u16 = 64;
/// Guest-physical base of the VM's RAM.
pub const GPA_BASE: u64 = 0x4000_0000;
/// Bytes of guest RAM simulated.
pub const RAM_SIZE: u64 = 0x18000;
/// Offsets of the rings inside RAM (page aligned, as Linux's virtio-mmio does).
pub const RX_DESC: u64 = 0x0000;
/// RX avail ring.
pub const RX_AVAIL: u64 = 0x1000;
/// RX used ring.
pub const RX_USED: u64 = 0x2000;
/// TX descriptor table.
pub const TX_DESC: u64 = 0x3000;
/// TX avail ring.
pub const TX_AVAIL: u64 = 0x4000;
/// TX used ring.
pub const TX_USED: u64 = 0x5000;
/// Start of the buffer pool; everything below is ring memory.
pub const POOL: u64 = 0x8000;
/// Pool slot size: deliberately not a multiple of any line size.
pub const SLOT: u64 = 200;
/// Number of pool slots.
pub const SLOTS: usize = 256;
/// Length of every receive buffer.
pub const RX_BUFFER_LEN: u32 = 168;
/// The virtio-net header length.
pub const HEADER_LEN: usize = 12;

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;

/// The driver side of one split virtqueue.
struct DriverQueue {
    desc: u64,
    avail: u64,
    used: u64,
    free: Vec<u16>,
    avail_idx: u16,
    /// `avail_idx` at the last notification decision.
    kicked_idx: u16,
    last_used: u16,
    /// Per head: the pool slot and the chain's second descriptor, if any.
    inflight: Vec<Option<(usize, Option<u16>)>>,
    /// Per head: the buffer address (receive queue).
    buffer: Vec<u64>,
}

impl DriverQueue {
    fn new(desc: u64, avail: u64, used: u64) -> Self {
        Self {
            desc: GPA_BASE + desc,
            avail: GPA_BASE + avail,
            used: GPA_BASE + used,
            free: (0..QUEUE_SIZE).rev().collect(),
            avail_idx: 0,
            kicked_idx: 0,
            last_used: 0,
            inflight: vec![None; usize::from(QUEUE_SIZE)],
            buffer: vec![0; usize::from(QUEUE_SIZE)],
        }
    }

    fn write_desc(
        &self,
        g: &GuestAccess<'_>,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        g.write(self.desc + 16 * u64::from(index), &d);
    }

    /// Makes `head` available: ring entry, then the index (§2.7.13).
    fn publish(&mut self, g: &GuestAccess<'_>, head: u16) {
        let slot = u64::from(self.avail_idx % QUEUE_SIZE);
        g.write_u16(self.avail + 4 + 2 * slot, head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        g.write_u16(self.avail + 2, self.avail_idx);
    }

    /// Takes the next used element, if any: `(head, len)`.
    fn take_used(&mut self, g: &GuestAccess<'_>) -> Option<(u16, u32)> {
        let used_idx = g.read_u16(self.used + 2);
        if used_idx == self.last_used {
            return None;
        }
        let slot = u64::from(self.last_used % QUEUE_SIZE);
        let mut e = [0u8; 8];
        g.read(self.used + 4 + 8 * slot, &mut e);
        self.last_used = self.last_used.wrapping_add(1);
        // EVENT_IDX: used_event lives after the avail ring entries.
        g.write_u16(self.avail + 4 + 2 * u64::from(QUEUE_SIZE), self.last_used);
        let head = u16::from_le_bytes([e[0], e[1]]);
        let len = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        Some((head, len))
    }

    /// Whether the chains made available since the last decision must be
    /// notified (§2.7.10: `vring_need_event` on the device's avail_event).
    fn needs_kick(&mut self, g: &GuestAccess<'_>) -> bool {
        let event = g.read_u16(self.used + 4 + 8 * u64::from(QUEUE_SIZE));
        let old = core::mem::replace(&mut self.kicked_idx, self.avail_idx);
        chroma_virtio::queue::need_event(
            core::num::Wrapping(event),
            core::num::Wrapping(self.avail_idx),
            core::num::Wrapping(old),
        )
    }

    /// Frees the chain at `head`; returns its pool slot.
    fn release(&mut self, head: u16) -> Option<usize> {
        let (slot, second) = self.inflight.get_mut(usize::from(head))?.take()?;
        self.free.push(head);
        if let Some(second) = second {
            self.free.push(second);
        }
        Some(slot)
    }
}

/// The driver side of one packed virtqueue (§2.8.21, §2.8.22): the
/// descriptor ring at `desc`, the driver event suppression structure at
/// `avail`, the device's at `used`.
struct PackedDriverQueue {
    desc: u64,
    driver_event: u64,
    device_event: u64,
    next_avail: RingPosition,
    next_used: RingPosition,
    free_slots: u16,
    free_ids: Vec<u16>,
    /// Per Buffer ID: the pool slot and the ring slots the chain spans.
    inflight: Vec<Option<(usize, u16)>>,
    /// Per Buffer ID: the buffer address (receive queue).
    buffer: Vec<u64>,
}

impl PackedDriverQueue {
    fn new(desc: u64, avail: u64, used: u64) -> Self {
        Self {
            desc: GPA_BASE + desc,
            driver_event: GPA_BASE + avail,
            device_event: GPA_BASE + used,
            next_avail: RingPosition::START,
            next_used: RingPosition::START,
            free_slots: QUEUE_SIZE,
            free_ids: (0..QUEUE_SIZE).rev().collect(),
            inflight: vec![None; usize::from(QUEUE_SIZE)],
            buffer: vec![0; usize::from(QUEUE_SIZE)],
        }
    }

    fn avail_bits(wrap: bool) -> u16 {
        if wrap {
            VIRTQ_DESC_F_AVAIL
        } else {
            VIRTQ_DESC_F_USED
        }
    }

    /// Makes the chain `parts` (`(addr, len, flags)`) available: every
    /// descriptor but the head's flags first, the head's flags last
    /// (§2.8.21: they publish the chain).
    fn add(&mut self, g: &GuestAccess<'_>, parts: &[(u64, u32, u16)], pool_slot: usize) -> u16 {
        let id = self.free_ids.pop().unwrap_or(0);
        let count = parts.len() as u16;
        let head = self.next_avail;
        let mut pos = head;
        let mut head_flags = 0;
        for (k, &(addr, len, flags)) in parts.iter().enumerate() {
            let at = self.desc + 16 * u64::from(pos.index);
            let mut body = [0u8; 14];
            body[..8].copy_from_slice(&addr.to_le_bytes());
            body[8..12].copy_from_slice(&len.to_le_bytes());
            body[12..14].copy_from_slice(&id.to_le_bytes());
            g.write(at, &body);
            let flags = flags | Self::avail_bits(pos.wrap);
            if k == 0 {
                head_flags = flags;
            } else {
                g.write_u16(at + 14, flags);
            }
            pos = pos.advance(1, QUEUE_SIZE);
        }
        g.write_u16(self.desc + 16 * u64::from(head.index) + 14, head_flags);
        // The device's event suppression structure, as a driver deciding
        // whether to notify reads it (the oracle polls the device anyway).
        let _ = g.read_u16(self.device_event + 2);
        self.next_avail = pos;
        self.free_slots -= count;
        self.inflight[usize::from(id)] = Some((pool_slot, count));
        id
    }

    /// Takes the next used descriptor, if any: `(Buffer ID, len)`.
    fn take_used(&mut self, g: &GuestAccess<'_>) -> Option<(u16, u32)> {
        let at = self.desc + 16 * u64::from(self.next_used.index);
        let flags = g.read_u16(at + 14);
        let used = flags & VIRTQ_DESC_F_USED != 0;
        let avail = flags & VIRTQ_DESC_F_AVAIL != 0;
        if used != self.next_used.wrap || avail != self.next_used.wrap {
            return None;
        }
        let mut body = [0u8; 6];
        g.read(at + 8, &mut body);
        let len = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
        let id = u16::from_le_bytes([body[4], body[5]]);
        let slots = self
            .inflight
            .get(usize::from(id))
            .copied()
            .flatten()
            .map_or(1, |(_, n)| n);
        self.next_used = self.next_used.advance(slots, QUEUE_SIZE);
        // EVENT_IDX: interrupt me at the next used slot (§2.8.10).
        g.write_u16(self.driver_event, self.next_used.off_wrap());
        g.write_u16(self.driver_event + 2, 2);
        Some((id, len))
    }

    fn release(&mut self, id: u16) -> Option<usize> {
        let (slot, count) = self.inflight.get_mut(usize::from(id))?.take()?;
        self.free_ids.push(id);
        self.free_slots += count;
        Some(slot)
    }
}

/// Which ring a driver queue is.
enum DriverRing {
    /// Split (§2.7).
    Split(DriverQueue),
    /// Packed (§2.8).
    Packed(PackedDriverQueue),
}

impl DriverRing {
    fn new(packed: bool, desc: u64, avail: u64, used: u64) -> Self {
        if packed {
            DriverRing::Packed(PackedDriverQueue::new(desc, avail, used))
        } else {
            DriverRing::Split(DriverQueue::new(desc, avail, used))
        }
    }

    fn layout(&self) -> (u64, u64, u64) {
        match self {
            DriverRing::Split(q) => (q.desc, q.avail, q.used),
            DriverRing::Packed(q) => (q.desc, q.driver_event, q.device_event),
        }
    }

    /// Whether a chain of `n` descriptors fits.
    fn room(&self, n: usize) -> bool {
        match self {
            DriverRing::Split(q) => q.free.len() >= n,
            DriverRing::Packed(q) => usize::from(q.free_slots) >= n && !q.free_ids.is_empty(),
        }
    }

    /// Makes the chain `parts` (`(addr, len, flags)`) available; returns
    /// the head (split) or Buffer ID (packed) the device will use it by.
    fn add(&mut self, g: &GuestAccess<'_>, parts: &[(u64, u32, u16)], pool_slot: usize) -> u16 {
        match self {
            DriverRing::Split(q) => {
                let indices: Vec<u16> = parts.iter().map(|_| q.free.pop().unwrap_or(0)).collect();
                for (k, &(addr, len, flags)) in parts.iter().enumerate() {
                    let next = indices.get(k + 1).copied();
                    let flags = flags | if next.is_some() { DESC_F_NEXT } else { 0 };
                    q.write_desc(g, indices[k], addr, len, flags, next.unwrap_or(0));
                }
                let head = indices[0];
                q.inflight[usize::from(head)] = Some((pool_slot, indices.get(1).copied()));
                q.publish(g, head);
                head
            }
            DriverRing::Packed(q) => {
                let with_next: Vec<(u64, u32, u16)> = parts
                    .iter()
                    .enumerate()
                    .map(|(k, &(a, l, f))| {
                        (a, l, f | if k + 1 < parts.len() { DESC_F_NEXT } else { 0 })
                    })
                    .collect();
                q.add(g, &with_next, pool_slot)
            }
        }
    }

    fn take_used(&mut self, g: &GuestAccess<'_>) -> Option<(u16, u32)> {
        match self {
            DriverRing::Split(q) => q.take_used(g),
            DriverRing::Packed(q) => q.take_used(g),
        }
    }

    fn release(&mut self, id: u16) -> Option<usize> {
        match self {
            DriverRing::Split(q) => q.release(id),
            DriverRing::Packed(q) => q.release(id),
        }
    }

    fn buffer_mut(&mut self) -> &mut Vec<u64> {
        match self {
            DriverRing::Split(q) => &mut q.buffer,
            DriverRing::Packed(q) => &mut q.buffer,
        }
    }
}

/// What the driver observed.
#[derive(Clone, Copy, Debug, Default)]
pub struct DriverStats {
    /// Frames queued for transmit.
    pub sent: u64,
    /// Frames received intact.
    pub received: u64,
    /// Received frames that differ from what was sent (a protocol bug: the
    /// simulator hands out true values, so caches cannot cause this).
    pub mismatched: u64,
}

/// The driver.
pub struct GuestDriver {
    rx: DriverRing,
    tx: DriverRing,
    free_slots: Vec<usize>,
    /// Frames sent and not yet received back, in order.
    expected: VecDeque<Vec<u8>>,
    /// What the driver observed.
    pub stats: DriverStats,
}

impl GuestDriver {
    /// A driver on split rings at the fixed offsets above.
    pub fn new() -> Self {
        Self::with_rings(false)
    }

    /// A driver on split or packed (`packed`) rings at the fixed offsets above.
    pub fn with_rings(packed: bool) -> Self {
        Self {
            rx: DriverRing::new(packed, RX_DESC, RX_AVAIL, RX_USED),
            tx: DriverRing::new(packed, TX_DESC, TX_AVAIL, TX_USED),
            free_slots: (0..SLOTS).collect(),
            expected: VecDeque::new(),
            stats: DriverStats::default(),
        }
    }
}

impl Default for GuestDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl GuestDriver {
    /// `(desc, avail, used)` guest-physical addresses of queue `index` (0
    /// RX, 1 TX); for a packed ring the descriptor ring and the driver's
    /// and the device's event suppression structures.
    pub fn layout(&self, index: usize) -> (u64, u64, u64) {
        if index == 0 {
            self.rx.layout()
        } else {
            self.tx.layout()
        }
    }

    fn take_slot(&mut self, rng: &mut Rng) -> Option<usize> {
        if self.free_slots.is_empty() {
            return None;
        }
        let i = rng.below(self.free_slots.len() as u64) as usize;
        Some(self.free_slots.swap_remove(i))
    }

    fn slot_addr(slot: usize, rng: &mut Rng) -> u64 {
        // 4-aligned offsets inside the slot: buffers start mid-line.
        GPA_BASE + POOL + slot as u64 * SLOT + 4 * rng.below(8)
    }

    /// Queues one frame for transmit, as one or two descriptors. Returns
    /// whether it did anything.
    pub fn send(&mut self, g: &GuestAccess<'_>, rng: &mut Rng) -> bool {
        if !self.tx.room(2) {
            return false;
        }
        let Some(slot) = self.take_slot(rng) else {
            return false;
        };
        let addr = Self::slot_addr(slot, rng);
        let frame_len = 14 + rng.below(137) as usize;
        let mut bytes = vec![0u8; HEADER_LEN + frame_len];
        for b in &mut bytes[HEADER_LEN..] {
            *b = rng.next() as u8;
        }
        g.write(addr, &bytes);
        if rng.below(2) == 0 {
            self.tx.add(g, &[(addr, bytes.len() as u32, 0)], slot);
        } else {
            // Header and frame in two descriptors, as drivers without ANY_LAYOUT do.
            self.tx.add(
                g,
                &[
                    (addr, HEADER_LEN as u32, 0),
                    (addr + HEADER_LEN as u64, frame_len as u32, 0),
                ],
                slot,
            );
        }
        self.expected.push_back(bytes[HEADER_LEN..].to_vec());
        self.stats.sent += 1;
        true
    }

    /// Posts one receive buffer. Returns whether it did anything.
    pub fn post_rx(&mut self, g: &GuestAccess<'_>, rng: &mut Rng) -> bool {
        if !self.rx.room(1) {
            return false;
        }
        let Some(slot) = self.take_slot(rng) else {
            return false;
        };
        let addr = Self::slot_addr(slot, rng);
        let id = self.rx.add(g, &[(addr, RX_BUFFER_LEN, DESC_F_WRITE)], slot);
        if let Some(b) = self.rx.buffer_mut().get_mut(usize::from(id)) {
            *b = addr;
        }
        true
    }

    /// Whether the frames just queued for transmit must be notified (a
    /// packed ring: always, the oracle does not model its suppression).
    pub fn tx_needs_kick(&mut self, g: &GuestAccess<'_>) -> bool {
        match &mut self.tx {
            DriverRing::Split(q) => q.needs_kick(g),
            DriverRing::Packed(_) => true,
        }
    }

    /// Frames sent and not received back yet.
    pub fn outstanding(&self) -> usize {
        self.expected.len()
    }

    /// Reaps completed transmits and received frames. Returns whether it did anything.
    pub fn reap(&mut self, g: &GuestAccess<'_>) -> bool {
        let mut any = false;
        while let Some((head, _)) = self.tx.take_used(g) {
            any = true;
            if let Some(slot) = self.tx.release(head) {
                self.free_slots.push(slot);
            }
        }
        while let Some((head, len)) = self.rx.take_used(g) {
            any = true;
            let addr = self
                .rx
                .buffer_mut()
                .get(usize::from(head))
                .copied()
                .unwrap_or(GPA_BASE);
            let mut data = vec![0u8; (len as usize).min(RX_BUFFER_LEN as usize)];
            g.read(addr, &mut data);
            match self.expected.pop_front() {
                Some(want)
                    if data.len() == HEADER_LEN + want.len() && data[HEADER_LEN..] == want[..] =>
                {
                    self.stats.received += 1;
                }
                _ => self.stats.mismatched += 1,
            }
            if let Some(slot) = self.rx.release(head) {
                self.free_slots.push(slot);
            }
        }
        any
    }
}
