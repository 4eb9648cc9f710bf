#!/usr/bin/env bash
# Boots the test guests on plain QEMU (no hypervisor) and checks their output:
# probe on GICv2 and GICv3 with two vCPUs against probe/expected.txt, and the
# crasher's modes. Ends with "N passed, M failed"; exits non-zero on failure.
# QEMU gets no NIC (`-nic none`: virt's default PCI NIC needs an option ROM
# from ipxe-qemu) and no semihosting. CHROMA_QEMU names another QEMU binary.
#
#   guest-images/test-qemu.sh [--no-build]
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
guests=${OUT_DIR:-$repo/build/guests}
passed=0 failed=0
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
if [[ ${1:-} != --no-build ]] && ! "$here/build.sh" >"$log/build" 2>&1; then
    cat "$log/build"; echo "0 passed, 1 failed"; exit 1
fi

# run NAME TIMEOUT IMAGE GIC BOOTARGS: boots and leaves output in $log/NAME.
run() {
    local name=$1 seconds=$2 image=$3 gic=$4 bootargs=$5
    timeout "$seconds" "${CHROMA_QEMU:-qemu-system-aarch64}" -M "virt,gic-version=$gic" -cpu cortex-a57 \
        -smp 2 -m 128M -nographic -nic none -no-reboot -kernel "$guests/$image.bin" \
        -append "$bootargs" </dev/null >"$log/$name" 2>&1
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
contains "$name" "rt: unhandled Synchronous exception on cpu 0" && grep -q "FSC 0x10: synchronous external abort, FAR_EL1 0xd000000" "$log/$name"
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

echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
