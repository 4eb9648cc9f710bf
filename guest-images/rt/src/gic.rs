//! GICv2 (GICD + GICC) and GICv3 (GICD + GICR + ICC system registers) drivers.
//!
//! Only what the test guests need: enable the distributor and this CPU's
//! interface, enable a PPI or SGI, route and enable an SPI to this CPU,
//! acknowledge and end interrupts, and send SGIs. Every interrupt is Group 1 (non-secure) where the GIC distinguishes
//! groups, as Linux configures it, and all accesses are 32-bit (GICR_TYPER
//! as two halves), so an emulated GIC needs no byte, halfword or 64-bit
//! accesses (an AArch32 LDRD/STRD gives a hypervisor no syndrome).

use crate::arch::{self, icc};
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
use tock_registers::LocalRegisterCopy;

/// INTIDs at or above this are special (1020..=1023: spurious and friends).
const SPECIAL_INTID_START: u32 = 1020;
/// Priority given to every enabled interrupt (lower is more urgent).
const DEFAULT_PRIORITY: u32 = 0xa0;
/// Priority mask: interrupts with a priority value below this are signalled.
const PRIORITY_MASK: u32 = 0xf0;

register_bitfields! {u32,
    /// GICD_CTLR. In the GICv2 and in a GICv3 with one security state (DS = 1,
    /// QEMU virt without EL3) bit 0 enables Group 0 and bit 1 Group 1; in the
    /// non-secure view of a GICv3 with two states, bit 0 is EnableGrp1 and
    /// bit 1 EnableGrp1A. Setting both is right in every case, as Linux does.
    GICD_CTLR [
        /// Group 0 (or non-secure Group 1) forwarding.
        ENABLE_GRP0 OFFSET(0) NUMBITS(1) [],
        /// Group 1 (or Group 1A) forwarding.
        ENABLE_GRP1 OFFSET(1) NUMBITS(1) [],
        /// GICv3: affinity routing enabled (ARE / ARE_NS).
        ARE OFFSET(4) NUMBITS(1) [],
        /// GICv3: register writes pending.
        RWP OFFSET(31) NUMBITS(1) []
    ],
    /// GICC_CTLR (GICv2 CPU interface, non-secure or no-security view).
    GICC_CTLR [
        /// Signal Group 0 (no-security GIC) or Group 1 (non-secure view).
        ENABLE_GRP0 OFFSET(0) NUMBITS(1) [],
        /// Signal Group 1 (no-security GIC).
        ENABLE_GRP1 OFFSET(1) NUMBITS(1) [],
        /// Let GICC_IAR acknowledge Group 1 interrupts too (otherwise it reads
        /// 1022 for them). Matters under a hypervisor whose virtual CPU
        /// interface (GICV, secure-view layout) gets Group 1 list registers.
        ACK_CTL OFFSET(2) NUMBITS(1) []
    ],
    /// GICD_SGIR (GICv2).
    GICD_SGIR [
        /// SGI number.
        INTID OFFSET(0) NUMBITS(4) [],
        /// CPU interfaces to send to (one bit each).
        CPU_TARGET_LIST OFFSET(16) NUMBITS(8) [],
        /// 0: use the target list.
        TARGET_LIST_FILTER OFFSET(24) NUMBITS(2) [
            UseList = 0
        ]
    ],
    /// GICR_WAKER.
    GICR_WAKER [
        /// The PE is asleep as far as the redistributor is concerned.
        PROCESSOR_SLEEP OFFSET(1) NUMBITS(1) [],
        /// The redistributor's interfaces are quiescent.
        CHILDREN_ASLEEP OFFSET(2) NUMBITS(1) []
    ]
}

register_bitfields! {u64,
    /// GICR_TYPER.
    GICR_TYPER [
        /// This is the last redistributor in the region.
        LAST OFFSET(4) NUMBITS(1) [],
        /// The redistributor supports virtual LPIs (two more 64 KiB frames).
        VLPIS OFFSET(1) NUMBITS(1) [],
        /// Affinity of the PE this redistributor serves (Aff3.Aff2.Aff1.Aff0).
        AFFINITY_VALUE OFFSET(32) NUMBITS(32) []
    ]
}

