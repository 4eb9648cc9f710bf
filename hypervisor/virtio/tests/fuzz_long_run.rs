//! A deterministic long run of the fuzz entry points, so `cargo test`
//! exercises them without cargo-fuzz: random inputs from a fixed seed.
#![allow(clippy::cast_possible_truncation)]

use chroma_virtio::fuzzing::{fuzz_queue, fuzz_transport};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = (self.next() as usize) % max;
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn fuzz_queue_deterministic_run() {
    let mut rng = Rng(0x5eed_0001);
    for _ in 0..1500 {
        fuzz_queue(&rng.bytes(3000));
    }
}

#[test]
fn fuzz_transport_deterministic_run() {
    let mut rng = Rng(0x5eed_0002);
    for _ in 0..1500 {
        fuzz_transport(&rng.bytes(2000));
    }
}
