//! Driver-side helpers for tests (feature `test-utils`): a [`MockQueue`]
//! that plays the guest driver of a split (§2.7) or packed (§2.8) ring
//! over any [`GuestMemory`], and a minimal virtio-net driver,
//! [`MockNetDriver`], that brings a device up through its MMIO registers
//! and moves frames (with MRG_RXBUF, which the `virtio-drivers` crate does
//! not implement) on either ring format.
//!
//! The packed side is written from §2.8.21's driver example: buffer IDs
//! from a free list, descriptors written in ring order with the driver's
//! wrap counter in AVAIL/USED, the first descriptor's flags last (Release),
//! used buffers found by the used wrap counter and skipped by the slots
//! their buffer took, and both event suppression structures.

// Test helpers: values are small by construction; truncating casts keep them short.
#![allow(clippy::cast_possible_truncation)]

use core::num::Wrapping;
use core::sync::atomic::Ordering;

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use chroma_mem::{GuestMemory, GuestPhysAddr};

use crate::mmio::{feature, reg, status, MmioAction};
use crate::net::VirtioNet;
use crate::port::NET_HEADER_LEN;
use crate::queue::{
    avail_ring_bytes, descriptor_table_bytes, need_event, used_ring_bytes, QueueLayout,
    DESCRIPTOR_SIZE, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
};
use crate::VirtioError;

mod packed;
pub use packed::{PackedDescriptor, PackedDriver};

/// Which ring format a mock driver asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingFormat {
    /// Split virtqueues (§2.7).
    Split,
    /// Packed virtqueues (§2.8): VIRTIO_F_RING_PACKED must be offered.
    Packed,
}

impl RingFormat {
    /// Both formats, for tests that run one body on each.
    pub const BOTH: [RingFormat; 2] = [RingFormat::Split, RingFormat::Packed];
}

/// A raw descriptor as a driver writes it (§2.7.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawDescriptor {
    /// Buffer address.
    pub addr: u64,
    /// Buffer length.
    pub len: u32,
    /// VIRTQ_DESC_F_* flags.
    pub flags: u16,
    /// Next index when NEXT is set.
    pub next: u16,
}

impl RawDescriptor {
    /// The 16 little-endian bytes of the descriptor.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.flags.to_le_bytes());
        b[14..].copy_from_slice(&self.next.to_le_bytes());
        b
    }
}

/// The driver side of one virtqueue laid out in guest memory: split, or
/// packed ([`MockQueue::new_packed`]). The split-only methods (raw avail
/// ring access) do nothing useful on a packed queue; [`MockQueue::packed`]
/// reaches the packed ring's own.
pub struct MockQueue<'m, M: GuestMemory> {
    mem: &'m M,
    /// Where the three parts are (for a packed ring: descriptor ring,
    /// driver and device event suppression structures).
    pub layout: QueueLayout,
    packed: Option<PackedDriver<'m, M>>,
    avail_idx: Wrapping<u16>,
    last_used: Wrapping<u16>,
    free: Vec<u16>,
    chains: Vec<Vec<u16>>,
    kicked_at: Wrapping<u16>,
    outstanding: Vec<bool>,
    /// Used elements whose id was not an outstanding head (returned twice, or never posted).
    pub bad_returns: u32,
    /// Ids made available and not yet used, oldest first.
    avail_order: VecDeque<u32>,
    /// Used elements that came back before an older buffer of the same
    /// queue: what VIRTIO_F_IN_ORDER forbids (§2.7.9, §2.8.9).
    pub out_of_order: u32,
}

fn gpa(raw: u64) -> GuestPhysAddr {
    GuestPhysAddr::new(raw)
}

