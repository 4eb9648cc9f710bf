//! The `virtio-drivers` crate's net driver, an implementation nobody here
//! wrote, drives two chroma virtio-net devices joined by the switch and
//! exchanges 100,000+ verified frames per configuration.
#![allow(clippy::cast_possible_truncation)]
#![allow(unsafe_code)]

#[path = "support/arena.rs"]
mod arena;
#[path = "support/harness.rs"]
mod harness;

use std::collections::{HashMap, VecDeque};

use chroma_virtio::mmio::feature;
use chroma_virtio::net::{net_feature, NET_FEATURES};
use harness::{ArenaHal, HostTransport, World};
use virtio_drivers::device::net::VirtIONetRaw;

const QUEUE: usize = 64;
const RX_BUFFER: usize = 2048;
const MAC: [[u8; 6]; 2] = [[0x52, 0x54, 0, 0, 0, 1], [0x52, 0x54, 0, 0, 0, 2]];

type Driver = VirtIONetRaw<ArenaHal, HostTransport, QUEUE>;

/// A deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Frame `seq`: dst, src, ethertype 0x88b5, the sequence number, a pattern.
fn make_frame(seq: u64, dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(&seq.to_le_bytes());
    while f.len() < len {
        f.push((seq.wrapping_mul(31) as usize + f.len()) as u8);
    }
    f
}

struct Side {
    driver: Driver,
    rx: HashMap<u16, Vec<u8>>,
    expected: VecDeque<Vec<u8>>,
    received: u64,
}

impl Side {
    fn new(world: &std::rc::Rc<std::cell::RefCell<World>>, port: usize) -> Side {
        let driver = Driver::new(HostTransport {
            world: world.clone(),
            port,
        })
        .expect("driver init");
        assert_eq!(driver.mac_address(), MAC[port]);
        let mut side = Side {
            driver,
            rx: HashMap::new(),
            expected: VecDeque::new(),
            received: 0,
        };
        for _ in 0..QUEUE {
            side.post_rx(vec![0u8; RX_BUFFER]);
        }
        side
    }

    fn post_rx(&mut self, mut buf: Vec<u8>) {
        // SAFETY: the buffer is kept in `self.rx` until its token completes.
        let token = unsafe { self.driver.receive_begin(&mut buf) }.expect("receive_begin");
        assert!(
            self.rx.insert(token, buf).is_none(),
            "token {token} posted twice"
        );
    }

    /// Takes every completed receive and checks it against what was sent.
    fn drain(&mut self) {
        while let Some(token) = self.driver.poll_receive() {
            let mut buf = self
                .rx
                .remove(&token)
                .expect("device returned a token never posted");
            // SAFETY: `buf` is the buffer posted with `token`.
            let (hdr, len) =
                unsafe { self.driver.receive_complete(token, &mut buf) }.expect("receive_complete");
            let want = self.expected.pop_front().expect("a frame nobody sent");
            assert_eq!(&buf[hdr..hdr + len], &want[..], "payload mismatch");
            self.received += 1;
            self.post_rx(buf);
        }
    }
}

