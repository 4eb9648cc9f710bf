//! What virtio-drivers 0.13 lacks for a driver that polls, written by hand
//! around its MMIO transport and its split rings (virtio 1.2 §2.7):
//!
//! - [`RingTransport`] wraps `MmioTransport`. It records where each queue's
//!   rings are (`queue_set`) and whether VIRTIO_F_EVENT_IDX was negotiated,
//!   and in deferred mode it swallows the crate's notifications: the
//!   crate's `should_notify` compares `avail.idx` with `avail_event`
//!   without wrapping (`avail_idx >= avail_event + 1`), so once the device's
//!   `avail_event` falls behind it notifies on every buffer, where §2.7.10's
//!   `vring_need_event` notifies only when a batch crosses `avail_event`.
//! - [`Rings`] reads and writes the suppression fields of those rings:
//!   [`Rings::check_notify`] is that check, made once per batch;
//!   [`Rings::set_used_event`] moves `used_event` (the crate has no way to
//!   suppress interrupts under EVENT_IDX: its `disable_interrupts` only sets
//!   VIRTQ_AVAIL_F_NO_INTERRUPT, which §2.7.10 says the device ignores then,
//!   and every `pop_used` rewrites `used_event = last_used`).
//!
//! The guests run with the MMU off: a ring's physical address is its
//! address, and memory is Device-nGnRnE, so volatile accesses reach the
//! rings in program order; the fences order them for the device's other CPU
//! as §2.7.13 asks.

use alloc::rc::Rc;
use core::cell::Cell;
use core::sync::atomic::{fence, Ordering};

use virtio_drivers::transport::mmio::MmioTransport;
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{PhysAddr, Result};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// VIRTIO_F_EVENT_IDX (§6).
const VIRTIO_F_EVENT_IDX: u64 = 1 << 29;
/// VIRTQ_USED_F_NO_NOTIFY (§2.7.10): the device asks for no notifications.
const VIRTQ_USED_F_NO_NOTIFY: u16 = 1;
/// Queues the driver uses (receiveq1, transmitq1).
pub const QUEUE_COUNT: usize = 2;

/// Where one queue's rings are, as the driver gave them to the device.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rings {
    /// Entries per ring.
    size: u16,
    /// The driver area (available ring).
    avail: usize,
    /// The device area (used ring).
    used: usize,
}

/// What the transport saw the driver set up.
#[derive(Clone, Copy, Debug, Default)]
pub struct Negotiated {
    /// VIRTIO_F_EVENT_IDX was accepted.
    pub event_idx: bool,
    /// Each queue's rings, once set.
    pub rings: [Option<Rings>; QUEUE_COUNT],
}

/// True if a driver that moved an index from `old` to `new` must signal the
/// other side, whose event index is `event` (§2.7.10, Linux's
/// `vring_need_event`): `event` lies in `[old, new)`, modulo 2^16.
pub fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

impl Rings {
    fn read(address: usize) -> u16 {
        // SAFETY: `address` is a 2-byte-aligned field inside a ring the driver allocated (virtio-drivers' `VirtQueueLayout`, alive as long as the driver) at its own address (MMU off); the device writes it concurrently, which a volatile read of a u16 tolerates.
        unsafe { core::ptr::read_volatile(address as *const u16) }
    }

    fn write(address: usize, value: u16) {
        // SAFETY: as in `read`; the fields written here (`used_event`) belong to the driver (§2.7.6), and virtio-drivers only writes them from the same thread.
        unsafe { core::ptr::write_volatile(address as *mut u16, value) }
    }

    /// `avail.idx`: the driver's own count of buffers made available.
    pub fn avail_idx(&self) -> u16 {
        Self::read(self.avail + 2)
    }

    /// `used.idx`: the device's count of buffers used.
    pub fn used_idx(&self) -> u16 {
        Self::read(self.used + 2)
    }

    /// Writes `used_event` (after the available ring, §2.7.6): the device
    /// interrupts once `used.idx` passes it.
    pub fn set_used_event(&self, value: u16) {
        Self::write(self.avail + 4 + 2 * usize::from(self.size), value);
    }

