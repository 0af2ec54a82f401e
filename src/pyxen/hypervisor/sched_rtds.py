"""The RTDS scheduler's per-vCPU parameters, period and budget (XEN_DOMCTL_SCHEDOP_getvcpuinfo /
putvcpuinfo of xen/common/sched/rt.c), for the domains of a pool created with sched="rtds".

Xen's RTDS gives each vCPU ``budget`` microseconds of CPU in every ``period``; with extratime a
vCPU that has used its budget may still run on otherwise idle CPU. pyxen's vCPUs are QEMU threads
scheduled by Linux, and the nearest Linux has is the cgroup cpu controller's bandwidth limit
(cgroup.py): the domain's group gets ``cpu.max`` (v2) or ``cpu.cfs_quota_us``/``cfs_period_us``
(v1) equal to the sum of its online vCPUs' budget/period shares. That is a ceiling, not Xen's
reservation: Linux guarantees no vCPU its budget. Extratime means no ceiling at all. Per-vCPU
values are kept and reported per vCPU, but the limit is the domain's whole
(docs/scheduling.md).
"""

from __future__ import annotations

import logging
from typing import Any

from .core import Hypervisor, hypercall
from .domain import Domain
from .errors import InvalidArgument
from .rtds import check_vcpu, domain_bandwidth, vcpu_params

log = logging.getLogger(__name__)

def _rtds_domain(hv: Hypervisor, args: dict[str, Any], op: str) -> Domain:
    """The domain, which must be in an RTDS pool (sched_adjust: EINVAL on another scheduler)."""
    dom = hv.domain(args, op)
    pool = hv.cpupools.pools.get(dom.cpupool) or hv.cpupools.pools[0]
    if pool.sched != "rtds":
        raise InvalidArgument(f"d{dom.domid} is in cpupool {pool.name}, which runs {pool.sched}, not rtds", op)
    return dom


def _vcpuid(dom: Domain, v: object, op: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < dom.max_vcpus:
        raise InvalidArgument(f"d{dom.domid} has no vcpu {v}", op)
    return v


@hypercall("domctl.scheduler_op.getvcpuinfo")
async def _getvcpuinfo(hv: Hypervisor, args: dict[str, Any]) -> list[dict[str, Any]]:
    """XEN_DOMCTL_SCHEDOP_getvcpuinfo: ``vcpus`` (a list of ids) -> each one's period, budget and
    extratime."""
    op = "domctl.scheduler_op.getvcpuinfo"
    dom = _rtds_domain(hv, args, op)
    wanted = args.get("vcpus")
    if not isinstance(wanted, list) or not wanted:
        raise InvalidArgument("'vcpus' must be a non-empty list of vcpu ids", op)
    out = []
    for v in wanted:
        n = _vcpuid(dom, v, op)
        period, budget, extra = vcpu_params(dom, n)
        out.append({"vcpuid": n, "period": period, "budget": budget, "extratime": extra})
    return out


@hypercall("domctl.scheduler_op.putvcpuinfo")
async def _putvcpuinfo(hv: Hypervisor, args: dict[str, Any]) -> dict[str, Any]:
    """XEN_DOMCTL_SCHEDOP_putvcpuinfo: ``vcpus`` = [{vcpuid, period, budget, extratime}]. All are
    checked before any is set (Xen sets those before a bad one; refusing whole changes nothing),
    then the domain's bandwidth is put into force."""
    op = "domctl.scheduler_op.putvcpuinfo"
    dom = _rtds_domain(hv, args, op)
    items = args.get("vcpus")
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        raise InvalidArgument("'vcpus' must be a non-empty list of {vcpuid, period, budget, extratime}", op)
    changes = []
    for item in items:
        n = _vcpuid(dom, item.get("vcpuid"), op)
        period, budget = check_vcpu(item.get("period"), item.get("budget"), op)
        changes.append((n, [period, budget, bool(item.get("extratime", True))]))
    for n, value in changes:
        while len(dom.rtds) <= n:
            dom.rtds.append([])
        dom.rtds[n] = value
    dom.save(hv.paths.domains_dir)
    enforced = hv.enforce_sched(dom)
    quota, period = domain_bandwidth(dom)
    log.info("d%d: rtds %s -> cpu bandwidth %s/%dus%s", dom.domid, changes, quota, period,
             "" if enforced else " (not enforced)")
    return {"quota_us": quota, "period_us": period, "enforced": enforced}
