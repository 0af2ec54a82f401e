"""Linux cgroup cpu and cpuset controllers, v1 or v2: where pyxen's scheduler takes effect.

See sched_credit.py for the mapping of Xen's weight and cap onto the cpu controller. v1 (``cpu``
hierarchy) takes thread ids, so only a domain's vCPU threads go in its group; v2 takes whole
processes, so the domain's QEMU goes in. Each host (PYXEN_ROOT) has its own parent group.

CPU pools (cpupool.py) are the cpuset controller's: each DomU has a cpuset group (v1: under the
``cpuset`` hierarchy, holding its vCPU threads; v2: the same group as the cpu controller's)
whose ``cpus`` are its pool's CPUs, so its vCPUs can run nowhere else. Linux resets a thread's
affinity to its cpuset's CPUs when it joins the set or the set changes, so the hypervisor puts
each vCPU's hard affinity back after every write here (vcpu.py, ``Hypervisor.place``).
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
V1_CPUSET_ROOT = Path("/sys/fs/cgroup/cpuset")


def cap_quota(cap: int) -> int | None:
    """A credit cap (percent of one CPU, 0 = none) as a quota of PERIOD_US."""
    return cap * PERIOD_US // 100 if cap else None


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

    def apply(self, domid: int, pid: int, tids: list[int], weight: int, quota_us: int | None,
              period_us: int = PERIOD_US) -> bool:
        """Put the domain's vCPUs in its group and set its weight and bandwidth (``quota_us`` of
        CPU time in every ``period_us``; None: no limit); False if not enforced. A credit cap is
        cap% of PERIOD_US (cap_quota); RTDS's period and budget are rtds.domain_bandwidth's."""
        group = self.group(domid)
        if group is None:
            return False
        try:
            group.mkdir(exist_ok=True)
            if self.version == 1:
                # Quota off first: a new period below the old quota's would be refused (EINVAL).
                (group / "cpu.cfs_quota_us").write_text("-1")
                (group / "cpu.cfs_period_us").write_text(str(period_us))
                (group / "cpu.shares").write_text(str(max(2, weight * 1024 // DEFAULT_WEIGHT)))
                (group / "cpu.cfs_quota_us").write_text(str(quota_us) if quota_us else "-1")
                for tid in tids:
                    (group / "tasks").write_text(str(tid))
            else:
                (group / "cpu.weight").write_text(str(min(10000, max(1, weight * 100 // DEFAULT_WEIGHT))))
                (group / "cpu.max").write_text(f"{quota_us if quota_us else 'max'} {period_us}")
                (group / "cgroup.procs").write_text(str(pid))
        except OSError as err:
            log.error("d%d: cannot apply weight %d quota %s/%dus: %s", domid, weight, quota_us, period_us, err)
            return False
        return True

    def bandwidth(self, domid: int) -> tuple[str, str] | None:
        """The group's (quota, period) as the kernel holds them ("max"/"-1" for no limit), or
        None without a group: what tests and logs read back."""
        group = self.group(domid)
        if group is None:
            return None
        if self.version == 1:
            return (_read(group / "cpu.cfs_quota_us").strip(), _read(group / "cpu.cfs_period_us").strip())
        quota, _, period = _read(group / "cpu.max").strip().partition(" ")
        return quota, period

    def remove_base(self) -> None:
        """The host's parent group, when no domain is left in it (daemon exit)."""
        _remove_base(self.base)

    def remove(self, domid: int) -> None:
        group = self.group(domid)
        if group is not None and group.exists():
            try:
                group.rmdir()
            except OSError as err:  # threads still inside: they die with QEMU; retry is harmless
                log.debug("d%d: cgroup not removed yet: %s", domid, err)


class CpusetController:
    """The cgroup cpuset controller of this host, v1 or v2, or none: where a domain's vCPUs are
    held to its CPU pool's CPUs."""

    def __init__(self, state_root: Path) -> None:
        name = _group_name(state_root)
        self.version = 0
        self.base: Path | None = None
        if (V1_CPUSET_ROOT / "cpuset.cpus").exists():
            self.version, self.base = 1, V1_CPUSET_ROOT / name
        elif "cpuset" in _read(V2_ROOT / "cgroup.controllers").split():
            self.version, self.base = 2, V2_ROOT / name
        if self.base is not None:
            try:
                self.base.mkdir(exist_ok=True)
                if self.version == 1:
                    # A v1 cpuset starts empty: the parent group gets all the host's CPUs and nodes.
                    for knob in ("cpuset.cpus", "cpuset.mems"):
                        (self.base / knob).write_text(_read(V1_CPUSET_ROOT / knob).strip() or "0")
                else:
                    (V2_ROOT / "cgroup.subtree_control").write_text("+cpuset")
                    (self.base / "cgroup.subtree_control").write_text("+cpuset")
            except OSError as err:
                log.warning("no usable cpuset controller (%s): CPU pools are not enforced", err)
                self.version, self.base = 0, None

    @property
    def available(self) -> bool:
        return self.base is not None

    def group(self, domid: int) -> Path | None:
        return self.base / f"d{domid}" if self.base is not None else None

    def apply(self, domid: int, pid: int, tids: list[int], cpus: list[int]) -> bool:
        """Hold the domain's vCPU threads (v2: its QEMU) to ``cpus``; False if not enforced.
        The threads' own affinities are reset by Linux: the caller puts them back."""
        group = self.group(domid)
        if group is None or not cpus:
            return False
        text = ",".join(str(c) for c in sorted(cpus))
        try:
            group.mkdir(exist_ok=True)
            (group / "cpuset.cpus").write_text(text)
            if self.version == 1:
                assert self.base is not None
                (group / "cpuset.mems").write_text(_read(self.base / "cpuset.mems").strip() or "0")
                for tid in tids:
                    try:
                        (group / "tasks").write_text(str(tid))
                    except ProcessLookupError:
                        pass  # a vCPU unplugged meanwhile
            else:
                (group / "cgroup.procs").write_text(str(pid))
        except OSError as err:
            log.error("d%d: cannot hold its vCPUs to CPUs %s: %s", domid, text, err)
            return False
        return True

    def effective(self, domid: int) -> list[int] | None:
        """The CPUs the domain's group may use as the kernel reports them (None: no group)."""
        group = self.group(domid)
        if group is None:
            return None
        text = _read(group / ("cpuset.effective_cpus" if self.version == 1 else "cpuset.cpus.effective")).strip()
        out: list[int] = []
        for part in filter(None, text.split(",")):
            lo, _, hi = part.partition("-")
            out += range(int(lo), int(hi or lo) + 1)
        return out

    def remove(self, domid: int) -> None:
        group = self.group(domid)
        if group is not None and group.exists():
            try:
                group.rmdir()
            except OSError as err:
                log.debug("d%d: cpuset not removed yet: %s", domid, err)

    def remove_base(self) -> None:
        """The host's parent group, when no domain is left in it (daemon exit)."""
        _remove_base(self.base)


def _remove_base(base: Path | None) -> None:
    """Remove a host's parent group and the domain groups left empty in it (a destroy whose
    QEMU was still a zombie could not remove its group then); a group with threads stays."""
    if base is None or not base.exists():
        return
    for group in base.glob("d*"):
        try:
            group.rmdir()
        except OSError as err:
            log.debug("cgroup %s not removed: %s", group, err)
    try:
        base.rmdir()
    except OSError as err:
        log.debug("cgroup %s not removed: %s", base, err)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
