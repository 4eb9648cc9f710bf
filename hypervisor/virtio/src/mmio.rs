//! The virtio-mmio version 2 register file (virtio 1.2 §4.2.2) and the
//! device status state machine (§2.1, §3.1.1).
//!
//! The hypervisor's data-abort handler calls [`MmioTransport::mmio_read`] and
//! [`MmioTransport::mmio_write`] with the decoded offset and width. A write
//! returns an [`MmioAction`] telling the caller what to run next (the
//! backend after QueueNotify). Interrupts are level-triggered in virtio-mmio:
//! [`MmioTransport::irq_level`] is the line, [`MmioTransport::take_irq_edge`]
//! says whether a new cause was raised since the last call.
//!
//! No guest input can panic this code: every refused access returns a
//! [`VirtioError`] and leaves the state consistent.
// Guest input is parsed here: an index or slice must not panic (issue 10).
#![deny(clippy::indexing_slicing)]

use chroma_mem::{GuestMemory, GuestPhysAddr};

use crate::queue::{QueueLayout, MAX_QUEUE_SIZE};
use crate::virtqueue::Virtqueue;
use crate::VirtioError;

/// Register offsets (§4.2.2, REFERENCE "virtio-mmio v2 registers").
pub mod reg {
    /// MagicValue, R: 0x74726976 ("virt").
    pub const MAGIC_VALUE: u64 = 0x000;
    /// Version, R: 2 for a non-legacy device.
    pub const VERSION: u64 = 0x004;
    /// DeviceID, R.
    pub const DEVICE_ID: u64 = 0x008;
    /// VendorID, R.
    pub const VENDOR_ID: u64 = 0x00c;
    /// DeviceFeatures, R: 32 feature bits selected by DeviceFeaturesSel.
    pub const DEVICE_FEATURES: u64 = 0x010;
    /// DeviceFeaturesSel, W.
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    /// DriverFeatures, W.
    pub const DRIVER_FEATURES: u64 = 0x020;
    /// DriverFeaturesSel, W.
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    /// QueueSel, W.
    pub const QUEUE_SEL: u64 = 0x030;
    /// QueueNumMax, R.
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    /// QueueNum, W.
    pub const QUEUE_NUM: u64 = 0x038;
    /// QueueReady, RW.
    pub const QUEUE_READY: u64 = 0x044;
    /// QueueNotify, W.
    pub const QUEUE_NOTIFY: u64 = 0x050;
    /// InterruptStatus, R.
    pub const INTERRUPT_STATUS: u64 = 0x060;
    /// InterruptACK, W.
    pub const INTERRUPT_ACK: u64 = 0x064;
    /// Status, RW.
    pub const STATUS: u64 = 0x070;
    /// QueueDescLow, W.
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    /// QueueDescHigh, W.
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    /// QueueDriverLow, W.
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    /// QueueDriverHigh, W.
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    /// QueueDeviceLow, W.
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    /// QueueDeviceHigh, W.
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    /// SHMSel, W.
    pub const SHM_SEL: u64 = 0x0ac;
    /// SHMLenLow, R.
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    /// SHMLenHigh, R.
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    /// SHMBaseLow, R.
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    /// SHMBaseHigh, R.
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    /// QueueReset, RW (only with VIRTIO_F_RING_RESET, which is not offered).
    pub const QUEUE_RESET: u64 = 0x0c0;
    /// ConfigGeneration, R.
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    /// Start of the device-specific configuration space.
    pub const CONFIG: u64 = 0x100;
    /// Size of the whole register window this model decodes.
    pub const WINDOW_SIZE: u64 = 0x200;
}

/// MagicValue contents (§4.2.2).
pub const MAGIC: u32 = 0x7472_6976;
/// Version register contents for a non-legacy device.
pub const VERSION_2: u32 = 2;
/// VendorID this model reports ("CHRM" is not a PCI vendor; virtio-mmio has no registry).
pub const VENDOR_ID: u32 = 0x4d52_4843;

/// Device status bits (§2.1).
pub mod status {
    /// The guest has noticed the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest knows how to drive the device.
    pub const DRIVER: u32 = 2;
    /// The driver is set up and ready to drive the device.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from (§2.1.2).
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 0x80;
}

