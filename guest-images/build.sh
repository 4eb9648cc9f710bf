#!/usr/bin/env bash
# Builds every no_std test guest into build/guests/<name>.bin (arm64 Image),
# or with --arch arm the 32-bit (ARMv7-A / AArch32) guests into
# build/guests-arm/<name>.bin (zImage-style, linked at 0x4000_8000). Each
# .bin comes with its .elf (for gdb).
#
#   guest-images/build.sh [--arch aarch64|arm] [NAME...]   # default: aarch64, all guests
#
# The arm build has no `hostile` (it probes AArch64 system registers).
#
# Environment (all optional):
#   CARGO_TARGET_DIR  where cargo builds (default: /tmp/target-guests)
#   OUT_DIR           where the images go (default: <repo>/build/guests, or
#                     <repo>/build/guests-arm with --arch arm)
#   RUSTC, CARGO      the toolchain (default: /usr/bin/rustc, /usr/bin/cargo:
#                     Debian's rustc with its rust-src, built with build-std)
#   LLD               the linker (default: /usr/lib/llvm-19/bin/ld.lld)
#   OBJCOPY           (default: the first of rust-objcopy from Debian's rustc,
#                     llvm-19's llvm-objcopy, llvm-objcopy-19 that runs)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
arch=aarch64
if [[ ${1:-} == --arch ]]; then
    arch=${2:-}; shift 2 || { echo "build.sh: --arch needs aarch64 or arm" >&2; exit 2; }
elif [[ ${1:-} == --arch=* ]]; then
    arch=${1#--arch=}; shift
fi
case $arch in
    aarch64)
        target=aarch64-unknown-none-softfloat
        all_guests=(probe crasher netsvc netclient hostile)
        default_out=$repo/build/guests ;;
    arm)
        target=armv7a-none-eabi
        all_guests=(probe crasher netsvc netclient)
        default_out=$repo/build/guests-arm ;;
    *) echo "build.sh: unknown --arch '$arch' (aarch64 or arm)" >&2; exit 2 ;;
esac
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/target-guests}
out=${OUT_DIR:-$default_out}
export RUSTC=${RUSTC:-/usr/bin/rustc}
cargo=${CARGO:-/usr/bin/cargo}
lld=${LLD:-/usr/lib/llvm-19/bin/ld.lld}
objcopy=${OBJCOPY:-}
if [[ -z $objcopy ]]; then
    for candidate in /usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-objcopy \
        /usr/lib/llvm-19/bin/llvm-objcopy "$(command -v llvm-objcopy-19 || true)"; do
        # Present is not enough: it must run (a rust-objcopy may lack its libLLVM).
        if [[ -n $candidate && -x $candidate ]] && "$candidate" --version >/dev/null 2>&1; then
            objcopy=$candidate; break
        fi
    done
fi
[[ -n $objcopy ]] || { echo "build.sh: no objcopy found (set OBJCOPY)" >&2; exit 1; }

guests=("$@")
[[ ${#guests[@]} -gt 0 ]] || guests=("${all_guests[@]}")

packages=()
for guest in "${guests[@]}"; do packages+=(-p "chroma-guest-$guest"); done

# Debian's rustc has no prebuilt core for the bare-metal target, so core is
# built from rust-src (build-std, hence RUSTC_BOOTSTRAP). The linker is
# Debian's ld.lld: the target's default, rust-lld, is not shipped by Debian.
# The linker script comes from each guest's build.rs (-Tlinker/guest-aarch64.ld
# or -Tlinker/guest-arm.ld, by target).
# RUSTFLAGS is cleared so the repo's .cargo/config.toml target rustflags
# (static relocation model) apply.
cd "$repo"
env -u RUSTFLAGS RUSTC_BOOTSTRAP=1 \
    CARGO_TARGET_AARCH64_UNKNOWN_NONE_SOFTFLOAT_LINKER="$lld" \
    CARGO_TARGET_ARMV7A_NONE_EABI_LINKER="$lld" \
    "$cargo" build --release --target "$target" \
    -Zbuild-std=core,alloc,compiler_builtins -Zbuild-std-features=compiler-builtins-mem \
    "${packages[@]}"

mkdir -p "$out"
for guest in "${guests[@]}"; do
    elf=$CARGO_TARGET_DIR/$target/release/chroma-guest-$guest
    "$objcopy" -O binary "$elf" "$out/$guest.bin"
    cp "$elf" "$out/$guest.elf"
    echo "build.sh: $out/$guest.bin ($(stat -c %s "$out/$guest.bin") bytes)"
done
