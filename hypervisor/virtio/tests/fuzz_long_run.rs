//! A deterministic long run of the fuzz entry points, so `cargo test`
//! exercises them without cargo-fuzz: random inputs from a fixed seed.
#![allow(clippy::cast_possible_truncation)]

use chroma_virtio::fuzzing::{fuzz_packed_net, fuzz_queue, fuzz_transport};

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

#[test]
fn fuzz_packed_net_deterministic_run() {
    let mut rng = Rng(0x5eed_0003);
    let (mut taken, mut resets) = (0u64, 0u32);
    for _ in 0..1500 {
        let report = fuzz_packed_net(&rng.bytes(3000));
        taken += report.chains_taken;
        resets += u32::from(report.needs_reset);
    }
    eprintln!("packed net fuzz: {taken} TX chains taken, {resets} of 1500 runs ended in DEVICE_NEEDS_RESET");
    // The random rings reach both the data path and the error paths.
    assert!(taken > 0 && resets > 0 && resets < 1500);
}

#[test]
fn fuzz_gso_deterministic_run() {
    use chroma_virtio::fuzzing::fuzz_gso;
    let mut rng = Rng(0x5eed_0004);
    let (mut refused, mut accepted, mut cut) = (0u64, 0u64, 0u64);
    for _ in 0..600 {
        // Mostly few mutations, so some frames stay valid.
        let mut bytes = rng.bytes(400);
        for chunk in bytes.chunks_mut(9).skip(1).step_by(2) {
            if let Some(m) = chunk.get_mut(8) {
                *m &= 0xf8 | u8::from(rng.next().is_multiple_of(4));
            }
        }
        let report = fuzz_gso(&bytes);
        refused += report.refused;
        accepted += report.accepted;
        cut += report.cut;
    }
    eprintln!("gso fuzz: {accepted} GSO frames accepted, {cut} cut, {refused} refused");
    // The random frames reach both the refusals and the segmentation.
    assert!(accepted > 0 && cut > 0 && refused > 0);
}
