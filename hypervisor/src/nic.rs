//! The VMs' virtio-net devices and the switches that join them: trapped
//! transport accesses, running a switch when a driver notifies, and the
//! device interrupts that completions raise through the virtual GIC.
//!
//! Exits per packet (issue 13): a busy NIC's interrupts are moderated
//! ([`MODERATION_MS`], a bounded delay), a busy sender's TX queue is polled
//! on its VM's exits rather than kicked ([`TX_IDLE_MS`]), and the counter
//! line says which registers trapped.
//!
//! Lock order (outer to inner): a switch's `SwitchState`, then the
//! `NicState`s of its ports in port order, then a VM's `vgic`. A transport
//! access takes only its `NicState` and releases it before it runs the
//! switch. Mapping or unmapping a packed ring's Non-cacheable alias
//! (`ring_access`, a reset) takes the EL2 tables' lock (`mm`) under a
//! `NicState`.
//!
//! Bounded work (issue 10): one lock hold of a switch and its members
//! (interrupts masked, at EL2) is one [`Switch::run`], whose work is bounded
//! by constants (`TX_FRAMES_PER_RUN` frames per transmit queue, `RUN_BUDGET`
//! in all, each chain at most twice the queue size descriptors), never by
//! how far ahead a guest's avail index runs. What is left is marked pending
//! for this CPU, which kicks itself: the guest it re-enters exits at once,
//! interrupts and the other CPUs get the locks, and [`run_pending`] takes
//! the next run.

use crate::arch::gic::Gic;
use crate::guest_mem::VmMemory;
use crate::sched::{kick_vcpus, system};
use crate::uplink::Uplink;
use alloc::vec::Vec;
use chroma_core::exit::AccessWidth;
use chroma_virtio::mmio::MmioAction;
use chroma_virtio::net::{NetPort, VirtioNet};
use chroma_virtio::port::{
    DropReason, NetHeader, Port, RxPush, TxPoll, MAX_FRAME_LEN, MIN_FRAME_LEN,
};
use chroma_virtio::switch::{Switch, MAX_PORTS};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use spin::Mutex;

/// Consecutive single-frame polls after which a NIC stops deferring kicks.
const SYNCHRONOUS_POLLS: u64 = 8;

/// Interrupt moderation: a busy NIC (it moved at least [`BUSY_PACKETS`]
/// packets between its last two interrupts, which came less than
/// [`BUSY_HORIZON_MS`] apart) that interrupted its guest less than this
/// long ago holds its next interrupt until then ([`deliver_held`]; every
/// CPU's timer covers the bound, [`held_deadline`]), so that the guest
/// takes at most one interrupt per period however many batches the switch
/// delivers meanwhile. A lone packet, pings one after the other, or the
/// first interrupts after a pause are signalled at once. Holding for a
/// bounded time keeps §2.7.10's "MUST send a notification": it is late,
/// never lost. Two milliseconds: at 10 ms the Linux pair's TCP throughput
/// fell to 0.51 of plain QEMU's (0.84 at 1 ms) for 0.022 instead of 0.033
/// interrupts per packet. At 1 ms the floor is in time, not packets: on a
/// host half as fast (raspi4b under TCG, ~28 MiB/s) the receiving Linux
/// NIC took 0.052 traps per packet (an interrupt's ACK, and the ACK
/// segments it sends back, each trap); at 2 ms 0.038, with its throughput
/// and ping unchanged within the host's noise.
const MODERATION_MS: u64 = 2;

/// Packets (both directions, counted as on a wire: a GSO frame as the TCP
/// segments it carries, `PortCounters::wire_packets`) between two
/// interrupts that make a NIC busy. Counted in frames, a TSO sender moving
/// one 64 KiB frame per interrupt never looked busy.
const BUSY_PACKETS: u64 = 16;

/// ... if the two came less than this apart.
const BUSY_HORIZON_MS: u64 = 4 * MODERATION_MS;

/// Packets on a wire one TX kick must bring (a GSO frame counting as its
/// segments) for its NIC to switch to deferred, polled TX kicks: a driver
/// that batches frames (Linux's xmit_more) and a TSO sender handing over a
/// multi-segment frame per kick both qualify, a driver that sends one
/// small frame per kick does not.
const BATCH_PACKETS: u64 = 2;

/// A polled NIC (deferred TX kicks) that found transmit work less than this
/// long ago keeps kicks off when a poll finds its queue empty, and is polled
/// again at its VM's next exit (at most `run::POLL_MS` away while the vCPU
/// runs; a vCPU that sleeps adds nothing to its queue). Only after this long
/// without work does the poll re-arm kicks (`net::poll_tx`), so a busy
/// sender is not asked to kick each time it pauses between batches.
const TX_IDLE_MS: u64 = 4;

/// A device and the memory view it works through.
pub struct NicState {
    /// The virtio-net device model.
    pub device: VirtioNet,
    /// Its VM's RAM, with the cache policy's hooks.
    pub memory: VmMemory,
}

