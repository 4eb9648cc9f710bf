//! What the CPU implements that the vCPU switch depends on, decided from
//! its ID registers: today, pointer authentication (whose keys are then
//! saved and restored with each vCPU).
//!
//! The decision is pure (host-tested); on AArch64 it is taken once, from
//! the first CPU that asks, and every CPU checks at start
//! (`record_this_cpu`, on AArch64) that it agrees: reading the key registers on a CPU
//! without them would be UNDEFINED at EL2, and not switching them on one
//! with them would let VMs read and replace each other's keys.

use aarch64_cpu::registers::ID_AA64ISAR1_EL1;
use tock_registers::register_bitfields;

register_bitfields! {u64,
    /// ID_AA64ISAR2_EL1, the pointer-authentication fields (aarch64-cpu 10
    /// does not have the register). Unallocated ID registers read as zero
    /// on CPUs older than the register, so reading it is always safe.
    ID_AA64ISAR2_EL1 [
        /// Address authentication with the QARMA3 algorithm (FEAT_PACQARMA3).
        APA3 OFFSET(12) NUMBITS(4) [],
        /// Generic authentication with the QARMA3 algorithm.
        GPA3 OFFSET(8) NUMBITS(4) []
    ]
}

/// Whether a CPU with these ID registers implements pointer authentication
/// (FEAT_PAuth), and so the APIA, APIB, APDA, APDB and APGA key registers.
///
/// Any of the algorithm fields counts: address authentication with QARMA5
/// (APA), an IMPLEMENTATION DEFINED algorithm (API) or QARMA3 (APA3), and
/// generic authentication with any of them (GPA, GPI, GPA3). Each of those
/// features implies FEAT_PAuth, which brings all five key pairs.
pub fn pointer_authentication(id_aa64isar1: u64, id_aa64isar2: u64) -> bool {
    [
        ID_AA64ISAR1_EL1::APA.read(id_aa64isar1),
        ID_AA64ISAR1_EL1::API.read(id_aa64isar1),
        ID_AA64ISAR1_EL1::GPA.read(id_aa64isar1),
        ID_AA64ISAR1_EL1::GPI.read(id_aa64isar1),
        ID_AA64ISAR2_EL1::APA3.read(id_aa64isar2),
        ID_AA64ISAR2_EL1::GPA3.read(id_aa64isar2),
    ]
    .iter()
    .any(|&field| field != 0)
}

#[cfg(target_arch = "aarch64")]
mod detected {
    use core::sync::atomic::{AtomicU8, Ordering};

    /// Not decided yet.
    const UNKNOWN: u8 = 0;
    /// The CPUs have no pointer authentication.
    const ABSENT: u8 = 1;
    /// The CPUs have pointer authentication.
    const PRESENT: u8 = 2;

    /// The decision, taken by the first CPU that asks.
    static POINTER_AUTHENTICATION: AtomicU8 = AtomicU8::new(UNKNOWN);

    /// Whether this CPU implements pointer authentication, from its ID registers.
    fn this_cpu() -> u8 {
        use super::super::sysreg;
        if super::pointer_authentication(sysreg::id_aa64isar1_el1(), sysreg::id_aa64isar2_el1()) {
            PRESENT
        } else {
            ABSENT
        }
    }

    /// Records whether this CPU implements pointer authentication (the
    /// first CPU decides), and stops if it disagrees with the CPUs before it.
    ///
    /// # Panics
    /// On a system whose CPUs differ: the keys could not be switched with
    /// the vCPUs on every CPU, and chroma cannot keep VMs apart there.
    pub fn record_this_cpu() {
        let this = this_cpu();
        if let Err(recorded) = POINTER_AUTHENTICATION.compare_exchange(
            UNKNOWN,
            this,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            assert_eq!(
                recorded, this,
                "CPUs disagree on pointer authentication: its keys cannot be switched per vCPU"
            );
        }
    }

    /// Whether the CPUs implement pointer authentication, so that the vCPU
    /// switch saves and restores its keys.
    pub fn pointer_authentication_keys() -> bool {
        if POINTER_AUTHENTICATION.load(Ordering::Relaxed) == UNKNOWN {
            record_this_cpu();
        }
        POINTER_AUTHENTICATION.load(Ordering::Relaxed) == PRESENT
    }
}

#[cfg(target_arch = "aarch64")]
pub use detected::{pointer_authentication_keys, record_this_cpu};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_algorithm_field_means_the_keys_exist() {
        // QEMU's Cortex-A57 (Armv8.0): ID_AA64ISAR1_EL1 and ISAR2 are zero.
        assert!(!pointer_authentication(0, 0));
        // APA (bits 7:4), API (11:8), GPA (27:24), GPI (31:28) of ISAR1;
        // APA3 (15:12), GPA3 (11:8) of ISAR2.
        for shift in [4, 8, 24, 28] {
            assert!(pointer_authentication(1 << shift, 0), "ISAR1 bit {shift}");
        }
        for shift in [12, 8] {
            assert!(pointer_authentication(0, 1 << shift), "ISAR2 bit {shift}");
        }
        // QEMU's "max" CPU: APA = 5 (FEAT_PAuth2 with QARMA5), GPA = 1.
        assert!(pointer_authentication(0x0000_0000_0110_0050 | 1 << 24, 0));
    }

    #[test]
    fn other_isar_fields_do_not_count() {
        // Negative controls: DPB (3:0), JSCVT (15:12), FCMA (19:16),
        // LRCPC (23:20), FRINTTS (35:32), SB (39:36) of ISAR1, and WFxT
        // (3:0), RPRES (7:4) of ISAR2 are set; no authentication field is.
        let isar1 = 0xf | 0xf << 12 | 0xf << 16 | 0xf << 20 | 0xf << 32 | 0xf << 36;
        let isar2 = 0xf | 0xf << 4;
        assert!(!pointer_authentication(isar1, isar2));
    }
}
