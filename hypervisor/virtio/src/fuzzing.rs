//! Fuzz entry points (feature `test-utils`), shared by the `cargo fuzz`
//! targets in `hypervisor/fuzz/` and by a deterministic long run under `cargo test`.
//!
//! Each takes arbitrary bytes as a hostile guest's doing and checks the
//! containment invariants that must hold whatever it does: no panic, and a
//! healthy neighbour port keeps forwarding.

// Test helpers: values are small by construction; truncating casts keep them short.
#![allow(clippy::cast_possible_truncation)]

use alloc::vec;
use alloc::vec::Vec;

use chroma_mem::vecmem::VecMemory;
use chroma_mem::{GuestMemory, GuestPhysAddr};

use crate::mmio::{feature, reg};
use crate::mock::{MockNetDriver, RingFormat};
use crate::net::{new_net_device, poll_tx, NetPort, VirtioNet, NET_FEATURES};
use crate::switch::{PortConfig, Switch, SwitchConfig};

const HOSTILE_BASE: u64 = 0x4000_0000;
const HEALTHY_BASE: u64 = 0x8000_0000;
const RAM: usize = 64 * 1024;
const SIZE: u16 = 8;
const MAC: [[u8; 6]; 2] = [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]];

fn run(devs: &mut [VirtioNet; 2], mems: [&VecMemory; 2], switch: &mut Switch, now: u64) {
    let [a, b] = devs;
    let mut ports = [NetPort::new(a, mems[0]), NetPort::new(b, mems[1])];
    // The run budget bounds each call; a few calls drain any backlog.
    for _ in 0..4 {
        if !switch.run(&mut ports, now).more_work {
            break;
        }
    }
}

/// The healthy port sends a frame to itself through a broadcast and the
/// switch: checks the switch and its queues still work after the hostile
/// guest's turn.
fn healthy_still_works(
    healthy: &mut MockNetDriver<'_, VecMemory>,
    devs: &mut [VirtioNet; 2],
    mems: [&VecMemory; 2],
    switch: &mut Switch,
    now: u64,
) {
    while healthy.recv().is_some() {}
    let before = switch.counters(1).tx_packets;
    let mut frame = vec![0x5a; 80];
    frame[..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&MAC[1]);
    assert!(healthy.send(&frame), "healthy TX ring full");
    run(devs, mems, switch, now);
    assert_eq!(
        switch.counters(1).tx_packets,
        before + 1,
        "healthy port stopped forwarding"
    );
    assert!(devs[1].is_live(), "healthy device broken by its neighbour");
}

/// Queue fuzzing: a live device whose ring memory (descriptor table, avail
/// ring, buffers) is overwritten by `data`, then driven by the switch.
pub fn fuzz_queue(data: &[u8]) {
    let _ = fuzz_net(data, RingFormat::Split);
}

/// [`fuzz_queue`] on packed rings (both devices negotiate
/// VIRTIO_F_RING_PACKED): the bytes land on the hostile driver's
/// descriptor ring, its event suppression structures and its buffers
/// while the device polls TX (deferred mode too), pushes RX and flushes.
pub fn fuzz_packed_net(data: &[u8]) -> NetFuzzReport {
    fuzz_net(data, RingFormat::Packed)
}

/// What the hostile device did in one [`fuzz_packed_net`] run, so a long
/// run can show the fuzzing reaches the data path and the error paths.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetFuzzReport {
    /// TX chains the hostile device took.
    pub chains_taken: u64,
    /// Whether it ended in DEVICE_NEEDS_RESET.
    pub needs_reset: bool,
}

