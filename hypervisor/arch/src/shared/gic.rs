//! The physical GIC as EL2 uses it (its own interrupts: timer, maintenance,
//! the kick SGI, the guests' timer PPI) and the GICv2 (GICH) / GICv3
//! (ICH_*_EL2) virtual CPU interface behind the core's [`ListRegisters`].
//!
//! The CPU interface runs with split priority drop and deactivation
//! (GICC_CTLR.EOImode / ICC_CTLR_EL1.EOImode): [`Gic::priority_drop`] ends
//! EL2's handling of an interrupt, [`Gic::deactivate`] makes it signalable
//! again. Every interrupt EL2 handles itself gets both
//! ([`Gic::end_of_interrupt`]); the virtual timer's PPI gets only the first
//! and stays active until the guest deactivates the virtual interrupt linked
//! to it (HW list registers, [`PhysicalInterrupts`]).
//!
//! A board without a GIC (the Raspberry Pi 3) has the BCM2836 per-core
//! local interrupt controller instead ([`GicKind::Bcm2836Local`]): the
//! hypervisor's timer and the virtual timer arrive through its per-core
//! timer sources, IPIs through its mailboxes, and the guests' virtual CPU
//! interface is the software model of `chroma_core::soft_gicv`, one per
//! physical CPU, behind the same [`ListRegisters`] and raised with
//! HCR_EL2.VI / VF ([`Gic::update_virtual_lines`]). The local controller
//! has no active state: "active" is the timer source masked, so the
//! virtual timer's line is not taken again until the guest completes it.
//!
//! Both back-ends build this file (`#[path]`): the GICv2 frames are the
//! same MMIO at EL2 and in HYP mode. `gic_sysreg` is the back-end's view
//! of the GICv3 CPU interface registers: AArch64's system registers, or
//! on ARMv7 none (its board code refuses a GICv3; see `armv7::gic_sysreg`).

use super::gic_sysreg as sysreg;
use super::list_register;
use chroma_core::exit::{low_word, AccessWidth};
use chroma_core::gic_shadow::WriteShadow;
use chroma_core::soft_gicv::{SoftCpuInterface, SOFT_LIST_REGISTERS};
use chroma_core::vgic::{ListRegister, ListRegisters, LrState, PhysicalInterrupts};
use core::ptr::{read_volatile, write_volatile};

/// GICv2 distributor, CPU interface and virtual interface control offsets
/// (IHI 0048B, 4.3 and 5.3).
mod v2 {
    pub const GICD_CTLR: usize = 0x000;
    pub const GICD_ISENABLER: usize = 0x100;
    pub const GICD_ISPENDR: usize = 0x200;
    pub const GICD_ISACTIVER: usize = 0x300;
    pub const GICD_ICACTIVER: usize = 0x380;
    pub const GICD_IPRIORITYR: usize = 0x400;
    pub const GICD_ITARGETSR: usize = 0x800;
    pub const GICD_SGIR: usize = 0xf00;
    pub const GICC_CTLR: usize = 0x00;
    /// GICC_CTLR.EnableGrp0 (no security extensions) / EnableGrp1 (non-secure view).
    pub const GICC_CTLR_ENABLE: u32 = 1 << 0;
    /// GICC_CTLR.EOImodeNS in the non-secure view, EOImodeS without security
    /// extensions (QEMU without EL3): the bit that governs EL2's accesses
    /// either way, as Linux uses it.
    pub const GICC_CTLR_EOIMODE: u32 = 1 << 9;
    pub const GICC_PMR: usize = 0x04;
    pub const GICC_IAR: usize = 0x0c;
    pub const GICC_EOIR: usize = 0x10;
    /// GICC_DIR, in the CPU interface's second 4 KiB page.
    pub const GICC_DIR: usize = 0x1000;
    pub const GICH_HCR: usize = 0x000;
    pub const GICH_VTR: usize = 0x004;
    pub const GICH_VMCR: usize = 0x008;
    pub const GICH_APR: usize = 0x0f0;
    pub const GICH_LR0: usize = 0x100;
}

