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

use chroma_mem::{CacheHooks, DeviceArea, GuestMemory, GuestPhysAddr, HostVirtAddr, MemError};
use chroma_virtio::packed::{
    PackedQueue, RingPosition, RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE,
    RING_EVENT_FLAGS_ENABLE, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED,
};
use chroma_virtio::queue::{need_event, Descriptor, QueueLayout, SplitQueue};
use chroma_virtio::VirtioError;

use crate::ops::CacheOps;
use crate::policy::{MaintainHooks, Policy};

/// Line size of the modelled cache by default: small, so ring parts and
/// buffers share lines while every split descriptor has its own.
pub const LINE: usize = 16;
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
    /// (Driver steps inside device operations only.) Ring parts and
    /// buffers the two sides write share cache lines: the alignment the
    /// DMA API gives a non-coherent device's memory is not kept.
    SharedLines,
    /// (Driver steps inside device operations only.) The device reaches
    /// the packed ring through its cacheable alias like the buffers,
    /// instead of a non-cacheable one.
    CachedRing,
}

impl Control {
    /// Every control, the real one first.
    pub const ALL: [Control; 8] = [
        Control::None,
        Control::MaintenanceOff,
        Control::NoPrewrite,
        Control::NoDeviceRecheck,
        Control::NoDriverRecheck,
        Control::DriverEventEquality,
        Control::SharedLines,
        Control::CachedRing,
    ];

    /// Whether removing the step can break anything in `model`: without
    /// EVENT_IDX the device never suppresses notifications (every post
    /// notifies, so its re-check is redundant) and the driver has no event
    /// index to compare; the last two exist only with driver steps inside
    /// device operations.
    pub fn applies(self, model: &Model) -> bool {
        match self {
            Control::NoDeviceRecheck | Control::DriverEventEquality => model.event_idx,
            Control::SharedLines => model.within,
            Control::CachedRing => model.within && model.ring == Ring::Packed,
            // Inside operations the pre-write clean cannot help (once
            // aligned, the lines it cleans are no one else's).
            Control::NoPrewrite => !model.within,
            _ => true,
        }
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
            Control::SharedLines => "- line alignment",
            Control::CachedRing => "- uncached ring",
        }
    }
}

/// Which virtqueue format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ring {
    /// Split virtqueue (§2.7): descriptor table, avail and used rings.
    Split,
    /// Packed virtqueue (§2.8): one descriptor ring both sides write.
    Packed,
}

/// What one search covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Model {
    /// The ring format.
    pub ring: Ring,
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
    /// Cache line size in bytes (16, 32 or 64).
    pub line: usize,
    /// Whether a driver step may also fall between any two of the
    /// device's accesses inside one of its operations (between its line
    /// fill and its clean, say), not only between operations.
    pub within: bool,
}

/// Where the parts live for a queue of `size`.
#[derive(Clone, Copy, Debug)]
struct Layout {
    desc: usize,
    avail: usize,
    used: usize,
    buffers: usize,
    stride: usize,
    end: usize,
}

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

