//! Round-trip, rejection and never-panic tests of the manifest.

use alloc::vec::Vec;

use proptest::prelude::*;

use crate::layout::*;
use crate::*;

const KERNEL: &[u8] = b"kernel image bytes";
const INITRD: &[u8] = b"initrd";

fn options() -> Options {
    Options {
        cache_mode: CacheMode::Force,
        log_level: 3,
        console_switch_key: 0x01,
    }
}

fn vm<'a>(name: &'a str, nets: &'a [NetSpec]) -> VmInput<'a> {
    VmInput {
        name,
        memory_base: DEFAULT_MEMORY_BASE,
        memory_bytes: 64 << 20,
        vcpus: 2,
        cpu_affinity: [1, 0, 0, 0, 0, 0, 0, 0],
        arch: GuestArch::Aarch64,
        kernel: KERNEL,
        initrd: Some(INITRD),
        cmdline: "console=ttyAMA0 earlycon",
        nets,
    }
}

const NETS: [NetSpec; 2] = [
    NetSpec {
        switch_index: 0,
        mac: [0x52, 0x54, 0, 0x12, 0x34, 1],
        trusted: false,
        ring: RingLayout::Packed,
        tso: true,
    },
    NetSpec {
        switch_index: 1,
        mac: [0x52, 0x54, 0, 0x12, 0x34, 2],
        trusted: true,
        ring: RingLayout::Split,
        tso: false,
    },
];

/// Two switches, two VMs: the first with two NICs and an initrd, the second
/// with neither.
fn sample() -> Vec<u8> {
    let mut builder = ManifestBuilder::new(options());
    assert_eq!(builder.add_switch("lan0", true), 0);
    assert_eq!(builder.add_switch("lan1", false), 1);
    builder.add_vm(vm("probe", &NETS));
    builder.add_vm(VmInput {
        initrd: None,
        cmdline: "",
        vcpus: 1,
        cpu_affinity: [0; MAX_VCPUS],
        memory_base: 0x8000_0000,
        memory_bytes: 2 << 20,
        arch: GuestArch::Aarch32,
        ..vm("second", &[])
    });
    builder.build().expect("valid manifest")
}

/// Recomputes the metadata checksum after a test edited the bytes.
fn reseal(bytes: &mut [u8]) {
    let data_start = usize::try_from(u32::from_le_bytes(
        bytes[H_DATA_OFFSET..H_DATA_OFFSET + 4].try_into().unwrap(),
    ))
    .unwrap();
    let sum = checksum(&bytes[..data_start.min(bytes.len())], H_CHECKSUM);
    bytes[H_CHECKSUM..H_CHECKSUM + 4].copy_from_slice(&sum.to_le_bytes());
}

