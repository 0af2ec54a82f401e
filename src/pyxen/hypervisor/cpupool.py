"""CPU pools (XEN_SYSCTL_cpupool_op): the host's CPUs split into pools, each with its scheduler
and its domains; a domain's vCPUs run only on its pool's CPUs.

Pure: the table of pools and Xen's rules on it (xen/common/sched/cpupool.c), with Xen's errno
for each refusal. Pool-0 (id 0) holds every CPU at start and can never be destroyed; a CPU is in
at most one pool, a free CPU in none. The hypervisor (cpupool_op.py) applies each change to the
domains' cpusets (cgroup.py) and keeps the table across a restart of its daemon (``Hypervisor.
save_table("cpupools")``), as Xen keeps its pools across nothing, but pyxen's daemon can be
restarted under running guests.

The scheduler parameters a pool has (credit: tslice_ms, ratelimit_us, vcpu_migr_delay_us;
credit2: ratelimit_us) are kept and reported as Xen's sysctl scheduler_op does. Linux's CFS has
no per-group time slice or rate limit, so they are not enforced: docs/scheduling.md.
"""

from __future__ import annotations

import errno
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import HypercallError, InvalidArgument

OP = "sysctl.cpupool_op"
#: The schedulers a pool can run (libxl_scheduler's names); pyxen maps them onto Linux's cgroup
#: cpu controller: weight and cap (sched_credit.py), RTDS's period and budget (sched_rtds.py).
SCHEDULERS = ("credit", "credit2", "rtds")
#: XEN_SYSCTL_CSCHED_TSLICE_MIN/MAX (ms), XEN_SYSCTL_SCHED_RATELIMIT_MIN/MAX (us),
#: XEN_SYSCTL_CSCHED_MGR_DLY_MAX_US (public/sysctl.h).
TSLICE_MIN, TSLICE_MAX = 1, 1000
RATELIMIT_MIN, RATELIMIT_MAX = 100, 500000
MIGR_DELAY_MAX = 100 * 1000


class PoolError(HypercallError):
    """A cpupool_op refused with the errno Xen's cpupool.c gives (EBUSY, ENODEV, ...)."""

    def __init__(self, code: int, message: str, op: str = OP) -> None:
        self.errno_value = code
        super().__init__(message, op)


@dataclass
class CpuPool:
    """One pool: xc_cpupoolinfo_t plus the name libxl keeps beside it and its scheduler's knobs."""

    poolid: int
    name: str
    sched: str
    cpus: list[int] = field(default_factory=list)
    tslice_ms: int = 30
    ratelimit_us: int = 1000
    migr_delay_us: int = 0