impl Layout {
    /// For a packed ring `avail` is the driver event suppression structure
    /// and `used` the device's.
    /// `aligned`: every part one side writes starts a line and every
    /// buffer has a line of its own, as the DMA API lays out memory for a
    /// non-coherent device; otherwise everything is packed tight.
    fn new(ring: Ring, size: u16, line: usize, aligned: bool) -> Self {
        let n = usize::from(size);
        let part = |x: usize, align: usize| round_up(x, if aligned { line } else { align });
        let desc = 0;
        let (avail, used, used_end) = match ring {
            Ring::Split => {
                let avail = part(desc + 16 * n, 2);
                let used = part(avail + 6 + 2 * n, 4);
                (avail, used, used + 6 + 8 * n)
            }
            Ring::Packed => {
                let avail = part(desc + 16 * n, 4);
                let used = part(avail + 4, 4);
                (avail, used, used + 4)
            }
        };
        let buffers_at = part(used_end, BUF_LEN);
        let stride = if aligned { line.max(BUF_LEN) } else { BUF_LEN };
        // Buffer k sits at slot k % size: reused as descriptors are.
        let end = round_up(buffers_at + stride * n, line);
        Self {
            desc,
            avail,
            used,
            buffers: buffers_at,
            stride,
            end,
        }
    }
    fn buffer(&self, slot: usize) -> usize {
        self.buffers + self.stride * slot
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
    data: Vec<u8>,
    dirty: bool,
}

/// The device's queue, either format.
// The split queue is the larger (its batches of heads and used elements),
// as in `chroma_virtio::virtqueue::Virtqueue`.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
enum Queue {
    Split(SplitQueue),
    Packed(PackedQueue),
}

impl Queue {
    fn has_unpublished_used(&self) -> bool {
        match self {
            Queue::Split(q) => q.has_unpublished_used(),
            Queue::Packed(q) => q.has_unpublished_used(),
        }
    }
    fn publish_used<M: GuestMemory>(&mut self, mem: &M) -> Result<bool, VirtioError> {
        match self {
            Queue::Split(q) => q.publish_used(mem),
            Queue::Packed(q) => q.publish_used(mem),
        }
    }
    fn enable_notification<M: GuestMemory>(&mut self, mem: &M) -> Result<bool, VirtioError> {
        match self {
            Queue::Split(q) => q.enable_notification(mem),
            Queue::Packed(q) => q.enable_notification(mem),
        }
    }
    /// Takes the next chain, serves each of its buffers with `serve`
    /// (returning the bytes written), and uses it. Returns its head (split)
    /// or Buffer ID (packed), or `None` if nothing was available.
    fn serve<M: GuestMemory>(
        &mut self,
        mem: &M,
        mut serve: impl FnMut(u16, Descriptor) -> u32,
    ) -> Result<Option<u16>, VirtioError> {
        match self {
            Queue::Split(q) => {
                let Some(head) = q.pop(mem)? else {
                    return Ok(None);
                };
                let mut chain = q.chain(head);
                let mut written = 0;
                while let Some(d) = chain.next_descriptor(mem)? {
                    written += serve(head, d);
                }
                q.add_used(mem, head, written)?;
                Ok(Some(head))
            }
            Queue::Packed(q) => {
                let Some(head) = q.pop(mem)? else {
                    return Ok(None);
                };
                let mut chain = q.chain(&head);
                let mut written = 0;
                while let Some(d) = chain.next_descriptor(mem)? {
                    written += serve(head.id, d);
                }
                q.add_used(mem, &head, written)?;
                Ok(Some(head.id))
            }
        }
    }
}

/// One state of the whole system.
#[derive(Clone, Debug)]
struct World {
    /// Line size (constant over a search).
    line: usize,
    mem: Vec<u8>,
    truth: Vec<u8>,
    cache: BTreeMap<usize, Line>,
    queue: Queue,
    driver: Driver,
    device_awake: bool,
    notify: bool,
    interrupt: bool,
    /// The first property broken on the way to this state.
    violation: Option<String>,
    /// Lines the device wrote through the cache in the step that made this
    /// state (not part of the state: taken before it is stored). A copy
    /// cached before that step took the write, so it cannot be left behind
    /// from before it ([`Checker::with_stale_copies`]).
    cached_writes: std::collections::BTreeSet<usize>,
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
        let (mem, size) = (&self.mem, self.line);
        self.cache
            .retain(|&line, l| l.dirty || l.data[..] != mem[line * size..(line + 1) * size]);
    }

