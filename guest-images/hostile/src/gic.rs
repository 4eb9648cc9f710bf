//! Raw access to the guest's GIC, as an attacker uses it: distributor and
//! redistributor registers by offset, and the CPU interface (GICC for a
//! GICv2, ICC system registers for a GICv3).

use chroma_guest_rt::gic::Gic;
use chroma_guest_rt::{timer, Boot};

use crate::mmio::{read32, write32};

/// The spurious INTID.
pub const SPURIOUS: u32 = 1023;
/// Redistributor frame size (RD_base, then SGI_base).
pub const FRAME: u64 = 0x1_0000;
/// GICD register offsets (GICv2 and v3 spec, register maps).
pub const GICD_CTLR: u64 = 0x000;
pub const GICD_TYPER: u64 = 0x004;
pub const GICD_IGROUPR: u64 = 0x080;
pub const GICD_ISENABLER: u64 = 0x100;
pub const GICD_ICENABLER: u64 = 0x180;
pub const GICD_ISPENDR: u64 = 0x200;
pub const GICD_ICPENDR: u64 = 0x280;
pub const GICD_ICACTIVER: u64 = 0x380;
pub const GICD_IPRIORITYR: u64 = 0x400;
pub const GICD_ITARGETSR: u64 = 0x800;
pub const GICD_SGIR: u64 = 0xf00;
pub const GICD_CPENDSGIR: u64 = 0xf10;
pub const GICD_IROUTER: u64 = 0x6000;
/// GICR (RD_base frame) offsets.
pub const GICR_WAKER: u64 = 0x014;
/// GICC offsets (the guest's view of the GICv2 virtual CPU interface).
const GICC_CTLR: u64 = 0x00;
const GICC_PMR: u64 = 0x04;
const GICC_IAR: u64 = 0x0c;
const GICC_EOIR: u64 = 0x10;
const GICC_RPR: u64 = 0x14;
const GICC_DIR: u64 = 0x1000;
/// EOImode in GICC_CTLR (bit 9) and ICC_CTLR_EL1 (bit 1).
const GICC_CTLR_EOIMODE: u32 = 1 << 9;
const ICC_CTLR_EOIMODE: u64 = 1 << 1;

/// The guest's GIC, as the attacker sees it.
#[derive(Clone, Copy)]
pub struct Attack {
    /// 2 or 3.
    pub version: u32,
    /// GICD base.
    pub dist: u64,
    /// GICC base (GICv2) or this vCPU's RD_base (GICv3).
    pub cpu: u64,
    /// GICv3: the redistributor region's size from the DTB.
    pub redistributors_size: u64,
}

impl Attack {
    /// The GIC the DTB names; `Err` when there is none.
    pub fn new(boot: &Boot) -> Result<Self, crate::Failure> {
        match boot.platform.gic {
            Some(Gic::V2 {
                distributor,
                cpu_interface,
            }) => Ok(Self {
                version: 2,
                dist: distributor as u64,
                cpu: cpu_interface as u64,
                redistributors_size: 0,
            }),
            Some(Gic::V3 {
                distributor,
                redistributors,
                redistributors_size,
            }) => Ok(Self {
                version: 3,
                dist: distributor as u64,
                // The attacker runs one vCPU: the first frame is its own.
                cpu: redistributors as u64,
                redistributors_size: redistributors_size as u64,
            }),
            None => Err(crate::Failure {
                what: "no GIC in the DTB",
                got: 0,
                want: 1,
            }),
        }
    }

    /// A distributor register.
    pub fn dist_read(&self, offset: u64) -> u32 {
        read32(self.dist + offset)
    }

    /// Writes a distributor register.
    pub fn dist_write(&self, offset: u64, value: u32) {
        write32(self.dist + offset, value);
    }

    /// Where the SGI and PPI enable, pending, active and priority registers
    /// are: the distributor (GICv2) or the SGI_base frame (GICv3), at the
    /// same offsets.
    pub fn private_base(&self) -> u64 {
        if self.version == 2 {
            self.dist
        } else {
            self.cpu + FRAME
        }
    }

    /// Sets the priority of private interrupt `intid` (0..32).
    pub fn set_priority(&self, intid: u32, priority: u8) {
        let address = self.private_base() + GICD_IPRIORITYR + u64::from(intid & !3);
        let shift = (intid % 4) * 8;
        let word = read32(address) & !(0xff << shift);
        write32(address, word | (u32::from(priority) << shift));
    }

    /// Enables private interrupt `intid` with `priority`.
    pub fn enable(&self, intid: u32, priority: u8) {
        self.set_priority(intid, priority);
        write32(self.private_base() + GICD_ISENABLER, 1 << intid);
    }

    /// Sends SGI `intid` to this vCPU.
    pub fn pend_sgi_self(&self, intid: u32) {
        if self.version == 2 {
            // TargetListFilter 2: this CPU only.
            self.dist_write(GICD_SGIR, (2 << 24) | (intid & 0xf));
        } else {
            let mpidr = crate::mrs!("S3_0_C0_C0_5");
            let value = (1u64 << (mpidr & 0xf))
                | (((mpidr >> 8) & 0xff) << 16)
                | ((u64::from(intid) & 0xf) << 24)
                | (((mpidr >> 16) & 0xff) << 32)
                | (((mpidr >> 32) & 0xff) << 48);
            send_sgi1r(value);
        }
    }

    /// Acknowledges: the INTID read from IAR (1023 when none).
    pub fn ack(&self) -> u32 {
        if self.version == 2 {
            read32(self.cpu + GICC_IAR) & 0x3ff
        } else {
            (crate::mrs!("S3_0_C12_C12_0") & 0xff_ffff) as u32
        }
    }

