//! An exhaustive check of the split ring protocol with its cache
//! maintenance: every interleaving, not a random sample.
//!
//! Explicit-state breadth-first search over the operations of five agents:
//!
//! - the guest driver, written here from §2.7's driver side (post a buffer
//!   and decide whether to notify, reap a used buffer, re-enable interrupts
//!   and sleep), as a non-coherent peer: it reads and writes memory
//!   directly, like a DMA master or a guest mapping the rings Non-cacheable;
//! - the device: the real [`SplitQueue`] code through the real
//!   [`MaintainHooks`] (Maintain policy) over a write-back cache (pop and
//!   serve a chain, publish used buffers and decide whether to interrupt,
//!   re-arm notifications and sleep);
//! - the cache: at any time it may evict any line (writing it back if
//!   dirty) or fill any line speculatively;
//! - the notification and the interrupt, delivered at any later time.
//!
//! Each operation is atomic with respect to the others; the cache acts
//! between any two. Every byte has a truth (the last value anyone wrote);
//! the checked properties are those of the randomised oracle made
//! exhaustive, plus liveness:
//!
//! - no stale read: every read, by either side, returns the truth;
//! - no lost write: a write-back never puts a value other than the truth in
//!   memory, and an invalidate never drops a dirty line whose data is
//!   still needed;
//! - no buffer used twice or lost: the driver gets each buffer back exactly
//!   once, with the device's data in it;
//! - no missed notification or interrupt: no reachable state has the
//!   driver asleep waiting for an interrupt, the device asleep waiting for
//!   a notification, nothing in flight to wake either, and buffers not all
//!   returned.
//!
//! Negative controls each remove one step and must yield a counterexample,
//! printed as the trace that reaches it.

use core::cell::RefCell;
use core::num::Wrapping;
use core::sync::atomic::Ordering;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::format;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::string::String;
use std::time::Instant;
use std::vec;
use std::vec::Vec;

use chroma_mem::{CacheHooks, GuestMemory, GuestPhysAddr, HostVirtAddr, MemError};
use chroma_virtio::queue::{need_event, QueueLayout, SplitQueue};

use crate::ops::CacheOps;
use crate::policy::{MaintainHooks, Policy};

/// Line size of the modelled cache: small, so ring parts and buffers share lines.
const LINE: usize = 16;
/// Bytes per buffer (two buffers per line).
const BUF_LEN: usize = 8;
/// VIRTQ_DESC_F_WRITE.
const F_WRITE: u16 = 2;
/// VIRTQ_USED_F_NO_NOTIFY.
const NO_NOTIFY: u16 = 1;

/// One step removed, to show the checker finds what it exists for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Nothing removed: must hold.
    None,
    /// The device does no cache maintenance at all.
    MaintenanceOff,
    /// The device skips the clean+invalidate of partially written lines
    /// before a write.
    NoPrewrite,
    /// The device re-arms notifications and sleeps without looking at the
    /// ring again.
    NoDeviceRecheck,
    /// The driver re-enables interrupts and sleeps without looking at the
    /// used ring again.
    NoDriverRecheck,
    /// The driver's notification test compares the event index for
    /// equality with the new index instead of `vring_need_event`.
    DriverEventEquality,
}

impl Control {
    /// Every control, the real one first.
    pub const ALL: [Control; 6] = [
        Control::None,
        Control::MaintenanceOff,
        Control::NoPrewrite,
        Control::NoDeviceRecheck,
        Control::NoDriverRecheck,
        Control::DriverEventEquality,
    ];

    /// Whether removing the step can break anything with or without
    /// EVENT_IDX: without it the device never suppresses notifications
    /// (every post notifies, so its re-check is redundant) and the driver
    /// has no event index to compare.
    pub fn applies(self, event_idx: bool) -> bool {
        event_idx
            || !matches!(
                self,
                Control::NoDeviceRecheck | Control::DriverEventEquality
            )
    }

    /// Short name for the table.
    pub fn label(self) -> &'static str {
        match self {
            Control::None => "as built",
            Control::MaintenanceOff => "- maintenance",
            Control::NoPrewrite => "- pre-write clean",
            Control::NoDeviceRecheck => "- device re-check",
            Control::NoDriverRecheck => "- driver re-check",
            Control::DriverEventEquality => "- event-index test",
        }
    }
}

