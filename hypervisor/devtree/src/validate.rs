//! Structural check of a flattened device tree before the `fdt` crate reads it.
//!
//! `fdt` 0.1 indexes and `unwrap`s freely: on a truncated or corrupted blob
//! it panics. So every blob is walked here first, token by token, checking
//! each offset, length and string (Devicetree Specification v0.4, chapter 5).
//! A blob that passes gives `fdt` nothing to panic on in the calls this
//! crate makes (see the notes on each check).

use crate::DevtreeError;

/// `0xd00dfeed`, big-endian at offset 0 (DTSpec 5.2).
const FDT_MAGIC: u32 = 0xd00d_feed;
/// Size of the v17 header (DTSpec 5.2).
pub(crate) const HEADER_SIZE: usize = 40;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
/// Deepest node nesting accepted. `fdt`'s `all_nodes` keeps a 64-entry
/// parent stack; real trees are under 10 deep.
pub(crate) const MAX_DEPTH: usize = 32;
/// Properties whose value `fdt` reads as exactly one cell (with `expect`).
const ONE_CELL_PROPERTIES: [&str; 5] = [
    "#address-cells",
    "#size-cells",
    "#interrupt-cells",
    "phandle",
    "interrupt-parent",
];

fn be32(bytes: &[u8], offset: usize) -> Option<u32> {
    let end = offset.checked_add(4)?;
    Some(u32::from_be_bytes(bytes.get(offset..end)?.try_into().ok()?))
}

fn malformed(offset: usize, what: &'static str) -> DevtreeError {
    DevtreeError::Malformed { offset, what }
}

/// Rounds up to the 4-byte token alignment.
fn align4(value: usize) -> Option<usize> {
    value.checked_add(3).map(|v| v & !3)
}

/// The NUL-terminated UTF-8 string at the start of `bytes`, or `None`.
fn c_str(bytes: &[u8]) -> Option<&str> {
    let end = bytes.iter().position(|&b| b == 0)?;
    core::str::from_utf8(bytes.get(..end)?).ok()
}

/// Checks `dtb` and returns the blob trimmed to its `totalsize`.
pub(crate) fn validate(dtb: &[u8]) -> Result<&[u8], DevtreeError> {
    let field = |index: usize, what| be32(dtb, index * 4).ok_or(malformed(index * 4, what));
    if dtb.len() < HEADER_SIZE {
        return Err(DevtreeError::Truncated {
            needed: HEADER_SIZE,
            available: dtb.len(),
        });
    }
    if field(0, "header")? != FDT_MAGIC {
        return Err(DevtreeError::BadMagic);
    }
    let to_usize =
        |value: u32, offset, what| usize::try_from(value).map_err(|_| malformed(offset, what));
    let total = to_usize(field(1, "totalsize")?, 4, "totalsize")?;
    if total > dtb.len() {
        return Err(DevtreeError::Truncated {
            needed: total,
            available: dtb.len(),
        });
    }
    if total < HEADER_SIZE {
        return Err(malformed(4, "totalsize smaller than the header"));
    }
    let dtb = dtb.get(..total).ok_or(malformed(4, "totalsize"))?;
    let struct_offset = to_usize(field(2, "off_dt_struct")?, 8, "off_dt_struct")?;
    let strings_offset = to_usize(field(3, "off_dt_strings")?, 12, "off_dt_strings")?;
    let reserve_offset = to_usize(field(4, "off_mem_rsvmap")?, 16, "off_mem_rsvmap")?;
    let version = field(5, "version")?;
    let last_compatible = field(6, "last_comp_version")?;
    // `fdt` reads size_dt_struct, which only exists from version 17 on.
    if version < 17 || last_compatible > 17 {
        return Err(DevtreeError::UnsupportedVersion { version });
    }
    let strings_size = to_usize(field(8, "size_dt_strings")?, 32, "size_dt_strings")?;
    let struct_size = to_usize(field(9, "size_dt_struct")?, 36, "size_dt_struct")?;

    let block = |offset: usize, size: usize, what| {
        let end = offset.checked_add(size).ok_or(malformed(offset, what))?;
        if offset < HEADER_SIZE {
            return Err(malformed(offset, what));
        }
        dtb.get(offset..end).ok_or(malformed(offset, what))
    };
    let structure = block(
        struct_offset,
        struct_size,
        "structure block outside the blob",
    )?;
    let strings = block(
        strings_offset,
        strings_size,
        "strings block outside the blob",
    )?;
    if struct_offset % 4 != 0 {
        return Err(malformed(8, "structure block not 4-byte aligned"));
    }

    // Memory reservation map: 16-byte entries up to an all-zero one (DTSpec 5.3).
    if reserve_offset < HEADER_SIZE || reserve_offset % 8 != 0 {
        return Err(malformed(16, "memory reservation map offset"));
    }
    let mut entry = reserve_offset;
    loop {
        let address_high = be32(dtb, entry);
        let terminator = (0..4).all(|word| be32(dtb, entry.saturating_add(word * 4)) == Some(0));
        if address_high.is_none() || be32(dtb, entry.saturating_add(12)).is_none() {
            return Err(malformed(entry, "memory reservation map runs off the blob"));
        }
        if terminator {
            break;
        }
        entry = entry
            .checked_add(16)
            .ok_or(malformed(entry, "memory reservation map"))?;
    }

    validate_structure(structure, strings, struct_offset)?;
    Ok(dtb)
}