/// BCM2836 local interrupt controller registers (the "QA7" ARM local
/// peripherals, rev 3.4: per-core timer and mailbox interrupt control,
/// interrupt source, mailbox set and clear) and the interrupt IDs the
/// hypervisor's roles use for its sources (the architected PPIs').
mod local {
    /// Core n's timer interrupt control: bit k routes timer source k to IRQ.
    pub const TIMER_CONTROL: usize = 0x40;
    /// Core n's mailbox interrupt control: bit k routes mailbox k to IRQ.
    pub const MAILBOX_CONTROL: usize = 0x50;
    /// Core n's IRQ source.
    pub const IRQ_SOURCE: usize = 0x60;
    /// Core n's mailbox k write-set register: `+ 16 * n + 4 * k`.
    pub const MAILBOX_SET: usize = 0x80;
    /// Core n's mailbox k read / write-clear register.
    pub const MAILBOX_CLEAR: usize = 0xc0;
    /// Timer source bits (control and source registers): CNTHP, CNTV.
    pub const CNTHP: u32 = 1 << 2;
    /// The virtual timer.
    pub const CNTV: u32 = 1 << 3;
    /// Mailbox 0 in the source register; the control register's bit 0.
    pub const MAILBOX0_SOURCE: u32 = 1 << 4;
    /// The hypervisor timer's interrupt ID (PPI 10, as on a GIC).
    pub const HYP_TIMER_INTID: u32 = 26;
    /// The virtual timer's interrupt ID (PPI 11).
    pub const VIRT_TIMER_INTID: u32 = 27;
}

/// Core `core`'s copy of a per-core local controller register.
fn local_register(base: usize, register: usize, core: usize) -> usize {
    base + register + 4 * core
}

/// Core `core`'s mailbox 0 register in the 16-byte-per-core bank `register`.
fn local_mailbox(base: usize, register: usize, core: usize) -> usize {
    base + register + 16 * core
}

/// The software virtual CPU interface of each physical CPU (a board
/// without a GIC). Each CPU locks only its own, so the locks never wait.
static SOFT_INTERFACES: [spin::Mutex<SoftCpuInterface>; MAX_LOCAL_CORES] =
    [const { spin::Mutex::new(SoftCpuInterface::new()) }; MAX_LOCAL_CORES];
/// Cores of the BCM2836/7 local controller.
const MAX_LOCAL_CORES: usize = 4;

/// GICv3 distributor and redistributor offsets (IHI 0069, 12.9 and 12.10).
mod v3 {
    pub const GICD_CTLR: usize = 0x0000;
    pub const GICD_CTLR_RWP: u32 = 1 << 31;
    pub const GICD_IGROUPR: usize = 0x0080;
    pub const GICD_ISENABLER: usize = 0x0100;
    pub const GICD_ISPENDR: usize = 0x0200;
    pub const GICD_ISACTIVER: usize = 0x0300;
    pub const GICD_ICACTIVER: usize = 0x0380;
    pub const GICD_IPRIORITYR: usize = 0x0400;
    pub const GICD_IROUTER: usize = 0x6000;
    pub const GICR_TYPER: usize = 0x0008;
    pub const GICR_WAKER: usize = 0x0014;
    pub const GICR_STRIDE: usize = 0x2_0000;
    pub const SGI_BASE: usize = 0x1_0000;
    pub const GICR_IGROUPR0: usize = SGI_BASE + 0x080;
    pub const GICR_ISENABLER0: usize = SGI_BASE + 0x100;
    pub const GICR_ISPENDR0: usize = SGI_BASE + 0x200;
    pub const GICR_ISACTIVER0: usize = SGI_BASE + 0x300;
    pub const GICR_ICACTIVER0: usize = SGI_BASE + 0x380;
    pub const GICR_IPRIORITYR: usize = SGI_BASE + 0x400;
    /// ICC_CTLR_EL1.EOImode: EOIR drops the priority, DIR deactivates.
    pub const ICC_CTLR_EOIMODE: u64 = 1 << 1;
}

/// Interrupt IDs below this are private to a CPU (SGIs and PPIs), banked in
/// GICD (GICv2) or in the CPU's redistributor (GICv3).
const PRIVATE_COUNT: u32 = 32;
/// Every private interrupt, as a bit register word.
const ALL_PRIVATE: u32 = u32::MAX;

/// Interrupt IDs at or above this are special (1020-1023: spurious).
const SPURIOUS_FIRST: u32 = 1020;
/// The priority EL2 gives its own interrupts.
const HYP_PRIORITY: u8 = 0xa0;

