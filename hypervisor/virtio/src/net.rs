//! The virtio-net device (virtio 1.2 §5.1): configuration space, feature
//! set, and [`NetPort`], which moves frames between a device's virtqueues
//! and the switch.
//!
//! Containment policy. A *structural* queue error (avail.idx jump, head or
//! next index out of range, a loop, a bad indirect table) means the driver
//! broke the ring: the device sets DEVICE_NEEDS_RESET (§2.1.2) and stops
//! touching its queues. A *frame* error (a buffer outside RAM, wrong
//! direction, zero length, short header, oversize, unsupported offload)
//! drops that frame, returns its chain to the used ring so nothing leaks,
//! and the switch counts it. Neither can affect another port.
// Guest buffers are parsed here: an index or slice must not panic (issue 10).
#![deny(clippy::indexing_slicing)]

use chroma_mem::{GuestMemory, GuestPhysAddr, MemError};

use crate::checksum;
use crate::gso::{self, GsoError};
use crate::mmio::{feature, DeviceBackend, MmioTransport};
use crate::packed::PackedQueue;
use crate::port::{
    DropReason, NetHeader, Port, RxPush, TxPoll, ETH_BLOCK, MAX_FRAME_LEN, MIN_FRAME_LEN,
    NET_HEADER_LEN, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE,
};
use crate::queue::{Descriptor, SplitQueue};
use crate::virtqueue::{Popped, Ring, Virtqueue, Walk};
use crate::VirtioError;

/// DeviceID of a network card (§5.1.1).
pub const DEVICE_ID_NET: u32 = 1;
/// receiveq1 index (§5.1.2).
pub const RX_QUEUE: usize = 0;
/// transmitq1 index (§5.1.2).
pub const TX_QUEUE: usize = 1;

/// virtio-net feature bits (§5.1.3).
pub mod net_feature {
    /// VIRTIO_NET_F_CSUM: the device takes packets with partial checksum.
    pub const CSUM: u64 = 1 << 0;
    /// VIRTIO_NET_F_GUEST_CSUM: the driver takes packets with partial checksum.
    pub const GUEST_CSUM: u64 = 1 << 1;
    /// VIRTIO_NET_F_MAC: the device has a MAC address in its config.
    pub const MAC: u64 = 1 << 5;
    /// VIRTIO_NET_F_GUEST_TSO4: the driver takes TCPv4 GSO frames.
    pub const GUEST_TSO4: u64 = 1 << 7;
    /// VIRTIO_NET_F_GUEST_TSO6: the driver takes TCPv6 GSO frames.
    pub const GUEST_TSO6: u64 = 1 << 8;
    /// VIRTIO_NET_F_GUEST_ECN: the driver takes GSO frames with GSO_ECN.
    pub const GUEST_ECN: u64 = 1 << 9;
    /// VIRTIO_NET_F_HOST_TSO4: the device takes TCPv4 GSO frames.
    pub const HOST_TSO4: u64 = 1 << 11;
    /// VIRTIO_NET_F_HOST_TSO6: the device takes TCPv6 GSO frames.
    pub const HOST_TSO6: u64 = 1 << 12;
    /// VIRTIO_NET_F_HOST_ECN: the device takes GSO frames with GSO_ECN.
    pub const HOST_ECN: u64 = 1 << 13;
    /// The TCP segmentation offloads, both ways (off with `tso = false`).
    pub const TSO: u64 = GUEST_TSO4 | GUEST_TSO6 | GUEST_ECN | HOST_TSO4 | HOST_TSO6 | HOST_ECN;
    /// VIRTIO_NET_F_MRG_RXBUF: the driver can merge receive buffers.
    pub const MRG_RXBUF: u64 = 1 << 15;
    /// VIRTIO_NET_F_STATUS: the config has a link status field.
    pub const STATUS: u64 = 1 << 16;
}

/// VIRTIO_NET_S_LINK_UP (§5.1.4).
pub const VIRTIO_NET_S_LINK_UP: u16 = 1;

/// Everything this device can offer. TCP segmentation offload goes both
/// ways ([`net_feature::TSO`]): a GSO frame goes whole to a port that
/// negotiated the matching GUEST_TSO*, and is cut into segments in
/// software ([`crate::gso`]) for any other. UFO/USO are not offered.
pub const NET_FEATURES: u64 = feature::VERSION_1
    | feature::INDIRECT_DESC
    | feature::EVENT_IDX
    | net_feature::CSUM
    | net_feature::GUEST_CSUM
    | net_feature::MAC
    | net_feature::MRG_RXBUF
    | net_feature::STATUS
    | net_feature::TSO
    | feature::IN_ORDER;

/// What [`new_net_device`] can offer: [`NET_FEATURES`] and, when the
/// owner asks for it, VIRTIO_F_RING_PACKED (the TX and RX paths below run
/// on either ring).
///
/// VIRTIO_F_IN_ORDER is offered because every path uses a queue's buffers
/// in the order they were popped, which is the order they were made
/// available: a TX chain is used (or given back by rewinding) before the
/// next is popped; a frame's RX chains are used in pop order, or all given
/// back by rewinding to the first. One used element is written per buffer
/// (the batching IN_ORDER allows is not used). The test drivers count any
/// buffer used before an older one (`MockQueue::out_of_order`).
pub const OFFERABLE_FEATURES: u64 = NET_FEATURES | feature::RING_PACKED;

/// Configuration-space offsets (§5.1.4).
pub mod config {
    /// `mac[6]`.
    pub const MAC: u64 = 0;
    /// `status: le16`.
    pub const STATUS: u64 = 6;
    /// `max_virtqueue_pairs: le16`.
    pub const MAX_VIRTQUEUE_PAIRS: u64 = 8;
    /// Size of the fields this device defines.
    pub const SIZE: usize = 10;
}

/// The virtio-net specific state: configuration space and offered features.
#[derive(Clone, Debug)]
pub struct NetBackend {
    mac: [u8; 6],
    link_up: bool,
    features: u64,
    /// Poll the TX queue while it is busy instead of asking for a kick per
    /// batch (set by the hypervisor, which then polls on the VM's exits).
    pub defer_tx: bool,
    /// TX kicks are suppressed right now: the owner must poll this device
    /// ([`poll_tx`]) until a poll finds nothing.
    pub tx_polling: bool,
    /// TX chains taken so far (the owner measures batches with it).
    pub tx_chains: u64,
    /// The owner passes every QueueNotify to the device (`mmio_write`):
    /// a TX ring whose notifications are armed and that was read empty
    /// since is not read again until the driver notifies
    /// (`SplitQueue::quiet`). Off by default: test harnesses that poll
    /// without delivering notifications keep reading the ring.
    pub wait_for_kicks: bool,
    /// The buffers of the TX frame a [`NetPort`] holds in place (after the
    /// virtio-net header; its `segment_count` says how many are valid).
    /// Kept with the device, not the port, so a port (built per switch
    /// run, a table of them on the stack) stays small.
    held_segments: Segments,
}

