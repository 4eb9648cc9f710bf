//! Device trees: the board parser on arbitrary bytes and on mutations of
//! the real trees of `devtree/tests/data`, and the guest tree builder on
//! arbitrary specs (whose output must parse back).

use chroma_devtree::{build_guest_dtb, parse_board, DevtreeError, GuestDtbSpec, GuestGic};

use crate::{Bytes, Outcome};

/// The real trees (QEMU virt GICv2/v3 boards and guests, a BCM2711-like board).
const TREES: [&[u8]; 6] = [
    include_bytes!("../../devtree/tests/data/qemu-virt-gicv2.dtb"),
    include_bytes!("../../devtree/tests/data/qemu-virt-gicv3.dtb"),
    include_bytes!("../../devtree/tests/data/qemu-virt-gicv3-smp4-2g.dtb"),
    include_bytes!("../../devtree/tests/data/qemu-virt-guest-gicv2.dtb"),
    include_bytes!("../../devtree/tests/data/qemu-virt-guest-gicv3.dtb"),
    include_bytes!("../../devtree/tests/data/bcm2711-like.dtb"),
];

/// Whether the parser got past the header (magic, version, size).
fn went_deep(result: &Result<chroma_devtree::BoardInfo, DevtreeError>) -> bool {
    !matches!(
        result,
        Err(DevtreeError::BadMagic
            | DevtreeError::Truncated { .. }
            | DevtreeError::UnsupportedVersion { .. })
    )
}

/// `parse_board` never panics. First byte even: the rest is the blob.
/// Odd: a real tree with the rest applied as patches (offset, operation,
/// value), so mutations stay near a valid tree.
pub fn fuzz_board(data: &[u8]) -> Outcome {
    let mut input = Bytes::new(data);
    if input.is_empty() {
        return Outcome::Rejected;
    }
    let mode = input.u8();
    let result = if mode & 1 == 0 {
        parse_board(input.rest())
    } else {
        let mut tree = TREES[usize::from(mode >> 1) % TREES.len()].to_vec();
        while input.len() >= 4 {
            let offset = usize::from(input.u16());
            let op = input.u8();
            let value = input.u8();
            if tree.is_empty() {
                break;
            }
            // Patches land mostly in the header and structure block.
            let at = offset % tree.len();
            match op & 7 {
                0..=2 => tree[at] = value,
                3 => tree[at] ^= 1 << (value & 7),
                4 => tree.truncate(at),
                5 => {
                    let end = (at + usize::from(value) + 1).min(tree.len());
                    tree.drain(at..end);
                }
                6 => tree.insert(at, value),
                // A big-endian word (a length, offset or cell) set to an edge value.
                _ => {
                    let word = [0u32, 1, 4, 0x7fff_ffff, 0xffff_ffff, 0xffff_fffc, 8, 3]
                        [usize::from(value & 7)];
                    let at = at & !3;
                    if at + 4 <= tree.len() {
                        tree[at..at + 4].copy_from_slice(&word.to_be_bytes());
                    }
                }
            }
        }
        parse_board(&tree)
    };
    if went_deep(&result) {
        Outcome::Exercised
    } else {
        Outcome::Rejected
    }
}

/// `build_guest_dtb` never panics on any spec, and a tree it builds parses
/// back with the board parser, with the spec's CPUs, RAM and transports.
pub fn fuzz_guest(data: &[u8]) -> Outcome {
    if data.len() < 24 {
        return Outcome::Rejected;
    }
    let mut input = Bytes::new(data);
    let flags = input.u8();
    let pick = |raw: u64, bits: u8| -> u64 {
        match bits & 3 {
            0 => raw,
            1 => 0x4000_0000 + (raw & 0xff) * (1 << 20),
            2 => raw & 0xffff_f000,
            _ => [0, 1, u64::MAX, 1 << 32, 0xffff_ffff, 1 << 40][(raw % 6) as usize],
        }
    };
    let memory_base = pick(input.u64(), flags);
    let memory_size = pick(input.u64(), flags >> 2);
    let counts = input.u8();
    let vcpu_count = u32::from(counts & 15);
    let virtio_mmio_count = u32::from(input.u8() & 63);
    let initrd = (flags & 0x10 != 0).then(|| {
        let start = memory_base.wrapping_add(u64::from(input.u32()));
        (start, start.wrapping_add(u64::from(input.u32())))
    });
    let split = usize::from(input.u8());
    let text = input.rest();
    let (first, second) = text.split_at(split.min(text.len()));
    let cpu_compatible = String::from_utf8_lossy(first);
    let bootargs = String::from_utf8_lossy(second);
    let spec = GuestDtbSpec {
        memory_base,
        memory_size,
        vcpu_count,
        cpu_compatible: if flags & 0x20 != 0 {
            &cpu_compatible
        } else {
            "arm,cortex-a57"
        },
        gic: if flags & 0x40 != 0 {
            GuestGic::V3
        } else {
            GuestGic::V2
        },
        bootargs: &bootargs,
        initrd,
        virtio_mmio_count,
    };
    let Ok(blob) = build_guest_dtb(&spec) else {
        return Outcome::Exercised;
    };
    let board = match parse_board(&blob) {
        Ok(board) => board,
        // An arbitrary CPU `compatible` may name a device the board parser
        // looks for ("virtio,mmio" on a CPU node): the tree is then not a
        // board it accepts, which is right. Never a panic, though.
        Err(_) if flags & 0x20 != 0 => return Outcome::Exercised,
        Err(error) => panic!("guest tree for {spec:?} does not parse back: {error:?}"),
    };
    assert_eq!(board.cpus.len(), vcpu_count as usize, "{spec:?}");
    assert_eq!(
        board.virtio_mmio.len(),
        virtio_mmio_count as usize,
        "{spec:?}"
    );
    let memory: Vec<_> = board.memory.iter().map(|m| (m.base, m.size)).collect();
    assert_eq!(memory, [(memory_base, memory_size)], "{spec:?}");
    Outcome::Exercised
}
