"""Issue 10, "the rest of the commands": the pure parts (output formats against the format
strings of Xen 4.17's tools/xl/xl_info.c and tools/xentop/xentop.c, argument parsing, the sysfs
topology readers on a made-up tree) and the hypercalls behind trigger, set-parameters and
qemu-monitor-command on the declared fake device model."""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any, Iterator

import pytest

from pyxen.cli import render_misc, xentop
from pyxen.cli.console import parse_escape, tty_node
from pyxen.cli.render import LIST_HEADER
from pyxen.cli.xl import COMMANDS, cmdtable
from pyxen.cli.xl.misc import split_parameters
from pyxen.hypervisor import topology
from pyxen.hypervisor.client import XenCtrl
from pyxen.hypervisor.domctl import CreateDomain
from pyxen.hypervisor.errors import InvalidArgument, NoSuchDomain, NoSuchEntry, NotImplementedByXen
from pyxen.hypervisor.params import parse_loglvl
from pyxen.libxlu.cfg import strtol
from pyxen.testing.fakes import FakeDeviceModel, FakeHost

UUID = "5f1e0d66-3b52-4bb5-9b46-9d1f6f3c11aa"


def info(**kw: Any) -> dict[str, Any]:
    d = {"domid": 3, "name": "demo", "uuid": UUID, "type": "pv", "memory_kb": 131072,
         "current_kb": 131072, "max_memkb": 262144, "max_vcpus": 2, "online_vcpus": 1,
         "cpu_time_ns": 12_345_000_000, "paused": False, "shutdown": False, "shutdown_reason": 0,
         "dying": False, "state": "-b----"}
    d.update(kw)
    return d


# ---- xl list's columns ---------------------------------------------------------------------
def test_list_verbose_header_and_row_are_xens() -> None:
    cols = render_misc.ListColumns(verbose=True)
    out = render_misc.xl_list_columns(cols, [info()]).splitlines()
    assert out[0] == LIST_HEADER + "   UUID                            Reason-Code\tSecurity Label"
    # "%-40s %5d %5lu %5d     %c%c%c%c%c%c  %8.1f", then " <uuid>", " %8s" "-", " %16s" "-"
    assert out[1] == "%-40s %5d %5d %5d     %s  %8.1f" % ("demo", 3, 128, 1, "-b----", 12.3) \
        + " " + UUID + " %8s" % "-" + " %16s" % "-"


def test_list_verbose_shows_the_reason_code_in_hex_once_shut_down() -> None:
    row = render_misc.list_row_extra(render_misc.ListColumns(verbose=True),
                                     info(shutdown=True, shutdown_reason=3))
    assert row == " " + UUID + "        3" + " " * 16 + "-"


def test_list_context_cpupool_numa_and_claims_columns() -> None:
    cols = render_misc.ListColumns(context=True, cpupool=True, numa=True)
    assert cols.header() == LIST_HEADER + "   Security Label         Cpupool NODE Affinity"
    row = render_misc.list_row_extra(cols, info(), pool="Pool-0", nodes="all")
    assert row == " %16s" % "-" + "%16s" % "Pool-0" + " all"
    claims = render_misc.ListColumns(claim=True)
    assert claims.header() == LIST_HEADER + "  Claimed"
    assert render_misc.list_row_extra(claims, info()) == "     0"
    # -v with -Z: one Security Label column, the -v one
    both = render_misc.ListColumns(verbose=True, context=True)
    assert both.header().count("Security Label") == 1


def test_node_affinity_follows_the_vcpus_hard_affinity() -> None:
    cpu_nodes = [0, 0, 1, 1]
    assert render_misc.node_affinity([[0, 1, 2, 3]], cpu_nodes, 2) == "all"
    assert render_misc.node_affinity([[2], [3]], cpu_nodes, 2) == "1"
    assert render_misc.node_affinity([[0]], cpu_nodes, 2) == "0"


