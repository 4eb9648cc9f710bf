//! Board device-tree parsing against real QEMU trees, a Raspberry Pi 4-shaped
//! tree, hand-built trees missing each required node, and malformed blobs.
//!
//! The `qemu-virt-*.dtb` files were dumped by QEMU 7.2 with
//! `qemu-system-aarch64 -M virt,virtualization=on,gic-version=N -cpu cortex-a57
//! -smp S -m M -machine dumpdtb=FILE` and compacted with `dtc -I dtb -O dtb`.

use chroma_devtree::*;
use proptest::prelude::*;
use vm_fdt::FdtWriter;

const GICV2: &[u8] = include_bytes!("data/qemu-virt-gicv2.dtb");
const GICV3: &[u8] = include_bytes!("data/qemu-virt-gicv3.dtb");
const GICV3_SMP4: &[u8] = include_bytes!("data/qemu-virt-gicv3-smp4-2g.dtb");
const BCM2711: &[u8] = include_bytes!("data/bcm2711-like.dtb");

fn range(base: u64, size: u64) -> MmioRange {
    MmioRange { base, size }
}

fn ppi(number: u32, flags: u32) -> Interrupt {
    Interrupt {
        kind: InterruptKind::Ppi,
        number,
        flags,
    }
}

fn spi(number: u32, flags: u32) -> Interrupt {
    Interrupt {
        kind: InterruptKind::Spi,
        number,
        flags,
    }
}

#[test]
fn qemu_virt_gicv2() {
    let board = parse_board(GICV2).unwrap();
    assert_eq!(board.memory.as_slice(), [range(0x4000_0000, 1 << 30)]);
    assert_eq!(
        board.console,
        Uart {
            kind: UartKind::Pl011,
            mmio: range(0x0900_0000, 0x1000),
            interrupt: Some(spi(1, 4))
        }
    );
    assert_eq!(board.console.interrupt.unwrap().intid(), Some(33));
    assert_eq!(board.mini_uart, None);
    assert_eq!(
        board.gic,
        Gic::V2 {
            distributor: range(0x0800_0000, 0x1_0000),
            cpu_interface: range(0x0801_0000, 0x1_0000),
            hyp_interface: Some(range(0x0803_0000, 0x1_0000)),
            virtual_cpu_interface: Some(range(0x0804_0000, 0x1_0000)),
            maintenance: Some(ppi(9, 4)),
        }
    );
    assert_eq!(
        board.timer,
        Timer {
            secure_phys: ppi(13, 0x304),
            nonsecure_phys: ppi(14, 0x304),
            virt: ppi(11, 0x304),
            hyp: ppi(10, 0x304)
        }
    );
    assert_eq!(board.timer.virt.intid(), Some(27));
    assert_eq!(board.timer.hyp.intid(), Some(26));
    assert_eq!(
        board.cpus.as_slice(),
        [
            Cpu {
                mpidr: 0,
                enable_method: EnableMethod::Psci
            },
            Cpu {
                mpidr: 1,
                enable_method: EnableMethod::Psci
            }
        ]
    );
    // virtualization=on: QEMU's PSCI is firmware at EL3, reached with SMC.
    assert_eq!(
        board.psci,
        Some(Psci {
            conduit: PsciConduit::Smc,
            cpu_on: 0xC400_0003,
            v0_2_or_later: true
        })
    );
    // QEMU lists its 32 transports lowest address first (and plugs the
    // first -device into the highest, 0x0a003e00).
    assert_eq!(board.virtio_mmio.len(), 32);
    assert_eq!(
        board.virtio_mmio[0],
        VirtioMmio {
            mmio: range(0x0A00_0000, 0x200),
            interrupt: spi(16, 1),
            dma_coherent: true
        }
    );
    assert_eq!(board.virtio_mmio[31].mmio.base, 0x0A00_3E00);
    assert_eq!(board.virtio_mmio[31].interrupt.intid(), Some(32 + 47));
}

#[test]
fn qemu_virt_gicv3() {
    let board = parse_board(GICV3).unwrap();
    assert_eq!(
        board.gic,
        Gic::V3 {
            distributor: range(0x0800_0000, 0x1_0000),
            redistributors: range(0x080A_0000, 0xF6_0000),
            redistributor_regions: 1,
            maintenance: Some(ppi(9, 4)),
        }
    );
    // GICv3 PPIs carry no CPU mask.
    assert_eq!(board.timer.nonsecure_phys, ppi(14, 4));
    assert_eq!(board.cpus.len(), 2);
    assert_eq!(board.console.mmio, range(0x0900_0000, 0x1000));
}

