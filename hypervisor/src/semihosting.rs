//! Leaving the machine: Arm semihosting SYS_EXIT (QEMU `-semihosting`, used
//! by headless runs so the exit status tells whether every VM ended
//! cleanly) or PSCI SYSTEM_OFF.

use chroma_arch::aarch64::sysreg;
use core::sync::atomic::{AtomicBool, Ordering};

/// Whether the manifest asked for a semihosting exit.
static USE_SEMIHOSTING: AtomicBool = AtomicBool::new(false);
/// SYS_EXIT and ADP_Stopped_ApplicationExit (Arm semihosting 2.0).
const SYS_EXIT: u64 = 0x18;
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;
/// PSCI SYSTEM_OFF.
const PSCI_SYSTEM_OFF: u32 = 0x8400_0008;

/// Selects the exit path (from the manifest options).
pub fn configure(exit_via_semihosting: bool) {
    USE_SEMIHOSTING.store(exit_via_semihosting, Ordering::SeqCst);
}

/// Ends the run with `status` (0 = every VM ended cleanly).
pub fn exit(status: u32) -> ! {
    if USE_SEMIHOSTING.load(Ordering::SeqCst) {
        let block = [ADP_STOPPED_APPLICATION_EXIT, u64::from(status)];
        // SAFETY: the semihosting call reads the two-word block and ends the
        // emulation; it writes no memory. Only used when the manifest says a
        // semihosting host is attached (headless QEMU runs).
        unsafe {
            core::arch::asm!("hlt #0xf000", in("x0") SYS_EXIT, in("x1") block.as_ptr(), options(nostack));
        }
    }
    // SAFETY: SYSTEM_OFF powers the machine off; nothing runs after it.
    unsafe { sysreg::smc_call(PSCI_SYSTEM_OFF, 0, 0, 0) };
    loop {
        sysreg::wfi();
    }
}

/// Ends the run after a hypervisor failure.
pub fn fail_stop() -> ! {
    exit(2)
}
