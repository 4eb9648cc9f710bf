//! What is particular to the ARMv7 board's configurations: a VM there is
//! AArch32 without saying so, and an AArch64 VM is refused before QEMU
//! starts (an ARMv7 hypervisor has no AArch64 state to run it in).
//!
//! The control is the same refused VM on qemu-virt-aarch64, which takes it.

use chroma_systest::{boot, config_toml, guest_image, guest_image_arm, Board, Vm};

/// A 64-bit probe with `arch = "aarch64"` said explicitly.
fn aarch64_probe_config() -> String {
    config_toml(&[Vm::new("probe64", "probe")]).replace(
        "name = \"probe64\"\n",
        "name = \"probe64\"\narch = \"aarch64\"\n",
    )
}

#[test]
fn armv7_an_aarch64_vm_is_refused_before_qemu_starts() {
    let run = boot(
        "armv7_aarch64_vm_refused",
        &aarch64_probe_config(),
        Board {
            timeout_seconds: 10,
            ..Board::arm(2)
        },
    );
    assert!(
        matches!(run.status, Some(code) if code != 0),
        "status {:?}",
        run.status
    );
    run.assert_qemu_not_started();
    assert!(
        run.stderr
            .contains("vm[0] (\"probe64\").arch: an AArch64 VM on an ARMv7 board"),
        "{}",
        run.stderr
    );
}

#[test]
fn armv7_control_the_aarch64_vm_runs_on_the_aarch64_board() {
    let run = boot(
        "armv7_aarch64_vm_control",
        &aarch64_probe_config(),
        Board {
            timeout_seconds: 60,
            ..Board::new(2, 2)
        },
    );
    run.assert_all_stopped(1, 0);
    assert!(
        run.stdout.contains("[probe64] probe: done"),
        "{}",
        run.stdout
    );
    assert!(guest_image("probe").exists());
}

/// Without `arch`, a zImage is what a VM on qemu-virt-arm takes: the
/// 32-bit probe runs, and its arm64 twin would have been refused above.
#[test]
fn armv7_a_vm_without_arch_is_aarch32() {
    let probe = Vm {
        kernel: guest_image_arm("probe"),
        ..Vm::new("probe", "probe")
    };
    let config = config_toml(&[probe]);
    assert!(!config.contains("arch ="), "{config}");
    let run = boot(
        "armv7_vm_without_arch",
        &config,
        Board {
            timeout_seconds: 60,
            ..Board::arm(2)
        },
    );
    run.assert_all_stopped(1, 0);
    assert!(
        run.stdout.contains("[probe] probe: info arch arm"),
        "{}",
        run.stdout
    );
}
