//! Fuzzes the board device-tree parser, raw and on mutated real trees.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    chroma_fuzz::record("board_dtb", chroma_fuzz::devtree::fuzz_board(data));
});
