//! The hostile-guest catalogue: each case lets port 0's guest break a rule,
//! asserts how the device contained it (error status, DEVICE_NEEDS_RESET,
//! frame dropped and counted), and that ports 1 and 2 keep forwarding.
#![allow(clippy::cast_possible_truncation)]

#[path = "support/hostile_lab.rs"]
mod hostile_lab;

use chroma_mem::vecmem::VecMemory;
use chroma_mem::GuestMemory;
use chroma_virtio::mmio::{feature, reg, status, MmioAction};
use chroma_virtio::mock::{MockNetDriver, RawDescriptor, RingFormat};
use chroma_virtio::net::{net_feature, NET_FEATURES};
use chroma_virtio::queue::{VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT};
use chroma_virtio::VirtioError;
use hostile_lab::*;

/// Every port on split rings.
const FORMATS: [RingFormat; 3] = [RingFormat::Split; 3];

type Lab<'m> = hostile_lab::Lab<'m, VecMemory>;

fn mems() -> [VecMemory; 3] {
    BASES.map(|b| VecMemory::new(b, RAM))
}

/// Hand-builds a TX chain on the victim from raw descriptors at indices
/// 0.. of its table and makes `head` available.
fn raw_tx(d: &mut MockNetDriver<VecMemory>, descs: &[(u16, RawDescriptor)], head: u16) {
    for &(i, desc) in descs {
        d.tx.write_descriptor(i, desc);
    }
    d.tx.push_avail(head);
}

fn rd(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor {
        addr,
        len,
        flags,
        next,
    }
}

// ---- Ring structure: fatal, DEVICE_NEEDS_RESET ----

hostile!(h01_descriptor_loop, NET_FEATURES, |lab, d, m| {
    let a = good_tx_buffer(d, m, 0, 60);
    raw_tx(
        d,
        &[
            (0, rd(a, 40, VIRTQ_DESC_F_NEXT, 1)),
            (1, rd(a, 40, VIRTQ_DESC_F_NEXT, 0)),
        ],
        0,
    );
    lab.run();
    lab.assert_needs_reset();
    assert_eq!(lab.counters().fatal_errors, 1);
});

hostile!(h02_chain_longer_than_queue, NET_FEATURES, |lab, d, m| {
    let a = good_tx_buffer(d, m, 0, 60);
    let descs: Vec<_> = (0..SIZE)
        .map(|i| (i, rd(a, 4, VIRTQ_DESC_F_NEXT, (i + 1) % SIZE)))
        .collect();
    raw_tx(d, &descs, 0);
    lab.run();
    lab.assert_needs_reset();
});

hostile!(h03_head_index_at_queue_size, NET_FEATURES, |lab, d, _m| {
    d.tx.push_avail(SIZE);
    lab.run();
    lab.assert_needs_reset();
});

hostile!(h04_next_index_past_queue_size, NET_FEATURES, |lab, d, m| {
    let a = good_tx_buffer(d, m, 0, 60);
    raw_tx(d, &[(0, rd(a, 12, VIRTQ_DESC_F_NEXT, 999))], 0);
    lab.run();
    lab.assert_needs_reset();
});

hostile!(
    h05_avail_idx_jumps_past_queue_size,
    NET_FEATURES,
    |lab, d, _m| {
        let idx = d.tx.avail_idx().wrapping_add(SIZE + 1);
        d.tx.publish_avail_idx(idx);
        lab.run();
        lab.assert_needs_reset();
    }
);

hostile!(
    h06_indirect_length_not_multiple_of_16,
    NET_FEATURES,
    |lab, d, m| {
        let a = good_tx_buffer(d, m, 0, 60);
        raw_tx(d, &[(0, rd(a, 20, VIRTQ_DESC_F_INDIRECT, 0))], 0);
        lab.run();
        lab.assert_needs_reset();
    }
);

hostile!(h07_indirect_zero_length, NET_FEATURES, |lab, d, m| {
    let a = good_tx_buffer(d, m, 0, 60);
    raw_tx(d, &[(0, rd(a, 0, VIRTQ_DESC_F_INDIRECT, 0))], 0);
    lab.run();
    lab.assert_needs_reset();
});

