//! Fuzzes the guest device-tree builder, whose output must parse back.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    chroma_fuzz::record("guest_dtb", chroma_fuzz::devtree::fuzz_guest(data));
});