fn read32(address: usize) -> u32 {
    // SAFETY: `address` is a GIC register inside a region the EL2 tables map as device memory (Gic::new's contract); reads have no memory effect on the hypervisor's data.
    unsafe { read_volatile(address as *const u32) }
}

fn write32(address: usize, value: u32) {
    // SAFETY: as for `read32`; GIC register writes affect interrupt delivery only, never hypervisor memory.
    unsafe { write_volatile(address as *mut u32, value) }
}

fn read64(address: usize) -> u64 {
    // SAFETY: as for `read32` (GICR_TYPER is a 64-bit register).
    unsafe { read_volatile(address as *const u64) }
}

/// Which physical GIC, and where.
#[derive(Clone, Copy, Debug)]
pub enum GicKind {
    /// GICv2 with virtualization extensions.
    V2 {
        /// Distributor.
        gicd: usize,
        /// CPU interface.
        gicc: usize,
        /// Virtual interface control.
        gich: usize,
    },
    /// GICv3.
    V3 {
        /// Distributor.
        gicd: usize,
        /// First redistributor.
        gicr: usize,
    },
    /// No GIC: the BCM2836 per-core local controller (Raspberry Pi 3),
    /// with a software virtual CPU interface for the guests.
    Bcm2836Local {
        /// The controller's registers.
        base: usize,
    },
}

/// The physical GIC from one CPU's point of view.
#[derive(Clone, Copy, Debug)]
pub struct Gic {
    kind: GicKind,
    /// This CPU's redistributor (GICv3).
    redistributor: usize,
    /// Number of list registers.
    list_register_count: usize,
    /// GICv3 `ICH_AP0R<n>_EL2` / `ICH_AP1R<n>_EL2` implemented (1, 2 or 4).
    active_priority_registers: usize,
    /// The local controller's core number of this CPU (MPIDR Aff0).
    core: usize,
    /// What the list registers and HCR hold, to skip rewriting them.
    shadow: WriteShadow,
}

/// A vCPU's active priorities (`GICH_APR`; `ICH_AP0R<n>_EL2` then
/// `ICH_AP1R<n>_EL2`): per-CPU GIC state that must follow the vCPU, or a VM
/// that acknowledged an interrupt and never completed it would keep its
/// running priority in force for the next VM on the CPU.
pub type ActivePriorities = [u32; 8];

/// A system-register read accessor (from `sysreg`).
type ReadRegister = fn() -> u64;
/// A system-register write accessor (from `sysreg`).
type WriteRegister = unsafe fn(u64);

impl Gic {
    /// Describes the GIC for the calling CPU.
    ///
    /// # Safety
    /// The addresses must be the board's GIC frames, mapped as device memory
    /// in the EL2 tables for as long as the `Gic` is used.
    pub unsafe fn new(kind: GicKind) -> Self {
        let mut gic = Self {
            kind,
            redistributor: 0,
            list_register_count: 0,
            active_priority_registers: 1,
            core: 0,
            shadow: WriteShadow::default(),
        };
        gic.list_register_count = match kind {
            GicKind::V2 { gich, .. } => (read32(gich + v2::GICH_VTR) & 0x3f) as usize + 1,
            GicKind::V3 { gicr, .. } => {
                gic.redistributor = find_redistributor(gicr, sysreg::mpidr_el1());
                // ICH_VTR_EL2.PREbits [31:29] + 1 preemption bits: 5 -> one
                // APnR register, 6 -> two, 7 -> four (GICv3 spec 12.4.1).
                gic.active_priority_registers = match (sysreg::ich_vtr_el2() >> 29) & 7 {
                    5 => 2,
                    6 => 4,
                    _ => 1,
                };
                (sysreg::ich_vtr_el2() & 0x1f) as usize + 1
            }
            GicKind::Bcm2836Local { .. } => {
                gic.core = (sysreg::mpidr_el1() & 0xff) as usize % MAX_LOCAL_CORES;
                SOFT_LIST_REGISTERS
            }
        };
        gic
    }

