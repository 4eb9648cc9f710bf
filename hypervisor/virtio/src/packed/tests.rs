//! The packed queue against a driver written from §2.8's driver side
//! (its "Implementation Example" and the used-buffer loop), on plain memory.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use super::*;
use chroma_mem::vecmem::VecMemory;
use std::collections::HashMap;

const BASE: u64 = 0x4000_0000;
const DESC: u64 = BASE + 0x1000;
const DRIVER_AREA: u64 = BASE + 0x100;
const DEVICE_AREA: u64 = BASE + 0x200;
const BUFFERS: u64 = BASE + 0x10_0000;

fn memory() -> VecMemory {
    VecMemory::new(BASE, 4 << 20)
}

fn layout(size: u16) -> QueueLayout {
    QueueLayout {
        size,
        desc: GuestPhysAddr::new(DESC),
        avail: GuestPhysAddr::new(DRIVER_AREA),
        used: GuestPhysAddr::new(DEVICE_AREA),
    }
}

fn device(mem: &VecMemory, size: u16, event_idx: bool, indirect: bool) -> PackedQueue {
    let mut q = PackedQueue::new();
    q.activate(layout(size), size, event_idx, indirect, mem)
        .unwrap();
    q
}

/// One buffer element: address, length, device-writable.
type Element = (u64, u32, bool);

/// The driver side of §2.8, by the spec's own example.
struct Driver<'m> {
    mem: &'m VecMemory,
    size: u16,
    next_avail: RingPosition,
    next_used: RingPosition,
    /// Ring slots of each buffer id in flight.
    slots: HashMap<u16, u16>,
    free: u16,
}

impl<'m> Driver<'m> {
    fn new(mem: &'m VecMemory, size: u16) -> Self {
        Self {
            mem,
            size,
            next_avail: RingPosition::START,
            next_used: RingPosition::START,
            slots: HashMap::new(),
            free: size,
        }
    }

    fn write_desc(&self, index: u16, addr: u64, len: u32, id: u16, flags: Option<u16>) {
        let at = DESC + 16 * u64::from(index);
        self.mem
            .write(GuestPhysAddr::new(at), &addr.to_le_bytes())
            .unwrap();
        self.mem
            .write(GuestPhysAddr::new(at + 8), &len.to_le_bytes())
            .unwrap();
        self.mem
            .write(GuestPhysAddr::new(at + 12), &id.to_le_bytes())
            .unwrap();
        if let Some(flags) = flags {
            self.set_flags(index, flags);
        }
    }

    fn set_flags(&self, index: u16, flags: u16) {
        let at = DESC + 16 * u64::from(index) + 14;
        self.mem
            .write(GuestPhysAddr::new(at), &flags.to_le_bytes())
            .unwrap();
    }

    fn flags(&self, index: u16) -> u16 {
        let mut b = [0; 2];
        self.mem
            .read(
                GuestPhysAddr::new(DESC + 16 * u64::from(index) + 14),
                &mut b,
            )
            .unwrap();
        u16::from_le_bytes(b)
    }

    fn avail_bits(&self) -> u16 {
        if self.next_avail.wrap {
            VIRTQ_DESC_F_AVAIL
        } else {
            VIRTQ_DESC_F_USED
        }
    }

    /// Makes `elements` available as one buffer with `id`, the first
    /// descriptor's flags last. `extra` is or-ed into every descriptor's flags.
    fn add_with(&mut self, elements: &[Element], id: u16, extra: u16) -> bool {
        let n = elements.len() as u16;
        if n == 0 || n > self.free {
            return false;
        }
        let first = self.next_avail;
        let mut first_flags = 0;
        for (k, &(addr, len, write)) in elements.iter().enumerate() {
            let mut f = self.avail_bits() | extra;
            if write {
                f |= VIRTQ_DESC_F_WRITE;
            }
            if k + 1 < elements.len() {
                f |= VIRTQ_DESC_F_NEXT;
            }
            let index = self.next_avail.index;
            if k == 0 {
                first_flags = f;
                self.write_desc(index, addr, len, id, None);
            } else {
                self.write_desc(index, addr, len, id, Some(f));
            }
            self.next_avail = self.next_avail.advance(1, self.size);
        }
        self.set_flags(first.index, first_flags);
        self.slots.insert(id, n);
        self.free -= n;
        true
    }

