//! The switch (learning, ageing, flooding, fairness) with a non-virtio
//! port type beside virtio ones, MRG_RXBUF over 100,000 frames with the
//! mock driver, and software checksum completion with a negative control.
#![allow(clippy::cast_possible_truncation)]

use std::collections::VecDeque;

use chroma_mem::vecmem::VecMemory;
use chroma_virtio::checksum::{fold, ones_complement_sum};
use chroma_virtio::mmio::feature;
use chroma_virtio::mock::{MockNetDriver, RingFormat};
use chroma_virtio::net::{net_feature, new_net_device, NetPort, VirtioNet, NET_FEATURES};
use chroma_virtio::port::{NetHeader, Port, RxPush, TxPoll, MAX_FRAME_LEN};
use chroma_virtio::switch::{PortConfig, Switch, SwitchConfig};

/// A non-virtio port (as the uplink will be): frames in and out of queues.
#[derive(Default)]
struct QueuePort {
    to_send: VecDeque<Vec<u8>>,
    received: Vec<(NetHeader, Vec<u8>)>,
    partial_ok: bool,
}

impl Port for QueuePort {
    fn poll_tx(&mut self, frame: &mut [u8; MAX_FRAME_LEN]) -> TxPoll {
        match self.to_send.pop_front() {
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
    fn push_rx(&mut self, header: &NetHeader, frame: &[u8]) -> RxPush {
        self.received.push((*header, frame.to_vec()));
        RxPush::Delivered
    }
    fn accepts_partial_checksum(&self) -> bool {
        self.partial_ok
    }
    fn flush(&mut self) {}
}

fn frame(dst: [u8; 6], src: [u8; 6], tag: u16) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[14..16].copy_from_slice(&tag.to_le_bytes());
    f
}

/// A switch whose ports all have port security lifted (they start locked):
/// these tests are about forwarding, not about who may send what.
fn open_switch(config: SwitchConfig) -> Switch {
    let mut switch = Switch::new(config);
    for port in 0..config.port_count {
        switch.set_port(port, PortConfig::OPEN);
    }
    switch
}

fn mac(n: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, n]
}

#[test]
fn learning_flooding_and_ageing() {
    let mut ports: Vec<QueuePort> = (0..3).map(|_| QueuePort::default()).collect();
    let mut sw = open_switch(SwitchConfig {
        port_count: 3,
        ageing_ticks: 100,
        ..SwitchConfig::default()
    });
    // Unknown destination: flooded to everyone but the sender.
    ports[0].to_send.push_back(frame(mac(2), mac(1), 1));
    sw.run(&mut ports, 0);
    assert_eq!((ports[1].received.len(), ports[2].received.len()), (1, 1));
    assert_eq!(sw.lookup(&mac(1), 0), Some(0));
    // Reply: mac(1) is known, so only port 0 gets it; mac(2) is learned on 2.
    ports[2].to_send.push_back(frame(mac(1), mac(2), 2));
    sw.run(&mut ports, 10);
    assert_eq!(ports[0].received.len(), 1);
    assert_eq!(ports[1].received.len(), 1, "known unicast was flooded");
    // Broadcast and multicast always flood.
    ports[1].to_send.push_back(frame([0xff; 6], mac(3), 3));
    ports[1]
        .to_send
        .push_back(frame([0x01, 0, 0x5e, 0, 0, 1], mac(3), 4));
    sw.run(&mut ports, 20);
    assert_eq!((ports[0].received.len(), ports[2].received.len()), (3, 3));
    // Ageing: after 100 ticks mac(1) is forgotten and traffic floods again.
    assert_eq!(sw.lookup(&mac(1), 100), Some(0));
    assert_eq!(sw.lookup(&mac(1), 101), None);
    ports[2].to_send.push_back(frame(mac(1), mac(2), 5));
    sw.run(&mut ports, 200);
    assert_eq!(ports[1].received.len(), 2, "aged entry still used");
    // Station move: mac(1) now sends from port 1.
    ports[1].to_send.push_back(frame(mac(9), mac(1), 6));
    sw.run(&mut ports, 201);
    assert_eq!(sw.lookup(&mac(1), 201), Some(1));
    let c = sw.counters(1);
    assert_eq!((c.tx_packets, c.rx_packets), (3, 2));
}

