"""RTDS (sched-rtds): xl's option checks and formats (Xen 4.17's xl_sched.c), libxl's and rt.c's
ranges, the cgroup bandwidth pyxen derives from period and budget, and the hypercalls in-process
on the declared FakeDeviceModel (whose "QEMU" is a real sleep process, so its cgroup is real).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid as uuidlib
from pathlib import Path
from typing import Iterator

import pytest

from pyxen.cli import render_sched as rs
from pyxen.hypervisor import rtds
from pyxen.hypervisor.client import XenCtrl
from pyxen.hypervisor.domain import Domain
from pyxen.hypervisor.domctl import CreateDomain
from pyxen.hypervisor.errors import InvalidArgument
from pyxen.testing.fakes import FakeHost


# ---- formats --------------------------------------------------------------------------------
def test_rtds_output_is_xens() -> None:
    # "%-33s %4s %9s %9s %10s" / "%-33s %4d %9d %9d %10s" (sched_rtds_domain_output)
    assert rs.RTDS_DOMAIN_HEADER == "Name" + " " * 29 + "   ID    Period    Budget  Extratime"
    assert rs.rtds_domain_row("g", 3, 10000, 4000, True) == "g" + " " * 32 + "    3     10000      4000        yes"
    # "%-33s %4s %4s %9s %9s %10s" (sched_rtds_vcpu_output)
    assert rs.RTDS_VCPU_HEADER == "%-33s %4s %4s %9s %9s %10s" % ("Name", "ID", "VCPU", "Period", "Budget", "Extratime")
    assert rs.rtds_vcpu_rows("g", 3, [{"vcpuid": 1, "period": 100, "budget": 25, "extratime": False}]) == \
        ["%-33s %4d %4d %9d %9d %10s" % ("g", 3, 1, 100, 25, "no")]
    assert rs.rtds_pool_line("rt") == "Cpupool rt: sched=RTDS"


def test_listing_shows_only_rtds_pools_and_their_domains() -> None:
    pools = [{"poolid": 0, "name": "Pool-0", "sched": "credit"}, {"poolid": 1, "name": "rt", "sched": "rtds"},
             {"poolid": 2, "name": "rt2", "sched": "rtds"}]
    doms = [{"domid": 0, "name": "Domain-0", "cpupool": 0}, {"domid": 4, "name": "g", "cpupool": 1}]
    rows = {4: ["ROW4"]}
    out = rs.rtds_by_pool(pools, doms, rows, rs.RTDS_DOMAIN_HEADER)
    assert out == ("Cpupool rt: sched=RTDS\n" + rs.RTDS_DOMAIN_HEADER + "\nROW4\n"
                   "Cpupool rt2: sched=RTDS\n" + rs.RTDS_DOMAIN_HEADER + "\n")
    assert rs.rtds_by_pool(pools, doms, rows, rs.RTDS_DOMAIN_HEADER, only_pool=2).startswith("Cpupool rt2")
    assert rs.rtds_by_pool(pools[:1], doms, rows, rs.RTDS_DOMAIN_HEADER) == ""


# ---- xl's option checks and libxl's ranges ----------------------------------------------------
@pytest.mark.parametrize("args, message", [
    ((False, True, 0, True, 0, 0, 0), "Specifying a cpupool is not allowed with other options."),
    ((True, True, 0, False, 0, 0, 0), "Specifying a cpupool is not allowed with other options."),
    ((False, False, 1, False, 0, 0, 0), "Missing parameters."),
    ((False, False, 0, False, 1, 1, 1), "Missing parameters."),
    ((True, False, 0, False, 1, 1, 1), "Must specify VCPU."),
    ((True, False, 1, True, 0, 0, 0), "Incorrect VCPU IDs."),
    ((True, False, 2, False, 1, 1, 1), "Incorrect number of period, budget and extratime"),
    ((True, False, 1, False, 1, 1, 0), "Incorrect number of period, budget and extratime"),
    ((True, False, 0, True, 1, 0, 0), "Incorrect number of period, budget and extratime"),
])
def test_option_checks_in_xls_order(args: tuple[bool, bool, int, bool, int, int, int], message: str) -> None:
    assert rs.rtds_options_problem(*args) == message


def test_valid_option_sets_pass() -> None:
    assert rs.rtds_options_problem(False, False, 0, False, 0, 0, 0) is None      # list all
    assert rs.rtds_options_problem(False, False, 0, True, 0, 0, 0) is None       # -v all
    assert rs.rtds_options_problem(True, False, 2, False, 2, 2, 2) is None       # two vCPUs set
    assert rs.rtds_options_problem(True, False, 0, True, 1, 1, 1) is None        # -v all set
    assert rs.rtds_options_problem(False, True, 0, False, 0, 0, 0) is None       # --cpupool


def test_libxl_ranges() -> None:
    assert rs.rtds_invalid(0, 1) == "Invalid VCPU period of 0 (it should be >= 1)"
    assert rs.rtds_invalid(100, 0) == "Invalid VCPU budget of 0 (it should be >= 1)"
    assert rs.rtds_invalid(100, 101) == "VCPU budget must be smaller than or equal to period, but 101 > 100"
    assert rs.rtds_invalid(100, 100) is None


def test_hypervisor_ranges_are_rt_cs() -> None:
    assert rtds.check_vcpu(10, 10, "op") == (10, 10)
    for period, budget in ((9, 9), (100, 9), (100, 101), (rtds.MAX_PERIOD + 1, 100), ("1", 1)):
        with pytest.raises(InvalidArgument):
            rtds.check_vcpu(period, budget, "op")


# ---- period and budget as cgroup bandwidth ----------------------------------------------------
def test_bandwidth_is_the_sum_of_the_vcpus_shares() -> None:
    assert rtds.bandwidth([(100_000, 25_000, False)]) == (25_000, 100_000)
    assert rtds.bandwidth([(100_000, 25_000, False)] * 2) == (50_000, 100_000)
    # different periods: the shortest one, the shares summed
    assert rtds.bandwidth([(10_000, 5_000, False), (20_000, 5_000, False)]) == (7_500, 10_000)
    # a period below the controller's 1 ms floor is raised, the share kept; the quota's floor too
    assert rtds.bandwidth([(100, 50, False)]) == (1000, 1000)  # 500 us raised to the 1 ms floor
    assert rtds.bandwidth([(100, 20, False)] * 10) == (2000, 1000)
    assert rtds.bandwidth([(5_000_000, 2_500_000, False)]) == (500_000, 1_000_000)
    # extratime: no ceiling
    assert rtds.bandwidth([(100_000, 25_000, False), (100_000, 25_000, True)])[0] is None


def test_a_new_vcpu_has_rtds_defaults_with_extratime() -> None:
    dom = Domain(5, "g", "u", "pv", 2, 2, 1024, 1024, 0.0)
    assert rtds.vcpu_params(dom, 1) == (10000, 4000, True)
    assert rtds.domain_bandwidth(dom) == (None, 10000)
    dom.rtds = [[20000, 5000, 0]]
    assert rtds.vcpu_params(dom, 0) == (20000, 5000, False)
    assert rtds.domain_bandwidth(dom)[0] is None  # vCPU 1 still has extratime


# ---- xl with the host down: its option checks come first --------------------------------------
def test_usage_errors_before_any_call(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                      tmp_path: Path) -> None:
    from .test_bad_input import xl_run
    for argv, message in (
            (["sched-rtds", "-d", "g", "-v", "0", "-p", "100", "-b", "50", "-e", "2"], "Invalid extratime.\n"),
            (["sched-rtds", "-v", "0"], "Missing parameters.\n"),
            (["sched-rtds", "-d", "g", "-p", "100", "-b", "50", "-e", "0"], "Must specify VCPU.\n"),
            (["sched-rtds", "-d", "g", "-v", "0", "-v", "all"], "Incorrect VCPU IDs.\n"),
            (["sched-rtds", "-d", "g", "-v", "0", "-p", "100", "-b", "50"],
             "Incorrect number of period, budget and extratime\n"),
            (["sched-rtds", "--cpupool=x", "-d", "g"], "Specifying a cpupool is not allowed with other options.\n")):
        assert xl_run(argv, tmp_path, monkeypatch, capsys) == (1, message), argv


# ---- the hypercalls, on the declared fake device model --------------------------------------
@pytest.fixture
def fake() -> Iterator[FakeHost]:
    root = Path(os.path.realpath("/tmp")) / f"pyxen-fakertds-{os.getpid()}-{time.monotonic_ns()}"
    with FakeHost(root) as host:
        yield host
    shutil.rmtree(root, ignore_errors=True)


def _domain(xc: XenCtrl, tmp: Path, pool: int, name: str) -> int:
    kernel = tmp / "vmlinuz"
    kernel.write_bytes(b"\0" * 16)
    req = CreateDomain(name=name, uuid=str(uuidlib.uuid4()), type="pv", memory_kb=65536, max_memkb=65536,
                       vcpus=1, max_vcpus=2, kernel=str(kernel), ramdisk=None, cmdline="", cpupool=pool)
    domid = int(xc.call("domctl.createdomain", request=req.to_wire()))
    xc.call("domctl.finish_build", domid=domid)
    return domid


def test_vcpu_params_set_kept_and_enforced(fake: FakeHost, tmp_path: Path) -> None:
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        xc.call("sysctl.cpupool_op.removecpu", poolid=0, cpu=1)
        pool = int(xc.call("sysctl.cpupool_op.create", name="rt", sched="rtds", cpus=[1]))
        rt = _domain(xc, tmp_path, pool, "rt")
        other = _domain(xc, tmp_path, 0, "cr")
        info = xc.call("domctl.scheduler_op.getinfo", domid=rt)
        assert (info["sched"], info["period"], info["budget"]) == ("rtds", 10000, 4000)
        assert xc.call("domctl.scheduler_op.getvcpuinfo", domid=rt, vcpus=[0, 1]) == [
            {"vcpuid": n, "period": 10000, "budget": 4000, "extratime": True} for n in (0, 1)]
        done = xc.call("domctl.scheduler_op.putvcpuinfo", domid=rt,
                       vcpus=[{"vcpuid": 0, "period": 100000, "budget": 25000, "extratime": False},
                              {"vcpuid": 1, "period": 100000, "budget": 25000, "extratime": False}])
        # one vCPU online: its share only
        assert (done["quota_us"], done["period_us"]) == (25000, 100000)
        assert done["enforced"] == fake.call(lambda: fake.hv.cpu.available)  # type: ignore[union-attr]
        if done["enforced"]:
            assert fake.call(lambda: fake.hv.cpu.bandwidth(rt)) == ("25000", "100000")  # type: ignore[union-attr]
        assert xc.call("domctl.scheduler_op.getvcpuinfo", domid=rt, vcpus=[1])[0]["budget"] == 25000
        # refusals (EINVAL), nothing changed
        for bad in ({"vcpuid": 0, "period": 9, "budget": 9, "extratime": False},
                    {"vcpuid": 0, "period": 100, "budget": 200, "extratime": False},
                    {"vcpuid": 2, "period": 100, "budget": 50, "extratime": False}):
            with pytest.raises(InvalidArgument):
                xc.call("domctl.scheduler_op.putvcpuinfo", domid=rt, vcpus=[bad])
        with pytest.raises(InvalidArgument):  # a domain of a credit pool
            xc.call("domctl.scheduler_op.getvcpuinfo", domid=other, vcpus=[0])
        assert xc.call("domctl.scheduler_op.getvcpuinfo", domid=rt, vcpus=[0])[0]["budget"] == 25000
    # kept across a restart of the hypervisor daemon
    fake.restart_hypervisor()
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        assert xc.call("domctl.scheduler_op.getvcpuinfo", domid=rt, vcpus=[0])[0] == \
            {"vcpuid": 0, "period": 100000, "budget": 25000, "extratime": False}


RTDS_COMMANDS = [["sched-rtds"], ["sched-rtds", "-v", "all"], ["sched-rtds", "-d", "d"],
                 ["sched-rtds", "-d", "d", "-v", "all", "-p", "100", "-b", "50", "-e", "0"]]


@pytest.mark.parametrize("argv", RTDS_COMMANDS)
def test_with_the_hypervisor_down_one_line(argv: list[str], monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from .test_bad_input import test_xl_with_the_hypervisor_down_is_one_line as check
    check(argv, monkeypatch, capsys)


@pytest.mark.parametrize("argv", RTDS_COMMANDS)
def test_with_xenstored_down_nothing_is_called(argv: list[str], monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from .test_bad_input import test_xl_with_xenstored_down_is_one_line_before_anything_is_applied as check
    check(argv, monkeypatch, capsys)
