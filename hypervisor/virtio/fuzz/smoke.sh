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
for target in queue transport; do
    mkdir -p "corpus/$target"
    echo "fuzz smoke: $target for ${seconds}s"
    cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=1024
done
echo "fuzz smoke: no crash"
