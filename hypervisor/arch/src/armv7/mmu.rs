//! Turning the HYP MMU on: the early identity map, the final W^X map (and
//! its publication to the secondaries), and a check of W^X by the MMU's own
//! translation.

use super::{boot, hyp, sysreg};

/// Turns the HYP MMU on with the early root at `root` (WXN off: the early
/// map has writable and executable blocks).
///
/// # Safety
/// Called once, by the boot CPU with its MMU off; the root maps the image
/// (code, stack, .bss), the DTB and the UART at their own addresses.
pub unsafe fn enable_early(root: u64) {
    // The walker reads the root with cacheable attributes: no stale line
    // from before may shadow what was written with the cache off.
    sysreg::clean_invalidate_dcache(usize::try_from(root).unwrap_or(0), 32);
    // SAFETY: the caller's contract: the root maps what runs, in place, and only this CPU runs.
    unsafe {
        sysreg::load_translation(
            (hyp::hmair0(), hyp::hmair1()),
            hyp::htcr(sysreg::htcr()),
            root,
        );
        sysreg::write_hsctlr(hyp::hsctlr(sysreg::hsctlr(), false));
    }
}

/// Switches to the final tables at `root` (WXN on) and publishes the
/// regime for the secondaries.
///
/// # Safety
/// The tables map the image, stacks, heap, frames and the console at their
/// own addresses with W^X; only the boot CPU runs.
pub unsafe fn enable_final(root: u64) {
    // SAFETY: the caller's contract; WXN goes on with tables that have no writable text.
    unsafe {
        sysreg::load_translation(
            (hyp::hmair0(), hyp::hmair1()),
            hyp::htcr(sysreg::htcr()),
            root,
        );
        sysreg::write_hsctlr(hyp::hsctlr(sysreg::hsctlr(), true));
    }
    // HSCTLR.WXN may be cached in TLB entries.
    sysreg::invalidate_hyp_tlb();
    let [l0, l1, l2, l3, h0, h1, h2, h3] = root.to_le_bytes();
    // SAFETY: only the boot CPU runs, and the regime is the one just loaded, which maps the image, the stacks and data in place.
    unsafe {
        boot::publish_mmu_config(boot::HypMmuConfig {
            hmair0: hyp::hmair0(),
            hmair1: hyp::hmair1(),
            htcr: sysreg::htcr(),
            httbr_low: u32::from_le_bytes([l0, l1, l2, l3]),
            httbr_high: u32::from_le_bytes([h0, h1, h2, h3]),
            hsctlr: sysreg::hsctlr(),
        })
    };
}

/// Asks the MMU (ATS1HR/ATS1HW) whether `text` and `rodata` are readable
/// but not writable and `data` is both: `Err(section)` names the first that
/// is not, so the boot log reports what the hardware enforces.
pub fn check_write_xor_execute(text: u32, rodata: u32, data: u32) -> Result<(), &'static str> {
    let expectations = [
        ("text", text, true, false),
        ("rodata", rodata, true, false),
        ("data", data, true, true),
    ];
    for (what, address, readable, writable) in expectations {
        if sysreg::hyp_translate(address, false).is_some() != readable
            || sysreg::hyp_translate(address, true).is_some() != writable
        {
            return Err(what);
        }
    }
    Ok(())
}
