"""CPU pools, vCPU hotplug, soft affinity and the pools' schedulers, on real daemons and guests.

A pool is a cpuset: a busy guest in a pool holding CPU 1 only runs on CPU 1 (its QEMU vCPU
threads' "processor" field in /proc, sampled while it spins, and its cpuset's effective CPUs),
moves to CPU 0 with cpupool-migrate, and the pools survive a kill -9 of the hypervisor daemon.
vcpu-set hot-plugs a CPU the guest's kernel brings online, and unplugs it again.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from pyxen.hypervisor.cgroup import CpusetController
from pyxen.procfs import alive as pid_alive

from ..conftest import Host

pytestmark = pytest.mark.integration

BUSY = "while :; do :; done &"


def qemu_pid(host: Host, name: str) -> int:
    domid = host.domains()[name]["id"]
    return int(json.loads((host.paths.domains_dir / f"{domid}.json").read_text())["pid"])


def vcpu_tasks(pid: int) -> list[Path]:
    """The QEMU's vCPU threads (named "CPU <n>/TCG" with debug-threads=on)."""
    return [t for t in Path(f"/proc/{pid}/task").iterdir()
            if (t / "comm").read_text().startswith("CPU ")]


def cpus_seen(pid: int, seconds: float = 3.0) -> set[int]:
    """Every CPU the vCPU threads were seen on (stat field 39), sampled for ``seconds``."""
    seen: set[int] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for task in vcpu_tasks(pid):
            try:
                seen.add(int((task / "stat").read_text().rsplit(")", 1)[1].split()[36]))
            except (OSError, IndexError):
                pass
        time.sleep(0.02)
    return seen


def fails(host: Host, *args: str) -> str:
    done = host.xl(*args, check=False)
    assert done.returncode == 1, (args, done.returncode, done.stdout, done.stderr)
    return done.stderr