impl NetBackend {
    /// A device with `mac` offering `features & OFFERABLE_FEATURES` (tests
    /// offer less to run drivers without MRG_RXBUF or EVENT_IDX; the owner
    /// adds `feature::RING_PACKED` to offer packed rings).
    pub fn new(mac: [u8; 6], features: u64) -> Self {
        Self {
            mac,
            link_up: true,
            features: (features & OFFERABLE_FEATURES) | feature::VERSION_1,
            defer_tx: false,
            wait_for_kicks: false,
            tx_polling: false,
            tx_chains: 0,
            held_segments: [(GuestPhysAddr::new(0), 0); MAX_HELD_SEGMENTS],
        }
    }

    /// The MAC address in configuration space.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn config_bytes(&self) -> [u8; config::SIZE] {
        let mut b = [0u8; config::SIZE];
        b[..6].copy_from_slice(&self.mac);
        let status = if self.link_up {
            VIRTIO_NET_S_LINK_UP
        } else {
            0
        };
        b[6..8].copy_from_slice(&status.to_le_bytes());
        b[8..10].copy_from_slice(&1u16.to_le_bytes());
        b
    }
}

impl DeviceBackend for NetBackend {
    const DEVICE_ID: u32 = DEVICE_ID_NET;
    const QUEUE_COUNT: usize = 2;

    fn offered_features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let bytes = self.config_bytes();
        for (i, out) in data.iter_mut().enumerate() {
            // Beyond the defined fields the space reads as zero.
            *out = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| bytes.get(o).copied())
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) -> Result<(), VirtioError> {
        // §5.1.4: with VERSION_1 every field is read-only to the driver.
        Err(VirtioError::ReadOnlyRegister)
    }

    fn reset(&mut self) {
        self.tx_polling = false;
    }
}

/// A virtio-net device behind a virtio-mmio transport.
pub type VirtioNet = MmioTransport<NetBackend, 2>;

/// A new virtio-net device: `mac`, offering `features & OFFERABLE_FEATURES`,
/// queues of at most `queue_max` entries.
pub fn new_net_device(mac: [u8; 6], features: u64, queue_max: u16) -> VirtioNet {
    MmioTransport::new(NetBackend::new(mac, features), queue_max)
}

/// A poll of a device in deferred TX mode: returns whether its TX queue has
/// work (run the switch). When it has none the polling ends: kicks are
/// re-armed (`avail_event = next_avail`, then a re-check, §2.7.10), so the
/// driver's next chain notifies again.
pub fn poll_tx<M: GuestMemory>(dev: &mut VirtioNet, mem: &M) -> bool {
    if !dev.device.tx_polling {
        return false;
    }
    let (busy, polling) = match dev.queue_mut(TX_QUEUE).filter(|q| q.ready()) {
        None => (false, false),
        Some(q) => match q.has_available(mem) {
            Ok(true) => (true, true),
            // A chain added after has_available and before the re-arm is
            // seen by enable_notification's re-check.
            Ok(false) => (q.enable_notification(mem).unwrap_or(false), false),
            Err(_) => (false, false),
        },
    };
    dev.device.tx_polling = polling;
    mem.end_operation();
    busy
}

/// Changes the link state, with the configuration-change interrupt (§5.1.4).
pub fn set_link(dev: &mut VirtioNet, up: bool) {
    if dev.device.link_up != up {
        dev.device.link_up = up;
        dev.config_changed();
    }
}

/// Most receive chains one frame may span with MRG_RXBUF. A frame needs at
/// most 1530 bytes; a guest offering buffers so small that 64 do not hold it
/// loses the frame (the chains are returned with length 0).
pub const MAX_RX_CHAINS: usize = 64;

/// Most buffer descriptors walked to deliver one frame, over all its
/// receive chains (with the INDIRECT descriptors that lead to them, at
/// most twice as many reads). Without it a guest whose chains are each as long as the queue
/// allows (2 x queue size, §2.7.5.3.1) of empty buffers would cost
/// [`MAX_RX_CHAINS`] times that per frame; with it a frame costs no more
/// descriptor reads on receive than on transmit. Real drivers use one
/// descriptor per mergeable buffer, or ~20 for a big-packet chain.
pub const MAX_RX_DESCRIPTORS: usize = 512;

/// Most buffers a transmitted frame may span and still be delivered in
/// place ([`TxPoll::Held`]); a frame of at most [`MAX_FRAME_LEN`] bytes in
/// more is copied into the switch's buffer ([`TxPoll::Frame`]), a longer
/// (GSO) one is dropped ([`DropReason::TooManyBuffers`]). Linux sends a
/// frame in the header with the linear part, then one buffer per page
/// fragment: a 64 KiB GSO frame takes up to MAX_SKB_FRAGS (17) + 2 = 19.
/// Buffers that continue each other in guest memory count as one. The list
/// is kept with the device (384 bytes each), not in the per-run port.
pub const MAX_HELD_SEGMENTS: usize = 24;

/// The virtio-net header and the Ethernet header, read or written with
/// fixed-size accesses when one buffer holds both.
const HEADERS_LEN: usize = NET_HEADER_LEN + MIN_FRAME_LEN;

/// What walking a TX chain found: the length of header and frame, or why
/// the frame is dropped.
type TxVerdict = Result<usize, DropReason>;

/// A transmitted frame's buffers, after the virtio-net header.
type Segments = [(GuestPhysAddr, usize); MAX_HELD_SEGMENTS];

/// One virtio-net device bound to its VM's memory for one switch run.
///
/// A transmitted frame's chain stays popped (not yet used) until the switch
/// releases it ([`Port::release_tx`]) or gives it back
/// ([`Port::unpoll_tx`]); the next poll or [`Port::flush`] releases one
/// left over, so no chain leaks.
pub struct NetPort<'a, M: GuestMemory> {
    dev: &'a mut VirtioNet,
    mem: &'a M,
    /// The TX chain taken by the last poll and not yet used.
    held: Option<Popped>,
    /// How many of the device's `held_segments` hold the held frame's
    /// buffers, if it is delivered in place; 0 if it was copied instead.
    segment_count: usize,
    /// Length of the held frame.
    held_len: usize,
    /// What the device lets the port do, looked up once per run.
    live: Live,
}

/// What a device lets its port do in a switch run: looked up when the
/// port is made, not for every frame. Nothing else changes the device
/// while the port holds it (exclusively); the port's own change, a fatal
/// queue error ([`NetPort::fatal`]), takes both queues down here too.
#[derive(Clone, Copy, Debug)]
struct Live {
    /// The device is live (DRIVER_OK, no reset pending), its link up, and
    /// its TX queue ready.
    tx: bool,
    /// The same with its RX queue.
    rx: bool,
    /// The TX queue is a packed ring.
    tx_packed: bool,
    /// MRG_RXBUF was negotiated.
    mrg: bool,
    /// GUEST_CSUM was negotiated.
    guest_csum: bool,
}

impl Live {
    #[inline(always)]
    fn of(dev: &VirtioNet) -> Self {
        let up = dev.is_live() && dev.device.link_up;
        let ready = |index| up && dev.queue(index).is_some_and(Virtqueue::ready);
        Self {
            tx: ready(TX_QUEUE),
            rx: ready(RX_QUEUE),
            tx_packed: dev.queue(TX_QUEUE).is_some_and(Virtqueue::is_packed),
            mrg: dev.has_feature(net_feature::MRG_RXBUF),
            guest_csum: dev.has_feature(net_feature::GUEST_CSUM),
        }
    }
}

