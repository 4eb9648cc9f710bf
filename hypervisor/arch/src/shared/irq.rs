//! The GIC as the core's physical [`InterruptController`].

use super::gic::Gic;
use chroma_core::irq::InterruptController;

/// How a GIC addresses a CPU for an SGI: its affinity (GICv3) and its CPU
/// interface mask (GICv2), learnt from the CPU itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GicCpuTarget {
    /// MPIDR affinity.
    pub affinity: u64,
    /// GICv2 CPU interface bit (from the banked GICD_ITARGETSR0).
    pub interface_mask: u8,
}

impl InterruptController for Gic {
    type CpuTarget = GicCpuTarget;

    fn acknowledge(&self) -> Option<u32> {
        Gic::acknowledge(self)
    }

    fn end_of_interrupt(&self, intid: u32) {
        Gic::end_of_interrupt(self, intid)
    }

    fn this_cpu(&self) -> GicCpuTarget {
        GicCpuTarget {
            affinity: super::cpu::affinity(),
            interface_mask: self.cpu_interface_mask(),
        }
    }

    fn send_ipi(&self, target: GicCpuTarget, intid: u32) {
        self.send_sgi(intid, target.affinity, target.interface_mask)
    }

    fn enable_shared(&self, intid: u32) {
        self.enable_spi(intid)
    }
}
