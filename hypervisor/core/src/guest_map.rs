//! The machine every VM sees, defined once: where its RAM and emulated
//! devices sit and which interrupts they raise.
//!
//! Trap routing ([`GuestMap::route`]), the stage-2 mapping of the GICv2 CPU
//! interface and the generated guest device tree (`chroma-devtree`) all read
//! this one table, so they cannot disagree. The layout is QEMU `virt`'s
//! (hw/arm/virt.c `base_memmap`) on every board, so a kernel built for QEMU
//! virt boots unchanged under chroma wherever chroma runs.

use crate::vgic::GicVersion;
use chroma_manifest::GuestArch;

/// A window of guest-physical addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First address.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
}

impl Window {
    /// The offset of `ipa` inside the window, if it is inside.
    pub fn offset_of(&self, ipa: u64) -> Option<u64> {
        let offset = ipa.checked_sub(self.base)?;
        (offset < self.size).then_some(offset)
    }
}

/// A row of identical windows: frame `n` is at `base + n * stride`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowArray {
    /// The first frame.
    pub base: u64,
    /// Distance between frames, and each frame's size.
    pub stride: u64,
    /// Most frames the layout has room for.
    pub max_count: u32,
}

impl WindowArray {
    /// Frame `n`'s window.
    pub fn window(&self, n: u32) -> Window {
        Window {
            base: self.base + u64::from(n) * self.stride,
            size: self.stride,
        }
    }

    /// `(frame, offset)` of `ipa` among the first `count` frames.
    ///
    /// Every MMIO exit to a NIC's window (each kick) routes through here.
    /// A stride that is a power of two (virtio-mmio's 0x200) takes a shift
    /// and a mask: a 64-bit division is a library call on AArch32.
    pub fn locate(&self, ipa: u64, count: u32) -> Option<(u32, u64)> {
        let offset = ipa.checked_sub(self.base)?;
        let (frame, within) = if self.stride.is_power_of_two() {
            (
                offset >> self.stride.trailing_zeros(),
                offset & (self.stride - 1),
            )
        } else {
            (
                offset.checked_div(self.stride)?,
                offset.checked_rem(self.stride)?,
            )
        };
        // A frame number past u32 is past `count` too.
        let frame = u32::try_from(frame).ok()?;
        (frame < count.min(self.max_count)).then_some((frame, within))
    }
}

/// The guest-physical layout and interrupt numbers of the VM's machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestMap {
    /// Where guest RAM starts (the configuration may place it elsewhere,
    /// but never over a device window).
    pub ram_base: u64,
    /// GIC distributor (GICv2 and GICv3).
    pub gic_distributor: Window,
    /// GICv2 CPU interface: the hardware GICV (or a software model) appears here.
    pub gic_cpu_interface: Window,
    /// Bytes of the GICv2 CPU interface that are mapped or emulated (GICC
    /// registers up to GICC_DIR at 0x1000).
    pub gic_cpu_interface_used: u64,
    /// GICv3 redistributors: one RD_base + SGI_base frame pair per vCPU.
    pub gic_redistributors: WindowArray,
    /// The PL011 console.
    pub uart: Window,
    /// The PL011's interrupt (INTID).
    pub uart_intid: u32,
    /// virtio-mmio transports, one per NIC in configuration order.
    pub virtio_mmio: WindowArray,
    /// Interrupt (INTID) of transport 0; transport n raises `+ n`.
    pub virtio_first_intid: u32,
    /// Architected timer PPIs (INTIDs): secure physical, non-secure
    /// physical, virtual, hypervisor.
    pub timer_intids: TimerIntids,
}

/// The architected timer's interrupts as the guest sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerIntids {
    /// Secure physical timer.
    pub secure_physical: u32,
    /// Non-secure physical timer.
    pub physical: u32,
    /// Virtual timer.
    pub virtual_timer: u32,
    /// Hypervisor (EL2) physical timer.
    pub hypervisor: u32,
}

/// First shared peripheral interrupt: SPI n is INTID 32 + n.
pub const FIRST_SPI: u32 = 32;

/// QEMU `virt`'s map, the machine every chroma VM sees.
pub const QEMU_VIRT: GuestMap = GuestMap {
    ram_base: 0x4000_0000,
    gic_distributor: Window {
        base: 0x0800_0000,
        size: 0x1_0000,
    },
    gic_cpu_interface: Window {
        base: 0x0801_0000,
        size: 0x1_0000,
    },
    gic_cpu_interface_used: 0x2000,
    gic_redistributors: WindowArray {
        base: 0x080A_0000,
        stride: 0x2_0000,
        max_count: 8,
    },
    uart: Window {
        base: 0x0900_0000,
        size: 0x1000,
    },
    uart_intid: FIRST_SPI + 1,
    virtio_mmio: WindowArray {
        base: 0x0A00_0000,
        stride: 0x200,
        max_count: 32,
    },
    virtio_first_intid: FIRST_SPI + 16,
    timer_intids: TimerIntids {
        secure_physical: 29,
        physical: 30,
        virtual_timer: 27,
        hypervisor: 26,
    },
};

