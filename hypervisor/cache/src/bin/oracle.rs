//! The aliasing oracle: runs the real virtio-net backend over the cache simulator.
//!
//! `cargo run --release -p chroma-cache --bin oracle -- [--quick] [--ops N] [--seeds K]`
//! (or `-- --exhaustive [--max-size N]`: every interleaving of the ring
//! protocol with its maintenance, `chroma_cache::sim::exhaustive`) prints one row per ring, geometry and policy and exits non-zero if a
//! correct-policy row shows a stale read or lost write or maintains more
//! than 1.05 times the protocol minimum of lines per packet, or a negative
//! control shows none. On bare-metal targets this binary is an empty shell
//! (the simulator needs std), so the crate still builds for them.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_os = "none"))]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--exhaustive") {
        std::process::exit(chroma_cache::sim::exhaustive::main_exhaustive(&args));
    }
    let code = match chroma_cache::sim::oracle::parse_args(&args) {
        Ok(options) => chroma_cache::sim::oracle::main_with(options),
        Err(message) => {
            eprintln!("{message}");
            2
        }
    };
    std::process::exit(code);
}
