#!/usr/bin/env bash
# Boots the test guests on plain QEMU (no hypervisor) and checks their output:
# probe on GICv2 and GICv3 with two vCPUs against probe/expected.txt, and the
# crasher's modes. Ends with "N passed, M failed"; exits non-zero on failure.
# QEMU gets no NIC (`-nic none`: virt's default PCI NIC needs an option ROM
# from ipxe-qemu) and no semihosting. CHROMA_QEMU names another QEMU binary.
#
# With --arch arm it checks the 32-bit (ARMv7-A) guests from build/guests-arm
# on qemu-system-arm -cpu cortex-a15 against the same expected files, plus
# what only AArch32 has: the image moved itself from QEMU's load address
# (RAM + 0x1_0000) to its link address, HYP mode and a DTB inside the
# image's footprint are refused, and netsvc boots to "netsvc: link up" on a
# virtio-net-device.
#
#   guest-images/test-qemu.sh [--arch aarch64|arm] [--no-build]
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
arch=aarch64
if [[ ${1:-} == --arch ]]; then
    arch=${2:-}; shift 2 || { echo "test-qemu.sh: --arch needs aarch64 or arm" >&2; exit 2; }
fi
case $arch in
    aarch64) qemu_default=qemu-system-aarch64 cpu=cortex-a57 default_guests=$repo/build/guests
        far=FAR_EL1 ;;
    arm) qemu_default=qemu-system-arm cpu=cortex-a15 default_guests=$repo/build/guests-arm
        far=DFAR ;;
    *) echo "test-qemu.sh: unknown --arch '$arch' (aarch64 or arm)" >&2; exit 2 ;;
esac
guests=${OUT_DIR:-$default_guests}
qemu=${CHROMA_QEMU:-$qemu_default}
passed=0 failed=0
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
if [[ ${1:-} != --no-build ]] && ! "$here/build.sh" --arch "$arch" >"$log/build" 2>&1; then
    cat "$log/build"; echo "0 passed, 1 failed"; exit 1
fi

# run NAME TIMEOUT IMAGE GIC BOOTARGS [QEMU ARGS...]: boots and leaves output in $log/NAME.
run() {
    local name=$1 seconds=$2 image=$3 gic=$4 bootargs=$5
    shift 5
    timeout "$seconds" "$qemu" -M "virt,gic-version=$gic" -cpu "$cpu" \
        -smp 2 -m 128M -nographic -nic none -no-reboot -kernel "$guests/$image.bin" \
        -append "$bootargs" "$@" </dev/null >"$log/$name" 2>&1
}

# verdict NAME OK: counts and prints one result.
verdict() {
    if [[ $2 == 0 ]]; then
        passed=$((passed + 1)); echo "ok   $1"
    else
        failed=$((failed + 1)); echo "FAIL $1"; sed 's/^/     | /' "$log/$1"
    fi
}

# contains NAME LINE...: every LINE appears as a whole line in the output.
contains() {
    local name=$1; shift
    for line in "$@"; do grep -qxF -- "$line" "$log/$name" || return 1; done
}

for gic in 2 3; do
    name=probe-gicv$gic
    run "$name" 30 probe "$gic" ""
    status=$?
    diff <(grep -v '^probe: info ' "$log/$name") "$here/probe/expected.txt" >/dev/null
    verdict "$name" $(( status != 0 || $? != 0 ))
done

name=probe-loop
run "$name" 3 probe 3 "probe.ticks=1 probe.nosmp probe.noabort probe.loop"
contains "$name" "probe: done" "probe: heartbeat 5"
verdict "$name" $?

name=crasher-hvc
run "$name" 30 crasher 3 "crasher.mode=hvc"
status=$?
diff "$log/$name" "$here/crasher/expected-hvc-qemu.txt" >/dev/null
verdict "$name" $(( status != 0 || $? != 0 ))

name=crasher-fault
run "$name" 3 crasher 2 ""
contains "$name" "crasher: start" "crasher: mode fault" \
    "crasher: fault at 0x0d000000: synchronous external abort" \
    "crasher: fault at 0x48000000: synchronous external abort" \
    "crasher: still faulting (1000 faults)"
verdict "$name" $?

name=crasher-wild
run "$name" 3 crasher 3 "crasher.mode=wild"
contains "$name" "crasher: jumping to 0x0d000000" \
    "crasher: fault at 0x0d000000: synchronous external abort" \
    "crasher: still faulting (1000 faults)"
verdict "$name" $?

name=crasher-unhandled
run "$name" 3 crasher 3 "crasher.mode=unhandled"
contains "$name" "rt: unhandled Synchronous exception on cpu 0" && grep -q "FSC 0x10: synchronous external abort, $far 0xd000000" "$log/$name"
verdict "$name" $?

for mode in off reset; do
    name=crasher-$mode
    run "$name" 30 crasher 2 "crasher.mode=$mode"
    status=$?
    contains "$name" "crasher: start" "crasher: system $mode"
    verdict "$name" $(( status != 0 || $? != 0 ))
done

# Semihosting is off: each call is UNDEFINED at the guest's own vector, the
# guest carries on, and nothing reaches the host.
name=crasher-escape
touched=$log/escape-touched
run "$name" 30 crasher 2 "crasher.mode=escape crasher.marker=escape-$$ crasher.path=$touched"
status=$?
contains "$name" "crasher: escape SYS_WRITE0 = UNDEFINED" "crasher: escape SYS_SYSTEM = UNDEFINED" \
    "crasher: escape SYS_EXIT = UNDEFINED" "crasher: escape done" &&
    ! grep -q "escape-$$-WRITE0" "$log/$name" && [[ ! -e $touched ]]
verdict "$name" $(( status != 0 || $? != 0 ))

if [[ $arch == arm ]]; then
    # QEMU loads a raw 32-bit image at RAM + 0x1_0000; the entry code moved it.
    name=arm-moved
    run "$name" 30 probe 2 "probe.ticks=1 probe.nosmp probe.noabort"
    contains "$name" "probe: info arch arm, loaded at 0x40010000" "probe: done"
    verdict "$name" $?

    # virtualization=on enters in HYP mode: refused with a fixed line.
    name=arm-hyp-refused
    timeout 3 "$qemu" -M virt,virtualization=on -cpu "$cpu" -m 128M -nographic -nic none \
        -no-reboot -kernel "$guests/probe.bin" </dev/null >"$log/$name" 2>&1
    contains "$name" "rt: FATAL: not entered in SVC mode" && ! grep -q "^probe:" "$log/$name"
    verdict "$name" $?

    # With 2 MiB of RAM QEMU puts the DTB at RAM + 1 MiB, inside netsvc's
    # footprint at 0x4000_8000 (its 1 MiB heap): refused, then SYSTEM_OFF.
    name=arm-dtb-overlap-refused
    timeout 10 "$qemu" -M virt -cpu "$cpu" -m 2M -nographic -nic none -no-reboot \
        -kernel "$guests/netsvc.bin" </dev/null >"$log/$name" 2>&1
    status=$?
    contains "$name" "rt: FATAL: the DTB overlaps 0x40008000 + image size, where the image runs"
    verdict "$name" $(( status != 0 || $? != 0 ))

    name=arm-netsvc-boots
    run "$name" 3 netsvc 2 "" -device virtio-net-device,netdev=n -netdev user,id=n
    contains "$name" "netsvc: link up"
    verdict "$name" $?
fi

echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