hostile!(h08_nested_indirect, NET_FEATURES, |lab, d, m| {
    let table = d.tx_buffer(3);
    let inner = rd(table, 16, VIRTQ_DESC_F_INDIRECT, 0);
    m.write(chroma_mem::GuestPhysAddr::new(table), &inner.to_bytes())
        .unwrap();
    raw_tx(d, &[(0, rd(table, 16, VIRTQ_DESC_F_INDIRECT, 0))], 0);
    lab.run();
    lab.assert_needs_reset();
});

hostile!(h09_indirect_with_next, NET_FEATURES, |lab, d, m| {
    let a = good_tx_buffer(d, m, 0, 60);
    raw_tx(
        d,
        &[(0, rd(a, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1))],
        0,
    );
    lab.run();
    lab.assert_needs_reset();
});

hostile!(
    h10_indirect_table_outside_ram,
    NET_FEATURES,
    |lab, d, _m| {
        raw_tx(
            d,
            &[(
                0,
                rd(BASES[V] + RAM as u64 - 16, 32, VIRTQ_DESC_F_INDIRECT, 0),
            )],
            0,
        );
        lab.run();
        lab.assert_needs_reset();
    }
);

hostile!(
    h11_indirect_not_negotiated,
    NET_FEATURES & !chroma_virtio::mmio::feature::INDIRECT_DESC,
    |lab, d, m| {
        let table = d.tx_buffer(3);
        let a = good_tx_buffer(d, m, 0, 60);
        m.write(
            chroma_mem::GuestPhysAddr::new(table),
            &rd(a, 72, 0, 0).to_bytes(),
        )
        .unwrap();
        raw_tx(d, &[(0, rd(table, 16, VIRTQ_DESC_F_INDIRECT, 0))], 0);
        lab.run();
        lab.assert_needs_reset();
    }
);

hostile!(
    h12_indirect_table_longer_than_queue,
    NET_FEATURES,
    |lab, d, m| {
        let a = good_tx_buffer(d, m, 0, 60);
        raw_tx(
            d,
            &[(
                0,
                rd(a, 16 * (u32::from(SIZE) + 1), VIRTQ_DESC_F_INDIRECT, 0),
            )],
            0,
        );
        lab.run();
        lab.assert_needs_reset();
    }
);

// ---- Buffers: the frame is dropped and counted, the device stays live ----

hostile!(h13_buffer_gpa_out_of_range, NET_FEATURES, |lab, d, _m| {
    let head = d.tx.take_free().unwrap();
    raw_tx(
        d,
        &[(head, rd(BASES[V] + RAM as u64 + 0x1000, 72, 0, 0))],
        head,
    );
    lab.run();
    assert_eq!(lab.counters().tx_errors, 1);
    victim_still_sends(lab, d);
});

hostile!(
    h14_buffer_gpa_wraps_address_space,
    NET_FEATURES,
    |lab, d, _m| {
        let head = d.tx.take_free().unwrap();
        raw_tx(d, &[(head, rd(u64::MAX - 8, 72, 0, 0))], head);
        lab.run();
        assert_eq!(lab.counters().tx_errors, 1);
        victim_still_sends(lab, d);
    }
);

hostile!(
    h15_buffer_in_another_vms_memory,
    NET_FEATURES,
    |lab, d, _m| {
        // TX from port 1's RAM: refused, not read.
        let head = d.tx.take_free().unwrap();
        raw_tx(d, &[(head, rd(BASES[1] + 0x1000, 72, 0, 0))], head);
        lab.run();
        assert_eq!(lab.counters().tx_errors, 1);
        victim_still_sends(lab, d);
    }
);

