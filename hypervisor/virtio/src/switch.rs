//! The L2 learning switch: MAC learning with ageing, flooding, bounded
//! per-port egress queues, round-robin fairness with a batch limit per turn,
//! and per-port counters.
//!
//! All storage is allocated when the switch is built; forwarding a frame
//! allocates nothing.
//!
//! A GSO frame (TCP segmentation offload, [`crate::gso`]) stays in its
//! sender's memory: it goes whole to a port that takes it, and is cut into
//! segments for any other (`segment.rs`); it is never queued whole.
//!
//! Work per [`Switch::run`] is bounded by constants, never by what a guest
//! publishes: at most [`SwitchConfig::tx_frames_per_run`] frames from each
//! port's transmit queue and [`SwitchConfig::run_budget`] in all, each
//! frame a chain of at most twice the queue size descriptors (§2.7.5.3.1:
//! a direct chain no longer than the queue, an indirect table no longer
//! than the queue). The caller holds the switch and every member's lock for
//! one run; [`RunReport::more_work`] tells it to come back for the rest
//! after it has let go (and let interrupts and other vCPUs in).

use alloc::vec;
use alloc::vec::Vec;

use crate::net::complete_checksum;
use crate::port::{
    DropReason, NetHeader, Port, RxPush, TxPoll, MAX_FRAME_LEN, MIN_FRAME_LEN,
    VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE,
};

mod segment;

/// How a switch is sized and paced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwitchConfig {
    /// Number of ports.
    pub port_count: usize,
    /// Frames each port's egress queue holds while its guest has no buffers.
    pub egress_capacity: usize,
    /// Frames one port may send per round-robin turn.
    pub batch_limit: usize,
    /// Frames one [`Switch::run`] forwards at most, so a trap handler's
    /// time is bounded; [`RunReport::more_work`] says if it stopped early.
    pub run_budget: usize,
    /// Frames one [`Switch::run`] takes from any one port's transmit queue
    /// at most (default [`TX_FRAMES_PER_RUN`]): a guest that keeps its ring
    /// full cannot keep a run going; the rest waits for the next run.
    pub tx_frames_per_run: usize,
    /// A learned address is forgotten this many ticks after last seen.
    pub ageing_ticks: u64,
    /// Buckets of the address table (rounded up to a power of two; 4 ways each).
    pub fdb_buckets: usize,
    /// A port whose egress queue stayed full this many ticks without
    /// taking a frame is *stalled*: frames for it are dropped (and counted)
    /// instead of being held back in their senders' rings. `u64::MAX`
    /// never stalls a port (a receiver that never refills then holds its
    /// senders back for good).
    pub stall_ticks: u64,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        Self {
            port_count: 2,
            egress_capacity: 64,
            batch_limit: 32,
            run_budget: RUN_BUDGET,
            tx_frames_per_run: TX_FRAMES_PER_RUN,
            ageing_ticks: 300_000,
            fdb_buckets: 256,
            stall_ticks: STALL_TICKS,
        }
    }
}

/// Frames one [`Switch::run`] takes from one port's transmit queue at most
/// (the bound B of issue 10): a full 256-entry ring takes four runs.
pub const TX_FRAMES_PER_RUN: usize = 64;

/// Frames one [`Switch::run`] takes from all ports together at most.
pub const RUN_BUDGET: usize = 256;

/// Default [`SwitchConfig::stall_ticks`]: 100 ticks (ms in the hypervisor).
pub const STALL_TICKS: u64 = 100;

/// Most ports one switch has (the hypervisor keeps per-run port tables of
/// this size on the stack; its configuration refuses more).
pub const MAX_PORTS: usize = 16;

/// Per-port counters, named from the guest's side: `tx` is what the port's
/// guest sent into the switch, `rx` what the switch delivered to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Frames taken from the guest and accepted.
    pub tx_packets: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// Frames the guest sent that were malformed and dropped (shorter than
    /// an Ethernet header, longer than [`MAX_FRAME_LEN`], bad offloads).
    pub tx_errors: u64,
    /// Of `tx_errors`: frames a port reported shorter than an Ethernet
    /// header (the uplink hands the switch what arrived from outside).
    pub tx_too_short: u64,
    /// Of `tx_errors`: frames a port reported longer than [`MAX_FRAME_LEN`].
    pub tx_too_long: u64,
    /// Frames the guest sent with a source MAC other than its port's,
    /// dropped by port security.
    pub tx_spoofed: u64,
    /// Frames delivered into the guest's buffers.
    pub rx_packets: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Frames for this port dropped because its receive buffers were bad.
    pub rx_errors: u64,
    /// Frames for this port dropped because its egress queue was full and
    /// it was stalled (see [`SwitchConfig::stall_ticks`]), or the sender
    /// could not hold them back (the uplink, a flooded frame); or because
    /// it was down.
    pub rx_dropped: u64,
    /// Of `rx_dropped`: frames for the port while its driver was not up
    /// (before DRIVER_OK, after a reset, link down): never a congestion loss.
    pub rx_not_up: u64,
    /// Of `rx_dropped`: frames for the port while it was stalled (its
    /// egress queue full for longer than [`SwitchConfig::stall_ticks`]).
    pub rx_stalled: u64,
    /// Fatal queue errors (the device was set to DEVICE_NEEDS_RESET).
    pub fatal_errors: u64,
    /// Of `tx_packets`: GSO frames (TSO, up to 64 KiB each).
    pub tx_gso: u64,
    /// The TCP segments those GSO frames carried (what they are on a wire
    /// of the sender's MSS): with `tx_packets - tx_gso`, the port's sent
    /// packets counted as a NIC without TSO would.
    pub tx_gso_segments: u64,
    /// GSO frames delivered to this port whole (it negotiated GUEST_TSO*).
    pub rx_gso: u64,
    /// The TCP segments the GSO frames delivered whole carried.
    pub rx_gso_segments: u64,
    /// GSO frames cut into segments for this port (it could not take them
    /// whole, or had no buffers for too long).
    pub rx_gso_cut: u64,
}