#[test]
fn round_robin_fairness_with_batch_limit() {
    // Port 0 has 1000 frames queued, port 1 has 10; with a batch limit of 8
    // port 1's frames all leave within its first two turns, not after 1000.
    let mut ports: Vec<QueuePort> = (0..3).map(|_| QueuePort::default()).collect();
    for i in 0..1000 {
        ports[0].to_send.push_back(frame(mac(30), mac(10), i));
    }
    for i in 0..10 {
        ports[1]
            .to_send
            .push_back(frame(mac(30), mac(11), 5000 + i));
    }
    let mut sw = open_switch(SwitchConfig {
        port_count: 3,
        batch_limit: 8,
        run_budget: 100_000,
        tx_frames_per_run: usize::MAX,
        ..SwitchConfig::default()
    });
    sw.run(&mut ports, 0);
    let order: Vec<u16> = ports[2]
        .received
        .iter()
        .map(|(_, f)| u16::from_le_bytes([f[14], f[15]]))
        .collect();
    assert_eq!(order.len(), 1010);
    let last_small = order.iter().rposition(|&t| t >= 5000).unwrap();
    assert!(
        last_small < 40,
        "port 1 starved until position {last_small}"
    );
    // Negative control: with a batch limit above the backlog, port 1 waits.
    let mut ports2: Vec<QueuePort> = (0..3).map(|_| QueuePort::default()).collect();
    for i in 0..1000 {
        ports2[0].to_send.push_back(frame(mac(30), mac(10), i));
    }
    ports2[1].to_send.push_back(frame(mac(30), mac(11), 5000));
    let mut unfair = open_switch(SwitchConfig {
        port_count: 3,
        batch_limit: 2000,
        run_budget: 100_000,
        tx_frames_per_run: usize::MAX,
        ..SwitchConfig::default()
    });
    unfair.run(&mut ports2, 0);
    let pos = ports2[2]
        .received
        .iter()
        .position(|(_, f)| f[14..16] == 5000u16.to_le_bytes())
        .unwrap();
    assert_eq!(pos, 1000, "the unfair configuration should starve port 1");
}

#[test]
fn run_budget_bounds_one_call() {
    let mut ports: Vec<QueuePort> = (0..2).map(|_| QueuePort::default()).collect();
    for i in 0..100 {
        ports[0].to_send.push_back(frame(mac(2), mac(1), i));
    }
    let mut sw = open_switch(SwitchConfig {
        port_count: 2,
        run_budget: 30,
        ..SwitchConfig::default()
    });
    let r = sw.run(&mut ports, 0);
    assert_eq!((r.frames, r.more_work), (30, true));
    while sw.run(&mut ports, 0).more_work {}
    assert_eq!(ports[1].received.len(), 100);
}

/// A UDP/IPv4 frame whose checksum field holds the pseudo-header sum, as a
/// driver with NEEDS_CSUM leaves it. Returns the frame and the header.
fn partial_udp(payload_len: usize, src: [u8; 6], dst: [u8; 6]) -> (Vec<u8>, [u8; 12]) {
    let udp_len = 8 + payload_len;
    let mut f = vec![0u8; 14 + 20 + udp_len];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
    f[34..36].copy_from_slice(&1234u16.to_be_bytes());
    f[36..38].copy_from_slice(&5678u16.to_be_bytes());
    f[38..40].copy_from_slice(&(udp_len as u16).to_be_bytes());
    for (i, b) in f[42..].iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    let pseudo = pseudo_sum(&f);
    f[40..42].copy_from_slice(&fold(pseudo).to_be_bytes());
    let mut h = [0u8; 12];
    h[0] = 1; // NEEDS_CSUM
    h[6..8].copy_from_slice(&34u16.to_le_bytes());
    h[8..10].copy_from_slice(&6u16.to_le_bytes());
    (f, h)
}

fn pseudo_sum(f: &[u8]) -> u32 {
    let udp_len = (f.len() - 34) as u16;
    let mut p = Vec::new();
    p.extend_from_slice(&f[26..34]);
    p.extend_from_slice(&[0, 17]);
    p.extend_from_slice(&udp_len.to_be_bytes());
    ones_complement_sum(0, &p)
}

