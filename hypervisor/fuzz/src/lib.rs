//! Harnesses of the cargo-fuzz targets in `fuzz_targets/`, one module per
//! area, and the count every target keeps of what its inputs reached.
//!
//! Each harness takes arbitrary bytes and returns an [`Outcome`]: whether
//! the input reached the code under test ([`Outcome::Exercised`]) or was
//! turned away before it (too short to decode, or refused by the first
//! format check, such as a bad magic number) ([`Outcome::Rejected`]). A
//! target counts both and prints them when libFuzzer exits; `smoke.sh`
//! fails a target whose exercised share is zero or tiny, so an iteration
//! that checks nothing is counted, not silently passed.

pub mod config;
pub mod devtree;
pub mod exit;
pub mod manifest;
pub mod vgic;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Once, OnceLock};

/// What one fuzz input reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Turned away before the code under test did anything worth checking.
    Rejected,
    /// Reached the code under test, and its invariants held.
    Exercised,
}

static TARGET: OnceLock<&'static str> = OnceLock::new();
static EXERCISED: AtomicU64 = AtomicU64::new(0);
static REJECTED: AtomicU64 = AtomicU64::new(0);
static REGISTER: Once = Once::new();

extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
}

/// Prints the counts; libFuzzer ends with `exit()`, which runs this.
extern "C" fn print_counts() {
    eprintln!("{}", count_line());
}

/// The line `smoke.sh` reads: `fuzz-count: TARGET exercised=N rejected=M`.
pub fn count_line() -> String {
    format!(
        "fuzz-count: {} exercised={} rejected={}",
        TARGET.get().copied().unwrap_or("?"),
        EXERCISED.load(Ordering::Relaxed),
        REJECTED.load(Ordering::Relaxed)
    )
}

/// Counts `outcome` for `target` (the first call registers the exit report).
pub fn record(target: &'static str, outcome: Outcome) {
    REGISTER.call_once(|| {
        let _ = TARGET.set(target);
        // SAFETY: `print_counts` is a plain `extern "C" fn()` that lives as long as the process; `atexit` only stores the pointer.
        unsafe {
            atexit(print_counts);
        }
    });
    match outcome {
        Outcome::Exercised => EXERCISED.fetch_add(1, Ordering::Relaxed),
        Outcome::Rejected => REJECTED.fetch_add(1, Ordering::Relaxed),
    };
}

/// Reads fuzz bytes front to back; past the end it yields zeros (and says so).
#[derive(Clone, Debug)]
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// Bytes left.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        let (&first, rest) = self.data.split_first().unwrap_or((&0, &[]));
        self.data = rest;
        first
    }

    /// The next `N` bytes, zero-padded.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        for byte in &mut out {
            *byte = self.u8();
        }
        out
    }

    /// Little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    /// Little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    /// Little-endian u64.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(usize::MAX)
    }
}