/// Event counts of one NIC, and its interrupt moderation and TX polling
/// state.
#[derive(Default)]
pub struct NicCounters {
    /// Transport accesses that trapped.
    pub traps: AtomicU64,
    /// Queue notifications (kicks) from the driver.
    pub notifies: AtomicU64,
    /// Device interrupts injected into the guest.
    pub interrupts: AtomicU64,
    /// Polls that found transmit work (instead of a kick).
    pub polls: AtomicU64,
    /// Consecutive polls that found a single frame.
    pub single_frame_polls: AtomicU64,
    /// QueueNotify writes naming the receive queue (with the three below,
    /// where the traps come from).
    pub rx_notifies: AtomicU64,
    /// QueueNotify writes naming the transmit queue.
    pub tx_notifies: AtomicU64,
    /// InterruptStatus reads (a driver's interrupt handler: one per interrupt).
    pub status_reads: AtomicU64,
    /// InterruptACK writes (likewise).
    pub acks: AtomicU64,
    /// Interrupts held back by moderation (each delivered later, several
    /// coalesced into one).
    pub held_count: AtomicU64,
    /// Moderation state, kept here so that the NIC's constructor is
    /// unchanged: an interrupt is held ([`MODERATION_MS`]) ...
    pub held: core::sync::atomic::AtomicBool,
    /// ... counting from the last one delivered (counter ticks) ...
    pub last_interrupt: AtomicU64,
    /// ... if it is busy (see [`MODERATION_MS`]) ...
    pub busy: core::sync::atomic::AtomicBool,
    /// ... measured with these: the port's packet count (both directions,
    /// as on a wire) at the last interrupt.
    pub packets_at_interrupt: AtomicU64,
    /// The port's packets sent, as on a wire (a GSO frame as its
    /// segments), as of the last switch run: what a kick or a poll brought.
    pub wire_sent: AtomicU64,
    /// When a poll or kick last found transmit work (counter ticks), for
    /// [`TX_IDLE_MS`].
    pub last_tx_work: AtomicU64,
}

/// One virtio-net NIC of a VM.
pub struct Nic {
    /// Device and memory.
    pub state: Mutex<NicState>,
    /// The switch it is plugged into.
    pub switch: usize,
    /// Its port on that switch.
    pub port: usize,
    /// Its register image, read by the guest without a trap (NICs 0 to 7,
    /// in the page stage 2 maps read-only; see [`RegisterImage`]).
    pub image: Option<RegisterImage>,
    /// Its interrupt (INTID).
    pub intid: u32,
    /// Its MAC address.
    pub mac: [u8; 6],
    /// Port security lifted (`trusted = true` in the configuration).
    pub trusted: bool,
    /// Counters.
    pub counters: NicCounters,
    /// The device defers TX kicks and must be polled on its VM's exits
    /// (mirrors `NetBackend::tx_polling`, readable without the lock).
    pub polling: core::sync::atomic::AtomicBool,
}

/// NICs whose windows share the read-only image page (4 KiB / 0x200).
pub const IMAGE_SLOTS: usize = 8;

/// A transport's register window as reads see it, in a hypervisor page that
/// stage 2 maps read-only at the first virtio-mmio page (a register image,
/// see `crate::image`): the guest's loads of InterruptStatus (its interrupt
/// handler), of the identification and queue registers and of the device
/// configuration are served by memory without a trap, while every store
/// still traps. Reads have no side effects in virtio-mmio (§4.2.2), so
/// this changes nothing a driver can observe, provided the image is
/// current whenever the guest may read it: it is rewritten under the NIC's
/// lock after every trapped store, and whenever the device's status or
/// interrupt status moved ([`sync_image`]) — before the interrupt that
/// tells the guest to read it.
pub struct RegisterImage {
    words: crate::image::ImageWords,
}

impl RegisterImage {
    /// The image of slot `slot` (below [`IMAGE_SLOTS`]) of the page at `page`.
    ///
    /// # Safety
    /// `page` is a 4 KiB frame identity-mapped read/write for the
    /// hypervisor, owned by this VM's images for the hypervisor's lifetime,
    /// which nothing else writes.
    pub unsafe fn new(page: u64, slot: usize) -> Self {
        let at = page + (slot * chroma_virtio::mmio::IMAGE_WORDS * 4) as u64;
        // SAFETY: the caller's contract: the frame is mapped, owned and never freed; `slot` keeps the 512-byte window inside it.
        let words = unsafe { crate::image::ImageWords::new(at, chroma_virtio::mmio::IMAGE_WORDS) };
        Self { words }
    }

    /// Writes `image` where it differs, then cleans what changed to PoC.
    fn store(&self, image: &[u32; chroma_virtio::mmio::IMAGE_WORDS]) {
        self.words.store_all(image);
    }

    /// The word at register `offset`.
    fn word(&self, offset: u64) -> u32 {
        self.words.word(offset)
    }
}

/// Fills an image page's slots that no NIC uses as QEMU shows an empty
/// virtio-mmio transport: the magic value, version 2, device ID 0.
///
/// # Safety
/// As [`RegisterImage::new`], for every slot from `first`.
pub unsafe fn fill_empty_slots(page: u64, first: usize) {
    use chroma_virtio::mmio::{reg, IMAGE_WORDS};
    let mut empty = [0u32; IMAGE_WORDS];
    for (offset, value) in [
        (reg::MAGIC_VALUE, 0x7472_6976),
        (reg::VERSION, 2),
        (reg::VENDOR_ID, 0x554d_4551),
    ] {
        if let Some(word) = empty.get_mut((offset / 4) as usize) {
            *word = value;
        }
    }
    for slot in first..IMAGE_SLOTS {
        // SAFETY: the caller's contract, for this slot.
        unsafe { RegisterImage::new(page, slot) }.store(&empty);
    }
}