#[test]
fn round_trip() {
    let bytes = sample();
    let manifest = Manifest::parse(&bytes).unwrap();
    assert_eq!(manifest.total_len(), bytes.len());
    assert_eq!(manifest.options(), options());
    assert_eq!(manifest.vm_count(), 2);
    assert_eq!(manifest.switch_count(), 2);

    let switches: Vec<_> = manifest.switches().collect();
    assert_eq!(
        switches,
        [
            SwitchSpec {
                name: "lan0",
                uplink: true
            },
            SwitchSpec {
                name: "lan1",
                uplink: false
            }
        ]
    );
    assert_eq!(manifest.uplink_switch(), Some((0, switches[0])));
    assert_eq!(manifest.switch(1), Some(switches[1]));
    assert_eq!(manifest.switch(2), None);

    let vms: Vec<_> = manifest.vms().collect();
    assert_eq!(vms.len(), 2);
    let probe = vms[0];
    assert_eq!(probe.name, "probe");
    assert_eq!(probe.memory_base, 0x4000_0000);
    assert_eq!(probe.memory_bytes, 64 << 20);
    assert_eq!(probe.vcpus, 2);
    assert_eq!(probe.cpu_affinity, [1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(probe.arch, GuestArch::Aarch64);
    assert_eq!(probe.kernel, KERNEL);
    assert_eq!(probe.initrd, Some(INITRD));
    assert_eq!(probe.cmdline, "console=ttyAMA0 earlycon");
    assert_eq!(probe.nets.len(), 2);
    assert_eq!(probe.nets.iter().collect::<Vec<_>>(), NETS);
    assert_eq!(probe.nets.get(1), Some(NETS[1]));
    assert_eq!(probe.nets.get(2), None);

    let second = vms[1];
    assert_eq!(second.name, "second");
    assert_eq!(second.initrd, None);
    assert_eq!(second.arch, GuestArch::Aarch32);
    assert_eq!(second.cmdline, "");
    assert!(second.nets.is_empty());
    assert_eq!(second.memory_base, 0x8000_0000);
    assert_eq!(manifest.vm(1), Some(second));
    assert_eq!(manifest.vm(2), None);
}

#[test]
fn trailing_bytes_are_not_part_of_the_manifest() {
    let mut bytes = sample();
    let len = bytes.len();
    bytes.extend_from_slice(&[0xAA; 100]);
    let manifest = Manifest::parse(&bytes).unwrap();
    assert_eq!(manifest.total_len(), len);
}

#[test]
fn empty_manifest_round_trips() {
    let bytes = ManifestBuilder::new(Options::default()).build().unwrap();
    let manifest = Manifest::parse(&bytes).unwrap();
    assert_eq!(manifest.vms().count(), 0);
    assert_eq!(manifest.switches().count(), 0);
    assert_eq!(manifest.uplink_switch(), None);
    assert_eq!(manifest.options(), Options::default());
}

#[test]
fn blobs_are_aligned() {
    let bytes = sample();
    let manifest = Manifest::parse(&bytes).unwrap();
    for vm in manifest.vms() {
        let offset = vm.kernel.as_ptr() as usize - bytes.as_ptr() as usize;
        assert_eq!(offset % BLOB_ALIGN, 0);
    }
}

#[test]
fn short_input_is_refused() {
    assert_eq!(
        Manifest::parse(&[]).unwrap_err(),
        ManifestError::TooShort { len: 0 }
    );
    let bytes = sample();
    assert_eq!(
        Manifest::parse(&bytes[..63]).unwrap_err(),
        ManifestError::TooShort { len: 63 }
    );
}

#[test]
fn bad_magic_is_refused() {
    let mut bytes = sample();
    bytes[0] = b'X';
    assert_eq!(
        Manifest::parse(&bytes).unwrap_err(),
        ManifestError::BadMagic
    );
}

#[test]
fn other_version_is_refused() {
    // Version 1 had an "exit via semihosting" byte; it must not be read as 2.
    for version in [1u8, 3] {
        let mut bytes = sample();
        bytes[H_VERSION] = version;
        assert_eq!(
            Manifest::parse(&bytes).unwrap_err(),
            ManifestError::UnsupportedVersion {
                found: u16::from(version)
            }
        );
    }
    // Negative control: the version the builder writes parses.
    assert_eq!(
        u16::from_le_bytes([sample()[H_VERSION], sample()[H_VERSION + 1]]),
        FORMAT_VERSION
    );
    assert!(Manifest::parse(&sample()).is_ok());
}

#[test]
fn the_former_semihosting_byte_is_reserved() {
    let bytes = sample();
    assert_eq!(bytes[H_RESERVED_18], 0, "the builder writes zero");
    let mut bytes = bytes;
    bytes[H_RESERVED_18] = 1;
    reseal(&mut bytes);
    assert_eq!(
        Manifest::parse(&bytes).unwrap_err(),
        ManifestError::InvalidValue {
            at: At::Header,
            what: "reserved bytes"
        }
    );
}

#[test]
fn truncation_is_refused() {
    let bytes = sample();
    let err = Manifest::parse(&bytes[..bytes.len() - 1]).unwrap_err();
    assert_eq!(
        err,
        ManifestError::Truncated {
            total_len: bytes.len() as u64,
            available: bytes.len() - 1
        }
    );
}

#[test]
fn corrupted_metadata_fails_the_checksum() {
    let mut bytes = sample();
    bytes[HEADER_SIZE + V_VCPUS] ^= 0x40;
    assert!(matches!(
        Manifest::parse(&bytes).unwrap_err(),
        ManifestError::ChecksumMismatch { .. }
    ));
}

#[test]
fn resealed_corruptions_are_caught_by_validation() {
    let vm0 = HEADER_SIZE;
    let cases: [(usize, u8, ManifestError); 6] = [
        (
            H_LOG_LEVEL,
            9,
            ManifestError::InvalidValue {
                at: At::Header,
                what: "log level",
            },
        ),
        (
            H_CACHE_MODE,
            2,
            ManifestError::InvalidValue {
                at: At::Header,
                what: "cache mode",
            },
        ),
        (
            vm0 + V_VCPUS,
            9,
            ManifestError::InvalidValue {
                at: At::Vm(0),
                what: "vCPU count",
            },
        ),
        (
            vm0 + V_KERNEL + 3,
            0x7f,
            ManifestError::OutOfBounds {
                at: At::Vm(0),
                what: "kernel",
            },
        ),
        (
            vm0 + V_MEMORY_BASE,
            1,
            ManifestError::InvalidValue {
                at: At::Vm(0),
                what: "memory base",
            },
        ),
        (
            vm0 + V_RESERVED,
            1,
            ManifestError::InvalidValue {
                at: At::Vm(0),
                what: "reserved bytes",
            },
        ),
    ];
    for (offset, value, expected) in cases {
        let mut bytes = sample();
        bytes[offset] = value;
        reseal(&mut bytes);
        assert_eq!(
            Manifest::parse(&bytes).unwrap_err(),
            expected,
            "offset {offset}"
        );
    }
    // Negative control: resealing an unmodified manifest changes nothing.
    let mut bytes = sample();
    reseal(&mut bytes);
    assert!(Manifest::parse(&bytes).is_ok());
}

/// Offset of NIC record `index` in `bytes`.
fn net_record(bytes: &[u8], index: usize) -> usize {
    let table = u32::from_le_bytes(bytes[H_NET_TABLE..H_NET_TABLE + 4].try_into().unwrap());
    usize::try_from(table).unwrap() + index * NET_RECORD_SIZE
}

#[test]
fn nic_trusted_flag_is_carried_and_other_flag_bits_are_refused() {
    let bytes = sample();
    let nets: Vec<NetSpec> = Manifest::parse(&bytes)
        .unwrap()
        .vm(0)
        .unwrap()
        .nets
        .iter()
        .collect();
    assert_eq!((nets[0].trusted, nets[1].trusted), (false, true));
    // A manifest written before the flag existed (bytes 10..12 zero) reads
    // as untrusted: clearing the flag is the only change.
    let mut old = sample();
    let record = net_record(&old, 1);
    // (This NIC also has `tso = false`, bit 2.)
    assert_eq!(old[record + N_FLAGS], 1 | 4);
    old[record + N_FLAGS] = 4;
    reseal(&mut old);
    let net = Manifest::parse(&old).unwrap().vm(0).unwrap().nets.get(1);
    assert_eq!(net.map(|n| n.trusted), Some(false));
    // Unknown flag bits and the remaining reserved bytes are refused.
    for (offset, bit, what) in [
        (N_FLAGS, 0x80, "flags"),
        (N_FLAGS, 0x08, "flags"),
        (N_FLAGS + 1, 0x80, "flags"),
        (N_RESERVED, 0x80, "reserved bytes"),
        (N_RESERVED + 3, 0x80, "reserved bytes"),
    ] {
        let mut bytes = sample();
        let record = net_record(&bytes, 0);
        bytes[record + offset] |= bit;
        reseal(&mut bytes);
        assert_eq!(
            Manifest::parse(&bytes).unwrap_err(),
            ManifestError::InvalidValue {
                at: At::Net(0),
                what
            },
            "offset {offset}"
        );
    }
}

#[test]
fn nic_ring_layout_is_carried_and_an_old_manifest_offers_split() {
    let bytes = sample();
    let rings: Vec<RingLayout> = Manifest::parse(&bytes)
        .unwrap()
        .vm(0)
        .unwrap()
        .nets
        .iter()
        .map(|net| net.ring)
        .collect();
    assert_eq!(rings, [RingLayout::Packed, RingLayout::Split]);
    // The packed NIC's record has bit 1 and only it.
    let record = net_record(&bytes, 0);
    assert_eq!(
        u16::from_le_bytes([bytes[record + N_FLAGS], bytes[record + N_FLAGS + 1]]),
        NET_FLAG_PACKED_RING
    );
    // Before the flag existed the byte was zero: such a NIC is split.
    let mut old = sample();
    old[record + N_FLAGS] = 0;
    reseal(&mut old);
    let net = Manifest::parse(&old).unwrap().vm(0).unwrap().nets.get(0);
    assert_eq!(
        net.map(|n| (n.ring, n.trusted, n.tso)),
        Some((RingLayout::Split, false, true))
    );
    // `tso = false` is bit 2 (the second NIC); without it TSO is offered.
    let tso: Vec<bool> = Manifest::parse(&bytes)
        .unwrap()
        .vm(0)
        .unwrap()
        .nets
        .iter()
        .map(|net| net.tso)
        .collect();
    assert_eq!(tso, [true, false]);
}

#[test]
fn net_with_unknown_switch_is_refused_by_the_builder() {
    let nets = [NetSpec {
        switch_index: 5,
        mac: [2, 0, 0, 0, 0, 1],
        trusted: false,
        ring: RingLayout::Split,
        tso: true,
    }];
    let mut builder = ManifestBuilder::new(Options::default());
    builder.add_switch("lan0", false);
    builder.add_vm(vm("a", &nets));
    assert_eq!(
        builder.build().unwrap_err(),
        ManifestError::InvalidValue {
            at: At::Net(0),
            what: "switch index"
        }
    );
}

#[test]
fn builder_refuses_what_the_parser_refuses() {
    let build = |input: VmInput<'_>| {
        let mut builder = ManifestBuilder::new(Options::default());
        builder.add_vm(input);
        builder.build()
    };
    let at = At::Vm(0);
    assert_eq!(
        build(VmInput {
            vcpus: 0,
            ..vm("a", &[])
        })
        .unwrap_err(),
        ManifestError::InvalidValue {
            at,
            what: "vCPU count"
        }
    );
    assert_eq!(
        build(VmInput {
            vcpus: 9,
            ..vm("a", &[])
        })
        .unwrap_err(),
        ManifestError::InvalidValue {
            at,
            what: "vCPU count"
        }
    );
    assert_eq!(
        build(VmInput {
            vcpus: 1,
            cpu_affinity: [0, 1, 0, 0, 0, 0, 0, 0],
            ..vm("a", &[])
        })
        .unwrap_err(),
        ManifestError::InvalidValue {
            at,
            what: "CPU affinity"
        }
    );
    assert_eq!(
        build(VmInput {
            memory_bytes: 0,
            ..vm("a", &[])
        })
        .unwrap_err(),
        ManifestError::InvalidValue {
            at,
            what: "memory size"
        }
    );
    assert_eq!(
        build(VmInput {
            memory_bytes: 3 << 20,
            ..vm("a", &[])
        })
        .unwrap_err(),
        ManifestError::InvalidValue {
            at,
            what: "memory size"
        }
    );
    assert_eq!(
        build(VmInput {
            memory_base: u64::MAX - (MEMORY_ALIGN - 1),
            ..vm("a", &[])
        })
        .unwrap_err(),
        ManifestError::InvalidValue {
            at,
            what: "memory size"
        }
    );
    assert_eq!(
        build(vm("", &[])).unwrap_err(),
        ManifestError::InvalidValue { at, what: "name" }
    );
    assert_eq!(
        build(vm("a-name-longer-than-16", &[])).unwrap_err(),
        ManifestError::TooLarge { at, what: "name" }
    );
    assert_eq!(
        build(VmInput {
            cmdline: "a\0b",
            ..vm("a", &[])
        })
        .unwrap_err(),
        ManifestError::BadString {
            at,
            what: "command line"
        }
    );
    assert_eq!(
        build(VmInput {
            kernel: &[],
            ..vm("a", &[])
        })
        .unwrap_err(),
        ManifestError::InvalidValue { at, what: "kernel" }
    );
    // Negative control.
    assert!(build(vm("a", &[])).is_ok());
}

#[test]
fn errors_display_their_location() {
    let text = alloc::format!(
        "{}",
        ManifestError::OutOfBounds {
            at: At::Vm(2),
            what: "kernel"
        }
    );
    assert_eq!(text, "vm[2]: kernel lies outside its area");
    let text = alloc::format!("{}", ManifestError::BadMagic);
    assert!(text.contains("CHROMAMF"));
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Manifest::parse(&bytes);
    }

    #[test]
    fn random_bytes_with_a_valid_prefix_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..512),
        keep in 0usize..HEADER_SIZE,
    ) {
        // Keep the magic and version so parsing gets past the first checks.
        let mut bytes = sample()[..keep.max(12)].to_vec();
        bytes.extend_from_slice(&tail);
        let _ = Manifest::parse(&bytes);
    }

    #[test]
    fn truncations_are_refused_without_panicking(cut in 0usize..1000) {
        let bytes = sample();
        let cut = cut % bytes.len();
        prop_assert!(Manifest::parse(&bytes[..cut]).is_err());
    }

    #[test]
    fn resealed_random_edits_never_panic(edits in proptest::collection::vec((0usize..4096, any::<u8>()), 1..8)) {
        let mut bytes = sample();
        let len = bytes.len();
        for (offset, value) in edits {
            bytes[offset % len] = value;
        }
        reseal(&mut bytes);
        if let Ok(manifest) = Manifest::parse(&bytes) {
            // Whatever parses can be walked without failing.
            for vm in manifest.vms() {
                prop_assert!(vm.vcpus >= 1 && vm.vcpus as usize <= MAX_VCPUS);
                for net in vm.nets {
                    prop_assert!((net.switch_index as usize) < manifest.switch_count());
                }
            }
            prop_assert_eq!(manifest.vms().count(), manifest.vm_count());
            prop_assert_eq!(manifest.switches().count(), manifest.switch_count());
        }
    }
}
