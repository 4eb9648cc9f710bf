//! Leaving the machine: PSCI SYSTEM_OFF through the firmware's SMC conduit.
//!
//! The run's verdict is the summary line the hypervisor prints before this
//! (`chroma: all VMs stopped (N clean, M failed)`, or a `chroma: fatal`,
//! `chroma: PANIC` or `chroma: EL2 EXCEPTION` line); the harness reads it
//! from the console. There is deliberately no other way out: Arm
//! semihosting (`hlt #0xf000`) would need QEMU's `-semihosting`, which a
//! guest at EL1 could use as well to end the run or reach the host.

/// Powers the board off: PSCI SYSTEM_OFF through the firmware's SMC
/// conduit, or on a Raspberry Pi (no PSCI, no power switch) a watchdog
/// reset, which ends a QEMU run with `-no-reboot`. Print the final summary
/// or failure line first.
pub fn power_off() -> ! {
    match chroma_platform::BOARD.power_off {
        chroma_platform::PowerOff::Psci => crate::arch::cpu::power_off(),
        chroma_platform::PowerOff::Bcm2835Watchdog { base } => {
            // SAFETY: the PM block is the board's (platform crate) and `platform_info` had it mapped as device memory; nothing has to run after the reset.
            unsafe { chroma_platform::bcm2835_pm::reset(base) };
            loop {
                crate::arch::cpu::wait_for_interrupt();
            }
        }
    }
}

/// Prints the run's summary line, `chroma: all VMs stopped (N clean, M
/// failed)`, whatever the log level: the harness takes the run's exit status
/// from it, so it must not be filtered out like an info line.
pub fn print_summary(clean: usize, failed: usize) {
    if log::log_enabled!(log::Level::Info) {
        // The normal path: the logger prints it under the console lock.
        log::info!("all VMs stopped ({clean} clean, {failed} failed)");
    } else {
        crate::console::emergency(format_args!(
            "chroma: all VMs stopped ({clean} clean, {failed} failed)"
        ));
    }
}
