//! The virtio-net device: found in the DTB, driven by virtio-drivers (see
//! [`crate::driver`]), and offered to smoltcp as a `phy::Device`.

use core::cell::{Cell, RefCell};

use chroma_guest_rt::fdt::Fdt;
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::driver::{Driver, RxFrame};

/// The largest Ethernet frame, header included, without the FCS.
pub const ETHERNET_MTU: usize = 1514;

/// virtio-mmio register offsets (virtio 1.2, 4.2.2 "MMIO Device Register Layout").
mod register {
    /// MagicValue: "virt" little-endian.
    pub const MAGIC_VALUE: usize = 0x000;
    /// DeviceID: 0 for an empty slot, 1 for a network device.
    pub const DEVICE_ID: usize = 0x008;
    /// QueueNotify: write a queue's index to notify the device.
    pub const QUEUE_NOTIFY: usize = 0x050;
    /// InterruptStatus: bit 0 used buffer, bit 1 configuration change.
    pub const INTERRUPT_STATUS: usize = 0x060;
    /// InterruptACK: write the bits of InterruptStatus handled.
    pub const INTERRUPT_ACK: usize = 0x064;
}

/// "virt" as a little-endian u32.
const VIRTIO_MMIO_MAGIC: u32 = 0x7472_6976;
/// Device ID of a network card (virtio 1.2, 5 "Device Types").
const VIRTIO_ID_NET: u32 = 1;

/// A virtio-mmio slot from the DTB (`compatible = "virtio,mmio"`).
#[derive(Clone, Copy, Debug)]
pub struct MmioSlot {
    /// Base of the register frame.
    pub base: usize,
    /// Size of the frame (0x200 on QEMU virt).
    pub size: usize,
    /// The GIC INTID of its interrupt, if the node has a readable one.
    pub intid: Option<u32>,
}

impl MmioSlot {
    fn read_register(&self, offset: usize) -> u32 {
        // SAFETY: `base` is a virtio-mmio frame named by the DTB and `offset` one of the named registers inside its 0x100-byte header; a volatile 32-bit read of a device register has no effect on memory.
        unsafe { core::ptr::read_volatile((self.base + offset) as *const u32) }
    }

    /// The device in this slot, as DeviceID says (0: empty).
    pub fn device_id(&self) -> u32 {
        if self.read_register(register::MAGIC_VALUE) != VIRTIO_MMIO_MAGIC {
            return 0;
        }
        self.read_register(register::DEVICE_ID)
    }

    /// Notifies the device that queue `queue` has new buffers (QueueNotify).
    /// The queued driver's batched notification (see [`crate::transport`]).
    pub fn notify(&self, queue: u16) {
        // SAFETY: as in `read_register`: QueueNotify is a write-only register of the same frame; writing a queue index the driver set up is its purpose.
        unsafe {
            core::ptr::write_volatile(
                (self.base + register::QUEUE_NOTIFY) as *mut u32,
                u32::from(queue),
            )
        };
    }

    /// Reads InterruptStatus and acknowledges every bit set; returns them.
    /// Safe to run from the IRQ handler while the driver owns the transport:
    /// virtio-drivers only acknowledges interrupts when asked to, and the
    /// guests never ask.
    pub fn acknowledge_interrupt(&self) -> u32 {
        let status = self.read_register(register::INTERRUPT_STATUS);
        if status != 0 {
            // SAFETY: as in `read_register`: InterruptACK is a write-only register of the same frame; writing handled bits is its purpose.
            unsafe {
                core::ptr::write_volatile((self.base + register::INTERRUPT_ACK) as *mut u32, status)
            };
        }
        status
    }
}

/// The virtio-mmio slots in the DTB, in DTB order.
pub fn mmio_slots<'a>(fdt: &'a Fdt<'a>) -> impl Iterator<Item = MmioSlot> + 'a {
    fdt.all_nodes()
        .filter(|node| {
            node.compatible()
                .is_some_and(|compatible| compatible.all().any(|name| name == "virtio,mmio"))
        })
        .filter_map(|node| {
            let region = node.reg()?.next()?;
            let intid = node.property("interrupts").and_then(|property| {
                // Three cells with the GIC binding: type (0 SPI, 1 PPI),
                // number, flags.
                let cells = property.value;
                if cells.len() < 8 {
                    return None;
                }
                let kind = u32::from_be_bytes([cells[0], cells[1], cells[2], cells[3]]);
                let number = u32::from_be_bytes([cells[4], cells[5], cells[6], cells[7]]);
                match kind {
                    0 => number.checked_add(32),
                    1 => number.checked_add(16),
                    _ => None,
                }
            });
            Some(MmioSlot {
                base: region.starting_address as usize,
                size: region.size.unwrap_or(0x200),
                intid,
            })
        })
}