register_structs! {
    /// Distributor registers used here (GICv2 and GICv3 share these offsets).
    DistributorRegisters {
        (0x000 => ctlr: ReadWrite<u32, GICD_CTLR::Register>),
        (0x004 => typer: ReadOnly<u32>),
        (0x008 => _reserved0),
        (0x080 => igroupr: [ReadWrite<u32>; 32]),
        (0x100 => isenabler: [ReadWrite<u32>; 32]),
        (0x180 => icenabler: [ReadWrite<u32>; 32]),
        (0x200 => _reserved1),
        (0x400 => ipriorityr: [ReadWrite<u32>; 255]),
        (0x7fc => _reserved2),
        (0x800 => itargetsr: [ReadWrite<u32>; 255]),
        (0xbfc => _reserved3),
        (0xf00 => sgir: WriteOnly<u32, GICD_SGIR::Register>),
        (0xf04 => @END),
    },

    /// GICv3 distributor SPI routing: GICD_IROUTER<n> at GICD + 0x6000 + 8n,
    /// for n = 32..=1019, each accessed as two 32-bit halves.
    DistributorRoutingRegisters {
        (0x000 => _reserved0),
        (0x100 => irouter: [ReadWrite<u32>; 2 * 988]),
        (0x1fe0 => @END),
    },

    /// GICv2 CPU interface registers used here.
    CpuInterfaceRegisters {
        (0x00 => ctlr: ReadWrite<u32, GICC_CTLR::Register>),
        (0x04 => pmr: ReadWrite<u32>),
        (0x08 => bpr: ReadWrite<u32>),
        (0x0c => iar: ReadOnly<u32>),
        (0x10 => eoir: WriteOnly<u32>),
        (0x14 => @END),
    },

    /// GICv3 redistributor, RD_base frame.
    RedistributorRegisters {
        (0x00 => ctlr: ReadWrite<u32>),
        (0x04 => iidr: ReadOnly<u32>),
        // GICR_TYPER as two 32-bit halves, read low then high as Linux's
        // 32-bit GICv3 driver does: a 64-bit load would be an LDRD on
        // AArch32, which a hypervisor cannot emulate (no syndrome).
        (0x08 => typer_low: ReadOnly<u32>),
        (0x0c => typer_high: ReadOnly<u32>),
        (0x10 => statusr: ReadWrite<u32>),
        (0x14 => waker: ReadWrite<u32, GICR_WAKER::Register>),
        (0x18 => @END),
    },

    /// GICv3 redistributor, SGI_base frame (RD_base + 64 KiB).
    RedistributorSgiRegisters {
        (0x000 => _reserved0),
        (0x080 => igroupr0: ReadWrite<u32>),
        (0x084 => _reserved1),
        (0x100 => isenabler0: ReadWrite<u32>),
        (0x104 => _reserved2),
        (0x180 => icenabler0: ReadWrite<u32>),
        (0x184 => _reserved3),
        (0x400 => ipriorityr: [ReadWrite<u32>; 8]),
        (0x420 => @END),
    }
}

/// Size of one redistributor frame (RD_base or SGI_base).
const REDISTRIBUTOR_FRAME: usize = 0x1_0000;

/// Which GIC the DTB describes, with its register bases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gic {
    /// GICv2 (`arm,cortex-a15-gic`, `arm,gic-400`).
    V2 {
        /// GICD base.
        distributor: usize,
        /// GICC base.
        cpu_interface: usize,
    },
    /// GICv3 (`arm,gic-v3`).
    V3 {
        /// GICD base.
        distributor: usize,
        /// Base of the redistributor region.
        redistributors: usize,
        /// Size of the redistributor region in bytes.
        redistributors_size: usize,
    },
}

impl Gic {
    /// The architecture version: 2 or 3.
    pub fn version(&self) -> u32 {
        match self {
            Self::V2 { .. } => 2,
            Self::V3 { .. } => 3,
        }
    }

