"""The hypervisor's domain record: what Xen keeps in struct domain and reports in xc_dominfo.

A record is plain data, persisted as JSON under lib/domains/<domid>.json so a restarted daemon
can re-adopt the QEMU process that runs the domain. Live facts (running or blocked, CPU time)
are read from that process when asked, never stored.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any


class ShutdownReason(IntEnum):
    """SHUTDOWN_* of xen/include/public/sched.h; xl list shows them as '-rscwS'."""

    POWEROFF = 0
    REBOOT = 1
    SUSPEND = 2
    CRASH = 3
    WATCHDOG = 4
    SOFT_RESET = 5


DOMID_DOM0 = 0
#: DomU ids run up to DOMID_FIRST_RESERVED - 1, as in Xen.
DOMID_FIRST_RESERVED = 0x7FF0


@dataclass
class Domain:
    """One domain. Memory in KiB (Xen's tot_pages and max_pages, times 4)."""

    domid: int
    name: str
    uuid: str
    type: str
    max_vcpus: int
    online_vcpus: int
    memory_kb: int
    max_memkb: int
    created: float
    paused: bool = True
    shutdown: bool = False
    shutdown_reason: int | None = None
    dying: bool = False
    pid: int | None = None
    accel: str = "tcg"
    #: The createdomain request it was built from (domctl.CreateDomain's wire form).
    build: dict[str, Any] = field(default_factory=dict)
    cpu_weight: int = 256
    cap: int = 0
    #: Between createdomain and finish_build: dies with its builder's connection.
    building: bool = False
    #: What the guest holds now as its balloon last reported it (0: not known yet).
    current_kb: int = 0
    #: The CPU pool it is in (cpupool.py); Domain-0 is in Pool-0.
    cpupool: int = 0
    #: Each vCPU's hard and soft affinity as set (XEN_DOMCTL_setvcpuaffinity), by vCPU number;
    #: a missing or empty entry is "all". Kept here, not only in the kernel, because Linux
    #: resets a thread's affinity whenever its cpuset changes (a pool's CPUs, a move).
    hard_affinity: list[list[int]] = field(default_factory=list)
    soft_affinity: list[list[int]] = field(default_factory=list)
    #: Each vCPU's RTDS [period_us, budget_us, extratime] as set (sched_rtds.py), by vCPU
    #: number; a missing or empty entry has RTDS's defaults.
    rtds: list[list[int]] = field(default_factory=list)

    def affinity(self, kind: str, vcpu: int) -> list[int]:
        """vCPU ``vcpu``'s ``kind`` ("hard" or "soft") affinity as set; [] is all CPUs."""
        table = self.hard_affinity if kind == "hard" else self.soft_affinity
        return list(table[vcpu]) if vcpu < len(table) else []

    def set_affinity(self, kind: str, vcpu: int, cpus: list[int]) -> None:
        table = self.hard_affinity if kind == "hard" else self.soft_affinity
        while len(table) <= vcpu:
            table.append([])
        table[vcpu] = sorted(cpus)

    @property
    def is_dom0(self) -> bool:
        return self.domid == DOMID_DOM0

    def save(self, directory: Path) -> None:
        """Write the record atomically (a crash leaves the old or the new, never half)."""
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{self.domid}.json.tmp"
        with open(tmp, "w") as f:
            json.dump(asdict(self), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        tmp.rename(directory / f"{self.domid}.json")

    @classmethod
    def load(cls, path: Path) -> "Domain":
        data = json.loads(path.read_text())
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @staticmethod
    def forget(directory: Path, domid: int) -> None:
        try:
            (directory / f"{domid}.json").unlink()
        except FileNotFoundError:
            pass


def state_letters(running: bool, blocked: bool, paused: bool, shutdown: bool,
                  reason: int | None, dying: bool) -> str:
    """xl list's six-character State column (tools/xl/xl_info.c)."""
    reason_char = "-"
    if shutdown and reason is not None:
        reason_char = "-rscwS"[reason] if 0 <= reason <= 5 else "?"
    return "".join((
        "r" if running else "-",
        "b" if blocked else "-",
        "p" if paused else "-",
        "s" if shutdown else "-",
        reason_char,
        "d" if dying else "-",
    ))
