//! The back-end this build runs on, behind one set of names: the AArch64
//! EL2 back-end (`chroma_arch::aarch64`) or the ARMv7-A HYP-mode back-end
//! (`chroma_arch::armv7`). Both offer the same modules (`cpu`, `gic`, `irq`,
//! `vcpu`) with the same functions, so the scheduler, the VMs, the exits
//! and the NICs are written once; what differs in shape (the stage-2
//! control value, the per-CPU trap controls, the cache operations, the
//! IPA size) is a function here.

#[cfg(target_arch = "aarch64")]
pub use chroma_arch::aarch64::{boot::MAX_CPUS, cpu, gic, irq, vcpu, vectors::ExceptionKind};
#[cfg(target_arch = "arm")]
pub use chroma_arch::armv7::{boot::MAX_CPUS, cpu, gic, irq, vcpu, vectors::ExceptionKind};

/// Cache maintenance by VA to the point of coherency on this back-end.
#[cfg(target_arch = "aarch64")]
pub type CacheOps = chroma_cache::arch::aarch64::Aarch64CacheOps;
/// Cache maintenance by VA to the point of coherency on this back-end
/// (DCCMVAC, DCCIMVAC, DCIMVAC, ICIALLU).
#[cfg(target_arch = "arm")]
pub type CacheOps = chroma_cache::arch::armv7::Armv7CacheOps;

/// This CPU's cache geometry, from its ID registers (CTR, CLIDR, CCSIDR).
pub fn cache_geometry() -> Result<chroma_cache::CacheGeometry, chroma_cache::CacheError> {
    #[cfg(target_arch = "aarch64")]
    return chroma_cache::arch::aarch64::read_geometry(chroma_core::pagetable::PAGE_SIZE);
    #[cfg(target_arch = "arm")]
    return chroma_cache::arch::armv7::read_geometry(chroma_core::pagetable::PAGE_SIZE);
}

/// Cleans and invalidates every line of one data or unified cache of this
/// CPU by set/way (`level` 1 for L1; the geometry CCSIDR reports); returns
/// the number of lines. No barrier follows: the caller issues one.
pub fn clean_invalidate_whole_cache(level: u8, line_size: u32, ways: u32, sets: u32) -> u64 {
    #[cfg(target_arch = "aarch64")]
    return chroma_arch::aarch64::cache::clean_invalidate_whole_cache(level, line_size, ways, sets);
    #[cfg(target_arch = "arm")]
    return chroma_arch::armv7::cpu::clean_invalidate_whole_cache(level, line_size, ways, sets);
}

/// Bits of guest physical (intermediate physical) address every VM gets:
/// the CPU's PA size up to 48 on AArch64; 40 with LPAE on ARMv7.
pub fn ipa_bits() -> u8 {
    #[cfg(target_arch = "aarch64")]
    return chroma_arch::aarch64::el2::this_cpu_pa_bits().min(48);
    #[cfg(target_arch = "arm")]
    return 40;
}

/// The stage-2 control value (VTCR_EL2 / VTCR) for tables of `ipa_bits`
/// that start at `start_level`.
pub fn vtcr(ipa_bits: u8, start_level: u8) -> u64 {
    #[cfg(target_arch = "aarch64")]
    return chroma_arch::aarch64::el2::vtcr_el2(ipa_bits, start_level, crate::mm::pa_range_field());
    #[cfg(target_arch = "arm")]
    return u64::from(chroma_arch::armv7::hyp::vtcr(ipa_bits, start_level));
}

/// Writes the trap and timer controls every vCPU on this CPU runs with.
///
/// # Safety
/// No guest runs on this CPU yet, and `vtcr` is [`vtcr`] of the geometry
/// every VM's stage-2 tables were built for.
pub unsafe fn init_controls(vtcr: u64) {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: the caller's contract is the back-end's.
    unsafe {
        chroma_arch::aarch64::el2::init_el2_controls(vtcr)
    };
    #[cfg(target_arch = "arm")]
    // SAFETY: as above; VTCR is a 32-bit register on ARMv7 (`vtcr` built it).
    unsafe {
        chroma_arch::armv7::vcpu::init_controls((vtcr & 0xffff_ffff) as u32)
    };
}

/// Whether this back-end runs VMs whose kernel is AArch64 (else only AArch32).
pub const RUNS_AARCH64_GUESTS: bool = cfg!(target_arch = "aarch64");
