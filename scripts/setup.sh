#!/usr/bin/env bash
# Installs what building, running and testing chroma needs, idempotently.
#
# Works on a fresh Debian 12 with nothing but apt and git, and on a machine
# whose rustup toolchain is broken in parts (e.g. a rust-objcopy that cannot
# load its LLVM library). Every tool counts as present only once it has run
# (`TOOL --version`); what does not run is installed from Debian. Quick (no
# apt, no network, well under a second) when everything is already there.
#
# Installs:
#   - the cross toolchain: rustup's when it already has the bare-metal
#     targets, otherwise Debian's rustc-web/cargo-web/rust-web-src (used with
#     build-std); Debian's cargo-web is also the host cargo when there is none;
#   - rustfmt-web and rust-web-clippy, so that `cargo fmt` and `cargo clippy`
#     run for Debian's cargo;
#   - lld-19 (the bare-metal linker .cargo/config.toml names) and llvm-19:
#     llvm-objcopy-19 when no other objcopy runs, and always the tools the
#     system tests run from /usr/lib/llvm-19/bin (llvm-mc assembles the
#     AArch32 test kernels, llvm-readelf and llvm-nm read the image's
#     layout), which a working rust-objcopy does not bring;
#   - g++ (libfuzzer-sys, built by the fuzz smoke stage, compiles C++);
#   - qemu-system-arm 10 from bookworm-backports (an apt source entry
#     /etc/apt/sources.list.d/chroma-bookworm-backports.list is added unless
#     one exists); with Debian 12's QEMU 7.2 everything still runs but what
#     needs 10 says so; and device-tree-compiler;
#   - python3, curl and xz-utils (the Linux guest is built from Debian's
#     archive; some system tests use them on the host), procps (kill),
#     socat (the pty pair of the hardware-in-the-loop test's stand-in board);
#   - mtools and fdisk (sfdisk): the SD-card test reads `cargo xtask
#     sdcard`'s image with them, a reader independent of the one that wrote it;
#   - gdb-multiarch (optional: only warns when it cannot be installed);
#   - cargo-fuzz with `cargo install` (optional: without it the fuzz smoke
#     stage fails and says why).
#
# Environment: CHROMA_QEMU (another QEMU binary; then no QEMU is installed),
# CHROMA_APT_TIMEOUT, CHROMA_CARGO_INSTALL_TIMEOUT (seconds, default 900).
set -euo pipefail

# Targets the images build for. When rustup already has every one of them,
# xtask uses rustup's toolchain; otherwise Debian's toolchain with build-std.
# (armv7a-none-eabi joins this list with the ARMv7 back-end.)
CROSS_TARGETS=(aarch64-unknown-none-softfloat)
# What xtask and guest-images/build.sh use from Debian (keep in step with
# scripts/xtask/src/toolchain.rs).
DEBIAN_CARGO=/usr/bin/cargo
DEBIAN_RUSTC=/usr/bin/rustc
DEBIAN_RUST_SRC=/usr/lib/rustlib/src/rust/library
LINKER=/usr/lib/llvm-19/bin/ld.lld
# Where the system tests find llvm-mc, llvm-readelf and llvm-nm.
LLVM_BIN=/usr/lib/llvm-19/bin
QEMU=${CHROMA_QEMU:-qemu-system-aarch64}
# The QEMU release setup installs (from bookworm-backports on Debian 12).
QEMU_WANTED_MAJOR=10
BACKPORTS_LIST=/etc/apt/sources.list.d/chroma-bookworm-backports.list

APT_TIMEOUT=${CHROMA_APT_TIMEOUT:-900}
CARGO_INSTALL_TIMEOUT=${CHROMA_CARGO_INSTALL_TIMEOUT:-900}

