"""The pure and in-process parts of disk hotplug: Xen's hotplug-script convention (argv,
environment, script lookup, libxl's messages for a script that fails or hangs, the wait for
``hotplug-status``), ``script=`` in the disk spec (phy, as libxl), the ``script`` node, the
channel-list table, and blkback's wait for a user script's ``physical-device-path`` (against an
in-process xenstored, as tests/backends/test_daemon_xenbus.py does)."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from pyxen.cli import render
from pyxen.paths import Paths
from pyxen.toolstack import hotplug_scripts as hs
from pyxen.toolstack.devices import DEFAULT_BLOCK_SCRIPT, DeviceSpecError, backend_nodes, parse_disk, script_node
from tests.backends.test_daemon_xenbus import BE, DEVID, DOMID, Env, Running, StubHypervisor, _is, env, until

__all__ = ["env"]  # the fixture, imported for the daemon test

DEV = hs.HotplugDevice("vbd", 3, 51728)


def _script(root: Path, name: str, body: str) -> Path:
    path = root / "scripts" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# ---- the convention -----------------------------------------------------------------------
def test_argv_env_and_lookup(tmp_path: Path) -> None:
    paths = Paths.from_env(tmp_path)
    assert hs.resolve_script(paths, "block") == tmp_path / "scripts" / "block"
    assert hs.resolve_script(paths, "/opt/x/block-iscsi") == Path("/opt/x/block-iscsi")
    assert hs.hotplug_argv(Path("/s/block"), "vbd", True) == ["/s/block", "add"]
    assert hs.hotplug_argv(Path("/s/block"), "vbd", False) == ["/s/block", "remove"]
    assert hs.hotplug_argv(Path("/s/vif-bridge"), "vif", True) == ["/s/vif-bridge", "online", "type_if=vif"]
    assert hs.hotplug_argv(Path("/s/vif-bridge"), "vif", False) == ["/s/vif-bridge", "offline", "type_if=vif"]
    with pytest.raises(ValueError, match="vkbd"):
        hs.action_word("vkbd", True)
    env = hs.hotplug_env(paths, hs.HotplugDevice("vif", 4, 1), Path("/s/vif-bridge"),
                         {"vif": "vif4.1", "netdev": ""}, base={"HOME": "/root"})
    assert env == {"HOME": "/root", "script": "/s/vif-bridge", "XENBUS_TYPE": "vif",
                   "XENBUS_PATH": "backend/vif/4/1", "XENBUS_BASE_PATH": "backend",
                   "XENSTORED_PATH": str(paths.xenstored_socket), "PYXEN_ROOT": str(tmp_path),
                   "vif": "vif4.1", "netdev": ""}
    assert DEV.backend_path == "/local/domain/0/backend/vbd/3/51728"


def test_a_script_that_succeeds_sees_xens_environment(tmp_path: Path) -> None:
    paths = Paths.from_env(tmp_path)
    _script(tmp_path, "mine", 'echo "$0 $1 $XENBUS_TYPE $XENBUS_PATH $XENBUS_BASE_PATH $script" > "$PYXEN_ROOT/out"\n'
                              'read line && echo "stdin was not empty"\necho "to stderr" >&2\n')
    hs.run_hotplug_script(paths, DEV, "mine", add=True)
    me = tmp_path / "scripts" / "mine"
    assert (tmp_path / "out").read_text().split() == [str(me), "add", "vbd", "backend/vbd/3/51728", "backend", str(me)]
    log = paths.hotplug_log.read_text()
    assert f"{me} add (backend/vbd/3/51728)" in log and "to stderr" in log
    assert "stdin was not empty" not in log


def test_a_failing_script_gives_libxls_lines(tmp_path: Path) -> None:
    paths = Paths.from_env(tmp_path)
    _script(tmp_path, "bad", "exit 3\n")
    with pytest.raises(hs.HotplugScriptError) as err:
        hs.run_hotplug_script(paths, DEV, "bad", add=False, read_error=lambda: "LUN gone")
    lines = str(err.value).splitlines()
    assert lines[0] == "script: LUN gone"
    assert lines[1].startswith(f"{tmp_path}/scripts/bad remove [") and lines[1].endswith("] exited with error status 3")
    with pytest.raises(hs.HotplugScriptError, match=r"^[^\n]*bad add \[\d+\] exited with error status 3$"):
        hs.run_hotplug_script(paths, DEV, "bad", add=True, read_error=lambda: None)


def test_missing_and_hanging_scripts(tmp_path: Path) -> None:
    paths = Paths.from_env(tmp_path)
    with pytest.raises(hs.HotplugScriptError, match="cannot execute .*nosuch add: No such file"):
        hs.run_hotplug_script(paths, DEV, "nosuch", add=True)
    _script(tmp_path, "hang", "sleep 30 &\nsleep 30\n")
    with pytest.raises(hs.HotplugScriptError, match=r"killing execution of .*hang add because of timeout"):
        hs.run_hotplug_script(paths, DEV, "hang", add=True, timeout=0.3)


def test_wait_hotplug_status() -> None:
    clock = [0.0]

    def tick(dt: float) -> None:
        clock[0] += dt

    nodes: dict[str, str] = {}
    seq = iter([None, None, "connected"])
    hs.wait_hotplug_status(lambda k: next(seq) if k == "hotplug-status" else None, DEV,
                           sleep=tick, clock=lambda: clock[0])
    nodes.update({"hotplug-status": "busy", "hotplug-error": "File /x is loopback-mounted"})
    with pytest.raises(hs.HotplugScriptError, match="^script: File /x is loopback-mounted$"):
        hs.wait_hotplug_status(nodes.get, DEV, sleep=tick, clock=lambda: clock[0])
    with pytest.raises(hs.HotplugScriptError,
                       match=r"^Device 51728 \(vbd\) could not be connected\. Hotplug scripts not working\.$"):
        hs.wait_hotplug_status({}.get, DEV, timeout=1.0, sleep=tick, clock=lambda: clock[0])


# ---- script= in the disk spec -------------------------------------------------------------
def test_script_implies_phy_and_its_node() -> None:
    d = parse_disk("/srv/a.img,raw,xvdb,w,script=block")
    assert (d.backendtype, d.kind, d.script) == ("phy", "vbd", "block")
    assert parse_disk("iscsi:iqn.x,xvdc,w").script == "block-iscsi"
    with pytest.raises(DeviceSpecError, match="backend qdisk not compatible with script="):
        parse_disk("/srv/a.img,raw,xvdb,w,script=block,backendtype=qdisk")
    with pytest.raises(DeviceSpecError, match="backend qdisk not compatible with script="):
        parse_disk("/srv/a.qcow2,qcow2,xvdb,w,script=block")
    assert script_node(None) == DEFAULT_BLOCK_SCRIPT == "/etc/xen/scripts/block"
    assert script_node("block", "/r/scripts") == "/r/scripts/block"
    assert script_node("/opt/s", "/r/scripts") == "/opt/s"
    assert backend_nodes(d, 2, "/r/scripts")["script"] == "/r/scripts/block"
    assert backend_nodes(parse_disk("/srv/a.img,raw,xvdb,w"), 2, "/r/scripts")["script"] == DEFAULT_BLOCK_SCRIPT


def test_channel_list_table() -> None:
    assert render.xl_channel_list([]) == "Idx BE state evt-ch ring-ref connection %-30s\n" % ""
    row = render.xl_channel_list([{"devid": "0", "backend-id": "0", "state": "4", "event-channel": "9",
                                   "ring-ref": "12", "connection": "pty", "tty": "/dev/pts/3"}])
    assert row.splitlines()[1] == "0   0  4     9      12       pty        /dev/pts/3                     "


# ---- blkback and a user script --------------------------------------------------------------
async def test_blkback_waits_for_the_users_script(env: Env) -> None:
    """A vbd whose ``script`` is the user's: InitWait without opening anything (the target may
    not exist before the script runs), then served once the script named the device and said
    connected; the script's own nodes stay as it wrote them."""
    await StubHypervisor(env.paths.hypervisor_socket, (0, DOMID)).start()
    await env.device(params="/nonexistent/iqn.2001-04.com.example:lun0")
    await env.client.write(f"{BE}/script", "/etc/pyxen/scripts/block-iscsi")
    d = await Running(env).start()
    await until(lambda: _is(env, BE, 2))
    await asyncio.sleep(0.3)
    assert ("vbd", DOMID, DEVID) not in d.daemon.devices
    assert await env.client.get(f"{BE}/hotplug-error") is None
    assert not (env.paths.backends_dir / f"vbd-{DOMID}-{DEVID}.sock").exists()
    img = env.root / "lun.img"
    img.write_bytes(bytes(2 << 20))
    await env.client.write(f"{BE}/physical-device-path", str(img))
    await env.client.write(f"{BE}/physical-device", "7:0")
    await env.client.write(f"{BE}/hotplug-status", "connected")
    await until(lambda: _served(env))
    assert ("vbd", DOMID, DEVID) in d.daemon.devices
    assert await env.client.read(f"{BE}/sectors") == b"4096"
    assert await env.client.read(f"{BE}/physical-device") == b"7:0"
    assert await env.client.read(f"{BE}/physical-device-path") == str(img).encode()
    assert env.walk(f"{BE}/state") == [2]
    await d.stop()