    fn add(&mut self, elements: &[Element], id: u16) -> bool {
        self.add_with(elements, id, 0)
    }

    /// An indirect buffer: `elements` in a table at `table`.
    fn add_indirect(&mut self, table: u64, elements: &[Element], id: u16) -> bool {
        for (k, &(addr, len, write)) in elements.iter().enumerate() {
            let at = table + 16 * k as u64;
            let flags: u16 = if write { VIRTQ_DESC_F_WRITE } else { 0 };
            self.mem
                .write(GuestPhysAddr::new(at), &addr.to_le_bytes())
                .unwrap();
            self.mem
                .write(GuestPhysAddr::new(at + 8), &len.to_le_bytes())
                .unwrap();
            self.mem
                .write(GuestPhysAddr::new(at + 12), &0u16.to_le_bytes())
                .unwrap();
            self.mem
                .write(GuestPhysAddr::new(at + 14), &flags.to_le_bytes())
                .unwrap();
        }
        let len = 16 * elements.len() as u32;
        self.add_with(&[(table, len, false)], id, VIRTQ_DESC_F_INDIRECT)
    }

    /// The next used buffer `(id, len)`, if the device published one.
    fn used(&mut self) -> Option<(u16, u32)> {
        let flags = self.flags(self.next_used.index);
        let used = flags & VIRTQ_DESC_F_USED != 0;
        let avail = flags & VIRTQ_DESC_F_AVAIL != 0;
        if used != self.next_used.wrap || avail != self.next_used.wrap {
            return None;
        }
        let at = DESC + 16 * u64::from(self.next_used.index);
        let mut b = [0; 6];
        self.mem.read(GuestPhysAddr::new(at + 8), &mut b).unwrap();
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let id = u16::from_le_bytes([b[4], b[5]]);
        let slots = self.slots.remove(&id).expect("used id not in flight");
        self.free += slots;
        self.next_used = self.next_used.advance(slots, self.size);
        Some((id, len))
    }

    /// Sets the driver event suppression structure.
    fn driver_event(&self, flags: u16, at: RingPosition) {
        self.mem
            .write(
                GuestPhysAddr::new(DRIVER_AREA),
                &at.off_wrap().to_le_bytes(),
            )
            .unwrap();
        self.mem
            .write(GuestPhysAddr::new(DRIVER_AREA + 2), &flags.to_le_bytes())
            .unwrap();
    }

    /// The device event suppression structure `(flags, off_wrap)`.
    fn device_event(&self) -> (u16, RingPosition) {
        let mut b = [0; 4];
        self.mem
            .read(GuestPhysAddr::new(DEVICE_AREA), &mut b)
            .unwrap();
        (
            u16::from_le_bytes([b[2], b[3]]) & 3,
            RingPosition::from_off_wrap(u16::from_le_bytes([b[0], b[1]])),
        )
    }
}

fn walk(
    q: &PackedQueue,
    mem: &VecMemory,
    head: &PackedHead,
) -> Result<Vec<Descriptor>, VirtioError> {
    let mut chain = q.chain(head);
    let mut out = Vec::new();
    while let Some(d) = chain.next_descriptor(mem)? {
        out.push(d);
    }
    Ok(out)
}

fn buffer(k: u64) -> u64 {
    BUFFERS + k * 0x800
}

#[test]
fn spec_2_8_single_buffers_round_trip_over_many_laps() {
    for size in [1u16, 3, 4, 256] {
        let mem = memory();
        let mut q = device(&mem, size, false, false);
        let mut drv = Driver::new(&mem, size);
        for round in 0..(3 * u32::from(size) + 5) {
            let id = (round % u32::from(size)) as u16;
            assert!(drv.add(&[(buffer(u64::from(id)), 100 + round, true)], id));
            let head = q.pop(&mem).unwrap().expect("available");
            assert_eq!((head.id, head.slots), (id, 1));
            let ds = walk(&q, &mem, &head).unwrap();
            assert_eq!(ds.len(), 1);
            assert_eq!(ds[0].len, 100 + round);
            assert!(ds[0].writable);
            assert_eq!(q.pop(&mem).unwrap(), None, "nothing else available");
            q.add_used(&mem, &head, 42).unwrap();
            assert_eq!(drv.used(), None, "unpublished used descriptors stay hidden");
            assert!(q.publish_used(&mem).unwrap(), "events enabled: interrupt");
            assert_eq!(drv.used(), Some((id, 42)));
        }
    }
}

