#!/usr/bin/env bash
# Installs what building, running and testing chroma needs, idempotently.
#
# Quick (no apt, no network) when everything is already there. Installs:
#   - the cross toolchain: rustup's targets when the user already has them,
#     otherwise Debian's rustc-web/cargo-web/rust-web-src (used with build-std);
#   - lld-19, the linker .cargo/config.toml names for the bare-metal targets;
#   - qemu-system-arm (gives qemu-system-aarch64) and device-tree-compiler;
#   - gdb-multiarch (optional: only warns when it cannot be installed);
#   - cargo-fuzz (optional: the virtio fuzz smoke is skipped without it).
set -euo pipefail

# Targets the images build for. When rustup already has every one of them,
# xtask uses rustup's toolchain; otherwise Debian's toolchain with build-std.
# (armv7a-none-eabi joins this list with the ARMv7 back-end.)
CROSS_TARGETS=(aarch64-unknown-none-softfloat)

APT_TIMEOUT=${CHROMA_APT_TIMEOUT:-900}
CARGO_INSTALL_TIMEOUT=${CHROMA_CARGO_INSTALL_TIMEOUT:-900}

log() { printf 'setup: %s\n' "$*" >&2; }

# Runs a command as root (directly when we are root, else through sudo).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "need root for: $*"
        return 1
    fi
}

# True when the Debian package $1 is installed.
have_package() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}

APT_UPDATED=0
# Installs the Debian packages given, running `apt-get update` once first.
apt_install() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive timeout "$APT_TIMEOUT" apt-get update -q >&2
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive timeout "$APT_TIMEOUT" \
        apt-get install -y -q --no-install-recommends "$@" >&2
}

# True when rustup's toolchain has every cross target.
rustup_has_targets() {
    command -v rustup >/dev/null 2>&1 || return 1
    local installed
    installed=$(rustup target list --installed 2>/dev/null) || return 1
    local target
    for target in "${CROSS_TARGETS[@]}"; do
        grep -qx "$target" <<<"$installed" || return 1
    done
}

required=(qemu-system-arm device-tree-compiler lld-19)
if rustup_has_targets; then
    log "cross toolchain: rustup (${CROSS_TARGETS[*]})"
    # xtask turns ELF into flat images with rust-objcopy (rustup's llvm-tools
    # component) or llvm-objcopy; Debian's llvm-19 has the latter.
    sysroot=$(rustc --print sysroot 2>/dev/null || true)
    if ! ls "$sysroot"/lib/rustlib/*/bin/rust-objcopy >/dev/null 2>&1 \
        && ! command -v llvm-objcopy-19 >/dev/null 2>&1 \
        && ! command -v llvm-objcopy >/dev/null 2>&1; then
        required+=(llvm-19)
    fi
else
    required+=(rustc-web cargo-web rust-web-src)
fi

missing=()
for package in "${required[@]}"; do
    have_package "$package" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
fi

# The host toolchain runs xtask itself: rustup's cargo, or Debian's as a fallback.
if ! command -v cargo >/dev/null 2>&1; then
    log "no cargo in PATH: installing Debian's cargo-web for the host build"
    have_package cargo-web || apt_install rustc-web cargo-web rust-web-src lld-19
fi

if ! have_package gdb-multiarch; then
    if ! apt_install gdb-multiarch; then
        log "warning: gdb-multiarch is not installed; 'run.sh --gdb' needs a gdb for aarch64"
    fi
fi

if command -v cargo >/dev/null 2>&1 && ! cargo fuzz --version >/dev/null 2>&1 \
    && ! [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo-fuzz" ]; then
    log "installing cargo-fuzz (cargo install --locked cargo-fuzz)"
    if ! timeout "$CARGO_INSTALL_TIMEOUT" cargo install --locked cargo-fuzz >&2; then
        log "warning: could not install cargo-fuzz; the virtio fuzz smoke test will report it missing"
    fi
fi
exit 0
