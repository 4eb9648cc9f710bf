//! Work per switch run is bounded by constants, not by guest input (issue
//! 10). The hypervisor holds the switch and every member NIC's lock, with
//! interrupts masked, for one [`Switch::run`]; a guest that publishes a full
//! ring of maximum-length chains and keeps it full (its avail index runs on
//! as fast as the device consumes, as a second vCPU can make it) must not
//! keep that run going. One run takes at most
//! [`TX_FRAMES_PER_RUN`] frames from its queue and says more is pending;
//! repeated runs deliver every frame, in order, none lost or duplicated.
//! Negative control: with the bound lifted, one run takes everything.
//!
//! Measured (printed): the worst frames and descriptors one run handled.
#![allow(clippy::cast_possible_truncation)]

use std::cell::Cell;
use std::sync::atomic::Ordering;

use chroma_mem::vecmem::VecMemory;
use chroma_mem::{GuestMemory, GuestPhysAddr, MemError};
use chroma_virtio::mmio::feature;
use chroma_virtio::mock::{MockNetDriver, MockQueue, RawDescriptor, RingFormat};
use chroma_virtio::net::{new_net_device, NetPort, NET_FEATURES};
use chroma_virtio::port::{NetHeader, Port, RxPush, TxPoll, MAX_FRAME_LEN, NET_HEADER_LEN};
use chroma_virtio::queue::{DESCRIPTOR_SIZE, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT};
use chroma_virtio::switch::{PortConfig, Switch, SwitchConfig, RUN_BUDGET, TX_FRAMES_PER_RUN};

const BASE: u64 = 0x4000_0000;
/// The queue size the hypervisor gives its devices (`vm.rs`).
const SIZE: u16 = 256;
/// Each chain: one INDIRECT descriptor and a table as long as the queue
/// allows (§2.7.5.3.1), 2 bytes per buffer: 512 bytes of header + frame.
const TABLE_LEN: usize = SIZE as usize;
const BYTES_PER_BUFFER: usize = 2;
/// Distance between two buffers of a chain (see `publish`).
const STRIDE: usize = 2 * BYTES_PER_BUFFER;
const CHAIN_BYTES: usize = TABLE_LEN * BYTES_PER_BUFFER;
const FRAME_LEN: usize = CHAIN_BYTES - NET_HEADER_LEN;
/// Frames the guest sends in all: four rings' worth.
const TOTAL: u32 = 4 * SIZE as u32;
/// Where the indirect tables and the frame bytes of each head live.
const TABLES: u64 = BASE + 0x10_0000;
const DATA: u64 = BASE + 0x20_0000;
const SRC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const DST: [u8; 6] = [2, 0, 0, 0, 0, 2];

/// Guest memory that counts descriptor reads (the only 16-byte reads: data
/// buffers are 2 bytes, the header is read in pieces of at most 12).
struct Counting {
    inner: VecMemory,
    descriptor_reads: Cell<u64>,
}

impl GuestMemory for Counting {
    fn check_range(&self, gpa: GuestPhysAddr, len: u64) -> Result<(), MemError> {
        self.inner.check_range(gpa, len)
    }
    fn read(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        if buf.len() == DESCRIPTOR_SIZE as usize {
            self.descriptor_reads.set(self.descriptor_reads.get() + 1);
        }
        self.inner.read(gpa, buf)
    }
    fn write(&self, gpa: GuestPhysAddr, data: &[u8]) -> Result<(), MemError> {
        self.inner.write(gpa, data)
    }
    fn load_u16(&self, gpa: GuestPhysAddr, order: Ordering) -> Result<u16, MemError> {
        self.inner.load_u16(gpa, order)
    }
    fn store_u16(&self, gpa: GuestPhysAddr, value: u16, order: Ordering) -> Result<(), MemError> {
        self.inner.store_u16(gpa, value, order)
    }
    fn fence(&self, order: Ordering) {
        self.inner.fence(order)
    }
}

