#!/usr/bin/env bash
# Bounded fuzz smoke run: every cargo-fuzz target of this crate for
# FUZZ_SECONDS (default 4) each, after one build of them all. Fails on a
# crash, and on a target whose inputs never reach the code under test:
# each target prints `fuzz-count: NAME exercised=N rejected=M` at exit, and
# a target whose exercised share is below FUZZ_MIN_PERCENT (default 1) of
# its inputs fails, so an iteration that checks nothing is counted, not
# silently passed. FUZZ_TARGETS (space-separated) runs a subset.
# Needs `cargo install cargo-fuzz` and a rustc that accepts -Z flags
# (RUSTC_BOOTSTRAP=1 is set here for a stable toolchain).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-4}"
min_percent="${FUZZ_MIN_PERCENT:-1}"
targets="${FUZZ_TARGETS:-queue packed_queue packed_net gso transport vgic exit_decode exit_dispatch board_dtb guest_dtb config manifest}"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-/tmp/target-chroma-fuzz}}"
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
started=$SECONDS
# One build of every target (one crate, one cargo invocation).
cargo fuzz build --sanitizer "$sanitizer"
echo "fuzz smoke: built in $((SECONDS - started)) s"
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=()
summary=()
for target in $targets; do
    mkdir -p "corpus/$target"
    seeds=()
    if [ -d "seeds/$target" ]; then
        seeds=("seeds/$target")
    fi
    echo "fuzz smoke: $target for ${seconds}s"
    log="$logs/$target.log"
    if ! cargo fuzz run --sanitizer "$sanitizer" "$target" "corpus/$target" "${seeds[@]}" -- \
        -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=1024 -print_final_stats=1 \
        >"$log" 2>&1; then
        tail -n 60 "$log"
        failed+=("$target (crashed)")
        summary+=("$target: CRASHED")
        continue
    fi
    counts=$(grep '^fuzz-count: ' "$log" | tail -n 1 || true)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ -z "$counts" ]; then
        tail -n 20 "$log"
        failed+=("$target (no fuzz-count line)")
        summary+=("$target: no count")
        continue
    fi
    exercised=$(sed -n 's/.* exercised=\([0-9]*\).*/\1/p' <<<"$counts")
    rejected=$(sed -n 's/.* rejected=\([0-9]*\).*/\1/p' <<<"$counts")
    total=$((exercised + rejected))
    line="$target: ${runs:-?} runs, $exercised exercised, $rejected rejected"
    if [ "$exercised" -eq 0 ] || [ $((exercised * 100)) -lt $((total * min_percent)) ]; then
        failed+=("$target (exercised $exercised of $total, under ${min_percent}%)")
        line="$line: FAILED (under ${min_percent}% exercised)"
    fi
    summary+=("$line")
    echo "fuzz smoke: $line"
done
echo "fuzz smoke: summary after $((SECONDS - started)) s"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    printf 'fuzz smoke: FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "fuzz smoke: no crash, every target exercised"