/// Brings `nic`'s register image up to date with `device` (called under
/// the NIC's lock). Unless `full`, only when the status or interrupt status
/// moved: nothing else a read sees changes without a trapped store.
fn sync_image(nic: &Nic, device: &VirtioNet, full: bool) {
    use chroma_virtio::mmio::reg;
    let Some(image) = &nic.image else {
        return;
    };
    if !full
        && image.word(reg::STATUS) == device.status()
        && image.word(reg::INTERRUPT_STATUS) == device.interrupt_status()
    {
        return;
    }
    let mut words = [0u32; chroma_virtio::mmio::IMAGE_WORDS];
    device.register_image(&mut words);
    image.store(&words);
}

/// Writes `nic`'s whole register image (a new or reset device).
pub fn refresh_image(nic: &Nic) {
    sync_image(nic, &nic.state.lock().device, true);
}

/// A switch: the L2 switch model, its VM ports and the optional uplink.
pub struct SwitchState {
    /// The switch model.
    pub switch: Switch,
    /// (VM index, NIC index) of each VM port, in port order.
    pub members: Vec<(usize, usize)>,
    /// The board's NIC, as the last port.
    pub uplink: Option<Uplink>,
    /// What the runs (one per lock hold) did, for the report.
    pub holds: HoldStats,
}

/// What a switch's runs did, each one lock hold of the switch and its
/// members: the measure of issue 10's bound.
#[derive(Clone, Copy, Debug, Default)]
pub struct HoldStats {
    /// Runs so far.
    pub runs: u64,
    /// Runs that stopped at a bound with work left (continued later).
    pub continued: u64,
    /// Most frames one run took.
    pub most_frames: usize,
    /// Most frames one run took from one port.
    pub most_from_one_port: usize,
}

/// A named switch.
pub struct SwitchEntry {
    /// Name from the configuration.
    pub name: &'static str,
    /// State.
    pub state: Mutex<SwitchState>,
    /// A run stopped with work left: 1 + the CPU that will take the next
    /// run ([`run_pending`]), 0 when none is owed.
    pub pending: AtomicUsize,
}

/// A switch port: a VM's device or the uplink (static dispatch, no `dyn`).
enum AnyPort<'a> {
    Vm(NetPort<'a, VmMemory>),
    Uplink(&'a mut Uplink),
    /// An unused slot of [`run_switch`]'s fixed port table (never handed
    /// to the switch).
    Absent,
}

impl Port for AnyPort<'_> {
    fn poll_tx(&mut self, frame: &mut [u8; MAX_FRAME_LEN]) -> TxPoll {
        match self {
            AnyPort::Vm(p) => p.poll_tx(frame),
            AnyPort::Uplink(p) => p.poll_tx(frame),
            AnyPort::Absent => TxPoll::Empty,
        }
    }
    fn push_rx(&mut self, header: &NetHeader, frame: &[u8]) -> RxPush {
        match self {
            AnyPort::Vm(p) => p.push_rx(header, frame),
            AnyPort::Uplink(p) => p.push_rx(header, frame),
            AnyPort::Absent => RxPush::Dropped(DropReason::PortDown),
        }
    }
    fn push_rx_held(
        &mut self,
        header: &NetHeader,
        eth: &[u8; MIN_FRAME_LEN],
        src: &Self,
    ) -> Option<RxPush> {
        // VM to VM in one copy; the uplink's frames are in its own buffers
        // and the switch copies them.
        match (self, src) {
            (AnyPort::Vm(p), AnyPort::Vm(s)) => p.push_rx_held(header, eth, s),
            _ => None,
        }
    }
    fn read_held(&mut self, frame: &mut [u8]) -> bool {
        match self {
            AnyPort::Vm(p) => p.read_held(frame),
            AnyPort::Uplink(p) => p.read_held(frame),
            AnyPort::Absent => false,
        }
    }
    fn read_held_at(&mut self, offset: usize, buf: &mut [u8]) -> bool {
        match self {
            AnyPort::Vm(p) => p.read_held_at(offset, buf),
            AnyPort::Uplink(p) => p.read_held_at(offset, buf),
            AnyPort::Absent => false,
        }
    }
    fn accepts_gso(&self, gso_type: u8) -> bool {
        // The uplink's NIC takes Ethernet frames only: the switch cuts
        // GSO frames for it.
        match self {
            AnyPort::Vm(p) => p.accepts_gso(gso_type),
            AnyPort::Uplink(p) => p.accepts_gso(gso_type),
            AnyPort::Absent => false,
        }
    }
    fn release_tx(&mut self) {
        match self {
            AnyPort::Vm(p) => p.release_tx(),
            AnyPort::Uplink(p) => p.release_tx(),
            AnyPort::Absent => {}
        }
    }
    fn unpoll_tx(&mut self) -> bool {
        match self {
            AnyPort::Vm(p) => p.unpoll_tx(),
            AnyPort::Uplink(p) => p.unpoll_tx(),
            AnyPort::Absent => false,
        }
    }
    fn accepts_partial_checksum(&self) -> bool {
        match self {
            AnyPort::Vm(p) => p.accepts_partial_checksum(),
            AnyPort::Uplink(p) => p.accepts_partial_checksum(),
            AnyPort::Absent => false,
        }
    }
    fn flush(&mut self) {
        match self {
            AnyPort::Vm(p) => p.flush(),
            AnyPort::Uplink(p) => p.flush(),
            AnyPort::Absent => {}
        }
    }
}

