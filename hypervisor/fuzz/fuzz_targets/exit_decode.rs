//! Fuzzes the AArch64 syndrome decoder on arbitrary ESR/FAR/HPFAR.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    chroma_fuzz::record("exit_decode", chroma_fuzz::exit::fuzz_decode(data));
});
