//! ns per frame device -> switch -> device for 64- and 1500-byte frames at
//! batch 1 and 32: chroma's queue + switch, the same work with rust-vmm's
//! `virtio-queue` on the device side, and a plain copy of the payload, all
//! in one run, each path on its own pair of VMs of the same layout, the
//! paths taking turns (see `measure`), printed with ratios. The switch's
//! ports carry their VMs' addresses, as the hypervisor sets them up, so
//! the frame goes to a known port (in one copy).
//!
//! Both device sides move a frame in one copy, from the sender's buffers
//! into the receiver's. Last, chroma's path on packed rings (its driver
//! reaps and re-adds each buffer, which the split driver here does not),
//! and `virtio-queue` with the frame through a host buffer (two copies:
//! this bench's `virtio-queue` column before it copied once).
//!
//! The copy column is the floor for the same memory traffic: each frame
//! with its virtio-net header, from its own TX buffer to its own RX
//! buffer (slot by slot through the 256 of each VM, as the rings move
//! them), not one hot buffer again and again. It has no rings and no
//! driver; the other columns include the driver's posting (printed alone
//! as "driver side alone"), the same in each.
//!
//! Run: `cargo bench -p chroma-virtio --bench net`
//! (`CHROMA_BENCH_ONLY=1500/32` for one row, e.g. under a profiler;
//! `CHROMA_BENCH_SOLO=0` for the chroma column alone, 4 for packed;
//! with `CHROMA_BENCH_ROUNDS=n` too, that path runs exactly n rounds,
//! untimed, for an instruction count: run it under `valgrind
//! --tool=callgrind` or `perf stat` with two values of n and divide the
//! difference by the extra frames).
#![allow(clippy::cast_possible_truncation)]
#![allow(unsafe_code, missing_docs)]

#[path = "../tests/support/arena.rs"]
mod arena;

use std::hint::black_box;
use std::time::{Duration, Instant};

use arena::RawMemory;
use chroma_virtio::mock::MockQueue;
use chroma_virtio::net::{net_feature, new_net_device, NetPort, VirtioNet, NET_FEATURES};
use chroma_virtio::switch::{PortConfig, Switch, SwitchConfig};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address as _, Bytes, GuestAddress, GuestMemoryBackend as _, GuestMemoryMmap};

const SIZE: u16 = 256;
const RAM: usize = 4 << 20;
const BASES: [u64; 2] = [0x4000_0000, 0x8000_0000];
const MAC: [[u8; 6]; 2] = [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]];
const RX_LEN: u32 = 2048;
const BUF: u64 = 0x10_0000; // buffers start 1 MiB into each VM

/// Both VMs' RAM: vm-memory mappings, with chroma views of the same bytes.
struct Vms {
    vm: [GuestMemoryMmap; 2],
    raw: [RawMemory; 2],
}

fn vms() -> Vms {
    let vm = BASES.map(|b| GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(b), RAM)]).unwrap());
    let raw = [0, 1].map(|i| {
        let ptr = vm[i].get_host_address(GuestAddress(BASES[i])).unwrap();
        // SAFETY: the mapping lives in `vm`, alongside, for the whole run.
        unsafe { RawMemory::from_raw(ptr, RAM, BASES[i]) }
    });
    Vms { vm, raw }
}

/// The driver side: TX ring on VM 0 with `SIZE` prebuilt one-buffer chains
/// (header + frame), RX ring on VM 1 with `SIZE` 2048-byte buffers.
struct Rings<'m> {
    tx: MockQueue<'m, RawMemory>,
    rx: MockQueue<'m, RawMemory>,
}

