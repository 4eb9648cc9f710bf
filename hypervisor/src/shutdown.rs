//! Leaving the machine: PSCI SYSTEM_OFF through the firmware's SMC conduit.
//!
//! The run's verdict is the summary line the hypervisor prints before this
//! (`chroma: all VMs stopped (N clean, M failed)`, or a `chroma: fatal`,
//! `chroma: PANIC` or `chroma: EL2 EXCEPTION` line); the harness reads it
//! from the console. There is deliberately no other way out: Arm
//! semihosting (`hlt #0xf000`) would need QEMU's `-semihosting`, which a
//! guest at EL1 could use as well to end the run or reach the host.

/// Powers the board off (PSCI SYSTEM_OFF through the firmware's SMC
/// conduit). Print the final summary or failure line first.
pub fn power_off() -> ! {
    crate::arch::cpu::power_off()
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