#[test]
fn qemu_virt_gicv3_four_cpus_two_gib() {
    let board = parse_board(GICV3_SMP4).unwrap();
    assert_eq!(board.memory.as_slice(), [range(0x4000_0000, 2 << 30)]);
    let mpidrs: Vec<u64> = board.cpus.iter().map(|cpu| cpu.mpidr).collect();
    assert_eq!(mpidrs, [0, 1, 2, 3]);
}

#[test]
fn raspberry_pi_4_shaped_tree() {
    let board = parse_board(BCM2711).unwrap();
    assert_eq!(
        board.memory.as_slice(),
        [range(0, 0x3B40_0000), range(0x4000_0000, 0x3C00_0000)]
    );
    // stdout-path = "serial0:115200n8" -> /soc/serial@7e215040, the mini-UART,
    // whose bus address 0x7e215040 the /soc ranges put at 0xfe215040.
    let mini = Uart {
        kind: UartKind::Bcm2835Aux,
        mmio: range(0xFE21_5040, 0x40),
        interrupt: Some(spi(93, 4)),
    };
    assert_eq!(board.console, mini);
    assert_eq!(board.mini_uart, Some(mini));
    assert_eq!(
        board.gic,
        Gic::V2 {
            distributor: range(0xFF84_1000, 0x1000),
            cpu_interface: range(0xFF84_2000, 0x2000),
            hyp_interface: Some(range(0xFF84_4000, 0x2000)),
            virtual_cpu_interface: Some(range(0xFF84_6000, 0x2000)),
            maintenance: Some(ppi(9, 0xF04)),
        }
    );
    assert_eq!(board.timer.hyp, ppi(10, 0xF08));
    let release: Vec<EnableMethod> = board.cpus.iter().map(|cpu| cpu.enable_method).collect();
    assert_eq!(
        release,
        [0xD8, 0xE0, 0xE8, 0xF0].map(|release_address| EnableMethod::SpinTable { release_address })
    );
    assert_eq!(board.psci, None);
    assert!(board.virtio_mmio.is_empty());
}

/// What a hand-built board tree leaves out.
#[derive(Default, Clone, Copy)]
struct Omit {
    memory: bool,
    cpus: bool,
    gic: bool,
    timer: bool,
    uart: bool,
    psci_method: bool,
    /// Not an omission: adds a Raspberry Pi 3's two interrupt controllers.
    add_bcm2836_controllers: bool,
}

