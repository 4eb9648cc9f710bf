#!/usr/bin/env bash
# Bounded fuzz smoke run: each cargo-fuzz target for FUZZ_SECONDS (default 20);
# exits non-zero on a crash. Needs `cargo install cargo-fuzz` and a rustc that
# accepts -Z flags (RUSTC_BOOTSTRAP=1 is set here for a stable toolchain).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-20}"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-/tmp/target-virtio-fuzz}}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "smoke.sh: cargo-fuzz is not installed (cargo install cargo-fuzz)" >&2
    exit 2
fi
# AddressSanitizer needs the compiler's ASan runtime: rustup's toolchains
# ship it, Debian's rustc-web does not. The targets are safe Rust, so
# without it libFuzzer still runs them (coverage-guided, panics caught).
sanitizer=address
host=$(rustc -vV | sed -n 's/^host: //p')
if ! ls "$(rustc --print sysroot)/lib/rustlib/$host/lib/"librustc-*_rt.asan.a >/dev/null 2>&1; then
    echo "fuzz smoke: this rustc has no ASan runtime (Debian's rustc-web): running without a sanitizer"
    sanitizer=none
fi
for target in queue transport; do
    mkdir -p "corpus/$target"
    echo "fuzz smoke: $target for ${seconds}s"
    cargo fuzz run --sanitizer "$sanitizer" "$target" "corpus/$target" -- -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=1024
done
echo "fuzz smoke: no crash"