/// Walks the structure block (DTSpec 5.4).
fn validate_structure(structure: &[u8], strings: &[u8], base: usize) -> Result<(), DevtreeError> {
    let mut offset = 0usize;
    let mut depth = 0usize;
    let mut seen_root = false;
    // has_child[d]: the open node at depth d already has a child, so no
    // more properties may follow (`fdt` reads properties first, then children).
    let mut has_child = [false; MAX_DEPTH + 1];
    loop {
        let at = base.saturating_add(offset);
        let token =
            be32(structure, offset).ok_or(malformed(at, "structure block ends without FDT_END"))?;
        offset = offset
            .checked_add(4)
            .ok_or(malformed(at, "structure block"))?;
        match token {
            FDT_BEGIN_NODE => {
                if depth == 0 && seen_root {
                    return Err(malformed(at, "more than one root node"));
                }
                let name_bytes = structure.get(offset..).unwrap_or_default();
                let name = c_str(name_bytes)
                    .ok_or(malformed(at, "node name not a NUL-terminated UTF-8 string"))?;
                if depth == 0 && !name.is_empty() {
                    return Err(malformed(at, "root node has a name"));
                }
                if let Some(parent) = has_child.get_mut(depth) {
                    *parent = true;
                }
                depth = depth.checked_add(1).ok_or(malformed(at, "nesting"))?;
                if depth > MAX_DEPTH {
                    return Err(malformed(at, "nodes nested too deep"));
                }
                if let Some(this) = has_child.get_mut(depth) {
                    *this = false;
                }
                seen_root = true;
                offset = name
                    .len()
                    .checked_add(1)
                    .and_then(|len| offset.checked_add(len))
                    .and_then(align4)
                    .ok_or(malformed(at, "node name"))?;
            }
            FDT_END_NODE => {
                depth = depth
                    .checked_sub(1)
                    .ok_or(malformed(at, "FDT_END_NODE without a node"))?;
            }
            FDT_PROP => {
                if depth == 0 {
                    return Err(malformed(at, "property outside any node"));
                }
                if has_child.get(depth).copied().unwrap_or(true) {
                    return Err(malformed(at, "property after a child node"));
                }
                let len = be32(structure, offset)
                    .ok_or(malformed(at, "property header runs off the block"))?;
                let name_offset = be32(structure, offset.saturating_add(4))
                    .ok_or(malformed(at, "property header runs off the block"))?;
                let len = usize::try_from(len).map_err(|_| malformed(at, "property length"))?;
                let name_offset = usize::try_from(name_offset)
                    .map_err(|_| malformed(at, "property name offset"))?;
                let name = strings.get(name_offset..).and_then(c_str).ok_or(malformed(
                    at,
                    "property name not a NUL-terminated UTF-8 string in the strings block",
                ))?;
                let value_start = offset.checked_add(8).ok_or(malformed(at, "property"))?;
                let value_end = value_start
                    .checked_add(len)
                    .ok_or(malformed(at, "property length"))?;
                if value_end > structure.len() {
                    return Err(malformed(at, "property value runs off the block"));
                }
                if ONE_CELL_PROPERTIES.contains(&name) && len != 4 {
                    return Err(malformed(
                        at,
                        "a #cells, phandle or interrupt-parent property is not one cell",
                    ));
                }
                offset = align4(value_end).ok_or(malformed(at, "property length"))?;
            }
            // `fdt` 0.1 skips NOPs in some walks but not in others (it
            // asserts on them when skipping a node), so they are refused.
            FDT_NOP => return Err(malformed(at, "FDT_NOP tokens are not supported")),
            FDT_END => {
                if depth != 0 || !seen_root {
                    return Err(malformed(at, "FDT_END inside a node or before the root"));
                }
                return Ok(());
            }
            _ => return Err(malformed(at, "unknown structure token")),
        }
    }
}