def test_pools_hold_a_busy_guest_and_survive_kill_9(host: Host) -> None:
    assert host.xl("cpupool-list").stdout == (
        "Name               CPUs   Sched     Active   Domain count\n"
        "Pool-0               2    credit       y          1\n")
    host.xl("cpupool-cpu-remove", "Pool-0", "1")
    cfg = host.paths.root / "p1.cfg"
    cfg.write_text('name = "p1"\nsched = "credit2"\ncpus = "1"\n')
    out = host.xl("cpupool-create", str(cfg)).stdout
    assert out == f'Using config file "{cfg}"\ncpupool name:   p1\nscheduler:      credit2\nnumber of cpus: 1\n'
    assert host.xl("cpupool-list", "-c").stdout == ("Name               CPU list\n"
                                                    "Pool-0             0\np1                 1\n")
    host.create("busy", memory=96, script=BUSY, extra_lines='pool = "p1"\n')
    host.wait_console("busy")
    pid = qemu_pid(host, "busy")
    domid = int(host.domains()["busy"]["id"])
    assert cpus_seen(pid) == {1}
    cpuset = CpusetController(host.paths.root)
    assert cpuset.effective(domid) == [1]
    assert host.xl("cpupool-list", "p1").stdout.splitlines()[1].split() == ["p1", "1", "credit2", "y", "1"]

    # The pool's scheduler: credit2's weight and cap for its domain, credit's refused.
    host.xl("sched-credit2", "-d", "busy", "-w", "512", "-c", "50")
    assert host.xl("sched-credit2", "-d", "busy").stdout.splitlines()[1].split() == ["busy", str(domid), "512", "50"]
    assert "libxl_domain_sched_params_get returned credit2 not credit." in fails(host, "sched-credit", "-d", "busy")
    listing = host.xl("sched-credit2").stdout.splitlines()
    assert listing[0] == "Cpupool p1: ratelimit=1000us" and listing[2].split()[:2] == ["busy", str(domid)]
    host.xl("sched-credit2", "-s", "-p", "p1", "-r", "2000")
    assert host.xl("sched-credit2", "-s", "-p", "p1").stdout == "Cpupool p1: ratelimit=2000us\n"
    host.xl("sched-credit2", "-d", "busy", "-c", "0")

    # Errors, one per class; nothing changes.
    assert fails(host, "cpupool-destroy", "p1") == "Can't destroy cpupool 'p1'\n"
    assert fails(host, "cpupool-migrate", "busy", "nope") == "unknown cpupool 'nope'\n"
    assert fails(host, "cpupool-cpu-add", "p1", "1-x") == "Invalid pcpu range: 1-x.\n"
    assert fails(host, "cpupool-list", "nope") == "Pool 'nope' does not exist\n"
    added = host.xl("cpupool-cpu-add", "p1", "0")  # CPU 0 is Pool-0's: refused, exit 0 as Xen's xl
    assert added.stderr == ("libxl: error: Error moving cpu 0 to cpupool: No such device\n"
                            "some cpus may not have been added to p1\n")
    removed = host.xl("cpupool-cpu-remove", "p1", "1")  # the last CPU of a pool with a domain
    assert "Error removing cpu 1 from cpupool: Device or resource busy" in removed.stderr
    assert host.xl("cpupool-list", "-c").stdout.endswith("p1                 1\n")

    # kill -9 of the hypervisor: the pools, the domain's pool and its cpuset are all kept.
    hv_pid = int(host.paths.pidfile("hypervisor").read_text())
    with host.supervisor_held():
        os.kill(hv_pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(hv_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert host.xl("cpupool-list", "-c").stdout == ("Name               CPU list\n"
                                                    "Pool-0             0\np1                 1\n")
    assert host.xl("sched-credit2", "-s", "-p", "p1").stdout == "Cpupool p1: ratelimit=2000us\n"
    assert cpus_seen(pid) == {1}

    # Migrate to Pool-0 (CPU 0 only): the vCPUs move at once.
    host.xl("cpupool-migrate", "busy", "Pool-0")
    assert cpus_seen(pid) == {0}
    assert cpuset.effective(domid) == [0]
    host.xl("cpupool-destroy", "p1")
    host.xl("cpupool-cpu-add", "Pool-0", "1")
    assert host.xl("cpupool-list").stdout.splitlines()[1].split() == ["Pool-0", "2", "credit", "y", "2"]
    # Both CPUs allowed again (where it runs is then Linux's choice).
    assert cpuset.effective(domid) == [0, 1]
    assert [os.sched_getaffinity(int(t.name)) for t in vcpu_tasks(pid)] == [{0, 1}]


def test_affinity_hard_and_soft(host: Host) -> None:
    """vcpu-pin's hard and soft maps, cpus_soft=, and vcpu-list showing both."""
    host.create("pin", memory=96, script=BUSY, extra_lines='cpus_soft = "1"\n')
    host.wait_console("pin")
    pid = qemu_pid(host, "pin")
    row = host.xl("vcpu-list", "pin").stdout.splitlines()[1]
    assert row.endswith("all / 1"), row
    host.xl("vcpu-pin", "pin", "0", "1", "0")
    assert host.xl("vcpu-list", "pin").stdout.splitlines()[1].endswith("1 / 0")
    assert cpus_seen(pid) == {1}
    host.xl("vcpu-pin", "pin", "all", "-", "all")  # '-': the hard map is left as it is
    assert host.xl("vcpu-list", "pin").stdout.splitlines()[1].endswith("1 / all")
    host.xl("vcpu-pin", "-f", "pin", "0", "0-1")
    assert host.xl("vcpu-list", "pin").stdout.splitlines()[1].endswith("all / all")
    assert fails(host, "vcpu-pin", "-f", "pin", "all", "0") == "Error: --force and 'all' as VCPU not allowed.\n"
    assert fails(host, "vcpu-pin", "pin", "0", "0-z") == "Invalid pcpu range: 0-z.\n"
    assert fails(host, "vcpu-pin", "pin", "x", "0") == "Error: Invalid argument x as VCPU.\n"


def online_after(host: Host, name: str, start: int, want: str, timeout: float = 60) -> int:
    """Wait for the guest's "ONLINE <list>" line ``want`` after console offset ``start``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = host.console_text(name)
        at = text.find(f"ONLINE {want}\n", start)
        if at >= 0:
            return at + 1
        time.sleep(0.2)
    raise AssertionError(f"no 'ONLINE {want}' after {start}: {host.console_text(name)[start:][-1500:]}")


def test_vcpu_set_hotplugs_a_cpu_the_guest_uses(host: Host) -> None:
    script = "while :; do echo ONLINE $(cat /sys/devices/system/cpu/online); sleep 1; done &"
    host.create("hot", memory=96, script=script, extra_lines="maxvcpus = 2\n")
    host.wait_console("hot")
    at = online_after(host, "hot", 0, "0")
    assert host.domains()["hot"]["vcpus"] == "1"
    host.xl("vcpu-set", "hot", "2")
    at = online_after(host, "hot", at, "0-1")
    assert host.domains()["hot"]["vcpus"] == "2"
    rows = host.xl("vcpu-list", "hot").stdout.splitlines()[1:]
    assert [r.split()[2] for r in rows] == ["0", "1"] and "--p" not in rows[1]
    assert len(vcpu_tasks(qemu_pid(host, "hot"))) == 2
    err = fails(host, "vcpu-set", "-i", "hot", "3")
    assert err == (f"libxl: error: Domain {host.domains()['hot']['id']}:Requested 3 VCPUs, however maxcpus is 2!\n"
                   f"libxl_set_vcpuonline failed domid={host.domains()['hot']['id']} max_vcpus=3, rc: -3\n")
    assert "You are overcommmitting! You have 2 physical CPUs and want 3 vCPUs!" in fails(host, "vcpu-set", "hot", "3")
    host.xl("vcpu-set", "hot", "1")
    online_after(host, "hot", at, "0")
    assert host.domains()["hot"]["vcpus"] == "1"
    rows = host.xl("vcpu-list", "hot").stdout.splitlines()[1:]
    assert rows[1].split()[3:5] == ["-", "--p"]
    assert len(vcpu_tasks(qemu_pid(host, "hot"))) == 1


def test_vcpu_set_offlines_a_boot_cpu_through_xenstore(host: Host) -> None:
    """A CPU of QEMU's command line cannot be unplugged: the guest offlines it when its
    cpu/1/availability says "offline" (Xen's PV vCPU hotplug), and onlines it again."""
    script = "while :; do echo ONLINE $(cat /sys/devices/system/cpu/online); sleep 1; done &"
    host.create("pv", memory=96, vcpus=2, script=script, extra_lines='cpus = ["1", "0"]\ncpus_soft = ["0"]\n')
    host.wait_console("pv")
    at = online_after(host, "pv", 0, "0-1")
    rows = [r.split() for r in host.xl("vcpu-list", "pv").stdout.splitlines()[1:]]
    assert [(r[2], r[6], r[8]) for r in rows] == [("0", "1", "0"), ("1", "0", "all")]  # cpus= as a list
    domid = host.domains()["pv"]["id"]
    host.xl("vcpu-set", "pv", "1")
    done = host.run("pyxen", "xenstore", "read", f"/local/domain/{domid}/cpu/1/availability", check=True)
    assert done.stdout.strip() == "offline"
    at = online_after(host, "pv", at, "0")
    assert host.domains()["pv"]["vcpus"] == "1"
    host.xl("vcpu-set", "pv", "2")
    online_after(host, "pv", at, "0-1")
    assert host.domains()["pv"]["vcpus"] == "2"
    assert fails(host, "vcpu-set", "pv", "x") == "Error: Invalid argument.\n"


def test_credit_schedparam(host: Host) -> None:
    """sched-credit -s shows and sets Pool-0's credit parameters with libxl's range checks."""
    assert host.xl("sched-credit", "-s").stdout == "Cpupool Pool-0: tslice=30ms ratelimit=1000us migration-delay=0us\n"
    host.xl("sched-credit", "-s", "-t", "10", "-r", "500")
    assert host.xl("sched-credit", "-s", "-p", "Pool-0").stdout == (
        "Cpupool Pool-0: tslice=10ms ratelimit=500us migration-delay=0us\n")
    assert fails(host, "sched-credit", "-s", "-r", "20000") == (
        "libxl: error: Ratelimit cannot be greater than timeslice\nlibxl_sched_credit_params_set failed.\n")
    assert fails(host, "sched-credit", "-t", "5") == "Must specify schedparam to set schedule parameter values.\n"
    assert fails(host, "sched-credit", "-s", "-p", "nope") == "unknown cpupool 'nope'\n"
    assert host.xl("sched-credit").stdout.splitlines()[0] == (
        "Cpupool Pool-0: tslice=10ms ratelimit=500us migration-delay=0us")
    # credit2 lists nothing (no credit2 pool), and its -s on a credit pool has no parameters.
    assert host.xl("sched-credit2").stdout == ""
    unavailable = host.xl("sched-credit2", "-s")
    assert unavailable.stdout == "Cpupool Pool-0: [sched params unavailable]\n"
    assert unavailable.stderr == ("libxl: error: getting Credit2 scheduler parameters: Invalid argument\n"
                                  "libxl_sched_credit2_params_get failed.\n")
    assert fails(host, "sched-credit2", "-s", "-r", "500") == (
        "libxl: error: Setting Credit2 scheduler parameters: Invalid argument\nlibxl_sched_credit2_params_set failed.\n")
    # pool= naming no pool: refused before anything is built.
    refused = host.xl("create", str(host.write_cfg("lost", memory=96, extra_lines='pool = "nope"\n')), check=False)
    assert refused.returncode == 1 and "Illegal pool specified: nope" in refused.stderr
    assert "lost" not in host.domains()


def test_cpupool_admin_without_guests(host: Host) -> None:
    """cpupool-create's config handling and refusals, rename, destroy, numa-split."""
    host.xl("cpupool-cpu-remove", "Pool-0", "1")
    dry = host.xl("cpupool-create", "-n", 'name="dry"', 'cpus="1"').stdout
    assert dry == 'Using config file "command line"\ncpupool name:   dry\nscheduler:      credit\nnumber of cpus: 1\n'
    assert host.xl("cpupool-list", "-c").stdout == "Name               CPU list\nPool-0             0\n"  # -n made nothing
    assert fails(host, "cpupool-create", 'name="x"', 'cpus="0"') == "cpu 0 illegal or not free\n"
    assert fails(host, "cpupool-create", 'name="x"', 'cpus=["1", "0"]') == "cpu 0 illegal or not free\n"
    assert fails(host, "cpupool-create", 'sched="credit"') == "Missing cpupool name!\n"
    assert fails(host, "cpupool-create", 'name="Pool-0"') == 'Pool name "Pool-0" already exists\n'
    assert fails(host, "cpupool-create", 'name="x"', 'sched="bogus"') == "Unknown scheduler\n"
    assert fails(host, "cpupool-create", str(host.paths.root / "absent.cfg")).startswith(
        f"Failed to read config file: {host.paths.root / 'absent.cfg'}: No such file or directory")
    host.xl("cpupool-create", 'name="empty"', 'sched="credit2"')
    assert host.xl("cpupool-list", "empty").stdout.splitlines()[1].split() == ["empty", "0", "credit2", "y", "0"]
    assert fails(host, "cpupool-numa-split") == "splitting not possible, already cpupools in use\n"
    host.xl("cpupool-rename", "empty", "spare")
    assert fails(host, "cpupool-rename", "empty", "x") == "unknown cpupool 'empty'\n"
    assert fails(host, "cpupool-migrate", "nodomain", "spare") == "unknown domain 'nodomain'\n"
    host.xl("cpupool-destroy", "1")  # a pool's number names it too
    assert fails(host, "cpupool-destroy", "spare") == "unknown cpupool 'spare'\n"
    host.xl("cpupool-numa-split")  # one NUMA node: Pool-0 becomes Pool-node0 with every CPU (1 was free)
    assert host.xl("cpupool-list", "-c").stdout == "Name               CPU list\nPool-node0         0,1\n"
