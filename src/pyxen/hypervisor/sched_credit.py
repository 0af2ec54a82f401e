"""The credit scheduler's per-domain parameters, weight and cap (XEN_DOMCTL_SCHEDOP_*info).

credit2 (a pool created with sched="credit2") has the same two parameters with the same ranges
and pyxen puts them into force the same way; getinfo names the domain's pool's scheduler so the
toolstack can refuse a credit call on a credit2 domain as libxl does.

Xen's credit1 gives each domain CPU in proportion to its weight (default 256, 1..65535) and, with
a cap, at most cap% of one CPU (0 = no cap; 100 * vCPUs at most). pyxen's vCPUs are QEMU
threads scheduled by Linux, so the same two knobs are the cgroup cpu controller's (cgroup.py):

* cgroup v1: ``cpu.shares`` = weight * 1024 / 256, ``cpu.cfs_quota_us`` = cap% of the period;
* cgroup v2: ``cpu.weight`` = weight * 100 / 256 (1..10000), ``cpu.max`` = "<quota> <period>".

Where no writable cpu controller exists the parameters are kept and reported as not enforced.
"""

from __future__ import annotations

import logging
from typing import Any

from . import rtds
from .core import Hypervisor, hypercall
from .errors import InvalidArgument

log = logging.getLogger(__name__)


@hypercall("domctl.scheduler_op.getinfo")
async def _getinfo(hv: Hypervisor, args: dict[str, Any]) -> dict[str, Any]:
    """XEN_DOMCTL_SCHEDOP_getinfo for credit: weight and cap, and whether the host enforces them."""
    dom = hv.domain(args, "domctl.scheduler_op.getinfo")
    pool = hv.cpupools.pools.get(dom.cpupool) or hv.cpupools.pools[0]
    info = {"weight": dom.cpu_weight, "cap": dom.cap, "enforced": hv.cpu.available or dom.is_dom0,
            "sched": pool.sched, "cpupool": pool.poolid}
    if pool.sched == "rtds":  # rt.c's getinfo: the defaults, whatever the vCPUs have
        info.update(period=rtds.DEFAULT_PERIOD, budget=rtds.DEFAULT_BUDGET)
    return info


@hypercall("domctl.scheduler_op.putinfo")
async def _putinfo(hv: Hypervisor, args: dict[str, Any]) -> dict[str, Any]:
    """XEN_DOMCTL_SCHEDOP_putinfo: set weight and/or cap (credit1's ranges), then enforce them."""
    op = "domctl.scheduler_op.putinfo"
    dom = hv.domu(args, op)
    weight, cap = args.get("weight", dom.cpu_weight), args.get("cap", dom.cap)
    if not isinstance(weight, int) or not 1 <= weight <= 65535:
        raise InvalidArgument(f"weight {weight} is out of range 1..65535", op)
    if not isinstance(cap, int) or not 0 <= cap <= 100 * dom.max_vcpus:
        raise InvalidArgument(f"cap {cap} is out of range 0..{100 * dom.max_vcpus}", op)
    dom.cpu_weight, dom.cap = weight, cap
    dom.save(hv.paths.domains_dir)
    enforced = hv.enforce_sched(dom)
    log.info("d%d: credit weight %d cap %d%s", dom.domid, weight, cap, "" if enforced else " (not enforced)")
    return {"weight": weight, "cap": cap, "enforced": enforced}
