//! Fuzzes the split virtqueue and net datapath with hostile ring memory.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chroma_virtio::fuzzing::fuzz_queue(data));