    fn violate(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(what);
        }
    }

    fn fill(&mut self, line: usize) {
        if !self.cache.contains_key(&line) {
            let data = self.mem[line * self.line..(line + 1) * self.line].to_vec();
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
        let data = l.data.clone();
        let size = self.line;
        self.mem[line * size..(line + 1) * size].copy_from_slice(&data);
        for b in line * self.line..(line + 1) * self.line {
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
                for b in line * self.line..(line + 1) * self.line {
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
            self.fill(b / self.line);
            *out = self.cache[&(b / self.line)].data[b % self.line];
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
            self.fill(b / self.line);
            self.cached_writes.insert(b / self.line);
            if let Some(l) = self.cache.get_mut(&(b / self.line)) {
                l.data[b % self.line] = v;
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

/// A driver step slipped into a device operation: before the device's
/// `at`-th access to the cache or memory (a read, a write, one line's
/// maintenance), the driver takes the `choice`-th of the steps open to it.
#[derive(Clone, Copy, Debug)]
struct Injection {
    at: usize,
    choice: usize,
}

/// Counts a device operation's accesses and applies an [`Injection`].
struct Weave<'c> {
    checker: &'c Checker,
    injection: Option<Injection>,
    events: core::cell::Cell<usize>,
    /// The injected step's label, once taken.
    taken: RefCell<Option<String>>,
}

impl Weave<'_> {
    /// Called before each access of the device to `world`.
    fn tick(&self, world: &RefCell<World>) {
        let n = self.events.get();
        self.events.set(n + 1);
        let Some(injection) = self.injection else {
            return;
        };
        if n != injection.at {
            return;
        }
        let now = world.borrow().clone();
        let mut steps = Vec::new();
        self.checker.driver_steps(&now, &mut steps);
        if let Some((label, next)) = steps.into_iter().nth(injection.choice) {
            *world.borrow_mut() = next;
            *self.taken.borrow_mut() = Some(label);
        }
    }
}

/// [`CacheOps`] on the modelled cache (virtual = physical).
struct Ops<'w> {
    world: &'w RefCell<World>,
    weave: &'w Weave<'w>,
}

// SAFETY: each primitive performs the named operation on the modelled line.
unsafe impl CacheOps for Ops<'_> {
    fn line_size(&self) -> usize {
        self.world.borrow().line
    }
    unsafe fn clean_line(&self, va: HostVirtAddr) {
        self.weave.tick(self.world);
        let mut w = self.world.borrow_mut();
        let line = va.raw() as usize / w.line;
        w.write_back(line);
    }
    unsafe fn invalidate_line(&self, va: HostVirtAddr) {
        self.weave.tick(self.world);
        let mut w = self.world.borrow_mut();
        let line = va.raw() as usize / w.line;
        w.drop_line(line);
    }
    unsafe fn clean_invalidate_line(&self, va: HostVirtAddr) {
        self.weave.tick(self.world);
        let mut w = self.world.borrow_mut();
        let line = va.raw() as usize / w.line;
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
    weave: &'w Weave<'w>,
    /// Below this address (the ring parts) the device goes straight to
    /// memory: its non-cacheable alias of the ring.
    uncached_below: usize,
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
        if at < self.uncached_below {
            self.weave.tick(self.world);
            let mut w = self.world.borrow_mut();
            buf.copy_from_slice(&w.mem[at..at + buf.len()]);
            let truth = w.truth[at..at + buf.len()].to_vec();
            if buf[..] != truth[..] {
                w.violate(format!("stale read: the device read {buf:02x?} at byte {at} uncached, the truth is {truth:02x?}"));
            }
            return Ok(());
        }
        self.weave.tick(self.world);
        self.world.borrow_mut().device_read(at, buf);
        Ok(())
    }
    fn write(&self, gpa: GuestPhysAddr, data: &[u8]) -> Result<(), MemError> {
        self.write_in(gpa, data, None)
    }
    fn write_owned(
        &self,
        gpa: GuestPhysAddr,
        data: &[u8],
        area: DeviceArea,
    ) -> Result<(), MemError> {
        self.write_in(gpa, data, Some(area))
    }
    fn load_u16(&self, gpa: GuestPhysAddr, order: Ordering) -> Result<u16, MemError> {
        let at = self.range(gpa, 2)?;
        if chroma_mem::acquires(order) {
            self.hooks.before_acquire(HostVirtAddr::new(at as u64), 2);
        }
        let mut b = [0; 2];
        self.read(gpa, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    fn store_u16(&self, gpa: GuestPhysAddr, value: u16, order: Ordering) -> Result<(), MemError> {
        self.store_in(gpa, value, order, None)
    }
    fn store_u16_owned(
        &self,
        gpa: GuestPhysAddr,
        value: u16,
        order: Ordering,
        area: DeviceArea,
    ) -> Result<(), MemError> {
        self.store_in(gpa, value, order, Some(area))
    }
    fn fence(&self, order: Ordering) {
        if order == Ordering::SeqCst {
            self.hooks.barrier();
        }
    }
    fn will_write(&self, gpa: GuestPhysAddr, len: usize) {
        if let (true, Ok(at)) = (self.prewrite, self.range(gpa, len)) {
            if at >= self.uncached_below {
                self.hooks
                    .before_write_run(HostVirtAddr::new(at as u64), len);
            }
        }
    }
    fn end_operation(&self) {
        self.hooks.end_operation();
    }
}

impl DeviceMemory<'_> {
    fn write_in(
        &self,
        gpa: GuestPhysAddr,
        data: &[u8],
        area: Option<DeviceArea>,
    ) -> Result<(), MemError> {
        let at = self.range(gpa, data.len())?;
        if at < self.uncached_below {
            self.weave.tick(self.world);
            let mut w = self.world.borrow_mut();
            w.mem[at..at + data.len()].copy_from_slice(data);
            w.truth[at..at + data.len()].copy_from_slice(data);
            return Ok(());
        }
        if self.prewrite {
            // Virtual = physical here.
            let area = area.map(|a| (HostVirtAddr::new(a.start.raw()), a.len as usize));
            self.hooks
                .prepare_write(HostVirtAddr::new(at as u64), data.len(), area);
        }
        self.weave.tick(self.world);
        self.world.borrow_mut().device_write(at, data);
        self.hooks
            .after_write(HostVirtAddr::new(at as u64), data.len());
        Ok(())
    }

    fn store_in(
        &self,
        gpa: GuestPhysAddr,
        value: u16,
        order: Ordering,
        area: Option<DeviceArea>,
    ) -> Result<(), MemError> {
        let at = self.range(gpa, 2)?;
        if chroma_mem::releases(order) {
            self.hooks.before_release(HostVirtAddr::new(at as u64), 2);
        }
        self.write_in(gpa, &value.to_le_bytes(), area)
    }
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
            line: self.model.line,
            mem: vec![0; l.end],
            truth: vec![0; l.end],
            cache: BTreeMap::new(),
            queue: Queue::Split(SplitQueue::new()),
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
            cached_writes: Default::default(),
        };
        let layout = QueueLayout {
            size,
            desc: GuestPhysAddr::new(l.desc as u64),
            avail: GuestPhysAddr::new(l.avail as u64),
            used: GuestPhysAddr::new(l.used as u64),
        };
        let cell = RefCell::new(world.clone());
        let weave = Weave {
            checker: self,
            injection: None,
            events: core::cell::Cell::new(0),
            taken: RefCell::new(None),
        };
        let queue = {
            let mem = self.device_memory(&cell, &weave);
            let (event_idx, refused) = (self.model.event_idx, |e: VirtioError| {
                format!("activation refused: {e}")
            });
            match self.model.ring {
                Ring::Split => {
                    let mut q = SplitQueue::new();
                    q.activate(layout, size, event_idx, false, &mem)
                        .map_err(refused)?;
                    Queue::Split(q)
                }
                Ring::Packed => {
                    let mut q = PackedQueue::new();
                    q.activate(layout, size, event_idx, false, &mem)
                        .map_err(refused)?;
                    Queue::Packed(q)
                }
            }
        };
        world = cell.into_inner();
        if let Queue::Packed(_) = queue {
            // Both sides start with the packed ring's wrap counters at 1.
            world.driver.avail_idx = RingPosition::START.off_wrap();
            world.driver.last_used = RingPosition::START.off_wrap();
        }
        world.queue = queue;
        Ok(world)
    }

    fn device_memory<'w>(
        &self,
        world: &'w RefCell<World>,
        weave: &'w Weave<'w>,
    ) -> DeviceMemory<'w> {
        let policy = if self.model.control == Control::MaintenanceOff {
            Policy::Nothing
        } else {
            Policy::Maintain
        };
        DeviceMemory {
            world,
            weave,
            uncached_below: if self.model.within
                && self.model.ring == Ring::Packed
                && self.model.control != Control::CachedRing
            {
                self.layout.buffers
            } else {
                0
            },
            // Merged per line and per batch, as the hypervisor runs them.
            hooks: MaintainHooks::new(
                Ops { world, weave },
                policy,
                HostVirtAddr::new(0),
                self.layout.end as u64,
            )
            .merged(),
            prewrite: self.model.control != Control::NoPrewrite,
            end: self.layout.end,
        }
    }

    /// Runs `step` on the device with the queue taken out of the world,
    /// with `injection` if any. Returns the next world, the step's result,
    /// how many accesses it made, and the label of the injected driver step
    /// if one was taken.
    fn device<R>(
        &self,
        world: &World,
        injection: Option<Injection>,
        step: &dyn Fn(&mut Queue, &DeviceMemory<'_>, &mut Option<String>) -> R,
    ) -> (World, R, usize, Option<String>) {
        let mut queue = world.queue.clone();
        let cell = RefCell::new(world.clone());
        let weave = Weave {
            checker: self,
            injection,
            events: core::cell::Cell::new(0),
            taken: RefCell::new(None),
        };
        let mut error = None;
        let r = {
            let mem = self.device_memory(&cell, &weave);
            let r = step(&mut queue, &mem, &mut error);
            // The operation ends: merged maintenance issues its deferred
            // cleans here, still inside the operation.
            mem.end_operation();
            r
        };
        let mut next = cell.into_inner();
        next.queue = queue;
        if let Some(e) = error {
            next.violate(e);
        }
        (next, r, weave.events.get(), weave.taken.into_inner())
    }

    /// The successors of one device operation: run alone, and (with
    /// [`Model::within`]) with each driver step open at each of its
    /// accesses slipped in before that access.
    fn device_op<R>(
        &self,
        w: &World,
        out: &mut Vec<(String, World)>,
        step: &dyn Fn(&mut Queue, &DeviceMemory<'_>, &mut Option<String>) -> R,
        finish: &dyn Fn(World, R) -> Option<(String, World)>,
    ) {
        let (n, r, events, _) = self.device(w, None, step);
        if let Some(s) = finish(n, r) {
            out.push(s);
        }
        if !self.model.within || w.driver.waiting {
            return;
        }
        // Before access 0 is the driver moving first: already a path.
        for at in 1..events {
            for choice in 0.. {
                let (n, r, _, taken) = self.device(w, Some(Injection { at, choice }), step);
                let Some(driver) = taken else {
                    break;
                };
                if let Some((label, n)) = finish(n, r) {
                    out.push((format!("{label} [before its access {at}: {driver}]"), n));
                }
            }
        }
    }

    /// The driver's steps, if it is awake.
    fn driver_steps(&self, w: &World, out: &mut Vec<(String, World)>) {
        if !w.driver.waiting {
            match self.model.ring {
                Ring::Split => self.split_driver(w, out),
                Ring::Packed => self.packed_driver(w, out),
            }
        }
    }

    fn used_event_at(&self) -> usize {
        self.layout.avail + 4 + 2 * usize::from(self.model.size)
    }
    fn avail_event_at(&self) -> usize {
        self.layout.used + 4 + 8 * usize::from(self.model.size)
    }

    /// The split ring's driver steps (§2.7).
    fn split_driver(&self, w: &World, out: &mut Vec<(String, World)>) {
        let size = self.model.size;
        let l = self.layout;
        let d = &w.driver;
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
            self.take_back(&mut n, id, len);
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

    /// The device's steps: serve a chain, publish, or re-arm and sleep.
    fn device_steps(&self, w: &World, out: &mut Vec<(String, World)>) {
        let serve = |q: &mut Queue, mem: &DeviceMemory<'_>, error: &mut Option<String>| {
            let served = q.serve(mem, |id, desc| {
                let mut buf = [0u8; BUF_LEN];
                if desc.writable {
                    // The device's data: the pattern of the buffer the id carries.
                    let k = mem.world.borrow().driver.in_flight[usize::from(id) % 4].unwrap_or(0);
                    buf = [pattern(k); BUF_LEN];
                    let _ = mem.write(desc.addr, &buf);
                    desc.len
                } else {
                    let _ = mem.read(desc.addr, &mut buf);
                    0
                }
            });
            served.unwrap_or_else(|e| {
                *error = Some(format!("device error: {e}"));
                Some(u16::MAX)
            })
        };
        self.device_op(w, out, &serve, &|n, served| {
            served.map(|id| (format!("device serves buffer id {id}"), n))
        });
        if w.queue.has_unpublished_used() {
            let publish = |q: &mut Queue, mem: &DeviceMemory<'_>, error: &mut Option<String>| {
                q.publish_used(mem).unwrap_or_else(|e| {
                    *error = Some(format!("device error: {e}"));
                    false
                })
            };
            self.device_op(w, out, &publish, &|mut n, interrupt| {
                n.interrupt |= interrupt;
                let label = if interrupt {
                    "device publishes, interrupts"
                } else {
                    "device publishes"
                };
                Some((String::from(label), n))
            });
        } else {
            let recheck = self.model.control != Control::NoDeviceRecheck;
            let rearm = |q: &mut Queue, mem: &DeviceMemory<'_>, error: &mut Option<String>| match q
                .enable_notification(mem)
            {
                Ok(more) => more && recheck,
                Err(e) => {
                    *error = Some(format!("device error: {e}"));
                    false
                }
            };
            self.device_op(w, out, &rearm, &|mut n, more| {
                n.device_awake = more;
                let label = if more {
                    "device re-arms, sees more"
                } else {
                    "device re-arms and sleeps"
                };
                Some((String::from(label), n))
            });
        }
    }

    /// The driver takes buffer `id` back with `len` bytes written: it must
    /// be in flight (else it was used twice, or never posted), and a buffer
    /// the device wrote must hold the device's data.
    fn take_back(&self, n: &mut World, id: usize, len: u32) {
        match n.driver.in_flight.get(id).copied().flatten() {
            None => n.violate(format!("buffer used twice or never posted: id {id}")),
            Some(k) => {
                if k.is_multiple_of(2) {
                    let data = n.driver_read(self.layout.buffer(id), BUF_LEN);
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
    }

    /// The packed ring's driver steps (§2.8), one descriptor per buffer,
    /// the Buffer ID naming the buffer slot. `avail_idx` and `last_used`
    /// hold the driver's next avail and next used positions as `off_wrap`.
    fn packed_driver(&self, w: &World, out: &mut Vec<(String, World)>) {
        let size = self.model.size;
        let l = self.layout;
        let d = &w.driver;
        let next_avail = RingPosition::from_off_wrap(d.avail_idx);
        let next_used = RingPosition::from_off_wrap(d.last_used);
        let outstanding = d.in_flight.iter().filter(|s| s.is_some()).count();
        let free = (0..usize::from(size)).find(|&i| d.in_flight[i].is_none());
        if let (true, Some(id)) = (d.posted < self.model.buffers, free) {
            let mut n = w.clone();
            let k = d.posted;
            let buf = l.buffer(id);
            let writable = k.is_multiple_of(2);
            if !writable {
                n.driver_write(buf, &[pattern(k); BUF_LEN]);
            }
            let at = l.desc + 16 * usize::from(next_avail.index);
            let mut body = [0u8; 14];
            body[..8].copy_from_slice(&(buf as u64).to_le_bytes());
            body[8..12].copy_from_slice(&(BUF_LEN as u32).to_le_bytes());
            body[12..14].copy_from_slice(&(id as u16).to_le_bytes());
            n.driver_write(at, &body);
            let lap = if next_avail.wrap {
                VIRTQ_DESC_F_AVAIL
            } else {
                VIRTQ_DESC_F_USED
            };
            let flags = lap | if writable { F_WRITE } else { 0 };
            // The flags last: they make the descriptor available.
            n.driver_write(at + 14, &flags.to_le_bytes());
            let after = next_avail.advance(1, size);
            n.driver.avail_idx = after.off_wrap();
            n.driver.in_flight[id] = Some(k);
            n.driver.posted += 1;
            // Linux's virtqueue_kick_prepare_packed: the device's structure.
            let event_flags = n.driver_read_u16(l.used + 2) & 3;
            let off_wrap = n.driver_read_u16(l.used);
            let notify = match event_flags {
                RING_EVENT_FLAGS_DISABLE => false,
                RING_EVENT_FLAGS_DESC if self.model.event_idx => {
                    let event = RingPosition::from_off_wrap(off_wrap);
                    let mut event_idx = Wrapping(event.index);
                    if event.wrap != after.wrap {
                        event_idx -= Wrapping(size);
                    }
                    let new = Wrapping(after.index);
                    let old = new - Wrapping(1);
                    if self.model.control == Control::DriverEventEquality {
                        event_idx == new
                    } else {
                        need_event(event_idx, new, old)
                    }
                }
                _ => true,
            };
            n.notify |= notify;
            let tail = if notify { ", notifies" } else { "" };
            out.push((format!("driver posts buffer {k} with id {id}{tail}"), n));
        }
        // Reap the used descriptor at its next used slot, if there is one.
        let mut n = w.clone();
        let at = l.desc + 16 * usize::from(next_used.index);
        let flags = n.driver_read_u16(at + 14);
        if n.violation.is_some() {
            out.push((String::from("driver reads a descriptor's flags"), n.clone()));
        }
        let used = |flags: u16| {
            (flags & VIRTQ_DESC_F_USED != 0) == next_used.wrap
                && (flags & VIRTQ_DESC_F_AVAIL != 0) == next_used.wrap
        };
        if outstanding > 0 && used(flags) {
            let e = n.driver_read(at + 8, 6);
            let len = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
            let id = usize::from(u16::from_le_bytes([e[4], e[5]]));
            self.take_back(&mut n, id, len);
            n.driver.last_used = next_used.advance(1, size).off_wrap();
            n.driver.armed = false;
            out.push((format!("driver reaps id {id}"), n));
        }
        // Re-enable interrupts: RING_EVENT_FLAGS_DESC at its next used slot
        // with EVENT_IDX, else RING_EVENT_FLAGS_ENABLE ...
        if !d.armed && outstanding > 0 {
            let mut n = w.clone();
            if self.model.event_idx {
                n.driver_write(l.avail, &next_used.off_wrap().to_le_bytes());
                n.driver_write(l.avail + 2, &RING_EVENT_FLAGS_DESC.to_le_bytes());
            } else {
                n.driver_write(l.avail + 2, &RING_EVENT_FLAGS_ENABLE.to_le_bytes());
            }
            n.driver.armed = true;
            out.push((String::from("driver re-enables interrupts"), n));
        }
        // ... then look at the next used slot once more before sleeping.
        if d.armed {
            let mut n = w.clone();
            let more =
                self.model.control != Control::NoDriverRecheck && used(n.driver_read_u16(at + 14));
            n.driver.armed = false;
            n.driver.waiting = !more;
            let label = if more {
                "driver looks again, sees more"
            } else {
                "driver looks again and sleeps"
            };
            out.push((String::from(label), n));
        }
    }

    /// Every successor of `w`, labelled. Cache steps come last.
    fn successors(&self, w: &World) -> Vec<(String, World)> {
        let mut out = Vec::new();
        // --- the driver ---
        self.driver_steps(w, &mut out);
        // --- the device ---
        if w.device_awake {
            self.device_steps(w, &mut out);
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
            let wrote = core::mem::take(&mut n.cached_writes);
            n.canonicalize();
            if self.model.prefetch {
                all.extend(self.with_stale_copies(w, label, n, &wrote));
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
    /// Not for lines the device wrote through the cache in the step
    /// (`wrote`): such a copy would have taken the write.
    fn with_stale_copies(
        &self,
        before: &World,
        label: String,
        next: World,
        wrote: &std::collections::BTreeSet<usize>,
    ) -> Vec<(String, World)> {
        let size = self.model.line;
        let changed: Vec<usize> = (0..self.layout.end / size)
            .filter(|&line| {
                let span = line * size..(line + 1) * size;
                !wrote.contains(&line)
                    && !before.cache.contains_key(&line)
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
                    let data = before.mem[line * size..(line + 1) * size].to_vec();
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
        layout: Layout::new(
            model.ring,
            model.size,
            model.line,
            model.within && model.control != Control::SharedLines,
        ),
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
        "{:<6} N={} bufs={} {:<9} {:<19} {:>9} states {:>10} transitions {:>7.2} s  {}{}",
        match m.ring {
            Ring::Split => "split",
            Ring::Packed => "packed",
        },
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

/// `oracle --exhaustive [--max-size N] [--limit STATES] [--line B]
/// [--split|--packed] [--within|--between]`: the table, each queue with
/// one buffer more than its size, with and without EVENT_IDX, as built and
/// with every control that applies. Two parts: driver steps between the
/// device's operations (split queues of sizes 2 and 4, packed of 2 to 4,
/// up to N, default 4; 16-byte lines), then driver steps inside them too
/// (sizes up to 3; 32-byte lines, two descriptors to a line). `--within`
/// or `--between` runs one part. Returns the exit code: 1 if any row is
/// not as expected.
pub fn main_exhaustive(args: &[String]) -> i32 {
    let mut max_size = 4u16;
    let mut limit = 20_000_000usize;
    let mut line = None;
    let mut parts = [false, true].to_vec();
    let mut rings = [Ring::Split, Ring::Packed].to_vec();
    let mut i = 0;
    while i < args.len() {
        let value = args
            .get(i + 1)
            .and_then(|v| v.replace('_', "").parse::<usize>().ok());
        match (args[i].as_str(), value) {
            ("--exhaustive", _) => {}
            ("--within", _) => parts = [true].to_vec(),
            ("--between", _) => parts = [false].to_vec(),
            ("--split", _) => rings = [Ring::Split].to_vec(),
            ("--packed", _) => rings = [Ring::Packed].to_vec(),
            ("--line", Some(v)) if [16, 32, 64].contains(&v) => {
                line = Some(v);
                i += 1;
            }
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
                    "usage: oracle --exhaustive [--max-size 2..4] [--limit STATES] [--line 16|32|64] [--split|--packed] [--within|--between] (not {other})"
                );
                return 2;
            }
        }
        i += 1;
    }
    let mut failed = 0;
    let started = Instant::now();
    for within in parts {
        // Inside operations the question is lines both sides write: make a
        // line hold two descriptors.
        let line = line.unwrap_or(if within { 32 } else { LINE });
        let max_size = if within { max_size.min(3) } else { max_size };
        std::println!(
            "exhaustive check of the rings with their maintenance: non-coherent driver, {line}-byte lines, evictions and speculative fills anywhere, driver steps {}",
            if within { "also inside the device's operations" } else { "between the device's operations" }
        );
        // A split queue's size is a power of two (§2.7); a packed one's need not be.
        let models = [
            (Ring::Split, 2u16),
            (Ring::Split, 4),
            (Ring::Packed, 2),
            (Ring::Packed, 3),
            (Ring::Packed, 4),
        ];
        for (ring, size) in models
            .into_iter()
            .filter(|&(r, s)| s <= max_size && rings.contains(&r))
        {
            for event_idx in [true, false] {
                for control in Control::ALL {
                    let model = Model {
                        line,
                        within,
                        ring,
                        size,
                        buffers: u8::try_from(size + 1).unwrap_or(u8::MAX),
                        event_idx,
                        prefetch: true,
                        control,
                    };
                    if !control.applies(&model) {
                        continue;
                    }
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
