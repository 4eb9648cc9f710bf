//! A small flattened-device-tree writer for the guest device tree
//! ([`crate::build_guest_dtb`]): the blob `vm_fdt::FdtWriter` writes, byte
//! for byte (a test checks), without its string map (a `BTreeMap` of
//! `CString`s), its phandle set and its name checks.
//!
//! Why not `vm_fdt`: the guest device tree is written at boot, before the
//! first guest runs, and under QEMU's TCG each distinct instruction the
//! hypervisor executes is translated once, which costs far more than
//! running it. `vm_fdt` took some 1,300 distinct instructions (its B-tree
//! and `CString` handling among them); this writer a few hundred. The
//! caller writes only names it chose (constants, and node names it
//! formats) and values it checked for NULs, so nothing here needs
//! checking: the structure is right by construction.

use alloc::vec::Vec;

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_END: u32 = 9;
const FDT_VERSION: u32 = 17;
const FDT_LAST_COMP_VERSION: u32 = 16;
/// The header's size.
const HEADER: u32 = 40;
/// The header and an empty memory reservation map (its terminating pair).
const STRUCT_OFFSET: u32 = HEADER + 16;

/// A length or an offset as the header's and properties' 32-bit field (a
/// larger one makes [`FdtWriter::finish`] refuse the blob, whose size
/// then does not fit either).
fn field(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// An open node, to be given back to [`FdtWriter::end_node`].
#[must_use]
pub struct Node(());

/// Writes a device tree: nodes and properties in order, then
/// [`FdtWriter::finish`].
pub struct FdtWriter {
    /// Header, reservation map and structure block.
    data: Vec<u8>,
    /// The strings block (property names, each once).
    strings: Vec<u8>,
}

impl FdtWriter {
    /// A writer with an empty memory reservation map.
    pub fn new() -> Self {
        let mut data = Vec::with_capacity(2048);
        data.resize(STRUCT_OFFSET as usize, 0);
        FdtWriter {
            data,
            strings: Vec::with_capacity(512),
        }
    }

    fn u32(&mut self, value: u32) {
        self.data.extend_from_slice(&value.to_be_bytes());
    }

    fn align(&mut self) {
        let padded = self.data.len().next_multiple_of(4);
        self.data.resize(padded, 0);
    }

    /// Opens node `name` (no NUL in it).
    pub fn begin_node(&mut self, name: &str) -> Node {
        self.u32(FDT_BEGIN_NODE);
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.align();
        Node(())
    }

    /// Closes the node most recently opened.
    pub fn end_node(&mut self, _node: Node) {
        self.u32(FDT_END_NODE);
    }

    /// The offset of `name` in the strings block, added if new.
    fn name_offset(&mut self, name: &str) -> u32 {
        let name = name.as_bytes();
        let mut start = 0;
        while start < self.strings.len() {
            let rest = &self.strings[start..];
            let length = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            if &rest[..length] == name {
                return field(start);
            }
            start += length + 1;
        }
        let offset = field(self.strings.len());
        self.strings.extend_from_slice(name);
        self.strings.push(0);
        offset
    }

    /// Property `name` with the value's bytes, in the value's pieces.
    fn property_parts(&mut self, name: &str, parts: &[&[u8]]) {
        let length: usize = parts.iter().map(|part| part.len()).sum();
        let name = self.name_offset(name);
        self.u32(FDT_PROP);
        self.u32(field(length));
        self.u32(name);
        for part in parts {
            self.data.extend_from_slice(part);
        }
        self.align();
    }

    /// An empty property.
    pub fn property_null(&mut self, name: &str) {
        self.property_parts(name, &[]);
    }

    /// A string property (no NUL in `value`).
    pub fn property_string(&mut self, name: &str, value: &str) {
        self.property_parts(name, &[value.as_bytes(), &[0]]);
    }

    /// A string-list property (no NUL in the strings).
    pub fn property_string_list(&mut self, name: &str, values: &[&str]) {
        let mut bytes = Vec::with_capacity(64);
        for value in values {
            bytes.extend_from_slice(value.as_bytes());
            bytes.push(0);
        }
        self.property_parts(name, &[&bytes]);
    }

    /// A one-cell property.
    pub fn property_u32(&mut self, name: &str, value: u32) {
        self.property_parts(name, &[&value.to_be_bytes()]);
    }

    /// A two-cell property.
    pub fn property_u64(&mut self, name: &str, value: u64) {
        self.property_parts(name, &[&value.to_be_bytes()]);
    }

    /// A property of cells.
    pub fn property_array_u32(&mut self, name: &str, cells: &[u32]) {
        let mut bytes = Vec::with_capacity(cells.len() * 4);
        for cell in cells {
            bytes.extend_from_slice(&cell.to_be_bytes());
        }
        self.property_parts(name, &[&bytes]);
    }

    /// A `reg`-like property of two-cell addresses and two-cell sizes.
    pub fn property_ranges(&mut self, name: &str, ranges: &[(u64, u64)]) {
        let mut bytes = Vec::with_capacity(ranges.len() * 16);
        for (base, size) in ranges {
            bytes.extend_from_slice(&base.to_be_bytes());
            bytes.extend_from_slice(&size.to_be_bytes());
        }
        self.property_parts(name, &[&bytes]);
    }

    /// The blob: header, reservation map, structure and strings. `None` if
    /// it would not fit the header's 32-bit sizes.
    pub fn finish(mut self) -> Option<Vec<u8>> {
        self.u32(FDT_END);
        let strings_offset = u32::try_from(self.data.len()).ok()?;
        let strings_size = u32::try_from(self.strings.len()).ok()?;
        let total = strings_offset.checked_add(strings_size)?;
        let header = [
            FDT_MAGIC,
            total,
            STRUCT_OFFSET,
            strings_offset,
            HEADER,
            FDT_VERSION,
            FDT_LAST_COMP_VERSION,
            0,
            strings_size,
            strings_offset - STRUCT_OFFSET,
        ];
        for (slot, value) in self.data.chunks_exact_mut(4).zip(header) {
            slot.copy_from_slice(&value.to_be_bytes());
        }
        self.data.extend_from_slice(&self.strings);
        Some(self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::FdtWriter;
    use alloc::string::String;
    use alloc::vec;

    /// The same tree through both writers gives the same bytes.
    #[test]
    fn writes_what_vm_fdt_writes() {
        let mut ours = FdtWriter::new();
        let mut theirs = vm_fdt::FdtWriter::new().unwrap();
        let root = ours.begin_node("");
        let their_root = theirs.begin_node("").unwrap();
        ours.property_u32("interrupt-parent", 1);
        theirs.property_u32("interrupt-parent", 1).unwrap();
        ours.property_string("model", "chroma");
        theirs.property_string("model", "chroma").unwrap();
        ours.property_u32("reg", 7);
        theirs.property_u32("reg", 7).unwrap();
        let node = ours.begin_node("memory@40000000");
        let their_node = theirs.begin_node("memory@40000000").unwrap();
        ours.property_ranges("reg", &[(0x4000_0000, 0x1_0400_0000)]);
        theirs
            .property_array_u32("reg", &[0, 0x4000_0000, 1, 0x0400_0000])
            .unwrap();
        ours.property_null("dma-coherent");
        theirs.property_null("dma-coherent").unwrap();
        ours.property_string_list("compatible", &["arm,pl011", "arm,primecell"]);
        theirs
            .property_string_list(
                "compatible",
                vec![String::from("arm,pl011"), String::from("arm,primecell")],
            )
            .unwrap();
        ours.property_array_u32("interrupts", &[0, 1, 4]);
        theirs.property_array_u32("interrupts", &[0, 1, 4]).unwrap();
        ours.property_u64("linux,initrd-start", 0x4800_0123);
        theirs
            .property_u64("linux,initrd-start", 0x4800_0123)
            .unwrap();
        ours.property_string("model", "ab");
        theirs.property_string("model", "ab").unwrap();
        ours.end_node(node);
        theirs.end_node(their_node).unwrap();
        ours.end_node(root);
        theirs.end_node(their_root).unwrap();
        assert_eq!(ours.finish().unwrap(), theirs.finish().unwrap());
    }
}
