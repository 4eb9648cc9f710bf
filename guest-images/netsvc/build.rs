//! Links the guest with the guest layout for its target: linker/guest-aarch64.ld
//! (arm64 Image at 0x4008_0000) or linker/guest-arm.ld (zImage-style at 0x4000_8000).
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let script = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("arm") => "guest-arm.ld",
        _ => "guest-aarch64.ld",
    };
    let script = manifest.join("../../linker").join(script);
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());
}