/// InterruptStatus bits (§4.2.2).
pub mod interrupt {
    /// Used Buffer Notification.
    pub const USED_BUFFER: u32 = 1;
    /// Configuration Change Notification.
    pub const CONFIG_CHANGE: u32 = 2;
}

/// Transport-level feature bits (§6).
pub mod feature {
    /// VIRTIO_F_INDIRECT_DESC.
    pub const INDIRECT_DESC: u64 = 1 << 28;
    /// VIRTIO_F_EVENT_IDX.
    pub const EVENT_IDX: u64 = 1 << 29;
    /// VIRTIO_F_VERSION_1.
    pub const VERSION_1: u64 = 1 << 32;
    /// VIRTIO_F_RING_PACKED: the queues are packed rings (§2.8). Offered
    /// only when the device's owner asks for it.
    pub const RING_PACKED: u64 = 1 << 34;
    /// VIRTIO_F_IN_ORDER: the device uses buffers in the order they were
    /// made available (§2.7.9, §2.8.9).
    pub const IN_ORDER: u64 = 1 << 35;
}

/// Words in a transport's register image ([`MmioTransport::register_image`]).
pub const IMAGE_WORDS: usize = (reg::WINDOW_SIZE / 4) as usize;
/// Words of the image before the device configuration.
const CONTROL_WORDS: usize = (reg::CONFIG / 4) as usize;

/// What a device type plugs into the transport.
pub trait DeviceBackend {
    /// DeviceID register value (§5).
    const DEVICE_ID: u32;
    /// Number of virtqueues.
    const QUEUE_COUNT: usize;
    /// Features the device offers, transport bits included.
    fn offered_features(&self) -> u64;
    /// Reads `data.len()` bytes of device configuration at `offset`.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes device configuration at `offset` (most fields are read-only).
    fn write_config(&mut self, offset: u64, data: &[u8]) -> Result<(), VirtioError>;
    /// Clears per-driver state on a device reset.
    fn reset(&mut self);
}

/// What the caller must do after an MMIO write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioAction {
    /// Nothing beyond completing the access.
    None,
    /// The driver notified this queue: run the backend (the switch).
    Notify(u16),
    /// The driver reset the device: drop anything queued for it.
    Reset,
    /// The driver set DRIVER_OK: the device is live.
    DriverOk,
}

/// Counters of guest mistakes seen at the register level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportCounters {
    /// MMIO accesses refused (width, alignment, read-only, unknown).
    pub bad_accesses: u64,
    /// Notifications for a queue that is not ready.
    pub bad_notifies: u64,
    /// Times DEVICE_NEEDS_RESET was set.
    pub needs_reset: u64,
}

/// Registers of one queue as the driver programs them, plus its runtime state.
///
/// With VIRTIO_F_RING_PACKED negotiated the same registers describe a
/// packed ring (§4.2.3.2): QueueDesc the descriptor ring, QueueDriver the
/// driver event suppression structure, QueueDevice the device's.
#[derive(Clone, Debug, Default)]
pub struct QueueSlot {
    staged: QueueLayout,
    /// The live queue, split or packed.
    pub queue: Virtqueue,
}

/// A virtio-mmio v2 device: transport state plus a device backend `D`.
#[derive(Clone, Debug)]
pub struct MmioTransport<D: DeviceBackend, const Q: usize> {
    /// The device-specific part.
    pub device: D,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    driver_features_beyond_64: bool,
    queue_sel: u32,
    queue_max: u16,
    queues: [QueueSlot; Q],
    interrupt_status: u32,
    irq_edge: bool,
    config_generation: u32,
    counters: TransportCounters,
}

fn set_low(v: u64, low: u32) -> u64 {
    (v & !0xffff_ffff) | u64::from(low)
}
fn set_high(v: u64, high: u32) -> u64 {
    (v & 0xffff_ffff) | (u64::from(high) << 32)
}
fn low(v: u64) -> u32 {
    (v & 0xffff_ffff) as u32
}
fn high(v: u64) -> u32 {
    (v >> 32) as u32
}