/// Milliseconds since boot, the switch's clock for address ageing.
fn now_ms() -> u64 {
    system().clock.ms(crate::arch::cpu::now())
}

/// Emulates an access to NIC `index` of VM `vm` at `offset`. Returns the
/// value of a read. Accesses the transport refuses (bad width, alignment,
/// read-only register) read as zero and are ignored, as on QEMU; the
/// transport counts them.
#[allow(clippy::too_many_arguments)] // one trapped access, described in full
pub fn mmio(
    gic: &Gic,
    me: usize,
    vm_index: usize,
    index: usize,
    offset: u64,
    width: AccessWidth,
    write: Option<u64>,
    cacheable: bool,
) -> u64 {
    let width = width.byte_count();
    let sys = system();
    let vm = &sys.vms[vm_index];
    let nic = &vm.nics[index];
    nic.counters.traps.fetch_add(1, Ordering::Relaxed);
    match (offset, write) {
        (chroma_virtio::mmio::reg::INTERRUPT_STATUS, None) => {
            nic.counters.status_reads.fetch_add(1, Ordering::Relaxed);
        }
        (chroma_virtio::mmio::reg::INTERRUPT_ACK, Some(_)) => {
            nic.counters.acks.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
    let (value, action, edge) = {
        let mut guard = nic.state.lock();
        let NicState { device, memory } = &mut *guard;
        match write {
            Some(v) => {
                let action = device
                    .mmio_write(offset, width, chroma_core::exit::low_word(v), memory)
                    .unwrap_or(MmioAction::None);
                // A kick changes no register a read sees, and an ACK only
                // InterruptStatus, which the cheap check compares: only the
                // other stores (rare: set-up, status) need the whole image.
                let full = !matches!(
                    offset,
                    chroma_virtio::mmio::reg::QUEUE_NOTIFY
                        | chroma_virtio::mmio::reg::INTERRUPT_ACK
                );
                sync_image(nic, device, full);
                (0, action, device.take_irq_edge())
            }
            None => (
                u64::from(device.mmio_read(offset, width).unwrap_or(0)),
                MmioAction::None,
                false,
            ),
        }
    };
    if edge {
        inject(gic, me, vm_index, nic, None);
    }
    match action {
        MmioAction::Notify(queue) => {
            nic.counters.notifies.fetch_add(1, Ordering::Relaxed);
            if usize::from(queue) == chroma_virtio::net::TX_QUEUE {
                nic.counters
                    .last_tx_work
                    .store(crate::arch::cpu::now(), Ordering::Relaxed);
                &nic.counters.tx_notifies
            } else {
                &nic.counters.rx_notifies
            }
            .fetch_add(1, Ordering::Relaxed);
            let before = nic.counters.wire_sent.load(Ordering::Acquire);
            run_switch(gic, me, nic.switch);
            // A driver that queues several frames before it kicks (Linux,
            // with xmit_more), or a TSO sender handing over a frame of many
            // segments, gains from polling instead of a kick per batch:
            // switch this NIC to deferred kicks once a kick brings a batch
            // ([`BATCH_PACKETS`]).
            let brought = nic
                .counters
                .wire_sent
                .load(Ordering::Acquire)
                .saturating_sub(before);
            if usize::from(queue) == chroma_virtio::net::TX_QUEUE
                && nic.counters.single_frame_polls.load(Ordering::Relaxed) < SYNCHRONOUS_POLLS
                && brought >= BATCH_PACKETS
            {
                let mut guard = nic.state.lock();
                if !guard.device.device.defer_tx {
                    guard.device.device.defer_tx = true;
                    if vm.notice_allowed() {
                        log::info!("vm {}: its driver batches transmits: TX kicks deferred, the queue is polled", vm.name);
                    }
                }
            }
        }
        MmioAction::Reset => {
            // The rings are gone: reach their pages cacheable again.
            nic.state.lock().memory.forget_rings();
            sys.switches[nic.switch]
                .state
                .lock()
                .switch
                .port_reset(nic.port)
        }
        MmioAction::DriverOk => {
            choose_policy(vm, nic, cacheable);
            run_switch(gic, me, nic.switch)
        }
        MmioAction::None => {}
    }
    // A queue made ready while the driver runs (§3.1.1 has the driver set
    // them up before DRIVER_OK, but a late one must not be reached through
    // the wrong alias): the rings' aliases are chosen again.
    if write.is_some() && offset == chroma_virtio::mmio::reg::QUEUE_READY {
        let mut guard = nic.state.lock();
        if guard.device.is_live() {
            let NicState { device, memory } = &mut *guard;
            let access = ring_access(device, memory);
            sync_image(nic, device, false);
            // A refusal failed the device: its configuration interrupt.
            let edge = device.take_irq_edge();
            drop(guard);
            if edge {
                inject(gic, me, vm_index, nic, None);
            }
            if matches!(access, RingAccess::PackedRefused(_)) && vm.notice_allowed() {
                log::info!("vm {}: queue made ready late: {access}", vm.name);
            }
        }
    }
    value
}

/// The driver just started: look at how the guest maps memory and pick the
/// cache policy for this device's view of it. A guest running with its MMU
/// or data cache off accesses the rings Non-cacheable while the hypervisor's
/// alias is cacheable (mismatched attributes): that needs maintenance on any
/// cache (REFERENCE.md), even where colouring or nothing would do otherwise.
fn choose_policy(vm: &crate::vm::Vm, nic: &Nic, cached: bool) {
    use chroma_cache::{GuestMemoryType, Policy, PolicyInputs};
    let (geometry, forced) = &system().cache;
    // `cached`: how the vCPU that wrote DRIVER_OK maps memory (the arch
    // seam reads its MMU and cache enables).
    let guest_memory = if cached {
        GuestMemoryType::WriteBack
    } else {
        GuestMemoryType::NonCacheable
    };
    let inputs = PolicyInputs {
        guest_memory,
        forced: *forced,
        ..PolicyInputs::default()
    };
    let policy = match geometry {
        Some(g) => Policy::choose(g, inputs),
        None => Policy::Maintain,
    };
    let rings = {
        let mut guard = nic.state.lock();
        let NicState { device, memory } = &mut *guard;
        memory.set_policy(policy, crate::mm::alias_window(), !cached);
        let rings = ring_access(device, memory);
        // A refusal failed the device (its status moved).
        sync_image(nic, device, false);
        rings
    };
    if !vm.notice_allowed() {
        return;
    }
    log::info!(
        "vm {}: NIC driver up, guest caches {}: cache policy {:?}, {}",
        vm.name,
        if cached { "on" } else { "off" },
        policy,
        rings
    );
}

/// How the device reaches its rings, as the policy line says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RingAccess {
    /// Split rings: through the cacheable alias, with the policy's hooks.
    Split,
    /// Packed rings through the cacheable alias: the policy does not
    /// maintain, or the driver's caches are on (coherent: a forced policy's
    /// maintenance keeps one copy), so both sides see one coherent copy.
    PackedCached,
    /// Packed rings through their pages' Non-cacheable alias, without
    /// maintenance: the policy maintains and the driver reaches memory
    /// uncached (docs/caches.md).
    PackedUncached,
    /// Packed rings under a maintaining policy whose Non-cacheable alias
    /// could not be made: the device is failed (DEVICE_NEEDS_RESET) rather
    /// than run a ring it could corrupt.
    PackedRefused(crate::guest_mem::RingAliasError),
}

impl core::fmt::Display for RingAccess {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RingAccess::Split => f.write_str("split ring"),
            RingAccess::PackedCached => f.write_str("packed ring via the cacheable alias"),
            RingAccess::PackedUncached => f.write_str("packed ring via NC alias"),
            RingAccess::PackedRefused(e) => {
                write!(
                    f,
                    "packed ring refused (no NC alias: {e}), device needs reset"
                )
            }
        }
    }
}

