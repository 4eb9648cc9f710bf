#!/usr/bin/env python3
"""Checks the Linux guest image (build/linux/Image + initramfs.cpio.gz) on
plain QEMU, without chroma; with --arch armhf the 32-bit one
(build/linux-armhf/zImage + initramfs.cpio.gz, on qemu-system-arm with a
Cortex-A15 and a Cortex-A7). Run through test-qemu.sh, which builds first.

  test-qemu.py OUTDIR [--quick] [--arch arm64|armhf]

Prints one "ok"/"FAIL" line per check, the measured figures, and ends with
"N passed, M failed". Serial logs go to OUTDIR/test-logs/.
"""
import hashlib
import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv):
    out, quick, arch = None, False, "arm64"
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--quick":
            quick = True
        elif a == "--arch" and i + 1 < len(argv):
            arch = argv[i + 1]
            i += 1
        elif a.startswith("--arch="):
            arch = a[len("--arch="):]
        elif a.startswith("-"):
            sys.exit("usage: test-qemu.py OUTDIR [--quick] [--arch arm64|armhf]")
        else:
            out = a
        i += 1
    return out, quick, arch


_out, QUICK, ARCH = parse_args(sys.argv[1:])
# Per architecture: QEMU binary, CPUs (the first is the main one), guest RAM,
# the kernel file build.sh writes, the lock, build.sh's arguments, the
# default OUTDIR. arm64 is what this script always did.
ARCHES = {
    "arm64": dict(qemu="qemu-system-aarch64", cpus=["cortex-a57"], mem="256M", kernel="Image",
                  lock="packages.lock", build_args=[], outdir="linux"),
    # the LPAE kernel needs a CPU with LPAE: Cortex-A15 or Cortex-A7
    "armhf": dict(qemu="qemu-system-arm", cpus=["cortex-a15", "cortex-a7"], mem="512M", kernel="zImage",
                  lock="packages-armhf.lock", build_args=["--arch", "armhf"], outdir="linux-armhf"),
}
if ARCH not in ARCHES:
    sys.exit("test-qemu.py: unknown architecture %r (arm64 or armhf)" % ARCH)
A = ARCHES[ARCH]
OUT = os.path.abspath(_out) if _out else os.path.join(HERE, "../../build", A["outdir"])
LOGS = os.path.join(OUT, "test-logs")
QEMU = os.environ.get("QEMU", A["qemu"])
BASE_ARGS = "console=ttyAMA0 earlycon=pl011,0x09000000 rdinit=/init"
TRANSFER_MIB = int(os.environ.get("CHROMA_LINUX_TRANSFER_MIB", "64"))

passed = failed = 0
figures = []


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print("ok   %s%s" % (name, (": " + detail) if detail else ""), flush=True)
    else:
        failed += 1
        print("FAIL %s%s" % (name, (": " + detail) if detail else ""), flush=True)
    return ok


def figure(name, value):
    figures.append((name, value))
    print("figure %s: %s" % (name, value), flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class VM:
    """One qemu-system-aarch64 (arm) with its serial console on stdin/stdout."""

    def __init__(self, name, gic, cmdline, netdev, mac="52:54:00:12:34:56", smp=2, extra=(), cpu=None):
        self.name = name
        args = [QEMU, "-M", "virt,gic-version=%d" % gic, "-cpu", cpu or A["cpus"][0],
                "-smp", str(smp), "-m", A["mem"], "-nographic", "-no-reboot",
                "-kernel", os.path.join(OUT, A["kernel"]),
                "-initrd", os.path.join(OUT, "initramfs.cpio.gz"),
                "-append", BASE_ARGS + " " + cmdline,
                "-netdev", netdev, "-device", "virtio-net-device,netdev=n0,mac=" + mac] + list(extra)
        os.makedirs(LOGS, exist_ok=True)
        self.log = open(os.path.join(LOGS, name + ".log"), "wb")
        self.log.write(("# " + " ".join(args) + "\n").encode())
        self.buf = b""
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT)
        self.times = {}
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self):
        while True:
            b = self.p.stdout.read1(65536)
            if not b:
                break
            now = time.monotonic() - self.t0
            with self.lock:
                self.buf += b
                text = self.buf.decode("latin1")
            if "init" not in self.times and "linux-guest: init" in text:
                self.times["init"] = now
            if "up" not in self.times and "linux-guest: network up" in text:
                self.times["up"] = now
            self.log.write(b)
            self.log.flush()

    def text(self, start=0):
        with self.lock:
            return self.buf[start:].decode("latin1")

    def mark(self):
        with self.lock:
            return len(self.buf)

    def expect(self, pattern, timeout=90, start=0):
        end = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.text(start))
            if m:
                return m
            if time.monotonic() > end or self.p.poll() is not None:
                return None
            time.sleep(0.05)

    def type(self, line):
        try:
            self.p.stdin.write(line.encode() + b"\r")
            self.p.stdin.flush()
        except BrokenPipeError:
            pass

    def wait_exit(self, timeout):
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        self.log.close()