/// A port is one backend operation on its memory (the switch makes one
/// per run): letting go of it ends the operation, so writes whose cache
/// maintenance was merged and deferred reach the guest now
/// ([`GuestMemory::end_operation`]).
impl<M: GuestMemory> Drop for NetPort<'_, M> {
    fn drop(&mut self) {
        self.mem.end_operation();
    }
}

impl<'a, M: GuestMemory> NetPort<'a, M> {
    /// Binds `dev` to `mem`, the memory of the VM that owns it.
    pub fn new(dev: &'a mut VirtioNet, mem: &'a M) -> Self {
        // An operation starts: whatever reached this memory outside a port
        // (a poll, queue setup) ended before it, so nothing read or written
        // there counts as fresh or pending here.
        mem.end_operation();
        let live = Live::of(dev);
        Self {
            dev,
            mem,
            held: None,
            segment_count: 0,
            held_len: 0,
            live,
        }
    }

    /// Returns the held TX chain to the driver (used, length 0: §2.7.8, the
    /// device wrote nothing into it). `false` if the queue failed.
    ///
    /// Inline: once per frame (its release), and at every poll to find
    /// nothing held; a used element is a few stores into the queue's batch
    /// (`SplitQueue::add_used`), fewer instructions than a call.
    #[inline(always)]
    fn complete_held(&mut self) -> bool {
        let Some(head) = self.held.take() else {
            return true;
        };
        self.segment_count = 0;
        let mem = self.mem;
        let used = self
            .dev
            .queue_mut(TX_QUEUE)
            .map(|q| q.add_used(mem, &head, 0));
        if matches!(used, Some(Ok(()))) {
            return true;
        }
        self.fatal();
        false
    }

    /// The TX queue, if the device is live, its link up and the queue
    /// ready ([`Live`]).
    fn live_tx_queue(&mut self) -> Option<&mut Virtqueue> {
        if !self.live.tx {
            return None;
        }
        self.dev.queue_mut(TX_QUEUE)
    }

    /// The pieces of guest memory the held TX frame is in, if one is held.
    fn held_pieces(&self) -> Option<&[(GuestPhysAddr, usize)]> {
        let pieces = self.dev.device.held_segments.get(..self.segment_count)?;
        (self.held.is_some() && !pieces.is_empty()).then_some(pieces)
    }

    fn fatal(&mut self) -> DropReason {
        self.dev.fail();
        self.live.tx = false;
        self.live.rx = false;
        DropReason::QueueFailed
    }

    /// Pops the next TX chain and walks it ([`Self::read_tx_chain`]): the
    /// chain's token and what the walk found. `R` is the TX queue's format.
    #[inline(always)]
    fn take_tx<R: Ring>(
        &mut self,
        header: &mut [u8; NET_HEADER_LEN],
        frame: &mut [u8; MAX_FRAME_LEN],
    ) -> Result<Option<(Popped, TxVerdict)>, VirtioError> {
        let Some((head, mut chain)) = self.pop_tx_head::<R>()? else {
            return Ok(None);
        };
        let verdict = self.read_tx_chain(&mut chain, header, frame)?;
        Ok(Some((head, verdict)))
    }

    /// Pops the next TX chain, re-arming notifications when the ring is
    /// empty. `R` is the TX queue's format (none is popped from a queue of
    /// the other).
    #[inline(always)]
    fn pop_tx_head<R: Ring>(&mut self) -> Result<Option<(Popped, R::Chain)>, VirtioError> {
        let mem = self.mem;
        let wait_for_kicks = self.dev.device.wait_for_kicks;
        let Some(q) = self.live_tx_queue() else {
            return Ok(None);
        };
        // Armed and read empty since: the driver notifies before its next
        // chain, so an idle ring is not read again until then.
        if wait_for_kicks && q.quiet() {
            return Ok(None);
        }
        let Some(q) = R::of(q) else {
            return Ok(None);
        };
        if let Some(popped) = q.pop_chain(mem)? {
            self.dev.device.tx_chains += 1;
            return Ok(Some(popped));
        }
        // Deferred mode (EVENT_IDX only): keep the driver from kicking for the
        // next half ring and let the owner poll; otherwise re-arm now.
        let defer = self.dev.device.defer_tx;
        let Some(q) = self.live_tx_queue() else {
            return Ok(None);
        };
        let more = if defer && q.event_idx() {
            let ahead = (q.layout().size / 2).max(1);
            self.dev.device.tx_polling = true;
            let Some(q) = self.live_tx_queue() else {
                return Ok(None);
            };
            q.suppress_notification(mem, ahead)?
        } else {
            q.enable_notification(mem)?
        };
        let head = match self.live_tx_queue().and_then(R::of) {
            Some(q) if more => q.pop_chain(mem)?,
            _ => None,
        };
        self.dev.device.tx_chains += u64::from(head.is_some());
        Ok(head)
    }

