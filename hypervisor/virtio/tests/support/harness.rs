//! A `virtio-drivers` Hal and Transport over the arena, and a world of
//! devices joined by the switch, for the independent-driver tests.
#![allow(dead_code, unsafe_code, clippy::cast_possible_truncation)]

use std::cell::RefCell;
use std::ptr::NonNull;
use std::rc::Rc;

use chroma_virtio::mmio::{reg, MmioAction};
use chroma_virtio::net::{new_net_device, NetPort, VirtioNet};
use chroma_virtio::switch::{PortConfig, Switch, SwitchConfig};
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::arena::{arena_alloc, arena_free, arena_memory, RawMemory};

const PAGE: usize = 4096;

/// The `virtio-drivers` HAL: DMA pages from the arena, bounce buffers for
/// shared buffers so the device only ever sees guest addresses.
pub struct ArenaHal;

// SAFETY: `dma_alloc` returns zeroed pages owned by the caller until
// `dma_dealloc`; `share` returns a bounce buffer of at least the buffer's
// size that stays valid until `unshare`.
unsafe impl Hal for ArenaHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let (gpa, host) = arena_alloc(pages);
        (gpa, NonNull::new(host).unwrap())
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        arena_free(paddr, pages);
        0
    }

    unsafe fn mmio_phys_to_virt(_paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        unreachable!("the host transport has no MMIO window")
    }

    unsafe fn share(buffer: NonNull<[u8]>, direction: BufferDirection) -> PhysAddr {
        let len = buffer.len();
        let (gpa, host) = arena_alloc(len.div_ceil(PAGE).max(1));
        if direction != BufferDirection::DeviceToDriver {
            // SAFETY: `buffer` is valid for reads of `len` bytes (Hal contract); the bounce buffer has at least `len` bytes.
            unsafe { std::ptr::copy_nonoverlapping(buffer.as_ptr().cast::<u8>(), host, len) };
        }
        gpa
    }

    unsafe fn unshare(paddr: PhysAddr, buffer: NonNull<[u8]>, direction: BufferDirection) {
        let len = buffer.len();
        if direction != BufferDirection::DriverToDevice {
            let host = arena_memory().host(paddr);
            // SAFETY: `buffer` is valid for writes (Hal contract); the bounce buffer holds `len` bytes.
            unsafe { std::ptr::copy_nonoverlapping(host, buffer.as_ptr().cast::<u8>(), len) };
        }
        arena_free(paddr, len.div_ceil(PAGE).max(1));
    }
}

/// Devices, one VM memory (the arena), the switch.
pub struct World {
    pub devices: Vec<VirtioNet>,
    pub mem: RawMemory,
    pub switch: Switch,
    pub now: u64,
    /// Whether QueueNotify runs the switch at once (else the test calls `run`).
    pub immediate: bool,
    pub kicks: u64,
}

impl World {
    pub fn new(macs: &[[u8; 6]], features: u64, queue_max: u16) -> Rc<RefCell<World>> {
        let config = SwitchConfig {
            port_count: macs.len(),
            ..SwitchConfig::default()
        };
        Rc::new(RefCell::new(World {
            devices: macs
                .iter()
                .map(|m| new_net_device(*m, features, queue_max))
                .collect(),
            mem: arena_memory(),
            switch: {
                // Ports start locked: each gets its device's address.
                let mut switch = Switch::new(config);
                for (port, mac) in macs.iter().enumerate() {
                    switch.set_port(port, PortConfig::vm(*mac, false));
                }
                switch
            },
            now: 0,
            immediate: true,
            kicks: 0,
        }))
    }

    pub fn run(&mut self) {
        self.now += 1;
        let mem = self.mem;
        let mut ports: Vec<NetPort<'_, RawMemory>> = self
            .devices
            .iter_mut()
            .map(|d| NetPort::new(d, &mem))
            .collect();
        while self.switch.run(&mut ports, self.now).more_work {}
    }
}

/// A `virtio-drivers` Transport that turns each call into register accesses
/// on one device of the world.
pub struct HostTransport {
    pub world: Rc<RefCell<World>>,
    pub port: usize,
}

impl HostTransport {
    fn read(&self, offset: u64) -> u32 {
        let mut w = self.world.borrow_mut();
        w.devices[self.port]
            .mmio_read(offset, 4)
            .expect("register read refused")
    }