impl<'m, M: GuestMemory> MockQueue<'m, M> {
    /// A queue of `size` entries whose parts start at `base` (16-aligned).
    pub fn new(mem: &'m M, base: u64, size: u16) -> Self {
        let desc = base;
        let avail = desc + descriptor_table_bytes(size);
        let used = (avail + avail_ring_bytes(size) + 3) & !3;
        let q = Self {
            mem,
            layout: QueueLayout {
                size,
                desc: gpa(desc),
                avail: gpa(avail),
                used: gpa(used),
            },
            avail_idx: Wrapping(0),
            last_used: Wrapping(0),
            free: (0..size).rev().collect(),
            chains: vec![Vec::new(); usize::from(size)],
            kicked_at: Wrapping(0),
            outstanding: vec![false; usize::from(size)],
            bad_returns: 0,
            avail_order: VecDeque::new(),
            out_of_order: 0,
            packed: None,
        };
        let zero = vec![0u8; (used + used_ring_bytes(size) - desc) as usize];
        let _ = mem.write(gpa(desc), &zero);
        q
    }

    /// A packed queue of `size` entries at `base` (16-aligned).
    pub fn new_packed(mem: &'m M, base: u64, size: u16) -> Self {
        let packed = PackedDriver::new(mem, base, size);
        Self {
            mem,
            layout: packed.layout,
            avail_idx: Wrapping(0),
            last_used: Wrapping(0),
            free: Vec::new(),
            chains: Vec::new(),
            kicked_at: Wrapping(0),
            outstanding: Vec::new(),
            bad_returns: 0,
            avail_order: VecDeque::new(),
            out_of_order: 0,
            packed: Some(packed),
        }
    }