/// The emulated device a trapped access reaches, with its offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestDevice {
    /// The GIC distributor.
    GicDistributor(u64),
    /// A GICv3 redistributor frame pair: (vCPU, offset in its frames).
    GicRedistributor(usize, u64),
    /// The GICv2 CPU interface, where the board has no hardware virtual
    /// CPU interface mapped there (a GIC-400's GICV never traps): the
    /// host's software one answers, if it has one.
    GicCpuInterface(u64),
    /// The PL011 console.
    Uart(u64),
    /// A virtio-mmio transport: (NIC index, offset).
    VirtioMmio(usize, u64),
}

/// What a VM has, which decides which windows are live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmShape {
    /// The GIC version the guest sees.
    pub gic: GicVersion,
    /// vCPUs.
    pub vcpu_count: usize,
    /// virtio-mmio transports (NICs).
    pub nic_count: usize,
    /// The execution state of the guest's EL1 (AArch32: HCR_EL2.RW = 0).
    pub arch: GuestArch,
}

impl GuestMap {
    /// The device at `ipa` for a VM of `shape`, or `None` (no device there:
    /// the guest gets an external abort).
    pub fn route(&self, ipa: u64, shape: VmShape) -> Option<GuestDevice> {
        if let Some(offset) = self.gic_distributor.offset_of(ipa) {
            return Some(GuestDevice::GicDistributor(offset));
        }
        if shape.gic == GicVersion::V3 {
            let count = u32::try_from(shape.vcpu_count).unwrap_or(u32::MAX);
            if let Some((vcpu, offset)) = self.gic_redistributors.locate(ipa, count) {
                return Some(GuestDevice::GicRedistributor(vcpu as usize, offset));
            }
        }
        if shape.gic == GicVersion::V2 {
            if let Some(offset) = self.gic_cpu_interface.offset_of(ipa) {
                if offset < self.gic_cpu_interface_used {
                    return Some(GuestDevice::GicCpuInterface(offset));
                }
            }
        }
        if let Some(offset) = self.uart.offset_of(ipa) {
            return Some(GuestDevice::Uart(offset));
        }
        let nics = u32::try_from(shape.nic_count).unwrap_or(u32::MAX);
        self.virtio_mmio
            .locate(ipa, nics)
            .map(|(n, offset)| GuestDevice::VirtioMmio(n as usize, offset))
    }

    /// The interrupt (INTID) of virtio-mmio transport `n`.
    pub fn virtio_intid(&self, n: u32) -> u32 {
        self.virtio_first_intid + n
    }

    /// Whether `[base, base + size)` of guest RAM stays clear of every device
    /// window (a configuration must not put RAM over a device).
    pub fn ram_clear_of_devices(&self, base: u64, size: u64) -> bool {
        let Some(end) = base.checked_add(size) else {
            return false;
        };
        self.device_windows()
            .iter()
            .all(|w| end <= w.base || base >= w.base + w.size)
    }

    /// The end of the highest device window: every device address lies
    /// below it (with RAM's end, the IPA size a VM needs).
    pub fn devices_end(&self) -> u64 {
        self.device_windows()
            .iter()
            .map(|w| w.base + w.size)
            .max()
            .unwrap_or(0)
    }

