#!/usr/bin/env bash
# Re-pins guest-images/linux/packages.lock to what Debian's archive has today:
# the kernel that bookworm's linux-image-arm64 metapackage depends on
# (linux-image-<abi>-arm64) and busybox-static, both arm64.
#
#   guest-images/linux/update-lock.sh [--security] [--dry-run]
#
#   default      bookworm + bookworm-updates: the point-release kernel, which
#                stays in the pool until the next point release
#   --security   also bookworm-security: the newest kernel, replaced sooner
#   --dry-run    print the new lock instead of writing it
#
# Uses a private apt configuration under CHROMA_LINUX_CACHE/apt (default
# <repo>/build/linux/cache/apt): never 'dpkg --add-architecture', never the
# system's apt lists or state. Versions, sizes and SHA-256 come from the
# Packages indices that apt verified against the archive's signed Release
# files (debian-archive-keyring). Review the diff, run build.sh and
# test-qemu.sh, and commit the lock.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
security= dry=
for arg in "$@"; do
    case $arg in
        --security) security=1 ;;
        --dry-run) dry=1 ;;
        *) echo "usage: $0 [--security] [--dry-run]" >&2; exit 64 ;;
    esac
done
mirror=${CHROMA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
secmirror=${CHROMA_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -f $keyring ]] || { echo "update-lock.sh: needs $keyring (apt-get install debian-archive-keyring)" >&2; exit 4; }

apt=${CHROMA_LINUX_CACHE:-$repo/build/linux/cache}/apt
mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
{
    echo "deb [arch=arm64 signed-by=$keyring] $mirror bookworm main"
    echo "deb [arch=arm64 signed-by=$keyring] $mirror bookworm-updates main"
    [[ -z $security ]] || echo "deb [arch=arm64 signed-by=$keyring] $secmirror bookworm-security main"
} >"$apt/sources.list"
opts=(-o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
      -o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
      -o "Dir::State::status=/dev/null" -o "APT::Architectures::=arm64"
      -o "APT::Architecture=arm64" -o "Debug::NoLocking=1")
rm -f "$apt/lists/"*_Packages* 2>/dev/null || true
timeout 600 apt-get "${opts[@]}" -q update >&2

field() { # package version field
    apt-cache "${opts[@]}" show "$1=$2" | awk -v f="$3:" '$1 == f { print $2; exit }'
}
candidate() {
    apt-cache "${opts[@]}" policy "$1" | awk '$1 == "Candidate:" { print $2 }'
}

meta_ver=$(candidate linux-image-arm64)
[[ -n $meta_ver && $meta_ver != "(none)" ]] || { echo "update-lock.sh: no linux-image-arm64 for arm64" >&2; exit 1; }
kpkg=$(apt-cache "${opts[@]}" show "linux-image-arm64=$meta_ver" | sed -n 's/^Depends: //p' | head -1 \
       | tr ',' '\n' | sed 's/^ *//' | grep -oE '^linux-image-[0-9][^ ]*-arm64' | head -1)
[[ -n $kpkg ]] || { echo "update-lock.sh: linux-image-arm64=$meta_ver depends on no linux-image-<abi>-arm64" >&2; exit 1; }
kver=$(candidate "$kpkg")
bver=$(candidate busybox-static)

line() { # package version
    local path sha size base
    path=$(field "$1" "$2" Filename)
    sha=$(field "$1" "$2" SHA256)
    size=$(field "$1" "$2" Size)
    [[ -n $path && -n $sha && -n $size ]] || { echo "update-lock.sh: incomplete index entry for $1=$2" >&2; exit 1; }
    case $path in
        pool/updates/*) base=http://deb.debian.org/debian-security ;;
        *) base=http://deb.debian.org/debian ;;
    esac
    echo "$1 $2 arm64 $sha $size $base $path"
}

new=$(cat <<EOF
# guest-images/linux/packages.lock: the Debian arm64 packages the Linux guest
# image is built from (read by build.sh; rewritten by update-lock.sh).
#
# Resolved $(date -u +%Y-%m-%d) from bookworm$([[ -n $security ]] && echo ", bookworm-security") (main, arm64):
#   linux-image-arm64 $meta_ver  ->  $kpkg (= $kver)
$([[ -n $security ]] && echo "# (bookworm-security kernel: replaced in the pool at its next security upload.)" || echo "# (point-release kernel: stays in the pool until the next point release.)")
#
# One package a line, whitespace-separated:
#   name version arch sha256 size archive pool-path
# The .deb is fetched from <archive>/<pool-path> (archive may be overridden
# with CHROMA_DEBIAN_MIRROR / CHROMA_DEBIAN_SECURITY_MIRROR) and must match
# sha256 and size exactly.
$(line "$kpkg" "$kver")
$(line busybox-static "$bver")
EOF
)
if [[ -n $dry ]]; then
    echo "$new"
else
    echo "$new" >"$here/packages.lock"
    echo "update-lock.sh: wrote $here/packages.lock ($kpkg $kver, busybox-static $bver)" >&2
    git -C "$repo" diff --stat -- guest-images/linux/packages.lock >&2 || true
fi
