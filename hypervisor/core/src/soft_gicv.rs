//! A GICv2 virtual CPU interface in software, for a board whose interrupt
//! controller has no virtualization extensions (the Raspberry Pi 3's
//! BCM2836 local controller has no GIC at all).
//!
//! It is the hardware's GICH + GICV pair, modelled: list registers that the
//! vGIC fills through the same [`ListRegisters`] seam as on a GIC-400
//! ([`Vgic::flush`](crate::vgic::Vgic::flush) before entry,
//! [`Vgic::sync`](crate::vgic::Vgic::sync) after exit), a VMCR and an
//! active-priority register in the `GICH_VMCR` and `GICH_APR` layouts (so a
//! vCPU switch saves and restores them as it does the hardware ones), and
//! the guest's GICC registers, which trap because nothing is mapped at the
//! guest's GICC window. [`SoftCpuInterface::lines`] says whether the
//! virtual IRQ or FIQ line is asserted; the back-end raises it with
//! HCR_EL2.VI / VF before entry (GICv2 IHI 0048B, 5.3 and 5.4 describe
//! the behaviour modelled here).
//!
//! Every acknowledge and completion of the guest traps here, and every
//! trap ends with `sync` and the next entry with `flush`: the list
//! registers are refilled at each of them, so the underflow and EOI
//! maintenance interrupts of the hardware are never needed.

use crate::exit::AccessWidth;
use crate::vgic::{ListRegister, ListRegisters, LrState, PhysicalInterrupts, VgicError};

/// List registers of the software interface (as many as the model keeps).
pub const SOFT_LIST_REGISTERS: usize = crate::vgic::MAX_LIST_REGISTERS;

/// Interrupt ID the CPU interface returns when nothing can be acknowledged.
const SPURIOUS: u32 = 1023;
/// Interrupt ID returned by GICC_IAR when the highest-priority pending
/// interrupt is Group 1 and GICC_CTLR.AckCtl is clear.
const GROUP1_PENDING: u32 = 1022;
/// Priority bits a GICv2 virtual interface keeps: [7:3] (32 levels, as the
/// GIC-400's GICH_VTR.PRIbits = 4 says).
const PRIORITY_MASK: u8 = 0xf8;
/// GICV_IIDR of a GIC-400 (ARM, architecture version 2).
const IIDR: u32 = 0x0202_143b;

/// GICv2 CPU interface register offsets (IHI 0048B, 4.4).
mod offsets {
    pub const CTLR: u64 = 0x00;
    pub const PMR: u64 = 0x04;
    pub const BPR: u64 = 0x08;
    pub const IAR: u64 = 0x0c;
    pub const EOIR: u64 = 0x10;
    pub const RPR: u64 = 0x14;
    pub const HPPIR: u64 = 0x18;
    pub const ABPR: u64 = 0x1c;
    pub const AIAR: u64 = 0x20;
    pub const AEOIR: u64 = 0x24;
    pub const AHPPIR: u64 = 0x28;
    pub const APR0: u64 = 0xd0;
    pub const IIDR: u64 = 0xfc;
    pub const DIR: u64 = 0x1000;
}

/// GICH_VMCR fields (IHI 0048B, 5.3.4); GICV_CTLR's bits sit at the same
/// positions as VMCR's low control bits.
mod vmcr {
    pub const GRP0_EN: u32 = 1 << 0;
    pub const GRP1_EN: u32 = 1 << 1;
    pub const ACK_CTL: u32 = 1 << 2;
    pub const FIQ_EN: u32 = 1 << 3;
    pub const CBPR: u32 = 1 << 4;
    pub const EOI_MODE: u32 = 1 << 9;
    /// The GICV_CTLR bits VMCR holds.
    pub const CTLR_BITS: u32 = GRP0_EN | GRP1_EN | ACK_CTL | FIQ_EN | CBPR | EOI_MODE;
    pub const ABP_SHIFT: u32 = 18;
    pub const BP_SHIFT: u32 = 21;
    pub const PRI_MASK_SHIFT: u32 = 27;
}

