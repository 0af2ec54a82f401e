"""Block I/O benchmark: one guest, three disks backed by copies of the same image, in one run:
(a) pyxen blkback (vhost-user), (b) qemu-storage-daemon's vhost-user-blk export, (c) QEMU's
built-in virtio-blk. Load: busybox dd in the guest, O_DIRECT, sequential 1 MiB write and read
(MB/s) and 4 KiB reads at QD1 (IOPS; busybox has no random-offset tool, so these are
sequential 4 KiB direct reads: each one is a full round trip through the backend, which is
what random IOPS measures at QD1 on a page-cached image). Prints a table, writes
bench/results/blk.json.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZE_MB = 64
SMALL_COUNT = 2048
KERNEL = "/var/cache/pyxen/demo/vmlinuz"
INITRD = "/var/cache/pyxen/demo/initrd.img"


def guest_script() -> str:
    lines = ['find() { for d in /sys/block/vd*; do [ "$(cat $d/serial)" = "$1" ] && echo /dev/${d##*/}; done; }']
    # PCI order: the pyxen disk, the qsd disk, the built-in one (qsd's GET_ID is not ours to set).
    for name, dev in (("pyxen", "vda"), ("qsd", "vdb"), ("builtin", "vdc")):
        lines += [
            f"D=/dev/{dev}",
            "t0=$(cut -d' ' -f1 /proc/uptime)",
            f"dd if=/dev/zero of=$D bs=1M count={SIZE_MB} oflag=direct 2>/dev/null",
            "t1=$(cut -d' ' -f1 /proc/uptime)",
            f"dd if=$D of=/dev/null bs=1M count={SIZE_MB} iflag=direct 2>/dev/null",
            "t2=$(cut -d' ' -f1 /proc/uptime)",
            f"dd if=$D of=/dev/null bs=4k count={SMALL_COUNT} iflag=direct 2>/dev/null",
            "t3=$(cut -d' ' -f1 /proc/uptime)",
            f'echo "bench {name} $t0 $t1 $t2 $t3"',
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="pxbench-", dir="/tmp"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        base = tmp / "base.img"
        with open(base, "wb") as f:
            f.truncate(SIZE_MB << 20)
        imgs = {n: tmp / f"{n}.img" for n in ("pyxen", "qsd", "builtin")}
        for p in imgs.values():
            shutil.copyfile(base, p)
        serve = tmp / "serve.py"
        serve.write_text(
            "import asyncio, sys\nfrom pathlib import Path\n"
            "from pyxen.backends.block.device import BlockDevice, open_target\n"
            "from pyxen.backends.common.transport import VhostUserServer\n"
            "async def main():\n"
            "    s = VhostUserServer(Path(sys.argv[2]), BlockDevice('bench', open_target(sys.argv[1], False), 'pyxen'))\n"
            "    await s.start(); await asyncio.Event().wait()\n"
            "asyncio.run(main())\n")
        prof = os.environ.get("PYXEN_BENCH_PROFILE")
        cmd = [sys.executable] + (["-m", "cProfile", "-o", prof] if prof else []) + [str(serve), str(imgs["pyxen"]), str(tmp / "a.sock")]
        procs.append(subprocess.Popen(cmd))
        procs.append(subprocess.Popen([
            "qemu-storage-daemon", "--blockdev", f"driver=file,node-name=d0,filename={imgs['qsd']},cache.direct=off",
            "--export", f"type=vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path={tmp / 'b.sock'},writable=on,num-queues=1"]))
        for s in ("a.sock", "b.sock"):
            while not (tmp / s).exists():
                time.sleep(0.05)
        append = "console=ttyS0 quiet panic=-1 pyxen.run=" + base64.b64encode(guest_script().encode()).decode()
        qemu = ["qemu-system-x86_64", "-machine", "pc,memory-backend=mem", "-accel", "tcg", "-cpu", "max",
                "-m", "256M", "-object", "memory-backend-memfd,id=mem,size=256M,share=on", "-nodefaults",
                "-display", "none", "-vga", "none", "-no-reboot", "-serial", f"file:{tmp / 'con.log'}",
                "-kernel", KERNEL, "-initrd", INITRD, "-append", append,
                "-chardev", f"socket,id=a,path={tmp / 'a.sock'}", "-device", "vhost-user-blk-pci,chardev=a,num-queues=1",
                "-chardev", f"socket,id=b,path={tmp / 'b.sock'}", "-device", "vhost-user-blk-pci,chardev=b,num-queues=1",
                "-blockdev", f"driver=file,node-name=c,filename={imgs['builtin']}",
                "-device", "virtio-blk-pci,drive=c,serial=builtin,num-queues=1"]
        procs.append(subprocess.Popen(qemu))
        deadline = time.monotonic() + 600
        text = ""
        while time.monotonic() < deadline and "pyxen demo guest up" not in text:
            time.sleep(0.5)
            text = (tmp / "con.log").read_text(errors="replace") if (tmp / "con.log").exists() else ""
        results = {}
        for m in re.finditer(r"bench (\w+) ([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+)", text):
            t0, t1, t2, t3 = (float(x) for x in m.groups()[1:])
            results[m.group(1)] = {"seq_write_MBps": SIZE_MB * 1.048576 / (t1 - t0),
                                   "seq_read_MBps": SIZE_MB * 1.048576 / (t2 - t1),
                                   "qd1_4k_read_iops": SMALL_COUNT / (t3 - t2)}
        if len(results) != 3:
            print(text[-2000:])
            return 1
        ref = results["qsd"]
        print(f"{'backend':<10}{'seq write MB/s':>16}{'seq read MB/s':>15}{'4k QD1 IOPS':>13}{'vs qsd w/r/iops':>22}")
        for name, r in results.items():
            ratio = "/".join(f"{r[k] / ref[k]:.2f}" for k in ("seq_write_MBps", "seq_read_MBps", "qd1_4k_read_iops"))
            print(f"{name:<10}{r['seq_write_MBps']:>16.1f}{r['seq_read_MBps']:>15.1f}{r['qd1_4k_read_iops']:>13.0f}{ratio:>22}")
        out = Path(__file__).parent / "results" / "blk.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps({"size_mb": SIZE_MB, "small_count": SMALL_COUNT, "accel": "tcg",
                                   "results": results}, indent=2) + "\n")
        return 0
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
