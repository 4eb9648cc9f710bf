//! Fuzz entry point for the packed queue (feature `test-utils`): arbitrary
//! bytes drive a hostile driver that writes anything anywhere in its RAM
//! while the device pops, walks, uses, publishes and toggles notifications.
//!
//! Invariants checked on every step, whatever the driver does: no panic;
//! the device writes only the descriptor ring and its own event suppression
//! structure (never a buffer, never the driver's structure); a chain it
//! returns spans 1 to `size` slots and its walk yields at most the chain's
//! slots (or table entries) with a total length below 2^32; positions stay
//! inside the ring; after the first error the queue is not used again (the
//! caller would reset the device).

// Test helpers: values are small by construction; truncating casts keep them short.
#![allow(clippy::cast_possible_truncation)]

use alloc::vec::Vec;
use core::cell::RefCell;
use core::sync::atomic::Ordering;

use chroma_mem::vecmem::VecMemory;
use chroma_mem::{GuestMemory, GuestPhysAddr, MemError};

use super::{
    PackedHead, PackedQueue, RingPosition, EVENT_SUPPRESSION_BYTES, VIRTQ_DESC_F_AVAIL,
    VIRTQ_DESC_F_USED,
};
use crate::queue::{QueueLayout, DESCRIPTOR_SIZE};
use crate::VirtioError;

const BASE: u64 = 0x4000_0000;
const RAM: usize = 64 * 1024;
const DESC: u64 = BASE;
const DRIVER_AREA: u64 = BASE + 0x400;
const DEVICE_AREA: u64 = BASE + 0x404;

/// Guest RAM that records the ranges the device writes.
struct Recording {
    mem: VecMemory,
    writes: RefCell<Vec<(u64, u64)>>,
}

impl GuestMemory for Recording {
    fn check_range(&self, gpa: GuestPhysAddr, len: u64) -> Result<(), MemError> {
        self.mem.check_range(gpa, len)
    }
    fn read(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        self.mem.read(gpa, buf)
    }
    fn write(&self, gpa: GuestPhysAddr, data: &[u8]) -> Result<(), MemError> {
        self.writes
            .borrow_mut()
            .push((gpa.raw(), data.len() as u64));
        self.mem.write(gpa, data)
    }
    fn load_u16(&self, gpa: GuestPhysAddr, order: Ordering) -> Result<u16, MemError> {
        self.mem.load_u16(gpa, order)
    }
    fn store_u16(&self, gpa: GuestPhysAddr, value: u16, order: Ordering) -> Result<(), MemError> {
        self.writes.borrow_mut().push((gpa.raw(), 2));
        self.mem.store_u16(gpa, value, order)
    }
    fn fence(&self, order: Ordering) {
        self.mem.fence(order);
    }
}

/// A byte source that yields zeros once the input is spent.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
}

fn check_position(p: RingPosition, size: u16) {
    assert!(p.index < size, "position {p:?} outside a ring of {size}");
}

