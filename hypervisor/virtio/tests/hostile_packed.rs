//! The hostile-guest catalogue on packed rings (§2.8, issue 14 item 6):
//! port 0's guest negotiates VIRTIO_F_RING_PACKED and breaks a rule of the
//! packed ring; each case asserts how the device contained it (an error at
//! QueueReady, DEVICE_NEEDS_RESET, a frame dropped and counted, or the
//! write ignored) and that ports 1 (packed) and 2 (split) keep forwarding.
//! Nothing may panic.
#![allow(clippy::cast_possible_truncation)]

#[path = "support/hostile_lab.rs"]
mod hostile_lab;

use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering;

use chroma_mem::vecmem::VecMemory;
use chroma_mem::{GuestMemory, GuestPhysAddr, MemError};
use chroma_virtio::mmio::{feature, reg, MmioAction};
use chroma_virtio::mock::{MockNetDriver, PackedDescriptor, PackedDriver, RingFormat};
use chroma_virtio::net::{new_net_device, NET_FEATURES};
use chroma_virtio::packed::{
    RingPosition, RING_EVENT_FLAGS_DESC, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED,
};
use chroma_virtio::queue::{VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
use chroma_virtio::switch::PortCounters;
use chroma_virtio::VirtioError;
use hostile_lab::*;

/// The victim's features: everything, packed rings included.
const PACKED: u64 = NET_FEATURES | feature::RING_PACKED;
/// Ring format of each port: the victim and port 1 packed, port 2 split.
const FORMATS: [RingFormat; 3] = [RingFormat::Packed, RingFormat::Packed, RingFormat::Split];

/// Guest RAM whose guest can race the device: once the device reads the
/// 16 bytes at `trigger.0`, the guest writes `trigger.2` at `trigger.1`
/// (a second vCPU changing a descriptor between two device reads).
struct Racy {
    mem: VecMemory,
    trigger: RefCell<Option<(u64, u64, Vec<u8>)>>,
    /// 16-byte reads (descriptors) so far.
    descriptor_reads: Cell<u64>,
}

impl Racy {
    fn new(base: u64) -> Self {
        Self {
            mem: VecMemory::new(base, RAM),
            trigger: RefCell::new(None),
            descriptor_reads: Cell::new(0),
        }
    }
}

impl GuestMemory for Racy {
    fn check_range(&self, gpa: GuestPhysAddr, len: u64) -> Result<(), MemError> {
        self.mem.check_range(gpa, len)
    }
    fn read(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let result = self.mem.read(gpa, buf);
        if buf.len() == 16 {
            self.descriptor_reads.set(self.descriptor_reads.get() + 1);
        }
        let fire = matches!(&*self.trigger.borrow(), Some((at, _, _)) if *at == gpa.raw() && buf.len() == 16);
        if fire {
            if let Some((_, to, bytes)) = self.trigger.borrow_mut().take() {
                self.mem.write(GuestPhysAddr::new(to), &bytes).unwrap();
            }
        }
        result
    }
    fn write(&self, gpa: GuestPhysAddr, data: &[u8]) -> Result<(), MemError> {
        self.mem.write(gpa, data)
    }
    fn load_u16(&self, gpa: GuestPhysAddr, order: Ordering) -> Result<u16, MemError> {
        self.mem.load_u16(gpa, order)
    }
    fn store_u16(&self, gpa: GuestPhysAddr, value: u16, order: Ordering) -> Result<(), MemError> {
        self.mem.store_u16(gpa, value, order)
    }
    fn fence(&self, order: Ordering) {
        self.mem.fence(order)
    }
}

fn mems() -> [Racy; 3] {
    BASES.map(Racy::new)
}

type Lab<'m> = hostile_lab::Lab<'m, Racy>;
type Driver<'m> = MockNetDriver<'m, Racy>;

/// The victim starts again (reset, re-negotiated) on packed rings of
/// `size` entries, no receive buffer posted.
fn restart_victim<'m>(lab: &mut Lab<'m>, mems: &'m [Racy; 3], size: u16) -> Driver<'m> {
    MockNetDriver::init_with(
        &mut lab.devs[V],
        &mems[V],
        BASES[V],
        size,
        2048,
        u64::MAX,
        RingFormat::Packed,
    )
    .unwrap()
}

fn ptx<'a, 'm>(d: &'a mut Driver<'m>) -> &'a mut PackedDriver<'m, Racy> {
    d.tx.packed().expect("a packed TX queue")
}

fn prx<'a, 'm>(d: &'a mut Driver<'m>) -> &'a mut PackedDriver<'m, Racy> {
    d.rx.packed().expect("a packed RX queue")
}

/// AVAIL/USED bits that make a descriptor available in lap `wrap`.
fn avail(wrap: bool) -> u16 {
    if wrap {
        VIRTQ_DESC_F_AVAIL
    } else {
        VIRTQ_DESC_F_USED
    }
}

/// Writes `descs` (`(addr, len, flags)`, flags without AVAIL/USED) at the
/// driver's next slots, each with its lap's AVAIL/USED bits, the first
/// one's flags last: a hand-built chain the mock driver does not track.
fn raw_chain(p: &PackedDriver<Racy>, descs: &[(u64, u32, u16)], id: u16) {
    let mut pos = p.next_avail();
    let first = pos;
    let mut first_flags = 0;
    for (k, &(addr, len, flags)) in descs.iter().enumerate() {
        let flags = flags | avail(pos.wrap);
        if k == 0 {
            first_flags = flags;
            p.write_descriptor(
                pos.index,
                PackedDescriptor {
                    addr,
                    len,
                    id,
                    flags: 0,
                },
            );
        } else {
            p.write_descriptor(
                pos.index,
                PackedDescriptor {
                    addr,
                    len,
                    id,
                    flags,
                },
            );
        }
        pos = pos.advance(1, SIZE);
    }
    p.write_flags(first.index, first_flags);
}

/// Makes `descs` available as one hand-built TX chain (Buffer ID 0) and
/// runs: a ring error, the device needs a reset.
fn assert_chain_refused(lab: &mut Lab, d: &mut Driver, descs: &[(u64, u32, u16)]) {
    raw_chain(ptx(d), descs, 0);
    lab.run();
    lab.assert_ring_error();
}

// ---- Wrap counters and flags: not available, so never taken ----

hostile!(
    p01_avail_equals_used_in_the_drivers_lap,
    PACKED,
    |lab, d, m| {
        // AVAIL = USED = 1 in lap 1 is a *used* descriptor (§2.8.1): not taken.
        let a = good_tx_buffer(d, m, 0, 60);
        let p = ptx(d);
        p.write_descriptor(
            0,
            PackedDescriptor {
                addr: a,
                len: 72,
                id: 0,
                flags: VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED,
            },
        );
        lab.devs[V].mmio_write(reg::QUEUE_NOTIFY, 4, 1, m).unwrap();
        lab.run();
        lab.assert_live();
        assert_eq!(
            lab.victim().device.tx_chains,
            0,
            "a used-looking descriptor was taken"
        );
        assert_eq!(lab.counters().tx_packets, 0);
    }
);

hostile!(p02_flags_for_the_wrong_lap, PACKED, |lab, d, m| {
    // AVAIL = 0, USED = 1 is available only in a lap with wrap counter 0.
    let a = good_tx_buffer(d, m, 0, 60);
    ptx(d).write_descriptor(
        0,
        PackedDescriptor {
            addr: a,
            len: 72,
            id: 0,
            flags: VIRTQ_DESC_F_USED,
        },
    );
    lab.run();
    lab.assert_live();
    assert_eq!(lab.victim().device.tx_chains, 0);
    // The device still takes the right lap's flags at that slot.
    ptx(d).write_flags(0, VIRTQ_DESC_F_AVAIL);
    lab.run();
    assert_eq!(
        lab.counters().tx_packets,
        1,
        "the lap-1 descriptor is taken"
    );
});

hostile!(
    p03_wrap_counter_toggled_back_after_a_lap,
    PACKED,
    |lab, d, m| {
        // One lap of good frames: the driver's wrap counter is now 0.
        for k in 0..SIZE {
            assert!(d.send(&frame(MAC[1], MAC[V], 60, k as u8)));
            lab.run();
        }
        while d.tx.pop_used().is_some() {}
        assert_eq!(
            ptx(d).next_avail(),
            RingPosition {
                index: 0,
                wrap: false
            }
        );
        let sent = lab.counters().tx_packets;
        // The guest makes slot 0 "available" with lap-1 bits again.
        let a = good_tx_buffer(d, m, 0, 60);
        ptx(d).write_descriptor(
            0,
            PackedDescriptor {
                addr: a,
                len: 72,
                id: 0,
                flags: VIRTQ_DESC_F_AVAIL,
            },
        );
        lab.run();
        lab.assert_live();
        assert_eq!(
            lab.counters().tx_packets,
            sent,
            "a lap-1 descriptor taken in lap 2"
        );
        assert_eq!(lab.victim().device.tx_chains, u64::from(SIZE));
    }
);

hostile!(p04_flags_flipped_mid_chain, PACKED, |lab, d, m| {
    // A two-slot chain; between the device's two reads of slot 1 the
    // guest sets NEXT on it (§2.8.8 forbids changing it): DescriptorChanged.
    let a = good_tx_buffer(d, m, 0, 60);
    let p = ptx(d);
    raw_chain(p, &[(a, 12, VIRTQ_DESC_F_NEXT), (a + 12, 60, 0)], 0);
    let slot1 = p.layout.desc.raw() + 16;
    let flags = VIRTQ_DESC_F_NEXT | avail(true);
    *m.trigger.borrow_mut() = Some((slot1, slot1 + 14, flags.to_le_bytes().to_vec()));
    lab.run();
    assert!(m.trigger.borrow().is_none(), "the race did not happen");
    lab.assert_ring_error();
});

hostile!(
    p05_next_on_the_last_slot_runs_into_a_stale_slot,
    PACKED,
    |lab, d, m| {
        // Fifteen good frames, then a chain at slot 15 with NEXT: it continues
        // at slot 0, which still holds lap 1's used descriptor (length 0). The
        // device reads on (the chain's first flags made it available) and
        // drops the frame: a zero-length buffer.
        for k in 0..SIZE - 1 {
            assert!(d.send(&frame(MAC[1], MAC[V], 60, k as u8)));
            lab.run();
        }
        while d.tx.pop_used().is_some() {}
        let sent = lab.counters().tx_packets;
        let a = good_tx_buffer(d, m, 0, 60);
        let p = ptx(d);
        assert_eq!(p.next_avail().index, SIZE - 1);
        raw_chain(p, &[(a, 72, VIRTQ_DESC_F_NEXT)], 9);
        lab.run();
        lab.assert_live();
        assert_eq!(lab.counters().tx_packets, sent);
        assert_eq!(
            lab.counters().tx_errors,
            1,
            "the frame is dropped and counted"
        );
    }
);

hostile!(p06_chain_longer_than_the_queue, PACKED, |lab, d, m| {
    // Every slot with NEXT: the chain never ends within the queue size.
    let a = good_tx_buffer(d, m, 0, 60);
    let descs: Vec<_> = (0..SIZE).map(|_| (a, 4, VIRTQ_DESC_F_NEXT)).collect();
    raw_chain(ptx(d), &descs, 0);
    m.descriptor_reads.set(0);
    lab.run();
    lab.assert_ring_error();
    // Caught at the queue size, not later (the ring is read once round).
    assert!(
        m.descriptor_reads.get() <= u64::from(SIZE),
        "{} descriptor reads",
        m.descriptor_reads.get()
    );
});

hostile!(
    p07_chain_as_long_as_the_queue_is_legal,
    PACKED,
    |lab, d, m| {
        // Control for p06: a chain of exactly `SIZE` slots (§2.8.5 allows it).
        let a = good_tx_buffer(d, m, 0, 60 + 4 * usize::from(SIZE));
        let mut descs: Vec<_> = (0..SIZE - 1)
            .map(|k| (a + 12 + 4 * u64::from(k), 4, VIRTQ_DESC_F_NEXT))
            .collect();
        descs.insert(0, (a, 12, VIRTQ_DESC_F_NEXT));
        descs.pop();
        descs.push((a + 12 + 4 * u64::from(SIZE - 2), 60 + 4, 0));
        assert_eq!(descs.len(), usize::from(SIZE));
        raw_chain(ptx(d), &descs, 0);
        lab.run();
        lab.assert_live();
        assert_eq!(lab.counters().tx_packets, 1);
    }
);

hostile!(
    p08_descriptor_changed_after_it_was_made_available,
    PACKED,
    |lab, d, m| {
        // A three-slot chain whose middle slot loses NEXT between the device's
        // reads: the chain's shape changed under it.
        let a = good_tx_buffer(d, m, 0, 60);
        let p = ptx(d);
        raw_chain(
            p,
            &[
                (a, 6, VIRTQ_DESC_F_NEXT),
                (a + 6, 6, VIRTQ_DESC_F_NEXT),
                (a + 12, 60, 0),
            ],
            0,
        );
        let slot1 = p.layout.desc.raw() + 16;
        *m.trigger.borrow_mut() = Some((slot1, slot1 + 14, avail(true).to_le_bytes().to_vec()));
        lab.run();
        lab.assert_ring_error();
    }
);

// ---- Indirect tables ----

hostile!(p09_indirect_with_next, PACKED, |lab, d, m| {
    let a = good_tx_buffer(d, m, 0, 60);
    assert_chain_refused(
        lab,
        d,
        &[
            (a, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT),
            (a, 72, 0),
        ],
    );
});

hostile!(p10_indirect_inside_a_next_list, PACKED, |lab, d, m| {
    let table = d.tx_buffer(3);
    let a = good_tx_buffer(d, m, 0, 60);
    m.write(
        GuestPhysAddr::new(table),
        &PackedDescriptor {
            addr: a + 12,
            len: 60,
            id: 0,
            flags: 0,
        }
        .to_bytes(),
    )
    .unwrap();
    assert_chain_refused(
        lab,
        d,
        &[
            (a, 12, VIRTQ_DESC_F_NEXT),
            (table, 16, VIRTQ_DESC_F_INDIRECT),
        ],
    );
});

hostile!(
    p11_indirect_length_not_a_multiple_of_16,
    PACKED,
    |lab, d, m| {
        let a = good_tx_buffer(d, m, 0, 60);
        assert_chain_refused(lab, d, &[(a, 20, VIRTQ_DESC_F_INDIRECT)]);
    }
);

hostile!(p12_indirect_length_zero, PACKED, |lab, d, m| {
    let a = good_tx_buffer(d, m, 0, 60);
    assert_chain_refused(lab, d, &[(a, 0, VIRTQ_DESC_F_INDIRECT)]);
});

hostile!(
    p13_indirect_table_longer_than_the_queue,
    PACKED,
    |lab, d, m| {
        let a = good_tx_buffer(d, m, 0, 60);
        assert_chain_refused(
            lab,
            d,
            &[(a, 16 * (u32::from(SIZE) + 1), VIRTQ_DESC_F_INDIRECT)],
        );
    }
);

hostile!(p14_indirect_table_outside_ram, PACKED, |lab, d, _m| {
    assert_chain_refused(
        lab,
        d,
        &[(BASES[V] + RAM as u64 - 16, 32, VIRTQ_DESC_F_INDIRECT)],
    );
});

hostile!(
    p15_indirect_not_negotiated,
    PACKED & !feature::INDIRECT_DESC,
    |lab, d, m| {
        let table = d.tx_buffer(3);
        let a = good_tx_buffer(d, m, 0, 60);
        m.write(
            GuestPhysAddr::new(table),
            &PackedDescriptor {
                addr: a,
                len: 72,
                id: 0,
                flags: 0,
            }
            .to_bytes(),
        )
        .unwrap();
        assert_chain_refused(lab, d, &[(table, 16, VIRTQ_DESC_F_INDIRECT)]);
    }
);

hostile!(
    p16_indirect_table_entries_flags_are_ignored_but_write,
    PACKED,
    |lab, d, m| {
        // §2.8.7: in a table only WRITE counts (NEXT, INDIRECT, the ID are
        // ignored); a WRITE entry in a TX table drops the frame, counted.
        let table = d.tx_buffer(3);
        let a = good_tx_buffer(d, m, 0, 60);
        let entries = [
            PackedDescriptor {
                addr: a,
                len: 12,
                id: 77,
                flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT,
            },
            PackedDescriptor {
                addr: a + 12,
                len: 60,
                id: 78,
                flags: VIRTQ_DESC_F_WRITE,
            },
        ];
        for (k, e) in entries.iter().enumerate() {
            m.write(GuestPhysAddr::new(table + 16 * k as u64), &e.to_bytes())
                .unwrap();
        }
        let id = ptx(d)
            .add_chain_with(&[(table, 32, false)], VIRTQ_DESC_F_INDIRECT)
            .unwrap();
        lab.run();
        assert_eq!(
            lab.counters().tx_errors,
            1,
            "the write-only entry drops the frame"
        );
        assert_eq!(d.tx.pop_used(), Some((u32::from(id), 0)));
        victim_still_sends(lab, d);
    }
);

// ---- Buffer IDs and buffers: the frame is dropped or the ID echoed ----

hostile!(p17_buffer_id_out_of_range, PACKED, |lab, d, m| {
    // The device echoes whatever ID the last descriptor carries (§2.8.6):
    // a wrong one is the driver's problem, never the device's.
    let a = good_tx_buffer(d, m, 0, 60);
    raw_chain(ptx(d), &[(a, 72, 0)], 999);
    lab.run();
    lab.assert_live();
    assert_eq!(lab.counters().tx_packets, 1);
    assert_eq!(d.tx.pop_used(), Some((999, 0)));
    assert_eq!(d.tx.bad_returns, 1, "the driver sees the ID it wrote");
});

hostile!(p18_buffer_id_reused_while_in_flight, PACKED, |lab, d, m| {
    let a = good_tx_buffer(d, m, 0, 60);
    let p = ptx(d);
    raw_chain(p, &[(a, 72, 0)], 5);
    let next = RingPosition {
        index: 1,
        wrap: true,
    };
    p.write_descriptor(
        next.index,
        PackedDescriptor {
            addr: a,
            len: 72,
            id: 5,
            flags: avail(next.wrap),
        },
    );
    lab.run();
    lab.assert_live();
    assert_eq!(lab.counters().tx_packets, 2, "both buffers used, each once");
});

hostile!(p19_zero_length_tx_buffer, PACKED, |lab, d, m| {
    let a = good_tx_buffer(d, m, 0, 60);
    assert_tx_dropped(lab, d, &[(a, 12, false), (a + 12, 0, false)]);
});

hostile!(p20_write_only_tx_descriptor, PACKED, |lab, d, m| {
    let a = good_tx_buffer(d, m, 0, 60);
    assert_tx_dropped(lab, d, &[(a, 72, true)]);
});

hostile!(p21_tx_buffer_outside_ram, PACKED, |lab, d, _m| {
    assert_tx_dropped(lab, d, &[(BASES[V] + RAM as u64 + 0x1000, 72, false)]);
});

hostile!(p22_total_length_reaches_2_pow_32, PACKED, |lab, d, m| {
    let a = good_tx_buffer(d, m, 0, 60);
    assert_chain_refused(
        lab,
        d,
        &[(a, 0x8000_0000, VIRTQ_DESC_F_NEXT), (a, 0x8000_0000, 0)],
    );
});

#[test]
fn p23_read_only_rx_descriptor() {
    let mems = mems();
    let (mut lab, mut drivers) = Lab::new(&mems, PACKED, FORMATS);
    // The victim starts again with one read-only receive buffer.
    let mut v = restart_victim(&mut lab, &mems, SIZE);
    let id = v.rx.add_chain(&[(v.end(), 2048, false)]).unwrap();
    let f = frame([0xff; 6], MAC[1], 300, 0x42);
    assert!(drivers[1].send(&f));
    lab.run();
    assert_eq!(lab.counters().rx_errors, 1);
    assert_eq!(v.rx.pop_used(), Some((u32::from(id), 0)));
    lab.assert_live();
    assert_eq!(drivers[2].recv().unwrap().1, f, "port 2 got the broadcast");
    assert_others_forward(&mut lab, &mut drivers);
}

#[test]
fn p39_rx_frame_dropped_mid_merge_returns_its_buffers_in_order() {
    // MRG_RXBUF: three good 128-byte buffers, then a read-only one. The
    // frame needs eight: it is dropped at the fourth, and the four come
    // back with length 0 in the order they were posted (IN_ORDER).
    let mems = mems();
    let (mut lab, mut drivers) = Lab::new(&mems, PACKED, FORMATS);
    let mut v = restart_victim(&mut lab, &mems, SIZE);
    assert_ne!(v.features & feature::IN_ORDER, 0);
    let base = v.end();
    let mut ids: Vec<u32> = (0..3u64)
        .map(|k| u32::from(v.rx.add_chain(&[(base + 128 * k, 128, true)]).unwrap()))
        .collect();
    ids.push(u32::from(
        v.rx.add_chain(&[(base + 384, 128, false)]).unwrap(),
    ));
    assert!(drivers[1].send(&frame([0xff; 6], MAC[1], 1000, 4)));
    lab.run();
    assert_eq!(lab.counters().rx_errors, 1);
    let used: Vec<_> = std::iter::from_fn(|| v.rx.pop_used()).collect();
    assert_eq!(used, ids.iter().map(|&id| (id, 0)).collect::<Vec<_>>());
    assert_eq!((v.rx.out_of_order, v.rx.bad_returns), (0, 0));
    lab.assert_live();
    assert_others_forward(&mut lab, &mut drivers);
}

#[test]
fn p40_driver_laps_the_device_over_unused_slots() {
    // The victim's receive ring is full (16 buffers posted, none used);
    // its driver writes on into lap 2 over slots 0..4, which the device
    // has not used. At slot 0 the device looks for lap 1's bits and finds
    // lap 2's: the ring looks empty, so frames for the victim wait in its
    // egress queue; nothing is written to the new buffers.
    let mems = mems();
    let (mut lab, mut drivers) = Lab::new(&mems, PACKED, FORMATS);
    let elsewhere = drivers[V].end();
    let p = prx(&mut drivers[V]);
    assert_eq!(p.free_count(), 0, "the ring is full");
    for k in 0..4u16 {
        let addr = elsewhere + 2048 * u64::from(k);
        p.write_descriptor(
            k,
            PackedDescriptor {
                addr,
                len: 2048,
                id: k,
                flags: 0,
            },
        );
        p.write_flags(k, VIRTQ_DESC_F_WRITE | avail(false));
    }
    for tag in 0..3 {
        assert!(drivers[1].send(&frame(MAC[V], MAC[1], 300, tag)));
        lab.run();
    }
    lab.assert_live();
    assert_eq!(lab.counters().rx_packets, 0);
    assert_eq!(lab.switch.egress_len(V), 3, "the frames wait");
    let mut untouched = vec![0u8; 4 * 2048];
    mems[V]
        .read(GuestPhysAddr::new(elsewhere), &mut untouched)
        .unwrap();
    assert!(
        untouched.iter().all(|&b| b == 0),
        "a lapped buffer was written"
    );
    assert_others_forward(&mut lab, &mut drivers);
}

#[test]
fn p24_rx_slots_rewritten_before_use_to_point_outside_ram() {
    // The guest rewrites its posted receive buffers' addresses (never
    // popped yet, so the device reads the new values): each frame is
    // dropped and counted, every buffer comes back once with length 0.
    let mems = mems();
    let (mut lab, mut drivers) = Lab::new(&mems, PACKED, FORMATS);
    let p = prx(&mut drivers[V]);
    for k in 0..SIZE {
        let flags = p.flags(k);
        p.write_descriptor(
            k,
            PackedDescriptor {
                addr: BASES[V] + RAM as u64,
                len: 2048,
                id: k,
                flags: 0,
            },
        );
        p.write_flags(k, flags);
    }
    for _ in 0..3 {
        assert!(drivers[1].send(&frame([0xff; 6], MAC[1], 300, 1)));
        lab.run();
    }
    assert_eq!(lab.counters().rx_errors, 3);
    let mut used = Vec::new();
    while let Some(e) = drivers[V].rx.pop_used() {
        used.push(e);
    }
    assert_eq!(used, vec![(0, 0), (1, 0), (2, 0)]);
    assert_eq!(drivers[V].rx.bad_returns, 0);
    lab.assert_live();
    assert_others_forward(&mut lab, &mut drivers);
}

// ---- Event suppression ----

/// Port 1 sends `count` frames to the victim, which takes each (its
/// driver event structure set by `event` first); returns how many
/// interrupts the victim got.
fn deliver_to_victim(event: impl Fn(&mut PackedDriver<Racy>), count: u8) -> u32 {
    let mems = mems();
    let (mut lab, mut drivers) = Lab::new(&mems, PACKED, FORMATS);
    let mut interrupts = 0;
    for k in 0..count {
        event(prx(&mut drivers[V]));
        let f = frame(MAC[V], MAC[1], 100, k);
        assert!(drivers[1].send(&f));
        lab.run();
        interrupts += u32::from(lab.devs[V].take_irq_edge());
        let got = drivers[V].recv().expect("the victim still receives");
        assert_eq!(got.1, f);
    }
    lab.assert_live();
    assert_others_forward(&mut lab, &mut drivers);
    interrupts
}

#[test]
fn p25_driver_event_offset_beyond_the_ring() {
    // RING_EVENT_FLAGS_DESC at slot 0x7fff (wrap 1) of a 16-slot ring:
    // some answer about the interrupt, never a panic; frames still arrive.
    deliver_to_victim(|p| p.set_driver_event(RING_EVENT_FLAGS_DESC, 0xffff), 40);
}

#[test]
fn p26_reserved_driver_event_flags() {
    // Flags value 3 is reserved: the device interrupts anyway (a spurious
    // interrupt is harmless, a lost one is not). Control: DISABLE (1)
    // gets none.
    assert_eq!(deliver_to_victim(|p| p.set_driver_event(3, 0), 20), 20);
    assert_eq!(deliver_to_victim(|p| p.disable_interrupts(), 20), 0);
}

hostile!(
    p27_notification_storm_with_nothing_available,
    PACKED,
    |lab, _d, m| {
        for _ in 0..1000 {
            let r = lab.devs[V].mmio_write(reg::QUEUE_NOTIFY, 4, 1, m);
            assert_eq!(r, Ok(MmioAction::Notify(1)));
            lab.run();
        }
        lab.assert_live();
        assert_eq!(lab.victim().device.tx_chains, 0);
        assert_eq!(lab.counters(), PortCounters::default());
    }
);

// ---- QueueReady: the layout is refused, DEVICE_NEEDS_RESET ----

const DESC: u64 = BASES[V] + 0x1000;
const DRIVER_AREA: u64 = BASES[V] + 0x2000;
const DEVICE_AREA: u64 = BASES[V] + 0x2004;
const END: u64 = BASES[V] + RAM as u64;

/// The victim, reset and taking packed rings, programs queue 0 with
/// `size` entries at `desc`, `driver`, `device`: QueueReady is refused
/// with `want` and the device needs a reset.
fn assert_layout_refused(
    lab: &mut Lab,
    size: u32,
    (desc, driver, device): (u64, u64, u64),
    want: VirtioError,
) {
    to_features_ok(lab, feature::VERSION_1 | feature::RING_PACKED);
    let r = set_queue(lab, size, desc, driver, device);
    assert_queue_refused(lab, r, want);
}

hostile!(p28_driver_event_area_outside_ram, PACKED, |lab, _d, _m| {
    assert_layout_refused(lab, 16, (DESC, END, DEVICE_AREA), out_of_range(END, 4));
});

hostile!(p29_driver_event_area_misaligned, PACKED, |lab, _d, _m| {
    assert_layout_refused(
        lab,
        16,
        (DESC, DRIVER_AREA + 2, DEVICE_AREA),
        VirtioError::MisalignedRing,
    );
});

hostile!(p30_device_event_area_outside_ram, PACKED, |lab, _d, _m| {
    assert_layout_refused(lab, 16, (DESC, DRIVER_AREA, END), out_of_range(END, 4));
});

hostile!(p31_device_event_area_misaligned, PACKED, |lab, _d, _m| {
    assert_layout_refused(
        lab,
        16,
        (DESC, DRIVER_AREA, DEVICE_AREA + 1),
        VirtioError::MisalignedRing,
    );
});

hostile!(p32_descriptor_ring_misaligned, PACKED, |lab, _d, _m| {
    assert_layout_refused(
        lab,
        16,
        (DESC + 8, DRIVER_AREA, DEVICE_AREA),
        VirtioError::MisalignedRing,
    );
});

hostile!(
    p33_descriptor_ring_over_the_end_of_ram,
    PACKED,
    |lab, _d, _m| {
        let desc = END - 16 * 15;
        let want = out_of_range(desc, 256);
        assert_layout_refused(lab, 16, (desc, DRIVER_AREA, DEVICE_AREA), want);
    }
);

hostile!(p34_queue_size_above_queue_num_max, PACKED, |lab, _d, _m| {
    assert_eq!(lab.devs[V].mmio_read(reg::QUEUE_NUM_MAX, 4), Ok(256));
    let want = VirtioError::InvalidQueueSize;
    assert_layout_refused(lab, 257, (DESC, DRIVER_AREA, DEVICE_AREA), want);
});

hostile!(p35_queue_size_zero, PACKED, |lab, _d, _m| {
    assert_layout_refused(
        lab,
        0,
        (DESC, DRIVER_AREA, DEVICE_AREA),
        VirtioError::InvalidQueueSize,
    );
});

hostile!(p36_queue_size_beyond_16_bits, PACKED, |lab, _d, _m| {
    assert_layout_refused(
        lab,
        0x1_0010,
        (DESC, DRIVER_AREA, DEVICE_AREA),
        VirtioError::InvalidQueueSize,
    );
});

/// §2.8: a packed queue's size need not be a power of two (the split
/// ring's must): a 12-entry ring is accepted and moves frames over many
/// laps. Control for the size checks above.
#[test]
fn p37_non_power_of_two_queue_size_is_legal() {
    let mems = mems();
    let (mut lab, mut drivers) = Lab::new(&mems, PACKED, FORMATS);
    let mut v = restart_victim(&mut lab, &mems, 12);
    v.fill_rx();
    assert_eq!(lab.victim().queue(1).unwrap().layout().size, 12);
    for k in 0..50u8 {
        let f = frame(MAC[1], MAC[V], 100, k);
        assert!(v.send(&f));
        lab.run();
        assert_eq!(drivers[1].recv().unwrap().1, f);
        let back = frame(MAC[V], MAC[1], 80, k);
        assert!(drivers[1].send(&back));
        lab.run();
        assert_eq!(v.recv().unwrap().1, back);
    }
    assert_eq!(v.rx.bad_returns + v.tx.bad_returns, 0);
    // And a split ring of that size is refused (the control's control).
    let mut split = new_net_device(MAC[V], NET_FEATURES, 256);
    assert_eq!(
        MockNetDriver::init(&mut split, &mems[V], BASES[V], 12, 2048, u64::MAX).err(),
        Some(VirtioError::InvalidQueueSize)
    );
    assert_others_forward(&mut lab, &mut drivers);
}

#[test]
fn p38_recovery_after_needs_reset() {
    let mems = mems();
    let (mut lab, mut drivers) = Lab::new(&mems, PACKED, FORMATS);
    let a = good_tx_buffer(&drivers[V], &mems[V], 0, 60);
    raw_chain(ptx(&mut drivers[V]), &[(a, 20, VIRTQ_DESC_F_INDIRECT)], 0);
    lab.run();
    lab.assert_ring_error();
    // The driver resets and starts again on packed rings: the device works.
    let mut v = restart_victim(&mut lab, &mems, SIZE);
    v.fill_rx();
    lab.assert_live();
    let f = frame(MAC[1], MAC[V], 200, 9);
    assert!(v.send(&f));
    lab.run();
    assert_eq!(drivers[1].recv().unwrap().1, f);
    assert_others_forward(&mut lab, &mut drivers);
}

/// The catalogue has at least 20 named packed cases (issue 14 item 6), so
/// it cannot silently shrink: counted from this file's own source.
#[test]
fn hostile_packed_catalogue_names_at_least_20_cases() {
    let source = include_str!("hostile_packed.rs");
    let mut names: Vec<&str> = source
        .split(['(', ' ', '\n'])
        .filter(|w| {
            w.len() > 4
                && w.starts_with('p')
                && w[1..3].bytes().all(|b| b.is_ascii_digit())
                && w.as_bytes()[3] == b'_'
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(
        names.len() >= 20,
        "only {} packed cases: {names:?}",
        names.len()
    );
    eprintln!("hostile packed catalogue: {} cases", names.len());
}

// ---- TCP segmentation offload (virtio 1.2 §5.1.6.2) on packed rings ----

hostile!(p50_gso_size_zero, PACKED, |lab, d, _m| {
    gso_case(lab, d, |h, _| h.gso_size = 0);
});

hostile!(p51_gso_ipv4_total_length_lies, PACKED, |lab, d, _m| {
    gso_case(lab, d, |_, f| f[14 + 2] ^= 0x01);
});

hostile!(
    p52_gso_without_host_tso,
    PACKED & !chroma_virtio::net::net_feature::TSO,
    |lab, d, _m| {
        gso_case(lab, d, |_, _| {});
    }
);
