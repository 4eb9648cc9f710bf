#!/usr/bin/env bash
# Builds chroma's Linux guest from Debian's arm64 packages (packages.lock),
# or with --arch armhf from Debian's armhf packages (packages-armhf.lock):
#
#   guest-images/linux/build.sh [OUTDIR]              # default OUTDIR: <repo>/build/linux
#   guest-images/linux/build.sh --arch armhf [OUTDIR] # default OUTDIR: <repo>/build/linux-armhf
#
# Outputs:
#   OUTDIR/Image               arm64: the kernel, uncompressed arm64 Image
#   OUTDIR/zImage              armhf: the kernel as Debian ships it (zImage)
#   OUTDIR/initramfs.cpio.gz   busybox-static + applet links, the virtio-net
#                              modules, /init (guest-images/linux/init)
#   OUTDIR/dtbs/bcm2711-rpi-4-b.dtb, OUTDIR/dtbs/bcm2837-rpi-3-b.dtb
#                              arm64: the Raspberry Pi 4 B and 3 B device trees
#                              from the same kernel package (QEMU's raspi4b
#                              boots chroma with the first: --board rpi4)
#   OUTDIR/manifest.txt        what went in (package pins, kernel ABI, modules,
#                              the SHA-256 of every output)
#
# Environment (all optional):
#   CHROMA_LINUX_CACHE            download cache (default: <repo>/build/linux/cache)
#   CHROMA_DEBIAN_MIRROR          replaces http://deb.debian.org/debian
#   CHROMA_DEBIAN_SECURITY_MIRROR replaces http://deb.debian.org/debian-security
#   CHROMA_LINUX_FORCE=1          rebuild even when the outputs are up to date
#   CHROMA_LINUX_LOCK             another lock file (default: packages.lock here,
#                                 packages-armhf.lock for --arch armhf)
#
# Idempotent: when OUTDIR holds outputs built from the same lock, init and
# build script, it only says so and exits 0. Nothing is fetched from anywhere
# but the Debian archive URLs in the lock, and every .deb must match its
# pinned SHA-256 and size.
#
# Exit status: 0 built or up to date; 1 a pinned package could not be fetched
# (left the archive, or no network); 2 a checksum mismatch; 3 the package
# contents were not as expected; 4 a missing host tool; 64 bad usage.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
me="guest-images/linux/build.sh"
init=$here/init

die() { local code=$1; shift; echo "$me: error: $*" >&2; exit "$code"; }
say() { echo "$me: $*" >&2; }

usage="usage: $me [--arch arm64|armhf] [OUTDIR]"
arch=arm64 outarg=
while [[ $# -gt 0 ]]; do
    case $1 in
        -h|--help) sed -n '2,35p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        --arch) [[ $# -ge 2 ]] || die 64 "$usage"; arch=$2; shift ;;
        --arch=*) arch=${1#--arch=} ;;
        -*) die 64 "unknown option $1 ($usage)" ;;
        *) [[ -z $outarg ]] || die 64 "$usage"; outarg=$1 ;;
    esac
    shift
done
# arch -> default lock and OUTDIR, the kernel package's flavour suffix, the
# kernel file written to OUTDIR, the device trees copied to OUTDIR/dtbs
# (paths under the package's /usr/lib/linux-image-<abi>/)
case $arch in
    arm64) lockname=packages.lock outname=linux flavour=arm64 kimage=Image
           dtbs=(broadcom/bcm2711-rpi-4-b.dtb broadcom/bcm2837-rpi-3-b.dtb) ;;
    armhf) lockname=packages-armhf.lock outname=linux-armhf flavour=armmp-lpae kimage=zImage
           dtbs=() ;;
    *) die 64 "unknown architecture '$arch' ($usage)" ;;
esac
lock=${CHROMA_LINUX_LOCK:-$here/$lockname}
out=${outarg:-$repo/build/$outname}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cache=${CHROMA_LINUX_CACHE:-$repo/build/linux/cache}
mkdir -p "$cache"

