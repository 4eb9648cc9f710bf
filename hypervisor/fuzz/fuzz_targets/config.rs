//! Fuzzes the TOML configuration parser.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    chroma_fuzz::record("config", chroma_fuzz::config::fuzz(data));
});
