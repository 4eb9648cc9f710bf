//! Broken configurations are refused before QEMU starts, naming the key.

use chroma_systest::{boot, config_toml, guest_image, Board, Vm};

/// A correct two-VM configuration, the starting point of every broken one.
fn good_config() -> String {
    config_toml(&[Vm::new("one", "probe").vcpus(2), Vm::new("two", "probe")])
}

/// Boots `config` and checks it was refused with a message containing each of `needles`.
fn assert_refused(test_name: &str, config: &str, needles: &[&str]) {
    let run = boot(
        test_name,
        config,
        Board {
            name: "qemu-virt-aarch64",
            gic: 2,
            smp: 2,
            timeout_seconds: 10,
        },
    );
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
