#!/usr/bin/env bash
# Builds the Linux guest (build.sh) and checks it on plain QEMU, no chroma:
# GICv2 and GICv3 boots to the shell with the network up (host curl to the
# guest's httpd, guest wget to a host service, typed console input), and two
# QEMUs joined by a socket netdev (ping both ways, nc, a 64 MiB TCP transfer
# with the SHA-256 compared at both ends). Ends with "N passed, M failed".
#
#   guest-images/linux/test-qemu.sh [--quick] [--arch arm64|armhf] [OUTDIR]
#
# --quick: build checks, GICv2 full, GICv3 boot only, no VM pair.
# --arch armhf: the 32-bit image (build.sh --arch armhf, default OUTDIR
# build/linux-armhf) on qemu-system-arm -cpu cortex-a15 -m 512M, the same
# checks plus a Cortex-A7 boot (network, typed input, host curl).
# CHROMA_LINUX_TRANSFER_MIB (default 64) sizes the VM-to-VM transfer.
# Figures (boot-to-init, throughput) go to OUTDIR/qemu-figures.txt, serial
# logs to OUTDIR/test-logs/.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
quick=
out=
arch=arm64
usage() { echo "usage: $0 [--quick] [--arch arm64|armhf] [OUTDIR]" >&2; exit 64; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) quick=--quick ;;
        --arch) [[ $# -ge 2 ]] || usage; arch=$2; shift ;;
        --arch=*) arch=${1#--arch=} ;;
        -*) usage ;;
        *) out=$1 ;;
    esac
    shift
done
case $arch in
    arm64) qemu=qemu-system-aarch64 outname=linux archargs=() ;;
    armhf) qemu=qemu-system-arm outname=linux-armhf archargs=(--arch armhf) ;;
    *) usage ;;
esac
out=${out:-$here/../../build/$outname}
command -v $qemu >/dev/null || { echo "FAIL $qemu not found (apt-get install qemu-system-arm)"; echo "0 passed, 1 failed"; exit 1; }
command -v curl >/dev/null || { echo "FAIL curl not found (apt-get install curl)"; echo "0 passed, 1 failed"; exit 1; }
if ! "$here/build.sh" "${archargs[@]}" "$out"; then
    echo "FAIL guest-images/linux/build.sh ${archargs[*]}"
    echo "0 passed, 1 failed"
    exit 1
fi
exec timeout 1500 python3 "$here/test-qemu.py" "$out" $quick "${archargs[@]}"
