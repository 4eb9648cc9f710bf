//! What is particular to the ARMv7 board's configurations: a VM there is
//! AArch32 without saying so (`bad_config.rs` shows an AArch64 one refused
//! before QEMU starts, with its control).

use chroma_systest::{boot, config_toml, guest_image_arm, Board, Vm};

/// Without `arch`, a zImage is what a VM on qemu-virt-arm takes: the
/// 32-bit probe runs.
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
