"""xenconsoled: a daemon of its own that keeps every guest's console (Xen: tools/console/daemon).

Like Xen's, it learns of domains from xenstore: it watches ``@introduceDomain`` and
``@releaseDomain`` and, at start and on each event, lists /local/domain. Every domain other than
Domain-0 whose console FIFOs exist (``Paths.console_pipe``) gets a ``Console`` (domain.py): its
output appended to log/console/guest-<name>.log, its socket ``Paths.console_socket(domid)``
served to any number of ``xl console`` readers, and that socket's path written to
``/local/domain/<id>/console/tty``, where Xen's xenconsoled writes the pty and ``xl console``
looks. A domain that is released, or whose FIFOs vanish or whose device model exits, is dropped
(its log stays).

Nothing is lost while it is down: the guest's output waits in the FIFO, so a restarted daemon
(or one started after the guest) logs the console from where the last one stopped, or from the
guest's first line. xenstored may be down too: consoles already kept go on logging, and the
daemon reconnects (a supervisor restarts xenstored) and lists the domains again.

``python -m pyxen.console --root DIR``: stays in the foreground, pid file run/xenconsoled.pid,
log log/xenconsoled.log; it is up when ``Paths.xenconsoled_socket`` accepts, and answers there
with one JSON status line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import Awaitable, Iterable, Mapping, TypeVar

from ..paths import Paths
from ..xenstore.client import AsyncXenstoreClient
from ..xenstore.errors import XenstoreError
from .domain import Console, fifo_identity

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long one xenstore request may take before xenstored counts as hung (seconds).
XS_TIMEOUT = 10.0
#: Pause between attempts to reach xenstored when it is down (seconds).
XS_RETRY = 0.5
#: Watch tokens, as Xen's xenconsoled registers them.
INTRODUCE, RELEASE = "@introduceDomain", "@releaseDomain"
DOMID_DOM0 = 0

Identity = tuple[int, int]


@dataclass(frozen=True)
class Plan:
    """What one scan changes: consoles to drop, domains whose consoles to open."""

    drop: tuple[int, ...]
    open: tuple[int, ...]


def plan(listed: Iterable[str], fifos: Mapping[int, Identity | None],
         kept: Mapping[int, Identity | None], ended: Mapping[int, Identity]) -> Plan:
    """Decide a scan (pure).

    :param listed: the children of /local/domain.
    :param fifos: for each listed domU, the identity of its console FIFOs (None: none there).
    :param kept: the consoles kept now, with the identity of the FIFOs they have open.
    :param ended: consoles whose device model went away, by the FIFOs they had; not reopened
        while the same FIFOs are there (their writer is gone, nothing more can come).
    """
    domus = {int(d) for d in listed if d.isdigit() and d.isascii() and int(d) != DOMID_DOM0}
    present = {d: fifos.get(d) for d in domus}
    drop = tuple(sorted(d for d, ident in kept.items()
                        if present.get(d) is None or present[d] != ident))
    opened = tuple(sorted(d for d, ident in present.items()
                          if ident is not None and (d not in kept or d in drop)
                          and ended.get(d) != ident))
    return Plan(drop, opened)


class Xenconsoled:
    """The consoles of one host's domains."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.consoles: dict[int, Console] = {}
        self.ended: dict[int, Identity] = {}

    # ---- discovery -----------------------------------------------------------------------------
    async def scan(self, xs: AsyncXenstoreClient) -> None:
        """List /local/domain and make the kept consoles match it."""
        listed = await _timed(xs.directory("/local/domain"))
        fifos = {int(d): fifo_identity(self.paths.console_pipe(int(d)))
                 for d in listed if d.isdigit() and d.isascii()}
        step = plan(listed, fifos, {d: c.identity for d, c in self.consoles.items()}, self.ended)
        for domid in step.drop:
            self.drop(domid)
        for domid in step.open:
            await self._open(xs, domid)
        # Forget ended consoles whose FIFOs are gone: a new device model may take the domid.
        self.ended = {d: i for d, i in self.ended.items() if fifos.get(d) == i}

    async def _open(self, xs: AsyncXenstoreClient, domid: int) -> None:
        raw = await _timed(xs.get(f"/local/domain/{domid}/name"))
        if not raw:
            log.debug("d%d has no name yet; its console waits for the next event", domid)
            return
        name = raw.decode(errors="replace")
        con = Console(domid, name, self.paths.console_pipe(domid), self.paths.console_log(name),
                      self.paths.console_socket(domid), on_end=self._ended)
        try:
            await con.open()
        except OSError as err:
            log.error("d%d (%s): cannot keep its console: %s", domid, name, err)
            if con.identity is not None:
                self.ended[domid] = con.identity
            return
        self.consoles[domid] = con
        # Xen's xenconsoled writes the pty here; xl console reads it.
        await _timed(xs.write(f"/local/domain/{domid}/console/tty", str(con.socket_path)))

    def _ended(self, con: Console) -> None:
        if self.consoles.get(con.domid) is con:
            del self.consoles[con.domid]
            if con.identity is not None:
                self.ended[con.domid] = con.identity

    def drop(self, domid: int) -> None:
        """Stop keeping ``domid``'s console; its log stays."""
        con = self.consoles.pop(domid, None)
        if con is not None:
            con.close()
            log.info("d%d (%s): console dropped", domid, con.name)

    async def watch_xenstore(self) -> None:
        """Follow the domain list for ever, reconnecting whenever xenstored goes away."""
        outage = False  # log an outage once, not every retry
        while True:
            xs = AsyncXenstoreClient(self.paths.xenstored_socket)
            try:
                await _timed(xs.connect())
                await _timed(xs.watch(INTRODUCE, INTRODUCE))
                await _timed(xs.watch(RELEASE, RELEASE))
                log.info("connected to xenstored")
                outage = False
                await self.scan(xs)  # the watches also fire once at registration; one scan is enough
                while True:
                    await xs.wait_event()
                    # One rescan serves a burst of events: drain what is queued first.
                    while await xs.wait_event(0.05) is not None:
                        pass
                    await self.scan(xs)
            except (OSError, XenstoreError, asyncio.TimeoutError) as err:
                (log.debug if outage else log.warning)(
                    "xenstored unavailable (%s); retrying every %.1f s; kept consoles go on logging",
                    err or type(err).__name__, XS_RETRY)
                outage = True
            finally:
                with contextlib.suppress(OSError):
                    await xs.close()
            await asyncio.sleep(XS_RETRY)

    # ---- the control socket -----------------------------------------------------------------------
    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One status line: the consoles kept (``pyxen host status`` and tests probe it)."""
        status = {"consoles": [c.status() for _, c in sorted(self.consoles.items())]}
        writer.write((json.dumps(status) + "\n").encode())
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def run(self) -> int:
        sock = self.paths.xenconsoled_socket
        sock.parent.mkdir(parents=True, exist_ok=True)
        sock.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(self.control, path=str(sock))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        watcher = asyncio.create_task(self.watch_xenstore())
        log.info("serving; control socket %s", sock)
        async with server:
            await stop.wait()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        for domid in list(self.consoles):  # what the guests print next waits in their FIFOs
            self.drop(domid)
        sock.unlink(missing_ok=True)
        return 0


async def _timed(aw: Awaitable[T]) -> T:
    """A xenstore request with XS_TIMEOUT (a hung xenstored must not hang xenconsoled)."""
    return await asyncio.wait_for(aw, XS_TIMEOUT)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="xenconsoled", description="pyxen's console daemon")
    ap.add_argument("--root", help="state folder (default $PYXEN_ROOT or /var/lib/pyxen)")
    ap.add_argument("--debug", action="store_true")
    ns = ap.parse_args(argv)
    paths = Paths.from_env(ns.root)
    paths.ensure()
    logging.basicConfig(filename=paths.daemon_log("xenconsoled"),
                        level=logging.DEBUG if ns.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pidfile = paths.pidfile("xenconsoled")
    # One xenconsoled per host: two would splice the same FIFO into two halves of a log.
    lock = os.open(pidfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.read(lock, 32).decode(errors="replace").strip() or "?"
        print(f"xenconsoled: already running (pid {other})", file=sys.stderr)
        return 1
    os.ftruncate(lock, 0)
    os.write(lock, f"{os.getpid()}\n".encode())
    try:
        return asyncio.run(Xenconsoled(paths).run())
    finally:
        with contextlib.suppress(FileNotFoundError):
            if pidfile.read_text().strip() == str(os.getpid()):
                pidfile.unlink()
        os.close(lock)