    /// This CPU's software virtual CPU interface (a board without a GIC).
    fn soft(&self) -> spin::MutexGuard<'_, SoftCpuInterface> {
        SOFT_INTERFACES[self.core].lock()
    }

    /// Raises the virtual IRQ / FIQ lines the software virtual CPU
    /// interface asserts for the vCPU about to run (after the list
    /// registers were filled). A GIC's virtual interface does this itself.
    pub fn update_virtual_lines(&self) {
        if let GicKind::Bcm2836Local { .. } = self.kind {
            let lines = self.soft().lines();
            sysreg::set_virtual_lines(lines.irq, lines.fiq);
        }
    }

    /// A guest access to its GICC registers at `offset`, answered by this
    /// CPU's software virtual CPU interface (`write`: the value written).
    /// `None` on a board whose GICV is mapped there instead, or for a
    /// width the registers refuse (the guest gets an abort).
    pub fn cpu_interface_access(
        &self,
        offset: u64,
        width: AccessWidth,
        write: Option<u64>,
    ) -> Option<u64> {
        let GicKind::Bcm2836Local { .. } = self.kind else {
            return None;
        };
        let mut physical = *self;
        let mut soft = self.soft();
        match write {
            Some(value) => soft
                .mmio_write(offset, width, low_word(value), &mut physical)
                .ok()
                .map(|()| 0),
            None => soft.mmio_read(offset, width).ok().map(u64::from),
        }
    }

    /// Enables the distributor (once, on the boot CPU).
    pub fn init_distributor(&self) {
        match self.kind {
            GicKind::V2 { gicd, .. } => write32(gicd + v2::GICD_CTLR, 1),
            GicKind::V3 { gicd, .. } => {
                // ARE (bit 4), EnableGrp1 (bit 1), EnableGrp0 (bit 0); DS=1 layout.
                write32(gicd + v3::GICD_CTLR, 0x13);
                while read32(gicd + v3::GICD_CTLR) & v3::GICD_CTLR_RWP != 0 {}
            }
            // Per-core only: nothing shared to enable.
            GicKind::Bcm2836Local { .. } => {}
        }
    }

    /// Brings up this CPU's interface and the virtual interface, and enables
    /// the private interrupts EL2 uses.
    pub fn init_cpu(&self, private_interrupts: &[u32]) {
        match self.kind {
            GicKind::V2 { gicd, gicc, gich } => {
                for &intid in private_interrupts {
                    let i = intid as usize;
                    write32(gicd + v2::GICD_ISENABLER + 4 * (i / 32), 1 << (i % 32));
                    set_priority_byte(gicd + v2::GICD_IPRIORITYR + i);
                }
                // Nothing a previous owner of this CPU left active (with
                // split deactivation, an interrupt stays active until DIR).
                write32(gicd + v2::GICD_ICACTIVER, ALL_PRIVATE);
                write32(gicc + v2::GICC_PMR, 0xff);
                write32(
                    gicc + v2::GICC_CTLR,
                    v2::GICC_CTLR_ENABLE | v2::GICC_CTLR_EOIMODE,
                );
                write32(gich + v2::GICH_HCR, 1);
            }
            GicKind::V3 { .. } => {
                let rd = self.redistributor;
                // Wake the redistributor: clear ProcessorSleep, wait for ChildrenAsleep.
                write32(rd + v3::GICR_WAKER, read32(rd + v3::GICR_WAKER) & !0b10);
                while read32(rd + v3::GICR_WAKER) & 0b100 != 0 {}
                write32(rd + v3::GICR_IGROUPR0, u32::MAX);
                write32(rd + v3::GICR_ICACTIVER0, ALL_PRIVATE);
                for &intid in private_interrupts {
                    write32(rd + v3::GICR_ISENABLER0, 1 << intid);
                    set_priority_byte(rd + v3::GICR_IPRIORITYR + intid as usize);
                }
                // SAFETY: enabling the system-register interface for EL2 and EL1 (SRE, Enable) is what a GICv3 guest needs; the guest's accesses go to the virtual interface while ICH_HCR_EL2.En is set.
                unsafe {
                    sysreg::write_icc_sre_el2(0b1001);
                    sysreg::isb();
                    sysreg::write_icc_pmr_el1(0xff);
                    // Split priority drop and deactivation (see the module doc).
                    sysreg::write_icc_ctlr_el1(v3::ICC_CTLR_EOIMODE);
                    sysreg::write_icc_igrpen1_el1(1);
                    sysreg::write_ich_hcr_el2(1);
                    sysreg::isb();
                }
            }
            GicKind::Bcm2836Local { base } => {
                // The sources are fixed: the hypervisor timer, the virtual
                // timer and mailbox 0 (the kick) to IRQ; nothing to FIQ.
                let core = self.core;
                write32(
                    local_register(base, local::TIMER_CONTROL, core),
                    local::CNTHP | local::CNTV,
                );
                write32(local_mailbox(base, local::MAILBOX_CLEAR, core), u32::MAX);
                write32(local_register(base, local::MAILBOX_CONTROL, core), 1);
                *self.soft() = SoftCpuInterface::new();
            }
        }
    }

    /// Acknowledges the highest-priority pending interrupt, if any.
    pub fn acknowledge(&self) -> Option<u32> {
        let intid = match self.kind {
            GicKind::V2 { gicc, .. } => read32(gicc + v2::GICC_IAR) & 0x3ff,
            GicKind::V3 { .. } => (sysreg::icc_iar1_el1() & 0xff_ffff) as u32,
            GicKind::Bcm2836Local { base } => return self.acknowledge_local(base),
        };
        (intid < SPURIOUS_FIRST).then_some(intid)
    }

    /// The local controller's highest source: a kick (mailbox 0: the SGI
    /// numbers set in it, lowest first), the hypervisor timer, or the
    /// virtual timer, which is masked ("active") until deactivated.
    fn acknowledge_local(&self, base: usize) -> Option<u32> {
        let source = read32(local_register(base, local::IRQ_SOURCE, self.core));
        if source & local::MAILBOX0_SOURCE != 0 {
            let mailbox = local_mailbox(base, local::MAILBOX_CLEAR, self.core);
            let requests = read32(mailbox);
            if requests != 0 {
                let sgi = requests.trailing_zeros();
                write32(mailbox, 1 << sgi);
                return Some(sgi);
            }
        }
        if source & local::CNTHP != 0 {
            return Some(local::HYP_TIMER_INTID);
        }
        if source & local::CNTV != 0 {
            let mut this = *self;
            this.set_active(local::VIRT_TIMER_INTID, true);
            return Some(local::VIRT_TIMER_INTID);
        }
        None
    }

    /// Ends EL2's handling of `intid`: priority drop and deactivation.
    pub fn end_of_interrupt(&self, intid: u32) {
        self.priority_drop(intid);
        self.deactivate(intid);
    }

    /// Drops the running priority of `intid`, the interrupt EL2 acknowledged
    /// last, and leaves it active: it is not signalled again until
    /// [`Gic::deactivate`] or a HW list register deactivates it.
    pub fn priority_drop(&self, intid: u32) {
        match self.kind {
            GicKind::V2 { gicc, .. } => write32(gicc + v2::GICC_EOIR, intid),
            // SAFETY: ends EL2's own handling of an interrupt it acknowledged.
            GicKind::V3 { .. } => unsafe { sysreg::write_icc_eoir1_el1(u64::from(intid)) },
            // No running priority on the local controller.
            GicKind::Bcm2836Local { .. } => {}
        }
    }

    /// Deactivates `intid` (after its priority drop).
    pub fn deactivate(&self, intid: u32) {
        match self.kind {
            GicKind::V2 { gicc, .. } => write32(gicc + v2::GICC_DIR, intid),
            // SAFETY: deactivating an interrupt EL2 acknowledged lets it be signalled again; it changes no memory.
            GicKind::V3 { .. } => unsafe { sysreg::write_icc_dir_el1(u64::from(intid)) },
            GicKind::Bcm2836Local { .. } => {
                let mut this = *self;
                this.set_active(intid, false);
            }
        }
    }

    /// The bit register (ISPENDR, ISACTIVER, ...) word that holds `intid` on
    /// this CPU: the banked GICD word, the redistributor's, or GICD's for SPIs.
    fn bit_register(
        &self,
        v2_offset: usize,
        v3_private: usize,
        v3_shared: usize,
        intid: u32,
    ) -> usize {
        let word = 4 * (intid / 32) as usize;
        match self.kind {
            GicKind::V2 { gicd, .. } => gicd + v2_offset + word,
            GicKind::V3 { .. } if intid < PRIVATE_COUNT => self.redistributor + v3_private,
            GicKind::V3 { gicd, .. } => gicd + v3_shared + word,
            // Never asked: the local controller's paths do not use it.
            GicKind::Bcm2836Local { base } => base,
        }
    }

    /// The GICv2 CPU interface mask of this CPU (from the banked ITARGETSR0).
    pub fn cpu_interface_mask(&self) -> u8 {
        match self.kind {
            // Byte 0 of ITARGETSR0 is the target of interrupt 0: this CPU.
            GicKind::V2 { gicd, .. } => read32(gicd + v2::GICD_ITARGETSR).to_le_bytes()[0],
            GicKind::V3 { .. } | GicKind::Bcm2836Local { .. } => 0,
        }
    }

    /// Sends SGI `intid` to the CPU with affinity `mpidr` (GICv3) or CPU
    /// interface mask `v2_mask` (GICv2).
    pub fn send_sgi(&self, intid: u32, mpidr: u64, v2_mask: u8) {
        sysreg::dsb_ish();
        match self.kind {
            GicKind::V2 { gicd, .. } => write32(
                gicd + v2::GICD_SGIR,
                u32::from(v2_mask) << 16 | (intid & 0xf),
            ),
            GicKind::V3 { .. } => {
                let aff0 = mpidr & 0xf;
                let aff1 = (mpidr >> 8) & 0xff;
                let aff2 = (mpidr >> 16) & 0xff;
                let aff3 = (mpidr >> 32) & 0xff;
                let value =
                    aff3 << 48 | aff2 << 32 | aff1 << 16 | u64::from(intid & 0xf) << 24 | 1 << aff0;
                // SAFETY: sending an SGI to another physical CPU only makes it take an interrupt (a kick), which it handles.
                unsafe { sysreg::write_icc_sgi1r_el1(value) };
                sysreg::isb();
            }
            // The SGI number as a bit of the target core's mailbox 0.
            GicKind::Bcm2836Local { base } => write32(
                local_mailbox(
                    base,
                    local::MAILBOX_SET,
                    (mpidr & 0xff) as usize % MAX_LOCAL_CORES,
                ),
                1 << (intid & 0x1f),
            ),
        }
    }

    /// The guest's virtual CPU interface control (VMCR) to save on a switch.
    pub fn save_vmcr(&self) -> u64 {
        match self.kind {
            GicKind::V2 { gich, .. } => u64::from(read32(gich + v2::GICH_VMCR)),
            GicKind::V3 { .. } => sysreg::ich_vmcr_el2(),
            GicKind::Bcm2836Local { .. } => u64::from(self.soft().vmcr()),
        }
    }

    /// The running vCPU's active priorities, to save on a switch.
    pub fn save_active_priorities(&self) -> ActivePriorities {
        let mut saved = [0; 8];
        match self.kind {
            GicKind::V2 { gich, .. } => saved[0] = read32(gich + v2::GICH_APR),
            GicKind::Bcm2836Local { .. } => saved[0] = self.soft().apr(),
            GicKind::V3 { .. } => {
                let reads: [(ReadRegister, ReadRegister); 4] = [
                    (sysreg::ich_ap0r0_el2, sysreg::ich_ap1r0_el2),
                    (sysreg::ich_ap0r1_el2, sysreg::ich_ap1r1_el2),
                    (sysreg::ich_ap0r2_el2, sysreg::ich_ap1r2_el2),
                    (sysreg::ich_ap0r3_el2, sysreg::ich_ap1r3_el2),
                ];
                for (n, (group0, group1)) in reads
                    .iter()
                    .enumerate()
                    .take(self.active_priority_registers)
                {
                    saved[n] = low_word(group0());
                    saved[4 + n] = low_word(group1());
                }
            }
        }
        saved
    }

    /// Restores a vCPU's active priorities (all zero for a vCPU that
    /// never ran).
    pub fn restore_active_priorities(&self, saved: &ActivePriorities) {
        match self.kind {
            GicKind::V2 { gich, .. } => write32(gich + v2::GICH_APR, saved[0]),
            GicKind::Bcm2836Local { .. } => self.soft().set_apr(saved[0]),
            GicKind::V3 { .. } => {
                // SAFETY: the active priority registers only affect the virtual interface of the vCPU about to run on this CPU, and only the implemented ones are written.
                unsafe {
                    let writes: [(WriteRegister, WriteRegister); 4] = [
                        (sysreg::write_ich_ap0r0_el2, sysreg::write_ich_ap1r0_el2),
                        (sysreg::write_ich_ap0r1_el2, sysreg::write_ich_ap1r1_el2),
                        (sysreg::write_ich_ap0r2_el2, sysreg::write_ich_ap1r2_el2),
                        (sysreg::write_ich_ap0r3_el2, sysreg::write_ich_ap1r3_el2),
                    ];
                    for (n, (group0, group1)) in writes
                        .iter()
                        .enumerate()
                        .take(self.active_priority_registers)
                    {
                        group0(u64::from(saved[n]));
                        group1(u64::from(saved[4 + n]));
                    }
                }
            }
        }
    }

    /// Restores a vCPU's virtual CPU interface control.
    pub fn restore_vmcr(&self, vmcr: u64) {
        match self.kind {
            GicKind::V2 { gich, .. } => write32(gich + v2::GICH_VMCR, low_word(vmcr)),
            // SAFETY: VMCR only affects the current vCPU's virtual interface.
            GicKind::V3 { .. } => unsafe { sysreg::write_ich_vmcr_el2(vmcr) },
            GicKind::Bcm2836Local { .. } => self.soft().set_vmcr(low_word(vmcr)),
        }
    }
}