/// Sends `total` frames back and forth in bursts of 1..=32 with mixed sizes
/// 60..=1514, every 17th one broadcast, and verifies each payload.
fn exchange(features: u64, immediate: bool, total: u64, seed: u64) -> (u64, World2Stats) {
    let world = World::new(&MAC, features, QUEUE as u16);
    world.borrow_mut().immediate = immediate;
    let mut sides = [Side::new(&world, 0), Side::new(&world, 1)];
    let mut rng = Rng(seed);
    let mut seq = 0u64;
    while seq < total {
        let from = (rng.next() % 2) as usize;
        let to = 1 - from;
        let burst = 1 + rng.next() % 32;
        let mut in_flight: Vec<(u16, Vec<u8>)> = Vec::new();
        for _ in 0..burst {
            let len = 60 + (rng.next() % 1455) as usize;
            let dst = if seq.is_multiple_of(17) {
                [0xff; 6]
            } else {
                MAC[to]
            };
            let frame = make_frame(seq, dst, MAC[from], len);
            seq += 1;
            sides[to].expected.push_back(frame.clone());
            if immediate && seq.is_multiple_of(4) {
                // `send` posts header and frame as two buffers: an indirect
                // table when INDIRECT_DESC was negotiated. It blocks until used.
                // Earlier completions sit first in the used ring: reap them.
                complete_tx(&mut sides[from].driver, &mut in_flight);
                sides[from].driver.send(&frame).expect("send");
                continue;
            }
            let mut buf = vec![0u8; 12 + frame.len()];
            let hdr = sides[from]
                .driver
                .fill_buffer_header(&mut buf)
                .expect("header");
            assert_eq!(hdr, 12, "VERSION_1 header");
            buf[hdr..].copy_from_slice(&frame);
            // SAFETY: `buf` stays in `in_flight` until transmit_complete.
            let token = unsafe { sides[from].driver.transmit_begin(&buf) }.expect("transmit_begin");
            in_flight.push((token, buf));
        }
        if !immediate {
            world.borrow_mut().run();
        }
        complete_tx(&mut sides[from].driver, &mut in_flight);
        sides[to].drain();
        if !immediate {
            // Refills may have been deferred too.
            world.borrow_mut().run();
            sides[to].drain();
        }
        assert!(
            sides[to].expected.is_empty(),
            "{} frames lost at seq {seq}",
            sides[to].expected.len()
        );
    }
    let w = world.borrow();
    let stats = World2Stats {
        kicks: w.kicks,
        counters: [w.switch.counters(0), w.switch.counters(1)],
        interrupts_status: [
            w.devices[0].interrupt_status(),
            w.devices[1].interrupt_status(),
        ],
    };
    assert_eq!(sides[0].received + sides[1].received, seq);
    (seq, stats)
}

/// Completes every transmit in `in_flight`; each must have been used.
fn complete_tx(driver: &mut Driver, in_flight: &mut Vec<(u16, Vec<u8>)>) {
    while !in_flight.is_empty() {
        let token = driver.poll_transmit().expect("transmit not completed");
        let i = in_flight
            .iter()
            .position(|(t, _)| *t == token)
            .expect("unknown tx token");
        let (_, buf) = in_flight.swap_remove(i);
        // SAFETY: same buffer as passed to transmit_begin.
        unsafe { driver.transmit_complete(token, &buf) }.expect("transmit_complete");
    }
    assert!(
        driver.poll_transmit().is_none(),
        "a transmit completed twice"
    );
}

struct World2Stats {
    kicks: u64,
    counters: [chroma_virtio::switch::PortCounters; 2],
    interrupts_status: [u32; 2],
}

fn check(received: u64, total: u64, stats: &World2Stats) {
    assert!(received >= total);
    let total = received;
    assert!(stats.kicks > 0);
    let c = stats.counters;
    assert_eq!(c[0].tx_packets + c[1].tx_packets, total);
    assert_eq!(c[0].rx_packets + c[1].rx_packets, total);
    for c in c {
        assert_eq!(
            (c.tx_errors, c.rx_errors, c.rx_dropped, c.fatal_errors),
            (0, 0, 0, 0)
        );
    }
    // The drivers poll; used-buffer interrupts were raised and left pending.
    assert!(stats.interrupts_status.iter().all(|s| s & 1 == 1));
}

#[test]
fn virtio_drivers_all_features_100k_frames() {
    let total = 100_000;
    let (received, stats) = exchange(NET_FEATURES, true, total, 0x1234_5678);
    check(received, total, &stats);
}

#[test]
fn virtio_drivers_without_event_idx_batched_100k_frames() {
    let total = 100_000;
    let (received, stats) = exchange(
        NET_FEATURES & !feature::EVENT_IDX,
        false,
        total,
        0xdead_beef,
    );
    check(received, total, &stats);
}

#[test]
fn virtio_drivers_without_indirect_or_mrg_100k_frames() {
    let total = 100_000;
    let features = NET_FEATURES & !feature::INDIRECT_DESC & !net_feature::MRG_RXBUF;
    let (received, stats) = exchange(features, true, total, 0x0bad_cafe);
    check(received, total, &stats);
}