/// Removes the FDT_NOP tokens of `dtb`'s structure block in place (DTSpec
/// 5.4.1: a parser ignores them; they are left where a boot loader deleted
/// a node or property, as QEMU's `raspi` machines do with disabled
/// devices). The block shrinks and the header's `size_dt_struct` with it;
/// nothing else moves. `fdt` 0.1 trips over NOPs in some walks, so
/// [`crate::parse_board`] refuses them: call this first on a board's blob.
pub fn strip_nops(dtb: &mut [u8]) -> Result<(), DevtreeError> {
    let field = |dtb: &[u8], index: usize, what| {
        be32(dtb, index * 4)
            .and_then(|value| usize::try_from(value).ok())
            .ok_or(malformed(index * 4, what))
    };
    if dtb.len() < HEADER_SIZE || be32(dtb, 0) != Some(FDT_MAGIC) {
        return Err(DevtreeError::BadMagic);
    }
    let start = field(dtb, 2, "off_dt_struct")?;
    let size = field(dtb, 9, "size_dt_struct")?;
    let end = start
        .checked_add(size)
        .filter(|&end| end <= dtb.len())
        .ok_or(malformed(36, "structure block runs past the blob"))?;
    let (mut read, mut write) = (start, start);
    loop {
        let token = be32(dtb, read)
            .filter(|_| read < end)
            .ok_or(malformed(read, "structure block ends without FDT_END"))?;
        let length = match token {
            FDT_BEGIN_NODE => {
                let name = dtb
                    .get(read + 4..end)
                    .and_then(|rest| rest.iter().position(|&b| b == 0))
                    .ok_or(malformed(read, "node name"))?;
                align4(4 + name + 1).ok_or(malformed(read, "node name"))?
            }
            FDT_PROP => {
                let len = be32(dtb, read + 4)
                    .and_then(|len| usize::try_from(len).ok())
                    .ok_or(malformed(read, "property header"))?;
                align4(12usize.saturating_add(len)).ok_or(malformed(read, "property"))?
            }
            FDT_END_NODE | FDT_NOP | FDT_END => 4,
            _ => return Err(malformed(read, "unknown structure token")),
        };
        let next = read
            .checked_add(length)
            .filter(|&next| next <= end)
            .ok_or(malformed(read, "token runs past the structure block"))?;
        if token != FDT_NOP {
            dtb.copy_within(read..next, write);
            write += length;
        }
        read = next;
        if token == FDT_END {
            break;
        }
    }
    let new_size = u32::try_from(write - start).map_err(|_| malformed(36, "size_dt_struct"))?;
    dtb.get_mut(36..40)
        .ok_or(malformed(36, "size_dt_struct"))?
        .copy_from_slice(&new_size.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod strip_tests {
    use super::*;

    /// A blob with NOPs before, inside and after a node.
    fn blob_with_nops() -> Vec<u8> {
        let mut fdt = vm_fdt::FdtWriter::new().unwrap();
        let root = fdt.begin_node("").unwrap();
        fdt.property_u32("#address-cells", 2).unwrap();
        let child = fdt.begin_node("chosen").unwrap();
        fdt.property_string("bootargs", "x").unwrap();
        fdt.end_node(child).unwrap();
        fdt.end_node(root).unwrap();
        let mut blob = fdt.finish().unwrap();
        // Turn the `bootargs` property into NOPs, as fdt_nop_property does.
        let start = be32(&blob, 8).unwrap() as usize;
        let size = be32(&blob, 36).unwrap() as usize;
        let mut at = start;
        while at < start + size {
            if be32(&blob, at) == Some(FDT_PROP) {
                let len = be32(&blob, at + 4).unwrap() as usize;
                let nameoff = be32(&blob, at + 8).unwrap() as usize;
                let strings = be32(&blob, 12).unwrap() as usize;
                if c_str(&blob[strings + nameoff..]) == Some("bootargs") {
                    for word in 0..align4(12 + len).unwrap() / 4 {
                        blob[at + word * 4..at + word * 4 + 4]
                            .copy_from_slice(&FDT_NOP.to_be_bytes());
                    }
                    break;
                }
            }
            at += 4;
        }
        blob
    }

    #[test]
    fn nops_are_removed_and_the_rest_parses() {
        let mut blob = blob_with_nops();
        let before = be32(&blob, 36).unwrap();
        assert!(validate(&blob).is_err(), "the validator refuses NOPs");
        strip_nops(&mut blob).unwrap();
        assert!(be32(&blob, 36).unwrap() < before, "the block shrank");
        validate(&blob).unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        let chosen = fdt.find_node("/chosen").unwrap();
        assert!(chosen.property("bootargs").is_none());
    }

    #[test]
    fn a_blob_without_nops_is_unchanged() {
        let mut fdt = vm_fdt::FdtWriter::new().unwrap();
        let root = fdt.begin_node("").unwrap();
        fdt.end_node(root).unwrap();
        let blob = fdt.finish().unwrap();
        let mut copy = blob.clone();
        strip_nops(&mut copy).unwrap();
        assert_eq!(copy, blob);
    }

    #[test]
    fn a_truncated_block_is_refused() {
        let mut blob = blob_with_nops();
        // size_dt_struct past the blob.
        blob[36..40].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(strip_nops(&mut blob).is_err());
    }
}
