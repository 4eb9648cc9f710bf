//! A simulated guest virtio-net driver that reaches its rings and buffers
//! through the guest's own alias (split rings, VIRTIO_F_EVENT_IDX, no
//! MRG_RXBUF), with a shared buffer pool whose slots do not align with
//! cache lines, so buffers of both directions share lines.

use std::collections::VecDeque;
use std::vec;
use std::vec::Vec;

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

struct DriverQueue {
    desc: u64,
    avail: u64,
    used: u64,
    free: Vec<u16>,
    avail_idx: u16,
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
    rx: DriverQueue,
    tx: DriverQueue,
    free_slots: Vec<usize>,
    /// Frames sent and not yet received back, in order.
    expected: VecDeque<Vec<u8>>,
    /// What the driver observed.
    pub stats: DriverStats,
}

impl GuestDriver {
    /// A driver whose rings sit at the fixed offsets above.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Default for GuestDriver {
    fn default() -> Self {
        Self::fresh()
    }
}

impl GuestDriver {
    fn fresh() -> Self {
        Self {
            rx: DriverQueue::new(RX_DESC, RX_AVAIL, RX_USED),
            tx: DriverQueue::new(TX_DESC, TX_AVAIL, TX_USED),
            free_slots: (0..SLOTS).collect(),
            expected: VecDeque::new(),
            stats: DriverStats::default(),
        }
    }

    /// `(desc, avail, used)` guest-physical addresses of queue `index` (0 RX, 1 TX).
    pub fn layout(&self, index: usize) -> (u64, u64, u64) {
        let q = if index == 0 { &self.rx } else { &self.tx };
        (q.desc, q.avail, q.used)
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
        if self.tx.free.len() < 2 {
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
        let head = self.tx.free.pop().unwrap_or(0);
        if rng.below(2) == 0 {
            self.tx.write_desc(g, head, addr, bytes.len() as u32, 0, 0);
            self.tx.inflight[usize::from(head)] = Some((slot, None));
        } else {
            // Header and frame in two descriptors, as drivers without ANY_LAYOUT do.
            let second = self.tx.free.pop().unwrap_or(0);
            self.tx
                .write_desc(g, head, addr, HEADER_LEN as u32, DESC_F_NEXT, second);
            self.tx
                .write_desc(g, second, addr + HEADER_LEN as u64, frame_len as u32, 0, 0);
            self.tx.inflight[usize::from(head)] = Some((slot, Some(second)));
        }
        self.tx.publish(g, head);
        self.expected.push_back(bytes[HEADER_LEN..].to_vec());
        self.stats.sent += 1;
        true
    }

    /// Posts one receive buffer. Returns whether it did anything.
    pub fn post_rx(&mut self, g: &GuestAccess<'_>, rng: &mut Rng) -> bool {
        let Some(&head) = self.rx.free.last() else {
            return false;
        };
        let Some(slot) = self.take_slot(rng) else {
            return false;
        };
        self.rx.free.pop();
        let addr = Self::slot_addr(slot, rng);
        self.rx
            .write_desc(g, head, addr, RX_BUFFER_LEN, DESC_F_WRITE, 0);
        self.rx.inflight[usize::from(head)] = Some((slot, None));
        self.rx.buffer[usize::from(head)] = addr;
        self.rx.publish(g, head);
        true
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
                .buffer
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