impl PortCounters {
    /// Packets sent and received as they would be on a wire without TSO:
    /// a GSO frame counts as the segments it carries (a frame cut into
    /// segments was counted per segment already).
    pub fn wire_packets(&self) -> u64 {
        let sent = self.tx_packets.saturating_sub(self.tx_gso) + self.tx_gso_segments;
        let received = self.rx_packets.saturating_sub(self.rx_gso) + self.rx_gso_segments;
        sent + received
    }
}

/// What a port may send and receive (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortConfig {
    /// The port's own address: a static table entry, never aged or evicted.
    /// `None` for the uplink, which stands for many stations.
    pub mac: Option<[u8; 6]>,
    /// Whether port security is lifted: the port sends with any source
    /// address (those are learned), and receives flooded unknown unicast.
    pub trusted: bool,
}

impl PortConfig {
    /// A trusted port with no address of its own (the uplink): set
    /// explicitly, never a default.
    pub const OPEN: Self = Self {
        mac: None,
        trusted: true,
    };

    /// A port with port security on and no address of its own: it may send
    /// nothing and receive only broadcast and multicast. Every port of a
    /// new [`Switch`] starts so (untrusted until configured otherwise).
    pub const LOCKED: Self = Self {
        mac: None,
        trusted: false,
    };

    /// A VM's port with address `mac`; locked unless `trusted`.
    pub const fn vm(mac: [u8; 6], trusted: bool) -> Self {
        Self {
            mac: Some(mac),
            trusted,
        }
    }
}

impl Default for PortConfig {
    /// [`PortConfig::LOCKED`]: port security is on unless lifted.
    fn default() -> Self {
        Self::LOCKED
    }
}

/// What one [`Switch::run`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Frames taken from guests (accepted or dropped).
    pub frames: usize,
    /// Most frames taken from any one port in this run.
    pub most_from_one_port: usize,
    /// Whether the budget or a port's quota ran out with work (maybe) left:
    /// call again soon.
    pub more_work: bool,
    /// Whether a sender was held back (its frame left in its ring for a
    /// full egress queue): call again later, when the receiver may have
    /// taken frames or have stalled ([`SwitchConfig::stall_ticks`]), even
    /// if nothing else happens.
    pub held_back: bool,
}

const FDB_WAYS: usize = 4;

#[derive(Clone, Copy, Debug, Default)]
struct FdbEntry {
    mac: [u8; 6],
    port: u16,
    valid: bool,
    last_seen: u64,
}

/// A set-associative MAC address table with ageing.
#[derive(Clone, Debug)]
struct Fdb {
    buckets: Vec<[FdbEntry; FDB_WAYS]>,
    ageing: u64,
}

impl Fdb {
    fn bucket(&self, mac: &[u8; 6]) -> usize {
        // FNV-1a over the address; the table size is a power of two.
        let mut h: u32 = 0x811c_9dc5;
        for b in mac {
            h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
        }
        (h as usize) & (self.buckets.len() - 1)
    }

    fn fresh(&self, e: &FdbEntry, now: u64) -> bool {
        e.valid && now.saturating_sub(e.last_seen) <= self.ageing
    }

    fn lookup(&self, mac: &[u8; 6], now: u64) -> Option<usize> {
        let bucket = &self.buckets[self.bucket(mac)];
        bucket
            .iter()
            .find(|e| e.mac == *mac && self.fresh(e, now))
            .map(|e| usize::from(e.port))
    }

    /// Records that `mac` was seen on `port`. Reuses the address's own
    /// entry, else an empty or aged-out way, else the least recently seen of
    /// `port`'s own entries: never another port's fresh entry, so a port
    /// sending from many addresses cannot push others out (the address then
    /// goes unlearned, and frames for it flood to trusted ports).
    fn learn(&mut self, mac: &[u8; 6], port: u16, now: u64) {
        let index = self.bucket(mac);
        let ageing = self.ageing;
        let bucket = &mut self.buckets[index];
        let fresh = |e: &FdbEntry| e.valid && now.saturating_sub(e.last_seen) <= ageing;
        let slot = bucket
            .iter()
            .position(|e| e.valid && e.mac == *mac)
            .or_else(|| bucket.iter().position(|e| !fresh(e)))
            .or_else(|| {
                (0..FDB_WAYS)
                    .filter(|&i| bucket[i].port == port)
                    .min_by_key(|&i| bucket[i].last_seen)
            });
        let Some(slot) = slot else {
            return;
        };
        bucket[slot] = FdbEntry {
            mac: *mac,
            port,
            valid: true,
            last_seen: now,
        };
    }

