//! The hypervisor image's sections start on the page boundaries its stage-1
//! map relies on: text, read-only data and data each begin a page, and
//! read-only data begins exactly at `__text_end` (the end of what is mapped
//! executable) and ends at `__rodata_end`. Otherwise the first page of
//! read-only data would be mapped with the text, executable.
//!
//! Negative control (measured): without `ALIGN(4096)` on `.rodata` in
//! `linker/common.ld`, lld starts it right after `.text` (0x400c13f8 with
//! `__text_end` at 0x400c2000 on qemu-virt-aarch64) and this test fails.

use std::path::PathBuf;
use std::process::Command;

use chroma_systest::workspace_root;

const LLVM_BIN: &str = "/usr/lib/llvm-19/bin";

/// The image `cargo xtask build --board <board>` links for `target`.
fn image(target: &str) -> PathBuf {
    workspace_root().join(format!("target/cross/{target}/release/chroma"))
}

fn run(tool: &str, elf: &PathBuf) -> String {
    let output = Command::new(format!("{LLVM_BIN}/{tool}"))
        .args(if tool == "llvm-readelf" {
            &["-S", "-W"][..]
        } else {
            &[][..]
        })
        .arg(elf)
        .output()
        .unwrap_or_else(|error| panic!("{tool} ({error}): install llvm-19"));
    assert!(output.status.success(), "{tool} {}", elf.display());
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The address of section `name` from `llvm-readelf -S -W`.
fn section(headers: &str, name: &str) -> u64 {
    headers
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(']').nth(1)?.split_whitespace().collect();
            (fields.first() == Some(&name)).then(|| u64::from_str_radix(fields[2], 16).ok())?
        })
        .unwrap_or_else(|| panic!("no section {name}:\n{headers}"))
}

/// The value of symbol `name` from `llvm-nm`.
fn symbol(symbols: &str, name: &str) -> u64 {
    symbols
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.last() == Some(&name)).then(|| u64::from_str_radix(fields[0], 16).ok())?
        })
        .unwrap_or_else(|| panic!("no symbol {name}"))
}

fn check(target: &str) {
    let elf = image(target);
    assert!(
        elf.exists(),
        "{} not built (cargo xtask build)",
        elf.display()
    );
    let (headers, symbols) = (run("llvm-readelf", &elf), run("llvm-nm", &elf));
    let (text, rodata, data) = (
        section(&headers, ".text"),
        section(&headers, ".rodata"),
        section(&headers, ".data"),
    );
    for (name, address) in [(".text", text), (".rodata", rodata), (".data", data)] {
        assert_eq!(address % 4096, 0, "{target}: {name} at {address:#x}");
    }
    assert_eq!(
        rodata,
        symbol(&symbols, "__text_end"),
        "{target}: .rodata vs __text_end"
    );
    assert_eq!(
        data,
        symbol(&symbols, "__rodata_end"),
        "{target}: .data vs __rodata_end"
    );
}

#[test]
fn the_aarch64_image_starts_each_section_on_its_own_page() {
    check("aarch64-unknown-none-softfloat");
}

#[test]
fn the_armv7_image_starts_each_section_on_its_own_page() {
    check("armv7a-none-eabi");
}