log() { printf 'setup: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# True when `$1 --version` (or the given arguments) runs and exits 0.
runs() {
    local program=$1
    shift
    [ $# -gt 0 ] || set -- --version
    "$program" "$@" >/dev/null 2>&1 </dev/null
}

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

APT_UPDATED=0
INSTALLED=0
# Runs `apt-get update` once.
apt_update() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive timeout "$APT_TIMEOUT" apt-get update -q >&2
        APT_UPDATED=1
    fi
}

# Installs Debian packages: apt_install [-t RELEASE] PACKAGE...
apt_install() {
    apt_update
    log "apt-get install $*"
    INSTALLED=1
    as_root env DEBIAN_FRONTEND=noninteractive timeout "$APT_TIMEOUT" \
        apt-get install -y -q --no-install-recommends "$@" >&2
}

# True when rustup's toolchain runs and has every cross target.
rustup_has_targets() {
    command -v rustup >/dev/null 2>&1 || return 1
    runs cargo && runs rustc || return 1
    local installed target
    installed=$(rustup target list --installed 2>/dev/null) || return 1
    for target in "${CROSS_TARGETS[@]}"; do
        grep -qx "$target" <<<"$installed" || return 1
    done
}

# True when Debian's cross toolchain (with build-std's source) runs.
debian_toolchain_runs() {
    runs "$DEBIAN_CARGO" && runs "$DEBIAN_RUSTC" && [ -d "$DEBIAN_RUST_SRC/core" ]
}

# True when some objcopy that writes flat binaries runs (the candidates of
# scripts/xtask/src/toolchain.rs, in its order).
objcopy_runs() {
    local candidate sysroot
    for candidate in /usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-objcopy; do
        runs "$candidate" && return 0
    done
    if sysroot=$(rustc --print sysroot 2>/dev/null); then
        for candidate in "$sysroot"/lib/rustlib/*/bin/rust-objcopy; do
            [ -e "$candidate" ] && runs "$candidate" && return 0
        done
    fi
    for candidate in /usr/lib/llvm-19/bin/llvm-objcopy llvm-objcopy-19 llvm-objcopy; do
        runs "$candidate" && return 0
    done
    return 1
}

# True when the LLVM tools the system tests run by path all run.
llvm_tools_run() {
    local tool
    for tool in llvm-mc llvm-readelf llvm-nm; do
        runs "$LLVM_BIN/$tool" || return 1
    done
}

# The major version of the QEMU that runs, or nothing.
qemu_major() {
    local text
    text=$("$QEMU" --version 2>/dev/null </dev/null) || return 0
    sed -n '1s/.*version \([0-9][0-9]*\)\..*/\1/p' <<<"$text"
}

# The release codename (bookworm on Debian 12), or nothing.
codename() {
    ( . /etc/os-release 2>/dev/null && printf '%s' "${VERSION_CODENAME:-}" ) || true
}

# The apt source files apt reads (one-line and deb822 formats).
apt_source_files() {
    local file
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$file" ] && printf '%s\n' "$file"
    done
}

# True when an enabled apt source already names the suite $1.
have_apt_suite() {
    local suite=$1 file
    while read -r file; do
        case $file in
            *.sources)
                # deb822: a stanza with the suite and not `Enabled: no`.
                awk -v suite="$suite" '
                    BEGIN { RS = "" }
                    {
                        enabled = 1; found = 0
                        n = split($0, lines, "\n")
                        for (i = 1; i <= n; i++) {
                            if (lines[i] ~ /^[[:space:]]*#/) continue
                            if (lines[i] ~ /^Enabled:[[:space:]]*no/) enabled = 0
                            if (lines[i] ~ /^Suites:/) {
                                m = split(lines[i], words, /[[:space:]]+/)
                                for (j = 2; j <= m; j++) if (words[j] == suite) found = 1
                            }
                        }
                        if (enabled && found) { hit = 1 }
                    }
                    END { exit hit ? 0 : 1 }' "$file" && return 0
                ;;
            *)
                grep -Eq "^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?[^[:space:]]+[[:space:]]+$suite([[:space:]]|$)" "$file" && return 0
                ;;
        esac
    done < <(apt_source_files)
    return 1
}

# The archive URI the system already uses for suite $1 (default deb.debian.org).
apt_mirror_for() {
    local suite=$1 file uri=
    while read -r file; do
        case $file in
            *.sources)
                uri=$(awk -v suite="$suite" '
                    BEGIN { RS = "" }
                    {
                        u = ""; found = 0
                        n = split($0, lines, "\n")
                        for (i = 1; i <= n; i++) {
                            if (lines[i] ~ /^URIs:/) { split(lines[i], w, /[[:space:]]+/); u = w[2] }
                            if (lines[i] ~ /^Suites:/) {
                                m = split(lines[i], words, /[[:space:]]+/)
                                for (j = 2; j <= m; j++) if (words[j] == suite) found = 1
                            }
                        }
                        if (found && u != "") { print u; exit }
                    }' "$file")
                ;;
            *)
                uri=$(sed -En "s/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+)[[:space:]]+$suite[[:space:]].*/\2/p" "$file" | head -n 1)
                ;;
        esac
        if [ -n "$uri" ]; then
            printf '%s' "$uri"
            return
        fi
    done < <(apt_source_files)
    printf '%s' http://deb.debian.org/debian
}

# Adds bookworm-backports to apt's sources unless an entry exists already.
ensure_backports_source() {
    have_apt_suite bookworm-backports && return 0
    local mirror
    mirror=$(apt_mirror_for bookworm)
    log "adding bookworm-backports ($mirror) as $BACKPORTS_LIST"
    printf '# Added by chroma scripts/setup.sh: QEMU 10 (qemu-system-arm) from backports.\ndeb %s bookworm-backports main\n' \
        "$mirror" | as_root tee "$BACKPORTS_LIST" >/dev/null
    APT_UPDATED=0
}

# --- what is missing (checked by running each tool)
missing=()
want() { missing+=("$@"); }

if ! runs cargo && ! runs "$DEBIAN_CARGO"; then
    log "no cargo runs: Debian's cargo-web will be the host cargo"
    want cargo-web rustc-web
fi
if rustup_has_targets; then
    toolchain=rustup