for tool in sha256sum dpkg-deb python3 xz; do
    command -v "$tool" >/dev/null || die 4 "needs '$tool' on the host (apt-get install $(case $tool in dpkg-deb) echo dpkg ;; sha256sum) echo coreutils ;; xz) echo xz-utils ;; *) echo "$tool" ;; esac))"
done
fetcher=
if command -v curl >/dev/null; then fetcher=curl
elif command -v wget >/dev/null; then fetcher=wget
else die 4 "needs curl or wget on the host (apt-get install curl)"; fi

# --- the lock
names=() versions=() shas=() sizes=() urls=()
while read -r name version debarch sha size archive path rest; do
    [[ -z $name || $name == \#* ]] && continue
    [[ -n $path && -z $rest ]] || die 3 "$lockname: malformed line for '$name'"
    [[ $debarch == "$arch" ]] || die 3 "$lockname: $name is not $arch"
    [[ $sha =~ ^[0-9a-f]{64}$ ]] || die 3 "$lockname: bad sha256 for $name"
    case $archive in
        http://deb.debian.org/debian) archive=${CHROMA_DEBIAN_MIRROR:-$archive} ;;
        http://deb.debian.org/debian-security) archive=${CHROMA_DEBIAN_SECURITY_MIRROR:-$archive} ;;
    esac
    names+=("$name") versions+=("$version") shas+=("$sha") sizes+=("$size") urls+=("$archive/$path")
done <"$lock"
kernel_idx= busybox_idx=
for i in "${!names[@]}"; do
    case ${names[$i]} in
        linux-image-*-"$flavour") kernel_idx=$i ;;
        busybox-static) busybox_idx=$i ;;
    esac
