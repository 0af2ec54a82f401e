"""vCPU placement: where each vCPU runs and may run (XEN_DOMCTL_getvcpuinfo, setvcpuaffinity).

A DomU's vCPU is a QEMU thread; its hard affinity is that thread's CPU affinity, which the host
kernel keeps (so it survives a restart of this daemon and needs no state here). Domain-0's vCPUs
are the host's CPUs themselves: vCPU n is CPU n, always "all", and cannot be re-pinned.
The cpumap text (``0-3,8``, ``all``, ``none``) is parsed and printed by libxlu/cpumap.py.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from .core import Hypervisor, hypercall
from .errors import InvalidArgument
from .qemu import thread_cpu_ns, thread_states


def _current_cpu(pid: int, tid: int) -> int:
    """The CPU a thread last ran on (field 39 of /proc/<pid>/task/<tid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[36])
    except (OSError, IndexError, ValueError):
        return -1


def _host_cpu_busy_ns() -> dict[int, int]:
    """Non-idle time of each host CPU (the cpuN lines of /proc/stat): Dom0's vCPU times."""
    tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
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
                 "cpu_time_ns": busy.get(n, 0), "hard": list(range(nr))} for n in range(dom.online_vcpus)]
    out = []
    for n in range(dom.max_vcpus):
        if n >= dom.online_vcpus or n >= len(hv.vcpu_tids.get(dom.domid, [])):
            out.append({"vcpu": n, "cpu": -1, "online": False, "running": False, "blocked": False,
                        "cpu_time_ns": 0, "hard": list(range(nr))})
            continue
        pid, tid = _vcpu_thread(hv, dom.domid, n, op)
        state = thread_states(pid, [tid])
        running = not (dom.paused or dom.shutdown) and state == ["R"]
        try:
            hard = sorted(os.sched_getaffinity(tid))
        except OSError:
            hard = list(range(nr))
        out.append({"vcpu": n, "cpu": _current_cpu(pid, tid), "online": True, "running": running,
                    "blocked": not running and not dom.paused, "cpu_time_ns": thread_cpu_ns(pid, [tid]),
                    "hard": hard})
    return out


@hypercall("domctl.setvcpuaffinity")
async def _setvcpuaffinity(hv: Hypervisor, args: dict[str, Any]) -> list[int]:
    """Pin one vCPU (its thread) to ``hard``, a list of CPUs; returns the affinity now in force."""
    op = "domctl.setvcpuaffinity"
    dom = hv.domu(args, op)
    vcpu = args.get("vcpu")
    hard = args.get("hard")
    if not isinstance(vcpu, int) or not isinstance(hard, list) or not all(isinstance(c, int) for c in hard):
        raise InvalidArgument("setvcpuaffinity needs vcpu (int) and hard (list of CPUs)", op)
    cpus = {c for c in hard if 0 <= c < hv.phys.nr_cpus}
    if not cpus or len(cpus) != len(set(hard)):
        raise InvalidArgument(f"affinity {hard} names no CPU or CPUs this host lacks", op)
    _pid, tid = _vcpu_thread(hv, dom.domid, vcpu, op)
    os.sched_setaffinity(tid, cpus)
    return sorted(os.sched_getaffinity(tid))
