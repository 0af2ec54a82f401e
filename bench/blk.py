"""Block I/O benchmark: one guest, three disks backed by copies of the same image, in one run:
(a) pyxen blkback (vhost-user), (b) qemu-storage-daemon's vhost-user-blk export, (c) QEMU's
built-in virtio-blk.

Load, in the guest, all O_DIRECT: sequential 1 MiB write and read with busybox dd (MB/s), and
random 4 KiB reads and writes at queue depth 1 with bench/randio (a 696-byte static tool appended
to the demo initrd; IOPS). Each round runs every metric on every disk, the disk order rotating
between rounds, so the paths are interleaved in time and share the host's noise. Times come from
the guest's /proc/timer_list (ns). Reports the median and min-max per path, and the median of the
per-round ratios to qsd (paired, so slow rounds cancel). Writes bench/results/blk.json.

``python bench/blk.py [ROUNDS]``; ``PYXEN_BENCH_PYSPY=out.txt`` records the pyxen back-end with
py-spy (raw, --idle) for the whole run; ``PYXEN_BENCH_PROFILE=out.prof`` runs it under cProfile.
"""

from __future__ import annotations

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

sys.path.insert(0, str(Path(__file__).parent))
import randio  # noqa: E402

SIZE_MB = 64
RAND_COUNT = 2048
ROUNDS = 5
KERNEL = "/var/cache/pyxen/demo/vmlinuz"
INITRD = "/var/cache/pyxen/demo/initrd.img"
PATHS = ("pyxen", "qsd", "builtin")
METRICS = ("seq_write_MBps", "seq_read_MBps", "rand_read_iops", "rand_write_iops")


def guest_script(rounds: int) -> str:
    # PCI order: the pyxen disk, the qsd disk, the built-in one.
    devs = dict(zip(PATHS, ("vda", "vdb", "vdc")))
    lines = ["ts() { head -3 /proc/timer_list | sed -n 's/^now at \\([0-9]*\\) nsecs/\\1/p'; }"]
    for r in range(rounds):
        order = PATHS[r % 3:] + PATHS[:r % 3]
        for name in order:
            lines += [
                f"D=/dev/{devs[name]}",
                "t0=$(ts)",
                f"dd if=/dev/zero of=$D bs=1M count={SIZE_MB} oflag=direct 2>/dev/null",
                "t1=$(ts)",
                f"dd if=$D of=/dev/null bs=1M count={SIZE_MB} iflag=direct 2>/dev/null",
                "t2=$(ts)",
                f"randio $D {RAND_COUNT} r || echo randio failed",
                "t3=$(ts)",
                f"randio $D {RAND_COUNT} w || echo randio failed",
                "t4=$(ts)",
                f'echo "bench {r} {name} $t0 $t1 $t2 $t3 $t4"',
            ]
    lines.append("echo bench done")
    return "\n".join(lines) + "\n"


def parse(text: str) -> dict[str, list[dict[str, float]]]:
    """Per path, one dict of metrics per round."""
    out: dict[str, list[dict[str, float]]] = {p: [] for p in PATHS}
    for m in re.finditer(r"bench (\d+) (\w+) (\d+) (\d+) (\d+) (\d+) (\d+)", text):
        t = [int(x) / 1e9 for x in m.groups()[2:]]
        out[m.group(2)].append({
            "seq_write_MBps": SIZE_MB * 1.048576 / (t[1] - t[0]),
            "seq_read_MBps": SIZE_MB * 1.048576 / (t[2] - t[1]),
            "rand_read_iops": RAND_COUNT / (t[3] - t[2]),
            "rand_write_iops": RAND_COUNT / (t[4] - t[3]),
        })
    return out


def summarize(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for name, rs in runs.items():
        summary[name] = {}
        for k in METRICS:
            vals = [r[k] for r in rs]
            ratios = [r[k] / q[k] for r, q in zip(rs, runs["qsd"])]
            summary[name][k] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals),
                                "ratio_vs_qsd_median": statistics.median(ratios),
                                "ratio_vs_qsd_min": min(ratios), "ratio_vs_qsd_max": max(ratios)}
    return summary


def print_table(summary: dict[str, dict[str, dict[str, float]]], rounds: int) -> None:
    print(f"{rounds} interleaved rounds; value = median [min-max]; ratio = median of per-round ratios to qsd [min-max]")
    heads = {"seq_write_MBps": "seq write 1M MB/s", "seq_read_MBps": "seq read 1M MB/s",
             "rand_read_iops": "rand read 4k QD1 IOPS", "rand_write_iops": "rand write 4k QD1 IOPS"}
    for k in METRICS:
        print(f"\n{heads[k]}")
        for name, s in summary.items():
            v = s[k]
            print(f"  {name:<8}{v['median']:>9.0f} [{v['min']:.0f}-{v['max']:.0f}]".ljust(34)
                  + f"ratio {v['ratio_vs_qsd_median']:.2f} [{v['ratio_vs_qsd_min']:.2f}-{v['ratio_vs_qsd_max']:.2f}]")


