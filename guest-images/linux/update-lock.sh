#!/usr/bin/env bash
# Re-pins guest-images/linux/packages.lock to what Debian's archive has today:
# the kernel that bookworm's linux-image-arm64 metapackage depends on
# (linux-image-<abi>-arm64) and busybox-static, both arm64; with --arch armhf,
# packages-armhf.lock: the kernel that linux-image-armmp-lpae depends on
# (linux-image-<abi>-armmp-lpae) and busybox-static, both armhf.
#
#   guest-images/linux/update-lock.sh [--arch arm64|armhf] [--security] [--dry-run]
#
#   --arch       arm64 (default) or armhf
#   default      bookworm + bookworm-updates: the point-release kernel, which
#                stays in the pool until the next point release
#   --security   also bookworm-security: the newest kernel, replaced sooner
#   --dry-run    print the new lock instead of writing it
#
# Uses a private apt configuration under CHROMA_LINUX_CACHE/apt (apt-armhf for
# armhf; default <repo>/build/linux/cache/apt): never 'dpkg --add-architecture', never the
# system's apt lists or state. Versions, sizes and SHA-256 come from the
# Packages indices that apt verified against the archive's signed Release
# files (debian-archive-keyring). Review the diff, run build.sh and
# test-qemu.sh, and commit the lock.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
security= dry= arch=arm64
usage() { echo "usage: $0 [--arch arm64|armhf] [--security] [--dry-run]" >&2; exit 64; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --security) security=1 ;;
        --dry-run) dry=1 ;;
        --arch) [[ $# -ge 2 ]] || usage; arch=$2; shift ;;
        --arch=*) arch=${1#--arch=} ;;
        *) usage ;;
    esac
    shift
done
# arch -> the kernel metapackage, the flavour suffix of the kernel package it
# depends on, the lock file, the private apt directory
case $arch in
    arm64) meta=linux-image-arm64 flavour=arm64 lockname=packages.lock aptname=apt ;;
    armhf) meta=linux-image-armmp-lpae flavour=armmp-lpae lockname=packages-armhf.lock aptname=apt-armhf ;;
    *) echo "update-lock.sh: unknown architecture '$arch' (arm64 or armhf)" >&2; exit 64 ;;
esac
mirror=${CHROMA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
secmirror=${CHROMA_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -f $keyring ]] || { echo "update-lock.sh: needs $keyring (apt-get install debian-archive-keyring)" >&2; exit 4; }

apt=${CHROMA_LINUX_CACHE:-$repo/build/linux/cache}/$aptname
mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
{
    echo "deb [arch=$arch signed-by=$keyring] $mirror bookworm main"
    echo "deb [arch=$arch signed-by=$keyring] $mirror bookworm-updates main"
    [[ -z $security ]] || echo "deb [arch=$arch signed-by=$keyring] $secmirror bookworm-security main"
} >"$apt/sources.list"
opts=(-o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
      -o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
      -o "Dir::State::status=/dev/null" -o "APT::Architectures::=$arch"
      -o "APT::Architecture=$arch" -o "Debug::NoLocking=1")
rm -f "$apt/lists/"*_Packages* 2>/dev/null || true
timeout 600 apt-get "${opts[@]}" -q update >&2

field() { # package version field
    apt-cache "${opts[@]}" show "$1=$2" | awk -v f="$3:" '$1 == f { print $2; exit }'
}
candidate() {
    apt-cache "${opts[@]}" policy "$1" | awk '$1 == "Candidate:" { print $2 }'
}

meta_ver=$(candidate "$meta")
[[ -n $meta_ver && $meta_ver != "(none)" ]] || { echo "update-lock.sh: no $meta for $arch" >&2; exit 1; }
kpkg=$(apt-cache "${opts[@]}" show "$meta=$meta_ver" | sed -n 's/^Depends: //p' | head -1 \
       | tr ',' '\n' | sed 's/^ *//' | grep -oE "^linux-image-[0-9][^ ]*-$flavour( |\$)" | sed 's/ $//' | head -1)
[[ -n $kpkg ]] || { echo "update-lock.sh: $meta=$meta_ver depends on no linux-image-<abi>-$flavour" >&2; exit 1; }
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
    echo "$1 $2 $arch $sha $size $base $path"
}

new=$(cat <<EOF
# guest-images/linux/$lockname: the Debian $arch packages the Linux guest
# image is built from (read by build.sh$([[ $arch == arm64 ]] || echo " --arch $arch"); rewritten by update-lock.sh$([[ $arch == arm64 ]] || echo " --arch $arch")).
#
# Resolved $(date -u +%Y-%m-%d) from bookworm$([[ -n $security ]] && echo ", bookworm-security") (main, $arch):
#   $meta $meta_ver  ->  $kpkg (= $kver)
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
    echo "$new" >"$here/$lockname"
    echo "update-lock.sh: wrote $here/$lockname ($kpkg $kver, busybox-static $bver)" >&2
    git -C "$repo" diff --stat -- "guest-images/linux/$lockname" >&2 || true
fi
