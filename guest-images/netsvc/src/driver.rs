//! The two ways of driving the card with virtio-drivers, behind one type.
//!
//! - [`TxMode::Wait`] (the default): `VirtIONet`, the crate's high-level
//!   driver. It owns the receive buffers; its `send` queues one frame, notifies
//!   the device and spins until the device hands the frame back, so every frame
//!   sent costs a notification and a round trip to the device.
//! - [`TxMode::Queued`] (`net.tx=queued`): `VirtIONetRaw`, the crate's
//!   low-level driver, with the buffer bookkeeping `VirtIONet` would do kept
//!   here, and frames left in flight: up to [`QUEUE_SIZE`] frames per
//!   notification, reclaimed when the device returns them. `VirtIONet` has no
//!   way to send without waiting, hence this second path.
//!
//! In `Queued` mode the driver also keeps the device quiet while it polls
//! (unless `net.suppress=off`), with what [`crate::transport`] adds to the
//! crate: the notifications of one poll of the stack go out as one batch
//! ([`Driver::flush`]), and only if the device's `avail_event` asks for
//! them; used-buffer interrupts stay off while the loop polls
//! ([`Driver::quiet`]) and are asked for only before it sleeps
//! ([`Driver::arm_wakeup`], which then looks at the rings once more, so a
//! buffer used meanwhile is not slept through). With EVENT_IDX that is
//! `used_event`; without it the crate's `enable_interrupts` and
//! `disable_interrupts` (VIRTQ_AVAIL_F_NO_INTERRUPT).

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec;
use core::cell::Cell;
use core::ptr::NonNull;
use core::sync::atomic::{fence, Ordering};

use virtio_drivers::device::net::{RxBuffer, VirtIONet, VirtIONetRaw};
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};

use crate::device::MmioSlot;
use crate::hal::GuestHal;
use crate::stack::NetError;
use crate::transport::{Negotiated, RingTransport, Rings, QUEUE_COUNT};

/// Descriptors per virtqueue: 64 receive buffers cover a 64 KiB TCP window
/// of full-sized frames. QEMU's virtio-net offers up to 1024.
pub const QUEUE_SIZE: usize = 64;
/// Bytes per receive buffer: the 12-byte virtio-net header plus a 1514-byte
/// Ethernet frame (virtio-drivers' minimum is 1526), rounded up.
pub const RX_BUFFER_LENGTH: usize = 2048;

/// How frames are sent (bootarg `net.tx=wait|queued`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxMode {
    /// `VirtIONet::send`: one frame at a time, waiting for the device.
    Wait,
    /// `VirtIONetRaw::transmit_begin`: frames stay in flight.
    Queued,
}

type Net = VirtIONet<GuestHal, MmioTransport<'static>, QUEUE_SIZE>;
type NetRaw = VirtIONetRaw<GuestHal, RingTransport, QUEUE_SIZE>;

/// receiveq1 and transmitq1 (virtio 1.2 §5.1.2).
const RX: u16 = 0;
const TX: u16 = 1;
/// How far past the driver's position `used_event` goes to keep the
/// device from interrupting: half the 16-bit index space, which the device
/// cannot cover with at most [`QUEUE_SIZE`] buffers outstanding (Linux
/// writes a similar far value in `virtqueue_disable_cb`).
const USED_EVENT_OFF: u16 = 0x8000;

/// `VirtIONetRaw` plus the buffers lent to the device, indexed by token, and
/// the notification and interrupt suppression the crate lacks.
pub struct QueuedDriver {
    raw: NetRaw,
    /// Bytes of virtio-net header in front of each frame (10 legacy, 12).
    header_length: usize,
    receiving: [Option<Box<[u8]>>; QUEUE_SIZE],
    sending: [Option<Box<[u8]>>; QUEUE_SIZE],
    /// The register frame, for QueueNotify.
    slot: MmioSlot,
    /// The rings and EVENT_IDX, as the transport saw the driver set them up.
    seen: Rc<Cell<Negotiated>>,
    /// Batched notifications and interrupts only when sleeping (the
    /// default); off (`net.suppress=off`): the crate's own behaviour.
    suppress: bool,
    /// Each queue's `avail.idx` at its last notification check.
    checked: [u16; QUEUE_COUNT],
    /// Used buffers taken from each queue (the driver's `last_used`).
    consumed: [u16; QUEUE_COUNT],
    /// The transmit ring was full at the last look: a sleep must wake when
    /// the device returns frames.
    tx_full: bool,
}