    /// Walks one TX chain: the virtio-net header into `header`, the
    /// Ethernet header (the frame's first [`MIN_FRAME_LEN`] bytes) into
    /// `frame`, and the frame's buffers into the device's `held_segments`, each checked
    /// to be RAM. A frame in more than [`MAX_HELD_SEGMENTS`] buffers is
    /// copied into `frame` whole instead (`segment_count` 0).
    /// `Ok(Err(reason))` is a frame error, `Err` a fatal queue error.
    fn read_tx_chain<C: Walk>(
        &mut self,
        chain: &mut C,
        header: &mut [u8; NET_HEADER_LEN],
        frame: &mut [u8; MAX_FRAME_LEN],
    ) -> Result<Result<usize, DropReason>, VirtioError> {
        let mem = self.mem;
        let mut total: usize = 0;
        let mut verdict = Ok(());
        let mut count = 0usize;
        let mut in_place = true;
        let mut first = chain.next_descriptor(mem)?;
        // The common case: one readable buffer with both headers and a
        // frame no longer than an Ethernet frame. What the loop below does
        // with it, without walking on to find the chain's end (a GSO frame
        // in one buffer takes the loop).
        let plain = HEADERS_LEN..=NET_HEADER_LEN + MAX_FRAME_LEN;
        if let Some(d) =
            first.filter(|d| !d.writable && plain.contains(&(d.len as usize)) && chain.ended())
        {
            let read = read_headers(mem, &d, header, frame);
            let (Ok(()), Some(slot)) = (read, self.dev.device.held_segments.first_mut()) else {
                self.segment_count = 0;
                return Ok(Err(DropReason::BadAddress));
            };
            let len = d.len as usize;
            *slot = (
                d.addr.wrapping_add(NET_HEADER_LEN as u64),
                len - NET_HEADER_LEN,
            );
            self.segment_count = 1;
            return Ok(Ok(len));
        }
        // With HOST_TSO* a frame may be a GSO frame of up to 64 KiB (what
        // its header says is checked once the whole chain is read).
        let tso = self.dev.has_feature(net_feature::HOST_TSO4)
            || self.dev.has_feature(net_feature::HOST_TSO6);
        let fits = |end: usize| {
            end <= NET_HEADER_LEN + MAX_FRAME_LEN
                || (tso && end <= NET_HEADER_LEN + gso::MAX_GSO_FRAME_LEN)
        };
        loop {
            let d = match first.take() {
                Some(d) => d,
                None => match chain.next_descriptor(mem)? {
                    Some(d) => d,
                    None => break,
                },
            };
            if verdict.is_err() {
                // Keep walking: a structural error later in the chain is still fatal.
                continue;
            }
            if d.writable {
                verdict = Err(DropReason::WrongDirection);
                continue;
            }
            if d.len == 0 {
                verdict = Err(DropReason::ZeroLength);
                continue;
            }
            let len = d.len as usize;
            let Some(end) = total.checked_add(len).filter(|&e| fits(e)) else {
                verdict = Err(DropReason::TooLong);
                continue;
            };
            if total == 0 && len >= HEADERS_LEN {
                // The common case: both headers in the first buffer, read
                // at once (each access is a range check, and under a
                // maintaining policy cache hooks). Read into a buffer, not
                // returned as an array: a copy of an array returned in
                // registers stores it in pieces that the loads of the
                // header's fields straddle (a store-forwarding stall).
                if read_headers(mem, &d, header, frame).is_err() {
                    verdict = Err(DropReason::BadAddress);
                    continue;
                }
                if let Some(slot) = self.dev.device.held_segments.first_mut() {
                    *slot = (
                        d.addr.wrapping_add(NET_HEADER_LEN as u64),
                        len - NET_HEADER_LEN,
                    );
                    count = 1;
                }
                total = end;
                continue;
            }
            // The stream is header (12 bytes) then frame: split this buffer across both.
            let mut addr = d.addr;
            let mut pos = total;
            if pos < NET_HEADER_LEN {
                let n = (NET_HEADER_LEN - pos).min(end - pos);
                let read = header
                    .get_mut(pos..pos + n)
                    .is_some_and(|part| mem.read(addr, part).is_ok());
                if !read {
                    verdict = Err(DropReason::BadAddress);
                    continue;
                }
                pos += n;
                addr = GuestPhysAddr::new(addr.raw().wrapping_add(n as u64));
            }
            total = end;
            if end <= pos {
                continue;
            }
            // The frame part: frame bytes `from..to` at `addr`.
            let (from, to) = (pos - NET_HEADER_LEN, end - NET_HEADER_LEN);
            if mem.check_range(addr, (to - from) as u64).is_err() {
                verdict = Err(DropReason::BadAddress);
                continue;
            }
            // The Ethernet header is read now: the switch decides on it.
            let eth_end = to.min(MIN_FRAME_LEN);
            if from < eth_end
                && frame
                    .get_mut(from..eth_end)
                    .is_none_or(|part| mem.read(addr, part).is_err())
            {
                verdict = Err(DropReason::BadAddress);
                continue;
            }
            let mut copy_recorded = false;
            if in_place {
                // A buffer that goes on where the previous one ended in
                // guest memory extends it (Linux's page fragments of one
                // compound page do): one slot for both.
                let previous = count
                    .checked_sub(1)
                    .and_then(|i| self.dev.device.held_segments.get_mut(i));
                if let Some(last) =
                    previous.filter(|(at, n)| at.checked_add(*n as u64) == Some(addr))
                {
                    last.1 += to - from;
                    continue;
                }
                if let Some(slot) = self.dev.device.held_segments.get_mut(count) {
                    *slot = (addr, to - from);
                    count += 1;
                    continue;
                }
                // Too many buffers: copy what was recorded, then the rest as it comes.
                in_place = false;
                copy_recorded = true;
            }
            // Only a frame that fits the switch's buffer can be copied.
            if to > MAX_FRAME_LEN {
                verdict = Err(DropReason::TooManyBuffers);
                continue;
            }
            if copy_recorded {
                let recorded = self.dev.device.held_segments.get(..count).unwrap_or(&[]);
                if !read_segments(mem, recorded, MIN_FRAME_LEN, from, frame) {
                    verdict = Err(DropReason::BadAddress);
                    continue;
                }
            }
            let skip = MIN_FRAME_LEN.saturating_sub(from);
            if skip < to - from
                && frame
                    .get_mut(from + skip..to)
                    .is_none_or(|part| mem.read(addr.wrapping_add(skip as u64), part).is_err())
            {
                verdict = Err(DropReason::BadAddress);
            }
        }
        self.segment_count = if in_place { count } else { 0 };
        Ok(verdict.map(|()| total))
    }
}

/// Reads both headers from `d`, a buffer of at least [`HEADERS_LEN`]
/// bytes: the virtio-net header into `header`, the Ethernet header into
/// `frame` (with the frame's next two bytes if the buffer has them, as
/// [`ETH_BLOCK`] bytes), each straight from guest memory, the first read
/// checked against the whole buffer.
///
/// Two reads, not one of both into a buffer then split: LLVM splits such
/// a buffer's copies into pieces, and the Ethernet header must reach
/// `frame` as one 16-byte store (one load and one store of a 16-byte
/// copy): every later read of it, whole or an address, then lies inside
/// that store and is forwarded from it. A read straddling two stores is
/// not forwarded and waits for every older store to drain, on the hot
/// path the previous frame's copy into a receive buffer (measured: most
/// of a run's time, wherever that read was).
#[inline(always)]
fn read_headers<M: GuestMemory>(
    mem: &M,
    d: &Descriptor,
    header: &mut [u8; NET_HEADER_LEN],
    frame: &mut [u8; MAX_FRAME_LEN],
) -> Result<(), MemError> {
    mem.read_in_buffer(d.addr, u64::from(d.len), header)?;
    let eth_at = d.addr.wrapping_add(NET_HEADER_LEN as u64);
    let rest = u64::from(d.len).saturating_sub(NET_HEADER_LEN as u64);
    if rest >= ETH_BLOCK as u64 {
        if let Some(block) = frame.first_chunk_mut::<ETH_BLOCK>() {
            return mem.read_in_buffer(eth_at, rest, block);
        }
    }
    let eth = frame
        .first_chunk_mut::<MIN_FRAME_LEN>()
        .ok_or(MemError::Overflow)?;
    mem.read_in_buffer(eth_at, rest, eth)
}

/// Copies bytes `from..to` of a frame whose bytes lie in `segments` (in
/// order, from frame offset 0) into the same range of `frame`.
fn read_segments<M: GuestMemory>(
    mem: &M,
    segments: &[(GuestPhysAddr, usize)],
    from: usize,
    to: usize,
    frame: &mut [u8],
) -> bool {
    let mut start = 0usize;
    for &(addr, len) in segments {
        let end = start + len;
        let (a, b) = (from.max(start), to.min(end));
        if a < b {
            let ok = frame.get_mut(a..b).is_some_and(|part| {
                mem.read(addr.wrapping_add((a - start) as u64), part)
                    .is_ok()
            });
            if !ok {
                return false;
            }
        }
        start = end;
    }
    true
}