#[test]
fn h16_rx_buffer_in_another_vms_memory() {
    let mems = mems();
    let (mut lab, mut drivers) = Lab::new(&mems, NET_FEATURES, FORMATS);
    // The victim restarts with one RX buffer, in VM 1's RAM.
    let mut v =
        MockNetDriver::init(&mut lab.devs[V], &mems[V], BASES[V], SIZE, 2048, u64::MAX).unwrap();
    let head = v.rx.add_chain(&[(BASES[1] + 0x8000, 2048, true)]).unwrap();
    let mut before = vec![0u8; 2048];
    mems[1]
        .read(
            chroma_mem::GuestPhysAddr::new(BASES[1] + 0x8000),
            &mut before,
        )
        .unwrap();
    let f = frame([0xff; 6], MAC[1], 300, 0xee);
    assert!(drivers[1].send(&f));
    lab.run();
    assert_eq!(lab.counters().rx_errors, 1);
    assert_eq!(
        v.rx.pop_used(),
        Some((u32::from(head), 0)),
        "chain returned with length 0"
    );
    assert_eq!(v.rx.bad_returns, 0);
    let mut after = vec![0u8; 2048];
    mems[1]
        .read(
            chroma_mem::GuestPhysAddr::new(BASES[1] + 0x8000),
            &mut after,
        )
        .unwrap();
    assert_eq!(before, after, "VM 1's memory was written");
    assert_eq!(drivers[2].recv().expect("broadcast reached port 2").1, f);
    lab.assert_live();
    assert_others_forward(&mut lab, drivers[..].as_mut());
}

hostile!(
    h17_overlapping_buffers_on_the_ring_itself,
    NET_FEATURES,
    |lab, d, _m| {
        // An RX buffer that overlaps the victim's own descriptor table and used
        // ring: the device reads each descriptor once, so the damage stays in
        // the victim's ring. No panic; the device may end up needing a reset.
        while d.rx.pop_used().is_some() {}
        let mut v = MockNetDriver::init(
            &mut lab.devs[V],
            lab.mems.first().unwrap(),
            BASES[V],
            SIZE,
            2048,
            u64::MAX,
        )
        .unwrap();
        v.rx.add_chain(&[(v.rx.layout.desc.raw(), 2048, true)]);
        v.tx.add_chain(&[
            (v.tx.layout.desc.raw(), 600, false),
            (v.rx.layout.desc.raw(), 100, false),
        ]);
        lab.run();
        let _ = v.rx.pop_used();
        let _ = v.recv();
    }
);

hostile!(
    h18_writable_descriptor_in_tx_chain,
    NET_FEATURES,
    |lab, d, m| {
        let a = good_tx_buffer(d, m, 0, 60);
        assert_tx_dropped(lab, d, &[(a, 12, false), (a + 12, 60, true)]);
    }
);

hostile!(h20_zero_length_tx_buffer, NET_FEATURES, |lab, d, m| {
    let a = good_tx_buffer(d, m, 0, 60);
    d.tx.add_chain(&[(a, 0, false), (a, 72, false)]).unwrap();
    lab.run();
    assert_eq!(lab.counters().tx_errors, 1);
    victim_still_sends(lab, d);
});

hostile!(
    h21_frame_shorter_than_net_header,
    NET_FEATURES,
    |lab, d, m| {
        let a = good_tx_buffer(d, m, 0, 60);
        d.tx.add_chain(&[(a, 8, false)]).unwrap();
        lab.run();
        assert_eq!(lab.counters().tx_errors, 1);
        victim_still_sends(lab, d);
    }
);

hostile!(h22_runt_frame, NET_FEATURES, |lab, d, m| {
    let a = good_tx_buffer(d, m, 0, 60);
    d.tx.add_chain(&[(a, 12 + 5, false)]).unwrap();
    lab.run();
    assert_eq!(lab.counters().tx_errors, 1);
    victim_still_sends(lab, d);
});

hostile!(h23_oversize_frame, NET_FEATURES, |lab, d, m| {
    let a = good_tx_buffer(d, m, 0, 60);
    d.tx.add_chain(&[(a, 1200, false), (a, 1200, false)])
        .unwrap();
    lab.run();
    assert_eq!(lab.counters().tx_errors, 1);
    victim_still_sends(lab, d);
});

