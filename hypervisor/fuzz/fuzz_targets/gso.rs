//! Fuzzes TCP segmentation offload: a hostile driver sends TCP GSO frames
//! built and then mutated from the input (header fields, IP/TCP bytes,
//! lengths, buffer counts) to a receiver that takes them whole or cut;
//! nothing may panic, a port without GUEST_TSO never gets more than an
//! Ethernet frame, and the receiver keeps forwarding.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // A selector byte and one frame's nine parameter bytes at least.
    let outcome = if data.len() < 10 {
        chroma_fuzz::Outcome::Rejected
    } else {
        chroma_virtio::fuzzing::fuzz_gso(data);
        chroma_fuzz::Outcome::Exercised
    };
    chroma_fuzz::record("gso", outcome);
});