/// The whole net device under a hostile driver on ring `format`. The
/// first byte selects features (INDIRECT_DESC, EVENT_IDX, MRG_RXBUF off),
/// deferred TX polling and port security; the rest is written over the
/// hostile VM's rings and buffers in chunks, a switch run after each.
fn fuzz_net(data: &[u8], format: RingFormat) -> NetFuzzReport {
    let Some((&selector, rest)) = data.split_first() else {
        return NetFuzzReport::default();
    };
    let mems = [
        VecMemory::new(HOSTILE_BASE, RAM),
        VecMemory::new(HEALTHY_BASE, RAM),
    ];
    let features = NET_FEATURES
        & !(u64::from(selector & 0x0f) << 28 & (3 << 28))
        & !(u64::from(selector >> 7) << 15);
    let mut devs = [
        new_net_device(MAC[0], features | feature::RING_PACKED, 256),
        new_net_device(MAC[1], NET_FEATURES | feature::RING_PACKED, 256),
    ];
    let [d0, d1] = &mut devs;
    d0.device.defer_tx = selector & 0x20 != 0;
    let Ok(mut hostile) =
        MockNetDriver::init_with(d0, &mems[0], HOSTILE_BASE, SIZE, 256, u64::MAX, format)
    else {
        return NetFuzzReport::default();
    };
    let Ok(mut healthy) =
        MockNetDriver::init_with(d1, &mems[1], HEALTHY_BASE, SIZE, 2048, u64::MAX, format)
    else {
        return NetFuzzReport::default();
    };
    hostile.fill_rx();
    healthy.fill_rx();
    let mut switch = Switch::new(SwitchConfig {
        port_count: 2,
        egress_capacity: 4,
        run_budget: 64,
        ..SwitchConfig::default()
    });
    // Port security on both ports, lifted for the hostile one when the
    // selector says so (then its frames reach forwarding whatever their
    // source address).
    switch.set_port(0, PortConfig::vm(MAC[0], selector & 0x40 != 0));
    switch.set_port(1, PortConfig::vm(MAC[1], false));
    // The fuzz bytes land on both rings and the first buffers, in chunks
    // separated by switch runs so state changes mid-stream too.
    let span = hostile.end() - HOSTILE_BASE;
    // Packed rings are small (16 bytes a slot and two 4-byte structures):
    // half the chunks start at a 4-byte step inside them, so flags and
    // event structures are hit often.
    let rings = hostile.tx.end() - HOSTILE_BASE;
    let packed = format == RingFormat::Packed;
    let mut now = 0;
    for chunk in rest.chunks(512) {
        now += 1;
        let offset = if packed && chunk[0] & 0x80 == 0 {
            u64::from(chunk[0]) * 4 % rings
        } else {
            u64::from(chunk[0]) * 64 % span
        };
        let _ = mems[0].write(GuestPhysAddr::new(HOSTILE_BASE + offset), &chunk[1..]);
        // The owner's poll of a deferring device, as on a VM exit.
        let _ = poll_tx(&mut devs[0], &mems[0]);
        run(&mut devs, [&mems[0], &mems[1]], &mut switch, now);
    }
    let report = NetFuzzReport {
        chains_taken: devs[0].device.tx_chains,
        needs_reset: devs[0].status() & crate::mmio::status::DEVICE_NEEDS_RESET != 0,
    };
    healthy_still_works(
        &mut healthy,
        &mut devs,
        [&mems[0], &mems[1]],
        &mut switch,
        now + 1,
    );
    report
}