/// Smallest binary point of Group 0 (GICV_BPR) with 5 priority bits.
const MIN_BPR: u32 = 2;
/// Smallest binary point of Group 1 (GICV_ABPR).
const MIN_ABPR: u32 = 3;

/// The virtual interrupt lines the interface asserts towards the vCPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtualLines {
    /// The virtual IRQ (HCR_EL2.VI).
    pub irq: bool,
    /// The virtual FIQ (HCR_EL2.VF): Group 0 with GICV_CTLR.FIQEn.
    pub fiq: bool,
}

/// One physical CPU's virtual CPU interface, holding the state of the vCPU
/// loaded there.
#[derive(Clone, Copy, Debug)]
pub struct SoftCpuInterface {
    lrs: [ListRegister; SOFT_LIST_REGISTERS],
    /// GICH_VMCR layout.
    vmcr: u32,
    /// GICH_APR layout: bit n set while an interrupt of group priority
    /// `n << 3` is active (acknowledged and not yet priority-dropped).
    apr: u32,
}

impl Default for SoftCpuInterface {
    fn default() -> Self {
        Self::new()
    }
}

impl SoftCpuInterface {
    /// An interface with empty list registers and everything disabled
    /// (GICV_CTLR, GICV_PMR and GICV_APR reset to zero, as a vCPU's do).
    pub const fn new() -> Self {
        const EMPTY: ListRegister = ListRegister {
            intid: 0,
            state: LrState::Invalid,
            priority: 0,
            group1: false,
            source: 0,
            physical: None,
        };
        Self {
            lrs: [EMPTY; SOFT_LIST_REGISTERS],
            vmcr: (MIN_BPR << vmcr::BP_SHIFT) | (MIN_ABPR << vmcr::ABP_SHIFT),
            apr: 0,
        }
    }

    /// The VMCR to save when the vCPU leaves the CPU (GICH_VMCR layout).
    pub fn vmcr(&self) -> u32 {
        self.vmcr
    }

    /// Restores a vCPU's VMCR. A vCPU that never ran has all-zero state;
    /// its binary points read as their minimum, as on hardware.
    pub fn set_vmcr(&mut self, value: u32) {
        self.vmcr = value;
        self.set_binary_points(self.bpr(), self.abpr());
    }

    /// The active priorities to save (GICH_APR layout).
    pub fn apr(&self) -> u32 {
        self.apr
    }

    /// Restores a vCPU's active priorities.
    pub fn set_apr(&mut self, value: u32) {
        self.apr = value;
    }

    fn has(&self, bit: u32) -> bool {
        self.vmcr & bit != 0
    }

    fn pmr(&self) -> u8 {
        // 5 bits of mask, in priority bits [7:3]: the low byte is all of it.
        ((self.vmcr >> vmcr::PRI_MASK_SHIFT) << 3).to_le_bytes()[0]
    }

    fn bpr(&self) -> u32 {
        (self.vmcr >> vmcr::BP_SHIFT) & 7
    }

    fn abpr(&self) -> u32 {
        (self.vmcr >> vmcr::ABP_SHIFT) & 7
    }

    fn set_binary_points(&mut self, bpr: u32, abpr: u32) {
        let clear = !((7 << vmcr::BP_SHIFT) | (7 << vmcr::ABP_SHIFT));
        self.vmcr = self.vmcr & clear
            | (bpr.max(MIN_BPR) & 7) << vmcr::BP_SHIFT
            | (abpr.max(MIN_ABPR) & 7) << vmcr::ABP_SHIFT;
    }

    /// The group priority of `priority` for an interrupt of `group1`: the
    /// bits above the group's binary point (GICv2 3.3.3; with CBPR, Group 1
    /// uses Group 0's).
    fn group_priority(&self, priority: u8, group1: bool) -> u8 {
        let mask: u32 = if group1 && !self.has(vmcr::CBPR) {
            0xff << self.abpr()
        } else {
            0xff << (self.bpr() + 1)
        };
        priority & PRIORITY_MASK & (mask & 0xff) as u8
    }

