#!/usr/bin/env python3
"""Boot time: ``xl create`` to the demo guest's up line, against bare qemu-system-x86_64.

Both boot the same kernel, initramfs and memory size with the same accelerator, in one
invocation, interleaved (pyxen, bare, pyxen, bare, ...) so drift on the machine hits both. The
pyxen time includes everything a user waits for: the xl process, config parsing, the hypercalls,
QEMU start, console relay through xenconsoled into the log file. Prints a table and writes
bench/results/boot.json. Goal: pyxen/bare <= 1.10 (the median of the per-round ratios).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pyxen.hypervisor.accel import choose  # noqa: E402
from pyxen.hypervisor.hostcfg import DEFAULT_TEXT  # noqa: E402
from pyxen.images.demo import build  # noqa: E402
from pyxen.paths import DEMO_CMDLINE, Paths  # noqa: E402
from pyxen.testing.bench import compile_bytecode, figure, run_facts, time_to_output  # noqa: E402

UP = b"pyxen demo guest up"
BIN = Path(sys.executable).parent
MEMORY = 256
TIMEOUT = 120.0
GOAL = 1.10


def time_pyxen(env: dict[str, str], cfg: Path, log: Path) -> float:
    start_off = log.stat().st_size if log.exists() else 0
    t0 = time.perf_counter()
    subprocess.run([str(BIN / "xl"), "create", "-q", str(cfg)], env=env, check=True)
    while time.perf_counter() - t0 < TIMEOUT:
        if log.exists():
            with open(log, "rb") as f:
                f.seek(start_off)
                if UP in f.read():
                    elapsed = time.perf_counter() - t0
                    break
        time.sleep(0.005)
    else:
        raise RuntimeError("pyxen guest did not come up")
    subprocess.run([str(BIN / "xl"), "destroy", "bench"], env=env, check=True)
    return elapsed


def time_bare(kernel: str, ramdisk: str, accel: str) -> float:
    cmd = ["qemu-system-x86_64", "-machine", "pc", "-accel", accel, "-cpu", "host" if accel == "kvm" else "max",
           "-m", str(MEMORY), "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none",
           "-serial", "stdio", "-kernel", kernel, "-initrd", ramdisk, "-append", DEMO_CMDLINE]
    return time_to_output(cmd, UP, TIMEOUT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ns = ap.parse_args()
    facts = run_facts(ROOT)
    compile_bytecode(ROOT)
    image = build()
    root = Path(tempfile.mkdtemp(prefix="pyxen-bench-", dir="/tmp"))
    env = dict(os.environ, PYXEN_ROOT=str(root), PATH=f"{BIN}:{os.environ['PATH']}")
    cfg = root / "bench.cfg"
    cfg.write_text(f'name = "bench"\nmemory = {MEMORY}\nvcpus = 1\nkernel = "{image.kernel}"\n'
                   f'ramdisk = "{image.ramdisk}"\nextra = "{DEMO_CMDLINE}"\n')
    # xapi on free ports, and nothing on xenbr0 (the guest has no NIC): a benchmark's host
    # must not take the machine's ports or serve its bridge in place of another host.
    Paths.from_env(root).host_cfg.write_text(
        DEFAULT_TEXT.replace("xapi_port = 80", "xapi_port = 0").replace("xapi_https_port = 443", "xapi_https_port = 0")
        .replace('xenbr0_address = "10.80.0.1/24"', 'xenbr0_address = ""'))
    subprocess.run([str(BIN / "pyxen"), "host", "start"], env=env, check=True, stdout=subprocess.DEVNULL)
    accel = choose("auto", "qemu-system-x86_64").accel
    log = root / "log" / "console" / "guest-bench.log"
    pyxen_t: list[float] = []
    bare_t: list[float] = []
    try:
        for _ in range(ns.runs):
            pyxen_t.append(time_pyxen(env, cfg, log))
            bare_t.append(time_bare(str(image.kernel), str(image.ramdisk), accel))
    finally:
        subprocess.run([str(BIN / "pyxen"), "host", "stop"], env=env, stdout=subprocess.DEVNULL)
        shutil.rmtree(root, ignore_errors=True)
    med_p, med_b = statistics.median(pyxen_t), statistics.median(bare_t)
    ratios = [p / b for p, b in zip(pyxen_t, bare_t)]
    ratio = statistics.median(ratios)
    rows = [("pyxen xl create", pyxen_t), ("bare qemu", bare_t)]
    print(f"boot to '{UP.decode()}' ({accel}, {MEMORY} MiB, {ns.runs} runs each, interleaved)")
    print(f"{'path':<18}{'median s':>10}{'min s':>10}{'max s':>10}")
    for name, ts in rows:
        print(f"{name:<18}{statistics.median(ts):>10.3f}{min(ts):>10.3f}{max(ts):>10.3f}")
    print(f"ratio pyxen/bare (median of rounds): {ratio:.3f}  (goal <= {GOAL}: {'met' if ratio <= GOAL else 'NOT met'})")
    out = ROOT / "bench" / "results" / "boot.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        **facts,
        "what": (f"seconds from xl create of the demo guest ({MEMORY} MiB, 1 vCPU, {accel}) on a pyxen host "
                 "to its up line in xenconsoled's log, against a bare qemu-system-x86_64 booting the same "
                 "kernel and initramfs with the same memory to the up line on its serial port, interleaved"),
        "accel": accel, "memory_mib": MEMORY, "runs": ns.runs,
        "rounds": [{"pyxen_s": p, "bare_s": b, "ratio": p / b} for p, b in zip(pyxen_t, bare_t)],
        "figures": [figure("boot to the up line", "s", pyxen=med_p, reference=med_b, ratio=ratio,
                           goal=("<=", GOAL))],
    }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