    /// Forgets every address learned on `port`.
    fn forget_port(&mut self, port: u16) {
        for e in self.buckets.iter_mut().flatten() {
            if e.port == port {
                e.valid = false;
            }
        }
    }
}

/// A bounded FIFO of frames waiting for one port's receive buffers.
#[derive(Clone, Debug)]
struct EgressQueue {
    data: Vec<u8>,
    meta: Vec<(NetHeader, u16)>,
    head: usize,
    count: usize,
}

impl EgressQueue {
    fn new(capacity: usize) -> Self {
        Self {
            data: vec![0; capacity * MAX_FRAME_LEN],
            meta: vec![(NetHeader::default(), 0); capacity],
            head: 0,
            count: 0,
        }
    }

    fn capacity(&self) -> usize {
        self.meta.len()
    }

    fn push(&mut self, header: &NetHeader, frame: &[u8]) -> bool {
        if self.count == self.capacity() || frame.len() > MAX_FRAME_LEN {
            return false;
        }
        // head < capacity and count < capacity here: one wrap at most (no
        // division, a library call on AArch32).
        let slot = self.head + self.count;
        let slot = if slot >= self.capacity() {
            slot - self.capacity()
        } else {
            slot
        };
        self.data[slot * MAX_FRAME_LEN..slot * MAX_FRAME_LEN + frame.len()].copy_from_slice(frame);
        // frame.len() <= MAX_FRAME_LEN, checked above.
        self.meta[slot] = (*header, u16::try_from(frame.len()).unwrap_or(0));
        self.count += 1;
        true
    }

    fn front(&self) -> Option<(&NetHeader, &[u8])> {
        if self.count == 0 {
            return None;
        }
        let (header, len) = &self.meta[self.head];
        let start = self.head * MAX_FRAME_LEN;
        Some((header, &self.data[start..start + usize::from(*len)]))
    }

    fn pop(&mut self) {
        if self.count > 0 {
            self.head = if self.head + 1 < self.capacity() {
                self.head + 1
            } else {
                0
            };
            self.count -= 1;
        }
    }

    fn clear(&mut self) {
        self.head = 0;
        self.count = 0;
    }

    fn is_full(&self) -> bool {
        self.count == self.capacity()
    }
}

/// What became of a frame taken from a sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Consumed: delivered, queued, filtered or dropped.
    Taken,
    /// Given back to the sender (its destination's egress queue is full).
    HeldBack,
}

/// The port a turn takes frames from, with what every frame of it is
/// checked against, looked up once per turn.
#[derive(Clone, Copy, Debug)]
struct Sender {
    port: usize,
    /// Port security is lifted ([`PortConfig::trusted`]).
    trusted: bool,
    /// Its own address as a [`mac_key`] ([`Switch::owner_keys`]).
    key: u64,
}

impl Sender {
    /// Whether it may send a frame with source address `src_key` (a
    /// [`mac_key`]): it is trusted, or the address is its own.
    fn may_send(&self, src_key: u64) -> bool {
        self.trusted || self.key == src_key
    }
}

/// What a turn forwarded, added to its sender's counters (`tx_packets`,
/// `tx_bytes`, `tx_gso`) once at its end, not per frame.
#[derive(Clone, Copy, Debug, Default)]
struct Sent {
    packets: u64,
    bytes: u64,
    gso: u64,
}

/// What one port's turn in a [`Switch::run`] did.
#[derive(Clone, Copy, Debug, Default)]
struct Turn {
    /// Frames taken from the port (accepted or dropped).
    frames: usize,
    /// Whether a frame was given back (its destination's egress queue is full).
    held_back: bool,
    /// Whether the turn ended before its limit: the port had nothing more,
    /// failed, or was held back (else it took `limit` frames).
    stopped: bool,
}

/// `ports[dst]` mutably and `ports[src]` shared (`dst != src`).
fn pair<P>(ports: &mut [P], dst: usize, src: usize) -> Option<(&mut P, &P)> {
    if dst < src {
        let (low, high) = ports.split_at_mut(src);
        Some((low.get_mut(dst)?, high.first()?))
    } else if src < dst {
        let (low, high) = ports.split_at_mut(dst);
        Some((high.first_mut()?, low.get(src)?))
    } else {
        None
    }
}