/// The hostile guest publishes frame `seq` on head `seq % SIZE`: a chain of
/// one INDIRECT descriptor whose table holds `TABLE_LEN` 2-byte buffers.
/// On a packed ring, the next slot and a free Buffer ID.
fn publish(q: &mut MockQueue<'_, Counting>, mem: &Counting, seq: u32) {
    let head = (seq % u32::from(SIZE)) as u16;
    // Each buffer STRIDE bytes after the one before: none continues
    // another (the device would hold contiguous ones as one piece), so
    // every frame is in more buffers than it holds in place and is copied
    // as it is taken.
    let data = DATA + u64::from(head) * (TABLE_LEN * STRIDE) as u64;
    let table = TABLES + u64::from(head) * DESCRIPTOR_SIZE * TABLE_LEN as u64;
    let mut bytes = vec![0u8; CHAIN_BYTES];
    let frame = &mut bytes[NET_HEADER_LEN..];
    frame[..6].copy_from_slice(&DST);
    frame[6..12].copy_from_slice(&SRC);
    frame[14..18].copy_from_slice(&seq.to_le_bytes());
    for (k, piece) in bytes.chunks(BYTES_PER_BUFFER).enumerate() {
        mem.write(GuestPhysAddr::new(data + (k * STRIDE) as u64), piece)
            .unwrap();
    }
    if q.is_packed() {
        let buffers: Vec<_> = (0..TABLE_LEN)
            .map(|k| {
                let addr = data + (k * STRIDE) as u64;
                (addr, BYTES_PER_BUFFER as u32, false)
            })
            .collect();
        q.add_indirect(table, &buffers).expect("a free slot");
        return;
    }
    for k in 0..TABLE_LEN {
        let d = RawDescriptor {
            addr: data + (k * STRIDE) as u64,
            len: BYTES_PER_BUFFER as u32,
            flags: if k + 1 < TABLE_LEN {
                VIRTQ_DESC_F_NEXT
            } else {
                0
            },
            next: (k + 1) as u16,
        };
        let at = table + DESCRIPTOR_SIZE * k as u64;
        mem.write(GuestPhysAddr::new(at), &d.to_bytes()).unwrap();
    }
    q.write_descriptor(
        head,
        RawDescriptor {
            addr: table,
            len: (DESCRIPTOR_SIZE as usize * TABLE_LEN) as u32,
            flags: VIRTQ_DESC_F_INDIRECT,
            next: 0,
        },
    );
    q.push_avail(head);
}

/// The hostile guest's port: after each frame the device takes (and has
/// read), the guest puts the next one on the freed slot at once, so its
/// ring stays full until all `TOTAL` frames are out.
struct Refilling<'a, 'm> {
    port: NetPort<'a, Counting>,
    tx: &'a mut MockQueue<'m, Counting>,
    mem: &'a Counting,
    next: &'a mut u32,
}

impl Port for Refilling<'_, '_> {
    fn poll_tx(&mut self, frame: &mut [u8; MAX_FRAME_LEN]) -> TxPoll {
        let poll = self.port.poll_tx(frame);
        // A packed slot is the driver's again only once used (published at
        // the end of the run): a packed guest refills between runs.
        if poll != TxPoll::Empty && *self.next < TOTAL && !self.tx.is_packed() {
            publish(self.tx, self.mem, *self.next);
            *self.next += 1;
        }
        poll
    }
    fn push_rx(&mut self, header: &NetHeader, frame: &[u8]) -> RxPush {
        self.port.push_rx(header, frame)
    }
    fn read_held(&mut self, frame: &mut [u8]) -> bool {
        self.port.read_held(frame)
    }
    fn release_tx(&mut self) {
        self.port.release_tx()
    }
    fn unpoll_tx(&mut self) -> bool {
        self.port.unpoll_tx()
    }
    fn accepts_partial_checksum(&self) -> bool {
        self.port.accepts_partial_checksum()
    }
    fn flush(&mut self) {
        self.port.flush()
    }
}

/// The receiving port: records the sequence number of each frame.
#[derive(Default)]
struct Sink {
    received: Vec<u32>,
}

