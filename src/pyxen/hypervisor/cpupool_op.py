"""The CPU pool hypercalls (XEN_SYSCTL_cpupool_op) and the pools' scheduler parameters
(XEN_SYSCTL_scheduler_op): the table's rules are cpupool.py's; here each change is applied to
the domains' cpusets and saved.

A change to a pool's CPUs re-places every domain of the pool (Hypervisor.place), so its vCPUs
never run outside the pool's CPUs for longer than the few writes it takes.
"""

from __future__ import annotations

import logging
from typing import Any

from .core import Hypervisor, hypercall, int_arg
from .cpupool import CpuPool, domain_counts

log = logging.getLogger(__name__)


def _counts(hv: Hypervisor) -> dict[int, int]:
    return domain_counts(hv.cpupools, {d.domid: d.cpupool for d in hv.domains.values() if not d.dying})


def _replace_pool(hv: Hypervisor, pool: CpuPool) -> None:
    """Apply a pool's new CPUs to its domains and save the table."""
    hv.save_pools()
    for dom in list(hv.domains.values()):
        if dom.cpupool == pool.poolid and not dom.is_dom0 and not dom.dying:
            hv.place(dom)


def _info(hv: Hypervisor, pool: CpuPool, counts: dict[int, int]) -> dict[str, Any]:
    return {"poolid": pool.poolid, "name": pool.name, "sched": pool.sched, "cpus": list(pool.cpus),
            "n_dom": counts.get(pool.poolid, 0), "tslice_ms": pool.tslice_ms,
            "ratelimit_us": pool.ratelimit_us, "migr_delay_us": pool.migr_delay_us,
            "enforced": hv.cpuset.available}


@hypercall("sysctl.cpupool_op.info")
async def _pool_info(hv: Hypervisor, args: dict[str, Any]) -> list[dict[str, Any]]:
    """XEN_SYSCTL_CPUPOOL_OP_INFO for every pool, by id, with the free CPUs' count beside."""
    counts = _counts(hv)
    return [_info(hv, p, counts) for _, p in sorted(hv.cpupools.pools.items())]


@hypercall("sysctl.cpupool_op.create")
async def _pool_create(hv: Hypervisor, args: dict[str, Any]) -> int:
    """A new pool named ``name`` running ``sched`` with the free CPUs ``cpus``: all or nothing
    (libxl_cpupool_create makes the pool, then adds each CPU, and destroys it on a failure)."""
    op = "sysctl.cpupool_op.create"
    cpus = args.get("cpus", [])
    pool = hv.cpupools.create(args.get("name"), args.get("sched"), op)
    try:
        for cpu in cpus if isinstance(cpus, list) else [cpus]:
            hv.cpupools.add_cpu(pool.poolid, cpu, op)
    except BaseException:
        hv.cpupools.pools.pop(pool.poolid, None)
        raise
    hv.save_pools()
    log.info("cpupool %d (%s): created, %s, CPUs %s", pool.poolid, pool.name, pool.sched, pool.cpus)
    return pool.poolid


@hypercall("sysctl.cpupool_op.destroy")
async def _pool_destroy(hv: Hypervisor, args: dict[str, Any]) -> None:
    op = "sysctl.cpupool_op.destroy"
    poolid = int_arg(args, "poolid", op)
    pool = hv.cpupools.destroy(poolid, _counts(hv).get(poolid, 0), op)
    hv.save_pools()
    log.info("cpupool %d (%s): destroyed; CPUs %s are free", pool.poolid, pool.name, pool.cpus)


@hypercall("sysctl.cpupool_op.rename")
async def _pool_rename(hv: Hypervisor, args: dict[str, Any]) -> None:
    hv.cpupools.rename(args.get("poolid"), args.get("name"), "sysctl.cpupool_op.rename")
    hv.save_pools()


@hypercall("sysctl.cpupool_op.addcpu")
async def _pool_addcpu(hv: Hypervisor, args: dict[str, Any]) -> None:
    pool = hv.cpupools.add_cpu(args.get("poolid"), args.get("cpu"), "sysctl.cpupool_op.addcpu")
    _replace_pool(hv, pool)


@hypercall("sysctl.cpupool_op.removecpu")
async def _pool_removecpu(hv: Hypervisor, args: dict[str, Any]) -> None:
    op = "sysctl.cpupool_op.removecpu"
    poolid = int_arg(args, "poolid", op)
    pool = hv.cpupools.remove_cpu(poolid, args.get("cpu"), _counts(hv).get(poolid, 0), op)
    _replace_pool(hv, pool)


@hypercall("sysctl.cpupool_op.movedomain")
async def _pool_movedomain(hv: Hypervisor, args: dict[str, Any]) -> None:
    """Move a domain into another pool: its vCPUs go to the new pool's CPUs at once."""
    op = "sysctl.cpupool_op.movedomain"
    dom = hv.domain(args, op)
    pool = hv.cpupools.check_move(args.get("poolid"), dom.domid, op)
    if dom.cpupool == pool.poolid:
        return
    dom.cpupool = pool.poolid
    dom.save(hv.paths.domains_dir)
    hv.place(dom)
    hv.enforce_sched(dom)  # the new pool's scheduler decides the domain's bandwidth
    log.info("d%d: moved to cpupool %d (%s)", dom.domid, pool.poolid, pool.name)


@hypercall("sysctl.scheduler_op.getinfo")
async def _sched_getinfo(hv: Hypervisor, args: dict[str, Any]) -> dict[str, Any]:
    """XEN_SYSCTL_SCHEDOP_getinfo: a pool's scheduler and its parameters."""
    pool = hv.cpupools.get(args.get("poolid", 0), "sysctl.scheduler_op.getinfo")
    return _info(hv, pool, _counts(hv))


@hypercall("sysctl.scheduler_op.putinfo")
async def _sched_putinfo(hv: Hypervisor, args: dict[str, Any]) -> dict[str, Any]:
    """XEN_SYSCTL_SCHEDOP_putinfo: set a pool's scheduler parameters (``sched`` must be the
    pool's: libxl asks through the scheduler's own call), with libxl's range checks."""
    op = "sysctl.scheduler_op.putinfo"
    sched = args.get("sched")
    pool = hv.cpupools.set_params(args.get("poolid", 0), str(sched), args, op)
    hv.save_pools()
    log.info("cpupool %s: %s tslice %dms ratelimit %dus", pool.name, pool.sched, pool.tslice_ms,
             pool.ratelimit_us)
    return _info(hv, pool, _counts(hv))