    /// Writes EOIR (priority drop, and deactivation in EOImode 0).
    pub fn eoi(&self, intid: u32) {
        if self.version == 2 {
            write32(self.cpu + GICC_EOIR, intid);
        } else {
            crate::msr!("S3_0_C12_C12_1", u64::from(intid));
        }
    }

    /// Writes DIR (deactivation in EOImode 1).
    pub fn dir(&self, intid: u32) {
        if self.version == 2 {
            write32(self.cpu + GICC_DIR, intid);
        } else {
            crate::msr!("S3_0_C12_C11_1", u64::from(intid));
        }
    }

    /// The running priority.
    pub fn rpr(&self) -> u32 {
        if self.version == 2 {
            read32(self.cpu + GICC_RPR) & 0xff
        } else {
            (crate::mrs!("S3_0_C12_C11_3") & 0xff) as u32
        }
    }

    /// Sets the priority mask.
    pub fn set_pmr(&self, mask: u32) {
        if self.version == 2 {
            write32(self.cpu + GICC_PMR, mask);
        } else {
            crate::msr!("S3_0_C4_C6_0", u64::from(mask));
        }
    }

    /// The priority mask.
    pub fn pmr(&self) -> u32 {
        if self.version == 2 {
            read32(self.cpu + GICC_PMR) & 0xff
        } else {
            (crate::mrs!("S3_0_C4_C6_0") & 0xff) as u32
        }
    }

    /// Turns split priority drop and deactivation (EOImode) on or off.
    pub fn set_eoimode(&self, split: bool) {
        if self.version == 2 {
            let ctlr = read32(self.cpu + GICC_CTLR) & !GICC_CTLR_EOIMODE;
            write32(
                self.cpu + GICC_CTLR,
                ctlr | if split { GICC_CTLR_EOIMODE } else { 0 },
            );
        } else {
            let ctlr = crate::mrs!("S3_0_C12_C12_4") & !ICC_CTLR_EOIMODE;
            crate::msr!(
                "S3_0_C12_C12_4",
                ctlr | if split { ICC_CTLR_EOIMODE } else { 0 }
            );
        }
    }

    /// The number of interrupt lines (GICD_TYPER.ITLinesNumber), at most 1020.
    pub fn lines(&self) -> u32 {
        (32 * ((self.dist_read(GICD_TYPER) & 0x1f) + 1)).min(1020)
    }

    /// Puts the GIC back as the runtime left it: distributor on, every
    /// private interrupt disabled, not pending, not active, priority mask
    /// 0xf0, EOImode 0, then acknowledges and ends whatever is still
    /// delivered. IRQs stay masked at PSTATE (the cases poll).
    pub fn quiesce(&self) {
        chroma_guest_rt::exceptions::mask_irqs();
        timer::disarm();
        self.set_eoimode(false);
        self.set_pmr(0xf0);
        if self.version == 2 {
            self.dist_write(GICD_CTLR, 0b11);
            for register in 0..4 {
                self.dist_write(GICD_CPENDSGIR + 4 * register, u32::MAX);
            }
        } else {
            self.dist_write(GICD_CTLR, (1 << 4) | 0b11);
            write32(self.cpu + GICR_WAKER, 0);
            write32(self.cpu + FRAME + GICD_IGROUPR, u32::MAX);
        }
        let base = self.private_base();
        write32(base + GICD_ICENABLER, u32::MAX);
        write32(base + GICD_ICPENDR, u32::MAX);
        write32(base + GICD_ICACTIVER, u32::MAX);
        let lines = self.lines();
        for register in 1..lines / 32 {
            let offset = 4 * u64::from(register);
            self.dist_write(GICD_ICENABLER + offset, u32::MAX);
            self.dist_write(GICD_ICPENDR + offset, u32::MAX);
            self.dist_write(GICD_ICACTIVER + offset, u32::MAX);
        }
        // Anything still in flight.
        for _ in 0..64 {
            let intid = self.ack();
            if intid >= 1020 {
                break;
            }
            self.eoi(intid);
        }
    }

    /// Polls IAR for up to `milliseconds`, ending each interrupt at once,
    /// until `wanted` have arrived; counts them by INTID in `seen` (INTIDs
    /// past its end count in its last slot). Returns how many arrived.
    pub fn drain(&self, seen: &mut [u32], wanted: u32, milliseconds: u64) -> u32 {
        let deadline = timer::now().saturating_add(timer::ticks_in_ms(milliseconds));
        let mut arrived = 0;
        while arrived < wanted && timer::now() < deadline {
            let intid = self.ack();
            if intid >= 1020 {
                continue;
            }
            if intid == timer::VIRTUAL_TIMER_INTID {
                timer::disarm();
            }
            self.eoi(intid);
            arrived += 1;
            let slot = (intid as usize).min(seen.len() - 1);
            seen[slot] += 1;
        }
        arrived
    }

    /// Polls IAR for up to `milliseconds` for one interrupt, without ending
    /// it; `SPURIOUS` if none came.
    pub fn wait_ack(&self, milliseconds: u64) -> u32 {
        let deadline = timer::now().saturating_add(timer::ticks_in_ms(milliseconds));
        while timer::now() < deadline {
            let intid = self.ack();
            if intid < 1020 {
                return intid;
            }
        }
        SPURIOUS
    }
}

/// Writes ICC_SGI1R_EL1.
pub fn send_sgi1r(value: u64) {
    crate::msr!("S3_0_C12_C11_5", value);
}
