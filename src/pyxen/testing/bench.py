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