    fn write(&mut self, offset: u64, value: u32) -> MmioAction {
        let mut w = self.world.borrow_mut();
        let mem = w.mem;
        w.devices[self.port]
            .mmio_write(offset, 4, value, &mem)
            .expect("register write refused")
    }
}

impl Transport for HostTransport {
    fn device_type(&self) -> DeviceType {
        DeviceType::try_from(self.read(reg::DEVICE_ID)).unwrap()
    }

    fn read_device_features(&mut self) -> u64 {
        self.write(reg::DEVICE_FEATURES_SEL, 0);
        let low = self.read(reg::DEVICE_FEATURES);
        self.write(reg::DEVICE_FEATURES_SEL, 1);
        (u64::from(self.read(reg::DEVICE_FEATURES)) << 32) | u64::from(low)
    }

    fn write_driver_features(&mut self, features: u64) {
        self.write(reg::DRIVER_FEATURES_SEL, 0);
        self.write(reg::DRIVER_FEATURES, features as u32);
        self.write(reg::DRIVER_FEATURES_SEL, 1);
        self.write(reg::DRIVER_FEATURES, (features >> 32) as u32);
    }

    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.write(reg::QUEUE_SEL, queue.into());
        self.read(reg::QUEUE_NUM_MAX)
    }

    fn notify(&mut self, queue: u16) {
        if self.write(reg::QUEUE_NOTIFY, queue.into()) == MmioAction::Notify(queue) {
            let mut w = self.world.borrow_mut();
            w.kicks += 1;
            if w.immediate {
                w.run();
            }
        }
    }

    fn get_status(&self) -> DeviceStatus {
        DeviceStatus::from_bits_truncate(self.read(reg::STATUS))
    }

    fn set_status(&mut self, status: DeviceStatus) {
        let _ = self.world.borrow_mut().devices[self.port].mmio_write(
            reg::STATUS,
            4,
            status.bits(),
            &arena_memory(),
        );
        if status.is_empty() {
            self.world.borrow_mut().switch.port_reset(self.port);
        }
    }

    fn set_guest_page_size(&mut self, _guest_page_size: u32) {}

    fn requires_legacy_layout(&self) -> bool {
        false
    }

    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        self.write(reg::QUEUE_SEL, queue.into());
        self.write(reg::QUEUE_NUM, size);
        self.write(reg::QUEUE_DESC_LOW, descriptors as u32);
        self.write(reg::QUEUE_DESC_HIGH, (descriptors >> 32) as u32);
        self.write(reg::QUEUE_DRIVER_LOW, driver_area as u32);
        self.write(reg::QUEUE_DRIVER_HIGH, (driver_area >> 32) as u32);
        self.write(reg::QUEUE_DEVICE_LOW, device_area as u32);
        self.write(reg::QUEUE_DEVICE_HIGH, (device_area >> 32) as u32);
        self.write(reg::QUEUE_READY, 1);
    }

    fn queue_unset(&mut self, queue: u16) {
        self.write(reg::QUEUE_SEL, queue.into());
        self.write(reg::QUEUE_READY, 0);
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        self.write(reg::QUEUE_SEL, queue.into());
        self.read(reg::QUEUE_READY) != 0
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        let status = self.read(reg::INTERRUPT_STATUS);
        self.write(reg::INTERRUPT_ACK, status);
        InterruptStatus::from_bits_truncate(status)
    }

    fn read_config_generation(&self) -> u32 {
        self.read(reg::CONFIG_GENERATION)
    }

    fn read_config_space<T: FromBytes + IntoBytes>(
        &self,
        offset: usize,
    ) -> virtio_drivers::Result<T> {
        // Byte-wide reads: exercises the 1-byte config path.
        let mut bytes = vec![0u8; std::mem::size_of::<T>()];
        let mut w = self.world.borrow_mut();
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = w.devices[self.port]
                .mmio_read(reg::CONFIG + (offset + i) as u64, 1)
                .expect("config read") as u8;
        }
        Ok(T::read_from_bytes(&bytes).unwrap())
    }

    fn write_config_space<T: IntoBytes + Immutable>(
        &mut self,
        _offset: usize,
        _value: T,
    ) -> virtio_drivers::Result<()> {
        Err(virtio_drivers::Error::Unsupported)
    }
}
