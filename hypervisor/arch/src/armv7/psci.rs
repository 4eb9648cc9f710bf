//! PSCI calls from HYP mode over SMC (the conduit QEMU's `virt` machine
//! with `virtualization=on` implements; on hardware, the secure firmware).

use core::arch::asm;

/// PSCI_VERSION (SMC32).
pub const PSCI_VERSION: u32 = 0x8400_0000;
/// CPU_ON (SMC32: ARMv7 has no SMC64).
pub const CPU_ON: u32 = 0x8400_0003;
/// SYSTEM_OFF (SMC32).
pub const SYSTEM_OFF: u32 = 0x8400_0008;

/// One SMC32 call with up to three arguments; returns r0.
fn smc(function: u32, arguments: [u32; 3]) -> u32 {
    let result: u32;
    // SAFETY: an SMC enters the secure firmware (or QEMU's PSCI emulation), which implements the SMC Calling Convention: r0-r3 carry the call and its result, r4-r7 are preserved and memory is not touched by the calls made here (VERSION, SYSTEM_OFF). r1-r3 are marked clobbered.
    unsafe {
        asm!(
            ".arch_extension sec",
            "smc #0",
            inout("r0") function => result,
            inout("r1") arguments[0] => _,
            inout("r2") arguments[1] => _,
            inout("r3") arguments[2] => _,
            options(nostack)
        );
    }
    result
}

/// PSCI_VERSION: (major, minor).
pub fn version() -> (u16, u16) {
    let [minor0, minor1, major0, major1] = smc(PSCI_VERSION, [0; 3]).to_le_bytes();
    (
        u16::from_le_bytes([major0, major1]),
        u16::from_le_bytes([minor0, minor1]),
    )
}

/// CPU_ON: starts the CPU `mpidr` at `entry` with r0 = `context`; returns
/// PSCI's status (0: success; negative: an error such as ALREADY_ON).
pub fn cpu_on(mpidr: u32, entry: u32, context: u32) -> i32 {
    i32::from_le_bytes(smc(CPU_ON, [mpidr, entry, context]).to_le_bytes())
}

/// SYSTEM_OFF; parks the CPU if the firmware returns.
pub fn system_off() -> ! {
    smc(SYSTEM_OFF, [0; 3]);
    loop {
        aarch32_cpu::asm::wfi();
    }
}
