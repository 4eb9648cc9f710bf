//! Fuzzes the split virtqueue and net datapath with hostile ring memory.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Without a selector byte and one chunk the rings are never touched.
    let outcome = if data.len() < 2 {
        chroma_fuzz::Outcome::Rejected
    } else {
        chroma_virtio::fuzzing::fuzz_queue(data);
        chroma_fuzz::Outcome::Exercised
    };
    chroma_fuzz::record("queue", outcome);
});
