//! Broken configurations are refused before QEMU starts, naming the key
//! (on every board: the `armv7_` tests use qemu-virt-arm, the `rpi4_` ones
//! rpi4, whose refusals need neither its hypervisor build nor QEMU 10).

use chroma_systest::{boot, config_toml, guest_image, Board, Vm};

/// A correct two-VM configuration, the starting point of every broken one.
fn good_config() -> String {
    config_toml(&[Vm::new("one", "probe").vcpus(2), Vm::new("two", "probe")])
}

/// Boots `config` and checks it was refused with a message containing each of `needles`.
fn assert_refused(test_name: &str, config: &str, needles: &[&str]) {
    assert_refused_on(
        test_name,
        config,
        Board {
            name: "qemu-virt-aarch64",
            gic: 2,
            smp: 2,
            timeout_seconds: 10,
        },
        needles,
    );
}

/// [`assert_refused`] on `board`.
fn assert_refused_on(test_name: &str, config: &str, board: Board, needles: &[&str]) {
    let run = boot(test_name, config, board);
    assert!(
        matches!(run.status, Some(code) if code != 0),
        "status {:?}",
        run.status
    );
    run.assert_qemu_not_started();
    for needle in needles {
        assert!(
            run.stderr.contains(needle),
            "the error does not mention {needle:?}:\n{}",
            run.stderr
        );
    }
    assert!(
        run.stderr.contains(&format!("{test_name}.toml")),
        "the error does not name the file:\n{}",
        run.stderr
    );
}

/// The control: the same configuration, unbroken, gets as far as QEMU.
#[test]
fn a_good_config_reaches_qemu() {
    let run = boot(
        "good_config",
        &good_config(),
        Board {
            name: "qemu-virt-aarch64",
            gic: 2,
            smp: 2,
            timeout_seconds: 5,
        },
    );
    assert!(
        run.stderr
            .contains("qemu-system-aarch64 -M virt,virtualization=on,gic-version=2"),
        "QEMU was not started for a good config:\n{}",
        run.stderr
    );
}

#[test]
fn unknown_key_is_refused() {
    let config = good_config().replace("vcpus = 2\n", "vcpus = 2\ncolour = \"red\"\n");
    assert_refused("unknown_key", &config, &["colour"]);
}

#[test]
fn bad_size_is_refused() {
    let config = good_config().replacen("memory = \"64M\"", "memory = \"64Q\"", 1);
    assert_refused("bad_size", &config, &["memory", "64Q"]);
}

#[test]
fn too_many_vcpus_are_refused() {
    let config = config_toml(&[Vm::new("one", "probe").vcpus(3)]);
    assert_refused("too_many_vcpus", &config, &["vcpus"]);
}

#[test]
fn missing_image_is_refused() {
    let missing = guest_image("no-such-guest");
    let config = good_config().replacen(
        &guest_image("probe").display().to_string(),
        &missing.display().to_string(),
        1,
    );
    assert_refused("missing_image", &config, &["kernel", "no-such-guest"]);
}

#[test]
fn duplicate_names_are_refused() {
    let config = good_config().replace("name = \"two\"", "name = \"one\"");
    assert_refused("duplicate_names", &config, &["name", "\"one\""]);
}

/// The 32-bit probe in a VM without `arch` on the ARMv7 board.
fn armv7_config() -> String {
    config_toml(&[Vm::arm("one", "probe")])
}

/// The ARMv7 board with a short timeout.
fn arm_board() -> Board {
    Board {
        timeout_seconds: 10,
        ..Board::arm(2)
    }
}

/// The control of the next two: the unbroken ARMv7 configuration gets as
/// far as QEMU (qemu-system-arm).
#[test]
fn armv7_a_good_config_reaches_qemu() {
    let run = boot("armv7_good_config", &armv7_config(), arm_board());
    assert!(
        run.stderr
            .contains("qemu-system-arm -M virt,virtualization=on,gic-version=2"),
        "QEMU was not started for a good config:\n{}",
        run.stderr
    );
}

/// `arch = "aarch64"` on qemu-virt-arm: its hypervisor runs AArch32 guests
/// only, which the configuration check says before QEMU starts.
#[test]
fn armv7_an_aarch64_vm_is_refused() {
    let config = armv7_config().replace("cmdline = \"\"\n", "cmdline = \"\"\narch = \"aarch64\"\n");
    assert!(config.contains("arch = \"aarch64\""), "{config}");
    assert_refused_on(
        "armv7_aarch64_vm",
        &config,
        arm_board(),
        &["an AArch64 VM on an ARMv7 board"],
    );
}

/// Too many vCPUs for the ARMv7 board's CPUs are refused as on the other
/// board.
#[test]
fn armv7_too_many_vcpus_are_refused() {
    let config = config_toml(&[Vm::arm("one", "probe").vcpus(3)]);
    assert_refused_on("armv7_too_many_vcpus", &config, arm_board(), &["vcpus"]);
}

/// The Raspberry Pi 4 (QEMU's raspi4b) with a short timeout.
fn rpi4_board() -> Board {
    Board {
        timeout_seconds: 10,
        ..Board::rpi4()
    }
}

/// rpi4 has no NIC: a switch with an uplink is refused before QEMU starts
/// (and before anything is built or QEMU's version is asked).
#[test]
fn rpi4_an_uplink_is_refused() {
    let config = format!(
        "[[switch]]\nname = \"lan0\"\nuplink = true\n\n{}",
        good_config()
    );
    assert_refused_on(
        "rpi4_uplink",
        &config,
        rpi4_board(),
        &["uplink = true", "board rpi4 has no NIC"],
    );
}

/// rpi4's 4 CPUs bound a VM's vCPUs as `--smp` does on the virt boards.
#[test]
fn rpi4_too_many_vcpus_are_refused() {
    let config = config_toml(&[Vm::new("one", "probe").vcpus(5)]);
    assert_refused_on("rpi4_too_many_vcpus", &config, rpi4_board(), &["vcpus"]);
}
