//! Fuzzes the binary VM manifest parser and builder round trip.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    chroma_fuzz::record("manifest", chroma_fuzz::manifest::fuzz(data));
});