    /// The packed ring's driver, if this queue is packed.
    pub fn packed(&mut self) -> Option<&mut PackedDriver<'m, M>> {
        self.packed.as_mut()
    }

    /// Whether this queue is packed.
    pub fn is_packed(&self) -> bool {
        self.packed.is_some()
    }

    /// First byte after the used ring (packed: after the device event
    /// suppression structure).
    pub fn end(&self) -> u64 {
        if let Some(p) = &self.packed {
            return p.end();
        }
        self.layout.used.raw() + used_ring_bytes(self.layout.size)
    }

    /// Where the device publishes used buffers, `[lo, hi)`: used.idx, or
    /// the packed descriptor ring (where its publishing flags store is the
    /// only Release store it makes).
    pub fn publish_range(&self) -> (u64, u64) {
        match &self.packed {
            Some(_) => (self.layout.desc.raw(), self.layout.avail.raw()),
            None => (self.layout.used.raw() + 2, self.layout.used.raw() + 4),
        }
    }

    /// The id the next [`Self::add_chain`] of one buffer will return (the
    /// descriptor index, or the packed Buffer ID), if there is room.
    pub fn next_free(&self) -> Option<u16> {
        match &self.packed {
            Some(p) => p.next_free_id().filter(|_| p.free_count() > 0),
            None => self.free.last().copied(),
        }
    }

    /// Writes descriptor `index` verbatim.
    pub fn write_descriptor(&self, index: u16, d: RawDescriptor) {
        let at = self.layout.desc.raw() + DESCRIPTOR_SIZE * u64::from(index);
        let _ = self.mem.write(gpa(at), &d.to_bytes());
    }

    /// Records `id` as made available, for the in-order count. A driver
    /// never has more buffers out than the queue has entries, so the
    /// record keeps at most that many: a user that re-posts buffers without
    /// reaping them ([`Self::pop_used`]) does not make it grow without end.
    fn remember_avail(&mut self, id: u16) {
        if self.avail_order.len() >= usize::from(self.layout.size.max(1)) {
            self.avail_order.pop_front();
        }
        self.avail_order.push_back(u32::from(id));
    }

    /// The ring slot of free-running index `index`: a mask for a size
    /// that is a power of two (a division costs a benchmark's driver side
    /// more than the rest of a post), the remainder otherwise (a hostile
    /// test's queue size).
    fn ring_slot(&self, index: u16) -> u16 {
        let size = self.layout.size;
        if size.is_power_of_two() {
            index & (size - 1)
        } else {
            index % size
        }
    }

    /// Puts `head` in the next avail slot and publishes avail.idx (Release).
    pub fn push_avail(&mut self, head: u16) {
        self.remember_avail(head);
        if let Some(o) = self.outstanding.get_mut(usize::from(head)) {
            *o = true;
        }
        let slot = u64::from(self.ring_slot(self.avail_idx.0));
        let _ = self.mem.store_u16(
            gpa(self.layout.avail.raw() + 4 + 2 * slot),
            head,
            Ordering::Relaxed,
        );
        self.avail_idx += 1;
        self.publish_avail_idx(self.avail_idx.0);
    }

    /// Writes avail.idx directly (a hostile driver may write anything).
    pub fn publish_avail_idx(&mut self, idx: u16) {
        self.avail_idx = Wrapping(idx);
        let _ = self
            .mem
            .store_u16(gpa(self.layout.avail.raw() + 2), idx, Ordering::Release);
    }

    /// The avail.idx this driver published last.
    pub fn avail_idx(&self) -> u16 {
        self.avail_idx.0
    }

    /// Heads made available and not yet returned by the device.
    pub fn outstanding_count(&self) -> usize {
        if let Some(p) = &self.packed {
            return p.outstanding_count();
        }
        self.outstanding.iter().filter(|o| **o).count()
    }

    /// Free descriptors left.
    pub fn free_count(&self) -> usize {
        if let Some(p) = &self.packed {
            return p.free_count();
        }
        self.free.len()
    }

    /// Adds a chain of `(addr, len, device_writable)` buffers and makes it
    /// available. `None` if there are not enough free descriptors.
    pub fn add_chain(&mut self, buffers: &[(u64, u32, bool)]) -> Option<u16> {
        if let Some(p) = &mut self.packed {
            let id = p.add_chain(buffers)?;
            self.remember_avail(id);
            return Some(id);
        }
        if buffers.is_empty() || buffers.len() > self.free.len() {
            return None;
        }
        let indices: Vec<u16> = (0..buffers.len()).filter_map(|_| self.free.pop()).collect();
        for (k, &(addr, len, writable)) in buffers.iter().enumerate() {
            let mut flags = if writable { VIRTQ_DESC_F_WRITE } else { 0 };
            let next = indices.get(k + 1).copied().unwrap_or(0);
            if k + 1 < buffers.len() {
                flags |= VIRTQ_DESC_F_NEXT;
            }
            self.write_descriptor(
                indices[k],
                RawDescriptor {
                    addr,
                    len,
                    flags,
                    next,
                },
            );
        }
        let head = indices[0];
        self.chains[usize::from(head)] = indices;
        self.push_avail(head);
        Some(head)
    }

    /// Takes a free descriptor index (for hand-built hostile chains).
    pub fn take_free(&mut self) -> Option<u16> {
        self.free.pop()
    }

    /// Adds one descriptor pointing at an indirect table written at `table`
    /// holding `buffers` (§2.7.5.3).
    pub fn add_indirect(&mut self, table: u64, buffers: &[(u64, u32, bool)]) -> Option<u16> {
        if let Some(p) = &mut self.packed {
            let id = p.add_indirect(table, buffers)?;
            self.remember_avail(id);
            return Some(id);
        }
        let head = self.free.pop()?;
        for (k, &(addr, len, writable)) in buffers.iter().enumerate() {
            let mut flags = if writable { VIRTQ_DESC_F_WRITE } else { 0 };
            if k + 1 < buffers.len() {
                flags |= VIRTQ_DESC_F_NEXT;
            }
            let d = RawDescriptor {
                addr,
                len,
                flags,
                next: (k + 1) as u16,
            };
            let _ = self.mem.write(gpa(table + 16 * k as u64), &d.to_bytes());
        }
        let len = (16 * buffers.len()) as u32;
        self.write_descriptor(
            head,
            RawDescriptor {
                addr: table,
                len,
                flags: VIRTQ_DESC_F_INDIRECT,
                next: 0,
            },
        );
        self.chains[usize::from(head)] = vec![head];
        self.push_avail(head);
        Some(head)
    }

    /// The device's used.idx (Acquire).
    pub fn used_idx(&self) -> u16 {
        self.mem
            .load_u16(gpa(self.layout.used.raw() + 2), Ordering::Acquire)
            .unwrap_or(0)
    }

    /// Takes the next used element `(id, len)` and frees its descriptors;
    /// counts it in [`Self::out_of_order`] if an older buffer is still out.
    pub fn pop_used(&mut self) -> Option<(u32, u32)> {
        let used = match &mut self.packed {
            Some(p) => {
                let used = p.pop_used();
                self.bad_returns = p.bad_returns;
                used
            }
            None => self.pop_used_split(),
        };
        if let Some((id, _)) = used {
            match self.avail_order.iter().position(|&o| o == id) {
                Some(0) => {
                    self.avail_order.pop_front();
                }
                Some(k) => {
                    self.avail_order.remove(k);
                    self.out_of_order += 1;
                }
                // Never made available through this driver: a bad return.
                None => {}
            }
        }
        used
    }

    fn pop_used_split(&mut self) -> Option<(u32, u32)> {
        if Wrapping(self.used_idx()) == self.last_used {
            return None;
        }
        let slot = u64::from(self.ring_slot(self.last_used.0));
        let mut e = [0u8; 8];
        let _ = self
            .mem
            .read(gpa(self.layout.used.raw() + 4 + 8 * slot), &mut e);
        self.last_used += 1;
        let id = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
        let len = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        match self.outstanding.get_mut(id as usize) {
            Some(o) if *o => *o = false,
            _ => self.bad_returns += 1,
        }
        if let Some(chain) = self.chains.get_mut(id as usize) {
            self.free.append(chain);
        }
        // §2.7.10: ask for an interrupt after the next used element.
        self.set_used_event(self.last_used.0);
        Some((id, len))
    }

    /// Writes used_event (`avail.ring[size]`).
    pub fn set_used_event(&self, value: u16) {
        let at = self.layout.avail.raw() + 4 + 2 * u64::from(self.layout.size);
        let _ = self.mem.store_u16(gpa(at), value, Ordering::Relaxed);
    }

    /// Reads avail_event (`used.ring[size]`).
    pub fn avail_event(&self) -> u16 {
        let at = self.layout.used.raw() + 4 + 8 * u64::from(self.layout.size);
        self.mem.load_u16(gpa(at), Ordering::Acquire).unwrap_or(0)
    }

    /// Writes avail.flags.
    pub fn set_avail_flags(&self, flags: u16) {
        let _ = self
            .mem
            .store_u16(self.layout.avail, flags, Ordering::Relaxed);
    }

    /// Whether the driver must notify now (§2.7.10 with EVENT_IDX: the
    /// device's avail_event was crossed since the last kick), and records
    /// the kick.
    pub fn take_kick(&mut self, event_idx: bool) -> bool {
        if let Some(p) = &mut self.packed {
            return p.take_kick(event_idx);
        }
        let old = self.kicked_at;
        let new = self.avail_idx;
        if old == new {
            return false;
        }
        self.kicked_at = new;
        !event_idx || need_event(Wrapping(self.avail_event()), new, old)
    }
}