/// Independent reference: a UDP checksum verifies to 0xffff over
/// pseudo-header + segment.
fn udp_checksum_valid(f: &[u8]) -> bool {
    fold(ones_complement_sum(pseudo_sum(f), &f[34..])) == 0xffff
}

#[test]
fn needs_csum_is_completed_for_ports_without_guest_csum() {
    let mems = [
        VecMemory::new(0x4000_0000, 1 << 20),
        VecMemory::new(0x8000_0000, 1 << 20),
        VecMemory::new(0xc000_0000, 1 << 20),
    ];
    let mut devs: Vec<VirtioNet> = (0..3)
        .map(|i| new_net_device(mac(i as u8 + 1), NET_FEATURES, 256))
        .collect();
    let want = [u64::MAX, !net_feature::GUEST_CSUM, u64::MAX];
    let mut drivers: Vec<_> = (0..3)
        .map(|i| {
            let base = [0x4000_0000, 0x8000_0000, 0xc000_0000][i];
            let mut d =
                MockNetDriver::init(&mut devs[i], &mems[i], base, 16, 2048, want[i]).unwrap();
            d.fill_rx();
            d
        })
        .collect();
    let (f, h) = partial_udp(301, mac(1), [0xff; 6]);
    assert!(
        !udp_checksum_valid(&f),
        "the partial frame must not verify yet"
    );
    assert!(drivers[0].send_with_header(&h, &f));
    let mut ports: Vec<_> = devs
        .iter_mut()
        .zip(mems.iter())
        .map(|(d, m)| NetPort::new(d, m))
        .collect();
    let mut sw = open_switch(SwitchConfig {
        port_count: 3,
        ..SwitchConfig::default()
    });
    sw.run(&mut ports, 0);
    drop(ports);
    // Port 1 (no GUEST_CSUM): complete checksum, flags 0.
    let (h1, f1) = drivers[1].recv().unwrap();
    assert_eq!(h1[0], 0);
    assert!(udp_checksum_valid(&f1), "software checksum wrong");
    // Port 2 (GUEST_CSUM): it also gets the completed frame (completed once
    // for the flood); a completed checksum is valid for every receiver.
    let (_, f2) = drivers[2].recv().unwrap();
    assert!(udp_checksum_valid(&f2));
}

#[test]
fn needs_csum_passes_through_between_csum_ports() {
    let mems = [
        VecMemory::new(0x4000_0000, 1 << 20),
        VecMemory::new(0x8000_0000, 1 << 20),
    ];
    let mut devs: Vec<VirtioNet> = (0..2)
        .map(|i| new_net_device(mac(i as u8 + 1), NET_FEATURES, 256))
        .collect();
    let mut drivers: Vec<_> = (0..2)
        .map(|i| {
            let base = [0x4000_0000, 0x8000_0000][i];
            let mut d =
                MockNetDriver::init(&mut devs[i], &mems[i], base, 16, 2048, u64::MAX).unwrap();
            d.fill_rx();
            d
        })
        .collect();
    let (f, h) = partial_udp(100, mac(1), mac(2));
    assert!(drivers[0].send_with_header(&h, &f));
    let mut ports: Vec<_> = devs
        .iter_mut()
        .zip(mems.iter())
        .map(|(d, m)| NetPort::new(d, m))
        .collect();
    open_switch(SwitchConfig::default()).run(&mut ports, 0);
    drop(ports);
    let (h1, f1) = drivers[1].recv().unwrap();
    // Passed through untouched: NEEDS_CSUM and the offsets, checksum still partial.
    assert_eq!(&h1[..10], &h[..10]);
    assert_eq!(f1, f);
    // Negative control for the checker: this frame does not verify.
    assert!(!udp_checksum_valid(&f1));
}

