//! PSCI 1.x calls (Arm DEN 0022) over HVC or SMC, as the DTB's `/psci` says.
//!
//! AArch64 guests use the SMC64 function IDs where PSCI has both; AArch32
//! guests can only make SMC32 calls, so there CPU_ON and AFFINITY_INFO are
//! the SMC32 IDs (0x8400_0003, 0x8400_0004) and arguments are 32-bit.

use crate::shared::Shared;

/// PSCI_VERSION.
pub const PSCI_VERSION: u32 = 0x8400_0000;
/// CPU_OFF.
pub const CPU_OFF: u32 = 0x8400_0002;
/// CPU_ON (SMC64).
#[cfg(target_arch = "aarch64")]
pub const CPU_ON: u32 = 0xc400_0003;
/// AFFINITY_INFO (SMC64).
#[cfg(target_arch = "aarch64")]
pub const AFFINITY_INFO: u32 = 0xc400_0004;
/// CPU_ON (SMC32).
#[cfg(target_arch = "arm")]
pub const CPU_ON: u32 = 0x8400_0003;
/// AFFINITY_INFO (SMC32).
#[cfg(target_arch = "arm")]
pub const AFFINITY_INFO: u32 = 0x8400_0004;
/// SYSTEM_OFF.
pub const SYSTEM_OFF: u32 = 0x8400_0008;
/// SYSTEM_RESET.
pub const SYSTEM_RESET: u32 = 0x8400_0009;
/// PSCI_FEATURES.
pub const PSCI_FEATURES: u32 = 0x8400_000a;

/// PSCI return codes (DEN 0022, table 6).
pub mod status {
    /// SUCCESS.
    pub const SUCCESS: i64 = 0;
    /// NOT_SUPPORTED.
    pub const NOT_SUPPORTED: i64 = -1;
    /// INVALID_PARAMETERS.
    pub const INVALID_PARAMETERS: i64 = -2;
    /// DENIED.
    pub const DENIED: i64 = -3;
    /// ALREADY_ON.
    pub const ALREADY_ON: i64 = -4;
    /// ON_PENDING.
    pub const ON_PENDING: i64 = -5;
    /// INTERNAL_FAILURE.
    pub const INTERNAL_FAILURE: i64 = -6;
    /// NOT_PRESENT.
    pub const NOT_PRESENT: i64 = -7;
    /// DISABLED.
    pub const DISABLED: i64 = -8;
    /// INVALID_ADDRESS.
    pub const INVALID_ADDRESS: i64 = -9;
}

/// The PSCI name of a return code, for stable output lines.
pub fn status_name(code: i64) -> &'static str {
    match code {
        status::SUCCESS => "SUCCESS",
        status::NOT_SUPPORTED => "NOT_SUPPORTED",
        status::INVALID_PARAMETERS => "INVALID_PARAMETERS",
        status::DENIED => "DENIED",
        status::ALREADY_ON => "ALREADY_ON",
        status::ON_PENDING => "ON_PENDING",
        status::INTERNAL_FAILURE => "INTERNAL_FAILURE",
        status::NOT_PRESENT => "NOT_PRESENT",
        status::DISABLED => "DISABLED",
        status::INVALID_ADDRESS => "INVALID_ADDRESS",
        _ => "OTHER",
    }
}

/// How PSCI calls reach the firmware or hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    /// `hvc #0` (QEMU virt without EL2, and chroma).
    Hvc,
    /// `smc #0`.
    Smc,
}

static CONDUIT_IS_SMC: Shared<bool> = Shared::new(false);

/// Selects the conduit; the boot CPU calls this from the DTB before others start.
pub fn set_conduit(conduit: Conduit) {
    CONDUIT_IS_SMC.set(conduit == Conduit::Smc);
}

/// The conduit in use (HVC unless the DTB said `smc`).
pub fn conduit() -> Conduit {
    if CONDUIT_IS_SMC.get() {
        Conduit::Smc
    } else {
        Conduit::Hvc
    }
}

/// Makes an SMCCC call with up to three arguments and returns x0 (r0 on
/// AArch32, sign-extended; arguments there are truncated to 32 bits, as an
/// SMC32 callee reads them).
///
/// Any function id may be passed: this is also how hostile guests probe the
/// hypervisor. Calls that stop or restart CPUs are memory-safe from this
/// CPU's point of view (the call either returns or never does).
pub fn call(function: u32, arg1: u64, arg2: u64, arg3: u64) -> i64 {
    call_via(conduit(), function, arg1, arg2, arg3)
}

/// As [`call`], through `conduit` whatever the DTB said.
pub fn call_via(conduit: Conduit, function: u32, arg1: u64, arg2: u64, arg3: u64) -> i64 {
    crate::arch::smccc_call(conduit == Conduit::Smc, function, arg1, arg2, arg3)
}

/// PSCI_VERSION: `(major, minor)`.
pub fn version() -> (u16, u16) {
    // Bits 30:16 major, 15:0 minor (bit 31 is zero for a valid version).
    let bytes = call(PSCI_VERSION, 0, 0, 0).to_le_bytes();
    (
        u16::from_le_bytes([bytes[2], bytes[3]]),
        u16::from_le_bytes([bytes[0], bytes[1]]),
    )
}

/// PSCI_FEATURES for `function`: 0 (or feature flags) if implemented, else negative.
pub fn features(function: u32) -> i64 {
    call(PSCI_FEATURES, u64::from(function), 0, 0)
}

/// CPU_ON: starts the CPU `mpidr` at `entry` with x0 = `context_id`.
pub fn cpu_on(mpidr: u64, entry: u64, context_id: u64) -> i64 {
    call(CPU_ON, mpidr, entry, context_id)
}

/// CPU_OFF: stops the calling CPU; returns only on failure.
pub fn cpu_off() -> i64 {
    call(CPU_OFF, 0, 0, 0)
}

/// AFFINITY_INFO at level 0: 0 ON, 1 OFF, 2 ON_PENDING, or an error.
pub fn affinity_info(mpidr: u64) -> i64 {
    call(AFFINITY_INFO, mpidr, 0, 0)
}

/// SYSTEM_OFF; returns only on failure.
pub fn system_off() -> i64 {
    call(SYSTEM_OFF, 0, 0, 0)
}

/// SYSTEM_RESET; returns only on failure.
pub fn system_reset() -> i64 {
    call(SYSTEM_RESET, 0, 0, 0)
}