/// Copies frame bytes `offset..offset + buf.len()`, which lie in
/// `segments` (in order, from frame offset 0), into `buf`. `false` if they
/// do not all lie there or could not be read.
fn read_segments_at<M: GuestMemory>(
    mem: &M,
    segments: &[(GuestPhysAddr, usize)],
    offset: usize,
    buf: &mut [u8],
) -> bool {
    let Some(to) = offset.checked_add(buf.len()) else {
        return false;
    };
    let mut start = 0usize;
    let mut copied = 0usize;
    for &(addr, len) in segments {
        let end = start + len;
        let (a, b) = (offset.max(start), to.min(end));
        if a < b {
            let ok = buf.get_mut(a - offset..b - offset).is_some_and(|part| {
                mem.read(addr.wrapping_add((a - start) as u64), part)
                    .is_ok()
            });
            if !ok {
                return false;
            }
            copied += b - a;
        }
        start = end;
    }
    copied == buf.len()
}

impl<M: GuestMemory> Port for NetPort<'_, M> {
    fn poll_tx(&mut self, frame: &mut [u8; MAX_FRAME_LEN]) -> TxPoll {
        // A frame the caller neither released nor gave back is done with.
        if !self.complete_held() {
            return TxPoll::Dropped(DropReason::QueueFailed);
        }
        let mut header_bytes = [0u8; NET_HEADER_LEN];
        // The path is compiled once per ring format, chosen here.
        let taken = if self.live.tx_packed {
            self.take_tx::<PackedQueue>(&mut header_bytes, frame)
        } else {
            self.take_tx::<SplitQueue>(&mut header_bytes, frame)
        };
        let (head, verdict) = match taken {
            Ok(Some(taken)) => taken,
            Ok(None) => return TxPoll::Empty,
            Err(_) => return TxPoll::Dropped(self.fatal()),
        };
        // Held until the switch is done with the frame; a dropped one is
        // returned at once.
        self.held = Some(head);
        match self.check_tx(verdict, &header_bytes) {
            Ok(len) => {
                self.held_len = len;
                // Only NEEDS_CSUM travels on: DATA_VALID from a sender
                // means nothing to a receiver. The header is built here,
                // in the result, field by field, never as a whole value
                // copied in: a copy loads it wider than its fields were
                // stored (a store-forwarding stall, which waits for every
                // older store, the last frame's copy included, to drain).
                let mut header = NetHeader::from_bytes(&header_bytes);
                header.flags &= VIRTIO_NET_HDR_F_NEEDS_CSUM;
                if self.segment_count > 0 {
                    TxPoll::Held { len, header }
                } else {
                    TxPoll::Frame { len, header }
                }
            }
            Err(reason) => {
                if !self.complete_held() {
                    return TxPoll::Dropped(DropReason::QueueFailed);
                }
                TxPoll::Dropped(reason)
            }
        }
    }

    fn push_rx_held(
        &mut self,
        header: &NetHeader,
        eth: &[u8; MIN_FRAME_LEN],
        src: &Self,
    ) -> Option<RxPush> {
        let segments = src.dev.device.held_segments.get(..src.segment_count)?;
        if src.held.is_none() || segments.is_empty() {
            return None;
        }
        let payload = Payload::InPlace {
            eth,
            mem: src.mem,
            segments,
            len: src.held_len,
        };
        Some(self.push_payload(header, payload))
    }

    fn read_held(&mut self, frame: &mut [u8]) -> bool {
        self.held_pieces().is_some_and(|pieces| {
            read_segments(self.mem, pieces, MIN_FRAME_LEN, frame.len(), frame)
        })
    }

    fn read_held_at(&mut self, offset: usize, buf: &mut [u8]) -> bool {
        self.held_pieces()
            .is_some_and(|pieces| read_segments_at(self.mem, pieces, offset, buf))
    }

    fn accepts_gso(&self, gso_type: u8) -> bool {
        gso_accepted(self.dev, gso_type)
    }

    /// Inline: once per frame, its work a few stores (`complete_held`).
    #[inline(always)]
    fn release_tx(&mut self) {
        let _ = self.complete_held();
    }

    fn unpoll_tx(&mut self) -> bool {
        let Some(held) = self.held.take() else {
            return false;
        };
        self.segment_count = 0;
        match self.dev.queue_mut(TX_QUEUE) {
            Some(q) => {
                // The held chain is the last one popped: nothing was popped since.
                q.rewind_to(&held);
                self.dev.device.tx_chains = self.dev.device.tx_chains.saturating_sub(1);
                true
            }
            None => false,
        }
    }

    fn push_rx(&mut self, header: &NetHeader, frame: &[u8]) -> RxPush {
        self.push_payload(header, Payload::<M>::Bytes(frame))
    }

    fn accepts_partial_checksum(&self) -> bool {
        self.dev.has_feature(net_feature::GUEST_CSUM)
    }

    fn flush(&mut self) {
        // A frame the switch did not release would otherwise leak its chain.
        let _ = self.complete_held();
        let mem = self.mem;
        if !self.dev.is_live() {
            return;
        }
        let mut interrupt = false;
        for index in [RX_QUEUE, TX_QUEUE] {
            match self.dev.queue_mut(index).map(|q| q.publish_used(mem)) {
                Some(Ok(need)) => interrupt |= need,
                Some(Err(_)) => {
                    self.fatal();
                    return;
                }
                None => {}
            }
        }
        if interrupt {
            self.dev.raise_used_interrupt();
        }
    }
}

