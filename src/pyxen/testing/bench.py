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
    """Date (UTC), git revision (and whether the tree had changes), cores, CPU model, memory
    and the load average just before the run."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    mem_kb = 0
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "revision": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "machine": {"cores": os.cpu_count(), "cpu": _cpu_model(), "memory_mib": mem_kb >> 10,
                    "kernel": platform.release(), "loadavg_before": list(os.getloadavg())},
    }


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