/// Runs one hostile session and returns how many chains the device
/// walked and used. Panics when an invariant breaks.
pub fn fuzz_packed_queue(data: &[u8]) -> usize {
    let mut input = Bytes(data);
    let config = input.u8();
    let size = u16::from(config & 15) + 1;
    let event_idx = config & 16 != 0;
    let indirect = config & 32 != 0;
    let mem = Recording {
        mem: VecMemory::new(BASE, RAM),
        writes: RefCell::new(Vec::new()),
    };
    let layout = QueueLayout {
        size,
        desc: GuestPhysAddr::new(DESC),
        avail: GuestPhysAddr::new(DRIVER_AREA),
        used: GuestPhysAddr::new(DEVICE_AREA),
    };
    let mut q = PackedQueue::new();
    let activated = q.activate(layout, 16, event_idx, indirect, &mem);
    assert!(activated.is_ok(), "a valid layout was refused");
    let ring_end = DESC + DESCRIPTOR_SIZE * u64::from(size);
    let mut in_flight: Vec<PackedHead> = Vec::new();
    // Chains popped since the last add_used (the only ones rewind may return).
    // (where they start, how many heads were in flight before them).
    let mut rewindable: Option<(RingPosition, usize)> = None;
    let mut steps = 0;
    let mut used = 0;
    // The slot a well-behaved driver would fill next.
    let mut driver = RingPosition::START;
    while !input.0.is_empty() && steps < 256 {
        steps += 1;
        let op = input.u8();
        let result: Result<(), VirtioError> = match op % 8 {
            // The driver writes what it likes, mostly into the ring.
            0 => {
                let offset = if op & 0x80 != 0 {
                    u64::from(input.u16()) % RAM as u64
                } else {
                    u64::from(input.u16()) % (ring_end - DESC + 8)
                };
                let len = usize::from(input.u8() % 16) + 1;
                let bytes: Vec<u8> = (0..len).map(|_| input.u8()).collect();
                let _ = mem.mem.write(GuestPhysAddr::new(BASE + offset), &bytes);
                Ok(())
            }
            // Or makes the next slot available as a driver would, with
            // chosen address, length, id and NEXT/WRITE/INDIRECT flags.
            1 => {
                let mut d = [0u8; 16];
                let addr = BASE + u64::from(input.u16()) * 4;
                d[..8].copy_from_slice(&addr.to_le_bytes());
                d[8..12].copy_from_slice(&u32::from(input.u16()).to_le_bytes());
                d[12..14].copy_from_slice(&u16::from(input.u8()).to_le_bytes());
                let lap = if driver.wrap {
                    VIRTQ_DESC_F_AVAIL
                } else {
                    VIRTQ_DESC_F_USED
                };
                let flags = u16::from(input.u8() & 7) | lap;
                d[14..].copy_from_slice(&flags.to_le_bytes());
                let at = DESC + DESCRIPTOR_SIZE * u64::from(driver.index);
                let _ = mem.mem.write(GuestPhysAddr::new(at), &d);
                driver = driver.advance(1, size);
                Ok(())
            }
            2 => (|| {
                let before = q.next_avail();
                if let Some(head) = q.pop(&mem)? {
                    assert!((1..=size).contains(&head.slots), "{head:?}");
                    assert_eq!(head.start, before);
                    let mut chain = q.chain(&head);
                    let mut count = 0u32;
                    let mut total = 0u64;
                    while let Some(d) = chain.next_descriptor(&mem)? {
                        count += 1;
                        total += u64::from(d.len);
                        assert!(count <= u32::from(size), "walk longer than the ring allows");
                    }
                    assert!(total <= u64::from(u32::MAX));
                    rewindable.get_or_insert((head.start, in_flight.len()));
                    in_flight.push(head);
                }
                Ok(())
            })(),
            3 => {
                if in_flight.is_empty() {
                    Ok(())
                } else {
                    let k = usize::from(input.u8()) % in_flight.len();
                    let head = in_flight.swap_remove(k);
                    rewindable = None;
                    used += 1;
                    q.add_used(&mem, &head, input.u32())
                }
            }
            4 => q.publish_used(&mem).map(|_| ()),
            5 => q.enable_notification(&mem).map(|_| ()),
            6 => q.suppress_notification(&mem, input.u16()).map(|_| ()),
            _ => {
                if let Some((start, earlier)) = rewindable.take() {
                    in_flight.truncate(earlier);
                    q.rewind_to(start);
                }
                Ok(())
            }
        };
        check_position(q.next_avail(), size);
        check_position(q.next_used(), size);
        for &(at, len) in mem.writes.borrow().iter() {
            let in_ring = at >= DESC && at + len <= ring_end;
            let in_device_area =
                at >= DEVICE_AREA && at + len <= DEVICE_AREA + EVENT_SUPPRESSION_BYTES;
            assert!(
                in_ring || in_device_area,
                "device wrote {len} bytes at {at:#x}"
            );
        }
        mem.writes.borrow_mut().clear();
        if result.is_err() {
            // Fatal for the queue: the device would need a reset.
            return used;
        }
    }
    used
}

#[cfg(test)]
mod tests {
    use super::fuzz_packed_queue;

    /// A deterministic long run, as for the split queue's harness.
    #[test]
    fn fuzz_packed_queue_deterministic_run() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        };
        let mut used = 0;
        for _ in 0..3000 {
            let data: Vec<u8> = (0..600).map(|_| next()).collect();
            used += fuzz_packed_queue(&data);
        }
        // Random bytes make chains available often enough to reach the use path.
        assert!(
            used > 1000,
            "only {used} chains used: the harness exercises little"
        );
    }
}
