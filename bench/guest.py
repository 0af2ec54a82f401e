#!/usr/bin/env python3
"""Debian guests: time to make an image (cold and from the cached base), and boot to the login
prompt through pyxen (pygrub + ``xl create``) against bare qemu-system-x86_64.

The image is made with ``pyxen image create --dir`` as a user runs it. Cold: an empty image cache
(``PYXEN_CACHE`` pointed at a new folder), so debootstrap fetches and installs Debian from the
archive this host's apt uses; cached: the default cache, which holds the installed base after
the first build. Boot: pyxen runs the guest's bootloader (pygrub reads /boot/grub/grub.cfg from
the disk image) and builds the domain; bare QEMU is given the kernel, initrd and command line
that pygrub extracted, the same disk (virtio, raw) and the same memory and accelerator. Both
boots are timed from the command's start to ``<hostname> login:`` on the serial console
(neither has a NIC: the image's static address stays unconfigured, so no network wait either),
interleaved (pyxen, bare, pyxen, bare, ...). Prints a table and writes bench/results/guest.json.
Goal: pyxen/bare <= 1.15.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pyxen.hypervisor.accel import choose  # noqa: E402
from pyxen.testing.bench import figure, run_facts, time_to_output  # noqa: E402

BIN = Path(sys.executable).parent
HOST = "benchdeb"
MEMORY = 512
TIMEOUT = 300.0


def make_image(env: dict[str, str], out: Path, name: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(BIN / "pyxen"), "image", "create", f"--hostname={name}", f"--dir={out}",
                    "--size=2G", "--noswap", f"--memory={MEMORY}M", "--password=bench", "--ip=10.81.0.9",
                    "--force"],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def wait_log(log: Path, start_off: int, marker: bytes, t0: float) -> float:
    while time.perf_counter() - t0 < TIMEOUT:
        if log.exists():
            with open(log, "rb") as f:
                f.seek(start_off)
                if marker in f.read():
                    return time.perf_counter() - t0
        time.sleep(0.01)
    raise RuntimeError(f"no '{marker.decode()}' in {log} after {TIMEOUT:.0f} s")


def time_pyxen(env: dict[str, str], cfg: Path, log: Path, marker: bytes) -> float:
    start_off = log.stat().st_size if log.exists() else 0
    t0 = time.perf_counter()
    subprocess.run([str(BIN / "xl"), "create", "-q", str(cfg)], env=env, check=True)
    try:
        return wait_log(log, start_off, marker, t0)
    finally:
        subprocess.run([str(BIN / "xl"), "destroy", HOST], env=env, check=True)


def time_bare(boot: dict[str, str], disk: Path, accel: str, marker: bytes) -> float:
    cmd = ["qemu-system-x86_64", "-machine", "pc", "-accel", accel, "-cpu", "host" if accel == "kvm" else "max",
           "-m", str(MEMORY), "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none",
           "-serial", "stdio", "-kernel", boot["kernel"], "-initrd", boot["ramdisk"], "-append", boot["args"],
           "-drive", f"file={disk},if=virtio,format=raw,cache=none,aio=threads"]
    return time_to_output(cmd, marker, TIMEOUT)


def pygrub_entry(disk: Path, outdir: Path) -> dict[str, str]:
    """The kernel, initrd and args pygrub picks, extracted into ``outdir``."""
    out = subprocess.run([str(BIN / "pygrub"), "-q", "--output-format=simple", f"--output-directory={outdir}",
                          str(disk)], check=True, capture_output=True, text=True).stdout
    boot = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    if "console=" not in boot.get("args", ""):
        boot["args"] = f"console=ttyS0 {boot.get('args', '')}".strip()
    return boot


#: The README table's "what" (bench/table.py).
WHAT = ("Debian 12 guest: `pyxen image create` cold (debootstrap from the archive) and from the "
        "cached base; boot to `login:` through pygrub + `xl create` vs bare `qemu-system-x86_64` "
        "with the kernel, initrd and args pygrub picks and the same disk, 512 MiB")


def figures(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline figures (pyxen.testing.bench.figure), from the runs kept in the result."""
    out = []
    if result["image_cold_s"]:
        out.append(figure("image create cold", "s", value=statistics.median(result["image_cold_s"])))
    if result["image_cached_s"]:
        out.append(figure("image create cached", "s", value=statistics.median(result["image_cached_s"])))
    out.append(figure("boot to login", "s", pyxen=result["median_pyxen_s"], reference=result["median_bare_s"],
                      ratio=result["ratio"], goal=("<=", result["goal"])))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-cold", action="store_true", help="skip the cold image build (minutes)")
    ns = ap.parse_args()
    facts = run_facts(ROOT)
    root = Path(tempfile.mkdtemp(prefix="pyxen-bench-", dir="/var/tmp"))
    env = dict(os.environ, PYXEN_ROOT=str(root / "pyxen"), PATH=f"{BIN}:{os.environ['PATH']}")
    accel = choose("auto", "qemu-system-x86_64").accel
    marker = f"{HOST} login:".encode()
    cold: list[float] = []
    cached: list[float] = []
    pyxen_t: list[float] = []
    bare_t: list[float] = []
    try:
        if not ns.no_cold:
            cold.append(make_image(dict(env, PYXEN_CACHE=str(root / "cold-cache")), root / "cold", "benchcold"))
        make_image(env, root / "warm", HOST)  # fills the default cache if it is empty
        for i in range(ns.runs):
            cached.append(make_image(env, root / f"img{i}", HOST))
        disk = root / f"img{ns.runs - 1}" / "domains" / HOST / "disk.img"
        boot = pygrub_entry(disk, root)
        cfg = root / "pyxen" / f"{HOST}.cfg"  # the last image's: its disk is ``disk``
        # No NIC on either side: bare QEMU is given none, so the pyxen guest's vif goes too.
        cfg.write_text("".join(ln for ln in cfg.read_text().splitlines(keepends=True)
                               if not ln.startswith(("vif ", "dhcp "))))
        subprocess.run([str(BIN / "pyxen"), "host", "start"], env=env, check=True, stdout=subprocess.DEVNULL)
        log = root / "pyxen" / "log" / "console" / f"guest-{HOST}.log"
        for _ in range(ns.runs):
            pyxen_t.append(time_pyxen(env, cfg, log, marker))
            bare_t.append(time_bare(boot, disk, accel, marker))
    finally:
        subprocess.run([str(BIN / "pyxen"), "host", "stop"], env=env, stdout=subprocess.DEVNULL)
        shutil.rmtree(root, ignore_errors=True)
    med_p, med_b = statistics.median(pyxen_t), statistics.median(bare_t)
    ratio = med_p / med_b
    print(f"Debian 12 guest ({accel}, {MEMORY} MiB, 1 vCPU, {ns.runs} runs each)")
    print(f"{'what':<34}{'median s':>10}{'min s':>10}{'max s':>10}")
    for name, ts in (("image create, cold (debootstrap)", cold), ("image create, cached base", cached),
                     ("boot to login: pyxen (pygrub+xl)", pyxen_t), ("boot to login: bare qemu", bare_t)):
        if ts:
            print(f"{name:<34}{statistics.median(ts):>10.2f}{min(ts):>10.2f}{max(ts):>10.2f}")
    print(f"boot ratio pyxen/bare (medians): {ratio:.3f}  (goal <= 1.15: {'met' if ratio <= 1.15 else 'NOT met'})")
    out = ROOT / "bench" / "results" / "guest.json"
    out.write_text(json.dumps({**facts, "accel": accel, "memory_mib": MEMORY, "runs": ns.runs,
                               "image_cold_s": cold, "image_cached_s": cached, "pyxen_boot_s": pyxen_t,
                               "bare_boot_s": bare_t, "median_pyxen_s": med_p, "median_bare_s": med_b,
                               "ratio": ratio, "goal": 1.15}, indent=2))
    data = json.loads(out.read_text())
    out.write_text(json.dumps({**data, "what": WHAT, "figures": figures(data)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