/// At DRIVER_OK (and a queue made ready after it): if the driver took the
/// packed ring, `memory`'s policy maintains and the driver reaches memory
/// uncached (its caches off), reach every live queue's
/// descriptor ring and event suppression structures (§2.8.10, §2.8.14)
/// through the Non-cacheable alias; otherwise through the cacheable one, as
/// split rings always are.
fn ring_access(device: &mut VirtioNet, memory: &mut VmMemory) -> RingAccess {
    use chroma_virtio::packed::EVENT_SUPPRESSION_BYTES;
    use chroma_virtio::queue::DESCRIPTOR_SIZE;
    memory.forget_rings();
    if !device.has_feature(chroma_virtio::mmio::feature::RING_PACKED) {
        return RingAccess::Split;
    }
    if !memory.maintains() || !memory.guest_uncached() {
        return RingAccess::PackedCached;
    }
    let mut parts = [(chroma_mem::GuestPhysAddr::new(0), 0u64); crate::guest_mem::RING_PARTS];
    let mut count = 0;
    for index in [chroma_virtio::net::RX_QUEUE, chroma_virtio::net::TX_QUEUE] {
        let Some(queue) = device.queue(index).filter(|q| q.ready() && q.is_packed()) else {
            continue;
        };
        let layout = queue.layout();
        for part in [
            (layout.desc, u64::from(layout.size) * DESCRIPTOR_SIZE),
            (layout.avail, EVENT_SUPPRESSION_BYTES),
            (layout.used, EVENT_SUPPRESSION_BYTES),
        ] {
            if let Some(slot) = parts.get_mut(count) {
                *slot = part;
                count += 1;
            }
        }
    }
    match memory.uncache_rings(parts.get(..count).unwrap_or(&[])) {
        Ok(()) => RingAccess::PackedUncached,
        Err(e) => {
            device.fail();
            RingAccess::PackedRefused(e)
        }
    }
}

/// Packets a port sent, as on a wire: a GSO frame as the TCP segments it
/// carries (the sending half of `PortCounters::wire_packets`).
fn wire_sent(counts: &chroma_virtio::switch::PortCounters) -> u64 {
    counts
        .tx_packets
        .saturating_sub(counts.tx_gso)
        .saturating_add(counts.tx_gso_segments)
}