def test_vm_list_format() -> None:
    out = render_misc.xl_vm_list([(UUID, 3, "demo")])
    assert out == "UUID                                  ID    name\n" + UUID + "  3    " + "%-30s" % "demo" + "\n"


# ---- xl info -n / -x ----------------------------------------------------------------------
def fake_sysfs(root: Path) -> Path:
    """Two nodes, four CPUs (cpu3 offline: no topology), two PCI devices, one with a node."""
    for cpu, (core, sock) in enumerate([(0, 0), (1, 0), (0, 1)]):
        t = root / f"devices/system/cpu/cpu{cpu}/topology"
        t.mkdir(parents=True)
        (t / "core_id").write_text(f"{core}\n")
        (t / "physical_package_id").write_text(f"{sock}\n")
    (root / "devices/system/cpu/cpu3").mkdir(parents=True)
    for node, (cpus, total, free, dist) in enumerate([("0-1", 2097152, 1048576, "10 20"),
                                                      ("2-3", 1048576, 524288, "20 10")]):
        n = root / f"devices/system/node/node{node}"
        n.mkdir(parents=True)
        (n / "cpulist").write_text(cpus + "\n")
        (n / "meminfo").write_text(f"Node {node} MemTotal:       {total} kB\nNode {node} MemFree:        {free} kB\n")
        (n / "distance").write_text(dist + "\n")
    for name, pnode in (("0000:00:01.0", "-1"), ("0000:3a:02.5", "1")):
        d = root / "bus/pci/devices" / name
        d.mkdir(parents=True)
        (d / "numa_node").write_text(pnode + "\n")
    return root


def test_topology_readers_and_blocks(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path)
    cpus = topology.cpu_topology(sysfs)
    assert cpus[:3] == [{"core": 0, "socket": 0, "node": 0}, {"core": 1, "socket": 0, "node": 0},
                        {"core": 0, "socket": 1, "node": 1}]
    assert cpus[3]["core"] == topology.INVALID
    nodes = topology.numa_info(sysfs)
    assert [(n["size"] >> 20, n["free"] >> 20, n["dists"]) for n in nodes] == [(2048, 1024, [10, 20]),
                                                                             (1024, 512, [20, 10])]
    pci = topology.pci_topology(sysfs)
    assert render_misc.topology_block(cpus, pci) == (
        "cpu_topology           :\ncpu:    core    socket     node\n"
        "  0:       0        0        0\n  1:       1        0        0\n  2:       0        1        1\n"
        "device topology        :\ndevice           node\n0000:3a:02.5      1\n")
    assert render_misc.numa_block(nodes) == (
        "numa_info              :\nnode:    memsize    memfree    distances\n"
        "   0:      2048       1024      10,20\n   1:      1024        512      20,10\n")
    assert "No device topology data available" in render_misc.topology_block(cpus, pci[:1])


FIELDS = [("host", "h"), ("nr_cpus", "2"), ("free_cpus", "0"), ("xen_major", "4"),
          ("build_id", "x"), ("xend_config_format", "4")]


def test_info_blocks_go_where_print_info_puts_them() -> None:
    out = render_misc.xl_info_full(FIELDS, None, "NUMA\n", 0)
    lines = out.splitlines()
    assert lines.index("NUMA") == lines.index("free_cpus              : 0") + 1
    assert lines[-2:] == ["xenstore_features      : 0x00000000", "xend_config_format     : 4"]
    # the field filter works on -x's line, and -n makes xl ignore it
    assert render_misc.xl_info_full(FIELDS, "xenstore", "", 0) == "0x00000000\n"
    assert "host" in render_misc.xl_info_full(FIELDS, "nr_cpus", "NUMA\n", None)