#[test]
fn spec_2_8_6_chains_cross_the_ring_end_and_use_one_descriptor() {
    let mem = memory();
    let size = 5;
    let mut q = device(&mem, size, false, false);
    let mut drv = Driver::new(&mem, size);
    // Put the driver and device at slot 3 so that a 3-slot chain wraps.
    for id in 0..3 {
        drv.add(&[(buffer(id), 10, false)], id as u16);
        let h = q.pop(&mem).unwrap().unwrap();
        walk(&q, &mem, &h).unwrap();
        q.add_used(&mem, &h, 0).unwrap();
    }
    q.publish_used(&mem).unwrap();
    for _ in 0..3 {
        drv.used().unwrap();
    }
    let elements = [
        (buffer(7), 12, false),
        (buffer(8), 1500, false),
        (buffer(9), 2048, true),
    ];
    assert!(drv.add(&elements, 4));
    let head = q.pop(&mem).unwrap().unwrap();
    assert_eq!((head.id, head.slots), (4, 3));
    assert_eq!(
        head.start,
        RingPosition {
            index: 3,
            wrap: true
        }
    );
    let ds = walk(&q, &mem, &head).unwrap();
    let got: Vec<_> = ds
        .iter()
        .map(|d| (d.addr.raw(), d.len, d.writable))
        .collect();
    assert_eq!(got, elements);
    assert_eq!(
        q.next_avail(),
        RingPosition {
            index: 1,
            wrap: false
        }
    );
    q.add_used(&mem, &head, 2048).unwrap();
    q.publish_used(&mem).unwrap();
    assert_eq!(drv.used(), Some((4, 2048)));
    assert_eq!(
        q.next_used(),
        RingPosition {
            index: 1,
            wrap: false
        }
    );
}

#[test]
fn out_of_order_use_is_seen_by_the_driver_with_the_right_ids() {
    let mem = memory();
    let size = 8;
    let mut q = device(&mem, size, false, false);
    let mut drv = Driver::new(&mem, size);
    drv.add(&[(buffer(0), 10, false), (buffer(1), 10, false)], 5);
    drv.add(&[(buffer(2), 10, true)], 6);
    let a = q.pop(&mem).unwrap().unwrap();
    walk(&q, &mem, &a).unwrap();
    let b = q.pop(&mem).unwrap().unwrap();
    walk(&q, &mem, &b).unwrap();
    // The later buffer completes first.
    q.add_used(&mem, &b, 7).unwrap();
    q.add_used(&mem, &a, 0).unwrap();
    q.publish_used(&mem).unwrap();
    assert_eq!(drv.used(), Some((6, 7)));
    assert_eq!(drv.used(), Some((5, 0)));
    assert_eq!(drv.used(), None);
}

