"""Network benchmark: guest-to-guest TCP throughput through pyxen netback against QEMU's own
socket netdev, in one invocation, interleaved (pyxen pair, QEMU pair, pyxen pair, ...).

(a) pyxen: a pyxen host, two demo guests created with ``xl create`` and
    ``vif = ['mac=...,bridge=<test bridge>']``: each virtio-net ring is served by the Python
    netback over vhost-user, its frames go through a TAP into a Linux bridge this benchmark
    creates (no Dom0 address on it) and removes.
(b) QEMU: two bare qemu-system-x86_64 with the same kernel, initrd, memory, CPU model and
    virtio-net-pci device (vectors=0 as pyxen uses under TCG), joined by ``-netdev stream``
    over a Unix socket (7.2's name for ``-netdev socket,listen=/connect=``: the same
    length-prefixed frame stream, without an IP address on the host).

Load: busybox nc moves SIZE_MB MiB (dd from /dev/zero) from the client guest to the server
guest; the client times it from its /proc/timer_list (ns), from connect to nc's exit. Guests use
169.254.0.0/16 only. Prints median [min-max] per path and the median of per-round ratios;
writes bench/results/net.json. ``python bench/net.py [ROUNDS]``. Goal: pyxen/QEMU >= 0.8.

Vifs are made under ``flock /tmp/pyxen-net.lock`` (other hosts' tests and benchmarks name TAPs
the same way); run it as ``flock /tmp/pyxen-bench.lock python bench/net.py`` for figures to keep.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from pyxen.images.demo import build
from pyxen.paths import DEMO_CMDLINE
from pyxen.testing.bench import figure, run_facts
from pyxen.testing.bridge import link_local_bridge
from pyxen.testing.host import Host, started_host

SIZE_MB = 16
ROUNDS = 5
MEMORY = 256
PREFIX = "169.254.88"
TIMEOUT = 300.0
GOAL = 0.8
NET_LOCK = "/tmp/pyxen-net.lock"
QUIET = "pyxen.xsagent=0 pyxen.dhcp=0"

TS = "ts() { head -3 /proc/timer_list | sed -n 's/^now at \\([0-9]*\\) nsecs/\\1/p'; }\n"
UP = "ip link set eth0 up\nip addr add {ip}/16 dev eth0\n"
SERVER = UP.format(ip=f"{PREFIX}.2") + "nc -l -p 5001 > /dev/null\necho \"server done $?\"\n"
CLIENT = TS + UP.format(ip=f"{PREFIX}.1") + (
    f"for i in $(seq 120); do ping -c 1 -W 1 {PREFIX}.2 >/dev/null 2>&1 && break; done\n"
    "sleep 1\n"
    f"t0=$(ts); dd if=/dev/zero bs=64k count={SIZE_MB * 16} 2>/dev/null | nc {PREFIX}.2 5001; rc=$?; t1=$(ts)\n"
    "echo \"net $rc $t0 $t1\"\n")
NET_LINE = re.compile(r"net (\d+) (\d+) (\d+)")
RING_ERROR = re.compile(r"is not a head|soft lockup|out of range|virtio_net.*(?:error|broken)")


def mbps(text: str) -> float:
    m = NET_LINE.search(text)
    if not m or m.group(1) != "0":
        raise RuntimeError(f"transfer failed: {text[-1500:]}")
    return SIZE_MB * 1.048576 / ((int(m.group(3)) - int(m.group(2))) / 1e9)


def wait_for(read: Callable[[], str], pattern: re.Pattern[str] | str, timeout: float = TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = read()
        if (pattern.search(text) if isinstance(pattern, re.Pattern) else pattern in text):
            return text
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {pattern!r}: {read()[-1500:]}")


def run_pyxen(host: Host, bridge: str, n: int) -> float:
    srv, cli = f"nsrv{n}", f"ncli{n}"
    try:
        # No guest agent (nor its DHCP client): the bare QEMU guests have none either.
        host.create(srv, memory=MEMORY, script=SERVER, cmdline_extra=QUIET,
                    extra_lines=f"vif = ['mac=00:16:3e:00:88:02,bridge={bridge}']\n")
        host.create(cli, memory=MEMORY, script=CLIENT, cmdline_extra=QUIET,
                    extra_lines=f"vif = ['mac=00:16:3e:00:88:01,bridge={bridge}']\n")
        rate = mbps(wait_for(lambda: host.console_text(cli), NET_LINE))
        for name in (srv, cli):  # a ring the back-end corrupted shows in the guest's kernel log
            text = host.console_text(name)
            bad = RING_ERROR.search(text)
            if bad:
                raise RuntimeError(f"{name}: '{bad.group(0)}' on the console: {text[-1500:]}")
        return rate
    finally:
        for name in (cli, srv):
            host.xl("destroy", name, check=False)


def run_qemu(image_kernel: str, image_initrd: str, tmp: Path) -> float:
    sock, logs = tmp / "net.sock", {}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for role, script, mac, server in (("srv", SERVER, "00:16:3e:00:88:12", "on"),
                                          ("cli", CLIENT, "00:16:3e:00:88:11", "off")):
            logs[role] = tmp / f"{role}.log"
            logs[role].unlink(missing_ok=True)
            append = f"{DEMO_CMDLINE} pyxen.run=" + base64.b64encode(script.encode()).decode()
            procs.append(subprocess.Popen([
                "qemu-system-x86_64", "-machine", "pc,memory-backend=mem", "-accel", "tcg", "-cpu", "max",
                "-m", f"{MEMORY}M", "-object", f"memory-backend-memfd,id=mem,size={MEMORY}M,share=on",
                "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-no-reboot",
                "-serial", f"file:{logs[role]}", "-kernel", image_kernel, "-initrd", image_initrd,
                "-append", append,
                "-netdev", f"stream,id=n0,server={server},addr.type=unix,addr.path={sock}",
                "-device", f"virtio-net-pci,netdev=n0,mac={mac},vectors=0"]))
            if server == "on":
                wait_for(lambda: "x" if sock.exists() else "", "x", 30)
        return mbps(wait_for(lambda: logs["cli"].read_text(errors="replace") if logs["cli"].exists() else "",
                             NET_LINE))
    finally:
        for p in procs:
            p.kill()
            p.wait()
        sock.unlink(missing_ok=True)


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-ups below
    lock = os.open(NET_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(lock, fcntl.LOCK_EX)  # held until exit: no other host makes vifs meanwhile
    if any(name.startswith("vif") for name in os.listdir("/sys/class/net")):
        print("vif* interfaces exist (another pyxen host with guests?): TAP names would collide", file=sys.stderr)
        return 1
    facts = run_facts(Path(__file__).resolve().parents[1])
    image = build()
    tmp = Path(tempfile.mkdtemp(prefix="pxnet-", dir="/tmp"))
    results: dict[str, list[float]] = {"pyxen": [], "qemu_socket": []}
    try:
        with link_local_bridge() as (bridge, _), started_host(image, prefix="pxn-") as host:
            for n in range(rounds):
                results["pyxen"].append(run_pyxen(host, bridge, n))
                results["qemu_socket"].append(run_qemu(str(image.kernel), str(image.ramdisk), tmp))
                print(f"round {n}: pyxen {results['pyxen'][-1]:.1f} MB/s, "
                      f"qemu socket {results['qemu_socket'][-1]:.1f} MB/s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratios = [p / q for p, q in zip(results["pyxen"], results["qemu_socket"])]
    summary = {name: {"median": statistics.median(v), "min": min(v), "max": max(v)} for name, v in results.items()}
    summary["ratio"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    print(f"\nguest-to-guest TCP, {SIZE_MB} MiB with busybox nc, {rounds} interleaved rounds (TCG)")
    for name in ("pyxen", "qemu_socket"):
        s = summary[name]
        print(f"  {name:<12}{s['median']:>8.1f} MB/s [{s['min']:.1f}-{s['max']:.1f}]")
    r = summary["ratio"]
    print(f"  ratio pyxen/qemu (median of per-round ratios): {r['median']:.2f} [{r['min']:.2f}-{r['max']:.2f}]"
          f"  goal >= {GOAL}: {'met' if r['median'] >= GOAL else 'NOT met'}")
    out = Path(__file__).parent / "results" / "net.json"
    out.parent.mkdir(exist_ok=True)
    figures = [figure("net guest-to-guest TCP", "MB/s", pyxen=summary["pyxen"]["median"],
                      reference=summary["qemu_socket"]["median"], ratio=r["median"], goal=(">=", GOAL))]
    out.write_text(json.dumps({**facts,
                               "what": "Two demo guests made by xl create (TCG, 256 MiB) on one bridge, each vif "
                                       "served by the host's backendd netback, against two bare QEMU guests "
                                       "(same kernel, initrd, memory) joined by QEMU's stream (socket) netdev; "
                                       f"busybox nc moves {SIZE_MB} MiB, interleaved rounds.",
                               "figures": figures, "size_mb": SIZE_MB, "rounds": rounds, "accel": "tcg", "memory_mib": MEMORY,
                               "load": "busybox nc, dd if=/dev/zero bs=64k, client-side ns timing",
                               "reference": "-netdev stream (socket) over a Unix socket, virtio-net-pci vectors=0",
                               "summary": summary, "runs": results, "goal": GOAL}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