/// A minimal QEMU-virt-like board tree, written with vm-fdt.
fn board_tree(omit: Omit) -> Vec<u8> {
    let mut fdt = FdtWriter::new().unwrap();
    let root = fdt.begin_node("").unwrap();
    fdt.property_u32("#address-cells", 2).unwrap();
    fdt.property_u32("#size-cells", 2).unwrap();
    if !omit.memory {
        let node = fdt.begin_node("memory@40000000").unwrap();
        fdt.property_string("device_type", "memory").unwrap();
        fdt.property_array_u64("reg", &[0x4000_0000, 0x800_0000])
            .unwrap();
        fdt.end_node(node).unwrap();
    }
    if !omit.cpus {
        let cpus = fdt.begin_node("cpus").unwrap();
        fdt.property_u32("#address-cells", 1).unwrap();
        fdt.property_u32("#size-cells", 0).unwrap();
        let cpu = fdt.begin_node("cpu@0").unwrap();
        fdt.property_string("device_type", "cpu").unwrap();
        fdt.property_u32("reg", 0).unwrap();
        fdt.property_string("enable-method", "psci").unwrap();
        fdt.end_node(cpu).unwrap();
        fdt.end_node(cpus).unwrap();
    }
    if omit.add_bcm2836_controllers {
        // A Raspberry Pi 3's controllers: the BCM2836 per-core one and the
        // ARM control block's, no GIC.
        let armctrl = fdt.begin_node("interrupt-controller@3f00b200").unwrap();
        fdt.property_string("compatible", "brcm,bcm2836-armctrl-ic")
            .unwrap();
        fdt.property_null("interrupt-controller").unwrap();
        fdt.property_array_u64("reg", &[0x3f00_b200, 0x200])
            .unwrap();
        fdt.end_node(armctrl).unwrap();
        let local = fdt.begin_node("local_intc@40000000").unwrap();
        fdt.property_string("compatible", "brcm,bcm2836-l1-intc")
            .unwrap();
        fdt.property_null("interrupt-controller").unwrap();
        fdt.property_array_u64("reg", &[0x4000_0000, 0x100])
            .unwrap();
        fdt.property_u32("#interrupt-cells", 2).unwrap();
        fdt.property_phandle(0x18).unwrap();
        fdt.end_node(local).unwrap();
    }
    if !omit.gic {
        let gic = fdt.begin_node("intc@8000000").unwrap();
        fdt.property_string("compatible", "arm,gic-400").unwrap();
        fdt.property_u32("#interrupt-cells", 3).unwrap();
        fdt.property_array_u64("reg", &[0x800_0000, 0x1_0000, 0x801_0000, 0x1_0000])
            .unwrap();
        fdt.end_node(gic).unwrap();
    }
    if !omit.timer {
        let timer = fdt.begin_node("timer").unwrap();
        fdt.property_string("compatible", "arm,armv8-timer")
            .unwrap();
        if omit.add_bcm2836_controllers && omit.gic {
            // The Raspberry Pi 3's: the local controller's timer sources
            // (secure, non-secure, virtual, hypervisor), two cells each.
            fdt.property_u32("interrupt-parent", 0x18).unwrap();
            fdt.property_array_u32("interrupts", &[0, 4, 1, 4, 3, 4, 2, 4])
                .unwrap();
        } else {
            fdt.property_array_u32("interrupts", &[1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4])
                .unwrap();
        }
        fdt.end_node(timer).unwrap();
    }
    if !omit.uart {
        let uart = fdt.begin_node("pl011@9000000").unwrap();
        fdt.property_string("compatible", "arm,pl011").unwrap();
        fdt.property_array_u64("reg", &[0x900_0000, 0x1000])
            .unwrap();
        fdt.end_node(uart).unwrap();
    }
    let psci = fdt.begin_node("psci").unwrap();
    fdt.property_string("compatible", "arm,psci-0.2").unwrap();
    if !omit.psci_method {
        fdt.property_string("method", "hvc").unwrap();
    }
    fdt.end_node(psci).unwrap();
    fdt.end_node(root).unwrap();
    fdt.finish().unwrap()
}

#[test]
fn minimal_board_tree_parses() {
    // Negative control for the missing-node tests below.
    let board = parse_board(&board_tree(Omit::default())).unwrap();
    assert_eq!(board.memory.as_slice(), [range(0x4000_0000, 0x800_0000)]);
    assert_eq!(board.console.interrupt, None);
    assert_eq!(
        board.psci,
        Some(Psci {
            conduit: PsciConduit::Hvc,
            cpu_on: PSCI_CPU_ON_64,
            v0_2_or_later: true
        })
    );
    assert!(matches!(
        board.gic,
        Gic::V2 {
            hyp_interface: None,
            maintenance: None,
            ..
        }
    ));
}

#[test]
fn missing_required_nodes_are_reported() {
    let missing = |omit: Omit| match parse_board(&board_tree(omit)) {
        Err(DevtreeError::MissingNode { what }) => what,
        other => panic!("{other:?}"),
    };
    assert!(missing(Omit {
        memory: true,
        ..Omit::default()
    })
    .contains("memory"));
    assert!(missing(Omit {
        cpus: true,
        ..Omit::default()
    })
    .contains("cpu"));
    assert!(missing(Omit {
        gic: true,
        ..Omit::default()
    })
    .contains("interrupt controller"));
    assert!(missing(Omit {
        timer: true,
        ..Omit::default()
    })
    .contains("timer"));
    assert!(missing(Omit {
        uart: true,
        ..Omit::default()
    })
    .contains("UART"));
    let error = parse_board(&board_tree(Omit {
        psci_method: true,
        ..Omit::default()
    }))
    .unwrap_err();
    assert_eq!(
        error,
        DevtreeError::BadProperty {
            node: "PSCI",
            property: "method"
        }
    );
    assert!(error.to_string().contains("method"));
}