    fn distributor(&self) -> &'static DistributorRegisters {
        let base = match *self {
            Self::V2 { distributor, .. } | Self::V3 { distributor, .. } => distributor,
        };
        // SAFETY: the base comes from the DTB's GIC node (`Platform::from_dtb`) and is a device frame for the whole run; registers are only touched through volatile tock-registers cells.
        unsafe { &*(base as *const DistributorRegisters) }
    }

    fn cpu_interface(cpu_interface: usize) -> &'static CpuInterfaceRegisters {
        // SAFETY: as for `distributor`: a GICC frame named by the DTB.
        unsafe { &*(cpu_interface as *const CpuInterfaceRegisters) }
    }

    /// Finds this CPU's redistributor by walking the region and comparing
    /// GICR_TYPER.Affinity_Value with MPIDR_EL1's affinity fields.
    fn redistributor(redistributors: usize, size: usize) -> Option<usize> {
        let mpidr = arch::mpidr();
        let affinity = (mpidr & 0x00ff_ffff) | ((mpidr >> 8) & 0xff00_0000);
        let end = redistributors.checked_add(size)?;
        let mut base = redistributors;
        while base.checked_add(2 * REDISTRIBUTOR_FRAME)? <= end {
            // SAFETY: `base` lies inside the redistributor region the DTB names, at a frame boundary.
            let frame = unsafe { &*(base as *const RedistributorRegisters) };
            let typer = LocalRegisterCopy::<u64, GICR_TYPER::Register>::new(
                u64::from(frame.typer_low.get()) | u64::from(frame.typer_high.get()) << 32,
            );
            if typer.read(GICR_TYPER::AFFINITY_VALUE) == affinity {
                return Some(base);
            }
            if typer.is_set(GICR_TYPER::LAST) {
                return None;
            }
            let frames = if typer.is_set(GICR_TYPER::VLPIS) {
                4
            } else {
                2
            };
            base = base.checked_add(frames * REDISTRIBUTOR_FRAME)?;
        }
        None
    }

    /// Enables the distributor. Called once, by the boot CPU.
    pub fn init_distributor(&self) {
        let distributor = self.distributor();
        match self {
            Self::V2 { .. } => {
                distributor
                    .ctlr
                    .write(GICD_CTLR::ENABLE_GRP0::SET + GICD_CTLR::ENABLE_GRP1::SET);
            }
            Self::V3 { .. } => {
                distributor.ctlr.write(
                    GICD_CTLR::ARE::SET + GICD_CTLR::ENABLE_GRP0::SET + GICD_CTLR::ENABLE_GRP1::SET,
                );
                while distributor.ctlr.is_set(GICD_CTLR::RWP) {
                    core::hint::spin_loop();
                }
            }
        }
    }

    /// Enables this CPU's interface (GICC, or redistributor + ICC registers).
    /// Called by each CPU for itself.
    pub fn init_cpu_interface(&self) {
        match *self {
            Self::V2 { cpu_interface, .. } => {
                let interface = Self::cpu_interface(cpu_interface);
                interface.pmr.set(PRIORITY_MASK);
                interface.bpr.set(0);
                interface.ctlr.write(
                    GICC_CTLR::ENABLE_GRP0::SET
                        + GICC_CTLR::ENABLE_GRP1::SET
                        + GICC_CTLR::ACK_CTL::SET,
                );
            }
            Self::V3 {
                redistributors,
                redistributors_size,
                ..
            } => {
                if let Some(base) = Self::redistributor(redistributors, redistributors_size) {
                    // SAFETY: `base` is this CPU's RD_base frame (found above).
                    let frame = unsafe { &*(base as *const RedistributorRegisters) };
                    frame.waker.modify(GICR_WAKER::PROCESSOR_SLEEP::CLEAR);
                    while frame.waker.is_set(GICR_WAKER::CHILDREN_ASLEEP) {
                        core::hint::spin_loop();
                    }
                    // All SGIs and PPIs in Group 1.
                    let sgi = sgi_frame(base);
                    sgi.igroupr0.set(u32::MAX);
                } else {
                    crate::println!("rt: no GICv3 redistributor for cpu {}", crate::cpu_index());
                }
                icc::enable_system_register_interface();
                icc::write_pmr(u64::from(PRIORITY_MASK));
                icc::write_bpr1(0);
                icc::write_igrpen1(1);
            }
        }
    }

    /// Enables a private interrupt (SGI 0..=15 or PPI 16..=31) on this CPU.
    pub fn enable_private(&self, intid: u32) {
        let bit = 1u32 << (intid % 32);
        let index = (intid / 4) as usize;
        let shift = (intid % 4) * 8;
        match *self {
            Self::V2 { .. } => {
                let distributor = self.distributor();
                let priority = &distributor.ipriorityr[index];
                priority.set((priority.get() & !(0xff << shift)) | (DEFAULT_PRIORITY << shift));
                distributor.isenabler[0].set(bit);
            }
            Self::V3 {
                redistributors,
                redistributors_size,
                ..
            } => {
                let Some(base) = Self::redistributor(redistributors, redistributors_size) else {
                    return;
                };
                let sgi = sgi_frame(base);
                let priority = &sgi.ipriorityr[index];
                priority.set((priority.get() & !(0xff << shift)) | (DEFAULT_PRIORITY << shift));
                sgi.isenabler0.set(bit);
            }
        }
    }

    /// Routes shared peripheral interrupt `intid` (32..=1019) to this CPU,
    /// gives it the default priority (Group 1 on a GICv3, like every other
    /// interrupt here) and enables it. Its trigger mode is left as reset or
    /// firmware set it (level for QEMU virt's devices). Ignores other INTIDs.
    pub fn enable_shared(&self, intid: u32) {
        if !(32..SPECIAL_INTID_START).contains(&intid) {
            return;
        }
        let distributor = self.distributor();
        let bit = 1u32 << (intid % 32);
        let word = (intid / 32) as usize;
        let index = (intid / 4) as usize;
        let shift = (intid % 4) * 8;
        let priority = &distributor.ipriorityr[index];
        priority.set((priority.get() & !(0xff << shift)) | (DEFAULT_PRIORITY << shift));
        match *self {
            Self::V2 { .. } => {
                // GICD_ITARGETSR: one byte per interrupt, a CPU-interface mask.
                let mask = match self.cpu_target_mask() {
                    0 => 1 << (arch::mpidr() & 0x7),
                    mask => mask,
                };
                let target = &distributor.itargetsr[index];
                target.set((target.get() & !(0xff << shift)) | (mask << shift));
            }
            Self::V3 {
                distributor: base, ..
            } => {
                distributor.igroupr[word].set(distributor.igroupr[word].get() | bit);
                // GICD_IROUTER<n>: Interrupt_Routing_Mode 0 (bit 31) and this
                // CPU's Aff2.Aff1.Aff0 in the low half, Aff3 in the high half.
                let mpidr = arch::mpidr();
                // SAFETY: GICD_IROUTER<n> lies in the distributor frame the DTB names (GICv3 architecture, 12.9.22), a device for the whole run, accessed only through tock-registers' volatile cells.
                let routing = unsafe { &*((base + 0x6000) as *const DistributorRoutingRegisters) };
                let half = 2 * (intid as usize - 32);
                routing.irouter[half].set((mpidr & 0x00ff_ffff) as u32);
                routing.irouter[half + 1].set(((mpidr >> 32) & 0xff) as u32);
            }
        }
        distributor.isenabler[word].set(bit);
    }

    /// Disables a private interrupt on this CPU.
    pub fn disable_private(&self, intid: u32) {
        let bit = 1u32 << (intid % 32);
        match *self {
            Self::V2 { .. } => self.distributor().icenabler[0].set(bit),
            Self::V3 {
                redistributors,
                redistributors_size,
                ..
            } => {
                if let Some(base) = Self::redistributor(redistributors, redistributors_size) {
                    sgi_frame(base).icenabler0.set(bit);
                }
            }
        }
    }

    /// This CPU's GICv2 CPU-interface mask (GICD_ITARGETSR0 reads it back, as
    /// Linux's `gic_get_cpumask` does); GICv3 returns 0.
    pub fn cpu_target_mask(&self) -> u32 {
        match self {
            Self::V2 { .. } => {
                let word = self.distributor().itargetsr[0].get();
                word & 0xff
            }
            Self::V3 { .. } => 0,
        }
    }

    /// Sends SGI `intid` to the CPU whose MPIDR is `mpidr`. For GICv2,
    /// `target_mask` is that CPU's interface mask ([`Gic::cpu_target_mask`] read
    /// on it); 0 falls back to `1 << Aff0`.
    pub fn send_sgi(&self, intid: u32, mpidr: u64, target_mask: u32) {
        // Make earlier stores visible before the interrupt arrives.
        arch::dsb_sy();
        match self {
            Self::V2 { .. } => {
                let mask = if target_mask != 0 {
                    target_mask
                } else {
                    1 << (mpidr & 0x7)
                };
                self.distributor().sgir.write(
                    GICD_SGIR::TARGET_LIST_FILTER::UseList
                        + GICD_SGIR::CPU_TARGET_LIST.val(mask)
                        + GICD_SGIR::INTID.val(intid),
                );
            }
            Self::V3 { .. } => icc::send_sgi1(intid, mpidr),
        }
    }

    /// Acknowledges the highest-priority pending interrupt; `None` if spurious.
    pub fn acknowledge(&self) -> Option<u32> {
        let intid = match *self {
            Self::V2 { cpu_interface, .. } => Self::cpu_interface(cpu_interface).iar.get() & 0x3ff,
            // Group 1 interrupts only; IAR1 INTIDs fit in 24 bits.
            Self::V3 { .. } => (icc::read_iar1() & 0xff_ffff) as u32,
        };
        (intid < SPECIAL_INTID_START).then_some(intid)
    }

    /// Signals end of interrupt (priority drop and deactivation, EOImode 0).
    pub fn end_of_interrupt(&self, intid: u32) {
        match *self {
            Self::V2 { cpu_interface, .. } => Self::cpu_interface(cpu_interface).eoir.set(intid),
            Self::V3 { .. } => icc::write_eoir1(u64::from(intid)),
        }
    }
}

fn sgi_frame(rd_base: usize) -> &'static RedistributorSgiRegisters {
    // SAFETY: the SGI_base frame follows a redistributor's RD_base frame (GICv3 architecture, 12.10); `rd_base` came from `Gic::redistributor`.
    unsafe { &*((rd_base + REDISTRIBUTOR_FRAME) as *const RedistributorSgiRegisters) }
}