impl<D: DeviceBackend, const Q: usize> MmioTransport<D, Q> {
    /// A device in reset state whose queues accept at most `queue_max` entries.
    pub fn new(device: D, queue_max: u16) -> Self {
        let queue_max = if queue_max.is_power_of_two() {
            queue_max.min(MAX_QUEUE_SIZE)
        } else {
            256
        };
        Self {
            device,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            driver_features_beyond_64: false,
            queue_sel: 0,
            queue_max,
            queues: core::array::from_fn(|_| QueueSlot::default()),
            interrupt_status: 0,
            irq_edge: false,
            config_generation: 0,
            counters: TransportCounters::default(),
        }
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The features both sides agreed on (valid once FEATURES_OK is set).
    pub fn negotiated_features(&self) -> u64 {
        self.driver_features
    }

    /// Whether feature `bit` (a mask) was negotiated.
    pub fn has_feature(&self, mask: u64) -> bool {
        self.status & status::FEATURES_OK != 0 && self.driver_features & mask == mask
    }

    /// Whether the backend may touch the queues: DRIVER_OK set, and neither
    /// DEVICE_NEEDS_RESET nor FAILED (§2.1.2, §3.1.1).
    pub fn is_live(&self) -> bool {
        self.status & (status::DRIVER_OK | status::DEVICE_NEEDS_RESET | status::FAILED)
            == status::DRIVER_OK
    }

    /// Register-level counters.
    pub fn counters(&self) -> TransportCounters {
        self.counters
    }

    /// Queue `index`, if it exists.
    pub fn queue(&self, index: usize) -> Option<&Virtqueue> {
        self.queues.get(index).map(|s| &s.queue)
    }

    /// Queue `index` for the backend, if it exists.
    pub fn queue_mut(&mut self, index: usize) -> Option<&mut Virtqueue> {
        self.queues.get_mut(index).map(|s| &mut s.queue)
    }

    /// The InterruptStatus register.
    pub fn interrupt_status(&self) -> u32 {
        self.interrupt_status
    }

    /// The interrupt line: high while any InterruptStatus bit is set.
    pub fn irq_level(&self) -> bool {
        self.interrupt_status != 0
    }

    /// Whether a new interrupt cause was raised since the last call (for
    /// injecting an edge through the vGIC); clears the flag.
    pub fn take_irq_edge(&mut self) -> bool {
        core::mem::take(&mut self.irq_edge)
    }

    /// Raises a used-buffer notification (§2.3.2).
    pub fn raise_used_interrupt(&mut self) {
        self.interrupt_status |= interrupt::USED_BUFFER;
        self.irq_edge = true;
    }

    /// Raises a configuration-change notification and bumps ConfigGeneration
    /// (§2.5.1, §4.2.2): call after the backend changed its configuration.
    pub fn config_changed(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        if self.status & status::DRIVER_OK != 0 {
            self.interrupt_status |= interrupt::CONFIG_CHANGE;
            self.irq_edge = true;
        }
    }

    /// Marks the device broken by a driver error: DEVICE_NEEDS_RESET plus a
    /// configuration-change interrupt (§2.1.2). The queues are no longer
    /// touched until the driver resets the device.
    pub fn fail(&mut self) {
        if self.status & status::DEVICE_NEEDS_RESET == 0 {
            self.counters.needs_reset += 1;
        }
        self.status |= status::DEVICE_NEEDS_RESET;
        self.interrupt_status |= interrupt::CONFIG_CHANGE;
        self.irq_edge = true;
    }

    /// Device reset (§2.1, Status written 0): everything back to its initial
    /// value, including the queues and pending interrupts.
    pub fn reset(&mut self) {
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.driver_features_beyond_64 = false;
        self.queue_sel = 0;
        for slot in self.queues.iter_mut() {
            *slot = QueueSlot::default();
        }
        self.interrupt_status = 0;
        self.irq_edge = false;
        self.device.reset();
    }

    fn bad_access(&mut self, e: VirtioError) -> VirtioError {
        self.counters.bad_accesses += 1;
        e
    }

    fn selected(&self) -> Option<&QueueSlot> {
        self.queues.get(self.queue_sel as usize)
    }

    /// Handles a guest read of `width` bytes (1, 2 or 4) at `offset` in the
    /// register window.
    pub fn mmio_read(&mut self, offset: u64, width: u8) -> Result<u32, VirtioError> {
        if offset >= reg::CONFIG {
            return self.config_read(offset - reg::CONFIG, width);
        }
        // §4.2.2.2: control registers take 32-bit aligned accesses only.
        if width != 4 || !offset.is_multiple_of(4) {
            return Err(self.bad_access(VirtioError::InvalidAccess));
        }
        match self.register_value(offset) {
            Some(value) => Ok(value),
            None => Err(self.bad_access(VirtioError::UnknownRegister)),
        }
    }

    /// The register window as a read would see it, word by word (register
    /// image: `image[i]` is the 32-bit little-endian word at offset `4 * i`,
    /// device configuration included). Reading it has no side effect, as
    /// reading the registers has none (§4.2.2), which is what lets the
    /// hypervisor map an image read-only into the guest: loads never trap,
    /// stores still do. Unknown registers read as zero.
    pub fn register_image(&self, image: &mut [u32; IMAGE_WORDS]) {
        let mut config = [0u8; 4 * (IMAGE_WORDS - CONTROL_WORDS)];
        self.device.read_config(0, &mut config);
        let words = config
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes(w.try_into().unwrap_or([0; 4])));
        let (control, device) = image.split_at_mut(CONTROL_WORDS);
        for (slot, offset) in control.iter_mut().zip((0..reg::CONFIG).step_by(4)) {
            *slot = self.register_value(offset).unwrap_or(0);
        }
        for (slot, word) in device.iter_mut().zip(words) {
            *slot = word;
        }
    }