fn set_priority_byte(address: usize) {
    // Byte access to IPRIORITYR is architecturally allowed; keep it aligned-word
    // read-modify-write so device memory never sees a sub-word access.
    let word = address & !3;
    let shift = 8 * (address & 3);
    let value = read32(word) & !(0xff << shift) | u32::from(HYP_PRIORITY) << shift;
    write32(word, value);
}

fn find_redistributor(mut frame: usize, mpidr: u64) -> usize {
    let affinity = (mpidr & 0xff_ffff) | ((mpidr >> 32) & 0xff) << 24;
    loop {
        let typer = read64(frame + v3::GICR_TYPER);
        if typer >> 32 == affinity || typer & (1 << 4) != 0 {
            return frame;
        }
        frame += v3::GICR_STRIDE;
    }
}

impl ListRegisters for Gic {
    fn count(&self) -> usize {
        self.list_register_count
    }

    fn read(&self, index: usize) -> ListRegister {
        match self.kind {
            GicKind::V2 { gich, .. } => {
                list_register::decode_v2(read32(gich + v2::GICH_LR0 + 4 * index))
            }
            GicKind::V3 { .. } => list_register::decode_v3(sysreg::ich_lr_el2(index)),
            GicKind::Bcm2836Local { .. } => ListRegisters::read(&*self.soft(), index),
        }
    }

