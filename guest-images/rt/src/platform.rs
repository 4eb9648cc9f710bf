//! What the DTB says about the machine: UART, GIC, CPUs, PSCI, boot arguments.
//!
//! Parsed once by the boot CPU with the `fdt` crate. Anything missing falls
//! back to the QEMU virt layout where there is one (the UART), or is `None`.

use fdt::node::FdtNode;
use fdt::Fdt;

use crate::boot::MAX_CPUS;
use crate::gic::Gic;
use crate::psci::{self, Conduit};

/// The machine as described by the DTB.
#[derive(Clone, Copy, Debug)]
pub struct Platform {
    /// PL011 base (`arm,pl011`), if the DTB has one.
    pub uart_base: Option<usize>,
    /// The GIC, if the DTB describes a GICv2 or GICv3.
    pub gic: Option<Gic>,
    /// MPIDR values (the `reg` of each `/cpus/cpu@N`), in DTB order; the
    /// index here is the CPU index the runtime uses.
    pub cpu_mpidrs: [u64; MAX_CPUS],
    /// How many entries of `cpu_mpidrs` are valid.
    pub cpu_count: usize,
    /// `/psci` `method`: HVC unless it says `smc`.
    pub psci_conduit: Conduit,
    /// `/chosen/bootargs`, or "" (it lives in the DTB, which the guest keeps).
    pub bootargs: &'static str,
}

impl Platform {
    /// Parses the DTB at `dtb_address`. Prints a line and returns defaults
    /// (QEMU virt PL011, no GIC, one CPU) if there is no valid DTB there.
    pub fn from_dtb(dtb_address: usize) -> Self {
        let mut platform = Self {
            uart_base: None,
            gic: None,
            cpu_mpidrs: [0; MAX_CPUS],
            cpu_count: 1,
            psci_conduit: Conduit::Hvc,
            bootargs: "",
        };
        // SAFETY: the boot protocol puts a DTB at x0 and the loader keeps it out of the image (image_size covers .bss and stacks); `from_ptr` checks the magic and size before reading further, and the guest never writes the DTB, so `'static` shared access is sound.
        let fdt = match unsafe { Fdt::from_ptr(dtb_address as *const u8) } {
            Ok(fdt) => fdt,
            Err(error) => {
                crate::println!("rt: no valid DTB at {:#x}: {:?}", dtb_address, error);
                return platform;
            }
        };
        platform.uart_base = fdt
            .find_compatible(&["arm,pl011"])
            .and_then(first_reg)
            .map(|(base, _)| base);
        platform.gic = find_gic(&fdt);
        if let Some(cpus) = fdt.find_node("/cpus") {
            let mut count = 0;
            for cpu in cpus.children().filter(|node| node.name.starts_with("cpu@")) {
                let Some(mpidr) = cpu.property("reg").and_then(|reg| reg.as_usize()) else {
                    continue;
                };
                if count < MAX_CPUS {
                    platform.cpu_mpidrs[count] = mpidr as u64;
                    count += 1;
                }
            }
            platform.cpu_count = count.max(1);
        }
        if let Some(method) = fdt
            .find_node("/psci")
            .and_then(|node| node.property("method"))
            .and_then(|method| method.as_str())
        {
            if method == "smc" {
                platform.psci_conduit = Conduit::Smc;
            }
        }
        psci::set_conduit(platform.psci_conduit);
        platform.bootargs = fdt
            .find_node("/chosen")
            .and_then(|chosen| chosen.property("bootargs"))
            .and_then(|bootargs| bootargs.as_str())
            .unwrap_or("");
        platform
    }

    /// The MPIDR of CPU `index`, if the DTB lists that many CPUs.
    pub fn mpidr(&self, index: usize) -> Option<u64> {
        (index < self.cpu_count).then(|| self.cpu_mpidrs[index])
    }
}

/// Opens the DTB at `dtb_address` for a guest's own queries.
///
/// # Safety
///
/// `dtb_address` must be the address the runtime booted with
/// ([`crate::Boot::dtb_address`]), and nothing may write the DTB while the
/// returned value or anything borrowed from it is alive.
pub unsafe fn fdt(dtb_address: usize) -> Option<Fdt<'static>> {
    // SAFETY: the caller guarantees the DTB is valid and left unchanged.
    unsafe { Fdt::from_ptr(dtb_address as *const u8) }.ok()
}

/// The first `reg` entry of `node`: `(address, size)`.
fn first_reg(node: FdtNode<'_, '_>) -> Option<(usize, usize)> {
    let region = node.reg()?.next()?;
    Some((region.starting_address as usize, region.size.unwrap_or(0)))
}

/// Finds the interrupt controller: GICv3 (`arm,gic-v3`: reg 0 = GICD,
/// reg 1 = GICR region) or GICv2 (`arm,cortex-a15-gic`, `arm,gic-400`,
/// `arm,cortex-a9-gic`: reg 0 = GICD, reg 1 = GICC).
fn find_gic(fdt: &Fdt<'_>) -> Option<Gic> {
    if let Some(node) = fdt.find_compatible(&["arm,gic-v3"]) {
        let mut regs = node.reg()?;
        let distributor = regs.next()?.starting_address as usize;
        let redistributor = regs.next()?;
        return Some(Gic::V3 {
            distributor,
            redistributors: redistributor.starting_address as usize,
            redistributors_size: redistributor.size.unwrap_or(0),
        });
    }
    let node = fdt.find_compatible(&["arm,cortex-a15-gic", "arm,gic-400", "arm,cortex-a9-gic"])?;
    let mut regs = node.reg()?;
    let distributor = regs.next()?.starting_address as usize;
    let cpu_interface = regs.next()?.starting_address as usize;
    Some(Gic::V2 {
        distributor,
        cpu_interface,
    })
}