    /// The running priority: the highest active group priority, or 0x100
    /// (below every priority) when nothing is active.
    fn running_priority(&self) -> u16 {
        if self.apr == 0 {
            0x100
        } else {
            // At most 31: the register has 32 bits.
            u16::from(self.apr.trailing_zeros().to_le_bytes()[0]) << 3
        }
    }

    fn group_enabled(&self, group1: bool) -> bool {
        self.has(if group1 { vmcr::GRP1_EN } else { vmcr::GRP0_EN })
    }

    /// The highest-priority pending list register whose group is enabled
    /// and passes `filter` (lowest index among equals).
    fn best_pending(&self, filter: impl Fn(&ListRegister) -> bool) -> Option<usize> {
        self.lrs
            .iter()
            .enumerate()
            .filter(|(_, lr)| {
                lr.state == LrState::Pending && self.group_enabled(lr.group1) && filter(lr)
            })
            .min_by_key(|(index, lr)| (lr.priority & PRIORITY_MASK, *index))
            .map(|(index, _)| index)
    }

    /// Whether `lr` has the priority to be signalled now: above the
    /// priority mask and preempting the running priority.
    fn can_signal(&self, lr: &ListRegister) -> bool {
        lr.priority & PRIORITY_MASK < self.pmr()
            && u16::from(self.group_priority(lr.priority, lr.group1)) < self.running_priority()
    }

    /// The virtual lines to assert before the vCPU runs.
    pub fn lines(&self) -> VirtualLines {
        let Some(index) = self.best_pending(|_| true) else {
            return VirtualLines::default();
        };
        let Some(lr) = self.lrs.get(index) else {
            return VirtualLines::default();
        };
        if !self.can_signal(lr) {
            return VirtualLines::default();
        }
        let fiq = !lr.group1 && self.has(vmcr::FIQ_EN);
        VirtualLines { irq: !fiq, fiq }
    }

    /// The value GICV_IAR / HPPIR returns for list register `lr`: the
    /// interrupt ID, and for an SGI the requesting CPU in bits [12:10].
    fn interrupt_value(lr: &ListRegister) -> u32 {
        if lr.intid < 16 {
            lr.intid | u32::from(lr.source & 7) << 10
        } else {
            lr.intid
        }
    }

    /// GICV_IAR (`group1_only`: GICV_AIAR): acknowledges the
    /// highest-priority pending interrupt that may be signalled.
    fn acknowledge(&mut self, group1_only: bool) -> u32 {
        let Some(index) = self.best_pending(|lr| !group1_only || lr.group1) else {
            return SPURIOUS;
        };
        let apr_bit;
        let value;
        {
            let Some(lr) = self.lrs.get(index).copied() else {
                return SPURIOUS;
            };
            if lr.group1 && !group1_only && !self.has(vmcr::ACK_CTL) {
                return GROUP1_PENDING;
            }
            if !self.can_signal(&lr) {
                return SPURIOUS;
            }
            apr_bit = u32::from(self.group_priority(lr.priority, lr.group1) >> 3);
            value = Self::interrupt_value(&lr);
        }
        if let Some(lr) = self.lrs.get_mut(index) {
            lr.state = LrState::Active;
        }
        self.apr |= 1 << apr_bit;
        value
    }

    /// GICV_HPPIR (`group1_only`: GICV_AHPPIR).
    fn highest_pending(&self, group1_only: bool) -> u32 {
        self.best_pending(|lr| !group1_only || lr.group1)
            .and_then(|index| self.lrs.get(index))
            .map_or(SPURIOUS, Self::interrupt_value)
    }

