//! No heap allocation on the hot path: a steady stream through
//! `Switch::run` with `NetPort`s (both directions, batches of 1 and 32,
//! frames waiting in an egress queue, one-copy and flooded frames) makes no
//! allocation after warm-up. A counting global allocator counts what the
//! measuring thread allocates. Negative control: an allocation inside the
//! measured section is caught. Its own test binary: the allocator is global.
#![allow(clippy::cast_possible_truncation)]

#[path = "support/arena.rs"]
mod arena;
#[path = "support/lab.rs"]
mod lab;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use chroma_virtio::mock::RingFormat;
use chroma_virtio::net::NetPort;
use chroma_virtio::switch::SwitchConfig;
use lab::{frame, mac, on_both_rings, Lab};

struct Counting;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    /// This thread's measured allocations (per thread: the split and the
    /// packed run are two tests, run in parallel).
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    if MEASURING.with(Cell::get) {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter and the const-initialised thread-local flag do not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    MEASURING.with(|m| m.set(true));
    f();
    MEASURING.with(|m| m.set(false));
    ALLOCATIONS.with(Cell::get) - before
}

/// One switch run over the lab's two ports, on a fixed array of ports,
/// counting allocations; `extra` runs inside the measured section.
fn run(lab: &mut Lab, extra: impl FnOnce()) -> u64 {
    let mems = lab.mems;
    let (a, b) = lab.devs.split_at_mut(1);
    let mut ports = [
        NetPort::new(&mut a[0], &mems[0]),
        NetPort::new(&mut b[0], &mems[1]),
    ];
    let now = lab.now;
    let switch = &mut lab.switch;
    allocations(|| {
        switch.run(&mut ports, now);
        extra();
    })
}

fn steady_stream_allocates_nothing(format: RingFormat) {
    let mut lab = Lab::on(format, &[256, 16], 2048, SwitchConfig::default());
    let mut frames = 0u64;
    let mut waited = false;
    for round in 0..400u64 {
        lab.now = round;
        let batch = if round % 2 == 0 { 1 } else { 32 };
        for k in 0..batch {
            let len = if k % 2 == 0 { 64 } else { 1500 };
            // A unicast stream both ways, and now and then a broadcast.
            let dst = if k == 3 { [0xff; 6] } else { mac(1) };
            let _ = lab.drivers[0].send(&frame(dst, mac(0), len, k as u32));
            let _ = lab.drivers[1].send(&frame(mac(0), mac(1), len, k as u32));
        }
        let count = run(&mut lab, || {});
        // The first runs may size nothing either, but allow a warm-up.
        if round >= 4 {
            assert_eq!(count, 0, "round {round} allocated");
        }
        waited |= lab.switch.egress_len(1) > 0;
        // VM 1 takes only a few frames a round: the rest waits in its
        // egress queue or its sender's ring.
        for _ in 0..8 {
            if lab.drivers[1].recv().is_some() {
                frames += 1;
            }
        }
        while lab.drivers[0].recv().is_some() {
            frames += 1;
        }
    }
    assert!(waited, "frames waited in an egress queue");
    assert!(frames > 3000, "a steady stream: {frames} frames");
    // Negative control: an allocation in the measured section is counted.
    let count = run(&mut lab, || {
        std::hint::black_box(Vec::<u8>::with_capacity(1));
    });
    assert_eq!(count, 1);
}

on_both_rings!(steady_stream_allocates_nothing,);

/// One switch run over three ports, counting allocations.
fn run3(lab: &mut Lab) -> u64 {
    let mems = lab.mems;
    let [a, b, c] = &mut lab.devs[..] else {
        panic!("three VMs")
    };
    let mut ports = [
        NetPort::new(a, &mems[0]),
        NetPort::new(b, &mems[1]),
        NetPort::new(c, &mems[2]),
    ];
    let now = lab.now;
    let switch = &mut lab.switch;
    allocations(|| {
        switch.run(&mut ports, now);
    })
}

/// A GSO stream (TSO): 60 KiB TCP frames in 18 buffers from VM 0, whole to
/// VM 1 (GUEST_TSO4) and cut into segments for VM 2 (no GUEST_TSO), both
/// with their receivers short of buffers now and then: no allocation.
fn gso_stream_allocates_nothing(format: RingFormat) {
    use chroma_virtio::mock::{tcp_gso_frame, MockNetDriver};
    use chroma_virtio::net::net_feature;
    let mut lab = Lab::on(format, &[256, 256, 256], 2048, SwitchConfig::default());
    // VM 2 again, without TSO.
    let mems = lab.mems;
    let mut d2 = MockNetDriver::init_with(
        &mut lab.devs[2],
        &mems[2],
        lab::base(2),
        256,
        2048,
        !net_feature::TSO,
        format,
    )
    .unwrap();
    d2.fill_rx();
    lab.drivers[2] = d2;
    let payload: Vec<u8> = (0..60_000u32).map(|i| (i * 7) as u8).collect();
    let scratch = lab::base(0) + 0x30_0000;
    let (mut whole, mut cut) = (0u64, 0u64);
    for round in 0..200u64 {
        lab.now = round;
        let dst = if round % 2 == 0 { 1 } else { 2 };
        let (header, frame) = tcp_gso_frame(
            mac(dst),
            mac(0),
            round % 3 == 0,
            3,
            1400,
            round as u32 * 60_000,
            0x18,
            &payload,
        );
        let at = scratch + (round % 8) * 0x1_0000;
        let _ = lab.drivers[0].send_scattered(&header, &frame, at, 18);
        let count = run3(&mut lab);
        if round >= 4 {
            assert_eq!(count, 0, "round {round} allocated");
        }
        // The receivers take frames only every third round.
        if round % 3 == 0 {
            while lab.drivers[1].recv().is_some() {
                whole += 1;
            }
            while lab.drivers[2].recv().is_some() {
                cut += 1;
            }
        }
    }
    assert!(whole > 20, "{whole} whole GSO frames");
    assert!(cut > 20 * 40, "{cut} segments");
    assert!(lab.switch.counters(2).rx_gso_cut > 20);
}

on_both_rings!(gso_stream_allocates_nothing,);
