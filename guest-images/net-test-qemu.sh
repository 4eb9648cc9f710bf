#!/usr/bin/env bash
# Checks the network test guests on plain QEMU (no hypervisor):
#   1. netsvc + netclient, two QEMU processes joined by a socket netdev
#      (GICv2): pings, a 16 MiB transfer to the sink with matching checksums,
#      output against netsvc/expected.txt and netclient/expected.txt; prints
#      the throughput. Once with the default driver (VirtIONet, each frame
#      sent waits for the device) and once with net.tx=queued (VirtIONetRaw,
#      frames in flight);
#   2. the same pair on GICv3 with 2 MiB (the SPI routed through GICD_IROUTER),
#      netsvc also pinging netclient (svc.ping), which stays up 3 s after done;
#   3. netsvc behind QEMU user networking: a host python3 on 127.0.0.1 echoes
#      1 MiB through port 7 and sends 4 MiB to the sink on port 9, comparing
#      the checksum line with its own.
# Ends with "N passed, M failed"; exits non-zero on failure.
#
# With --arch arm the same checks run the 32-bit (ARMv7-A) guests from
# build/guests-arm on qemu-system-arm -cpu cortex-a15.
#
#   guest-images/net-test-qemu.sh [--arch aarch64|arm] [--no-build]
#
# Environment: OUT_DIR (images, default build/guests or build/guests-arm),
# CARGO_TARGET_DIR (for build.sh), MIB (the transfer of check 1, default 16;
# expected.txt assumes 16).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
arch=aarch64
if [[ ${1:-} == --arch ]]; then
    arch=${2:-}; shift 2 || { echo "net-test-qemu.sh: --arch needs aarch64 or arm" >&2; exit 2; }
fi
case $arch in
    aarch64) qemu_binary=qemu-system-aarch64 cpu=cortex-a57 default_guests=$repo/build/guests ;;
    arm) qemu_binary=qemu-system-arm cpu=cortex-a15 default_guests=$repo/build/guests-arm ;;
    *) echo "net-test-qemu.sh: unknown --arch '$arch' (aarch64 or arm)" >&2; exit 2 ;;
esac
guests=${OUT_DIR:-$default_guests}
mib=${MIB:-16}
passed=0 failed=0
log=$(mktemp -d)
servers=()
cleanup() {
    for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null; done
    rm -rf "$log"
}
trap cleanup EXIT
if [[ ${1:-} != --no-build ]] && ! "$here/build.sh" --arch "$arch" netsvc netclient >"$log/build" 2>&1; then
    cat "$log/build"; echo "0 passed, 1 failed"; exit 1
fi

# free_port: a TCP port on 127.0.0.1 nobody listens on right now.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# qemu SECONDS GIC IMAGE MAC BOOTARGS NETDEV: one guest, output on stdout.
qemu() {
    local seconds=$1 gic=$2 image=$3 mac=$4 bootargs=$5 netdev=$6
    timeout "$seconds" "${CHROMA_QEMU:-$qemu_binary}" -M "virt,gic-version=$gic" -cpu "$cpu" \
        -m 128M -nographic -no-reboot -kernel "$guests/$image.bin" -append "$bootargs" \
        -global virtio-mmio.force-legacy=false -netdev "$netdev" \
        -device "virtio-net-device,netdev=n0,mac=$mac" </dev/null
}

# verdict NAME STATUS [LOG...]: counts and prints one result.
verdict() {
    local name=$1 status=$2; shift 2
    if [[ $status == 0 ]]; then
        passed=$((passed + 1)); echo "ok   $name"
    else
        failed=$((failed + 1)); echo "FAIL $name"
        for file in "$@"; do sed "s/^/     | $(basename "$file"): /" "$file"; done
    fi
}

# stable FILE PREFIX: the output without lines that vary between runs.
stable() {
    grep -av -e "^$2: info " -e "^$2: heartbeat " "$1"
}

# pair NAME GIC MIB CLIENT_TIMEOUT [BOOTARGS]: netsvc and netclient over a
# socket netdev; BOOTARGS go to both.
pair() {
    local name=$1 gic=$2 mib=$3 seconds=$4 extra=${5:-} port
    port=$(free_port)
    qemu $((seconds + 30)) "$gic" netsvc 52:54:00:12:34:01 "net.ip=10.0.2.15/24 net.gw=10.0.2.2 $extra" \
        "socket,id=n0,listen=127.0.0.1:$port" >"$log/$name-netsvc" 2>&1 &
    local server=$!
    servers+=("$server")
    sleep 1
    qemu "$seconds" "$gic" netclient 52:54:00:12:34:02 \
        "net.ip=10.0.2.16/24 net.gw=10.0.2.2 client.server=10.0.2.15 client.mib=$mib client.ping=3 client.seed=1 $extra" \
        "socket,id=n0,connect=127.0.0.1:$port" >"$log/$name-netclient" 2>&1
    local status=$?
    sleep 0.5
    kill "$server" 2>/dev/null; wait "$server" 2>/dev/null
    return $status
}

