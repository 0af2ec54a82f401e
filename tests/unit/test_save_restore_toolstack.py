"""xl save -D / restore's requested domid, restore's options, and the client's bound on a state
copy, without QEMU: the real hypervisor and xenstored daemons (in-process, on their sockets)
with the declared FakeDeviceModel, whose migration completes at once (issue 9)."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from pyxen.cli import xl
from pyxen.cli.xl import saverestore
from pyxen.hypervisor import client, qemu
from pyxen.hypervisor.client import XenCtrl
from pyxen.hypervisor.domctl import CreateDomain
from pyxen.hypervisor.errors import DomainExists, HypercallError, InvalidArgument
from pyxen.paths import Paths
from pyxen.testing.fakes import FakeHost
from pyxen.toolstack import domain as libxl
from pyxen.toolstack import domid_history, savefile, userdata
from pyxen.toolstack.config import DomainConfig
from pyxen.toolstack.monitor import Monitor


@pytest.fixture
def fake() -> Iterator[FakeHost]:
    root = Path(os.path.realpath("/tmp")) / f"pyxen-sr-{os.getpid()}-{time.monotonic_ns()}"
    with FakeHost(root) as host:
        yield host
    shutil.rmtree(root, ignore_errors=True)


def cfg(tmp: Path, **kw: Any) -> DomainConfig:
    k = tmp / "vmlinuz"
    k.write_bytes(b"\0" * 16)
    base: dict[str, Any] = dict(name="g", memory=64, maxmem=64, kernel=str(k), source="g.cfg")
    base.update(kw)
    return DomainConfig(**base)


def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def guests(xc: XenCtrl) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in libxl.list_domains(xc) if d["domid"] != 0}


def restore(xc: XenCtrl, paths: Paths, path: Path, **kw: Any) -> int:
    """What xl restore does after its checks: the saved config, built with the stream."""
    with open(path, "rb") as f:
        header = savefile.decode(f, str(path))
    assert header.config is not None
    return libxl.create(xc, paths, DomainConfig.from_json(header.config),
                        restore_from=(path, header.stream_offset), **kw)


# ---- the requested domid -----------------------------------------------------------------------
@pytest.mark.parametrize("value", [0, 0x7FF0, -1, "3", True, 2.0])
def test_createdomain_refuses_a_domid_that_is_not_a_domus(value: object) -> None:
    wire = CreateDomain("g", "7c0d6e47-44a6-4a0b-9e5a-1d0b0e6f1a01", "pv", 65536, 65536, 1, 1,
                        kernel="/k").to_wire()
    wire["domid"] = value
    with pytest.raises(InvalidArgument, match="'domid'"):
        CreateDomain.from_wire(wire)
    wire["domid"] = 0x7FEF
    assert CreateDomain.from_wire(wire).domid == 0x7FEF


def test_domid_history_times_out_per_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = Paths(tmp_path)
    monkeypatch.delenv(domid_history.REUSE_TIMEOUT_ENV, raising=False)
    assert domid_history.reuse_timeout() == 60
    assert not domid_history.is_recent(paths, 5)
    domid_history.mark_recent(paths, 5)
    assert domid_history.is_recent(paths, 5) and not domid_history.is_recent(paths, 6)
    monkeypatch.setenv(domid_history.REUSE_TIMEOUT_ENV, "0")
    assert not domid_history.is_recent(paths, 5)
    for text, value in (("15", 15), ("15s", 15), ("abc", 0), ("", 0)):  # libxl's strtol
        monkeypatch.setenv(domid_history.REUSE_TIMEOUT_ENV, text)
        assert domid_history.reuse_timeout() == value
    # Entries past the timeout go when the next is written; one from the future is not recent.
    monkeypatch.setenv(domid_history.REUSE_TIMEOUT_ENV, "60")
    now = time.time()
    paths.domid_history.write_text(f"{now - 120:.3f} 7\n{now + 3600:.3f} 8\ngarbage\n{now - 1:.3f} 9\n")
    assert [domid_history.is_recent(paths, d) for d in (7, 8, 9)] == [False, False, True]
    domid_history.mark_recent(paths, 10)
    kept = [line.split()[1] for line in paths.domid_history.read_text().splitlines()]
    assert kept == ["9", "10"]


def test_save_D_then_restore_asks_for_the_same_domid(fake: FakeHost, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(domid_history.REUSE_TIMEOUT_ENV, raising=False)
    save = tmp_path / "g.save"
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        domid = libxl.create(xc, fake.paths, cfg(tmp_path))
        libxl.create(xc, fake.paths, cfg(tmp_path, name="other", uuid="5f1e6a3c-7a43-4e8e-8a57-7b5b4d3c2a10"))
        libxl.save(xc, fake.paths, domid, save, same_domid=True)
        assert "g" not in guests(xc)
        # Right after the save, the domid is recently used: refused, nothing made.
        with pytest.raises(libxl.DomainBuildError) as exc:
            restore(xc, fake.paths, save)
        assert str(exc.value) == f"libxl: error: Domain {domid}:domain id recently used"
        assert "g" not in guests(xc) and userdata.domids(fake.paths) == {guests(xc)["other"]["domid"]}
        # A domain created meanwhile does not take it (the hypervisor's ids only go up).
        third = libxl.create(xc, fake.paths, cfg(tmp_path, name="third", uuid="0b8f4f2e-2d6e-4b8c-9a0e-3c5d7e9f1b22"))
        assert third != domid
        monkeypatch.setenv(domid_history.REUSE_TIMEOUT_ENV, "0")
        assert restore(xc, fake.paths, save) == domid
        assert guests(xc)["g"]["domid"] == domid
        # The record kept with the live domain has no domid: a restart takes a new one.
        kept = userdata.retrieve(fake.paths, domid)
        assert kept is not None and kept.domid is None
        # A save without -D, or with -D and a config file, does not carry it.
        libxl.save(xc, fake.paths, domid, tmp_path / "plain.save", keep=True)
        libxl.save(xc, fake.paths, domid, tmp_path / "over.save", keep=True, same_domid=True,
                   config=cfg(tmp_path, name="g2"))
        for name in ("plain.save", "over.save"):
            with open(tmp_path / name, "rb") as f:
                assert "domid" not in (savefile.decode(f, name).config or {})
        with open(save, "rb") as f:
            assert (savefile.decode(f, "g.save").config or {})["domid"] == domid


def test_a_requested_domid_that_exists_is_eexist(fake: FakeHost, tmp_path: Path) -> None:
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        domid = libxl.create(xc, fake.paths, cfg(tmp_path))
        before = {name: (d["domid"], d["uuid"]) for name, d in guests(xc).items()}
        with pytest.raises(DomainExists, match=f"domain creation fail: domain {domid} already exists"):
            libxl.create(xc, fake.paths, cfg(tmp_path, name="h", domid=domid))
        # (cpu time and state move on by themselves: the domains, by id and uuid, are the same)
        assert {name: (d["domid"], d["uuid"]) for name, d in guests(xc).items()} == before
        assert userdata.retrieve(fake.paths, domid) is not None  # the existing one is untouched


# ---- -e: no monitor ------------------------------------------------------------------------------
def test_a_domain_restored_with_e_is_left_alone_by_the_monitor(fake: FakeHost, tmp_path: Path) -> None:
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        loose = libxl.create(xc, fake.paths, cfg(tmp_path), monitored=False)
        watched = libxl.create(xc, fake.paths, cfg(tmp_path, name="w", uuid="9a3c1f0e-6b2d-4e7a-8c5f-2d4b6a8e0c13"))
    for domid in (loose, watched):
        model = fake.call(lambda: fake.hv.models[domid])  # type: ignore[union-attr]
        fake.loop.call_soon_threadsafe(model.guest_shutdown, "guest-shutdown")
    until(lambda: fake.call(lambda: all(fake.hv.domains[d].shutdown for d in (loose, watched))))  # type: ignore[union-attr]
    for _ in range(2):
        Monitor(fake.paths).run_pass()
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        doms = guests(xc)
        assert list(doms) == ["g"] and doms["g"]["shutdown"]  # w: on_poweroff=destroy applied
        libxl.destroy(xc, fake.paths, loose)
    assert not list(fake.paths.userdata_dir.iterdir())  # the mark went with the domain


def test_restore_F_waits_until_the_domain_is_gone_following_a_restart(
        fake: FakeHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PYXEN_ROOT", str(fake.paths.root))
    c = cfg(tmp_path, on_poweroff="restart")
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        domid = libxl.create(xc, fake.paths, c)
    result: list[int] = []
    waiter = threading.Thread(target=lambda: result.append(saverestore.wait_for_death(fake.paths, "g", c.uuid, domid, 0.05)))
    waiter.start()
    model = fake.call(lambda: fake.hv.models[domid])  # type: ignore[union-attr]
    fake.loop.call_soon_threadsafe(model.guest_shutdown, "guest-shutdown")
    until(lambda: fake.call(lambda: fake.hv.domains[domid].shutdown))  # type: ignore[union-attr]
    Monitor(fake.paths).run_pass()  # restart: a new domid, the same uuid
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        new = guests(xc)["g"]["domid"]
        assert new != domid
        time.sleep(0.3)
        assert waiter.is_alive()
        libxl.destroy(xc, fake.paths, new)
    waiter.join(5)
    assert result == [0]
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith(f"Waiting for domain g (domid {domid}) to die [pid ")
    assert lines[1].startswith(f"Waiting for domain g (domid {new}) to die [pid ")
    assert lines[-1] == f"Domain {new} has been destroyed."


# ---- xl restore's arguments --------------------------------------------------------------------
def saved(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "x.save"
    path.write_bytes(savefile.encode(config) + b"stream")
    return path


def test_restore_and_save_count_their_arguments_as_xl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # def_getopt's message on stderr, xl's help() block on stdout
    assert xl.main(["restore"]) == 2
    out = capsys.readouterr()
    assert out.err == "'xl restore' requires at least 1 argument.\n\n"
    assert out.out.startswith("Usage: xl [-vtTf] restore [options] [<ConfigFile>] <CheckpointFile>\n")
    assert xl.main(["restore", "a", "b", "c"]) == 1
    out = capsys.readouterr()
    assert (out.err, out.out.split("\n")[0]) == ("", "Usage: xl [-vtTf] restore [options] [<ConfigFile>] <CheckpointFile>")
    assert xl.main(["save", "d"]) == 2
    out = capsys.readouterr()
    assert (out.err, out.out.split("\n")[0]) == ("'xl save' requires at least 2 arguments.\n\n",
                                                 "Usage: xl [-vtTf] save [options] <Domain> <CheckpointFile> [<ConfigFile>]")
    assert xl.main(["save", "d", "f", "c", "extra"]) == 1
    out = capsys.readouterr()
    assert out.err == "" and out.out.startswith("Usage: xl [-vtTf] save ")
    assert xl.main(["save", "-x", "d", "f"]) == 2
    assert capsys.readouterr().err == "option `x' not supported.\n"


def test_restore_config_file_replaces_the_saved_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """/dev/null is an empty config, which has no name: xl's parse_config_data message, exit 1,
    before any daemon is asked anything (no host runs here)."""
    path = saved(tmp_path, cfg(tmp_path).to_json())
    assert xl.main(["restore", "/dev/null", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-2:] == ["Parsing config from /dev/null", "Domain name must be specified."]
    bad = tmp_path / "bad.cfg"
    bad.write_text('name = "x"\nmemory = lots\n')
    assert xl.main(["restore", str(bad), str(path)]) == 1
    assert capsys.readouterr().err.splitlines()[-2:] == [
        f"{bad}:2: config parsing error near `lots': syntax error, unexpected IDENT, expecting STRING or NUMBER or '['",
        "Failed to parse config: Invalid argument"]


def test_restore_d_prints_the_config_it_will_use(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYXEN_ROOT", str(tmp_path / "nohost"))
    path = saved(tmp_path, cfg(tmp_path, domid=4).to_json())
    assert xl.main(["restore", "-d", str(path)]) == 1  # no host: it stops at the xl context
    err = capsys.readouterr().err
    assert '"name": "g"' in err and '"domid": 4' in err and "is the host started?" in err


# ---- -V / -A -------------------------------------------------------------------------------------
def test_vncviewer_is_started_on_the_domains_display(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "viewer.args"
    viewer = tmp_path / "viewer"
    viewer.write_text(f"#!/bin/sh\necho \"$@\" > {out}\n")
    viewer.chmod(viewer.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("VNCVIEWER", str(viewer))
    saverestore.start_vncviewer(cfg(tmp_path, type="hvm", vnc=True, vncdisplay=7, vnclisten="127.0.0.2"), 3)
    until(lambda: out.exists() and out.read_text() != "")
    assert out.read_text() == "127.0.0.2:7\n" and capsys.readouterr().err == ""
    saverestore.start_vncviewer(cfg(tmp_path, type="hvm"), 3)
    assert capsys.readouterr().err == ("libxl: error: Domain 3:Cannot get vnc-port: the domain has no VNC "
                                       "display (its config has no vnc=1)\nUnable to exec vncviewer\n")
    monkeypatch.setenv("VNCVIEWER", str(tmp_path / "absent"))
    saverestore.start_vncviewer(cfg(tmp_path, type="hvm", vnc=True), 3)
    assert capsys.readouterr().err == (f"Unable to exec vncviewer: {tmp_path / 'absent'}: No such file or "
                                       "directory (set VNCVIEWER to a VNC viewer)\n")


# ---- the client's bound on a state copy ------------------------------------------------------------
class SlowHypervisor:
    """A control socket that answers each request after ``delay[op]`` seconds, in order."""

    def __init__(self, path: Path, delay: dict[str, float]) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(1)
        self.delay = delay
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        import json
        conn, _ = self.sock.accept()
        with conn, conn.makefile("rb") as f:
            for line in f:
                req = json.loads(line)
                time.sleep(self.delay.get(req["op"], 0))
                try:
                    conn.sendall(json.dumps({"id": req["id"], "result": req["op"]}).encode() + b"\n")
                except OSError:  # the client gave up and closed
                    return


def test_save_and_restore_calls_wait_for_the_device_models_bound(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert qemu.SAVE_TIMEOUT is client.SAVE_TIMEOUT  # one constant, shared by both ends
    assert client.call_timeout("dm_op.save", client.CALL_TIMEOUT) > client.SAVE_TIMEOUT > client.CALL_TIMEOUT
    monkeypatch.setattr(client, "SAVE_TIMEOUT", 0.4)
    monkeypatch.setattr(client, "SAVE_MARGIN", 0.2)
    SlowHypervisor(tmp_path / "hv.sock", {"dm_op.save": 0.3, "dm_op.restore": 0.3, "domctl.pausedomain": 0.3})
    with XenCtrl(tmp_path / "hv.sock", timeout=0.1) as xc:
        assert xc.call("dm_op.save") == "dm_op.save"  # longer than the ordinary bound
        assert xc.call("dm_op.restore") == "dm_op.restore"
        with pytest.raises(HypercallError, match=r"did not answer domctl.pausedomain within 0.1 s "
                                                 r"\(the bound on a hypercall\)"):
            xc.call("domctl.pausedomain")
        # The late reply to pausedomain is skipped: the next call gets its own.
        time.sleep(0.3)
        assert xc.call("domctl.unpausedomain") == "domctl.unpausedomain"
    SlowHypervisor(tmp_path / "hv2.sock", {"dm_op.save": 1.0})
    with XenCtrl(tmp_path / "hv2.sock", timeout=0.1) as xc:
        with pytest.raises(HypercallError, match=r"did not answer dm_op.save within 0.6 s "
                                                 r"\(the bound on a guest's state copy\)"):
            xc.call("dm_op.save")