fn rings<'m>(v: &'m Vms, frame_len: usize) -> Rings<'m> {
    let mut tx = MockQueue::new(&v.raw[0], BASES[0], SIZE);
    let mut rx = MockQueue::new(&v.raw[1], BASES[1], SIZE);
    let mut frame = vec![0u8; 12 + frame_len];
    frame[12..18].copy_from_slice(&MAC[1]);
    frame[18..24].copy_from_slice(&MAC[0]);
    for i in 0..SIZE {
        let addr = BASES[0] + BUF + u64::from(i) * 2048;
        v.vm[0].write_slice(&frame, GuestAddress(addr)).unwrap();
        tx.write_descriptor(
            i,
            chroma_virtio::mock::RawDescriptor {
                addr,
                len: frame.len() as u32,
                flags: 0,
                next: 0,
            },
        );
        let raddr = BASES[1] + BUF + u64::from(i) * u64::from(RX_LEN);
        rx.write_descriptor(
            i,
            chroma_virtio::mock::RawDescriptor {
                addr: raddr,
                len: RX_LEN,
                flags: 2,
                next: 0,
            },
        );
    }
    // Keep the RX ring full.
    for i in 0..SIZE {
        rx.push_avail(i);
    }
    let _ = &mut tx;
    Rings { tx, rx }
}

impl Rings<'_> {
    /// The driver posts `batch` frames and re-posts `batch` RX buffers
    /// (the ones the device used in the previous round).
    fn post(&mut self, batch: u16, round: u64) {
        let start = (round as u16).wrapping_mul(batch);
        for k in 0..batch {
            self.tx.push_avail(start.wrapping_add(k) % SIZE);
        }
    }
    fn repost_rx(&mut self, batch: u16, round: u64) {
        let start = (round as u16).wrapping_mul(batch);
        for k in 0..batch {
            self.rx.push_avail(start.wrapping_add(k) % SIZE);
        }
    }
}