#[test]
fn spec_2_8_7_indirect_tables_are_walked_and_checked() {
    let mem = memory();
    let mut q = device(&mem, 4, false, true);
    let mut drv = Driver::new(&mem, 4);
    let table = BASE + 0x8000;
    let elements = [
        (buffer(1), 12, false),
        (buffer(2), 64, false),
        (buffer(3), 1500, true),
    ];
    assert!(drv.add_indirect(table, &elements, 3));
    let head = q.pop(&mem).unwrap().unwrap();
    assert_eq!((head.id, head.slots), (3, 1));
    let got: Vec<_> = walk(&q, &mem, &head)
        .unwrap()
        .iter()
        .map(|d| (d.addr.raw(), d.len, d.writable))
        .collect();
    assert_eq!(got, elements);

    // Each broken table is refused, and so is INDIRECT where it may not be.
    let broken: [(u64, u32, u16, VirtioError); 4] = [
        (table, 0, 0, VirtioError::IndirectTableLength),
        (table, 24, 0, VirtioError::IndirectTableLength),
        (table, 16 * 5, 0, VirtioError::IndirectTableLength),
        (table, 16, VIRTQ_DESC_F_NEXT, VirtioError::IndirectWithNext),
    ];
    for (addr, len, extra, error) in broken {
        let mem = memory();
        let mut q = device(&mem, 4, false, true);
        let mut drv = Driver::new(&mem, 4);
        drv.add_with(&[(addr, len, false)], 0, VIRTQ_DESC_F_INDIRECT | extra);
        assert_eq!(q.pop(&mem), Err(error), "table at {addr:#x} len {len}");
    }
    let mem = memory();
    let mut q = device(&mem, 4, false, true);
    let mut drv = Driver::new(&mem, 4);
    drv.add_with(&[(BASE + (8 << 20), 32, false)], 0, VIRTQ_DESC_F_INDIRECT);
    assert!(
        matches!(q.pop(&mem), Err(VirtioError::Memory(_))),
        "table outside RAM"
    );
    // Not negotiated.
    let mem = memory();
    let mut q = device(&mem, 4, false, false);
    let mut drv = Driver::new(&mem, 4);
    drv.add_indirect(table, &elements, 0);
    assert_eq!(q.pop(&mem), Err(VirtioError::IndirectNotNegotiated));
    // INDIRECT inside a NEXT list.
    let mem = memory();
    let mut q = device(&mem, 4, false, true);
    let mut drv = Driver::new(&mem, 4);
    drv.add(&[(buffer(0), 16, false), (table, 16, false)], 0);
    drv.set_flags(1, drv.flags(1) | VIRTQ_DESC_F_INDIRECT);
    assert_eq!(q.pop(&mem), Err(VirtioError::IndirectWithNext));
}

#[test]
fn a_chain_without_end_is_too_long() {
    let mem = memory();
    let size = 4;
    let mut q = device(&mem, size, false, false);
    let drv = Driver::new(&mem, size);
    // Every slot available with NEXT: the chain never ends.
    for index in 0..size {
        drv.write_desc(
            index,
            buffer(0),
            8,
            0,
            Some(VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_NEXT),
        );
    }
    assert_eq!(q.pop(&mem), Err(VirtioError::ChainTooLong));
    // Negative control: the same ring with the last NEXT cleared is one chain.
    let mut q = device(&mem, size, false, false);
    drv.set_flags(size - 1, VIRTQ_DESC_F_AVAIL);
    assert_eq!(q.pop(&mem).unwrap().unwrap().slots, size);
}

#[test]
fn descriptors_not_yet_available_are_not_taken() {
    let mem = memory();
    let mut q = device(&mem, 4, false, false);
    let drv = Driver::new(&mem, 4);
    // Zeroed ring, then each wrong combination of AVAIL/USED for lap 1.
    for flags in [0, VIRTQ_DESC_F_USED, VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED] {
        drv.set_flags(0, flags);
        assert_eq!(q.pop(&mem).unwrap(), None, "flags {flags:#x}");
    }
    drv.set_flags(0, VIRTQ_DESC_F_AVAIL);
    assert!(
        q.pop(&mem).unwrap().is_some(),
        "negative control: available is taken"
    );
}

#[test]
fn a_descriptor_changed_after_it_was_made_available_is_caught() {
    let mem = memory();
    let mut q = device(&mem, 4, false, false);
    let mut drv = Driver::new(&mem, 4);
    drv.add(
        &[
            (buffer(0), 8, false),
            (buffer(1), 8, false),
            (buffer(2), 8, false),
        ],
        1,
    );
    let head = q.pop(&mem).unwrap().unwrap();
    assert_eq!(
        walk(&q, &mem, &head).unwrap().len(),
        3,
        "control: unchanged"
    );
    // The driver ends the chain early behind the device's back.
    drv.set_flags(1, drv.flags(1) & !VIRTQ_DESC_F_NEXT);
    assert_eq!(walk(&q, &mem, &head), Err(VirtioError::DescriptorChanged));
}