/// The card, driven one way or the other.
pub enum Driver {
    /// `VirtIONet` (boxed: about 7 KiB).
    Wait(Box<Net>),
    /// `VirtIONetRaw` with frames in flight.
    Queued(Box<QueuedDriver>),
}

/// A received frame, lent to smoltcp until [`Driver::recycle`].
pub enum RxFrame {
    /// From `VirtIONet`.
    Wait(RxBuffer),
    /// From `VirtIONetRaw`: the buffer and where the frame lies in it.
    Queued {
        /// The whole buffer (virtio-net header first).
        buffer: Box<[u8]>,
        /// Header length.
        offset: usize,
        /// Frame length.
        length: usize,
    },
}

impl RxFrame {
    /// The Ethernet frame.
    pub fn packet(&self) -> &[u8] {
        match self {
            Self::Wait(buffer) => buffer.packet(),
            Self::Queued {
                buffer,
                offset,
                length,
            } => buffer
                .get(*offset..offset.saturating_add(*length))
                .unwrap_or(&[]),
        }
    }
}

/// Opens the transport in `slot` and brings the driver up in `mode`; in
/// `Queued` mode with notification and interrupt suppression if `suppress`.
pub fn open(slot: &MmioSlot, mode: TxMode, suppress: bool) -> Result<Driver, NetError> {
    let header = NonNull::new(slot.base as *mut VirtIOHeader).ok_or(NetError::NoDevice)?;
    // SAFETY: `slot` is a virtio-mmio frame named by the DTB, of `slot.size` bytes including the configuration space; it is a device for the whole run, and only this driver (plus the interrupt acknowledgement in `MmioSlot::acknowledge_interrupt`, a register the driver never writes unasked, and the queued driver's own QueueNotify writes, `MmioSlot::notify`, which the transport then leaves to it) touches it.
    let transport = unsafe { MmioTransport::new(header, slot.size) }.map_err(NetError::from)?;
    match mode {
        TxMode::Wait => Ok(Driver::Wait(Box::new(
            Net::new(transport, RX_BUFFER_LENGTH).map_err(NetError::Driver)?,
        ))),
        TxMode::Queued => {
            let seen = Rc::new(Cell::new(Negotiated::default()));
            let transport = RingTransport::new(transport, suppress, seen.clone());
            let raw = NetRaw::new(transport).map_err(NetError::Driver)?;
            let header_length = raw
                .fill_buffer_header(&mut [0; 16])
                .map_err(NetError::Driver)?;
            let mut driver = Box::new(QueuedDriver {
                raw,
                header_length,
                receiving: [const { None }; QUEUE_SIZE],
                sending: [const { None }; QUEUE_SIZE],
                slot: *slot,
                seen,
                suppress,
                checked: [0; QUEUE_COUNT],
                consumed: [0; QUEUE_COUNT],
                tx_full: false,
            });
            for _ in 0..QUEUE_SIZE {
                driver.post_receive(vec![0; RX_BUFFER_LENGTH].into_boxed_slice())?;
            }
            driver.flush();
            driver.quiet();
            Ok(Driver::Queued(driver))
        }
    }
}

impl QueuedDriver {
    /// Lends `buffer` to the device's receive queue.
    fn post_receive(&mut self, mut buffer: Box<[u8]>) -> Result<(), NetError> {
        // SAFETY: the buffer is kept in `receiving[token]`, untouched, until `poll_receive` returns its token; a boxed slice does not move when the box does.
        let token = unsafe { self.raw.receive_begin(&mut buffer) }.map_err(NetError::Driver)?;
        let slot = self
            .receiving
            .get_mut(usize::from(token))
            .ok_or(NetError::Driver(virtio_drivers::Error::WrongToken))?;
        *slot = Some(buffer);
        Ok(())
    }

