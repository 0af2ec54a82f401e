"""Pure parts of CPU pools, affinity and the schedulers' xl output (no daemon, no guest).

The pool table's rules and errnos are Xen's cpupool.c; the text is Xen 4.17's xl_cpupool.c,
xl_sched.c and xl_parse.c. The hypervisor's hypercalls run in-process against a Hypervisor with
the declared FakeDeviceModel where a domain is needed.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from pyxen.cli import render
from pyxen.cli import render_sched as rs
from pyxen.hypervisor.cpupool import PoolError, PoolTable, effective_affinity, soft_placement
from pyxen.hypervisor.domctl import CreateDomain
from pyxen.hypervisor.errors import HypercallError, InvalidArgument, from_wire


def test_pool0_holds_every_cpu_at_start() -> None:
    t = PoolTable(4, "credit", 30, 1000)
    assert list(t.pools) == [0] and t.pools[0].name == "Pool-0" and t.pools[0].cpus == [0, 1, 2, 3]
    assert t.free_cpus() == []


def test_cpu_moves_between_pools_only_through_free() -> None:
    t = PoolTable(2)
    p = t.create("p1", "credit2")
    assert p.poolid == 1 and p.cpus == []
    with pytest.raises(PoolError) as e:  # cpu already in another pool
        t.add_cpu(1, 1)
    assert e.value.errno == errno.ENODEV
    t.remove_cpu(0, 1, n_dom=1)
    assert t.free_cpus() == [1]
    t.add_cpu(1, 1)
    assert t.pools[1].cpus == [1] and t.free_cpus() == []
    with pytest.raises(PoolError) as e:  # the last CPU of a pool with domains
        t.remove_cpu(0, 0, n_dom=1)
    assert e.value.errno == errno.EBUSY
    with pytest.raises(PoolError) as e:  # not in this pool
        t.remove_cpu(1, 0, n_dom=0)
    assert e.value.errno == errno.EADDRNOTAVAIL
    with pytest.raises(PoolError) as e:
        t.add_cpu(1, 7)
    assert e.value.errno == errno.EINVAL


def test_create_destroy_rename_rules() -> None:
    t = PoolTable(2)
    t.create("p1", "credit")
    with pytest.raises(PoolError) as e:
        t.create("p1", "credit")
    assert e.value.errno == errno.EEXIST
    with pytest.raises(InvalidArgument):
        t.create("p2", "arinc653")
    with pytest.raises(PoolError) as e:  # unknown pool
        t.destroy(9, 0)
    assert e.value.errno == errno.ENOENT
    with pytest.raises(PoolError) as e:  # a pool with domains
        t.destroy(1, 1)
    assert e.value.errno == errno.EBUSY
    with pytest.raises(PoolError):
        t.destroy(0, 0)
    with pytest.raises(PoolError) as e:
        t.rename(1, "Pool-0")
    assert e.value.errno == errno.EEXIST
    t.rename(1, "renamed")
    t.destroy(1, 0)
    assert list(t.pools) == [0]
    assert t.create("again", "credit").poolid == 1  # the lowest free id


def test_move_rules() -> None:
    t = PoolTable(2)
    t.create("empty", "credit")
    with pytest.raises(PoolError) as e:  # a pool with no CPU takes no domain
        t.check_move(1, 5)
    assert e.value.errno == errno.ENOENT
    with pytest.raises(PoolError) as e:
        t.check_move(0, 0)
    assert e.value.errno == errno.EPERM
    assert t.check_move(0, 5).poolid == 0


def test_table_round_trips_and_ignores_junk() -> None:
    t = PoolTable(2)
    t.remove_cpu(0, 1, 0)
    t.create("p1", "credit2")
    t.add_cpu(1, 1)
    t.set_params(1, "credit2", {"ratelimit_us": 2000}, "op")
    u = PoolTable(2)
    u.load(t.to_wire())
    assert u.to_wire() == t.to_wire()
    v = PoolTable(2)
    v.load([{"bogus": 1}])
    v.load("nonsense")
    assert v.to_wire() == PoolTable(2).to_wire()


def test_sched_params_ranges_as_libxl() -> None:
    t = PoolTable(2)
    t.set_params(0, "credit", {"tslice_ms": 10, "ratelimit_us": 500}, "op")
    assert (t.pools[0].tslice_ms, t.pools[0].ratelimit_us) == (10, 500)
    for params, message in (({"tslice_ms": 0}, "Time slice out of range, valid range is from 1 to 1000"),
                            ({"ratelimit_us": 50}, "Ratelimit out of range, valid range is from 100 to 500000"),
                            ({"ratelimit_us": 20000}, "Ratelimit cannot be greater than timeslice"),
                            ({"migr_delay_us": 200000}, "vcpu migration delay should be >= 0 and <= 100000us")):
        with pytest.raises(InvalidArgument, match=message):
            t.set_params(0, "credit", params, "op")
    assert (t.pools[0].tslice_ms, t.pools[0].ratelimit_us) == (10, 500)  # nothing changed
    with pytest.raises(InvalidArgument):
        t.set_params(0, "credit2", {"ratelimit_us": 500}, "op")


def test_effective_and_soft_affinity() -> None:
    assert effective_affinity([], [0, 1]) == [0, 1]
    assert effective_affinity([1, 2], [0, 1]) == [1]
    assert effective_affinity([3], [0, 1]) == [0, 1]  # disjoint: Xen breaks the affinity
    assert soft_placement([0, 1], [1]) == [1]
    assert soft_placement([0, 1], []) is None
    assert soft_placement([0], [1]) is None  # nothing of the soft map allowed: hard only
    assert soft_placement([0, 1], [0, 1, 2]) is None


def test_errno_kept_across_the_wire() -> None:
    err = PoolError(errno.ENODEV, "cpu 0 is in cpupool Pool-0", "sysctl.cpupool_op.addcpu")
    back = from_wire(err.to_wire())
    assert isinstance(back, HypercallError) and back.errno == errno.ENODEV


def test_createdomain_carries_the_pool() -> None:
    base = {"name": "a", "uuid": "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "type": "pv", "memory_kb": 65536,
            "max_memkb": 65536, "vcpus": 1, "max_vcpus": 2, "kernel": "/k"}
    assert CreateDomain.from_wire(base).cpupool == 0
    assert CreateDomain.from_wire({**base, "cpupool": 3}).cpupool == 3
    with pytest.raises(InvalidArgument):
        CreateDomain.from_wire({**base, "cpupool": -1})


def test_parse_cpurange_as_xl() -> None:
    assert rs.parse_cpurange("all", 4) == {0, 1, 2, 3}
    assert rs.parse_cpurange("0-3,^1", 4) == {0, 2, 3}
    assert rs.parse_cpurange("node:0", 2) == {0, 1}
    assert rs.parse_cpurange("1,9", 2) == {1}  # bits beyond the host's map are dropped
    for text, message in (("1-x", "Invalid pcpu range: 1-x."), ("3-1", "Invalid pcpu range: 3-1."),
                          ("^all", 'Can\'t combine "^" and "all".'), ("", None)):
        if message is None:
            assert rs.parse_cpurange(text, 2) == set()
            continue
        with pytest.raises(rs.CpuRangeError) as e:
            rs.parse_cpurange(text, 2)
        assert str(e.value) == message


def test_cpupool_list_formats() -> None:
    pools = [{"poolid": 0, "name": "Pool-0", "sched": "credit", "cpus": [0], "n_dom": 1},
             {"poolid": 1, "name": "p1", "sched": "credit2", "cpus": [1, 3], "n_dom": 0}]
    assert rs.cpupool_list(pools, False) == ("Name               CPUs   Sched     Active   Domain count\n"
                                             "Pool-0               1    credit       y          1\n"
                                             "p1                   2   credit2       y          0\n")
    assert rs.cpupool_list(pools, True) == "Name               CPU list\nPool-0             0\np1                 1,3\n"


def test_sched_listing_by_pool() -> None:
    pools = [{"poolid": 0, "name": "Pool-0", "sched": "credit", "cpus": [0], "tslice_ms": 30,
              "ratelimit_us": 1000, "migr_delay_us": 0},
             {"poolid": 1, "name": "p1", "sched": "credit2", "cpus": [1], "ratelimit_us": 1000}]
    doms = [{"name": "Domain-0", "domid": 0, "cpupool": 0}, {"name": "g", "domid": 3, "cpupool": 1}]
    params = {0: (256, 0), 3: (512, 50)}
    assert rs.sched_by_pool("credit", pools, doms, params) == (
        "Cpupool Pool-0: tslice=30ms ratelimit=1000us migration-delay=0us\n"
        "Name                                ID Weight  Cap\n"
        "Domain-0                             0    256    0\n")
    assert rs.sched_by_pool("credit2", pools, doms, params) == (
        "Cpupool p1: ratelimit=1000us\n"
        "Name                                ID Weight  Cap\n"
        "g                                    3    512   50\n")
    assert rs.sched_by_pool("credit2", pools, doms, params, only_pool=0) == ""


def test_vcpu_list_shows_soft_affinity() -> None:
    v = {"vcpu": 0, "cpu": 1, "online": True, "running": True, "blocked": False, "cpu_time_ns": 2e9,
         "hard": [1], "soft": [0, 1]}
    line = render.xl_vcpu_list([("g", 3, v)], 2).splitlines()[1]
    # print_vcpuinfo's printf formats, one after the other
    assert line == "%-32s %5u %5u" % ("g", 3, 0) + "%5u %3c%c- " % (1, "r", "-") + "%9.1f  " % 2.0 + "1 / all"
    off = dict(v, online=False, soft=[0])
    assert render.xl_vcpu_list([("g", 3, off)], 2).splitlines()[1].endswith("-   --p       2.0  1 / 0")


def test_create_summary() -> None:
    assert rs.cpupool_create_summary("command line", "p", "credit", 0) == (
        'Using config file "command line"\ncpupool name:   p\nscheduler:      credit\nnumber of cpus: 0\n')
    assert rs.vcpu_pin_dryrun({1}, None, 2) == "cpumap: 1\n"
    assert rs.vcpu_pin_dryrun(None, {0, 1}, 2) == "cpumap: - all\n"


# ---- the commands with a daemon down: one line, exit 1, nothing applied --------------------
SCHED_COMMANDS = [["vcpu-pin", "d", "0", "1"], ["vcpu-set", "d", "2"], ["sched-credit2"],
                  ["sched-credit", "-s", "-t", "10"], ["cpupool-list"], ["cpupool-create", 'name="p"'],
                  ["cpupool-destroy", "p"], ["cpupool-rename", "p", "q"], ["cpupool-cpu-add", "p", "1"],
                  ["cpupool-cpu-remove", "p", "1"], ["cpupool-migrate", "d", "p"], ["cpupool-numa-split"]]


@pytest.mark.parametrize("argv", SCHED_COMMANDS)
def test_commands_with_the_hypervisor_down_are_one_line(argv: list[str], monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from .test_bad_input import test_xl_with_the_hypervisor_down_is_one_line as check
    check(argv, monkeypatch, capsys)


@pytest.mark.parametrize("argv", SCHED_COMMANDS)
def test_commands_with_xenstored_down_stop_before_any_call(argv: list[str], monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from .test_bad_input import test_xl_with_xenstored_down_is_one_line_before_anything_is_applied as check
    check(argv, monkeypatch, capsys)


def test_usage_errors_before_any_call(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                      tmp_path: Path) -> None:
    """xl's option checks that need no hypervisor: they answer with the host down."""
    from .test_bad_input import xl_run
    for argv, code, message in (
            (["sched-credit", "-t", "5"], 1, "Must specify schedparam to set schedule parameter values.\n"),
            (["sched-credit", "-w", "5"], 1, "Must specify a domain.\n"),
            (["sched-credit", "-s", "-d", "d"], 1, "Specifying a cpupool or schedparam is not allowed with domain options.\n"),
            (["sched-credit2", "-p", "p", "-w", "3", "-d", "d"], 1, "Specifying a cpupool is not allowed with other options.\n"),
            (["sched-credit2", "-c", "3"], 1, "Must specify a domain.\n")):
        got, err = xl_run(argv, tmp_path, monkeypatch, capsys)
        assert (got, err) == (code, message), argv


def test_config_affinity_forms() -> None:
    """cpus= and cpus_soft= take one cpu list for all vCPUs or a list, one per vCPU."""
    from pyxen.libxlu.cfg import parse
    from pyxen.toolstack.config import DomainConfig, from_settings

    text = 'name = "a"\nkernel = "/k"\nvcpus = 2\ncpus = ["1", "0-1"]\ncpus_soft = "0"\npool = "p1"\n'
    cfg = from_settings(parse(text, "a.cfg"), "a.cfg")
    assert (cfg.cpus, cfg.cpus_soft, cfg.pool) == (("1", "0-1"), "0", "p1")
    assert DomainConfig.from_json(cfg.to_json()) == cfg
