#!/usr/bin/env bash
# Re-pins scripts/raspi-firmware/packages.lock to the raspi-firmware package
# that Debian's archive has today in bookworm (+ bookworm-updates), component
# non-free-firmware.
#
#   scripts/raspi-firmware/update-lock.sh [--dry-run]
#
# Uses a private apt configuration under CHROMA_RASPI_FIRMWARE_CACHE/apt
# (default <repo>/build/raspi-firmware/cache/apt) that lists non-free-firmware
# itself, so it works on a host whose apt sources do not: never the system's
# apt lists, sources or state. Version, size and SHA-256 come from the
# Packages index that apt verified against the archive's signed Release file
# (debian-archive-keyring). Review the diff, run `cargo xtask sdcard` and its
# test (tests/tests/sdcard.rs), and commit the lock.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
dry=
case ${1:-} in
    --dry-run) dry=1 ;;
    "") ;;
    *) echo "usage: $0 [--dry-run]" >&2; exit 64 ;;
esac
mirror=${CHROMA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -f $keyring ]] || { echo "update-lock.sh: needs $keyring (apt-get install debian-archive-keyring)" >&2; exit 4; }

# raspi-firmware is Architecture: all; arm64's index lists it like any other.
apt=${CHROMA_RASPI_FIRMWARE_CACHE:-$repo/build/raspi-firmware/cache}/apt
mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
{
    echo "deb [arch=arm64 signed-by=$keyring] $mirror bookworm non-free-firmware"
    echo "deb [arch=arm64 signed-by=$keyring] $mirror bookworm-updates non-free-firmware"
} >"$apt/sources.list"
opts=(-o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
      -o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
      -o "Dir::State::status=/dev/null" -o "APT::Architectures::=arm64"
      -o "APT::Architecture=arm64" -o "Debug::NoLocking=1")
rm -f "$apt/lists/"*_Packages* 2>/dev/null || true
timeout 600 apt-get "${opts[@]}" -q update >&2

version=$(apt-cache "${opts[@]}" policy raspi-firmware | awk '$1 == "Candidate:" { print $2 }')
[[ -n $version && $version != "(none)" ]] || { echo "update-lock.sh: no raspi-firmware in bookworm non-free-firmware" >&2; exit 1; }
field() { apt-cache "${opts[@]}" show "raspi-firmware=$version" | awk -v f="$1:" '$1 == f { print $2; exit }'; }
path=$(field Filename) sha=$(field SHA256) size=$(field Size) arch=$(field Architecture)
[[ -n $path && -n $sha && -n $size && $arch == all ]] \
    || { echo "update-lock.sh: incomplete index entry for raspi-firmware=$version" >&2; exit 1; }

new=$(cat <<EOF
# scripts/raspi-firmware/packages.lock: the Debian package the Raspberry Pi
# boot firmware on \`cargo xtask sdcard\`'s images comes from (read by
# fetch.sh; rewritten by update-lock.sh).
#
# Resolved $(date -u +%Y-%m-%d) from bookworm + bookworm-updates (non-free-firmware):
#   raspi-firmware $version (Architecture: all)
#
# One package a line, whitespace-separated:
#   name version arch sha256 size archive pool-path
# The .deb is fetched from <archive>/<pool-path> (archive may be overridden
# with CHROMA_DEBIAN_MIRROR) and must match sha256 and size exactly.
raspi-firmware $version all $sha $size http://deb.debian.org/debian $path
EOF
)
if [[ -n $dry ]]; then
    echo "$new"
else
    echo "$new" >"$here/packages.lock"
    echo "update-lock.sh: wrote $here/packages.lock (raspi-firmware $version)" >&2
    git -C "$repo" diff --stat -- scripts/raspi-firmware/packages.lock >&2 || true
fi