async def _served(env: Env) -> bool:
    return (env.paths.backends_dir / f"vbd-{DOMID}-{DEVID}.sock").exists()


def test_blkback_flushes_on_close(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyxen.backends.block.device import BlockDevice, open_target
    img = tmp_path / "d.img"
    img.write_bytes(bytes(4096))
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    dev = BlockDevice("vbd-1-1", open_target(str(img), readonly=False), serial="xvdb")
    fd = dev.target.fd
    dev.remove()
    assert synced == [fd]
    ro = BlockDevice("vbd-1-2", open_target(str(img), readonly=True), serial="xvdc")
    ro.close()
    assert synced == [fd]


async def test_detach_forced_closes_while_the_frontend_is_live(env: Env) -> None:
    """libxl's forced remove deletes the frontend first: blkback closes at once even though
    the guest's driver is live (and a paused guest's stopped rings do not close a disk that is
    only being asked to go: that waits for the frontend's Closed)."""
    from tests.backends.test_daemon_xenbus import FE
    await StubHypervisor(env.paths.hypervisor_socket, (0, DOMID)).start()
    await env.device()
    d = await Running(env).start()
    await until(lambda: _is(env, BE, 2))
    await d.set_live(True)
    await until(lambda: _is(env, BE, 4))
    await env.client.rm(FE)
    await env.client.write(f"{BE}/online", "0")
    await until(lambda: _is(env, BE, 6))
    assert env.walk(f"{BE}/state") == [2, 4, 5, 6]
    assert ("vbd", DOMID, DEVID) not in d.daemon.devices
    assert not (env.paths.backends_dir / f"vbd-{DOMID}-{DEVID}.sock").exists()
    await d.stop()


def test_channel_is_refused_at_create() -> None:
    from pyxen.libxlu.cfg import parse
    from pyxen.toolstack.config import ConfigError, from_settings
    text = 'name = "c"\nkernel = "/k"\nchannel = [ "name=org.qemu.guest_agent.0,connection=socket,path=/tmp/qga" ]\n'
    with pytest.raises(ConfigError, match=r"^c\.cfg:3: channel: pyxen does not build PV channels"):
        from_settings(parse(text, "c.cfg"), "c.cfg")
    assert from_settings(parse('name = "c"\nkernel = "/k"\nchannel = []\n', "c.cfg"), "c.cfg").name == "c"
