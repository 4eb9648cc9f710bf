//! The binary VM manifest: the parser on arbitrary bytes (Ok or a clean
//! error; what it accepts rebuilds to the same manifest), and round trips
//! of built manifests (a manifest the builder writes parses back equal).

use chroma_manifest::{
    GuestArch,
    CacheMode, Manifest, ManifestBuilder, ManifestError, NetSpec, Options, RingLayout, VmInput,
    MAX_VCPUS, MEMORY_ALIGN,
};

use crate::{Bytes, Outcome};

/// Checks `manifest` against a rebuild of what it says.
fn rebuild_matches(manifest: &Manifest<'_>) {
    let mut builder = ManifestBuilder::new(manifest.options());
    for switch in manifest.switches() {
        builder.add_switch(switch.name, switch.uplink);
    }
    let vms: Vec<_> = manifest.vms().collect();
    let nets: Vec<Vec<NetSpec>> = vms.iter().map(|vm| vm.nets.iter().collect()).collect();
    for (vm, nets) in vms.iter().zip(&nets) {
        builder.add_vm(VmInput {
            name: vm.name,
            memory_base: vm.memory_base,
            memory_bytes: vm.memory_bytes,
            vcpus: vm.vcpus,
            cpu_affinity: vm.cpu_affinity,
            arch: vm.arch,
            kernel: vm.kernel,
            initrd: vm.initrd,
            cmdline: vm.cmdline,
            nets,
        });
    }
    let bytes = match builder.build() {
        Ok(bytes) => bytes,
        Err(error) => panic!("the parser accepts what the builder refuses: {error:?}"),
    };
    let again = Manifest::parse(&bytes).expect("a built manifest parses");
    assert_eq!(again.options(), manifest.options());
    assert!(again.switches().eq(manifest.switches()));
    assert!(again.vms().eq(manifest.vms()));
}

/// First byte even: parse the rest as a manifest. Odd: build one from it.
pub fn fuzz(data: &[u8]) -> Outcome {
    let mut input = Bytes::new(data);
    if input.is_empty() {
        return Outcome::Rejected;
    }
    if input.u8() & 1 == 0 {
        return match Manifest::parse(input.rest()) {
            Ok(manifest) => {
                assert!(manifest.total_len() < data.len());
                rebuild_matches(&manifest);
                Outcome::Exercised
            }
            Err(ManifestError::TooShort { .. } | ManifestError::BadMagic) => Outcome::Rejected,
            Err(_) => Outcome::Exercised,
        };
    }
    round_trip(&mut input)
}

fn text(input: &mut Bytes<'_>, max: u8) -> String {
    let len = input.u8() % max.max(1);
    String::from_utf8_lossy(input.take(usize::from(len))).into_owned()
}

/// Builds a manifest from mostly valid values; when the builder accepts it,
/// it parses back with exactly those values.
fn round_trip(input: &mut Bytes<'_>) -> Outcome {
    let flags = input.u8();
    let options = Options {
        cache_mode: if flags & 1 == 0 {
            CacheMode::Auto
        } else {
            CacheMode::Force
        },
        log_level: input.u8() % 6,
        console_switch_key: input.u8(),
    };
    let switch_names: Vec<String> = (0..input.u8() % 4).map(|_| text(input, 20)).collect();
    let switch_flags: Vec<bool> = switch_names.iter().map(|_| input.u8() & 1 == 1).collect();
    struct Vm {
        name: String,
        memory_base: u64,
        memory_bytes: u64,
        vcpus: u32,
        affinity: [u8; MAX_VCPUS],
        aarch32: bool,
        kernel: Vec<u8>,
        initrd: Option<Vec<u8>>,
        cmdline: String,
        nets: Vec<NetSpec>,
    }
    let vms: Vec<Vm> = (0..input.u8() % 4)
        .map(|_| {
            let shape = input.u8();
            let vcpus = u32::from(input.u8() % 10);
            let mut affinity = [0u8; MAX_VCPUS];
            for slot in affinity.iter_mut().take(vcpus as usize) {
                *slot = input.u8() % 4;
            }
            Vm {
                name: text(input, 20),
                memory_base: if shape & 1 == 0 {
                    u64::from(input.u16()) * MEMORY_ALIGN
                } else {
                    input.u64()
                },
                memory_bytes: if shape & 2 == 0 {
                    u64::from(input.u8()) * MEMORY_ALIGN
                } else {
                    input.u64()
                },
                vcpus,
                affinity,
                aarch32: shape & 0x80 != 0,
                kernel: input.take(usize::from(input.clone().u8()) + 1).to_vec(),
                initrd: (shape & 4 != 0).then(|| input.take(usize::from(shape >> 3)).to_vec()),
                cmdline: text(input, 64),
                nets: (0..input.u8() % 4)
                    .map(|_| {
                        let switch_index = u32::from(input.u8() % 5);
                        let mac = input.array();
                        let trusted = input.u8() & 1 != 0;
                        // One byte: bit 0 the ring, bit 1 `tso = false`.
                        let flags = input.u8();
                        NetSpec {
                            switch_index,
                            mac,
                            trusted,
                            ring: if flags & 1 != 0 {
                                RingLayout::Packed
                            } else {
                                RingLayout::Split
                            },
                            tso: flags & 2 == 0,
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    let mut builder = ManifestBuilder::new(options);
    for (name, uplink) in switch_names.iter().zip(&switch_flags) {
        builder.add_switch(name, *uplink);
    }
    for vm in &vms {
        builder.add_vm(VmInput {
            name: &vm.name,
            memory_base: vm.memory_base,
            memory_bytes: vm.memory_bytes,
            vcpus: vm.vcpus,
            cpu_affinity: vm.affinity,
            arch: if vm.aarch32 {
                GuestArch::Aarch32
            } else {
                GuestArch::Aarch64
            },
            kernel: &vm.kernel,
            initrd: vm.initrd.as_deref(),
            cmdline: &vm.cmdline,
            nets: &vm.nets,
        });
    }
    let Ok(bytes) = builder.build() else {
        return Outcome::Exercised;
    };
    let manifest = Manifest::parse(&bytes).expect("the builder's output parses");
    assert_eq!(manifest.total_len(), bytes.len());
    assert_eq!(manifest.options(), options);
    let switches: Vec<_> = manifest.switches().map(|s| (s.name, s.uplink)).collect();
    let expected: Vec<_> = switch_names
        .iter()
        .map(String::as_str)
        .zip(switch_flags.iter().copied())
        .collect();
    assert_eq!(switches, expected);
    assert_eq!(manifest.vm_count(), vms.len());
    for (spec, vm) in manifest.vms().zip(&vms) {
        assert_eq!(spec.name, vm.name);
        assert_eq!(spec.memory_base, vm.memory_base);
        assert_eq!(spec.memory_bytes, vm.memory_bytes);
        assert_eq!(spec.vcpus, vm.vcpus);
        assert_eq!(spec.cpu_affinity, vm.affinity);
        assert_eq!(spec.arch == GuestArch::Aarch32, vm.aarch32);
        assert_eq!(spec.kernel, vm.kernel.as_slice());
        assert_eq!(spec.initrd, vm.initrd.as_deref());
        assert_eq!(spec.cmdline, vm.cmdline);
        assert!(spec.nets.iter().eq(vm.nets.iter().copied()));
    }
    rebuild_matches(&manifest);
    Outcome::Exercised
}