def wait_guest(guest: subprocess.Popen[bytes], log: Path, rounds: int) -> str | None:
    """The console text once the guest has finished, or None if it printed nothing for 60 s."""
    start = time.monotonic()
    text = ""
    while "pyxen demo guest up" not in text and guest.poll() is None:
        elapsed = time.monotonic() - start
        if elapsed > 60 and not text:
            return None
        if elapsed > 120 + 120 * rounds:
            print(f"guest stuck after {elapsed:.0f} s; console tail:\n{text[-2000:]}", file=sys.stderr)
            break
        time.sleep(0.5)
        text = log.read_text(errors="replace") if log.exists() else ""
    return text


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up below
    tmp = Path(tempfile.mkdtemp(prefix="pxbench-", dir="/tmp"))
    procs: list[subprocess.Popen[bytes]] = []
    spy: subprocess.Popen[bytes] | None = None
    try:
        base = tmp / "base.img"
        with open(base, "wb") as f:
            f.truncate(SIZE_MB << 20)
        imgs = {n: tmp / f"{n}.img" for n in PATHS}
        for p in imgs.values():
            shutil.copyfile(base, p)
        initrd = tmp / "initrd.img"
        # The script goes into the initrd (the demo init runs /tmp/run.sh): a few rounds of it
        # would overflow the kernel command line (2048 bytes on x86), and the kernel then stops
        # silently before its console is up.
        # The kernel looks for the next archive at a 4-byte aligned offset, skipping NULs.
        demo = Path(INITRD).read_bytes()
        initrd.write_bytes(demo + b"\0" * (-len(demo) % 4) + randio.cpio_archive(guest_script(rounds).encode()))
        serve = tmp / "serve.py"
        serve.write_text(
            "import asyncio, sys\nfrom pathlib import Path\n"
            "from pyxen.backends.block.device import BlockDevice, open_target\n"
            "from pyxen.backends.common.transport import VhostUserServer\n"
            "async def main():\n"
            "    s = VhostUserServer(Path(sys.argv[2]), BlockDevice('bench', open_target(sys.argv[1], False), 'pyxen'))\n"
            "    await s.start(); await asyncio.Event().wait()\n"
            "try:\n    asyncio.run(main())\nexcept KeyboardInterrupt:\n    pass\n")
        prof = os.environ.get("PYXEN_BENCH_PROFILE")
        cmd = [sys.executable] + (["-m", "cProfile", "-o", prof] if prof else []) + [str(serve), str(imgs["pyxen"]), str(tmp / "a.sock")]
        backend = subprocess.Popen(cmd)
        procs.append(backend)
        procs.append(subprocess.Popen([
            "qemu-storage-daemon", "--blockdev", f"driver=file,node-name=d0,filename={imgs['qsd']},cache.direct=off",
            "--export", f"type=vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path={tmp / 'b.sock'},writable=on,num-queues=1"]))
        for s, proc in (("a.sock", backend), ("b.sock", procs[1])):
            t_end = time.monotonic() + 30
            while not (tmp / s).exists():
                if proc.poll() is not None or time.monotonic() > t_end:
                    print(f"{s}: its server did not start (exit status {proc.poll()})", file=sys.stderr)
                    return 1
                time.sleep(0.05)
        if os.environ.get("PYXEN_BENCH_PYSPY"):
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--idle", "--format", "raw",
                                    "-r", "500", "-o", os.environ["PYXEN_BENCH_PYSPY"], "-p", str(backend.pid)])
        append = "console=ttyS0 quiet panic=-1"
        qemu = ["qemu-system-x86_64", "-machine", "pc,memory-backend=mem", "-accel", "tcg", "-cpu", "max",
                "-m", "256M", "-object", "memory-backend-memfd,id=mem,size=256M,share=on", "-nodefaults",
                "-display", "none", "-vga", "none", "-no-reboot", "-serial", f"file:{tmp / 'con.log'}",
                "-qmp", f"unix:{tmp / 'qmp.sock'},server=on,wait=off",
                "-kernel", KERNEL, "-initrd", str(initrd), "-append", append,
                "-chardev", f"socket,id=a,path={tmp / 'a.sock'}", "-device", "vhost-user-blk-pci,chardev=a,num-queues=1",
                "-chardev", f"socket,id=b,path={tmp / 'b.sock'}", "-device", "vhost-user-blk-pci,chardev=b,num-queues=1",
                "-blockdev", f"driver=file,node-name=c,filename={imgs['builtin']}",
                "-device", "virtio-blk-pci,drive=c,serial=builtin,num-queues=1"]
        guest = subprocess.Popen(qemu)
        procs.append(guest)
        text = wait_guest(guest, tmp / "con.log", rounds)
        if text is None:
            print("the guest printed nothing in 60 s", file=sys.stderr)
            return 1
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
            spy = None
        runs = parse(text)
        if "randio failed" in text or any(len(rs) != rounds for rs in runs.values()):
            print(text[-3000:])
            return 1
        summary = summarize(runs)
        print_table(summary, rounds)
        out = Path(__file__).parent / "results" / "blk.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps({
            "size_mb": SIZE_MB, "rand_count": RAND_COUNT, "rounds": rounds, "accel": "tcg",
            "host_cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg(),
            "load": "O_DIRECT; seq = busybox dd bs=1M; rand = bench/randio 4 KiB QD1 xorshift offsets",
            "summary": summary, "runs": runs}, indent=2) + "\n")
        return 0
    finally:
        if spy is not None:
            spy.kill()
            spy.wait()
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGINT if p is procs[0] else signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