/// Two VMs (4 MiB each) whose devices offer `features` and packed rings,
/// driven on `format` rings of `size` entries with receive buffers of
/// `rx_len` bytes, every receive buffer posted.
fn two_vms(
    format: RingFormat,
    features: u64,
    size: u16,
    rx_len: u32,
) -> (
    &'static [VecMemory; 2],
    Vec<VirtioNet>,
    Vec<MockNetDriver<'static, VecMemory>>,
) {
    let mems: &'static [VecMemory; 2] = Box::leak(Box::new([
        VecMemory::new(0x4000_0000, 4 << 20),
        VecMemory::new(0x8000_0000, 4 << 20),
    ]));
    let mut devs: Vec<VirtioNet> = (0..2)
        .map(|i| new_net_device(mac(i as u8 + 1), features | feature::RING_PACKED, 256))
        .collect();
    let drivers = (0..2)
        .map(|i| {
            let base = [0x4000_0000, 0x8000_0000][i];
            let mut d = MockNetDriver::init_with(
                &mut devs[i],
                &mems[i],
                base,
                size,
                rx_len,
                u64::MAX,
                format,
            )
            .unwrap();
            assert_eq!(
                devs[i].queue(0).unwrap().is_packed(),
                format == RingFormat::Packed
            );
            d.fill_rx();
            d
        })
        .collect();
    (mems, devs, drivers)
}

/// One switch run over `devs`.
fn run_once(sw: &mut Switch, devs: &mut [VirtioNet], mems: &[VecMemory], now: u64) {
    let mut ports: Vec<_> = devs
        .iter_mut()
        .zip(mems.iter())
        .map(|(d, m)| NetPort::new(d, m))
        .collect();
    sw.run(&mut ports, now);
}

/// 100,000 frames each way of mixed sizes through MRG_RXBUF with small
/// (256-byte) receive buffers, with and without EVENT_IDX; payloads, buffer
/// accounting (no leak, no double return) and num_buffers checked.
fn mrg_run(format: RingFormat, features: u64, total: u32, seed: u64) {
    let (mems, mut devs, mut drivers) = two_vms(format, features, 128, 256);
    let started = std::time::Instant::now();
    assert_eq!(
        drivers[0].features & net_feature::MRG_RXBUF != 0,
        features & net_feature::MRG_RXBUF != 0
    );
    let mut sw = open_switch(SwitchConfig::default());
    let mut x = seed;
    let mut sent = 0u32;
    let mut expected: [VecDeque<Vec<u8>>; 2] = [VecDeque::new(), VecDeque::new()];
    let mut kicks = 0u32;
    while sent < total {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let from = (x % 2) as usize;
        let to = 1 - from;
        let burst = 1 + (x >> 8) % 8;
        for k in 0..burst {
            let len = 60 + ((x >> 16).wrapping_add(k * 977) % 1455) as usize;
            let mut f: Vec<u8> = (0..len).map(|i| (i as u32 ^ sent) as u8).collect();
            f[..6].copy_from_slice(&mac(to as u8 + 1));
            f[6..12].copy_from_slice(&mac(from as u8 + 1));
            assert!(drivers[from].send(&f));
            expected[to].push_back(f);
            sent += 1;
        }
        if drivers[from]
            .tx
            .take_kick(features & feature::EVENT_IDX != 0)
        {
            kicks += 1;
        }
        let mut ports: Vec<_> = devs
            .iter_mut()
            .zip(mems.iter())
            .map(|(d, m)| NetPort::new(d, m))
            .collect();
        while sw.run(&mut ports, u64::from(sent)).more_work {}
        drop(ports);
        while let Some((h, f)) = drivers[to].recv() {
            let want = expected[to].pop_front().expect("unexpected frame");
            let nb = u16::from_le_bytes([h[10], h[11]]);
            assert_eq!(
                usize::from(nb),
                (want.len() + 12).div_ceil(256),
                "num_buffers"
            );
            assert_eq!(f, want);
        }
        assert!(expected[to].is_empty(), "frames lost");
    }
    for d in &drivers {
        assert_eq!(d.rx.bad_returns + d.tx.bad_returns, 0);
        // Every receive buffer is either posted and unused or back with the driver: none leaked.
        assert_eq!(d.rx.outstanding_count(), d.rx.layout.size as usize);
        // §2.7.9 / §2.8.9: with IN_ORDER every buffer is used in order.
        assert_ne!(d.features & feature::IN_ORDER, 0, "IN_ORDER negotiated");
        assert_eq!(
            d.rx.out_of_order + d.tx.out_of_order,
            0,
            "a buffer used out of order"
        );
    }
    assert!(kicks > 0);
    let elapsed = started.elapsed();
    eprintln!(
        "mrg {format:?} (EVENT_IDX {}): {total} frames in {} ms, {} kicks",
        features & feature::EVENT_IDX != 0,
        elapsed.as_millis(),
        kicks
    );
}

