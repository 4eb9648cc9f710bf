//! Fuzzes the packed virtqueue with a hostile driver writing its ring.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Without a configuration byte and one operation nothing runs.
    let outcome = if data.len() < 2 {
        chroma_fuzz::Outcome::Rejected
    } else {
        chroma_virtio::packed::fuzzing::fuzz_packed_queue(data);
        chroma_fuzz::Outcome::Exercised
    };
    chroma_fuzz::record("packed_queue", outcome);
});