    /// Takes back every frame the device has finished sending.
    fn reclaim(&mut self) -> usize {
        let mut count = 0;
        while let Some(token) = self.raw.poll_transmit() {
            let Some(buffer) = self
                .sending
                .get_mut(usize::from(token))
                .and_then(Option::take)
            else {
                break;
            };
            // SAFETY: `buffer` is the one `transmit_begin` returned `token` for, and it stayed untouched in `sending` since.
            let completed = unsafe { self.raw.transmit_complete(token, &buffer) };
            if completed.is_ok() {
                self.used_one(TX);
            }
            count += 1;
        }
        count
    }

    /// The rings of `queue`, once set up.
    fn rings(&self, queue: u16) -> Option<Rings> {
        self.seen
            .get()
            .rings
            .get(usize::from(queue))
            .copied()
            .flatten()
    }

    /// Counts a buffer taken from `queue`'s used ring. The crate's
    /// `pop_used` has just moved `used_event` to the new position, asking
    /// for an interrupt on the next buffer: while the loop polls, move it
    /// out of reach again.
    fn used_one(&mut self, queue: u16) {
        let Some(consumed) = self.consumed.get_mut(usize::from(queue)) else {
            return;
        };
        *consumed = consumed.wrapping_add(1);
        let position = *consumed;
        if self.suppress && self.seen.get().event_idx {
            if let Some(rings) = self.rings(queue) {
                rings.set_used_event(position.wrapping_add(USED_EVENT_OFF));
            }
        }
    }

    /// Notifies each queue whose new buffers the device asked to hear about.
    fn flush(&mut self) {
        if !self.suppress {
            return;
        }
        let event_idx = self.seen.get().event_idx;
        for queue in [RX, TX] {
            let Some(rings) = self.rings(queue) else {
                continue;
            };
            let Some(checked) = self.checked.get_mut(usize::from(queue)) else {
                continue;
            };
            if rings.check_notify(event_idx, checked) {
                self.slot.notify(queue);
            }
        }
    }

    /// No used-buffer interrupts while the loop polls.
    fn quiet(&mut self) {
        if !self.suppress {
            return;
        }
        if !self.seen.get().event_idx {
            self.raw.disable_interrupts();
            return;
        }
        for queue in [RX, TX] {
            if let (Some(rings), Some(&consumed)) =
                (self.rings(queue), self.consumed.get(usize::from(queue)))
            {
                rings.set_used_event(consumed.wrapping_add(USED_EVENT_OFF));
            }
        }
    }

    /// Before a sleep: sends what is pending, asks for an interrupt on the
    /// next received frame (and, if the transmit ring is full, on the next
    /// frame sent), then looks again. True if there is work already (do not
    /// sleep): without the second look a buffer used between the last poll
    /// and the request would wake no one (§2.7.10).
    fn arm_wakeup(&mut self) -> bool {
        if !self.suppress {
            return self.raw.poll_receive().is_some();
        }
        self.flush();
        let event_idx = self.seen.get().event_idx;
        if event_idx {
            for (queue, wanted) in [(RX, true), (TX, self.tx_full)] {
                if let (true, Some(rings), Some(&consumed)) = (
                    wanted,
                    self.rings(queue),
                    self.consumed.get(usize::from(queue)),
                ) {
                    rings.set_used_event(consumed);
                }
            }
        } else {
            self.raw.enable_interrupts();
        }
        // The used_event (or flags) stores before the used.idx reads.
        fence(Ordering::SeqCst);
        let waiting = |queue: u16| {
            self.rings(queue)
                .zip(self.consumed.get(usize::from(queue)))
                .is_some_and(|(rings, &consumed)| rings.used_idx() != consumed)
        };
        waiting(RX) || (self.tx_full && waiting(TX))
    }
}

impl Driver {
    /// The MAC address from the configuration space.
    pub fn mac_address(&self) -> [u8; 6] {
        match self {
            Self::Wait(net) => net.mac_address(),
            Self::Queued(driver) => driver.raw.mac_address(),
        }
    }

    /// True if a received frame waits in the used ring.
    pub fn can_receive(&self) -> bool {
        match self {
            Self::Wait(net) => net.can_recv(),
            Self::Queued(driver) => driver.raw.poll_receive().is_some(),
        }
    }