def shell_roundtrip(vm, label):
    """Types a line on the console; the shell must answer."""
    m0 = vm.mark()
    vm.type("echo typed-$((6*7))-%s" % label)
    return vm.expect(r"typed-42-%s" % label, 30, m0) is not None


class HostService(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


def single_vm(gic, full, smp=2, modern=False, cpu=None):
    # QEMU's virt machine gives legacy (version 1) virtio-mmio unless told
    # otherwise; modern is version 2 with VIRTIO_F_VERSION_1.
    name = "gicv%d" % gic + ("-smp%d" % smp if smp != 2 else "") + ("-mmio2" if modern else "")
    if ARCH != "arm64":  # armhf: the CPU in the name (a15-gicv2, a7-gicv2)
        name = (cpu or A["cpus"][0]).replace("cortex-", "") + "-" + name
    port = free_port()
    run = ' chroma.run="echo run-$((40+2))"' if full else ""
    vm = VM(name, gic, "chroma.ip=10.0.2.15/24 chroma.gw=10.0.2.2 chroma.httpd" + run,
            "user,id=n0,hostfwd=tcp:127.0.0.1:%d-10.0.2.15:80" % port, smp=smp, cpu=cpu,
            extra=["-global", "virtio-mmio.force-legacy=%s" % ("false" if modern else "true")])
    try:
        ok = check("%s: boots to 'linux-guest: init'" % name, vm.expect(r"linux-guest: init", 120))
        if ok:
            figure("%s boot-to-init (QEMU start to 'linux-guest: init')" % name, "%.2f s" % vm.times["init"])
            m = vm.expect(r"linux-guest: uptime ([0-9.]+) s at init", 10)
            if m:
                figure("%s kernel uptime at init" % name, "%s s" % m.group(1))
        up = vm.expect(r"linux-guest: network up 10\.0\.2\.15 ", 60)
        if check("%s: virtio_net binds, 'linux-guest: network up 10.0.2.15'" % name, up):
            figure("%s boot-to-network-up" % name, "%.2f s" % vm.times["up"])
            check("%s: the device reports link up (carrier 1)" % name, "carrier 1)" in up.group(0) or
                  vm.expect(r"linux-guest: network up .*carrier 1\)", 1))
        check("%s: shell on ttyAMA0" % name, vm.expect(r"linux-guest: shell", 30))
        m = vm.expect(r"httpd on port 80 \(blob.sha256 ([0-9a-f]{64})\)", 30)
        check("%s: httpd started" % name, m)
        blob_sha = m.group(1) if m else None
        # the link (and the shell's first prompt) settle a moment after
        vm.expect(r"# ", 20)
        time.sleep(1)
        check("%s: typed input reaches the shell" % name, shell_roundtrip(vm, name))
        page = subprocess.run(["curl", "-s", "-m", "20", "--retry", "5", "--retry-connrefused",
                               "--retry-delay", "1", "http://127.0.0.1:%d/" % port],
                              capture_output=True, text=True)
        check("%s: host curl 127.0.0.1:%d -> guest httpd page" % (name, port),
              "hello from busybox httpd" in page.stdout, (page.stdout.strip().splitlines() or [page.stderr.strip()])[0][:90])
        if full and blob_sha:
            t = time.monotonic()
            blob = subprocess.run(["curl", "-s", "-m", "60", "http://127.0.0.1:%d/blob.bin" % port],
                                  capture_output=True).stdout
            dt = time.monotonic() - t
            got = hashlib.sha256(blob).hexdigest()
            check("%s: host downloads blob.bin (1 MiB), sha256 matches the guest's" % name,
                  got == blob_sha and len(blob) == 1 << 20, "%d bytes in %.2f s" % (len(blob), dt))
        if full:
            # job control: ^C interrupts the foreground job, not the shell
            m0 = vm.mark()
            vm.type("sleep 60")
            time.sleep(1.5)
            vm.p.stdin.write(b"\x03")
            vm.p.stdin.flush()
            time.sleep(0.5)
            vm.type("echo after-ctrl-c-$((2*3))")
            check("%s: ^C interrupts a foreground job (cttyhack: controlling tty)" % name,
                  vm.expect(r"after-ctrl-c-6", 10, m0))
            check("%s: chroma.run runs its command" % name,
                  vm.expect(r"run-42", 30) and vm.expect(r"linux-guest: run exit 0", 10))
            # the guest reaches a host service the other way (slirp: host = 10.0.2.2)
            root = tempfile.mkdtemp(prefix="chroma-linux-host-")
            data = os.urandom(256 * 1024)
            with open(os.path.join(root, "host.bin"), "wb") as f:
                f.write(data)
            handler = lambda *a, **k: HostService(*a, directory=root, **k)
            srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            try:
                m0 = vm.mark()
                vm.type("wget -q -O - http://10.0.2.2:%d/host.bin | sha256sum" % srv.server_address[1])
                want = hashlib.sha256(data).hexdigest()
                check("%s: guest wget from a host service on 127.0.0.1 (sha256)" % name,
                      vm.expect(want + r"\s+-", 30, m0))
            finally:
                srv.shutdown()
                shutil.rmtree(root, ignore_errors=True)
        m0 = vm.mark()
        vm.type("poweroff -f")
        rc = vm.wait_exit(30)
        check("%s: 'poweroff -f' ends QEMU" % name, rc is not None, "exit %s" % rc)
    finally:
        vm.kill()


def vm_pair():
    port = free_port()
    a = VM("pair-a", 2, "chroma.ip=10.0.3.1/24 chroma.gw=none chroma.serve=%d chroma.sink=5001 "
           "chroma.ping=10.0.3.2" % TRANSFER_MIB,
           "socket,id=n0,listen=127.0.0.1:%d" % port, mac="52:54:00:00:03:01")
    time.sleep(0.5)
    b = VM("pair-b", 2, "chroma.ip=10.0.3.2/24 chroma.gw=none chroma.ping=10.0.3.1 "
           "chroma.send=10.0.3.1:5001:1 chroma.fetch=10.0.3.1 chroma.poweroff",
           "socket,id=n0,connect=127.0.0.1:%d" % port, mac="52:54:00:00:03:02")
    try:
        check("pair: both boot with network up",
              a.expect(r"linux-guest: network up 10\.0\.3\.1 ", 150) and b.expect(r"linux-guest: network up 10\.0\.3\.2 ", 150))
        check("pair: a pings b", a.expect(r"linux-guest: ping 10\.0\.3\.2 ok", 60))
        check("pair: b pings a", b.expect(r"linux-guest: ping 10\.0\.3\.1 ok", 60))
        # small nc transfer b -> a
        s = b.expect(r"linux-guest: send ([0-9a-f]{64}) (\d+)", 60)
        r = a.expect(r"linux-guest: sink ([0-9a-f]{64}) (\d+) (\d+) ms (\d+) KiB/s", 120)
        check("pair: nc 1 MiB b -> a, sha256 equal at both ends",
              s and r and s.group(1) == r.group(1) and s.group(2) == r.group(2) == str(1 << 20),
              "%s / %s" % (s and s.group(0), r and r.group(0)))
        # bulk TCP transfer a -> b (busybox httpd -> wget)
        srv = a.expect(r"linux-guest: serve ([0-9a-f]{64}) (\d+)", 60)
        timeout = 120 + TRANSFER_MIB * 6
        f = b.expect(r"linux-guest: fetch ([0-9a-f]{64}) (\d+) (\d+) ms (\d+) KiB/s (\S+)", timeout)
        ok = check("pair: %d MiB TCP a -> b, sha256 equal at both ends" % TRANSFER_MIB,
                   srv and f and srv.group(1) == f.group(1) and f.group(2) == str(TRANSFER_MIB << 20)
                   and f.group(5) == "match",
                   "%s / %s" % (srv and srv.group(0), f and f.group(0)))
        if f:
            figure("pair %d MiB TCP throughput (wget from httpd, socket netdev)" % TRANSFER_MIB,
                   "%s KiB/s (%.2f MB/s), %s ms" % (f.group(4), int(f.group(2)) / int(f.group(3)) / 1000, f.group(3)))
        check("pair: chroma.poweroff powers b off", b.wait_exit(60) is not None)
        check("pair: a still answers after b is gone", shell_roundtrip(a, "a"))
    finally:
        a.kill()
        b.kill()


def err_line(r):
    lines = [l for l in r.stderr.splitlines() if "error" in l] or r.stderr.splitlines() or [""]
    return lines[0].strip()


def build_checks():
    build = os.path.join(HERE, "build.sh")
    t = time.monotonic()
    r = subprocess.run([build] + A["build_args"] + [OUT], capture_output=True, text=True)
    dt = time.monotonic() - t
    check("build.sh is quick when up to date", r.returncode == 0 and "up to date" in r.stderr and dt < 5,
          "%.2f s: %s" % (dt, r.stderr.strip()))
    # a tampered pin is refused; a pin that left the archive says so
    cache = os.environ.get("CHROMA_LINUX_CACHE", os.path.join(HERE, "../../build/linux/cache"))
    tmp = tempfile.mkdtemp(prefix="chroma-linux-lock-")
    try:
        lines = open(os.path.join(HERE, A["lock"])).read().splitlines()
        # reuse the cached kernel .deb; tamper with busybox's pin
        for line in lines:
            if line.startswith("linux-image-"):
                deb = line.split()[6].rsplit("/", 1)[1]
                if os.path.exists(os.path.join(cache, deb)):
                    os.symlink(os.path.join(os.path.abspath(cache), deb), os.path.join(tmp, deb))
        def variant(fn):
            out = []
            for line in lines:
                if line.startswith("busybox-static "):
                    f = line.split()
                    fn(f)
                    line = " ".join(f)
                out.append(line)
            return "\n".join(out) + "\n"
        def run(lock_text):
            with open(os.path.join(tmp, "lock"), "w") as fh:
                fh.write(lock_text)
            env = dict(os.environ, CHROMA_LINUX_LOCK=os.path.join(tmp, "lock"), CHROMA_LINUX_CACHE=tmp)
            return subprocess.run([build] + A["build_args"] + [os.path.join(tmp, "out")],
                                  capture_output=True, text=True, env=env)
        def bad_sha(f):
            f[3] = "0" * 64
        r = run(variant(bad_sha))
        check("build.sh refuses a .deb whose SHA-256 does not match the lock (exit 2)",
              r.returncode == 2 and "SHA-256 MISMATCH" in r.stderr, err_line(r))
        def gone(f):
            f[6] = f[6].replace(".deb", "-not-in-archive.deb")
        r = run(variant(gone))
        check("build.sh explains a pin that is not in the archive (exit 1)",
              r.returncode == 1 and "left" in r.stderr and "update-lock.sh" in r.stderr,
              err_line(r))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    shutil.rmtree(LOGS, ignore_errors=True)
    for f in (A["kernel"], "initramfs.cpio.gz"):
        if not os.path.exists(os.path.join(OUT, f)):
            print("FAIL %s/%s missing (run guest-images/linux/build.sh%s)" % (
                OUT, f, "".join(" " + a for a in A["build_args"])))
            print("0 passed, 1 failed")
            return 1
    figure("host load average (1 min) at start", "%.2f on %d CPUs" % (os.getloadavg()[0], os.cpu_count()))
    build_checks()
    single_vm(2, full=True)
    if ARCH == "armhf":
        # the other LPAE CPU, boot and network only
        single_vm(2, full=False, cpu=A["cpus"][1])
    single_vm(3, full=not QUICK, modern=True)
    if not QUICK:
        single_vm(2, full=False, smp=1)
    if not QUICK:
        vm_pair()
    if figures:
        with open(os.path.join(OUT, "qemu-figures.txt"), "w") as fh:
            for n, v in figures:
                fh.write("%s: %s\n" % (n, v))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
