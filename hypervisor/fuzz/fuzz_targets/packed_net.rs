//! Fuzzes the whole virtio-net device on packed rings: a hostile driver
//! writes anything over its rings and buffers while the device polls TX,
//! pushes RX and flushes, and a healthy packed neighbour must keep working.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Without a selector byte and one chunk nothing is written.
    let outcome = if data.len() < 2 {
        chroma_fuzz::Outcome::Rejected
    } else {
        chroma_virtio::fuzzing::fuzz_packed_net(data);
        chroma_fuzz::Outcome::Exercised
    };
    chroma_fuzz::record("packed_net", outcome);
});
