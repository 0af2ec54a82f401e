"""Toolstack side of vCPUs, scheduling and CPU pools (libxl_cpupool.c, libxl_sched.c, and
libxl_set_vcpuonline of libxl_domain.c): naming pools, bringing vCPUs online, pinning them.

The pools themselves and the rules on them are the hypervisor's (hypervisor/cpupool.py); here
a pool argument is resolved as libxl does (a name, else a number), and vCPU hotplug is done in
both of Xen's halves: the device model's CPU hotplug (``dm_op.set_vcpus``) and the guest's
``cpu/N/availability`` nodes, which pyxen's demo guest obeys as Linux's Xen PV code does.
"""

from __future__ import annotations

from typing import Any

from ..hypervisor.client import XenCtrl
from ..libxlu.domid import parse_uint
from ..paths import Paths
from ..xenstore.client import XenstoreClient
from .xsdomain import dom_path


class PoolNotFound(LookupError):
    """No pool has this name or id."""


def list_pools(ctrl: XenCtrl) -> list[dict[str, Any]]:
    """libxl_list_cpupool: every pool, by id."""
    return list(ctrl.call("sysctl.cpupool_op.info"))


def pool_id(ctrl: XenCtrl, qualifier: str) -> int:
    """libxl_cpupool_qualifier_to_cpupoolid + libxl_cpupoolid_is_valid: a pool's name, else
    its number. :raise PoolNotFound: neither names a pool."""
    pools = list_pools(ctrl)
    for p in pools:
        if p["name"] == qualifier:
            return int(p["poolid"])
    number = parse_uint(qualifier)
    if number is not None and any(p["poolid"] == number for p in pools):
        return number
    raise PoolNotFound(qualifier)


def pool_by_name(ctrl: XenCtrl, name: str) -> int | None:
    """libxl_name_to_cpupoolid: by name only."""
    return next((int(p["poolid"]) for p in list_pools(ctrl) if p["name"] == name), None)


def set_vcpus(ctrl: XenCtrl, paths: Paths, domid: int, online: int) -> int:
    """libxl_set_vcpuonline: ``online`` vCPUs (the first ones) online, the rest offline.

    The device model's CPUs first (a new CPU must exist before the guest is told to use it),
    then cpu/N/availability for every N below max_vcpus."""
    done = int(ctrl.call("dm_op.set_vcpus", domid=domid, online=online))
    info = ctrl.call("domctl.getdomaininfo", domid=domid)
    def write(t: Any) -> None:
        for n in range(int(info["max_vcpus"])):
            t.write(f"{dom_path(domid)}/cpu/{n}/availability", "online" if n < done else "offline")

    with XenstoreClient(paths.xenstored_socket) as xs:
        xs.transact(write)
    return done


def pin(ctrl: XenCtrl, domid: int, vcpus: list[int], hard: list[int] | None,
        soft: list[int] | None, force: bool = False) -> list[dict[str, list[int]]]:
    """libxl_set_vcpuaffinity for each of ``vcpus``; None leaves that affinity as it is."""
    return [ctrl.call("domctl.setvcpuaffinity", domid=domid, vcpu=n, hard=hard, soft=soft, force=force)
            for n in vcpus]


def rtds_vcpu_get(ctrl: XenCtrl, domid: int, vcpus: list[int]) -> list[dict[str, Any]]:
    """xc_sched_rtds_vcpu_get: each of ``vcpus``' {vcpuid, period, budget, extratime}."""
    return list(ctrl.call("domctl.scheduler_op.getvcpuinfo", domid=domid, vcpus=vcpus))


def rtds_vcpu_set(ctrl: XenCtrl, domid: int, vcpus: list[dict[str, Any]]) -> dict[str, Any]:
    """xc_sched_rtds_vcpu_set: ``vcpus`` = [{vcpuid, period, budget, extratime}]."""
    return dict(ctrl.call("domctl.scheduler_op.putvcpuinfo", domid=domid, vcpus=vcpus))
