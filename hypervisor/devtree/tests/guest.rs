//! Guest device-tree generation: read back with the `fdt` crate, with our
//! own board parser, compared property by property with the tree QEMU virt
//! gives a guest, and checked by `dtc`.
//!
//! `qemu-virt-guest-gicv{2,3}.dtb` are QEMU 7.2's trees for a guest:
//! `qemu-system-aarch64 -M virt,gic-version=N -cpu cortex-a57 -smp 2 -m 64M
//! -machine dumpdtb=FILE`, compacted with `dtc -I dtb -O dtb`.

use std::io::Write;
use std::process::{Command, Stdio};

use chroma_devtree::*;
use fdt::Fdt;

const QEMU_GUEST_GICV2: &[u8] = include_bytes!("data/qemu-virt-guest-gicv2.dtb");
const QEMU_GUEST_GICV3: &[u8] = include_bytes!("data/qemu-virt-guest-gicv3.dtb");

fn spec(gic: GuestGic) -> GuestDtbSpec<'static> {
    GuestDtbSpec {
        memory_base: 0x4000_0000,
        memory_size: 64 << 20,
        vcpu_count: 2,
        cpu_compatible: "arm,cortex-a57",
        gic,
        bootargs: "console=ttyAMA0 earlycon",
        initrd: Some((0x4400_0000, 0x4412_3456)),
        virtio_mmio_count: 2,
    }
}

fn be32(value: &[u8]) -> u32 {
    u32::from_be_bytes(value.try_into().unwrap())
}

fn cells(value: &[u8]) -> Vec<u32> {
    value.chunks_exact(4).map(be32).collect()
}

#[test]
fn guest_tree_reads_back_with_the_fdt_crate() {
    let blob = build_guest_dtb(&spec(GuestGic::V2)).unwrap();
    let fdt = Fdt::new(&blob).unwrap();
    let root = fdt.find_node("/").unwrap();
    assert_eq!(
        root.property("compatible").unwrap().as_str(),
        Some("linux,dummy-virt")
    );
    assert_eq!(root.property("model").unwrap().as_str(), Some("chroma"));
    assert_eq!(be32(root.property("#address-cells").unwrap().value), 2);
    assert_eq!(be32(root.property("#size-cells").unwrap().value), 2);

    let memory = fdt.find_node("/memory@40000000").unwrap();
    assert_eq!(
        cells(memory.property("reg").unwrap().value),
        [0, 0x4000_0000, 0, 64 << 20]
    );

    let cpus: Vec<_> = fdt.find_node("/cpus").unwrap().children().collect();
    assert_eq!(cpus.len(), 2);
    for (index, cpu) in cpus.iter().enumerate() {
        assert_eq!(cpu.name, format!("cpu@{index}"));
        assert_eq!(
            be32(cpu.property("reg").unwrap().value),
            u32::try_from(index).unwrap()
        );
        assert_eq!(
            cpu.property("enable-method").unwrap().as_str(),
            Some("psci")
        );
        assert_eq!(
            cpu.property("compatible").unwrap().as_str(),
            Some("arm,cortex-a57")
        );
    }

    let gic = fdt.find_node("/intc@8000000").unwrap();
    assert!(gic.property("interrupt-controller").is_some());
    assert_eq!(be32(gic.property("#interrupt-cells").unwrap().value), 3);
    let gic_phandle = be32(gic.property("phandle").unwrap().value);
    assert_eq!(
        be32(root.property("interrupt-parent").unwrap().value),
        gic_phandle
    );
    assert_eq!(
        cells(gic.property("reg").unwrap().value),
        [0, 0x0800_0000, 0, 0x1_0000, 0, 0x0801_0000, 0, 0x1_0000]
    );

    let psci = fdt.find_node("/psci").unwrap();
    assert_eq!(psci.property("method").unwrap().as_str(), Some("hvc"));
    let compatible: Vec<&str> = psci.compatible().unwrap().all().collect();
    assert_eq!(compatible, ["arm,psci-1.0", "arm,psci-0.2", "arm,psci"]);

    let timer = fdt.find_node("/timer").unwrap();
    assert_eq!(
        cells(timer.property("interrupts").unwrap().value),
        [1, 13, 0x304, 1, 14, 0x304, 1, 11, 0x304, 1, 10, 0x304]
    );

    let uart = fdt.find_node("/pl011@9000000").unwrap();
    assert_eq!(cells(uart.property("interrupts").unwrap().value), [0, 1, 4]);
    let clock = fdt.find_node("/apb-pclk").unwrap();
    let clock_phandle = be32(clock.property("phandle").unwrap().value);
    assert_eq!(
        cells(uart.property("clocks").unwrap().value),
        [clock_phandle, clock_phandle]
    );
    assert_eq!(
        be32(clock.property("clock-frequency").unwrap().value),
        24_000_000
    );

    let chosen = fdt.find_node("/chosen").unwrap();
    assert_eq!(
        chosen.property("stdout-path").unwrap().as_str(),
        Some("/pl011@9000000")
    );
    assert_eq!(
        chosen.property("bootargs").unwrap().as_str(),
        Some("console=ttyAMA0 earlycon")
    );
    assert_eq!(
        chosen.property("linux,initrd-start").unwrap().as_usize(),
        Some(0x4400_0000)
    );
    assert_eq!(
        chosen.property("linux,initrd-end").unwrap().as_usize(),
        Some(0x4412_3456)
    );
    let aliases = fdt.find_node("/aliases").unwrap();
    assert_eq!(
        aliases.property("serial0").unwrap().as_str(),
        Some("/pl011@9000000")
    );

    for (index, base) in [(0u32, 0x0A00_0000u32), (1, 0x0A00_0200)] {
        let node = fdt.find_node(&format!("/virtio_mmio@{base:x}")).unwrap();
        assert_eq!(
            node.property("compatible").unwrap().as_str(),
            Some("virtio,mmio")
        );
        assert_eq!(
            cells(node.property("reg").unwrap().value),
            [0, base, 0, 0x200]
        );
        assert_eq!(
            cells(node.property("interrupts").unwrap().value),
            [0, 16 + index, 1]
        );
        assert!(node.property("dma-coherent").is_some());
    }
    assert!(fdt.find_node("/virtio_mmio@a000400").is_none());
}

