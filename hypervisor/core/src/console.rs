//! Per-VM console output: bytes from a guest's UART are collected into lines
//! so that lines from different VMs never interleave mid-line on the shared
//! physical console, and each line can carry the VM's name.

/// Longest line kept before it is flushed without a newline.
pub const LINE_MAX: usize = 160;

/// A line being assembled from a guest's output.
#[derive(Clone, Debug)]
pub struct LineBuffer {
    bytes: [u8; LINE_MAX],
    len: usize,
}

impl Default for LineBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl LineBuffer {
    /// An empty line.
    pub const fn new() -> Self {
        Self { bytes: [0; LINE_MAX], len: 0 }
    }

    /// Adds a byte. Returns the finished line (without the newline) when the
    /// byte ends one or the buffer is full. Carriage returns are dropped.
    pub fn push(&mut self, byte: u8) -> Option<&[u8]> {
        match byte {
            b'\r' => None,
            b'\n' => Some(self.take()),
            _ => {
                self.bytes[self.len] = byte;
                self.len += 1;
                (self.len == LINE_MAX).then(|| self.take())
            }
        }
    }

    /// Whatever is buffered, emptying the buffer.
    pub fn take(&mut self) -> &[u8] {
        let len = core::mem::take(&mut self.len);
        &self.bytes[..len]
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_flushes_long_ones() {
        let mut b = LineBuffer::new();
        for &c in b"ab\r" {
            assert!(b.push(c).is_none());
        }
        assert_eq!(b.push(b'\n').unwrap(), b"ab");
        for _ in 0..LINE_MAX - 1 {
            assert!(b.push(b'x').is_none());
        }
        assert_eq!(b.push(b'y').unwrap().len(), LINE_MAX);
        assert!(b.is_empty());
    }
}
