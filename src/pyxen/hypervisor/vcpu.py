"""vCPU placement and count: where each vCPU runs and may run (XEN_DOMCTL_getvcpuinfo,
setvcpuaffinity) and how many are online (CPU hotplug, dm_op.set_vcpus).

A DomU's vCPU is a QEMU thread. Its hard and soft affinity are kept in the domain record (they
survive a restart of this daemon) and put into force by ``Hypervisor.place``: the thread's CPU
affinity is the hard affinity within the domain's pool's CPUs (cpupool.py). Linux has no soft
affinity; a soft affinity moves the thread onto its preferred CPUs when it is set, and is
reported as set (docs/scheduling.md). Domain-0's vCPUs are the host's CPUs themselves: vCPU n is
CPU n, always "all", and cannot be re-pinned.
The cpumap text (``0-3,8``, ``all``, ``none``) is parsed and printed by libxlu/cpumap.py.
"""

from __future__ import annotations

import os
import re
from typing import Any

from ..procfs import read as read_proc, stat_fields
from .core import Hypervisor, hypercall, int_arg
from .errors import InvalidArgument, NoSuchDomain
from .qemu import thread_cpu_ns, thread_states


def _current_cpu(pid: int, tid: int) -> int:
    """The CPU a thread last ran on (field 39 of /proc/<pid>/task/<tid>/stat)."""
    try:
        fields = stat_fields(pid, tid)
        return int(fields[36])
    except (OSError, IndexError, ValueError):
        return -1


def _host_cpu_busy_ns() -> dict[int, int]:
    """Non-idle time of each host CPU (the cpuN lines of /proc/stat): Dom0's vCPU times."""
    tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    out = {}
    for line in read_proc("/proc/stat").splitlines():
        m = re.match(r"cpu(\d+) (\d+) (\d+) (\d+) \d+ \d+ (\d+) (\d+)", line)
        if m:
            out[int(m.group(1))] = sum(int(x) for x in m.groups()[1:]) * tick
    return out


def _vcpu_thread(hv: Hypervisor, domid: int, vcpu: int, op: str) -> tuple[int, int]:
    model = hv.models.get(domid)
    tids = hv.vcpu_tids.get(domid, [])
    if model is None or model.pid is None or not 0 <= vcpu < len(tids):
        raise InvalidArgument(f"domain {domid} has no vcpu {vcpu}", op)
    return model.pid, tids[vcpu]