def test_uptime_short_drops_the_seconds_and_keeps_the_padding() -> None:
    assert render_misc.uptime_short_text(3907) == " 1:05"
    assert render_misc.uptime_short_text(86400 + 3600 + 59) == "1 day,  1:00"
    assert render_misc.uptime_short_text(3 * 86400 + 11 * 3600 + 7 * 60) == "3 days, 11:07"
    now = time.mktime((2026, 11, 30, 14, 3, 7, 0, 0, -1))
    assert render_misc.xl_uptime_short([("demo", 1, 3907.9)], now) == " 14:03:07 up  1:05, demo (1)\n"


# ---- xentop -------------------------------------------------------------------------------
def node(doms: list[xentop.DomainStats], when: float) -> xentop.NodeStats:
    return xentop.NodeStats(when, "4.17.0", 4 << 30, 1 << 30, 2, 2_400_000_000, doms)


def stats(cpu_ns: int, **kw: Any) -> xentop.DomainStats:
    return xentop.from_info(info(cpu_time_ns=cpu_ns, **kw))


def test_xentop_header_row_and_state_letters() -> None:
    d = stats(12_345_000_000)
    d.nets = [xentop.Net(rbytes=4096, tbytes=2048)]
    d.vbds = [51712]
    prev = node([stats(2_345_000_000)], 100.0)
    now = node([d], 110.0)
    out = xentop.table(now, prev, xentop.Options()).splitlines()
    assert out[0] == ("      NAME  STATE   CPU(sec) CPU(%)     MEM(k) MEM(%)  MAXMEM(k) MAXMEM(%) VCPUS NETS "
                      "NETTX(k) NETRX(k) VBDS   VBD_OO   VBD_RD   VBD_WR  VBD_RSECT  VBD_WSECT SSID")
    # CPU(%) = 10 s of CPU in 10 s; MEM(%) 128 MiB of 4 GiB; a VBD without statistics shows '-'
    assert out[1] == ("      demo --b---         12  100.0     131072    3.1     262144       6.2     2    1 "
                      "       2        4    1        -        -        -          -          -    0")
    assert xentop.from_info(info(shutdown=True, shutdown_reason=3, state="----c-")).state() == "---c--"
    assert xentop.from_info(info(paused=True, state="--p---")).state() == "----p-"


def test_xentop_first_sample_has_no_cpu_percentage_and_names_sort() -> None:
    doms = [stats(1, name="zeta", domid=2), stats(1, name="Alpha", domid=1)]
    out = xentop.table(node(doms, 1.0), None, xentop.Options(repeat_header=True)).splitlines()
    assert [line.split()[0] for line in out if not line.lstrip().startswith("NAME")] == ["Alpha", "zeta"]
    assert sum(1 for line in out if "NAME" in line) == 2  # -r: a header before each domain
    assert out[1].split()[3] == "0.0"


def test_xentop_vcpu_and_network_lines() -> None:
    d = stats(1)
    d.vcpus = [(True, 3_000_000_000), (False, 0)]
    assert xentop.vcpu_line(d) == "VCPUs(sec):   0:          3s\n"
    d.nets = [xentop.Net(1, 2, 3, 4, 5, 6, 7, 8)]
    out = xentop.table(node([d], 1.0), None, xentop.Options(networks=True))
    assert ("Net0 RX:        1bytes        2pkts        3err        4drop  "
            "TX:        5bytes        6pkts        7err        8drop\n") in out


def test_proc_net_dev_is_read_from_the_guests_side() -> None:
    text = ("Inter-|   Receive                                                |  Transmit\n"
            " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
            "vif3.0:   1000      10    0    0    0     0          0         0     2000      20    1    2    0     0       0          0\n")
    net = xentop.read_proc_net_dev(text)["vif3.0"]
    assert (net.rbytes, net.rpackets, net.tbytes, net.tpackets, net.rerrs, net.rdrop) == (2000, 20, 1000, 10, 1, 2)