else
    toolchain=debian
    debian_toolchain_runs || want rustc-web cargo-web rust-web-src
    # The bare-metal clippy stage runs Debian's cargo-clippy by path (its
    # clippy-driver matches Debian's rustc), whatever the host cargo is.
    runs /usr/bin/cargo-clippy || want rust-web-clippy
fi
runs "$LINKER" || want lld-19
objcopy_runs || want llvm-19
# The system tests' assembler and ELF readers (tests/tests/aarch32.rs, layout.rs).
llvm_tools_run || want llvm-19
# `cargo fmt`/`cargo clippy` for the host cargo xtask runs under (Debian's
# when that is the one; rustup's come from its own components).
if ! cargo fmt --version >/dev/null 2>&1 </dev/null; then want rustfmt-web; fi
if ! cargo clippy --version >/dev/null 2>&1 </dev/null; then want rust-web-clippy; fi
runs cc && runs c++ || want g++
runs dtc || want device-tree-compiler
runs python3 || want python3
runs curl || want curl
runs xz || want xz-utils
runs mtools -V || want mtools
runs sfdisk --version || want fdisk
# The system tests run kill(1) (not the shell's builtin).
type -P kill >/dev/null || want procps
# The hardware-in-the-loop test's stand-in cable: a pty pair
# (scripts/hil/qemu-board.sh, tests/tests/hil.rs).
runs socat -V || want socat

if [ "${#missing[@]}" -gt 0 ]; then
    # Each package once, in order.
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++')
    apt_install "${missing[@]}"
fi

# --- QEMU: 10 from bookworm-backports; Debian 12's own 7.2 still works.
major=$(qemu_major)
if [ -n "${CHROMA_QEMU:-}" ]; then
    [ -n "$major" ] || die "CHROMA_QEMU=$CHROMA_QEMU does not run"
elif [ "${major:-0}" -lt "$QEMU_WANTED_MAJOR" ]; then
    if [ "$(codename)" = bookworm ]; then
        ensure_backports_source
        if ! apt_install -t bookworm-backports qemu-system-arm; then
            log "warning: could not install qemu-system-arm from bookworm-backports"
            [ -n "$major" ] || apt_install qemu-system-arm || true
        fi
    else
        apt_install qemu-system-arm || true
    fi
    major=$(qemu_major)
    [ -n "$major" ] || die "$QEMU does not run after installing qemu-system-arm"
    if [ "$major" -lt "$QEMU_WANTED_MAJOR" ]; then
        log "warning: QEMU $major is older than $QEMU_WANTED_MAJOR: tests that need QEMU $QEMU_WANTED_MAJOR skip and say so"
    fi
fi

# --- after an install, every required tool must run
failed=()
if [ "$INSTALLED" -eq 1 ]; then
    if [ "$toolchain" = debian ]; then
        debian_toolchain_runs || failed+=("Debian's rustc-web/cargo-web/rust-web-src")
    fi
    runs cargo || runs "$DEBIAN_CARGO" || failed+=("cargo")
    runs "$LINKER" || failed+=("$LINKER (lld-19)")
    objcopy_runs || failed+=("llvm-objcopy-19 (llvm-19)")
    llvm_tools_run || failed+=("llvm-mc, llvm-readelf, llvm-nm in $LLVM_BIN (llvm-19)")
    runs c++ || failed+=("c++ (g++)")
    runs dtc || failed+=("dtc (device-tree-compiler)")
    for tool in python3 curl xz; do runs "$tool" || failed+=("$tool"); done
    runs mtools -V || failed+=("mtools")
    runs sfdisk --version || failed+=("sfdisk (fdisk)")
    [ "${#failed[@]}" -eq 0 ] || die "these still do not run: ${failed[*]}"
    cargo fmt --version >/dev/null 2>&1 </dev/null \
        || log "warning: \`cargo fmt\` does not run for $(command -v cargo) (rustup: rustup component add rustfmt)"
    cargo clippy --version >/dev/null 2>&1 </dev/null \
        || log "warning: \`cargo clippy\` does not run for $(command -v cargo) (rustup: rustup component add clippy)"
fi

# --- optional tools
if ! runs gdb-multiarch; then
    # Next to QEMU from backports (which brings libelf1 from there), gdb's
    # libdw1 must come from backports too.
    gdb_release=()
    if [ "$(codename)" = bookworm ] && have_apt_suite bookworm-backports; then
        gdb_release=(-t bookworm-backports)
    fi
    if ! apt_install "${gdb_release[@]}" gdb-multiarch; then
        log "warning: gdb-multiarch is not installed; 'run.sh --gdb' needs a gdb for aarch64"
    fi
fi

if ! cargo fuzz --version >/dev/null 2>&1 </dev/null; then
    log "installing cargo-fuzz (cargo install --locked cargo-fuzz)"
    if ! timeout "$CARGO_INSTALL_TIMEOUT" cargo install --locked cargo-fuzz >&2; then
        log "warning: could not install cargo-fuzz; the virtio fuzz smoke test will report it missing"
    fi
fi
exit 0