/// Brings a chroma device up on `mem` at the same ring addresses as `q`.
fn chroma_device(
    mem: &RawMemory,
    tx: Option<&MockQueue<RawMemory>>,
    rx: Option<&MockQueue<RawMemory>>,
) -> VirtioNet {
    use chroma_virtio::mmio::{feature, reg, status};
    let packed = tx.or(rx).is_some_and(|q| q.is_packed());
    let features =
        NET_FEATURES & !net_feature::MRG_RXBUF | if packed { feature::RING_PACKED } else { 0 };
    let mut dev = new_net_device(MAC[0], features, SIZE);
    let w = |dev: &mut VirtioNet, o, v| dev.mmio_write(o, 4, v, mem).unwrap();
    w(&mut dev, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    w(&mut dev, reg::DRIVER_FEATURES_SEL, 0);
    w(&mut dev, reg::DRIVER_FEATURES, features as u32);
    w(&mut dev, reg::DRIVER_FEATURES_SEL, 1);
    w(&mut dev, reg::DRIVER_FEATURES, (features >> 32) as u32);
    w(
        &mut dev,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    for (index, q) in [(0u32, rx), (1u32, tx)] {
        let Some(q) = q else { continue };
        let l = q.layout;
        w(&mut dev, reg::QUEUE_SEL, index);
        w(&mut dev, reg::QUEUE_NUM, u32::from(l.size));
        w(&mut dev, reg::QUEUE_DESC_LOW, l.desc.raw() as u32);
        w(&mut dev, reg::QUEUE_DESC_HIGH, (l.desc.raw() >> 32) as u32);
        w(&mut dev, reg::QUEUE_DRIVER_LOW, l.avail.raw() as u32);
        w(
            &mut dev,
            reg::QUEUE_DRIVER_HIGH,
            (l.avail.raw() >> 32) as u32,
        );
        w(&mut dev, reg::QUEUE_DEVICE_LOW, l.used.raw() as u32);
        w(
            &mut dev,
            reg::QUEUE_DEVICE_HIGH,
            (l.used.raw() >> 32) as u32,
        );
        w(&mut dev, reg::QUEUE_READY, 1);
    }
    w(
        &mut dev,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
    );
    dev
}

fn vq(q: &MockQueue<RawMemory>) -> Queue {
    let mut queue = Queue::new(SIZE).unwrap();
    let l = q.layout;
    queue.set_size(l.size);
    queue.set_desc_table_address(Some(l.desc.raw() as u32), Some((l.desc.raw() >> 32) as u32));
    queue.set_avail_ring_address(
        Some(l.avail.raw() as u32),
        Some((l.avail.raw() >> 32) as u32),
    );
    queue.set_used_ring_address(Some(l.used.raw() as u32), Some((l.used.raw() >> 32) as u32));
    queue.set_event_idx(true);
    queue.set_ready(true);
    queue
}

/// One measured path: a round of work (round number in), set up already.
type Round<'a> = Box<dyn FnMut(u64) + 'a>;

/// Runs each path's round repeatedly, the paths taking turns in slices of
/// about `budget / 5 / paths` each, 5 turns after a warm-up; each path's
/// best slice, in ns per frame. Taking turns keeps a load on the machine
/// from favouring whichever path happened to run while it was quiet.
fn measure(frames_per_round: u64, budget: Duration, paths: &mut [Round<'_>]) -> Vec<f64> {
    let mut r = 0u64;
    let slice = budget / 5 / paths.len() as u32;
    for round in paths.iter_mut() {
        let start = Instant::now();
        while start.elapsed() < slice {
            round(r);
            r += 1;
        }
    }
    let mut best = vec![f64::MAX; paths.len()];
    for _ in 0..5 {
        for (round, best) in paths.iter_mut().zip(best.iter_mut()) {
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < slice {
                for _ in 0..64 {
                    round(r);
                    r += 1;
                    n += 1;
                }
            }
            let ns = start.elapsed().as_nanos() as f64 / (n * frames_per_round) as f64;
            *best = best.min(ns);
        }
    }
    best
}

/// The chroma path on packed rings (VIRTIO_F_RING_PACKED): the same frames
/// and buffers, the driver a packed one, which must reap used buffers
/// before it can make their IDs available again (a split driver in this
/// bench re-posts its fixed heads without reaping), so its side costs more.
fn chroma_packed_path<'a>(
    v: &'a Vms,
    frame_len: usize,
    batch: u16,
) -> (Round<'a>, Box<dyn Fn() + 'a>) {
    let tx_len = (12 + frame_len) as u32;
    let mut frame = vec![0u8; 12 + frame_len];
    frame[12..18].copy_from_slice(&MAC[1]);
    frame[18..24].copy_from_slice(&MAC[0]);
    for i in 0..u64::from(SIZE) {
        let addr = BASES[0] + BUF + i * 2048;
        v.vm[0].write_slice(&frame, GuestAddress(addr)).unwrap();
    }
    let mut tx = MockQueue::new_packed(&v.raw[0], BASES[0], SIZE);
    let mut rx = MockQueue::new_packed(&v.raw[1], BASES[1], SIZE);
    let rx_addr = |id: u16| BASES[1] + BUF + u64::from(id) * u64::from(RX_LEN);
    while let Some(id) = rx.next_free() {
        rx.add_chain(&[(rx_addr(id), RX_LEN, true)]).unwrap();
    }
    let devs = std::rc::Rc::new(std::cell::RefCell::new([
        chroma_device(&v.raw[0], Some(&tx), None),
        chroma_device(&v.raw[1], None, Some(&rx)),
    ]));
    let switch = std::rc::Rc::new(std::cell::RefCell::new(Switch::new(SwitchConfig {
        port_count: 2,
        batch_limit: 32,
        ..SwitchConfig::default()
    })));
    for (port, mac) in MAC.iter().enumerate() {
        switch
            .borrow_mut()
            .set_port(port, PortConfig::vm(*mac, false));
    }
    let (d, sw) = (devs.clone(), switch.clone());
    let round = Box::new(move |_round: u64| {
        while tx.pop_used().is_some() {}
        for _ in 0..batch {
            let Some(id) = tx.next_free() else { break };
            tx.add_chain(&[(BASES[0] + BUF + u64::from(id) * 2048, tx_len, false)]);
        }
        let mut devs = d.borrow_mut();
        let [a, b] = &mut *devs;
        let mut ports = [NetPort::new(a, &v.raw[0]), NetPort::new(b, &v.raw[1])];
        black_box(sw.borrow_mut().run(&mut ports, 0));
        while rx.pop_used().is_some() {}
        while let Some(id) = rx.next_free() {
            rx.add_chain(&[(rx_addr(id), RX_LEN, true)]);
        }
    });
    let check = Box::new(move || {
        let delivered = devs.borrow()[1].queue(0).unwrap().next_used().0;
        let switch = switch.borrow();
        assert!(
            delivered > 0
                && switch.counters(1).rx_errors == 0
                && switch.counters(1).rx_dropped == 0,
            "chroma packed path delivered nothing, or with errors"
        );
        assert_eq!(
            switch.counters(0).tx_packets,
            switch.counters(1).rx_packets,
            "chroma packed path lost frames"
        );
    });
    (round, check)
}

/// The chroma path: its round, and a check that it forwarded every frame.
fn chroma_path<'a>(v: &'a Vms, frame_len: usize, batch: u16) -> (Round<'a>, Box<dyn Fn() + 'a>) {
    let mut r = rings(v, frame_len);
    let devs = std::rc::Rc::new(std::cell::RefCell::new([
        chroma_device(&v.raw[0], Some(&r.tx), None),
        chroma_device(&v.raw[1], None, Some(&r.rx)),
    ]));
    let switch = std::rc::Rc::new(std::cell::RefCell::new(Switch::new(SwitchConfig {
        port_count: 2,
        batch_limit: 32,
        ..SwitchConfig::default()
    })));
    // Each port gets its VM's address, as the hypervisor configures them:
    // the destination is known.
    switch
        .borrow_mut()
        .set_port(0, PortConfig::vm(MAC[0], false));
    switch
        .borrow_mut()
        .set_port(1, PortConfig::vm(MAC[1], false));
    let before = devs.borrow()[1].queue(0).unwrap().next_used();
    let (d, sw) = (devs.clone(), switch.clone());
    let round = Box::new(move |round: u64| {
        r.post(batch, round);
        let mut devs = d.borrow_mut();
        let [a, b] = &mut *devs;
        let mut ports = [NetPort::new(a, &v.raw[0]), NetPort::new(b, &v.raw[1])];
        black_box(sw.borrow_mut().run(&mut ports, round));
        r.repost_rx(batch, round);
    });
    let check = Box::new(move || {
        let delivered = (devs.borrow()[1].queue(0).unwrap().next_used() - before).0;
        let switch = switch.borrow();
        assert!(
            delivered > 0
                && switch.counters(1).rx_errors == 0
                && switch.counters(1).rx_dropped == 0
        );
        assert_eq!(
            switch.counters(0).tx_packets,
            switch.counters(1).rx_packets,
            "chroma path lost frames"
        );
    });
    (round, check)
}

/// The same work with rust-vmm's `virtio-queue` on the device side: the
/// frame moves in one copy, from the TX buffers straight into the RX
/// buffers (vm-memory `VolatileSlice` to `VolatileSlice`), as chroma's
/// switch moves a held frame; the TX chain is used once the frame is in.
fn vq_path<'a>(v: &'a Vms, frame_len: usize, batch: u16) -> (Round<'a>, Box<dyn Fn() + 'a>) {
    let mut r = rings(v, frame_len);
    let mut txq = vq(&r.tx);
    let mut rxq = vq(&r.rx);
    let (ma, mb) = (&v.vm[0], &v.vm[1]);
    let forwarded = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let f = forwarded.clone();
    let round = Box::new(move |round: u64| {
        r.post(batch, round);
        loop {
            while let Some(chain) = txq.pop_descriptor_chain(ma) {
                let head = chain.head_index();
                // The frame's buffers (as chroma's port records them).
                let mut segments = [(GuestAddress(0), 0usize); 8];
                let (mut count, mut len) = (0usize, 0usize);
                for d in chain {
                    let n = d.len() as usize;
                    if d.is_write_only() || count == segments.len() || len + n > 12 + 1518 {
                        break;
                    }
                    segments[count] = (d.addr(), n);
                    count += 1;
                    len += n;
                }
                if let Some(rx) = rxq.pop_descriptor_chain(mb) {
                    let rhead = rx.head_index();
                    let mut written = 0usize;
                    // Where in `segments` the copy stands.
                    let (mut k, mut offset) = (0usize, 0usize);
                    for d in rx {
                        let mut at = d.addr();
                        let mut room = (d.len() as usize).min(len - written);
                        while room > 0 && k < count {
                            let (src, n) = segments[k];
                            let m = (n - offset).min(room);
                            let from = ma.get_slice(src.unchecked_add(offset as u64), m).unwrap();
                            from.copy_to_volatile_slice(mb.get_slice(at, m).unwrap());
                            at = at.unchecked_add(m as u64);
                            room -= m;
                            written += m;
                            offset += m;
                            if offset == n {
                                (k, offset) = (k + 1, 0);
                            }
                        }
                        if written == len {
                            break;
                        }
                    }
                    rxq.add_used(mb, rhead, written as u32).unwrap();
                    f.set(f.get() + 1);
                }
                txq.add_used(ma, head, 0).unwrap();
            }
            if !txq.enable_notification(ma).unwrap() {
                break;
            }
        }
        black_box(txq.needs_notification(ma).unwrap());
        black_box(rxq.needs_notification(mb).unwrap());
        r.repost_rx(batch, round);
    });
    let check = Box::new(move || {
        assert!(forwarded.get() > 0);
        // The first RX buffer holds the frame, as sent.
        let mut sent = vec![0u8; frame_len];
        let mut got = vec![0u8; frame_len];
        ma.read_slice(&mut sent, GuestAddress(BASES[0] + BUF + 12))
            .unwrap();
        mb.read_slice(&mut got, GuestAddress(BASES[1] + BUF + 12))
            .unwrap();
        assert!(
            sent == got && got[..6] == MAC[1],
            "virtio-queue path garbled a frame"
        );
    });
    (round, check)
}