    /// GICV_EOIR / GICV_AEOIR: priority drop, and deactivation unless
    /// GICV_CTLR.EOImode splits it off to GICV_DIR.
    fn end_of_interrupt(&mut self, value: u32, physical: &mut impl PhysicalInterrupts) {
        if value & 0x3ff >= 1020 {
            return;
        }
        if self.apr != 0 {
            // Drop the highest active priority (the lowest set bit).
            self.apr &= self.apr - 1;
        }
        if !self.has(vmcr::EOI_MODE) {
            self.deactivate(value, physical);
        }
    }

    /// Deactivates interrupt `value` (ID and, for an SGI, source CPU): its
    /// list register leaves the active state, and a linked physical
    /// interrupt is deactivated with it (the HW bit). An interrupt in no
    /// list register changes nothing (hardware counts it in EOIcount,
    /// which the vGIC does not use: it loads every active interrupt).
    fn deactivate(&mut self, value: u32, physical: &mut impl PhysicalInterrupts) {
        let intid = value & 0x3ff;
        let source = ((value >> 10) & 7) as u8;
        let found = self.lrs.iter_mut().find(|lr| {
            lr.intid == intid
                && (intid >= 16 || lr.source & 7 == source)
                && matches!(lr.state, LrState::Active | LrState::PendingActive)
        });
        let Some(lr) = found else { return };
        lr.state = match lr.state {
            LrState::PendingActive => LrState::Pending,
            _ => LrState::Invalid,
        };
        if let Some(p) = lr.physical {
            physical.set_active(p, false);
        }
    }

    /// A guest read of its GICC register at `offset`.
    pub fn mmio_read(&mut self, offset: u64, width: AccessWidth) -> Result<u32, VgicError> {
        if width != AccessWidth::Word || !offset.is_multiple_of(4) {
            return Err(VgicError::BadAccess);
        }
        Ok(match offset {
            offsets::CTLR => self.vmcr & vmcr::CTLR_BITS,
            offsets::PMR => u32::from(self.pmr()),
            offsets::BPR => self.bpr(),
            offsets::ABPR => self.abpr(),
            offsets::IAR => self.acknowledge(false),
            offsets::AIAR => self.acknowledge(true),
            offsets::RPR => u32::from(self.running_priority().min(0xff)),
            offsets::HPPIR => self.highest_pending(false),
            offsets::AHPPIR => self.highest_pending(true),
            offsets::APR0 => self.apr,
            offsets::IIDR => IIDR,
            // Write-only registers and the reserved space read as zero.
            _ => 0,
        })
    }

    /// A guest write of `value` to its GICC register at `offset`;
    /// `physical` takes the deactivation of linked interrupts.
    pub fn mmio_write(
        &mut self,
        offset: u64,
        width: AccessWidth,
        value: u32,
        physical: &mut impl PhysicalInterrupts,
    ) -> Result<(), VgicError> {
        if width != AccessWidth::Word || !offset.is_multiple_of(4) {
            return Err(VgicError::BadAccess);
        }
        match offset {
            offsets::CTLR => self.vmcr = self.vmcr & !vmcr::CTLR_BITS | value & vmcr::CTLR_BITS,
            offsets::PMR => {
                let mask = (value >> 3) & 0x1f;
                self.vmcr =
                    self.vmcr & !(0x1f << vmcr::PRI_MASK_SHIFT) | mask << vmcr::PRI_MASK_SHIFT;
            }
            offsets::BPR => self.set_binary_points(value & 7, self.abpr()),
            offsets::ABPR => self.set_binary_points(self.bpr(), value & 7),
            offsets::EOIR | offsets::AEOIR => self.end_of_interrupt(value, physical),
            // With EOImode clear a write to DIR is UNPREDICTABLE: ignored.
            offsets::DIR if self.has(vmcr::EOI_MODE) => self.deactivate(value, physical),
            offsets::APR0 => self.apr = value,
            // Read-only registers and the reserved space ignore writes.
            _ => {}
        }
        Ok(())
    }
}