impl<M: GuestMemory> NetPort<'_, M> {
    /// Checks a walked TX chain and its virtio-net header: the frame's
    /// length and offloads (a GSO frame's headers last, [`Self::check_gso`]),
    /// or why it is dropped.
    fn check_tx(
        &self,
        verdict: Result<usize, DropReason>,
        header_bytes: &[u8; NET_HEADER_LEN],
    ) -> Result<usize, DropReason> {
        let total = verdict?;
        if total < NET_HEADER_LEN {
            return Err(DropReason::ShortHeader);
        }
        let len = total - NET_HEADER_LEN;
        if len < MIN_FRAME_LEN {
            return Err(DropReason::Runt);
        }
        let header = NetHeader::from_bytes(header_bytes);
        // §5.1.6.2: a GSO frame needs the HOST_TSO* of its type (and
        // HOST_ECN for GSO_ECN); its headers are checked by `check_gso`.
        // Any other frame fits an Ethernet frame. NEEDS_CSUM needs CSUM and
        // offsets inside the frame.
        if header.gso_type != VIRTIO_NET_HDR_GSO_NONE {
            gso_negotiated(self.dev, header.gso_type).map_err(DropReason::Gso)?;
        } else if len > MAX_FRAME_LEN {
            return Err(DropReason::TooLong);
        }
        if header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
            let field_end = usize::from(header.csum_start) + usize::from(header.csum_offset) + 2;
            if !self.dev.has_feature(net_feature::CSUM) || field_end > len {
                return Err(DropReason::BadHeader);
            }
        }
        if header.gso_type != VIRTIO_NET_HDR_GSO_NONE {
            // Only NEEDS_CSUM travels on (as `poll_tx` passes the header).
            let header = NetHeader {
                flags: header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM,
                ..header
            };
            self.check_gso(&header, len)?;
        }
        Ok(len)
    }

    /// Checks a held GSO frame's headers ([`gso::parse`]), read from its
    /// buffers.
    fn check_gso(&self, header: &NetHeader, len: usize) -> Result<(), DropReason> {
        let segments = self
            .dev
            .device
            .held_segments
            .get(..self.segment_count)
            .unwrap_or(&[]);
        if segments.is_empty() {
            // Copied (a short GSO frame in many buffers): not held, so the
            // switch could not pass it on whole.
            return Err(DropReason::Gso(GsoError::TooManyBuffers));
        }
        let mut headers = [0u8; gso::MAX_GSO_HEADERS_LEN];
        let n = len.min(headers.len());
        let read = headers
            .get_mut(..n)
            .is_some_and(|part| read_segments(self.mem, segments, 0, n, part));
        if !read {
            return Err(DropReason::BadAddress);
        }
        gso::parse(header, &headers, len)
            .map(|_| ())
            .map_err(DropReason::Gso)
    }

    /// Delivers `payload` into the RX queue.
    fn push_payload<S: GuestMemory>(
        &mut self,
        header: &NetHeader,
        payload: Payload<'_, S>,
    ) -> RxPush {
        let mem = self.mem;
        let Live {
            rx,
            mrg,
            guest_csum,
            ..
        } = self.live;
        // §5.1.6.4.1: num_buffers is 1 without MRG_RXBUF; with it, patched
        // (in deliver_merged) if the frame takes more chains. The bytes
        // are made from the header's fields, not from a copy of the whole
        // header: the sender's port stored it field by field, and a copy
        // loads it wider (a store-forwarding stall).
        // §5.1.6.4.1: without GUEST_CSUM the device sets flags to zero;
        // the switch completed any partial checksum already.
        let header_bytes = header.wire_bytes(1, guest_csum);
        if !rx {
            return RxPush::Dropped(DropReason::PortDown);
        }
        // The path is compiled once per ring format, chosen here.
        // Each format's result taken apart in its own arm: merged first,
        // the `Result` went through the stack.
        match self.dev.queue_mut(RX_QUEUE) {
            Some(Virtqueue::Split(q)) => match deliver(q, mem, &header_bytes, payload, mrg) {
                Ok(result) => result,
                Err(_) => RxPush::Dropped(self.fatal()),
            },
            Some(Virtqueue::Packed(q)) => match deliver(q, mem, &header_bytes, payload, mrg) {
                Ok(result) => result,
                Err(_) => RxPush::Dropped(self.fatal()),
            },
            None => RxPush::Dropped(DropReason::PortDown),
        }
    }
}

/// A frame on its way into an RX queue.
enum Payload<'s, S: GuestMemory> {
    /// In a hypervisor buffer.
    Bytes(&'s [u8]),
    /// In the sender's memory, held by its port: the Ethernet header as the
    /// switch read it (what it decided on, whatever the guest wrote since),
    /// then the rest from the sender's buffers.
    InPlace {
        eth: &'s [u8; MIN_FRAME_LEN],
        mem: &'s S,
        /// The frame's buffers from frame offset 0.
        segments: &'s [(GuestPhysAddr, usize)],
        len: usize,
    },
}

impl<S: GuestMemory> Payload<'_, S> {
    fn len(&self) -> usize {
        match self {
            Payload::Bytes(frame) => frame.len(),
            Payload::InPlace { len, .. } => *len,
        }
    }

    /// The Ethernet header.
    fn eth(&self) -> Option<&[u8; MIN_FRAME_LEN]> {
        match self {
            Payload::Bytes(frame) => frame.first_chunk::<MIN_FRAME_LEN>(),
            Payload::InPlace { eth, .. } => Some(eth),
        }
    }

    /// Writes frame bytes `from..to` at `addr` in `mem`. Inline: once per
    /// delivered frame, and a call's saved registers cost more than the
    /// common case's few checks.
    #[inline(always)]
    fn write<M: GuestMemory>(&self, mem: &M, addr: GuestPhysAddr, from: usize, to: usize) -> bool {
        match self {
            Payload::Bytes(frame) => frame
                .get(from..to)
                .is_some_and(|part| mem.write(addr, part).is_ok()),
            Payload::InPlace {
                eth,
                mem: src,
                segments,
                ..
            } => {
                // The common case: past the Ethernet header, in the one
                // buffer the frame came in (what the loop below does, with
                // no loop).
                if let [(src_addr, src_len)] = **segments {
                    if MIN_FRAME_LEN <= from && from < to && to <= src_len {
                        let at = src_addr.wrapping_add(from as u64);
                        return mem.copy_from(addr, *src, at, to - from).is_ok();
                    }
                }
                let eth_end = to.min(MIN_FRAME_LEN);
                if from < eth_end
                    && eth
                        .get(from..eth_end)
                        .is_none_or(|part| mem.write(addr, part).is_err())
                {
                    return false;
                }
                // The rest, one copy from the sender's buffers.
                let mut start = 0usize;
                for &(src_addr, len) in *segments {
                    let end = start + len;
                    let (a, b) = (from.max(start).max(MIN_FRAME_LEN), to.min(end));
                    if a < b
                        && mem
                            .copy_from(
                                addr.wrapping_add((a - from) as u64),
                                *src,
                                src_addr.wrapping_add((a - start) as u64),
                                b - a,
                            )
                            .is_err()
                    {
                        return false;
                    }
                    start = end;
                }
                true
            }
        }
    }
}

/// Writes `source[pos..pos+len]`, where `source` is `header ++ frame`, at `addr`.
/// Inline, as [`Payload::write`]: once per delivered frame.
#[inline(always)]
fn write_stream<M: GuestMemory, S: GuestMemory>(
    mem: &M,
    addr: GuestPhysAddr,
    header: &[u8; NET_HEADER_LEN],
    frame: &Payload<'_, S>,
    pos: usize,
    len: usize,
) -> bool {
    let end = pos + len;
    // The pieces below fill addr..addr+len: partial lines are prepared
    // once for the whole run, not once per piece.
    mem.will_write(addr, len);
    let mut addr = addr;
    let mut pos = pos;
    if pos == 0 && len >= HEADERS_LEN {
        // The common case: both headers into the first buffer.
        let Some(eth) = frame.eth() else {
            return false;
        };
        // Two writes, not one of the two copied into one buffer: the
        // write's wide loads of that buffer would straddle the copies'
        // stores (a store-forwarding stall, more than the access saved).
        let eth_at = addr.wrapping_add(NET_HEADER_LEN as u64);
        if mem.write_array(addr, header).is_err() || mem.write_array(eth_at, eth).is_err() {
            return false;
        }
        return end <= HEADERS_LEN
            || frame.write(
                mem,
                addr.wrapping_add(HEADERS_LEN as u64),
                MIN_FRAME_LEN,
                end - NET_HEADER_LEN,
            );
    }
    if pos < NET_HEADER_LEN {
        let n = (NET_HEADER_LEN - pos).min(len);
        let written = header
            .get(pos..pos + n)
            .is_some_and(|part| mem.write(addr, part).is_ok());
        if !written {
            return false;
        }
        pos += n;
        addr = GuestPhysAddr::new(addr.raw().wrapping_add(n as u64));
    }
    end <= pos || frame.write(mem, addr, pos - NET_HEADER_LEN, end - NET_HEADER_LEN)
}

