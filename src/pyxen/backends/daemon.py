"""The backend daemon: Xen's blkback/netback driver domain part, as one asyncio process.

It watches ``/local/domain/0/backend/vbd`` and ``/local/domain/0/backend/vif``. For each device
the toolstack writes there it opens the target (image or bridge port), serves a vhost-user
socket and moves the backend ``state`` through XenbusState (docs/xl.md 3.2, 3.3): InitWait when
the socket listens, Connected when the guest driver is live, Closing -> Closed -> InitWait when
the driver goes away while the device stays, Closing -> Closed on detach (``online=0``) or domain
death. Every move is one of common/xenbus.py's table; the daemon names the state it wants and
walks there. It publishes Xen's backend keys (sectors, info, mode, feature-*) and, because the
guest's virtio driver does not speak xenbus, writes the frontend's ``state`` for it.

Domain death: as Xen's backends learn it from xenstored, the daemon watches ``@releaseDomain``;
on each event (and at start, to catch deaths while it was down) it asks the hypervisor for the
domain list and closes and removes the devices of domains that are gone. Each hypercall has a
short timeout; a hypervisor that does not answer (being restarted) is asked again on the next
event and every ``REAP_RETRY`` seconds until it does.

Before it maps a guest's memory it maps the device's grant in the hypervisor (gnttab), naming
the QEMU process that offered the memory; when the rings start it binds the frontend's event
channels (evtchn). A refused grant drops the connection: a backend maps only the memory of
domains whose devices it serves.

Restart safety: all state is in xenstore, and a vif's TAP is persistent; a restarted daemon
re-serves every device it finds (a Connected one stays Connected), attaches to the same TAPs, and
QEMU (``reconnect=1``) comes back to it, so guest I/O and network stall and then resume. A lost
xenstored connection (xenstored restarted) is made again and the store scanned anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from pathlib import Path
from typing import Any, Awaitable, Callable

from ..hypervisor.client import XenCtrl
from ..hypervisor.errors import HypercallError
from ..daemon import arguments, daemon_process
from ..paths import Paths
from ..xenstore.client import AsyncClientTransaction, AsyncXenstoreClient
from ..xenstore.errors import NoEntry, XenstoreError
from .block.device import BlockDevice
from .block.xenbus import make_block, script_done
from .common.transport import VhostUserServer
from .common.xenbus import FRONTEND_FOLLOWS, XenbusState, check_transition, parse_state, path_to
from .net.device import NetDevice, remove_tap
from .net.xenbus import make_net, read_rate, tap_name

log = logging.getLogger(__name__)

Device = BlockDevice | NetDevice
#: Each device type's xenbus side: reads the backend keys, opens what they name, returns the
#: device and the keys to publish. :raise OSError: with the one-line message for hotplug-error.
MAKERS: dict[str, Callable[["DeviceBackend"], Awaitable[tuple[Device, dict[str, str]]]]] = {
    "vbd": make_block, "vif": make_net}
KINDS = tuple(MAKERS)
BACKEND_ROOT = "/local/domain/0/backend"
#: How long one hypercall may take before it counts as failed (seconds).
HYPERCALL_TIMEOUT = 5.0
#: While the hypervisor does not answer, how often the domain list is asked for again (seconds).
REAP_RETRY = 5.0
#: How long to wait before connecting to xenstored again after losing it (seconds).
XENSTORE_RETRY = 0.5
#: How long the final pass at shutdown may take (seconds): well within `pyxen host stop`'s 10 s.
SHUTDOWN_TIMEOUT = 5.0
#: The watch tokens: backend directories (rescan) and domain death (reap).
RELEASE_TOKEN = "release-domain"


def hypercall(paths: Paths, op: str, **args: Any) -> Any:
    """One hypercall, with HYPERCALL_TIMEOUT. :raise HypercallError, OSError:"""
    with XenCtrl(paths.hypervisor_socket, timeout=HYPERCALL_TIMEOUT) as xc:
        return xc.call(op, **args)


def hotplug_message(err: BaseException) -> str:
    """The one line a failed device shows in ``hotplug-error`` (no ``[Errno N]`` prefix)."""
    if isinstance(err, OSError) and err.strerror:
        return str(err.strerror)
    return str(err)


class DeviceBackend:
    """One device's backend: its xenbus state and keys, its vhost-user server, its grant map."""

    def __init__(self, daemon: "BackendDaemon", kind: str, domid: int, devid: int) -> None:
        self.daemon = daemon
        self.kind = kind
        self.domid = domid
        self.devid = devid
        self.be = f"{BACKEND_ROOT}/{kind}/{domid}/{devid}"
        self.fe = ""
        #: The backend state last written (or found at start), and the frontend's.
        self.state = XenbusState.UNKNOWN
        self.fe_state = XenbusState.UNKNOWN
        self.server: VhostUserServer | None = None
        self.device: Device | None = None
        self.grant_handle: int | None = None
        self.ports: list[int] = []
        self.closing = False
        #: The toolstack took the device offline (``online=0``, detach) while the guest's
        #: driver was live: it stays served until the driver lets go (the frontend's chance to
        #: release it), then closes.
        self.offline = False
        #: Serialises state walks; ``_events`` serialises the session's events (outer lock).
        self._lock = asyncio.Lock()
        self._events = asyncio.Lock()
        self.log = log.getChild(f"{kind}-{domid}-{devid}")

    @property
    def xs(self) -> AsyncXenstoreClient:
        return self.daemon.xs

    async def read(self, key: str, default: str = "") -> str:
        raw = await self.xs.get(f"{self.be}/{key}")
        return raw.decode(errors="replace") if raw is not None else default

    # ---- xenbus state -------------------------------------------------------------------
    async def set_state(self, new: XenbusState) -> bool:
        """One move of the backend state (and the proxied frontend's, which follows it), in one
        transaction, and only while the backend directory exists (a removed device is not
        written back into the store). Returns False if the nodes are gone.

        :raise XenbusTransitionError: the move is not in BACKEND_TRANSITIONS; nothing written.
        """
        check_transition(self.state, new)
        if new == self.state:
            return True
        fe_new = FRONTEND_FOLLOWS.get(new, XenbusState.INITIALISING if new == XenbusState.INIT_WAIT
                                      else None)

        async def write(t: AsyncClientTransaction) -> bool:
            if await t.get(self.be) is None:
                return False
            if fe_new is not None and fe_new != self.fe_state and self.fe \
                    and await t.get(self.fe) is not None:
                await t.write(f"{self.fe}/state", str(int(fe_new)))
            await t.write(f"{self.be}/state", str(int(new)))
            return True

        if not await self.xs.transact(write):
            return False
        if fe_new is not None:
            self.fe_state = fe_new
        self.state = new
        self.log.info("state %s", new.name)
        return True

    async def move_to(self, target: XenbusState) -> None:
        """Walk to ``target`` through allowed moves only (the shortest walk); stops early if
        the device's nodes are gone."""
        async with self._lock:
            if self.closing and target != XenbusState.CLOSED:
                return  # a session event that lost the race with close()
            for step in path_to(self.state, target):
                if not await self.set_state(step):
                    return

    # ---- life cycle ---------------------------------------------------------------------
    async def load(self) -> None:
        """Read the device's frontend path and both states as the store has them."""
        self.fe = await self.read("frontend")
        self.state = parse_state((await self.read("state", "1")).encode())
        self.fe_state = parse_state(await self.xs.get(f"{self.fe}/state") if self.fe else None)

    async def start(self) -> None:
        """Open the target, publish the keys, listen, go to InitWait (a device a previous
        daemon left Connected stays Connected: its frontend is live and QEMU comes back).

        :raise OSError: the target cannot be served (its message is the hotplug-error).
        """
        await self.load()
        # The marker goes first: a daemon killed just after making the TAP leaves it recorded.
        marker = self.daemon.tap_marker(await tap_name(self)) if self.kind == "vif" else None
        if marker is not None:
            marker.touch()
        try:
            self.device, keys = await MAKERS[self.kind](self)
        except BaseException:
            if marker is not None:
                marker.unlink(missing_ok=True)
            raise
        try:
            async def publish(t: AsyncClientTransaction) -> None:
                if await t.get(self.be) is None:
                    raise NoEntry(f"{self.be} is gone")
                for k, v in keys.items():
                    await t.write(f"{self.be}/{k}", v)
            await self.xs.transact(publish)
            path = self.daemon.paths.device_socket(self.kind, self.domid, self.devid)
            self.server = VhostUserServer(path, self.device, self, self.authorize)
            await self.server.start()
        except BaseException:
            await self._release(remove=True)
            raise
        if self.state == XenbusState.CONNECTED:
            self.log.info("serving again, Connected")
        else:
            await self.move_to(XenbusState.INIT_WAIT)

    async def fail(self, err: BaseException) -> None:
        """The device cannot be served: say why as Xen's hotplug scripts do (``hotplug-error``,
        ``hotplug-status=error``: the toolstack fails the create with that message) and walk
        to Closed."""
        message = hotplug_message(err)
        self.log.error("cannot serve: %s", message)

        async def write(t: AsyncClientTransaction) -> None:
            if await t.get(self.be) is not None:
                await t.write(f"{self.be}/hotplug-error", message)
                await t.write(f"{self.be}/hotplug-status", "error")
        with contextlib.suppress(XenstoreError, ConnectionError):
            await self.xs.transact(write)
            await self.move_to(XenbusState.CLOSED)

    async def _release(self, remove: bool) -> None:
        """Stop serving; with ``remove`` the device is gone, so delete what it made on the host
        (a vif's TAP), else (the daemon stops) leave that for the next daemon."""
        if self.server is not None:
            await self.server.close()
            self.server = None
        if self.device is not None:
            device, self.device = self.device, None
            if remove:
                device.remove()
                if isinstance(device, NetDevice):
                    self.daemon.tap_marker(device.ifname).unlink(missing_ok=True)
            else:
                device.close()

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
            try:
                await self._call("grant_table_op.unmap_grant_ref", handle=handle)
            except (HypercallError, OSError) as err:
                self.log.warning("cannot unmap grant handle %d: %s", handle, err)

    async def _bind(self) -> None:
        keys = ("event-channel",) if self.kind == "vbd" else ("event-channel-rx", "event-channel-tx")
        for key in keys:
            raw = await self.xs.get(f"{self.fe}/{key}")
            if raw is None:
                continue
            try:
                remote = int(raw)
                self.ports.append(await self._call("event_channel_op.bind_interdomain", dom=0,
                                                   remote_dom=self.domid, remote_port=remote,
                                                   label=f"{self.kind}-{self.domid}-{self.devid}"))
            except (HypercallError, OSError, ValueError) as err:
                port = await self._bound_port(remote) if isinstance(err, HypercallError) else None
                if port is not None:
                    self.ports.append(port)
                else:
                    self.log.error("cannot bind event channel %s: %s", raw.decode(errors="replace"), err)

    async def _bound_port(self, remote: int) -> int | None:
        """Dom0's port already bound to the frontend's ``remote`` port: a previous daemon (killed)
        bound it, and its successor takes it over instead of leaking it."""
        try:
            st = await self._call("event_channel_op.status", dom=self.domid, port=remote)
        except (HypercallError, OSError):
            return None
        if st.get("status") == "interdomain" and st.get("remote_dom") == 0 and st.get("remote_port"):
            self.log.info("event channel %d: taking over Dom0's port %d", remote, st["remote_port"])
            return int(st["remote_port"])
        return None

    async def _unbind(self) -> None:
        ports, self.ports = self.ports, []
        for port in ports:
            try:
                await self._call("event_channel_op.close", dom=0, port=port)
            except (HypercallError, OSError) as err:
                self.log.warning("cannot close event channel %d: %s", port, err)

    # ---- SessionListener (called from the vhost-user session, synchronously) -------------
    def connected(self) -> None:
        self.daemon.spawn(self._sync())

    def disconnected(self) -> None:
        self.daemon.spawn(self._sync())

    @property
    def live(self) -> bool:
        """The guest's driver is live: a vhost-user session has a started ring."""
        session = self.server.session if self.server is not None else None
        return session is not None and session.live

    async def _sync(self) -> None:
        """Bring the xenbus state in line with the session: Connected while the driver is live,
        InitWait (through Closing and Closed) once it went away. Events are handled in order
        and each looks at the session as it is now, so a quick away-and-back ends right."""
        async with self._events:
            if self.closing:
                return
            if self.offline:
                # Being detached: the walk is Closing -> Closed now, whatever the session does
                # (a paused guest's rings stop without its driver letting go of the disk).
                return
            if self.live:
                if not self.ports:
                    await self._bind()
                await self.move_to(XenbusState.CONNECTED)
            elif self.state != XenbusState.INIT_WAIT:
                await self._unbind()
                await self.move_to(XenbusState.INIT_WAIT)

    async def frontend_holds(self) -> bool:
        """The frontend still has the device: its directory is there and not Closed. (The
        guest's virtio driver does not speak xenbus: the toolstack writes Closed for it once
        the device model has unplugged the device from the guest.)"""
        if not self.fe:
            return False
        raw = await self.xs.get(f"{self.fe}/state")
        return raw is not None and parse_state(raw) != XenbusState.CLOSED

    async def go_offline(self) -> None:
        """``online=0`` while the frontend holds the device: Closing, and keep serving until it
        lets go (the guest releases the disk, its last writes reaching the backend), as blkback
        waits for blkfront's Closed."""
        if not self.offline:
            self.offline = True
            self.log.info("offline: waiting for the frontend to release the device")
        await self.move_to(XenbusState.CLOSING)

    async def close(self, remove: bool) -> None:
        """Closing then Closed (the device was detached or its domain died) and remove what it
        made on the host; with ``remove`` (domain dead) delete the fe/be nodes too."""
        self.closing = True
        async with self._events:  # let a session event in progress finish first
            await self._release(remove=True)
            await self._unbind()
            await self._unmap()
        with contextlib.suppress(NoEntry, ConnectionError):
            await self.move_to(XenbusState.CLOSED)
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
        self._reap_wanted = asyncio.Event()
        self._swept = False

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task failed", exc_info=task.exception())

    def tap_marker(self, ifname: str) -> Path:
        """The file that records a persistent TAP this host made (TAP names are host-global;
        the markers tell ours apart when a restarted daemon sweeps what it no longer serves)."""
        return self.paths.backends_dir / f"tap-{ifname}"

    async def _ls(self, path: str) -> list[str]:
        try:
            return await self.xs.directory(path)
        except NoEntry:
            return []

    async def _backend_domids(self) -> set[int]:
        doms: set[int] = set()
        for kind in KINDS:
            doms |= {int(d) for d in await self._ls(f"{BACKEND_ROOT}/{kind}") if d.isascii() and d.isdigit()}
        return doms

    # ---- the store's devices -> served devices --------------------------------------------
    async def scan(self) -> None:
        """Bring the served set in line with the store: start new devices, close removed ones
        and those the toolstack takes offline (``online=0``, as libxl's device removal does)."""
        async with self._scan_lock:
            present: set[tuple[str, int, int]] = set()
            offline: set[tuple[str, int, int]] = set()
            for kind in KINDS:
                for dom_name in await self._ls(f"{BACKEND_ROOT}/{kind}"):
                    for dev_name in await self._ls(f"{BACKEND_ROOT}/{kind}/{dom_name}"):
                        if not (dom_name.isascii() and dom_name.isdigit()
                                and dev_name.isascii() and dev_name.isdigit()):
                            continue
                        key = (kind, int(dom_name), int(dev_name))
                        be = f"{BACKEND_ROOT}/{kind}/{dom_name}/{dev_name}"
                        if kind == "vif" and await self.xs.get(f"{be}/type") == b"vif_ioemu":
                            continue  # an emulated NIC: QEMU is its backend, not netback
                        if await self.xs.get(f"{be}/online") == b"0":
                            offline.add(key)
                            continue
                        if key not in self.devices and await self.xs.get(f"{be}/hotplug-status") == b"error":
                            self.failed.add(key)  # failed before (maybe by a previous daemon)
                        if await self.xs.exists(f"{be}/frontend"):
                            present.add(key)
                            served = self.devices.get(key)
                            if served is not None and isinstance(served.device, NetDevice):
                                # netback's xen_net_rate_changed: a new rate applies at once.
                                served.device.set_rate(read_rate(await served.read("rate")))
            for key in list(self.devices):
                if key not in present:
                    served = self.devices[key]
                    if key in offline and await served.frontend_holds():
                        await served.go_offline()
                        continue
                    # Removed, or detached and the frontend let go (Closed) or is gone
                    # (libxl's forced remove deletes it first): close now.
                    await self.devices.pop(key).close(remove=False)
            for key in sorted(offline - set(self.devices)):
                await self._close_unserved(key)
            for key in sorted(present - set(self.devices) - self.failed):
                backend = DeviceBackend(self, *key)
                if key[0] == "vbd" and not await script_done(backend):
                    # A user hotplug script runs once the backend is in InitWait and says
                    # where the disk is; the next scan (its writes fire the watch) serves it.
                    await backend.load()
                    await backend.move_to(XenbusState.INIT_WAIT)
                    continue
                try:
                    await backend.start()
                except (OSError, ValueError, XenstoreError) as err:
                    self.failed.add(key)
                    await backend.fail(err)
                    continue
                self.devices[key] = backend
            self.failed &= present
            if not self._swept:
                self._swept = True
                await self._sweep_taps()

    async def _close_unserved(self, key: tuple[str, int, int]) -> None:
        """A device the toolstack took offline while no daemon served it (this one was down):
        walk it to Closed all the same, as the toolstack waits for that."""
        backend = DeviceBackend(self, *key)
        await backend.load()
        if backend.state not in (XenbusState.CLOSED, XenbusState.UNKNOWN):
            backend.closing = True
            await backend.move_to(XenbusState.CLOSED)

    async def _sweep_taps(self) -> None:
        """Remove the persistent TAPs a previous daemon made for vifs that are no longer
        served (their domain was destroyed while no daemon ran)."""
        served = {b.device.ifname for b in self.devices.values() if isinstance(b.device, NetDevice)}
        for marker in self.paths.backends_dir.glob("tap-*"):
            ifname = marker.name[len("tap-"):]
            if ifname not in served:
                await asyncio.to_thread(remove_tap, ifname)
                marker.unlink(missing_ok=True)
                log.info("removed TAP %s left by a previous daemon", ifname)

    # ---- domain death -------------------------------------------------------------------
    async def reap(self) -> bool:
        """Close and remove the devices of domains that are gone (not in the hypervisor's list,
        or dying). Returns False if the hypervisor did not answer (then nothing is changed)."""
        # The store first, then the hypervisor: a domain whose nodes are already written is in
        # the list unless it died, so a create racing this pass is never taken for a death.
        have = await self._backend_domids()
        have |= {d for _, d, _ in self.devices}
        if not have:
            return True
        try:
            doms = await asyncio.to_thread(hypercall, self.paths, "sysctl.getdomaininfolist")
        except (HypercallError, OSError) as err:
            log.warning("cannot get the domain list (will ask again): %s", err)
            return False
        alive = {int(d["domid"]) for d in doms if not d.get("dying")}
        dead = have - alive
        if not dead:
            return True
        async with self._scan_lock:
            for key in sorted(k for k in self.devices if k[1] in dead):
                await self.devices.pop(key).close(remove=True)
            for kind in KINDS:
                for dom in sorted(dead):
                    with contextlib.suppress(NoEntry):
                        await self.xs.rm(f"{BACKEND_ROOT}/{kind}/{dom}")
                    with contextlib.suppress(NoEntry):
                        if await self.xs.exists(f"/local/domain/{dom}/device/{kind}"):
                            await self.xs.rm(f"/local/domain/{dom}/device/{kind}")
            self.failed = {k for k in self.failed if k[1] not in dead}
        log.info("domain(s) %s gone: their devices are closed and removed", sorted(dead))
        return True

    async def reap_loop(self) -> None:
        """Reap on each ``@releaseDomain``; while the hypervisor does not answer, again every
        REAP_RETRY seconds, so no death is missed."""
        retry: float | None = None
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._reap_wanted.wait(), retry)
            self._reap_wanted.clear()
            try:
                ok = await self.reap()
            except (XenstoreError, ConnectionError) as err:
                log.warning("reaping stopped by xenstored: %s", err)
                ok = False
            retry = None if ok else REAP_RETRY

    # ---- xenstored ----------------------------------------------------------------------
    async def _connect(self) -> None:
        """Connect to xenstored, waiting for it if it is down (being restarted)."""
        while True:
            self.xs = AsyncXenstoreClient(self.paths.xenstored_socket)
            try:
                await self.xs.connect()
                return
            except OSError as err:
                log.debug("xenstored not reachable: %s", err)
                await asyncio.sleep(XENSTORE_RETRY)

    async def watch_loop(self) -> None:
        """Watch the backend directories and ``@releaseDomain``; a lost xenstored connection
        is made again (and the store scanned anew, since events were missed meanwhile)."""
        first = True
        while True:
            try:
                if not first:
                    await self._connect()
                    log.info("connected to xenstored again")
                first = False
                for kind in KINDS:
                    await self.xs.watch(f"{BACKEND_ROOT}/{kind}", f"backend-{kind}")
                await self.xs.watch("@releaseDomain", RELEASE_TOKEN)
                # Deaths first (also those while this daemon or xenstored was down), so a dead
                # domain's devices are not served again; if the hypervisor does not answer,
                # the reaper asks again.
                if not await self.reap():
                    self._reap_wanted.set()
                await self.scan()
                while True:
                    _path, token = await self._next_event()
                    rescan = token != RELEASE_TOKEN
                    # One pass serves a burst of events: drain what is queued first.
                    while (ev := await self.xs.wait_event(0.05)) is not None:
                        rescan |= ev[1] != RELEASE_TOKEN
                        if ev[1] == RELEASE_TOKEN:
                            self._reap_wanted.set()
                    if token == RELEASE_TOKEN:
                        self._reap_wanted.set()
                    if rescan:
                        await self.scan()
            except (ConnectionError, OSError) as err:
                log.warning("lost xenstored (%s): connecting again", err)
                with contextlib.suppress(Exception):
                    await self.xs.close()
                await asyncio.sleep(XENSTORE_RETRY)

    async def _next_event(self) -> tuple[str, str]:
        ev = await self.xs.wait_event()
        if ev is None:
            raise ConnectionResetError("xenstored closed the connection")
        return ev[0], ev[1]

    # ---- control ------------------------------------------------------------------------
    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One status line: the served devices and their states (``pyxen host status`` probes)."""
        status = [{"kind": k, "domid": d, "devid": i, "state": int(b.state)}
                  for (k, d, i), b in sorted(self.devices.items())]
        writer.write((json.dumps({"devices": status}) + "\n").encode())
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def run(self, stop: asyncio.Event | None = None) -> int:
        """Serve until SIGTERM/SIGINT (or ``stop`` is set)."""
        self.paths.backends_dir.mkdir(parents=True, exist_ok=True)
        await self._connect()
        sock = self.paths.backendd_socket
        sock.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(self.control, path=str(sock))
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(RuntimeError, ValueError):  # not the main thread (tests)
                loop.add_signal_handler(sig, stop.set)
        self.spawn(self.watch_loop())
        self.spawn(self.reap_loop())
        log.info("serving; control socket %s", sock)
        async with server:
            await stop.wait()
        for task in list(self.tasks):
            task.cancel()
        # A device removed just before the stop (``pyxen host stop`` destroys the guests and
        # then stops this daemon) is still taken down, so its TAP does not outlive it.
        with contextlib.suppress(asyncio.TimeoutError, XenstoreError, OSError):
            await asyncio.wait_for(self._final_pass(), SHUTDOWN_TIMEOUT)
        # Leave the store and the TAPs as they are: a restarted daemon picks every device up again.
        for dev in self.devices.values():
            await dev._release(remove=False)
        await self.xs.close()
        sock.unlink(missing_ok=True)
        return 0

    async def _final_pass(self) -> None:
        await self.reap()
        await self.scan()


def main(argv: list[str] | None = None) -> int:
    ap = arguments("pyxen-backendd", "pyxen Dom0 backend daemon")
    ap.add_argument("--debug", action="store_true")
    ns = ap.parse_args(argv)
    paths = Paths.from_env(ns.root)
    with daemon_process(paths, "backendd", logging.DEBUG if ns.debug else logging.INFO):
        return asyncio.run(BackendDaemon(paths).run())


__all__ = ["BackendDaemon", "DeviceBackend", "main"]
