"""Linux cgroup cpu controller, v1 or v2: where pyxen's credit scheduler parameters take effect.

See sched_credit.py for the mapping of Xen's weight and cap onto it. v1 (``cpu`` hierarchy)
takes thread ids, so only a domain's vCPU threads go in its group; v2 takes whole processes,
so the domain's QEMU goes in. Each host (PYXEN_ROOT) has its own parent group.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_WEIGHT = 256
PERIOD_US = 100_000
V1_ROOT = Path("/sys/fs/cgroup/cpu")
V2_ROOT = Path("/sys/fs/cgroup")


def _group_name(root: Path) -> str:
    return "pyxen-" + hashlib.sha1(str(root).encode()).hexdigest()[:8]


class CpuController:
    """The cgroup cpu controller of this host, v1 or v2, or none."""

    def __init__(self, state_root: Path) -> None:
        name = _group_name(state_root)
        self.version = 0
        self.base: Path | None = None
        if (V1_ROOT / "cpu.shares").exists():
            self.version, self.base = 1, V1_ROOT / name
        elif "cpu" in _read(V2_ROOT / "cgroup.controllers").split():
            self.version, self.base = 2, V2_ROOT / name
        if self.base is not None:
            try:
                self.base.mkdir(exist_ok=True)
                if self.version == 2:
                    (V2_ROOT / "cgroup.subtree_control").write_text("+cpu")
                    (self.base / "cgroup.subtree_control").write_text("+cpu")
            except OSError as err:
                log.warning("no usable cpu controller (%s): weight and cap are not enforced", err)
                self.version, self.base = 0, None

    @property
    def available(self) -> bool:
        return self.base is not None

    def group(self, domid: int) -> Path | None:
        return self.base / f"d{domid}" if self.base is not None else None

    def apply(self, domid: int, pid: int, tids: list[int], weight: int, cap: int) -> bool:
        """Put the domain's vCPUs in its group and set weight and cap; False if not enforced."""
        group = self.group(domid)
        if group is None:
            return False
        try:
            group.mkdir(exist_ok=True)
            if self.version == 1:
                (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (group / "cpu.shares").write_text(str(max(2, weight * 1024 // DEFAULT_WEIGHT)))
                (group / "cpu.cfs_quota_us").write_text(str(cap * PERIOD_US // 100) if cap else "-1")
                for tid in tids:
                    (group / "tasks").write_text(str(tid))
            else:
                (group / "cpu.weight").write_text(str(min(10000, max(1, weight * 100 // DEFAULT_WEIGHT))))
                (group / "cpu.max").write_text(f"{cap * PERIOD_US // 100 if cap else 'max'} {PERIOD_US}")
                (group / "cgroup.procs").write_text(str(pid))
        except OSError as err:
            log.error("d%d: cannot apply weight %d cap %d: %s", domid, weight, cap, err)
            return False
        return True

    def remove_base(self) -> None:
        """The host's parent group, when no domain is left in it (daemon exit)."""
        if self.base is not None and self.base.exists() and not any(self.base.glob("d*")):
            try:
                self.base.rmdir()
            except OSError as err:
                log.debug("cgroup %s not removed: %s", self.base, err)

    def remove(self, domid: int) -> None:
        group = self.group(domid)
        if group is not None and group.exists():
            try:
                group.rmdir()
            except OSError as err:  # threads still inside: they die with QEMU; retry is harmless
                log.debug("d%d: cgroup not removed yet: %s", domid, err)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