/// What one search covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Model {
    /// Queue size (2 to 4 in the table).
    pub size: u16,
    /// Buffers the driver passes through the queue in all (more than the
    /// size, so descriptors and ring slots are reused).
    pub buffers: u8,
    /// VIRTIO_F_EVENT_IDX negotiated.
    pub event_idx: bool,
    /// Whether the cache may fill lines speculatively.
    pub prefetch: bool,
    /// The step removed, if any.
    pub control: Control,
}

/// Where the parts live for a queue of `size`.
#[derive(Clone, Copy, Debug)]
struct Layout {
    desc: usize,
    avail: usize,
    used: usize,
    buffers: usize,
    end: usize,
}

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

impl Layout {
    fn new(size: u16, buffers: u8) -> Self {
        let n = usize::from(size);
        let desc = 0;
        let avail = desc + 16 * n;
        let used = round_up(avail + 6 + 2 * n, 4);
        let buffers_at = round_up(used + 6 + 8 * n, BUF_LEN);
        // Buffer k sits at slot k % size: reused as descriptors are.
        let end = round_up(buffers_at + BUF_LEN * n, LINE);
        let _ = buffers;
        Self {
            desc,
            avail,
            used,
            buffers: buffers_at,
            end,
        }
    }
    fn buffer(&self, slot: usize) -> usize {
        self.buffers + BUF_LEN * slot
    }
}

/// The data buffer `k` carries: the driver's for a device-readable one,
/// the device's for a device-writable one (`k` even).
fn pattern(k: u8) -> u8 {
    if k.is_multiple_of(2) {
        0x80 | k
    } else {
        0x10 | k
    }
}

/// The driver's own state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Driver {
    /// Its `avail.idx`.
    avail_idx: u16,
    /// The next used entry it will read.
    last_used: u16,
    /// Buffers posted so far.
    posted: u8,
    /// Buffers returned so far.
    reaped: u8,
    /// Which buffer each descriptor carries.
    in_flight: [Option<u8>; 4],
    /// Interrupts re-enabled, the last look before sleeping still to come.
    armed: bool,
    /// Asleep until the next interrupt.
    waiting: bool,
}

/// A cached line: its data and whether it is dirty.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Line {
    data: [u8; LINE],
    dirty: bool,
}

/// One state of the whole system.
#[derive(Clone, Debug)]
struct World {
    mem: Vec<u8>,
    truth: Vec<u8>,
    cache: BTreeMap<usize, Line>,
    queue: SplitQueue,
    driver: Driver,
    device_awake: bool,
    notify: bool,
    interrupt: bool,
    /// The first property broken on the way to this state.
    violation: Option<String>,
}

impl World {
    /// A 64-bit digest of the state (SipHash): at the million states of
    /// the full table a collision has odds of about 1 in 10^7.
    fn key(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.mem.hash(&mut h);
        self.truth.hash(&mut h);
        self.cache.hash(&mut h);
        format!("{:?}", self.queue).hash(&mut h);
        self.driver.hash(&mut h);
        (self.device_awake, self.notify, self.interrupt).hash(&mut h);
        h.finish()
    }

    /// Forgets clean lines equal to memory. With speculative fills, such a
    /// line and an absent one are one step apart both ways and nothing
    /// else differs, so they reach the same violations; what a fill could
    /// leave behind that matters, a copy that memory then moves away from,
    /// is made where memory moves ([`Checker::with_stale_copies`]).
    fn canonicalize(&mut self) {
        let mem = &self.mem;
        self.cache
            .retain(|&line, l| l.dirty || l.data[..] != mem[line * LINE..(line + 1) * LINE]);
    }