/// Raises `nic`'s interrupt in its VM, or holds it if the NIC is busy and
/// its last one recent (moderation: see [`MODERATION_MS`]). `packets`: the
/// port's packet count (both directions, as on a wire), if known (without
/// it the interrupt is never held).
fn inject(gic: &Gic, me: usize, vm_index: usize, nic: &Nic, packets: Option<u64>) {
    let sys = system();
    let now = crate::arch::cpu::now();
    let last = nic.counters.last_interrupt.load(Ordering::Acquire);
    if packets.is_some()
        && now.saturating_sub(last) < sys.clock.ticks(MODERATION_MS)
        && nic.counters.busy.load(Ordering::Acquire)
    {
        if !nic.counters.held.swap(true, Ordering::AcqRel) {
            HELD_NICS.fetch_add(1, Ordering::AcqRel);
            nic.counters.held_count.fetch_add(1, Ordering::Relaxed);
        }
        return;
    }
    let busy = packets.is_some_and(|packets| {
        let before = nic
            .counters
            .packets_at_interrupt
            .swap(packets, Ordering::AcqRel);
        // The count only grows (the switch keeps a port's counters across
        // resets).
        now.saturating_sub(last) < sys.clock.ticks(BUSY_HORIZON_MS)
            && packets.saturating_sub(before) >= BUSY_PACKETS
    });
    deliver(gic, me, vm_index, nic, now, busy);
}

/// Injects `nic`'s interrupt now (and ends any hold); `busy`: whether the
/// next one may be held.
fn deliver(gic: &Gic, me: usize, vm_index: usize, nic: &Nic, now: u64, busy: bool) {
    let vm = &system().vms[vm_index];
    clear_held(nic);
    nic.counters.last_interrupt.store(now, Ordering::Release);
    nic.counters.busy.store(busy, Ordering::Release);
    nic.counters.interrupts.fetch_add(1, Ordering::Relaxed);
    let kick = vm.vgic.lock().inject(0, nic.intid);
    kick_vcpus(gic, vm, kick, me);
}

/// NICs holding an interrupt: lets every exit's [`deliver_held`] and every
/// timer arm's [`held_deadline`] skip the walk over all NICs when none is
/// held, which is nearly always. (Set after a NIC's flag and cleared with
/// it, so it may read high for an instant, never low while one is due.)
static HELD_NICS: AtomicUsize = AtomicUsize::new(0);

/// Ends `nic`'s hold; whether it had one.
fn clear_held(nic: &Nic) -> bool {
    let was = nic.counters.held.swap(false, Ordering::AcqRel);
    if was {
        HELD_NICS.fetch_sub(1, Ordering::AcqRel);
    }
    was
}

/// Delivers the held interrupts that are due. Called with [`run_pending`],
/// after every exit and idle wake of every CPU.
pub fn deliver_held(gic: &Gic, me: usize) {
    if HELD_NICS.load(Ordering::Acquire) == 0 {
        return;
    }
    let sys = system();
    let now = crate::arch::cpu::now();
    let window = sys.clock.ticks(MODERATION_MS);
    for (vm_index, vm) in sys.vms.iter().enumerate() {
        for nic in vm.nics.iter() {
            if !nic.counters.held.load(Ordering::Acquire) {
                continue;
            }
            let due = nic
                .counters
                .last_interrupt
                .load(Ordering::Acquire)
                .saturating_add(window);
            if now >= due && clear_held(nic) {
                deliver(gic, me, vm_index, nic, now, true);
            }
        }
    }
}

/// The earliest moment a held interrupt is due, if any is held: every
/// CPU's timer deadline includes it, so none is held past its bound.
pub fn held_deadline() -> Option<u64> {
    if HELD_NICS.load(Ordering::Acquire) == 0 {
        return None;
    }
    let sys = system();
    let window = sys.clock.ticks(MODERATION_MS);
    sys.vms
        .iter()
        .flat_map(|vm| vm.nics.iter())
        .filter(|nic| nic.counters.held.load(Ordering::Acquire))
        .map(|nic| {
            nic.counters
                .last_interrupt
                .load(Ordering::Acquire)
                .saturating_add(window)
        })
        .min()
}

/// Runs switch `index` once, bounded by constants (see the module docs),
/// then raises the interrupts the completions asked for. If the run left
/// work, the next run is owed by this CPU ([`run_pending`]), which kicks
/// itself so that it comes back at once with interrupts taken in between.
pub fn run_switch(gic: &Gic, me: usize, index: usize) {
    let sys = system();
    let Some(entry) = sys.switches.get(index) else {
        return;
    };
    let mut guard = entry.state.lock();
    let SwitchState {
        switch,
        members,
        uplink,
        holds,
    } = &mut *guard;
    // Fixed tables, no allocation per run: the configuration and
    // `build_switches` keep a switch at most MAX_PORTS ports, uplink included.
    let mut member_iter = members.iter();
    let mut states: [Option<spin::MutexGuard<'_, NicState>>; MAX_PORTS] =
        core::array::from_fn(|_| {
            member_iter
                .next()
                .map(|&(v, n)| sys.vms[v].nics[n].state.lock())
        });
    let count = members.len().min(MAX_PORTS);
    let report = {
        let mut vm_states = states.iter_mut().flatten();
        let mut uplink = uplink.as_mut();
        let mut used = 0usize;
        let mut ports: [AnyPort<'_>; MAX_PORTS] = core::array::from_fn(|_| {
            if let Some(s) = vm_states.next() {
                used += 1;
                let NicState { device, memory } = &mut **s;
                AnyPort::Vm(NetPort::new(device, memory))
            } else if let Some(u) = uplink.take() {
                used += 1;
                AnyPort::Uplink(u)
            } else {
                AnyPort::Absent
            }
        });
        switch.run(&mut ports[..used], now_ms())
    };
    holds.runs += 1;
    holds.continued += u64::from(report.more_work);
    holds.most_frames = holds.most_frames.max(report.frames);
    holds.most_from_one_port = holds.most_from_one_port.max(report.most_from_one_port);
    for (port, (state, &(v, n))) in states
        .iter_mut()
        .flatten()
        .zip(members[..count].iter())
        .enumerate()
    {
        let nic = &sys.vms[v].nics[n];
        // Members are the switch's ports in order (`sched::build_switches`).
        let counts = switch.counters(port);
        nic.counters
            .wire_sent
            .store(wire_sent(&counts), Ordering::Release);
        nic.polling
            .store(state.device.device.tx_polling, Ordering::Release);
        sync_image(nic, &state.device, false);
        if state.device.take_irq_edge() {
            inject(gic, me, v, nic, Some(counts.wire_packets()));
        }
    }
    drop(states);
    drop(guard);
    if report.more_work || report.held_back {
        // Only the first CPU to owe a run keeps it (0 -> me + 1).
        let _ = entry
            .pending
            .compare_exchange(0, me + 1, Ordering::AcqRel, Ordering::Acquire);
        // Work left: come back at once. A held-back sender only needs a run
        // at this CPU's next exit (its timer ticks at the latest), so that
        // a receiver that never refills stalls by the bound and cannot hold
        // the sender's frames without anything else running the switch.
        if report.more_work {
            crate::sched::kick_self(gic, me);
        }
    }
}