impl Port for Sink {
    fn poll_tx(&mut self, _frame: &mut [u8; MAX_FRAME_LEN]) -> TxPoll {
        TxPoll::Empty
    }
    fn push_rx(&mut self, _header: &NetHeader, frame: &[u8]) -> RxPush {
        assert_eq!(frame.len(), FRAME_LEN);
        self.received.push(u32::from_le_bytes([
            frame[14], frame[15], frame[16], frame[17],
        ]));
        RxPush::Delivered
    }
    fn accepts_partial_checksum(&self) -> bool {
        true
    }
    fn flush(&mut self) {}
}

/// What one run did: frames taken, descriptors read, more pending.
#[derive(Clone, Copy, Debug)]
struct RunStats {
    frames: usize,
    descriptors: u64,
    more_work: bool,
}

/// The guest publishes a full ring and keeps it full (split: at once;
/// packed: between runs, as its used buffers come back); the switch runs
/// (each run one lock hold in the hypervisor) until it reports no more
/// work. Returns the stats of each run and what the sink received.
fn flood(format: RingFormat, config: SwitchConfig) -> (Vec<RunStats>, Vec<u32>) {
    let mem = Counting {
        inner: VecMemory::new(BASE, 4 << 20),
        descriptor_reads: Cell::new(0),
    };
    let mut dev = new_net_device(SRC, NET_FEATURES | feature::RING_PACKED, SIZE);
    let driver =
        MockNetDriver::init_with(&mut dev, &mem, BASE, SIZE, 2048, u64::MAX, format).unwrap();
    assert_eq!(
        dev.queue(1).unwrap().is_packed(),
        format == RingFormat::Packed
    );
    let mut tx = driver.tx;
    // A full ring of maximum-length chains.
    for seq in 0..u32::from(SIZE) {
        publish(&mut tx, &mem, seq);
    }
    let mut next = u32::from(SIZE);
    let mut switch = Switch::new(config);
    switch.set_port(0, PortConfig::vm(SRC, false));
    switch.set_port(1, PortConfig::vm(DST, false));
    let mut sink = Sink::default();
    let mut runs = Vec::new();
    loop {
        let before = mem.descriptor_reads.get();
        let report = {
            let mut guest = Refilling {
                port: NetPort::new(&mut dev, &mem),
                tx: &mut tx,
                mem: &mem,
                next: &mut next,
            };
            let mut ports: [&mut dyn Port; 2] = [&mut guest, &mut sink];
            switch.run(&mut ports, 0)
        };
        runs.push(RunStats {
            frames: report.frames,
            descriptors: mem.descriptor_reads.get() - before,
            more_work: report.more_work,
        });
        assert!(runs.len() <= 10 * TOTAL as usize, "the runs never end");
        let mut refilled = false;
        if tx.is_packed() {
            while tx.pop_used().is_some() {}
            while next < TOTAL && tx.free_count() > 0 {
                publish(&mut tx, &mem, next);
                next += 1;
                refilled = true;
            }
        }
        if !report.more_work && !refilled {
            break;
        }
    }
    assert_eq!(switch.counters(0).tx_packets, u64::from(TOTAL));
    (runs, sink.received)
}

#[test]
fn a_full_ring_kept_full_is_taken_at_most_b_frames_per_run_and_none_is_lost() {
    full_ring_bounded(RingFormat::Split);
}

#[test]
fn packed_a_full_ring_kept_full_is_taken_at_most_b_frames_per_run_and_none_is_lost() {
    full_ring_bounded(RingFormat::Packed);
}

