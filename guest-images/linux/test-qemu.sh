#!/usr/bin/env bash
# Builds the Linux guest (build.sh) and checks it on plain QEMU, no chroma:
# GICv2 and GICv3 boots to the shell with the network up (host curl to the
# guest's httpd, guest wget to a host service, typed console input), and two
# QEMUs joined by a socket netdev (ping both ways, nc, a 64 MiB TCP transfer
# with the SHA-256 compared at both ends). Ends with "N passed, M failed".
#
#   guest-images/linux/test-qemu.sh [--quick] [OUTDIR]
#
# --quick: build checks, GICv2 full, GICv3 boot only, no VM pair.
# CHROMA_LINUX_TRANSFER_MIB (default 64) sizes the VM-to-VM transfer.
# Figures (boot-to-init, throughput) go to OUTDIR/qemu-figures.txt, serial
# logs to OUTDIR/test-logs/.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
quick=
out=
for arg in "$@"; do
    case $arg in
        --quick) quick=--quick ;;
        -*) echo "usage: $0 [--quick] [OUTDIR]" >&2; exit 64 ;;
        *) out=$arg ;;
    esac
done
out=${out:-$here/../../build/linux}
command -v qemu-system-aarch64 >/dev/null || { echo "FAIL qemu-system-aarch64 not found (apt-get install qemu-system-arm)"; echo "0 passed, 1 failed"; exit 1; }
command -v curl >/dev/null || { echo "FAIL curl not found (apt-get install curl)"; echo "0 passed, 1 failed"; exit 1; }
if ! "$here/build.sh" "$out"; then
    echo "FAIL guest-images/linux/build.sh"
    echo "0 passed, 1 failed"
    exit 1
fi
exec timeout 1500 python3 "$here/test-qemu.py" "$out" $quick