/// Takes the runs this CPU owes (switches whose last run on it stopped with
/// work left): one bounded run each, then delivers the held interrupts that
/// are due ([`deliver_held`]). Called from the run loop between guest
/// entries, with the CPU's interrupts taken since the last run.
pub fn run_pending(gic: &Gic, me: usize) {
    let sys = system();
    deliver_held(gic, me);
    for (index, entry) in sys.switches.iter().enumerate() {
        if entry.pending.load(Ordering::Acquire) == me + 1
            && entry
                .pending
                .compare_exchange(me + 1, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            run_switch(gic, me, index);
        }
    }
}

/// Whether any NIC of VM `vm_index` is being polled.
pub fn vm_polling(vm_index: usize) -> bool {
    system().vms[vm_index]
        .nics
        .iter()
        .any(|nic| nic.polling.load(Ordering::Acquire))
}

/// Polls VM `vm_index`'s NICs that defer TX kicks (called on the VM's
/// exits): runs the switch for those with work; an idle one re-arms kicks.
pub fn poll_vm(gic: &Gic, me: usize, vm_index: usize, preempted: bool) {
    let sys = system();
    for nic in sys.vms[vm_index].nics.iter() {
        if !nic.polling.load(Ordering::Acquire) {
            continue;
        }
        let now = crate::arch::cpu::now();
        let recent = now.saturating_sub(nic.counters.last_tx_work.load(Ordering::Relaxed))
            < sys.clock.ticks(TX_IDLE_MS);
        let (busy, before) = {
            let mut guard = nic.state.lock();
            let NicState { device, memory } = &mut *guard;
            // Busy lately: look at the queue without re-arming kicks.
            let tx_polling = device.device.tx_polling;
            let look = match device.queue_mut(chroma_virtio::net::TX_QUEUE) {
                Some(queue) if recent && tx_polling && queue.ready() => {
                    queue.has_available(memory).ok()
                }
                _ => None,
            };
            let busy = match look {
                Some(busy) => busy,
                None => chroma_virtio::net::poll_tx(device, memory),
            };
            sync_image(nic, device, false);
            nic.polling
                .store(device.device.tx_polling, Ordering::Release);
            (busy, nic.counters.wire_sent.load(Ordering::Acquire))
        };
        if busy {
            nic.counters.last_tx_work.store(now, Ordering::Relaxed);
            nic.counters.polls.fetch_add(1, Ordering::Relaxed);
            run_switch(gic, me, nic.switch);
            // A driver that waits for each frame to complete (virtio-drivers'
            // blocking send) spins with one frame queued until the poll timer
            // preempts it: for it a kick per frame is far cheaper. Eight such
            // single-frame polls in a row turn deferral off for this NIC. (A
            // driver that queues and then waits in WFI traps by itself: those
            // polls do not count. A GSO frame counts as its segments: a TSO
            // sender's poll that finds one is a batch.)
            let mut guard = nic.state.lock();
            let frames = nic
                .counters
                .wire_sent
                .load(Ordering::Acquire)
                .saturating_sub(before);
            if preempted && frames <= 1 {
                if nic
                    .counters
                    .single_frame_polls
                    .fetch_add(1, Ordering::Relaxed)
                    + 1
                    >= SYNCHRONOUS_POLLS
                {
                    guard.device.device.defer_tx = false;
                    let vm = &sys.vms[vm_index];
                    if vm.notice_allowed() {
                        log::info!(
                            "vm {}: its driver waits for every frame: TX kicks instead of polling",
                            vm.name
                        );
                    }
                }
            } else if frames > 1 {
                nic.counters.single_frame_polls.store(0, Ordering::Relaxed);
            }
        }
    }
}

/// Takes a stopped or reset VM's NICs off their switches: the devices go
/// back to reset state and whatever was queued for them is dropped.
pub fn detach_vm(vm_index: usize) {
    let sys = system();
    for nic in sys.vms[vm_index].nics.iter() {
        clear_held(nic);
        let mut guard = nic.state.lock();
        guard.device.reset();
        guard.memory.forget_rings();
        sync_image(nic, &guard.device, true);
        drop(guard);
        sys.switches[nic.switch]
            .state
            .lock()
            .switch
            .port_reset(nic.port);
    }
}