    fn violate(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(what);
        }
    }

    fn fill(&mut self, line: usize) {
        if !self.cache.contains_key(&line) {
            let mut data = [0; LINE];
            data.copy_from_slice(&self.mem[line * LINE..(line + 1) * LINE]);
            self.cache.insert(line, Line { data, dirty: false });
        }
    }

    fn write_back(&mut self, line: usize) {
        let Some(l) = self.cache.get_mut(&line) else {
            return;
        };
        if !l.dirty {
            return;
        }
        l.dirty = false;
        let data = l.data;
        self.mem[line * LINE..(line + 1) * LINE].copy_from_slice(&data);
        for b in line * LINE..(line + 1) * LINE {
            if self.mem[b] != self.truth[b] {
                self.violate(format!(
                    "lost write: a write-back put {:#04x} over {:#04x} at byte {b}",
                    self.mem[b], self.truth[b]
                ));
            }
        }
    }

    fn drop_line(&mut self, line: usize) {
        if let Some(l) = self.cache.remove(&line) {
            if l.dirty {
                for b in line * LINE..(line + 1) * LINE {
                    if self.mem[b] != self.truth[b] {
                        self.violate(format!("lost write: a dirty line invalidated at byte {b}"));
                    }
                }
            }
        }
    }

    fn device_read(&mut self, addr: usize, buf: &mut [u8]) {
        for (k, out) in buf.iter_mut().enumerate() {
            let b = addr + k;
            self.fill(b / LINE);
            *out = self.cache[&(b / LINE)].data[b % LINE];
            if *out != self.truth[b] {
                let truth = self.truth[b];
                self.violate(format!(
                    "stale read: the device read {out:#04x} at byte {b}, the truth is {truth:#04x}"
                ));
            }
        }
    }

    fn device_write(&mut self, addr: usize, data: &[u8]) {
        for (k, &v) in data.iter().enumerate() {
            let b = addr + k;
            self.fill(b / LINE);
            if let Some(l) = self.cache.get_mut(&(b / LINE)) {
                l.data[b % LINE] = v;
                l.dirty = true;
            }
            self.truth[b] = v;
        }
    }

    fn driver_read(&mut self, addr: usize, len: usize) -> Vec<u8> {
        let bytes = self.mem[addr..addr + len].to_vec();
        for (k, &v) in bytes.iter().enumerate() {
            if v != self.truth[addr + k] {
                let truth = self.truth[addr + k];
                self.violate(format!(
                    "stale read: the driver read {v:#04x} at byte {}, the truth is {truth:#04x}",
                    addr + k
                ));
            }
        }
        bytes
    }

    fn driver_read_u16(&mut self, addr: usize) -> u16 {
        let b = self.driver_read(addr, 2);
        u16::from_le_bytes([b[0], b[1]])
    }

    fn driver_write(&mut self, addr: usize, data: &[u8]) {
        self.mem[addr..addr + data.len()].copy_from_slice(data);
        self.truth[addr..addr + data.len()].copy_from_slice(data);
    }
}

/// [`CacheOps`] on the modelled cache (virtual = physical).
struct Ops<'w> {
    world: &'w RefCell<World>,
}

// SAFETY: each primitive performs the named operation on the modelled line.
unsafe impl CacheOps for Ops<'_> {
    fn line_size(&self) -> usize {
        LINE
    }
    unsafe fn clean_line(&self, va: HostVirtAddr) {
        self.world.borrow_mut().write_back(va.raw() as usize / LINE);
    }
    unsafe fn invalidate_line(&self, va: HostVirtAddr) {
        self.world.borrow_mut().drop_line(va.raw() as usize / LINE);
    }
    unsafe fn clean_invalidate_line(&self, va: HostVirtAddr) {
        let line = va.raw() as usize / LINE;
        let mut w = self.world.borrow_mut();
        w.write_back(line);
        w.drop_line(line);
    }
    fn invalidate_icache_all(&self) {}
    fn dsb(&self) {}
    fn dmb(&self) {}
    fn isb(&self) {}
}

/// The device's view of memory: the real hooks over the modelled cache.
struct DeviceMemory<'w> {
    world: &'w RefCell<World>,
    hooks: MaintainHooks<Ops<'w>>,
    prewrite: bool,
    end: usize,
}