/// Size of each buffer [`MockNetDriver`] posts for receive and transmit.
pub const MOCK_TX_BUFFER: u64 = 2048;

/// A small virtio-net driver over [`MockQueue`].
pub struct MockNetDriver<'m, M: GuestMemory> {
    mem: &'m M,
    /// receiveq1.
    pub rx: MockQueue<'m, M>,
    /// transmitq1.
    pub tx: MockQueue<'m, M>,
    rx_buffers: u64,
    rx_buffer_len: u32,
    tx_buffers: u64,
    /// Guest address of receive buffer 0 (buffer `i` follows at `i * rx_buffer_len`).
    pub rx_buffers_base: u64,
    /// The features negotiated.
    pub features: u64,
}

impl<'m, M: GuestMemory> MockNetDriver<'m, M> {
    /// Brings `dev` up through its registers (§3.1.1), accepting
    /// `wanted & offered` features, with queues of `size` entries and
    /// receive buffers of `rx_buffer_len` bytes, all placed from `base`.
    pub fn init(
        dev: &mut VirtioNet,
        mem: &'m M,
        base: u64,
        size: u16,
        rx_buffer_len: u32,
        wanted: u64,
    ) -> Result<Self, VirtioError> {
        Self::init_with(
            dev,
            mem,
            base,
            size,
            rx_buffer_len,
            wanted,
            RingFormat::Split,
        )
    }

