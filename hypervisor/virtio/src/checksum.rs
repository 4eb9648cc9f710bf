//! Software completion of a partial (NEEDS_CSUM) checksum (virtio 1.2 §5.1.6.2).
// Guest input is parsed here: an index or slice must not panic (issue 10).
#![deny(clippy::indexing_slicing)]

/// Adds `data` to a ones'-complement running sum of big-endian 16-bit words.
pub fn ones_complement_sum(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        let word = match pair {
            [high, low] => u16::from_be_bytes([*high, *low]),
            _ => 0, // `chunks_exact(2)` yields only pairs.
        };
        sum = sum.wrapping_add(u32::from(word));
        // Fold early so the sum never overflows, whatever the length.
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// Folds a running sum to 16 bits.
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    u16::try_from(sum).unwrap_or(u16::MAX)
}

/// Completes the checksum of `frame` as §5.1.6.2 describes the device doing
/// for a driver that set NEEDS_CSUM: sum from `csum_start` to the end (the
/// field at `csum_start + csum_offset` holds the pseudo-header sum) and store
/// the complement there. Returns `false`, leaving the frame untouched, when
/// the offsets do not lie inside the frame.
pub fn complete_partial(frame: &mut [u8], csum_start: u16, csum_offset: u16) -> bool {
    let start = usize::from(csum_start);
    let Some(field) = start.checked_add(usize::from(csum_offset)) else {
        return false;
    };
    if field.checked_add(2).is_none_or(|end| end > frame.len()) {
        return false;
    }
    // Both offsets come from the guest's header: checked above, and read
    // through `get` so a mistake here cannot panic.
    let Some(summed) = frame.get(start..) else {
        return false;
    };
    let sum = ones_complement_sum(0, summed);
    let mut result = !fold(sum);
    // A computed zero is sent as 0xffff (RFC 768; equal in ones' complement for TCP).
    if result == 0 {
        result = 0xffff;
    }
    match frame.get_mut(field..field + 2) {
        Some(slot) => slot.copy_from_slice(&result.to_be_bytes()),
        None => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example words: 0001 f203 f4f5 f6f7 -> sum ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(ones_complement_sum(0, &data)), 0xddf2);
    }

    #[test]
    fn offsets_outside_the_frame_are_refused() {
        let mut f = [0u8; 20];
        assert!(!complete_partial(&mut f, 18, 1));
        assert!(!complete_partial(&mut f, u16::MAX, u16::MAX));
        assert!(complete_partial(&mut f, 10, 8));
    }
}