    /// The value a 32-bit read of control register `offset` returns, or
    /// `None` for an offset that is no register.
    fn register_value(&self, offset: u64) -> Option<u32> {
        let value = match offset {
            reg::MAGIC_VALUE => MAGIC,
            reg::VERSION => VERSION_2,
            reg::DEVICE_ID => D::DEVICE_ID,
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => low(self.device.offered_features()),
                1 => high(self.device.offered_features()),
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => self.selected().map_or(0, |_| u32::from(self.queue_max)),
            reg::QUEUE_READY => self.selected().map_or(0, |s| u32::from(s.queue.ready())),
            reg::INTERRUPT_STATUS => self.interrupt_status,
            reg::STATUS => self.status,
            // §4.2.2: no shared memory region: length and base read as -1.
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH | reg::SHM_BASE_LOW | reg::SHM_BASE_HIGH => {
                u32::MAX
            }
            reg::QUEUE_RESET => 0,
            reg::CONFIG_GENERATION => self.config_generation,
            // Write-only registers read as zero.
            reg::DEVICE_FEATURES_SEL
            | reg::DRIVER_FEATURES
            | reg::DRIVER_FEATURES_SEL
            | reg::QUEUE_SEL
            | reg::QUEUE_NUM
            | reg::QUEUE_NOTIFY
            | reg::INTERRUPT_ACK
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH
            | reg::SHM_SEL => 0,
            _ => return None,
        };
        Some(value)
    }

    fn config_read(&mut self, offset: u64, width: u8) -> Result<u32, VirtioError> {
        let mut bytes = [0u8; 4];
        let len = usize::from(width);
        // §4.2.2.2: device configuration accesses are naturally aligned 1, 2 or 4 bytes.
        if !matches!(width, 1 | 2 | 4)
            || !offset.is_multiple_of(u64::from(width))
            || offset >= reg::WINDOW_SIZE - reg::CONFIG
        {
            return Err(self.bad_access(VirtioError::InvalidAccess));
        }
        // `len` is 1, 2 or 4 (checked above), so `get_mut` always succeeds.
        if let Some(window) = bytes.get_mut(..len) {
            self.device.read_config(offset, window);
        }
        Ok(u32::from_le_bytes(bytes))
    }

