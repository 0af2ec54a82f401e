"""The backend daemon: Xen's blkback/netback driver domain part, as one asyncio process.

It watches ``/local/domain/0/backend/vbd`` and ``/local/domain/0/backend/vif``. For each device
the toolstack writes there it opens the target (image or bridge port), serves a vhost-user
socket and moves the backend ``state`` through XenbusState (docs/xl.md 3.2, 3.3): InitWait when
the socket listens, Connected when the guest driver is live, Closing/Closed on detach
(``online=0`` or ``state=5``) or domain death. It publishes Xen's backend keys (sectors, info,
mode, feature-*) and, because the guest's virtio driver does not speak xenbus, writes the
frontend's ``state`` for it.

Before it maps a guest's memory it maps the device's grant in the hypervisor (gnttab), naming
the QEMU process that offered the memory; when the rings start it binds the frontend's event
channels (evtchn). A refused grant drops the connection: a backend maps only the memory of
domains whose devices it serves.

Restart safety: all state is in xenstore; a restarted daemon re-serves every device it finds and
QEMU (``reconnect=1``) comes back to it, so guest I/O stalls and then resumes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

from ..hypervisor.client import XenCtrl
from ..hypervisor.errors import HypercallError
from ..paths import Paths
from ..toolstack.devices import socket_path
from ..xenstore.client import AsyncXenstoreClient
from ..xenstore.errors import NoEntry
from .common.transport import VhostUserServer, VirtioDevice
from .common.xenbus import XenbusState, check_transition, parse_state

log = logging.getLogger(__name__)

KINDS = ("vbd", "vif")
BACKEND_ROOT = "/local/domain/0/backend"
#: How often dead domains are looked for (their devices closed and removed), in seconds.
REAP_INTERVAL = 1.0


def hypercall(paths: Paths, op: str, **args: Any) -> Any:
    with XenCtrl(paths.hypervisor_socket, timeout=30) as xc:
        return xc.call(op, **args)


class DeviceBackend:
    """One device's backend: its xenbus state and keys, its vhost-user server, its grant map."""

    def __init__(self, daemon: "BackendDaemon", kind: str, domid: int, devid: int) -> None:
        self.daemon = daemon
        self.kind = kind
        self.domid = domid
        self.devid = devid
        self.be = f"{BACKEND_ROOT}/{kind}/{domid}/{devid}"
        self.fe = ""
        self.state = XenbusState.UNKNOWN
        self.server: VhostUserServer | None = None
        self.device: VirtioDevice | None = None
        self.grant_handle: int | None = None
        self.ports: list[int] = []
        self._lock = asyncio.Lock()
        self.log = log.getChild(f"{kind}-{domid}-{devid}")

    @property
    def xs(self) -> AsyncXenstoreClient:
        return self.daemon.xs

    async def read(self, key: str, default: str = "") -> str:
        raw = await self.xs.get(f"{self.be}/{key}")
        return raw.decode() if raw is not None else default

    async def set_state(self, new: XenbusState, frontend: XenbusState | None = None) -> None:
        """Move the backend (and the proxied frontend) state, in order, if the nodes still exist."""
        async with self._lock:
            try:
                check_transition(self.state, new)
            except ValueError as err:
                self.log.warning("%s", err)
            if not await self.xs.exists(self.be):
                return
            if frontend is not None and self.fe and await self.xs.exists(self.fe):
                await self.xs.write(f"{self.fe}/state", str(int(frontend)))
            await self.xs.write(f"{self.be}/state", str(int(new)))
            self.state = new
            self.log.info("state %s", new.name)

    async def start(self) -> None:
        """Open the target, publish the keys, listen, go to InitWait."""
        from .block.xenbus import make_block
        from .net.xenbus import make_net
        self.fe = await self.read("frontend")
        self.state = parse_state((await self.read("state", "1")).encode())
        make = make_block if self.kind == "vbd" else make_net
        self.device, keys = await make(self)
        async with self._lock:
            for k, v in keys.items():
                await self.xs.write(f"{self.be}/{k}", v)
        path = socket_path(self.daemon.paths.backends_dir, self.kind, self.domid, self.devid)
        self.server = VhostUserServer(path, self.device, self, self.authorize)
        await self.server.start()
        await self.set_state(XenbusState.INIT_WAIT)

    # ---- grant and event channels -------------------------------------------------------
    async def _call(self, op: str, **args: Any) -> Any:
        return await asyncio.to_thread(hypercall, self.daemon.paths, op, **args)

    async def authorize(self, pid: int) -> bool:
        """Map the frontend's ring grant naming the front-end process; refused -> no memory."""
        ref = await self.xs.get(f"{self.fe}/ring-ref") if self.fe else None
        if ref is None:
            ref = await self.xs.get(f"{self.fe}/tx-ring-ref") if self.fe else None
        if ref is None:
            self.log.error("frontend has no ring-ref: nothing granted")
            return False
        await self._unmap()
        try:
            res = await self._call("grant_table_op.map_grant_ref", dom=self.domid, ref=int(ref),
                                   mapper=0, pid=pid)
        except (HypercallError, OSError) as err:
            self.log.error("grant map refused: %s", err)
            return False
        self.grant_handle = int(res["handle"])
        return True

    async def _unmap(self) -> None:
        if self.grant_handle is not None:
            handle, self.grant_handle = self.grant_handle, None
            with contextlib.suppress(HypercallError, OSError):
                await self._call("grant_table_op.unmap_grant_ref", handle=handle)

    async def _bind(self) -> None:
        keys = ("event-channel",) if self.kind == "vbd" else ("event-channel-rx", "event-channel-tx")
        for key in keys:
            raw = await self.xs.get(f"{self.fe}/{key}")
            if raw is None:
                continue
            try:
                self.ports.append(await self._call("event_channel_op.bind_interdomain", dom=0,
                                                   remote_dom=self.domid, remote_port=int(raw),
                                                   label=f"{self.kind}-{self.domid}-{self.devid}"))
            except (HypercallError, OSError) as err:
                self.log.error("cannot bind event channel %s: %s", raw.decode(), err)

    async def _unbind(self) -> None:
        ports, self.ports = self.ports, []
        for port in ports:
            with contextlib.suppress(HypercallError, OSError):
                await self._call("event_channel_op.close", dom=0, port=port)

    # ---- SessionListener (called from the vhost-user session, synchronously) -------------
    def connected(self) -> None:
        self.daemon.spawn(self._connected())

    def disconnected(self) -> None:
        self.daemon.spawn(self._disconnected())

    async def _connected(self) -> None:
        await self._bind()
        await self.set_state(XenbusState.CONNECTED, XenbusState.CONNECTED)

    async def _disconnected(self) -> None:
        await self._unbind()
        if self.state == XenbusState.CONNECTED:
            await self.set_state(XenbusState.INIT_WAIT, XenbusState.CLOSED)

    async def close(self, remove: bool) -> None:
        """Closing then Closed; with ``remove`` (domain dead) delete the fe/be nodes too."""
        if self.server is not None:
            await self.server.close()
            self.server = None
        await self._unbind()
        await self._unmap()
        close = getattr(self.device, "close", None)
        if close is not None:
            close()
        with contextlib.suppress(NoEntry, ConnectionError):
            if self.state not in (XenbusState.CLOSED,):
                await self.set_state(XenbusState.CLOSING, XenbusState.CLOSING)
                await self.set_state(XenbusState.CLOSED, XenbusState.CLOSED)
            if remove:
                for path in (self.be, self.fe):
                    if path:
                        with contextlib.suppress(NoEntry):
                            await self.xs.rm(path)
                with contextlib.suppress(NoEntry):
                    await self.xs.rm(f"/libxl/{self.domid}/device/{self.kind}/{self.devid}")
                for parent in (f"{BACKEND_ROOT}/{self.kind}/{self.domid}",):
                    with contextlib.suppress(NoEntry):
                        if not await self.xs.directory(parent):
                            await self.xs.rm(parent)
        self.log.info("closed%s", " and removed" if remove else "")


