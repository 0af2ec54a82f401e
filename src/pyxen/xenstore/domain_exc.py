"""VIRQ_DOM_EXC in xenstored: how the store learns that a domain shut down or died.

Xen's xenstored binds VIRQ_DOM_EXC; on each one it looks at every introduced domain
(``domain_cleanup`` in tools/xenstore/xenstored_domain.c): a domain newly shut down (or
crashed) fires ``@releaseDomain`` once; a domain that is dying or gone is released (its
connection closed, its record dropped) and ``@releaseDomain`` fires. The toolstack's monitor
and the backends watch ``@releaseDomain``; the hypervisor itself knows nothing of xenstore.

pyxen's VIRQ is a line on a hypervisor connection (``AsyncXenCtrl.bind_virq_dom_exc``). The
binding is remade whenever the hypervisor restarts, and each (re)binding is followed by a
cleanup pass, so deaths while either daemon was down are not missed.

While the hypervisor is away, the daemon waits for its socket to appear (inotify on the run
directory) rather than retrying on a timer: any pending asyncio timer makes every
``epoll_wait`` of the loop take a timeout, and arming that kernel timer on each wait cost
xenstored ~5 us per request on a VM (13% of a READ round trip; bench/xenstore.py, issue 13).
Polling every RETRY_INTERVAL remains the fallback where inotify is unavailable.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import struct
from pathlib import Path
from typing import Any

from ..hypervisor.client import AsyncXenCtrl
from ..hypervisor.errors import HypercallError
from .xenstored import Xenstored

log = logging.getLogger(__name__)

#: Seconds between attempts to (re)bind while the hypervisor is away.
RETRY_INTERVAL = 0.5
#: Bound on the getdomaininfolist call of one cleanup pass.
CALL_TIMEOUT = 5.0

# <sys/inotify.h>
IN_ATTRIB = 0x004
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_IGNORED = 0x8000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
#: struct inotify_event's fixed part: wd, mask, cookie, len (then len bytes of name).
INOTIFY_EVENT = struct.Struct("iIII")


class SocketAppears:
    """Wakes its waiter when a socket file named ``path`` is created, renamed into place or
    changes attributes in its directory (the hypervisor binds, listens, then chmods: the
    last event comes after listen).  Events are kept from construction on, so one that
    lands between a failed connect and the next ``wait`` is not lost.  If the directory
    goes away, so does the watch: ``watching`` turns False and the waiter is woken (the
    caller polls from then on).  :raise OSError: inotify is unavailable (the caller polls
    instead)."""

    def __init__(self, path: Path) -> None:
        self.name = path.name.encode()
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if libc.inotify_add_watch(fd, os.fsencode(path.parent),
                                  IN_CREATE | IN_MOVED_TO | IN_ATTRIB) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify_add_watch {path.parent}")
        self.fd = fd
        self.watching = True
        self._seen = asyncio.Event()
        asyncio.get_running_loop().add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return
        pos = 0
        while pos + INOTIFY_EVENT.size <= len(data):
            _wd, mask, _cookie, length = INOTIFY_EVENT.unpack_from(data, pos)
            pos += INOTIFY_EVENT.size
            if mask & IN_IGNORED:
                self.watching = False
                self._seen.set()
            elif data[pos:pos + length].rstrip(b"\0") == self.name:
                self._seen.set()
            pos += length

    async def wait(self) -> None:
        """Until the socket's name was touched since the last wait."""
        await self._seen.wait()
        self._seen.clear()

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)


class DomainExc:
    """xenstored's side of VIRQ_DOM_EXC: ``domain_cleanup`` and the loop that feeds it."""

    def __init__(self, xs: Xenstored, hypervisor_socket: Path) -> None:
        self.xs = xs
        self.hypervisor_socket = hypervisor_socket
        #: Introduced domains already reported as shut down (each shutdown fires once).
        self.shutdown: set[int] = set()

    def cleanup(self, infos: list[dict[str, Any]]) -> bool:
        """One pass over the introduced domains against the hypervisor's list; True if
        @releaseDomain fired."""
        live = {int(d["domid"]): d for d in infos}
        fire = False
        for domid in sorted(self.xs.domains.table):
            info = live.get(domid)
            if info is None or info.get("dying"):
                self.xs.release_domain(domid)
                self.shutdown.discard(domid)
                log.info("domain %d is gone: released", domid)
                fire = True
            elif info.get("shutdown"):
                if domid not in self.shutdown:
                    self.shutdown.add(domid)
                    log.info("domain %d shut down (reason %s)", domid, info.get("shutdown_reason"))
                    fire = True
            else:
                self.shutdown.discard(domid)  # running again: its next shutdown fires anew
        self.shutdown &= set(self.xs.domains.table)
        if fire:
            self.xs.connections.fire_special("@releaseDomain")
        return fire

    async def run(self) -> None:
        """Bind VIRQ_DOM_EXC and clean up on every notification, for ever; rebind after the
        hypervisor restarts."""
        try:
            appears: SocketAppears | None = SocketAppears(self.hypervisor_socket)
        except OSError as err:
            log.warning("no inotify on %s (%s): polling for the hypervisor every %g s",
                        self.hypervisor_socket.parent, err, RETRY_INTERVAL)
            appears = None
        try:
            await self._run(appears)
        finally:
            if appears is not None:
                appears.close()

    async def _run(self, appears: SocketAppears | None) -> None:
        announced = False
        while True:
            connected = False
            try:
                async with AsyncXenCtrl(self.hypervisor_socket, timeout=CALL_TIMEOUT) as xc:
                    connected = True
                    await xc.bind_virq_dom_exc()
                    log.info("VIRQ_DOM_EXC bound")
                    announced = False
                    while True:
                        self.cleanup(list(await xc.call("sysctl.getdomaininfolist")))
                        await xc.wait_virq()
            except (HypercallError, OSError) as err:
                if not announced:
                    log.warning("VIRQ_DOM_EXC: %s; retrying", err)
                    announced = True
            if connected or appears is None or not appears.watching:
                # A live hypervisor failed a call or closed: retry after a pause (a failing
                # call must not spin); if it is gone, that retry's connect fails and the
                # wait below takes over.  With no watch (no inotify, or its directory
                # removed), poll.
                await asyncio.sleep(RETRY_INTERVAL)
            else:
                await appears.wait()