/// Transport fuzzing: `data` is a stream of MMIO accesses (kind, offset,
/// width, value) on a device, with switch runs in between.
pub fn fuzz_transport(data: &[u8]) {
    let mems = [
        VecMemory::new(HOSTILE_BASE, RAM),
        VecMemory::new(HEALTHY_BASE, RAM),
    ];
    // The hostile device offers packed rings too: a driver feature write
    // with bit 34 makes QueueReady check (and the switch run) packed ones.
    let mut devs = [
        new_net_device(MAC[0], NET_FEATURES | feature::RING_PACKED, 256),
        new_net_device(MAC[1], NET_FEATURES, 256),
    ];
    let [d0, d1] = &mut devs;
    // Start from a working device half the time, from reset otherwise.
    if data.first().is_some_and(|b| b & 1 == 1) {
        if let Ok(mut d) = MockNetDriver::init(d0, &mems[0], HOSTILE_BASE, SIZE, 2048, u64::MAX) {
            d.fill_rx();
        }
    }
    let Ok(mut healthy) = MockNetDriver::init(d1, &mems[1], HEALTHY_BASE, SIZE, 2048, u64::MAX)
    else {
        return;
    };
    healthy.fill_rx();
    let mut switch = Switch::new(SwitchConfig {
        port_count: 2,
        egress_capacity: 4,
        run_budget: 64,
        ..SwitchConfig::default()
    });
    // Ports start locked (`Switch::new`): each gets its own address.
    switch.set_port(0, PortConfig::vm(MAC[0], false));
    switch.set_port(1, PortConfig::vm(MAC[1], false));
    let mut now = 0;
    let ops: Vec<&[u8]> = data.get(1..).unwrap_or_default().chunks_exact(7).collect();
    for op in ops {
        let kind = op[0];
        // Offsets mostly on registers, sometimes anywhere in (and past) the window.
        let offset = if kind & 0x80 != 0 {
            u64::from(u16::from_le_bytes([op[1], op[2]]))
        } else {
            u64::from(op[1] & 0x3f) * 4
        };
        let width = [1u8, 2, 4, 8, 3, 4, 4, 4][usize::from(op[2] & 7)];
        let mut value = u32::from_le_bytes([op[3], op[4], op[5], op[6]]);
        if kind & 0x40 != 0
            && (offset == reg::QUEUE_DESC_LOW
                || offset == reg::QUEUE_DRIVER_LOW
                || offset == reg::QUEUE_DEVICE_LOW)
        {
            // Aim ring addresses into RAM so QueueReady can succeed.
            value = (HOSTILE_BASE as u32).wrapping_add(value % RAM as u32);
        }
        if kind & 1 == 0 {
            let _ = devs[0].mmio_read(offset, width);
        } else {
            let _ = devs[0].mmio_write(offset, width, value, &mems[0]);
        }
        if kind & 0x20 != 0 {
            now += 1;
            run(&mut devs, [&mems[0], &mems[1]], &mut switch, now);
        }
        let _ = devs[0].take_irq_edge();
    }
    healthy_still_works(
        &mut healthy,
        &mut devs,
        [&mems[0], &mems[1]],
        &mut switch,
        now + 1,
    );
}

/// What one [`fuzz_gso`] run did, so a long run can show it reaches both
/// the refusals and the segmentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GsoFuzzReport {
    /// Frames the hostile port sent that were refused.
    pub refused: u64,
    /// GSO frames accepted from it.
    pub accepted: u64,
    /// GSO frames cut into segments for the receiver.
    pub cut: u64,
}