/// Writes all `need` bytes of `header ++ frame` at the start of `d`, a
/// receive buffer that holds them, after checking that all of `d` is RAM.
/// A frame held in one buffer of its sender's (the common case) goes in
/// one [`GuestMemory::write_in_buffer`], the buffer checked once for its
/// three pieces; any other through [`write_stream`].
#[inline(always)]
fn fill_buffer<M: GuestMemory, S: GuestMemory>(
    mem: &M,
    d: &Descriptor,
    header: &[u8; NET_HEADER_LEN],
    frame: &Payload<'_, S>,
    need: usize,
) -> bool {
    if let Payload::InPlace {
        eth,
        mem: src,
        segments,
        ..
    } = frame
    {
        // What write_stream does with it: both headers, then the frame's
        // bytes past the Ethernet header straight from the sender's buffer.
        let rest = need.saturating_sub(HEADERS_LEN);
        if let [(src_addr, src_len)] = **segments {
            if rest > 0 && MIN_FRAME_LEN + rest <= src_len {
                let from = src_addr.wrapping_add(MIN_FRAME_LEN as u64);
                return mem
                    .write_in_buffer(d.addr, u64::from(d.len), header, eth, *src, from, rest)
                    .is_ok();
            }
        }
    }
    mem.check_range(d.addr, u64::from(d.len)).is_ok()
        && write_stream(mem, d.addr, header, frame, 0, need)
}

/// Where one frame's delivery stands, across its receive chains.
struct Fill {
    /// Bytes to write: the virtio-net header and the frame.
    need: usize,
    /// Bytes written so far.
    written: usize,
    /// Descriptors walked so far (at most [`MAX_RX_DESCRIPTORS`]).
    descriptors: usize,
    /// Where num_buffers (header bytes 10 and 11) landed in guest memory.
    num_buffers_at: [Option<GuestPhysAddr>; 2],
    /// Why the frame is dropped, once it is.
    verdict: Result<(), DropReason>,
}

/// Writes what of the frame fits into one receive chain, walking it to
/// its end; returns the bytes written into it. `Err` is fatal for the
/// queue; a frame error lands in `fill.verdict`.
/// `first` is the chain's first buffer if the caller read it already.
fn fill_chain<C: Walk, M: GuestMemory, S: GuestMemory>(
    mem: &M,
    chain: &mut C,
    mut first: Option<Descriptor>,
    header_bytes: &[u8; NET_HEADER_LEN],
    frame: &Payload<'_, S>,
    fill: &mut Fill,
) -> Result<usize, VirtioError> {
    let mut chain_written = 0usize;
    loop {
        let d = match first.take() {
            Some(d) => d,
            None => match chain.next_descriptor(mem)? {
                Some(d) => d,
                None => break,
            },
        };
        fill.descriptors += 1;
        if fill.descriptors > MAX_RX_DESCRIPTORS {
            // Past the frame's budget: stop walking (the rest of the
            // chain goes back unread, with the others, length 0).
            fill.verdict = Err(DropReason::TooManyDescriptors);
            break;
        }
        if fill.verdict.is_err() || fill.written >= fill.need {
            // Walk the rest: a structural error later in the chain is still fatal.
            continue;
        }
        if !d.writable {
            fill.verdict = Err(DropReason::WrongDirection);
            continue;
        }
        let written = fill.written;
        let n = (d.len as usize).min(fill.need - written);
        if n == 0 {
            continue;
        }
        // The descriptor's whole span must be RAM, not only the part used.
        if mem.check_range(d.addr, u64::from(d.len)).is_err()
            || !write_stream(mem, d.addr, header_bytes, frame, written, n)
        {
            fill.verdict = Err(DropReason::BadAddress);
            continue;
        }
        if written <= 11 {
            for (k, slot) in fill.num_buffers_at.iter_mut().enumerate() {
                let byte = 10 + k;
                if written <= byte && byte < written + n {
                    *slot = d.addr.checked_add((byte - written) as u64);
                }
            }
        }
        fill.written = written + n;
        chain_written += n;
    }
    Ok(chain_written)
}

/// Puts one frame into the RX queue: one chain, or with MRG_RXBUF as many
/// as it takes (§5.1.6.4). If the ring runs dry mid-frame the chains are
/// given back untouched (rewind) and the frame waits; on a frame error
/// every chain taken is returned with length 0, so none leaks.
///
/// The first chain is filled here; a frame that needs more goes on in
/// [`deliver_merged`], so that the common frame (one chain) does not set
/// up the per-chain arrays a merged one needs.
///
/// The path is generic over the ring format ([`Ring`]), which the caller
/// chose: each format's walker is its own, not the either-format
/// [`Chain`](crate::virtqueue::Chain).
fn deliver<R: Ring, M: GuestMemory, S: GuestMemory>(
    q: &mut R,
    mem: &M,
    header_bytes: &[u8; NET_HEADER_LEN],
    frame: Payload<'_, S>,
    mrg: bool,
) -> Result<RxPush, VirtioError> {
    let need = NET_HEADER_LEN + frame.len();
    let mut retried = false;
    let (first, mut chain) = match q.pop_chain(mem)? {
        Some(popped) => popped,
        // Ask for a notification and look once more before giving up
        // (§2.7.10, §2.8.10).
        None if q.arm_notification(mem)? => {
            retried = true;
            match q.pop_chain(mem)? {
                Some(popped) => popped,
                None => return Ok(RxPush::NoBuffers),
            }
        }
        None => return Ok(RxPush::NoBuffers),
    };
    let d = chain.next_descriptor(mem)?;
    // The common case: the chain is one writable buffer that holds the
    // whole frame. What `fill_chain` would do with it, without the state
    // a frame over several buffers or chains needs.
    if let Some(d) = d.filter(|d| d.writable && d.len as usize >= need && chain.ended()) {
        let written = fill_buffer(mem, &d, header_bytes, &frame, need);
        // need <= NET_HEADER_LEN + MAX_FRAME_LEN, or a GSO frame's length.
        let len = if written { need } else { 0 };
        q.add_used_popped(mem, &first, u32::try_from(len).unwrap_or(u32::MAX))?;
        return Ok(if written {
            RxPush::Delivered
        } else {
            RxPush::Dropped(DropReason::BadAddress)
        });
    }
    deliver_in_pieces(q, mem, header_bytes, frame, mrg, first, chain, d, retried)
}

