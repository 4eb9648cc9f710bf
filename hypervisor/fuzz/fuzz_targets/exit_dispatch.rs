//! Fuzzes exit dispatch of decoded traps on a fake vCPU.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    chroma_fuzz::record("exit_dispatch", chroma_fuzz::exit::fuzz_dispatch(data));
});