class BackendDaemon:
    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.xs = AsyncXenstoreClient(paths.xenstored_socket)
        self.devices: dict[tuple[str, int, int], DeviceBackend] = {}
        self.failed: set[tuple[str, int, int]] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self._scan_lock = asyncio.Lock()

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task failed", exc_info=task.exception())

    async def _ls(self, path: str) -> list[str]:
        try:
            return await self.xs.directory(path)
        except NoEntry:
            return []

    async def scan(self) -> None:
        """Bring the served set in line with the store: start new devices, close removed or
        closing ones."""
        async with self._scan_lock:
            present: set[tuple[str, int, int]] = set()
            closing: set[tuple[str, int, int]] = set()
            for kind in KINDS:
                for dom_name in await self._ls(f"{BACKEND_ROOT}/{kind}"):
                    for dev_name in await self._ls(f"{BACKEND_ROOT}/{kind}/{dom_name}"):
                        if not (dom_name.isdigit() and dev_name.isdigit()):
                            continue
                        key = (kind, int(dom_name), int(dev_name))
                        be = f"{BACKEND_ROOT}/{kind}/{dom_name}/{dev_name}"
                        online = await self.xs.get(f"{be}/online")
                        state = parse_state(await self.xs.get(f"{be}/state"))
                        if online == b"0" or state in (XenbusState.CLOSING, XenbusState.CLOSED):
                            closing.add(key)
                        elif await self.xs.exists(f"{be}/frontend"):
                            present.add(key)
            for key in list(self.devices):
                if key not in present:
                    await self.devices.pop(key).close(remove=False)
            for key in present - set(self.devices) - self.failed:
                backend = DeviceBackend(self, *key)
                try:
                    await backend.start()
                except (OSError, ValueError) as err:
                    log.error("%s-%d-%d: cannot serve: %s", *key, err)
                    self.failed.add(key)
                    with contextlib.suppress(NoEntry):
                        await self.xs.write(f"{backend.be}/hotplug-error", str(err))
                        await self.xs.write(f"{backend.be}/state", str(int(XenbusState.CLOSED)))
                    continue
                self.devices[key] = backend
            self.failed &= present | closing

    async def reap(self) -> None:
        """Close and remove the devices of domains that no longer exist (domain death)."""
        try:
            doms = await asyncio.to_thread(hypercall, self.paths, "sysctl.getdomaininfolist")
        except (HypercallError, OSError):
            return
        alive = {d["domid"] for d in doms}
        dead: set[int] = set()
        for kind in KINDS:
            for dom_name in await self._ls(f"{BACKEND_ROOT}/{kind}"):
                if dom_name.isdigit() and int(dom_name) not in alive:
                    dead.add(int(dom_name))
        if not dead:
            return
        async with self._scan_lock:
            for key in [k for k in self.devices if k[1] in dead]:
                await self.devices.pop(key).close(remove=True)
            for kind in KINDS:
                for dom in dead:
                    with contextlib.suppress(NoEntry):
                        await self.xs.rm(f"{BACKEND_ROOT}/{kind}/{dom}")
                    with contextlib.suppress(NoEntry):
                        if await self.xs.exists(f"/local/domain/{dom}/device/{kind}"):
                            await self.xs.rm(f"/local/domain/{dom}/device/{kind}")
            log.info("domain(s) %s died: their devices are closed and removed", sorted(dead))

    async def watch_loop(self) -> None:
        for kind in KINDS:
            await self.xs.watch(f"{BACKEND_ROOT}/{kind}", f"backend-{kind}")
        async for _path, _token in self.xs.watch_events():
            # One rescan serves a burst of events: drain what is queued first.
            while await self.xs.wait_event(0.05) is not None:
                pass
            await self.scan()

    async def reap_loop(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            await self.reap()

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One status line: the served devices and their states (``pyxen host status`` probes)."""
        status = [{"kind": k, "domid": d, "devid": i, "state": int(b.state)}
                  for (k, d, i), b in sorted(self.devices.items())]
        writer.write((json.dumps({"devices": status}) + "\n").encode())
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def run(self) -> int:
        self.paths.backends_dir.mkdir(parents=True, exist_ok=True)
        await self.xs.connect()
        await self.reap()
        await self.scan()
        sock = self.paths.backendd_socket
        sock.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(self.control, path=str(sock))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self.spawn(self.watch_loop())
        self.spawn(self.reap_loop())
        log.info("serving; control socket %s", sock)
        async with server:
            await stop.wait()
        # Leave the store as it is: a restarted daemon picks every device up again.
        for task in list(self.tasks):
            task.cancel()
        for dev in self.devices.values():
            if dev.server is not None:
                await dev.server.close()
        await self.xs.close()
        sock.unlink(missing_ok=True)
        return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pyxen-backendd", description="pyxen Dom0 backend daemon")
    ap.add_argument("--root", help="state folder (default $PYXEN_ROOT or /var/lib/pyxen)")
    ap.add_argument("--debug", action="store_true")
    ns = ap.parse_args(argv)
    paths = Paths.from_env(ns.root)
    paths.ensure()
    logging.basicConfig(filename=paths.daemon_log("backendd"),
                        level=logging.DEBUG if ns.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pidfile = paths.pidfile("backendd")
    pidfile.write_text(f"{os.getpid()}\n")
    try:
        return asyncio.run(BackendDaemon(paths).run())
    finally:
        with contextlib.suppress(FileNotFoundError):
            if pidfile.read_text().strip() == str(os.getpid()):
                pidfile.unlink()


__all__ = ["BackendDaemon", "DeviceBackend", "main", "Path"]