/// The same work with rust-vmm's `virtio-queue`, the frame through a host
/// buffer: read out of the TX buffers, then written into the RX buffers
/// (two copies). The bench's `virtio-queue` column until it moved frames
/// in one copy as chroma does; printed as "vq via a buffer" for comparison
/// with figures taken before.
fn vq_buffered_path<'a>(v: &'a Vms, frame_len: usize, batch: u16) -> Round<'a> {
    let mut r = rings(v, frame_len);
    let mut txq = vq(&r.tx);
    let mut rxq = vq(&r.rx);
    let (ma, mb) = (&v.vm[0], &v.vm[1]);
    let mut frame = vec![0u8; 12 + 1518];
    Box::new(move |round: u64| {
        r.post(batch, round);
        loop {
            while let Some(chain) = txq.pop_descriptor_chain(ma) {
                let head = chain.head_index();
                let mut len = 0usize;
                for d in chain {
                    let n = d.len() as usize;
                    if d.is_write_only() || len + n > frame.len() {
                        break;
                    }
                    ma.read_slice(&mut frame[len..len + n], d.addr()).unwrap();
                    len += n;
                }
                txq.add_used(ma, head, 0).unwrap();
                if let Some(rx) = rxq.pop_descriptor_chain(mb) {
                    let rhead = rx.head_index();
                    let mut written = 0usize;
                    for d in rx {
                        let n = (d.len() as usize).min(len - written);
                        mb.write_slice(&frame[written..written + n], d.addr())
                            .unwrap();
                        written += n;
                        if written == len {
                            break;
                        }
                    }
                    rxq.add_used(mb, rhead, written as u32).unwrap();
                }
            }
            if !txq.enable_notification(ma).unwrap() {
                break;
            }
        }
        black_box(txq.needs_notification(ma).unwrap());
        black_box(rxq.needs_notification(mb).unwrap());
        r.repost_rx(batch, round);
    })
}

