//! FNV-1a 64 over a byte stream, and the xorshift64 byte stream the client sends.

/// FNV-1a, 64-bit (offset basis 0xcbf29ce484222325, prime 0x100000001b3),
/// fed in chunks of any size.
#[derive(Clone, Copy, Debug)]
pub struct Fnv64 {
    state: u64,
    length: u64,
}

impl Fnv64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    /// The hash of nothing.
    pub const fn new() -> Self {
        Self {
            state: Self::OFFSET_BASIS,
            length: 0,
        }
    }

    /// Feeds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        let mut state = self.state;
        for &byte in bytes {
            state = (state ^ u64::from(byte)).wrapping_mul(Self::PRIME);
        }
        self.state = state;
        self.length = self.length.wrapping_add(bytes.len() as u64);
    }

    /// The hash so far.
    pub fn value(&self) -> u64 {
        self.state
    }

    /// How many bytes were fed.
    pub fn length(&self) -> u64 {
        self.length
    }
}

impl Default for Fnv64 {
    fn default() -> Self {
        Self::new()
    }
}

/// An endless byte stream from xorshift64 (Marsaglia's 13/7/17 triple): each
/// state word gives 8 bytes, little-endian, so the stream does not depend on
/// how it is cut into chunks.
#[derive(Clone, Copy, Debug)]
pub struct XorShiftStream {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl XorShiftStream {
    /// A stream from `seed` (0 is replaced by a fixed non-zero seed: xorshift
    /// has no zero state).
    pub fn new(seed: u64) -> Self {
        Self {
            state: if seed == 0 {
                0x9e37_79b9_7f4a_7c15
            } else {
                seed
            },
            word: [0; 8],
            used: 8,
        }
    }

    fn next_word(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    /// Fills `out` with the next bytes of the stream.
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut position = 0;
        // Finish the current word.
        while position < out.len() && self.used < 8 {
            out[position] = self.word[self.used];
            self.used += 1;
            position += 1;
        }
        // Whole words.
        let mut chunks = out[position..].chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_word().to_le_bytes());
        }
        // A partial word at the end.
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            self.word = self.next_word().to_le_bytes();
            let count = tail.len();
            tail.copy_from_slice(&self.word[..count]);
            self.used = count;
        }
    }
}