# 1. VM to VM, 16 MiB, GICv2, with each transmit mode.
for mode in wait queued; do
    name=vm-to-vm-gicv2-$mode
    pair "$name" 2 "$mib" 240 "net.tx=$mode"
    status=$?
    if [[ $mib == 16 ]]; then
        diff <(stable "$log/$name-netclient" netclient) "$here/netclient/expected.txt" >"$log/$name-diff" 2>&1
        client=$?
        diff <(stable "$log/$name-netsvc" netsvc) "$here/netsvc/expected.txt" >>"$log/$name-diff" 2>&1
        server=$?
    else
        grep -aq "^netclient: transfer .* match$" "$log/$name-netclient"; client=$?
        grep -aq "^netsvc: sink received " "$log/$name-netsvc"; server=$?
    fi
    verdict "$name" $((status != 0 || client != 0 || server != 0)) \
        "$log/$name-netclient" "$log/$name-netsvc" "$log/$name-diff"
    grep -a -e "^netclient: info throughput" -e "^netclient: info rx" "$log/$name-netclient" | sed 's/^/     /'
done

# 2. VM to VM, GICv3.
name=vm-to-vm-gicv3
pair "$name" 3 2 120 "net.tx=queued svc.ping=10.0.2.16 client.stay=3"
status=$?
grep -aq "^netclient: transfer 2097152 bytes .* match$" "$log/$name-netclient" &&
    grep -aqx "netclient: done" "$log/$name-netclient" &&
    grep -aq "^netsvc: sink received 2097152 bytes" "$log/$name-netsvc" &&
    grep -aqx "netsvc: ping 3/3 replies" "$log/$name-netsvc"
verdict "$name" $((status != 0 || $? != 0)) "$log/$name-netclient" "$log/$name-netsvc"

# 3. Host to VM through QEMU user networking (host forwards on 127.0.0.1 only).
name=host-to-vm-user
echo_port=$(free_port)
sink_port=$(free_port)
qemu 120 2 netsvc 52:54:00:12:34:01 "net.ip=10.0.2.15/24 net.gw=10.0.2.2" \
    "user,id=n0,net=10.0.2.0/24,hostfwd=tcp:127.0.0.1:$echo_port-10.0.2.15:7,hostfwd=tcp:127.0.0.1:$sink_port-10.0.2.15:9" \
    >"$log/$name-netsvc" 2>&1 &
server=$!
servers+=("$server")
timeout 90 python3 - "$echo_port" "$sink_port" >"$log/$name-host" 2>&1 <<'PY'
import socket, sys, time
echo_port, sink_port = int(sys.argv[1]), int(sys.argv[2])

def connect(port):
    # The forward accepts before the guest listens: retry until it answers.
    deadline = time.time() + 30
    while True:
        s = socket.create_connection(("127.0.0.1", port), timeout=20)
        s.sendall(b"ping\n")
        try:
            if s.recv(5) == b"ping\n":
                return s
        except OSError:
            pass
        s.close()
        if time.time() > deadline:
            raise SystemExit("host: FAIL no echo on port %d" % port)
        time.sleep(0.5)

s = connect(echo_port)
data = bytes((i * 7 + 3) & 0xff for i in range(1 << 20))
start = time.time()
received = bytearray()
view = memoryview(data)
s.setblocking(True)
sent = 0
while len(received) < len(data):
    if sent < len(data):
        sent += s.send(view[sent:sent + 65536])
    received += s.recv(65536)
print("host: echo %d bytes %s in %.2f s" % (len(data), "ok" if received == data else "FAIL mismatch", time.time() - start))
s.close()

blob = bytes((i * 13 + 5) & 0xff for i in range(4 << 20))
h = 0xcbf29ce484222325
for b in blob:
    h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
want = "len=%d fnv64=%016x" % (len(blob), h)
s = socket.create_connection(("127.0.0.1", sink_port), timeout=30)
start = time.time()
s.sendall(blob)
s.shutdown(socket.SHUT_WR)
answer = b""
while not answer.endswith(b"\n"):
    chunk = s.recv(100)
    if not chunk:
        break
    answer += chunk
got = answer.decode(errors="replace").strip()
print("host: sink %s, expected %s: %s in %.2f s" % (got, want, "ok" if got == want else "FAIL", time.time() - start))
PY
status=$?
sleep 0.5
kill "$server" 2>/dev/null; wait "$server" 2>/dev/null
! grep -aq FAIL "$log/$name-host" && [[ $(grep -ac " ok" "$log/$name-host") == 2 ]] &&
    grep -aq "^netsvc: sink received 4194304 bytes" "$log/$name-netsvc"
verdict "$name" $((status != 0 || $? != 0)) "$log/$name-host" "$log/$name-netsvc"
sed 's/^/     /' "$log/$name-host"

echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
