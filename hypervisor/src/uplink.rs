//! The uplink: the board's own NIC (under QEMU, a `virtio-net-device`
//! behind virtio-mmio), driven by the hypervisor with the `virtio-drivers`
//! crate and plugged into a switch as one more port.
//!
//! DMA buffers come from the frame allocator and are identity-mapped, so a
//! buffer's physical address is its address. QEMU's DMA is coherent; a
//! board whose NIC is not (`dma-coherent` absent) would need the cache
//! layer's clean/invalidate around `share`/`unshare` (not done yet).

use crate::mm::FRAMES;
use chroma_core::pagetable::PAGE_SIZE;
use chroma_virtio::port::{NetHeader, Port, RxPush, TxPoll, MAX_FRAME_LEN};
use core::ptr::NonNull;
use virtio_drivers::device::net::VirtIONet;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

/// The `virtio-drivers` platform layer for EL2.
pub struct El2Hal;

// SAFETY:
// 1. `dma_alloc` returns fresh, zeroed, page-aligned frames that nothing else
//    uses, identity-mapped read/write (the frame allocator's memory).
// 2. `share` hands the device the physical address of a buffer the driver
//    keeps alive until `unshare`; identity mapping makes it the VA.
unsafe impl Hal for El2Hal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let bytes = pages as u64 * PAGE_SIZE;
        let base = FRAMES
            .lock()
            .alloc(bytes)
            .unwrap_or_else(|| crate::fatal("uplink: no memory for DMA"));
        // SAFETY: the frames were just allocated and are identity-mapped.
        unsafe { core::ptr::write_bytes(base.raw() as *mut u8, 0, crate::mm::host_usize(bytes)) };
        let pointer = NonNull::new(base.raw() as *mut u8).unwrap_or(NonNull::dangling());
        (base.raw() as PhysAddr, pointer)
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        FRAMES.lock().free(
            chroma_core::HostPhysAddr::new(paddr),
            pages as u64 * PAGE_SIZE,
        );
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// Receive buffers in the driver's queue.
const QUEUE_SIZE: usize = 64;

/// The board NIC as a switch port.
pub struct Uplink {
    net: VirtIONet<El2Hal, MmioTransport<'static>, QUEUE_SIZE>,
    /// Its interrupt (INTID).
    pub intid: u32,
    /// Frames sent and received, for the report.
    pub sent: u64,
    /// Frames received.
    pub received: u64,
}

impl Uplink {
    /// Probes the virtio-mmio windows `(base, size, intid)` for a network
    /// device and brings the first one up.
    pub fn probe(windows: &[(u64, u64, u32)]) -> Option<Self> {
        for &(base, size, intid) in windows {
            let header = NonNull::new(base as *mut VirtIOHeader)?;
            // SAFETY: `base` is a virtio-mmio window from the device tree,
            // mapped as device memory at EL2, used by nothing else.
            let Ok(transport) =
                (unsafe { MmioTransport::new(header, crate::mm::host_usize(size)) })
            else {
                continue;
            };
            if transport.device_type() != DeviceType::Network {
                continue;
            }
            match VirtIONet::new(transport, 2048) {
                Ok(net) => {
                    let mac = net.mac_address();
                    log::info!(
                        "uplink: virtio-net at {base:#x} (INTID {intid}), MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
                    );
                    return Some(Self {
                        net,
                        intid,
                        sent: 0,
                        received: 0,
                    });
                }
                Err(e) => log::warn!("uplink: virtio-net at {base:#x} did not come up: {e}"),
            }
        }
        None
    }

    /// Acknowledges the device's interrupt.
    pub fn ack_interrupt(&mut self) {
        let _ = self.net.ack_interrupt();
    }
}

impl Port for Uplink {
    fn poll_tx(&mut self, frame: &mut [u8; MAX_FRAME_LEN]) -> TxPoll {
        if !self.net.can_recv() {
            return TxPoll::Empty;
        }
        match self.net.receive() {
            Ok(buffer) => {
                let packet = buffer.packet();
                let copied = packet.len().min(MAX_FRAME_LEN);
                frame[..copied].copy_from_slice(&packet[..copied]);
                // The real length: the switch drops a frame that did not
                // fit (or is too short) whole, and counts it.
                let len = packet.len();
                let _ = self.net.recycle_rx_buffer(buffer);
                self.received += 1;
                TxPoll::Frame {
                    len,
                    header: NetHeader::default(),
                }
            }
            Err(_) => TxPoll::Empty,
        }
    }

    fn push_rx(&mut self, _header: &NetHeader, frame: &[u8]) -> RxPush {
        if !self.net.can_send() {
            return RxPush::NoBuffers;
        }
        let mut buffer = self.net.new_tx_buffer(frame.len());
        buffer.packet_mut().copy_from_slice(frame);
        match self.net.send(buffer) {
            Ok(()) => {
                self.sent += 1;
                RxPush::Delivered
            }
            Err(_) => RxPush::NoBuffers,
        }
    }

    fn accepts_partial_checksum(&self) -> bool {
        // The driver negotiates no checksum offload: the switch completes
        // partial checksums before frames leave the board.
        false
    }

    fn flush(&mut self) {}
}
