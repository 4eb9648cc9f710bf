#!/usr/bin/env bash
# Fetches the Raspberry Pi boot firmware from Debian's raspi-firmware package
# (component non-free-firmware, pinned in packages.lock) and unpacks the files
# a boot partition needs:
#
#   scripts/raspi-firmware/fetch.sh [OUTDIR]     # default OUTDIR: <repo>/build/raspi-firmware
#
# Outputs:
#   OUTDIR/boot/       every file of the package's /usr/lib/raspi-firmware/
#                      (bootcode.bin, start*.elf, fixup*.dat)
#   OUTDIR/boot/raspi-firmware.copyright
#                      the package's /usr/share/doc/raspi-firmware/copyright
#                      (the firmware's licence asks for it beside the files)
#   OUTDIR/manifest.txt  the pin and the SHA-256 of every file in boot/
#
# Environment (all optional):
#   CHROMA_RASPI_FIRMWARE_CACHE  download cache (default: OUTDIR/cache)
#   CHROMA_DEBIAN_MIRROR         replaces http://deb.debian.org/debian
#   CHROMA_RASPI_FIRMWARE_LOCK   another lock file (default: packages.lock here)
#
# Idempotent: when OUTDIR holds files unpacked from the same lock and script,
# it only says so. Nothing is fetched but the archive URL in the lock, and the
# .deb must match its pinned SHA-256 and size. The URL is the pool path, so
# the host's apt sources need not list non-free-firmware (update-lock.sh
# resolves the pin with a private apt configuration that does).
#
# Exit status: 0 unpacked or up to date; 1 the package could not be fetched;
# 2 a checksum mismatch; 3 the package contents were not as expected; 4 a
# missing host tool; 64 bad usage.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
me="scripts/raspi-firmware/fetch.sh"

die() { local code=$1; shift; echo "$me: error: $*" >&2; exit "$code"; }
say() { echo "$me: $*" >&2; }

case ${1:-} in
    -h|--help) sed -n '2,29p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die 64 "unknown option $1 (usage: $me [OUTDIR])" ;;
esac
[[ $# -le 1 ]] || die 64 "usage: $me [OUTDIR]"
out=${1:-$repo/build/raspi-firmware}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cache=${CHROMA_RASPI_FIRMWARE_CACHE:-$out/cache}
mkdir -p "$cache"
lock=${CHROMA_RASPI_FIRMWARE_LOCK:-$here/packages.lock}

for tool in sha256sum dpkg-deb; do
    command -v "$tool" >/dev/null || die 4 "needs '$tool' on the host (apt-get install $(case $tool in dpkg-deb) echo dpkg ;; *) echo coreutils ;; esac))"
done
if command -v curl >/dev/null; then fetcher=curl
elif command -v wget >/dev/null; then fetcher=wget
else die 4 "needs curl or wget on the host (apt-get install curl)"; fi

# --- the lock: exactly one raspi-firmware line
name= version= sha= size= url=
while read -r n v debarch s z archive path rest; do
    [[ -z $n || $n == \#* ]] && continue
    [[ -n $path && -z $rest ]] || die 3 "$lock: malformed line for '$n'"
    [[ $n == raspi-firmware ]] || die 3 "$lock: unexpected package '$n' (only raspi-firmware)"
    [[ -z $name ]] || die 3 "$lock: raspi-firmware pinned twice"
    [[ $debarch == all ]] || die 3 "$lock: raspi-firmware is Architecture: all, not $debarch"
    [[ $s =~ ^[0-9a-f]{64}$ ]] || die 3 "$lock: bad sha256 for $n"
    [[ $archive == http://deb.debian.org/debian ]] && archive=${CHROMA_DEBIAN_MIRROR:-$archive}
    name=$n version=$v sha=$s size=$z url=$archive/$path
done <"$lock"
[[ -n $name ]] || die 3 "$lock pins no raspi-firmware"

# One run at a time per output directory (parallel tests may all ask).
if command -v flock >/dev/null; then
    exec 9>"$cache/.lock"
    flock -w 600 9 || die 1 "timed out waiting for another fetch.sh (lock $cache/.lock)"
fi

stamp=$( { cat "$lock" "${BASH_SOURCE[0]}"; } | sha256sum | cut -d' ' -f1)
if [[ -f $out/.stamp && $(cat "$out/.stamp") == "$stamp" && -s $out/manifest.txt && -s $out/boot/start4.elf ]]; then
    say "up to date: $out/boot ($name $version)"
    exit 0
fi

# --- fetch and check
deb=$cache/${url##*/}
if ! [[ -f $deb && $(sha256sum <"$deb" | cut -d' ' -f1) == "$sha" ]]; then
    say "fetching $name=$version from $url"
    rm -f "$deb.part"
    if [[ $fetcher == curl ]]; then
        fetched() { curl -fsSL --retry 3 --connect-timeout 20 -o "$deb.part" "$url"; }
    else
        fetched() { wget -q --tries=3 --timeout=20 -O "$deb.part" "$url"; }
    fi
    if ! fetched; then
        rm -f "$deb.part"
        die 1 "could not fetch $name=$version from $url.
  Either there is no network to the Debian archive, or the pinned version has
  left the archive. To re-pin to what the archive has today:
  scripts/raspi-firmware/update-lock.sh (then review and commit packages.lock)."
    fi
    got=$(sha256sum <"$deb.part" | cut -d' ' -f1)
    got_size=$(stat -c %s "$deb.part")
    if [[ $got != "$sha" || $got_size != "$size" ]]; then
        mv -f "$deb.part" "$deb.rejected"
        die 2 "SHA-256 MISMATCH for $name=$version
  url:      $url
  expected: $sha ($size bytes)
  got:      $got ($got_size bytes)
  Refusing to use it (kept as $deb.rejected for inspection)."
    fi
    mv -f "$deb.part" "$deb"
fi

# --- unpack the boot files
work=$(mktemp -d "$cache/work.XXXXXX")
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$deb" "$work/pkg" || die 3 "dpkg-deb -x failed on $deb"
src=$work/pkg/usr/lib/raspi-firmware
mkdir -p "$work/boot"
for required in bootcode.bin start.elf fixup.dat start4.elf fixup4.dat; do
    [[ -s $src/$required ]] || die 3 "$name $version has no /usr/lib/raspi-firmware/$required"
done
cp "$src"/* "$work/boot/"
copyright=$work/pkg/usr/share/doc/raspi-firmware/copyright
[[ -s $copyright ]] || die 3 "$name $version has no /usr/share/doc/raspi-firmware/copyright"
cp "$copyright" "$work/boot/raspi-firmware.copyright"
{
    echo "# Raspberry Pi boot firmware, unpacked by $me"
    echo "package $name $version sha256 $sha"
    (cd "$work/boot" && sha256sum -- * | sort -k2)
} >"$work/manifest.txt"

rm -f "$out/.stamp"
rm -rf "$out/boot"
mv "$work/boot" "$out/boot"
mv -f "$work/manifest.txt" "$out/manifest.txt"
echo "$stamp" >"$out/.stamp"
say "unpacked $name $version into $out/boot ($(ls "$out/boot" | wc -l) files)"