#[test]
fn mrg_rxbuf_with_event_idx_100k_frames() {
    mrg_run(RingFormat::Split, NET_FEATURES, 100_000, 0x1111);
}

#[test]
fn mrg_rxbuf_without_event_idx_100k_frames() {
    mrg_run(
        RingFormat::Split,
        NET_FEATURES & !feature::EVENT_IDX,
        100_000,
        0x2222,
    );
}

#[test]
fn packed_mrg_rxbuf_with_event_idx_100k_frames() {
    mrg_run(RingFormat::Packed, NET_FEATURES, 100_000, 0x3333);
}

#[test]
fn packed_mrg_rxbuf_without_event_idx_100k_frames() {
    mrg_run(
        RingFormat::Packed,
        NET_FEATURES & !feature::EVENT_IDX,
        100_000,
        0x4444,
    );
}

/// Sends `count` frames from driver 0, counting the kicks the driver must make
/// (§2.7.10), running the switch only when kicked or when the owner polls.
fn kicks_for_burst(format: RingFormat, defer: bool, count: usize) -> (usize, usize) {
    let (mems, mut devs, mut drivers) = two_vms(format, NET_FEATURES, 64, 2048);
    for d in devs.iter_mut() {
        d.device.defer_tx = defer;
    }
    let mut sw = open_switch(SwitchConfig {
        port_count: 2,
        ..SwitchConfig::default()
    });
    let (mut kicks, mut delivered) = (0, 0);
    let frame = |n: usize| {
        let mut f = vec![0u8; 100];
        f[..6].copy_from_slice(&mac(2));
        f[6..12].copy_from_slice(&mac(1));
        f[20] = n as u8;
        f
    };
    for n in 0..count {
        assert!(drivers[0].send(&frame(n)));
        let kicked = drivers[0].tx.take_kick(true);
        kicks += usize::from(kicked);
        // The owner polls a deferring device on the VM's exits (here: every
        // fourth frame stands for an exit).
        let poll = n % 4 == 3 && chroma_virtio::net::poll_tx(&mut devs[0], &mems[0]);
        if kicked || poll {
            run_once(&mut sw, &mut devs, mems, 0);
        }
        while drivers[1].recv().is_some() {
            delivered += 1;
        }
        drivers[1].fill_rx();
    }
    // The guest goes idle: polls drain the rest, then the device re-arms kicks.
    while chroma_virtio::net::poll_tx(&mut devs[0], &mems[0]) {
        run_once(&mut sw, &mut devs, mems, 0);
        while drivers[1].recv().is_some() {
            delivered += 1;
        }
        drivers[1].fill_rx();
    }
    assert!(
        !devs[0].device.tx_polling,
        "an idle poll must end the polling"
    );
    // After the re-arm, one more frame kicks at once: nothing waits for a poll.
    assert!(drivers[0].send(&frame(count)));
    assert!(
        drivers[0].tx.take_kick(true),
        "the first frame after idling must notify"
    );
    (kicks, delivered)
}

#[test]
fn spec_2_7_10_deferred_tx_polls_instead_of_a_kick_per_frame_and_loses_nothing() {
    deferred_tx(RingFormat::Split);
}

/// The same on packed rings, where the device's event suppression
/// structure (§2.8.10, RING_EVENT_FLAGS_DESC) does what avail_event does.
#[test]
fn spec_2_8_10_deferred_tx_polls_instead_of_a_kick_per_frame_and_loses_nothing() {
    deferred_tx(RingFormat::Packed);
}

fn deferred_tx(format: RingFormat) {
    let (kicks, delivered) = kicks_for_burst(format, true, 200);
    assert_eq!(delivered, 200, "every frame arrives");
    // Negative control: without deferral the driver kicks for every frame.
    let (eager_kicks, eager_delivered) = kicks_for_burst(format, false, 200);
    assert_eq!(eager_delivered, 200);
    assert_eq!(
        eager_kicks, 200,
        "the eager device re-arms after every drain"
    );
    assert!(
        kicks * 10 < eager_kicks,
        "deferred mode kicked {kicks} times for 200 frames"
    );
}

