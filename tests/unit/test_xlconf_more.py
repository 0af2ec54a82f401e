"""xl.conf's run_hotplug_scripts and autoballoon, and the global -N of block-attach and
network-attach (xl_block.c / xl_nic.c: under dryrun_only they print the device's libxl JSON
and return 0 before libxl_device_*_add).

The -N rows run against a FakeHost (a real hypervisor and xenstored, no QEMU): after each, the
host's xenstore has no new device. The hotplug rows run the toolstack's add_all against the
FakeHost with a disk whose script would create a marker file.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest

from pyxen.cli import xl
from pyxen.cli.xl import xlconf
from pyxen.testing.fakes import FakeHost
from pyxen.toolstack import libxl_json
from pyxen.xenstore.client import XenstoreClient
from pyxen.xenstore.errors import NoEntry


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeHost]:
    root = Path(os.path.realpath("/tmp")) / f"pyxen-xlconf2-{os.getpid()}-{time.monotonic_ns()}"
    with FakeHost(root) as host:
        yield host
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def on_fake(fake: FakeHost, monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    monkeypatch.setenv("PYXEN_ROOT", str(fake.paths.root))
    return fake


def _backends(host: FakeHost) -> list[str]:
    with XenstoreClient(host.paths.xenstored_socket) as xs:
        try:
            return list(xs.directory("/local/domain/0/backend"))
        except NoEntry:
            return []


# ---- xl.conf: parsing and the pure decisions ---------------------------------------------------
def test_run_hotplug_scripts_parses_as_xl_reads_it() -> None:
    warn = io.StringIO()
    assert xlconf.parse_text("", "x", warn).runs_hotplug_scripts
    assert not xlconf.parse_text("run_hotplug_scripts = 0\n", "x", warn).runs_hotplug_scripts
    assert xlconf.parse_text("run_hotplug_scripts = 1\n", "x", warn).runs_hotplug_scripts
    bad = xlconf.parse_text('run_hotplug_scripts = "no"\n', "x", warn)
    assert bad.runs_hotplug_scripts  # libxlu's warning, xl's default kept
    assert warn.getvalue() == "x:1: warning: parameter `run_hotplug_scripts' is not a valid number\n"


def test_skipped_scripts_notice_is_one_line_only_when_a_script_is_left_out() -> None:
    off = xlconf.XlConf(run_hotplug_scripts=0)
    assert xlconf.XlConf().skipped_scripts_notice(["/x/s"]) is None
    assert off.skipped_scripts_notice([None, None]) is None
    one = off.skipped_scripts_notice([None, "/x/s"])
    assert one is not None and "\n" not in one
    assert "/x/s" in one and "run_hotplug_scripts=0" in one and "not run" in one
    two = off.skipped_scripts_notice(["/x/a", "/x/b", "/x/a"])
    assert two is not None and two.count("/x/a") == 1 and "/x/b" in two


def test_autoballoon_notice_only_for_on() -> None:
    warn = io.StringIO()
    for text, expect in (("", False), ('autoballoon = "auto"\n', False), ('autoballoon = "off"\n', False),
                         ('autoballoon = "on"\n', True), ('autoballoon = "1"\n', True)):
        notice = xlconf.parse_text(text, "x", warn).autoballoon_notice()
        assert (notice is not None) == expect, text
        if notice:
            assert "\n" not in notice and "Domain-0" in notice
    assert warn.getvalue() == ""


# ---- libxl JSON of one device ------------------------------------------------------------------
def test_device_json_is_libxl_layout() -> None:
    assert libxl_json.device_disk("/tmp/x.img,raw,xvdb,rw") == (
        '{\n    "pdev_path": "/tmp/x.img",\n    "vdev": "xvdb",\n    "format": "raw",\n'
        '    "readwrite": 1\n}\n')
    assert json.loads(libxl_json.device_disk("vdev=xvdc,access=r,script=/s,target=/tmp/y.img")) == {
        "pdev_path": "/tmp/y.img", "vdev": "xvdc", "format": "raw", "script": "/s"}
    got = json.loads(libxl_json.device_nic("bridge=br0,mac=00:16:3E:00:00:01,script=/s"))
    assert got == {"mac": "00:16:3e:00:00:01", "bridge": "br0", "script": "/s"}
    assert "devid" not in got


# ---- -N block-attach / network-attach ----------------------------------------------------------
def test_dryrun_block_attach_prints_the_disk_and_adds_nothing(on_fake: FakeHost,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    before = _backends(on_fake)
    assert xl.main(["-N", "block-attach", "0", "/tmp/x.img,raw,xvdb,rw"]) == 0
    got = capsys.readouterr()
    assert got.err == ""
    assert got.out == "disk: " + libxl_json.device_disk("/tmp/x.img,raw,xvdb,rw") + "\n"
    assert _backends(on_fake) == before
    # A bad spec is still refused, and a bad domain name too, as without -N.
    assert xl.main(["-N", "block-attach", "0", "/tmp/x.img,raw,xvdb,rw,colour=blue"]) == 1
    assert xl.main(["-N", "block-attach", "nosuch", "/tmp/x.img,raw,xvdb,rw"]) == 1
    assert capsys.readouterr().out == ""


def test_dryrun_network_attach_prints_the_nic_and_adds_nothing(on_fake: FakeHost,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    before = _backends(on_fake)
    assert xl.main(["-N", "network-attach", "0", "bridge=pxbr9", "mac=00:16:3e:00:00:09"]) == 0
    got = capsys.readouterr()
    assert got.err == ""
    assert got.out.startswith("vif: {\n") and got.out.endswith("}\n\n")
    assert json.loads(got.out[len("vif: "):]) == {"mac": "00:16:3e:00:00:09", "bridge": "pxbr9"}
    assert _backends(on_fake) == before
    assert xl.main(["-N", "network-attach", "0", "colour=blue"]) == 1
    assert capsys.readouterr().err.strip() == "unrecognized argument `colour=blue'"


def test_dryrun_network_attach_applies_vif_defaults(on_fake: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    on_fake.paths.xl_conf.write_text('vif.default.bridge = "pxdef"\n')
    try:
        assert xl.main(["-N", "network-attach", "0"]) == 0
    finally:
        on_fake.paths.xl_conf.unlink()
    assert json.loads(capsys.readouterr().out[len("vif: "):]) == {"bridge": "pxdef"}


def test_cd_insert_still_refuses_dryrun(on_fake: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    """xl_cdrom.c never reads dryrun_only (Xen inserts the medium anyway); pyxen refuses -N
    rather than change the guest under a dry run."""
    assert xl.main(["-N", "cd-insert", "0", "hdc", "/tmp/x.iso"]) == 1
    assert "does not implement -N" in capsys.readouterr().err


def test_dryrun_vcpu_pin_prints_the_maps_and_pins_nothing(on_fake: FakeHost,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """xl_vcpu.c: ``cpumap: `` then the hard map (``-`` when left alone) and, if given, the
    soft one, in print_bitmap's text over the online CPUs."""
    from pyxen.hypervisor.client import XenCtrl
    with XenCtrl(on_fake.paths.hypervisor_socket) as xc:
        nr = int(xc.call("sysctl.physinfo")["nr_cpus"])
        before = [(v["hard"], v["soft"]) for v in xc.call("domctl.getvcpuinfo", domid=0)]
    assert xl.main(["-N", "vcpu-pin", "0", "0", "0"]) == 0
    assert capsys.readouterr().out == ("cpumap: all\n" if nr == 1 else "cpumap: 0\n")
    assert xl.main(["-N", "vcpu-pin", "0", "all", "-", "all"]) == 0
    assert capsys.readouterr().out == "cpumap: - all\n"
    assert xl.main(["-N", "vcpu-pin", "0", "0", "nosuchcpu"]) == 1
    assert capsys.readouterr().out == ""
    with XenCtrl(on_fake.paths.hypervisor_socket) as xc:
        assert [(v["hard"], v["soft"]) for v in xc.call("domctl.getvcpuinfo", domid=0)] == before


def test_dryrun_cpupool_create_is_its_dash_n(on_fake: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    """xl_cpupool.c's -n sets dryrun_only: -N prints the same summary and makes no pool."""
    assert xl.main(["cpupool-create", "-n", 'name="dryp"']) == 0
    dash_n = capsys.readouterr()
    assert xl.main(["-N", "cpupool-create", 'name="dryp"']) == 0
    assert capsys.readouterr() == dash_n and "dryp" in dash_n.out
    assert xl.main(["cpupool-list"]) == 0
    assert "dryp" not in capsys.readouterr().out