impl DeviceMemory<'_> {
    fn range(&self, gpa: GuestPhysAddr, len: usize) -> Result<usize, MemError> {
        let at = usize::try_from(gpa.raw()).map_err(|_| MemError::Overflow)?;
        if at.checked_add(len).is_some_and(|e| e <= self.end) {
            Ok(at)
        } else {
            Err(MemError::OutOfRange {
                gpa: gpa.raw(),
                len: len as u64,
            })
        }
    }
}

impl GuestMemory for DeviceMemory<'_> {
    fn check_range(&self, gpa: GuestPhysAddr, len: u64) -> Result<(), MemError> {
        self.range(gpa, usize::try_from(len).map_err(|_| MemError::Overflow)?)
            .map(|_| ())
    }
    fn read(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let at = self.range(gpa, buf.len())?;
        self.hooks
            .before_read(HostVirtAddr::new(at as u64), buf.len());
        self.world.borrow_mut().device_read(at, buf);
        Ok(())
    }
    fn write(&self, gpa: GuestPhysAddr, data: &[u8]) -> Result<(), MemError> {
        let at = self.range(gpa, data.len())?;
        if self.prewrite {
            self.hooks
                .before_write(HostVirtAddr::new(at as u64), data.len());
        }
        self.world.borrow_mut().device_write(at, data);
        self.hooks
            .after_write(HostVirtAddr::new(at as u64), data.len());
        Ok(())
    }
    fn load_u16(&self, gpa: GuestPhysAddr, _order: Ordering) -> Result<u16, MemError> {
        let mut b = [0; 2];
        self.read(gpa, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    fn store_u16(&self, gpa: GuestPhysAddr, value: u16, _order: Ordering) -> Result<(), MemError> {
        self.write(gpa, &value.to_le_bytes())
    }
    fn fence(&self, _order: Ordering) {}
}

/// What a search found.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The model searched.
    pub model: Model,
    /// Distinct states reached.
    pub states: usize,
    /// Transitions taken.
    pub transitions: usize,
    /// States where every buffer was back with the driver.
    pub completed: usize,
    /// The first property broken, with the trace that reaches it.
    pub counterexample: Option<(String, Vec<String>)>,
    /// Wall time of the search.
    pub seconds: f64,
}

/// The search: the model, its layout, and the agents' steps.
struct Checker {
    model: Model,
    layout: Layout,
}

impl Checker {
    fn initial(&self) -> Result<World, String> {
        let size = self.model.size;
        let l = self.layout;
        let mut world = World {
            mem: vec![0; l.end],
            truth: vec![0; l.end],
            cache: BTreeMap::new(),
            queue: SplitQueue::new(),
            driver: Driver {
                avail_idx: 0,
                last_used: 0,
                posted: 0,
                reaped: 0,
                in_flight: [None; 4],
                armed: false,
                waiting: false,
            },
            device_awake: false,
            notify: false,
            interrupt: false,
            violation: None,
        };
        let layout = QueueLayout {
            size,
            desc: GuestPhysAddr::new(l.desc as u64),
            avail: GuestPhysAddr::new(l.avail as u64),
            used: GuestPhysAddr::new(l.used as u64),
        };
        let cell = RefCell::new(world.clone());
        let mut queue = SplitQueue::new();
        queue
            .activate(
                layout,
                size,
                self.model.event_idx,
                false,
                &self.device_memory(&cell),
            )
            .map_err(|e| format!("activation refused: {e}"))?;
        world = cell.into_inner();
        world.queue = queue;
        Ok(world)
    }

