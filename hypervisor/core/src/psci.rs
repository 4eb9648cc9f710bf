//! PSCI 1.1 (Arm DEN 0022) as chroma offers it to guests over HVC: function
//! identifiers, return codes and the decoding of a call.
// Guest input is parsed here: an index or slice must not panic (issue 10).
#![deny(clippy::indexing_slicing)]

/// PSCI_VERSION.
pub const PSCI_VERSION: u32 = 0x8400_0000;
/// CPU_SUSPEND (SMC32 and SMC64).
pub const CPU_SUSPEND_32: u32 = 0x8400_0001;
/// CPU_SUSPEND, SMC64.
pub const CPU_SUSPEND_64: u32 = 0xc400_0001;
/// CPU_OFF.
pub const CPU_OFF: u32 = 0x8400_0002;
/// CPU_ON, SMC32.
pub const CPU_ON_32: u32 = 0x8400_0003;
/// CPU_ON, SMC64.
pub const CPU_ON_64: u32 = 0xc400_0003;
/// AFFINITY_INFO, SMC32.
pub const AFFINITY_INFO_32: u32 = 0x8400_0004;
/// AFFINITY_INFO, SMC64.
pub const AFFINITY_INFO_64: u32 = 0xc400_0004;
/// MIGRATE_INFO_TYPE.
pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
/// SYSTEM_OFF.
pub const SYSTEM_OFF: u32 = 0x8400_0008;
/// SYSTEM_RESET.
pub const SYSTEM_RESET: u32 = 0x8400_0009;
/// PSCI_FEATURES.
pub const PSCI_FEATURES: u32 = 0x8400_000a;
/// SMCCC_VERSION (SMC Calling Convention, DEN 0028).
pub const SMCCC_VERSION: u32 = 0x8000_0000;

/// Version 1.1 as (major << 16 | minor).
pub const VERSION_1_1: u32 = 0x0001_0001;

/// PSCI return codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum PsciReturn {
    /// SUCCESS.
    Success = 0,
    /// NOT_SUPPORTED.
    NotSupported = -1,
    /// INVALID_PARAMETERS.
    InvalidParameters = -2,
    /// DENIED.
    Denied = -3,
    /// ALREADY_ON.
    AlreadyOn = -4,
    /// ON_PENDING.
    OnPending = -5,
    /// INTERNAL_FAILURE.
    InternalFailure = -6,
    /// INVALID_ADDRESS.
    InvalidAddress = -9,
}

impl PsciReturn {
    /// The value placed in x0 (sign-extended to 64 bits).
    pub fn to_register(self) -> u64 {
        i64::from(self as i32) as u64
    }
}

/// A decoded guest call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciCall {
    /// PSCI_VERSION.
    Version,
    /// PSCI_FEATURES for a function id.
    Features(u32),
    /// CPU_ON: target MPIDR, entry point, context id.
    CpuOn {
        /// Target affinity (MPIDR bits).
        target: u64,
        /// Entry point IPA.
        entry: u64,
        /// Passed in x0 to the new vCPU.
        context: u64,
    },
    /// CPU_OFF.
    CpuOff,
    /// CPU_SUSPEND (treated as a wait for interrupt).
    CpuSuspend,
    /// AFFINITY_INFO for a target MPIDR (level 0 only).
    AffinityInfo {
        /// Target affinity.
        target: u64,
        /// Lowest affinity level.
        level: u64,
    },
    /// MIGRATE_INFO_TYPE.
    MigrateInfoType,
    /// SYSTEM_OFF.
    SystemOff,
    /// SYSTEM_RESET.
    SystemReset,
    /// SMCCC_VERSION.
    SmcccVersion,
    /// Anything else.
    Unknown(u32),
}

impl PsciCall {
    /// Decodes x0..x3 of an HVC. 32-bit calling-convention arguments are
    /// truncated to 32 bits as DEN 0028 requires.
    pub fn decode(x: [u64; 4]) -> Self {
        // SMCCC: the function ID is W0, the low half of x0.
        let function = (x[0] & 0xffff_ffff) as u32;
        let is64 = function & 0x4000_0000 != 0;
        let arg = |i: usize| {
            let value = x.get(i).copied().unwrap_or(0);
            if is64 {
                value
            } else {
                value & 0xffff_ffff
            }
        };
        match function {
            PSCI_VERSION => PsciCall::Version,
            // The queried function ID is W1.
            PSCI_FEATURES => PsciCall::Features((x[1] & 0xffff_ffff) as u32),
            CPU_ON_32 | CPU_ON_64 => PsciCall::CpuOn {
                target: arg(1),
                entry: arg(2),
                context: arg(3),
            },
            CPU_OFF => PsciCall::CpuOff,
            CPU_SUSPEND_32 | CPU_SUSPEND_64 => PsciCall::CpuSuspend,
            AFFINITY_INFO_32 | AFFINITY_INFO_64 => PsciCall::AffinityInfo {
                target: arg(1),
                level: arg(2),
            },
            MIGRATE_INFO_TYPE => PsciCall::MigrateInfoType,
            SYSTEM_OFF => PsciCall::SystemOff,
            SYSTEM_RESET => PsciCall::SystemReset,
            SMCCC_VERSION => PsciCall::SmcccVersion,
            other => PsciCall::Unknown(other),
        }
    }

    /// Answer to PSCI_FEATURES(function): supported or not.
    pub fn features(function: u32) -> PsciReturn {
        match function {
            PSCI_VERSION | CPU_ON_32 | CPU_ON_64 | CPU_OFF | CPU_SUSPEND_32 | CPU_SUSPEND_64
            | AFFINITY_INFO_32 | AFFINITY_INFO_64 | MIGRATE_INFO_TYPE | SYSTEM_OFF
            | SYSTEM_RESET | PSCI_FEATURES | SMCCC_VERSION => PsciReturn::Success,
            _ => PsciReturn::NotSupported,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_calls_and_truncates_smc32_arguments() {
        assert_eq!(
            PsciCall::decode([PSCI_VERSION.into(), 0, 0, 0]),
            PsciCall::Version
        );
        assert_eq!(
            PsciCall::decode([CPU_ON_32.into(), 0xffff_ffff_0000_0001, 0x1_4008_0000, 7]),
            PsciCall::CpuOn {
                target: 1,
                entry: 0x4008_0000,
                context: 7
            }
        );
        assert_eq!(
            PsciCall::decode([CPU_ON_64.into(), 1, 0x1_4008_0000, 7]),
            PsciCall::CpuOn {
                target: 1,
                entry: 0x1_4008_0000,
                context: 7
            }
        );
        assert_eq!(
            PsciCall::decode([0x8400_00ff, 0, 0, 0]),
            PsciCall::Unknown(0x8400_00ff)
        );
        assert_eq!(PsciReturn::NotSupported.to_register(), u64::MAX);
        assert_eq!(PsciCall::features(SYSTEM_RESET), PsciReturn::Success);
        assert_eq!(PsciCall::features(0xc400_0012), PsciReturn::NotSupported);
    }
}
