//! The QEMU version gate a test that needs a newer QEMU (e.g. QEMU 10's
//! `raspi4b` machine) uses to skip on Debian 12's QEMU 7.2, saying why.

use chroma_systest::qemu_at_least;

#[test]
fn the_qemu_version_gate_passes_an_old_enough_need_and_refuses_a_newer_one() {
    // Any QEMU that runs is at least 2.0 (the first with `virt` on AArch64).
    assert!(qemu_at_least(2, 0, "the virt machine"));
    // Negative control: no QEMU is 999.0 yet; the gate says no (and why).
    assert!(!qemu_at_least(999, 0, "a board from the future"));
}