class PoolTable:
    """All pools of the host and the rules on them. ``domains`` (domid -> poolid) is passed in
    by the caller where a rule depends on them: the domain table is the hypervisor's."""

    def __init__(self, nr_cpus: int, sched: str = "credit", tslice_ms: int = 30,
                 ratelimit_us: int = 1000) -> None:
        self.nr_cpus = nr_cpus
        self.pools: dict[int, CpuPool] = {
            0: CpuPool(0, "Pool-0", sched if sched in SCHEDULERS else "credit", list(range(nr_cpus)),
                       tslice_ms, ratelimit_us)}

    # ---- persistence ---------------------------------------------------------------------
    def to_wire(self) -> list[dict[str, Any]]:
        return [asdict(p) for _, p in sorted(self.pools.items())]

    def load(self, data: Any) -> None:
        """Take a saved table (from before a restart); a malformed one leaves the start table."""
        if not isinstance(data, list):
            return
        pools: dict[int, CpuPool] = {}
        try:
            for item in data:
                pool = CpuPool(**{k: v for k, v in item.items() if k in CpuPool.__dataclass_fields__})
                pool.cpus = [c for c in pool.cpus if 0 <= c < self.nr_cpus]
                pools[pool.poolid] = pool
        except (TypeError, AttributeError):
            return
        if 0 in pools:
            self.pools = pools

    # ---- queries --------------------------------------------------------------------------
    def get(self, poolid: object, op: str = OP) -> CpuPool:
        """:raise PoolError: ENOENT, no pool has this id (Xen's cpupool_get_by_id)."""
        if not isinstance(poolid, int) or isinstance(poolid, bool) or poolid not in self.pools:
            raise PoolError(errno.ENOENT, f"no cpupool {poolid}", op)
        return self.pools[poolid]

    def free_cpus(self) -> list[int]:
        """CPUs in no pool (xc_cpupool_freeinfo)."""
        used = {c for p in self.pools.values() for c in p.cpus}
        return [c for c in range(self.nr_cpus) if c not in used]

    def pool_of_cpu(self, cpu: int) -> CpuPool | None:
        return next((p for p in self.pools.values() if cpu in p.cpus), None)

    # ---- changes (each validated whole before anything changes) ---------------------------
    def create(self, name: object, sched: object, op: str = OP) -> CpuPool:
        """A new empty pool with the lowest free id; CPUs are added one by one after, as
        libxl_cpupool_create does."""
        if not isinstance(name, str) or not name or "\0" in name or "/" in name:
            raise InvalidArgument(f"'{name}' is not a cpupool name", op)
        if any(p.name == name for p in self.pools.values()):
            raise PoolError(errno.EEXIST, f'Pool name "{name}" already exists', op)
        if sched not in SCHEDULERS:
            raise InvalidArgument(f"scheduler '{sched}' is not one of {', '.join(SCHEDULERS)}", op)
        poolid = next(i for i in range(len(self.pools) + 1) if i not in self.pools)
        default = self.pools[0]
        pool = CpuPool(poolid, name, str(sched), [], default.tslice_ms, default.ratelimit_us)
        self.pools[poolid] = pool
        return pool

    def destroy(self, poolid: object, n_dom: int, op: str = OP) -> CpuPool:
        """Remove a pool with no domain; its CPUs become free. Pool-0 never goes."""
        pool = self.get(poolid, op)
        if pool.poolid == 0:
            raise PoolError(errno.EBUSY, "Pool-0 cannot be destroyed", op)
        if n_dom:
            raise PoolError(errno.EBUSY, f"cpupool {pool.name} still has {n_dom} domain(s)", op)
        del self.pools[pool.poolid]
        return pool

    def rename(self, poolid: object, name: object, op: str = OP) -> None:
        pool = self.get(poolid, op)
        if not isinstance(name, str) or not name or "\0" in name or "/" in name:
            raise InvalidArgument(f"'{name}' is not a cpupool name", op)
        if any(p.name == name for p in self.pools.values() if p is not pool):
            raise PoolError(errno.EEXIST, f'Pool name "{name}" already exists', op)
        pool.name = name

    def add_cpu(self, poolid: object, cpu: object, op: str = OP) -> CpuPool:
        """XEN_SYSCTL_CPUPOOL_OP_ADDCPU: a free CPU joins the pool (EINVAL: no such CPU;
        ENODEV: the CPU is in a pool already)."""
        pool = self.get(poolid, op)
        if not isinstance(cpu, int) or isinstance(cpu, bool) or not 0 <= cpu < self.nr_cpus:
            raise PoolError(errno.EINVAL, f"cpu {cpu} does not exist", op)
        holder = self.pool_of_cpu(cpu)
        if holder is not None:
            raise PoolError(errno.ENODEV, f"cpu {cpu} is in cpupool {holder.name}, not free", op)
        pool.cpus = sorted(pool.cpus + [cpu])
        return pool

    def remove_cpu(self, poolid: object, cpu: object, n_dom: int, op: str = OP) -> CpuPool:
        """XEN_SYSCTL_CPUPOOL_OP_RMCPU: the CPU becomes free (EADDRNOTAVAIL: not in this pool;
        EBUSY: the pool's last CPU while it has domains)."""
        pool = self.get(poolid, op)
        if not isinstance(cpu, int) or isinstance(cpu, bool) or not 0 <= cpu < self.nr_cpus:
            raise PoolError(errno.EINVAL, f"cpu {cpu} does not exist", op)
        if cpu not in pool.cpus:
            raise PoolError(errno.EADDRNOTAVAIL, f"cpu {cpu} is not in cpupool {pool.name}", op)
        if len(pool.cpus) == 1 and n_dom:
            raise PoolError(errno.EBUSY, f"cpu {cpu} is the last of cpupool {pool.name}, "
                            f"which has {n_dom} domain(s)", op)
        pool.cpus = [c for c in pool.cpus if c != cpu]
        return pool

    def check_move(self, poolid: object, domid: int, op: str = OP) -> CpuPool:
        """XEN_SYSCTL_CPUPOOL_OP_MOVEDOMAIN's checks: the pool exists and has a CPU (ENOENT);
        Domain-0, the caller itself, cannot be moved (EPERM, rcu_lock_remote_domain_by_id)."""
        if domid == 0:
            raise PoolError(errno.EPERM, "Domain-0 cannot be moved to another cpupool", op)
        pool = self.get(poolid, op)
        if not pool.cpus:
            raise PoolError(errno.ENOENT, f"cpupool {pool.name} has no CPU", op)
        return pool

    def set_params(self, poolid: object, sched: str, params: dict[str, Any], op: str) -> CpuPool:
        """XEN_SYSCTL_SCHEDOP_putinfo for a pool: libxl's range checks, then the values."""
        pool = self.get(poolid, op)
        if pool.sched != sched:
            raise InvalidArgument(f"cpupool {pool.name} runs {pool.sched}, not {sched}", op)
        ints = {}
        for key in ("tslice_ms", "ratelimit_us", "migr_delay_us"):
            if key in params:
                v = params[key]
                if not isinstance(v, int) or isinstance(v, bool):
                    raise InvalidArgument(f"'{key}' must be an integer", op)
                ints[key] = v
        tslice = ints.get("tslice_ms", pool.tslice_ms)
        rlimit = ints.get("ratelimit_us", pool.ratelimit_us)
        delay = ints.get("migr_delay_us", pool.migr_delay_us)
        if sched == "credit" and not TSLICE_MIN <= tslice <= TSLICE_MAX:
            raise InvalidArgument(f"Time slice out of range, valid range is from {TSLICE_MIN} to {TSLICE_MAX}", op)
        if rlimit != 0 and not RATELIMIT_MIN <= rlimit <= RATELIMIT_MAX:
            raise InvalidArgument(f"Ratelimit out of range, valid range is from {RATELIMIT_MIN} "
                                  f"to {RATELIMIT_MAX}", op)
        if sched == "credit" and rlimit > tslice * 1000:
            raise InvalidArgument("Ratelimit cannot be greater than timeslice", op)
        if sched == "credit" and not 0 <= delay <= MIGR_DELAY_MAX:
            raise InvalidArgument(f"vcpu migration delay should be >= 0 and <= {MIGR_DELAY_MAX}us", op)
        pool.tslice_ms, pool.ratelimit_us, pool.migr_delay_us = tslice, rlimit, delay
        return pool


def effective_affinity(hard: list[int] | None, pool_cpus: list[int]) -> list[int]:
    """Where a vCPU may run: its hard affinity within its pool's CPUs; where they do not meet,
    the pool's CPUs (Xen breaks the affinity then: sched_move_domain, "Breaking affinity")."""
    if not hard:
        return sorted(pool_cpus)
    meet = sorted(set(hard) & set(pool_cpus))
    return meet or sorted(pool_cpus)


def soft_placement(hard: list[int], soft: list[int] | None) -> list[int] | None:
    """The CPUs a vCPU is first put on to honour its soft affinity, or None when the soft
    affinity adds nothing (all CPUs, or none of them allowed by the hard affinity: Xen then
    considers the hard affinity only)."""
    if not soft:
        return None
    meet = sorted(set(hard) & set(soft))
    return meet if meet and meet != sorted(hard) else None


def domain_counts(pools: PoolTable, domain_pools: dict[int, int]) -> dict[int, int]:
    """n_dom of each pool, from each live domain's pool id."""
    counts = {poolid: 0 for poolid in pools.pools}
    for poolid in domain_pools.values():
        if poolid in counts:
            counts[poolid] += 1
    return counts