    /// [`Self::init`] on ring `format`: with [`RingFormat::Packed`] it
    /// accepts VIRTIO_F_RING_PACKED (failing with `FeatureNotOffered` if
    /// the device does not offer it), with [`RingFormat::Split`] it
    /// declines it.
    pub fn init_with(
        dev: &mut VirtioNet,
        mem: &'m M,
        base: u64,
        size: u16,
        rx_buffer_len: u32,
        wanted: u64,
        format: RingFormat,
    ) -> Result<Self, VirtioError> {
        let packed = format == RingFormat::Packed;
        let wanted = if packed {
            wanted | feature::RING_PACKED
        } else {
            wanted & !feature::RING_PACKED
        };
        let w = |dev: &mut VirtioNet, off: u64, v: u32| {
            dev.mmio_write(off, 4, v, mem).map(|_: MmioAction| ())
        };
        w(dev, reg::STATUS, 0)?;
        w(dev, reg::STATUS, status::ACKNOWLEDGE)?;
        w(dev, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER)?;
        w(dev, reg::DEVICE_FEATURES_SEL, 0)?;
        let low = dev.mmio_read(reg::DEVICE_FEATURES, 4)?;
        w(dev, reg::DEVICE_FEATURES_SEL, 1)?;
        let high = dev.mmio_read(reg::DEVICE_FEATURES, 4)?;
        let features = ((u64::from(high) << 32) | u64::from(low)) & wanted;
        if packed && features & feature::RING_PACKED == 0 {
            return Err(VirtioError::FeatureNotOffered);
        }
        w(dev, reg::DRIVER_FEATURES_SEL, 0)?;
        w(dev, reg::DRIVER_FEATURES, features as u32)?;
        w(dev, reg::DRIVER_FEATURES_SEL, 1)?;
        w(dev, reg::DRIVER_FEATURES, (features >> 32) as u32)?;
        w(
            dev,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        )?;
        if dev.mmio_read(reg::STATUS, 4)? & status::FEATURES_OK == 0 {
            return Err(VirtioError::FeatureNotOffered);
        }
        let queue = |at: u64| {
            if packed {
                MockQueue::new_packed(mem, at, size)
            } else {
                MockQueue::new(mem, at, size)
            }
        };
        let mut rx = queue(base);
        let mut tx = queue((rx.end() + 15) & !15);
        let event_idx = features & feature::EVENT_IDX != 0;
        for q in [&mut rx, &mut tx] {
            if let Some(p) = q.packed() {
                p.set_event_idx(event_idx);
            }
        }
        for (index, q) in [(0u32, &rx), (1u32, &tx)] {
            let l = q.layout;
            w(dev, reg::QUEUE_SEL, index)?;
            w(dev, reg::QUEUE_NUM, u32::from(l.size))?;
            w(dev, reg::QUEUE_DESC_LOW, l.desc.raw() as u32)?;
            w(dev, reg::QUEUE_DESC_HIGH, (l.desc.raw() >> 32) as u32)?;
            w(dev, reg::QUEUE_DRIVER_LOW, l.avail.raw() as u32)?;
            w(dev, reg::QUEUE_DRIVER_HIGH, (l.avail.raw() >> 32) as u32)?;
            w(dev, reg::QUEUE_DEVICE_LOW, l.used.raw() as u32)?;
            w(dev, reg::QUEUE_DEVICE_HIGH, (l.used.raw() >> 32) as u32)?;
            w(dev, reg::QUEUE_READY, 1)?;
        }
        w(
            dev,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        )?;
        let rx_buffers = (tx.end() + 4095) & !4095;
        let tx_buffers = rx_buffers + u64::from(size) * u64::from(rx_buffer_len);
        Ok(Self {
            mem,
            rx,
            tx,
            rx_buffers,
            rx_buffer_len,
            tx_buffers,
            rx_buffers_base: rx_buffers,
            features,
        })
    }