/// The switch: forwarding table, egress queues, counters.
#[derive(Clone, Debug)]
pub struct Switch {
    config: SwitchConfig,
    fdb: Fdb,
    egress: Vec<EgressQueue>,
    counters: Vec<PortCounters>,
    ports: Vec<PortConfig>,
    /// Each port's own address as a [`mac_key`], [`NO_OWNER`] for a port
    /// without one: what [`Switch::owner`] compares, a word per port
    /// instead of an optional 6-byte array (it runs for every frame).
    owner_keys: Vec<u64>,
    /// The last destination [`Switch::owner_of_dst`] found in
    /// `owner_keys` and its port (a burst of frames goes to one port);
    /// [`NO_OWNER`] when none is known.
    last_owner: (u64, usize),
    /// Frames taken from each port in the current run.
    taken: Vec<usize>,
    /// Ports held back in the current run (a frame of theirs waits for a
    /// full egress queue).
    held_back: Vec<bool>,
    /// When each port's egress queue last became full with no frame taken
    /// since (`None`: it took one, or is not full).
    full_since: Vec<Option<u64>>,
    frame: [u8; MAX_FRAME_LEN],
    next_port: usize,
}

/// A MAC address as one word: its 6 bytes, little-endian, below bit 48.
/// Loaded as its first four bytes and its last two, the widths a copy of
/// a 6-byte array stores them with: a load straddling those two stores
/// (as LLVM makes of one 6-byte load) waits for both to reach the cache (a
/// store-forwarding stall, most of this function's time).
fn mac_key(mac: &[u8; 6]) -> u64 {
    let [a, b, c, d, e, f] = *mac;
    u64::from(u32::from_le_bytes([a, b, c, d])) | u64::from(u16::from_le_bytes([e, f])) << 32
}

/// A [`mac_key`] back as the address.
fn mac_of(key: u64) -> [u8; 6] {
    let [a, b, c, d, e, f, _, _] = key.to_le_bytes();
    [a, b, c, d, e, f]
}

/// The low 48 bits of a word: a [`mac_key`] out of an 8-byte load.
const MAC_MASK: u64 = (1 << 48) - 1;

/// The destination and source addresses of the frame in `frame` as
/// [`mac_key`]s, each out of one 8-byte load (bytes 0..8 and 6..14; a
/// byte-wise [`mac_key`] of each took 28 instructions per frame). Both lie
/// in the one store its port wrote the Ethernet header with
/// (`read_headers` in `crate::net`), so the loads are forwarded from it.
#[inline(always)]
fn eth_keys(frame: &[u8; MAX_FRAME_LEN]) -> (u64, u64) {
    // Each word is an 8-byte chunk of the 14-byte header, not put
    // together from its bytes: LLVM made those bytes into single loads and
    // shifts, 30 instructions per frame more.
    let Some((dst, src)) = frame
        .first_chunk::<MIN_FRAME_LEN>()
        .and_then(|head| head.first_chunk::<8>().zip(head.last_chunk::<8>()))
    else {
        // Never (the buffer is longer): a key no port and no address has.
        return (1 << 48, 1 << 48);
    };
    let (dst, src) = (u64::from_le_bytes(*dst), u64::from_le_bytes(*src));
    (dst & MAC_MASK, src & MAC_MASK)
}

/// [`Switch::owner_keys`] of a port without an address: no [`mac_key`]
/// has a bit above 47 set.
const NO_OWNER: u64 = u64::MAX;

fn is_multicast(mac: &[u8; 6]) -> bool {
    mac[0] & 1 != 0
}