def test_xentop_options(capsys: pytest.CaptureFixture[str]) -> None:
    opts = xentop.parse_args(["-b", "-i", "2", "-d", "1", "-n", "-x", "-v", "-r", "-f"], "xentop")
    assert opts == xentop.Options(delay=1, networks=True, vbds=True, repeat_header=True, vcpus=True,
                                  batch=True, iterations=2, full_name=True)
    assert xentop.parse_args(["--batch", "--iterations=3", "--delay=0"], "xentop") == \
        xentop.Options(delay=0, batch=True, iterations=3)
    assert xentop.parse_args(["-h"], "xentop") == 0
    assert capsys.readouterr().out.startswith("Usage: xentop [OPTION]\nDisplays ongoing information")
    assert xentop.atoi("5x") == 5 and xentop.atoi("x") == 0


# ---- argument parsing -----------------------------------------------------------------------
def test_console_escape_and_tty_nodes() -> None:
    assert parse_escape("^]") == 0x1D and parse_escape("^a") == 1 and parse_escape("q") == ord("q")
    assert parse_escape("^") == ord("^")  # one character, whichever
    for bad in ("", "ab", "^ab"):
        with pytest.raises(ValueError):
            parse_escape(bad)
    assert tty_node(None, 4, "pv") == "/local/domain/4/console/tty"
    assert tty_node(None, 4, "pv", 2) == "/local/domain/4/device/console/2/tty"
    assert tty_node(None, 4, "serial") == "/local/domain/4/console/tty"  # no serial/0/tty: pv
    assert tty_node(None, 4, "vuart") == "/local/domain/4/vuart/0/tty"


def test_set_parameters_split_strtol_and_loglvl() -> None:
    assert split_parameters("  loglvl=all  noreboot guest_loglvl=info/warning") == [
        ("loglvl", "all"), ("reboot", "no"), ("guest_loglvl", "info/warning")]
    assert strtol("12x", 10)[0] == 12 and strtol("-3", 10)[0] == -3 and strtol("x", 10)[0] is None
    assert parse_loglvl("info/warning") == ("info", "warning")
    with pytest.raises(ValueError):
        parse_loglvl("loud")


def test_the_new_commands_are_found_by_xls_lookup() -> None:
    for name in ("rename", "config-update", "vm-list", "trigger", "button-press", "sysrq",
                 "qemu-monitor-command", "vncviewer", "claims", "set-parameters", "top"):
        assert name in COMMANDS and cmdtable.lookup(name) is not None, name
    assert cmdtable.lookup("qemu") is cmdtable.lookup("qemu-monitor-command")


# ---- the hypercalls, on the declared fake device model --------------------------------------
@pytest.fixture
def fake() -> Iterator[FakeHost]:
    root = Path(os.path.realpath("/tmp")) / f"pyxen-fakemisc-{os.getpid()}-{time.monotonic_ns()}"
    with FakeHost(root) as host:
        yield host
    shutil.rmtree(root, ignore_errors=True)


def _domain(xc: XenCtrl, tmp: Path, dtype: str = "pv", name: str = "t") -> int:
    kernel = tmp / "vmlinuz"
    kernel.write_bytes(b"\0" * 16)
    req = CreateDomain(name=name, uuid=str(uuidlib.uuid4()), type=dtype, memory_kb=65536,
                       max_memkb=65536, vcpus=1, max_vcpus=2, kernel=str(kernel), ramdisk=None, cmdline="")
    domid = int(xc.call("domctl.createdomain", request=req.to_wire()))
    xc.call("domctl.finish_build", domid=domid)
    xc.call("domctl.unpausedomain", domid=domid)
    return domid


def _model(domid: int) -> FakeDeviceModel:
    return [m for m in FakeDeviceModel.instances if m.domid == domid][-1]