/// The first slot that holds a network device.
pub fn find_net_slot(fdt: &Fdt<'_>) -> Option<MmioSlot> {
    mmio_slots(fdt).find(|slot| slot.device_id() == VIRTIO_ID_NET)
}

/// Packet and byte counts kept by [`NetDevice`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// Frames received.
    pub rx_packets: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes received (Ethernet frames, without the virtio-net header).
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Receive buffers the driver refused to take back, or failed receives.
    pub rx_errors: u64,
    /// Frames the driver failed to send.
    pub tx_errors: u64,
    /// Virtual counter ticks spent sending (in `Wait` mode, mostly waiting
    /// for the device to return each frame).
    pub tx_wait_ticks: u64,
}

/// smoltcp's view of the card. The driver sits in a `RefCell` because a
/// receive token and a transmit token both reach it.
pub struct NetDevice {
    driver: RefCell<Driver>,
    counters: Cell<Counters>,
}

impl NetDevice {
    /// Wraps a started driver.
    pub fn new(driver: Driver) -> Self {
        Self {
            driver: RefCell::new(driver),
            counters: Cell::new(Counters::default()),
        }
    }

    /// The card's MAC address.
    pub fn mac_address(&self) -> [u8; 6] {
        self.driver.borrow().mac_address()
    }

    /// True if a received frame is waiting in the used ring.
    pub fn can_receive(&self) -> bool {
        self.driver.borrow().can_receive()
    }

    /// Sends the notifications the buffers of the last poll need.
    pub fn flush(&self) {
        self.driver.borrow_mut().flush();
    }

    /// Keeps the device from interrupting while the loop polls.
    pub fn quiet(&self) {
        self.driver.borrow_mut().quiet();
    }

    /// Before a sleep (interrupts masked): asks for the interrupt that ends
    /// it; true if there is work already.
    pub fn arm_wakeup(&self) -> bool {
        self.driver.borrow_mut().arm_wakeup()
    }

    /// The counts so far.
    pub fn counters(&self) -> Counters {
        self.counters.get()
    }

    fn count(&self, update: impl FnOnce(&mut Counters)) {
        let mut counters = self.counters.get();
        update(&mut counters);
        self.counters.set(counters);
    }
}

impl phy::Device for NetDevice {
    type RxToken<'a> = NetRxToken<'a>;
    type TxToken<'a> = NetTxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let frame = match self.driver.get_mut().receive() {
            Ok(Some(frame)) => frame,
            Ok(None) => return None,
            Err(_) => {
                self.count(|counters| counters.rx_errors += 1);
                return None;
            }
        };
        let device = &*self;
        Some((NetRxToken { device, frame }, NetTxToken { device }))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        self.driver
            .get_mut()
            .can_send()
            .then_some(NetTxToken { device: self })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ethernet;
        capabilities.max_transmission_unit = ETHERNET_MTU;
        // No checksum offload negotiated: smoltcp computes and checks all.
        capabilities
    }
}

/// A received frame; handing it to smoltcp gives the buffer back to the card.
pub struct NetRxToken<'a> {
    device: &'a NetDevice,
    frame: RxFrame,
}

impl phy::RxToken for NetRxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        let length = self.frame.packet().len();
        let result = f(self.frame.packet());
        let recycled = self.device.driver.borrow_mut().recycle(self.frame);
        self.device.count(|counters| {
            counters.rx_packets += 1;
            counters.rx_bytes += length as u64;
            if recycled.is_err() {
                counters.rx_errors += 1;
            }
        });
        result
    }
}

/// Permission to send one frame.
pub struct NetTxToken<'a> {
    device: &'a NetDevice,
}

impl phy::TxToken for NetTxToken<'_> {
    fn consume<R, F>(self, length: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let started = chroma_guest_rt::timer::now();
        let (result, sent) = self.device.driver.borrow_mut().send(length, f);
        let waited = chroma_guest_rt::timer::now().saturating_sub(started);
        self.device.count(|counters| match sent {
            Ok(()) => {
                counters.tx_wait_ticks += waited;
                counters.tx_packets += 1;
                counters.tx_bytes += length as u64;
            }
            Err(_) => counters.tx_errors += 1,
        });
        result
    }
}