/// The in-order check of the test driver (used by `mrg_run` above) catches
/// a device that uses a later buffer first: two receive buffers made
/// available, their used elements written by hand in reverse order.
#[test]
fn spec_2_7_9_the_in_order_check_catches_out_of_order_use() {
    use chroma_mem::GuestMemory;
    use chroma_virtio::mock::MockQueue;
    use std::sync::atomic::Ordering;
    let mem = VecMemory::new(0x4000_0000, 1 << 20);
    let mut q = MockQueue::new(&mem, 0x4000_0000, 4);
    let first = q.add_chain(&[(0x4001_0000, 64, true)]).unwrap();
    let second = q.add_chain(&[(0x4001_1000, 64, true)]).unwrap();
    let used = q.layout.used.raw();
    for (slot, head) in [(0u64, second), (1, first)] {
        let mut element = [0u8; 8];
        element[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        let at = chroma_mem::GuestPhysAddr::new(used + 4 + 8 * slot);
        mem.write(at, &element).unwrap();
    }
    mem.store_u16(
        chroma_mem::GuestPhysAddr::new(used + 2),
        2,
        Ordering::Release,
    )
    .unwrap();
    assert_eq!(q.pop_used(), Some((u32::from(second), 0)));
    assert_eq!(q.pop_used(), Some((u32::from(first), 0)));
    assert_eq!(q.out_of_order, 1);
    assert_eq!(q.bad_returns, 0);
}

/// Interrupts a driver gets for `frames` frames delivered one run each,
/// having asked (EVENT_IDX) to hear when the device uses its `event`-th
/// receive buffer (0-based) and reaping nothing meanwhile; or (`event`
/// None) reaping each frame, which asks for the next one each time.
fn interrupts_for(format: RingFormat, event: Option<u16>, frames: u8) -> Vec<u8> {
    let (mems, mut devs, mut drivers) = two_vms(format, NET_FEATURES, 16, 2048);
    assert_ne!(drivers[1].features & feature::EVENT_IDX, 0);
    if let Some(event) = event {
        match drivers[1].rx.packed() {
            Some(p) => {
                let at = chroma_virtio::packed::RingPosition::START.advance(event, 16);
                p.set_driver_event(chroma_virtio::packed::RING_EVENT_FLAGS_DESC, at.off_wrap());
            }
            None => drivers[1].rx.set_used_event(event),
        }
    }
    let mut sw = open_switch(SwitchConfig {
        port_count: 2,
        ..SwitchConfig::default()
    });
    let _ = devs[1].take_irq_edge();
    let mut interrupted = Vec::new();
    for n in 0..frames {
        let mut f = vec![0u8; 100];
        f[..6].copy_from_slice(&mac(2));
        f[6..12].copy_from_slice(&mac(1));
        assert!(drivers[0].send(&f));
        run_once(&mut sw, &mut devs, mems, 0);
        if devs[1].take_irq_edge() {
            interrupted.push(n);
        }
        if event.is_none() {
            assert!(drivers[1].recv().is_some());
        }
    }
    // Nothing was lost meanwhile: every frame is there.
    let mut got = 0;
    while drivers[1].recv().is_some() {
        got += 1;
    }
    assert_eq!(got, if event.is_none() { 0 } else { frames });
    interrupted
}

/// §2.7.10 / §2.8.10 through the device: a driver that asks to hear about
/// its fifth receive buffer (used_event = 4; packed: RING_EVENT_FLAGS_DESC
/// at slot 4, wrap 1) gets one interrupt, when that buffer is used, on
/// either ring. Control: asking for every buffer gets one per frame.
#[test]
fn spec_2_8_10_the_drivers_event_index_decides_interrupts_on_both_rings() {
    for format in RingFormat::BOTH {
        assert_eq!(interrupts_for(format, Some(4), 8), vec![4], "{format:?}");
        assert_eq!(
            interrupts_for(format, None, 8),
            (0..8).collect::<Vec<_>>(),
            "{format:?}"
        );
    }
}