hostile!(h24_gso_frame_without_tso, NET_FEATURES, |lab, d, _m| {
    let mut header = [0u8; 12];
    header[1] = 1; // VIRTIO_NET_HDR_GSO_TCPV4
    assert!(d.send_with_header(&header, &frame(MAC[1], MAC[V], 1000, 3)));
    lab.run();
    assert_eq!(lab.counters().tx_errors, 1);
    victim_still_sends(lab, d);
});

hostile!(
    h25_needs_csum_without_csum_negotiated,
    NET_FEATURES & !net_feature::CSUM,
    |lab, d, _m| {
        let mut header = [0u8; 12];
        header[0] = 1; // NEEDS_CSUM
        header[6] = 34; // csum_start
        header[8] = 6; // csum_offset
        assert!(d.send_with_header(&header, &frame(MAC[1], MAC[V], 100, 3)));
        lab.run();
        assert_eq!(lab.counters().tx_errors, 1);
        victim_still_sends(lab, d);
    }
);

hostile!(
    h26_csum_offsets_outside_frame,
    NET_FEATURES,
    |lab, d, _m| {
        let mut header = [0u8; 12];
        header[0] = 1;
        header[6..8].copy_from_slice(&90u16.to_le_bytes());
        header[8..10].copy_from_slice(&16u16.to_le_bytes());
        assert!(d.send_with_header(&header, &frame(MAC[1], MAC[V], 100, 3)));
        lab.run();
        assert_eq!(lab.counters().tx_errors, 1);
        victim_still_sends(lab, d);
    }
);

// ---- Registers ----

hostile!(
    h29_queue_ready_with_rings_outside_ram,
    NET_FEATURES,
    |lab, _d, _m| {
        to_features_ok(lab, feature::VERSION_1);
        let outside = BASES[V] + RAM as u64 - 0x80;
        let r = set_queue(lab, 16, outside, BASES[V], BASES[V] + 0x1000);
        assert_queue_refused(
            lab,
            r,
            VirtioError::Memory(chroma_mem::MemError::OutOfRange {
                gpa: outside,
                len: 256,
            }),
        );
    }
);

hostile!(
    h30_queue_ready_misaligned_ring,
    NET_FEATURES,
    |lab, _d, _m| {
        to_features_ok(lab, feature::VERSION_1);
        let r = set_queue(lab, 16, BASES[V] + 8, BASES[V] + 0x1000, BASES[V] + 0x2000);
        assert_queue_refused(lab, r, VirtioError::MisalignedRing);
    }
);

hostile!(
    h31_queue_size_not_power_of_two,
    NET_FEATURES,
    |lab, _d, _m| {
        to_features_ok(lab, feature::VERSION_1);
        let r = set_queue(lab, 12, BASES[V], BASES[V] + 0x1000, BASES[V] + 0x2000);
        assert_queue_refused(lab, r, VirtioError::InvalidQueueSize);
    }
);

hostile!(h32_queue_size_above_max, NET_FEATURES, |lab, _d, _m| {
    to_features_ok(lab, feature::VERSION_1);
    let r = set_queue(lab, 512, BASES[V], BASES[V] + 0x4000, BASES[V] + 0x8000);
    assert_queue_refused(lab, r, VirtioError::InvalidQueueSize);
});

hostile!(h33_notify_queue_not_ready, NET_FEATURES, |lab, _d, _m| {
    assert_eq!(
        w(lab, reg::QUEUE_NOTIFY, 4, 7),
        Err(VirtioError::QueueNotReady)
    );
    to_features_ok(lab, feature::VERSION_1);
    assert_eq!(
        w(lab, reg::QUEUE_NOTIFY, 4, 0),
        Err(VirtioError::QueueNotReady)
    );
    assert_eq!(lab.victim().counters().bad_notifies, 2);
});

hostile!(
    h34_feature_change_after_driver_ok,
    NET_FEATURES,
    |lab, _d, _m| {
        let before = lab.victim().negotiated_features();
        assert_eq!(w(lab, reg::DRIVER_FEATURES_SEL, 4, 0), Ok(MmioAction::None));
        assert_eq!(
            w(lab, reg::DRIVER_FEATURES, 4, 0xffff_ffff),
            Err(VirtioError::InvalidState)
        );
        assert_eq!(lab.victim().negotiated_features(), before);
        lab.assert_needs_reset();
    }
);