impl ListRegisters for SoftCpuInterface {
    fn count(&self) -> usize {
        SOFT_LIST_REGISTERS
    }

    fn read(&self, index: usize) -> ListRegister {
        self.lrs.get(index).copied().unwrap_or_default()
    }

    fn write(&mut self, index: usize, value: ListRegister) {
        if let Some(lr) = self.lrs.get_mut(index) {
            *lr = ListRegister {
                priority: value.priority & PRIORITY_MASK,
                ..value
            };
        }
    }

    /// Nothing to request: every acknowledge and completion traps, and
    /// the list registers are refilled before the vCPU runs again.
    fn set_underflow_interrupt(&mut self, _enable: bool) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vgic::{GicFrame, GicVersion, Vgic};

    /// Physical interrupts that record deactivations.
    #[derive(Default)]
    struct Physical {
        active: [bool; 32],
        line: [bool; 32],
    }

    impl PhysicalInterrupts for Physical {
        fn is_pending(&self, intid: u32) -> bool {
            self.line[intid as usize]
        }
        fn set_active(&mut self, intid: u32, active: bool) {
            self.active[intid as usize] = active;
        }
    }

    fn w(cpu: &mut SoftCpuInterface, offset: u64, value: u32) {
        cpu.mmio_write(offset, AccessWidth::Word, value, &mut Physical::default())
            .unwrap();
    }

    fn r(cpu: &mut SoftCpuInterface, offset: u64) -> u32 {
        cpu.mmio_read(offset, AccessWidth::Word).unwrap()
    }

    /// The CPU interface as Linux's irq-gic sets it up in a guest: Group 0
    /// enabled (bit 0, as GICC_CTLR.Enable), priority mask 0xf0.
    fn linux_like() -> SoftCpuInterface {
        let mut cpu = SoftCpuInterface::new();
        w(&mut cpu, offsets::PMR, 0xf0);
        w(&mut cpu, offsets::CTLR, 1);
        cpu
    }

    fn pending(intid: u32, priority: u8) -> ListRegister {
        ListRegister {
            intid,
            state: LrState::Pending,
            priority,
            ..ListRegister::default()
        }
    }

    #[test]
    fn nothing_is_signalled_until_the_guest_enables_and_unmasks() {
        let mut cpu = SoftCpuInterface::new();
        cpu.write_lr(0, pending(27, 0xa0));
        assert_eq!(cpu.lines(), VirtualLines::default(), "disabled, PMR 0");
        w(&mut cpu, offsets::CTLR, 1);
        assert_eq!(cpu.lines(), VirtualLines::default(), "PMR 0 masks all");
        w(&mut cpu, offsets::PMR, 0xf0);
        assert_eq!(
            cpu.lines(),
            VirtualLines {
                irq: true,
                fiq: false
            }
        );
        // Priority not above the mask: not signalled.
        w(&mut cpu, offsets::PMR, 0xa0);
        assert_eq!(cpu.lines(), VirtualLines::default());
    }

    #[test]
    fn acknowledge_and_complete_one_interrupt() {
        let mut cpu = linux_like();
        cpu.write_lr(0, pending(33, 0xa0));
        assert_eq!(r(&mut cpu, offsets::HPPIR), 33);
        assert_eq!(r(&mut cpu, offsets::IAR), 33);
        assert_eq!(cpu.read_lr(0).state, LrState::Active);
        assert_eq!(r(&mut cpu, offsets::RPR), 0xa0);
        assert_eq!(cpu.lines(), VirtualLines::default(), "active, nothing else");
        assert_eq!(r(&mut cpu, offsets::IAR), SPURIOUS);
        w(&mut cpu, offsets::EOIR, 33);
        assert_eq!(cpu.read_lr(0).state, LrState::Invalid);
        assert_eq!(r(&mut cpu, offsets::RPR), 0xff);
        assert_eq!(cpu.apr(), 0);
    }