impl Switch {
    /// A switch with `config` (zero sizes are raised to one). Every port
    /// starts [`PortConfig::LOCKED`]: port security on, no address, so it
    /// sends nothing until [`Switch::set_port`] gives it its MAC (or lifts
    /// security with `trusted`, as for the uplink).
    pub fn new(config: SwitchConfig) -> Self {
        let port_count = config.port_count.clamp(1, usize::from(u16::MAX));
        let buckets = config.fdb_buckets.max(1).next_power_of_two();
        let config = SwitchConfig {
            port_count,
            egress_capacity: config.egress_capacity.max(1),
            batch_limit: config.batch_limit.max(1),
            run_budget: config.run_budget.max(1),
            tx_frames_per_run: config.tx_frames_per_run.max(1),
            fdb_buckets: buckets,
            ..config
        };
        Self {
            config,
            fdb: Fdb {
                buckets: vec![[FdbEntry::default(); FDB_WAYS]; buckets],
                ageing: config.ageing_ticks,
            },
            egress: (0..port_count)
                .map(|_| EgressQueue::new(config.egress_capacity))
                .collect(),
            counters: vec![PortCounters::default(); port_count],
            ports: vec![PortConfig::LOCKED; port_count],
            owner_keys: vec![NO_OWNER; port_count],
            last_owner: (NO_OWNER, 0),
            taken: vec![0; port_count],
            held_back: vec![false; port_count],
            full_since: vec![None; port_count],
            frame: [0; MAX_FRAME_LEN],
            next_port: 0,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> SwitchConfig {
        self.config
    }

    /// Counters of port `port`.
    pub fn counters(&self, port: usize) -> PortCounters {
        self.counters.get(port).copied().unwrap_or_default()
    }

    /// Sets port `port`'s security (ignored past the port count). What the
    /// port had learned is forgotten.
    pub fn set_port(&mut self, port: usize, config: PortConfig) {
        if let Some(slot) = self.ports.get_mut(port) {
            *slot = config;
            self.last_owner = (NO_OWNER, 0);
            if let Some(key) = self.owner_keys.get_mut(port) {
                *key = config.mac.as_ref().map_or(NO_OWNER, mac_key);
            }
            // Ports are numbered below port_count <= u16::MAX.
            self.fdb
                .forget_port(u16::try_from(port).unwrap_or(u16::MAX));
        }
    }

    /// Port `port`'s security settings.
    pub fn port_config(&self, port: usize) -> PortConfig {
        self.ports.get(port).copied().unwrap_or_default()
    }

    /// Frames waiting for port `port`'s receive buffers.
    pub fn egress_len(&self, port: usize) -> usize {
        self.egress.get(port).map_or(0, |q| q.count)
    }

    /// The port that owns `mac` (configured), else the port it was last
    /// seen on if still fresh at `now`.
    #[inline]
    pub fn lookup(&self, mac: &[u8; 6], now: u64) -> Option<usize> {
        self.owner(mac).or_else(|| self.fdb.lookup(mac, now))
    }

    /// The port configured with address `mac`. A linear search: a switch
    /// has a handful of ports, and a static entry must not share the
    /// learned table's buckets (where it could crowd out or be crowded out).
    /// Inline: once or twice per frame, a few compares.
    #[inline(always)]
    fn owner(&self, mac: &[u8; 6]) -> Option<usize> {
        self.owner_of_key(mac_key(mac))
    }

    /// [`Switch::owner`] of an address given as its [`mac_key`].
    #[inline(always)]
    fn owner_of_key(&self, key: u64) -> Option<usize> {
        self.owner_keys.iter().position(|&k| k == key)
    }

    /// [`Switch::owner_of_key`] of a frame's destination: the port found
    /// for the previous frame's if it is the same address (one compare,
    /// not a search), else the search, remembered.
    #[inline(always)]
    fn owner_of_dst(&mut self, key: u64) -> Option<usize> {
        if self.last_owner.0 == key {
            return Some(self.last_owner.1);
        }
        let owner = self.owner_of_key(key);
        if let Some(port) = owner {
            self.last_owner = (key, port);
        }
        owner
    }

    /// Learns that the source address `src_key` (a [`mac_key`]) is behind
    /// trusted port `port`, unless it is a group address, zero, or an
    /// address a port is configured with (that entry is static). Out of
    /// line: the frames of an untrusted port (most) test one flag only.
    #[inline(never)]
    fn learn(&mut self, port: usize, src_key: u64, now: u64) {
        if src_key & 1 == 0 && src_key != 0 && self.owner_of_key(src_key).is_none() {
            // Ports are numbered below port_count <= u16::MAX.
            self.fdb.learn(
                &mac_of(src_key),
                u16::try_from(port).unwrap_or(u16::MAX),
                now,
            );
        }
    }

    /// Port `port` as a [`Sender`].
    fn sender(&self, port: usize) -> Sender {
        Sender {
            port,
            trusted: self.port_config(port).trusted,
            key: self.owner_keys.get(port).copied().unwrap_or(NO_OWNER),
        }
    }

    /// Whether port `port` may receive a frame for `dst_mac` (broadcast and
    /// multicast always; unicast only for its own address unless trusted).
    fn may_receive(&self, port: usize, dst_mac: &[u8; 6]) -> bool {
        let config = self.port_config(port);
        config.trusted || is_multicast(dst_mac) || config.mac == Some(*dst_mac)
    }

    /// Forgets what is queued for `port` (its device was reset).
    pub fn port_reset(&mut self, port: usize) {
        if let Some(q) = self.egress.get_mut(port) {
            q.clear();
        }
        if let Some(since) = self.full_since.get_mut(port) {
            *since = None;
        }
    }

    /// Whether port `port` is stalled at `now`: its egress queue has been
    /// full for [`SwitchConfig::stall_ticks`] without it taking a frame.
    pub fn stalled(&self, port: usize, now: u64) -> bool {
        let full = self.egress.get(port).is_some_and(EgressQueue::is_full);
        let since = self.full_since.get(port).copied().flatten();
        full && since.is_some_and(|t| now.saturating_sub(t) >= self.config.stall_ticks)
    }

    /// Moves frames: drains egress queues, then gives each port in turn up
    /// to `batch_limit` frames, round robin, until nobody has work, every
    /// port with work has sent its `tx_frames_per_run` or is held back, or
    /// the run budget is spent (then [`RunReport::more_work`]). Ends with
    /// one [`Port::flush`] per port: completions are published and
    /// interrupts decided once per run. `ports[i]` is port `i`; `now` is
    /// the time in the caller's ticks, for ageing and stalls.
    ///
    /// A unicast frame for a known port whose egress queue is full is given
    /// back to its sender ([`Port::unpoll_tx`]), which then sends nothing
    /// more this run (so its frames stay in order), unless that port is
    /// stalled ([`Switch::stalled`]): then the frame is dropped.
    pub fn run<P: Port>(&mut self, ports: &mut [P], now: u64) -> RunReport {
        let n = ports.len().min(self.config.port_count);
        let mut report = RunReport::default();
        if n == 0 {
            return report;
        }
        for port in 0..n {
            self.drain_egress(ports, port);
        }
        self.taken[..n].fill(0);
        self.held_back[..n].fill(false);
        // A port stopped by its quota may have more: the caller comes back.
        let mut quota_reached = false;
        let (budget, quota, batch) = (
            self.config.run_budget,
            self.config.tx_frames_per_run,
            self.config.batch_limit,
        );
        loop {
            let mut progress = false;
            // The first port of this round, then the others in order. No
            // division (a library call on AArch32): the rotation is kept
            // below the port count, and a run with fewer ports than the
            // last starts again at port 0.
            let first = if self.next_port < n {
                self.next_port
            } else {
                0
            };
            for k in 0..n {
                let src = if first + k < n {
                    first + k
                } else {
                    first + k - n
                };
                // What stops a turn before its first frame, and how many
                // frames it may take: worked out once per turn, not per frame.
                if report.frames >= budget {
                    report.more_work = true;
                    continue;
                }
                if self.held_back[src] {
                    continue;
                }
                let taken = self.taken[src];
                if taken >= quota {
                    quota_reached = true;
                    continue;
                }
                let limit = batch.min(quota - taken).min(budget - report.frames);
                let turn = self.turn(ports, src, limit, now);
                if turn.frames == 0 && !turn.held_back {
                    // Nothing to send: nothing to record.
                    continue;
                }
                self.taken[src] += turn.frames;
                report.frames += turn.frames;
                progress |= turn.frames > 0;
                if turn.held_back {
                    self.held_back[src] = true;
                } else if !turn.stopped && limit < batch {
                    // The turn ended on its budget or quota, not its batch:
                    // say which, as a check before its next frame would.
                    if report.frames >= budget {
                        report.more_work = true;
                    } else {
                        quota_reached = true;
                    }
                }
            }
            // Rotate who goes first, so no port is always served first.
            self.next_port = if first + 1 < n { first + 1 } else { 0 };
            if !progress || report.more_work {
                break;
            }
        }
        for port in ports[..n].iter_mut() {
            port.flush();
        }
        report.more_work |= quota_reached;
        report.held_back = self.held_back[..n].iter().any(|&h| h);
        report.most_from_one_port = self.taken[..n].iter().copied().max().unwrap_or(0);
        report
    }

    /// One round-robin turn of port `src`: up to `limit` frames from its
    /// transmit queue, each forwarded as it comes.
    #[inline(always)]
    fn turn<P: Port>(&mut self, ports: &mut [P], src: usize, limit: usize, now: u64) -> Turn {
        let mut turn = Turn::default();
        // Looked up at the first frame: a port with nothing to send (most
        // turns at small batches) costs a poll and no more.
        let mut sender = None;
        let mut sent = Sent::default();
        while turn.frames < limit {
            // The poll's result stays where poll_tx wrote it and the
            // header is passed on by reference: a copy of it right
            // after the call loads it wider than poll_tx stored it
            // (a store-forwarding stall).
            let poll = ports[src].poll_tx(&mut self.frame);
            let (len, header, held) = match &poll {
                TxPoll::Empty if turn.frames == 0 => {
                    // Nothing to send (most turns at small batches): done,
                    // with nothing to count.
                    return Turn {
                        stopped: true,
                        ..Turn::default()
                    };
                }
                TxPoll::Empty => {
                    turn.stopped = true;
                    break;
                }
                &TxPoll::Dropped(reason) => {
                    turn.frames += 1;
                    let c = &mut self.counters[src];
                    if reason == DropReason::QueueFailed {
                        c.fatal_errors += 1;
                        turn.stopped = true;
                        break;
                    }
                    c.tx_errors += 1;
                    continue;
                }
                &TxPoll::Frame { len, ref header } => (len, header, false),
                &TxPoll::Held { len, ref header } => (len, header, true),
            };
            let sender = *sender.get_or_insert_with(|| self.sender(src));
            match self.accept(ports, sender, len, header, held, now, &mut sent) {
                Outcome::Taken => {
                    ports[src].release_tx();
                    turn.frames += 1;
                }
                Outcome::HeldBack => {
                    turn.held_back = true;
                    turn.stopped = true;
                    break;
                }
            }
        }
        if sent.packets > 0 {
            let c = &mut self.counters[src];
            c.tx_packets += sent.packets;
            c.tx_bytes += sent.bytes;
            c.tx_gso += sent.gso;
        }
        turn
    }

    /// Checks a frame taken from `sender` and forwards it; counts it in
    /// `sent` if it was.
    #[allow(clippy::too_many_arguments)] // one frame's whole state
    fn accept<P: Port>(
        &mut self,
        ports: &mut [P],
        sender: Sender,
        len: usize,
        header: &NetHeader,
        held: bool,
        now: u64,
        sent: &mut Sent,
    ) -> Outcome {
        let src = sender.port;
        // A GSO frame is held in its sender's memory, its headers checked
        // by the port (`crate::gso`); the switch never copies it whole.
        let gso = header.gso_type != VIRTIO_NET_HDR_GSO_NONE;
        if gso && !held {
            self.counters[src].tx_errors += 1;
            return Outcome::Taken;
        }
        // A port (the uplink) may report a frame that did not fit, or one
        // too short to have addresses: drop it whole, never truncate it or
        // read the previous frame's bytes as its header.
        if !gso && !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&len) {
            let c = &mut self.counters[src];
            c.tx_errors += 1;
            if len < MIN_FRAME_LEN {
                c.tx_too_short += 1;
            } else {
                c.tx_too_long += 1;
            }
            return Outcome::Taken;
        }
        let (dst_key, src_key) = eth_keys(&self.frame);
        if !sender.may_send(src_key) {
            self.counters[src].tx_spoofed += 1;
            return Outcome::Taken;
        }
        let outcome = self.forward(ports, sender, (dst_key, src_key), header, len, held, now);
        if outcome == Outcome::Taken {
            sent.packets += 1;
            sent.bytes += len as u64;
            sent.gso += u64::from(gso);
        }
        outcome
    }

    fn drain_egress<P: Port>(&mut self, ports: &mut [P], port: usize) {
        let Switch {
            egress,
            counters,
            full_since,
            ..
        } = self;
        let q = &mut egress[port];
        while let Some((header, frame)) = q.front() {
            match ports[port].push_rx(header, frame) {
                RxPush::NoBuffers => break,
                RxPush::Delivered => {
                    counters[port].rx_packets += 1;
                    counters[port].rx_bytes += frame.len() as u64;
                    full_since[port] = None;
                }
                RxPush::Dropped(reason) => count_rx_drop(&mut counters[port], reason),
            }
            q.pop();
        }
    }

    /// `keys`: the frame's destination and source addresses as
    /// [`mac_key`]s ([`eth_keys`]).
    #[allow(clippy::too_many_arguments)] // one frame's whole state
    fn forward<P: Port>(
        &mut self,
        ports: &mut [P],
        sender: Sender,
        (dst_key, src_key): (u64, u64),
        header: &NetHeader,
        len: usize,
        held: bool,
        now: u64,
    ) -> Outcome {
        let src = sender.port;
        let n = ports.len().min(self.config.port_count);
        // The addresses as arrays only where they are needed as such (the
        // common frame, to a port configured with its address, does not).
        let dst_multicast = dst_key & 1 != 0;
        // Learn only from trusted ports.
        if sender.trusted {
            self.learn(src, src_key, now);
        }
        // The port configured with the address (`lookup`'s first answer),
        // else the one it was learned on.
        let owner = if dst_multicast {
            None
        } else {
            self.owner_of_dst(dst_key)
        };
        let target = match owner {
            Some(port) => Some(port),
            None if !dst_multicast => self.fdb.lookup(&mac_of(dst_key), now),
            None => None,
        };
        if target == Some(src) {
            // The destination sits behind the sender's own port: filter.
            return Outcome::Taken;
        }
        // Who gets it: the known port, else everyone but the sender; either
        // way only ports allowed to receive it (a flooded unknown unicast
        // reaches trusted ports only). A port configured with the address
        // may (`may_receive`: its own address), not asked again per frame.
        let receives = |switch: &Self, p: usize| match target {
            Some(t) => {
                p == t && p < n && (owner == Some(t) || switch.may_receive(p, &mac_of(dst_key)))
            }
            None => p != src && switch.may_receive(p, &mac_of(dst_key)),
        };
        if header.gso_type != VIRTIO_NET_HDR_GSO_NONE {
            return self.forward_gso(ports, src, target, &mac_of(dst_key), *header, len, now);
        }
        // Whether the whole frame is in `self.frame` (a held one has only
        // its Ethernet header there until fetched).
        let mut copied = !held;
        // Complete a partial checksum once if any destination cannot take it.
        let mut completed = None;
        if header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
            let needs_full =
                (0..n).any(|p| receives(self, p) && !ports[p].accepts_partial_checksum());
            if needs_full {
                let mut full = *header;
                if !self.fetch(ports, src, len, &mut copied)
                    || !complete_checksum(&mut full, &mut self.frame[..len])
                {
                    self.counters[src].tx_errors += 1;
                    return Outcome::Taken;
                }
                completed = Some(full);
            }
        }
        let header = completed.as_ref().unwrap_or(header);
        if let Some(dst) = target {
            if !receives(self, dst) {
                return Outcome::Taken;
            }
            return self.deliver(ports, src, dst, header, len, &mut copied, true, now);
        }
        // Flooded: to one receiver straight from the sender (in one copy);
        // to several, copied once into the switch and delivered from there.
        // Never held back (the others may have it already): dropped for a
        // receiver whose egress queue is full, as before backpressure.
        let receivers = (0..n).filter(|&p| receives(self, p)).count();
        for dst in 0..n {
            if receives(self, dst) {
                if receivers > 1 && !self.fetch(ports, src, len, &mut copied) {
                    self.counters[src].tx_errors += 1;
                    return Outcome::Taken;
                }
                let _ = self.deliver(ports, src, dst, header, len, &mut copied, false, now);
            }
        }
        Outcome::Taken
    }