@hypercall("domctl.getvcpuinfo")
async def _getvcpuinfo(hv: Hypervisor, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Each vCPU: the CPU it is on, running/blocked, CPU time, hard affinity."""
    op = "domctl.getvcpuinfo"
    dom = hv.domain(args, op)
    nr = hv.phys.nr_cpus
    if dom.is_dom0:
        busy = _host_cpu_busy_ns()
        return [{"vcpu": n, "cpu": n, "online": True, "running": True, "blocked": False,
                 "cpu_time_ns": busy.get(n, 0), "hard": list(range(nr)), "soft": list(range(nr))}
                for n in range(dom.online_vcpus)]
    out = []
    for n in range(dom.max_vcpus):
        aff = {"hard": dom.affinity("hard", n) or list(range(nr)),
               "soft": dom.affinity("soft", n) or list(range(nr))}
        if n >= dom.online_vcpus or n >= len(hv.vcpu_tids.get(dom.domid, [])):
            out.append({"vcpu": n, "cpu": -1, "online": False, "running": False, "blocked": False,
                        "cpu_time_ns": 0, **aff})
            continue
        pid, tid = _vcpu_thread(hv, dom.domid, n, op)
        state = thread_states(pid, [tid])
        running = not (dom.paused or dom.shutdown) and state == ["R"]
        try:
            allowed = sorted(os.sched_getaffinity(tid))
        except OSError:
            allowed = []
        out.append({"vcpu": n, "cpu": _current_cpu(pid, tid), "online": True, "running": running,
                    "blocked": not running and not dom.paused, "cpu_time_ns": thread_cpu_ns(pid, [tid]),
                    "allowed": allowed, **aff})
    return out


def _cpus(hv: Hypervisor, value: object, what: str, op: str) -> list[int] | None:
    """A cpumap argument: None (leave it as it is) or a non-empty list of the host's CPUs."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in value):
        raise InvalidArgument(f"setvcpuaffinity: {what} must be a list of CPUs", op)
    cpus = sorted(set(value))
    if not cpus or not all(0 <= c < hv.phys.nr_cpus for c in cpus):
        raise InvalidArgument(f"{what} affinity {value} names no CPU or CPUs this host lacks", op)
    return cpus


@hypercall("domctl.setvcpuaffinity")
async def _setvcpuaffinity(hv: Hypervisor, args: dict[str, Any]) -> dict[str, list[int]]:
    """Set one vCPU's ``hard`` and/or ``soft`` affinity (lists of CPUs; absent or None: left
    as it is) and put them into force. A hard affinity with no CPU of the domain's pool is
    EINVAL, as Xen's vcpu_set_hard_affinity; ``force`` is Xen's XEN_VCPUAFFINITY_FORCE, which
    undoes a guest's temporary pin (SCHEDOP_pin_override): pyxen's guests cannot pin, so it
    changes nothing more. Returns the hard and soft affinity now set and the CPUs the vCPU's
    thread may run on."""
    op = "domctl.setvcpuaffinity"
    dom = hv.domu(args, op)
    vcpu = args.get("vcpu")
    if not isinstance(vcpu, int) or isinstance(vcpu, bool):
        raise InvalidArgument("setvcpuaffinity needs vcpu (int)", op)
    if not 0 <= vcpu < dom.max_vcpus:
        raise InvalidArgument(f"domain {dom.domid} has no vcpu {vcpu}", op)
    hard = _cpus(hv, args.get("hard"), "hard", op)
    soft = _cpus(hv, args.get("soft"), "soft", op)
    pool = hv.cpupools.pools.get(dom.cpupool) or hv.cpupools.pools[0]
    if hard is not None and not set(hard) & set(pool.cpus):
        raise InvalidArgument(f"hard affinity {hard} has no CPU of cpupool {pool.name} "
                              f"({','.join(map(str, pool.cpus))})", op)
    if hard is not None:
        dom.set_affinity("hard", vcpu, [] if hard == list(range(hv.phys.nr_cpus)) else hard)
    if soft is not None:
        dom.set_affinity("soft", vcpu, [] if soft == list(range(hv.phys.nr_cpus)) else soft)
    dom.save(hv.paths.domains_dir)
    hv.place(dom)
    allowed: list[int] = []
    tids = hv.vcpu_tids.get(dom.domid, [])
    if vcpu < len(tids):
        try:
            allowed = sorted(os.sched_getaffinity(tids[vcpu]))
        except OSError:
            pass
    nr = list(range(hv.phys.nr_cpus))
    return {"hard": dom.affinity("hard", vcpu) or nr, "soft": dom.affinity("soft", vcpu) or nr,
            "allowed": allowed}


@hypercall("dm_op.set_vcpus")
async def _set_vcpus(hv: Hypervisor, args: dict[str, Any]) -> int:
    """Bring the domain to ``online`` vCPUs (1..max_vcpus) by CPU hotplug in its device model
    (libxl_set_vcpuonline's QMP part); the toolstack writes cpu/N/availability, the PV half.
    New vCPU threads get the domain's pool, affinity and weight at once."""
    op = "dm_op.set_vcpus"
    dom = hv.domu(args, op)
    online = int_arg(args, "online", op)
    if online < 1:
        raise InvalidArgument("Requested 0 VCPUs!", op)
    if online > dom.max_vcpus:
        raise InvalidArgument(f"Requested {online} VCPUs, however maxcpus is {dom.max_vcpus}!", op)
    model = hv.models.get(dom.domid)
    if model is None or dom.dying:
        raise NoSuchDomain(f"no domain {dom.domid}", op)
    async with hv.lock(dom.domid):
        await model.set_vcpus(online)
        hv.vcpu_tids[dom.domid] = await model.vcpu_threads()
        dom.online_vcpus = online
        dom.save(hv.paths.domains_dir)
        hv.enforce_sched(dom)
        hv.place(dom)
    return online