/// GSO fuzzing: the hostile port (port 0) sends TCP GSO frames built from
/// `data` (IPv4/IPv6, options, MSS, flags, payload length, buffers) and
/// then mutated by `data` (any header or frame byte XORed), to a receiver
/// that takes them whole (GUEST_TSO4/6), or cut with partial or complete
/// checksums, by the first byte. Checks: no panic, every frame the
/// receiver gets fits its buffers' promise (an Ethernet frame unless it
/// negotiated GUEST_TSO), and the healthy port keeps forwarding.
pub fn fuzz_gso(data: &[u8]) -> GsoFuzzReport {
    use crate::gso::MAX_GSO_FRAME_LEN;
    use crate::mock::tcp_gso_frame;
    use crate::net::net_feature;
    use crate::port::{NetHeader, MAX_FRAME_LEN, NET_HEADER_LEN};
    let Some((&selector, rest)) = data.split_first() else {
        return GsoFuzzReport::default();
    };
    const RAM_GSO: usize = 1 << 20;
    let mems = [
        VecMemory::new(HOSTILE_BASE, RAM_GSO),
        VecMemory::new(HEALTHY_BASE, RAM_GSO),
    ];
    let receiver_wants = match selector & 3 {
        0 => u64::MAX,
        1 => !net_feature::TSO,
        2 => !(net_feature::TSO | net_feature::GUEST_CSUM),
        _ => !(net_feature::GUEST_ECN | net_feature::GUEST_TSO6),
    };
    let sender_wants = if selector & 4 != 0 {
        !(net_feature::HOST_ECN | net_feature::HOST_TSO6)
    } else {
        u64::MAX
    };
    let mut devs = [
        new_net_device(MAC[0], NET_FEATURES, 256),
        new_net_device(MAC[1], NET_FEATURES, 256),
    ];
    let [d0, d1] = &mut devs;
    let Ok(mut hostile) = MockNetDriver::init(d0, &mems[0], HOSTILE_BASE, SIZE, 2048, sender_wants)
    else {
        return GsoFuzzReport::default();
    };
    let Ok(mut receiver) =
        MockNetDriver::init(d1, &mems[1], HEALTHY_BASE, SIZE, 4096, receiver_wants)
    else {
        return GsoFuzzReport::default();
    };
    hostile.fill_rx();
    receiver.fill_rx();
    let mut switch = Switch::new(SwitchConfig {
        port_count: 2,
        egress_capacity: 8,
        run_budget: 64,
        ..SwitchConfig::default()
    });
    switch.set_port(0, PortConfig::vm(MAC[0], false));
    switch.set_port(1, PortConfig::vm(MAC[1], false));
    let receiver_tso = receiver.features & (net_feature::GUEST_TSO4 | net_feature::GUEST_TSO6) != 0;
    let scratch = HOSTILE_BASE + 0x8_0000;
    let mut now = 0;
    // Each frame: 8 bytes of parameters, a mutation count, then
    // (offset, xor) pairs of 3 bytes.
    let mut input = rest;
    while input.len() >= 9 {
        let (params, tail) = input.split_at(9);
        let [shape, options, mss_lo, mss_hi, len_lo, len_hi, flags, pieces, mutations] =
            [0, 1, 2, 3, 4, 5, 6, 7, 8].map(|i| params[i]);
        let mutation_bytes = usize::from(mutations & 7) * 3;
        let (edits, next) = tail.split_at(mutation_bytes.min(tail.len()));
        input = next;
        let ipv6 = shape & 1 != 0;
        let mss = u16::from_le_bytes([mss_lo, mss_hi]) % 1600;
        let payload_len = usize::from(u16::from_le_bytes([len_lo, len_hi]));
        let payload: Vec<u8> = (0..payload_len).map(|i| (i as u8) ^ shape).collect();
        let (mut header, mut frame) = tcp_gso_frame(
            MAC[1],
            MAC[0],
            ipv6,
            usize::from(options % 11),
            mss,
            0x1000,
            flags,
            &payload,
        );
        let mut header_bytes = header.to_bytes(0);
        for edit in edits.chunks_exact(3) {
            let at = usize::from(u16::from_le_bytes([edit[0], edit[1]]));
            if at < NET_HEADER_LEN {
                header_bytes[at] ^= edit[2];
            } else {
                // Mostly the headers (the first 160 bytes), where the checks are.
                let index = (at - NET_HEADER_LEN) % frame.len().clamp(1, 160);
                if let Some(b) = frame.get_mut(index) {
                    *b ^= edit[2];
                }
            }
        }
        header = NetHeader::from_bytes(&header_bytes);
        if shape & 2 != 0 && frame.len() < MAX_GSO_FRAME_LEN {
            // Longer (or, below, shorter) than the IP header says.
            frame.push(0);
        } else if shape & 4 != 0 {
            frame.truncate(frame.len().saturating_sub(1));
        }
        hostile.send_scattered(&header, &frame, scratch, usize::from(pieces % 40) + 1);
        now += 1;
        run(&mut devs, [&mems[0], &mems[1]], &mut switch, now);
        while let Some((_, got)) = receiver.recv() {
            // A receiver without GUEST_TSO never gets more than an
            // Ethernet frame.
            assert!(
                receiver_tso || got.len() <= MAX_FRAME_LEN,
                "{} bytes to a port without GUEST_TSO",
                got.len()
            );
        }
    }
    let c0 = switch.counters(0);
    let report = GsoFuzzReport {
        refused: c0.tx_errors,
        accepted: c0.tx_gso,
        cut: switch.counters(1).rx_gso_cut,
    };
    // The receiver is the healthy port: it still sends (to itself, a
    // broadcast) and the hostile device was never set to need a reset.
    assert!(devs[0].is_live(), "a GSO frame error is never fatal");
    healthy_still_works(
        &mut receiver,
        &mut devs,
        [&mems[0], &mems[1]],
        &mut switch,
        now + 1,
    );
    report
}