    /// The next received frame, if any.
    pub fn receive(&mut self) -> Result<Option<RxFrame>, virtio_drivers::Error> {
        match self {
            Self::Wait(net) => match net.receive() {
                Ok(buffer) => Ok(Some(RxFrame::Wait(buffer))),
                Err(virtio_drivers::Error::NotReady) => Ok(None),
                Err(error) => Err(error),
            },
            Self::Queued(driver) => {
                let Some(token) = driver.raw.poll_receive() else {
                    return Ok(None);
                };
                let mut buffer = driver
                    .receiving
                    .get_mut(usize::from(token))
                    .and_then(Option::take)
                    .ok_or(virtio_drivers::Error::WrongToken)?;
                // SAFETY: `buffer` is the one `receive_begin` returned `token` for, untouched in `receiving` since.
                let (offset, length) = unsafe { driver.raw.receive_complete(token, &mut buffer) }?;
                driver.used_one(RX);
                Ok(Some(RxFrame::Queued {
                    buffer,
                    offset,
                    length,
                }))
            }
        }
    }

    /// Gives a received frame's buffer back to the device.
    pub fn recycle(&mut self, frame: RxFrame) -> Result<(), NetError> {
        match (self, frame) {
            (Self::Wait(net), RxFrame::Wait(buffer)) => {
                net.recycle_rx_buffer(buffer).map_err(NetError::Driver)
            }
            (Self::Queued(driver), RxFrame::Queued { buffer, .. }) => driver.post_receive(buffer),
            _ => Err(NetError::Driver(virtio_drivers::Error::WrongToken)),
        }
    }

    /// True if a frame can be sent now (reclaiming finished ones first).
    pub fn can_send(&mut self) -> bool {
        match self {
            Self::Wait(net) => net.can_send(),
            Self::Queued(driver) => {
                driver.reclaim();
                let can = driver.raw.can_send();
                driver.tx_full = !can;
                can
            }
        }
    }

    /// Sends the notifications the last poll's buffers need, as one batch
    /// (queued mode; the `Wait` driver notifies as it goes).
    pub fn flush(&mut self) {
        if let Self::Queued(driver) = self {
            driver.flush();
        }
    }

    /// Keeps the device from interrupting while the loop polls (queued mode).
    pub fn quiet(&mut self) {
        if let Self::Queued(driver) = self {
            driver.quiet();
        }
    }

    /// Called with interrupts masked before a sleep: asks for the interrupt
    /// that ends it and returns true if there is work already (then the
    /// loop must not sleep).
    pub fn arm_wakeup(&mut self) -> bool {
        match self {
            Self::Wait(net) => net.can_recv(),
            Self::Queued(driver) => driver.arm_wakeup(),
        }
    }

    /// Builds a `length`-byte frame with `fill` and sends it: in `Wait` mode
    /// returns once the device has it back, in `Queued` mode at once.
    pub fn send<R>(
        &mut self,
        length: usize,
        fill: impl FnOnce(&mut [u8]) -> R,
    ) -> (R, Result<(), virtio_drivers::Error>) {
        match self {
            Self::Wait(net) => {
                let mut buffer = net.new_tx_buffer(length);
                let result = fill(buffer.packet_mut());
                (result, net.send(buffer))
            }
            Self::Queued(driver) => {
                let header = driver.header_length;
                // A zeroed header is a valid virtio_net_hdr: no offloads.
                let mut frame = vec![0; header + length].into_boxed_slice();
                let result = fill(&mut frame[header..]);
                // SAFETY: `frame` is kept in `sending[token]`, untouched, until `poll_transmit` returns its token (`reclaim`).
                let sent = match unsafe { driver.raw.transmit_begin(&frame) } {
                    Ok(token) => match driver.sending.get_mut(usize::from(token)) {
                        Some(slot) => {
                            *slot = Some(frame);
                            Ok(())
                        }
                        None => Err(virtio_drivers::Error::WrongToken),
                    },
                    Err(error) => Err(error),
                };
                (result, sent)
            }
        }
    }
}