    /// Makes sure the whole frame is in `self.frame` (reads the rest of a
    /// held one from its sender). `false` if it could not be read.
    fn fetch<P: Port>(
        &mut self,
        ports: &mut [P],
        src: usize,
        len: usize,
        copied: &mut bool,
    ) -> bool {
        if !*copied {
            *copied = ports[src].read_held(&mut self.frame[..len]);
        }
        *copied
    }

    /// Delivers the frame from `src` to `dst`: now if its egress queue is
    /// empty and it has buffers (from the sender's memory in one copy if
    /// the frame is held there), else into its egress queue, else back to
    /// the sender if `may_hold` and `dst` is not stalled, else dropped.
    ///
    /// Inline (once per frame and receiver): a call passes its eight
    /// arguments partly on the stack and saves the caller's registers,
    /// about 30 instructions, more than the common case's own work here.
    #[allow(clippy::too_many_arguments)] // one frame's whole state
    #[inline(always)]
    fn deliver<P: Port>(
        &mut self,
        ports: &mut [P],
        src: usize,
        dst: usize,
        header: &NetHeader,
        len: usize,
        copied: &mut bool,
        may_hold: bool,
        now: u64,
    ) -> Outcome {
        // Keep order: behind frames already waiting, wait too.
        if self.egress[dst].count == 0 {
            let result = if *copied {
                ports[dst].push_rx(header, &self.frame[..len])
            } else {
                // The Ethernet header in place, not copied out: a 14-byte
                // copy stores two overlapping words, and a read of the
                // first straddles both (a store-forwarding stall, see
                // `read_headers` in `crate::net`).
                let eth = self.frame.first_chunk::<MIN_FRAME_LEN>();
                let direct = pair(ports, dst, src)
                    .zip(eth)
                    .and_then(|((d, s), eth)| d.push_rx_held(header, eth, s));
                match direct {
                    Some(result) => result,
                    None if self.fetch(ports, src, len, copied) => {
                        ports[dst].push_rx(header, &self.frame[..len])
                    }
                    None => {
                        self.counters[src].tx_errors += 1;
                        return Outcome::Taken;
                    }
                }
            };
            let c = &mut self.counters[dst];
            match result {
                RxPush::Delivered => {
                    c.rx_packets += 1;
                    c.rx_bytes += len as u64;
                    self.full_since[dst] = None;
                    return Outcome::Taken;
                }
                RxPush::Dropped(reason) => {
                    count_rx_drop(c, reason);
                    return Outcome::Taken;
                }
                RxPush::NoBuffers => {}
            }
        }
        if !self.egress[dst].is_full() {
            if !self.fetch(ports, src, len, copied) {
                self.counters[src].tx_errors += 1;
                return Outcome::Taken;
            }
            let q = &mut self.egress[dst];
            q.push(header, &self.frame[..len]);
            if q.is_full() && self.full_since[dst].is_none() {
                self.full_since[dst] = Some(now);
            }
            return Outcome::Taken;
        }
        let stalled = self.stalled(dst, now);
        if may_hold && !stalled && ports[src].unpoll_tx() {
            return Outcome::HeldBack;
        }
        self.counters[dst].rx_dropped += 1;
        self.counters[dst].rx_stalled += u64::from(stalled);
        Outcome::Taken
    }
}

