"""The backend daemon's control path against a real xenstored run in-process: the XenbusState
walks it makes in normal life (start, a guest driver going away and back, detach, a daemon
restart that finds a device Connected or half closed, domain death during InitWait), failed
devices, and reaping on ``@releaseDomain`` with a hypervisor that is down or stalls.

Every state write the store commits is recorded from inside xenstored, and each recorded walk is
checked move by move against the table: the daemon must never attempt a bad move.

Stand-ins (no QEMU here): ``StubHypervisor`` answers ``sysctl.getdomaininfolist`` on the
hypervisor's wire format (refusing every other hypercall), and ``LiveFlag`` stands for a
vhost-user session whose rings started (``live``) or stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, AsyncIterator, Iterable

import pytest

from pyxen.backends import daemon as backendd
from pyxen.backends.common.xenbus import XenbusState, XenbusTransitionError, check_transition
from pyxen.paths import Paths
from pyxen.xenstore.client import AsyncXenstoreClient
from pyxen.xenstore.server import XenstoreServer
from pyxen.xenstore.store import lookup, split
from pyxen.xenstore.testing import memory_daemon
from pyxen.xenstore.transaction import Change

S = XenbusState
DOMID = 7
DEVID = 51712
BE = f"/local/domain/0/backend/vbd/{DOMID}/{DEVID}"
FE = f"/local/domain/{DOMID}/device/vbd/{DEVID}"


class StubHypervisor:
    """The hypervisor's control socket, answering only the domain list (as ``domids``)."""

    def __init__(self, path: Path, domids: Iterable[int] = (0,), stall: bool = False) -> None:
        self.path = path
        self.domids = set(domids)
        self.stall = stall
        self.calls: list[str] = []
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> "StubHypervisor":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                req = json.loads(line)
                self.calls.append(req["op"])
                if self.stall:
                    await asyncio.sleep(3600)
                if req["op"] == "sysctl.getdomaininfolist":
                    reply: dict[str, Any] = {"id": req["id"], "result": [
                        {"domid": d, "dying": False} for d in sorted(self.domids)]}
                else:
                    reply = {"id": req["id"], "error": {"errno": "ENOSYS", "message": "stub"}}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


class LiveFlag:
    """Stands for a VhostUserSession: only ``live`` and ``close`` are looked at."""

    def __init__(self, live: bool) -> None:
        self.live = live

    def close(self) -> None:
        self.live = False


