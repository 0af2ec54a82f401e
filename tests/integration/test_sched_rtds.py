"""RTDS on real daemons and a real guest: a pool created with sched="rtds" on CPU 1, a busy guest
in it, its vCPU's budget set to a quarter of its period without extratime. The cgroup's quota and
period are read back from the kernel, and the guest's vCPU CPU time over a few seconds is
compared (as a ratio, not a timed assertion) with what the same guest got with no ceiling.
xl's messages and exit codes are Xen 4.17's xl_sched.c / libxl_sched.c.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from pyxen.hypervisor.cgroup import CpuController
from pyxen.procfs import alive as pid_alive

from ..conftest import Host
from .test_sched_pools import BUSY, fails, qemu_pid, vcpu_tasks

pytestmark = pytest.mark.integration


def vcpu_cpu_seconds(pid: int, seconds: float = 3.0) -> float:
    """CPU time (utime + stime, /proc stat fields 14 and 15) the vCPU threads used in ``seconds``."""
    tick = os.sysconf("SC_CLK_TCK")

    def total() -> float:
        used = 0
        for task in vcpu_tasks(pid):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            used += int(fields[11]) + int(fields[12])
        return used / tick

    start = total()
    time.sleep(seconds)
    return total() - start


def test_rtds_budget_limits_a_busy_guest(host: Host) -> None:
    host.xl("cpupool-cpu-remove", "Pool-0", "1")
    cfg = host.paths.root / "rt.cfg"
    cfg.write_text('name = "rt"\nsched = "rtds"\ncpus = "1"\n')
    assert "scheduler:      rtds\n" in host.xl("cpupool-create", str(cfg)).stdout
    host.create("busy", memory=96, script=BUSY, extra_lines='pool = "rt"\n')
    host.wait_console("busy")
    pid = qemu_pid(host, "busy")
    domid = int(host.domains()["busy"]["id"])
    row = "%-33s %4d %9d %9d %10s" % ("busy", domid, 10000, 4000, "yes")
    domain_header = "%-33s %4s %9s %9s %10s" % ("Name", "ID", "Period", "Budget", "Extratime")
    vcpu_header = "%-33s %4s %4s %9s %9s %10s" % ("Name", "ID", "VCPU", "Period", "Budget", "Extratime")
    assert host.xl("sched-rtds").stdout == f"Cpupool rt: sched=RTDS\n{domain_header}\n{row}\n"
    assert host.xl("sched-rtds", "-d", "busy").stdout == f"{domain_header}\n{row}\n"

    # Defaults have extratime: no ceiling, the busy vCPU takes CPU 1.
    cpu = CpuController(host.paths.root)
    assert cpu.bandwidth(domid) in (("-1", "10000"), ("max", "10000"))
    free = vcpu_cpu_seconds(pid)

    host.xl("sched-rtds", "-d", "busy", "-v", "all", "-p", "100000", "-b", "25000", "-e", "0")
    assert host.xl("sched-rtds", "-d", "busy", "-v", "0").stdout == (
        f"{vcpu_header}\n" + "%-33s %4d %4d %9d %9d %10s\n" % ("busy", domid, 0, 100000, 25000, "no"))
    assert cpu.bandwidth(domid) == ("25000", "100000")
    limited = vcpu_cpu_seconds(pid)
    print(f"vCPU CPU seconds over 3 s: no ceiling {free:.2f}, budget 25% {limited:.2f}")
    assert limited < 0.6 * free, (limited, free)

    # Errors, one per class: exit 1, nothing changed.
    assert fails(host, "sched-rtds", "-d", "busy", "-v", "0", "-p", "1000", "-b", "2000", "-e", "0") == (
        "libxl: error: VCPU budget must be smaller than or equal to period, but 2000 > 1000\n"
        "libxl_vcpu_sched_params_set failed.\n")
    assert fails(host, "sched-rtds", "-d", "busy", "-v", "all", "-p", "0", "-b", "0", "-e", "0") == (
        "libxl: error: Invalid VCPU period of 0 (it should be >= 1)\nlibxl_vcpu_sched_params_set_all failed.\n")
    assert fails(host, "sched-rtds", "-d", "busy", "-v", "0", "-p", "5", "-b", "5", "-e", "0") == (
        f"libxl: error: Domain {domid}:Setting vcpu sched rtds: Invalid argument\n"
        "libxl_vcpu_sched_params_set failed.\n")
    assert fails(host, "sched-rtds", "-d", "busy", "-v", "7", "-p", "100", "-b", "50", "-e", "0") == (
        f"libxl: error: Domain {domid}:Invalid VCPU 7: valid range is [0, 0]\nlibxl_vcpu_sched_params_set failed.\n")
    assert fails(host, "sched-rtds", "-d", "0", "-v", "0") == (
        "libxl: error: Domain 0:per-VCPU parameter getting not supported for this scheduler\n"
        "libxl_vcpu_sched_params_get failed.\n")
    assert fails(host, "sched-rtds", "-d", "Domain-0") == "libxl_domain_sched_params_get returned credit not rtds.\n"
    assert fails(host, "sched-rtds", "--cpupool=nope") == "unknown cpupool 'nope'\n"
    assert fails(host, "sched-rtds", "-d", "busy", "-p", "100", "-b", "50", "-e", "0") == "Must specify VCPU.\n"
    assert cpu.bandwidth(domid) == ("25000", "100000")

    # kill -9 of the hypervisor: the pool, the vCPU's parameters and the cgroup are kept.
    hv_pid = int(host.paths.pidfile("hypervisor").read_text())
    with host.supervisor_held():
        os.kill(hv_pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(hv_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert host.xl("sched-rtds", "-v", "all").stdout == (
        f"Cpupool rt: sched=RTDS\n{vcpu_header}\n" + "%-33s %4d %4d %9d %9d %10s\n" % ("busy", domid, 0, 100000, 25000, "no"))
    assert cpu.bandwidth(domid) == ("25000", "100000")

    # Out of the RTDS pool the credit parameters (no cap) apply again.
    host.xl("cpupool-migrate", "busy", "Pool-0")
    assert cpu.bandwidth(domid)[0] in ("-1", "max")
    host.xl("destroy", "busy")
    host.xl("cpupool-destroy", "rt")
    host.xl("cpupool-cpu-add", "Pool-0", "1")
