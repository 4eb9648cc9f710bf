//! Fuzzes the virtio-mmio register file with hostile access streams.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chroma_virtio::fuzzing::fuzz_transport(data));