    fn write(&mut self, index: usize, value: ListRegister) {
        let raw = match self.kind {
            GicKind::V2 { .. } => u64::from(list_register::encode_v2(&value)),
            GicKind::V3 { .. } => list_register::encode_v3(&value),
            GicKind::Bcm2836Local { .. } => {
                return ListRegisters::write(&mut *self.soft(), index, value);
            }
        };
        if !self
            .shadow
            .list_register(index, raw, value.state == LrState::Invalid)
        {
            return;
        }
        match self.kind {
            GicKind::V2 { gich, .. } => write32(gich + v2::GICH_LR0 + 4 * index, low_word(raw)),
            // SAFETY: this list register belongs to the vCPU about to run here (flush is called right before entry).
            GicKind::V3 { .. } => unsafe { sysreg::write_ich_lr_el2(index, raw) },
            GicKind::Bcm2836Local { .. } => {}
        }
    }

    fn clear(&mut self, index: usize) {
        // An invalid entry encodes as 0 on GICv2 and GICv3 alike; most
        // guest entries clear every list register the shadow knows empty.
        match self.kind {
            GicKind::V2 { .. } | GicKind::V3 { .. } => {
                if !self.shadow.list_register(index, 0, true) {
                    return;
                }
            }
            GicKind::Bcm2836Local { .. } => {}
        }
        match self.kind {
            GicKind::V2 { gich, .. } => write32(gich + v2::GICH_LR0 + 4 * index, 0),
            // SAFETY: this list register belongs to the vCPU about to run here (flush is called right before entry).
            GicKind::V3 { .. } => unsafe { sysreg::write_ich_lr_el2(index, 0) },
            GicKind::Bcm2836Local { .. } => {
                ListRegisters::write(&mut *self.soft(), index, ListRegister::default());
            }
        }
    }

