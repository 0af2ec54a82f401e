"""What every benchmark result records besides its numbers: when, which revision, on what
machine and how loaded it was, so a committed result can be checked and compared."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_facts(repo: Path) -> dict[str, Any]:
    """Date (UTC), git revision (and whether the code differed from it: ``dirty``; every changed
    tracked file in ``changed``), cores, CPU model, memory
    and the load average just before the run."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    # tracked files that differ from the revision; other result files do not make a run's code
    # differ from it (a benchmark run just before rewrote its own), so they are listed but not
    # counted as dirty
    listed = git("diff", "--name-only", "HEAD").splitlines()
    changed = [path for path in listed if not path.startswith("bench/results/")]
    mem_kb = 0
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "revision": git("rev-parse", "HEAD"), "dirty": bool(changed), "changed": listed,
        "machine": {"cores": os.cpu_count(), "cpu": _cpu_model(), "memory_mib": mem_kb >> 10,
                    "kernel": platform.release(), "loadavg_before": list(os.getloadavg())},
    }


def compile_bytecode(repo: Path) -> None:
    """Compile the tree's modules once, as pip's install does, so a timed command (xl create,
    a daemon's start) does not compile its sources on every run (with PYTHONDONTWRITEBYTECODE set
    in the environment nothing would be cached, and each xl run compiled some 80 modules)."""
    import compileall
    compileall.compile_dir(str(repo / "src"), quiet=1)


def time_to_output(cmd: list[str], marker: bytes, timeout: float) -> float:
    """Seconds from starting ``cmd`` until ``marker`` appears on its stdout (a bare QEMU's
    serial console); the process is killed afterwards. RuntimeError if it never appears."""
    import select
    import time

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    seen = b""
    try:
        while time.perf_counter() - t0 < timeout:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                seen += chunk
                if marker in seen:
                    return time.perf_counter() - t0
        raise RuntimeError(f"{cmd[0]} printed no '{marker.decode(errors='replace')}'")
    finally:
        proc.kill()
        proc.wait()


#: A goal's comparison, as written in the README's goal column.
GOAL_OPS = {"<=": lambda value, bound: value <= bound, ">=": lambda value, bound: value >= bound,
            "<": lambda value, bound: value < bound, ">": lambda value, bound: value > bound}


def figure(name: str, unit: str, *, pyxen: float | None = None, reference: float | None = None,
           ratio: float | None = None, value: float | None = None,
           goal: tuple[str, float] | None = None) -> dict[str, Any]:
    """One headline figure of a result file (its ``"figures"`` list), from which bench/table.py
    writes the README's benchmark table, so no figure there is typed by hand.

    A compared figure gives ``pyxen`` and ``reference`` (medians, in ``unit``) and ``ratio`` (the
    median of the per-round ratios, which is not pyxen/reference when rounds are paired); its goal
    applies to the ratio. A plain figure gives ``value`` (in ``unit``); its goal applies to that.
    ``goal`` is (op, bound) with op one of GOAL_OPS; ``met`` is computed here, never passed."""
    if (ratio is None) == (value is None):
        raise ValueError(f"figure {name!r}: give either ratio (with pyxen and reference) or value")
    if ratio is not None and (pyxen is None or reference is None):
        raise ValueError(f"figure {name!r}: a ratio needs pyxen and reference")
    out: dict[str, Any] = {"name": name, "unit": unit}
    if ratio is not None:
        out.update(pyxen=pyxen, reference=reference, ratio=ratio)
    else:
        out["value"] = value
    if goal is not None:
        op, bound = goal
        if op not in GOAL_OPS:
            raise ValueError(f"figure {name!r}: goal operator {op!r} is not one of {', '.join(GOAL_OPS)}")
        headline = ratio if ratio is not None else value
        assert headline is not None
        out["goal"] = [op, bound]
        out["met"] = bool(GOAL_OPS[op](headline, bound))
    return out