#[test]
fn guest_tree_reads_back_with_the_board_parser() {
    for gic in [GuestGic::V2, GuestGic::V3] {
        let blob = build_guest_dtb(&GuestDtbSpec {
            vcpu_count: 4,
            virtio_mmio_count: 3,
            ..spec(gic)
        })
        .unwrap();
        let board = parse_board(&blob).unwrap();
        assert_eq!(
            board.memory.as_slice(),
            [MmioRange {
                base: 0x4000_0000,
                size: 64 << 20
            }]
        );
        assert_eq!(
            board.console.mmio,
            MmioRange {
                base: layout::UART_BASE,
                size: layout::UART_SIZE
            }
        );
        assert_eq!(
            board.cpus.iter().map(|cpu| cpu.mpidr).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!(board.psci.unwrap().conduit, PsciConduit::Hvc);
        assert_eq!(board.timer.virt.intid(), Some(27));
        assert_eq!(board.virtio_mmio.len(), 3);
        let mut bases: Vec<u64> = board.virtio_mmio.iter().map(|v| v.mmio.base).collect();
        bases.sort();
        assert_eq!(bases, [0x0A00_0000, 0x0A00_0200, 0x0A00_0400]);
        match (gic, board.gic) {
            (
                GuestGic::V2,
                Gic::V2 {
                    distributor,
                    cpu_interface,
                    hyp_interface: None,
                    ..
                },
            ) => {
                assert_eq!(distributor.base, layout::GICD_BASE);
                assert_eq!(cpu_interface.base, layout::GICC_BASE);
            }
            (
                GuestGic::V3,
                Gic::V3 {
                    distributor,
                    redistributors,
                    ..
                },
            ) => {
                assert_eq!(distributor.base, layout::GICD_BASE);
                assert_eq!(
                    redistributors,
                    MmioRange {
                        base: layout::GICR_BASE,
                        size: 4 * layout::GICR_STRIDE
                    }
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Our nodes carry the same properties, with the same values, as QEMU's
/// (phandle values aside, which only have to agree within one tree).
#[test]
fn guest_tree_matches_qemu_virt() {
    for (gic, qemu_blob) in [
        (GuestGic::V2, QEMU_GUEST_GICV2),
        (GuestGic::V3, QEMU_GUEST_GICV3),
    ] {
        let ours_blob = build_guest_dtb(&GuestDtbSpec {
            bootargs: "",
            initrd: None,
            ..spec(gic)
        })
        .unwrap();
        let ours = Fdt::new(&ours_blob).unwrap();
        let qemu = Fdt::new(qemu_blob).unwrap();
        let phandle_valued = ["phandle", "interrupt-parent", "clocks", "stdout-path"];
        for node in ours.all_nodes() {
            // QEMU 7.2 has no /aliases; the rest must exist there.
            if node.name == "aliases" {
                continue;
            }
            let path = match node.name {
                "/" => "/".to_string(),
                name if ["cpu@0", "cpu@1"].contains(&name) => format!("/cpus/{name}"),
                name => format!("/{name}"),
            };
            let theirs = qemu
                .find_node(&path)
                .unwrap_or_else(|| panic!("QEMU has no {path}"));
            for property in node.properties() {
                if phandle_valued.contains(&property.name) {
                    continue;
                }
                let their_value = theirs
                    .property(property.name)
                    .unwrap_or_else(|| panic!("QEMU's {path} has no {}", property.name))
                    .value;
                if path == "/" && property.name == "model" {
                    continue; // "chroma" instead of "linux,dummy-virt"
                }
                if path.starts_with("/intc") && property.name == "reg" && gic == GuestGic::V3 {
                    // QEMU sizes the redistributor region for its maximum
                    // CPU count; we size it for the VM's vCPUs.
                    assert_eq!(&cells(property.value)[..6], &cells(their_value)[..6]);
                    continue;
                }
                assert_eq!(
                    property.value, their_value,
                    "{gic:?} {path} {}",
                    property.name
                );
            }
        }
    }
}

#[test]
fn guest_tree_without_optional_parts() {
    let blob = build_guest_dtb(&GuestDtbSpec {
        bootargs: "",
        initrd: None,
        virtio_mmio_count: 0,
        vcpu_count: 1,
        ..spec(GuestGic::V3)
    })
    .unwrap();
    let fdt = Fdt::new(&blob).unwrap();
    let chosen = fdt.find_node("/chosen").unwrap();
    assert!(chosen.property("bootargs").is_none());
    assert!(chosen.property("linux,initrd-start").is_none());
    assert!(fdt.find_compatible(&["virtio,mmio"]).is_none());
    assert_eq!(fdt.find_node("/cpus").unwrap().children().count(), 1);
    let timer = fdt.find_node("/timer").unwrap();
    assert_eq!(cells(timer.property("interrupts").unwrap().value)[2], 4);
}

#[test]
fn invalid_specs_are_refused() {
    let refused = |spec: GuestDtbSpec<'_>| {
        matches!(
            build_guest_dtb(&spec),
            Err(DevtreeError::InvalidSpec { .. })
        )
    };
    assert!(refused(GuestDtbSpec {
        vcpu_count: 0,
        ..spec(GuestGic::V2)
    }));
    assert!(refused(GuestDtbSpec {
        vcpu_count: 9,
        ..spec(GuestGic::V2)
    }));
    assert!(refused(GuestDtbSpec {
        virtio_mmio_count: 33,
        ..spec(GuestGic::V2)
    }));
    assert!(refused(GuestDtbSpec {
        memory_size: 0,
        ..spec(GuestGic::V2)
    }));
    assert!(refused(GuestDtbSpec {
        memory_base: u64::MAX,
        ..spec(GuestGic::V2)
    }));
    assert!(refused(GuestDtbSpec {
        initrd: Some((2, 1)),
        ..spec(GuestGic::V2)
    }));
    assert!(refused(GuestDtbSpec {
        bootargs: "a\0b",
        ..spec(GuestGic::V2)
    }));
    // Negative control: the limits themselves are fine.
    assert!(build_guest_dtb(&GuestDtbSpec {
        vcpu_count: 8,
        virtio_mmio_count: 32,
        ..spec(GuestGic::V3)
    })
    .is_ok());
}

/// `dtc` (installed with device-tree-compiler) decompiles the tree without
/// errors. Skipped, loudly, where dtc is not installed.
#[test]
fn dtc_accepts_the_guest_tree() {
    if Command::new("dtc").arg("--version").output().is_err() {
        eprintln!("dtc not installed: skipping the dtc check");
        return;
    }
    for gic in [GuestGic::V2, GuestGic::V3] {
        let blob = build_guest_dtb(&spec(gic)).unwrap();
        let mut child = Command::new("dtc")
            .args(["-I", "dtb", "-O", "dts", "-o", "-", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&blob).unwrap();
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "dtc failed: {stderr}");
        assert!(!stderr.contains("ERROR"), "{stderr}");
        let dts = String::from_utf8(output.stdout).unwrap();
        assert!(
            dts.contains("bootargs = \"console=ttyAMA0 earlycon\";"),
            "{dts}"
        );
        assert!(dts.contains("compatible = \"virtio,mmio\";"), "{dts}");
        // A malformed blob is refused: the check can fail.
        let mut child = Command::new("dtc")
            .args(["-I", "dtb", "-O", "dts", "-o", "/dev/null", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&blob[..blob.len() / 2])
            .unwrap();
        assert!(!child.wait().unwrap().success());
    }
}