    /// Every device window, arrays whole (all their slots).
    fn device_windows(&self) -> [Window; 5] {
        let redistributors = Window {
            base: self.gic_redistributors.base,
            size: self.gic_redistributors.stride * u64::from(self.gic_redistributors.max_count),
        };
        let virtio = Window {
            base: self.virtio_mmio.base,
            size: self.virtio_mmio.stride * u64::from(self.virtio_mmio.max_count),
        };
        [
            self.gic_distributor,
            self.gic_cpu_interface,
            redistributors,
            self.uart,
            virtio,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: VmShape = VmShape {
        gic: GicVersion::V2,
        vcpu_count: 2,
        nic_count: 2,
        arch: chroma_manifest::GuestArch::Aarch64,
    };
    const V3: VmShape = VmShape {
        gic: GicVersion::V3,
        vcpu_count: 2,
        nic_count: 1,
        arch: chroma_manifest::GuestArch::Aarch64,
    };

    #[test]
    fn routes_every_device_window_and_nothing_else() {
        let m = QEMU_VIRT;
        assert_eq!(
            m.route(0x0800_0004, V2),
            Some(GuestDevice::GicDistributor(4))
        );
        assert_eq!(m.route(0x0900_0018, V2), Some(GuestDevice::Uart(0x18)));
        assert_eq!(
            m.route(0x0A00_0200 + 0x50, V2),
            Some(GuestDevice::VirtioMmio(1, 0x50))
        );
        // A third transport does not exist for a VM with two NICs.
        assert_eq!(m.route(0x0A00_0400, V2), None);
        // Redistributors exist on GICv3 only, and only for existing vCPUs.
        assert_eq!(
            m.route(0x080A_0000 + 0x2_0000 + 0x1_0100, V3),
            Some(GuestDevice::GicRedistributor(1, 0x1_0100))
        );
        assert_eq!(m.route(0x080A_0000 + 2 * 0x2_0000, V3), None);
        assert_eq!(m.route(0x080A_0000, V2), None);
        // The GICv2 CPU interface (GICC_IAR, GICC_DIR), up to its used
        // size; a GICv3 VM has none.
        assert_eq!(
            m.route(0x0801_000c, V2),
            Some(GuestDevice::GicCpuInterface(0xc))
        );
        assert_eq!(
            m.route(0x0801_1000, V2),
            Some(GuestDevice::GicCpuInterface(0x1000))
        );
        assert_eq!(m.route(0x0801_2000, V2), None);
        assert_eq!(m.route(0x0801_000c, V3), None);
        // Just past the UART, RAM-less space and the top of the address space.
        assert_eq!(m.route(0x0900_1000, V2), None);
        assert_eq!(m.route(0x3fff_ffff, V2), None);
        assert_eq!(m.route(u64::MAX, V3), None);
    }

    #[test]
    fn interrupts_follow_the_qemu_virt_numbering() {
        assert_eq!(QEMU_VIRT.uart_intid, 33);
        assert_eq!(QEMU_VIRT.virtio_intid(0), 48);
        assert_eq!(QEMU_VIRT.virtio_intid(3), 51);
    }

    /// `locate` by division, as it was before the shift: the reference.
    fn locate_by_division(w: &WindowArray, ipa: u64, count: u32) -> Option<(u32, u64)> {
        let offset = ipa.checked_sub(w.base)?;
        let frame = u32::try_from(offset.checked_div(w.stride)?).ok()?;
        (frame < count.min(w.max_count)).then(|| (frame, offset % w.stride))
    }

    /// How many of the cases around every frame's edges and far past the
    /// windows `f` answers otherwise than the division does, over strides
    /// that are powers of two (the shift), others (the division) and zero.
    fn disagreements(f: impl Fn(&WindowArray, u64, u32) -> Option<(u32, u64)>) -> (usize, usize) {
        let (mut wrong, mut cases) = (0, 0);
        for stride in [0x200u64, 0x2_0000, 1 << 40, 0x300, 0x1_8000, 1, 0] {
            let w = WindowArray {
                base: 0x0A00_0000,
                stride,
                max_count: 32,
            };
            for frame in [0u64, 1, 2, 31, 32, 33, 1 << 33] {
                for delta in [0i64, 1, -1, 0x1ff, 0x200] {
                    let ipa = w
                        .base
                        .wrapping_add(frame.wrapping_mul(stride))
                        .wrapping_add_signed(delta);
                    for count in [0, 1, 3, 32, 64] {
                        cases += 1;
                        wrong +=
                            usize::from(f(&w, ipa, count) != locate_by_division(&w, ipa, count));
                    }
                }
            }
        }
        (wrong, cases)
    }

    #[test]
    fn a_window_is_located_by_shift_as_by_division() {
        let (wrong, cases) = disagreements(WindowArray::locate);
        assert!(cases > 1000);
        assert_eq!(wrong, 0, "{wrong} of {cases} cases located otherwise");
    }

    #[test]
    fn negative_control_a_shift_one_bit_short_is_caught() {
        let shift_one_short = |w: &WindowArray, ipa: u64, count: u32| {
            let offset = ipa.checked_sub(w.base)?;
            let bits = w.stride.checked_ilog2()?.saturating_sub(1);
            let frame = u32::try_from(offset >> bits).ok()?;
            (frame < count.min(w.max_count)).then_some((frame, offset & ((1 << bits) - 1)))
        };
        assert!(disagreements(shift_one_short).0 > 0);
    }

    #[test]
    fn ram_over_a_device_window_is_refused() {
        assert!(QEMU_VIRT.ram_clear_of_devices(0x4000_0000, 1 << 30));
        assert!(!QEMU_VIRT.ram_clear_of_devices(0x0800_0000, 0x1000));
        assert!(!QEMU_VIRT.ram_clear_of_devices(0, 0x0900_0001));
        assert!(!QEMU_VIRT.ram_clear_of_devices(u64::MAX - 1, 16));
    }

    #[test]
    fn the_devices_end_below_which_every_window_lies() {
        // virtio-mmio's 32 slots of 0x200 from 0x0a00_0000 end highest.
        assert_eq!(QEMU_VIRT.devices_end(), 0x0a00_4000);
        // RAM from there on is clear of them; a byte less is not.
        assert!(QEMU_VIRT.ram_clear_of_devices(QEMU_VIRT.devices_end(), 0x1000));
        assert!(!QEMU_VIRT.ram_clear_of_devices(QEMU_VIRT.devices_end() - 0x1000, 0x1000));
    }
}