hostile!(
    h35_feature_not_offered_keeps_features_ok_clear,
    NET_FEATURES,
    |lab, _d, _m| {
        w(lab, reg::STATUS, 4, 0).unwrap();
        w(lab, reg::STATUS, 4, status::ACKNOWLEDGE | status::DRIVER).unwrap();
        w(lab, reg::DRIVER_FEATURES_SEL, 4, 0).unwrap();
        w(lab, reg::DRIVER_FEATURES, 4, 1 << 14).unwrap(); // HOST_UFO, never offered
        w(lab, reg::DRIVER_FEATURES_SEL, 4, 1).unwrap();
        w(lab, reg::DRIVER_FEATURES, 4, 1).unwrap();
        let r = w(
            lab,
            reg::STATUS,
            4,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_eq!(r, Err(VirtioError::FeatureNotOffered));
        assert_eq!(
            lab.devs[V].mmio_read(reg::STATUS, 4).unwrap() & status::FEATURES_OK,
            0
        );
    }
);

hostile!(
    h36_unaligned_or_wrong_width_mmio,
    NET_FEATURES,
    |lab, _d, _m| {
        let status_before = lab.victim().status();
        assert_eq!(
            lab.devs[V].mmio_read(reg::STATUS + 1, 4),
            Err(VirtioError::InvalidAccess)
        );
        assert_eq!(
            lab.devs[V].mmio_read(reg::STATUS, 2),
            Err(VirtioError::InvalidAccess)
        );
        assert_eq!(
            lab.devs[V].mmio_read(reg::STATUS, 8),
            Err(VirtioError::InvalidAccess)
        );
        assert_eq!(w(lab, reg::STATUS, 1, 0), Err(VirtioError::InvalidAccess));
        assert_eq!(
            lab.devs[V].mmio_read(reg::CONFIG + 1, 2),
            Err(VirtioError::InvalidAccess)
        );
        assert_eq!(
            lab.devs[V].mmio_read(reg::CONFIG, 3),
            Err(VirtioError::InvalidAccess)
        );
        assert_eq!(
            lab.devs[V].mmio_read(reg::WINDOW_SIZE, 4),
            Err(VirtioError::InvalidAccess)
        );
        assert_eq!(
            lab.devs[V].mmio_read(0x1c, 4),
            Err(VirtioError::UnknownRegister)
        );
        assert_eq!(
            lab.victim().status(),
            status_before,
            "a refused write changed state"
        );
        assert!(lab.victim().counters().bad_accesses >= 8);
        lab.assert_live();
    }
);

hostile!(
    h37_writes_to_read_only_registers,
    NET_FEATURES,
    |lab, _d, _m| {
        for off in [
            reg::MAGIC_VALUE,
            reg::VERSION,
            reg::DEVICE_ID,
            reg::VENDOR_ID,
            reg::DEVICE_FEATURES,
            reg::QUEUE_NUM_MAX,
            reg::INTERRUPT_STATUS,
            reg::CONFIG_GENERATION,
            reg::SHM_LEN_LOW,
        ] {
            assert_eq!(
                w(lab, off, 4, 0xdead_beef),
                Err(VirtioError::ReadOnlyRegister),
                "offset {off:#x}"
            );
        }
        assert_eq!(
            w(lab, reg::CONFIG, 1, 0xff),
            Err(VirtioError::ReadOnlyRegister)
        );
        assert_eq!(
            lab.devs[V].mmio_read(reg::MAGIC_VALUE, 4),
            Ok(chroma_virtio::mmio::MAGIC)
        );
        assert_eq!(
            lab.devs[V].mmio_read(reg::CONFIG, 1),
            Ok(u32::from(MAC[V][0]))
        );
        lab.assert_live();
    }
);

hostile!(
    h38_status_bits_cleared_without_reset,
    NET_FEATURES,
    |lab, _d, _m| {
        assert_eq!(
            w(lab, reg::STATUS, 4, status::ACKNOWLEDGE),
            Err(VirtioError::InvalidState)
        );
        lab.assert_needs_reset();
    }
);

hostile!(
    h39_driver_ok_without_features_ok,
    NET_FEATURES,
    |lab, _d, _m| {
        w(lab, reg::STATUS, 4, 0).unwrap();
        w(lab, reg::STATUS, 4, status::ACKNOWLEDGE | status::DRIVER).unwrap();
        assert_eq!(
            w(
                lab,
                reg::STATUS,
                4,
                status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK
            ),
            Err(VirtioError::InvalidState)
        );
        lab.assert_needs_reset();
    }
);

hostile!(
    h40_queue_ready_before_features_ok,
    NET_FEATURES,
    |lab, _d, _m| {
        w(lab, reg::STATUS, 4, 0).unwrap();
        w(lab, reg::STATUS, 4, status::ACKNOWLEDGE | status::DRIVER).unwrap();
        let r = set_queue(lab, 16, BASES[V], BASES[V] + 0x1000, BASES[V] + 0x2000);
        assert_queue_refused(lab, r, VirtioError::InvalidState);
    }
);

#[test]
fn recovery_after_needs_reset() {
    let mems = mems();
    let (mut lab, mut drivers) = Lab::new(&mems, NET_FEATURES, FORMATS);
    drivers[V].tx.push_avail(SIZE);
    lab.run();
    lab.assert_needs_reset();
    // The driver resets and starts again: the device works.
    let mut v =
        MockNetDriver::init(&mut lab.devs[V], &mems[V], BASES[V], SIZE, 2048, u64::MAX).unwrap();
    v.fill_rx();
    lab.assert_live();
    let f = frame(MAC[1], MAC[V], 200, 9);
    assert!(v.send(&f));
    lab.run();
    assert_eq!(drivers[1].recv().unwrap().1, f);
}

/// Port 1 broadcasts `len` bytes; returns the frame.
fn broadcast_from_1(
    lab: &mut Lab,
    drivers: &mut [MockNetDriver<VecMemory>],
    len: usize,
) -> Vec<u8> {
    let f = frame([0xff; 6], MAC[1], len, 0x42);
    assert!(drivers[1].send(&f));
    lab.run();
    f
}

/// Runs `post` to give the (re-initialised) victim some receive buffers,
/// broadcasts from port 1, and checks every victim buffer came back exactly
/// once (no leak, no double return); returns the victim's used lengths.
fn rx_case(features: u64, rx_len: u32, frames: usize, check: impl Fn(&Lab, &[(u32, u32)])) {
    let mems = mems();
    let (mut lab, mut drivers) = Lab::new(&mems, features, FORMATS);
    let mut v =
        MockNetDriver::init(&mut lab.devs[V], &mems[V], BASES[V], SIZE, rx_len, u64::MAX).unwrap();
    v.fill_rx();
    for _ in 0..frames {
        broadcast_from_1(&mut lab, &mut drivers, 1000);
    }
    let mut used = Vec::new();
    while let Some(e) = v.rx.pop_used() {
        used.push(e);
    }
    assert_eq!(v.rx.bad_returns, 0, "a buffer was returned twice");
    check(&lab, &used);
    // Port 2 got every broadcast whatever the victim did.
    let mut got = 0;
    while drivers[2].recv().is_some() {
        got += 1;
    }
    assert_eq!(got, frames);
    assert_others_forward(&mut lab, &mut drivers);
}

#[test]
fn h19_readable_descriptor_in_rx_chain() {
    let mems = mems();
    let (mut lab, mut drivers) = Lab::new(&mems, NET_FEATURES, FORMATS);
    let mut v =
        MockNetDriver::init(&mut lab.devs[V], &mems[V], BASES[V], SIZE, 2048, u64::MAX).unwrap();
    let head = v.rx.add_chain(&[(v.end(), 2048, false)]).unwrap();
    broadcast_from_1(&mut lab, &mut drivers, 300);
    assert_eq!(lab.counters().rx_errors, 1);
    assert_eq!(v.rx.pop_used(), Some((u32::from(head), 0)));
    lab.assert_live();
    assert_others_forward(&mut lab, &mut drivers);
}

#[test]
fn h27_rx_buffers_too_small_without_mrg() {
    rx_case(
        NET_FEATURES & !net_feature::MRG_RXBUF,
        100,
        5,
        |lab, used| {
            // Each frame took one buffer, returned with length 0, and was counted.
            assert_eq!(used.len(), 5);
            assert!(used.iter().all(|&(_, len)| len == 0));
            assert_eq!(lab.switch.counters(V).rx_errors, 5);
            lab.assert_live();
        },
    );
}

#[test]
fn h28_mrg_buffers_of_one_byte() {
    rx_case(NET_FEATURES, 1, 1, |lab, used| {
        // 16 one-byte buffers cannot hold a frame: the ring runs dry, the
        // chains are given back (rewound) and the frame waits in the egress
        // queue, bounded; nothing is returned half-filled.
        assert!(used.is_empty());
        assert_eq!(lab.switch.egress_len(V), 1);
        lab.assert_live();
    });
}

#[test]
fn h41_egress_queue_full_drops_and_counts() {
    // The victim posts no receive buffers at all: broadcasts to it queue up
    // to the egress capacity (8), then drop and count; port 2 is unaffected.
    let mems = mems();
    let (mut lab, mut drivers) = Lab::new(&mems, NET_FEATURES, FORMATS);
    let _v =
        MockNetDriver::init(&mut lab.devs[V], &mems[V], BASES[V], SIZE, 2048, u64::MAX).unwrap();
    for _ in 0..20 {
        broadcast_from_1(&mut lab, &mut drivers, 200);
        while drivers[2].recv().is_some() {}
    }
    assert_eq!(lab.switch.egress_len(V), 8);
    assert_eq!(lab.counters().rx_dropped, 12);
    assert_others_forward(&mut lab, &mut drivers);
}

#[test]
fn h42_mrg_frame_spanning_many_small_buffers_is_exact() {
    rx_case(NET_FEATURES, 128, 1, |_lab, used| {
        // 1012 bytes in 128-byte buffers: 8 chains, the last partly filled.
        assert_eq!(used.len(), 8);
        let total: u32 = used.iter().map(|&(_, len)| len).sum();
        assert_eq!(total, 1012);
    });
}

// ---- TCP segmentation offload (virtio 1.2 §5.1.6.2) ----

hostile!(h50_gso_size_zero, NET_FEATURES, |lab, d, _m| {
    gso_case(lab, d, |h, _| h.gso_size = 0);
});

hostile!(h51_unknown_gso_type, NET_FEATURES, |lab, d, _m| {
    gso_case(lab, d, |h, _| h.gso_type = 0x07);
});

hostile!(
    h52_gso_without_host_tso_negotiated,
    NET_FEATURES & !net_feature::TSO,
    |lab, d, _m| {
        gso_case(lab, d, |_, _| {});
    }
);

hostile!(
    h53_gso_hdr_len_past_the_frame,
    NET_FEATURES,
    |lab, d, _m| {
        gso_case(lab, d, |h, f| h.hdr_len = f.len() as u16 + 1);
    }
);

hostile!(h54_gso_ipv4_fragment, NET_FEATURES, |lab, d, _m| {
    gso_case(lab, d, |_, f| f[14 + 6] |= 0x20);
});

hostile!(
    h55_gso_ipv4_total_length_lies,
    NET_FEATURES,
    |lab, d, _m| {
        gso_case(lab, d, |_, f| f[14 + 2] ^= 0x01);
    }
);

hostile!(h56_gso_tcp_data_offset_lies, NET_FEATURES, |lab, d, _m| {
    gso_case(lab, d, |_, f| f[34 + 12] = 0x40);
});

hostile!(h57_gso_not_tcp, NET_FEATURES, |lab, d, _m| {
    gso_case(lab, d, |_, f| f[14 + 9] = 17);
});

hostile!(h58_gso_ihl_lies, NET_FEATURES, |lab, d, _m| {
    gso_case(lab, d, |_, f| f[14] = 0x4f);
});
