#!/usr/bin/env python3
"""Idle cost: the CPU an idle demo guest's QEMU uses under pyxen, against bare qemu-system-x86_64.

Each round boots both side by side: the demo guest through ``xl create`` on a pyxen host
(pyxen.testing.host), and a bare QEMU with pyxen's machine shape, its command line being the
pyxen QEMU's own (same kernel, initramfs, command line, memory, vCPUs, virtio-serial bus and
balloon) without QMP and with the console written straight to a file. Once both have printed
their up line, the guests are left alone for SETTLE seconds, then the CPU time of each QEMU (all
its threads, from the scheduler's own accounting in /proc/<pid>/task/*/schedstat, ns) is taken
over the same WINDOW seconds. The pyxen host's daemons' CPU over that window is recorded too
(what one idle guest costs Dom0). Which of the two starts first alternates between rounds.
Prints a table and writes bench/results/idle.json. Goal: pyxen/bare <= 1.5.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pyxen.images.demo import build  # noqa: E402
from pyxen.testing.bench import compile_bytecode, figure, run_facts  # noqa: E402
from pyxen.testing.host import UP_LINE, Host, daemon_argvs, qemu_pids_under, started_host  # noqa: E402

MEMORY = 128
SETTLE = 15.0
WINDOW = 10.0
TIMEOUT = 120.0
GOAL = 1.5


def cpu_ns(pid: int) -> int:
    """CPU time of every live thread of ``pid``, in ns (schedstat's first field)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def daemon_pids(root: Path) -> dict[int, str]:
    """The pyxen host's daemons: pid -> module name."""
    return {pid: argv[argv.index("-m") + 1] for pid, argv in daemon_argvs(root).items()}


def bare_argv(pyxen_argv: list[str], console: Path) -> list[str]:
    """The pyxen QEMU's command line for a bare run: no QMP socket, no ``-S`` (nobody would
    start it), the console chardev a plain file instead of xenconsoled's FIFO pair."""
    out: list[str] = []
    it = iter(pyxen_argv)
    for arg in it:
        if arg == "-S":
            continue
        if arg == "-qmp":
            next(it)
            continue
        if arg == "-chardev":
            spec = next(it)
            if spec.startswith("pipe,id=console0,"):
                spec = f"file,id=console0,path={console}"
            out += [arg, spec]
            continue
        out.append(arg)
    return out


def wait_for(path: Path, needle: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if needle in path.read_text(errors="replace"):
                return
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"no '{needle}' in {path} within {timeout} s")


def one_round(host: Host, cfg: Path, name: str, bare_first: bool, template: list[str] | None,
              scratch: Path, settle: float, window: float) -> tuple[dict[str, float], list[str]]:
    """Boot both, settle, measure: the round's figures, and the pyxen QEMU's argv."""
    console = scratch / "bare-console.log"
    console.unlink(missing_ok=True)
    bare: subprocess.Popen[bytes] | None = None

    def start_bare(argv: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(bare_argv(argv, console), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    log = host.paths.console_log(name)
    log.unlink(missing_ok=True)
    if bare_first and template is not None:
        bare = start_bare(template)
    try:
        host.xl("create", "-q", str(cfg))
        (qpid,) = qemu_pids_under(host.paths.root)
        argv = [a.decode() for a in Path(f"/proc/{qpid}/cmdline").read_bytes().split(b"\0")[:-1]]
        if bare is None:
            bare = start_bare(argv)
        wait_for(log, UP_LINE)
        wait_for(console, UP_LINE)
        time.sleep(settle)
        daemons = daemon_pids(host.paths.root)
        before = {"pyxen": cpu_ns(qpid), "bare": cpu_ns(bare.pid)}
        dbefore = {pid: cpu_ns(pid) for pid in daemons}
        t0 = time.perf_counter()
        time.sleep(window)
        after = {"pyxen": cpu_ns(qpid), "bare": cpu_ns(bare.pid)}
        dafter = {pid: cpu_ns(pid) for pid in daemons}
        elapsed = time.perf_counter() - t0
        row = {k: (after[k] - before[k]) / 1e9 / elapsed * 100 for k in after}
        per_daemon: dict[str, float] = {}
        for pid, mod in daemons.items():
            per_daemon[mod] = per_daemon.get(mod, 0.0) + (dafter[pid] - dbefore[pid]) / 1e9 / elapsed * 100
        result = {"pyxen_pct": row["pyxen"], "bare_pct": row["bare"],
                  "ratio": row["pyxen"] / row["bare"] if row["bare"] > 0 else float("inf"),
                  "daemons_pct": sum(per_daemon.values()), "per_daemon_pct": per_daemon,
                  "bare_first": bare_first}
        return result, argv
    finally:
        host.xl("destroy", name, check=False)
        if bare is not None:
            bare.kill()
            bare.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--settle", type=float, default=SETTLE, help="seconds after the up lines")
    ap.add_argument("--window", type=float, default=WINDOW, help="seconds measured")
    ap.add_argument("--extra", default="", help="more guest command line (e.g. pyxen.xsagent=0)")
    ap.add_argument("--script", default=None, help="a script the guest runs before its up line")
    ap.add_argument("--no-write", action="store_true", help="print only (exploratory runs)")
    ns = ap.parse_args()
    facts = run_facts(ROOT)
    compile_bytecode(ROOT)
    image = build()
    rounds: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="pyxen-idle-") as tmp, started_host(image, xenbr0=False) as host:
        cfg = host.write_cfg("idle", memory=MEMORY, cmdline_extra=ns.extra, script=ns.script)
        template: list[str] | None = None
        for i in range(ns.rounds):
            row, template = one_round(host, cfg, "idle", bare_first=bool(i % 2), template=template,
                                      scratch=Path(tmp), settle=ns.settle, window=ns.window)
            rounds.append(row)
            print(f"round {i + 1}: pyxen {row['pyxen_pct']:.2f}%  bare {row['bare_pct']:.2f}%  "
                  f"ratio {row['ratio']:.2f}  daemons {row['daemons_pct']:.2f}%", flush=True)
    pyxen_pct = [float(r["pyxen_pct"]) for r in rounds]  # type: ignore[arg-type]
    bare_pct = [float(r["bare_pct"]) for r in rounds]  # type: ignore[arg-type]
    ratios = [float(r["ratio"]) for r in rounds]  # type: ignore[arg-type]
    daemons = [float(r["daemons_pct"]) for r in rounds]  # type: ignore[arg-type]
    ratio = statistics.median(ratios)
    print(f"idle demo guest ({MEMORY} MiB, 1 vCPU), QEMU CPU over {ns.window:g} s from {ns.settle:g} s "
          f"after the up line, {ns.rounds} rounds side by side")
    print(f"{'':<22}{'median %':>10}{'min %':>10}{'max %':>10}")
    for label, vals in (("pyxen QEMU", pyxen_pct), ("bare QEMU", bare_pct), ("pyxen daemons", daemons)):
        print(f"{label:<22}{statistics.median(vals):>10.2f}{min(vals):>10.2f}{max(vals):>10.2f}")
    print(f"ratio pyxen/bare (median of rounds): {ratio:.2f}  (goal <= {GOAL}: "
          f"{'met' if ratio <= GOAL else 'NOT met'})")
    if ns.no_write:
        return 0
    out = ROOT / "bench" / "results" / "idle.json"
    out.write_text(json.dumps({
        **facts,
        "what": (f"CPU of an idle demo guest's QEMU ({MEMORY} MiB, 1 vCPU, TCG) over {ns.window:g} s "
                 f"starting {ns.settle:g} s after its up line, booted with xl create on a pyxen host, "
                 "against a bare qemu-system-x86_64 with the same command line (no QMP, console to a "
                 "file) measured in the same window"),
        "memory_mib": MEMORY, "settle_s": ns.settle, "window_s": ns.window, "guest_extra": ns.extra,
        "rounds": rounds,
        "figures": [
            figure("idle guest QEMU CPU", "% of a core", pyxen=statistics.median(pyxen_pct),
                   reference=statistics.median(bare_pct), ratio=ratio, goal=("<=", GOAL)),
            figure("idle guest Dom0 daemons CPU", "% of a core", value=statistics.median(daemons)),
        ],
    }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
