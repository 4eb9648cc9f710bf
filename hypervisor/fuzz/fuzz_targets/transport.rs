//! Fuzzes the virtio-mmio register file with hostile access streams.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Accesses are 7 bytes after the first: shorter inputs make none.
    let outcome = if data.len() < 8 {
        chroma_fuzz::Outcome::Rejected
    } else {
        chroma_virtio::fuzzing::fuzz_transport(data);
        chroma_fuzz::Outcome::Exercised
    };
    chroma_fuzz::record("transport", outcome);
});