    /// Handles a guest write of `width` bytes at `offset`. `mem` is the VM's
    /// memory, used to check the rings when QueueReady is set.
    pub fn mmio_write<M: GuestMemory>(
        &mut self,
        offset: u64,
        width: u8,
        value: u32,
        mem: &M,
    ) -> Result<MmioAction, VirtioError> {
        if offset >= reg::CONFIG {
            if !matches!(width, 1 | 2 | 4)
                || !offset.is_multiple_of(u64::from(width))
                || offset >= reg::WINDOW_SIZE
            {
                return Err(self.bad_access(VirtioError::InvalidAccess));
            }
            let bytes = value.to_le_bytes();
            // `width` is 1, 2 or 4 (checked above): the slice is always there.
            let Some(written) = bytes.get(..usize::from(width)) else {
                return Err(self.bad_access(VirtioError::InvalidAccess));
            };
            let result = self.device.write_config(offset - reg::CONFIG, written);
            return result
                .map(|()| MmioAction::None)
                .map_err(|e| self.bad_access(e));
        }
        if width != 4 || !offset.is_multiple_of(4) {
            return Err(self.bad_access(VirtioError::InvalidAccess));
        }
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::DRIVER_FEATURES => return self.write_driver_features(value),
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH => return self.write_queue_register(offset, value),
            reg::QUEUE_READY => return self.write_queue_ready(value, mem),
            reg::QUEUE_NOTIFY => return self.notify(value),
            reg::INTERRUPT_ACK => self.interrupt_status &= !value,
            reg::STATUS => return self.write_status(value),
            // No shared memory regions: the selector is accepted and ignored.
            reg::SHM_SEL => {}
            // VIRTIO_F_RING_RESET is not offered (§4.2.2: QueueReset is then unused).
            reg::QUEUE_RESET => return Err(self.bad_access(VirtioError::InvalidState)),
            reg::MAGIC_VALUE
            | reg::VERSION
            | reg::DEVICE_ID
            | reg::VENDOR_ID
            | reg::DEVICE_FEATURES
            | reg::QUEUE_NUM_MAX
            | reg::INTERRUPT_STATUS
            | reg::SHM_LEN_LOW
            | reg::SHM_LEN_HIGH
            | reg::SHM_BASE_LOW
            | reg::SHM_BASE_HIGH
            | reg::CONFIG_GENERATION => return Err(self.bad_access(VirtioError::ReadOnlyRegister)),
            _ => return Err(self.bad_access(VirtioError::UnknownRegister)),
        }
        Ok(MmioAction::None)
    }

    /// §3.1.1 step 4: features may be written only between DRIVER and
    /// FEATURES_OK. A change after DRIVER_OK is a driver error (§2.1.2).
    fn write_driver_features(&mut self, value: u32) -> Result<MmioAction, VirtioError> {
        if self.status & status::DRIVER_OK != 0 {
            self.fail();
            return Err(self.bad_access(VirtioError::InvalidState));
        }
        if self.status & status::DRIVER == 0 || self.status & status::FEATURES_OK != 0 {
            return Err(self.bad_access(VirtioError::InvalidState));
        }
        match self.driver_features_sel {
            0 => self.driver_features = set_low(self.driver_features, value),
            1 => self.driver_features = set_high(self.driver_features, value),
            // Bits above 63 are never offered: accepting one is refused at FEATURES_OK.
            _ => self.driver_features_beyond_64 |= value != 0,
        }
        Ok(MmioAction::None)
    }

    fn write_queue_register(&mut self, offset: u64, value: u32) -> Result<MmioAction, VirtioError> {
        let Some(slot) = self.queues.get_mut(self.queue_sel as usize) else {
            return Err(self.bad_access(VirtioError::InvalidState));
        };
        // §4.2.3.2: queue registers are written while QueueReady is 0.
        if slot.queue.ready() {
            return Err(self.bad_access(VirtioError::InvalidState));
        }
        let staged = &mut slot.staged;
        match offset {
            // Sizes above 0xffff can never be valid: keep a value that fails validation.
            reg::QUEUE_NUM => staged.size = u16::try_from(value).unwrap_or(0),
            reg::QUEUE_DESC_LOW => {
                staged.desc = GuestPhysAddr::new(set_low(staged.desc.raw(), value))
            }
            reg::QUEUE_DESC_HIGH => {
                staged.desc = GuestPhysAddr::new(set_high(staged.desc.raw(), value))
            }
            reg::QUEUE_DRIVER_LOW => {
                staged.avail = GuestPhysAddr::new(set_low(staged.avail.raw(), value))
            }
            reg::QUEUE_DRIVER_HIGH => {
                staged.avail = GuestPhysAddr::new(set_high(staged.avail.raw(), value))
            }
            reg::QUEUE_DEVICE_LOW => {
                staged.used = GuestPhysAddr::new(set_low(staged.used.raw(), value))
            }
            reg::QUEUE_DEVICE_HIGH => {
                staged.used = GuestPhysAddr::new(set_high(staged.used.raw(), value))
            }
            _ => return Err(self.bad_access(VirtioError::UnknownRegister)),
        }
        Ok(MmioAction::None)
    }

    /// QueueReady = 1 validates the queue (§4.2.3.2, REFERENCE); a bad
    /// queue is a driver error: DEVICE_NEEDS_RESET. QueueReady = 0 stops it.
    fn write_queue_ready<M: GuestMemory>(
        &mut self,
        value: u32,
        mem: &M,
    ) -> Result<MmioAction, VirtioError> {
        let event_idx = self.has_feature(feature::EVENT_IDX);
        let indirect = self.has_feature(feature::INDIRECT_DESC);
        let packed = self.has_feature(feature::RING_PACKED);
        let features_ok = self.status & status::FEATURES_OK != 0;
        let queue_max = self.queue_max;
        let Some(slot) = self.queues.get_mut(self.queue_sel as usize) else {
            return Err(self.bad_access(VirtioError::InvalidState));
        };
        if value == 0 {
            slot.queue.reset();
            return Ok(MmioAction::None);
        }
        if slot.queue.ready() {
            return Ok(MmioAction::None);
        }
        if !features_ok {
            self.fail();
            return Err(self.bad_access(VirtioError::InvalidState));
        }
        let layout = slot.staged;
        if let Err(e) = slot
            .queue
            .activate(packed, layout, queue_max, event_idx, indirect, mem)
        {
            self.fail();
            return Err(self.bad_access(e));
        }
        Ok(MmioAction::None)
    }

    fn notify(&mut self, value: u32) -> Result<MmioAction, VirtioError> {
        // Without VIRTIO_F_NOTIFICATION_DATA the value is the queue index.
        let live = self.is_live();
        let ready = self
            .queues
            .get(value as usize)
            .is_some_and(|s| s.queue.ready());
        if let (true, Some(slot)) = (live, self.queues.get_mut(value as usize)) {
            slot.queue.notified();
        }
        match u16::try_from(value) {
            Ok(index) if live && ready => Ok(MmioAction::Notify(index)),
            _ => {
                self.counters.bad_notifies += 1;
                Err(VirtioError::QueueNotReady)
            }
        }
    }

    /// The status state machine (§2.1, §3.1.1). Writing 0 resets; the driver
    /// only ever adds bits; FEATURES_OK is kept only if every accepted
    /// feature was offered (§2.2.2) and VERSION_1 was accepted (§6.1).
    fn write_status(&mut self, value: u32) -> Result<MmioAction, VirtioError> {
        if value == 0 {
            self.reset();
            return Ok(MmioAction::Reset);
        }
        const DRIVER_BITS: u32 = status::ACKNOWLEDGE
            | status::DRIVER
            | status::FEATURES_OK
            | status::DRIVER_OK
            | status::FAILED;
        let old = self.status & DRIVER_BITS;
        let new = value & DRIVER_BITS;
        // Clearing a bit other than by reset is a driver error.
        if old & !new != 0 {
            self.fail();
            return Err(self.bad_access(VirtioError::InvalidState));
        }
        let added = new & !old;
        if added & status::FAILED != 0 {
            self.status |= status::FAILED;
        }
        if added & status::ACKNOWLEDGE != 0 {
            self.status |= status::ACKNOWLEDGE;
        }
        if added & status::DRIVER != 0 {
            if self.status & status::ACKNOWLEDGE == 0 {
                return Err(self.bad_access(VirtioError::InvalidState));
            }
            self.status |= status::DRIVER;
        }
        if added & status::FEATURES_OK != 0 {
            if self.status & status::DRIVER == 0 {
                return Err(self.bad_access(VirtioError::InvalidState));
            }
            let offered = self.device.offered_features();
            if self.driver_features & !offered != 0
                || self.driver_features_beyond_64
                || self.driver_features & feature::VERSION_1 == 0
            {
                // §2.2.2 / §3.1.1 step 6: FEATURES_OK reads back clear.
                return Err(self.bad_access(VirtioError::FeatureNotOffered));
            }
            self.status |= status::FEATURES_OK;
        }
        if added & status::DRIVER_OK != 0 {
            if self.status & status::FEATURES_OK == 0 {
                self.fail();
                return Err(self.bad_access(VirtioError::InvalidState));
            }
            self.status |= status::DRIVER_OK;
            return Ok(MmioAction::DriverOk);
        }
        Ok(MmioAction::None)
    }
}