/// The driver side alone: posting and re-posting.
fn driver_only<'a>(v: &'a Vms, frame_len: usize, batch: u16) -> Round<'a> {
    let mut r = rings(v, frame_len);
    Box::new(move |round: u64| {
        r.post(batch, round);
        r.repost_rx(batch, round);
    })
}

/// A plain copy of each frame (with its header) from VM 0 to VM 1.
fn copy_path<'a>(v: &'a Vms, frame_len: usize, batch: u16) -> Round<'a> {
    let src = v.raw[0].host(BASES[0] + BUF);
    let dst = v.raw[1].host(BASES[1] + BUF);
    let len = 12 + frame_len;
    Box::new(move |round: u64| {
        for k in 0..u64::from(batch) {
            let slot = ((round * u64::from(batch) + k) % u64::from(SIZE)) as usize;
            // SAFETY: both slots are inside the mapped RAM (256 x 2048 bytes from 1 MiB) and in different VMs, so they never overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(src.add(slot * 2048), dst.add(slot * 2048), len)
            };
        }
        black_box(dst);
    })
}

fn main() {
    // `cargo test --benches` passes --bench too; keep that run short.
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var_os("CHROMA_BENCH_QUICK").is_some();
    let budget = if quick {
        Duration::from_millis(200)
    } else {
        Duration::from_millis(2400)
    };
    // Each path on its own pair of VMs: they take turns (see `measure`).
    let v = [vms(), vms(), vms(), vms(), vms(), vms()];
    println!("chroma-virtio net benchmark: ns/frame, device(TX, VM0) -> switch -> device(RX, VM1)");
    println!(
        "{:>6} {:>5} {:>10} {:>13} {:>10} {:>14} {:>14}",
        "bytes", "batch", "chroma", "virtio-queue", "copy", "vq/chroma", "chroma/copy"
    );
    // `CHROMA_BENCH_ONLY=1500/32` measures one row (for a profiler).
    let only = std::env::var("CHROMA_BENCH_ONLY")
        .ok()
        .filter(|o| !o.is_empty());
    for frame_len in [64usize, 1500] {
        for batch in [1u16, 32] {
            if only
                .as_ref()
                .is_some_and(|o| *o != format!("{frame_len}/{batch}"))
            {
                continue;
            }
            let (chroma, chroma_check) = chroma_path(&v[0], frame_len, batch);
            let (queue, queue_check) = vq_path(&v[1], frame_len, batch);
            let (packed, packed_check) = chroma_packed_path(&v[4], frame_len, batch);
            let mut paths = [
                chroma,
                queue,
                copy_path(&v[2], frame_len, batch),
                driver_only(&v[3], frame_len, batch),
                packed,
                vq_buffered_path(&v[5], frame_len, batch),
            ];
            // `CHROMA_BENCH_SOLO=0` runs path 0 (chroma) alone, the others
            // not at all (their columns read 0): for a profile of one path.
            let solo = std::env::var("CHROMA_BENCH_SOLO")
                .ok()
                .and_then(|s| s.parse::<usize>().ok());
            // `CHROMA_BENCH_ROUNDS=n` with `CHROMA_BENCH_SOLO=k`: path k
            // runs exactly n rounds, untimed, for an instruction count
            // (`perf stat -e instructions:u`, two values of n, the
            // difference over the extra frames).
            let rounds = std::env::var("CHROMA_BENCH_ROUNDS")
                .ok()
                .and_then(|s| s.parse::<u64>().ok());
            let ns = match (solo, rounds) {
                (Some(k), Some(n)) if k < paths.len() => {
                    for r in 0..n {
                        paths[k](r);
                    }
                    vec![0.0; paths.len()]
                }
                (Some(k), None) if k < paths.len() => {
                    let mut ns = vec![0.0; paths.len()];
                    ns[k] = measure(u64::from(batch), budget, &mut paths[k..=k])[0];
                    ns
                }
                _ => measure(u64::from(batch), budget, &mut paths),
            };
            drop(paths);
            let ran = |k: usize| solo.is_none_or(|s| s == k);
            if ran(0) {
                chroma_check();
            }
            if ran(1) {
                queue_check();
            }
            if ran(4) {
                packed_check();
            }
            let (c, q, p, d, k, b) = (ns[0], ns[1], ns[2], ns[3], ns[4], ns[5]);
            println!("{frame_len:>6} {batch:>5} {c:>10.1} {q:>13.1} {p:>10.1} {:>13.2}x {:>13.2}x  (driver side alone: {d:.1}; chroma on packed rings: {k:.1}; vq via a buffer: {b:.1})", q / c, c / p);
        }
    }
}
