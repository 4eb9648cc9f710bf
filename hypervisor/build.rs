//! Passes the board's linker script to the final link of the bare-metal image.
use std::env;
use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap())
        .join("..")
        .join("linker");
    let board = if env::var_os("CARGO_FEATURE_BOARD_QEMU_VIRT_AARCH64").is_some() {
        "qemu-virt-aarch64"
    } else if env::var_os("CARGO_FEATURE_BOARD_RPI4").is_some()
        || env::var_os("CARGO_FEATURE_BOARD_RPI3").is_some()
    {
        // Both Pis load the image at 0x80000.
        "rpi"
    } else if env::var_os("CARGO_FEATURE_BOARD_QEMU_VIRT_ARM").is_some() {
        "qemu-virt-arm"
    } else {
        return;
    };
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-L{}", root.display());
        println!(
            "cargo:rustc-link-arg-bins=-T{}",
            root.join(board).join("memory.ld").display()
        );
        println!("cargo:rerun-if-changed={}", root.display());
    }
}