class Env:
    """A scratch root with a running in-process xenstored, a client, and the state-write log."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.paths = Paths.from_env(root)
        self.store = memory_daemon()
        self.server = XenstoreServer(self.store, self.paths.xenstored_socket,
                                     self.paths.xenstored_dir / "domains")
        self.client = AsyncXenstoreClient(self.paths.xenstored_socket)
        #: (path, value) of every committed write to a ``state`` node, in commit order.
        self.states: list[tuple[str, int]] = []
        fire = self.store.connections.fire

        def record(changes: Iterable[Change], root: Any) -> None:
            changes = list(changes)
            for ch in changes:
                if ch.path.endswith("/state") and ch.removed is None:
                    node = lookup(root, split(ch.path))
                    if node is not None:
                        self.states.append((ch.path, int(node.value or b"0")))
            fire(changes, root)
        self.store.connections.fire = record  # type: ignore[method-assign]

    def walk(self, path: str) -> list[int]:
        return [v for p, v in self.states if p == path]

    async def device(self, state: int = 1, params: str | None = None, online: str = "1",
                     fe_state: int = 1) -> None:
        img = self.root / "disk.img"
        if params is None:
            img.write_bytes(bytes(1 << 20))
        for k, v in {"frontend": FE, "frontend-id": str(DOMID), "online": online,
                     "state": str(state), "params": params or str(img), "mode": "w",
                     "dev": "xvda", "type": "phy"}.items():
            await self.client.write(f"{BE}/{k}", v)
        for k, v in {"backend": BE, "backend-id": "0", "state": str(fe_state), "ring-ref": "8",
                     "event-channel": "5"}.items():
            await self.client.write(f"{FE}/{k}", v)
        self.states.clear()

    async def state(self, path: str = BE) -> int:
        return int((await self.client.get(f"{path}/state")) or b"0")


def assert_valid_walk(walk: list[int], start: int) -> None:
    state = S(start)
    for value in walk:
        check_transition(state, S(value))
        state = S(value)


async def until(pred: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    root = Path(tempfile.mkdtemp(prefix="pxb-", dir="/tmp"))
    e = Env(root)
    e.paths.ensure()
    await e.server.start()
    await e.client.connect()
    try:
        yield e
    finally:
        await e.client.close()
        if e.server.server is not None:
            e.server.server.close()
        shutil.rmtree(root, ignore_errors=True)


class Running:
    """A BackendDaemon running in this loop until ``stop``."""

    def __init__(self, e: Env) -> None:
        self.daemon = backendd.BackendDaemon(e.paths)
        self.stop_event = asyncio.Event()
        self.task: asyncio.Task[int] | None = None

    async def start(self) -> "Running":
        self.task = asyncio.get_running_loop().create_task(self.daemon.run(self.stop_event))
        return self

    async def stop(self) -> None:
        self.stop_event.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 15)

    def backend(self) -> backendd.DeviceBackend:
        return self.daemon.devices[("vbd", DOMID, DEVID)]

    async def set_live(self, live: bool) -> None:
        b = self.backend()
        assert b.server is not None
        b.server.session = LiveFlag(live)  # type: ignore[assignment]
        (b.connected if live else b.disconnected)()


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backendd, "HYPERCALL_TIMEOUT", 0.5)
    monkeypatch.setattr(backendd, "REAP_RETRY", 0.3)


async def test_start_publishes_and_goes_initwait(env: Env) -> None:
    await StubHypervisor(env.paths.hypervisor_socket, (0, DOMID)).start()
    await env.device()
    d = await Running(env).start()
    await until(lambda: _is(env, BE, 2))
    assert await env.client.read(f"{BE}/sectors") == b"2048"
    assert await env.client.read(f"{BE}/hotplug-status") == b"connected"
    assert env.walk(f"{BE}/state") == [2] and env.walk(f"{FE}/state") == []
    assert (env.paths.backends_dir / f"vbd-{DOMID}-{DEVID}.sock").is_socket()
    await d.stop()


async def test_driver_live_away_and_back(env: Env) -> None:
    """A guest reboot: Connected -> Closing -> Closed -> InitWait, never Connected -> InitWait;
    the frontend (written on the guest's behalf) closes and starts again as blkfront does."""
    await StubHypervisor(env.paths.hypervisor_socket, (0, DOMID)).start()
    await env.device()
    d = await Running(env).start()
    await until(lambda: _is(env, BE, 2))
    await d.set_live(True)
    await until(lambda: _is(env, BE, 4))
    await d.set_live(False)
    await until(lambda: _is(env, BE, 2))
    await d.set_live(True)
    await until(lambda: _is(env, BE, 4))
    assert env.walk(f"{BE}/state") == [2, 4, 5, 6, 2, 4]
    assert env.walk(f"{FE}/state") == [4, 5, 6, 1, 4]
    assert_valid_walk(env.walk(f"{BE}/state"), 1)
    await d.stop()


async def test_quick_away_and_back_ends_connected(env: Env) -> None:
    """Session events are handled in order against the session as it is: a pause and a resume
    queued together end Connected."""
    await StubHypervisor(env.paths.hypervisor_socket, (0, DOMID)).start()
    await env.device()
    d = await Running(env).start()
    await until(lambda: _is(env, BE, 2))
    await d.set_live(True)
    await until(lambda: _is(env, BE, 4))
    b = d.backend()
    b.server.session = LiveFlag(True)  # type: ignore[union-attr,assignment]
    b.disconnected()
    b.connected()
    await asyncio.sleep(0.3)
    assert await env.state() == 4
    assert_valid_walk(env.walk(f"{BE}/state"), 1)
    await d.stop()


async def test_bad_move_is_refused_and_nothing_written(env: Env) -> None:
    await StubHypervisor(env.paths.hypervisor_socket, (0, DOMID)).start()
    await env.device()
    d = await Running(env).start()
    await until(lambda: _is(env, BE, 2))
    await d.set_live(True)
    await until(lambda: _is(env, BE, 4))
    before = list(env.states)
    with pytest.raises(XenbusTransitionError):
        await d.backend().set_state(S.INIT_WAIT)
    with pytest.raises(XenbusTransitionError):
        await d.backend().set_state(S.CLOSED)
    assert env.states == before and await env.state() == 4 and d.backend().state == S.CONNECTED
    await d.stop()


async def test_restart_finding_connected_stays_connected(env: Env) -> None:
    """A restarted daemon re-serves a Connected device without touching its state, and the
    driver going away afterwards walks through Closing and Closed."""
    await StubHypervisor(env.paths.hypervisor_socket, (0, DOMID)).start()
    await env.device(state=4, fe_state=4)
    d = await Running(env).start()
    await until(lambda: _has(d))
    await asyncio.sleep(0.2)
    assert env.states == [] and d.backend().state == S.CONNECTED
    await d.set_live(True)          # QEMU reconnects: still Connected, nothing written
    await asyncio.sleep(0.2)
    assert env.states == []
    await d.set_live(False)
    await until(lambda: _is(env, BE, 2))
    assert env.walk(f"{BE}/state") == [5, 6, 2]
    await d.stop()


async def test_restart_mid_close_walk_finishes_it(env: Env) -> None:
    """Killed between Closing and InitWait (online=1): the next daemon serves it again."""
    await StubHypervisor(env.paths.hypervisor_socket, (0, DOMID)).start()
    await env.device(state=5, fe_state=5)
    d = await Running(env).start()
    await until(lambda: _is(env, BE, 2))
    assert env.walk(f"{BE}/state") == [6, 2]
    await d.stop()


async def test_detach_online0_closes_once(env: Env) -> None:
    await StubHypervisor(env.paths.hypervisor_socket, (0, DOMID)).start()
    await env.device()
    d = await Running(env).start()
    await until(lambda: _is(env, BE, 2))
    await d.set_live(True)
    await until(lambda: _is(env, BE, 4))
    await env.client.write(f"{BE}/online", "0")
    # The frontend holds it: Closing, and the device stays served until the frontend lets go
    # (blkback waits for blkfront's Closed, which the toolstack writes once the device model
    # has unplugged the device); rings stopping (a paused guest) is not letting go.
    await until(lambda: _is(env, BE, 5))
    await d.set_live(False)
    await asyncio.sleep(0.3)
    assert env.walk(f"{BE}/state") == [2, 4, 5]
    assert ("vbd", DOMID, DEVID) in d.daemon.devices
    await env.client.write(f"{FE}/state", "6")
    await env.client.write(f"{BE}/online", "0")
    await until(lambda: _is(env, BE, 6))
    assert env.walk(f"{BE}/state") == [2, 4, 5, 6]
    assert ("vbd", DOMID, DEVID) not in d.daemon.devices
    assert not (env.paths.backends_dir / f"vbd-{DOMID}-{DEVID}.sock").exists()
    # More events for the device do not close it again.
    await env.client.write(f"{BE}/online", "0")
    await asyncio.sleep(0.3)
    assert env.walk(f"{BE}/state") == [2, 4, 5, 6]
    await d.stop()


async def test_closing_a_closed_device_writes_nothing(env: Env) -> None:
    await StubHypervisor(env.paths.hypervisor_socket, (0, DOMID)).start()
    await env.device()
    d = await Running(env).start()
    await until(lambda: _is(env, BE, 2))
    b = d.backend()
    await b.close(remove=False)
    assert env.walk(f"{BE}/state") == [2, 5, 6]
    await b.close(remove=False)
    assert env.walk(f"{BE}/state") == [2, 5, 6]
    await d.stop()


async def test_domain_death_during_initwait(env: Env) -> None:
    """@releaseDomain: the daemon asks the hypervisor, and the dead domain's device walks
    InitWait -> Closing -> Closed and its nodes are removed."""
    hv = await StubHypervisor(env.paths.hypervisor_socket, (0, DOMID)).start()
    await env.device()
    d = await Running(env).start()
    await until(lambda: _is(env, BE, 2))
    hv.domids.discard(DOMID)
    await env.client.introduce(DOMID)
    await env.client.release(DOMID)   # fires @releaseDomain
    await until(lambda: _gone(env, BE))
    assert env.walk(f"{BE}/state") == [2, 5, 6]
    assert not await env.client.exists(FE)
    assert not d.daemon.devices
    await d.stop()


async def test_hypervisor_down_is_asked_again(env: Env) -> None:
    """A death announced while the hypervisor is down is acted on once it answers, without
    another event."""
    hv = StubHypervisor(env.paths.hypervisor_socket, (0,))
    await env.device()
    d = await Running(env).start()
    await until(lambda: _is(env, BE, 2))
    await env.client.introduce(DOMID)
    await env.client.release(DOMID)
    await asyncio.sleep(0.5)
    assert await env.client.exists(BE)       # nobody to ask: nothing removed
    await hv.start()
    await until(lambda: _gone(env, BE))
    assert env.walk(f"{BE}/state") == [2, 5, 6]
    await d.stop()
    await hv.stop()


async def test_stalled_hypervisor_times_out(env: Env) -> None:
    """A hypervisor that never answers costs one HYPERCALL_TIMEOUT and is not fatal."""
    hv = await StubHypervisor(env.paths.hypervisor_socket, (0,), stall=True).start()
    await env.device()
    d = await Running(env).start()
    await until(lambda: _is(env, BE, 2))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await d.daemon.reap() is False
    assert loop.time() - t0 < 3.0
    assert await env.client.exists(BE) and await env.state() == 2
    hv.stall = False
    await d.stop()


async def test_failed_device_reports_hotplug_error(env: Env) -> None:
    await StubHypervisor(env.paths.hypervisor_socket, (0, DOMID)).start()
    await env.device(params="/nonexistent/disk.img")
    d = await Running(env).start()
    await until(lambda: _is(env, BE, 6))
    err = (await env.client.read(f"{BE}/hotplug-error")).decode()
    assert err == "cannot open /nonexistent/disk.img: No such file or directory"
    assert await env.client.read(f"{BE}/hotplug-status") == b"error"
    assert env.walk(f"{BE}/state") == [6]
    assert not d.daemon.devices
    await d.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="bridges and TAPs need root")