done
[[ -n $kernel_idx ]] || die 3 "$lockname pins no linux-image-<abi>-$flavour"
[[ -n $busybox_idx ]] || die 3 "$lockname pins no busybox-static"
abi=${names[$kernel_idx]#linux-image-}

# One build at a time per cache (parallel test runs may all ask for it).
if command -v flock >/dev/null; then
    exec 9>"$cache/.lock"
    flock -w 900 9 || die 1 "timed out waiting for another build.sh (lock $cache/.lock)"
fi

# --- up to date?
stamp=$( { cat "$lock" "$init" "${BASH_SOURCE[0]}"; } | sha256sum | cut -d' ' -f1)
dtbs_present=yes
for dtb in "${dtbs[@]}"; do
    [[ -s $out/dtbs/${dtb##*/} ]] || dtbs_present=
done
if [[ -z ${CHROMA_LINUX_FORCE:-} && -s $out/$kimage && -s $out/initramfs.cpio.gz \
      && -n $dtbs_present && -f $out/.stamp && $(cat "$out/.stamp") == "$stamp" ]]; then
    say "up to date: $out/$kimage, $out/initramfs.cpio.gz${dtbs[*]:+, $out/dtbs/} (kernel $abi)"
    exit 0
fi

# --- fetch and check
fetch() { # url dest
    if [[ $fetcher == curl ]]; then
        curl -fsSL --retry 3 --connect-timeout 20 -o "$2" "$1"
    else
        wget -q --tries=3 --timeout=20 -O "$2" "$1"
    fi
}
debs=()
for i in "${!names[@]}"; do
    url=${urls[$i]}
    deb=$cache/${url##*/}
    if [[ -f $deb ]] && [[ $(sha256sum <"$deb" | cut -d' ' -f1) == "${shas[$i]}" ]]; then
        debs+=("$deb"); continue
    fi
    say "fetching ${names[$i]}=${versions[$i]} from $url"
    rm -f "$deb.part"
    if ! fetch "$url" "$deb.part"; then
        rm -f "$deb.part"
        die 1 "could not fetch ${names[$i]}=${versions[$i]} from $url.
  Either there is no network to the Debian archive, or the pinned version has left
  the archive (superseded by a newer point release or security update).
  To re-pin to what the archive has today: guest-images/linux/update-lock.sh$([[ $arch == arm64 ]] || echo " --arch $arch")
  (then review and commit guest-images/linux/$lockname)."
    fi
    got=$(sha256sum <"$deb.part" | cut -d' ' -f1)
    got_size=$(stat -c %s "$deb.part")
    if [[ $got != "${shas[$i]}" || $got_size != "${sizes[$i]}" ]]; then
        mv -f "$deb.part" "$deb.rejected"
        die 2 "SHA-256 MISMATCH for ${names[$i]}=${versions[$i]}
  url:      $url
  expected: ${shas[$i]} ($((sizes[$i])) bytes)
  got:      $got ($got_size bytes)
  Refusing to use it (kept as $deb.rejected for inspection)."
    fi
    mv -f "$deb.part" "$deb"
    debs+=("$deb")
done

# --- extract
work=$(mktemp -d "$cache/work.XXXXXX")
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "${debs[$kernel_idx]}" "$work/kernel" || die 3 "dpkg-deb -x failed on ${debs[$kernel_idx]}"
dpkg-deb -x "${debs[$busybox_idx]}" "$work/busybox" || die 3 "dpkg-deb -x failed on ${debs[$busybox_idx]}"
vmlinuz=$work/kernel/boot/vmlinuz-$abi
[[ -f $vmlinuz ]] || die 3 "${names[$kernel_idx]} has no /boot/vmlinuz-$abi"
moddir=$work/kernel/lib/modules/$abi
[[ -d $moddir ]] || die 3 "${names[$kernel_idx]} has no /lib/modules/$abi"
bb=$work/busybox/bin/busybox
[[ -f $bb ]] || die 3 "busybox-static has no /bin/busybox"
# --- device trees: from the kernel package (a flattened device tree starts
# with the magic 0xd00dfeed, big-endian)
mkdir -p "$work/dtbs"
for dtb in "${dtbs[@]}"; do
    src=$work/kernel/usr/lib/linux-image-$abi/$dtb
    [[ -f $src ]] || die 3 "${names[$kernel_idx]} has no /usr/lib/linux-image-$abi/$dtb"
    [[ $(od -An -tx1 -N 4 "$src" | tr -d ' \n') == d00dfeed ]] \
        || die 3 "/usr/lib/linux-image-$abi/$dtb is not a flattened device tree"
    cp "$src" "$work/dtbs/${dtb##*/}"
done

if [[ $arch == arm64 ]]; then
# --- Image: the arm64 Image, gunzipped if Debian shipped it compressed
magic=$(head -c 2 "$vmlinuz" | od -An -tx1 | tr -d ' \n')
if [[ $magic == 1f8b ]]; then
    gzip -dc <"$vmlinuz" >"$work/Image"
else
    cp "$vmlinuz" "$work/Image"
fi
arm64_magic=$(dd if="$work/Image" bs=1 skip=56 count=4 2>/dev/null)
[[ $arm64_magic == ARMd ]] || die 3 "vmlinuz-$abi is not an arm64 Image (no ARMd magic at offset 56)"
else
# --- zImage: Debian's armhf vmlinuz as is (a self-decompressing zImage)
cp "$vmlinuz" "$work/zImage"
zmagic=$(od -An -tx4 -j 36 -N 4 "$work/zImage" | tr -d ' \n')
[[ $zmagic == 016f2818 ]] || die 3 "vmlinuz-$abi is not an ARM zImage (no magic 0x016f2818 at offset 0x24)"
fi

# --- initramfs (python3: newc cpio, reproducible: fixed mtime, uid 0, sorted)
python3 - "$work" "$moddir" "$bb" "$init" "$abi" <<'PY' || die 3 "building the initramfs failed"
import gzip, io, lzma, os, re, stat, subprocess, sys

work, moddir, bb, init, abi = sys.argv[1:6]
MTIME = 1700000000

def die(msg):
    sys.stderr.write("guest-images/linux/build.sh: error: %s\n" % msg)
    sys.exit(3)

# Modules needed for virtio-net over virtio-mmio, with their dependencies
# (from each module's .modinfo "depends="), skipping what is built in.
builtin = set()
with open(os.path.join(moddir, "modules.builtin")) as f:
    for line in f:
        builtin.add(os.path.basename(line.strip()).split(".ko")[0].replace("-", "_"))
index = {}
for root, _, files in os.walk(os.path.join(moddir, "kernel")):
    for fn in files:
        m = re.match(r"(.*)\.ko(\.xz|\.zst|\.gz)?$", fn)
        if m:
            index[m.group(1).replace("-", "_")] = os.path.join(root, fn)

def load(path):
    data = open(path, "rb").read()
    if path.endswith(".xz"):
        data = lzma.decompress(data)
    elif path.endswith(".gz"):
        data = gzip.decompress(data)
    elif path.endswith(".zst"):
        data = subprocess.run(["zstd", "-dc", path], check=True, stdout=subprocess.PIPE).stdout
    return data

def depends(data):
    m = re.search(rb"\x00depends=([^\x00]*)\x00", data)
    return [d.decode().replace("-", "_") for d in m.group(1).split(b",") if d] if m else []

order, modules, seen = [], {}, set()
def want(name, why):
    if name in seen:
        return
    seen.add(name)
    if name in builtin:
        return
    if name not in index:
        die("module %s (needed by %s) is neither built in nor in /lib/modules/%s" % (name, why, abi))
    data = load(index[name])
    vm = re.search(rb"\x00vermagic=([^ \x00]*)", data)
    if not vm or vm.group(1).decode() != abi:
        die("module %s: vermagic does not match %s" % (name, abi))
    for d in depends(data):
        want(d, name)
    order.append(name)
    modules[name] = data
for name in ("virtio", "virtio_ring", "virtio_mmio", "virtio_net"):
    want(name, "virtio-net over virtio-mmio")

# Busybox applets: the NUL-separated name table that starts "[\0[[\0"
# (the arm binary cannot run here to print --list).
bbdata = open(bb, "rb").read()
i = bbdata.find(b"[\x00[[\x00")
applets = []
if i >= 0:
    while True:
        j = bbdata.index(b"\x00", i)
        if j == i:
            break
        applets.append(bbdata[i:j].decode())
        i = j + 1
needed = ["sh", "ip", "ifconfig", "ping", "nc", "httpd", "wget", "sha256sum", "md5sum",
          "dd", "cat", "insmod", "mount", "sleep", "echo", "poweroff", "reboot", "seq",
          "head", "tr", "grep", "awk", "mkfifo", "tee", "wc", "setsid", "cttyhack", "ls"]
missing = [a for a in needed if a not in applets]
if missing:
    die("busybox applet table not found or incomplete (missing: %s)" % " ".join(missing))

entries = []  # (path, mode, data, rdev)
def d(path): entries.append((path, stat.S_IFDIR | 0o755, b"", (0, 0)))
def f(path, data, perm=0o644): entries.append((path, stat.S_IFREG | perm, data, (0, 0)))
def l(path, target): entries.append((path, stat.S_IFLNK | 0o777, target.encode(), (0, 0)))
def c(path, major, minor, perm=0o600): entries.append((path, stat.S_IFCHR | perm, b"", (major, minor)))

for p in ("bin", "dev", "etc", "lib", "lib/modules", "proc", "sys", "tmp", "run", "root", "www", "usr"):
    d(p)
l("sbin", "bin"); l("usr/bin", "../bin"); l("usr/sbin", "../bin")
c("dev/console", 5, 1); c("dev/null", 1, 3, 0o666); c("dev/ttyAMA0", 204, 64)
f("bin/busybox", bbdata, 0o755)
for a in applets:
    if a != "busybox" and "/" not in a:
        l("bin/" + a, "busybox")
f("init", open(init, "rb").read(), 0o755)
for name in order:
    f("lib/modules/%s.ko" % name, modules[name])
f("lib/modules/load-order", ("\n".join(order) + "\n").encode())
f("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
f("etc/group", b"root:x:0:\n")
f("etc/hostname", b"linux-guest\n")
f("etc/profile", b"export PATH=/bin PS1='linux-guest:\\w# '\n")
f("etc/chroma-guest", ("kernel %s\nmodules %s\napplets %d\n" % (abi, " ".join(order), len(applets))).encode())

out = io.BytesIO()
def rec(name, mode, data, rdev, ino):
    nb = name.encode() + b"\x00"
    hdr = "070701" + "".join("%08X" % v for v in (
        ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, MTIME, len(data),
        0, 0, rdev[0], rdev[1], len(nb), 0))
    out.write(hdr.encode() + nb)
    out.write(b"\x00" * (-(110 + len(nb)) % 4))
    out.write(data)
    out.write(b"\x00" * (-len(data) % 4))
for ino, (name, mode, data, rdev) in enumerate(sorted(entries), start=1):
    rec(name, mode, data, rdev, ino)
rec("TRAILER!!!", 0, b"", (0, 0), 0)
raw = out.getvalue()
with open(os.path.join(work, "initramfs.cpio.gz"), "wb") as fh:
    with gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, compresslevel=9, filename="") as gz:
        gz.write(raw)
with open(os.path.join(work, "modules.txt"), "w") as fh:
    fh.write(" ".join(order) + "\n")
print("initramfs: %d entries, %d applets, modules: %s, %d bytes (%d gzipped)" % (
    len(entries), len(applets), " ".join(order), len(raw),
    os.path.getsize(os.path.join(work, "initramfs.cpio.gz"))), file=sys.stderr)
PY

{
    echo "# chroma Linux guest, built by $me"
    for i in "${!names[@]}"; do
        echo "package ${names[$i]} ${versions[$i]} sha256 ${shas[$i]}"
    done
    echo "kernel-abi $abi"
    echo "modules $(cat "$work/modules.txt")"
    echo "$kimage sha256 $(sha256sum <"$work/$kimage" | cut -d' ' -f1)"
    if [[ $arch == arm64 ]]; then
    python3 - "$work/Image" <<'PY'
import struct, sys
hdr = open(sys.argv[1], "rb").read(64)
_, _, text_offset, image_size, flags = struct.unpack("<IIQQQ", hdr[:32])
print("Image text_offset 0x%x image_size 0x%x (%d bytes) flags 0x%x (%s, %s pages, %s)" % (
    text_offset, image_size, image_size, flags,
    "big-endian" if flags & 1 else "little-endian",
    {0: "unspecified", 1: "4K", 2: "16K", 3: "64K"}[(flags >> 1) & 3],
    "2 MiB-aligned base anywhere in RAM" if flags & 8 else "2 MiB-aligned base near the start of RAM"))
PY
    else
    python3 - "$work/zImage" "$work/kernel/boot/config-$abi" <<'PY'
import lzma, re, struct, sys, zlib
data = open(sys.argv[1], "rb").read()
magic, start, end = struct.unpack("<III", data[0x24:0x30])
# the compressed kernel inside (Kbuild appends its decompressed size, 4 bytes
# little-endian, right after the stream)
payload = "?"
# (the first match may be the decompressor's own copy of the magic)
cands = sorted((m.start(), name) for name, sig in (("xz", b"\xfd7zXZ\x00"), ("gzip", b"\x1f\x8b\x08"))
               for m in re.finditer(re.escape(sig), data))
for i, name in cands:
    try:
        if name == "xz":
            d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        else:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        n = len(d.decompress(data[i:]))
        tail = d.unused_data
        size = struct.unpack("<I", tail[:4])[0] if len(tail) >= 4 else -1
        payload = "%s at 0x%x, decompresses to %d bytes (%.1f MiB; appended size %d)" % (
            name, i, n, n / 1048576, size)
        break
    except Exception:
        continue
cfg = {}
try:
    for line in open(sys.argv[2]):
        m = re.match(r"(CONFIG_[A-Z0-9_]+)=(.*)", line)
        if m:
            cfg[m.group(1)] = m.group(2)
except OSError:
    pass
print("zImage magic 0x%08x start 0x%x end 0x%x (%d bytes; file %d bytes), position-independent: load in the first 128 MiB of RAM" % (
    magic, start, end, end - start, len(data)))
print("zImage config %s" % " ".join("%s=%s" % (k, cfg.get(k, "n")) for k in (
    "CONFIG_ARM_LPAE", "CONFIG_THUMB2_KERNEL", "CONFIG_KERNEL_GZIP", "CONFIG_KERNEL_XZ",
    "CONFIG_ARM_APPENDED_DTB", "CONFIG_AUTO_ZRELADDR", "CONFIG_ARM_PSCI", "CONFIG_HIGHMEM",
    "CONFIG_VMSPLIT_3G", "CONFIG_VMSPLIT_2G", "CONFIG_NR_CPUS")))
print("zImage payload %s" % payload)
# the zImage's size table (arch/arm/boot/compressed/vmlinux.lds.S: word 0x38
# points to it): "KLSZ", where the decompressed size sits, the kernel's BSS
# size, TEXT_OFFSET, the decompressor's heap
t = struct.unpack("<I", data[0x38:0x3c])[0]
if struct.unpack("<I", data[0x34:0x38])[0] == 0x45454545 and t + 24 <= len(data):
    n, klsz, size_at, bss, text_offset, malloc = struct.unpack("<6I", data[t:t + 24])
    if klsz == 0x5a534c4b and n >= 6:
        ksize = struct.unpack("<I", data[size_at:size_at + 4])[0]
        print("zImage kernel %d bytes + bss %d bytes = %d bytes (%.1f MiB), TEXT_OFFSET 0x%x: "
              "decompressed to (load address & ~0x7ffffff) + 0x%x (AUTO_ZRELADDR), page tables below it; "
              "decompressor heap 0x%x" % (ksize, bss, ksize + bss, (ksize + bss) / 1048576,
                                           text_offset, text_offset, malloc))
PY
    fi
    echo "initramfs.cpio.gz sha256 $(sha256sum <"$work/initramfs.cpio.gz" | cut -d' ' -f1)"
    for dtb in "${dtbs[@]}"; do
        echo "dtbs/${dtb##*/} sha256 $(sha256sum <"$work/dtbs/${dtb##*/}" | cut -d' ' -f1) (/usr/lib/linux-image-$abi/$dtb)"
    done
} >"$work/manifest.txt"

rm -f "$out/.stamp"
mv -f "$work/$kimage" "$out/$kimage"
mv -f "$work/initramfs.cpio.gz" "$out/initramfs.cpio.gz"
for dtb in "${dtbs[@]}"; do
    mkdir -p "$out/dtbs"
    mv -f "$work/dtbs/${dtb##*/}" "$out/dtbs/${dtb##*/}"
done
mv -f "$work/manifest.txt" "$out/manifest.txt"
echo "$stamp" >"$out/.stamp"
say "built $out/$kimage ($(stat -c %s "$out/$kimage") bytes, kernel $abi) and $out/initramfs.cpio.gz ($(stat -c %s "$out/initramfs.cpio.gz") bytes)"
for dtb in "${dtbs[@]}"; do
    say "built $out/dtbs/${dtb##*/} ($(stat -c %s "$out/dtbs/${dtb##*/}") bytes, sha256 $(sha256sum <"$out/dtbs/${dtb##*/}" | cut -d' ' -f1))"
done
