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

use alloc::boxed::Box;
use alloc::vec;
use core::ptr::NonNull;

use virtio_drivers::device::net::{RxBuffer, VirtIONet, VirtIONetRaw};
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};

use crate::device::MmioSlot;
use crate::hal::GuestHal;
use crate::stack::NetError;

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
type NetRaw = VirtIONetRaw<GuestHal, MmioTransport<'static>, QUEUE_SIZE>;

/// `VirtIONetRaw` plus the buffers lent to the device, indexed by token.
pub struct QueuedDriver {
    raw: NetRaw,
    /// Bytes of virtio-net header in front of each frame (10 legacy, 12).
    header_length: usize,
    receiving: [Option<Box<[u8]>>; QUEUE_SIZE],
    sending: [Option<Box<[u8]>>; QUEUE_SIZE],
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

/// Opens the transport in `slot` and brings the driver up in `mode`.
pub fn open(slot: &MmioSlot, mode: TxMode) -> Result<Driver, NetError> {
    let header = NonNull::new(slot.base as *mut VirtIOHeader).ok_or(NetError::NoDevice)?;
    // SAFETY: `slot` is a virtio-mmio frame named by the DTB, of `slot.size` bytes including the configuration space; it is a device for the whole run, and only this driver (plus the interrupt acknowledgement in `MmioSlot::acknowledge_interrupt`, a register the driver never writes unasked) touches it.
    let transport = unsafe { MmioTransport::new(header, slot.size) }.map_err(NetError::from)?;
    match mode {
        TxMode::Wait => Ok(Driver::Wait(Box::new(
            Net::new(transport, RX_BUFFER_LENGTH).map_err(NetError::Driver)?,
        ))),
        TxMode::Queued => {
            let raw = NetRaw::new(transport).map_err(NetError::Driver)?;
            let header_length = raw
                .fill_buffer_header(&mut [0; 16])
                .map_err(NetError::Driver)?;
            let mut driver = Box::new(QueuedDriver {
                raw,
                header_length,
                receiving: [const { None }; QUEUE_SIZE],
                sending: [const { None }; QUEUE_SIZE],
            });
            for _ in 0..QUEUE_SIZE {
                driver.post_receive(vec![0; RX_BUFFER_LENGTH].into_boxed_slice())?;
            }
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
            let _ = unsafe { self.raw.transmit_complete(token, &buffer) };
            count += 1;
        }
        count
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
                driver.raw.can_send()
            }
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