#[test]
fn a_chain_longer_than_four_gib_is_refused() {
    let mem = memory();
    let mut q = device(&mem, 4, false, false);
    let mut drv = Driver::new(&mem, 4);
    drv.add(&[(buffer(0), u32::MAX, false), (buffer(1), 2, false)], 0);
    let head = q.pop(&mem).unwrap().unwrap();
    assert_eq!(walk(&q, &mem, &head), Err(VirtioError::ChainLengthOverflow));
}

#[test]
fn layouts_are_checked() {
    let mem = memory();
    let mut q = PackedQueue::new();
    // A size that is not a power of two is fine for packed rings.
    assert!(q.activate(layout(3), 8, false, false, &mem).is_ok());
    for (l, error) in [
        (layout(0), VirtioError::InvalidQueueSize),
        (layout(9), VirtioError::InvalidQueueSize),
        (
            QueueLayout {
                desc: GuestPhysAddr::new(DESC + 8),
                ..layout(4)
            },
            VirtioError::MisalignedRing,
        ),
        (
            QueueLayout {
                avail: GuestPhysAddr::new(DRIVER_AREA + 2),
                ..layout(4)
            },
            VirtioError::MisalignedRing,
        ),
        (
            QueueLayout {
                used: GuestPhysAddr::new(DEVICE_AREA + 2),
                ..layout(4)
            },
            VirtioError::MisalignedRing,
        ),
    ] {
        assert_eq!(q.activate(l, 8, false, false, &mem), Err(error));
        assert!(!q.ready());
    }
    let outside = QueueLayout {
        used: GuestPhysAddr::new(BASE + (4 << 20)),
        ..layout(4)
    };
    assert!(matches!(
        q.activate(outside, 8, false, false, &mem),
        Err(VirtioError::Memory(_))
    ));
    assert_eq!(q.pop(&mem), Err(VirtioError::QueueNotReady));
}

#[test]
fn spec_2_8_10_driver_event_suppression_decides_interrupts() {
    let mem = memory();
    let size = 4;
    let mut q = device(&mem, size, true, false);
    let mut drv = Driver::new(&mem, size);
    let cycle = |q: &mut PackedQueue, drv: &mut Driver<'_>, id: u16| {
        drv.add(&[(buffer(u64::from(id)), 8, true)], id);
        let h = q.pop(&mem).unwrap().unwrap();
        walk(q, &mem, &h).unwrap();
        q.add_used(&mem, &h, 8).unwrap();
        let interrupt = q.publish_used(&mem).unwrap();
        assert!(drv.used().is_some());
        interrupt
    };
    drv.driver_event(RING_EVENT_FLAGS_DISABLE, RingPosition::START);
    assert!(!cycle(&mut q, &mut drv, 0), "disabled");
    drv.driver_event(RING_EVENT_FLAGS_ENABLE, RingPosition::START);
    assert!(cycle(&mut q, &mut drv, 1), "enabled");
    // Used position is now slot 2, lap 1. Ask for slot 3: not yet at the
    // next publish (slot 2 used), then yes (slot 3 used).
    drv.driver_event(
        RING_EVENT_FLAGS_DESC,
        RingPosition {
            index: 3,
            wrap: true,
        },
    );
    assert!(!cycle(&mut q, &mut drv, 2), "slot 2 is not the event");
    assert!(cycle(&mut q, &mut drv, 3), "slot 3 is");
    // Across the wrap: ask for slot 1 of lap 2 (wrap counter 0).
    drv.driver_event(
        RING_EVENT_FLAGS_DESC,
        RingPosition {
            index: 1,
            wrap: false,
        },
    );
    assert!(!cycle(&mut q, &mut drv, 0), "slot 0 of lap 2");
    assert!(cycle(&mut q, &mut drv, 1), "slot 1 of lap 2");
    // The same DESC request without EVENT_IDX negotiated means "interrupt".
    let mem = memory();
    let mut q = device(&mem, size, false, false);
    let mut drv = Driver::new(&mem, size);
    drv.driver_event(
        RING_EVENT_FLAGS_DESC,
        RingPosition {
            index: 3,
            wrap: true,
        },
    );
    drv.add(&[(buffer(0), 8, true)], 0);
    let h = q.pop(&mem).unwrap().unwrap();
    q.add_used(&mem, &h, 0).unwrap();
    assert!(q.publish_used(&mem).unwrap());
}