async def test_missing_bridge_fails_the_vif_and_makes_nothing(env: Env) -> None:
    """vif-bridge's check: a bridge that does not exist is not created (only xenbr0 is)."""
    await StubHypervisor(env.paths.hypervisor_socket, (0, DOMID)).start()
    bridge, devid = "pxnobr9", 0
    be = f"/local/domain/0/backend/vif/{DOMID}/{devid}"
    tap = f"pxtap{os.getpid() % 10000}"
    for k, v in {"frontend": f"/local/domain/{DOMID}/device/vif/{devid}", "online": "1",
                 "state": "1", "bridge": bridge, "vifname": tap}.items():
        await env.client.write(f"{be}/{k}", v)
    d = await Running(env).start()
    await until(lambda: _is(env, be, 6))
    assert await env.client.read(f"{be}/hotplug-error") == f"Could not find bridge device {bridge}".encode()
    assert await env.client.read(f"{be}/hotplug-status") == b"error"
    assert not Path(f"/sys/class/net/{bridge}").exists()
    assert not Path(f"/sys/class/net/{tap}").exists()
    await d.stop()


def test_imports_run_one_way() -> None:
    """The device types' xenbus sides do not import the daemon, and the backends do not import
    the toolstack."""
    code = ("import sys, pyxen.backends.block.xenbus, pyxen.backends.net.xenbus;"
            "assert 'pyxen.backends.daemon' not in sys.modules, 'xenbus imports daemon';"
            "import pyxen.backends.daemon;"
            "bad = sorted(m for m in sys.modules if m.startswith('pyxen.toolstack'));"
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr


async def _is(env: Env, be: str, state: int) -> bool:
    return await env.client.get(f"{be}/state") == str(state).encode()


async def _gone(env: Env, path: str) -> bool:
    return not await env.client.exists(path)


async def _has(d: Running) -> bool:
    return ("vbd", DOMID, DEVID) in d.daemon.devices


async def test_xenstored_restart_is_survived(monkeypatch: pytest.MonkeyPatch) -> None:
    """xenstored killed with -9 and started again (its journal keeps the store): the daemon
    connects again, watches again, and acts on what the store says afterwards."""
    from pyxen.xenstore.testing import DaemonProcess
    root = Path(tempfile.mkdtemp(prefix="pxr-", dir="/tmp"))
    xsd = DaemonProcess(root)
    paths = Paths.from_env(root)
    paths.ensure()
    await asyncio.to_thread(xsd.start)
    hv = await StubHypervisor(paths.hypervisor_socket, (0, DOMID)).start()
    client = AsyncXenstoreClient(paths.xenstored_socket)
    d = backendd.BackendDaemon(paths)
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(d.run(stop))
    try:
        await client.connect()
        img = root / "disk.img"
        img.write_bytes(bytes(1 << 20))
        for k, v in {"frontend": FE, "online": "1", "state": "1", "params": str(img)}.items():
            await client.write(f"{BE}/{k}", v)
        await until(lambda: _state_is(client, BE, b"2"))
        await client.close()
        await asyncio.to_thread(xsd.kill)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(xsd.start)
        client = AsyncXenstoreClient(paths.xenstored_socket)
        await client.connect()
        assert await client.get(f"{BE}/state") == b"2"
        await client.write(f"{BE}/online", "0")   # seen only through a watch made again
        await until(lambda: _state_is(client, BE, b"6"), timeout=10)
        assert not d.devices
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await client.close()
        await hv.stop()
        if xsd.alive():
            await asyncio.to_thread(xsd.stop)
        shutil.rmtree(root, ignore_errors=True)


async def _state_is(client: AsyncXenstoreClient, be: str, value: bytes) -> bool:
    return await client.get(f"{be}/state") == value


async def test_restart_after_a_death_removes_without_serving(env: Env) -> None:
    """A domain that died while no daemon ran: its devices are removed at start, never served
    again (no TAP or socket made for a dead domain)."""
    await StubHypervisor(env.paths.hypervisor_socket, (0,)).start()
    await env.device(state=4, fe_state=4)
    d = await Running(env).start()
    await until(lambda: _gone(env, BE))
    assert env.states == []
    assert not (env.paths.backends_dir / f"vbd-{DOMID}-{DEVID}.sock").exists()
    assert not d.daemon.devices
    await d.stop()


async def test_session_event_racing_close_does_not_reopen(env: Env) -> None:
    """A driver-live event still being handled when the device is closed does not walk the
    closed device back to InitWait or Connected."""
    await StubHypervisor(env.paths.hypervisor_socket, (0, DOMID)).start()
    await env.device()
    d = await Running(env).start()
    await until(lambda: _is(env, BE, 2))
    b = d.backend()
    b.server.session = LiveFlag(True)  # type: ignore[union-attr,assignment]
    b.connected()
    await asyncio.sleep(0)   # the event's task has started (it binds event channels first)
    await b.close(remove=False)
    await asyncio.sleep(0.5)
    assert await env.state() == 6
    walk = env.walk(f"{BE}/state")
    assert walk[-1] == 6 and walk.count(6) == 1, walk
    assert_valid_walk(walk, 1)
    await d.stop()


@pytest.mark.parametrize("keys,message", [
    ({"vifname": "../../etc"}, "invalid vif name '../../etc'"),
    ({"vifname": "a-name-longer-than-15"}, "invalid vif name 'a-name-longer-than-15'"),
    ({"mtu": "９０００"}, "invalid mtu '９０００'"),
])
async def test_bad_vif_keys_fail_with_one_line(env: Env, keys: dict[str, str], message: str) -> None:
    await StubHypervisor(env.paths.hypervisor_socket, (0, DOMID)).start()
    be = f"/local/domain/0/backend/vif/{DOMID}/0"
    for k, v in {"frontend": f"/local/domain/{DOMID}/device/vif/0", "online": "1", "state": "1",
                 **keys}.items():
        await env.client.write(f"{be}/{k}", v)
    d = await Running(env).start()
    await until(lambda: _is(env, be, 6))
    assert (await env.client.read(f"{be}/hotplug-error")).decode() == message
    assert not list(env.paths.backends_dir.glob("tap-*"))
    await d.stop()


async def test_detached_while_down_is_closed_at_start(env: Env) -> None:
    """online=0 written while no daemon ran, the device still Connected: the next daemon walks it
    to Closed without serving it."""
    await StubHypervisor(env.paths.hypervisor_socket, (0, DOMID)).start()
    await env.device(state=4, fe_state=4, online="0")
    d = await Running(env).start()
    await until(lambda: _is(env, BE, 6))
    assert env.walk(f"{BE}/state") == [5, 6] and env.walk(f"{FE}/state") == [5, 6]
    assert not d.daemon.devices
    assert not (env.paths.backends_dir / f"vbd-{DOMID}-{DEVID}.sock").exists()
    await asyncio.sleep(0.3)
    assert env.walk(f"{BE}/state") == [5, 6]   # its own writes do not start it again
    await d.stop()