#[test]
fn a_board_without_a_gic_says_which_controller_it_has() {
    let board = parse_board(&board_tree(Omit {
        gic: true,
        add_bcm2836_controllers: true,
        ..Omit::default()
    }))
    .unwrap();
    assert_eq!(
        board.gic,
        Gic::NotGic {
            kind: OtherController::Bcm2836Local,
            registers: range(0x4000_0000, 0x100)
        }
    );
    // Its timer sources are named by the PPIs a GIC gives the same timers.
    assert_eq!(board.timer.hyp.kind, InterruptKind::Local);
    assert_eq!(board.timer.hyp.intid(), Some(26));
    assert_eq!(board.timer.virt.intid(), Some(27));
    assert_eq!(board.timer.nonsecure_phys.intid(), Some(30));
    // Another source (the GPU's, 8) is no timer PPI.
    let gpu = Interrupt {
        kind: InterruptKind::Local,
        number: 8,
        flags: 4,
    };
    assert_eq!(gpu.intid(), None);
    // A GIC wins over other controllers where a board has both.
    let both = parse_board(&board_tree(Omit {
        add_bcm2836_controllers: true,
        ..Omit::default()
    }))
    .unwrap();
    assert!(matches!(both.gic, Gic::V2 { .. }));
}

#[test]
fn header_errors_are_typed() {
    assert_eq!(
        parse_board(&[]).unwrap_err(),
        DevtreeError::Truncated {
            needed: 40,
            available: 0
        }
    );
    let mut bad_magic = GICV2.to_vec();
    bad_magic[0] = 0;
    assert_eq!(parse_board(&bad_magic).unwrap_err(), DevtreeError::BadMagic);
    assert_eq!(
        parse_board(&GICV2[..GICV2.len() - 1]).unwrap_err(),
        DevtreeError::Truncated {
            needed: GICV2.len(),
            available: GICV2.len() - 1
        }
    );
    let mut old = GICV2.to_vec();
    old[20..24].copy_from_slice(&16u32.to_be_bytes());
    assert_eq!(
        parse_board(&old).unwrap_err(),
        DevtreeError::UnsupportedVersion { version: 16 }
    );
}

#[test]
fn trailing_bytes_after_totalsize_are_ignored() {
    // QEMU hands over its tree in a larger buffer.
    let mut padded = GICV2.to_vec();
    padded.resize(1 << 20, 0);
    assert_eq!(parse_board(&padded).unwrap(), parse_board(GICV2).unwrap());
}

#[test]
fn nop_tokens_are_refused_not_panicked_on() {
    // Turn the first property of the first node after the root's properties
    // into NOPs: fdt 0.1 would assert on them while skipping nodes.
    let mut blob = board_tree(Omit::default());
    let struct_offset = u32::from_be_bytes(blob[8..12].try_into().unwrap()) as usize;
    blob[struct_offset + 8..struct_offset + 12].copy_from_slice(&4u32.to_be_bytes());
    assert!(matches!(
        parse_board(&blob),
        Err(DevtreeError::Malformed { .. })
    ));
}

#[test]
fn every_truncation_is_refused() {
    for blob in [GICV2, BCM2711] {
        for cut in 0..blob.len() {
            assert!(parse_board(&blob[..cut]).is_err(), "cut at {cut}");
        }
    }
}

#[test]
fn header_that_shrinks_the_blob_is_refused() {
    // totalsize cut short: the structure block no longer fits.
    for blob in [GICV2, BCM2711] {
        let mut edited = blob.to_vec();
        let shorter = u32::try_from(blob.len() / 2).unwrap();
        edited[4..8].copy_from_slice(&shorter.to_be_bytes());
        assert!(matches!(
            parse_board(&edited),
            Err(DevtreeError::Malformed { .. })
        ));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_board(&bytes);
    }

    #[test]
    fn random_edits_of_real_trees_never_panic(
        which in 0usize..3,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
    ) {
        let mut blob = [GICV2, GICV3, BCM2711][which].to_vec();
        let len = blob.len();
        for (offset, value) in edits {
            blob[offset % len] = value;
        }
        let _ = parse_board(&blob);
    }

    #[test]
    fn random_edits_of_the_structure_block_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        // Aim at the structure block (not the header), where the fdt crate's
        // panics would be.
        let mut blob = BCM2711.to_vec();
        let start = u32::from_be_bytes(blob[8..12].try_into().unwrap()) as usize;
        let size = u32::from_be_bytes(blob[36..40].try_into().unwrap()) as usize;
        for (offset, value) in edits {
            blob[start + offset % size] = value;
        }
        let _ = parse_board(&blob);
    }
}