    fn device_memory<'w>(&self, world: &'w RefCell<World>) -> DeviceMemory<'w> {
        let policy = if self.model.control == Control::MaintenanceOff {
            Policy::Nothing
        } else {
            Policy::Maintain
        };
        DeviceMemory {
            world,
            hooks: MaintainHooks::new(
                Ops { world },
                policy,
                HostVirtAddr::new(0),
                self.layout.end as u64,
            ),
            prewrite: self.model.control != Control::NoPrewrite,
            end: self.layout.end,
        }
    }

    /// Runs `step` on the device with the queue taken out of the world.
    fn device<R>(
        &self,
        world: &World,
        step: impl FnOnce(&mut SplitQueue, &DeviceMemory<'_>, &mut Option<String>) -> R,
    ) -> (World, R) {
        let mut queue = world.queue.clone();
        let cell = RefCell::new(world.clone());
        let mut error = None;
        let r = {
            let mem = self.device_memory(&cell);
            step(&mut queue, &mem, &mut error)
        };
        let mut next = cell.into_inner();
        next.queue = queue;
        if let Some(e) = error {
            next.violate(e);
        }
        (next, r)
    }

    fn used_event_at(&self) -> usize {
        self.layout.avail + 4 + 2 * usize::from(self.model.size)
    }
    fn avail_event_at(&self) -> usize {
        self.layout.used + 4 + 8 * usize::from(self.model.size)
    }

    /// Every successor of `w`, labelled. Cache steps come last.
    fn successors(&self, w: &World) -> Vec<(String, World)> {
        let mut out = Vec::new();
        let size = self.model.size;
        let l = self.layout;
        let d = &w.driver;
        // --- the driver ---
        if !d.waiting {
            let free = (0..usize::from(size)).find(|&i| d.in_flight[i].is_none());
            if let (true, Some(slot)) = (d.posted < self.model.buffers, free) {
                let mut n = w.clone();
                let k = d.posted;
                let buf = l.buffer(slot);
                let writable = k.is_multiple_of(2);
                if !writable {
                    n.driver_write(buf, &[pattern(k); BUF_LEN]);
                }
                let mut desc = [0u8; 16];
                desc[..8].copy_from_slice(&(buf as u64).to_le_bytes());
                desc[8..12].copy_from_slice(&(BUF_LEN as u32).to_le_bytes());
                let flags = if writable { F_WRITE } else { 0 };
                desc[12..14].copy_from_slice(&flags.to_le_bytes());
                n.driver_write(l.desc + 16 * slot, &desc);
                let old = n.driver.avail_idx;
                let ring_slot = usize::from(old % size);
                n.driver_write(l.avail + 4 + 2 * ring_slot, &(slot as u16).to_le_bytes());
                let new = old.wrapping_add(1);
                n.driver_write(l.avail + 2, &new.to_le_bytes());
                n.driver.avail_idx = new;
                n.driver.in_flight[slot] = Some(k);
                n.driver.posted += 1;
                // §2.7.7.2 / §2.7.10: notify unless the device said not to.
                let notify = if self.model.event_idx {
                    let event = n.driver_read_u16(self.avail_event_at());
                    if self.model.control == Control::DriverEventEquality {
                        event == new
                    } else {
                        need_event(Wrapping(event), Wrapping(new), Wrapping(old))
                    }
                } else {
                    n.driver_read_u16(l.used) & NO_NOTIFY == 0
                };
                n.notify |= notify;
                out.push((
                    format!(
                        "driver posts buffer {k} in descriptor {slot}{}",
                        if notify { ", notifies" } else { "" }
                    ),
                    n,
                ));
            }
            // Reap one used buffer, if the device published one.
            let mut n = w.clone();
            let used_idx = n.driver_read_u16(l.used + 2);
            if n.violation.is_some() {
                out.push((String::from("driver reads used.idx"), n.clone()));
            }
            if used_idx != n.driver.last_used {
                let at = l.used + 4 + 8 * usize::from(n.driver.last_used % size);
                let e = n.driver_read(at, 8);
                let id = u32::from_le_bytes([e[0], e[1], e[2], e[3]]) as usize;
                let len = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
                match n.driver.in_flight.get(id).copied().flatten() {
                    None => n.violate(format!("buffer used twice or never posted: id {id}")),
                    Some(k) => {
                        if k.is_multiple_of(2) {
                            let data = n.driver_read(l.buffer(id), BUF_LEN);
                            if len as usize != BUF_LEN || data.iter().any(|&b| b != pattern(k)) {
                                n.violate(format!(
                                    "buffer {k} came back with {data:02x?}, length {len}"
                                ));
                            }
                        }
                        n.driver.in_flight[id] = None;
                        n.driver.reaped += 1;
                    }
                }
                n.driver.last_used = n.driver.last_used.wrapping_add(1);
                n.driver.armed = false;
                out.push((format!("driver reaps descriptor {id}"), n));
            }
            // Re-enable interrupts (§2.7.10: used_event = the next entry it
            // will read; without EVENT_IDX: clear NO_INTERRUPT) ...
            if !d.armed && d.in_flight.iter().any(Option::is_some) {
                let mut n = w.clone();
                if self.model.event_idx {
                    n.driver_write(self.used_event_at(), &n.driver.last_used.to_le_bytes());
                } else {
                    n.driver_write(l.avail, &0u16.to_le_bytes());
                }
                n.driver.armed = true;
                out.push((String::from("driver re-enables interrupts"), n));
            }
            // ... then look at the used ring once more before sleeping.
            if d.armed {
                let mut n = w.clone();
                let more = self.model.control != Control::NoDriverRecheck
                    && n.driver_read_u16(l.used + 2) != n.driver.last_used;
                n.driver.armed = false;
                n.driver.waiting = !more;
                out.push((
                    String::from(if more {
                        "driver looks again, sees more"
                    } else {
                        "driver looks again and sleeps"
                    }),
                    n,
                ));
            }
        }
        // --- the device ---
        if w.device_awake {
            let (n, popped) = self.device(w, |q, mem, error| {
                let head = match q.pop(mem) {
                    Ok(Some(head)) => head,
                    Ok(None) => return None,
                    Err(e) => {
                        *error = Some(format!("device error: {e}"));
                        return Some(u16::MAX);
                    }
                };
                let mut chain = q.chain(head);
                let mut written = 0u32;
                loop {
                    match chain.next_descriptor(mem) {
                        Ok(Some(desc)) => {
                            let mut buf = [0u8; BUF_LEN];
                            if desc.writable {
                                // The device's data: the pattern of the buffer the slot carries.
                                let k = mem.world.borrow().driver.in_flight[usize::from(head)]
                                    .unwrap_or(0);
                                buf = [pattern(k); BUF_LEN];
                                let _ = mem.write(desc.addr, &buf);
                                written += desc.len;
                            } else {
                                let _ = mem.read(desc.addr, &mut buf);
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            *error = Some(format!("device error: {e}"));
                            break;
                        }
                    }
                }
                if let Err(e) = q.add_used(mem, head, written) {
                    *error = Some(format!("device error: {e}"));
                }
                Some(head)
            });
            if let Some(head) = popped {
                out.push((format!("device serves descriptor {head}"), n));
            }
            if w.queue.has_unpublished_used() {
                let (n, interrupt) = self.device(w, |q, mem, error| match q.publish_used(mem) {
                    Ok(i) => i,
                    Err(e) => {
                        *error = Some(format!("device error: {e}"));
                        false
                    }
                });
                let mut n = n;
                n.interrupt |= interrupt;
                out.push((
                    format!(
                        "device publishes{}",
                        if interrupt { ", interrupts" } else { "" }
                    ),
                    n,
                ));
            } else {
                let recheck = self.model.control != Control::NoDeviceRecheck;
                let (mut n, more) =
                    self.device(w, |q, mem, error| match q.enable_notification(mem) {
                        Ok(more) => more && recheck,
                        Err(e) => {
                            *error = Some(format!("device error: {e}"));
                            false
                        }
                    });
                n.device_awake = more;
                out.push((
                    String::from(if more {
                        "device re-arms, sees more"
                    } else {
                        "device re-arms and sleeps"
                    }),
                    n,
                ));
            }
        }
        // --- notification and interrupt delivery ---
        // A notification wakes a sleeping device; one sent while it runs
        // waits for it to finish (a trap taken after the run).
        if w.notify && !w.device_awake {
            let mut n = w.clone();
            n.notify = false;
            n.device_awake = true;
            out.push((String::from("notification reaches the device"), n));
        }
        // Likewise an interrupt wakes a sleeping driver; one raised while it
        // runs is taken when it sleeps (the handler runs after).
        if w.interrupt && w.driver.waiting {
            let mut n = w.clone();
            n.interrupt = false;
            n.driver.waiting = false;
            out.push((String::from("interrupt reaches the driver"), n));
        }
        // --- the cache ---
        for &line in w.cache.keys() {
            let mut n = w.clone();
            n.write_back(line);
            n.cache.remove(&line);
            out.push((format!("cache evicts line {line}"), n));
        }
        let mut all = Vec::with_capacity(out.len());
        for (label, mut n) in out {
            n.canonicalize();
            if self.model.prefetch {
                all.extend(self.with_stale_copies(w, label, n));
            } else {
                all.push((label, n));
            }
        }
        all
    }

    /// `next` (reached from `before` by `label`) and, for every set of
    /// lines the step changed in memory while no copy of them was cached,
    /// the same state with a copy from before the step left in the cache:
    /// a speculative fill any time before the step would have left it.
    fn with_stale_copies(
        &self,
        before: &World,
        label: String,
        next: World,
    ) -> Vec<(String, World)> {
        let changed: Vec<usize> = (0..self.layout.end / LINE)
            .filter(|&line| {
                let span = line * LINE..(line + 1) * LINE;
                !before.cache.contains_key(&line)
                    && !next.cache.contains_key(&line)
                    && before.mem[span.clone()] != next.mem[span]
            })
            .collect();
        let mut out = Vec::with_capacity(1 << changed.len());
        for subset in 0u32..(1 << changed.len()) {
            let mut n = next.clone();
            let mut lines = Vec::new();
            for (bit, &line) in changed.iter().enumerate() {
                if subset & (1 << bit) != 0 {
                    let mut data = [0; LINE];
                    data.copy_from_slice(&before.mem[line * LINE..(line + 1) * LINE]);
                    n.cache.insert(line, Line { data, dirty: false });
                    lines.push(line);
                }
            }
            let label = if lines.is_empty() {
                label.clone()
            } else {
                format!("{label} (a copy of line(s) {lines:?} from before it stays cached)")
            };
            out.push((label, n));
        }
        out
    }

    fn done(&self, w: &World) -> bool {
        w.driver.reaped == self.model.buffers
    }

    /// Whether only the cache can move: both sides asleep, nothing on the way.
    fn stuck(&self, w: &World) -> bool {
        w.driver.waiting && !w.device_awake && !w.notify && !w.interrupt
    }

    fn search(&self, limit: usize) -> Outcome {
        let started = Instant::now();
        let mut outcome = Outcome {
            model: self.model,
            states: 0,
            transitions: 0,
            completed: 0,
            counterexample: None,
            seconds: 0.0,
        };
        let initial = match self.initial() {
            Ok(w) => w,
            Err(e) => {
                outcome.counterexample = Some((e, Vec::new()));
                return outcome;
            }
        };
        // State key -> (parent key, label of the step from it).
        let mut parent: HashMap<u64, (u64, String)> = HashMap::new();
        let root = initial.key();
        parent.insert(root, (root, String::new()));
        let mut queue = VecDeque::from([initial]);
        let trace = |parent: &HashMap<u64, (u64, String)>, mut key: u64| {
            let mut steps = Vec::new();
            while let Some((p, label)) = parent.get(&key) {
                if *p == key {
                    break;
                }
                steps.push(label.clone());
                key = *p;
            }
            steps.reverse();
            steps
        };
        while let Some(w) = queue.pop_front() {
            outcome.states += 1;
            if outcome.states > limit {
                outcome.counterexample = Some((format!("state limit {limit} reached"), Vec::new()));
                break;
            }
            let key = w.key();
            if self.done(&w) {
                outcome.completed += 1;
            } else if self.stuck(&w) {
                let what = format!(
                    "missed notification or interrupt: driver asleep with {} of {} buffers back, device asleep",
                    w.driver.reaped, self.model.buffers
                );
                outcome.counterexample = Some((what, trace(&parent, key)));
                break;
            }
            for (label, next) in self.successors(&w) {
                outcome.transitions += 1;
                let k = next.key();
                if parent.contains_key(&k) {
                    continue;
                }
                parent.insert(k, (key, label));
                if let Some(v) = &next.violation {
                    outcome.counterexample = Some((v.clone(), trace(&parent, k)));
                    outcome.seconds = started.elapsed().as_secs_f64();
                    return outcome;
                }
                queue.push_back(next);
            }
        }
        outcome.seconds = started.elapsed().as_secs_f64();
        outcome
    }
}

/// Searches every interleaving of `model`, up to `limit` states.
pub fn check(model: Model, limit: usize) -> Outcome {
    let checker = Checker {
        model,
        layout: Layout::new(model.size, model.buffers),
    };
    checker.search(limit)
}

/// Whether `outcome` is what its model should give: no counterexample and
/// every search able to complete for the real protocol, a counterexample
/// for a control.
pub fn as_expected(outcome: &Outcome) -> bool {
    match outcome.model.control {
        Control::None => outcome.counterexample.is_none() && outcome.completed > 0,
        _ => outcome
            .counterexample
            .as_ref()
            .is_some_and(|(what, trace)| !what.starts_with("state limit") && !trace.is_empty()),
    }
}

/// One line of the table for `outcome`.
pub fn row(outcome: &Outcome) -> String {
    let m = outcome.model;
    let verdict = match (&outcome.counterexample, m.control) {
        (None, _) => String::from("holds"),
        (Some((what, trace)), _) => format!("counterexample in {} steps: {what}", trace.len()),
    };
    format!(
        "split N={} bufs={} {:<9} {:<19} {:>9} states {:>10} transitions {:>7.2} s  {}{}",
        m.size,
        m.buffers,
        if m.event_idx { "event-idx" } else { "flags" },
        m.control.label(),
        outcome.states,
        outcome.transitions,
        outcome.seconds,
        verdict,
        if as_expected(outcome) {
            ""
        } else {
            "  <-- UNEXPECTED"
        },
    )
}

/// `oracle --exhaustive [--max-size N] [--limit STATES]`: the table for
/// queue sizes 2 and 4 up to N (default 4), each with one buffer more than the
/// size, with and without EVENT_IDX, as built and with every control.
/// Returns the exit code: 1 if any row is not as expected.
pub fn main_exhaustive(args: &[String]) -> i32 {
    let mut max_size = 4u16;
    let mut limit = 20_000_000usize;
    let mut i = 0;
    while i < args.len() {
        let value = args
            .get(i + 1)
            .and_then(|v| v.replace('_', "").parse::<usize>().ok());
        match (args[i].as_str(), value) {
            ("--exhaustive", _) => {}
            ("--max-size", Some(v)) => {
                max_size = u16::try_from(v.clamp(2, 4)).unwrap_or(4);
                i += 1;
            }
            ("--limit", Some(v)) => {
                limit = v;
                i += 1;
            }
            (other, _) => {
                std::eprintln!(
                    "usage: oracle --exhaustive [--max-size 2..4] [--limit STATES] (not {other})"
                );
                return 2;
            }
        }
        i += 1;
    }
    std::println!("exhaustive check of the split ring with its maintenance (non-coherent driver, {LINE}-byte lines, evictions and speculative fills anywhere)");
    let mut failed = 0;
    let started = Instant::now();
    // A split queue's size is a power of two (§2.7).
    for size in [2u16, 4].into_iter().filter(|&s| s <= max_size) {
        for event_idx in [true, false] {
            for control in Control::ALL {
                if !control.applies(event_idx) {
                    continue;
                }
                let model = Model {
                    size,
                    buffers: u8::try_from(size + 1).unwrap_or(u8::MAX),
                    event_idx,
                    prefetch: true,
                    control,
                };
                let outcome = check(model, limit);
                std::println!("{}", row(&outcome));
                if let Some((_, trace)) = &outcome.counterexample {
                    if control != Control::None || !as_expected(&outcome) {
                        for step in trace {
                            std::println!("      {step}");
                        }
                    }
                }
                failed += usize::from(!as_expected(&outcome));
            }
        }
    }
    std::println!(
        "exhaustive: {} in {:.1} s",
        if failed == 0 {
            String::from("every row as expected")
        } else {
            format!("{failed} row(s) NOT as expected")
        },
        started.elapsed().as_secs_f64()
    );
    i32::from(failed > 0)
}

#[cfg(test)]
mod tests;