    #[test]
    fn higher_priority_preempts_and_lower_waits() {
        let mut cpu = linux_like();
        cpu.write_lr(0, pending(40, 0xa0));
        assert_eq!(r(&mut cpu, offsets::IAR), 40);
        // Same priority: no preemption while 40 runs.
        cpu.write_lr(1, pending(41, 0xa0));
        assert_eq!(cpu.lines(), VirtualLines::default());
        assert_eq!(r(&mut cpu, offsets::IAR), SPURIOUS);
        // Higher priority: preempts.
        cpu.write_lr(2, pending(42, 0x80));
        assert!(cpu.lines().irq);
        assert_eq!(r(&mut cpu, offsets::IAR), 42);
        w(&mut cpu, offsets::EOIR, 42);
        // Back at 40's priority: 41 still waits, then comes after 40.
        assert_eq!(cpu.lines(), VirtualLines::default());
        w(&mut cpu, offsets::EOIR, 40);
        assert!(cpu.lines().irq);
        assert_eq!(r(&mut cpu, offsets::IAR), 41);
    }

    #[test]
    fn the_highest_priority_is_acknowledged_first() {
        let mut cpu = linux_like();
        cpu.write_lr(0, pending(50, 0xc0));
        cpu.write_lr(3, pending(51, 0x40));
        cpu.write_lr(5, pending(52, 0x80));
        assert_eq!(r(&mut cpu, offsets::IAR), 51);
    }

    #[test]
    fn sgi_carries_its_source_and_completes_by_it() {
        let mut cpu = linux_like();
        cpu.write_lr(
            0,
            ListRegister {
                source: 3,
                ..pending(1, 0xa0)
            },
        );
        let value = r(&mut cpu, offsets::IAR);
        assert_eq!(value, 1 | 3 << 10);
        // Another source's completion does not deactivate it.
        w(&mut cpu, offsets::EOIR, 1 | 2 << 10);
        assert_eq!(cpu.read_lr(0).state, LrState::Active);
        w(&mut cpu, offsets::APR0, 1 << (0xa0 >> 3));
        w(&mut cpu, offsets::EOIR, value);
        assert_eq!(cpu.read_lr(0).state, LrState::Invalid);
    }

    #[test]
    fn split_deactivation_waits_for_dir_and_deactivates_the_physical_interrupt() {
        let mut cpu = linux_like();
        w(&mut cpu, offsets::CTLR, 1 | vmcr::EOI_MODE);
        cpu.write_lr(
            0,
            ListRegister {
                physical: Some(27),
                ..pending(27, 0xa0)
            },
        );
        let mut physical = Physical::default();
        physical.active[27] = true;
        assert_eq!(r(&mut cpu, offsets::IAR), 27);
        cpu.mmio_write(offsets::EOIR, AccessWidth::Word, 27, &mut physical)
            .unwrap();
        assert_eq!(
            cpu.read_lr(0).state,
            LrState::Active,
            "EOImode 1: drop only"
        );
        assert!(physical.active[27]);
        assert_eq!(cpu.apr(), 0, "the priority was dropped");
        cpu.mmio_write(offsets::DIR, AccessWidth::Word, 27, &mut physical)
            .unwrap();
        assert_eq!(cpu.read_lr(0).state, LrState::Invalid);
        assert!(
            !physical.active[27],
            "the HW link deactivated the timer PPI"
        );
    }

    #[test]
    fn group1_needs_ackctl_on_iar_and_group0_goes_to_fiq_with_fiqen() {
        let mut cpu = SoftCpuInterface::new();
        w(&mut cpu, offsets::PMR, 0xf8);
        w(&mut cpu, offsets::CTLR, vmcr::GRP1_EN);
        cpu.write_lr(
            0,
            ListRegister {
                group1: true,
                ..pending(60, 0x80)
            },
        );
        assert!(cpu.lines().irq);
        assert_eq!(r(&mut cpu, offsets::IAR), GROUP1_PENDING);
        assert_eq!(r(&mut cpu, offsets::AIAR), 60);
        w(&mut cpu, offsets::AEOIR, 60);
        assert_eq!(cpu.read_lr(0).state, LrState::Invalid);
        w(&mut cpu, offsets::CTLR, vmcr::GRP0_EN | vmcr::FIQ_EN);
        cpu.write_lr(1, pending(61, 0x80));
        assert_eq!(
            cpu.lines(),
            VirtualLines {
                irq: false,
                fiq: true
            }
        );
    }