    /// Guest address of transmit buffer `index`.
    pub fn tx_buffer(&self, index: u16) -> u64 {
        self.tx_buffers + u64::from(index) * MOCK_TX_BUFFER
    }

    /// First guest address after everything this driver placed.
    pub fn end(&self) -> u64 {
        self.tx_buffers + u64::from(self.tx.layout.size) * MOCK_TX_BUFFER
    }

    /// Posts receive buffers on every free receive descriptor.
    pub fn fill_rx(&mut self) {
        while self.rx.free_count() > 0 {
            let Some(index) = self.rx.next_free() else {
                break;
            };
            let addr = self.rx_buffers + u64::from(index) * u64::from(self.rx_buffer_len);
            self.rx.add_chain(&[(addr, self.rx_buffer_len, true)]);
        }
    }

    /// Queues `frame` for transmit with `header` (12 bytes); `false` if the
    /// ring is full. Completed transmits are reaped first.
    pub fn send_with_header(&mut self, header: &[u8; NET_HEADER_LEN], frame: &[u8]) -> bool {
        while self.tx.pop_used().is_some() {}
        let Some(index) = self.tx.next_free() else {
            return false;
        };
        let addr = self.tx_buffers + u64::from(index) * MOCK_TX_BUFFER;
        let _ = self.mem.write(gpa(addr), header);
        let _ = self.mem.write(gpa(addr + NET_HEADER_LEN as u64), frame);
        self.tx
            .add_chain(&[(addr, (NET_HEADER_LEN + frame.len()) as u32, false)])
            .is_some()
    }

    /// Queues `frame` with an all-zero header.
    pub fn send(&mut self, frame: &[u8]) -> bool {
        self.send_with_header(&[0; NET_HEADER_LEN], frame)
    }

    /// Takes the next received frame, merging buffers by `num_buffers`
    /// (§5.1.6.4), and re-posts the buffers. Returns header and frame.
    pub fn recv(&mut self) -> Option<([u8; NET_HEADER_LEN], Vec<u8>)> {
        let (id, len) = self.rx.pop_used()?;
        let mut data = self.read_rx(id, len);
        let mut header = [0u8; NET_HEADER_LEN];
        let n = data.len().min(NET_HEADER_LEN);
        header[..n].copy_from_slice(&data[..n]);
        let num_buffers = u16::from_le_bytes([header[10], header[11]]);
        for _ in 1..num_buffers {
            // The rest of the frame's buffers are already published (§5.1.6.4).
            let Some((id, len)) = self.rx.pop_used() else {
                break;
            };
            data.extend_from_slice(&self.read_rx(id, len));
        }
        self.fill_rx();
        let frame = data
            .get(NET_HEADER_LEN..)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        Some((header, frame))
    }

    fn read_rx(&self, id: u32, len: u32) -> Vec<u8> {
        let len = len.min(self.rx_buffer_len);
        let mut data = vec![0u8; len as usize];
        let addr = self.rx_buffers + u64::from(id) * u64::from(self.rx_buffer_len);
        let _ = self.mem.read(gpa(addr), &mut data);
        data
    }
}