fn full_ring_bounded(format: RingFormat) {
    let (runs, received) = flood(format, SwitchConfig::default());
    let first = runs[0];
    assert!(
        first.frames <= TX_FRAMES_PER_RUN && first.more_work,
        "one run took {} frames (bound {TX_FRAMES_PER_RUN}), more pending: {}",
        first.frames,
        first.more_work
    );
    // Every run within the bound: B frames, each at most twice the queue
    // size descriptors (here 1 + 256).
    let worst_frames = runs.iter().map(|r| r.frames).max().unwrap();
    let worst_descriptors = runs.iter().map(|r| r.descriptors).max().unwrap();
    assert!(worst_frames <= TX_FRAMES_PER_RUN.min(RUN_BUDGET));
    let chain_bound = 2 * u64::from(SIZE);
    assert!(worst_descriptors <= TX_FRAMES_PER_RUN as u64 * chain_bound);
    // All delivered, in order, none lost or duplicated.
    let expected: Vec<u32> = (0..TOTAL).collect();
    assert_eq!(received, expected);
    assert!(runs.len() as u32 >= TOTAL / TX_FRAMES_PER_RUN as u32);
    eprintln!(
        "bounded ({format:?}): {TOTAL} frames of {} descriptors each in {} runs; worst run {worst_frames} frames, {worst_descriptors} descriptor reads (bound {} frames, {} descriptors)",
        1 + TABLE_LEN,
        runs.len(),
        TX_FRAMES_PER_RUN,
        TX_FRAMES_PER_RUN as u64 * chain_bound
    );
}

#[test]
fn negative_control_without_the_bound_one_run_takes_everything() {
    unbounded(RingFormat::Split);
}

#[test]
fn packed_negative_control_without_the_bound_one_run_takes_everything() {
    unbounded(RingFormat::Packed);
}

fn unbounded(format: RingFormat) {
    let (runs, received) = flood(
        format,
        SwitchConfig {
            tx_frames_per_run: usize::MAX,
            run_budget: usize::MAX,
            batch_limit: usize::MAX,
            ..SwitchConfig::default()
        },
    );
    let first = runs[0];
    // Everything there is: the split guest refills within the run, the
    // packed one has a ring's worth.
    let everything = match format {
        RingFormat::Split => TOTAL,
        RingFormat::Packed => u32::from(SIZE),
    };
    assert_eq!(
        first.frames, everything as usize,
        "the unbounded run stopped early"
    );
    assert_eq!(
        first.descriptors,
        u64::from(everything) * (1 + TABLE_LEN as u64)
    );
    assert!(!first.more_work);
    assert_eq!(received, (0..TOTAL).collect::<Vec<_>>());
    eprintln!(
        "unbounded ({format:?}): one run (one lock hold) took {} frames, {} descriptor reads",
        first.frames, first.descriptors
    );
}

/// An avail index more than a ring ahead is a structural error (§2.7.13.3:
/// the device sets DEVICE_NEEDS_RESET): the run ends at once, not after
/// "avail - used" frames.
#[test]
fn an_avail_index_past_the_ring_costs_one_poll() {
    let mem = Counting {
        inner: VecMemory::new(BASE, 4 << 20),
        descriptor_reads: Cell::new(0),
    };
    let mut dev = new_net_device(SRC, NET_FEATURES, SIZE);
    let driver = MockNetDriver::init(&mut dev, &mem, BASE, SIZE, 2048, u64::MAX).unwrap();
    let mut tx = driver.tx;
    publish(&mut tx, &mem, 0);
    tx.publish_avail_idx(40_000);
    let mut switch = Switch::new(SwitchConfig::default());
    switch.set_port(0, PortConfig::vm(SRC, false));
    switch.set_port(1, PortConfig::vm(DST, false));
    let mut sink = Sink::default();
    let report = {
        let mut port = NetPort::new(&mut dev, &mem);
        let mut ports: [&mut dyn Port; 2] = [&mut port, &mut sink];
        switch.run(&mut ports, 0)
    };
    assert_eq!((report.frames, report.more_work), (1, false));
    assert_eq!(mem.descriptor_reads.get(), 0);
    assert_eq!(switch.counters(0).fatal_errors, 1);
    assert!(!dev.is_live());
}

/// A port with one frame to send (the other side of a receive test).
struct OneFrame(Option<Vec<u8>>);

impl Port for OneFrame {
    fn poll_tx(&mut self, frame: &mut [u8; MAX_FRAME_LEN]) -> TxPoll {
        match self.0.take() {
            None => TxPoll::Empty,
            Some(f) => {
                frame[..f.len()].copy_from_slice(&f);
                TxPoll::Frame {
                    len: f.len(),
                    header: NetHeader::default(),
                }
            }
        }
    }
    fn push_rx(&mut self, _header: &NetHeader, _frame: &[u8]) -> RxPush {
        RxPush::Delivered
    }
    fn accepts_partial_checksum(&self) -> bool {
        true
    }
    fn flush(&mut self) {}
}

