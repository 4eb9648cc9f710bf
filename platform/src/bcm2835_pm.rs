//! The BCM2835 family's power-management block, for its one use here: a
//! full-chip reset through the watchdog (what Linux's `bcm2835_restart`
//! does). A Raspberry Pi has no way to switch itself off; QEMU's `raspi`
//! machines with `-no-reboot` end the run on this reset.

use core::ptr::write_volatile;

/// PM_RSTC: reset control.
const PM_RSTC: usize = 0x1c;
/// PM_WDOG: the watchdog's countdown (in 16 µs ticks).
const PM_WDOG: usize = 0x24;
/// Every write to the PM block carries this password in bits 31:24.
const PM_PASSWORD: u32 = 0x5a00_0000;
/// PM_RSTC.WRCFG = full reset.
const PM_RSTC_WRCFG_FULL_RESET: u32 = 0x20;
/// PM_RSTC.WRCFG's field.
const PM_RSTC_WRCFG_CLR: u32 = 0xffff_ffcf;

/// Resets the SoC through the watchdog after about 10 ticks.
///
/// # Safety
/// `base` is the PM block, mapped as device memory; nothing needs to run
/// after this (the chip resets).
pub unsafe fn reset(base: usize) {
    // SAFETY: the caller's contract; these two registers only arm the watchdog and choose a full reset.
    unsafe {
        write_volatile((base + PM_WDOG) as *mut u32, PM_PASSWORD | 10);
        let rstc = core::ptr::read_volatile((base + PM_RSTC) as *const u32);
        write_volatile(
            (base + PM_RSTC) as *mut u32,
            PM_PASSWORD | (rstc & PM_RSTC_WRCFG_CLR) | PM_RSTC_WRCFG_FULL_RESET,
        );
    }
}