/// [`deliver`] for any frame but the common one: its first chain (`first`,
/// walked up to `d`, its first buffer) over several buffers, or too small.
///
/// Out of line, the walker passed by value: while `deliver` handed its
/// walker to [`fill_chain`] by reference, the walker (and `d`) were stored
/// to the stack for every frame, before the common case was told apart.
#[allow(clippy::too_many_arguments)] // the first chain's whole state
#[inline(never)]
fn deliver_in_pieces<R: Ring, M: GuestMemory, S: GuestMemory>(
    q: &mut R,
    mem: &M,
    header_bytes: &[u8; NET_HEADER_LEN],
    frame: Payload<'_, S>,
    mrg: bool,
    first: Popped,
    mut chain: R::Chain,
    d: Option<Descriptor>,
    retried: bool,
) -> Result<RxPush, VirtioError> {
    let need = NET_HEADER_LEN + frame.len();
    let mut fill = Fill {
        need,
        written: 0,
        descriptors: 0,
        num_buffers_at: [None, None],
        verdict: Ok(()),
    };
    let first_len = fill_chain(mem, &mut chain, d, header_bytes, &frame, &mut fill)?;
    if fill.written < fill.need && fill.verdict.is_ok() {
        if mrg {
            return deliver_merged(
                q,
                mem,
                header_bytes,
                &frame,
                fill,
                first,
                first_len,
                retried,
            );
        }
        fill.verdict = Err(DropReason::BufferTooSmall);
    }
    if let Err(reason) = fill.verdict {
        q.add_used_popped(mem, &first, 0)?;
        return Ok(RxPush::Dropped(reason));
    }
    // first_len <= need <= NET_HEADER_LEN + MAX_FRAME_LEN.
    q.add_used_popped(mem, &first, u32::try_from(first_len).unwrap_or(u32::MAX))?;
    Ok(RxPush::Delivered)
}

/// [`deliver`] for a frame that did not fit in its first chain (`first`,
/// `first_len` bytes written into it) with MRG_RXBUF: the next chains.
#[allow(clippy::too_many_arguments)] // the first chain's whole state
#[inline(never)]
fn deliver_merged<R: Ring, M: GuestMemory, S: GuestMemory>(
    q: &mut R,
    mem: &M,
    header_bytes: &[u8; NET_HEADER_LEN],
    frame: &Payload<'_, S>,
    mut fill: Fill,
    first: Popped,
    first_len: usize,
    mut retried: bool,
) -> Result<RxPush, VirtioError> {
    // The chains taken and their lengths, in two plain arrays.
    let mut heads = [Popped::EMPTY; MAX_RX_CHAINS];
    let mut lens = [0u32; MAX_RX_CHAINS];
    if let (Some(head), Some(len)) = (heads.first_mut(), lens.first_mut()) {
        *head = first;
        *len = u32::try_from(first_len).unwrap_or(u32::MAX);
    }
    let mut chain_count = 1usize;
    while fill.written < fill.need && fill.verdict.is_ok() {
        let (head, mut chain) = match q.pop_chain(mem)? {
            Some(popped) => popped,
            None => {
                // Ask for a notification and look once more before giving
                // up (§2.7.10, §2.8.10).
                if !retried && q.arm_notification(mem)? {
                    retried = true;
                    continue;
                }
                // The chains taken so far are unused: give them back.
                q.rewind_to_popped(&first);
                return Ok(RxPush::NoBuffers);
            }
        };
        // The loop stops at MAX_RX_CHAINS (BufferTooSmall below), so there
        // is always a slot; if not, the chain (the last popped) is given
        // back unread and the frame dropped, its other chains returned in
        // order below: nothing leaks and nothing is used out of order.
        let Some(slot) = heads.get_mut(chain_count) else {
            q.rewind_to_popped(&head);
            fill.verdict = Err(DropReason::BufferTooSmall);
            break;
        };
        *slot = head;
        chain_count += 1;
        let chain_written = fill_chain(mem, &mut chain, None, header_bytes, frame, &mut fill)?;
        // chain_written <= need <= NET_HEADER_LEN + MAX_FRAME_LEN.
        if let Some(last) = chain_count.checked_sub(1).and_then(|i| lens.get_mut(i)) {
            *last = u32::try_from(chain_written).unwrap_or(u32::MAX);
        }
        if fill.written < fill.need && fill.verdict.is_ok() && chain_count == MAX_RX_CHAINS {
            fill.verdict = Err(DropReason::BufferTooSmall);
        }
    }
    if let Err(reason) = fill.verdict {
        for head in heads.iter().take(chain_count) {
            q.add_used_popped(mem, head, 0)?;
        }
        return Ok(RxPush::Dropped(reason));
    }
    if chain_count > 1 {
        let count = u16::try_from(chain_count).unwrap_or(u16::MAX).to_le_bytes();
        for (k, at) in fill.num_buffers_at.iter().enumerate() {
            if let (Some(at), Some(byte)) = (at, count.get(k..=k)) {
                mem.write(*at, byte)?;
            }
        }
    }
    for (head, &len) in heads.iter().zip(lens.iter()).take(chain_count) {
        q.add_used_popped(mem, head, len)?;
    }
    Ok(RxPush::Delivered)
}

/// Whether a driver may send a GSO frame of `gso_type` on `dev`: the type
/// is TCPv4 or TCPv6 with its HOST_TSO* negotiated, and GSO_ECN only with
/// HOST_ECN (§5.1.6.2.1).
fn gso_negotiated(dev: &VirtioNet, gso_type: u8) -> Result<(), GsoError> {
    let needed = match gso_type & !gso::VIRTIO_NET_HDR_GSO_ECN {
        gso::VIRTIO_NET_HDR_GSO_TCPV4 => net_feature::HOST_TSO4,
        gso::VIRTIO_NET_HDR_GSO_TCPV6 => net_feature::HOST_TSO6,
        _ => return Err(GsoError::UnknownType),
    };
    let ecn = if gso_type & gso::VIRTIO_NET_HDR_GSO_ECN != 0 {
        net_feature::HOST_ECN
    } else {
        0
    };
    // HOST_TSO* depend on CSUM (§5.1.3.1): a GSO frame is checksummed by
    // whoever cuts it.
    let needed = needed | ecn | net_feature::CSUM;
    if dev.has_feature(needed) {
        Ok(())
    } else {
        Err(GsoError::NotNegotiated)
    }
}

/// Whether a driver takes a GSO frame of `gso_type` whole on `dev`: its
/// GUEST_TSO*, GUEST_ECN for GSO_ECN, and GUEST_CSUM (which they depend on,
/// §5.1.3.1: the frame arrives with NEEDS_CSUM, §5.1.6.4.1).
fn gso_accepted(dev: &VirtioNet, gso_type: u8) -> bool {
    let needed = match gso_type & !gso::VIRTIO_NET_HDR_GSO_ECN {
        gso::VIRTIO_NET_HDR_GSO_TCPV4 => net_feature::GUEST_TSO4,
        gso::VIRTIO_NET_HDR_GSO_TCPV6 => net_feature::GUEST_TSO6,
        _ => return false,
    };
    let ecn = if gso_type & gso::VIRTIO_NET_HDR_GSO_ECN != 0 {
        net_feature::GUEST_ECN
    } else {
        0
    };
    dev.has_feature(needed | ecn | net_feature::GUEST_CSUM)
}

/// Completes a NEEDS_CSUM frame in place and clears the flag (for a port
/// that does not accept partial checksums). Returns `false` if the offsets
/// are outside the frame.
pub fn complete_checksum(header: &mut NetHeader, frame: &mut [u8]) -> bool {
    if header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM == 0 {
        return true;
    }
    if !checksum::complete_partial(frame, header.csum_start, header.csum_offset) {
        return false;
    }
    header.flags &= !VIRTIO_NET_HDR_F_NEEDS_CSUM;
    true
}