/// The receive side of the same bound: a guest (MRG_RXBUF) posts more
/// receive chains than one frame may span, each an INDIRECT table as long
/// as the queue allows of empty buffers. Delivering one frame walks at most
/// `MAX_RX_DESCRIPTORS` buffers (516 descriptor reads with the INDIRECT
/// ones; the frame is dropped, every chain returned), not `MAX_RX_CHAINS`
/// x (1 + 256) = 16448 reads (measured on the parent commit, before the
/// budget).
#[test]
fn a_received_frame_reads_a_bounded_number_of_descriptors() {
    received_frame_bounded(RingFormat::Split);
}

#[test]
fn packed_a_received_frame_reads_a_bounded_number_of_descriptors() {
    received_frame_bounded(RingFormat::Packed);
}

fn received_frame_bounded(format: RingFormat) {
    use chroma_virtio::net::{net_feature, MAX_RX_CHAINS, MAX_RX_DESCRIPTORS};
    let mem = Counting {
        inner: VecMemory::new(BASE, 4 << 20),
        descriptor_reads: Cell::new(0),
    };
    let mut dev = new_net_device(DST, NET_FEATURES | feature::RING_PACKED, SIZE);
    let driver =
        MockNetDriver::init_with(&mut dev, &mem, BASE, SIZE, 2048, u64::MAX, format).unwrap();
    assert_eq!(
        dev.queue(0).unwrap().is_packed(),
        format == RingFormat::Packed
    );
    assert_ne!(driver.features & net_feature::MRG_RXBUF, 0);
    let mut rx = driver.rx;
    let empty = vec![(DATA, 0u32, true); TABLE_LEN];
    for chain in 0..MAX_RX_CHAINS + 8 {
        let table = TABLES + (chain * TABLE_LEN) as u64 * DESCRIPTOR_SIZE;
        rx.add_indirect(table, &empty).unwrap();
    }
    let mut switch = Switch::new(SwitchConfig::default());
    switch.set_port(0, PortConfig::vm(SRC, false));
    switch.set_port(1, PortConfig::vm(DST, false));
    let mut frame = vec![0u8; 100];
    frame[..6].copy_from_slice(&DST);
    frame[6..12].copy_from_slice(&SRC);
    let mut sender = OneFrame(Some(frame));
    {
        let mut port = NetPort::new(&mut dev, &mem);
        let mut ports: [&mut dyn Port; 2] = [&mut sender, &mut port];
        switch.run(&mut ports, 0);
    }
    let reads = mem.descriptor_reads.get();
    eprintln!(
        "receive ({format:?}): one frame into {} chains of {} empty buffers: {reads} descriptor reads (budget {MAX_RX_DESCRIPTORS})",
        MAX_RX_CHAINS + 8,
        TABLE_LEN
    );
    // The budget (+1, the one that crossed it), plus at most one INDIRECT
    // descriptor per chain walked: here 512 + 1 + 3 = 516; in general at
    // most twice that.
    assert!(
        reads <= 2 * (MAX_RX_DESCRIPTORS as u64 + 1),
        "{reads} descriptor reads"
    );
    // What the walk costs without the budget (every chain walked in full):
    // the test fails against it (16448 reads with MAX_RX_DESCRIPTORS lifted).
    let unbounded = MAX_RX_CHAINS as u64 * (1 + TABLE_LEN as u64);
    assert!(reads < unbounded / 8, "{reads} of {unbounded} reads");
    let c = switch.counters(1);
    assert_eq!((c.rx_packets, c.rx_errors, c.fatal_errors), (0, 1, 0));
    assert!(dev.is_live(), "a frame error, not a queue error");
    // Every chain taken went back (length 0); none leaked.
    let mut returned = 0;
    while let Some((_, len)) = rx.pop_used() {
        assert_eq!(len, 0);
        returned += 1;
    }
    assert!(returned >= 1 && rx.bad_returns == 0);
}