/// A TCP GSO frame as a Linux driver hands it to the device (§5.1.6.2):
/// the virtio-net header (NEEDS_CSUM at the TCP checksum, `gso_type`,
/// `gso_size` = `mss`, `hdr_len` the headers), then Ethernet, IPv4 (ID
/// `ip_id`, DF) or IPv6, a TCP header with `tcp_option_words` words of
/// NOP options, sequence `seq`, flags `tcp_flags` (ECN with CWR), and
/// `payload`; the TCP checksum field holds the pseudo-header sum.
#[allow(clippy::too_many_arguments)] // one frame's whole description
pub fn tcp_gso_frame(
    dst: [u8; 6],
    src: [u8; 6],
    ipv6: bool,
    tcp_option_words: usize,
    mss: u16,
    seq: u32,
    tcp_flags: u8,
    payload: &[u8],
) -> (crate::port::NetHeader, Vec<u8>) {
    use crate::checksum::{fold, ones_complement_sum};
    use crate::gso;
    let mut f = Vec::with_capacity(payload.len() + 128);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(if ipv6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
    let l3 = f.len();
    let tcp_len = 20 + 4 * tcp_option_words.min(10) + payload.len();
    if ipv6 {
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(tcp_len as u16).to_be_bytes());
        f.extend_from_slice(&[6, 64]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    } else {
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
        f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        let sum = !fold(ones_complement_sum(0, &f[l3..]));
        f[l3 + 10..l3 + 12].copy_from_slice(&sum.to_be_bytes());
    }
    let l4 = f.len();
    let words = tcp_option_words.min(10);
    f.extend_from_slice(&[0x9c, 0x40, 0x13, 0x89]);
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&[
        0,
        0,
        0,
        1,
        ((5 + words) as u8) << 4,
        tcp_flags,
        0xff,
        0xff,
        0,
        0,
        0,
        0,
    ]);
    f.extend(core::iter::repeat_n(1u8, 4 * words));
    let headers_len = f.len();
    f.extend_from_slice(payload);
    let mut pseudo = if ipv6 {
        ones_complement_sum(0, &f[l3 + 8..l3 + 40])
    } else {
        ones_complement_sum(0, &f[l3 + 12..l3 + 20])
    };
    pseudo += 6 + tcp_len as u32;
    f[l4 + 16..l4 + 18].copy_from_slice(&fold(pseudo).to_be_bytes());
    let mut gso_type = if ipv6 {
        gso::VIRTIO_NET_HDR_GSO_TCPV6
    } else {
        gso::VIRTIO_NET_HDR_GSO_TCPV4
    };
    if tcp_flags & 0x80 != 0 {
        gso_type |= gso::VIRTIO_NET_HDR_GSO_ECN;
    }
    let header = crate::port::NetHeader {
        flags: crate::port::VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type,
        hdr_len: headers_len as u16,
        gso_size: mss,
        csum_start: l4 as u16,
        csum_offset: gso::TCP_CHECKSUM_OFFSET,
    };
    (header, f)
}

impl<M: GuestMemory> MockNetDriver<'_, M> {
    /// Queues `header ++ frame` (a GSO frame, longer than one TX buffer)
    /// written from `scratch` in guest memory, as a chain of `pieces`
    /// buffers: the header with the first 100 frame bytes, then equal
    /// parts (Linux: the linear part, then page fragments), each 64 bytes
    /// after the end of the one before (so none continues another). `false`
    /// if the ring is full. Completed transmits are reaped first.
    pub fn send_scattered(
        &mut self,
        header: &crate::port::NetHeader,
        frame: &[u8],
        scratch: u64,
        pieces: usize,
    ) -> bool {
        while self.tx.pop_used().is_some() {}
        let mut bytes = header.to_bytes(0).to_vec();
        bytes.extend_from_slice(frame);
        let first = (NET_HEADER_LEN + 100).min(bytes.len());
        let step = (bytes.len() - first).div_ceil(pieces.max(2) - 1).max(1);
        let mut chain = Vec::new();
        let (mut pos, mut at) = (0usize, scratch);
        while pos < bytes.len() {
            let n = if pos == 0 {
                first
            } else {
                step.min(bytes.len() - pos)
            };
            if self.mem.write(gpa(at), &bytes[pos..pos + n]).is_err() {
                return false;
            }
            chain.push((at, n as u32, false));
            pos += n;
            at += n as u64 + 64;
        }
        self.tx.add_chain(&chain).is_some()
    }
}
