//! Services of the physical CPU the hypervisor runs on: the counter and
//! the EL2 timer, waiting, its identity, and the firmware calls that start
//! other CPUs and power the board off (PSCI, DEN 0022).

use super::sysreg;

/// CNTHP_CTL_EL2.ENABLE (IMASK clear): the EL2 timer fires at its compare value.
const CNTHP_CTL_ENABLE: u64 = 1;
/// MPIDR_EL1 affinity fields Aff3 [39:32] and Aff2..Aff0 [23:0].
const MPIDR_AFFINITY: u64 = 0xff_00ff_ffff;
/// PSCI CPU_ON (SMC64) and SYSTEM_OFF function identifiers.
const PSCI_CPU_ON_64: u32 = 0xc400_0003;
const PSCI_SYSTEM_OFF: u32 = 0x8400_0008;

/// The physical counter (CNTPCT_EL0).
pub fn now() -> u64 {
    sysreg::cntpct_el0()
}

/// The counter frequency in Hz (CNTFRQ_EL0, as firmware set it).
pub fn counter_frequency() -> u64 {
    sysreg::cntfrq_el0()
}

/// Arms the EL2 physical timer to fire at counter value `deadline`.
pub fn arm_timer(deadline: u64) {
    // SAFETY: the EL2 physical timer belongs to the hypervisor; arming it only makes this CPU take an interrupt.
    unsafe {
        sysreg::write_cnthp_cval_el2(deadline);
        sysreg::write_cnthp_ctl_el2(CNTHP_CTL_ENABLE);
    }
}

/// Disarms the EL2 physical timer.
pub fn disarm_timer() {
    // SAFETY: as for `arm_timer`.
    unsafe { sysreg::write_cnthp_ctl_el2(0) };
}

/// Sleeps until an interrupt is pending (interrupts stay masked at EL2).
pub fn wait_for_interrupt() {
    sysreg::wfi();
}

/// This CPU's affinity (MPIDR_EL1 Aff3..Aff0).
pub fn affinity() -> u64 {
    sysreg::mpidr_el1() & MPIDR_AFFINITY
}

/// How firmware is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    /// SMC (firmware at EL3, or QEMU as firmware).
    Smc,
}

/// Starts the CPU with affinity `mpidr` at the hypervisor's secondary entry,
/// which receives `index` (its stack slot) in x0. Returns PSCI's error code
/// on failure.
pub fn start_secondary(conduit: Conduit, mpidr: u64, index: usize) -> Result<(), i64> {
    let Conduit::Smc = conduit;
    // SAFETY: the entry is chroma's secondary entry, which sets up its own stack (by index) and MMU before it runs Rust code.
    let result = unsafe {
        sysreg::smc_call(
            PSCI_CPU_ON_64,
            mpidr,
            super::boot::secondary_entry_address(),
            index as u64,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(result as i64)
    }
}

/// Releases the CPU waiting on the spin table at `release_address` (Linux
/// Documentation/arch/arm64/booting.rst, "spin-table"): writes the spin-table
/// entry there, cleans it and the secondaries' MMU settings to the point of
/// coherency (the waiting CPU reads with its caches off), and sends an event.
///
/// # Safety
/// `release_address` is the CPU's `cpu-release-addr` from the device tree,
/// in RAM the EL2 map covers and the firmware reserved for it; the
/// secondaries' MMU settings are published ([`super::boot::set_secondary_mmu_config`]).
pub unsafe fn release_from_spin_table(release_address: u64) -> Result<(), &'static str> {
    if !release_address.is_multiple_of(8) {
        return Err("a cpu-release-addr that is not 8-byte aligned");
    }
    let Ok(mailbox) = usize::try_from(release_address) else {
        return Err("a cpu-release-addr beyond the address space");
    };
    let entry = super::boot::spin_table_entry_address();
    // SAFETY: the caller's contract: the release address is the waiting CPU's mailbox, which nothing else uses.
    unsafe { core::ptr::write_volatile(mailbox as *mut u64, entry) };
    super::cache::clean_to_poc(mailbox, 8);
    super::boot::clean_secondary_mmu_config();
    sysreg::dsb_ish();
    sysreg::sev();
    Ok(())
}

/// Powers the board off (PSCI SYSTEM_OFF); waits forever if firmware returns.
pub fn power_off() -> ! {
    // SAFETY: SYSTEM_OFF hands no memory to anyone; nothing runs after it.
    unsafe { sysreg::smc_call(PSCI_SYSTEM_OFF, 0, 0, 0) };
    loop {
        sysreg::wfi();
    }
}

/// Makes a translation-table descriptor just stored visible to the table
/// walkers of every CPU in the inner shareable domain (DSB ISH).
pub fn publish_table_write() {
    sysreg::dsb_ish();
}

/// Makes new translations (replacing invalid entries) usable by the next
/// instruction on this CPU: DSB ISH, then ISB.
pub fn publish_new_mappings() {
    sysreg::dsb_ish();
    sysreg::isb();
}

/// Makes the removal or change of the EL2 mapping of the page at `va`
/// (its descriptor already written) take effect on every CPU: TLBI VAE2IS.
pub fn forget_mapping(va: u64) {
    sysreg::tlbi_vae2is(va);
}

/// Bytes [`copy_blocks`] moves per iteration.
pub const COPY_BLOCK: usize = 64;

/// Copies `blocks` blocks of [`COPY_BLOCK`] bytes from `source` to
/// `destination` with LDP/STP pairs: ten instructions a block, where the
/// build's `memcpy` (compiler-builtins, 8 bytes an iteration) takes 32. For
/// the loader's copies of kernel images (tens of MiB), whose time is
/// instructions under an emulator.
///
/// # Safety
/// `source` must be valid for reads and `destination` for writes of
/// `blocks * COPY_BLOCK` bytes, both in normal memory (unaligned accesses
/// allowed: SCTLR_EL2.A is clear), and the two ranges must not overlap.
pub unsafe fn copy_blocks(destination: *mut u8, source: *const u8, blocks: usize) {
    if blocks == 0 {
        return;
    }
    // SAFETY: the caller's contract: every access of the loop lies in the two ranges; the loop runs `blocks` times (not zero, checked above) and touches no stack.
    unsafe {
        core::arch::asm!(
            "2:",
            "ldp {a}, {b}, [{source}], #16",
            "ldp {c}, {d}, [{source}], #16",
            "stp {a}, {b}, [{destination}], #16",
            "stp {c}, {d}, [{destination}], #16",
            "ldp {a}, {b}, [{source}], #16",
            "ldp {c}, {d}, [{source}], #16",
            "stp {a}, {b}, [{destination}], #16",
            "stp {c}, {d}, [{destination}], #16",
            "subs {blocks}, {blocks}, #1",
            "b.ne 2b",
            source = inout(reg) source => _,
            destination = inout(reg) destination => _,
            blocks = inout(reg) blocks => _,
            a = out(reg) _,
            b = out(reg) _,
            c = out(reg) _,
            d = out(reg) _,
            options(nostack),
        )
    };
}