#[test]
fn spec_2_8_10_device_event_suppression_is_written_for_the_driver() {
    let mem = memory();
    let size = 4;
    let mut q = device(&mem, size, true, false);
    let mut drv = Driver::new(&mem, size);
    drv.add(&[(buffer(0), 8, false)], 0);
    let h = q.pop(&mem).unwrap().unwrap();
    assert!(!q.enable_notification(&mem).unwrap());
    assert_eq!(
        drv.device_event(),
        (
            RING_EVENT_FLAGS_DESC,
            RingPosition {
                index: 1,
                wrap: true
            }
        )
    );
    assert!(!q.suppress_notification(&mem, 3).unwrap());
    assert_eq!(
        drv.device_event(),
        (
            RING_EVENT_FLAGS_DESC,
            RingPosition {
                index: 0,
                wrap: false
            }
        )
    );
    // A buffer made available after the driver read the structure is seen by the re-check.
    drv.add(&[(buffer(1), 8, false)], 1);
    assert!(q.enable_notification(&mem).unwrap());
    q.add_used(&mem, &h, 0).unwrap();
    // Without EVENT_IDX: ENABLE and DISABLE.
    let mem = memory();
    let mut q = device(&mem, size, false, false);
    let drv = Driver::new(&mem, size);
    q.suppress_notification(&mem, 2).unwrap();
    assert_eq!(drv.device_event().0, RING_EVENT_FLAGS_DISABLE);
    q.enable_notification(&mem).unwrap();
    assert_eq!(drv.device_event().0, RING_EVENT_FLAGS_ENABLE);
}

/// Whether Linux's driver notifies after making `added` buffers available
/// (`virtqueue_kick_prepare_packed` in drivers/virtio/virtio_ring.c): the
/// device's flags, and with DESC its `off_wrap` taken back one lap when its
/// wrap counter is not the driver's, against the driver's slot indices.
fn linux_kicks(drv: &Driver<'_>, added: u16) -> bool {
    let (flags, event) = drv.device_event();
    if flags != RING_EVENT_FLAGS_DESC {
        return flags != RING_EVENT_FLAGS_DISABLE;
    }
    let new = drv.next_avail.index;
    let old = new.wrapping_sub(added);
    let mut event_idx = event.index;
    if event.wrap != drv.next_avail.wrap {
        event_idx = event_idx.wrapping_sub(drv.size);
    }
    new.wrapping_sub(event_idx).wrapping_sub(1) < new.wrapping_sub(old)
}

#[test]
fn spec_2_8_10_a_queue_that_never_runs_dry_is_not_notified_again() {
    // A receive queue: notifications are on at activation, or the device
    // asks for one when it finds the ring empty; the driver fills the ring and refills each
    // buffer the device uses, so the device never runs dry again. Linux
    // notifies once, not each time its index passes the slot the device
    // named (every second lap, with the same wrap counter).
    // Either from activation (the device area zeroed: ENABLE) or after the
    // device found the ring empty and asked.
    for (event_idx, asked) in [(true, true), (false, true), (true, false), (false, false)] {
        let mem = memory();
        let size = 8;
        let mut q = device(&mem, size, event_idx, false);
        let mut drv = Driver::new(&mem, size);
        if asked {
            assert!(!q.enable_notification(&mem).unwrap());
        }
        let mut id = 0u16;
        for _ in 0..size {
            assert!(drv.add(&[(buffer(u64::from(id)), 64, true)], id));
            id += 1;
        }
        let mut kicks = u32::from(linux_kicks(&drv, size));
        for _ in 0..20 * u32::from(size) {
            let h = q.pop(&mem).unwrap().expect("the ring is kept full");
            q.add_used(&mem, &h, 64).unwrap();
            q.publish_used(&mem).unwrap();
            assert!(drv.used().is_some());
            assert!(drv.add(&[(buffer(u64::from(id % 64)), 64, true)], id));
            id = id.wrapping_add(1);
            kicks += u32::from(linux_kicks(&drv, 1));
        }
        assert_eq!(kicks, 1, "event_idx {event_idx}, asked {asked}");
        // Run dry: the device asks again, and the next buffer notifies.
        while let Some(h) = q.pop(&mem).unwrap() {
            q.add_used(&mem, &h, 64).unwrap();
        }
        q.publish_used(&mem).unwrap();
        while drv.used().is_some() {}
        assert!(!q.enable_notification(&mem).unwrap());
        assert!(drv.add(&[(buffer(0), 64, true)], id));
        assert!(linux_kicks(&drv, 1), "event_idx {event_idx}");
    }
}