/// Prints the counters of VM `vm_index`'s NICs.
pub fn report(vm_index: usize) {
    let sys = system();
    let vm = &sys.vms[vm_index];
    for (i, nic) in vm.nics.iter().enumerate() {
        let port = sys.switches[nic.switch]
            .state
            .lock()
            .switch
            .counters(nic.port);
        let (stats, uncached) = {
            let state = nic.state.lock();
            (state.memory.stats(), state.memory.uncached_accesses())
        };
        // Per packet on the wire: a GSO frame counts as the TCP segments it
        // carries, so the figures compare with a NIC without TSO moving the
        // same traffic; the per-frame ones follow the GSO counts.
        let packets = port.wire_packets().max(1);
        let per_packet = |n: u64| n as f64 / packets as f64;
        let frames = (port.rx_packets + port.tx_packets).max(1);
        let per_frame = |n: u64| n as f64 / frames as f64;
        let traps = nic.counters.traps.load(Ordering::Relaxed);
        let interrupts = nic.counters.interrupts.load(Ordering::Relaxed);
        let notifies = nic.counters.notifies.load(Ordering::Relaxed);
        let polls = nic.counters.polls.load(Ordering::Relaxed);
        let rx_notifies = nic.counters.rx_notifies.load(Ordering::Relaxed);
        let tx_notifies = nic.counters.tx_notifies.load(Ordering::Relaxed);
        let status_reads = nic.counters.status_reads.load(Ordering::Relaxed);
        let acks = nic.counters.acks.load(Ordering::Relaxed);
        let other = traps.saturating_sub(rx_notifies + tx_notifies + status_reads + acks);
        let held = nic.counters.held_count.load(Ordering::Relaxed);
        log::info!(
            "vm {} net{} {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} on {} port {}: rx {} pkts {} B, tx {} pkts {} B, drops {} (driver not up {}, receiver stalled {}), errors {}, spoofed {}; \
             traps/pkt {:.3}, irqs/pkt {:.3}, kicks {} (suppressed {}), polls {}, irqs suppressed {}, lines maintained/pkt {:.2} minimum/pkt {:.2}, ring accesses via NC alias/pkt {:.2}; \
             traps: QueueNotify rx {} tx {}, InterruptStatus {}, InterruptACK {}, other {}; irqs held {}; \
             gso: tx {} ({} segments), rx whole {} ({} segments), rx cut {}; per frame: traps {:.3}, irqs {:.3}",
            vm.name,
            i,
            nic.mac[0], nic.mac[1], nic.mac[2], nic.mac[3], nic.mac[4], nic.mac[5],
            sys.switches[nic.switch].name,
            nic.port,
            port.rx_packets,
            port.rx_bytes,
            port.tx_packets,
            port.tx_bytes,
            port.rx_dropped,
            port.rx_not_up,
            port.rx_stalled,
            port.tx_errors + port.rx_errors + port.fatal_errors,
            port.tx_spoofed,
            per_packet(traps),
            per_packet(interrupts),
            notifies,
            port.tx_packets.saturating_sub(notifies),
            polls,
            port.rx_packets.saturating_sub(interrupts),
            per_packet(stats.total()),
            per_packet(stats.minimum()),
            per_packet(uncached),
            rx_notifies,
            tx_notifies,
            status_reads,
            acks,
            other,
            held,
            port.tx_gso,
            port.tx_gso_segments,
            port.rx_gso,
            port.rx_gso_segments,
            port.rx_gso_cut,
            per_frame(traps),
            per_frame(interrupts),
        );
    }
}

/// Prints, for each switch, what its runs did (one lock hold each: the
/// most frames one took, how many stopped at the bound), and its uplink
/// port's counters beside the VMs' NIC lines (Ctrl-A c, and the end of the
/// run): what came in from outside (`tx`, as the switch names a port's
/// sending) with what was dropped as too short or too long, what went out
/// (`rx`), and the uplink NIC's own frame counts.
pub fn report_switches() {
    for entry in system().switches.iter() {
        let state = entry.state.lock();
        let holds = state.holds;
        log::info!(
            "switch {}: {} runs (one lock hold each), {} stopped at the bound and continued; worst run {} frames, {} from one port (bounds {}, {})",
            entry.name,
            holds.runs,
            holds.continued,
            holds.most_frames,
            holds.most_from_one_port,
            chroma_virtio::switch::RUN_BUDGET,
            chroma_virtio::switch::TX_FRAMES_PER_RUN,
        );
        let Some(uplink) = state.uplink.as_ref() else {
            continue;
        };
        // The uplink is the last port, after the VMs' (`sched::build_switches`).
        let port = state.members.len();
        let c = state.switch.counters(port);
        log::info!(
            "switch {} uplink port {}: rx {} pkts {} B, tx {} pkts {} B, drops {}, errors {} (too short {}, too long {}, rx errors {}); NIC sent {}, received {}",
            entry.name,
            port,
            c.rx_packets,
            c.rx_bytes,
            c.tx_packets,
            c.tx_bytes,
            c.rx_dropped,
            c.tx_errors + c.rx_errors + c.fatal_errors,
            c.tx_too_short,
            c.tx_too_long,
            c.rx_errors,
            uplink.sent,
            uplink.received,
        );
    }
}
