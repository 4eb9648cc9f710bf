//! Host-only: a write-back cache simulator that really aliases, and the oracle.
//!
//! - [`machine`]: the cache, the backing memory, the truth and the checker;
//! - [`memory`]: `GuestMemory` for the hypervisor's alias (what the real
//!   backend runs on) and the guest driver's access path;
//! - [`driver`]: a simulated guest virtio-net driver;
//! - [`oracle`]: the rows (geometry x peer x policy), negative controls
//!   included, and the table.

pub mod driver;
pub mod exhaustive;
pub mod machine;
pub mod memory;
pub mod oracle;

/// xorshift64*: small, fast, deterministic per seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; zero is remapped).
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// The next 64 random bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..bound` (`bound > 0`).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}