    fn set_underflow_interrupt(&mut self, enable: bool) {
        // HCR: En (bit 0) always, UIE (bit 1) on request.
        let hcr = 1 | u32::from(enable) << 1;
        if !self.shadow.hcr(hcr) {
            return;
        }
        match self.kind {
            GicKind::V2 { gich, .. } => write32(gich + v2::GICH_HCR, hcr),
            // SAFETY: only affects maintenance interrupts for this CPU's vCPU.
            GicKind::V3 { .. } => unsafe { sysreg::write_ich_hcr_el2(u64::from(hcr)) },
            // Every completion traps to the software interface: nothing to ask.
            GicKind::Bcm2836Local { .. } => {}
        }
    }
}

impl PhysicalInterrupts for Gic {
    fn is_pending(&self, intid: u32) -> bool {
        if let GicKind::Bcm2836Local { .. } = self.kind {
            // Only the virtual timer is linked; its level is the timer's.
            return intid == local::VIRT_TIMER_INTID && sysreg::virtual_timer_asserted();
        }
        let word = self.bit_register(v2::GICD_ISPENDR, v3::GICR_ISPENDR0, v3::GICD_ISPENDR, intid);
        read32(word) & 1 << (intid % 32) != 0
    }

    fn set_active(&mut self, intid: u32, active: bool) {
        if let GicKind::Bcm2836Local { base } = self.kind {
            // Active = the virtual timer source masked at this core.
            if intid == local::VIRT_TIMER_INTID {
                let control = local_register(base, local::TIMER_CONTROL, self.core);
                let value = read32(control);
                write32(
                    control,
                    if active {
                        value & !local::CNTV
                    } else {
                        value | local::CNTV
                    },
                );
            }
            return;
        }
        let word = if active {
            self.bit_register(
                v2::GICD_ISACTIVER,
                v3::GICR_ISACTIVER0,
                v3::GICD_ISACTIVER,
                intid,
            )
        } else {
            self.bit_register(
                v2::GICD_ICACTIVER,
                v3::GICR_ICACTIVER0,
                v3::GICD_ICACTIVER,
                intid,
            )
        };
        write32(word, 1 << (intid % 32));
    }
}