/// Ones'-complement sum of big-endian words, folded (a reference written
/// here, not `chroma_virtio::checksum`).
fn reference_sum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    let mut sum: u64 = bytes
        .chunks(2)
        .map(|w| u64::from(w[0]) << 8 | u64::from(*w.get(1).unwrap_or(&0)))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// TSO towards a driver nobody here wrote: chroma's mock driver (port 0,
/// HOST_TSO4) sends 60 KiB TCP GSO frames; the `virtio-drivers` driver
/// (port 1), which negotiates neither GUEST_TSO nor GUEST_CSUM, gets
/// Ethernet frames it can take (§5.1.6.2: the device cuts them), each with
/// a correct IPv4 header checksum and TCP checksum and consecutive
/// sequence numbers; the payload reassembles byte for byte.
#[test]
fn virtio_drivers_receives_a_gso_stream_as_checked_segments() {
    use chroma_virtio::mock::{tcp_gso_frame, MockNetDriver};
    let world = World::new(&MAC, NET_FEATURES, QUEUE as u16);
    world.borrow_mut().immediate = false;
    let mut receiver = Side::new(&world, 1);
    let (base, _) = arena::arena_alloc(512);
    let mem = world.borrow().mem;
    let mut sender = {
        let mut w = world.borrow_mut();
        MockNetDriver::init(&mut w.devices[0], &mem, base, 64, 2048, u64::MAX).unwrap()
    };
    sender.fill_rx();
    assert!(sender.features & net_feature::HOST_TSO4 != 0);
    let mut received = Vec::new();
    let mut sent = Vec::new();
    let mut next_seq = 0x7fff_f000u32;
    for round in 0..20u32 {
        let payload: Vec<u8> = (0..60_000u32).map(|i| (i * 13 + round) as u8).collect();
        let (header, frame) =
            tcp_gso_frame(MAC[1], MAC[0], false, 3, 1448, next_seq, 0x18, &payload);
        next_seq = next_seq.wrapping_add(payload.len() as u32);
        sent.extend_from_slice(&payload);
        assert!(sender.send_scattered(&header, &frame, base + 0x10_0000, 17));
        // Two runs: what did not fit the receiver's 64 buffers waits in
        // its egress queue until it reposts them.
        for _ in 0..3 {
            world.borrow_mut().run();
            while let Some(token) = receiver.driver.poll_receive() {
                let mut buf = receiver.rx.remove(&token).unwrap();
                // SAFETY: `buf` is the buffer posted with `token`.
                let (hdr, len) = unsafe { receiver.driver.receive_complete(token, &mut buf) }
                    .expect("receive_complete");
                received.push(buf[hdr..hdr + len].to_vec());
                receiver.post_rx(buf);
            }
        }
    }
    let mut seq = 0x7fff_f000u32;
    let mut payload = Vec::new();
    for (i, f) in received.iter().enumerate() {
        assert!(f.len() <= 1514, "segment {i}: {} bytes", f.len());
        let (ip, tcp) = (&f[14..34], &f[34..]);
        assert_eq!(
            reference_sum(&[ip]),
            0xffff,
            "segment {i}: IPv4 header checksum"
        );
        assert_eq!(
            usize::from(u16::from_be_bytes([ip[2], ip[3]])),
            f.len() - 14
        );
        let mut pseudo = ip[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        assert_eq!(
            reference_sum(&[&pseudo, tcp]),
            0xffff,
            "segment {i}: TCP checksum"
        );
        assert_eq!(
            u32::from_be_bytes(tcp[4..8].try_into().unwrap()),
            seq,
            "segment {i}"
        );
        let data = &tcp[32..];
        seq = seq.wrapping_add(data.len() as u32);
        payload.extend_from_slice(data);
    }
    assert_eq!(received.len(), 20 * 60_000usize.div_ceil(1448));
    assert!(payload == sent, "payload reassembles");
    let w = world.borrow();
    assert_eq!(w.switch.counters(1).rx_gso_cut, 20);
    assert_eq!(w.switch.counters(0).tx_errors, 0);
}