def test_triggers_reach_the_device_model_as_xen_allows_them(fake: FakeHost, tmp_path: Path) -> None:
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        pv = _domain(xc, tmp_path, "pv", "pv")
        hvm = _domain(xc, tmp_path, "hvm", "hvm")
        xc.call("dm_op.trigger", domid=pv, trigger="nmi", vcpu=1)
        xc.call("dm_op.trigger", domid=hvm, trigger="power")
        xc.call("dm_op.trigger", domid=hvm, trigger="s3resume")
        assert ("inject-nmi", {}) in _model(pv).commands
        assert [c for c, _ in _model(hvm).commands][-2:] == ["system_powerdown", "system_wakeup"]
        with pytest.raises(InvalidArgument):  # power, sleep, s3resume: HVM only
            xc.call("dm_op.trigger", domid=pv, trigger="power")
        with pytest.raises(NotImplementedByXen):  # init: ENOSYS, as Xen 4.17 on x86
            xc.call("dm_op.trigger", domid=pv, trigger="init")
        with pytest.raises(NoSuchDomain):  # a vCPU past max_vcpus: ESRCH
            xc.call("dm_op.trigger", domid=pv, trigger="nmi", vcpu=2)
        with pytest.raises(InvalidArgument):
            xc.call("dm_op.trigger", domid=pv, trigger="bogus")
        # reset: the PC resets, which in Xen's terms is a shutdown with reason reboot
        xc.call("dm_op.trigger", domid=pv, trigger="reset")
        assert ("stop", {}) in _model(pv).commands
        dom = xc.call("domctl.getdomaininfo", domid=pv)
        assert (dom["shutdown"], dom["shutdown_reason"]) == (True, 1)


def test_set_parameter_changes_the_console_rings_level(fake: FakeHost, tmp_path: Path) -> None:
    assert fake.hv is not None
    logger = logging.getLogger("pyxen")
    level = logger.level
    logger.addHandler(fake.hv.conring)  # as the daemon does (server.run)
    logger.setLevel(logging.INFO)
    try:
        _check_levels(fake, tmp_path)
    finally:
        logger.removeHandler(fake.hv.conring)
        logger.setLevel(level)


def _check_levels(fake: FakeHost, tmp_path: Path) -> None:
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        xc.call("sysctl.set_parameter", name="loglvl", value="error")
        _domain(xc, tmp_path)  # its "created" line is INFO: below the ring's level now
        assert not any("created" in line for line in xc.call("sysctl.readconsole"))
        xc.call("sysctl.set_parameter", name="loglvl", value="all")
        _domain(xc, tmp_path, name="t2")
        assert any("(t2): created" in line for line in xc.call("sysctl.readconsole"))
        with pytest.raises(NoSuchEntry):  # boot-only or unknown: no /params node
            xc.call("sysctl.set_parameter", name="dom0_mem", value="1G")
        with pytest.raises(InvalidArgument):
            xc.call("sysctl.set_parameter", name="loglvl", value="loud")


def test_qemu_monitor_command_sends_hmp_through_qmp(fake: FakeHost, tmp_path: Path) -> None:
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        domid = _domain(xc, tmp_path)
        xc.call("dm_op.qemu_monitor_command", domid=domid, command="info status")
        assert ("human-monitor-command", {"command-line": "info status"}) in _model(domid).commands
        with pytest.raises(InvalidArgument):  # Domain-0 has no device model
            xc.call("dm_op.qemu_monitor_command", domid=0, command="info status")


def test_xentop_batch_samples_the_hypervisor(fake: FakeHost, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """xentop -b -i 2 -d 0 over the hypervisor's socket: two tables, each with Domain-0 and
    the domain, their memory from the hypervisor (the fake's 64 MiB, MAXMEM the same)."""
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        _domain(xc, tmp_path, name="topme")
    monkeypatch.setenv("PYXEN_ROOT", str(fake.paths.root))
    assert xentop.main(["-b", "-i", "2", "-d", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(1 for line in lines if line.lstrip().startswith("NAME  STATE")) == 2
    rows = [line.split() for line in lines if line.split()[:1] == ["topme"]]
    assert len(rows) == 2 and rows[0][4] == rows[0][6] == "65536" and rows[0][8] == "2"
    assert sum(1 for line in lines if line.split()[:1] == ["Domain-0"]) == 2