    /// Whether the buffers made available since the last check (when
    /// `avail.idx` was `*checked`) need a notification (§2.7.10 with
    /// EVENT_IDX, §2.7.7 without); moves `*checked` to `avail.idx`. Call
    /// after publishing a batch. The full barrier orders the `avail.idx`
    /// store before the read of the device's suppression field (§2.7.13.3).
    pub fn check_notify(&self, event_idx: bool, checked: &mut u16) -> bool {
        let new = self.avail_idx();
        let old = core::mem::replace(checked, new);
        if new == old {
            return false;
        }
        fence(Ordering::SeqCst);
        if event_idx {
            let avail_event = Self::read(self.used + 4 + 8 * usize::from(self.size));
            need_event(avail_event, new, old)
        } else {
            Self::read(self.used) & VIRTQ_USED_F_NO_NOTIFY == 0
        }
    }
}

/// virtio-drivers' MMIO transport, recording the rings and, when
/// `deferred`, leaving the notifications to the driver's batch check.
pub struct RingTransport {
    inner: MmioTransport<'static>,
    deferred: bool,
    seen: Rc<Cell<Negotiated>>,
}

impl RingTransport {
    /// Wraps `inner`. With `deferred`, [`Transport::notify`] does nothing:
    /// the driver checks [`Rings::check_notify`] after each batch and writes
    /// QueueNotify itself. `seen` receives the rings and features.
    pub fn new(inner: MmioTransport<'static>, deferred: bool, seen: Rc<Cell<Negotiated>>) -> Self {
        Self {
            inner,
            deferred,
            seen,
        }
    }
}

impl Transport for RingTransport {
    fn device_type(&self) -> DeviceType {
        self.inner.device_type()
    }

    fn read_device_features(&mut self) -> u64 {
        self.inner.read_device_features()
    }

    fn write_driver_features(&mut self, driver_features: u64) {
        let mut seen = self.seen.get();
        seen.event_idx = driver_features & VIRTIO_F_EVENT_IDX != 0;
        self.seen.set(seen);
        self.inner.write_driver_features(driver_features);
    }

    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.inner.max_queue_size(queue)
    }

    fn notify(&mut self, queue: u16) {
        if !self.deferred {
            self.inner.notify(queue);
        }
    }

    fn get_status(&self) -> DeviceStatus {
        self.inner.get_status()
    }

    fn set_status(&mut self, status: DeviceStatus) {
        self.inner.set_status(status);
    }

    fn set_guest_page_size(&mut self, guest_page_size: u32) {
        self.inner.set_guest_page_size(guest_page_size);
    }

    fn requires_legacy_layout(&self) -> bool {
        self.inner.requires_legacy_layout()
    }

    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        let mut seen = self.seen.get();
        if let (Some(slot), Ok(size), Ok(avail), Ok(used)) = (
            seen.rings.get_mut(usize::from(queue)),
            u16::try_from(size),
            usize::try_from(driver_area),
            usize::try_from(device_area),
        ) {
            *slot = Some(Rings { size, avail, used });
        }
        self.seen.set(seen);
        self.inner
            .queue_set(queue, size, descriptors, driver_area, device_area);
    }

    fn queue_unset(&mut self, queue: u16) {
        let mut seen = self.seen.get();
        if let Some(slot) = seen.rings.get_mut(usize::from(queue)) {
            *slot = None;
        }
        self.seen.set(seen);
        self.inner.queue_unset(queue);
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        self.inner.queue_used(queue)
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        self.inner.ack_interrupt()
    }

    fn read_config_generation(&self) -> u32 {
        self.inner.read_config_generation()
    }

    fn read_config_space<T: FromBytes + IntoBytes>(&self, offset: usize) -> Result<T> {
        self.inner.read_config_space(offset)
    }

    fn write_config_space<T: IntoBytes + Immutable>(
        &mut self,
        offset: usize,
        value: T,
    ) -> Result<()> {
        self.inner.write_config_space(offset, value)
    }
}