fn count_rx_drop(c: &mut PortCounters, reason: DropReason) {
    match reason {
        DropReason::PortDown => {
            c.rx_dropped += 1;
            c.rx_not_up += 1;
        }
        DropReason::QueueFailed => c.fatal_errors += 1,
        _ => c.rx_errors += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Runs `ops` pseudo-random pushes and pops (a fixed seed) on an
    /// egress queue of `capacity` and on a `VecDeque` bounded the same
    /// way; the number of steps where they disagree (what `front` shows,
    /// whether a push is taken). `wrong_wrap` breaks the queue the way a
    /// ring index can be broken: its head wraps one slot early.
    fn disagreements(capacity: usize, ops: usize, wrong_wrap: bool) -> usize {
        let mut q = EgressQueue::new(capacity);
        let mut model: VecDeque<Vec<u8>> = VecDeque::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut wrong = 0;
        for op in 0..ops {
            if next() % 3 != 0 {
                let len = 14 + usize::from(next().to_le_bytes()[0] % 64);
                let frame: Vec<u8> = (0..len).map(|i| (op + i).to_le_bytes()[0]).collect();
                let taken = q.push(&NetHeader::default(), &frame);
                wrong += usize::from(taken != (model.len() < capacity));
                if model.len() < capacity {
                    model.push_back(frame);
                }
            } else {
                if wrong_wrap && q.count > 0 && q.head + 2 == q.capacity() {
                    q.head = q.capacity() - 1;
                }
                q.pop();
                model.pop_front();
            }
            let front = q.front().map(|(_, frame)| frame.to_vec());
            wrong += usize::from(front.as_ref() != model.front());
        }
        wrong
    }

    #[test]
    fn the_egress_queue_keeps_fifo_order_across_its_wrap() {
        for capacity in [1, 2, 3, 8] {
            assert_eq!(
                disagreements(capacity, 5_000, false),
                0,
                "capacity {capacity}"
            );
        }
    }

    #[test]
    fn negative_control_a_wrong_wrap_is_caught() {
        assert!(disagreements(3, 5_000, true) > 0);
    }
}