#[test]
fn rewound_chains_are_popped_again() {
    let mem = memory();
    let mut q = device(&mem, 4, false, false);
    let mut drv = Driver::new(&mem, 4);
    drv.add(&[(buffer(0), 8, true), (buffer(1), 8, true)], 0);
    drv.add(&[(buffer(2), 8, true)], 1);
    let a = q.pop(&mem).unwrap().unwrap();
    let b = q.pop(&mem).unwrap().unwrap();
    q.rewind_to(a.start);
    assert_eq!(q.pop(&mem).unwrap(), Some(a));
    assert_eq!(q.pop(&mem).unwrap(), Some(b));
}

/// Reference: the used slots in `[old, new)` walked one by one.
fn crosses(event: u32, new: u32, old: u32, m: u32) -> bool {
    let mut k = old;
    while k != new {
        if k == event {
            return true;
        }
        k = (k + 1) % m;
    }
    false
}

proptest::proptest! {
    #[test]
    fn packed_need_event_is_crossing(size in 1u16..=64, event in 0u32..128, old in 0u32..128, step in 0u32..128) {
        let m = 2 * u32::from(size);
        let (event, old) = (event % m, old % m);
        let step = step % m;
        let new = (old + step) % m;
        proptest::prop_assert_eq!(packed_need_event(event, new, old, size), crosses(event, new, old, m));
    }

    /// A driver and the device exchange random chains, used out of order in
    /// random batches: every buffer comes back exactly once with its id and
    /// length, for any size (not only powers of two) over several laps.
    #[test]
    fn random_traffic_loses_and_duplicates_nothing(
        size in 1u16..=9,
        ops in proptest::collection::vec((1u16..=4, 0u8..4, proptest::bool::ANY), 1..200),
    ) {
        let mem = memory();
        let mut q = device(&mem, size, true, false);
        let mut drv = Driver::new(&mem, size);
        let mut in_flight: Vec<PackedHead> = Vec::new();
        let mut outstanding: HashMap<u16, u32> = HashMap::new();
        let mut next_id = 0u16;
        let mut returned = 0usize;
        let mut added = 0usize;
        for (len, completions, reverse) in ops {
            let n = len.min(size);
            if !outstanding.contains_key(&next_id) && drv.free >= n {
                let elements: Vec<Element> = (0..n).map(|k| (buffer(u64::from(k)), 64, true)).collect();
                proptest::prop_assert!(drv.add(&elements, next_id));
                outstanding.insert(next_id, u32::from(next_id) + 1);
                added += 1;
                next_id = (next_id + 1) % (2 * size);
            }
            while let Some(head) = q.pop(&mem).unwrap() {
                proptest::prop_assert_eq!(walk(&q, &mem, &head).unwrap().len(), usize::from(head.slots));
                in_flight.push(head);
            }
            if reverse {
                in_flight.reverse();
            }
            for _ in 0..completions {
                if in_flight.is_empty() {
                    break;
                }
                let head = in_flight.remove(0);
                q.add_used(&mem, &head, u32::from(head.id) + 1).unwrap();
            }
            q.publish_used(&mem).unwrap();
            while let Some((id, len)) = drv.used() {
                proptest::prop_assert_eq!(outstanding.remove(&id), Some(len), "id {} back once with its length", id);
                returned += 1;
            }
        }
        for head in in_flight.drain(..) {
            q.add_used(&mem, &head, u32::from(head.id) + 1).unwrap();
        }
        q.publish_used(&mem).unwrap();
        while let Some((id, len)) = drv.used() {
            proptest::prop_assert_eq!(outstanding.remove(&id), Some(len));
            returned += 1;
        }
        proptest::prop_assert!(outstanding.is_empty());
        proptest::prop_assert_eq!(returned, added);
    }
}