impl Gic {
    /// Enables SPI `intid` for EL2, delivered to the calling CPU.
    pub fn enable_spi(&self, intid: u32) {
        let i = intid as usize;
        match self.kind {
            GicKind::V2 { gicd, .. } => {
                set_priority_byte(gicd + v2::GICD_IPRIORITYR + i);
                // ITARGETSR byte: this CPU's interface.
                let word = gicd + v2::GICD_ITARGETSR + (i & !3);
                let shift = 8 * (i & 3);
                let mask = u32::from(self.cpu_interface_mask());
                write32(word, read32(word) & !(0xff << shift) | mask << shift);
                write32(gicd + v2::GICD_ISENABLER + 4 * (i / 32), 1 << (i % 32));
            }
            GicKind::V3 { gicd, .. } => {
                let mpidr = sysreg::mpidr_el1();
                let affinity = (mpidr & 0xff_ffff) | ((mpidr >> 32) & 0xff) << 32;
                // GICD_IROUTER<n> (64-bit, written as two words), IGROUPR, priority, enable.
                let router = gicd + v3::GICD_IROUTER + 8 * i;
                write32(router, low_word(affinity));
                write32(router + 4, (affinity >> 32) as u32);
                let group = gicd + v3::GICD_IGROUPR + 4 * (i / 32);
                write32(group, read32(group) | 1 << (i % 32));
                set_priority_byte(gicd + v3::GICD_IPRIORITYR + i);
                write32(gicd + v3::GICD_ISENABLER + 4 * (i / 32), 1 << (i % 32));
            }
            // The board's peripheral interrupts (the ARM control block's)
            // are never the hypervisor's: it has no device of its own there.
            GicKind::Bcm2836Local { .. } => {}
        }
    }
}
