//! Fuzzes the vGIC register model with hostile distributor/redistributor access streams.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    chroma_fuzz::record("vgic", chroma_fuzz::vgic::fuzz(data));
});