    #[test]
    fn registers_read_back_and_bad_widths_are_refused() {
        let mut cpu = linux_like();
        assert_eq!(r(&mut cpu, offsets::CTLR), 1);
        assert_eq!(r(&mut cpu, offsets::PMR), 0xf0);
        assert_eq!(r(&mut cpu, offsets::BPR), MIN_BPR, "minimum binary point");
        w(&mut cpu, offsets::BPR, 5);
        assert_eq!(r(&mut cpu, offsets::BPR), 5);
        assert_eq!(r(&mut cpu, offsets::IIDR), IIDR);
        assert_eq!(r(&mut cpu, 0x800), 0, "reserved: RAZ");
        assert_eq!(
            cpu.mmio_read(offsets::IAR, AccessWidth::Byte),
            Err(VgicError::BadAccess)
        );
        assert_eq!(
            cpu.mmio_write(
                offsets::EOIR,
                AccessWidth::Double,
                0,
                &mut Physical::default()
            ),
            Err(VgicError::BadAccess)
        );
        // The saved state round-trips (a vCPU switch).
        let (vmcr, apr) = (cpu.vmcr(), cpu.apr());
        let mut other = SoftCpuInterface::new();
        other.set_vmcr(vmcr);
        other.set_apr(apr);
        assert_eq!(r(&mut other, offsets::PMR), 0xf0);
        assert_eq!(r(&mut other, offsets::BPR), 5);
    }

    #[test]
    fn the_vgic_delivers_through_the_software_interface() {
        // The distributor model fills the software list registers exactly
        // as it fills a GIC-400's; the guest acknowledges and completes
        // through the emulated GICC, and sync reads the result back.
        let mut vgic = Vgic::new(GicVersion::V2, 1);
        let dist = |v: &mut Vgic, offset: u64, value: u64| {
            v.mmio_write(0, GicFrame::Distributor(offset), AccessWidth::Word, value)
                .unwrap();
        };
        dist(&mut vgic, 0x000, 1); // GICD_CTLR
        dist(&mut vgic, 0x104, 1 << 1); // ISENABLER1: SPI 33
        let mut cpu = linux_like();
        let mut physical = Physical::default();
        vgic.inject(0, 33);
        vgic.flush(0, &mut cpu);
        assert!(cpu.lines().irq, "{:?}", cpu.read_lr(0));
        assert_eq!(r(&mut cpu, offsets::IAR), 33);
        struct Both<'a>(&'a mut SoftCpuInterface, &'a mut Physical);
        impl ListRegisters for Both<'_> {
            fn count(&self) -> usize {
                self.0.count()
            }
            fn read(&self, index: usize) -> ListRegister {
                ListRegisters::read(self.0, index)
            }
            fn write(&mut self, index: usize, value: ListRegister) {
                ListRegisters::write(self.0, index, value)
            }
            fn set_underflow_interrupt(&mut self, enable: bool) {
                self.0.set_underflow_interrupt(enable)
            }
        }
        impl PhysicalInterrupts for Both<'_> {
            fn is_pending(&self, intid: u32) -> bool {
                self.1.is_pending(intid)
            }
            fn set_active(&mut self, intid: u32, active: bool) {
                self.1.set_active(intid, active)
            }
        }
        vgic.sync(0, &mut Both(&mut cpu, &mut physical));
        assert!(!vgic.has_pending(0), "acknowledged: active, not pending");
        vgic.flush(0, &mut cpu);
        assert_eq!(cpu.lines(), VirtualLines::default(), "active only");
        w(&mut cpu, offsets::EOIR, 33);
        vgic.sync(0, &mut Both(&mut cpu, &mut physical));
        vgic.flush(0, &mut cpu);
        assert_eq!(cpu.read_lr(0).state, LrState::Invalid, "completed");
        // Negative control: an interrupt never injected is never signalled.
        assert_eq!(r(&mut cpu, offsets::IAR), SPURIOUS);
    }

    /// Random guest accesses (any offset in the frame, any width, any
    /// value) between random list-register loads never panic, and keep
    /// the interface's promises: an asserted line means GICC_IAR (or
    /// GICV_AIAR for Group 1 without AckCtl) acknowledges a pending list
    /// register, and an acknowledge returns only an interrupt that was
    /// pending in one.
    #[test]
    #[allow(clippy::cast_possible_truncation)] // reason: fields cut from random words on purpose
    fn random_accesses_keep_the_signal_and_acknowledge_consistent() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let widths = [
            AccessWidth::Byte,
            AccessWidth::Half,
            AccessWidth::Word,
            AccessWidth::Double,
        ];
        let mut physical = Physical::default();
        let mut acknowledged = 0;
        for _ in 0..200_000 {
            let mut cpu = linux_like();
            for _ in 0..(next() % 8) {
                let r = next();
                let state = match r % 4 {
                    0 => LrState::Invalid,
                    1 => LrState::Pending,
                    2 => LrState::Active,
                    _ => LrState::PendingActive,
                };
                cpu.write_lr(
                    (r >> 8) as usize % SOFT_LIST_REGISTERS,
                    ListRegister {
                        intid: (r >> 16) as u32 % 64,
                        state,
                        priority: (r >> 24) as u8,
                        group1: r & (1 << 40) != 0,
                        source: (r >> 41) as u8 & 7,
                        physical: (r & (1 << 44) != 0).then_some(27),
                    },
                );
            }
            for _ in 0..(next() % 6) {
                let r = next();
                let offset = (r % 0x2000) & !if r & (1 << 20) != 0 { 0 } else { 3 };
                let width = widths[(r >> 16) as usize % 4];
                if r & (1 << 21) != 0 {
                    let _ = cpu.mmio_write(offset, width, (r >> 32) as u32, &mut physical);
                } else {
                    let _ = cpu.mmio_read(offset, width);
                }
            }
            let lines = cpu.lines();
            assert!(!(lines.irq && lines.fiq), "one line at a time");
            let before = cpu;
            let value = cpu.mmio_read(offsets::IAR, AccessWidth::Word).unwrap();
            // The interrupt ID (an SGI's source CPU is in bits [12:10]).
            let value = if value == GROUP1_PENDING {
                cpu.mmio_read(offsets::AIAR, AccessWidth::Word).unwrap()
            } else {
                value
            };
            let intid = value & 0x3ff;
            if lines.irq || lines.fiq {
                assert!(intid < 1020, "asserted, yet {value}: {before:?}");
            }
            if intid < 1020 {
                acknowledged += 1;
                let was_pending = (0..SOFT_LIST_REGISTERS).any(|i| {
                    let lr = before.read_lr(i);
                    lr.state == LrState::Pending
                        && lr.intid == intid
                        && cpu.read_lr(i).state == LrState::Active
                });
                assert!(was_pending, "acknowledged {value:#x} from {before:?}");
            }
        }
        // The loop exercised acknowledges, not only refusals.
        assert!(acknowledged > 10_000, "{acknowledged}");
    }

    impl SoftCpuInterface {
        fn write_lr(&mut self, index: usize, lr: ListRegister) {
            ListRegisters::write(self, index, lr);
        }
        fn read_lr(&self, index: usize) -> ListRegister {
            ListRegisters::read(self, index)
        }
    }
}
